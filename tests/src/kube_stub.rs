//! A stub of the Kubernetes API for the pod watch: not a cluster (this machine has none), but
//! the two requests `kube::runtime::watcher` makes for pods, answered as the API server does.
//!
//! - `GET /api/v1/namespaces/<ns>/pods?labelSelector=..&fieldSelector=spec.nodeName=..`: a
//!   `PodList` of the namespace's pods that match both selectors, with the list's
//!   `metadata.resourceVersion`;
//! - the same with `watch=true&resourceVersion=N`: a stream of watch events, one JSON object a
//!   line, for every change after N (`ADDED`, `MODIFIED`, `DELETED`, as the selectors see them:
//!   a pod relabelled out of the selector is `DELETED`, one relabelled into it `ADDED`), a
//!   `BOOKMARK` after the backlog when `allowWatchBookmarks=true`, and an `ERROR` 410 (`Expired`)
//!   when N is older than the stub's window ([`StubApi::change_unseen`] moves it);
//! - 403 Forbidden to everything while [`StubApi::forbid`] says so (a ServiceAccount without
//!   the RBAC rule).
//!
//! Label selectors are parsed and matched with mirror's own [`LabelSelector`] (the API's
//! syntax and semantics); the only field selector is `spec.nodeName=<node>`. No
//! authentication: [`StubApi::write_kubeconfig`] writes a kubeconfig without a user.
//!
//! The stub runs on its own thread and runtime, optionally inside a network namespace (the
//! daemon under test runs in one). [`StubApi::stop`] closes the listener and every connection
//! (the API is gone: connections are refused); [`StubApi::start`] brings it back on the same
//! port with the same pods.

use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    fs::File,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
};

