//! The pod watch of `pods` targets (`mirror::kubernetes`) alone: pod events in, address sets
//! out. This machine has no Kubernetes cluster: the API is a stub (`mirror_tests::kube_stub`)
//! that answers the list and watch requests of `kube::runtime::watcher` as the API server does
//! (selectors, resourceVersions, watch events, bookmarks, 410 Gone), reached through a
//! kubeconfig file like a real one. It runs without privileges (loopback only).

use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use mirror::{
    config::{PodSelector, ShadowUrl, TargetConfig},
    kubernetes::{PodUpdate, PodWatches},
    metrics::{Metrics, TargetLabels},
};
use mirror_tests::{
    kube_stub::{StubApi, StubPod},
    unique_name,
};
use tokio::sync::mpsc::Receiver;

const NODE: &str = "node-1";

fn target(name: &str, selector: &str) -> TargetConfig {
    TargetConfig {
        pods: Some(PodSelector::new("shop", selector).expect("selector")),
        ..TargetConfig::with_defaults(
            name.to_owned(),
            8080,
            ShadowUrl::parse("http://shadow.invalid:8080").expect("shadow"),
        )
    }
}

fn pod(name: &str, labels: &str, node: &str, ips: &[&str]) -> StubPod {
    StubPod::running("shop", name, labels, node, ips)
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().expect("ip")).collect()
}

/// A kubeconfig file for the stub, removed on drop.
struct Kubeconfig(PathBuf);

