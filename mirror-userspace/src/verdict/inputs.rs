//! The verdict's inputs from metric samples: what `/verdict`, `mirror verdict` and `mirror stats`
//! judge. The samples are either one daemon's `/metrics` (totals since it started) or Prometheus'
//! `increase()` of the same families summed over nodes (a window, cluster-wide); counters,
//! histogram buckets and field counters all add up across nodes, so one function serves both.
//!
//! Families read (README "Metrics"), everything else is ignored:
//! - `mirror_shadow_info{target,role,shadow}`: each shadow and its role (`shadow` = a candidate,
//!   `baseline`). A shadow seen only in the other families (a daemon from before the family, or a
//!   shadow removed since) takes its role from its responses' `role` label, else is a candidate;
//! - `mirror_comparisons_total{target,shadow}`: exchanges compared, the verdict's `samples`;
//! - `mirror_responses_total{target,role,shadow,code}`: 5xx (500..=599) shares per side;
//! - `mirror_response_duration_seconds_bucket{target,role,shadow,le}`: latency per side (the
//!   primary's series carry `shadow=""`);
//! - `mirror_field_{samples,differences,volatile_differences,baseline_samples,
//!   baseline_differences}_total{target,shadow,field}`: [`FieldCounts`], classified with
//!   [`classify`] (a baseline counts when the target has a baseline shadow);
//! - `mirror_field_value_bucket{target,shadow,field,side,le}`: the drift sketches, one histogram
//!   per side, judged with [`ks_from_cumulative`] and [`super::drift::DriftConfig::judge`].
//!
//! A missing family leaves its part out (no field metrics: no fields), it is not an error: an
//! older daemon, or Prometheus without the series yet, still gets a verdict on what is there.
//! Values are summed per key first and rounded to whole counts last, since `increase()`
//! extrapolates to fractions.

use std::collections::BTreeMap;

use super::{
    drift::ks_from_cumulative,
    fields::{FieldCounts, FieldStat, classify},
    policy::{ErrorCounts, Latency, Policy, Role, ShadowInput, TargetInput},
};
use crate::stats::{Bucket, Sample};

/// The field counter families, in [`FieldCounts`] order.
pub const FIELD_COUNTERS: [&str; 5] = [
    "mirror_field_samples_total",
    "mirror_field_differences_total",
    "mirror_field_volatile_differences_total",
    "mirror_field_baseline_samples_total",
    "mirror_field_baseline_differences_total",
];

/// Cumulative histogram buckets by upper bound, summed as they come.
#[derive(Clone, Debug, Default)]
struct Cumulative(Vec<Bucket>);

impl Cumulative {
    fn add(&mut self, upper_bound: f64, count: f64) {
        match self
            .0
            .iter_mut()
            .find(|bucket| bucket.upper_bound == upper_bound)
        {
            Some(bucket) => bucket.count += count,
            None => self.0.push(Bucket { upper_bound, count }),
        }
    }

    fn sorted(mut self) -> Vec<Bucket> {
        self.0
            .sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
        self.0
    }

    /// The count at `bound`: the bucket's, or the largest bound below it's (a cumulative count
    /// cannot be lower), 0 below every bound.
    fn at(&self, bound: f64) -> f64 {
        self.0
            .iter()
            .filter(|bucket| bucket.upper_bound <= bound)
            .max_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound))
            .map_or(0.0, |bucket| bucket.count)
    }
}

#[derive(Debug, Default)]
struct Side {
    responses: f64,
    server_errors: f64,
    /// Any `mirror_responses_total` series was seen.
    counted: bool,
    latency: Cumulative,
}

impl Side {
    fn latency(&self) -> Option<Latency> {
        (!self.latency.0.is_empty()).then(|| Latency::Buckets(self.latency.clone().sorted()))
    }
}

#[derive(Debug, Default)]
struct ShadowAcc {
    /// From `mirror_shadow_info`.
    declared: Option<Role>,
    /// From the `role` label of its responses or latencies.
    observed: Option<Role>,
    comparisons: f64,
    side: Side,
    fields: BTreeMap<String, [f64; 5]>,
    /// Per field: the primary's and the shadow's value histogram.
    values: BTreeMap<String, (Cumulative, Cumulative)>,
}

