use serde_json::{Value, json};

use super::*;
use crate::verdict::drift::Ks;
use crate::verdict::fields::{Classification, FieldCounts, OTHER, Rule, classify};

fn field(name: &str, samples: u64, diffs: u64, baseline: Option<(u64, u64)>) -> FieldStat {
    let (baseline_samples, baseline_diffs) = baseline.unwrap_or((0, 0));
    let counts = FieldCounts {
        samples,
        diffs,
        volatile_diffs: 0,
        baseline_samples,
        baseline_diffs,
    };
    FieldStat {
        field: name.to_owned(),
        counts,
        classification: classify(name, &counts, baseline.is_some(), &FieldConfig::default()),
    }
}

fn drift(name: &str, statistic: f64, upper: f64, samples: f64) -> DriftStat {
    DriftConfig::default().judge(
        name,
        Some(Ks {
            statistic,
            upper,
            samples_a: samples,
            samples_b: samples,
        }),
    )
}

fn candidate(name: &str, samples: u64) -> ShadowInput {
    ShadowInput {
        shadow: name.to_owned(),
        role: Role::Candidate,
        samples,
        latency: None,
        errors: None,
        fields: Vec::new(),
        drift: Vec::new(),
    }
}

fn target(name: &str, shadows: Vec<ShadowInput>) -> TargetInput {
    TargetInput {
        target: name.to_owned(),
        shadows,
    }
}

/// `ours` has every key, element (as a prefix) and scalar of `example`.
fn compatible(example: &Value, ours: &Value, path: &str) {
    match (example, ours) {
        (Value::Object(example), Value::Object(ours)) => {
            for (key, value) in example {
                let inner = ours
                    .get(key)
                    .unwrap_or_else(|| panic!("{path}/{key} missing in {ours:?}"));
                compatible(value, inner, &format!("{path}/{key}"));
            }
        }
        (Value::Array(example), Value::Array(ours)) => {
            assert!(ours.len() >= example.len(), "{path}: {ours:?}");
            for (index, (a, b)) in example.iter().zip(ours).enumerate() {
                compatible(a, b, &format!("{path}/{index}"));
            }
        }
        _ => assert_eq!(example, ours, "{path}"),
    }
}

#[test]
fn the_serialised_shape_matches_the_documented_one() {
    let example = json!({"verdict": "fail",
     "targets": [{"target": "api", "shadows": [{"shadow": "v2", "verdict": "fail", "samples": 1234,
        "reasons": ["/price differs in 20.1% of responses (baseline 0.0%)"],
        "fields": [{"field": "/price", "class": "real", "diff_rate": 0.201, "noise_rate": 0.0},
                   {"field": "/ts", "class": "noise", "diff_rate": 1.0, "noise_rate": 1.0}],
        "drift": [{"field": "/score", "statistic": 0.41, "drifted": true}]}]}]});
    let mut v2 = candidate("v2", 1234);
    v2.fields = vec![
        field("/ts", 1000, 1000, Some((1000, 1000))),
        field("/price", 1000, 201, Some((1000, 0))),
        field("/same", 1000, 0, Some((1000, 0))),
    ];
    v2.drift = vec![drift("/score", 0.41, 0.43, 1234.0)];
    let mut baseline = candidate("v1-copy", 1234);
    baseline.role = Role::Baseline;
    let report = Policy::default().judge(&[target("api", vec![v2, baseline])]);
    let ours = serde_json::to_value(&report).unwrap();
    compatible(&example, &ours, "");
    let shadow = &ours["targets"][0]["shadows"][0];
    assert_eq!(ours["targets"][0]["baseline"], "v1-copy");
    assert_eq!(
        ours["targets"][0]["shadows"].as_array().unwrap().len(),
        1,
        "the baseline is not judged"
    );
    assert_eq!(shadow["fields_compared"], 3);
    assert_eq!(
        shadow["fields"].as_array().unwrap().len(),
        2,
        "fields that never differ are not listed"
    );
    assert_eq!(shadow["fields"][0]["rule"], "baseline");
    assert_eq!(
        shadow["reasons"][1],
        "/score drifted: KS D = 0.41 (limit 0.10; 1234 primary and 1234 candidate values)"
    );
    assert!(shadow.get("latency").is_none() && shadow.get("errors").is_none());
}

