use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn differ(ignore: &[&str]) -> JsonDiffer {
    JsonDiffer::new(&DiffConfig {
        ignore_fields: ignore.iter().map(|field| (*field).to_owned()).collect(),
        ..DiffConfig::default()
    })
    .unwrap()
}

fn compared(diff: &FieldDiff) -> Vec<&str> {
    diff.compared().collect()
}

fn differing(diff: &FieldDiff) -> Vec<&str> {
    diff.differing().collect()
}

#[test]
fn leaves_are_compared_and_differences_found() {
    let primary = json!({"price": 10, "name": "a", "ok": true, "none": null, "nested": {"x": 1.5}});
    let shadow = json!({"price": 12, "name": "a", "ok": false, "none": null, "nested": {"x": 1.5}});
    let diff = differ(&[]).compare_values(&primary, &shadow);
    assert_eq!(
        compared(&diff),
        ["/name", "/nested/x", "/none", "/ok", "/price"]
    );
    assert_eq!(differing(&diff), ["/ok", "/price"]);
    assert_eq!(
        diff.numeric,
        // Document order (serde_json keeps the keys' order).
        [
            NumericPair {
                field: "/price".into(),
                primary: 10.0,
                shadow: 12.0
            },
            NumericPair {
                field: "/nested/x".into(),
                primary: 1.5,
                shadow: 1.5
            },
        ]
    );
}

#[test]
fn numbers_compare_by_value() {
    let diff = differ(&[]).compare_values(
        &json!({"a": 1, "b": 9007199254740993_u64}),
        &json!({"a": 1.0, "b": 9007199254740992_u64}),
    );
    // 2^53 + 1 and 2^53 are the same f64, but distinct integers.
    assert_eq!(differing(&diff), ["/b"]);
}

#[test]
fn type_changes_and_one_sided_members_differ_at_that_field() {
    let primary = json!({"a": {"deep": 1}, "gone": {"x": 1}, "n": 1});
    let shadow = json!({"a": [1], "new": 2, "n": "1"});
    let diff = differ(&[]).compare_values(&primary, &shadow);
    assert_eq!(compared(&diff), ["/a", "/gone", "/n", "/new"]);
    assert_eq!(differing(&diff), ["/a", "/gone", "/n", "/new"]);
    assert!(diff.numeric.is_empty());
}

#[test]
fn arrays_generalise_indexes() {
    let primary =
        json!({"items": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]});
    let same_len =
        json!({"items": [{"id": 1, "name": "a"}, {"id": 2, "name": "B"}, {"id": 3, "name": "c"}]});
    let diff = differ(&[]).compare_values(&primary, &same_len);
    assert_eq!(compared(&diff), ["/items", "/items/*/id", "/items/*/name"]);
    assert_eq!(differing(&diff), ["/items/*/name"]);
    assert_eq!(diff.numeric.len(), 3);
    assert!(diff.numeric.iter().all(|pair| pair.field == "/items/*/id"));

    // A shorter array: the length differs at /items; the common prefix is still compared.
    let shorter = json!({"items": [{"id": 1, "name": "a"}]});
    let diff = differ(&[]).compare_values(&primary, &shorter);
    assert_eq!(differing(&diff), ["/items"]);
    assert_eq!(compared(&diff), ["/items", "/items/*/id", "/items/*/name"]);
}

#[test]
fn escaped_member_names() {
    let diff =
        differ(&[]).compare_values(&json!({"a/b": 1, "m~n": 2}), &json!({"a/b": 2, "m~n": 2}));
    assert_eq!(compared(&diff), ["/a~1b", "/m~0n"]);
    assert_eq!(differing(&diff), ["/a~1b"]);
}

#[test]
fn ignore_fields_skip_subtrees() {
    let primary =
        json!({"meta": {"request_id": "x", "ts": 1}, "items": [{"etag": "1", "v": 1}], "v": 1});
    let shadow =
        json!({"meta": {"request_id": "y", "ts": 2}, "items": [{"etag": "2", "v": 1}], "v": 2});
    let diff = differ(&["/meta", "/items/*/etag"]).compare_values(&primary, &shadow);
    assert_eq!(compared(&diff), ["/items", "/items/*/v", "/v"]);
    assert_eq!(differing(&diff), ["/v"]);
    // Ignoring a member that exists on one side only.
    let diff = differ(&["/extra"]).compare_values(&json!({"a": 1}), &json!({"a": 1, "extra": 2}));
    assert!(diff.is_identical());
    // Ignoring every element.
    let diff = differ(&["/items/*"]).compare_values(&primary, &shadow);
    assert!(compared(&diff).contains(&"/items"));
    assert!(
        !compared(&diff)
            .iter()
            .any(|field| field.starts_with("/items/"))
    );
    // The root.
    assert!(
        differ(&[""])
            .compare_values(&primary, &shadow)
            .fields
            .is_empty()
    );
}

