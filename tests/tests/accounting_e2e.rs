//! The accounting of `mirror run`, exactly, after a run that exercises every way a request or a
//! connection leaves mirroring: per target, `mirror_requests_total` = sum of
//! `mirror_requests_skipped_total` + sum of `mirror_replays_total`; connection-level skips (TLS,
//! HTTP/2) in `mirror_connections_skipped_total` and not among the requests; every labelled
//! counter exported with its label values from the first scrape.

use mirror_tests::{daemon::Metrics, mirroring::*, privileged};

/// Label values every family has from the first scrape (`target="search"` where per target).
/// `mirror_responses_total{code}` is the exception: codes are not known in advance.
const FAMILIES: &[(&str, &str, &[&str])] = &[
    (
        "mirror_packets_total",
        "direction",
        &["request", "response"],
    ),
    (
        "mirror_capture_bytes_total",
        "direction",
        &["request", "response"],
    ),
    (
        "mirror_capture_drops_total",
        "reason",
        &[
            "ringbuf_full",
            "copy_error",
            "decode_error",
            "consumer_full",
        ],
    ),
    (
        "mirror_capture_lost_bytes_total",
        "reason",
        &[
            "ringbuf_full_or_copy_error",
            "truncated",
            "shed_request",
            "shed_response",
            "consumer_full",
        ],
    ),
    (
        "mirror_classifier_packets_total",
        "reason",
        &[
            "seen",
            "matched",
            "self_traffic",
            "sampled_out",
            "shed",
            "header_error",
            "ip_fragment",
        ],
    ),
    (
        "mirror_tcp_streams_evicted_total",
        "reason",
        &["idle", "memory", "max_connections"],
    ),
    (
        "mirror_tcp_target_gaps_total",
        "direction",
        &["request", "response"],
    ),
    (
        "mirror_tcp_target_gap_bytes_total",
        "direction",
        &["request", "response"],
    ),
    (
        "mirror_requests_skipped_total",
        "reason",
        &[
            "sampled_out",
            "method",
            "path",
            "rate_limit",
            "too_large",
            "upgrade",
            "connect",
            "unrewritable",
        ],
    ),
    (
        "mirror_connections_skipped_total",
        "reason",
        &["tls", "http2", "upgrade", "connect", "ambiguous_length"],
    ),
    (
        "mirror_requests_lost_total",
        "reason",
        &[
            "gap",
            "malformed",
            "truncated",
            "reset",
            "evicted",
            "connection_skipped",
        ],
    ),
    (
        "mirror_responses_unpaired_total",
        "reason",
        &["joined", "gap", "malformed", "order", "overflow"],
    ),
    (
        "mirror_comparisons_cancelled_total",
        "reason",
        &[
            "joined",
            "gap",
            "malformed",
            "order",
            "overflow",
            "response_lost",
            "expired",
        ],
    ),
    (
        "mirror_replays_total",
        "outcome",
        &["ok", "error", "timeout", "dropped"],
    ),
    (
        "mirror_response_mismatches_total",
        "kind",
        &["status", "body"],
    ),
    (
        "mirror_response_duration_seconds_count",
        "role",
        &["primary", "shadow"],
    ),
];

/// Per-target families without another label.
const PER_TARGET: &[&str] = &[
    "mirror_requests_total",
    "mirror_parse_errors_total",
    "mirror_replay_queue_depth",
    "mirror_requests_lost_estimated_total",
];

/// Families that carry a `target` label.
fn per_target(name: &str) -> bool {
    !matches!(
        name,
        "mirror_packets_total"
            | "mirror_capture_bytes_total"
            | "mirror_capture_drops_total"
            | "mirror_capture_lost_bytes_total"
            | "mirror_classifier_packets_total"
            | "mirror_tcp_streams_evicted_total"
    )
}

fn assert_families_exported(metrics: &Metrics) {
    let mut missing = Vec::new();
    for (name, label, values) in FAMILIES {
        for value in *values {
            let label = format!("{label}=\"{value}\"");
            let mut labels = vec![label.as_str()];
            if per_target(name) {
                labels.push("target=\"search\"");
            }
            if !metrics.has(name, &labels) {
                missing.push(format!("{name}{{{}}}", labels.join(",")));
            }
        }
    }
    for name in PER_TARGET {
        if !metrics.has(name, &["target=\"search\""]) {
            missing.push(format!("{name}{{target=\"search\"}}"));
        }
    }
    assert!(
        missing.is_empty(),
        "not exported before the first event: {missing:#?}"
    );
}

/// A TLS 1.2 record carrying the start of a ClientHello (the classifier and the daemon look at
/// the record header).
fn client_hello() -> Vec<u8> {
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0x31, 0x01, 0x00, 0x00, 0x2d, 0x03, 0x03,
    ];
    hello.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    hello.extend([
        0x00, 0x00, 0x04, 0x13, 0x01, 0x13, 0x02, 0x01, 0x00, 0x00, 0x00,
    ]);
    hello
}

/// The HTTP/2 prior-knowledge connection preface and an empty SETTINGS frame.
fn h2_preface() -> Vec<u8> {
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend([0, 0, 0, 0x04, 0, 0, 0, 0, 0]);
    preface
}

