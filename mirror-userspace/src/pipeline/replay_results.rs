//! What comes back from the shadows: each finished replay accounted, its response handed to
//! the comparison.

use super::*;

impl Pipeline {
    /// Accounts one finished replay.
    pub fn on_replay_result(&mut self, result: ReplayResult, now_ns: u64) {
        let Some(target) = self.target_of(result.key.flow.server.port()) else {
            return;
        };
        let Some(shadow_index) = self.targets[target]
            .shadows
            .iter()
            .position(|shadow| shadow.name == result.shadow)
        else {
            // A shadow removed by a reload, finishing its queue.
            return;
        };
        let metrics = &self.metrics;
        let shadow = &mut self.targets[target].shadows[shadow_index];
        shadow.replayed(result.outcome.as_str());
        match (result.outcome, result.response) {
            (ReplayOutcome::Ok, Some((response, latency))) => {
                shadow.response(response.status, metrics);
                if let Some(latency) = latency {
                    shadow.metrics.duration.observe(latency.as_secs_f64());
                }
                let observed = Observed {
                    status: response.status,
                    body_digest: response.body_digest,
                    head: response.head,
                    body: response.body,
                    latency_seconds: latency.map(|latency| latency.as_secs_f64()),
                };
                let (verdict, closed) =
                    self.comparator
                        .on_shadow(result.key, shadow_index, observed);
                self.judged(verdict.into_iter().collect(), closed, now_ns);
            }
            // Counted by its outcome (error, timeout): nothing came back to compare.
            (outcome, _) => {
                if let Some(log) = self
                    .comparator
                    .extra_mut(&result.key)
                    .and_then(|notes| notes.log.as_mut())
                {
                    let identity = self.targets[target].shadows[shadow_index].identity();
                    log.failed(shadow_index, identity, outcome);
                }
                if let Some(closed) = self.comparator.cancel_shadow(result.key, shadow_index) {
                    self.close(closed, "expired");
                }
            }
        }
    }
}
