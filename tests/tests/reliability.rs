//! Reliability of `mirror run` under load, faults and bad input: the primary is never touched,
//! every loss is counted, and nothing corrupted or malformed is ever replayed.

use std::{collections::BTreeSet, time::Duration};

use aya::programs::{SchedClassifier, TcAttachType};
use mirror_common::CLASSIFIER_PROGRAM;
use mirror_tests::{
    daemon::Daemon,
    mirroring::*,
    netns::{SERVER_ADDR, in_netns},
    privileged,
};

const PORT: u16 = 8080;

/// Classifier programs of ours attached to the server's veth.
fn attached(setup: &Setup) -> usize {
    let interface = setup.topology.server_if.clone();
    in_netns(&setup.topology.server, move || {
        [TcAttachType::Ingress, TcAttachType::Egress]
            .into_iter()
            .map(|attach_type| {
                SchedClassifier::query_tcx(&interface, attach_type)
                    .expect("query TCX")
                    .1
                    .iter()
                    .filter(|program| program.name_as_str() == Some(CLASSIFIER_PROGRAM))
                    .count()
            })
            .sum()
    })
}

#[test]
fn sigkill_under_load_spares_the_primary_and_a_restart_resumes_mid_stream() {
    if !privileged("sigkill_under_load_spares_the_primary_and_a_restart_resumes_mid_stream") {
        return;
    }
    let setup = setup();
    let daemon = start_daemon(&setup, &["--sample", "100"]);
    // Four keep-alive connections carrying requests throughout: opened before the kill, still
    // in use after the restart. `load` asserts every primary response is a 200.
    let daemon = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| load(&setup.topology.client, 4, 3000, plain_get));
        std::thread::sleep(Duration::from_millis(800));
        daemon.kill();
        for _ in 0..50 {
            if attached(&setup) == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            attached(&setup),
            0,
            "nothing of ours stays attached after SIGKILL"
        );
        let daemon = start_daemon(&setup, &["--sample", "100"]);
        traffic.join().expect("every primary request answered 200");
        daemon
    });
    std::thread::sleep(Duration::from_millis(500));
    let metrics = wait_for(&daemon, "replays after the restart", |m| {
        all_replays(m) >= m.sum("mirror_requests_total", &[]) && replays(m, "ok") > 0.0
    });
    // No connection was opened after the restart: every request the new daemon framed came
    // from a keep-alive connection it joined mid-stream.
    assert!(
        metrics.sum("mirror_requests_total", &[]) > 0.0,
        "{:#?}",
        metrics.samples
    );
    assert_accounting(&metrics);
    daemon.stop();
}

/// `GET /c/<connection>/<i>` with the shadow's Host: the only requests the shadow may see.
fn valid_shadow_request(request: &str) -> Option<(usize, usize)> {
    let rest = request.strip_prefix("GET /c/")?;
    let (path, headers) = rest.split_once(" HTTP/1.1\r\n")?;
    let marked = with_replay_marker(b"Host: search.prod-shadow:8080\r\n\r\n".to_vec());
    if format!("{headers}\r\n\r\n").as_bytes() != marked {
        return None;
    }
    let (connection, index) = path.split_once('/')?;
    Some((connection.parse().ok()?, index.parse().ok()?))
}

/// Every byte the shadow received, split into requests; panics on anything that is not a
/// request a client really sent (or a duplicate).
fn assert_only_real_requests(shadow: &mirror_tests::server::RecordingServer) -> usize {
    let mut seen = BTreeSet::new();
    for stream in shadow_streams(shadow) {
        let text = String::from_utf8(stream).expect("the shadow received non-UTF-8 bytes");
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let (request, after) = rest
                .split_once("\r\n\r\n")
                .unwrap_or_else(|| panic!("truncated request at the shadow: {rest:?}"));
            let key = valid_shadow_request(request)
                .unwrap_or_else(|| panic!("corrupted request replayed: {request:?}"));
            assert!(seen.insert(key), "request replayed twice: {request:?}");
            rest = after;
        }
    }
    seen.len()
}