impl ShadowAcc {
    fn role(&self) -> Role {
        self.declared.or(self.observed).unwrap_or(Role::Candidate)
    }
}

#[derive(Debug, Default)]
struct TargetAcc {
    primary: Side,
    shadows: BTreeMap<String, ShadowAcc>,
}

fn role_of(label: &str) -> Option<Role> {
    match label {
        "shadow" => Some(Role::Candidate),
        "baseline" => Some(Role::Baseline),
        _ => None,
    }
}

/// A bucket's `le`: a float or `+Inf`.
fn bound(sample: &Sample) -> Option<f64> {
    sample
        .label("le")?
        .parse()
        .ok()
        .filter(|bound: &f64| !bound.is_nan())
}

/// A count from a summed value: whole, never negative.
fn whole(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value.round() as u64
    } else {
        0
    }
}

impl TargetAcc {
    /// The shadow a per-shadow sample is about; `None` for the primary's series (`shadow=""`).
    /// Without the label (a daemon from before shadows had names) it is the one shadow, `shadow`.
    fn shadow(&mut self, sample: &Sample) -> Option<&mut ShadowAcc> {
        let name = sample.label("shadow").unwrap_or("shadow");
        (!name.is_empty()).then(|| self.shadows.entry(name.to_owned()).or_default())
    }

    /// The side of a `role`-labelled sample: the primary, or a shadow (noting its role).
    fn side(&mut self, sample: &Sample) -> Option<&mut Side> {
        let role = sample.label("role")?;
        if role == "primary" {
            return Some(&mut self.primary);
        }
        let role = role_of(role)?;
        let shadow = self.shadow(sample)?;
        shadow.observed = Some(role);
        Some(&mut shadow.side)
    }

    fn add(&mut self, sample: &Sample) {
        let value = sample.value;
        if !value.is_finite() {
            return;
        }
        match sample.name.as_str() {
            "mirror_shadow_info" => {
                let role = sample.label("role").and_then(role_of);
                if let (Some(role), true) = (role, value > 0.0)
                    && let Some(shadow) = self.shadow(sample)
                {
                    shadow.declared = Some(role);
                }
            }
            "mirror_comparisons_total" => {
                if let Some(shadow) = self.shadow(sample) {
                    shadow.comparisons += value;
                }
            }
            "mirror_responses_total" => {
                let server_error = sample
                    .label("code")
                    .and_then(|code| code.parse::<u16>().ok())
                    .is_some_and(|code| (500..=599).contains(&code));
                if let Some(side) = self.side(sample) {
                    side.counted = true;
                    side.responses += value;
                    if server_error {
                        side.server_errors += value;
                    }
                }
            }
            "mirror_response_duration_seconds_bucket" => {
                if let Some(bound) = bound(sample)
                    && let Some(side) = self.side(sample)
                {
                    side.latency.add(bound, value);
                }
            }
            "mirror_field_value_bucket" => {
                let (Some(field), Some(bound)) = (sample.label("field"), bound(sample)) else {
                    return;
                };
                let side = sample.label("side");
                if let Some(shadow) = self.shadow(sample) {
                    let (primary, candidate) = shadow.values.entry(field.to_owned()).or_default();
                    match side {
                        Some("primary") => primary.add(bound, value),
                        Some("shadow") => candidate.add(bound, value),
                        _ => {}
                    }
                }
            }
            name => {
                let Some(index) = FIELD_COUNTERS.iter().position(|family| *family == name) else {
                    return;
                };
                if let Some(field) = sample.label("field")
                    && let Some(shadow) = self.shadow(sample)
                {
                    shadow.fields.entry(field.to_owned()).or_default()[index] += value;
                }
            }
        }
    }

