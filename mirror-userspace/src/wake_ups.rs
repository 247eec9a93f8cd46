//! Batching of `mirror run`'s wake-ups (runtime park hooks; the clock is passed in).
//!
//! A wake-up costs syscalls and a context switch. Below saturation events come one at a time (a
//! replay response, a ring-buffer record), so each wake-up carried a single event. When events
//! are dense, the daemon lets them gather for a short window each time it runs out of work, and
//! one wake-up then carries all of them. When events are sparse (a dead or slow shadow, an idle
//! node), it waits at once: a window there would only add a wake-up per event.
//!
//! Events are dense when two waits in a row ended within the window. One short wait says
//! nothing: after a timer fires, tokio's current-thread runtime wakes itself through its
//! event fd, so the wait after every timer wake-up is short even on an idle node.
//!
//! The window delays replays, never the primary, which does not wait on the daemon; latencies
//! are kernel timestamps on both sides, so it does not show in them either.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// How long events gather before the daemon waits for them, when they are dense. Three
/// 15 s runs at 10k req/s (`mirror-bench --tables none --completeness-seconds 15
/// --completeness-rates 10000`) alternating with 1 ms (both builds then with mimalloc, since
/// reverted) measured 1.65-2.06 s of daemon CPU per 100k requests against 1.74-2.33 s: fewer
/// wake-ups, and deeper pipelined writes. Longer is worse for the primary: 10 ms (with up to
/// 128 requests per write) saved a little more at 10k req/s (0.65-0.68 s against 0.67-0.80 s in
/// three alternating rounds), but at saturation with 10% sampling (`mirror-bench --tables
/// impact --only "mirror 10%," --rounds 3`, twice each, alternating) the primary kept
/// 0.705-0.796x of no-mirror throughput against 0.806-0.864x, with its P50 330-365 us above
/// no mirror against 65-140 us: the work gathered in a long window runs as one burst that
/// holds a core the primary needs.
pub const WINDOW: Duration = Duration::from_millis(3);

/// State shared by the runtime's park and unpark hooks (one thread; atomics only because the
/// hooks must be `Sync`).
#[derive(Debug)]
pub struct WakeUpBatching {
    window: Duration,
    origin: Instant,
    /// When the runtime last began waiting, in nanoseconds since `origin`.
    waiting_since_ns: AtomicU64,
    /// How many waits in a row ended within `window` (saturating).
    short_waits: AtomicU32,
}

/// Short waits in a row that make events dense.
const DENSE_AFTER: u32 = 2;

impl WakeUpBatching {
    pub fn new(window: Duration, now: Instant) -> Self {
        Self {
            window,
            origin: now,
            waiting_since_ns: AtomicU64::new(0),
            short_waits: AtomicU32::new(0),
        }
    }

    /// Out of work: how long to let events gather before waiting (`None`: wait at once).
    pub fn gather_for(&self) -> Option<Duration> {
        (self.short_waits.load(Ordering::Relaxed) >= DENSE_AFTER).then_some(self.window)
    }

    /// The runtime begins waiting for events.
    pub fn waiting(&self, now: Instant) {
        self.waiting_since_ns
            .store(self.nanos(now), Ordering::Relaxed);
    }

    /// An event ended the wait.
    pub fn woken(&self, now: Instant) {
        let waited = self
            .nanos(now)
            .saturating_sub(self.waiting_since_ns.load(Ordering::Relaxed));
        let streak = if waited < self.window.as_nanos() as u64 {
            self.short_waits
                .load(Ordering::Relaxed)
                .saturating_add(1)
                .min(DENSE_AFTER)
        } else {
            0
        };
        self.short_waits.store(streak, Ordering::Relaxed);
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Installs the hooks on `builder`.
    pub fn install(builder: &mut tokio::runtime::Builder, window: Duration) {
        let batching = std::sync::Arc::new(Self::new(window, Instant::now()));
        let on_park = std::sync::Arc::clone(&batching);
        builder
            .on_thread_park(move || {
                if let Some(window) = on_park.gather_for() {
                    std::thread::sleep(window);
                }
                on_park.waiting(Instant::now());
            })
            .on_thread_unpark(move || batching.woken(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn events_gather_only_while_they_are_dense() {
        let start = Instant::now();
        let batching = WakeUpBatching::new(MS, start);
        assert_eq!(
            batching.gather_for(),
            None,
            "nothing known yet: wait at once"
        );
        // Sparse: each wait lasts longer than the window.
        batching.waiting(start);
        batching.woken(start + 5 * MS);
        assert_eq!(batching.gather_for(), None);
        // One short wait after a long one: the runtime waking itself after a timer fired.
        batching.waiting(start + 6 * MS);
        batching.woken(start + 6 * MS + MS / 10);
        assert_eq!(batching.gather_for(), None, "a single short wait");
        batching.waiting(start + 7 * MS);
        batching.woken(start + 12 * MS);
        assert_eq!(batching.gather_for(), None);
        // Dense: events ended two waits in a row within the window.
        batching.waiting(start + 12 * MS);
        batching.woken(start + 12 * MS + MS / 10);
        batching.waiting(start + 13 * MS);
        batching.woken(start + 13 * MS + MS / 5);
        assert_eq!(batching.gather_for(), Some(MS));
        // Events already pending after the gathering: still dense.
        batching.waiting(start + 15 * MS);
        batching.woken(start + 15 * MS);
        assert_eq!(batching.gather_for(), Some(MS));
        // Traffic stops: the next long wait turns the window off again.
        batching.waiting(start + 16 * MS);
        batching.woken(start + 200 * MS);
        assert_eq!(batching.gather_for(), None);
    }
}
