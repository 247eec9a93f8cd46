//! Drift of numeric outputs: a fixed-bucket sketch per side and field, and the two-sample
//! Kolmogorov–Smirnov statistic between the primary's and a candidate's values.
//!
//! **Why KS** (rather than PSI): it is distribution-free, bounded in `[0, 1]` with a direct
//! reading (the largest gap between the two cumulative distributions: "at most 41% more of the
//! candidate's scores are below some value"), needs no choice of bins beyond the sketch's, and is
//! computable from cumulative bucket counts alone. PSI is unbounded, undefined on empty bins
//! (it needs smoothing) and depends on the binning.
//!
//! **Sketch layout** ([`Layout`]): one fixed list of bucket upper bounds, identical on every
//! node, so that bucket counts can be exported as a Prometheus classic histogram (`le` = the
//! bounds, then `+Inf`), summed across nodes, and the statistic recomputed from the sums with
//! [`ks_from_cumulative`]. With `n` buckets per doubling and exponents `lo..hi` (defaults 4,
//! −10, 30), the positive bounds are `p_k = 2^(lo + k/n)`, `k = 0..=n(hi − lo)`, rounded to 6
//! significant digits (so every node and libm prints the same `le`); the negative bounds mirror
//! them; the bucket `(−p_0, p_0]` holds zero and values of magnitude ≤ 2^−10 ≈ 0.001, and the
//! first and last buckets hold magnitudes beyond 2^30 ≈ 1.07e9. Defaults: 323 buckets, 2.6 KiB
//! of counts per sketch, whatever the number of values; neighbouring bounds are a factor
//! `γ = 2^(1/4) ≈ 1.19` apart (a value is known to within +19%, or ±8.6% of its bucket's
//! geometric middle).
//!
//! **Error bound of D**: the reported `statistic` is `max_i |F_a(b_i) − F_b(b_i)|` over the
//! bounds `b_i`, the exact KS distance of the two samples after each value is rounded up to its
//! bucket's bound. It never exceeds the exact `D` of the raw values (the maximum over fewer
//! points), and the exact `D` never exceeds `upper = max_i max(F_a(b_i) − F_b(b_{i−1}),
//! F_b(b_i) − F_a(b_{i−1}))` (within a bucket each CDF lies between its values at the two
//! bounds). So `statistic ≤ D ≤ upper`, and `upper − statistic` is at most the largest share of
//! either sample in one bucket; both are computed from bucket counts alone. In value terms: a
//! shift by less than a factor `γ` can be invisible. A distribution concentrated in a few
//! buckets (a small coefficient of variation, e.g. all values within ±5%) has a wide interval;
//! the report shows it and the verdict then does not claim drift it cannot see.
//!
//! **Drifted**: `statistic > threshold` (default 0.1) with at least `min_samples` (default 1000)
//! values on each side. The two-sample KS critical value at significance 0.001 is
//! `1.95 √((n + m)/(n m))`, 0.087 for `n = m = 1000`: at the defaults a drift call is both
//! significant and large (a tenth of the distribution moved). Using the lower end of the interval
//! keeps the call conservative. At most `max_fields` (default 16) numeric fields are tracked per
//! candidate, the first seen; later ones are counted in [`CandidateDrift::untracked_values`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::diff::NumericPair;

/// The bucket layout of the sketches (TOML keys as the field names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayoutConfig {
    /// Buckets per doubling (1..=64). Default 4.
    pub buckets_per_doubling: u32,
    /// `log2` of the smallest positive bound. Default −10.
    pub min_exponent: i32,
    /// `log2` of the largest bound. Default 30.
    pub max_exponent: i32,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        Self {
            buckets_per_doubling: 4,
            min_exponent: -10,
            max_exponent: 30,
        }
    }
}

/// The bucket upper bounds (ascending, finite; `+Inf` implied) shared by all sketches.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    bounds: Vec<f64>,
}

impl Layout {
    /// Builds the layout (see the module docs); the configuration is clamped to sane values.
    pub fn new(config: &LayoutConfig) -> Self {
        let per_doubling = config.buckets_per_doubling.clamp(1, 64);
        let lo = config.min_exponent.clamp(-1000, 1000);
        let hi = config.max_exponent.clamp(lo + 1, 1020);
        let steps = (hi - lo) as u32 * per_doubling;
        let positive: Vec<f64> = (0..=steps)
            .map(|k| round6((f64::from(lo) + f64::from(k) / f64::from(per_doubling)).exp2()))
            .collect();
        let mut bounds: Vec<f64> = positive.iter().rev().map(|bound| -bound).collect();
        bounds.extend(&positive);
        bounds.dedup();
        Self { bounds }
    }

