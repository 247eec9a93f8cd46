//! The promotion policy and the verdict it gives.
//!
//! Per candidate shadow (a baseline shadow is never judged), in order:
//! 1. **inconclusive** if fewer than `min_samples` exchanges were compared (default 200: a 5xx
//!    share or a field rate from fewer is mostly noise);
//! 2. **fail** with one reason per limit exceeded:
//!    - latency: the candidate's P50 above `max_p50_ratio` (default 1.2) times the primary's, or
//!      its P99 above `max_p99_ratio` (default 1.5) times the primary's — and in both cases by
//!      more than `latency_min_extra_seconds` (default 0.005 s, so jitter on a fast path is not a
//!      regression). P99 gets more room than P50 because tails are noisier. Skipped while either
//!      side has fewer than `min_samples` latency observations;
//!    - errors: the candidate's 5xx share exceeds the primary's by more than
//!      `max_error_rate_delta` (default 0.01, one point);
//!    - fields: a `real` field ([`super::fields`]) whose difference rate exceeds
//!      `max_real_diff_rate` (default 0: every `real` field fails, its classification thresholds
//!      have already absorbed the noise);
//!    - drift: a `drifted` numeric field ([`super::drift`]);
//! 3. **pass** otherwise.
//!
//! Overall: `fail` if any candidate fails, else `inconclusive` if any candidate is inconclusive
//! or there is no candidate at all (nothing was judged: no evidence to promote on), else `pass`.
//!
//! The policy deserialises from TOML; every key is optional (defaults above and in
//! [`FieldConfig`], [`DriftConfig`], [`DiffConfig`]):
//!
//! ```toml
//! min_samples = 200
//! max_p50_ratio = 1.2
//! max_p99_ratio = 1.5
//! latency_min_extra_seconds = 0.005
//! max_error_rate_delta = 0.01
//! max_real_diff_rate = 0.0
//!
//! [diff]
//! ignore_fields = ["/meta/request_id", "/items/*/etag"]
//! headers = ["content-type", "cache-control"]
//!
//! [fields]
//! relative_threshold = 0.2
//! absolute_threshold = 0.03
//!
//! [drift]
//! threshold = 0.1
//! min_samples = 1000
//! ```

use serde::Deserialize;

use super::diff::DiffConfig;
use super::drift::{DriftConfig, DriftStat};
use super::fields::{FieldClass, FieldConfig, FieldStat, OTHER};
use super::report::{
    DriftEntry, ErrorEntry, FieldEntry, LatencyEntry, Outcome, Report, ShadowReport, TargetReport,
};
use crate::stats::{Bucket, Quantile, quantile};

/// What a promotion must satisfy (TOML keys as the field names; see the module docs).
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Exchanges compared per candidate before any verdict. Default 200.
    pub min_samples: u64,
    /// Largest candidate P50 / primary P50. Default 1.2.
    pub max_p50_ratio: f64,
    /// Largest candidate P99 / primary P99. Default 1.5.
    pub max_p99_ratio: f64,
    /// A latency regression must also add more than this (seconds). Default 0.005.
    pub latency_min_extra_seconds: f64,
    /// Largest candidate 5xx share minus the primary's. Default 0.01.
    pub max_error_rate_delta: f64,
    /// Largest difference rate of a `real` field. Default 0.
    pub max_real_diff_rate: f64,
    /// How exchanges are compared.
    pub diff: DiffConfig,
    /// How fields are classified.
    pub fields: FieldConfig,
    /// How drift is judged.
    pub drift: DriftConfig,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_samples: 200,
            max_p50_ratio: 1.2,
            max_p99_ratio: 1.5,
            latency_min_extra_seconds: 0.005,
            max_error_rate_delta: 0.01,
            max_real_diff_rate: 0.0,
            diff: DiffConfig::default(),
            fields: FieldConfig::default(),
            drift: DriftConfig::default(),
        }
    }
}

/// A shadow's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A new version, judged.
    Candidate,
    /// A second copy of the primary's version: the noise reference, never judged.
    Baseline,
}

/// One side's latency.
#[derive(Clone, Debug, PartialEq)]
pub enum Latency {
    /// Quantiles already known (seconds).
    Quantiles {
        /// Observations behind them.
        samples: u64,
        /// Median.
        p50: f64,
        /// 99th percentile.
        p99: f64,
    },
    /// Cumulative histogram buckets (seconds), e.g. the daemon's Prometheus histogram; the
    /// quantiles are estimated as PromQL's `histogram_quantile` does.
    Buckets(Vec<Bucket>),
}

