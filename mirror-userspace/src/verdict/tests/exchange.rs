use std::io::Write as _;

use super::*;
use crate::verdict::decode::Coding;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn compares_decoded_json_and_headers() {
    let comparer = Comparer::new(&DiffConfig {
        ignore_fields: vec!["/ts".into(), "header:x-version".into()],
        headers: vec!["content-type".into(), "x-version".into()],
        ..DiffConfig::default()
    })
    .unwrap();
    let primary_body = gzip(br#"{"price": 10, "ts": 1}"#);
    let primary_headers: [(&[u8], &[u8]); 3] = [
        (b"Content-Type", b"application/json"),
        (b"Content-Encoding", b"gzip"),
        (b"X-Version", b"1"),
    ];
    let shadow_headers: [(&[u8], &[u8]); 2] =
        [(b"Content-Type", b"application/json"), (b"X-Version", b"2")];
    let result = comparer.compare(
        &Response {
            headers: &primary_headers,
            body: &primary_body,
        },
        &Response {
            headers: &shadow_headers,
            body: br#"{"price": 12, "ts": 2}"#,
        },
    );
    assert_eq!(result.body, BodyComparison::Json);
    assert_eq!(
        result.fields.compared().collect::<Vec<_>>(),
        ["/price", "header:content-type"]
    );
    assert_eq!(result.fields.differing().collect::<Vec<_>>(), ["/price"]);
    assert_eq!(result.fields.numeric.len(), 1);
}

#[test]
fn undecodable_and_non_json_bodies_keep_the_headers() {
    let comparer = Comparer::new(&DiffConfig::default()).unwrap();
    let bad: [(&[u8], &[u8]); 2] = [
        (b"Content-Type", b"application/json"),
        (b"Content-Encoding", b"gzip"),
    ];
    let html: [(&[u8], &[u8]); 1] = [(b"Content-Type", b"text/html")];
    let json: [(&[u8], &[u8]); 1] = [(b"Content-Type", b"application/json")];
    let result = comparer.compare(
        &Response {
            headers: &json,
            body: b"{}",
        },
        &Response {
            headers: &bad,
            body: b"{}",
        },
    );
    assert!(matches!(
        result.body,
        BodyComparison::Undecodable(
            Side::Shadow,
            DecodeError::Corrupt {
                coding: Coding::Gzip,
                ..
            }
        )
    ));
    assert_eq!(
        result.fields.compared().collect::<Vec<_>>(),
        ["header:content-type"]
    );
    let result = comparer.compare(
        &Response {
            headers: &html,
            body: b"<p>",
        },
        &Response {
            headers: &json,
            body: b"{}",
        },
    );
    assert_eq!(
        result.body,
        BodyComparison::NotJson(NotJson::ContentType(Side::Primary))
    );
    assert_eq!(
        result.fields.differing().collect::<Vec<_>>(),
        ["header:content-type"]
    );
}

#[test]
fn bodies_over_the_budget_are_not_compared() {
    let comparer = Comparer::new(&DiffConfig {
        body_budget: 4,
        ..DiffConfig::default()
    })
    .unwrap();
    let json: [(&[u8], &[u8]); 1] = [(b"Content-Type", b"application/json")];
    let result = comparer.compare(
        &Response {
            headers: &json,
            body: b"{\"a\":1}",
        },
        &Response {
            headers: &json,
            body: b"{}",
        },
    );
    assert_eq!(
        result.body,
        BodyComparison::Undecodable(Side::Primary, DecodeError::TooLarge { budget: 4 })
    );
}
