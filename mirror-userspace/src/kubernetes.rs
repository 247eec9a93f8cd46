//! The pod watch of targets with `pods` (an adapter: it only moves events). Per such target, a
//! task follows the pods of the selector's namespace that match its label selector and run on
//! this node (`fieldSelector=spec.nodeName=$NODE_NAME`) with [`kube::runtime::watcher()`] (list,
//! then watch from the list's resourceVersion; a re-list when the watch falls out of the API's
//! window) and sends the target's pod addresses to the daemon's loop ([`PodUpdate`]) whenever
//! they change. The loop hands them to [`crate::scopes::Scopes::pods_changed`], which knows
//! nothing of Kubernetes.
//!
//! What counts as a pod's address ([`pod_addresses`]): every entry of `status.podIPs` (IPv4 and
//! IPv6; `status.podIP` when the list is empty). A pod without an address yet (pending) or whose
//! phase is `Succeeded` or `Failed` (terminated: its address may already belong to another pod)
//! contributes none. A pod being deleted keeps its addresses until the API removes it: it still
//! serves during its grace period. A `hostNetwork` pod's address is the node's.
//!
//! Failures, and what the target records meanwhile:
//! - the API cannot be reached at start-up: the target records only its `addresses` (nothing
//!   without them; [`crate::scopes`] fails closed), one warning is logged, and
//!   `mirror_kubernetes_watch_up{target}` stays 0 while the watch retries with backoff (0.8 s
//!   doubling to 30 s); a refusal (403: the ServiceAccount lacks the RBAC rule) is the same,
//!   with a warning that names the missing permission;
//! - the watch is lost later: one warning, `mirror_kubernetes_watch_up` 0, and the last known
//!   addresses stay until a new list succeeds; that list then replaces them whole, so pods
//!   deleted during the outage go.
//!
//! A reload gives a target whose `pods` changed a new watch (the old task is aborted and its
//! updates still queued are ignored: [`PodWatches::is_current`]); other targets keep theirs.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    net::IpAddr,
    time::Duration,
};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt as _,
    runtime::watcher::{self, DefaultBackoff, Event},
};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{debug, info, warn};

use crate::{
    config::{PodSelector, TargetConfig},
    metrics::{Metrics, TargetLabels},
};

/// The environment variable naming this node (the DaemonSet sets it from `spec.nodeName`).
pub const NODE_NAME_ENV: &str = "NODE_NAME";

/// Pod updates queued between the watches and the daemon's loop before a watch waits.
const UPDATE_QUEUE: usize = 64;

/// The addresses of a target's pods changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodUpdate {
    /// The target's name.
    pub target: String,
    /// Which watch of the target sent it (see [`PodWatches::is_current`]).
    pub watch: u64,
    /// Every address of the target's pods on this node, sorted, without duplicates.
    pub addresses: Vec<IpAddr>,
}

/// Why the pod watches could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "target `{target}` selects pods, but {NODE_NAME_ENV} is not set: set it to the node's \
         name (in the DaemonSet: env {NODE_NAME_ENV} from fieldRef spec.nodeName) so that only \
         this node's pods are watched"
    )]
    NoNodeName { target: String },
    #[error(
        "target `{target}` selects pods, but no Kubernetes client configuration was found \
         (in-cluster service account, KUBECONFIG or ~/.kube/config): {source}"
    )]
    NoConfig {
        target: String,
        #[source]
        source: kube::config::InferConfigError,
    },
    #[error("target `{target}` selects pods: creating the Kubernetes client: {source}")]
    Client {
        target: String,
        #[source]
        source: kube::Error,
    },
}

/// Addresses of a pod that count for its target (see the module documentation).
pub fn pod_addresses(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let listed = status
        .pod_ips
        .iter()
        .flatten()
        .map(|entry| entry.ip.as_str());
    let mut addresses: Vec<IpAddr> = listed.filter_map(|ip| ip.parse().ok()).collect();
    if addresses.is_empty()
        && let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
    {
        addresses.push(ip);
    }
    addresses
}

/// The pods of one target and their addresses, as the watch reports them.
#[derive(Debug, Default)]
pub struct PodSet {
    /// Addresses by pod (uid, else name).
    pods: BTreeMap<String, Vec<IpAddr>>,
    /// A list in progress (between `Init` and `InitDone`): it replaces `pods` when done.
    listing: Option<BTreeMap<String, Vec<IpAddr>>>,
}

fn pod_key(pod: &Pod) -> String {
    pod.uid().unwrap_or_else(|| pod.name_any())
}

