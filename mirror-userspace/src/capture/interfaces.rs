//! Interface selection: exact names and glob patterns (`veth*`) resolved against the links of the
//! current network namespace.

use std::collections::BTreeSet;

use super::CaptureError;

/// A network interface to attach to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interface {
    pub name: String,
    pub index: u32,
}

impl Interface {
    /// Loopback sees every packet twice (egress, then ingress): capture one direction there
    /// (egress: the sending socket is still attached, which self-traffic detection needs).
    pub fn is_loopback(&self) -> bool {
        self.name == "lo"
    }
}

fn is_pattern(spec: &str) -> bool {
    spec.contains(['*', '?', '['])
}

/// Lists the links of the calling thread's network namespace. Uses `if_nameindex(3)` (a netlink
/// query in the caller's namespace) rather than `/sys/class/net`, which shows the namespace sysfs
/// was mounted in.
pub fn list_interfaces() -> Result<Vec<Interface>, CaptureError> {
    let interfaces = nix::net::if_::if_nameindex()
        .map_err(|errno| CaptureError::ListInterfaces(errno.into()))?;
    Ok(interfaces
        .iter()
        .map(|interface| Interface {
            name: interface.name().to_string_lossy().into_owned(),
            index: interface.index(),
        })
        .collect())
}

/// Resolves names and glob patterns against `available`. An exact name must exist (a typo is
/// worth stopping for); a pattern may match nothing yet (a node without pods): such patterns are
/// returned second, for a warning. At least one spec is required.
pub fn resolve(
    specs: &[String],
    available: &[Interface],
) -> Result<(Vec<Interface>, Vec<String>), CaptureError> {
    if specs.is_empty() {
        return Err(CaptureError::NoInterfaces);
    }
    for spec in specs {
        if is_pattern(spec) {
            glob::Pattern::new(spec).map_err(|source| CaptureError::Pattern {
                pattern: spec.clone(),
                reason: source.msg,
            })?;
        } else if !available.iter().any(|interface| interface.name == *spec) {
            return Err(CaptureError::UnknownInterface {
                name: spec.clone(),
                available: names(available),
            });
        }
    }
    Ok(resolve_lenient(specs, available))
}

/// Like [`resolve`] but never fails: specs that match nothing (or do not parse) are returned
/// second. Used when re-resolving at runtime, where links come and go.
pub fn resolve_lenient(specs: &[String], available: &[Interface]) -> (Vec<Interface>, Vec<String>) {
    let mut selected = BTreeSet::new();
    let mut unmatched = Vec::new();
    for spec in specs {
        let matches: Vec<&Interface> = if is_pattern(spec) {
            match glob::Pattern::new(spec) {
                Ok(pattern) => available
                    .iter()
                    .filter(|interface| pattern.matches(&interface.name))
                    .collect(),
                Err(_) => Vec::new(),
            }
        } else {
            available
                .iter()
                .filter(|interface| interface.name == *spec)
                .collect()
        };
        if matches.is_empty() {
            unmatched.push(spec.clone());
        }
        selected.extend(matches.into_iter().cloned());
    }
    (selected.into_iter().collect(), unmatched)
}

fn names(available: &[Interface]) -> String {
    available
        .iter()
        .map(|interface| interface.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Vec<Interface> {
        ["lo", "eth0", "veth1a", "veth2b", "cali9"]
            .iter()
            .enumerate()
            .map(|(index, name)| Interface {
                name: (*name).to_owned(),
                index: index as u32 + 1,
            })
            .collect()
    }

    #[test]
    fn exact_names_and_patterns_combine_without_duplicates() {
        let specs = vec!["veth*".to_owned(), "veth1a".to_owned(), "eth0".to_owned()];
        let (resolved, unmatched) = resolve(&specs, &links()).unwrap();
        assert!(unmatched.is_empty());
        let names: Vec<_> = resolved.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "veth1a", "veth2b"]);
    }

    #[test]
    fn unknown_name_lists_what_exists() {
        let error = resolve(&["eth9".to_owned()], &links()).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("eth9"), "{message}");
        assert!(message.contains("veth1a"), "{message}");
    }

    #[test]
    fn pattern_without_match_waits_for_links() {
        let (resolved, unmatched) = resolve(&["lxc*".to_owned()], &links()).unwrap();
        assert!(resolved.is_empty());
        assert_eq!(unmatched, ["lxc*"]);
    }

    #[test]
    fn lenient_resolution_follows_links_that_come_and_go() {
        let specs = vec!["veth*".to_owned(), "eth9".to_owned()];
        let mut available = links();
        let (resolved, unmatched) = resolve_lenient(&specs, &available);
        assert_eq!(resolved.len(), 2);
        assert_eq!(unmatched, ["eth9"]);
        available.retain(|interface| interface.name != "veth1a");
        available.push(Interface {
            name: "veth3c".to_owned(),
            index: 9,
        });
        let (resolved, _) = resolve_lenient(&specs, &available);
        let names: Vec<_> = resolved.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["veth2b", "veth3c"]);
    }

    #[test]
    fn bad_pattern_and_empty_list_are_errors() {
        assert!(matches!(
            resolve(&["veth[".to_owned()], &links()),
            Err(CaptureError::Pattern { .. })
        ));
        assert!(matches!(
            resolve(&[], &links()),
            Err(CaptureError::NoInterfaces)
        ));
    }

    #[test]
    fn loopback_is_recognised() {
        assert!(links()[0].is_loopback());
        assert!(!links()[1].is_loopback());
    }
}
