//! Field names: RFC 6901 JSON Pointers with array indexes generalised to `*`, and the
//! `ignore_fields` patterns that exclude fields.
//!
//! Rules:
//! - A field is the pointer to a value: `""` is the whole document, `/price` a member,
//!   `/a~1b` the member `a/b` and `/m~0n` the member `m~n` (`~` is written `~0`, `/` is `~1`).
//! - **Every array index is written `*`**: `/items/3/name` is the field `/items/*/name`. So the
//!   number of fields depends on the schema, not on the data, which keeps metric cardinality
//!   bounded; a generalised field differs in an exchange if it differs at any index.
//! - An `ignore_fields` pattern is a pointer in which a `*` token matches any single token (an
//!   array index or a member name). A field is ignored when a pattern matches its first tokens:
//!   the pattern `/meta` ignores `/meta` and everything under it, `/items/*/etag` the `etag` of
//!   every element, `/*/id` the `id` of every top-level member. A member literally named `*` is
//!   indistinguishable from an index (accepted ambiguity: such names are rare).
//! - Header fields use the names `header:<lowercase name>` (see [`super::headers`]); they are
//!   not pointers, and an `ignore_fields` entry of that form ignores the header.

use std::borrow::Cow;

/// The token every array index is generalised to.
pub const INDEX: &str = "*";

/// Prefix of the field names given to response headers.
pub const HEADER_PREFIX: &str = "header:";

/// A string that is not a valid JSON Pointer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// A non-empty pointer must start with `/`.
    #[error("JSON pointer {0:?} does not start with '/'")]
    NoLeadingSlash(String),
    /// `~` must be followed by `0` or `1`.
    #[error("JSON pointer {0:?} has a '~' not followed by '0' or '1'")]
    BadEscape(String),
}

/// Escapes one reference token: `~` becomes `~0`, then `/` becomes `~1` (RFC 6901 §3).
pub fn escape_token(token: &str) -> Cow<'_, str> {
    if token.contains(['~', '/']) {
        Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(token)
    }
}

/// Undoes [`escape_token`]: `~1` becomes `/`, then `~0` becomes `~` (RFC 6901 §4), so `~01`
/// is `~1`, not `/`.
pub fn unescape_token(token: &str) -> Result<Cow<'_, str>, PointerError> {
    if !token.contains('~') {
        return Ok(Cow::Borrowed(token));
    }
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return Err(PointerError::BadEscape(token.to_owned())),
            }
        } else {
            out.push(c);
        }
    }
    Ok(Cow::Owned(out))
}

/// Appends `/` and the escaped `token` to `pointer`.
pub fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    pointer.push_str(&escape_token(token));
}

/// Splits a pointer into its unescaped reference tokens (`""` has none).
pub fn parse_pointer(pointer: &str) -> Result<Vec<String>, PointerError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(PointerError::NoLeadingSlash(pointer.to_owned()));
    };
    rest.split('/')
        .map(|token| unescape_token(token).map(Cow::into_owned))
        .collect()
}

/// Builds a pointer from unescaped tokens (the inverse of [`parse_pointer`]).
pub fn format_pointer<'a>(tokens: impl IntoIterator<Item = &'a str>) -> String {
    let mut pointer = String::new();
    for token in tokens {
        push_token(&mut pointer, token);
    }
    pointer
}

/// The last token of a field that is not an index, for the name heuristics: `"created_at"`
/// for `/items/*/created_at`, `"x-request-id"` for `header:x-request-id`; `None` for `""`.
pub fn field_name(field: &str) -> Option<Cow<'_, str>> {
    if let Some(header) = field.strip_prefix(HEADER_PREFIX) {
        return Some(Cow::Borrowed(header));
    }
    let last = field.rsplit('/').find(|token| *token != INDEX)?;
    if last.is_empty() && !field.ends_with('/') {
        return None;
    }
    unescape_token(last).ok()
}

/// Compiled `ignore_fields` patterns (see the module rules).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IgnoreList {
    patterns: Vec<Vec<String>>,
    headers: Vec<String>,
}

/// Where a walk stands against an [`IgnoreList`]: the patterns whose tokens matched so far.
/// Cloning is free while no pattern is live (the common case).
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    live: Vec<u32>,
    depth: usize,
}

/// The result of [`IgnoreList::step`].
#[derive(Debug)]
pub enum Step {
    /// A pattern matched all its tokens: skip this value and its subtree.
    Ignored,
    /// Not ignored (yet): continue with this cursor below the value.
    Continue(Cursor),
}

impl IgnoreList {
    /// Compiles patterns: pointers (with `*` matching any token) or `header:<name>`.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PointerError> {
        let mut list = Self::default();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            if let Some(header) = pattern.strip_prefix(HEADER_PREFIX) {
                list.headers.push(header.to_ascii_lowercase());
            } else {
                list.patterns.push(parse_pointer(pattern)?);
            }
        }
        Ok(list)
    }

    /// Whether no pattern is configured.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty() && self.headers.is_empty()
    }

    /// Whether `header:<name>` is ignored (`name` in any case).
    pub fn ignores_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|ignored| ignored.eq_ignore_ascii_case(name))
    }

    /// The cursor at the document root; [`Step::Ignored`] if a pattern is `""`.
    pub fn root(&self) -> Step {
        if self.patterns.iter().any(Vec::is_empty) {
            return Step::Ignored;
        }
        Step::Continue(Cursor {
            live: (0..self.patterns.len() as u32).collect(),
            depth: 0,
        })
    }

    /// Moves `cursor` one (unescaped) token down.
    pub fn step(&self, cursor: &Cursor, token: &str) -> Step {
        if cursor.live.is_empty() {
            return Step::Continue(Cursor::default());
        }
        let depth = cursor.depth + 1;
        let mut live = Vec::new();
        for &index in &cursor.live {
            let pattern = &self.patterns[index as usize];
            let expected = &pattern[cursor.depth];
            if expected == INDEX || expected == token {
                if pattern.len() == depth {
                    return Step::Ignored;
                }
                live.push(index);
            }
        }
        Step::Continue(Cursor { live, depth })
    }

    /// Whether a field (a generalised pointer or `header:<name>`) is ignored.
    pub fn matches(&self, field: &str) -> bool {
        if let Some(header) = field.strip_prefix(HEADER_PREFIX) {
            return self.ignores_header(header);
        }
        let Ok(tokens) = parse_pointer(field) else {
            return false;
        };
        let Step::Continue(mut cursor) = self.root() else {
            return true;
        };
        for token in &tokens {
            match self.step(&cursor, token) {
                Step::Ignored => return true,
                Step::Continue(next) => cursor = next,
            }
        }
        false
    }
}

#[cfg(test)]
#[path = "tests/pointer.rs"]
mod tests;
