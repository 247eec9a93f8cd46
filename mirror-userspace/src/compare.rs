//! Pairs each shadow response with the primary's response to the same request and judges them
//! (I/O-free; time passed in). Either side may arrive first; an entry whose other side never
//! comes (primary response lost, replay dropped) expires after a deadline, so memory is bounded.

use std::collections::VecDeque;

use crate::{hash::HashMap, http::RequestSummary, segment::FlowKey};

/// Stale deadlines tolerated beyond twice the open entries before [`Comparator::compact`]
/// runs: compaction then costs at most a few lookups per open, amortised.
const COMPACT_SLACK: usize = 1024;

/// Identifies one request of one captured connection: the tracker's connection number (a
/// 4-tuple used again is another connection) and per-connection index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExchangeKey {
    pub flow: FlowKey,
    pub connection: u64,
    pub index: u64,
}

/// One side of an exchange, as far as the comparison cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub status: u16,
    pub body_digest: u128,
}

/// The judgement of one pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Index of the target the exchange belongs to.
    pub target: usize,
    /// Method, target and Host of the request (slices of its bytes), for logs.
    pub request: RequestSummary,
    pub primary: Observed,
    pub shadow: Observed,
    pub status_mismatch: bool,
    pub body_mismatch: bool,
}

#[derive(Debug)]
struct Entry {
    /// Which [`Comparator::open`] made it: a key can come back (a new connection on the same
    /// 4-tuple) while the deadline of its earlier use is still queued.
    opened: u64,
    target: usize,
    request: RequestSummary,
    compare_bodies: bool,
    primary: Option<Observed>,
    shadow: Option<Observed>,
}

/// Open comparisons keyed by exchange.
#[derive(Debug)]
pub struct Comparator {
    entries: HashMap<ExchangeKey, Entry>,
    /// Insertion order with deadlines, for expiry and eviction: `(key, opened, deadline)`. Entries
    /// judged or cancelled leave theirs behind until [`Self::compact`], which keeps it within
    /// twice the open entries (plus [`COMPACT_SLACK`]) rather than one per request of the last
    /// `ttl_ns` (300,000 at 10k req/s and a 30 s TTL).
    deadlines: VecDeque<(ExchangeKey, u64, u64)>,
    /// Opens so far (the next [`Entry::opened`]).
    opened: u64,
    ttl_ns: u64,
    max_entries: usize,
    /// Entries dropped unjudged (other side never came, or the table was full).
    pub expired: u64,
}

impl Comparator {
    /// `ttl_ns`: how long an entry waits for its other side; `max_entries`: hard bound.
    pub fn new(ttl_ns: u64, max_entries: usize) -> Self {
        Self {
            entries: HashMap::default(),
            deadlines: VecDeque::new(),
            opened: 0,
            ttl_ns,
            max_entries: max_entries.max(1),
            expired: 0,
        }
    }

    /// Opens a comparison for exchange `id`. `compare_bodies` false judges status codes only.
    /// Returns the target of an entry evicted to make room (the table is full).
    pub fn open(
        &mut self,
        id: ExchangeKey,
        target: usize,
        request: RequestSummary,
        compare_bodies: bool,
        now_ns: u64,
    ) -> Option<usize> {
        let evicted = if self.entries.len() >= self.max_entries {
            self.evict_oldest()
        } else {
            None
        };
        if self.deadlines.len() >= 2 * self.entries.len() + COMPACT_SLACK {
            self.compact();
        }
        self.opened += 1;
        let opened = self.opened;
        self.entries.insert(
            id,
            Entry {
                opened,
                target,
                request,
                compare_bodies,
                primary: None,
                shadow: None,
            },
        );
        self.deadlines.push_back((id, opened, now_ns + self.ttl_ns));
        evicted
    }

    /// Drops the queued deadlines of entries no longer open.
    fn compact(&mut self) {
        let entries = &self.entries;
        self.deadlines
            .retain(|(id, opened, _)| entries.get(id).is_some_and(|entry| entry.opened == *opened));
    }