fn big_get(connection: usize, i: usize) -> Vec<u8> {
    // The response is 3000 bytes: two records each, so a tiny ring fills up.
    format!("GET /c/{connection}/{i} HTTP/1.1\r\nHost: search.prod:8080\r\nX-Size: 3000\r\n\r\n")
        .into_bytes()
}

#[test]
fn tiny_ring_buffer_drops_are_counted_and_nothing_corrupted_is_replayed() {
    if !privileged("tiny_ring_buffer_drops_are_counted_and_nothing_corrupted_is_replayed") {
        return;
    }
    let setup = setup();
    let path = write_config_with(
        &setup,
        "ring_buffer_bytes = 8192\n",
        "sample_percent = 100.0\nremove_headers = [\"x-size\"]",
    );
    let daemon = Daemon::start(
        &setup.topology.server,
        &["--config", path.to_str().expect("utf-8")],
    );
    // Pipelined windows of 50 requests with 3 KB answers from 20 connections at once: far more
    // than an 8 KiB ring holds between two reads.
    load(&setup.topology.client, 20, 300, big_get);
    std::thread::sleep(Duration::from_secs(1));
    let metrics = wait_for(&daemon, "replays to finish", |m| {
        all_replays(m) >= m.sum("mirror_requests_total", &[])
    });
    let drops = metrics.sum("mirror_capture_drops_total", &["reason=\"ringbuf_full\""]);
    assert!(
        drops > 0.0,
        "an 8 KiB ring must overflow: {:#?}",
        metrics.samples
    );
    let framed = metrics.sum("mirror_requests_total", &[]);
    assert!(framed < 6000.0, "losses show as fewer framed requests");
    assert!(
        metrics.sum("mirror_tcp_gaps_total", &[]) > 0.0,
        "drops become counted gaps: {:#?}",
        metrics.samples
    );
    assert_accounting(&metrics);
    daemon.stop();
    let replayed = assert_only_real_requests(&setup.shadow);
    assert!(replayed > 0, "streams resynchronise and mirroring goes on");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn malformed_storm_is_counted_and_never_replayed() {
    if !privileged("malformed_storm_is_counted_and_never_replayed") {
        return;
    }
    let setup = setup();
    let daemon = start_daemon(&setup, &["--sample", "100", "--allow-writes"]);
    // Deterministic pseudo-random garbage.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20 {
        let garbage: Vec<u8> = (0..2000).map(|_| random() as u8).collect();
        send_raw(&setup.topology.client, garbage);
    }
    let storm: Vec<Vec<u8>> = vec![
        // Oversized header.
        format!(
            "GET /big HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "x".repeat(100_000)
        )
        .into_bytes(),
        // Too many headers.
        format!(
            "GET /many HTTP/1.1\r\nHost: a\r\n{}\r\n",
            (0..300).map(|i| format!("X-{i}: v\r\n")).collect::<String>()
        )
        .into_bytes(),
        // Bad chunk size.
        b"POST /chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n"
            .to_vec(),
        // Header injection: a bare CR inside a value, NUL in a name, LF-only smuggling.
        b"GET /inject HTTP/1.1\r\nHost: a\r\nX-A: a\rInjected: b\r\n\r\n".to_vec(),
        b"GET /nul HTTP/1.1\r\nHost: a\r\nX-\0: v\r\n\r\n".to_vec(),
        b"GET /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            .to_vec(),
        b"GET /space HTTP/1.1\r\nHost : a\r\n\r\n".to_vec(),
    ];
    for bytes in storm {
        send_raw(&setup.topology.client, bytes);
    }
    // Then one well-formed request: mirroring still works.
    let status = setup
        .topology
        .client
        .command("curl")
        .args(["-sS", "-o", "/dev/null", "-H", "Host: search.prod:8080"])
        .arg(format!("http://{SERVER_ADDR}:{PORT}/c/0/0"))
        .status()
        .expect("curl");
    assert!(status.success());
    let metrics = wait_for(&daemon, "the valid request replayed", |m| {
        replays(m, "ok") >= 1.0
    });
    assert!(
        metrics.sum("mirror_parse_errors_total", &[])
            + metrics.sum("mirror_requests_lost_total", &[])
            > 0.0,
        "malformed input is counted: {:#?}",
        metrics.samples
    );
    assert_eq!(
        replays(&metrics, "ok"),
        1.0,
        "only the valid request is replayed"
    );
    daemon.stop();
    // curl adds its own headers: accept exactly one request to /c/0/0 and nothing else.
    let streams = shadow_streams(&setup.shadow);
    let text = String::from_utf8_lossy(&streams.concat()).into_owned();
    assert_eq!(
        text.matches("HTTP/1.1\r\n").count(),
        1,
        "shadow got: {text:?}"
    );
    assert!(
        text.starts_with("GET /c/0/0 HTTP/1.1\r\n"),
        "shadow got: {text:?}"
    );
}