impl PodSet {
    /// Every address, sorted, without duplicates.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut addresses: Vec<IpAddr> = self.pods.values().flatten().copied().collect();
        addresses.sort();
        addresses.dedup();
        addresses
    }

    /// Number of pods known (with or without addresses).
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// A pod was added or modified; returns whether [`Self::addresses`] changed.
    pub fn apply(&mut self, pod: &Pod) -> bool {
        let before = self.addresses();
        self.pods.insert(pod_key(pod), pod_addresses(pod));
        self.addresses() != before
    }

    /// A pod was deleted; returns whether [`Self::addresses`] changed.
    pub fn delete(&mut self, pod: &Pod) -> bool {
        let before = self.addresses();
        self.pods.remove(&pod_key(pod));
        self.addresses() != before
    }

    /// A (re-)list starts: the pods it lists replace the known ones when it is done.
    pub fn begin_list(&mut self) {
        self.listing = Some(BTreeMap::new());
    }

    /// A pod of the list in progress.
    pub fn listed(&mut self, pod: &Pod) {
        if let Some(listing) = &mut self.listing {
            listing.insert(pod_key(pod), pod_addresses(pod));
        }
    }

    /// The list is complete: it replaces the known pods (those not listed are gone); returns
    /// whether [`Self::addresses`] changed.
    pub fn end_list(&mut self) -> bool {
        let Some(listed) = self.listing.take() else {
            return false;
        };
        let before = self.addresses();
        self.pods = listed;
        self.addresses() != before
    }
}

/// The metrics of one target's watch.
#[derive(Clone, Debug)]
struct WatchMetrics {
    up: Gauge,
    events: Counter,
    addresses: Gauge,
}

/// Families shared by every watch.
#[derive(Clone, Debug)]
struct MetricFamilies {
    up: Family<TargetLabels, Gauge>,
    events: Family<TargetLabels, Counter>,
    addresses: Family<TargetLabels, Gauge>,
}

impl MetricFamilies {
    /// The target's series, created at 0 if new.
    fn of(&self, target: &str) -> WatchMetrics {
        let labels = TargetLabels {
            target: target.to_owned(),
        };
        WatchMetrics {
            up: self.up.get_or_create_owned(&labels),
            events: self.events.get_or_create_owned(&labels),
            addresses: self.addresses.get_or_create_owned(&labels),
        }
    }

    fn remove(&self, target: &str) {
        let labels = TargetLabels {
            target: target.to_owned(),
        };
        self.up.remove(&labels);
        self.events.remove(&labels);
        self.addresses.remove(&labels);
    }
}

/// One running watch.
#[derive(Debug)]
struct Watch {
    selector: PodSelector,
    id: u64,
    task: JoinHandle<()>,
}

/// The pod watches of the targets with `pods`, one task each. Dropping it stops them.
pub struct PodWatches {
    client: Option<Client>,
    node: Option<String>,
    updates: mpsc::Sender<PodUpdate>,
    metrics: MetricFamilies,
    watches: BTreeMap<String, Watch>,
    next_id: u64,
}

impl PodWatches {
    /// No watch yet; the updates of those [`Self::configure`] starts arrive on the receiver.
    /// `node` is this node's name (`$NODE_NAME`, see [`node_name_from_env`]); `client` is made
    /// with [`kube::Config::infer`] when the first target with `pods` comes, unless given.
    pub fn new(
        metrics: &Metrics,
        node: Option<String>,
        client: Option<Client>,
    ) -> (Self, mpsc::Receiver<PodUpdate>) {
        let (updates, receiver) = mpsc::channel(UPDATE_QUEUE);
        let watches = Self {
            client,
            node,
            updates,
            metrics: MetricFamilies {
                up: metrics.kubernetes_watch_up.clone(),
                events: metrics.kubernetes_pod_events.clone(),
                addresses: metrics.kubernetes_pod_addresses.clone(),
            },
            watches: BTreeMap::new(),
            next_id: 0,
        };
        (watches, receiver)
    }

    /// Checks that watches can start for `targets` (this node's name is known, a client can
    /// be made) without changing any: a start-up or a reload fails with this error before
    /// applying anything.
    pub async fn prepare(&mut self, targets: &[TargetConfig]) -> Result<(), WatchError> {
        let Some(target) = targets.iter().find(|target| target.pods.is_some()) else {
            return Ok(());
        };
        if self.node.is_none() {
            return Err(WatchError::NoNodeName {
                target: target.name.clone(),
            });
        }
        if self.client.is_none() {
            let config = kube::Config::infer()
                .await
                .map_err(|source| WatchError::NoConfig {
                    target: target.name.clone(),
                    source,
                })?;
            let client = Client::try_from(config).map_err(|source| WatchError::Client {
                target: target.name.clone(),
                source,
            })?;
            self.client = Some(client);
        }
        Ok(())
    }