    /// The finite upper bounds, ascending (the `le` labels before `+Inf`).
    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// Number of buckets: the finite bounds and `+Inf`.
    pub fn buckets(&self) -> usize {
        self.bounds.len() + 1
    }

    /// The bucket of `value`: the first bound `≥ value` (Prometheus `le`), or `+Inf`'s.
    pub fn index(&self, value: f64) -> usize {
        self.bounds.partition_point(|bound| *bound < value)
    }

    /// The largest ratio between neighbouring positive bounds (`γ`).
    pub fn max_ratio(&self) -> f64 {
        self.bounds
            .windows(2)
            .filter(|pair| pair[0] > 0.0)
            .map(|pair| pair[1] / pair[0])
            .fold(1.0, f64::max)
    }
}

impl Default for Layout {
    fn default() -> Self {
        Self::new(&LayoutConfig::default())
    }
}

/// Rounds to 6 significant decimal digits (through the shortest decimal form, deterministic).
fn round6(value: f64) -> f64 {
    format!("{value:.5e}").parse().unwrap_or(value)
}

/// Counts per bucket of one side's values for one field.
#[derive(Clone, Debug, PartialEq)]
pub struct Sketch {
    counts: Vec<u64>,
    total: u64,
    /// Sum of the values (a Prometheus histogram's `_sum`).
    sum: f64,
}

impl Sketch {
    /// An empty sketch for `layout`.
    pub fn new(layout: &Layout) -> Self {
        Self {
            counts: vec![0; layout.buckets()],
            total: 0,
            sum: 0.0,
        }
    }

    /// Adds a value (NaN is ignored).
    pub fn insert(&mut self, layout: &Layout, value: f64) {
        if value.is_nan() {
            return;
        }
        self.counts[layout.index(value)] += 1;
        self.total += 1;
        self.sum += value;
    }

    /// Adds another sketch of the same layout (e.g. another node's). `false` (and nothing
    /// added) if the layouts differ.
    pub fn merge(&mut self, other: &Sketch) -> bool {
        if self.counts.len() != other.counts.len() {
            return false;
        }
        for (count, more) in self.counts.iter_mut().zip(&other.counts) {
            *count += more;
        }
        self.total += other.total;
        self.sum += other.sum;
        true
    }

    /// Values added.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Sum of the values added.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Count per bucket (not cumulative), in layout order, `+Inf` last.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Cumulative counts per bucket, as a Prometheus histogram exports them (`_bucket{le}`).
    pub fn cumulative(&self) -> Vec<f64> {
        let mut running = 0_u64;
        self.counts
            .iter()
            .map(|count| {
                running += count;
                running as f64
            })
            .collect()
    }
}

/// The KS statistic with its error interval (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ks {
    /// `D` at the bucket bounds: a lower bound of the exact `D`.
    pub statistic: f64,
    /// An upper bound of the exact `D`.
    pub upper: f64,
    /// Values on the first side.
    pub samples_a: f64,
    /// Values on the second side.
    pub samples_b: f64,
}

/// The KS statistic of two histograms over the same bounds, given as cumulative counts per
/// bucket (the last is the total, `+Inf`), e.g. Prometheus `_bucket` series summed across nodes.
/// Counts that dip (a counter reset inside a window) are raised to their predecessor's. `None`
/// if the lengths differ or a side is empty.
pub fn ks_from_cumulative(a: &[f64], b: &[f64]) -> Option<Ks> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let monotone = |counts: &[f64]| {
        let mut running = 0.0_f64;
        counts
            .iter()
            .map(|count| {
                running = running.max(*count);
                running
            })
            .collect::<Vec<f64>>()
    };
    let (a, b) = (monotone(a), monotone(b));
    let (total_a, total_b) = (a[a.len() - 1], b[b.len() - 1]);
    if total_a <= 0.0 || total_b <= 0.0 {
        return None;
    }
    let (mut statistic, mut upper) = (0.0_f64, 0.0_f64);
    let (mut previous_a, mut previous_b) = (0.0, 0.0);
    for (count_a, count_b) in a.iter().zip(&b) {
        let (fa, fb) = (count_a / total_a, count_b / total_b);
        statistic = statistic.max((fa - fb).abs());
        upper = upper.max(fa - previous_b).max(fb - previous_a);
        (previous_a, previous_b) = (fa, fb);
    }
    Some(Ks {
        statistic,
        upper: upper.max(statistic),
        samples_a: total_a,
        samples_b: total_b,
    })
}

