//! One target's shadows: each candidate and the baseline has its own rewriter (the `host`
//! setting may name its authority), replay pool (queue, connections, timeout) and metrics, so a
//! slow challenger delays no other's replays.

use std::sync::Arc;

use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};
use tokio::sync::mpsc;

use super::{PipelineSettings, Target, evidence::DigestOnly, exchange_log::ShadowIdentity};
use crate::{
    capture::SelfTraffic,
    compare::{ShadowSet, shadows_of},
    config::{ShadowConfig, TargetConfig},
    hash::HashMap,
    metrics::{
        Metrics, TargetKindLabels, TargetOutcomeLabels, TargetRoleCodeLabels, TargetRoleLabels,
        TargetShadowLabels, TargetShadowReasonLabels,
    },
    replay::{ReplayConfig, ReplayOutcome, ReplayResult, Replayer},
    rewrite::Rewriter,
    shed::ReplayLoad,
};

/// `mirror_replays_total{outcome}` values.
const OUTCOMES: [&str; 4] = [
    ReplayOutcome::Ok.as_str(),
    ReplayOutcome::Error.as_str(),
    ReplayOutcome::Timeout.as_str(),
    "dropped",
];

/// `mirror_comparisons_cancelled_total{reason}` values besides the unpaired reasons.
const CANCELLED: [&str; 2] = ["response_lost", "expired"];

/// Metric handles of one shadow, resolved once.
pub(super) struct ShadowMetrics {
    replays: HashMap<&'static str, Counter>,
    pub(super) queue_depth: Gauge,
    pub(super) duration: Histogram,
    responses: HashMap<u16, Counter>,
    pub(super) status_mismatches: Counter,
    pub(super) body_mismatches: Counter,
    pub(super) comparisons: Counter,
    digest_only: HashMap<&'static str, Counter>,
    cancelled: HashMap<&'static str, Counter>,
    target: String,
    role: &'static str,
}

impl ShadowMetrics {
    fn new(metrics: &Metrics, target: &str, shadow: &ShadowConfig) -> Self {
        let name = || shadow.name.clone();
        let role = if shadow.baseline {
            "baseline"
        } else {
            "shadow"
        };
        let replays = OUTCOMES
            .iter()
            .map(|&outcome| {
                let labels = TargetOutcomeLabels {
                    target: target.to_owned(),
                    shadow: name(),
                    outcome,
                };
                (outcome, metrics.replays.get_or_create_owned(&labels))
            })
            .collect();
        let cancelled = crate::http::UnpairedReason::ALL
            .iter()
            .map(|reason| reason.as_str())
            .chain(CANCELLED)
            .map(|reason| {
                let labels = TargetShadowReasonLabels {
                    target: target.to_owned(),
                    shadow: name(),
                    reason,
                };
                (
                    reason,
                    metrics.comparisons_cancelled.get_or_create_owned(&labels),
                )
            })
            .collect();
        let digest_only = DigestOnly::ALL
            .iter()
            .map(|reason| {
                let labels = TargetShadowReasonLabels {
                    target: target.to_owned(),
                    shadow: name(),
                    reason: reason.as_str(),
                };
                (
                    reason.as_str(),
                    metrics.comparisons_digest_only.get_or_create_owned(&labels),
                )
            })
            .collect();
        metrics
            .shadow_info
            .get_or_create(&TargetRoleLabels {
                target: target.to_owned(),
                role,
                shadow: name(),
            })
            .set(1);
        let kind = |kind| TargetKindLabels {
            target: target.to_owned(),
            shadow: name(),
            kind,
        };
        Self {
            replays,
            queue_depth: metrics
                .replay_queue_depth
                .get_or_create_owned(&TargetShadowLabels {
                    target: target.to_owned(),
                    shadow: name(),
                }),
            duration: metrics
                .response_duration
                .get_or_create_owned(&TargetRoleLabels {
                    target: target.to_owned(),
                    role,
                    shadow: name(),
                }),
            responses: HashMap::default(),
            status_mismatches: metrics.mismatches.get_or_create_owned(&kind("status")),
            body_mismatches: metrics.mismatches.get_or_create_owned(&kind("body")),
            comparisons: metrics
                .comparisons
                .get_or_create_owned(&TargetShadowLabels {
                    target: target.to_owned(),
                    shadow: name(),
                }),
            digest_only,
            cancelled,
            target: target.to_owned(),
            role,
        }
    }
}