    /// Removes `id` if it is still the entry queued as `opened`; returns its target.
    fn remove_queued(&mut self, id: &ExchangeKey, opened: u64) -> Option<usize> {
        let std::collections::hash_map::Entry::Occupied(slot) = self.entries.entry(*id) else {
            return None;
        };
        if slot.get().opened != opened {
            return None;
        }
        let entry = slot.remove();
        self.expired += 1;
        Some(entry.target)
    }

    /// Forgets `id` without a verdict (the replay was dropped or failed, or the primary's
    /// response cannot be paired); returns the target when it was open.
    pub fn cancel(&mut self, id: ExchangeKey) -> Option<usize> {
        self.entries.remove(&id).map(|entry| entry.target)
    }

    /// `observed` is called only when `id` is open.
    pub fn on_primary(
        &mut self,
        id: ExchangeKey,
        observed: impl FnOnce() -> Observed,
    ) -> Option<Verdict> {
        self.record(id, |entry| entry.primary = Some(observed()))
    }

    pub fn on_shadow(&mut self, id: ExchangeKey, observed: Observed) -> Option<Verdict> {
        self.record(id, |entry| entry.shadow = Some(observed))
    }

    /// Records one side and judges the pair once both are in: one lookup per side (this runs
    /// twice per replayed request).
    fn record(&mut self, id: ExchangeKey, side: impl FnOnce(&mut Entry)) -> Option<Verdict> {
        let std::collections::hash_map::Entry::Occupied(mut slot) = self.entries.entry(id) else {
            return None;
        };
        side(slot.get_mut());
        let (Some(primary), Some(shadow)) = (slot.get().primary, slot.get().shadow) else {
            return None;
        };
        let entry = slot.remove();
        Some(Verdict {
            target: entry.target,
            request: entry.request,
            primary,
            shadow,
            status_mismatch: primary.status != shadow.status,
            body_mismatch: entry.compare_bodies && primary.body_digest != shadow.body_digest,
        })
    }

    /// Drops entries past their deadline, telling `expired` each one's target.
    pub fn expire(&mut self, now_ns: u64, mut expired: impl FnMut(usize)) {
        while let Some(&(id, opened, deadline)) = self.deadlines.front() {
            if deadline > now_ns {
                break;
            }
            self.deadlines.pop_front();
            if let Some(target) = self.remove_queued(&id, opened) {
                expired(target);
            }
        }
    }

    /// Drops the oldest open entry; returns its target.
    fn evict_oldest(&mut self) -> Option<usize> {
        while let Some((id, opened, _)) = self.deadlines.pop_front() {
            if let Some(target) = self.remove_queued(&id, opened) {
                return Some(target);
            }
        }
        None
    }

