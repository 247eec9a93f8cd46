//! Judging compared pairs and closing exchanges: mismatch counters and log lines per pair, the
//! field diff of each pair into the exchange's notes, and when the exchange closes, its diffs
//! into the evidence (together, so the baseline's is the candidates' noise reference) and its
//! record into the sink.

use tracing::info;

use super::{MISMATCH_LOG_INTERVAL_NS, Pipeline, evidence::DigestOnly, exchange_log::ExchangeLog};
use crate::{
    compare::{Closed, Verdict},
    verdict::FieldDiff,
};

/// What the comparator keeps per open exchange for the pipeline.
#[derive(Debug, Default)]
pub(super) struct ExchangeNotes {
    /// The field diffs of the shadows judged so far, by shadow index.
    pub(super) diffs: Vec<(usize, FieldDiff)>,
    /// The sink's record in the making (sink on only).
    pub(super) log: Option<Box<ExchangeLog>>,
    /// Compared field by field (sampled by `[verdict.diff] max_per_second`, for every shadow
    /// of the exchange alike); else by digest only.
    pub(super) field_diff: bool,
}

impl Pipeline {
    /// Takes the verdicts of one comparator step, and the exchange when that step closed it.
    pub(super) fn judged(
        &mut self,
        verdicts: Vec<Verdict>,
        mut closed: Option<Closed<ExchangeNotes>>,
        now_ns: u64,
    ) {
        for verdict in verdicts {
            let field_diff = match closed.as_ref() {
                Some(closed) => closed.extra.field_diff,
                None => self
                    .comparator
                    .extra_mut(&verdict.key)
                    .is_some_and(|notes| notes.field_diff),
            };
            let diff = self.judge(&verdict, now_ns, field_diff);
            let notes = match closed.as_mut() {
                Some(closed) => Some(&mut closed.extra),
                None => self.comparator.extra_mut(&verdict.key),
            };
            let Some(notes) = notes else { continue };
            if let (Some(log), Some(sink)) = (notes.log.as_mut(), self.sink.as_ref()) {
                let shadow = &self.targets[verdict.target].shadows[verdict.shadow];
                log.judged(sink, shadow.identity(), &verdict);
            }
            if let Some(diff) = diff {
                notes.diffs.push((verdict.shadow, diff));
            }
        }
        if let Some(closed) = closed {
            self.close(closed, "expired");
        }
    }

    /// Counts one pair's judgement; returns its field diff when the exchange is sampled for one
    /// (`field_diff`) and both bodies were held.
    fn judge(&mut self, verdict: &Verdict, now_ns: u64, field_diff: bool) -> Option<FieldDiff> {
        let target = &mut self.targets[verdict.target];
        let shadow = &target.shadows[verdict.shadow];
        shadow.metrics.comparisons.inc();
        if verdict.status_mismatch {
            shadow.metrics.status_mismatches.inc();
        }
        if verdict.body_mismatch {
            shadow.metrics.body_mismatches.inc();
        }
        if (verdict.status_mismatch || verdict.body_mismatch)
            && now_ns.saturating_sub(target.last_mismatch_log_ns) >= MISMATCH_LOG_INTERVAL_NS
        {
            target.last_mismatch_log_ns = now_ns;
            info!(
                target = %target.config.name,
                shadow = %shadow.name,
                method = %String::from_utf8_lossy(verdict.request.method()),
                request_target = %String::from_utf8_lossy(verdict.request.target()),
                primary_status = verdict.primary.status,
                shadow_status = verdict.observed.status,
                body_differs = verdict.body_mismatch,
                "shadow response differs (at most one such line per second per target)"
            );
        }
        let comparer = self.comparer.as_ref()?;
        if !field_diff {
            shadow.digest_only(DigestOnly::DiffRate);
            return None;
        }
        match comparer.compare(&verdict.primary, &verdict.observed) {
            Ok((diff, digest_only)) => {
                if let Some(reason) = digest_only {
                    shadow.digest_only(reason);
                }
                Some(diff)
            }
            Err(reason) => {
                shadow.digest_only(reason);
                None
            }
        }
    }

    /// An exchange left the comparator: its unjudged shadows are cancelled for `reason`, the
    /// field diffs of the judged ones become evidence, and its record goes to the sink.
    pub(super) fn close(&mut self, closed: Closed<ExchangeNotes>, reason: &str) {
        let Some(target) = self.targets.get(closed.target) else {
            return;
        };
        target.cancelled(closed.waiting, reason);
        let ExchangeNotes { diffs, log, .. } = closed.extra;
        if !diffs.is_empty()
            && let Some(evidence) = self.evidence.lock().targets.get_mut(closed.target)
        {
            evidence.record(&diffs);
        }
        if let (Some(log), Some(sink)) = (log, &self.sink)
            && let Some(record) =
                log.finish(sink, &target.config.name, closed.primary.as_ref(), &diffs)
        {
            // Dropped and counted by the sink when its queue is full.
            sink.try_submit(record);
        }
    }
}
