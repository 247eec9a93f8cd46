use super::*;
use crate::verdict::{Outcome, Policy, Role, inputs_from_samples};

fn window(text: &str) -> Result<Window, String> {
    text.parse()
}

#[test]
fn windows_are_prometheus_durations() {
    for good in ["1h", "30m", "90s", "1h30m", "7d", "2w", "500ms", "1y"] {
        assert_eq!(window(good).unwrap().as_str(), good);
    }
    for bad in ["", "h", "1", "1hour", "-5m", "0m", "1h 30m", "5m]", "1.5h"] {
        let error = window(bad).unwrap_err();
        assert!(
            error.contains("is not a Prometheus duration"),
            "{bad}: {error}"
        );
    }
    assert_eq!(Window::default().as_str(), "1h");
}

#[test]
fn every_family_is_summed_over_nodes_with_increase() {
    let search = queries(&window("2h").unwrap(), Some("search"));
    let promql: Vec<&str> = search.iter().map(|query| query.promql.as_str()).collect();
    assert_eq!(
        promql,
        [
            r#"max by (target, role, shadow) (mirror_shadow_info{target="search"})"#,
            r#"sum by (target, shadow) (increase(mirror_comparisons_total{target="search"}[2h]))"#,
            r#"sum by (target, role, shadow, code) (increase(mirror_responses_total{target="search"}[2h]))"#,
            r#"sum by (target, role, shadow, le) (increase(mirror_response_duration_seconds_bucket{target="search"}[2h]))"#,
            r#"sum by (target, shadow, field) (increase(mirror_field_samples_total{target="search"}[2h]))"#,
            r#"sum by (target, shadow, field) (increase(mirror_field_differences_total{target="search"}[2h]))"#,
            r#"sum by (target, shadow, field) (increase(mirror_field_volatile_differences_total{target="search"}[2h]))"#,
            r#"sum by (target, shadow, field) (increase(mirror_field_baseline_samples_total{target="search"}[2h]))"#,
            r#"sum by (target, shadow, field) (increase(mirror_field_baseline_differences_total{target="search"}[2h]))"#,
            r#"sum by (target, shadow, field, side, le) (increase(mirror_field_value_bucket{target="search"}[2h]))"#,
        ]
    );
    assert_eq!(search[1].family, "mirror_comparisons_total");
    let all = queries(&Window::default(), None);
    assert_eq!(
        all[1].promql,
        "sum by (target, shadow) (increase(mirror_comparisons_total[1h]))"
    );
    // A target name cannot break out of its string.
    let odd = queries(&Window::default(), Some("a\"}[1h]) or vector(1) #\\"));
    assert!(
        odd[0]
            .promql
            .contains(r#"{target="a\"}[1h]) or vector(1) #\\"}"#),
        "{}",
        odd[0].promql
    );
}

/// A canned `/api/v1/query` answer, as Prometheus 2.x/3.x sends it.
const COMPARISONS: &str = r#"{"status":"success","data":{"resultType":"vector","result":[
  {"metric":{"shadow":"v2","target":"search"},"value":[1717171717.123,"1234.0000000001"]},
  {"metric":{"shadow":"copy","target":"search"},"value":[1717171717.123,"1200"]}
]}}"#;

const INFO: &str = r#"{"status":"success","data":{"resultType":"vector","result":[
  {"metric":{"role":"shadow","shadow":"v2","target":"search"},"value":[1717171717.123,"1"]},
  {"metric":{"role":"baseline","shadow":"copy","target":"search"},"value":[1717171717.123,"1"]}
]}}"#;

#[test]
fn vector_answers_become_named_samples() {
    let all = queries(&Window::default(), Some("search"));
    let samples = samples_from_response(&all[1], COMPARISONS).unwrap();
    assert_eq!(
        samples[0],
        Sample {
            name: "mirror_comparisons_total".into(),
            labels: vec![
                ("shadow".into(), "v2".into()),
                ("target".into(), "search".into())
            ],
            value: 1234.0000000001,
        }
    );
    let mut samples = samples_from_response(&all[0], INFO).unwrap();
    samples.extend(samples_from_response(&all[1], COMPARISONS).unwrap());
    let inputs = inputs_from_samples(&samples, &Policy::default());
    let shadows = &inputs[0].shadows;
    assert_eq!(
        (shadows[0].shadow.as_str(), shadows[0].role),
        ("copy", Role::Baseline)
    );
    assert_eq!(
        (shadows[1].samples, shadows[1].role),
        (1234, Role::Candidate)
    );
    assert_eq!(Policy::default().judge(&inputs).verdict, Outcome::Pass);
    // No series (nothing mirrored in the window): no samples, not an error.
    let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    assert!(samples_from_response(&all[1], empty).unwrap().is_empty());
    // `__name__` (kept by `max by` only if asked) is dropped: the family names the samples.
    let named = r#"{"status":"success","data":{"resultType":"vector","result":[
      {"metric":{"__name__":"x","target":"a"},"value":[1,"NaN"]}]}}"#;
    let samples = samples_from_response(&all[0], named).unwrap();
    assert_eq!(samples[0].labels, [("target".to_owned(), "a".to_owned())]);
    assert!(samples[0].value.is_nan());
}

#[test]
fn refusals_and_other_shapes_are_errors_naming_the_query() {
    let query = &queries(&Window::default(), None)[1];
    let refused =
        r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\""}"#;
    let error = samples_from_response(query, refused)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "Prometheus refused \"sum by (target, shadow) (increase(mirror_comparisons_total[1h]))\": \
         bad_data: invalid parameter \"query\""
    );
    let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
    assert!(matches!(
        samples_from_response(query, matrix),
        Err(PrometheusError::NotVector { found, .. }) if found == "matrix"
    ));
    assert!(matches!(
        samples_from_response(query, "<html>login</html>"),
        Err(PrometheusError::Json { .. })
    ));
    let word = r#"{"status":"success","data":{"resultType":"vector","result":[
      {"metric":{},"value":[1,"many"]}]}}"#;
    assert!(matches!(
        samples_from_response(query, word),
        Err(PrometheusError::Value { value, .. }) if value == "many"
    ));
}
