//! The `max_rps` token bucket, in integer arithmetic on caller-supplied nanoseconds.

/// One token, in the bucket's unit (token-nanoseconds: refilling at `rate` tokens per second
/// adds `rate` units per nanosecond, so no division and no rounding).
const TOKEN: u128 = 1_000_000_000;

/// Admits at most `rate` requests per second on average, with bursts of up to `max(1, rate)`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u128,
    capacity: u128,
    level: u128,
    /// Time of the last refill; `None` until the first request (the bucket starts full).
    last_ns: Option<u64>,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u32) -> Self {
        let capacity = u128::from(rate_per_sec.max(1)) * TOKEN;
        Self {
            rate: u128::from(rate_per_sec),
            capacity,
            level: capacity,
            last_ns: None,
        }
    }

    /// Takes one token if there is one at `now_ns`.
    pub fn try_take(&mut self, now_ns: u64) -> bool {
        if let Some(last_ns) = self.last_ns {
            // A clock that steps back refills nothing (and is not a panic).
            let elapsed = u128::from(now_ns.saturating_sub(last_ns));
            self.level = (self.level + elapsed * self.rate).min(self.capacity);
        }
        self.last_ns = Some(self.last_ns.map_or(now_ns, |last| last.max(now_ns)));
        if self.level >= TOKEN {
            self.level -= TOKEN;
            true
        } else {
            false
        }
    }
}
