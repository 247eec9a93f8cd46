//! Leaf-by-leaf comparison of two JSON bodies (primary's and a shadow's response to one request).
//!
//! Rules (fields are named as in [`super::pointer`]; array indexes are `*`):
//! - Both bodies must be JSON: a `Content-Type` that is present on either side must be
//!   `application/json`, `text/json` or a `+json` type (RFC 6839), and both bodies must parse
//!   (serde_json, nesting limited to 128). Otherwise the result is
//!   [`JsonComparison::NotComparable`] and the caller falls back to the body digest.
//! - A field is *compared* in an exchange when it is a leaf (string, number, boolean, null) or an
//!   array on at least one side; objects are containers, not fields.
//! - It *differs* when: the two leaves differ (numbers compare by value, so `1` equals `1.0`;
//!   strings, booleans and null exactly); the types differ (reported at that field, its subtrees
//!   not walked); it is present on one side only (reported at the missing member, not at its
//!   leaves); or, for an array, the lengths differ. Elements are compared pairwise up to the
//!   shorter length; extra elements count only as the array's length difference. A generalised
//!   field (`/items/*/price`) differs if it differs at any index.
//! - Fields matched by `ignore_fields` are skipped with their subtrees.
//! - Each pair of numeric leaves yields a [`NumericPair`] for drift, at most
//!   `max_numeric_pairs` per exchange (default [`DEFAULT_MAX_NUMERIC_PAIRS`]).
//! - Each differing field also records whether *every* difference was between values that look
//!   like ids or clocks ([`super::heuristics`]), for the no-baseline heuristic.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Number, Value};

use super::heuristics::{number_is_volatile, str_is_volatile};
use super::pointer::{self, Cursor, IgnoreList, PointerError, Step};
use super::tree::{KeyIndex, Node};

/// Default cap on numeric pairs reported per exchange (a 256-element price list).
pub const DEFAULT_MAX_NUMERIC_PAIRS: usize = 256;

/// What one field did in one exchange.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldOutcome {
    /// The field differs (at one index at least, for a generalised field).
    pub differs: bool,
    /// Every difference was between values that look like ids or clocks (false when equal).
    pub volatile: bool,
}

/// One numeric leaf on both sides.
#[derive(Clone, Debug, PartialEq)]
pub struct NumericPair {
    /// The generalised field.
    pub field: String,
    /// The primary's value.
    pub primary: f64,
    /// The shadow's value.
    pub shadow: f64,
}

/// The comparison of one exchange: every compared field with its outcome, and numeric pairs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldDiff {
    /// Compared fields (sorted), each with whether it differs.
    pub fields: BTreeMap<String, FieldOutcome>,
    /// Numeric leaves found on both sides, in document order.
    pub numeric: Vec<NumericPair>,
    /// Numeric pairs were dropped past the cap.
    pub numeric_truncated: bool,
}

impl FieldDiff {
    /// The fields compared.
    pub fn compared(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    /// The fields that differ.
    pub fn differing(&self) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(|(_, outcome)| outcome.differs)
            .map(|(field, _)| field.as_str())
    }

    /// Whether no compared field differs.
    pub fn is_identical(&self) -> bool {
        self.differing().next().is_none()
    }

    /// Adds another comparison of the same exchange (e.g. the headers') to this one.
    pub fn merge(&mut self, other: FieldDiff) {
        for (field, outcome) in other.fields {
            self.record(field, outcome);
        }
        self.numeric.extend(other.numeric);
        self.numeric_truncated |= other.numeric_truncated;
    }

    /// Records one occurrence of a field: differs if any occurrence differs, volatile if all
    /// differing occurrences are.
    fn record(&mut self, field: String, outcome: FieldOutcome) {
        self.fields
            .entry(field)
            .and_modify(|seen| *seen = combine(*seen, outcome))
            .or_insert(outcome);
    }

    fn record_at(&mut self, field: &str, outcome: FieldOutcome) {
        match self.fields.get_mut(field) {
            Some(seen) => *seen = combine(*seen, outcome),
            None => {
                self.fields.insert(field.to_owned(), outcome);
            }
        }
    }
}

fn combine(seen: FieldOutcome, next: FieldOutcome) -> FieldOutcome {
    match (seen.differs, next.differs) {
        (false, _) => next,
        (true, false) => seen,
        (true, true) => FieldOutcome {
            differs: true,
            volatile: seen.volatile && next.volatile,
        },
    }
}

/// Which response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The primary's response.
    Primary,
    /// The shadow's response.
    Shadow,
}

