//! Records as JSON lines: shape, body encodings, truncation, redaction.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};

use super::line::{LinePolicy, render, rfc3339_millis};
use super::record::examples::{headers, record};
use super::*;

fn policy() -> LinePolicy {
    LinePolicy::new(&SinkSection::default())
}

fn policy_with_fields(fields: &[&str]) -> LinePolicy {
    LinePolicy {
        redact_fields: fields
            .iter()
            .map(|source| JsonPointer::parse(source).unwrap())
            .collect(),
        ..policy()
    }
}

/// The line of `record`, checked to be one line, parsed.
fn line(record: &SinkRecord, policy: &LinePolicy) -> (String, Value) {
    let mut out = Vec::new();
    render(record, policy, &mut out);
    let text = String::from_utf8(out).expect("lines are UTF-8");
    assert!(text.ends_with('\n'), "{text}");
    assert_eq!(text.matches('\n').count(), 1, "{text}");
    let value = serde_json::from_str(&text).expect("a line is one JSON object");
    (text, value)
}

#[test]
fn a_record_is_one_json_line_with_every_side() {
    let (text, _) = line(&record("/search?q=shoes"), &policy());
    assert_eq!(
        text,
        concat!(
            r#"{"time":"2026-01-01T00:00:00.123Z","target":"search","differs":true,"#,
            r#""request":{"method":"GET","target":"/search?q=shoes","headers":[["Host","search"],["Authorization","[redacted]"]],"body":"","body_length":0},"#,
            r#""primary":{"status":200,"latency_seconds":0.004,"headers":[["Content-Type","application/json"]],"body":"{\"hits\":[]}","body_length":11},"#,
            r#""shadows":[{"name":"v2","role":"candidate","outcome":"ok","status":500,"latency_seconds":0.006,"headers":[["Content-Type","text/plain"]],"body":"oops","body_length":4,"#,
            r#""differences":{"status":true,"body":true,"fields":[]}}]}"#,
            "\n"
        )
    );
}

#[test]
fn a_shadow_without_a_response_has_no_status_body_or_differences() {
    let mut record = record("/");
    let shadow = &mut record.shadows[0];
    shadow.outcome = ShadowOutcome::Timeout;
    shadow.role = ShadowRole::Baseline;
    shadow.status = None;
    shadow.headers.clear();
    shadow.body = None;
    shadow.latency_seconds = None;
    shadow.differences = None;
    let (_, value) = line(&record, &policy());
    assert_eq!(
        value["shadows"][0],
        json!({"name": "v2", "role": "baseline", "outcome": "timeout", "headers": []})
    );
    assert_eq!(value["differs"], json!(false));
}

#[test]
fn utf8_bodies_are_strings_and_others_base64() {
    let mut record = record("/");
    record.request.body = RecordBody::whole("héllo\n\u{0}");
    record.primary.body = RecordBody::whole(vec![0xff, 0x00, 0x89, b'P', b'N', b'G']);
    let (_, value) = line(&record, &policy());
    assert_eq!(value["request"]["body"], json!("héllo\n\u{0}"));
    assert!(value["request"].get("body_encoding").is_none());
    assert_eq!(value["primary"]["body"], json!("/wCJUE5H"));
    assert_eq!(value["primary"]["body_encoding"], json!("base64"));
    assert_eq!(value["primary"]["body_length"], json!(6));
}

