use super::*;
use crate::{
    pipeline::{EvidenceCollector, ShadowRole, SharedEvidence, TargetEvidence},
    stats::parse,
    verdict::{
        FieldDiff, NumericPair, Outcome, Report,
        diff::FieldOutcome,
        fields::{FieldClass, Rule},
    },
};

fn samples(text: &str) -> Vec<Sample> {
    parse(text).unwrap()
}

/// One node's exposition, every count times `k`: target `api` with the candidate `v2` and the
/// baseline `copy`. Latency buckets (cumulative) 1ms/10ms/100ms/+Inf; `/price` differs in 20%
/// of the candidate's responses and 1% of the baseline's; `/ref` differs everywhere but only
/// between id-like values; `/score` drifted (the candidate's values one bucket higher).
fn node(k: u64) -> String {
    let mut text = String::from(
        "# TYPE mirror_shadow_info gauge\n\
         mirror_shadow_info{target=\"api\",role=\"shadow\",shadow=\"v2\"} 1\n\
         mirror_shadow_info{target=\"api\",role=\"baseline\",shadow=\"copy\"} 1\n",
    );
    let line = |text: &mut String, name: &str, labels: &str, value: u64| {
        text.push_str(&format!(
            "{name}{{target=\"api\",{labels}}} {}\n",
            value * k
        ));
    };
    line(&mut text, "mirror_comparisons_total", "shadow=\"v2\"", 300);
    line(
        &mut text,
        "mirror_comparisons_total",
        "shadow=\"copy\"",
        290,
    );
    for (role, shadow, ok, errors) in [
        ("primary", "", 297, 3),
        ("shadow", "v2", 270, 30),
        ("baseline", "copy", 287, 3),
    ] {
        let labels = format!("role=\"{role}\",shadow=\"{shadow}\"");
        line(
            &mut text,
            "mirror_responses_total",
            &format!("{labels},code=\"200\""),
            ok,
        );
        line(
            &mut text,
            "mirror_responses_total",
            &format!("{labels},code=\"503\""),
            errors,
        );
        // A 4xx is no server error.
        line(
            &mut text,
            "mirror_responses_total",
            &format!("{labels},code=\"404\""),
            0,
        );
    }
    for (role, shadow, counts) in [
        ("primary", "", [100, 290, 300, 300]),
        ("shadow", "v2", [10, 150, 290, 300]),
    ] {
        for (le, count) in ["0.001", "0.01", "0.1", "+Inf"].iter().zip(counts) {
            let labels = format!("role=\"{role}\",shadow=\"{shadow}\",le=\"{le}\"");
            line(
                &mut text,
                "mirror_response_duration_seconds_bucket",
                &labels,
                count,
            );
        }
    }
    for (field, counts) in [
        ("/price", [300, 60, 0, 290, 3]),
        ("/ref", [300, 300, 300, 290, 290]),
    ] {
        for (family, count) in FIELD_COUNTERS.iter().zip(counts) {
            let labels = format!("shadow=\"v2\",field=\"{field}\"");
            line(&mut text, family, &labels, count);
        }
    }
    for (side, counts) in [("primary", [0, 1000, 1000]), ("shadow", [0, 300, 1000])] {
        for (le, count) in ["0.5", "1", "+Inf"].iter().zip(counts) {
            let labels = format!("shadow=\"v2\",field=\"/score\",side=\"{side}\",le=\"{le}\"");
            line(&mut text, "mirror_field_value_bucket", &labels, count);
        }
    }
    text
}

fn judged(samples: &[Sample]) -> Report {
    Policy::default().judge(&inputs_from_samples(samples, &Policy::default()))
}