impl Drop for Kubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A client made from a kubeconfig file pointing at the stub, as `KUBECONFIG` would give.
async fn client(stub: &StubApi) -> (kube::Client, Kubeconfig) {
    let file = Kubeconfig(std::env::temp_dir().join(unique_name("mirror-kubeconfig-")));
    stub.write_kubeconfig(&file.0);
    let kubeconfig = kube::config::Kubeconfig::read_from(&file.0).expect("reading the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("client configuration");
    (kube::Client::try_from(config).expect("client"), file)
}

/// The next update, within `timeout`.
async fn next(updates: &mut Receiver<PodUpdate>, timeout: Duration) -> PodUpdate {
    tokio::time::timeout(timeout, updates.recv())
        .await
        .unwrap_or_else(|_| panic!("no pod update within {timeout:?}"))
        .expect("the watches are gone")
}

/// Asserts that no update comes within `wait`.
async fn quiet(updates: &mut Receiver<PodUpdate>, wait: Duration) {
    if let Ok(update) = tokio::time::timeout(wait, updates.recv()).await {
        panic!("unexpected update {update:?}");
    }
}

fn labels(target: &str) -> TargetLabels {
    TargetLabels {
        target: target.to_owned(),
    }
}

fn watch_up(metrics: &Metrics, target: &str) -> i64 {
    metrics
        .kubernetes_watch_up
        .get_or_create(&labels(target))
        .get()
}

async fn wait_for_up(metrics: &Metrics, target: &str, up: i64, timeout: Duration) {
    let start = Instant::now();
    while watch_up(metrics, target) != up {
        assert!(
            start.elapsed() < timeout,
            "mirror_kubernetes_watch_up{{target={target}}} did not become {up}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_watch_follows_this_nodes_selected_pods() {
    let stub = StubApi::new(None);
    stub.apply(pod("a", "app=search", NODE, &["198.18.0.2"]));
    stub.apply(pod("cart", "app=cart", NODE, &["198.18.0.9"]));
    stub.apply(pod("remote", "app=search", "node-2", &["198.18.0.8"]));
    stub.apply(StubPod::running(
        "default",
        "elsewhere",
        "app=search",
        NODE,
        &["198.18.0.7"],
    ));
    let (client, _kubeconfig) = client(&stub).await;
    let (metrics, _) = Metrics::new();
    let (mut watches, mut updates) = PodWatches::new(&metrics, Some(NODE.into()), Some(client));
    let targets = [target("search", "app=search")];
    watches.prepare(&targets).await.expect("prepare");
    watches.configure(&targets);
    // Exported from start-up, before the watch reports.
    assert!(matches!(watch_up(&metrics, "search"), 0 | 1));

    let timeout = Duration::from_secs(10);
    let first = next(&mut updates, timeout).await;
    assert_eq!(first.target, "search");
    assert!(watches.is_current(&first));
    assert_eq!(
        first.addresses,
        ips(&["198.18.0.2"]),
        "this node, this namespace, app=search"
    );
    assert_eq!(watch_up(&metrics, "search"), 1);

    // Added (dual stack), relabelled into the selector, finished, deleted.
    stub.apply(pod("b", "app=search", NODE, &["198.18.0.3", "fd00::3"]));
    let update = next(&mut updates, timeout).await;
    assert_eq!(
        update.addresses,
        ips(&["198.18.0.2", "198.18.0.3", "fd00::3"])
    );
    stub.apply(pod("cart", "app=search", NODE, &["198.18.0.9"]));
    let update = next(&mut updates, timeout).await;
    assert_eq!(
        update.addresses,
        ips(&["198.18.0.2", "198.18.0.3", "198.18.0.9", "fd00::3"])
    );
    stub.apply(pod("a", "app=search", NODE, &["198.18.0.2"]).in_phase("Succeeded"));
    let update = next(&mut updates, timeout).await;
    assert_eq!(
        update.addresses,
        ips(&["198.18.0.3", "198.18.0.9", "fd00::3"]),
        "a terminated pod's address goes"
    );
    assert!(stub.delete("shop", "b"));
    let update = next(&mut updates, timeout).await;
    assert_eq!(update.addresses, ips(&["198.18.0.9"]));
    // Relabelled out of the selector: the API reports it deleted.
    stub.apply(pod("cart", "app=cart", NODE, &["198.18.0.9"]));
    let update = next(&mut updates, timeout).await;
    assert_eq!(update.addresses, ips(&[]));
    // Changes the selectors exclude send nothing.
    stub.apply(pod("remote", "app=search", "node-2", &["198.18.0.10"]));
    stub.apply(pod("a", "app=search", NODE, &["198.18.0.2"]).in_phase("Failed"));
    quiet(&mut updates, Duration::from_millis(500)).await;

    // Followed through one watch, not by polling: one list, then watches from a resourceVersion,
    // every request with both selectors.
    let requests = stub.requests();
    assert_eq!(stub.lists(), 1, "{requests:#?}");
    for request in &requests {
        assert!(
            request.starts_with("/api/v1/namespaces/shop/pods?"),
            "{request}"
        );
        assert!(request.contains("labelSelector=app%3Dsearch"), "{request}");
        assert!(
            request.contains("fieldSelector=spec.nodeName%3Dnode-1"),
            "{request}"
        );
    }
    assert!(
        requests
            .iter()
            .any(|request| request.contains("watch=true") && request.contains("resourceVersion=")),
        "{requests:#?}"
    );
    let events = metrics
        .kubernetes_pod_events
        .get_or_create(&labels("search"))
        .get();
    assert_eq!(
        events, 7,
        "a listed, then the six changes the selectors see"
    );
    let addresses = metrics
        .kubernetes_pod_addresses
        .get_or_create(&labels("search"))
        .get();
    assert_eq!(addresses, 0);
}

#[tokio::test]
async fn a_lost_api_keeps_the_last_pods_and_a_new_list_replaces_them() {
    let mut stub = StubApi::new(None);
    stub.apply(pod("a", "app=search", NODE, &["198.18.0.2"]));
    let (client, _kubeconfig) = client(&stub).await;
    let (metrics, _) = Metrics::new();
    let (mut watches, mut updates) = PodWatches::new(&metrics, Some(NODE.into()), Some(client));
    let targets = [target("search", "app=search")];
    watches.prepare(&targets).await.expect("prepare");
    watches.configure(&targets);
    let timeout = Duration::from_secs(40);
    assert_eq!(
        next(&mut updates, timeout).await.addresses,
        ips(&["198.18.0.2"])
    );

    // The API goes away: the gauge drops, the known addresses stay (no update).
    stub.stop();
    wait_for_up(&metrics, "search", 0, timeout).await;
    // Meanwhile a is deleted and c comes; the watch cannot see it.
    assert!(stub.delete("shop", "a"));
    stub.apply(pod("c", "app=search", NODE, &["198.18.0.4"]));
    quiet(&mut updates, Duration::from_secs(1)).await;

    // Back: a new list replaces the set whole (a deleted during the outage goes).
    stub.start();
    assert_eq!(
        next(&mut updates, timeout).await.addresses,
        ips(&["198.18.0.4"])
    );
    assert_eq!(watch_up(&metrics, "search"), 1);
    assert_eq!(stub.lists(), 2);

    // Out of the API's window (410 Gone on watching again): listed again.
    stub.change_unseen(pod("d", "app=search", NODE, &["198.18.0.5"]));
    let update = next(&mut updates, timeout).await;
    assert_eq!(update.addresses, ips(&["198.18.0.4", "198.18.0.5"]));
    assert_eq!(stub.lists(), 3, "{:#?}", stub.requests());
}

#[tokio::test]
async fn an_unreachable_api_at_start_up_reports_nothing_until_it_answers() {
    let mut stub = StubApi::down(None);
    stub.apply(pod("a", "app=search", NODE, &["198.18.0.2"]));
    let (client, _kubeconfig) = client(&stub).await;
    let (metrics, _) = Metrics::new();
    let (mut watches, mut updates) = PodWatches::new(&metrics, Some(NODE.into()), Some(client));
    let targets = [target("search", "app=search")];
    watches
        .prepare(&targets)
        .await
        .expect("an unreachable API does not fail start-up");
    watches.configure(&targets);
    quiet(&mut updates, Duration::from_secs(2)).await;
    assert_eq!(watch_up(&metrics, "search"), 0);
    stub.start();
    let update = next(&mut updates, Duration::from_secs(40)).await;
    assert_eq!(update.addresses, ips(&["198.18.0.2"]));
    assert_eq!(watch_up(&metrics, "search"), 1);
}

#[tokio::test]
async fn a_refused_watch_reports_nothing_until_allowed() {
    let stub = StubApi::new(None);
    stub.apply(pod("a", "app=search", NODE, &["198.18.0.2"]));
    stub.forbid(true);
    let (client, _kubeconfig) = client(&stub).await;
    let (metrics, _) = Metrics::new();
    let (mut watches, mut updates) = PodWatches::new(&metrics, Some(NODE.into()), Some(client));
    let targets = [target("search", "app=search")];
    watches.prepare(&targets).await.expect("prepare");
    watches.configure(&targets);
    quiet(&mut updates, Duration::from_secs(2)).await;
    assert_eq!(watch_up(&metrics, "search"), 0);
    assert!(stub.lists() >= 2, "retried: {:#?}", stub.requests());
    stub.forbid(false);
    let update = next(&mut updates, Duration::from_secs(40)).await;
    assert_eq!(update.addresses, ips(&["198.18.0.2"]));
    assert_eq!(watch_up(&metrics, "search"), 1);
}

#[tokio::test]
async fn a_reload_replaces_only_the_watches_whose_pods_changed() {
    let stub = StubApi::new(None);
    stub.apply(pod("a", "app=search", NODE, &["198.18.0.2"]));
    stub.apply(pod("b", "app=cart", NODE, &["198.18.0.3"]));
    let (client, _kubeconfig) = client(&stub).await;
    let (metrics, _) = Metrics::new();
    let (mut watches, mut updates) = PodWatches::new(&metrics, Some(NODE.into()), Some(client));
    let timeout = Duration::from_secs(10);
    let targets = [target("search", "app=search"), target("cart", "app=cart")];
    watches.prepare(&targets).await.expect("prepare");
    watches.configure(&targets);
    let mut first: Vec<PodUpdate> = vec![
        next(&mut updates, timeout).await,
        next(&mut updates, timeout).await,
    ];
    first.sort_by(|a, b| a.target.cmp(&b.target));
    assert_eq!(first[0].addresses, ips(&["198.18.0.3"]));
    assert_eq!(first[1].addresses, ips(&["198.18.0.2"]));
    assert_eq!(stub.lists(), 2);

    // cart unchanged (keeps its watch), search selects something else (a new watch).
    let reloaded = [target("search", "app=cart"), target("cart", "app=cart")];
    watches.prepare(&reloaded).await.expect("prepare");
    watches.configure(&reloaded);
    let update = next(&mut updates, timeout).await;
    assert_eq!(
        (update.target.as_str(), update.addresses.clone()),
        ("search", ips(&["198.18.0.3"]))
    );
    assert!(watches.is_current(&update));
    assert!(
        !watches.is_current(&first[1]),
        "the old watch's updates are stale"
    );
    assert!(watches.is_current(&first[0]), "cart kept its watch");
    assert_eq!(stub.lists(), 3, "one new list, for search only");

    // A target without pods any more: its watch stops and its series go.
    watches.configure(&[target("search", "app=cart")]);
    assert!(!watches.is_current(&first[0]));
    let text = {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("up", "", metrics.kubernetes_watch_up.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text
    };
    assert!(!text.contains("target=\"cart\""), "{text}");
    assert!(text.contains("target=\"search\""), "{text}");
}
