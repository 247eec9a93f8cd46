//! What a target is beyond its port: the destinations that are its primary (`addresses`, and
//! the pods of a Kubernetes selector), parsed and validated. Kubernetes label selectors follow
//! the API's syntax (equality- and set-based requirements, comma-separated), so a selector the
//! API would refuse is refused here, at `mirror check-config`, instead of at the first watch.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

/// Parses one `addresses` entry: a CIDR (`10.42.0.0/16`, `fd00::/64`) or a single address
/// (`10.0.0.7`, taken as /32 or /128). Host bits under the prefix are refused: `10.42.0.1/16`
/// is most likely a typo for a host or for `10.42.0.0/16`.
pub fn parse_address(text: &str) -> Result<IpNet, String> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<std::net::IpAddr>() {
            Ok(address) => IpNet::from(address),
            Err(_) => {
                return Err(format!(
                    "invalid address `{text}`: expected an IPv4 or IPv6 address or CIDR, e.g. \"10.42.0.0/16\" or \"10.0.0.7\""
                ));
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "`{text}` has host bits under its /{} prefix: write {} for the network, or the address alone for one host",
            net.prefix_len(),
            net.trunc()
        ));
    }
    Ok(net)
}

/// `pods = { namespace = "shop", selector = "app=search,track!=shadow" }`: the pods on this
/// node in `namespace` matching `selector` are the target's primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodSelector {
    pub namespace: String,
    pub selector: LabelSelector,
}