    fn input(self, target: String, policy: &Policy) -> TargetInput {
        let has_baseline = self
            .shadows
            .values()
            .any(|shadow| shadow.role() == Role::Baseline);
        let primary = &self.primary;
        let shadows = self
            .shadows
            .into_iter()
            .map(|(name, shadow)| {
                let role = shadow.role();
                let latency = match (primary.latency(), shadow.side.latency()) {
                    (None, None) => None,
                    (primary, candidate) => Some((
                        primary.unwrap_or(Latency::Buckets(Vec::new())),
                        candidate.unwrap_or(Latency::Buckets(Vec::new())),
                    )),
                };
                let errors = (primary.counted || shadow.side.counted).then(|| ErrorCounts {
                    primary_responses: whole(primary.responses),
                    primary_5xx: whole(primary.server_errors),
                    shadow_responses: whole(shadow.side.responses),
                    shadow_5xx: whole(shadow.side.server_errors),
                });
                let mut fields: Vec<FieldStat> = shadow
                    .fields
                    .iter()
                    .map(|(field, counts)| {
                        let counts = FieldCounts {
                            samples: whole(counts[0]),
                            diffs: whole(counts[1]),
                            volatile_diffs: whole(counts[2]),
                            baseline_samples: whole(counts[3]),
                            baseline_diffs: whole(counts[4]),
                        };
                        FieldStat {
                            field: field.clone(),
                            counts,
                            classification: classify(field, &counts, has_baseline, &policy.fields),
                        }
                    })
                    .collect();
                // As `FieldTracker::fields` orders them: highest difference rate first.
                fields.sort_by(|a, b| {
                    b.counts
                        .diff_rate()
                        .total_cmp(&a.counts.diff_rate())
                        .then_with(|| a.field.cmp(&b.field))
                });
                let drift = shadow
                    .values
                    .iter()
                    .map(|(field, (primary, candidate))| {
                        // Both sides over the same bounds (normally already identical: one
                        // layout on every node).
                        let mut bounds: Vec<f64> = primary
                            .0
                            .iter()
                            .chain(&candidate.0)
                            .map(|bucket| bucket.upper_bound)
                            .collect();
                        bounds.sort_by(f64::total_cmp);
                        bounds.dedup();
                        let a: Vec<f64> = bounds.iter().map(|bound| primary.at(*bound)).collect();
                        let b: Vec<f64> = bounds.iter().map(|bound| candidate.at(*bound)).collect();
                        policy.drift.judge(field, ks_from_cumulative(&a, &b))
                    })
                    .collect();
                ShadowInput {
                    shadow: name,
                    role,
                    samples: whole(shadow.comparisons),
                    latency,
                    errors,
                    fields,
                    drift,
                }
            })
            .collect();
        TargetInput { target, shadows }
    }
}

/// Every target's shadows from `samples` (see the module docs), targets and shadows sorted by
/// name. Samples without a `target` label, and families not listed above, are ignored.
pub fn inputs_from_samples(samples: &[Sample], policy: &Policy) -> Vec<TargetInput> {
    let mut targets: BTreeMap<String, TargetAcc> = BTreeMap::new();
    for sample in samples {
        let relevant = matches!(
            sample.name.as_str(),
            "mirror_shadow_info"
                | "mirror_comparisons_total"
                | "mirror_responses_total"
                | "mirror_response_duration_seconds_bucket"
                | "mirror_field_value_bucket"
        ) || FIELD_COUNTERS.contains(&sample.name.as_str());
        let Some(target) = sample.label("target").filter(|_| relevant) else {
            continue;
        };
        targets.entry(target.to_owned()).or_default().add(sample);
    }
    targets
        .into_iter()
        .map(|(target, acc)| acc.input(target, policy))
        .collect()
}

/// Keeps the target named `target` and, of its candidates, the one named `shadow` (`None`: all).
/// The baseline stays: the report names it as the noise reference.
pub fn select(
    targets: Vec<TargetInput>,
    target: Option<&str>,
    shadow: Option<&str>,
) -> Vec<TargetInput> {
    targets
        .into_iter()
        .filter(|input| target.is_none_or(|name| input.target == name))
        .map(|mut input| {
            input.shadows.retain(|candidate| {
                candidate.role == Role::Baseline
                    || shadow.is_none_or(|name| candidate.shadow == name)
            });
            input
        })
        .collect()
}

#[cfg(test)]
#[path = "tests/inputs.rs"]
mod tests;
