//! Per-target aggregation of the daemon's samples (metric names: the README's "Metrics"), and the difference of two snapshots for watch mode.

use std::collections::BTreeMap;

use super::{
    histogram::{Bucket, Quantile, quantile},
    parse::Sample,
};
use crate::verdict::{Policy, Report, inputs_from_samples};

/// What one scrape says about every target, keyed by target name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub targets: BTreeMap<String, TargetStats>,
    /// `mirror_classifier_packets_total{reason="shed"}`: packets of targets whose shadow could
    /// take no more, counted and not recorded (the classifier's counters have no target).
    pub shed_packets: f64,
    /// Each candidate's verdict under the default policy, from the same samples (totals since
    /// the daemon started: a watch frame keeps the latest scrape's, since a few seconds of
    /// evidence would always be inconclusive).
    pub verdict: Option<Report>,
}

/// One target's counters. Counts are `f64` because that is what the exposition carries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetStats {
    /// `mirror_requests_total`: requests framed off the wire.
    pub requests: f64,
    /// `mirror_parse_errors_total`.
    pub parse_errors: f64,
    /// `mirror_requests_skipped_total` by reason: framed requests not replayed.
    pub skipped: BTreeMap<String, f64>,
    /// `mirror_connections_skipped_total` by reason (tls, http2, upgrade, ...): connections
    /// whose requests stopped being mirrored. Counts connections, outside the requests'
    /// accounting.
    pub connections_skipped: BTreeMap<String, f64>,
    /// `mirror_requests_lost_total` by reason (abandoned before they were framed).
    pub lost: BTreeMap<String, f64>,
    /// `mirror_requests_lost_estimated_total`: requests estimated lost whole in gaps or unframed
    /// bytes. An estimate (fractional), never part of the accounting.
    pub lost_estimated: f64,
    pub primary: RoleStats,
    /// `mirror_responses_unpaired_total` by reason: primary responses not paired with a
    /// request, so without a latency sample and a comparison.
    pub unpaired: BTreeMap<String, f64>,
    /// Each shadow (candidates and the baseline), by name.
    pub shadows: BTreeMap<String, ShadowStats>,
}

/// One shadow of a target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShadowStats {
    /// Its responses are `role="baseline"`: a second copy of the primary's version.
    pub baseline: bool,
    /// `mirror_replays_total` by outcome (ok, error, timeout, dropped).
    pub replays: BTreeMap<String, f64>,
    /// `mirror_replay_queue_depth`, a gauge: never differenced.
    pub queue_depth: Option<f64>,
    pub responses: RoleStats,
    /// `mirror_response_mismatches_total{kind="status"}`.
    pub status_mismatches: f64,
    /// `mirror_response_mismatches_total{kind="body"}`.
    pub body_mismatches: f64,
    /// `mirror_comparisons_cancelled_total` by reason: replayed requests whose comparison with
    /// the primary could not be made.
    pub cancelled: BTreeMap<String, f64>,
}

/// The responses of one role (primary or shadow) of a target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoleStats {
    /// `mirror_response_duration_seconds_bucket`, cumulative, sorted by bound.
    pub buckets: Vec<Bucket>,
    /// `mirror_responses_total` by status code (as exported, normally three digits).
    pub responses: BTreeMap<String, f64>,
}

const PRIMARY: &str = "primary";
const SHADOW: &str = "shadow";
const BASELINE: &str = "baseline";
/// The replay outcome that never reached the shadow (the replay queue was full).
pub const DROPPED: &str = "dropped";

impl RoleStats {
    /// All responses of the role.
    pub fn response_count(&self) -> f64 {
        total(self.responses.values())
    }

    /// Responses with a 5xx status.
    pub fn server_errors(&self) -> f64 {
        let server_errors = self
            .responses
            .iter()
            .filter(|(code, _)| code.len() == 3 && code.starts_with('5'))
            .map(|(_, count)| count);
        total(server_errors)
    }

    /// Responses with a latency sample: the histogram's count (its `+Inf` bucket). For the
    /// primary, the responses paired with their request.
    pub fn timed(&self) -> f64 {
        self.buckets
            .iter()
            .find(|bucket| bucket.upper_bound == f64::INFINITY)
            .map_or(0.0, |bucket| bucket.count)
    }

    /// Quantile `q` of the response duration, in seconds.
    pub fn latency(&self, q: f64) -> Option<Quantile> {
        quantile(q, &self.buckets)
    }

    fn since(&self, earlier: &Self) -> Self {
        let buckets = self
            .buckets
            .iter()
            .map(|bucket| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|old| old.upper_bound == bucket.upper_bound)
                    .map_or(0.0, |old| old.count);
                Bucket {
                    upper_bound: bucket.upper_bound,
                    count: increase(bucket.count, before),
                }
            })
            .collect();
        Self {
            buckets,
            responses: map_since(&self.responses, &earlier.responses),
        }
    }
}