#[test]
fn stalled_connections_and_a_syn_flood_stay_under_the_memory_cap() {
    if !privileged("stalled_connections_and_a_syn_flood_stay_under_the_memory_cap") {
        return;
    }
    let setup = setup();
    let path = write_config_with(
        &setup,
        "\n[limits]\nreassembly_memory_bytes = 4194304\nmax_connections = 20000\n",
        "sample_percent = 100.0",
    );
    let daemon = Daemon::start(
        &setup.topology.server,
        &["--config", path.to_str().expect("utf-8")],
    );
    let rss_before = daemon.rss_kib();
    // 100,000 connections (distinct source addresses and ports) that send a SYN and half a
    // request, then nothing; plus 100,000 bare SYNs. Crafted frames injected on the client's
    // veth reach the server's ingress hook like real ones.
    let client_if = setup.topology.client_if.clone();
    let sent = in_netns(&setup.topology.client, move || {
        // Connection `n`: its own source address and port; `offset` advances the sequence.
        let frame = |n: u32, flags: u8, offset: u32, payload: &[u8]| {
            let source = std::net::Ipv4Addr::from(0xc612_8000 | (n >> 16)); // 198.18.128.0/17
            let mut frame = mirror_tests::frames::Frame::tcp(
                source.into(),
                SERVER_ADDR.parse().unwrap(),
                1024 + (n & 0xffff) as u16 % 60000,
                PORT,
            );
            frame.seq = n.wrapping_mul(7919).wrapping_add(offset);
            frame.flags = flags;
            frame.payload = payload.to_vec();
            frame.bytes()
        };
        let partial = b"GET /stalled HTTP/1.1\r\nHost: search.prod:8080\r\nX-Pad: ";
        let stalled =
            (0..100_000u32).flat_map(|n| [frame(n, 0x02, 0, b""), frame(n, 0x18, 1, partial)]);
        let flood = (100_000..200_000u32).map(|n| frame(n, 0x02, 0, b""));
        mirror_tests::frames::inject(&client_if, stalled.chain(flood))
    });
    assert_eq!(sent, 300_000, "frames injected");
    // Let the daemon work through the burst (what it could not take is counted), then
    // well-formed traffic keeps being mirrored.
    let mut seen = -1.0;
    for _ in 0..100 {
        let now = daemon.metrics().sum("mirror_packets_total", &[]);
        if now == seen {
            break;
        }
        seen = now;
        std::thread::sleep(Duration::from_millis(300));
    }
    load(&setup.topology.client, 2, 100, plain_get);
    std::thread::sleep(Duration::from_secs(1));
    let metrics = wait_for(&daemon, "the real requests replayed", |m| {
        replays(m, "ok") >= 200.0
    });
    let evicted = metrics.sum("mirror_tcp_streams_evicted_total", &[]);
    assert!(
        evicted >= 100_000.0,
        "connections beyond max_connections are evicted and counted: {evicted}"
    );
    assert!(metrics.sum("mirror_tcp_streams_active", &[]) <= 20_000.0);
    let rss_after = daemon.rss_kib();
    // The table holds at most 20,000 connections (about 1.3 KB each) and 4 MiB of stream
    // bytes: the growth stays far below what 200,000 tracked connections would take.
    assert!(
        rss_after.saturating_sub(rss_before) < 96 * 1024,
        "daemon RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // A 300,000-frame burst may outrun the reader; what it drops is counted, never silent.
    eprintln!(
        "flood: {} records dropped (counted), {evicted} connections evicted",
        metrics.sum("mirror_capture_drops_total", &[])
    );
    daemon.stop();
    let _ = std::fs::remove_file(&path);
}