#[test]
fn one_node_gives_every_part_of_the_input() {
    let inputs = inputs_from_samples(&samples(&node(1)), &Policy::default());
    assert_eq!(inputs.len(), 1);
    let api = &inputs[0];
    assert_eq!(api.target, "api");
    let names: Vec<&str> = api.shadows.iter().map(|s| s.shadow.as_str()).collect();
    assert_eq!(names, ["copy", "v2"], "sorted by name");
    let (copy, v2) = (&api.shadows[0], &api.shadows[1]);
    assert_eq!(copy.role, Role::Baseline);
    assert_eq!(v2.role, Role::Candidate);
    assert_eq!(v2.samples, 300);
    assert_eq!(
        v2.errors,
        Some(ErrorCounts {
            primary_responses: 300,
            primary_5xx: 3,
            shadow_responses: 300,
            shadow_5xx: 30,
        })
    );
    let Some((Latency::Buckets(primary), Latency::Buckets(shadow))) = &v2.latency else {
        panic!("latency from buckets: {:?}", v2.latency);
    };
    assert_eq!(primary.len(), 4);
    assert_eq!(primary[3].upper_bound, f64::INFINITY);
    assert_eq!(shadow[1].count, 150.0);
    // The baseline is a second copy of the primary: /price differs beyond its noise.
    let price = v2.fields.iter().find(|f| f.field == "/price").unwrap();
    assert_eq!(price.counts.diffs, 60);
    assert_eq!(price.counts.baseline_diffs, 3);
    assert_eq!(price.classification.class, FieldClass::Real);
    assert_eq!(price.classification.rule, Rule::Baseline);
    let id = v2.fields.iter().find(|f| f.field == "/ref").unwrap();
    assert_eq!(id.classification.class, FieldClass::Noise);
    assert_eq!(v2.fields[0].field, "/ref", "highest difference rate first");
    assert_eq!(v2.drift.len(), 1);
    let score = &v2.drift[0];
    assert!(score.drifted, "{score:?}");
    close(score.ks.unwrap().statistic, 0.7);

    let report = judged(&samples(&node(1)));
    assert_eq!(report.verdict, Outcome::Fail);
    let target = &report.targets[0];
    assert_eq!(target.baseline.as_deref(), Some("copy"));
    let reasons = &target.shadows[0].reasons;
    for expected in [
        "P50 latency",
        "5xx in 10.0%",
        "/price differs in 20.0%",
        "/score drifted",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected}: {reasons:?}"
        );
    }
}

fn close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
}

#[test]
fn two_nodes_summed_judge_like_one_node_with_the_sums() {
    // Prometheus' `sum by` adds the nodes' series; here the two scrapes are simply one list.
    let mut both = samples(&node(1));
    both.extend(samples(&node(2)));
    let policy = Policy::default();
    assert_eq!(
        inputs_from_samples(&both, &policy),
        inputs_from_samples(&samples(&node(3)), &policy)
    );
    assert_eq!(judged(&both), judged(&samples(&node(3))));
    // The same evidence spread unevenly: what counts is the sum, not who saw it.
    let uneven = node(3).replace(
        "mirror_comparisons_total{target=\"api\",shadow=\"v2\"} 900",
        "mirror_comparisons_total{target=\"api\",shadow=\"v2\"} 0",
    );
    let mut split = samples(&uneven);
    split.extend(samples(
        "mirror_comparisons_total{target=\"api\",shadow=\"v2\"} 900\n",
    ));
    assert_eq!(judged(&split), judged(&samples(&node(3))));
}

#[test]
fn without_a_baseline_fields_are_judged_on_their_own() {
    let text: String = node(1)
        .lines()
        .filter(|line| !line.contains("copy") && !line.contains("role=\"baseline\""))
        .map(|line| format!("{line}\n"))
        .collect();
    // The baseline's columns of the field counters stay (the daemon would export 0s): they
    // are not what makes a baseline, its shadow is.
    let inputs = inputs_from_samples(&samples(&text), &Policy::default());
    let v2 = &inputs[0].shadows[0];
    assert_eq!(inputs[0].shadows.len(), 1);
    let price = v2.fields.iter().find(|f| f.field == "/price").unwrap();
    assert_eq!(price.classification.rule, Rule::NoBaseline);
    assert_eq!(price.classification.class, FieldClass::Real);
    // Id-like differences are noise by the value heuristic.
    let id = v2.fields.iter().find(|f| f.field == "/ref").unwrap();
    assert_eq!(id.classification.rule, Rule::Value);
    let report = Policy::default().judge(&inputs);
    assert_eq!(report.targets[0].baseline, None);
}

