//! Configuration reload: the targets replaced without touching capture or reassembly state.

use super::*;

impl Pipeline {
    /// Replaces the targets (configuration reload) without touching capture or reassembly
    /// state: sampling, filters, headers and shadows change for the next request. A shadow
    /// whose replay settings are unchanged keeps its queue and connections; others get a new
    /// replay pool (the old one finishes its queue). Open comparisons are dropped. Shed windows
    /// start at `now_ns`.
    pub fn reload(&mut self, targets: &[TargetConfig], now_ns: u64) {
        let mut previous: HashMap<String, Target> = self
            .targets
            .drain(..)
            .map(|target| (target.config.name.clone(), target))
            .collect();
        // The classifier records every reloaded port again (`TargetPort::resampled`).
        for target in previous
            .values()
            .filter(|target| target.shed.shed().is_some())
        {
            self.tracker.expect_gaps(target.config.port);
        }
        self.by_port.clear();
        self.comparator = Comparator::new(COMPARE_TTL_NS, COMPARE_MAX_ENTRIES);
        self.metrics.shadow_info.clear();
        let shared_evidence = self.evidence.clone();
        let mut evidence = shared_evidence.lock();
        let mut previous_evidence: HashMap<String, TargetEvidence> = evidence
            .targets
            .drain(..)
            .map(|target| (target.target.clone(), target))
            .collect();
        // Primary bodies are copied only while some target compares responses.
        let compares = targets.iter().any(|target| target.compare_responses);
        self.tracker
            .hold_bodies(self.settings.hold_bodies.clone().filter(|_| compares));
        for (index, config) in targets.iter().enumerate() {
            self.by_port.insert(config.port, index);
            let mut old_shadows = previous
                .remove(&config.name)
                .map(|old| old.shadows)
                .unwrap_or_default();
            let shadows = config
                .shadows
                .iter()
                .map(|shadow| {
                    Shadow::new(
                        config,
                        shadow,
                        &mut old_shadows,
                        &self.metrics,
                        &self.settings,
                        self.self_traffic.as_ref(),
                        &self.results,
                    )
                })
                .collect();
            // Connection sampling happens in the classifier (see `commands::run`): what arrives
            // here is already sampled, so the policy must not sample it a second time.
            let mut policy_config = config.clone();
            if policy_config.sample_by == SampleBy::Connection {
                policy_config.sample_percent = 100.0;
            }
            // A target keeps its evidence while its shadows and their roles stay the same.
            let roles: Vec<ShadowRole> = config
                .shadows
                .iter()
                .map(|shadow| ShadowRole {
                    name: shadow.name.clone(),
                    baseline: shadow.baseline,
                })
                .collect();
            evidence.targets.push(
                previous_evidence
                    .remove(&config.name)
                    .filter(|kept| kept.shadows == roles)
                    .unwrap_or_else(|| {
                        TargetEvidence::new(&config.name, roles, &self.settings.verdict)
                    }),
            );
            self.targets.push(Target {
                config: config.clone(),
                policy: Policy::new(&policy_config),
                shadows,
                metrics: self.target_metrics(&config.name),
                last_mismatch_log_ns: 0,
                shed: ShedGate::new(now_ns),
                last_shed_log_ns: None,
                diff_rate: match self.settings.verdict.diff.max_per_second {
                    0 => None,
                    rate => Some(TokenBucket::new(rate)),
                },
            });
        }
    }
}
