//! `mirror run` (the real binary, the real classifier, in network namespaces) with a target
//! scoped by `pods`. This machine has no Kubernetes cluster: the API is a stub
//! (`mirror_tests::kube_stub`) that answers the daemon's pod list and watch as the API server
//! does, inside the daemon's namespace, reached through `KUBECONFIG` as a real API would be;
//! `NODE_NAME` is set as the DaemonSet sets it. What the stub cannot show: in-cluster
//! authentication (service-account token, CA) and a real API server's timing.
//!
//! Two servers listen on port 8080 on two addresses of the server namespace; the stub's pods
//! decide which of them is the target's primary.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use mirror_tests::{
    daemon::{Daemon, Metrics},
    kube_stub::{StubApi, StubPod},
    mirror_bin,
    mirroring::{ConfigFile, PORT, Setup, replays, setup, shadow_targets, wait_for},
    netns::SERVER_ADDR,
    privileged,
    server::RecordingServer,
    unique_name,
};

const NODE: &str = "node-e2e";
/// The second server's address, beside [`SERVER_ADDR`] on the server's veth.
const SERVER2_ADDR: &str = "198.18.0.3";
const PODS: &str = "pods = { namespace = \"shop\", selector = \"app=search\" }\n";

/// A file removed on drop.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The usual topology, a second server on [`SERVER2_ADDR`], the stub API in the server's
/// namespace (serving, or `down`), a kubeconfig for it and the configuration file.
struct Pods {
    setup: Setup,
    _server2: RecordingServer,
    stub: StubApi,
    kubeconfig: TempFile,
    config: ConfigFile,
}

impl Pods {
    fn new(up: bool) -> Self {
        let setup = setup();
        let cidr = format!("{SERVER2_ADDR}/24");
        setup
            .topology
            .server
            .ip(&["addr", "add", &cidr, "dev", &setup.topology.server_if])
            .expect("second address on the server's veth");
        let server2 = RecordingServer::start(&setup.topology.server, SERVER2_ADDR, PORT);
        let namespace = Some(setup.topology.server.name.as_str());
        let stub = if up {
            StubApi::new(namespace)
        } else {
            StubApi::down(namespace)
        };
        let kubeconfig = TempFile(std::env::temp_dir().join(unique_name("mirror-kubeconfig-")));
        stub.write_kubeconfig(&kubeconfig.0);
        let config = ConfigFile::write(&setup, "", PODS);
        Self {
            setup,
            _server2: server2,
            stub,
            kubeconfig,
            config,
        }
    }

    fn start(&self) -> Daemon {
        Daemon::start_with_env(
            &self.setup.topology.server,
            &["--config", self.config.0.to_str().expect("utf-8 path")],
            &[
                (
                    "KUBECONFIG",
                    self.kubeconfig.0.to_str().expect("utf-8 path"),
                ),
                ("NODE_NAME", NODE),
            ],
        )
    }

    /// `GET http://<addr>:8080<path>` from the client namespace; the primary must answer.
    fn get(&self, addr: &str, path: &str) {
        let output = self
            .setup
            .topology
            .client
            .command("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .arg(format!("http://{addr}:{PORT}{path}"))
            .stderr(Stdio::inherit())
            .output()
            .expect("curl");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "200",
            "GET {addr}{path}"
        );
    }
}

fn pod(name: &str, node: &str, ip: &str) -> StubPod {
    StubPod::running("shop", name, "app=search", node, &[ip])
}

fn other_address(metrics: &Metrics) -> f64 {
    metrics.sum(
        "mirror_classifier_packets_total",
        &["reason=\"other_address\""],
    )
}

fn watch_up(metrics: &Metrics) -> f64 {
    metrics.sum("mirror_kubernetes_watch_up", &["target=\"search\""])
}

/// Waits (at most 40 s) for the daemon to log that the target's pods changed to exactly
/// `addresses`.
fn wait_for_pods(daemon: &Daemon, addresses: &str) {
    let expected = format!("addresses=[{addresses}]");
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let lines = daemon.log_for(Duration::from_millis(200));
        if lines
            .iter()
            .any(|line| line.contains("pods on this node changed") && line.contains(&expected))
        {
            return;
        }
        seen.extend(lines);
    }
    panic!(
        "the target's pods never became [{addresses}]; the daemon said:\n{}",
        seen.join("\n")
    );
}

