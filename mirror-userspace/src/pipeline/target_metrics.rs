//! Metric handles of each target, resolved once, and the counters the pipeline bumps. Every
//! labelled counter is created with each of its known label values at start-up (`code` aside),
//! so that `rate()` and alerts see a 0 before the first event.

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use super::{Pipeline, Target};
use crate::{
    hash::HashMap,
    http::{LossReason, SkipReason, UnpairedReason},
    metrics::{
        EstimateCounter, Metrics, TargetDirectionLabels, TargetLabels, TargetReasonLabels,
        TargetRoleCodeLabels, TargetRoleLabels,
    },
    policy,
};

/// `mirror_requests_skipped_total{reason}` values besides the policy's and the framing's.
const UNREWRITABLE: &str = "unrewritable";

/// `mirror_requests_lost_total{reason}` value of a loss.
pub(super) const fn loss_label(reason: LossReason) -> &'static str {
    match reason {
        LossReason::Gap => "gap",
        LossReason::Malformed => "malformed",
        LossReason::Truncated => "truncated",
        LossReason::Reset => "reset",
        LossReason::Evicted(_) => "evicted",
        LossReason::Skipped => "connection_skipped",
    }
}

const LOSSES: [LossReason; 6] = [
    LossReason::Gap,
    LossReason::Malformed,
    LossReason::Truncated,
    LossReason::Reset,
    LossReason::Evicted(crate::reassembly::EvictionReason::Idle),
    LossReason::Skipped,
];

/// Metric handles of one target, resolved once (the per-shadow ones are in `shadows`).
pub(super) struct TargetMetrics {
    pub(super) skipped: HashMap<&'static str, Counter>,
    /// The primary's responses by status code.
    pub(super) responses: HashMap<u16, Counter>,
    lost: HashMap<&'static str, Counter>,
    connections_skipped: HashMap<&'static str, Counter>,
    unpaired: HashMap<&'static str, Counter>,
    /// Per direction (request, response).
    pub(super) gaps: [Counter; 2],
    pub(super) gap_bytes: [Counter; 2],
    lost_estimated: EstimateCounter,
    /// Wire bytes and count of the requests framed, for the mean request size.
    request_bytes: u64,
    requests_framed: u64,
    pub(super) requests: Counter,
    pub(super) parse_errors: Counter,
    pub(super) primary_duration: Histogram,
}

/// One counter per label value of `family`, created now.
fn counters<'a>(
    family: &prometheus_client::metrics::family::Family<TargetReasonLabels, Counter>,
    target: &str,
    reasons: impl IntoIterator<Item = &'a str>,
) -> HashMap<&'static str, Counter>
where
    'a: 'static,
{
    reasons
        .into_iter()
        .map(|reason| {
            let labels = TargetReasonLabels {
                target: target.to_owned(),
                reason,
            };
            (reason, family.get_or_create_owned(&labels))
        })
        .collect()
}

impl TargetMetrics {
    pub(super) fn new(metrics: &Metrics, name: &str) -> Self {
        let target = TargetLabels {
            target: name.to_owned(),
        };
        let direction = |direction| TargetDirectionLabels {
            target: name.to_owned(),
            direction,
        };
        let skip_reasons = policy::SkipReason::ALL
            .iter()
            .map(|reason| reason.as_str())
            .chain(SkipReason::REQUEST.iter().map(|reason| reason.as_str()))
            .chain([UNREWRITABLE]);
        let unpaired_reasons = UnpairedReason::ALL.iter().map(|reason| reason.as_str());
        Self {
            skipped: counters(&metrics.requests_skipped, name, skip_reasons),
            responses: HashMap::default(),
            lost: counters(&metrics.requests_lost, name, LOSSES.map(loss_label)),
            connections_skipped: counters(
                &metrics.connections_skipped,
                name,
                SkipReason::CONNECTION.iter().map(|reason| reason.as_str()),
            ),
            unpaired: counters(&metrics.responses_unpaired, name, unpaired_reasons),
            gaps: ["request", "response"]
                .map(|side| metrics.target_gaps.get_or_create_owned(&direction(side))),
            gap_bytes: ["request", "response"].map(|side| {
                metrics
                    .target_gap_bytes
                    .get_or_create_owned(&direction(side))
            }),
            lost_estimated: metrics.requests_lost_estimated.get_or_create_owned(&target),
            request_bytes: 0,
            requests_framed: 0,
            requests: metrics.requests.get_or_create_owned(&target),
            parse_errors: metrics.parse_errors.get_or_create_owned(&target),
            primary_duration: metrics
                .response_duration
                .get_or_create_owned(&TargetRoleLabels {
                    target: name.to_owned(),
                    role: "primary",
                    shadow: String::new(),
                }),
        }
    }

    pub(super) fn lost(&self, reason: LossReason) -> &Counter {
        &self.lost[loss_label(reason)]
    }

    pub(super) fn connection_skipped(&self, reason: SkipReason) -> &Counter {
        &self.connections_skipped[reason.as_str()]
    }

    pub(super) fn unpaired(&self, reason: UnpairedReason) -> &Counter {
        &self.unpaired[reason.as_str()]
    }

    /// A request of `len` wire bytes was framed.
    pub(super) fn request_bytes(&mut self, len: usize) {
        self.request_bytes += len as u64;
        self.requests_framed += 1;
    }

    /// `bytes` request bytes were not framed: they held about `bytes` over the mean request
    /// size requests (nothing is estimated before a first request gives a size).
    pub(super) fn unframed(&self, bytes: u64) {
        if self.requests_framed > 0 && self.request_bytes > 0 {
            let mean = self.request_bytes as f64 / self.requests_framed as f64;
            self.lost_estimated.inc_by(bytes as f64 / mean);
        }
    }
}

impl Pipeline {
    pub(super) fn target_metrics(&self, name: &str) -> TargetMetrics {
        TargetMetrics::new(&self.metrics, name)
    }

    pub(super) fn skipped(&mut self, target: usize, reason: &'static str) {
        let Target {
            config, metrics, ..
        } = &mut self.targets[target];
        metrics
            .skipped
            .entry(reason)
            .or_insert_with(|| {
                self.metrics
                    .requests_skipped
                    .get_or_create_owned(&TargetReasonLabels {
                        target: config.name.clone(),
                        reason,
                    })
            })
            .inc();
    }

    /// Counts one of the primary's responses by status code.
    pub(super) fn primary_response(&mut self, target: usize, code: u16) {
        let Target {
            config, metrics, ..
        } = &mut self.targets[target];
        metrics
            .responses
            .entry(code)
            .or_insert_with(|| {
                self.metrics
                    .responses
                    .get_or_create_owned(&TargetRoleCodeLabels {
                        target: config.name.clone(),
                        role: "primary",
                        shadow: String::new(),
                        code,
                    })
            })
            .inc();
    }
}
