//! Field redaction in JSON bodies: `[sink] redact_fields` are JSON Pointers (RFC 6901) in which a
//! `*` token matches every element of an array, e.g. `/items/*/card`.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// What a redacted header value or JSON field is replaced with.
pub const REDACTED: &str = "[redacted]";

/// One token of a [`JsonPointer`], unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// An object member name, or an array index when it is one (`0`, `12`; never `01`).
    Key(String),
    /// `*`: every element of an array. On an object it is the member named `*`, as RFC 6901
    /// reads it, so no object key becomes unreachable.
    AnyIndex,
}

/// A JSON Pointer (RFC 6901) with `*` as an array-index wildcard, checked when the
/// configuration is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPointer {
    /// As written: what `mirror check-config` prints.
    source: String,
    tokens: Vec<Token>,
}

impl JsonPointer {
    /// Parses `/a/b~1c/*/d`. The empty pointer (the whole document) is refused: redacting
    /// every JSON body whole is what `body_bytes = 0` is for.
    pub fn parse(source: &str) -> Result<Self, String> {
        let Some(rest) = source.strip_prefix('/') else {
            return Err(format!(
                "invalid JSON Pointer `{source}` in redact_fields: it starts with '/' (RFC 6901), e.g. \"/user/email\" or \"/items/*/card\""
            ));
        };
        let tokens = rest
            .split('/')
            .map(|raw| {
                if raw == "*" {
                    return Ok(Token::AnyIndex);
                }
                unescape(raw).map(Token::Key).ok_or_else(|| {
                    format!(
                        "invalid JSON Pointer `{source}` in redact_fields: `~` must be followed by 0 (for ~) or 1 (for /)"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            source: source.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Replaces every value `self` points at in `document` with [`REDACTED`]. Returns whether
    /// anything was replaced.
    pub fn redact(&self, document: &mut Value) -> bool {
        redact_at(document, &self.tokens)
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for JsonPointer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

/// `~1` is `/` and `~0` is `~` (in that order: `~01` is `~1`); any other `~` is invalid.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// An array index as RFC 6901 spells it: `0` or digits without a leading zero.
fn array_index(key: &str) -> Option<usize> {
    let canonical = key == "0" || (!key.starts_with('0') && !key.is_empty());
    if canonical && key.bytes().all(|byte| byte.is_ascii_digit()) {
        key.parse().ok()
    } else {
        None
    }
}

fn redact_at(value: &mut Value, tokens: &[Token]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        *value = Value::String(REDACTED.to_owned());
        return true;
    };
    match (value, first) {
        (Value::Array(items), Token::AnyIndex) => {
            // Every element, not up to the first match.
            let mut replaced = false;
            for item in items {
                replaced |= redact_at(item, rest);
            }
            replaced
        }
        (Value::Array(items), Token::Key(key)) => array_index(key)
            .and_then(|index| items.get_mut(index))
            .is_some_and(|item| redact_at(item, rest)),
        (Value::Object(members), Token::AnyIndex) => members
            .get_mut("*")
            .is_some_and(|member| redact_at(member, rest)),
        (Value::Object(members), Token::Key(key)) => members
            .get_mut(key.as_str())
            .is_some_and(|member| redact_at(member, rest)),
        _ => false,
    }
}

/// What field redaction made of a body.
#[derive(Debug, PartialEq, Eq)]
pub enum JsonRedaction {
    /// Not a JSON object or array (or no pointers): written as it came.
    NotJson,
    /// A JSON document in which no pointer matched: written as it came.
    Unchanged,
    /// The redacted document, serialised compactly (key order kept).
    Redacted(Vec<u8>),
    /// Starts like JSON but does not parse (cut short, several documents, a number out of
    /// range...): the fields cannot be found, so the body is withheld rather than written
    /// unredacted.
    Unparseable,
}

/// Applies `pointers` to a body that starts like a JSON object or array.
pub fn redact_json_body(body: &[u8], pointers: &[JsonPointer]) -> JsonRedaction {
    if pointers.is_empty() || !looks_like_json(body) {
        return JsonRedaction::NotJson;
    }
    let Ok(mut document) = serde_json::from_slice::<Value>(body) else {
        return JsonRedaction::Unparseable;
    };
    let mut replaced = false;
    for pointer in pointers {
        replaced |= pointer.redact(&mut document);
    }
    if replaced {
        // A `Value` always serialises (its map keys are strings).
        JsonRedaction::Redacted(serde_json::to_vec(&document).expect("a JSON value serialises"))
    } else {
        JsonRedaction::Unchanged
    }
}

/// Whether a body starts like a JSON object or array (after whitespace): the only documents a
/// pointer with a token can point into. Cheaper than a failed parse for the common case of
/// HTML or binary bodies.
pub fn looks_like_json(body: &[u8]) -> bool {
    body.iter()
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|byte| matches!(byte, b'{' | b'['))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pointer(source: &str) -> JsonPointer {
        JsonPointer::parse(source).unwrap()
    }

    #[test]
    fn parse_checks_the_rfc_6901_syntax() {
        assert!(JsonPointer::parse("/user/email").is_ok());
        assert!(JsonPointer::parse("/a~1b/~0c").is_ok());
        assert!(JsonPointer::parse("/items/*/card").is_ok());
        assert!(JsonPointer::parse("/").is_ok(), "the member named \"\"");
        for bad in ["", "user/email", "/a~2", "/a~"] {
            assert!(JsonPointer::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(pointer("/a~1b/~0c").as_str(), "/a~1b/~0c");
    }

    #[test]
    fn escapes_name_members_with_slash_and_tilde() {
        let mut doc = json!({"a/b": {"~c": 1, "c": 2}, "~01": 3});
        assert!(pointer("/a~1b/~0c").redact(&mut doc));
        assert!(pointer("/~001").redact(&mut doc));
        assert_eq!(
            doc,
            json!({"a/b": {"~c": REDACTED, "c": 2}, "~01": REDACTED})
        );
    }

    #[test]
    fn wildcard_covers_every_array_element_and_indexes_one() {
        let mut doc = json!({"items": [{"card": "4111", "n": 1}, {"n": 2}, {"card": {"x": 1}}]});
        assert!(pointer("/items/*/card").redact(&mut doc));
        assert_eq!(
            doc,
            json!({"items": [{"card": REDACTED, "n": 1}, {"n": 2}, {"card": REDACTED}]})
        );
        let mut doc = json!([[1, 2], [3, 4]]);
        assert!(pointer("/*/1").redact(&mut doc));
        assert_eq!(doc, json!([[1, REDACTED], [3, REDACTED]]));
        let mut doc = json!({"a": [10, 20, 30]});
        assert!(pointer("/a/2").redact(&mut doc));
        assert!(!pointer("/a/01").redact(&mut doc), "not an index");
        assert!(!pointer("/a/-").redact(&mut doc), "past the end");
        assert!(!pointer("/a/9").redact(&mut doc));
        assert_eq!(doc, json!({"a": [10, 20, REDACTED]}));
    }

    #[test]
    fn star_on_an_object_is_the_member_named_star() {
        let mut doc = json!({"*": 1, "x": 2});
        assert!(pointer("/*").redact(&mut doc));
        assert_eq!(doc, json!({"*": REDACTED, "x": 2}));
    }

    #[test]
    fn missing_paths_and_scalars_are_left_alone() {
        let mut doc = json!({"user": "plain"});
        assert!(!pointer("/user/email").redact(&mut doc));
        assert!(!pointer("/other").redact(&mut doc));
        assert_eq!(doc, json!({"user": "plain"}));
    }

    #[test]
    fn bodies_are_redacted_only_when_json_and_matched() {
        let pointers = [pointer("/user/email")];
        let body = br#" {"user": {"email": "a@b.c", "id": 7}} "#;
        assert_eq!(
            redact_json_body(body, &pointers),
            JsonRedaction::Redacted(br#"{"user":{"email":"[redacted]","id":7}}"#.to_vec())
        );
        // Key order is kept.
        assert_eq!(
            redact_json_body(br#"{"z": 1, "user": {"email": "x"}, "a": 2}"#, &pointers),
            JsonRedaction::Redacted(br#"{"z":1,"user":{"email":"[redacted]"},"a":2}"#.to_vec())
        );
        assert_eq!(
            redact_json_body(br#"{"user": 1}"#, &pointers),
            JsonRedaction::Unchanged
        );
        assert_eq!(
            redact_json_body(b"email=a@b.c", &pointers),
            JsonRedaction::NotJson
        );
        assert_eq!(redact_json_body(body, &[]), JsonRedaction::NotJson);
        for unparseable in [&br#"{"user": "#[..], b"{} {}", b"[1e400]"] {
            assert_eq!(
                redact_json_body(unparseable, &pointers),
                JsonRedaction::Unparseable,
                "{}",
                String::from_utf8_lossy(unparseable)
            );
        }
    }
}