impl ShadowStats {
    /// Requests handed to the shadow, whatever came back (replays except `dropped`).
    pub fn mirrored(&self) -> f64 {
        total(
            self.replays
                .iter()
                .filter(|(outcome, _)| *outcome != DROPPED)
                .map(|(_, count)| count),
        )
    }

    /// Replays dropped because the replay queue was full.
    pub fn dropped(&self) -> f64 {
        self.replays.get(DROPPED).copied().unwrap_or(0.0)
    }

    pub fn cancelled_total(&self) -> f64 {
        total(self.cancelled.values())
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            baseline: self.baseline,
            replays: map_since(&self.replays, &earlier.replays),
            queue_depth: self.queue_depth,
            responses: self.responses.since(&earlier.responses),
            status_mismatches: increase(self.status_mismatches, earlier.status_mismatches),
            body_mismatches: increase(self.body_mismatches, earlier.body_mismatches),
            cancelled: map_since(&self.cancelled, &earlier.cancelled),
        }
    }
}

impl TargetStats {
    pub fn skipped_total(&self) -> f64 {
        total(self.skipped.values())
    }

    pub fn lost_total(&self) -> f64 {
        total(self.lost.values())
    }

    pub fn connections_skipped_total(&self) -> f64 {
        total(self.connections_skipped.values())
    }

    /// Primary responses not paired with a request.
    pub fn unpaired_total(&self) -> f64 {
        total(self.unpaired.values())
    }

    /// Requests neither skipped nor finished replaying to `shadow` yet (the pipeline accounts
    /// a replay when it finishes). Only meaningful for totals: a difference can go negative.
    pub fn in_flight(&self, shadow: &ShadowStats) -> f64 {
        self.requests - self.skipped_total() - total(shadow.replays.values())
    }

    /// The first candidate (the one shadow of `shadow = "URL"`), or an empty one.
    pub fn candidate(&self) -> ShadowStats {
        self.candidates()
            .next()
            .map(|(_, shadow)| shadow.clone())
            .unwrap_or_default()
    }

    /// The shadows that are candidates (not the baseline), by name.
    pub fn candidates(&self) -> impl Iterator<Item = (&str, &ShadowStats)> {
        self.shadows
            .iter()
            .filter(|(_, shadow)| !shadow.baseline)
            .map(|(name, shadow)| (name.as_str(), shadow))
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            requests: increase(self.requests, earlier.requests),
            parse_errors: increase(self.parse_errors, earlier.parse_errors),
            skipped: map_since(&self.skipped, &earlier.skipped),
            connections_skipped: map_since(&self.connections_skipped, &earlier.connections_skipped),
            lost: map_since(&self.lost, &earlier.lost),
            lost_estimated: increase(self.lost_estimated, earlier.lost_estimated),
            primary: self.primary.since(&earlier.primary),
            unpaired: map_since(&self.unpaired, &earlier.unpaired),
            shadows: self
                .shadows
                .iter()
                .map(|(name, shadow)| {
                    let shadow = match earlier.shadows.get(name) {
                        Some(old) => shadow.since(old),
                        None => shadow.clone(),
                    };
                    (name.clone(), shadow)
                })
                .collect(),
        }
    }
}

/// The sum of counts. Not `Iterator::sum`: the empty `f64` sum is -0.0, which prints as "-0".
fn total<'a>(counts: impl Iterator<Item = &'a f64>) -> f64 {
    counts.fold(0.0, |sum, count| sum + count)
}

/// A counter's increase; a smaller value means the daemon restarted and counts from zero again
/// (PromQL's `increase` makes the same assumption).
fn increase(now: f64, before: f64) -> f64 {
    if now >= before { now - before } else { now }
}

fn map_since(now: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    now.iter()
        .map(|(key, &value)| {
            let old = before.get(key).copied().unwrap_or(0.0);
            (key.clone(), increase(value, old))
        })
        .collect()
}