#[test]
fn missing_families_leave_their_part_out() {
    let only = "mirror_comparisons_total{target=\"api\",shadow=\"v2\"} 250\n\
                mirror_requests_total{target=\"api\"} 9000\n\
                process_cpu_seconds_total 3\n";
    let inputs = inputs_from_samples(&samples(only), &Policy::default());
    assert_eq!(
        inputs,
        [TargetInput {
            target: "api".into(),
            shadows: vec![ShadowInput {
                shadow: "v2".into(),
                role: Role::Candidate,
                samples: 250,
                latency: None,
                errors: None,
                fields: Vec::new(),
                drift: Vec::new(),
            }],
        }]
    );
    assert_eq!(Policy::default().judge(&inputs).verdict, Outcome::Pass);
    // Nothing at all: no target, nothing judged.
    let report = judged(&samples("up 1\n"));
    assert_eq!(report.verdict, Outcome::Inconclusive);
    assert!(report.targets.is_empty());
}

#[test]
fn roles_come_from_shadow_info_else_from_the_responses() {
    let text = "mirror_shadow_info{target=\"a\",role=\"baseline\",shadow=\"old\"} 1\n\
                mirror_responses_total{target=\"a\",role=\"shadow\",shadow=\"old\",code=\"200\"} 5\n\
                mirror_responses_total{target=\"a\",role=\"baseline\",shadow=\"b\",code=\"200\"} 5\n\
                mirror_responses_total{target=\"a\",role=\"shadow\",code=\"200\"} 5\n\
                mirror_responses_total{target=\"a\",role=\"primary\",shadow=\"\",code=\"500\"} 5\n\
                mirror_shadow_info{target=\"a\",role=\"shadow\",shadow=\"gone\"} 0\n";
    let inputs = inputs_from_samples(&samples(text), &Policy::default());
    let roles: Vec<(&str, Role)> = inputs[0]
        .shadows
        .iter()
        .map(|shadow| (shadow.shadow.as_str(), shadow.role))
        .collect();
    // A shadow without a `shadow` label is the one shadow of a daemon from before names; an
    // info series at 0 declares nothing.
    assert_eq!(
        roles,
        [
            ("b", Role::Baseline),
            ("old", Role::Baseline),
            ("shadow", Role::Candidate),
        ]
    );
    let errors = inputs[0].shadows[2].errors.unwrap();
    assert_eq!((errors.primary_5xx, errors.shadow_responses), (5, 5));
}

#[test]
fn fractional_increases_round_and_resets_do_not_go_negative() {
    // `increase()` extrapolates: 299.6 comparisons are 300; a bucket that dips (a reset inside
    // the window) is raised to its predecessor by the KS computation.
    let text = "mirror_comparisons_total{target=\"a\",shadow=\"s\"} 299.6\n\
                mirror_field_samples_total{target=\"a\",shadow=\"s\",field=\"/x\"} -0.2\n\
                mirror_field_value_bucket{target=\"a\",shadow=\"s\",field=\"/v\",side=\"primary\",le=\"1\"} 5\n\
                mirror_field_value_bucket{target=\"a\",shadow=\"s\",field=\"/v\",side=\"primary\",le=\"+Inf\"} 4.9\n\
                mirror_field_value_bucket{target=\"a\",shadow=\"s\",field=\"/v\",side=\"shadow\",le=\"+Inf\"} 5\n";
    let inputs = inputs_from_samples(&samples(text), &Policy::default());
    let shadow = &inputs[0].shadows[0];
    assert_eq!(shadow.samples, 300);
    assert_eq!(shadow.fields[0].counts.samples, 0);
    // The shadow side lacks the `le="1"` bucket: read as its count below it, 0.
    let ks = shadow.drift[0].ks.unwrap();
    close(ks.statistic, 1.0);
    assert_eq!((ks.samples_a, ks.samples_b), (5.0, 5.0));
}

