//! Property: any record, whatever bytes its bodies, header values and strings hold, is exactly
//! one line of valid JSON, and never shows a redacted header's value or a redacted JSON field.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use proptest::prelude::*;

use super::line::{LinePolicy, render};
use super::*;

/// Header names, redacted ones in several spellings.
const NAMES: [&str; 8] = [
    "Authorization",
    "COOKIE",
    "set-cookie",
    "Proxy-Authorization",
    "Accept",
    "X-Trace",
    "Content-Type",
    "content-encoding",
];

fn is_redacted(name: &str) -> bool {
    crate::config::DEFAULT_REDACT_HEADERS
        .iter()
        .any(|redacted| redacted.eq_ignore_ascii_case(name))
}

/// A value that must never be written: lower-case letters after a `-`, which no base64 output
/// contains, and which arbitrary bytes around it cannot hide from a plain search.
fn secret() -> impl Strategy<Value = String> {
    "[a-z]{16}".prop_map(|letters| format!("secret-{letters}"))
}

/// Arbitrary bytes around a secret for redacted names; arbitrary bytes otherwise. Also returns
/// the secret.
fn header() -> impl Strategy<Value = ((String, Bytes), Option<String>)> {
    (
        prop::sample::select(NAMES.to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
        secret(),
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(name, before, secret, after)| {
            if is_redacted(name) {
                let value = [before, secret.clone().into_bytes(), after].concat();
                ((name.to_owned(), Bytes::from(value)), Some(secret))
            } else {
                ((name.to_owned(), Bytes::from(before)), None)
            }
        })
}

fn headers() -> impl Strategy<Value = (HeaderList, Vec<String>)> {
    prop::collection::vec(header(), 0..6).prop_map(|fields| {
        let secrets = fields
            .iter()
            .filter_map(|(_, secret)| secret.clone())
            .collect();
        (
            fields.into_iter().map(|(field, _)| field).collect(),
            secrets,
        )
    })
}

/// Arbitrary bytes, arbitrary text, or a JSON document whose `/user/email` and
/// `/items/*/card` are secrets; whole or as a prefix. Returns the JSON secrets.
fn body() -> impl Strategy<Value = (RecordBody, Vec<String>)> {
    let content = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300).prop_map(|bytes| (bytes, Vec::new())),
        any::<String>().prop_map(|text| (text.into_bytes(), Vec::new())),
        (secret(), secret(), any::<String>()).prop_map(|(email, card, note)| {
            let document = serde_json::json!({
                "user": {"email": email, "note": note},
                "items": [{"card": card}, {"sku": 1}],
            });
            (serde_json::to_vec(&document).unwrap(), vec![email, card])
        }),
    ];
    (content, prop::option::of(0usize..400)).prop_map(|((bytes, secrets), prefix)| {
        let body = match prefix {
            Some(limit) => RecordBody::prefix(&bytes, limit),
            None => RecordBody::whole(bytes),
        };
        (body, secrets)
    })
}

fn latency() -> impl Strategy<Value = Option<f64>> {
    prop::option::of(prop_oneof![any::<f64>(), 0.0..10.0])
}

/// A record and every secret it holds.
fn record() -> impl Strategy<Value = (SinkRecord, Vec<String>)> {
    let side = (headers(), body(), latency());
    let shadow = (
        any::<String>(),
        any::<bool>(),
        prop::sample::select(vec![
            ShadowOutcome::Ok,
            ShadowOutcome::Error,
            ShadowOutcome::Timeout,
            ShadowOutcome::Dropped,
        ]),
        prop::option::of(any::<u16>()),
        headers(),
        prop::option::of(body()),
        latency(),
        prop::option::of((
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(any::<String>(), 0..3),
        )),
    );
    (
        any::<u64>(),
        any::<String>(),
        (any::<String>(), any::<String>(), headers(), body()),
        (any::<u16>(), side),
        prop::collection::vec(shadow, 0..4),
    )
        .prop_map(|(millis, target, request, (status, primary), shadows)| {
            let mut secrets = Vec::new();
            let (method, path, (request_headers, s1), (request_body, s2)) = request;
            secrets.extend(s1.into_iter().chain(s2));
            let ((primary_headers, s1), (primary_body, s2), primary_latency) = primary;
            secrets.extend(s1.into_iter().chain(s2));
            let shadows = shadows
                .into_iter()
                .map(
                    |(
                        name,
                        baseline,
                        outcome,
                        status,
                        (headers, s1),
                        body,
                        latency,
                        differences,
                    )| {
                        secrets.extend(s1);
                        let body = body.map(|(body, s2)| {
                            secrets.extend(s2);
                            body
                        });
                        ShadowRecord {
                            name,
                            role: if baseline {
                                ShadowRole::Baseline
                            } else {
                                ShadowRole::Candidate
                            },
                            outcome,
                            status,
                            headers,
                            body,
                            latency_seconds: latency,
                            differences: differences.map(|(status, body, fields)| Differences {
                                status,
                                body,
                                fields,
                            }),
                        }
                    },
                )
                .collect();
            let record = SinkRecord {
                time: UNIX_EPOCH + Duration::from_millis(millis % (1 << 44)),
                target,
                request: RequestRecord {
                    method,
                    target: path,
                    headers: request_headers,
                    body: request_body,
                },
                primary: PrimaryRecord {
                    status,
                    headers: primary_headers,
                    body: primary_body,
                    latency_seconds: primary_latency,
                },
                shadows,
            };
            (record, secrets)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_record_is_one_json_line_without_its_secrets(
        (record, secrets) in record(),
        body_bytes in 0usize..500,
    ) {
        let policy = LinePolicy {
            body_bytes,
            redact_fields: ["/user/email", "/items/*/card"]
                .map(|source| JsonPointer::parse(source).unwrap())
                .to_vec(),
            ..LinePolicy::new(&SinkSection::default())
        };
        let mut out = b"previous line\n".to_vec();
        render(&record, &policy, &mut out);
        let line = &out[b"previous line\n".len()..];
        prop_assert_eq!(line.last(), Some(&b'\n'));
        prop_assert_eq!(line.iter().filter(|&&byte| byte == b'\n').count(), 1);
        let value: serde_json::Value = serde_json::from_slice(line)
            .map_err(|error| TestCaseError::fail(format!("not JSON: {error}")))?;
        prop_assert!(value.is_object());
        prop_assert_eq!(
            value["shadows"].as_array().map(Vec::len),
            Some(record.shadows.len())
        );
        prop_assert_eq!(value["differs"].as_bool(), Some(record.differs()));
        let text = std::str::from_utf8(line).unwrap();
        for secret in &secrets {
            prop_assert!(!text.contains(secret.as_str()), "{} in {}", secret, text);
        }
    }
}
