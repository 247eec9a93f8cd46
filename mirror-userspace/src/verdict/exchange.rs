//! One exchange end to end: decode both bodies, compare them as JSON, compare the selected
//! headers; the entry point for the daemon's comparator.
//!
//! Rules: each body is decoded by its own `Content-Encoding` within `body_budget`
//! ([`super::decode`]); a body that cannot be decoded, or that is not JSON ([`super::diff`]),
//! leaves the body out of the field comparison ([`BodyComparison`] says why, and the caller
//! compares digests instead), while the headers are still compared.

use super::decode::{DecodeError, decode_response_body};
use super::diff::{DiffConfig, FieldDiff, JsonComparison, JsonDiffer, NotJson, Side};
use super::headers::HeaderComparer;
use super::pointer::PointerError;

/// One response as captured: header lines as `(name, value)` byte pairs, and the body after
/// transfer decoding (chunked framing removed) but before content decoding.
#[derive(Clone, Copy, Debug)]
pub struct Response<'a> {
    /// Header lines in order.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// The body.
    pub body: &'a [u8],
}

impl Response<'_> {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| *value)
    }
}

/// What happened to the bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyComparison {
    /// Compared field by field.
    Json,
    /// Not comparable as JSON.
    NotJson(NotJson),
    /// This side's body could not be decoded.
    Undecodable(Side, DecodeError),
}

/// The comparison of one exchange.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeComparison {
    /// Fields compared: the body's (if JSON) and the headers'.
    pub fields: FieldDiff,
    /// What happened to the bodies.
    pub body: BodyComparison,
}

/// The compiled comparison (build once from the policy's [`DiffConfig`]).
#[derive(Clone, Debug)]
pub struct Comparer {
    json: JsonDiffer,
    headers: HeaderComparer,
    body_budget: usize,
}

impl Comparer {
    /// Compiles `config` (fails on an invalid `ignore_fields` pointer). Headers listed in
    /// `ignore_fields` as `header:<name>` are not compared.
    pub fn new(config: &DiffConfig) -> Result<Self, PointerError> {
        let json = JsonDiffer::new(config)?;
        let names: Vec<&String> = config
            .headers
            .iter()
            .filter(|name| !json.ignore_list().ignores_header(name.trim()))
            .collect();
        Ok(Self {
            headers: HeaderComparer::new(&names),
            json,
            body_budget: config.body_budget,
        })
    }

    /// Compares the primary's and a shadow's response to one request.
    pub fn compare(&self, primary: &Response<'_>, shadow: &Response<'_>) -> ExchangeComparison {
        let mut fields = self.headers.compare(primary.headers, shadow.headers);
        let decoded_primary = decode_response_body(primary.headers, primary.body, self.body_budget);
        let decoded_shadow = decode_response_body(shadow.headers, shadow.body, self.body_budget);
        let body = match (decoded_primary, decoded_shadow) {
            (Err(error), _) => BodyComparison::Undecodable(Side::Primary, error),
            (_, Err(error)) => BodyComparison::Undecodable(Side::Shadow, error),
            (Ok(a), Ok(b)) => match self.json.compare(
                (primary.header("content-type"), &a),
                (shadow.header("content-type"), &b),
            ) {
                JsonComparison::Compared(diff) => {
                    fields.merge(diff);
                    BodyComparison::Json
                }
                JsonComparison::NotComparable(why) => BodyComparison::NotJson(why),
            },
        };
        ExchangeComparison { fields, body }
    }
}

#[cfg(test)]
#[path = "tests/exchange.rs"]
mod tests;
