//! Pairs each shadow's response with the primary's response to the same request and judges them
//! (I/O-free; time passed in). A request replayed to several shadows (candidates and a baseline)
//! has one entry, judged once per shadow; either side may arrive first; an entry whose other
//! sides never come (primary response lost, replay dropped) expires after a deadline, so memory
//! is bounded.

use std::{collections::VecDeque, sync::Arc};

use bytes::Bytes;

use crate::{hash::HashMap, held::HeldBody, http::RequestSummary, segment::FlowKey};

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
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub status: u16,
    pub body_digest: u128,
    /// Status line and header lines.
    pub head: Bytes,
    /// The de-chunked body, when held (field-level comparison).
    pub body: Option<Arc<HeldBody>>,
    /// Last request byte to first response byte, when timed.
    pub latency_seconds: Option<f64>,
}

impl Observed {
    /// A side known by its status and digest only.
    pub fn digest_only(status: u16, body_digest: u128) -> Self {
        Self {
            status,
            body_digest,
            head: Bytes::new(),
            body: None,
            latency_seconds: None,
        }
    }
}

/// The judgement of one pair (the primary's response and one shadow's).
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub key: ExchangeKey,
    /// Index of the target the exchange belongs to.
    pub target: usize,
    /// Index of the shadow in its target.
    pub shadow: usize,
    /// Method, target and Host of the request, for logs.
    pub request: RequestSummary,
    pub primary: Observed,
    pub observed: Observed,
    pub status_mismatch: bool,
    pub body_mismatch: bool,
}

/// Shadows of one comparison, as a bit set of their indexes in the target.
pub type ShadowSet = u64;

/// Most shadows a target may have (the bits of a [`ShadowSet`]).
pub const MAX_SHADOWS: usize = ShadowSet::BITS as usize;

#[derive(Debug)]
struct Entry<X> {
    /// Which [`Comparator::open`] made it: a key can come back (a new connection on the same
    /// 4-tuple) while the deadline of its earlier use is still queued.
    opened: u64,
    target: usize,
    request: RequestSummary,
    primary: Option<Observed>,
    /// Shadows still to be judged (replayed and not failed).
    waiting: ShadowSet,
    /// What the waiting shadows answered before the primary's response came.
    answers: Vec<(usize, Observed)>,
    /// The caller's, returned when the entry closes.
    extra: X,
}

impl<X> Entry<X> {
    fn judge(
        &self,
        key: ExchangeKey,
        shadow: usize,
        primary: &Observed,
        observed: Observed,
    ) -> Verdict {
        Verdict {
            key,
            target: self.target,
            shadow,
            request: self.request.clone(),
            status_mismatch: primary.status != observed.status,
            body_mismatch: primary.body_digest != observed.body_digest,
            primary: primary.clone(),
            observed,
        }
    }

    fn close(self) -> Closed<X> {
        Closed {
            target: self.target,
            waiting: self.waiting,
            primary: self.primary,
            extra: self.extra,
        }
    }
}

/// An entry that left the table: judged for every shadow (`waiting` empty), or cancelled,
/// expired or evicted with `waiting` unjudged.
#[derive(Debug, PartialEq)]
pub struct Closed<X> {
    pub target: usize,
    /// Shadows left unjudged.
    pub waiting: ShadowSet,
    /// The primary's response, if it came.
    pub primary: Option<Observed>,
    pub extra: X,
}

/// Open comparisons keyed by exchange: one entry per replayed request, judged once per shadow.
/// Each entry carries the caller's `X` (e.g. what an exchange log needs), handed back in its
/// [`Closed`].
#[derive(Debug)]
pub struct Comparator<X = ()> {
    entries: HashMap<ExchangeKey, Entry<X>>,
    /// Insertion order with deadlines, for expiry and eviction: `(key, opened, deadline)`. Entries
    /// judged or cancelled leave theirs behind until [`Self::compact`], which keeps it within
    /// twice the open entries (plus [`COMPACT_SLACK`]) rather than one per request of the last
    /// `ttl_ns` (300,000 at 10k req/s and a 30 s TTL).
    deadlines: VecDeque<(ExchangeKey, u64, u64)>,
    /// Opens so far (the next [`Entry::opened`]).
    opened: u64,
    ttl_ns: u64,
    max_entries: usize,
}

