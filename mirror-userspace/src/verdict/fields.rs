//! Per-field difference statistics and their classification: `real`, `noise` or
//! `insufficient` (Diffy's three-way comparison).
//!
//! Counts, per (candidate, field), over the exchanges where the candidate's response was compared
//! with the primary's and the field was compared: `samples`, `diffs` (candidate differs from the
//! primary) and `volatile_diffs` (of those, between id- or clock-like values); and, over the
//! same requests where the *baseline* shadow (a second copy of the primary's version) was
//! compared too, `baseline_samples` and `baseline_diffs` (baseline differs from the primary at
//! that field). A field the candidate added has `baseline_diffs = 0`: the baseline never differed
//! there. The candidate's rate is `c = diffs / samples`, the noise rate `b = baseline_diffs /
//! baseline_samples`.
//!
//! Classification ([`classify`]), first rule that applies:
//! 1. `insufficient` (rule `min_samples`): `samples < min_samples`, or a baseline is configured
//!    and `baseline_samples < min_samples`.
//! 2. With a baseline (rule `baseline`): `real` when all of
//!    - `c − b > absolute_threshold` (default 0.03: three more responses in a hundred),
//!    - `(c − b) / (c + b) > relative_threshold` (default 0.2, Diffy's relative measure and
//!      default: `c > 1.5 b`),
//!    - `c − b − absolute_threshold > z_threshold × se` with `se = √(c(1−c)/samples +
//!      b(1−b)/baseline_samples)` (default `z_threshold` 3: the excess is not sampling noise,
//!      one-sided p ≈ 0.001; unpaired, hence conservative for these paired samples);
//!
//!    `noise` otherwise. Diffy itself defaults to relative 20 (%) and absolute 0.03 (%, of all
//!    requests), a display filter for a human; here the absolute threshold is 3 points because
//!    the verdict gates a promotion, and the z test makes 100 samples enough.
//! 3. Without a baseline (only `ignore_fields`, which never reach this module, and heuristics can
//!    call a field noise; `heuristics = true` by default): `noise` by rule `name` if the field's
//!    name is volatile, by rule `value` if at least 90% of its differences were between
//!    id- or clock-like values ([`super::heuristics`]); otherwise the rule-2 test with `b = 0`
//!    (rule `no_baseline`).
//!
//! Cardinality: at most `max_fields` (default 64) fields per candidate. When the table is full, a
//! field seen *differing* takes the slot of a tracked field that has never differed (on either
//! side), whose counts move to the field `other`; any other observation of an untracked field
//! counts under `other`. So fields that differ are the ones kept. A field tracked late starts its
//! counts on a difference, which biases its rate up by at most `1 / samples` (≤ 1% at the default
//! `min_samples`). Field names longer than [`MAX_FIELD_LEN`] bytes always count under `other`.
//! Memory: `max_fields + 1` entries per candidate.

use serde::{Deserialize, Serialize};

use super::diff::FieldDiff;
use super::heuristics::{VOLATILE_SHARE, name_is_volatile};
use super::pointer::field_name;
use crate::hash::HashMap;

/// The field that untracked fields are folded into.
pub const OTHER: &str = "other";

/// Longest field name tracked on its own (bytes).
pub const MAX_FIELD_LEN: usize = 256;

/// Thresholds and bounds of the field statistics (TOML keys as the field names).
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldConfig {
    /// `(c − b) / (c + b)` must exceed this for `real`. Default 0.2.
    pub relative_threshold: f64,
    /// `c − b` must exceed this for `real`. Default 0.03.
    pub absolute_threshold: f64,
    /// Standard errors by which `c − b` must exceed `absolute_threshold`. Default 3.
    pub z_threshold: f64,
    /// Samples (and baseline samples, with a baseline) below which a field is `insufficient`.
    /// Default 100.
    pub min_samples: u64,
    /// Fields tracked per candidate before folding into `other`. Default 64.
    pub max_fields: usize,
    /// Whether the name and value heuristics apply without a baseline. Default true.
    pub heuristics: bool,
}

impl Default for FieldConfig {
    fn default() -> Self {
        Self {
            relative_threshold: 0.2,
            absolute_threshold: 0.03,
            z_threshold: 3.0,
            min_samples: 100,
            max_fields: 64,
            heuristics: true,
        }
    }
}