#[test]
fn only_the_selected_pods_of_this_node_are_mirrored_as_they_come_and_go() {
    if !privileged("only_the_selected_pods_of_this_node_are_mirrored_as_they_come_and_go") {
        return;
    }
    let pods = Pods::new(true);
    // Pod a is server 1; the pod on server 2's address runs on another node.
    pods.stub.apply(pod("a", NODE, SERVER_ADDR));
    pods.stub.apply(pod("remote", "node-other", SERVER2_ADDR));
    let daemon = pods.start();
    wait_for_pods(&daemon, SERVER_ADDR);

    for i in 0..3 {
        pods.get(SERVER_ADDR, &format!("/one/{i}"));
        pods.get(SERVER2_ADDR, &format!("/two/{i}"));
    }
    let metrics = wait_for(&daemon, "server 1's requests replayed", |m| {
        replays(m, "ok") >= 3.0 && other_address(m) > 0.0
    });
    assert_eq!(watch_up(&metrics), 1.0);
    assert_eq!(
        metrics.sum("mirror_requests_total", &[]),
        3.0,
        "server 2's requests are not the target's: {:#?}",
        metrics.samples
    );

    // Pod b comes on server 2's address and a goes: now only server 2 is mirrored.
    pods.stub.apply(pod("b", NODE, SERVER2_ADDR));
    assert!(pods.stub.delete("shop", "a"));
    wait_for_pods(&daemon, SERVER2_ADDR);
    for i in 3..6 {
        pods.get(SERVER_ADDR, &format!("/one/{i}"));
        pods.get(SERVER2_ADDR, &format!("/two/{i}"));
    }
    let metrics = wait_for(&daemon, "server 2's requests replayed", |m| {
        replays(m, "ok") >= 6.0
    });
    assert_eq!(metrics.sum("mirror_requests_total", &[]), 6.0);
    assert_eq!(watch_up(&metrics), 1.0);
    assert!(
        metrics.sum("mirror_kubernetes_pod_events_total", &["target=\"search\""]) >= 3.0,
        "listed a, added b, deleted a"
    );
    assert_eq!(
        metrics.sum("mirror_kubernetes_pod_addresses", &["target=\"search\""]),
        1.0
    );
    // Followed through the watch: one list at start-up, no polling.
    assert_eq!(pods.stub.lists(), 1, "{:#?}", pods.stub.requests());
    // The shadow records a connection when it closes: stop the daemon's keep-alive pool first.
    daemon.stop();
    let mut targets = shadow_targets(&pods.setup.shadow);
    targets.sort();
    assert_eq!(
        targets,
        ["/one/0", "/one/1", "/one/2", "/two/3", "/two/4", "/two/5"],
        "server 1 while it was pod a, server 2 once it was pod b"
    );
}

#[test]
fn an_unreachable_api_at_start_up_mirrors_nothing_and_says_so_once() {
    if !privileged("an_unreachable_api_at_start_up_mirrors_nothing_and_says_so_once") {
        return;
    }
    let mut pods = Pods::new(false);
    pods.stub.apply(pod("a", NODE, SERVER_ADDR));
    let daemon = pods.start();
    for i in 0..3 {
        pods.get(SERVER_ADDR, &format!("/one/{i}"));
    }
    // Retries at about 0.8, 1.6 and 3.2 s: at least three failures in this window.
    let lines = daemon.log_for(Duration::from_secs(7));
    let unreachable: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("Kubernetes API unreachable"))
        .collect();
    assert_eq!(
        unreachable.len(),
        1,
        "one warning, not one per retry: {lines:#?}"
    );
    assert!(
        unreachable[0].contains("target=\"search\"") || unreachable[0].contains("search"),
        "{}",
        unreachable[0]
    );
    let library: Vec<&String> = lines.iter().filter(|line| line.contains("kube_")).collect();
    assert!(
        library.is_empty(),
        "the client's per-request lines are off: {library:#?}"
    );
    let metrics = daemon.metrics();
    assert!(
        metrics.has("mirror_kubernetes_watch_up", &["target=\"search\""]),
        "exported from start-up"
    );
    assert_eq!(watch_up(&metrics), 0.0);
    assert!(other_address(&metrics) > 0.0, "{:#?}", metrics.samples);
    assert_eq!(
        metrics.sum("mirror_requests_total", &[]),
        0.0,
        "nothing recorded"
    );

    // The API comes: the watch (still retrying) lists a, and server 1 is mirrored.
    pods.stub.start();
    wait_for_pods(&daemon, SERVER_ADDR);
    pods.get(SERVER_ADDR, "/one/after");
    let metrics = wait_for(&daemon, "the request replayed", |m| replays(m, "ok") >= 1.0);
    assert_eq!(watch_up(&metrics), 1.0);
    assert_eq!(metrics.sum("mirror_requests_total", &[]), 1.0);
    daemon.stop();
    assert_eq!(shadow_targets(&pods.setup.shadow), ["/one/after"]);
}

#[test]
fn pods_without_node_name_is_refused_at_start_up() {
    // No privileges needed: the check comes before anything is attached.
    let dir = std::env::temp_dir().join(unique_name("mirror-nonode-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("mirror.toml");
    std::fs::write(
        &config,
        format!(
            "[capture]\ninterfaces = [\"lo\"]\n\n[[target]]\nname = \"search\"\nport = 8080\n\
             shadow = \"http://127.0.0.1:9\"\n{PODS}"
        ),
    )
    .expect("config");
    let output = std::process::Command::new(mirror_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("NODE_NAME")
        .output()
        .expect("mirror run");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("NODE_NAME is not set") && stderr.contains("spec.nodeName"),
        "{stderr}"
    );
}