    /// Starts a watch for each target with `pods` that has none for the same selector, and
    /// stops those of targets gone or without `pods`. Call [`Self::prepare`] first: a target
    /// it did not accept gets no watch (logged).
    pub fn configure(&mut self, targets: &[TargetConfig]) {
        let wanted: BTreeMap<&str, &PodSelector> = targets
            .iter()
            .filter_map(|target| Some((target.name.as_str(), target.pods.as_ref()?)))
            .collect();
        self.watches.retain(|name, watch| {
            let keep = wanted.get(name.as_str()) == Some(&&watch.selector);
            if !keep {
                watch.task.abort();
                self.metrics.remove(name);
            }
            keep
        });
        for (name, selector) in wanted {
            let Entry::Vacant(slot) = self.watches.entry(name.to_owned()) else {
                continue;
            };
            let (Some(client), Some(node)) = (&self.client, &self.node) else {
                warn!(
                    target = name,
                    "no pod watch: PodWatches::prepare was not called"
                );
                continue;
            };
            self.next_id += 1;
            let id = self.next_id;
            let metrics = self.metrics.of(name);
            metrics.up.set(0);
            metrics.addresses.set(0);
            let task = tokio::spawn(watch_pods(
                Api::namespaced(client.clone(), &selector.namespace),
                watch_config(selector, node),
                Sender {
                    target: name.to_owned(),
                    watch: id,
                    updates: self.updates.clone(),
                    metrics,
                },
            ));
            info!(
                target = name,
                namespace = %selector.namespace,
                selector = %selector.selector,
                node = %node,
                "watching the target's pods on this node"
            );
            slot.insert(Watch {
                selector: selector.clone(),
                id,
                task,
            });
        }
    }

    /// Whether `update` comes from the running watch of its target (not from one a reload
    /// stopped, whose last updates may still be queued).
    pub fn is_current(&self, update: &PodUpdate) -> bool {
        self.watches
            .get(&update.target)
            .is_some_and(|watch| watch.id == update.watch)
    }
}

impl std::fmt::Debug for PodWatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodWatches")
            .field("node", &self.node)
            .field("watches", &self.watches)
            .finish_non_exhaustive()
    }
}

impl Drop for PodWatches {
    fn drop(&mut self) {
        for watch in self.watches.values() {
            watch.task.abort();
        }
    }
}

/// `$NODE_NAME`, if set and not empty.
pub fn node_name_from_env() -> Option<String> {
    std::env::var(NODE_NAME_ENV)
        .ok()
        .filter(|name| !name.trim().is_empty())
}

/// The list/watch parameters of a selector on `node`.
fn watch_config(selector: &PodSelector, node: &str) -> watcher::Config {
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let labels = selector.selector.to_string();
    if labels.is_empty() {
        config
    } else {
        config.labels(&labels)
    }
}

/// Where a watch reports.
struct Sender {
    target: String,
    watch: u64,
    updates: mpsc::Sender<PodUpdate>,
    metrics: WatchMetrics,
}

impl Sender {
    /// Sends the addresses; false when the daemon is gone.
    async fn send(&self, pods: &PodSet) -> bool {
        let addresses = pods.addresses();
        self.metrics.addresses.set(addresses.len() as i64);
        let update = PodUpdate {
            target: self.target.clone(),
            watch: self.watch,
            addresses,
        };
        self.updates.send(update).await.is_ok()
    }
}

/// Whether the API refused the watch's request (RBAC), rather than not answering.
fn is_forbidden(failure: &watcher::Error) -> bool {
    match failure {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status))
        | watcher::Error::WatchError(status) => status.is_forbidden(),
        _ => false,
    }
}