/// The KS statistic between two sketches of the same layout.
pub fn ks(a: &Sketch, b: &Sketch) -> Option<Ks> {
    ks_from_cumulative(&a.cumulative(), &b.cumulative())
}

/// Drift thresholds and bounds (TOML keys as the field names).
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftConfig {
    /// `statistic` above which a field has drifted. Default 0.1.
    pub threshold: f64,
    /// Values needed on each side before drift is judged. Default 1000.
    pub min_samples: u64,
    /// Numeric fields tracked per candidate. Default 16.
    pub max_fields: usize,
    /// The sketches' bucket layout.
    pub layout: LayoutConfig,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            threshold: 0.1,
            min_samples: 1000,
            max_fields: 16,
            layout: LayoutConfig::default(),
        }
    }
}

impl DriftConfig {
    /// Judges a field from its statistic (from sketches or from summed Prometheus buckets).
    pub fn judge(&self, field: &str, ks: Option<Ks>) -> DriftStat {
        let enough = ks.is_some_and(|ks| ks.samples_a.min(ks.samples_b) >= self.min_samples as f64);
        DriftStat {
            field: field.to_owned(),
            ks,
            drifted: enough && ks.is_some_and(|ks| ks.statistic > self.threshold),
            resolved: ks
                .is_some_and(|ks| ks.upper <= self.threshold || ks.statistic > self.threshold),
            enough_samples: enough,
        }
    }
}

/// One field's drift, as [`DriftTracker::drift`] reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftStat {
    /// The field.
    pub field: String,
    /// The statistic (primary = side a, candidate = side b); `None` if a side has no values.
    pub ks: Option<Ks>,
    /// Enough values and `statistic > threshold`.
    pub drifted: bool,
    /// The interval `[statistic, upper]` lies on one side of the threshold.
    pub resolved: bool,
    /// At least `min_samples` values on each side.
    pub enough_samples: bool,
}

/// The sketches of one candidate.
#[derive(Clone, Debug, Default)]
pub struct CandidateDrift {
    /// Per field: the primary's and the candidate's sketch.
    pub fields: BTreeMap<String, (Sketch, Sketch)>,
    /// Numeric values not sketched because `max_fields` fields were already tracked.
    pub untracked_values: u64,
}

/// Sketches of the numeric fields of one target's candidates (memory: `max_fields` × 2 sketches
/// per candidate).
#[derive(Clone, Debug)]
pub struct DriftTracker {
    config: DriftConfig,
    layout: Layout,
    candidates: BTreeMap<String, CandidateDrift>,
}

impl DriftTracker {
    /// An empty tracker.
    pub fn new(config: DriftConfig) -> Self {
        let layout = Layout::new(&config.layout);
        Self {
            config,
            layout,
            candidates: BTreeMap::new(),
        }
    }

    /// The bucket layout (the `le` labels to export the sketches with).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Records the numeric pairs of one exchange between the primary and `candidate`.
    pub fn record(&mut self, candidate: &str, pairs: &[NumericPair]) {
        if pairs.is_empty() {
            return;
        }
        let entry = match self.candidates.get_mut(candidate) {
            Some(entry) => entry,
            None => self.candidates.entry(candidate.to_owned()).or_default(),
        };
        for pair in pairs {
            if !entry.fields.contains_key(&pair.field) {
                if entry.fields.len() >= self.config.max_fields {
                    entry.untracked_values += 1;
                    continue;
                }
                let empty = (Sketch::new(&self.layout), Sketch::new(&self.layout));
                entry.fields.insert(pair.field.clone(), empty);
            }
            let Some(sketches) = entry.fields.get_mut(&pair.field) else {
                continue;
            };
            sketches.0.insert(&self.layout, pair.primary);
            sketches.1.insert(&self.layout, pair.shadow);
        }
    }

    /// The sketches of `candidate`, to export or merge.
    pub fn candidate(&self, candidate: &str) -> Option<&CandidateDrift> {
        self.candidates.get(candidate)
    }

    /// Each tracked field of `candidate`, judged, by name.
    pub fn drift(&self, candidate: &str) -> Vec<DriftStat> {
        self.candidates
            .get(candidate)
            .map(|entry| {
                entry
                    .fields
                    .iter()
                    .map(|(field, (primary, shadow))| self.config.judge(field, ks(primary, shadow)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[path = "tests/drift.rs"]
mod tests;