/// The counters of one (candidate, field); they add up across nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FieldCounts {
    /// Exchanges where the field was compared (candidate vs primary).
    pub samples: u64,
    /// Of those, where it differed.
    pub diffs: u64,
    /// Of those, where every difference was between id- or clock-like values.
    pub volatile_diffs: u64,
    /// Of `samples`, the requests the baseline's response was compared for too.
    pub baseline_samples: u64,
    /// Of those, where the baseline differed from the primary at this field.
    pub baseline_diffs: u64,
}

impl FieldCounts {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &FieldCounts) {
        self.samples += other.samples;
        self.diffs += other.diffs;
        self.volatile_diffs += other.volatile_diffs;
        self.baseline_samples += other.baseline_samples;
        self.baseline_diffs += other.baseline_diffs;
    }

    /// `diffs / samples` (0 without samples).
    pub fn diff_rate(&self) -> f64 {
        rate(self.diffs, self.samples)
    }

    /// `baseline_diffs / baseline_samples`, if the baseline was compared.
    pub fn noise_rate(&self) -> Option<f64> {
        (self.baseline_samples > 0).then(|| rate(self.baseline_diffs, self.baseline_samples))
    }
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// A field's class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldClass {
    /// The candidate differs from the primary beyond the noise.
    Real,
    /// Differences (if any) are explained by noise.
    Noise,
    /// Too few samples to tell.
    Insufficient,
}

/// The rule that decided a field's class (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Fewer samples than `min_samples`.
    MinSamples,
    /// The candidate's rate against the baseline's.
    Baseline,
    /// No baseline: the candidate's rate against the absolute threshold.
    NoBaseline,
    /// No baseline: the field's name is volatile.
    Name,
    /// No baseline: the field's differing values looked like ids or clocks.
    Value,
}

/// A field's class, the rule behind it and its rates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Classification {
    /// The class.
    pub class: FieldClass,
    /// The rule that decided it.
    pub rule: Rule,
    /// `c`: the candidate's difference rate.
    pub diff_rate: f64,
    /// `b`: the baseline's difference rate, when a baseline was compared.
    pub noise_rate: Option<f64>,
}

/// Classifies a field from its counts (see the module docs). `has_baseline`: a baseline shadow
/// is configured for the target.
pub fn classify(
    field: &str,
    counts: &FieldCounts,
    has_baseline: bool,
    config: &FieldConfig,
) -> Classification {
    let c = counts.diff_rate();
    let noise_rate = counts.noise_rate();
    let verdict = |class, rule| Classification {
        class,
        rule,
        diff_rate: c,
        noise_rate,
    };
    if counts.samples < config.min_samples
        || (has_baseline && counts.baseline_samples < config.min_samples)
    {
        return verdict(FieldClass::Insufficient, Rule::MinSamples);
    }
    if has_baseline {
        let b = noise_rate.unwrap_or(0.0);
        let real = exceeds(c, counts.samples, b, counts.baseline_samples, config);
        return verdict(
            if real {
                FieldClass::Real
            } else {
                FieldClass::Noise
            },
            Rule::Baseline,
        );
    }
    if config.heuristics {
        if field_name(field).is_some_and(|name| name_is_volatile(&name)) {
            return verdict(FieldClass::Noise, Rule::Name);
        }
        if counts.diffs > 0 && counts.volatile_diffs as f64 >= VOLATILE_SHARE * counts.diffs as f64
        {
            return verdict(FieldClass::Noise, Rule::Value);
        }
    }
    let real = exceeds(c, counts.samples, 0.0, 0, config);
    verdict(
        if real {
            FieldClass::Real
        } else {
            FieldClass::Noise
        },
        Rule::NoBaseline,
    )
}

/// The rule-2 test of `c` (over `n` samples) against `b` (over `m`; `m = 0`: `b` is exact).
fn exceeds(c: f64, n: u64, b: f64, m: u64, config: &FieldConfig) -> bool {
    let excess = c - b;
    let relative = if c + b > 0.0 { excess / (c + b) } else { 0.0 };
    let mut variance = c * (1.0 - c) / n.max(1) as f64;
    if m > 0 {
        variance += b * (1.0 - b) / m as f64;
    }
    excess > config.absolute_threshold
        && relative > config.relative_threshold
        && excess - config.absolute_threshold > config.z_threshold * variance.sqrt()
}