    /// Open comparisons.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Observed = Observed {
        status: 200,
        body_digest: 1,
    };

    fn get() -> RequestSummary {
        const GET: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        let limits = crate::http::HeadLimits {
            max_headers: 4,
            max_head_bytes: 64,
        };
        let head = crate::http::parse_request_head(GET, &limits)
            .unwrap()
            .unwrap();
        RequestSummary::of(&crate::http::HttpRequest::new(
            bytes::Bytes::from_static(GET),
            head,
        ))
    }

    fn key(index: u64) -> ExchangeKey {
        ExchangeKey {
            flow: FlowKey {
                client: "198.18.0.1:40000".parse().unwrap(),
                server: "198.18.0.2:8080".parse().unwrap(),
            },
            connection: 0,
            index,
        }
    }

    #[test]
    fn a_primary_response_nobody_compares_is_never_observed() {
        let mut comparator = Comparator::new(1_000, 10);
        comparator.open(key(1), 0, get(), true, 0);
        let unopened = comparator.on_primary(key(2), || panic!("observed without a comparison"));
        assert_eq!(unopened, None);
        assert_eq!(comparator.len(), 1);
    }

    #[test]
    fn either_side_may_come_first() {
        let mut comparator = Comparator::new(1_000, 10);
        comparator.open(key(1), 0, get(), true, 0);
        assert_eq!(comparator.on_shadow(key(1), OK), None);
        let verdict = comparator.on_primary(key(1), || OK).expect("judged");
        assert!(!verdict.status_mismatch && !verdict.body_mismatch);
        comparator.open(key(2), 3, get(), true, 0);
        assert_eq!(comparator.on_primary(key(2), || OK), None);
        let verdict = comparator
            .on_shadow(
                key(2),
                Observed {
                    status: 500,
                    body_digest: 2,
                },
            )
            .expect("judged");
        assert_eq!(verdict.target, 3);
        assert!(verdict.status_mismatch && verdict.body_mismatch);
        assert!(comparator.is_empty());
    }

    #[test]
    fn bodies_are_ignored_when_asked() {
        let mut comparator = Comparator::new(1_000, 10);
        comparator.open(key(1), 0, get(), false, 0);
        comparator.on_primary(key(1), || OK);
        let verdict = comparator
            .on_shadow(
                key(1),
                Observed {
                    status: 200,
                    body_digest: 9,
                },
            )
            .unwrap();
        assert!(!verdict.body_mismatch);
    }

    #[test]
    fn unanswered_entries_expire_and_the_table_is_bounded() {
        let mut comparator = Comparator::new(100, 2);
        comparator.open(key(1), 0, get(), true, 0);
        comparator.open(key(2), 0, get(), true, 50);
        comparator.expire(120, |_| {});
        assert_eq!(comparator.len(), 1);
        assert_eq!(comparator.expired, 1);
        comparator.open(key(3), 0, get(), true, 120);
        comparator.open(key(4), 0, get(), true, 121);
        assert_eq!(comparator.len(), 2, "oldest evicted at the bound");
        assert_eq!(comparator.expired, 2);
        assert_eq!(comparator.on_primary(key(2), || OK), None, "2 was evicted");
        comparator.cancel(key(3));
        assert_eq!(comparator.on_shadow(key(3), OK), None);
    }

    #[test]
    fn judged_exchanges_leave_no_deadlines_behind() {
        // A long TTL: nothing expires, so only compaction can drop judged exchanges' deadlines.
        let mut comparator = Comparator::new(u64::MAX / 2, 65_536);
        for index in 0..1_000_000 {
            comparator.open(key(index), 0, get(), true, index);
            comparator.on_primary(key(index), || OK);
            comparator
                .on_shadow(key(index), OK)
                .expect("both sides in: judged");
        }
        assert!(comparator.is_empty());
        assert!(
            comparator.deadlines.len() <= COMPACT_SLACK,
            "{} deadlines queued for no open entry",
            comparator.deadlines.len()
        );
        assert_eq!(comparator.expired, 0);
    }

    #[test]
    fn a_reused_key_outlives_the_deadline_of_its_earlier_use() {
        let mut comparator = Comparator::new(100, 10);
        comparator.open(key(1), 0, get(), true, 0);
        comparator.cancel(key(1));
        // The same key again (a new connection on the same 4-tuple), later.
        comparator.open(key(1), 0, get(), true, 90);
        comparator.expire(150, |_| {});
        assert_eq!(
            comparator.len(),
            1,
            "the first use's deadline passed, not this one's"
        );
        assert_eq!(comparator.expired, 0);
        comparator.expire(190, |_| {});
        assert!(comparator.is_empty());
        assert_eq!(comparator.expired, 1);
    }

    #[test]
    fn eviction_at_the_bound_skips_stale_deadlines() {
        let mut comparator = Comparator::new(1_000, 2);
        comparator.open(key(1), 0, get(), true, 0);
        comparator.cancel(key(1));
        comparator.open(key(1), 0, get(), true, 1);
        comparator.open(key(2), 0, get(), true, 2);
        comparator.open(key(3), 0, get(), true, 3);
        assert_eq!(comparator.len(), 2);
        assert_eq!(comparator.expired, 1);
        assert_eq!(
            comparator.on_primary(key(1), || OK),
            None,
            "the oldest open entry went"
        );
        assert!(comparator.on_primary(key(2), || OK).is_none());
        assert!(
            comparator.on_shadow(key(2), OK).is_some(),
            "2 is still open"
        );
    }
}
