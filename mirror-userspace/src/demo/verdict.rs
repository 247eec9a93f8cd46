//! The demo's verdict, drawn only from what the daemon exports (its `/metrics`, parsed by
//! [`crate::stats`]): per target, primary vs shadow latency quantiles with the number of
//! samples behind them, 5xx rates and mismatches, then one sentence naming the regression.
//! I/O-free, so the judgement is unit-tested.

use std::fmt::Write as _;

use super::Route;
use crate::stats::{Quantile, RoleStats, Snapshot, TargetStats, count, percent, seconds_text};

/// A shadow P99 at least this many times the primary's...
pub const REGRESSION_RATIO: f64 = 2.0;
/// ...and at least this much slower (seconds) is a regression: jitter of a few milliseconds on
/// a fast path is not (the histogram's buckets double in width, so a P99 moves in big steps).
pub const REGRESSION_MIN_EXTRA_SECONDS: f64 = 0.005;
/// ...and carried by at least this many shadow responses slower than [`REGRESSION_RATIO`]
/// times the primary's P99: with a few dozen samples a P99 is the slowest one or two, and one
/// scheduling hiccup is not a regression.
pub const MIN_SLOW_SHADOW_SAMPLES: f64 = 3.0;
/// Fewer shadow samples than this make a P99 meaningless.
pub const MIN_SHADOW_SAMPLES: f64 = 20.0;

/// One role's latency as the histogram tells it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    /// Observations in the histogram: what each quantile is estimated from.
    pub samples: f64,
    pub p50: Option<Quantile>,
    pub p99: Option<Quantile>,
}

impl Latency {
    fn of(role: &RoleStats) -> Self {
        let samples = role
            .buckets
            .iter()
            .map(|bucket| bucket.count)
            .fold(0.0, f64::max);
        Self {
            samples,
            p50: role.latency(0.5),
            p99: role.latency(0.99),
        }
    }
}

/// The comparison of one target.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetVerdict {
    pub route: Route,
    pub primary: Latency,
    pub shadow: Latency,
    pub stats: TargetStats,
}

impl TargetVerdict {
    /// Shadow P99 / primary P99, when both are known. An `Above` quantile counts as its
    /// bound, which understates a slow shadow rather than inventing a number.
    pub fn p99_ratio(&self) -> Option<f64> {
        ratio(self.primary.p99?, self.shadow.p99?)
    }

    pub fn is_regression(&self) -> bool {
        let (Some(primary), Some(shadow)) = (self.primary.p99, self.shadow.p99) else {
            return false;
        };
        let (primary, shadow) = (primary.promql_value(), shadow.promql_value());
        self.shadow.samples >= MIN_SHADOW_SAMPLES
            && shadow >= primary * REGRESSION_RATIO
            && shadow - primary >= REGRESSION_MIN_EXTRA_SECONDS
            && self.shadow_slower_than(primary * REGRESSION_RATIO) >= MIN_SLOW_SHADOW_SAMPLES
    }

    /// Shadow responses certainly slower than `seconds`: those above the first bucket bound at
    /// or beyond it (an undercount, never an overcount).
    fn shadow_slower_than(&self, seconds: f64) -> f64 {
        let at_most = self
            .stats
            .candidate()
            .responses
            .buckets
            .iter()
            .find(|bucket| bucket.upper_bound >= seconds)
            .map_or(self.shadow.samples, |bucket| bucket.count);
        self.shadow.samples - at_most
    }
}

/// Every target of the demo, in [`super::ROUTES`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub targets: Vec<TargetVerdict>,
}

impl Verdict {
    pub fn new(snapshot: &Snapshot, routes: &[Route]) -> Self {
        let targets = routes
            .iter()
            .map(|&route| {
                let stats = snapshot
                    .targets
                    .get(route.target)
                    .cloned()
                    .unwrap_or_default();
                TargetVerdict {
                    route,
                    primary: Latency::of(&stats.primary),
                    shadow: Latency::of(&stats.candidate().responses),
                    stats,
                }
            })
            .collect();
        Self { targets }
    }