/// One shadow of a target.
pub(super) struct Shadow {
    pub(super) name: Arc<str>,
    config: ShadowConfig,
    pub(super) rewriter: Rewriter,
    pub(super) replayer: Replayer,
    pub(super) metrics: ShadowMetrics,
}

impl Shadow {
    /// The state of `config`'s shadow: its replay pool is taken from `previous` (the target's
    /// shadows before a reload) when its settings did not change, else started.
    pub(super) fn new(
        target: &TargetConfig,
        config: &ShadowConfig,
        previous: &mut Vec<Shadow>,
        metrics: &Metrics,
        settings: &PipelineSettings,
        self_traffic: Option<&SelfTraffic>,
        results: &mpsc::UnboundedSender<ReplayResult>,
    ) -> Self {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let kept = previous
            .iter()
            .position(|old| old.config == *config)
            .map(|at| previous.swap_remove(at).replayer);
        let replayer = kept.unwrap_or_else(|| {
            Replayer::spawn(
                ReplayConfig {
                    target: target.name.clone(),
                    shadow: Arc::clone(&name),
                    shadow_host: config.url.host().to_owned(),
                    shadow_port: config.url.port(),
                    queue: config.queue,
                    concurrency: config.concurrency,
                    timeout: std::time::Duration::from_millis(config.timeout_ms),
                    hold_bodies: settings.hold_bodies.clone(),
                    connections_opened: metrics.shadow_connections_opened.get_or_create_owned(
                        &TargetShadowLabels {
                            target: target.name.clone(),
                            shadow: name.to_string(),
                        },
                    ),
                },
                self_traffic.cloned(),
                results.clone(),
            )
        });
        Self {
            name,
            config: config.clone(),
            rewriter: Rewriter::new(target, &config.url).with_marker(settings.marker.clone()),
            replayer,
            metrics: ShadowMetrics::new(metrics, &target.name, config),
        }
    }

    /// Its name and role, for the exchange log.
    pub(super) fn identity(&self) -> ShadowIdentity<'_> {
        ShadowIdentity {
            name: &self.name,
            baseline: self.config.baseline,
        }
    }

    /// Counts a pair compared by digest only.
    pub(super) fn digest_only(&self, reason: DigestOnly) {
        if let Some(counter) = self.metrics.digest_only.get(reason.as_str()) {
            counter.inc();
        }
    }

    /// Counts one replay's end (`dropped` included).
    pub(super) fn replayed(&mut self, outcome: &'static str) {
        if let Some(counter) = self.metrics.replays.get(outcome) {
            counter.inc();
        }
    }

    /// Counts one of the shadow's responses by status code.
    pub(super) fn response(&mut self, code: u16, metrics: &Metrics) {
        let ShadowMetrics {
            responses,
            target,
            role,
            ..
        } = &mut self.metrics;
        responses
            .entry(code)
            .or_insert_with(|| {
                metrics
                    .responses
                    .get_or_create_owned(&TargetRoleCodeLabels {
                        target: target.clone(),
                        role,
                        shadow: self.config.name.clone(),
                        code,
                    })
            })
            .inc();
    }
}

impl Target {
    /// Counts the comparisons of `waiting` shadows cancelled for `reason`.
    pub(super) fn cancelled(&self, waiting: ShadowSet, reason: &str) {
        for shadow in shadows_of(waiting) {
            if let Some(counter) = self
                .shadows
                .get(shadow)
                .and_then(|shadow| shadow.metrics.cancelled.get(reason))
            {
                counter.inc();
            }
        }
    }
}

/// What the shedding decision sees of a target with several shadows: it is shed only when every
/// shadow refuses, and records again as soon as one can take more, so the least loaded shadow
/// speaks for the target.
pub(super) fn load(shadows: &[Shadow]) -> ReplayLoad {
    let loads = shadows.iter().map(|shadow| {
        let replayer = &shadow.replayer;
        ReplayLoad {
            refusal: replayer.would_refuse(),
            queue_depth: replayer.queue_depth(),
            queue_capacity: replayer.queue_capacity(),
        }
    });
    loads
        .min_by(|a, b| {
            let share = |load: &ReplayLoad| {
                (
                    load.refusal.is_some(),
                    load.queue_depth * 1_000 / load.queue_capacity.max(1),
                )
            };
            share(a).cmp(&share(b))
        })
        .unwrap_or(ReplayLoad {
            refusal: None,
            queue_depth: 0,
            queue_capacity: 1,
        })
}