/// Follows one target's pods until aborted (or until the daemon's loop is gone). After an
/// error the watcher is dropped and, after a backoff, started again with a new list: the gauge
/// then reads 1 exactly between a complete list and the next error.
async fn watch_pods(api: Api<Pod>, config: watcher::Config, sender: Sender) {
    let target = sender.target.as_str();
    let mut pods = PodSet::default();
    let mut backoff = DefaultBackoff::default();
    let mut ever_listed = false;
    // Whether the current failure was logged (one warning per outage, not one per retry).
    let mut logged = false;
    loop {
        let mut events = std::pin::pin!(watcher::watcher(api.clone(), config.clone()));
        let failure = loop {
            let Some(event) = events.next().await else {
                break None;
            };
            let changed = match event {
                Err(failure) => break Some(failure),
                Ok(Event::Init) => {
                    pods.begin_list();
                    false
                }
                Ok(Event::InitApply(pod)) => {
                    sender.metrics.events.inc();
                    pods.listed(&pod);
                    false
                }
                Ok(Event::InitDone) => {
                    let changed = pods.end_list();
                    sender.metrics.up.set(1);
                    info!(
                        target,
                        pods = pods.len(),
                        addresses = pods.addresses().len(),
                        "pod watch established"
                    );
                    ever_listed = true;
                    logged = false;
                    changed
                }
                Ok(Event::Apply(pod)) => {
                    sender.metrics.events.inc();
                    pods.apply(&pod)
                }
                Ok(Event::Delete(pod)) => {
                    sender.metrics.events.inc();
                    pods.delete(&pod)
                }
            };
            if changed && !sender.send(&pods).await {
                return;
            }
        };
        sender.metrics.up.set(0);
        let failure_is_forbidden = failure.as_ref().is_some_and(is_forbidden) && !ever_listed;
        let failure = failure.map_or_else(|| "the watch ended".to_owned(), |e| e.to_string());
        if logged {
            debug!(target, %failure, "pod watch still failing");
        } else if failure_is_forbidden {
            warn!(
                target,
                %failure,
                "the Kubernetes API refused the pod list (forbidden): the daemon's ServiceAccount \
                 needs get, list and watch on pods (deploy/kubernetes/rbac.yaml); the target \
                 records only its `addresses` until its pod watch is established (retrying in \
                 the background)"
            );
        } else if ever_listed {
            warn!(
                target,
                %failure,
                addresses = pods.addresses().len(),
                "lost the Kubernetes pod watch: the target keeps recording its last known pods \
                 while the watch retries"
            );
        } else {
            warn!(
                target,
                %failure,
                "Kubernetes API unreachable: the target records only its `addresses` until its \
                 pod watch is established (retrying in the background)"
            );
        }
        logged = true;
        let pause = backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{PodIP, PodStatus},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;

    fn pod(name: &str, phase: &str, ips: &[&str]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.to_owned()),
                pod_ip: ips.first().map(|ip| (*ip).to_owned()),
                pod_ips: Some(
                    ips.iter()
                        .map(|ip| PodIP {
                            ip: (*ip).to_owned(),
                        })
                        .collect(),
                ),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    #[test]
    fn a_pods_addresses_are_its_pod_ips_while_it_is_not_terminated() {
        let dual = pod("a", "Running", &["10.42.0.7", "fd00::7"]);
        assert_eq!(pod_addresses(&dual), ips(&["10.42.0.7", "fd00::7"]));
        assert_eq!(pod_addresses(&pod("p", "Pending", &[])), ips(&[]));
        assert_eq!(
            pod_addresses(&pod("s", "Succeeded", &["10.42.0.8"])),
            ips(&[])
        );
        assert_eq!(pod_addresses(&pod("f", "Failed", &["10.42.0.9"])), ips(&[]));
        // Older API servers fill only podIP; garbage is ignored, not fatal.
        let mut old = pod("o", "Running", &[]);
        old.status.as_mut().unwrap().pod_ip = Some("10.42.0.10".to_owned());
        assert_eq!(pod_addresses(&old), ips(&["10.42.0.10"]));
        let garbage = pod("g", "Running", &["not-an-ip"]);
        assert_eq!(pod_addresses(&garbage), ips(&[]));
        assert_eq!(pod_addresses(&Pod::default()), ips(&[]));
    }

    #[test]
    fn events_change_the_set_and_report_only_real_changes() {
        let mut set = PodSet::default();
        assert!(!set.apply(&pod("a", "Pending", &[])), "no address yet");
        assert!(set.apply(&pod("a", "Running", &["10.42.0.7"])));
        assert!(set.apply(&pod("b", "Running", &["10.42.0.8", "fd00::8"])));
        assert!(!set.apply(&pod("b", "Running", &["fd00::8", "10.42.0.8"])));
        assert_eq!(set.addresses(), ips(&["10.42.0.7", "10.42.0.8", "fd00::8"]));
        assert!(set.apply(&pod("a", "Succeeded", &["10.42.0.7"])), "a ended");
        assert_eq!(set.len(), 2, "a is known until deleted");
        assert!(!set.delete(&pod("a", "Succeeded", &["10.42.0.7"])));
        assert!(set.delete(&pod("b", "Running", &["10.42.0.8", "fd00::8"])));
        assert!(set.is_empty() && set.addresses().is_empty());
        assert!(!set.delete(&pod("zzz", "Running", &["10.42.0.9"])));
    }

    #[test]
    fn an_address_shared_by_two_pods_stays_until_both_are_gone() {
        // A hostNetwork pod's address is the node's; two of them share it.
        let mut set = PodSet::default();
        assert!(set.apply(&pod("h1", "Running", &["192.0.2.1"])));
        assert!(!set.apply(&pod("h2", "Running", &["192.0.2.1"])));
        assert!(!set.delete(&pod("h1", "Running", &["192.0.2.1"])));
        assert!(set.delete(&pod("h2", "Running", &["192.0.2.1"])));
    }

    #[test]
    fn a_relist_replaces_the_set_whole_and_forgets_pods_deleted_meanwhile() {
        let mut set = PodSet::default();
        set.apply(&pod("a", "Running", &["10.42.0.7"]));
        set.apply(&pod("b", "Running", &["10.42.0.8"]));
        set.begin_list();
        set.listed(&pod("b", "Running", &["10.42.0.8"]));
        set.listed(&pod("c", "Running", &["10.42.0.9"]));
        // Until the list is complete, the known pods stay.
        assert_eq!(set.addresses(), ips(&["10.42.0.7", "10.42.0.8"]));
        assert!(set.end_list());
        assert_eq!(set.addresses(), ips(&["10.42.0.8", "10.42.0.9"]));
        set.begin_list();
        set.listed(&pod("c", "Running", &["10.42.0.9"]));
        set.listed(&pod("b", "Running", &["10.42.0.8"]));
        assert!(!set.end_list(), "the same pods: nothing to report");
        assert!(!set.end_list(), "no list in progress");
        set.listed(&pod("d", "Running", &["10.42.0.10"]));
        assert_eq!(set.len(), 2, "a pod listed outside a list is ignored");
    }

    #[test]
    fn the_watch_asks_for_this_nodes_pods_of_the_selector() {
        let selector = PodSelector::new("shop", "app=search,tier in (web,api)").unwrap();
        let config = watch_config(&selector, "node-1");
        assert_eq!(
            config.field_selector.as_deref(),
            Some("spec.nodeName=node-1")
        );
        assert_eq!(
            config.label_selector.as_deref(),
            Some("app=search,tier in (web,api)")
        );
        let everything = PodSelector::new("shop", "").unwrap();
        assert_eq!(watch_config(&everything, "n").label_selector, None);
    }

    /// In a cluster the API is HTTPS: the client's TLS stack (rustls with ring, the only
    /// crypto provider compiled in) must build without a process-wide provider installed.
    #[tokio::test]
    async fn an_https_client_can_be_made() {
        let config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        assert!(Client::try_from(config).is_ok());
    }

    #[test]
    fn a_refusal_is_told_from_an_unreachable_api() {
        let forbidden = || {
            Box::new(kube::core::Status {
                code: 403,
                reason: "Forbidden".to_owned(),
                ..kube::core::Status::default()
            })
        };
        assert!(is_forbidden(&watcher::Error::InitialListFailed(
            kube::Error::Api(forbidden())
        )));
        assert!(is_forbidden(&watcher::Error::WatchError(forbidden())));
        let gone = Box::new(kube::core::Status {
            code: 410,
            ..kube::core::Status::default()
        });
        assert!(!is_forbidden(&watcher::Error::WatchError(gone)));
        assert!(!is_forbidden(&watcher::Error::NoResourceVersion));
    }

    #[tokio::test]
    async fn pods_targets_need_a_node_name() {
        let (metrics, _) = Metrics::new();
        let (mut watches, _updates) = PodWatches::new(&metrics, None, None);
        let mut target = TargetConfig::with_defaults(
            "search".into(),
            8080,
            crate::config::ShadowUrl::parse("http://shadow:8080").unwrap(),
        );
        watches
            .prepare(std::slice::from_ref(&target))
            .await
            .unwrap();
        target.pods = Some(PodSelector::new("shop", "app=search").unwrap());
        let failure = watches.prepare(&[target]).await.unwrap_err().to_string();
        assert!(failure.contains("NODE_NAME is not set"), "{failure}");
    }
}
