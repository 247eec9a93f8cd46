//! The demo's verdict. The judgement is the daemon's own: the metrics it exports, read back
//! with [`inputs_from_samples`] and judged by [`Policy::judge`] (what `/verdict` and `mirror
//! verdict` do), under the policy of the demo's `[verdict]` ([`POLICY`]). Here only the
//! presentation: per target, primary vs shadow latency with the samples behind it, 5xx rates and
//! digest mismatches side by side ([`Verdict::table`]), then one line per target from the report
//! ([`conclusion`]). I/O-free, so both are unit-tested.

use std::fmt::Write as _;

use super::Route;
use crate::{
    stats::{Quantile, RoleStats, Sample, Snapshot, TargetStats, count, percent, seconds_text},
    verdict::{Outcome, Policy, Report, inputs_from_samples},
};

/// The demo's `[verdict]`: the defaults, with minimums a short run reaches at 10% sampling,
/// and a latency regression required to add 20 ms (not the default 5 ms): with a few dozen
/// samples a P99 is the slowest one or two, and a scheduling hiccup of the demo's servers
/// (three versions in one process, on the cores the clients and the daemon use too) is not a
/// regression. The N+1 bug adds 40 to 80 ms to a cache miss.
pub const POLICY: &str = "min_samples = 30
latency_min_extra_seconds = 0.02

[fields]
min_samples = 30
";

/// [`POLICY`], parsed.
pub fn policy() -> Policy {
    // A constant that the tests parse.
    crate::config::Config::policy_from_toml(POLICY, "the demo's policy").expect("a valid policy")
}

/// The verdict on the daemon's metrics, as its `/verdict` gives it.
pub fn judge(samples: &[Sample], policy: &Policy) -> Report {
    policy.judge(&inputs_from_samples(samples, policy))
}

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
            row(
                &mut out,
                "P99 latency",
                latency(primary.p99),
                latency(shadow.p99),
                times(target.p99_ratio()),
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
                "status / body digest mismatches",
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
}