#[test]
fn scalar_documents_are_the_root_field() {
    let diff = differ(&[]).compare_values(&json!(1), &json!(2));
    assert_eq!(differing(&diff), [""]);
}

#[test]
fn volatile_differences_are_marked() {
    let primary =
        json!({"id": "123e4567-e89b-12d3-a456-426614174000", "at": "2024-05-01T12:00:00Z", "n": 1});
    let shadow =
        json!({"id": "00000000-e89b-12d3-a456-426614174000", "at": "2024-05-01T12:00:01Z", "n": 2});
    let diff = differ(&[]).compare_values(&primary, &shadow);
    assert!(diff.fields["/id"].volatile);
    assert!(diff.fields["/at"].volatile);
    assert!(!diff.fields["/n"].volatile);
    // A generalised field is volatile only if every differing element is.
    let diff = differ(&[]).compare_values(
        &json!({"t": ["2024-05-01T12:00:00Z", "a"]}),
        &json!({"t": ["2024-05-01T12:00:01Z", "b"]}),
    );
    assert!(diff.fields["/t/*"].differs);
    assert!(!diff.fields["/t/*"].volatile);
}

#[test]
fn numeric_pairs_are_capped() {
    let differ = JsonDiffer::new(&DiffConfig {
        max_numeric_pairs: 2,
        ..DiffConfig::default()
    })
    .unwrap();
    let diff = differ.compare_values(&json!([1, 2, 3]), &json!([1, 2, 4]));
    assert_eq!(diff.numeric.len(), 2);
    assert!(diff.numeric_truncated);
    assert_eq!(differing(&diff), ["/*"]);
}

#[test]
fn non_json_is_not_comparable() {
    let differ = differ(&[]);
    let json_type = Some(&b"application/json; charset=utf-8"[..]);
    assert!(matches!(
        differ.compare((json_type, b"{\"a\":1}"), (None, b"{\"a\":2}")),
        JsonComparison::Compared(_)
    ));
    assert_eq!(
        differ.compare((Some(b"text/html"), b"{}"), (json_type, b"{}")),
        JsonComparison::NotComparable(NotJson::ContentType(Side::Primary))
    );
    assert_eq!(
        differ.compare((json_type, b"{}"), (json_type, b"<html>")),
        JsonComparison::NotComparable(NotJson::Invalid(Side::Shadow))
    );
    assert_eq!(
        differ.compare((None, b""), (None, b"{}")),
        JsonComparison::NotComparable(NotJson::Invalid(Side::Primary))
    );
    for media_type in [
        "application/json",
        "Application/JSON ; charset=utf-8",
        "application/problem+json",
        "text/json",
    ] {
        assert!(is_json_media_type(media_type.as_bytes()), "{media_type}");
    }
    for media_type in [
        "text/plain",
        "application/jsonp",
        "+json",
        "application/x-ndjson",
    ] {
        assert!(!is_json_media_type(media_type.as_bytes()), "{media_type}");
    }
}

#[test]
fn merge_combines_outcomes() {
    let mut a = differ(&[]).compare_values(&json!({"x": 1, "y": 1}), &json!({"x": 1, "y": 2}));
    let b = differ(&[]).compare_values(&json!({"x": 1, "z": 1}), &json!({"x": 2, "z": 1}));
    a.merge(b);
    assert_eq!(differing(&a), ["/x", "/y"]);
    assert_eq!(compared(&a), ["/x", "/y", "/z"]);
    assert_eq!(a.numeric.len(), 4);
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        // Never integral, so value equality and `Value` equality agree.
        any::<i32>().prop_map(|n| json!(f64::from(n) + 0.25)),
        "[a-z~/]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map("[a-c~/]{1,3}", inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn a_value_does_not_differ_from_itself(value in json_value()) {
        let diff = differ(&[]).compare_values(&value, &value);
        prop_assert!(diff.is_identical(), "{:?}", diff);
        for pair in &diff.numeric {
            prop_assert_eq!(pair.primary, pair.shadow);
        }
        // Every compared field is a valid pointer.
        for field in diff.compared() {
            prop_assert!(pointer::parse_pointer(field).is_ok());
        }
    }

    #[test]
    fn differences_are_symmetric(a in json_value(), b in json_value()) {
        let differ = differ(&[]);
        let ab = differ.compare_values(&a, &b);
        let ba = differ.compare_values(&b, &a);
        prop_assert_eq!(compared(&ab), compared(&ba));
        prop_assert_eq!(differing(&ab), differing(&ba));
        prop_assert_eq!(ab.is_identical(), a == b);
    }
}
