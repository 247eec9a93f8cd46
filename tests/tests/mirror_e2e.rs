//! `mirror run` end to end: a real primary and a recording shadow (Python's http.server), real
//! clients, the daemon in the primary's namespace. The shadow listens on the *same* port, reached
//! through the *captured* interface, so every test also checks that replays are never captured
//! again (a loop would multiply requests).

use std::{io::Write, time::Duration};

use mirror_tests::{
    daemon::{Daemon, Metrics},
    mirroring::*,
    netns::CLIENT_ADDR,
    privileged,
    server::RecordingServer,
};

#[test]
fn replays_are_byte_identical_except_rewritten_headers() {
    if !privileged("replays_are_byte_identical_except_rewritten_headers") {
        return;
    }
    let setup = setup();
    let daemon = start_daemon(&setup, &["--sample", "100"]);
    let client = &setup.topology.client;
    let mut expected = Vec::new();
    let mut originals = Vec::new();

    // Query string, repeated headers, mixed header case, X-Forwarded-Host list.
    let single = vec![
        get(
            "/search?q=caf%C3%A9+au+lait&page=2&sort=-date",
            "Accept: text/html\r\nAccept: application/json\r\nX-MiXeD-CaSe: Value With  Spaces\r\n",
        ),
        {
            let sent = "GET /hosts/1 HTTP/1.1\r\nhOsT: search.prod\r\nX-Forwarded-Host: a.example, b.example:8443\r\n\r\n";
            let expected = "GET /hosts/1 HTTP/1.1\r\nhOsT: search.prod-shadow\r\nX-Forwarded-Host: a.example-shadow, b.example-shadow:8443\r\n\r\n";
            (
                sent.as_bytes().to_vec(),
                with_replay_marker(expected.as_bytes().to_vec()),
            )
        },
    ];
    for (sent, rewritten) in single {
        assert_eq!(send(client, vec![sent.clone()], false), [200]);
        originals.push(sent);
        expected.push(rewritten);
    }
    // A pipelined batch.
    let batch: Vec<_> = (0..5)
        .map(|i| get(&format!("/pipelined/{i}"), ""))
        .collect();
    let statuses = send(client, batch.iter().map(|(s, _)| s.clone()).collect(), true);
    assert_eq!(statuses, [200; 5]);
    originals.extend(batch.iter().map(|(s, _)| s.clone()));
    expected.extend(batch.into_iter().map(|(_, e)| e));
    // One keep-alive connection carrying 100 requests.
    let keep_alive: Vec<_> = (0..100)
        .map(|i| get(&format!("/keepalive/{i}"), "User-Agent: test\r\n"))
        .collect();
    let statuses = send(
        client,
        keep_alive.iter().map(|(s, _)| s.clone()).collect(),
        false,
    );
    assert_eq!(statuses, vec![200; 100]);
    originals.extend(keep_alive.iter().map(|(s, _)| s.clone()));
    expected.extend(keep_alive.into_iter().map(|(_, e)| e));
    // A write: not mirrored by default.
    let post = b"POST /orders HTTP/1.1\r\nHost: search.prod:8080\r\nContent-Length: 5\r\n\r\nhello"
        .to_vec();
    assert_eq!(send(client, vec![post.clone()], false), [200]);
    originals.push(post);

    let mirrored = expected.len() as f64;
    let metrics = wait_for(&daemon, "all replays and the POST framed", |m| {
        all_replays(m) >= mirrored && m.sum("mirror_requests_total", &[]) > mirrored
    });
    assert_eq!(replays(&metrics, "ok"), mirrored, "{:#?}", metrics.samples);
    // Exactly the client's requests were framed: a replay captured again would add more.
    assert_eq!(metrics.sum("mirror_requests_total", &[]), mirrored + 1.0);
    assert_eq!(
        metrics.sum("mirror_requests_skipped_total", &["reason=\"method\""]),
        1.0
    );
    assert_accounting(&metrics);
    // The shadow records a connection when it closes: stop the daemon's keep-alive pool first.
    daemon.stop();
    let streams = shadow_streams(&setup.shadow);
    let received = match_requests(&streams, &expected);
    assert!(
        received.iter().all(|count| *count == 1),
        "every mirrored request reaches the shadow exactly once: {received:?}"
    );
    assert!(
        !streams.concat().windows(11).any(|w| w == b"POST /order"),
        "the POST must not be mirrored by default"
    );
    // The primary got the original bytes, each request once: the mirror only observes.
    let primary = shadow_streams(&setup.primary);
    assert!(
        match_requests(&primary, &originals)
            .iter()
            .all(|count| *count == 1)
    );
}