impl Snapshot {
    /// Aggregates the samples of one scrape. Samples of other metrics, and target-labelled
    /// samples that lack a label this needs, are ignored: the table shows what is there.
    pub fn from_samples(samples: &[Sample]) -> Self {
        let policy = Policy::default();
        let mut snapshot = Self {
            verdict: Some(policy.judge(&inputs_from_samples(samples, &policy))),
            ..Self::default()
        };
        for sample in samples {
            if sample.name == "mirror_classifier_packets_total"
                && sample.label("reason") == Some("shed")
            {
                snapshot.shed_packets += sample.value;
            }
            let Some(target) = sample.label("target") else {
                continue;
            };
            let name = sample.name.as_str();
            if !name.starts_with("mirror_") {
                continue;
            }
            let stats = snapshot.targets.entry(target.to_owned()).or_default();
            let value = sample.value;
            let add = |map: &mut BTreeMap<String, f64>, key: Option<&str>| {
                if let Some(key) = key {
                    *map.entry(key.to_owned()).or_default() += value;
                }
            };
            match name {
                "mirror_requests_total" => stats.requests += value,
                "mirror_parse_errors_total" => stats.parse_errors += value,
                "mirror_requests_skipped_total" => add(&mut stats.skipped, sample.label("reason")),
                "mirror_connections_skipped_total" => {
                    add(&mut stats.connections_skipped, sample.label("reason"));
                }
                "mirror_requests_lost_total" => add(&mut stats.lost, sample.label("reason")),
                "mirror_requests_lost_estimated_total" => stats.lost_estimated += value,
                "mirror_responses_unpaired_total" => {
                    add(&mut stats.unpaired, sample.label("reason"));
                }
                "mirror_comparisons_cancelled_total" => {
                    if let Some(shadow) = shadow_of(stats, sample) {
                        add(&mut shadow.cancelled, sample.label("reason"));
                    }
                }
                "mirror_replays_total" => {
                    if let Some(shadow) = shadow_of(stats, sample) {
                        add(&mut shadow.replays, sample.label("outcome"));
                    }
                }
                "mirror_replay_queue_depth" => {
                    if let Some(shadow) = shadow_of(stats, sample) {
                        *shadow.queue_depth.get_or_insert(0.0) += value;
                    }
                }
                "mirror_response_mismatches_total" => {
                    if let Some(shadow) = shadow_of(stats, sample) {
                        match sample.label("kind") {
                            Some("status") => shadow.status_mismatches += value,
                            Some("body") => shadow.body_mismatches += value,
                            _ => {}
                        }
                    }
                }
                "mirror_responses_total" => {
                    if let Some(role) = role_of(stats, sample) {
                        add(&mut role.responses, sample.label("code"));
                    }
                }
                "mirror_response_duration_seconds_bucket" => {
                    let bound = sample.label("le").and_then(parse_bound);
                    if let (Some(upper_bound), Some(role)) = (bound, role_of(stats, sample)) {
                        add_bucket(&mut role.buckets, upper_bound, value);
                    }
                }
                _ => {}
            }
        }
        for stats in snapshot.targets.values_mut() {
            let shadows = stats
                .shadows
                .values_mut()
                .map(|shadow| &mut shadow.responses);
            for role in std::iter::once(&mut stats.primary).chain(shadows) {
                role.buckets
                    .sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
            }
        }
        snapshot
    }

    /// What happened between `earlier` and `self`: counters differenced (restarts tolerated),
    /// gauges as of `self`. Targets that appeared since are taken whole.
    pub fn since(&self, earlier: &Self) -> Self {
        let targets = self
            .targets
            .iter()
            .map(|(name, stats)| {
                let stats = match earlier.targets.get(name) {
                    Some(old) => stats.since(old),
                    None => stats.clone(),
                };
                (name.clone(), stats)
            })
            .collect();
        Self {
            targets,
            shed_packets: increase(self.shed_packets, earlier.shed_packets),
            verdict: self.verdict.clone(),
        }
    }
}

/// The shadow a sample is about (its `shadow` label; a daemon from before shadows had names
/// exports none: its one shadow is `shadow`).
fn shadow_of<'a>(stats: &'a mut TargetStats, sample: &Sample) -> Option<&'a mut ShadowStats> {
    let name = sample.label("shadow").unwrap_or(SHADOW);
    if name.is_empty() {
        return None;
    }
    Some(stats.shadows.entry(name.to_owned()).or_default())
}

fn role_of<'a>(stats: &'a mut TargetStats, sample: &Sample) -> Option<&'a mut RoleStats> {
    match sample.label("role")? {
        PRIMARY => Some(&mut stats.primary),
        role @ (SHADOW | BASELINE) => {
            let shadow = shadow_of(stats, sample)?;
            shadow.baseline = role == BASELINE;
            Some(&mut shadow.responses)
        }
        _ => None,
    }
}

/// A bucket's `le`: a float, or `+Inf` (parsed by Rust's float syntax too).
fn parse_bound(text: &str) -> Option<f64> {
    text.parse().ok().filter(|bound: &f64| !bound.is_nan())
}

fn add_bucket(buckets: &mut Vec<Bucket>, upper_bound: f64, count: f64) {
    match buckets
        .iter_mut()
        .find(|bucket| bucket.upper_bound == upper_bound)
    {
        Some(bucket) => bucket.count += count,
        None => buckets.push(Bucket { upper_bound, count }),
    }
}