#[test]
fn select_keeps_the_named_target_and_candidate_and_the_baseline() {
    let mut text = node(1);
    text.push_str("mirror_comparisons_total{target=\"api\",shadow=\"v3\"} 1\n");
    text.push_str("mirror_comparisons_total{target=\"web\",shadow=\"v2\"} 1\n");
    let all = inputs_from_samples(&samples(&text), &Policy::default());
    let names = |inputs: &[TargetInput]| -> Vec<String> {
        inputs
            .iter()
            .flat_map(|t| {
                t.shadows
                    .iter()
                    .map(move |s| format!("{}/{}", t.target, s.shadow))
            })
            .collect()
    };
    assert_eq!(names(&all), ["api/copy", "api/v2", "api/v3", "web/v2"]);
    assert_eq!(
        names(&select(all.clone(), Some("api"), Some("v3"))),
        ["api/copy", "api/v3"]
    );
    assert_eq!(
        names(&select(all.clone(), None, Some("v2"))),
        ["api/copy", "api/v2", "web/v2"]
    );
    assert!(select(all, Some("nope"), None).is_empty());
}

/// The daemon's own export of its evidence, read back, gives the inputs the evidence gives
/// directly: the exposition loses nothing the verdict needs.
#[test]
fn the_daemons_evidence_exposition_reads_back_exactly() {
    let policy = Policy::default();
    let roles = vec![
        ShadowRole {
            name: "v2".into(),
            baseline: false,
        },
        ShadowRole {
            name: "copy".into(),
            baseline: true,
        },
    ];
    let mut evidence = TargetEvidence::new("api", roles, &policy);
    let diff = |fields: &[(&str, bool)], score: Option<(f64, f64)>| FieldDiff {
        fields: fields
            .iter()
            .map(|(field, differs)| {
                let outcome = FieldOutcome {
                    differs: *differs,
                    volatile: false,
                };
                (field.to_string(), outcome)
            })
            .collect(),
        numeric: score
            .map(|(primary, shadow)| NumericPair {
                field: "/score".into(),
                primary,
                shadow,
            })
            .into_iter()
            .collect(),
        numeric_truncated: false,
    };
    for i in 0..1500_u32 {
        let x = f64::from(i % 100) / 100.0;
        let candidate = diff(
            &[
                ("/price", i % 5 == 0),
                ("/name", false),
                ("header:etag", i % 2 == 0),
            ],
            Some((x, x * 1.3)),
        );
        let baseline = diff(
            &[("/price", i % 97 == 0), ("header:etag", i % 2 == 0)],
            None,
        );
        evidence.record(&[(0, candidate), (1, baseline)]);
    }
    let expected_fields = evidence.fields.fields("v2");
    let expected_drift = evidence.drift.drift("v2");
    let shared = SharedEvidence::default();
    shared.lock().targets.push(evidence);
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(EvidenceCollector::new(shared)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.push_str("mirror_shadow_info{target=\"api\",role=\"baseline\",shadow=\"copy\"} 1\n");

    let inputs = inputs_from_samples(&samples(&text), &policy);
    let v2 = inputs[0].shadows.iter().find(|s| s.shadow == "v2").unwrap();
    assert_eq!(v2.fields, expected_fields);
    assert_eq!(v2.drift, expected_drift);
    let price = v2.fields.iter().find(|f| f.field == "/price").unwrap();
    assert_eq!(price.classification.class, FieldClass::Real);
    assert!(v2.drift[0].drifted, "{:?}", v2.drift[0]);
}
