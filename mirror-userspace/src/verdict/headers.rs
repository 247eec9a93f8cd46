//! Comparison of selected response headers.
//!
//! Rules:
//! - Only the configured names are compared (case-insensitively), each as the field
//!   `header:<lowercase name>`, so header differences feed the same field statistics as JSON
//!   fields.
//! - Always ignored, even when configured: the hop-by-hop fields of RFC 9110 §7.6.1
//!   ([`HOP_BY_HOP`]: `Connection`, `Proxy-Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding`,
//!   `Upgrade`), any field that either response's `Connection` header nominates, and `Date`
//!   (the clock of the answering server).
//! - A header's value is its lines in order, each trimmed of surrounding whitespace, joined with
//!   `", "` (RFC 9110 §5.3); values compare byte for byte. A header present on one side only
//!   differs; absent on both sides, it is not compared.

use std::collections::BTreeMap;

use super::diff::{FieldDiff, FieldOutcome};
use super::heuristics::str_is_volatile;
use super::pointer::HEADER_PREFIX;

/// Hop-by-hop header fields (RFC 9110 §7.6.1), never compared.
pub const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Headers never compared besides [`HOP_BY_HOP`]: the answering server's clock.
pub const ALWAYS_IGNORED: [&str; 1] = ["date"];

/// Compares the configured response headers of two responses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderComparer {
    /// Lowercased names, hop-by-hop and `Date` removed, deduplicated.
    names: Vec<String>,
}

impl HeaderComparer {
    /// Keeps the comparable names among `names` (any case).
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        let mut kept: Vec<String> = names
            .iter()
            .map(|name| name.as_ref().trim().to_ascii_lowercase())
            .filter(|name| {
                !name.is_empty()
                    && !HOP_BY_HOP.contains(&name.as_str())
                    && !ALWAYS_IGNORED.contains(&name.as_str())
            })
            .collect();
        kept.sort();
        kept.dedup();
        Self { names: kept }
    }

    /// The names compared (lowercase).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Compares the configured headers of two responses given as `(name, value)` byte pairs.
    pub fn compare(&self, primary: &[(&[u8], &[u8])], shadow: &[(&[u8], &[u8])]) -> FieldDiff {
        let mut diff = FieldDiff::default();
        if self.names.is_empty() {
            return diff;
        }
        let mut fields = BTreeMap::new();
        for name in &self.names {
            if nominated(primary, name) || nominated(shadow, name) {
                continue;
            }
            let (a, b) = (value(primary, name), value(shadow, name));
            let outcome = match (&a, &b) {
                (None, None) => continue,
                (Some(a), Some(b)) if a == b => FieldOutcome::default(),
                (Some(a), Some(b)) => FieldOutcome {
                    differs: true,
                    volatile: is_volatile(a) && is_volatile(b),
                },
                _ => FieldOutcome {
                    differs: true,
                    volatile: false,
                },
            };
            fields.insert(format!("{HEADER_PREFIX}{name}"), outcome);
        }
        diff.fields = fields;
        diff
    }
}

fn is_volatile(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok_and(str_is_volatile)
}

/// The combined value of `name` (lowercase), or `None` if absent.
fn value(headers: &[(&[u8], &[u8])], name: &str) -> Option<Vec<u8>> {
    let mut combined: Option<Vec<u8>> = None;
    for (_, line) in headers
        .iter()
        .filter(|(field, _)| field.eq_ignore_ascii_case(name.as_bytes()))
    {
        let line = line.trim_ascii();
        match &mut combined {
            Some(value) => {
                value.extend_from_slice(b", ");
                value.extend_from_slice(line);
            }
            None => combined = Some(line.to_vec()),
        }
    }
    combined
}

/// Whether a `Connection` header of `headers` lists `name` (lowercase).
fn nominated(headers: &[(&[u8], &[u8])], name: &str) -> bool {
    headers
        .iter()
        .filter(|(field, _)| field.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, value)| value.split(|&byte| byte == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

#[cfg(test)]
#[path = "tests/headers.rs"]
mod tests;