    /// The side-by-side table, one block per target.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for target in &self.targets {
            let route = target.route;
            let _ = writeln!(
                out,
                "{:<34}{:>12}{:>12}",
                format!("{} ({}, port {})", route.target, route.serves, route.port),
                "primary v1",
                "shadow v2"
            );
            let row =
                |out: &mut String, label: &str, primary: String, shadow: String, note: String| {
                    let line = format!("  {label:<32}{primary:>12}{shadow:>12}  {note}");
                    let _ = writeln!(out, "{}", line.trim_end());
                };
            let (primary, shadow) = (&target.primary, &target.shadow);
            row(
                &mut out,
                "latency samples",
                count(primary.samples),
                count(shadow.samples),
                String::new(),
            );
            let p50_ratio = primary.p50.zip(shadow.p50).and_then(|(p, s)| ratio(p, s));
            row(
                &mut out,
                "P50 latency",
                latency(primary.p50),
                latency(shadow.p50),
                times(p50_ratio),
            );
            let mut p99_note = times(target.p99_ratio());
            if target.is_regression() {
                p99_note.push_str("  <- regression");
            }
            row(
                &mut out,
                "P99 latency",
                latency(primary.p99),
                latency(shadow.p99),
                p99_note,
            );
            let stats = &target.stats;
            row(
                &mut out,
                "5xx responses",
                percent(
                    stats.primary.server_errors(),
                    stats.primary.response_count(),
                ),
                percent(
                    stats.candidate().responses.server_errors(),
                    stats.candidate().responses.response_count(),
                ),
                String::new(),
            );
            row(
                &mut out,
                "status / body mismatches",
                String::new(),
                format!(
                    "{} / {}",
                    count(stats.candidate().status_mismatches),
                    count(stats.candidate().body_mismatches)
                ),
                format!(
                    "of {} compared",
                    count(stats.candidate().responses.response_count())
                ),
            );
            out.push('\n');
        }
        out
    }

    /// The one-paragraph conclusion: which target regressed, by how much, where.
    pub fn conclusion(&self) -> String {
        let regressions: Vec<&TargetVerdict> =
            self.targets.iter().filter(|t| t.is_regression()).collect();
        let others_within = |excluded: &[&TargetVerdict]| {
            let ratios: Vec<f64> = self
                .targets
                .iter()
                .filter(|t| !excluded.iter().any(|e| e.route == t.route))
                .filter(|t| t.shadow.samples >= MIN_SHADOW_SAMPLES)
                .filter_map(TargetVerdict::p99_ratio)
                .collect();
            ratios.iter().copied().reduce(f64::max)
        };
        let mut out = String::new();
        for target in &regressions {
            let route = target.route;
            let _ = write!(
                out,
                "REGRESSION: target `{}` ({} on port {}): shadow P99 {} vs primary {} ({}, from {} shadow and {} primary samples)",
                route.target,
                route.serves,
                route.port,
                latency(target.shadow.p99),
                latency(target.primary.p99),
                times(target.p99_ratio()),
                count(target.shadow.samples),
                count(target.primary.samples),
            );
            match others_within(&regressions) {
                Some(max) => {
                    let _ = writeln!(out, "; other targets within {}.", times(Some(max)));
                }
                None => out.push_str(".\n"),
            }
        }
        if regressions.is_empty() {
            let thin: Vec<&str> = self
                .targets
                .iter()
                .filter(|t| t.shadow.samples < MIN_SHADOW_SAMPLES)
                .map(|t| t.route.target)
                .collect();
            match others_within(&[]) {
                Some(max) => {
                    let _ = writeln!(
                        out,
                        "NO REGRESSION: every shadow P99 is within {} of the primary's.",
                        times(Some(max))
                    );
                }
                None => {
                    out.push_str("INCONCLUSIVE: no target has enough shadow samples to compare.\n")
                }
            }
            if !thin.is_empty() {
                let _ = writeln!(
                    out,
                    "(fewer than {} shadow samples, not judged: {})",
                    count(MIN_SHADOW_SAMPLES),
                    thin.join(", ")
                );
            }
        }
        for target in &self.targets {
            let stats = &target.stats;
            let mismatches =
                stats.candidate().status_mismatches + stats.candidate().body_mismatches;
            if mismatches > 0.0 {
                let _ = writeln!(
                    out,
                    "MISMATCH: target `{}`: {} status and {} body mismatches in {} compared responses.",
                    target.route.target,
                    count(stats.candidate().status_mismatches),
                    count(stats.candidate().body_mismatches),
                    count(stats.candidate().responses.response_count()),
                );
            }
        }
        out
    }
}

fn ratio(primary: Quantile, shadow: Quantile) -> Option<f64> {
    let primary = primary.promql_value();
    (primary > 0.0).then(|| shadow.promql_value() / primary)
}

fn times(ratio: Option<f64>) -> String {
    ratio.map_or_else(String::new, |ratio| format!("{ratio:.1}x"))
}