/// One field's counts and class, as [`FieldTracker::fields`] reports them.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldStat {
    /// The field, or [`OTHER`].
    pub field: String,
    /// Its counters.
    pub counts: FieldCounts,
    /// Its class.
    pub classification: Classification,
}

/// The fields of one candidate.
#[derive(Clone, Debug, Default)]
struct CandidateFields {
    fields: HashMap<String, FieldCounts>,
    other: FieldCounts,
    exchanges: u64,
}

/// Field statistics of one target's candidates, bounded per candidate (see the module docs).
#[derive(Clone, Debug)]
pub struct FieldTracker {
    config: FieldConfig,
    has_baseline: bool,
    candidates: HashMap<String, CandidateFields>,
}

impl FieldTracker {
    /// A tracker for a target that has (`has_baseline`) or has not a baseline shadow.
    pub fn new(config: FieldConfig, has_baseline: bool) -> Self {
        Self {
            config,
            has_baseline,
            candidates: HashMap::default(),
        }
    }

    /// Whether the target has a baseline shadow.
    pub fn has_baseline(&self) -> bool {
        self.has_baseline
    }

    /// Records one request: the candidate-vs-primary comparison and, if the baseline's response
    /// to the same request was compared, the baseline-vs-primary one.
    pub fn record(&mut self, candidate: &str, diff: &FieldDiff, baseline: Option<&FieldDiff>) {
        let max_fields = self.config.max_fields;
        let entry = match self.candidates.get_mut(candidate) {
            Some(entry) => entry,
            None => self.candidates.entry(candidate.to_owned()).or_default(),
        };
        entry.exchanges += 1;
        for (field, outcome) in &diff.fields {
            let mut observed = FieldCounts {
                samples: 1,
                diffs: u64::from(outcome.differs),
                volatile_diffs: u64::from(outcome.differs && outcome.volatile),
                ..FieldCounts::default()
            };
            if let Some(baseline) = baseline {
                observed.baseline_samples = 1;
                observed.baseline_diffs = baseline
                    .fields
                    .get(field)
                    .map_or(0, |outcome| u64::from(outcome.differs));
            }
            entry.observe(field, &observed, max_fields);
        }
    }

    /// Exchanges recorded for `candidate`.
    pub fn exchanges(&self, candidate: &str) -> u64 {
        self.candidates
            .get(candidate)
            .map_or(0, |entry| entry.exchanges)
    }

    /// The tracked fields of `candidate` and [`OTHER`] (if anything was folded), classified,
    /// sorted by difference rate (highest first), then by name.
    pub fn fields(&self, candidate: &str) -> Vec<FieldStat> {
        let Some(entry) = self.candidates.get(candidate) else {
            return Vec::new();
        };
        let stat = |field: &str, counts: &FieldCounts| FieldStat {
            field: field.to_owned(),
            counts: *counts,
            classification: classify(field, counts, self.has_baseline, &self.config),
        };
        let mut stats: Vec<FieldStat> = entry
            .fields
            .iter()
            .map(|(field, counts)| stat(field, counts))
            .collect();
        if entry.other.samples > 0 {
            stats.push(stat(OTHER, &entry.other));
        }
        stats.sort_by(|a, b| {
            b.counts
                .diff_rate()
                .total_cmp(&a.counts.diff_rate())
                .then_with(|| a.field.cmp(&b.field))
        });
        stats
    }
}

impl CandidateFields {
    fn observe(&mut self, field: &str, observed: &FieldCounts, max_fields: usize) {
        if let Some(counts) = self.fields.get_mut(field) {
            counts.add(observed);
            return;
        }
        if field.len() > MAX_FIELD_LEN || field == OTHER {
            self.other.add(observed);
            return;
        }
        if self.fields.len() >= max_fields {
            let idle = (observed.diffs > 0)
                .then(|| {
                    self.fields
                        .iter()
                        .find(|(_, counts)| counts.diffs == 0 && counts.baseline_diffs == 0)
                        .map(|(name, _)| name.clone())
                })
                .flatten();
            let Some(idle) = idle else {
                self.other.add(observed);
                return;
            };
            if let Some(evicted) = self.fields.remove(&idle) {
                self.other.add(&evicted);
            }
        }
        self.fields.insert(field.to_owned(), *observed);
    }
}

#[cfg(test)]
#[path = "tests/fields.rs"]
mod tests;
