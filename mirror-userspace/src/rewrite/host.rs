//! The `host` setting applied to a Host value or an X-Forwarded-Host list.

use crate::config::{HostMode, ShadowUrl};

/// What happens to each host value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum HostRule {
    Keep,
    /// Insert before the port (Envoy's shadow host: `foo:8080` -> `foo-shadow:8080`).
    Suffix(Vec<u8>),
    /// Replace the whole value (the shadow's authority, or a literal).
    Replace(Vec<u8>),
}

impl HostRule {
    pub fn new(mode: &HostMode, shadow: &ShadowUrl) -> Self {
        match mode {
            HostMode::Keep => Self::Keep,
            HostMode::Suffix(suffix) => Self::Suffix(suffix.as_bytes().to_vec()),
            HostMode::Shadow => Self::Replace(shadow.authority().as_bytes().to_vec()),
            HostMode::Literal(host) => Self::Replace(host.as_bytes().to_vec()),
        }
    }

    /// The value to send instead of a Host value, or `None` to keep it.
    ///
    /// A suffix is not applied to an empty value (nothing to name) nor to an IPv6 literal
    /// (`[::1]-shadow` is not a host); IPv4 literals get it like names, as Envoy does.
    pub fn host(&self, value: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::Keep => None,
            Self::Replace(new) => (value != new.as_slice()).then(|| new.clone()),
            Self::Suffix(suffix) => {
                if value.is_empty() || value[0] == b'[' {
                    return None;
                }
                let insert_at = match value.iter().filter(|&&byte| byte == b':').count() {
                    0 => value.len(),
                    1 => value.iter().position(|&byte| byte == b':')?,
                    // An unbracketed IPv6 address (invalid in Host): leave it.
                    _ => return None,
                };
                let mut new = Vec::with_capacity(value.len() + suffix.len());
                new.extend_from_slice(&value[..insert_at]);
                new.extend_from_slice(suffix);
                new.extend_from_slice(&value[insert_at..]);
                Some(new)
            }
        }
    }

    /// The rule applied to each element of a comma-separated X-Forwarded-Host value; separators
    /// and whitespace stay as they were. `None` when nothing changes.
    pub fn forwarded_hosts(&self, value: &[u8]) -> Option<Vec<u8>> {
        if *self == Self::Keep {
            return None;
        }
        let mut new = Vec::with_capacity(value.len() + 16);
        let mut changed = false;
        for (index, element) in value.split(|&byte| byte == b',').enumerate() {
            if index > 0 {
                new.push(b',');
            }
            let start = element
                .iter()
                .position(|b| !b" \t".contains(b))
                .unwrap_or(element.len());
            let end = element
                .iter()
                .rposition(|b| !b" \t".contains(b))
                .map_or(start, |last| last + 1);
            new.extend_from_slice(&element[..start]);
            // Empty elements (`a,,b`) stay empty.
            let rewritten = if start < end {
                self.host(&element[start..end])
            } else {
                None
            };
            match rewritten {
                Some(host) => {
                    changed = true;
                    new.extend_from_slice(&host);
                }
                None => new.extend_from_slice(&element[start..end]),
            }
            new.extend_from_slice(&element[end..]);
        }
        changed.then_some(new)
    }
}