/// Why two bodies were not compared as JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotJson {
    /// This side's `Content-Type` is present and not JSON.
    ContentType(Side),
    /// This side's body is empty or does not parse as JSON.
    Invalid(Side),
}

/// The result of [`JsonDiffer::compare`].
#[derive(Clone, Debug, PartialEq)]
pub enum JsonComparison {
    /// Both bodies are JSON.
    Compared(FieldDiff),
    /// Not comparable as JSON: compare digests instead.
    NotComparable(NotJson),
}

/// Configuration of the exchange comparison (TOML keys as the field names).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiffConfig {
    /// Fields excluded with their subtrees: pointers with `*` for any token, or
    /// `header:<name>`. Default: none.
    pub ignore_fields: Vec<String>,
    /// Response headers compared ([`super::headers`]). Default: `content-type`.
    pub headers: Vec<String>,
    /// Numeric pairs reported per exchange. Default [`DEFAULT_MAX_NUMERIC_PAIRS`].
    pub max_numeric_pairs: usize,
    /// Budget on each decoded body, bytes ([`super::decode`]). Default
    /// [`super::decode::DEFAULT_BODY_BUDGET`] (1 MiB).
    pub body_budget: usize,
    /// Exchanges per second and target compared field by field (with every shadow, so the
    /// baseline's diff of an exchange is there beside the candidates'); beyond, by digest only,
    /// counted. The field statistics are rates: a sample of exchanges estimates them, while
    /// the diff (a JSON parse of both bodies) costs more than the rest of a replay. 0: every
    /// exchange. Default [`DEFAULT_MAX_PER_SECOND`].
    pub max_per_second: u32,
}

/// [`DiffConfig::max_per_second`]'s default: 720,000 exchanges an hour per target, far beyond
/// what the field and drift minimums need, at a bounded share of the daemon's CPU.
pub const DEFAULT_MAX_PER_SECOND: u32 = 200;

impl Default for DiffConfig {
    fn default() -> Self {
        Self {
            ignore_fields: Vec::new(),
            headers: vec!["content-type".to_owned()],
            max_numeric_pairs: DEFAULT_MAX_NUMERIC_PAIRS,
            body_budget: super::decode::DEFAULT_BODY_BUDGET,
            max_per_second: DEFAULT_MAX_PER_SECOND,
        }
    }
}

/// The compiled comparison: build once, use for every exchange.
#[derive(Clone, Debug)]
pub struct JsonDiffer {
    ignore: IgnoreList,
    max_numeric_pairs: usize,
}

impl JsonDiffer {
    /// Compiles `config` (fails on an invalid `ignore_fields` pointer).
    pub fn new(config: &DiffConfig) -> Result<Self, PointerError> {
        Ok(Self {
            ignore: IgnoreList::new(&config.ignore_fields)?,
            max_numeric_pairs: config.max_numeric_pairs,
        })
    }

    /// The compiled `ignore_fields`.
    pub fn ignore_list(&self) -> &IgnoreList {
        &self.ignore
    }

    /// Compares two decoded bodies, each with its `Content-Type` value if it has one.
    pub fn compare(
        &self,
        primary: (Option<&[u8]>, &[u8]),
        shadow: (Option<&[u8]>, &[u8]),
    ) -> JsonComparison {
        for (side, content_type) in [(Side::Primary, primary.0), (Side::Shadow, shadow.0)] {
            if content_type.is_some_and(|value| !is_json_media_type(value)) {
                return JsonComparison::NotComparable(NotJson::ContentType(side));
            }
        }
        let parse = |side, body| {
            Node::parse(body).map_err(|_| JsonComparison::NotComparable(NotJson::Invalid(side)))
        };
        let primary = match parse(Side::Primary, primary.1) {
            Ok(value) => value,
            Err(not_json) => return not_json,
        };
        let shadow = match parse(Side::Shadow, shadow.1) {
            Ok(value) => value,
            Err(not_json) => return not_json,
        };
        JsonComparison::Compared(self.compare_nodes(&primary, &shadow))
    }

    /// Compares two parsed documents.
    pub fn compare_values(&self, primary: &Value, shadow: &Value) -> FieldDiff {
        self.compare_nodes(&Node::from_value(primary), &Node::from_value(shadow))
    }

    fn compare_nodes(&self, primary: &Node<'_>, shadow: &Node<'_>) -> FieldDiff {
        let mut diff = FieldDiff::default();
        if let Step::Continue(cursor) = self.ignore.root() {
            let mut path = String::new();
            self.walk(primary, shadow, &mut path, &cursor, &mut diff);
        }
        diff
    }