impl PodSelector {
    /// Validates the namespace (a DNS label, as Kubernetes requires) and parses the selector.
    pub fn new(namespace: &str, selector: &str) -> Result<Self, String> {
        if !is_dns_label(namespace) {
            return Err(format!(
                "invalid namespace `{namespace}`: expected a DNS label (lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit)"
            ));
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            selector: LabelSelector::parse(selector)?,
        })
    }
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key`
    Exists(String),
    /// `!key`
    Absent(String),
    /// `key=value` or `key==value`
    Equals(String, String),
    /// `key!=value` (also true when the label is absent, as in Kubernetes)
    NotEquals(String, String),
    /// `key in (a,b)`
    In(String, Vec<String>),
    /// `key notin (a,b)` (also true when the label is absent)
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Exists(key) => labels.contains_key(key),
            Self::Absent(key) => !labels.contains_key(key),
            Self::Equals(key, value) => labels.get(key) == Some(value),
            Self::NotEquals(key, value) => labels.get(key) != Some(value),
            Self::In(key, values) => labels.get(key).is_some_and(|label| values.contains(label)),
            Self::NotIn(key, values) => labels.get(key).is_none_or(|label| !values.contains(label)),
        }
    }
}

/// A Kubernetes label selector (`app=search,track!=shadow`, `tier in (web,api)`); empty selects
/// every pod of the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("invalid label selector `{text}`: {why}");
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    break;
                }
                return Err(invalid("an empty requirement between commas"));
            }
            requirements.push(requirement(part).map_err(|why| invalid(&why))?);
        }
        Ok(Self { requirements })
    }

    /// Whether a pod with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|requirement| requirement.matches(labels))
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

/// The selector in the API's syntax (what `labelSelector=` takes).
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, requirement) in self.requirements.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            match requirement {
                Requirement::Exists(key) => write!(f, "{key}")?,
                Requirement::Absent(key) => write!(f, "!{key}")?,
                Requirement::Equals(key, value) => write!(f, "{key}={value}")?,
                Requirement::NotEquals(key, value) => write!(f, "{key}!={value}")?,
                Requirement::In(key, values) => write!(f, "{key} in ({})", values.join(","))?,
                Requirement::NotIn(key, values) => {
                    write!(f, "{key} notin ({})", values.join(","))?;
                }
            }
        }
        Ok(())
    }
}

impl Serialize for LabelSelector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::Absent(label_key(key.trim())?));
    }
    for (operator, build) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((key, value)) = part.split_once(operator) {
            return Ok(build(label_key(key.trim())?, label_value(value.trim())?));
        }
    }
    for (operator, build) in [
        (
            " notin ",
            Requirement::NotIn as fn(String, Vec<String>) -> Requirement,
        ),
        (" in ", Requirement::In),
    ] {
        if let Some((key, values)) = part.split_once(operator) {
            let values = values.trim();
            let inner = values
                .strip_prefix('(')
                .and_then(|rest| rest.strip_suffix(')'))
                .ok_or_else(|| format!("`{values}` must be a parenthesised list, e.g. (a,b)"))?;
            let values = inner
                .split(',')
                .map(|value| label_value(value.trim()))
                .collect::<Result<Vec<_>, _>>()?;
            if values.iter().all(String::is_empty) {
                return Err(format!("`{part}` lists no value"));
            }
            return Ok(build(label_key(key.trim())?, values));
        }
    }
    Ok(Requirement::Exists(label_key(part)?))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters
/// (alphanumerics, `-`, `_`, `.`; starting and ending alphanumeric).
fn label_key(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(is_dns_label))
    {
        return Err(format!("`{key}`: the prefix must be a DNS subdomain"));
    }
    if !is_label_name(name) {
        return Err(format!(
            "`{key}` is not a label key: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(key.to_owned())
}

/// A label value: empty, or like a label name.
fn label_value(value: &str) -> Result<String, String> {
    if value.is_empty() || is_label_name(value) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "`{value}` is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

/// Serializes `addresses` as strings (`check-config` prints them as written, normalised).
pub(super) fn serialize_addresses<S: Serializer>(
    addresses: &[IpNet],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(addresses.iter().map(ToString::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn addresses_are_cidrs_or_hosts() {
        assert_eq!(
            parse_address("10.42.0.0/16").unwrap().to_string(),
            "10.42.0.0/16"
        );
        assert_eq!(
            parse_address("10.0.0.7").unwrap().to_string(),
            "10.0.0.7/32"
        );
        assert_eq!(parse_address("fd00::/64").unwrap().to_string(), "fd00::/64");
        assert_eq!(parse_address("fd00::1").unwrap().to_string(), "fd00::1/128");
        assert!(
            parse_address("10.42.0.1/16")
                .unwrap_err()
                .contains("10.42.0.0/16")
        );
        assert!(
            parse_address("search.shop")
                .unwrap_err()
                .contains("invalid address")
        );
        assert!(parse_address("10.0.0.0/33").is_err());
    }

    #[test]
    fn selectors_follow_the_kubernetes_syntax_and_semantics() {
        let selector =
            LabelSelector::parse("app=search, track!=shadow,tier in (web, api),!canary").unwrap();
        assert_eq!(
            selector.to_string(),
            "app=search,track!=shadow,tier in (web,api),!canary"
        );
        assert!(selector.matches(&labels(&[("app", "search"), ("tier", "web")])));
        assert!(!selector.matches(&labels(&[
            ("app", "search"),
            ("tier", "web"),
            ("track", "shadow")
        ])));
        assert!(!selector.matches(&labels(&[("app", "search"), ("tier", "db")])));
        assert!(!selector.matches(&labels(&[
            ("app", "search"),
            ("tier", "api"),
            ("canary", "")
        ])));
        let set = LabelSelector::parse("env notin (dev),example.com/team").unwrap();
        assert!(set.matches(&labels(&[("example.com/team", "a")])));
        assert!(!set.matches(&labels(&[("example.com/team", "a"), ("env", "dev")])));
        assert!(LabelSelector::parse("").unwrap().matches(&labels(&[])));
        assert!(
            LabelSelector::parse("app=").is_ok(),
            "an empty value is a value"
        );
        for bad in [
            "app==x,",
            "=x",
            "app in web",
            "Bad Key=x",
            "app=a b",
            "x in ()",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn namespaces_are_dns_labels() {
        assert!(PodSelector::new("shop", "app=search").is_ok());
        assert!(
            PodSelector::new("Shop", "app=search")
                .unwrap_err()
                .contains("DNS label")
        );
        assert!(PodSelector::new("", "").is_err());
    }
}
