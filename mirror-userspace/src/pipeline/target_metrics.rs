//! Metric handles of each target, resolved once, and the counters the pipeline bumps.

use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};

use super::{Pipeline, Target};
use crate::{
    hash::HashMap,
    metrics::{
        TargetKindLabels, TargetLabels, TargetOutcomeLabels, TargetReasonLabels,
        TargetRoleCodeLabels, TargetRoleLabels,
    },
};

/// Metric handles of one target, resolved once (label sets with the target's name are hashed
/// and allocated only the first time a reason, outcome or status code shows up).
pub(super) struct TargetMetrics {
    pub(super) skipped: HashMap<&'static str, Counter>,
    pub(super) replays: HashMap<&'static str, Counter>,
    pub(super) responses: HashMap<(&'static str, u16), Counter>,
    pub(super) requests: Counter,
    pub(super) parse_errors: Counter,
    pub(super) queue_depth: Gauge,
    pub(super) primary_duration: Histogram,
    pub(super) shadow_duration: Histogram,
    pub(super) status_mismatches: Counter,
    pub(super) body_mismatches: Counter,
}

impl Pipeline {
    pub(super) fn target_metrics(&self, name: &str) -> TargetMetrics {
        let metrics = &self.metrics;
        let target = TargetLabels {
            target: name.to_owned(),
        };
        let role = |role| TargetRoleLabels {
            target: name.to_owned(),
            role,
        };
        let kind = |kind| TargetKindLabels {
            target: name.to_owned(),
            kind,
        };
        TargetMetrics {
            skipped: HashMap::default(),
            replays: HashMap::default(),
            responses: HashMap::default(),
            requests: metrics.requests.get_or_create_owned(&target),
            parse_errors: metrics.parse_errors.get_or_create_owned(&target),
            queue_depth: metrics.replay_queue_depth.get_or_create_owned(&target),
            primary_duration: metrics
                .response_duration
                .get_or_create_owned(&role("primary")),
            shadow_duration: metrics
                .response_duration
                .get_or_create_owned(&role("shadow")),
            status_mismatches: metrics.mismatches.get_or_create_owned(&kind("status")),
            body_mismatches: metrics.mismatches.get_or_create_owned(&kind("body")),
        }
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

    pub(super) fn replayed(&mut self, target: usize, outcome: &'static str) {
        let Target {
            config, metrics, ..
        } = &mut self.targets[target];
        metrics
            .replays
            .entry(outcome)
            .or_insert_with(|| {
                self.metrics
                    .replays
                    .get_or_create_owned(&TargetOutcomeLabels {
                        target: config.name.clone(),
                        outcome,
                    })
            })
            .inc();
    }

    pub(super) fn response(&mut self, target: usize, role: &'static str, code: u16) {
        let Target {
            config, metrics, ..
        } = &mut self.targets[target];
        metrics
            .responses
            .entry((role, code))
            .or_insert_with(|| {
                self.metrics
                    .responses
                    .get_or_create_owned(&TargetRoleCodeLabels {
                        target: config.name.clone(),
                        role,
                        code,
                    })
            })
            .inc();
    }
}