    fn walk(
        &self,
        primary: &Node<'_>,
        shadow: &Node<'_>,
        path: &mut String,
        cursor: &Cursor,
        diff: &mut FieldDiff,
    ) {
        let differs = |volatile| FieldOutcome {
            differs: true,
            volatile,
        };
        match (primary, shadow) {
            (Node::Object(a), Node::Object(b)) => {
                let mut b_index = KeyIndex::default();
                let mut matched = 0;
                for (at, (key, a_value)) in a.iter().enumerate() {
                    let b_value = b.member(key, at, &mut b_index);
                    matched += usize::from(b_value.is_some());
                    self.member(key, Some(a_value), b_value, path, cursor, diff);
                }
                // Members only the shadow has: none when all of them matched (keys are unique).
                if matched < b.len() {
                    let mut a_index = KeyIndex::default();
                    for (at, (key, b_value)) in b.iter().enumerate() {
                        if a.member(key, at, &mut a_index).is_none() {
                            self.member(key, None, Some(b_value), path, cursor, diff);
                        }
                    }
                }
            }
            (Node::Array(a), Node::Array(b)) => {
                diff.record_at(
                    path,
                    FieldOutcome {
                        differs: a.len() != b.len(),
                        volatile: false,
                    },
                );
                if let Step::Continue(inner) = self.ignore.step(cursor, pointer::INDEX) {
                    let len = path.len();
                    pointer::push_token(path, pointer::INDEX);
                    for (a_item, b_item) in a.iter().zip(b) {
                        self.walk(a_item, b_item, path, &inner, diff);
                    }
                    path.truncate(len);
                }
            }
            (Node::Number(a), Node::Number(b)) => {
                let outcome = if numbers_equal(a, b) {
                    FieldOutcome::default()
                } else {
                    differs(number_is_volatile(a) && number_is_volatile(b))
                };
                diff.record_at(path, outcome);
                if let (Some(a), Some(b)) = (a.as_f64(), b.as_f64()) {
                    if diff.numeric.len() < self.max_numeric_pairs {
                        diff.numeric.push(NumericPair {
                            field: path.clone(),
                            primary: a,
                            shadow: b,
                        });
                    } else {
                        diff.numeric_truncated = true;
                    }
                }
            }
            (Node::String(a), Node::String(b)) if a == b => {
                diff.record_at(path, FieldOutcome::default());
            }
            (Node::Bool(a), Node::Bool(b)) if a == b => {
                diff.record_at(path, FieldOutcome::default());
            }
            (Node::Null, Node::Null) => diff.record_at(path, FieldOutcome::default()),
            // Different strings or booleans, or different types.
            _ => diff.record_at(
                path,
                differs(node_is_volatile(primary) && node_is_volatile(shadow)),
            ),
        }
    }

    /// One object member, present on one side or both.
    fn member(
        &self,
        key: &str,
        primary: Option<&Node<'_>>,
        shadow: Option<&Node<'_>>,
        path: &mut String,
        cursor: &Cursor,
        diff: &mut FieldDiff,
    ) {
        let Step::Continue(inner) = self.ignore.step(cursor, key) else {
            return;
        };
        let len = path.len();
        pointer::push_token(path, key);
        match (primary, shadow) {
            (Some(a), Some(b)) => self.walk(a, b, path, &inner, diff),
            _ => diff.record_at(
                path,
                FieldOutcome {
                    differs: true,
                    volatile: false,
                },
            ),
        }
        path.truncate(len);
    }
}

/// [`super::heuristics::value_is_volatile`] of a parsed node.
fn node_is_volatile(node: &Node<'_>) -> bool {
    match node {
        Node::String(text) => str_is_volatile(text),
        Node::Number(number) => number_is_volatile(number),
        _ => false,
    }
}

/// Numbers by value: exactly for two integers, as `f64` otherwise.
fn numbers_equal(a: &Number, b: &Number) -> bool {
    if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
        return a == b;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// `application/json`, `text/json` or `*/*+json`, parameters ignored, any case.
pub fn is_json_media_type(content_type: &[u8]) -> bool {
    let media_type = content_type
        .split(|&byte| byte == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii()
        .to_ascii_lowercase();
    media_type == b"application/json"
        || media_type == b"text/json"
        || (media_type.ends_with(b"+json") && media_type.contains(&b'/'))
}

#[cfg(test)]
#[path = "tests/diff.rs"]
mod tests;