impl Latency {
    /// `(samples, p50, p99)`.
    fn quantiles(&self) -> (u64, Option<f64>, Option<f64>) {
        match self {
            Self::Quantiles { samples, p50, p99 } => (*samples, Some(*p50), Some(*p99)),
            Self::Buckets(buckets) => {
                let samples = buckets
                    .iter()
                    .map(|bucket| bucket.count)
                    .fold(0.0, f64::max);
                let at = |q| quantile(q, buckets).map(Quantile::promql_value);
                (samples as u64, at(0.5), at(0.99))
            }
        }
    }
}

/// Responses and 5xx responses per side, over the compared exchanges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// The primary's responses.
    pub primary_responses: u64,
    /// Of those, with a 5xx status.
    pub primary_5xx: u64,
    /// The shadow's responses.
    pub shadow_responses: u64,
    /// Of those, with a 5xx status.
    pub shadow_5xx: u64,
}

/// What is known about one shadow of a target.
#[derive(Clone, Debug, PartialEq)]
pub struct ShadowInput {
    /// The shadow's name.
    pub shadow: String,
    /// Candidate or baseline.
    pub role: Role,
    /// Exchanges compared (primary and shadow responses paired).
    pub samples: u64,
    /// The primary's and this shadow's latency, if measured.
    pub latency: Option<(Latency, Latency)>,
    /// 5xx counts, if measured.
    pub errors: Option<ErrorCounts>,
    /// Its fields ([`super::fields::FieldTracker::fields`]).
    pub fields: Vec<FieldStat>,
    /// Its numeric fields' drift ([`super::drift::DriftTracker::drift`]).
    pub drift: Vec<DriftStat>,
}

/// One target's shadows.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetInput {
    /// The target's name.
    pub target: String,
    /// Its shadows, candidates and baseline.
    pub shadows: Vec<ShadowInput>,
}

impl Policy {
    /// The verdict over all targets (see the module docs).
    pub fn judge(&self, targets: &[TargetInput]) -> Report {
        let targets: Vec<TargetReport> = targets
            .iter()
            .map(|target| TargetReport {
                target: target.target.clone(),
                baseline: target
                    .shadows
                    .iter()
                    .find(|shadow| shadow.role == Role::Baseline)
                    .map(|shadow| shadow.shadow.clone()),
                shadows: target
                    .shadows
                    .iter()
                    .filter(|shadow| shadow.role == Role::Candidate)
                    .map(|shadow| self.judge_shadow(shadow))
                    .collect(),
            })
            .collect();
        let verdict = targets
            .iter()
            .flat_map(|target| &target.shadows)
            .map(|shadow| shadow.verdict)
            .max()
            .unwrap_or(Outcome::Inconclusive);
        Report { verdict, targets }
    }

    /// One candidate's verdict.
    pub fn judge_shadow(&self, shadow: &ShadowInput) -> ShadowReport {
        let mut reasons = Vec::new();
        let mut notes = Vec::new();
        let latency = shadow.latency.as_ref().map(|(primary, candidate)| {
            self.check_latency(primary, candidate, &mut reasons, &mut notes)
        });
        let errors = shadow
            .errors
            .map(|errors| self.check_errors(&errors, &mut reasons));
        let fields = self.check_fields(&shadow.fields, &mut reasons, &mut notes);
        let drift = self.check_drift(&shadow.drift, &mut reasons, &mut notes);
        let verdict = if shadow.samples < self.min_samples {
            reasons.insert(
                0,
                format!(
                    "only {} exchanges compared (minimum {})",
                    shadow.samples, self.min_samples
                ),
            );
            Outcome::Inconclusive
        } else if reasons.is_empty() {
            Outcome::Pass
        } else {
            Outcome::Fail
        };
        if verdict == Outcome::Inconclusive {
            // Limits crossed on too few samples are reported, but as notes.
            notes.extend(reasons.drain(1..));
        }
        ShadowReport {
            shadow: shadow.shadow.clone(),
            verdict,
            samples: shadow.samples,
            reasons,
            notes,
            fields_compared: shadow.fields.len(),
            fields,
            drift,
            latency,
            errors,
        }
    }

    fn check_latency(
        &self,
        primary: &Latency,
        candidate: &Latency,
        reasons: &mut Vec<String>,
        notes: &mut Vec<String>,
    ) -> LatencyEntry {
        let (primary_samples, primary_p50, primary_p99) = primary.quantiles();
        let (candidate_samples, candidate_p50, candidate_p99) = candidate.quantiles();
        let entry = LatencyEntry {
            primary_p50,
            shadow_p50: candidate_p50,
            primary_p99,
            shadow_p99: candidate_p99,
        };
        if primary_samples.min(candidate_samples) < self.min_samples {
            notes.push(format!(
                "latency not judged: {candidate_samples} candidate and {primary_samples} primary \
                 observations (minimum {})",
                self.min_samples
            ));
            return entry;
        }
        for (name, primary, candidate, limit) in [
            ("P50", primary_p50, candidate_p50, self.max_p50_ratio),
            ("P99", primary_p99, candidate_p99, self.max_p99_ratio),
        ] {
            let (Some(primary), Some(candidate)) = (primary, candidate) else {
                notes.push(format!("{name} latency unknown"));
                continue;
            };
            if candidate > primary * limit && candidate - primary > self.latency_min_extra_seconds {
                let ratio = if primary > 0.0 {
                    format!("{:.2}×", candidate / primary)
                } else {
                    "above".to_owned()
                };
                reasons.push(format!(
                    "{name} latency {candidate:.3}s is {ratio} the primary's {primary:.3}s \
                     (limit {limit}×)"
                ));
            }
        }
        entry
    }