#[test]
fn bodies_are_cut_at_body_bytes_and_marked() {
    let policy = LinePolicy {
        body_bytes: 4,
        ..policy()
    };
    let mut record = record("/");
    record.request.body = RecordBody::whole("0123456789");
    // 'é' is two bytes: a cut after its first byte keeps "abc" as text.
    record.primary.body = RecordBody::whole("abcé and more");
    record.shadows[0].body = Some(RecordBody::whole("oops"));
    let (_, value) = line(&record, &policy);
    assert_eq!(value["request"]["body"], json!("0123"));
    assert_eq!(value["request"]["truncated"], json!(true));
    assert_eq!(value["request"]["body_length"], json!(10));
    assert_eq!(value["primary"]["body"], json!("abc"));
    assert!(value["primary"].get("body_encoding").is_none());
    assert_eq!(value["primary"]["truncated"], json!(true));
    // Exactly body_bytes: whole, not marked.
    assert_eq!(value["shadows"][0]["body"], json!("oops"));
    assert!(value["shadows"][0].get("truncated").is_none());
    // A prefix the pipeline already cut is marked too.
    record.request.body = RecordBody::prefix(b"0123456789", 2);
    let (_, value) = line(&record, &policy);
    assert_eq!(
        (&value["request"]["body"], &value["request"]["truncated"]),
        (&json!("01"), &json!(true))
    );
    // body_bytes = 0: lengths only.
    let (_, value) = line(
        &record,
        &LinePolicy {
            body_bytes: 0,
            ..policy
        },
    );
    assert_eq!(value["primary"]["body"], json!(""));
    assert_eq!(value["primary"]["body_length"], json!(14));
}

