//! Which destinations each target port records (I/O-free): a target's `addresses` plus the IPs
//! of its `pods` as last reported by the Kubernetes watch. The daemon hands the result to the
//! classifier ([`crate::capture::Classifier::set_scope`]) whenever it changes.
//!
//! Fail closed: a target with `pods` whose watch has reported nothing yet (the API could not be
//! reached at start-up) records only its `addresses` - nothing at all without them - rather
//! than every pod on the port. After a watch loses the API, the last known pods stay. A reload
//! that changes a target's selector (or namespace) drops the pods of the old one: until the new
//! watch reports, the target records only its `addresses` again.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{PodSelector, TargetConfig};

/// One target's scope inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Scope {
    port: u16,
    addresses: Vec<IpNet>,
    /// The selector the pods below were reported for.
    selector: Option<PodSelector>,
    /// `None`: not scoped by pods. `Some`: the pods' IPs last reported (empty until then).
    pods: Option<Vec<IpAddr>>,
}

impl Scope {
    fn is_scoped(&self) -> bool {
        !self.addresses.is_empty() || self.pods.is_some()
    }

    /// The prefixes the classifier must hold for this target, `None` when unscoped.
    fn nets(&self) -> Option<Vec<IpNet>> {
        if !self.is_scoped() {
            return None;
        }
        let mut nets = self.addresses.clone();
        nets.extend(
            self.pods
                .iter()
                .flatten()
                .map(|&address| IpNet::from(address)),
        );
        nets.sort();
        nets.dedup();
        Some(nets)
    }
}

/// The scopes of all targets, by name.
#[derive(Debug, Default)]
pub struct Scopes {
    targets: BTreeMap<String, Scope>,
}

/// A change for the classifier: make `port` record `nets` (`None`: every destination).
pub type ScopeChange = (u16, Option<Vec<IpNet>>);

impl Scopes {
    /// Takes a new set of targets (start-up or reload); returns what the classifier must change,
    /// ports no longer targets included (unscoped). A target that keeps its pod selector keeps
    /// the pods last reported for it; one whose selector changed starts again from none.
    pub fn configure(&mut self, targets: &[TargetConfig]) -> Vec<ScopeChange> {
        let mut previous = std::mem::take(&mut self.targets);
        for target in targets {
            let kept_pods = previous
                .get(&target.name)
                .filter(|old| target.pods.is_some() && old.selector == target.pods)
                .and_then(|old| old.pods.clone());
            let scope = Scope {
                port: target.port,
                addresses: target.addresses.clone(),
                selector: target.pods.clone(),
                pods: target.pods.as_ref().map(|_| kept_pods.unwrap_or_default()),
            };
            self.targets.insert(target.name.clone(), scope);
        }
        let mut changes: Vec<ScopeChange> = Vec::new();
        for scope in self.targets.values() {
            let old = previous
                .values()
                .find(|old| old.port == scope.port)
                .and_then(Scope::nets);
            let new = scope.nets();
            if old != new {
                changes.push((scope.port, new));
            }
        }
        previous.retain(|_, old| !self.targets.values().any(|scope| scope.port == old.port));
        changes.extend(previous.values().map(|old| (old.port, None)));
        changes
    }

    /// The pods of target `name` now have `addresses`; returns the classifier change, if any.
    pub fn pods_changed(&mut self, name: &str, mut addresses: Vec<IpAddr>) -> Option<ScopeChange> {
        let scope = self.targets.get_mut(name)?;
        let pods = scope.pods.as_mut()?;
        addresses.sort();
        addresses.dedup();
        if *pods == addresses {
            return None;
        }
        *pods = addresses;
        Some((scope.port, scope.nets()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PodSelector, ShadowUrl, parse_address};

    fn target(name: &str, port: u16, addresses: &[&str], pods: bool) -> TargetConfig {
        target_selecting(name, port, addresses, pods.then_some("app=search"))
    }

    fn target_selecting(
        name: &str,
        port: u16,
        addresses: &[&str],
        selector: Option<&str>,
    ) -> TargetConfig {
        TargetConfig {
            addresses: addresses
                .iter()
                .map(|a| parse_address(a).unwrap())
                .collect(),
            pods: selector.map(|selector| PodSelector::new("shop", selector).unwrap()),
            ..TargetConfig::with_defaults(
                name.into(),
                port,
                ShadowUrl::parse("http://shadow:8080").unwrap(),
            )
        }
    }

    fn nets(list: &[&str]) -> Option<Vec<IpNet>> {
        Some(list.iter().map(|a| parse_address(a).unwrap()).collect())
    }

    #[test]
    fn unscoped_targets_record_everything_and_pods_fail_closed() {
        let mut scopes = Scopes::default();
        let changes = scopes.configure(&[
            target("plain", 80, &[], false),
            target("cidr", 8080, &["10.42.0.0/16"], false),
            target("pods", 9090, &[], true),
        ]);
        // The plain target needs nothing: a port records every destination until scoped.
        assert_eq!(
            changes,
            [(8080, nets(&["10.42.0.0/16"])), (9090, Some(vec![]))]
        );
        let change = scopes.pods_changed("pods", vec!["10.42.1.7".parse().unwrap()]);
        assert_eq!(change, Some((9090, nets(&["10.42.1.7"]))));
        assert_eq!(
            scopes.pods_changed("pods", vec!["10.42.1.7".parse().unwrap()]),
            None,
            "no change, nothing to do"
        );
        assert_eq!(scopes.pods_changed("plain", vec![]), None);
    }

    #[test]
    fn a_reload_keeps_known_pods_and_unscopes_removed_ports() {
        let mut scopes = Scopes::default();
        scopes.configure(&[target("pods", 9090, &["10.0.0.9"], true)]);
        scopes.pods_changed("pods", vec!["10.42.1.7".parse().unwrap()]);
        let changes = scopes.configure(&[
            target("pods", 9090, &["10.0.0.9"], true),
            target("new", 7070, &[], false),
        ]);
        assert_eq!(changes, [], "9090 unchanged, 7070 unscoped");
        let changes = scopes.configure(&[target("new", 7070, &["fd00::/64"], false)]);
        assert_eq!(changes, [(7070, nets(&["fd00::/64"])), (9090, None)]);
    }

    #[test]
    fn a_changed_selector_drops_the_pods_of_the_old_one() {
        let mut scopes = Scopes::default();
        scopes.configure(&[target("pods", 9090, &["10.0.0.9"], true)]);
        scopes.pods_changed("pods", vec!["10.42.1.7".parse().unwrap()]);
        let changes = scopes.configure(&[target_selecting(
            "pods",
            9090,
            &["10.0.0.9"],
            Some("app=search,track=canary"),
        )]);
        assert_eq!(
            changes,
            [(9090, nets(&["10.0.0.9"]))],
            "back to the addresses alone until the new watch reports"
        );
        assert_eq!(
            scopes.pods_changed("pods", vec!["10.42.1.8".parse().unwrap()]),
            Some((9090, nets(&["10.0.0.9", "10.42.1.8"])))
        );
    }
}