    fn check_errors(&self, errors: &ErrorCounts, reasons: &mut Vec<String>) -> ErrorEntry {
        let share = |part: u64, whole: u64| {
            if whole == 0 {
                0.0
            } else {
                part as f64 / whole as f64
            }
        };
        let entry = ErrorEntry {
            primary_rate: share(errors.primary_5xx, errors.primary_responses),
            shadow_rate: share(errors.shadow_5xx, errors.shadow_responses),
        };
        if entry.shadow_rate - entry.primary_rate > self.max_error_rate_delta {
            reasons.push(format!(
                "5xx in {} of responses vs the primary's {} (limit +{:.1} points)",
                percent(entry.shadow_rate),
                percent(entry.primary_rate),
                self.max_error_rate_delta * 100.0
            ));
        }
        entry
    }

    fn check_fields(
        &self,
        fields: &[FieldStat],
        reasons: &mut Vec<String>,
        notes: &mut Vec<String>,
    ) -> Vec<FieldEntry> {
        let mut entries: Vec<FieldEntry> = Vec::new();
        for stat in fields {
            let counts = &stat.counts;
            let class = stat.classification;
            if counts.diffs == 0 && counts.baseline_diffs == 0 {
                continue;
            }
            let baseline = match class.noise_rate {
                Some(rate) => format!("baseline {}", percent(rate)),
                None => "no baseline".to_owned(),
            };
            let subject = if stat.field == OTHER {
                "a field beyond the tracked ones (\"other\")"
            } else {
                stat.field.as_str()
            };
            let sentence = format!(
                "{subject} differs in {} of responses ({baseline})",
                percent(class.diff_rate)
            );
            match class.class {
                FieldClass::Real if class.diff_rate > self.max_real_diff_rate => {
                    reasons.push(sentence);
                }
                FieldClass::Real => notes.push(format!("{sentence}, within the policy")),
                FieldClass::Insufficient => notes.push(format!(
                    "{sentence}, too few samples to classify ({})",
                    counts.samples
                )),
                FieldClass::Noise => {}
            }
            entries.push(FieldEntry {
                field: stat.field.clone(),
                class: class.class,
                diff_rate: class.diff_rate,
                noise_rate: class.noise_rate,
                rule: class.rule,
                samples: counts.samples,
                noise_samples: counts.baseline_samples,
            });
        }
        let rank = |class: FieldClass| match class {
            FieldClass::Real => 0,
            FieldClass::Insufficient => 1,
            FieldClass::Noise => 2,
        };
        entries.sort_by(|a, b| {
            rank(a.class)
                .cmp(&rank(b.class))
                .then_with(|| b.diff_rate.total_cmp(&a.diff_rate))
                .then_with(|| a.field.cmp(&b.field))
        });
        entries
    }

    fn check_drift(
        &self,
        drift: &[DriftStat],
        reasons: &mut Vec<String>,
        notes: &mut Vec<String>,
    ) -> Vec<DriftEntry> {
        drift
            .iter()
            .map(|stat| {
                let (statistic, upper, a, b) = stat.ks.map_or((0.0, 0.0, 0.0, 0.0), |ks| {
                    (ks.statistic, ks.upper, ks.samples_a, ks.samples_b)
                });
                if stat.drifted {
                    reasons.push(format!(
                        "{} drifted: KS D = {statistic:.2} (limit {:.2}; {a} primary and {b} \
                         candidate values)",
                        stat.field, self.drift.threshold
                    ));
                } else if stat.enough_samples && !stat.resolved {
                    notes.push(format!(
                        "{}: drift not resolvable by the sketch's buckets (D between \
                         {statistic:.2} and {upper:.2})",
                        stat.field
                    ));
                }
                DriftEntry {
                    field: stat.field.clone(),
                    statistic,
                    drifted: stat.drifted,
                    upper,
                    primary_samples: a as u64,
                    shadow_samples: b as u64,
                }
            })
            .collect()
    }
}

/// A share as a percentage with one decimal: `20.1%`.
fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

#[cfg(test)]
#[path = "tests/policy.rs"]
mod tests;
