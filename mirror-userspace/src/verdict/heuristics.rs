//! Heuristics that call a field noise when no baseline shadow can (see [`super::fields`]).
//!
//! Rules:
//! - **Name**: the field's last non-index token (or header name), lowercased with `_`, `-` and
//!   `.` removed (so `created_at`, `createdAt` and `Created-At` are all `createdat`), is one of
//!   [`VOLATILE_NAMES`]: identifiers, trace context and clocks, which differ between any two
//!   responses by design. Names merely ending in `_id` (`user_id`) are *not* included: a
//!   different user id is a real bug.
//! - **Value**: both sides' values of a differing leaf look like a UUID
//!   (`8-4-4-4-12` hex digits), a hex identifier of 16, 24, 32, 40 or 64 digits (trace ids,
//!   object ids, hashes), an ISO 8601 / RFC 3339 date-time (`2024-05-01T12:00:00Z`, a space for
//!   `T`, optional fraction and offset), an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`), or an
//!   epoch time between 2000-01-01 and 2100-01-01 in seconds, milliseconds, microseconds or
//!   nanoseconds (a number, or a string of digits). A field is value-volatile when at least
//!   [`VOLATILE_SHARE`] of its differences were between such values.

use serde_json::{Number, Value};

/// Normalised names (see the module rules) that a field or header with no baseline is noise by.
pub const VOLATILE_NAMES: &[&str] = &[
    "id",
    "uuid",
    "guid",
    "requestid",
    "xrequestid",
    "correlationid",
    "xcorrelationid",
    "traceid",
    "xtraceid",
    "spanid",
    "trace",
    "traceparent",
    "tracestate",
    "nonce",
    "timestamp",
    "ts",
    "time",
    "date",
    "datetime",
    "now",
    "servertime",
    "createdat",
    "updatedat",
    "modifiedat",
    "generatedat",
    "expires",
    "expiresat",
    "etag",
    "lastmodified",
    "age",
];

/// Share of a field's differences that must be between volatile-looking values for the value
/// heuristic to call it noise (90%: a real bug that also touches such a field still shows).
pub const VOLATILE_SHARE: f64 = 0.9;

/// Epoch seconds of 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z.
const EPOCH_RANGE: (f64, f64) = (946_684_800.0, 4_102_444_800.0);

/// Whether a field's name is one of [`VOLATILE_NAMES`] after normalisation.
pub fn name_is_volatile(name: &str) -> bool {
    let normalised: String = name
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    VOLATILE_NAMES.contains(&normalised.as_str())
}

/// Whether a JSON value looks like an identifier or a clock reading (see the module rules).
pub fn value_is_volatile(value: &Value) -> bool {
    match value {
        Value::String(text) => str_is_volatile(text),
        Value::Number(number) => number_is_volatile(number),
        _ => false,
    }
}

/// Whether a JSON number looks like a clock reading.
pub fn number_is_volatile(number: &Number) -> bool {
    number.as_f64().is_some_and(number_is_epoch)
}

/// Whether a string looks like an identifier or a clock reading.
pub fn str_is_volatile(text: &str) -> bool {
    let bytes = text.as_bytes();
    is_uuid(bytes)
        || is_hex_id(bytes)
        || is_iso_datetime(bytes)
        || is_http_date(bytes)
        || (bytes.len() <= 20
            && !bytes.is_empty()
            && bytes.iter().all(u8::is_ascii_digit)
            && text.parse::<f64>().is_ok_and(number_is_epoch))
}

/// Seconds, milliseconds, microseconds or nanoseconds since 1970 within 2000..2100.
fn number_is_epoch(value: f64) -> bool {
    [1.0, 1e3, 1e6, 1e9]
        .iter()
        .any(|scale| (EPOCH_RANGE.0 * scale..EPOCH_RANGE.1 * scale).contains(&value))
}

fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(at, byte)| match at {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        })
}

fn is_hex_id(bytes: &[u8]) -> bool {
    matches!(bytes.len(), 16 | 24 | 32 | 40 | 64)
        && bytes.iter().all(u8::is_ascii_hexdigit)
        // All digits is a number, not an id (caught by the epoch rule if it is a time).
        && !bytes.iter().all(u8::is_ascii_digit)
}

/// `YYYY-MM-DD[T ]hh:mm[:ss[.frac]][Z|±hh[:]mm]`.
fn is_iso_datetime(bytes: &[u8]) -> bool {
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    if bytes.len() < 16
        || !digits(0..4)
        || bytes[4] != b'-'
        || !digits(5..7)
        || bytes[7] != b'-'
        || !digits(8..10)
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || !digits(11..13)
        || bytes[13] != b':'
        || !digits(14..16)
    {
        return false;
    }
    let mut rest = &bytes[16..];
    if let [b':', a, b, tail @ ..] = rest
        && a.is_ascii_digit()
        && b.is_ascii_digit()
    {
        rest = tail;
        if let [b'.' | b',', tail @ ..] = rest {
            let fraction = tail.iter().take_while(|b| b.is_ascii_digit()).count();
            if fraction == 0 {
                return false;
            }
            rest = &tail[fraction..];
        }
    }
    match rest {
        [] | [b'Z' | b'z'] => true,
        [b'+' | b'-', offset @ ..] => {
            let offset: Vec<u8> = offset.iter().copied().filter(|b| *b != b':').collect();
            offset.len() == 4 && offset.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

/// IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
fn is_http_date(bytes: &[u8]) -> bool {
    const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    bytes.len() == 29
        && DAYS.contains(&&bytes[0..3])
        && &bytes[3..5] == b", "
        && bytes[5..7].iter().all(u8::is_ascii_digit)
        && bytes[12..16].iter().all(u8::is_ascii_digit)
        && bytes[19] == b':'
        && bytes[22] == b':'
        && bytes.ends_with(b" GMT")
}

#[cfg(test)]
#[path = "tests/heuristics.rs"]
mod tests;
