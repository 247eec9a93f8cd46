//! A [`SinkRecord`] as one JSON line (I/O-free): header values redacted by name, JSON bodies
//! redacted by pointer, bodies cut at `body_bytes`, bytes that are not UTF-8 in base64.
//!
//! serde_json escapes every control character in strings, so the object never spans lines,
//! whatever bytes the messages carried.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Serialize;

use super::record::{Differences, HeaderList, RecordBody, SinkRecord};
use super::redact::{JsonPointer, JsonRedaction, REDACTED, looks_like_json, redact_json_body};
use crate::config::SinkSection;

/// How records are written: the `[sink]` settings that shape a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinePolicy {
    /// Bodies are cut to this many bytes (after redaction).
    pub body_bytes: usize,
    /// Lower-case header names whose values are replaced by [`REDACTED`].
    pub redact_headers: Vec<String>,
    /// Fields replaced by [`REDACTED`] in every JSON body.
    pub redact_fields: Vec<JsonPointer>,
}

impl LinePolicy {
    pub fn new(section: &SinkSection) -> Self {
        Self {
            body_bytes: section.body_bytes,
            redact_headers: section
                .redact_headers
                .iter()
                .map(|name| name.to_ascii_lowercase())
                .collect(),
            redact_fields: section.redact_fields.clone(),
        }
    }

    fn redacts_header(&self, name: &str) -> bool {
        self.redact_headers
            .iter()
            .any(|redacted| redacted.eq_ignore_ascii_case(name))
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    target: &'a str,
    /// Whether any shadow differs: `jq 'select(.differs)'`.
    differs: bool,
    request: RequestLine<'a>,
    primary: PrimaryLine<'a>,
    shadows: Vec<ShadowLine<'a>>,
}

#[derive(Serialize)]
struct RequestLine<'a> {
    method: &'a str,
    target: &'a str,
    headers: Vec<[Cow<'a, str>; 2]>,
    #[serde(flatten)]
    body: BodyLine,
}

#[derive(Serialize)]
struct PrimaryLine<'a> {
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_seconds: Option<f64>,
    headers: Vec<[Cow<'a, str>; 2]>,
    #[serde(flatten)]
    body: BodyLine,
}

#[derive(Serialize)]
struct ShadowLine<'a> {
    name: &'a str,
    role: &'static str,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_seconds: Option<f64>,
    headers: Vec<[Cow<'a, str>; 2]>,
    #[serde(flatten)]
    body: Option<BodyLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    differences: Option<DifferencesLine<'a>>,
}

#[derive(Serialize)]
struct DifferencesLine<'a> {
    status: bool,
    body: bool,
    fields: &'a [String],
}

impl<'a> From<&'a Differences> for DifferencesLine<'a> {
    fn from(differences: &'a Differences) -> Self {
        Self {
            status: differences.status,
            body: differences.body,
            fields: &differences.fields,
        }
    }
}

#[derive(Serialize)]
struct BodyLine {
    body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_encoding: Option<&'static str>,
    /// The body's length on the wire, whatever part of it is shown.
    body_length: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// Appends `record` to `out` as one JSON object and a newline.
pub fn render(record: &SinkRecord, policy: &LinePolicy, out: &mut Vec<u8>) {
    let line = Line {
        time: rfc3339_millis(record.time),
        target: &record.target,
        differs: record.differs(),
        request: RequestLine {
            method: &record.request.method,
            target: &record.request.target,
            headers: headers(&record.request.headers, policy),
            body: body(&record.request.body, &record.request.headers, policy),
        },
        primary: PrimaryLine {
            status: record.primary.status,
            latency_seconds: record.primary.latency_seconds,
            headers: headers(&record.primary.headers, policy),
            body: body(&record.primary.body, &record.primary.headers, policy),
        },
        shadows: record
            .shadows
            .iter()
            .map(|shadow| ShadowLine {
                name: &shadow.name,
                role: shadow.role.as_str(),
                outcome: shadow.outcome.as_str(),
                status: shadow.status,
                latency_seconds: shadow.latency_seconds,
                headers: headers(&shadow.headers, policy),
                body: shadow
                    .body
                    .as_ref()
                    .map(|content| body(content, &shadow.headers, policy)),
                differences: shadow.differences.as_ref().map(DifferencesLine::from),
            })
            .collect(),
    };
    // Strings, integers, floats (NaN and infinities become null) and bools: writing them to a
    // Vec cannot fail.
    serde_json::to_writer(&mut *out, &line).expect("a sink line serialises");
    out.push(b'\n');
}

/// `[name, value]` pairs; values of redacted names replaced, others converted lossily when they
/// are not UTF-8 (obs-text is rare; the line stays valid JSON).
fn headers<'a>(headers: &'a HeaderList, policy: &LinePolicy) -> Vec<[Cow<'a, str>; 2]> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = if policy.redacts_header(name) {
                Cow::Borrowed(REDACTED)
            } else {
                String::from_utf8_lossy(value)
            };
            [Cow::Borrowed(name.as_str()), value]
        })
        .collect()
}

/// Whether the message's body is compressed (or otherwise encoded): field redaction cannot see
/// into it.
fn is_encoded(headers: &HeaderList) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("content-encoding")
            && !value.trim_ascii().eq_ignore_ascii_case(b"identity")
            && !value.trim_ascii().is_empty()
    })
}

fn body(content: &RecordBody, headers: &HeaderList, policy: &LinePolicy) -> BodyLine {
    let withheld = || BodyLine {
        body: REDACTED.to_owned(),
        body_encoding: None,
        body_length: content.full_len,
        truncated: false,
    };
    let bytes: &[u8] = &content.bytes;
    let redacted;
    let bytes: &[u8] = if policy.redact_fields.is_empty() || bytes.is_empty() {
        bytes
    } else if is_encoded(headers) || (content.is_partial() && looks_like_json(bytes)) {
        // The fields to redact cannot be found (compressed, or JSON cut short before it reached
        // the sink): the body is withheld rather than written unredacted.
        return withheld();
    } else {
        match redact_json_body(bytes, &policy.redact_fields) {
            JsonRedaction::NotJson | JsonRedaction::Unchanged => bytes,
            JsonRedaction::Redacted(document) => {
                redacted = document;
                &redacted
            }
            JsonRedaction::Unparseable => return withheld(),
        }
    };
    let cut = bytes.len() > policy.body_bytes;
    let shown = &bytes[..bytes.len().min(policy.body_bytes)];
    let truncated = cut || content.is_partial();
    let (body, body_encoding) = match std::str::from_utf8(shown) {
        Ok(text) => (text.to_owned(), None),
        // A cut through a multi-byte character leaves at most 3 bytes of it: drop them rather
        // than turn a text body into base64.
        Err(error) if truncated && error.error_len().is_none() => {
            let text = std::str::from_utf8(&shown[..error.valid_up_to()])
                .expect("valid up to valid_up_to");
            (text.to_owned(), None)
        }
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(shown),
            Some("base64"),
        ),
    };
    BodyLine {
        body,
        body_encoding,
        body_length: content.full_len,
        truncated,
    }
}

/// `2026-01-01T00:00:00.123Z` (UTC, milliseconds). Times before 1970 are written as 1970.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let in_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
