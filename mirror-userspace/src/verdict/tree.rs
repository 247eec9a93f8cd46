//! The parsed form of a body that the field diff walks: a JSON tree whose strings and keys
//! borrow from the body where they have no escapes, and whose objects are member lists in
//! document order.
//!
//! Why not `serde_json::Value`: with `preserve_order` (which the crate needs elsewhere) every
//! object is an `IndexMap` hashed with SipHash and every key and string an allocation; building
//! and dropping those was most of the diff's cost per exchange. The diff only walks each object
//! once, mostly against an object with the same members in the same order, so a list with a
//! positional match first ([`Node::member`]) does the same job.
//!
//! Semantics follow `Value`'s: numbers are `serde_json::Number`s, and a key repeated in one
//! object keeps its last value at its first position.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// Objects longer than this are searched through a sorted index instead of linearly.
const LINEAR_SEARCH_MEMBERS: usize = 16;

/// One JSON value.
#[derive(Debug, PartialEq)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Object<'a>),
}

/// An object's members in document order, keys unique.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Object<'a> {
    members: Vec<(Cow<'a, str>, Node<'a>)>,
}

impl<'a> Object<'a> {
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Node<'a>)> {
        self.members.iter().map(|(key, node)| (key.as_ref(), node))
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// A lookup that costs one comparison when `key` sits at `hint` (the same position in an
    /// object of the same shape, the common case), else a search.
    pub(crate) fn member(&self, key: &str, hint: usize, index: &mut KeyIndex) -> Option<&Node<'a>> {
        if let Some((found, node)) = self.members.get(hint)
            && found == key
        {
            return Some(node);
        }
        if self.members.len() <= LINEAR_SEARCH_MEMBERS {
            return self
                .members
                .iter()
                .find(|(found, _)| found == key)
                .map(|(_, node)| node);
        }
        let sorted = index.0.get_or_insert_with(|| {
            let mut sorted: Vec<usize> = (0..self.members.len()).collect();
            sorted.sort_unstable_by(|a, b| self.members[*a].0.cmp(&self.members[*b].0));
            sorted
        });
        sorted
            .binary_search_by(|at| self.members[*at].0.as_ref().cmp(key))
            .ok()
            .map(|at| &self.members[sorted[at]].1)
    }

    /// Keeps the last value of a repeated key at its first position, as `Value` does.
    fn dedup(&mut self) {
        let len = self.members.len();
        let repeated = if len <= LINEAR_SEARCH_MEMBERS {
            (1..len).any(|at| self.members[..at].iter().any(|m| m.0 == self.members[at].0))
        } else {
            let mut keys: Vec<&str> = self.members.iter().map(|m| m.0.as_ref()).collect();
            keys.sort_unstable();
            keys.windows(2).any(|pair| pair[0] == pair[1])
        };
        if !repeated {
            return;
        }
        let mut kept: Vec<(Cow<'a, str>, Node<'a>)> = Vec::with_capacity(len);
        for (key, node) in self.members.drain(..) {
            match kept.iter_mut().find(|m| m.0 == key) {
                Some(seen) => seen.1 = node,
                None => kept.push((key, node)),
            }
        }
        self.members = kept;
    }
}

/// A sorted index of one object's keys, built on its first search that misses the positional
/// match and kept for the rest of that object's walk.
#[derive(Default)]
pub(crate) struct KeyIndex(Option<Vec<usize>>);

impl<'a> Node<'a> {
    /// Parses `body` (nesting limited as `serde_json::from_slice` limits it).
    pub(crate) fn parse(body: &'a [u8]) -> serde_json::Result<Self> {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let node = Node::deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(node)
    }

    /// The tree of an already parsed `Value`, borrowing its strings.
    pub(crate) fn from_value(value: &'a Value) -> Self {
        match value {
            Value::Null => Node::Null,
            Value::Bool(value) => Node::Bool(*value),
            Value::Number(number) => Node::Number(number.clone()),
            Value::String(text) => Node::String(Cow::Borrowed(text)),
            Value::Array(items) => Node::Array(items.iter().map(Node::from_value).collect()),
            Value::Object(map) => Node::Object(Object {
                members: map
                    .iter()
                    .map(|(key, value)| (Cow::Borrowed(key.as_str()), Node::from_value(value)))
                    .collect(),
            }),
        }
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Node<'de>, E> {
        // serde_json only yields finite floats; `Value` maps anything else to null too.
        Ok(Number::from_f64(value).map_or(Node::Null, Node::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(value)))
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node<'de>, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut object = Object::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            object.members.push((key.0, map.next_value()?));
        }
        object.dedup();
        Ok(Node::Object(object))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("an object key")
            }

            fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(value)))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(value.to_owned())))
            }

            fn visit_string<E: de::Error>(self, value: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(value)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_value() {
        let bodies: [&[u8]; 6] = [
            br#"{"a":1,"b":[true,null,"x\"y",-2,1.5e3],"c":{"d":"e"}}"#,
            br#"{"k":1,"k":2,"j":3}"#,
            br#"[18446744073709551615, -9223372036854775808, 0.1]"#,
            br#""\u00e9t\u00e9""#,
            br#"{}"#,
            br#"{"a\nb":{"a\nb":1}}"#,
        ];
        for body in bodies {
            let value: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(
                Node::parse(body).unwrap(),
                Node::from_value(&value),
                "{body:?}"
            );
        }
        assert!(Node::parse(b"{\"a\":1} x").is_err());
        assert!(Node::parse(b"").is_err());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(Node::parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn members_are_found_off_position_and_in_long_objects() {
        let body = (0..40)
            .map(|at| format!("\"k{at}\":{at}"))
            .collect::<Vec<_>>()
            .join(",");
        let body = format!("{{{body}}}");
        let Node::Object(object) = Node::parse(body.as_bytes()).unwrap() else {
            panic!()
        };
        let mut index = KeyIndex::default();
        for at in 0..40 {
            let found = object.member(&format!("k{at}"), 39 - at, &mut index);
            assert_eq!(found, Some(&Node::Number(at.into())));
        }
        assert_eq!(object.member("k40", 0, &mut index), None);
        let small = Node::parse(br#"{"a":1,"b":2}"#).unwrap();
        let Node::Object(small) = small else { panic!() };
        assert_eq!(
            small.member("b", 0, &mut KeyIndex::default()),
            Some(&Node::Number(2.into()))
        );
        assert_eq!(small.len(), 2);
    }
}