#[test]
fn overall_verdict_is_the_worst_candidate() {
    let policy = Policy::default();
    let pass = candidate("ok", 500);
    let inconclusive = candidate("young", 10);
    let mut fail = candidate("bad", 500);
    fail.fields = vec![field("/price", 500, 100, None)];
    let verdict = |shadows: Vec<ShadowInput>| policy.judge(&[target("api", shadows)]).verdict;
    assert_eq!(verdict(vec![pass.clone()]), Outcome::Pass);
    assert_eq!(
        verdict(vec![pass.clone(), inconclusive.clone()]),
        Outcome::Inconclusive
    );
    assert_eq!(
        verdict(vec![pass.clone(), inconclusive.clone(), fail.clone()]),
        Outcome::Fail
    );
    assert_eq!(verdict(vec![]), Outcome::Inconclusive);
    // Across targets too.
    let report = policy.judge(&[
        target("a", vec![pass.clone()]),
        target("b", vec![fail.clone()]),
    ]);
    assert_eq!(report.verdict, Outcome::Fail);
    assert_eq!(report.targets[0].shadows[0].verdict, Outcome::Pass);
    assert!(report.targets[0].shadows[0].reasons.is_empty());
    // A baseline alone is not a candidate, whatever its numbers.
    let mut baseline = fail.clone();
    baseline.role = Role::Baseline;
    assert_eq!(verdict(vec![baseline]), Outcome::Inconclusive);
    assert_eq!(
        policy.judge(&[target("api", vec![fail])]).targets[0].shadows[0].reasons,
        ["/price differs in 20.0% of responses (no baseline)"]
    );
}

#[test]
fn too_few_samples_are_inconclusive_and_limits_become_notes() {
    let mut young = candidate("young", 150);
    young.errors = Some(ErrorCounts {
        primary_responses: 150,
        primary_5xx: 0,
        shadow_responses: 150,
        shadow_5xx: 30,
    });
    let report = Policy::default().judge_shadow(&young);
    assert_eq!(report.verdict, Outcome::Inconclusive);
    assert_eq!(
        report.reasons,
        ["only 150 exchanges compared (minimum 200)"]
    );
    assert_eq!(
        report.notes,
        ["5xx in 20.0% of responses vs the primary's 0.0% (limit +1.0 points)"]
    );
}

#[test]
fn latency_limits() {
    let policy = Policy::default();
    let quantiles = |p50, p99| Latency::Quantiles {
        samples: 1000,
        p50,
        p99,
    };
    let judge = |primary, shadow| {
        let mut input = candidate("v2", 1000);
        input.latency = Some((primary, shadow));
        policy.judge_shadow(&input)
    };
    let slow_p99 = judge(quantiles(0.010, 0.050), quantiles(0.011, 0.120));
    assert_eq!(slow_p99.verdict, Outcome::Fail);
    assert_eq!(
        slow_p99.reasons,
        ["P99 latency 0.120s is 2.40× the primary's 0.050s (limit 1.5×)"]
    );
    let slow_p50 = judge(quantiles(0.100, 0.200), quantiles(0.130, 0.200));
    assert_eq!(slow_p50.verdict, Outcome::Fail);
    assert!(
        slow_p50.reasons[0].starts_with("P50 latency 0.130s is 1.30×"),
        "{:?}",
        slow_p50.reasons
    );
    // Three times slower but by 2 ms: jitter on a fast path.
    assert_eq!(
        judge(quantiles(0.001, 0.001), quantiles(0.003, 0.003)).verdict,
        Outcome::Pass
    );
    // From histogram buckets (seconds, cumulative), as the daemon exports them.
    let buckets = |counts: [f64; 4]| {
        Latency::Buckets(
            [0.01, 0.1, 1.0, f64::INFINITY]
                .iter()
                .zip(counts)
                .map(|(upper_bound, count)| Bucket {
                    upper_bound: *upper_bound,
                    count,
                })
                .collect(),
        )
    };
    let report = judge(
        buckets([900.0, 1000.0, 1000.0, 1000.0]),
        buckets([100.0, 500.0, 1000.0, 1000.0]),
    );
    assert_eq!(report.verdict, Outcome::Fail);
    assert_eq!(report.reasons.len(), 2, "{:?}", report.reasons);
    let latency = report.latency.unwrap();
    assert!(latency.shadow_p99.unwrap() > latency.primary_p99.unwrap());
    // Too few latency observations: a note, not a verdict.
    let few = judge(
        Latency::Quantiles {
            samples: 50,
            p50: 0.01,
            p99: 0.01,
        },
        quantiles(1.0, 1.0),
    );
    assert_eq!(few.verdict, Outcome::Pass);
    assert!(
        few.notes[0].starts_with("latency not judged"),
        "{:?}",
        few.notes
    );
}

#[test]
fn error_rate_delta() {
    let judge = |primary_5xx, shadow_5xx| {
        let mut input = candidate("v2", 1000);
        input.errors = Some(ErrorCounts {
            primary_responses: 1000,
            primary_5xx,
            shadow_responses: 1000,
            shadow_5xx,
        });
        Policy::default().judge_shadow(&input)
    };
    assert_eq!(judge(5, 15).verdict, Outcome::Pass);
    let report = judge(5, 16);
    assert_eq!(report.verdict, Outcome::Fail);
    assert_eq!(
        report.reasons,
        ["5xx in 1.6% of responses vs the primary's 0.5% (limit +1.0 points)"]
    );
    assert_eq!(report.errors.unwrap().shadow_rate, 0.016);
}

