//! Load shedding at the source (I/O-free: the caller passes the clock and the replay state).
//!
//! A request the replay queue refuses (full queue, or a shadow known to be down) was copied into
//! the ring buffer, reassembled and framed for nothing. When most requests of a window are
//! refused, the gate sheds the target: the classifier then counts its packets
//! (`mirror_classifier_packets_total{reason="shed"}`, their payload in
//! `mirror_capture_lost_bytes_total{reason="shed_request"|"shed_response"}`) instead of recording
//! them, so a slow or dead shadow costs the node almost nothing. Recording resumes once the
//! queue is half empty (the shadow keeps working through the other half meanwhile), or, for a
//! shadow that is down, once its back-off has run out: the next requests are the probe.
//! Connections are picked up again mid-stream.

use crate::replay::Refusal;

/// Requests offered per window below which the gate never sheds: a few refusals in a row say
/// little about the shadow.
pub const MIN_OFFERED: u64 = 8;
/// The window over which the refused share is judged.
pub const WINDOW_NS: u64 = 50_000_000;

/// Why a target is shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedReason {
    /// The replay queue stayed full: the shadow is slower than the sampled traffic.
    QueueFull,
    /// No connection to the shadow and the last attempt failed.
    ShadowDown,
}

impl ShedReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "the replay queue stays full",
            Self::ShadowDown => "the shadow is down",
        }
    }
}

/// A target's replay side, as the gate sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayLoad {
    /// What a request offered now would meet.
    pub refusal: Option<Refusal>,
    pub queue_depth: usize,
    pub queue_capacity: usize,
}

/// Whether one target is shed, from the requests offered to its replay queue.
#[derive(Debug)]
pub struct ShedGate {
    window_start_ns: u64,
    offered: u64,
    refused: u64,
    shed: Option<ShedReason>,
}

impl ShedGate {
    pub const fn new(now_ns: u64) -> Self {
        Self {
            window_start_ns: now_ns,
            offered: 0,
            refused: 0,
            shed: None,
        }
    }

    /// Why the target is shed, if it is.
    pub const fn shed(&self) -> Option<ShedReason> {
        self.shed
    }

    /// One request offered to the replay queue; `refused` when the queue did not take it.
    pub fn on_offered(&mut self, refused: bool) {
        self.offered += 1;
        self.refused += u64::from(refused);
    }

    /// Re-evaluates the gate; returns the new state when it changed.
    pub fn evaluate(&mut self, now_ns: u64, load: &ReplayLoad) -> Option<Option<ShedReason>> {
        let resume = match self.shed {
            Some(ShedReason::QueueFull) => load.queue_depth * 2 <= load.queue_capacity,
            Some(ShedReason::ShadowDown) => load.refusal != Some(Refusal::ShadowDown),
            None => {
                if now_ns.saturating_sub(self.window_start_ns) < WINDOW_NS {
                    return None;
                }
                let overloaded = self.offered >= MIN_OFFERED && self.refused * 2 > self.offered;
                self.restart_window(now_ns);
                if !overloaded {
                    return None;
                }
                self.shed = Some(match load.refusal {
                    Some(Refusal::ShadowDown) => ShedReason::ShadowDown,
                    _ => ShedReason::QueueFull,
                });
                return Some(self.shed);
            }
        };
        if !resume {
            return None;
        }
        self.shed = None;
        // Judge the resumed traffic on its own, not on refusals from before the pause.
        self.restart_window(now_ns);
        Some(None)
    }

    fn restart_window(&mut self, now_ns: u64) {
        self.window_start_ns = now_ns;
        self.offered = 0;
        self.refused = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn load(refusal: Option<Refusal>, queue_depth: usize) -> ReplayLoad {
        ReplayLoad {
            refusal,
            queue_depth,
            queue_capacity: 100,
        }
    }

    fn offer(gate: &mut ShedGate, accepted: u64, refused: u64) {
        for _ in 0..accepted {
            gate.on_offered(false);
        }
        for _ in 0..refused {
            gate.on_offered(true);
        }
    }

    #[test]
    fn a_queue_that_stays_full_sheds_until_half_empty() {
        let mut gate = ShedGate::new(0);
        let full = load(Some(Refusal::QueueFull), 100);
        offer(&mut gate, 10, 90);
        assert_eq!(gate.evaluate(10 * MS, &full), None, "window not over yet");
        assert_eq!(
            gate.evaluate(WINDOW_NS, &full),
            Some(Some(ShedReason::QueueFull))
        );
        assert_eq!(gate.shed(), Some(ShedReason::QueueFull));
        assert_eq!(gate.evaluate(WINDOW_NS + MS, &load(None, 51)), None);
        assert_eq!(
            gate.evaluate(WINDOW_NS + 2 * MS, &load(None, 50)),
            Some(None)
        );
        assert_eq!(gate.shed(), None);
        // Refusals from before the pause do not count against the resumed traffic.
        assert_eq!(gate.evaluate(2 * WINDOW_NS + 2 * MS, &full), None);
    }

    #[test]
    fn a_dead_shadow_sheds_until_its_back_off_runs_out() {
        let mut gate = ShedGate::new(0);
        let down = load(Some(Refusal::ShadowDown), 0);
        offer(&mut gate, 1, 40);
        assert_eq!(
            gate.evaluate(WINDOW_NS, &down),
            Some(Some(ShedReason::ShadowDown))
        );
        // An empty queue does not resume a dead shadow's target...
        assert_eq!(gate.evaluate(2 * WINDOW_NS, &down), None);
        // ...the end of the back-off does.
        assert_eq!(gate.evaluate(3 * WINDOW_NS, &load(None, 0)), Some(None));
    }

    #[test]
    fn a_minority_of_refusals_or_little_traffic_never_sheds() {
        let mut gate = ShedGate::new(0);
        let full = load(Some(Refusal::QueueFull), 100);
        // A burst that overflows the queue for a moment: most requests still go through.
        offer(&mut gate, 60, 40);
        assert_eq!(gate.evaluate(WINDOW_NS, &full), None);
        // Every request refused, but too few to judge.
        offer(&mut gate, 0, MIN_OFFERED - 1);
        assert_eq!(gate.evaluate(2 * WINDOW_NS, &full), None);
        // Each window is judged on its own requests.
        offer(&mut gate, 0, MIN_OFFERED);
        assert_eq!(
            gate.evaluate(3 * WINDOW_NS, &full),
            Some(Some(ShedReason::QueueFull))
        );
    }
}