impl<X> Comparator<X> {
    /// `ttl_ns`: how long an entry waits for its other sides; `max_entries`: hard bound.
    pub fn new(ttl_ns: u64, max_entries: usize) -> Self {
        Self {
            entries: HashMap::default(),
            deadlines: VecDeque::new(),
            opened: 0,
            ttl_ns,
            max_entries: max_entries.max(1),
        }
    }

    /// Opens a comparison for exchange `id`, replayed to `shadows`. Returns the entry evicted
    /// to make room (the table is full).
    pub fn open(
        &mut self,
        id: ExchangeKey,
        target: usize,
        request: RequestSummary,
        now_ns: u64,
        shadows: ShadowSet,
        extra: X,
    ) -> Option<Closed<X>> {
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
                primary: None,
                waiting: shadows,
                answers: Vec::new(),
                extra,
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

    /// Removes `id` if it is still the entry queued as `opened`.
    fn remove_queued(&mut self, id: &ExchangeKey, opened: u64) -> Option<Closed<X>> {
        let std::collections::hash_map::Entry::Occupied(slot) = self.entries.entry(*id) else {
            return None;
        };
        if slot.get().opened != opened {
            return None;
        }
        Some(slot.remove().close())
    }

    /// Forgets `id` without a verdict for the shadows still waiting (the primary's response
    /// cannot be paired or was lost).
    pub fn cancel(&mut self, id: ExchangeKey) -> Option<Closed<X>> {
        self.entries.remove(&id).map(Entry::close)
    }

    /// Forgets one shadow of `id` (its replay was dropped or failed: nothing to judge); returns
    /// the entry if that closed it.
    pub fn cancel_shadow(&mut self, id: ExchangeKey, shadow: usize) -> Option<Closed<X>> {
        let std::collections::hash_map::Entry::Occupied(mut slot) = self.entries.entry(id) else {
            return None;
        };
        let entry = slot.get_mut();
        entry.waiting &= !(1 << shadow);
        entry.answers.retain(|(answered, _)| *answered != shadow);
        (entry.waiting == 0).then(|| slot.remove().close())
    }

    /// Records the primary's response and judges every shadow that answered already.
    /// `observed` is called only when `id` is open. One lookup. Returns the entry if every
    /// shadow is now judged.
    pub fn on_primary(
        &mut self,
        id: ExchangeKey,
        observed: impl FnOnce() -> Observed,
        verdicts: &mut Vec<Verdict>,
    ) -> Option<Closed<X>> {
        let std::collections::hash_map::Entry::Occupied(mut slot) = self.entries.entry(id) else {
            return None;
        };
        let entry = slot.get_mut();
        let primary = observed();
        for (shadow, answer) in std::mem::take(&mut entry.answers) {
            verdicts.push(entry.judge(id, shadow, &primary, answer));
            entry.waiting &= !(1 << shadow);
        }
        entry.primary = Some(primary);
        (entry.waiting == 0).then(|| slot.remove().close())
    }

    /// Records one shadow's response; judged at once when the primary's is in. One lookup.
    /// Returns the verdict, and the entry if every shadow is now judged.
    pub fn on_shadow(
        &mut self,
        id: ExchangeKey,
        shadow: usize,
        observed: Observed,
    ) -> (Option<Verdict>, Option<Closed<X>>) {
        let std::collections::hash_map::Entry::Occupied(mut slot) = self.entries.entry(id) else {
            return (None, None);
        };
        let entry = slot.get_mut();
        if entry.waiting & (1 << shadow) == 0 {
            return (None, None);
        }
        let Some(primary) = &entry.primary else {
            entry.answers.push((shadow, observed));
            return (None, None);
        };
        let verdict = entry.judge(id, shadow, primary, observed);
        entry.waiting &= !(1 << shadow);
        let closed = (entry.waiting == 0).then(|| slot.remove().close());
        (Some(verdict), closed)
    }

    /// The caller's data of open entry `id`.
    pub fn extra_mut(&mut self, id: &ExchangeKey) -> Option<&mut X> {
        self.entries.get_mut(id).map(|entry| &mut entry.extra)
    }

    /// Drops entries past their deadline, handing each to `expired`.
    pub fn expire(&mut self, now_ns: u64, mut expired: impl FnMut(Closed<X>)) {
        while let Some(&(id, opened, deadline)) = self.deadlines.front() {
            if deadline > now_ns {
                break;
            }
            self.deadlines.pop_front();
            if let Some(closed) = self.remove_queued(&id, opened) {
                expired(closed);
            }
        }
    }

    /// Drops the oldest open entry.
    fn evict_oldest(&mut self) -> Option<Closed<X>> {
        while let Some((id, opened, _)) = self.deadlines.pop_front() {
            if let Some(evicted) = self.remove_queued(&id, opened) {
                return Some(evicted);
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

/// The shadows of a set, by index.
pub fn shadows_of(set: ShadowSet) -> impl Iterator<Item = usize> {
    (0..MAX_SHADOWS).filter(move |shadow| set & (1 << shadow) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Observed = Observed {
        status: 200,
        body_digest: 1,
        head: Bytes::new(),
        body: None,
        latency_seconds: None,
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
            Bytes::from_static(GET),
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

    /// Opens `key` replayed to shadow 0 only.
    /// Opens exchange `index`; true when that evicted another (the table was full).
    fn open(comparator: &mut Comparator, index: u64, target: usize, now: u64) -> bool {
        comparator
            .open(key(index), target, get(), now, 1, ())
            .is_some()
    }

    /// Entries `expire` dropped at `now`.
    fn expire(comparator: &mut Comparator, now: u64) -> usize {
        let mut expired = 0;
        comparator.expire(now, |_| expired += 1);
        expired
    }

    fn primary(comparator: &mut Comparator, index: u64, observed: Observed) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        comparator.on_primary(key(index), || observed, &mut verdicts);
        verdicts
    }

    /// The verdict of one shadow's answer.
    fn shadow(
        comparator: &mut Comparator,
        id: ExchangeKey,
        shadow: usize,
        observed: Observed,
    ) -> Option<Verdict> {
        comparator.on_shadow(id, shadow, observed).0
    }

    #[test]
    fn a_primary_response_nobody_compares_is_never_observed() {
        let mut comparator = Comparator::new(1_000, 10);
        open(&mut comparator, 1, 0, 0);
        let mut verdicts = Vec::new();
        comparator.on_primary(
            key(2),
            || panic!("observed without a comparison"),
            &mut verdicts,
        );
        assert!(verdicts.is_empty());
        assert_eq!(comparator.len(), 1);
    }

    #[test]
    fn either_side_may_come_first() {
        let mut comparator = Comparator::new(1_000, 10);
        open(&mut comparator, 1, 0, 0);
        assert_eq!(shadow(&mut comparator, key(1), 0, OK), None);
        let verdicts = primary(&mut comparator, 1, OK);
        assert!(!verdicts[0].status_mismatch && !verdicts[0].body_mismatch);
        open(&mut comparator, 2, 3, 0);
        assert!(primary(&mut comparator, 2, OK).is_empty());
        let verdict =
            shadow(&mut comparator, key(2), 0, Observed::digest_only(500, 2)).expect("judged");
        assert_eq!(verdict.target, 3);
        assert!(verdict.status_mismatch && verdict.body_mismatch);
        assert!(comparator.is_empty());
    }

    #[test]
    fn each_shadow_is_judged_once_against_the_same_primary() {
        let mut comparator = Comparator::new(1_000, 10);
        // Replayed to shadows 0, 1 and 2; shadow 1's replay fails.
        comparator.open(key(1), 0, get(), 0, 0b111, ());
        let other = Observed::digest_only(200, 7);
        assert_eq!(shadow(&mut comparator, key(1), 2, other), None);
        comparator.cancel_shadow(key(1), 1);
        let verdicts = primary(&mut comparator, 1, OK);
        assert_eq!(verdicts.len(), 1);
        assert_eq!((verdicts[0].shadow, verdicts[0].body_mismatch), (2, true));
        let verdict = shadow(&mut comparator, key(1), 0, OK).expect("judged");
        assert_eq!((verdict.shadow, verdict.body_mismatch), (0, false));
        assert!(comparator.is_empty(), "every shadow judged or cancelled");
        assert_eq!(shadow(&mut comparator, key(1), 0, OK), None, "once");
    }

    #[test]
    fn the_caller_data_comes_back_once_when_the_last_shadow_is_done() {
        let mut comparator: Comparator<&str> = Comparator::new(1_000, 10);
        comparator.open(key(1), 2, get(), 0, 0b11, "exchange 1");
        *comparator.extra_mut(&key(1)).unwrap() = "updated";
        let mut verdicts = Vec::new();
        assert_eq!(comparator.on_primary(key(1), || OK, &mut verdicts), None);
        let (verdict, closed) = comparator.on_shadow(key(1), 1, OK);
        assert!(
            verdict.is_some() && closed.is_none(),
            "shadow 0 still waited for"
        );
        let closed = comparator
            .cancel_shadow(key(1), 0)
            .expect("closed by the last shadow");
        assert_eq!(
            closed,
            Closed {
                target: 2,
                waiting: 0,
                primary: Some(OK),
                extra: "updated"
            }
        );
        assert!(comparator.is_empty());
        // Closed by a verdict, with the primary last.
        comparator.open(key(2), 0, get(), 0, 1, "exchange 2");
        assert_eq!(comparator.on_shadow(key(2), 0, OK), (None, None));
        let closed = comparator.on_primary(key(2), || OK, &mut verdicts);
        assert_eq!(closed.map(|closed| closed.extra), Some("exchange 2"));
    }

    #[test]
    fn unanswered_entries_expire_and_the_table_is_bounded() {
        let mut comparator = Comparator::new(100, 2);
        open(&mut comparator, 1, 0, 0);
        open(&mut comparator, 2, 0, 50);
        let mut expired = Vec::new();
        comparator.expire(120, |closed| expired.push((closed.target, closed.waiting)));
        assert_eq!(expired, [(0, 1)]);
        assert_eq!(comparator.len(), 1);
        assert!(!open(&mut comparator, 3, 0, 120));
        let evicted = comparator.open(key(4), 0, get(), 121, 1, ());
        assert_eq!(
            evicted.map(|closed| (closed.target, closed.waiting)),
            Some((0, 1)),
            "oldest evicted at the bound"
        );
        assert_eq!(comparator.len(), 2);
        assert!(primary(&mut comparator, 2, OK).is_empty(), "2 was evicted");
        assert_eq!(
            comparator.cancel(key(3)),
            Some(Closed {
                target: 0,
                waiting: 1,
                primary: None,
                extra: ()
            })
        );
        assert_eq!(shadow(&mut comparator, key(3), 0, OK), None);
    }

    #[test]
    fn judged_exchanges_leave_no_deadlines_behind() {
        // A long TTL: nothing expires, so only compaction can drop judged exchanges' deadlines.
        let mut comparator = Comparator::new(u64::MAX / 2, 65_536);
        for index in 0..1_000_000 {
            open(&mut comparator, index, 0, index);
            primary(&mut comparator, index, OK);
            shadow(&mut comparator, key(index), 0, OK).expect("both sides in: judged");
        }
        assert!(comparator.is_empty());
        assert!(
            comparator.deadlines.len() <= COMPACT_SLACK,
            "{} deadlines queued for no open entry",
            comparator.deadlines.len()
        );
    }

    #[test]
    fn a_reused_key_outlives_the_deadline_of_its_earlier_use() {
        let mut comparator = Comparator::new(100, 10);
        open(&mut comparator, 1, 0, 0);
        comparator.cancel(key(1));
        // The same key again (a new connection on the same 4-tuple), later.
        open(&mut comparator, 1, 0, 90);
        assert_eq!(expire(&mut comparator, 150), 0);
        assert_eq!(
            comparator.len(),
            1,
            "the first use's deadline passed, not this one's"
        );
        assert_eq!(expire(&mut comparator, 190), 1);
        assert!(comparator.is_empty());
    }

    #[test]
    fn eviction_at_the_bound_skips_stale_deadlines() {
        let mut comparator = Comparator::new(1_000, 2);
        open(&mut comparator, 1, 0, 0);
        comparator.cancel(key(1));
        open(&mut comparator, 1, 0, 1);
        open(&mut comparator, 2, 0, 2);
        assert!(open(&mut comparator, 3, 0, 3), "one evicted at the bound");
        assert_eq!(comparator.len(), 2);
        assert!(
            primary(&mut comparator, 1, OK).is_empty(),
            "the oldest open entry went"
        );
        assert!(primary(&mut comparator, 2, OK).is_empty());
        assert!(
            shadow(&mut comparator, key(2), 0, OK).is_some(),
            "2 is still open"
        );
    }
}