#[test]
fn accounting_is_exact_after_a_varied_run() {
    if !privileged("accounting_is_exact_after_a_varied_run") {
        return;
    }
    let setup = setup();
    let config = ConfigFile::write(&setup, "", "sample_percent = 50.0\n");
    let daemon = config.start(&setup);
    // Before any traffic: every family with every known label value, all 0.
    let first = daemon.metrics();
    assert_families_exported(&first);
    let nonzero: Vec<_> = first
        .samples
        .iter()
        .filter(|(key, value)| {
            **value != 0.0
                && !key.starts_with("mirror_build_info")
                && !key.starts_with("mirror_shadow_info")
                && !key.starts_with("mirror_classifier_packets_total")
                && !key.starts_with("mirror_response_duration_seconds")
        })
        .collect();
    assert!(nonzero.is_empty(), "counters before traffic: {nonzero:#?}");

    let client = &setup.topology.client;
    // 60 GETs on three keep-alive connections (each batch of 20 in one write).
    load(client, 3, 20, plain_get);
    // 10 POSTs on one connection: writes are not mirrored without allow_writes.
    let posts = (0..10)
        .map(|i| {
            format!(
                "POST /orders/{i} HTTP/1.1\r\nHost: search.prod:8080\r\nContent-Length: 5\r\n\r\nhello"
            )
            .into_bytes()
        })
        .collect();
    assert_eq!(send(client, posts, false), [200; 10]);
    // A connection of garbage: not framed, counted as malformed.
    send_raw(client, b"\x01\x02 this is no HTTP request\r\n\r\n".to_vec());
    // A TLS ClientHello and an HTTP/2 preface: connections skipped, no request behind them.
    send_raw(client, client_hello());
    send_raw(client, h2_preface());
    // An Upgrade to websocket the server answers 200 without switching: the connection stays
    // HTTP/1.1, and the 20 requests after it are framed (and sampled) like any other.
    let mut upgrade = vec![
        b"GET /chat HTTP/1.1\r\nHost: search.prod:8080\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            .to_vec(),
    ];
    upgrade.extend((0..20).map(|i| get(&format!("/after-upgrade/{i}"), "").0));
    assert_eq!(send(client, upgrade, false), [200; 21]);
    let framed = 60 + 10 + 1 + 20;

    let metrics = wait_until_settled(&daemon);
    let sum = |name: &str, labels: &[&str]| metrics.sum(name, labels);
    let requests = sum("mirror_requests_total", &["target=\"search\""]);
    let skipped = sum("mirror_requests_skipped_total", &["target=\"search\""]);
    let replayed = sum("mirror_replays_total", &["target=\"search\""]);
    eprintln!("varied run: {requests} requests = {skipped} skipped + {replayed} replayed");
    for (name, label) in [
        ("mirror_requests_skipped_total", "reason"),
        ("mirror_replays_total", "outcome"),
        ("mirror_connections_skipped_total", "reason"),
        ("mirror_requests_lost_total", "reason"),
        ("mirror_responses_unpaired_total", "reason"),
        ("mirror_comparisons_cancelled_total", "reason"),
    ] {
        let parts: Vec<String> = metrics
            .by_label(name, label)
            .iter()
            .map(|(value, count)| format!("{value}={count}"))
            .collect();
        eprintln!("  {name}: {}", parts.join(" "));
    }
    eprintln!(
        "  mirror_parse_errors_total: {}",
        sum("mirror_parse_errors_total", &[])
    );

    // The identity, exactly, per target (one target here).
    assert_eq!(
        requests,
        skipped + replayed,
        "requests = skipped + replayed: {:#?}",
        metrics.samples
    );
    assert_eq!(requests, f64::from(framed), "{:#?}", metrics.samples);
    let skip = |reason: &str| {
        sum(
            "mirror_requests_skipped_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    assert_eq!(skip("method"), 10.0, "the POSTs");
    assert_eq!(skip("upgrade"), 1.0, "the Upgrade request itself");
    assert_eq!(
        skip("sampled_out") + replayed,
        80.0,
        "the GETs are sampled: {:#?}",
        metrics.samples
    );
    assert!(
        replayed > 0.0 && skip("sampled_out") > 0.0,
        "50% sampling mirrors some, not all"
    );
    assert_eq!(replays(&metrics, "ok"), replayed, "a healthy shadow");
    // Connection-level skips: counted once each, and not among the requests.
    let connections = |reason: &str| {
        sum(
            "mirror_connections_skipped_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    assert_eq!(connections("tls"), 1.0, "{:#?}", metrics.samples);
    assert_eq!(connections("http2"), 1.0, "{:#?}", metrics.samples);
    assert_eq!(
        connections("upgrade"),
        0.0,
        "an Upgrade answered without 101 does not end the connection's mirroring"
    );
    for (labels, value) in metrics.series("mirror_requests_skipped_total") {
        assert!(
            !(value != 0.0 && (labels.contains("\"tls\"") || labels.contains("\"http2\""))),
            "connections counted as requests: {labels} {value}"
        );
    }
    // The garbage: a parse error, a malformed request lost, nothing replayed.
    assert_eq!(sum("mirror_parse_errors_total", &[]), 1.0);
    assert_eq!(
        sum("mirror_requests_lost_total", &["reason=\"malformed\""]),
        1.0
    );
    daemon.stop();
    // What the shadow got: exactly the replayed GETs, some of them after the Upgrade.
    let targets = shadow_targets(&setup.shadow);
    assert_eq!(targets.len() as f64, replayed, "{targets:?}");
    assert!(
        targets
            .iter()
            .any(|target| target.starts_with("/after-upgrade/")),
        "requests after the declined Upgrade are replayed: {targets:?}"
    );
    assert!(
        !targets.iter().any(|target| target == "/chat"),
        "the Upgrade request itself is never replayed"
    );
}