#[test]
fn redacted_headers_match_case_insensitively_everywhere() {
    let mut record = record("/");
    record.request.headers = headers(&[
        ("AUTHORIZATION", "Basic dXNlcjpwYXNz"),
        ("cookie", "session=abc"),
        ("Cookie", "second=def"),
        ("Accept", "*/*"),
    ]);
    record.primary.headers = headers(&[("Set-Cookie", "session=xyz; HttpOnly")]);
    record.shadows[0].headers = headers(&[("set-COOKIE", "session=uvw")]);
    let (text, value) = line(&record, &policy());
    for secret in ["dXNlcjpwYXNz", "session=", "second=def"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    // Order and duplicates kept.
    assert_eq!(
        value["request"]["headers"],
        json!([
            ["AUTHORIZATION", "[redacted]"],
            ["cookie", "[redacted]"],
            ["Cookie", "[redacted]"],
            ["Accept", "*/*"]
        ])
    );
    assert_eq!(
        value["primary"]["headers"],
        json!([["Set-Cookie", "[redacted]"]])
    );
    assert_eq!(
        value["shadows"][0]["headers"],
        json!([["set-COOKIE", "[redacted]"]])
    );
}

#[test]
fn header_values_that_are_not_utf8_are_converted_lossily() {
    let mut record = record("/");
    record.request.headers = vec![("X-Raw".into(), Bytes::from_static(b"caf\xe9"))];
    let (_, value) = line(&record, &policy());
    assert_eq!(
        value["request"]["headers"],
        json!([["X-Raw", "caf\u{fffd}"]])
    );
}

#[test]
fn fields_are_redacted_in_request_and_response_bodies_with_wildcards() {
    let policy = policy_with_fields(&["/user/email", "/items/*/card"]);
    let mut record = record("/");
    record.request.body =
        RecordBody::whole(r#"{"user": {"email": "ann@example.com", "id": 1}, "items": []}"#);
    record.primary.body = RecordBody::whole(
        r#"{"items": [{"card": "4111111111111111", "sku": "a"}, {"sku": "b"}, {"card": "5500000000000004"}]}"#,
    );
    record.shadows[0].body = Some(RecordBody::whole(
        r#"{"user": {"email": "bob@example.com"}, "items": [{"card": "340000000000009"}]}"#,
    ));
    let (text, value) = line(&record, &policy);
    for secret in ["example.com", "4111", "5500", "3400"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    // Re-serialised compactly.
    assert_eq!(
        value["request"]["body"],
        json!(r#"{"user":{"email":"[redacted]","id":1},"items":[]}"#)
    );
    assert_eq!(
        value["primary"]["body"],
        json!(r#"{"items":[{"card":"[redacted]","sku":"a"},{"sku":"b"},{"card":"[redacted]"}]}"#)
    );
    assert_eq!(
        value["shadows"][0]["body"],
        json!(r#"{"user":{"email":"[redacted]"},"items":[{"card":"[redacted]"}]}"#)
    );
}

#[test]
fn bodies_that_are_not_json_or_do_not_match_are_left_as_they_came() {
    let policy = policy_with_fields(&["/user/email"]);
    let mut record = record("/");
    record.request.body = RecordBody::whole("user[email]=ann@example.com");
    // Pretty-printed JSON without the field keeps its layout.
    record.primary.body = RecordBody::whole("{\n  \"user\": {\"id\": 1}\n}");
    let (_, value) = line(&record, &policy);
    assert_eq!(
        value["request"]["body"],
        json!("user[email]=ann@example.com")
    );
    assert_eq!(
        value["primary"]["body"],
        json!("{\n  \"user\": {\"id\": 1}\n}")
    );
}

#[test]
fn fields_are_redacted_before_the_body_is_cut() {
    let policy = LinePolicy {
        body_bytes: 31,
        ..policy_with_fields(&["/user/email"])
    };
    let mut record = record("/");
    let padding = "x".repeat(100);
    record.primary.body = RecordBody::whole(format!(
        r#"{{"user": {{"email": "ann@example.com"}}, "pad": "{padding}"}}"#
    ));
    let (text, value) = line(&record, &policy);
    assert!(!text.contains("ann@"), "{text}");
    assert_eq!(
        value["primary"]["body"],
        json!(r#"{"user":{"email":"[redacted]"},"#)
    );
    assert_eq!(value["primary"]["truncated"], json!(true));
}

#[test]
fn json_that_cannot_be_checked_is_withheld_when_fields_are_redacted() {
    let mut record = record("/");
    // Cut before it reached the sink: the field may be in it, the document does not parse.
    record.primary.body = RecordBody::prefix(br#"{"user": {"email": "ann@example.com"}, "#, 30);
    // Starts like JSON, does not parse.
    record.request.body = RecordBody::whole(r#"{"user": {"email": "ann@example.com"}} trailing"#);
    // Compressed: nothing to parse.
    record.shadows[0].headers = headers(&[("Content-Encoding", "gzip")]);
    record.shadows[0].body = Some(RecordBody::whole(vec![0x1f, 0x8b, 8, 0, 1, 2, 3]));
    let (text, value) = line(&record, &policy_with_fields(&["/user/email"]));
    assert!(!text.contains("ann@"), "{text}");
    assert_eq!(value["request"]["body"], json!(REDACTED));
    assert_eq!(value["primary"]["body"], json!(REDACTED));
    assert_eq!(value["primary"]["body_length"], json!(39));
    assert_eq!(value["shadows"][0]["body"], json!(REDACTED));
    // Without redact_fields, both are written as they are.
    let (_, value) = line(&record, &policy());
    assert_eq!(
        value["primary"]["body"],
        json!(r#"{"user": {"email": "ann@exampl"#)
    );
    assert_eq!(value["shadows"][0]["body_encoding"], json!("base64"));
}

#[test]
fn differences_list_the_fields() {
    let mut record = record("/");
    record.shadows[0].differences = Some(Differences {
        status: false,
        body: true,
        fields: vec!["/hits/0/id".into(), "/total".into()],
    });
    let (_, value) = line(&record, &policy());
    assert_eq!(
        value["shadows"][0]["differences"],
        json!({"status": false, "body": true, "fields": ["/hits/0/id", "/total"]})
    );
    assert_eq!(value["differs"], json!(true));
}

#[test]
fn times_are_rfc_3339_utc_with_milliseconds() {
    let at = |millis: u64| rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis));
    assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(at(1_767_225_599_999), "2025-12-31T23:59:59.999Z");
    assert_eq!(at(4_107_542_400_001), "2100-03-01T00:00:00.001Z");
    assert_eq!(
        rfc3339_millis(UNIX_EPOCH - Duration::from_secs(1)),
        "1970-01-01T00:00:00.000Z"
    );
}