#[test]
fn writes_are_mirrored_only_with_allow_writes() {
    if !privileged("writes_are_mirrored_only_with_allow_writes") {
        return;
    }
    let setup = setup();
    let daemon = start_daemon(&setup, &["--sample", "100", "--allow-writes"]);
    let client = &setup.topology.client;
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut big_post = format!(
        "POST /upload/big HTTP/1.1\r\nHost: search.prod:8080\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    big_post.extend_from_slice(&big);
    let requests: Vec<Vec<u8>> = vec![
        b"POST /orders HTTP/1.1\r\nHost: search.prod:8080\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"item\": 42}\n".to_vec(),
        b"PUT /orders/7 HTTP/1.1\r\nHost: search.prod:8080\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
        b"DELETE /orders/7 HTTP/1.1\r\nHost: search.prod:8080\r\nContent-Length: 0\r\n\r\n".to_vec(),
        big_post,
    ];
    for request in &requests {
        assert_eq!(send(client, vec![request.clone()], false), [200]);
    }
    let metrics = wait_for(&daemon, "4 replays", |m| all_replays(m) >= 4.0);
    assert_eq!(replays(&metrics, "ok"), 4.0, "{:#?}", metrics.samples);
    assert_accounting(&metrics);
    daemon.stop();
    let expected: Vec<Vec<u8>> = requests
        .iter()
        .map(|request| {
            let text = request.as_slice();
            let at = text
                .windows(b"search.prod:8080".len())
                .position(|window| window == b"search.prod:8080")
                .expect("host");
            with_replay_marker([&text[..at], b"search.prod-shadow:8080", &text[at + 16..]].concat())
        })
        .collect();
    let received = match_requests(&shadow_streams(&setup.shadow), &expected);
    assert_eq!(
        received,
        [1, 1, 1, 1],
        "bodies intact, chunked framing untouched"
    );
}

#[test]
fn metrics_parse_with_promtool() {
    if !privileged("metrics_parse_with_promtool") {
        return;
    }
    let setup = setup();
    let daemon = start_daemon(&setup, &["--sample", "100"]);
    let (sent, _) = get("/promtool", "");
    assert_eq!(send(&setup.topology.client, vec![sent], false), [200]);
    wait_for(&daemon, "one replay", |m| all_replays(m) >= 1.0);
    let text = daemon.metrics_text();
    for name in [
        "mirror_packets_total",
        "mirror_capture_bytes_total",
        "mirror_capture_drops_total",
        "mirror_tcp_streams_active",
        "mirror_tcp_gaps_total",
        "mirror_requests_total",
        "mirror_replays_total",
        "mirror_replay_queue_depth",
        "mirror_response_duration_seconds_bucket",
        "mirror_responses_total",
        "mirror_build_info",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; cargo xtask setup installs it)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let output = promtool.wait_with_output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    daemon.stop();
}

/// Observations of `mirror_response_duration_seconds{role}` at or below `le` seconds, and in all.
fn latencies_within(metrics: &Metrics, role: &str, le: f64) -> (f64, f64) {
    let buckets = metrics.buckets(
        "mirror_response_duration_seconds",
        &format!("role=\"{role}\""),
    );
    // Buckets are cumulative: the largest bound at or below `le` counts.
    let within = buckets
        .iter()
        .take_while(|(bound, _)| *bound <= le)
        .last()
        .map_or(0.0, |(_, count)| *count);
    let total = buckets.last().map_or(0.0, |(_, count)| *count);
    (within, total)
}

#[test]
fn shadow_latency_is_the_shadows_own() {
    if !privileged("shadow_latency_is_the_shadows_own") {
        return;
    }
    // A shadow that answers after 100 ms, a primary that answers at once.
    let setup = setup_with_shadow(mirror_tests::server::Behaviour::Slow(
        Duration::from_millis(100),
    ));
    let daemon = start_daemon(&setup, &["--sample", "100"]);
    let requests = (0..10).map(|i| get(&format!("/timed/{i}"), "").0).collect();
    assert_eq!(send(&setup.topology.client, requests, false), [200; 10]);
    let metrics = wait_for(&daemon, "10 replays answered", |m| replays(m, "ok") >= 10.0);
    let (shadow_fast, shadow_total) = latencies_within(&metrics, "shadow", 0.05);
    let (shadow_in_time, _) = latencies_within(&metrics, "shadow", 0.5);
    assert!(shadow_total >= 1.0, "{:#?}", metrics.samples);
    assert_eq!(
        shadow_fast, 0.0,
        "no shadow latency under 50 ms: {:#?}",
        metrics.samples
    );
    assert_eq!(
        shadow_in_time, shadow_total,
        "every shadow latency near 100 ms, none near the 2 s timeout: {:#?}",
        metrics.samples
    );
    let (primary_fast, primary_total) = latencies_within(&metrics, "primary", 0.05);
    assert_eq!(primary_total, 10.0, "{:#?}", metrics.samples);
    assert_eq!(primary_fast, primary_total, "{:#?}", metrics.samples);
    daemon.stop();
}

#[test]
fn ten_percent_sampling_lands_within_one_point() {
    if !privileged("ten_percent_sampling_lands_within_one_point") {
        return;
    }
    let setup = setup();
    let daemon = start_daemon(&setup, &["--sample", "10"]);
    load(&setup.topology.client, 20, 1000, plain_get);
    let metrics = wait_for(&daemon, "20,000 framed requests", |m| {
        m.sum("mirror_requests_total", &[]) >= 20_000.0
    });
    let metrics = wait_for(&daemon, "replays to finish", |m| {
        m.sum("mirror_replay_queue_depth", &[]) == 0.0
            && all_replays(m) + m.sum("mirror_requests_skipped_total", &[])
                >= metrics.sum("mirror_requests_total", &[])
    });
    let requests = metrics.sum("mirror_requests_total", &[]);
    let mirrored = all_replays(&metrics);
    let share = mirrored / requests * 100.0;
    assert_eq!(requests, 20_000.0);
    assert!(
        (9.0..=11.0).contains(&share),
        "10% sampling mirrored {share:.2}% ({mirrored} of {requests})"
    );
    assert_eq!(replays(&metrics, "ok"), mirrored, "{:#?}", metrics.samples);
    assert_eq!(
        metrics.sum("mirror_requests_skipped_total", &["reason=\"sampled_out\""]),
        requests - mirrored
    );
    assert_accounting(&metrics);
    daemon.stop();
    assert_eq!(shadow_targets(&setup.shadow).len() as f64, mirrored);
}

#[test]
fn connection_and_header_sampling_are_all_or_nothing_per_key() {
    if !privileged("connection_and_header_sampling_are_all_or_nothing_per_key") {
        return;
    }
    // Per connection: 60 connections of 5 requests.
    let setup = setup();
    let daemon = start_with_config(
        &setup,
        "sample_percent = 50.0\nsample_by = \"connection\"\n",
    );
    load(&setup.topology.client, 60, 5, plain_get);
    // Connection sampling happens in the classifier: unsampled connections never reach the
    // daemon, so only the sampled requests are framed, and all of them are replayed.
    std::thread::sleep(Duration::from_secs(1));
    let metrics = wait_for(&daemon, "sampled requests replayed", |m| {
        all_replays(m) >= m.sum("mirror_requests_total", &[])
    });
    let framed = metrics.sum("mirror_requests_total", &[]);
    assert!(
        framed > 0.0 && framed < 300.0 && framed % 5.0 == 0.0,
        "whole connections framed: {framed}"
    );
    assert!(
        metrics.sum(
            "mirror_classifier_packets_total",
            &["reason=\"sampled_out\""]
        ) > 0.0,
        "unsampled connections stopped in the kernel"
    );
    daemon.stop();
    assert_all_or_nothing(&shadow_targets(&setup.shadow), 60, 5);

    // Per header: 40 users, each on 5 different connections.
    let setup = self::setup();
    let daemon = start_with_config(
        &setup,
        "sample_percent = 50.0\nsample_by = \"header:X-User\"\n",
    );
    load(&setup.topology.client, 5, 40, |connection, user| {
        format!(
            "GET /c/{user}/{connection} HTTP/1.1\r\nHost: search.prod:8080\r\nX-User: user-{user}\r\n\r\n"
        )
        .into_bytes()
    });
    wait_for(&daemon, "all 200 decided", |m| {
        all_replays(m) + m.sum("mirror_requests_skipped_total", &[]) >= 200.0
    });
    daemon.stop();
    assert_all_or_nothing(&shadow_targets(&setup.shadow), 40, 5);
}

#[test]
fn dead_slow_and_resetting_shadows_never_touch_the_primary() {
    if !privileged("dead_slow_and_resetting_shadows_never_touch_the_primary") {
        return;
    }
    // Dead: nothing listens on the shadow's address.
    let mut setup = setup();
    drop(std::mem::replace(
        &mut setup.shadow,
        RecordingServer::start(&setup.topology.client, CLIENT_ADDR, 9999),
    ));
    let daemon = start_daemon(&setup, &["--sample", "100"]);
    load_in_windows(&setup.topology.client, 10, 200, 1, fixed_get);
    let metrics = wait_for(&daemon, "2000 framed or shed", |m| all_accounted(m, 2000));
    assert_eq!(replays(&metrics, "ok"), 0.0);
    assert!(replays(&metrics, "error") > 0.0, "{:#?}", metrics.samples);
    // Once the replays fail, the target is shed: the classifier counts, the daemon idles.
    assert!(shed_requests(&metrics) > 0.0, "{:#?}", metrics.samples);
    assert_accounting(&metrics);
    assert_bounded_memory(&daemon);
    assert_recovers(&mut setup, &daemon);
    daemon.stop();

    // Slow: answers after 1 s, the replay timeout is 300 ms; a burst overflows the queue.
    let mut setup = self::setup();
    drop(std::mem::replace(
        &mut setup.shadow,
        RecordingServer::start(&setup.topology.client, CLIENT_ADDR, 9998),
    ));
    let slow = RecordingServer::start_with(
        &setup.topology.client,
        CLIENT_ADDR,
        PORT,
        mirror_tests::server::Behaviour::Slow(Duration::from_secs(1)),
    );
    let daemon = start_with_config(
        &setup,
        "sample_percent = 100.0\ntimeout_ms = 300\nqueue = 100\nconcurrency = 8\n",
    );
    load_in_windows(&setup.topology.client, 10, 300, 1, fixed_get);
    let metrics = wait_for(&daemon, "3000 framed or shed", |m| all_accounted(m, 3000));
    assert!(replays(&metrics, "timeout") > 0.0, "{:#?}", metrics.samples);
    assert!(replays(&metrics, "dropped") > 0.0, "{:#?}", metrics.samples);
    assert_accounting(&metrics);
    assert_bounded_memory(&daemon);
    drop(slow);
    assert_recovers(&mut setup, &daemon);
    daemon.stop();

    // Resetting: every connection is answered with RST.
    let mut setup = self::setup();
    drop(std::mem::replace(
        &mut setup.shadow,
        RecordingServer::start(&setup.topology.client, CLIENT_ADDR, 9997),
    ));
    let reset = RecordingServer::start_with(
        &setup.topology.client,
        CLIENT_ADDR,
        PORT,
        mirror_tests::server::Behaviour::Reset,
    );
    let daemon = start_daemon(&setup, &["--sample", "100"]);
    load_in_windows(&setup.topology.client, 10, 100, 1, fixed_get);
    // Once most replays fail fast the target may be shed, so some requests are counted there.
    let metrics = wait_for(&daemon, "1000 framed or shed", |m| all_accounted(m, 1000));
    assert_eq!(replays(&metrics, "ok"), 0.0);
    assert!(replays(&metrics, "error") > 0.0, "{:#?}", metrics.samples);
    assert_accounting(&metrics);
    drop(reset);
    assert_recovers(&mut setup, &daemon);
    daemon.stop();
}

#[test]
fn sighup_reloads_targets_and_rejects_bad_files() {
    if !privileged("sighup_reloads_targets_and_rejects_bad_files") {
        return;
    }
    let setup = setup();
    let path = write_config(&setup, "sample_percent = 0.0\n");
    let daemon = Daemon::start(
        &setup.topology.server,
        &["--config", path.to_str().expect("utf-8 path")],
    );
    load(&setup.topology.client, 1, 50, plain_get);
    let metrics = wait_for(&daemon, "50 decided", |m| {
        m.sum("mirror_requests_skipped_total", &[]) >= 50.0
    });
    assert_eq!(all_replays(&metrics), 0.0, "0% mirrors nothing");

    // Sampling 0% -> 100% without a restart.
    write_config_at(&setup, &path, "sample_percent = 100.0\n");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_for_log("configuration reloaded", Duration::from_secs(10));
    load(&setup.topology.client, 1, 50, plain_get);
    let metrics = wait_for(&daemon, "50 replays", |m| replays(m, "ok") >= 50.0);
    assert_eq!(replays(&metrics, "ok"), 50.0);

    // A bad file is rejected with a log line; the running configuration stays.
    write_config_at(&setup, &path, "sample_percent = 150.0\n");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let line = daemon.wait_for_log("reload rejected", Duration::from_secs(10));
    assert!(
        line.contains("sample_percent"),
        "the reason is logged: {line}"
    );
    load(&setup.topology.client, 1, 50, plain_get);
    let metrics = wait_for(&daemon, "100 replays", |m| replays(m, "ok") >= 100.0);
    assert_eq!(replays(&metrics, "ok"), 100.0, "still mirroring at 100%");
    assert_accounting(&metrics);
    daemon.stop();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn links_that_appear_after_start_are_captured() {
    if !privileged("links_that_appear_after_start_are_captured") {
        return;
    }
    let setup = setup();
    let shadow = format!("http://{CLIENT_ADDR}:{PORT}");
    // The pattern matches nothing yet: the daemon starts anyway and waits for links.
    let daemon = Daemon::start(
        &setup.topology.server,
        &["--interface", "mf*", "--port", "8080", "--shadow", &shadow],
    );
    let server_if = mirror_tests::unique_name("mf");
    let client_if = mirror_tests::unique_name("mg");
    let topology = &setup.topology;
    topology
        .add_link(&client_if, &server_if, "198.18.2.1/24", "198.18.2.2/24")
        .expect("new veth");
    let line = daemon.wait_for_log("classifier attached", Duration::from_secs(10));
    assert!(
        line.contains(&server_if),
        "attached to the new link: {line}"
    );
    let _primary = RecordingServer::start(&topology.server, "198.18.2.2", PORT);
    let status = topology
        .client
        .command("curl")
        .args(["-sS", "-o", "/dev/null", "http://198.18.2.2:8080/size/10"])
        .status()
        .expect("curl");
    assert!(status.success());
    let metrics = wait_for(&daemon, "the request replayed", |m| replays(m, "ok") >= 1.0);
    assert_eq!(metrics.sum("mirror_requests_total", &[]), 1.0);
    daemon.stop();
}

/// A Kubernetes ConfigMap update as the kubelet makes it: the files are written into a new
/// directory and the `..data` symlink is swapped to it. The daemon applies it without a signal
/// (the slim image has no `kill` for `kubectl exec`).
#[test]
fn a_configmap_update_applies_without_a_signal() {
    if !privileged("a_configmap_update_applies_without_a_signal") {
        return;
    }
    let setup = setup();
    let root = std::env::temp_dir().join(mirror_tests::unique_name("mirror-configmap-"));
    let version = |name: &str, sample: &str| {
        let written = write_config(&setup, sample);
        std::fs::create_dir_all(root.join(name)).expect("configmap version directory");
        std::fs::rename(&written, root.join(name).join("mirror.toml")).expect("move config");
    };
    version("..2026_12_07_1", "sample_percent = 0.0\n");
    std::os::unix::fs::symlink("..2026_12_07_1", root.join("..data")).expect("..data");
    std::os::unix::fs::symlink("..data/mirror.toml", root.join("mirror.toml")).expect("link");
    let path = root.join("mirror.toml");
    let daemon = Daemon::start(
        &setup.topology.server,
        &["--config", path.to_str().expect("utf-8 path")],
    );
    load(&setup.topology.client, 1, 20, plain_get);
    wait_for(&daemon, "20 decided", |m| {
        m.sum("mirror_requests_skipped_total", &[]) >= 20.0
    });

    version("..2026_12_07_2", "sample_percent = 100.0\n");
    std::os::unix::fs::symlink("..2026_12_07_2", root.join("..data_tmp")).expect("new link");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(root.join("..2026_12_07_1")).expect("old version");
    // Generous: the tests of this file run in parallel on a loaded machine.
    daemon.wait_for_log("configuration reloaded", Duration::from_secs(30));
    load(&setup.topology.client, 1, 20, plain_get);
    let metrics = wait_for(&daemon, "20 replays", |m| replays(m, "ok") >= 20.0);
    assert_eq!(replays(&metrics, "ok"), 20.0);
    daemon.stop();
    let _ = std::fs::remove_dir_all(&root);
}

/// A short-connection client (a new TCP connection and `Connection: close` per request) at 100%
/// sampling: every request is replayed `ok`, once, without the client's hop-by-hop fields, over
/// the daemon's pooled keep-alive connections - at least 10 replays per shadow connection where
/// replaying `Connection: close` byte for byte used to cost one connection per replay.
#[test]
fn short_connections_are_replayed_over_pooled_connections() {
    if !privileged("short_connections_are_replayed_over_pooled_connections") {
        return;
    }
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 200;
    let setup = setup();
    let daemon = start_daemon(&setup, &["--sample", "100"]);
    let request = |client: usize, i: usize| {
        get(
            &format!("/short/{client}/{i}"),
            "Connection: close\r\nKeep-Alive: timeout=5\r\nUser-Agent: curl/8\r\n",
        )
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            setup.topology.client.spawn(move || {
                for i in 0..PER_CLIENT {
                    let stream =
                        std::net::TcpStream::connect((mirror_tests::netns::SERVER_ADDR, PORT))
                            .expect("connect to primary");
                    let mut writer = stream.try_clone().expect("clone");
                    writer.write_all(&request(client, i).0).expect("write");
                    let mut reader = std::io::BufReader::new(stream);
                    assert_eq!(read_response(&mut reader), 200, "primary answered");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client").expect("client namespace");
    }
    let sent = (CLIENTS * PER_CLIENT) as f64;
    let metrics = wait_for(&daemon, "every short connection's request replayed", |m| {
        all_replays(m) >= sent
    });
    assert_eq!(replays(&metrics, "ok"), sent, "{:#?}", metrics.samples);
    assert_eq!(metrics.sum("mirror_requests_total", &[]), sent);
    assert_accounting(&metrics);
    let opened = metrics.sum("mirror_shadow_connections_opened_total", &[]);
    // The shadow records a connection when it closes: stop the daemon's pool first.
    daemon.stop();
    let streams = shadow_streams(&setup.shadow);
    assert_eq!(
        opened,
        streams.len() as f64,
        "the daemon counts the connections the shadow saw"
    );
    // The shadow sees the request without Connection and Keep-Alive: the replay's connection
    // is the daemon's, not the client's.
    let expected: Vec<Vec<u8>> = (0..CLIENTS)
        .flat_map(|client| (0..PER_CLIENT).map(move |i| (client, i)))
        .map(|(client, i)| get(&format!("/short/{client}/{i}"), "User-Agent: curl/8\r\n").1)
        .collect();
    let received = match_requests(&streams, &expected);
    assert!(
        received.iter().all(|count| *count == 1),
        "every request reaches the shadow exactly once: {received:?}"
    );
    assert!(
        streams.len() * 10 <= CLIENTS * PER_CLIENT,
        "{} shadow connections for {} requests on as many client connections",
        streams.len(),
        CLIENTS * PER_CLIENT
    );
}
