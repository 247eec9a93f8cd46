//! One configuration on two nodes (a DaemonSet): the primary on node A, the shadow on node B on
//! the same port, a daemon on each node capturing every veth, both started with the same file.
//! Node B's daemon then sees node A's replays arrive at a target port: without the replay marker
//! it mirrors them again (the shadow serves each request twice, and B reports the shadow's
//! answers as a primary's); with it, B frames them, skips them and reports nothing of them.
//!
//! The replays cross from A to B, so neither daemon's own-replay exclusion (its replay sockets,
//! registered in its classifier) can be what stops the loop: B never replays anything.

use std::collections::BTreeMap;

use mirror_tests::{
    daemon::{Daemon, Metrics},
    mirroring::{
        ConfigFile, all_replays, assert_accounting, replays, wait_for, wait_until_settled,
    },
    nodes::{NODE_A, NODE_B, Nodes, exchange, header_values, request_heads, target_of},
    privileged,
    server::RecordingServer,
    unique_name,
};

const PORT: u16 = 8080;
/// Distinct client requests.
const N: usize = 30;

/// What the shadow received and both daemons' metrics once everything settled.
struct Outcome {
    /// Request heads the shadow read, from whichever daemon.
    shadow: Vec<String>,
    a: Metrics,
    b: Metrics,
}

/// Runs the two-node scenario with `replay_section` in the shared config file.
fn two_nodes(replay_section: &str) -> Outcome {
    let nodes = Nodes::create();
    let _primary = RecordingServer::start(&nodes.a, NODE_A, PORT);
    let shadow = RecordingServer::start(&nodes.b, NODE_B, PORT);
    let config = ConfigFile(std::env::temp_dir().join(unique_name("mirror-nodes-")));
    std::fs::write(
        &config.0,
        format!(
            "[capture]\ninterfaces = [\"{}\"]\n{replay_section}\n[[target]]\nname = \"search\"\n\
             port = {PORT}\nshadow = \"http://{NODE_B}:{PORT}\"\nsample_percent = 100.0\n\
             compare_responses = true\n",
            nodes.pattern
        ),
    )
    .expect("write config");
    let args = ["--config", config.0.to_str().expect("utf-8 path")];
    let daemon_a = Daemon::start_with_env(&nodes.a, &args, &[("NODE_NAME", "node-a")]);
    let daemon_b = Daemon::start_with_env(&nodes.b, &args, &[("NODE_NAME", "node-b")]);

    let plan = (0..N)
        .map(|i| {
            let request = format!("GET /nodes/{i} HTTP/1.1\r\nHost: search.prod:{PORT}\r\n\r\n");
            (NODE_A.to_owned(), request.into_bytes())
        })
        .collect();
    exchange(&nodes.client, PORT, plan);

    wait_for(&daemon_a, "A replayed every request", |m| {
        replays(m, "ok") >= N as f64
    });
    wait_for(&daemon_b, "B framed A's replays", |m| {
        m.sum("mirror_requests_total", &[]) >= N as f64
    });
    let a = wait_until_settled(&daemon_a);
    let b = wait_until_settled(&daemon_b);
    // The shadow saves a connection when it closes: end the daemons' keep-alive pools first.
    daemon_a.stop();
    daemon_b.stop();
    shadow.settle(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(10),
    );
    Outcome {
        shadow: request_heads(&shadow.request_streams()),
        a,
        b,
    }
}

/// How often the shadow received each client request (`/nodes/<i>`); panics on any other.
fn served(shadow: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for head in shadow {
        let target = target_of(head);
        assert!(
            target.starts_with("/nodes/"),
            "unexpected request at the shadow: {head:?}"
        );
        *counts.entry(target.to_owned()).or_default() += 1;
    }
    counts
}

fn primary_responses(metrics: &Metrics) -> f64 {
    metrics.sum("mirror_responses_total", &["role=\"primary\""])
}

#[test]
fn one_config_on_two_nodes_mirrors_each_request_once() {
    if !privileged("one_config_on_two_nodes_mirrors_each_request_once") {
        return;
    }
    // The default [replay] section: marker_header = "X-Mirror-Replay".
    let Outcome { shadow, a, b } = two_nodes("");

    let served = served(&shadow);
    assert_eq!(served.len(), N, "every client request reached the shadow");
    assert!(
        served.values().all(|count| *count == 1),
        "each exactly once: {served:?}"
    );
    for head in &shadow {
        assert_eq!(
            header_values(head, "X-Mirror-Replay"),
            ["node-a"],
            "one marker, node A's: {head:?}"
        );
    }

    // Node A: the client's requests framed and replayed.
    assert_eq!(a.sum("mirror_requests_total", &[]), N as f64, "{a:#?}");
    assert_eq!(replays(&a, "ok"), N as f64, "{a:#?}");
    assert_eq!(primary_responses(&a), N as f64, "{a:#?}");
    assert_accounting(&a);

    // Node B: it framed only A's replays, all of them skipped, nothing replayed or reported.
    let framed = b.sum("mirror_requests_total", &[]);
    assert_eq!(framed, N as f64, "B saw A's replays: {b:#?}");
    assert_eq!(
        b.sum(
            "mirror_requests_skipped_total",
            &["reason=\"replay_marker\""]
        ),
        framed,
        "{b:#?}"
    );
    assert_eq!(all_replays(&b), 0.0, "{b:#?}");
    assert!(
        b.series("mirror_responses_total")
            .iter()
            .all(|(labels, value)| !labels.contains("role=\"primary\"") || *value == 0.0),
        "no primary response reported on B: {b:#?}"
    );
    assert_eq!(
        b.sum(
            "mirror_response_duration_seconds_count",
            &["role=\"primary\""]
        ),
        0.0,
        "no primary latency observed on B: {b:#?}"
    );
    // B made no replay, so its own-replay exclusion had nothing to do: the marker did it.
    assert_eq!(
        b.sum(
            "mirror_classifier_packets_total",
            &["reason=\"self_traffic\""]
        ),
        0.0
    );
    assert_accounting(&b);
}

#[test]
fn without_the_marker_node_b_mirrors_node_as_replays_again() {
    if !privileged("without_the_marker_node_b_mirrors_node_as_replays_again") {
        return;
    }
    // What the marker prevents: B takes A's replays for client requests.
    let Outcome { shadow, a, b } = two_nodes("[replay]\nmarker_header = \"\"\n");

    let served = served(&shadow);
    assert_eq!(served.len(), N, "{served:?}");
    assert!(
        served.values().all(|count| *count == 2),
        "each request served twice (A's replay, then B's replay of it): {served:?}"
    );
    assert!(
        shadow
            .iter()
            .all(|head| header_values(head, "X-Mirror-Replay").is_empty())
    );
    assert_eq!(replays(&a, "ok"), N as f64, "{a:#?}");
    assert_eq!(b.sum("mirror_requests_total", &[]), N as f64, "{b:#?}");
    assert_eq!(replays(&b, "ok"), N as f64, "{b:#?}");
    assert_eq!(
        primary_responses(&b),
        N as f64,
        "the shadow's answers reported as a primary's: {b:#?}"
    );
}