/// A latency with three significant digits, "1.62 ms"; `>` marks a quantile beyond the last
/// finite bucket, of which only the lower bound is known.
pub fn latency(quantile: Option<Quantile>) -> String {
    let (prefix, seconds) = match quantile {
        None => return "-".to_owned(),
        Some(Quantile::Value(seconds)) => ("", seconds),
        Some(Quantile::Above(bound)) => (">", bound),
    };
    format!("{prefix}{}", seconds_text(seconds, " "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{ROUTES, SEARCH};

    /// An exposition with `primary`/`shadow` observations per target, all in one bucket each:
    /// `(target, role, bucket upper bound, count)`.
    fn exposition(observations: &[(&str, &str, f64, u32)]) -> Snapshot {
        let bounds = [0.0004, 0.0016, 0.0064, 0.0256, 0.1024];
        let mut text = String::new();
        for &(target, role, bound, n) in observations {
            for upper in bounds {
                let cumulative = if upper >= bound { n } else { 0 };
                text.push_str(&format!(
                    "mirror_response_duration_seconds_bucket{{target=\"{target}\",role=\"{role}\",le=\"{upper}\"}} {cumulative}\n"
                ));
            }
            text.push_str(&format!(
                "mirror_response_duration_seconds_bucket{{target=\"{target}\",role=\"{role}\",le=\"+Inf\"}} {n}\n\
                 mirror_responses_total{{target=\"{target}\",role=\"{role}\",code=\"200\"}} {n}\n"
            ));
        }
        Snapshot::from_text(&text).unwrap()
    }

    #[test]
    fn names_the_slow_target_and_where() {
        let snapshot = exposition(&[
            ("search", "primary", 0.0016, 1000),
            ("search", "shadow", 0.0256, 100),
            ("suggest", "primary", 0.0004, 1000),
            ("suggest", "shadow", 0.0004, 100),
            ("static", "primary", 0.0004, 1000),
            ("static", "shadow", 0.0004, 100),
        ]);
        let verdict = Verdict::new(&snapshot, &ROUTES);
        assert!(verdict.targets[0].is_regression());
        assert!(!verdict.targets[1].is_regression() && !verdict.targets[2].is_regression());
        let conclusion = verdict.conclusion();
        assert!(
            conclusion.starts_with(
                "REGRESSION: target `search` (GET /search on port 8080): shadow P99 25.4 ms vs primary 1.59 ms (16.0x, from 100 shadow and 1000 primary samples); other targets within 1.0x."
            ),
            "{conclusion}"
        );
        let table = verdict.table();
        assert!(table.contains("<- regression"), "{table}");
        assert_eq!(table.matches("<- regression").count(), 1, "{table}");
    }

    #[test]
    fn fast_paths_and_thin_samples_are_not_regressions() {
        // 4x slower but only ~1 ms: jitter on a fast path, not a regression.
        let snapshot = exposition(&[
            ("search", "primary", 0.0004, 1000),
            ("search", "shadow", 0.0016, 100),
        ]);
        let verdict = Verdict::new(&snapshot, &[SEARCH]);
        assert!(!verdict.targets[0].is_regression());
        assert!(
            verdict.conclusion().starts_with("NO REGRESSION"),
            "{}",
            verdict.conclusion()
        );
        // 16x slower, but 5 samples say nothing about a P99.
        let snapshot = exposition(&[
            ("search", "primary", 0.0016, 1000),
            ("search", "shadow", 0.0256, 5),
        ]);
        let verdict = Verdict::new(&snapshot, &[SEARCH]);
        assert!(!verdict.targets[0].is_regression());
        assert!(
            verdict.conclusion().starts_with("INCONCLUSIVE"),
            "{}",
            verdict.conclusion()
        );
    }

    #[test]
    fn one_slow_outlier_is_not_a_regression() {
        // 40 fast shadow responses and one at 25 ms: the P99 is the outlier, 16x the primary's.
        let snapshot = exposition(&[
            ("static", "primary", 0.0016, 1000),
            ("static", "shadow", 0.0016, 40),
            ("static", "shadow", 0.0256, 1),
        ]);
        let verdict = Verdict::new(&snapshot, &[crate::demo::STATIC]);
        assert!(verdict.targets[0].p99_ratio().unwrap() > 10.0);
        assert!(!verdict.targets[0].is_regression());
        // Three slow ones are a tail.
        let snapshot = exposition(&[
            ("static", "primary", 0.0016, 1000),
            ("static", "shadow", 0.0016, 40),
            ("static", "shadow", 0.0256, 3),
        ]);
        assert!(Verdict::new(&snapshot, &[crate::demo::STATIC]).targets[0].is_regression());
    }

    #[test]
    fn latencies_read_well() {
        assert_eq!(latency(Some(Quantile::Value(0.000_21))), "210 µs");
        assert_eq!(latency(Some(Quantile::Value(0.001_62))), "1.62 ms");
        assert_eq!(latency(Some(Quantile::Value(0.0412))), "41.2 ms");
        assert_eq!(latency(Some(Quantile::Above(52.4288))), ">52.4 s");
        assert_eq!(latency(None), "-");
    }
}