/// One line per target and candidate from `report`: `FAIL`, `INCONCLUSIVE` or `PASS`, where,
/// and the policy's reasons; then the decision.
pub fn conclusion(report: &Report, routes: &[Route]) -> String {
    let mut out = String::new();
    let mut failed = Vec::new();
    for route in routes {
        let Some(target) = report.targets.iter().find(|t| t.target == route.target) else {
            let _ = writeln!(
                out,
                "INCONCLUSIVE: target `{}`: nothing compared.",
                route.target
            );
            continue;
        };
        for shadow in &target.shadows {
            let place = format!(
                "target `{}` ({} on port {}), shadow {}",
                route.target, route.serves, route.port, shadow.shadow
            );
            match shadow.verdict {
                Outcome::Fail => {
                    failed.push(route.target);
                    let _ = writeln!(out, "FAIL: {place}: {}.", shadow.reasons.join("; "));
                }
                Outcome::Inconclusive => {
                    let why = shadow.reasons.first().map_or("", String::as_str);
                    let _ = writeln!(out, "INCONCLUSIVE: {place}: {why}.");
                }
                Outcome::Pass => {
                    let noise: Vec<&str> = shadow
                        .fields
                        .iter()
                        .filter(|field| field.class == crate::verdict::FieldClass::Noise)
                        .map(|field| field.field.as_str())
                        .collect();
                    let _ = write!(
                        out,
                        "PASS: {place}: {} compared",
                        count(shadow.samples as f64)
                    );
                    if !noise.is_empty() {
                        let _ = write!(
                            out,
                            "; noise cancelled by the baseline: {}",
                            noise.join(", ")
                        );
                    }
                    out.push_str(".\n");
                }
            }
        }
    }
    let decision = match report.verdict {
        Outcome::Fail => format!(
            "roll search v2 back (`mirror verdict` would exit 1): it fails on {}.",
            failed.join(", ")
        ),
        Outcome::Inconclusive => {
            "not enough evidence yet (`mirror verdict` would exit 2): run longer.".to_owned()
        }
        Outcome::Pass => "promote search v2 (`mirror verdict` would exit 0).".to_owned(),
    };
    let _ = writeln!(out, "DECISION: {decision}");
    out
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
    use crate::demo::ROUTES;

    /// The exposition of the demo's targets: each with candidate `v2` and baseline `baseline`;
    /// `(target, role, shadow, bucket upper bound, count)` latency observations, all in one
    /// bucket each, and `(target, field, candidate differences, baseline differences)` of
    /// `compared` field samples.
    fn exposition(
        observations: &[(&str, &str, &str, f64, u32)],
        fields: &[(&str, &str, u32, u32)],
        compared: u32,
    ) -> String {
        let bounds = [0.0004, 0.0016, 0.0064, 0.0256, 0.1024];
        let mut text = String::new();
        for route in ROUTES {
            let target = route.target;
            text.push_str(&format!(
                "mirror_shadow_info{{target=\"{target}\",role=\"shadow\",shadow=\"v2\"}} 1\n\
                 mirror_shadow_info{{target=\"{target}\",role=\"baseline\",shadow=\"baseline\"}} 1\n\
                 mirror_comparisons_total{{target=\"{target}\",shadow=\"v2\"}} {compared}\n\
                 mirror_comparisons_total{{target=\"{target}\",shadow=\"baseline\"}} {compared}\n"
            ));
        }
        for &(target, role, shadow, bound, n) in observations {
            for upper in bounds {
                let cumulative = if upper >= bound { n } else { 0 };
                text.push_str(&format!(
                    "mirror_response_duration_seconds_bucket{{target=\"{target}\",role=\"{role}\",shadow=\"{shadow}\",le=\"{upper}\"}} {cumulative}\n"
                ));
            }
            text.push_str(&format!(
                "mirror_response_duration_seconds_bucket{{target=\"{target}\",role=\"{role}\",shadow=\"{shadow}\",le=\"+Inf\"}} {n}\n\
                 mirror_responses_total{{target=\"{target}\",role=\"{role}\",shadow=\"{shadow}\",code=\"200\"}} {n}\n"
            ));
        }
        for &(target, field, diffs, noise) in fields {
            for (family, value) in [
                ("samples", compared),
                ("differences", diffs),
                ("baseline_samples", compared),
                ("baseline_differences", noise),
            ] {
                text.push_str(&format!(
                    "mirror_field_{family}_total{{target=\"{target}\",shadow=\"v2\",field=\"{field}\"}} {value}\n"
                ));
            }
        }
        text
    }

    fn fast(target: &'static str) -> [(&'static str, &'static str, &'static str, f64, u32); 2] {
        [
            (target, "primary", "", 0.0016, 1000),
            (target, "shadow", "v2", 0.0016, 100),
        ]
    }

    #[test]
    fn the_policy_names_the_slow_target_and_the_changed_field() {
        let mut observations = vec![
            ("search", "primary", "", 0.0016, 1000),
            ("search", "shadow", "v2", 0.0256, 100),
        ];
        for target in ["suggest", "static", "price"] {
            observations.extend(fast(target));
        }
        let text = exposition(
            &observations,
            &[
                ("price", "/price_cents", 40, 0),
                ("price", "/request_id", 100, 100),
                ("search", "/request_id", 100, 100),
            ],
            100,
        );
        let samples = crate::stats::parse(&text).unwrap();
        let report = judge(&samples, &policy());
        assert_eq!(report.verdict, Outcome::Fail);
        let conclusion = conclusion(&report, &ROUTES);
        let lines: Vec<&str> = conclusion.lines().collect();
        assert!(
            lines[0].starts_with("FAIL: target `search` (GET /search on port 8080), shadow v2: ")
                && lines[0].contains("P99 latency 0.025s is 16.00× the primary's"),
            "{conclusion}"
        );
        assert_eq!(
            lines[1],
            "PASS: target `suggest` (GET /suggest on port 8081), shadow v2: 100 compared.",
        );
        assert_eq!(
            lines[3],
            "FAIL: target `price` (GET /price on port 8083), shadow v2: /price_cents differs in \
             40.0% of responses (baseline 0.0%).",
        );
        assert_eq!(
            lines[4],
            "DECISION: roll search v2 back (`mirror verdict` would exit 1): it fails on search, \
             price."
        );
        assert!(!conclusion.contains("/request_id differs"), "{conclusion}");
    }

    #[test]
    fn jitter_on_a_fast_path_and_thin_samples_do_not_fail() {
        // 4x slower but only ~1 ms: jitter on a fast path, not a regression.
        let mut observations = vec![
            ("search", "primary", "", 0.0004, 1000),
            ("search", "shadow", "v2", 0.0016, 100),
        ];
        for target in ["suggest", "static", "price"] {
            observations.extend(fast(target));
        }
        let samples = crate::stats::parse(&exposition(&observations, &[], 100)).unwrap();
        let report = judge(&samples, &policy());
        assert_eq!(report.verdict, Outcome::Pass, "{report:?}");
        assert!(
            conclusion(&report, &ROUTES)
                .ends_with("DECISION: promote search v2 (`mirror verdict` would exit 0).\n")
        );
        // 16x slower, but 10 exchanges compared: below the minimum, inconclusive.
        let samples = crate::stats::parse(&exposition(&observations, &[], 10)).unwrap();
        let report = judge(&samples, &policy());
        assert_eq!(report.verdict, Outcome::Inconclusive);
        assert!(
            conclusion(&report, &ROUTES).starts_with(
                "INCONCLUSIVE: target `search` (GET /search on port 8080), shadow v2: only 10 \
                 exchanges compared (minimum 30)."
            ),
            "{}",
            conclusion(&report, &ROUTES)
        );
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