#[test]
fn real_fields_within_the_allowed_rate_are_notes() {
    let policy = Policy {
        max_real_diff_rate: 0.25,
        ..Policy::default()
    };
    let mut input = candidate("v2", 1000);
    input.fields = vec![
        field("/price", 1000, 200, Some((1000, 0))),
        field("/rare", 50, 40, Some((50, 0))),
        field(OTHER, 1000, 300, Some((1000, 0))),
    ];
    let report = policy.judge_shadow(&input);
    assert_eq!(report.verdict, Outcome::Fail);
    assert_eq!(
        report.reasons,
        [
            "a field beyond the tracked ones (\"other\") differs in 30.0% of responses (baseline 0.0%)"
        ]
    );
    assert_eq!(
        report.notes,
        [
            "/price differs in 20.0% of responses (baseline 0.0%), within the policy",
            "/rare differs in 80.0% of responses (baseline 0.0%), too few samples to classify (50)",
        ]
    );
    let listed: Vec<(&str, FieldClass)> = report
        .fields
        .iter()
        .map(|entry| (entry.field.as_str(), entry.class))
        .collect();
    assert_eq!(
        listed,
        [
            (OTHER, FieldClass::Real),
            ("/price", FieldClass::Real),
            ("/rare", FieldClass::Insufficient)
        ]
    );
    assert_eq!(report.fields[2].rule, Rule::MinSamples);
}

#[test]
fn unresolved_drift_is_a_note() {
    let mut input = candidate("v2", 1000);
    input.drift = vec![
        drift("/score", 0.05, 0.4, 5000.0),
        drift("/ok", 0.01, 0.02, 5000.0),
    ];
    let report = Policy::default().judge_shadow(&input);
    assert_eq!(report.verdict, Outcome::Pass);
    assert_eq!(
        report.notes,
        ["/score: drift not resolvable by the sketch's buckets (D between 0.05 and 0.40)"]
    );
    assert_eq!(report.drift.len(), 2);
}

#[test]
fn policy_from_toml() {
    let policy: Policy = toml::from_str("").unwrap();
    assert_eq!(policy, Policy::default());
    let policy: Policy = toml::from_str(
        r#"
        min_samples = 500
        max_p99_ratio = 2.0

        [diff]
        ignore_fields = ["/meta/request_id", "/items/*/etag"]
        headers = ["content-type", "cache-control"]

        [fields]
        relative_threshold = 0.5
        max_fields = 8

        [drift]
        threshold = 0.2
        layout = { buckets_per_doubling = 8 }
        "#,
    )
    .unwrap();
    assert_eq!(policy.min_samples, 500);
    assert_eq!(policy.max_p99_ratio, 2.0);
    assert_eq!(policy.max_p50_ratio, 1.2);
    assert_eq!(
        policy.diff.ignore_fields,
        ["/meta/request_id", "/items/*/etag"]
    );
    assert_eq!(policy.diff.body_budget, 1 << 20);
    assert_eq!(policy.fields.relative_threshold, 0.5);
    assert_eq!(policy.fields.absolute_threshold, 0.03);
    assert_eq!(policy.fields.max_fields, 8);
    assert_eq!(policy.drift.threshold, 0.2);
    assert_eq!(policy.drift.layout.buckets_per_doubling, 8);
    assert_eq!(policy.drift.layout.min_exponent, -10);
    assert!(toml::from_str::<Policy>("max_p99 = 2.0").is_err());
    assert!(toml::from_str::<Policy>("[fields]\nrelative = 0.5").is_err());
}

#[test]
fn field_entries_are_listed_real_first() {
    let mut input = candidate("v2", 1000);
    input.fields = vec![
        field("/ts", 1000, 1000, None),
        field("/rare", 50, 40, None),
        field("/price", 1000, 200, None),
        field("/same", 1000, 0, None),
    ];
    let report = Policy::default().judge_shadow(&input);
    let listed: Vec<(&str, FieldClass, Rule)> = report
        .fields
        .iter()
        .map(|entry| (entry.field.as_str(), entry.class, entry.rule))
        .collect();
    assert_eq!(
        listed,
        [
            ("/price", FieldClass::Real, Rule::NoBaseline),
            ("/rare", FieldClass::Insufficient, Rule::MinSamples),
            ("/ts", FieldClass::Noise, Rule::Name),
        ]
    );
    assert_eq!(report.fields_compared, 4);
    assert_eq!(
        (
            report.fields[0].samples,
            report.fields[0].noise_samples,
            report.fields[0].noise_rate
        ),
        (1000, 0, None)
    );
    assert_eq!(
        input.fields[0].classification,
        Classification {
            class: FieldClass::Noise,
            rule: Rule::Name,
            diff_rate: 1.0,
            noise_rate: None
        }
    );
}