use axum::{
    Router,
    body::Body,
    extract::{Path as UrlPath, RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use mirror::config::LabelSelector;
use serde_json::{Value, json};
use tokio::sync::{broadcast, oneshot};

/// A pod as the test describes it.
#[derive(Clone, Debug)]
pub struct StubPod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub node: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed`.
    pub phase: String,
    pub ips: Vec<String>,
}

impl StubPod {
    /// A running pod in `namespace` on `node` with `labels` (`"app=search"`, comma-separated)
    /// and `ips`.
    pub fn running(namespace: &str, name: &str, labels: &str, node: &str, ips: &[&str]) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels: labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("key=value");
                    (key.to_owned(), value.to_owned())
                })
                .collect(),
            node: node.to_owned(),
            phase: "Running".to_owned(),
            ips: ips.iter().map(|ip| (*ip).to_owned()).collect(),
        }
    }

    /// The same pod in another phase.
    pub fn in_phase(mut self, phase: &str) -> Self {
        self.phase = phase.to_owned();
        self
    }

    fn to_json(&self, uid: u64, resource_version: u64) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": format!("00000000-0000-0000-0000-{uid:012}"),
                "resourceVersion": resource_version.to_string(),
                "labels": self.labels,
            },
            "spec": {
                "nodeName": self.node,
                "containers": [{"name": "app", "image": "example.invalid/app:1"}],
            },
            "status": {
                "phase": self.phase,
                "podIP": self.ips.first(),
                "podIPs": self.ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            },
        })
    }
}

/// A stored pod: what the test said, its uid, its resourceVersion.
#[derive(Clone, Debug)]
struct Stored {
    pod: StubPod,
    uid: u64,
    resource_version: u64,
}

impl Stored {
    fn to_json(&self) -> Value {
        self.pod.to_json(self.uid, self.resource_version)
    }
}

/// One change, as a watch from before it sees it.
#[derive(Clone, Debug)]
struct Change {
    resource_version: u64,
    before: Option<Stored>,
    /// `None`: deleted (`before` with the deletion's resourceVersion is then the object).
    after: Option<Stored>,
}

/// What goes to open watches.
#[derive(Clone, Debug)]
enum Broadcast {
    Change(Arc<Change>),
    /// Every open watch ends (as when its timeout expires): the client watches again.
    End,
}

#[derive(Debug)]
struct Store {
    pods: BTreeMap<(String, String), Stored>,
    resource_version: u64,
    next_uid: u64,
    /// Changes after `window_start`, the oldest first; a watch from before `window_start` is
    /// told 410 Gone.
    changes: Vec<Arc<Change>>,
    window_start: u64,
    live: broadcast::Sender<Broadcast>,
    /// Every request, as `path?query`.
    requests: Vec<String>,
    /// Every request is refused (403), as without RBAC.
    forbidden: bool,
}

impl Store {
    fn change(&mut self, pod: StubPod) -> Option<Change> {
        self.resource_version += 1;
        let key = (pod.namespace.clone(), pod.name.clone());
        let before = self.pods.get(&key).cloned();
        let uid = before.as_ref().map_or_else(
            || {
                self.next_uid += 1;
                self.next_uid
            },
            |stored| stored.uid,
        );
        let stored = Stored {
            pod,
            uid,
            resource_version: self.resource_version,
        };
        self.pods.insert(key, stored.clone());
        Some(Change {
            resource_version: self.resource_version,
            before,
            after: Some(stored),
        })
    }

    fn delete(&mut self, namespace: &str, name: &str) -> Option<Change> {
        let mut before = self.pods.remove(&(namespace.to_owned(), name.to_owned()))?;
        self.resource_version += 1;
        before.resource_version = self.resource_version;
        Some(Change {
            resource_version: self.resource_version,
            before: Some(before),
            after: None,
        })
    }

    fn publish(&mut self, change: Option<Change>) {
        if let Some(change) = change {
            let change = Arc::new(change);
            self.changes.push(Arc::clone(&change));
            let _ = self.live.send(Broadcast::Change(change));
        }
    }
}

/// The parsed selectors of a request.
#[derive(Clone, Debug)]
struct Query {
    namespace: String,
    labels: LabelSelector,
    node: Option<String>,
    watch: bool,
    resource_version: Option<u64>,
    bookmarks: bool,
}

impl Query {
    fn parse(namespace: String, raw: &str) -> Result<Self, String> {
        let mut query = Self {
            namespace,
            labels: LabelSelector::parse("").expect("empty selector"),
            node: None,
            watch: false,
            resource_version: None,
            bookmarks: false,
        };
        for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            match key.as_ref() {
                "labelSelector" => query.labels = LabelSelector::parse(&value)?,
                "fieldSelector" => {
                    let node = value
                        .strip_prefix("spec.nodeName=")
                        .ok_or_else(|| format!("unsupported field selector {value}"))?;
                    query.node = Some(node.to_owned());
                }
                "watch" => query.watch = value == "true" || value == "1",
                "resourceVersion" if !value.is_empty() => {
                    query.resource_version = Some(
                        value
                            .parse()
                            .map_err(|_| format!("resourceVersion {value}"))?,
                    );
                }
                "allowWatchBookmarks" => query.bookmarks = value == "true",
                _ => {}
            }
        }
        Ok(query)
    }

    fn matches(&self, stored: &Stored) -> bool {
        stored.pod.namespace == self.namespace
            && self
                .node
                .as_ref()
                .is_none_or(|node| *node == stored.pod.node)
            && self.labels.matches(&stored.pod.labels)
    }

    /// The watch event a change is for this watch, if any.
    fn event(&self, change: &Change) -> Option<Value> {
        let before = change.before.as_ref().filter(|pod| self.matches(pod));
        let after = change.after.as_ref().filter(|pod| self.matches(pod));
        let (kind, object) = match (before, after) {
            (None, Some(after)) => ("ADDED", after.to_json()),
            (Some(_), Some(after)) => ("MODIFIED", after.to_json()),
            (Some(before), None) => {
                // Deleted, or no longer selected: the object as of this change.
                let object = change.after.as_ref().unwrap_or(before);
                let mut json = object.to_json();
                json["metadata"]["resourceVersion"] = change.resource_version.to_string().into();
                ("DELETED", json)
            }
            (None, None) => return None,
        };
        Some(json!({"type": kind, "object": object}))
    }
}

type Shared = Arc<Mutex<Store>>;

fn lock(store: &Shared) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

fn line(value: &Value) -> Result<Bytes, Infallible> {
    let mut text = value.to_string();
    text.push('\n');
    Ok(Bytes::from(text))
}

async fn pods(
    State(store): State<Shared>,
    UrlPath(namespace): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let raw = raw.unwrap_or_default();
    let mut guard = lock(&store);
    guard
        .requests
        .push(format!("/api/v1/namespaces/{namespace}/pods?{raw}"));
    let query = match Query::parse(namespace, &raw) {
        Ok(query) => query,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let json = [(header::CONTENT_TYPE, "application/json")];
    if guard.forbidden {
        let status = json!({
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "message": format!(
                "pods is forbidden: User \"system:serviceaccount:mirror-system:mirror\" cannot \
                 list resource \"pods\" in API group \"\" in the namespace \"{}\"",
                query.namespace
            ),
            "reason": "Forbidden",
            "code": 403,
        });
        return (StatusCode::FORBIDDEN, json, status.to_string()).into_response();
    }
    if !query.watch {
        let items: Vec<Value> = guard
            .pods
            .values()
            .filter(|pod| query.matches(pod))
            .map(Stored::to_json)
            .collect();
        let list = json!({
            "apiVersion": "v1",
            "kind": "PodList",
            "metadata": {"resourceVersion": guard.resource_version.to_string()},
            "items": items,
        });
        return (json, list.to_string()).into_response();
    }
    let from = query.resource_version.unwrap_or(guard.resource_version);
    if from < guard.window_start {
        let gone = json!({
            "type": "ERROR",
            "object": {
                "apiVersion": "v1",
                "kind": "Status",
                "status": "Failure",
                "message": format!("too old resource version: {from} ({})", guard.window_start),
                "reason": "Expired",
                "code": 410,
            },
        });
        return (json, Body::from(line(&gone).expect("infallible"))).into_response();
    }
    // The backlog and the subscription under one lock: no change falls between them.
    let mut backlog: VecDeque<Value> = guard
        .changes
        .iter()
        .filter(|change| change.resource_version > from)
        .filter_map(|change| query.event(change))
        .collect();
    if query.bookmarks {
        backlog.push_back(json!({
            "type": "BOOKMARK",
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"resourceVersion": guard.resource_version.to_string()},
            },
        }));
    }
    let live = guard.live.subscribe();
    drop(guard);
    let events = futures_util::stream::unfold(
        (backlog, live, query),
        |(mut backlog, mut live, query)| async move {
            if let Some(next) = backlog.pop_front() {
                return Some((line(&next), (backlog, live, query)));
            }
            loop {
                match live.recv().await {
                    Ok(Broadcast::Change(change)) => {
                        if let Some(event) = query.event(&change) {
                            return Some((line(&event), (backlog, live, query)));
                        }
                    }
                    // A watch that fell behind the broadcast would miss changes: end it (the
                    // client watches again from its last resourceVersion).
                    Ok(Broadcast::End) | Err(_) => return None,
                }
            }
        },
    );
    (json, Body::from_stream(events)).into_response()
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        format!("the stub serves pods only: {uri}"),
    )
}

/// The stub API server. Stopped on drop.
#[derive(Debug)]
pub struct StubApi {
    store: Shared,
    addr: SocketAddr,
    netns: Option<String>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl StubApi {
    /// Starts the stub on 127.0.0.1 (a free port), inside network namespace `netns` if given
    /// (its `/var/run/netns/` name).
    pub fn new(netns: Option<&str>) -> Self {
        let (live, _) = broadcast::channel(1024);
        let mut stub = Self {
            store: Arc::new(Mutex::new(Store {
                pods: BTreeMap::new(),
                resource_version: 1000,
                next_uid: 0,
                changes: Vec::new(),
                window_start: 1000,
                live,
                requests: Vec::new(),
                forbidden: false,
            })),
            addr: "127.0.0.1:0".parse().expect("address"),
            netns: netns.map(str::to_owned),
            running: None,
        };
        stub.start();
        stub
    }

    /// A stub that is not serving (the API is unreachable) but has an address: [`Self::start`]
    /// brings it up.
    pub fn down(netns: Option<&str>) -> Self {
        let mut stub = Self::new(netns);
        stub.stop();
        stub
    }

    /// Where it listens (while stopped: where it listened, and will again after a restart).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves again (same port, same pods) after [`Self::stop`]; no-op while running.
    pub fn start(&mut self) {
        if self.running.is_some() {
            return;
        }
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let store = Arc::clone(&self.store);
        let addr = self.addr;
        let netns = self.netns.clone();
        let thread = std::thread::spawn(move || {
            if let Some(name) = netns {
                let file = File::open(format!("/var/run/netns/{name}")).expect("open netns");
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            }
            let listener = std::net::TcpListener::bind(addr).expect("binding the stub API");
            listener.set_nonblocking(true).expect("nonblocking");
            ready_tx
                .send(listener.local_addr().expect("local addr"))
                .expect("ready");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("stub runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = Router::new()
                    .route("/api/v1/namespaces/{namespace}/pods", get(pods))
                    .fallback(not_found)
                    .with_state(store);
                tokio::select! {
                    served = axum::serve(listener, app) => served.expect("stub API"),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task: open watches are cut.
        });
        self.addr = ready.recv().expect("the stub API did not start");
        self.running = Some((stop, thread));
    }

    /// Closes the listener and every open connection (watches included).
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            let _ = stop.send(());
            thread.join().expect("stub API thread");
        }
    }

    /// Adds `pod` or replaces the pod of the same namespace and name (same uid).
    pub fn apply(&self, pod: StubPod) {
        let mut store = lock(&self.store);
        let change = store.change(pod);
        store.publish(change);
    }

    /// Deletes a pod; false if there was none.
    pub fn delete(&self, namespace: &str, name: &str) -> bool {
        let mut store = lock(&self.store);
        let change = store.delete(namespace, name);
        let found = change.is_some();
        store.publish(change);
        found
    }

    /// A change that no watch sees (as if the client had been away longer than the API's
    /// window): open watches end, `pod` is applied, and the window starts after it, so that
    /// watching again from an earlier resourceVersion is answered 410 Gone and the client must
    /// list again.
    pub fn change_unseen(&self, pod: StubPod) {
        let mut store = lock(&self.store);
        let _ = store.live.send(Broadcast::End);
        store.change(pod);
        store.changes.clear();
        store.window_start = store.resource_version;
    }

    /// Refuses every request with 403 Forbidden (as without RBAC) while `forbidden`.
    pub fn forbid(&self, forbidden: bool) {
        lock(&self.store).forbidden = forbidden;
    }

    /// Every request so far (`path?query`).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.store).requests.clone()
    }

    /// The list requests so far (no `watch=true`).
    pub fn lists(&self) -> usize {
        self.requests()
            .iter()
            .filter(|request| !request.contains("watch=true"))
            .count()
    }

    /// A kubeconfig for the stub (no user, plain HTTP).
    pub fn write_kubeconfig(&self, path: &Path) {
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: stub\n    cluster:\n      server: {}\n\
             users:\n  - name: stub\n    user: {{}}\ncontexts:\n  - name: stub\n    context:\n      \
             cluster: stub\n      user: stub\n      namespace: default\ncurrent-context: stub\n",
            self.url()
        );
        std::fs::write(path, config).expect("writing the kubeconfig");
    }
}

impl Drop for StubApi {
    fn drop(&mut self) {
        self.stop();
    }
}
