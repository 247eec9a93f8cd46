//! `mirror run` end to end: a real primary and a recording shadow (Python's http.server), real
//! clients, the daemon in the primary's namespace. The shadow listens on the *same* port, reached
//! through the *captured* interface, so every test also checks that replays are never captured
//! again (a loop would multiply requests).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use mirror_tests::{
    daemon::{Daemon, Metrics},
    netns::{CLIENT_ADDR, NetNs, SERVER_ADDR, Topology, topology},
    privileged,
    server::RecordingServer,
};

const PORT: u16 = 8080;

struct Setup {
    topology: Topology,
    primary: RecordingServer,
    shadow: RecordingServer,
}

fn setup() -> Setup {
    let topology = topology();
    let primary = RecordingServer::start(&topology.server, SERVER_ADDR, PORT);
    let shadow = RecordingServer::start(&topology.client, CLIENT_ADDR, PORT);
    Setup {
        topology,
        primary,
        shadow,
    }
}

fn start_daemon(setup: &Setup, extra: &[&str]) -> Daemon {
    let shadow = format!("http://{CLIENT_ADDR}:{PORT}");
    let mut args = vec![
        "--interface",
        setup.topology.server_if.as_str(),
        "--port",
        "8080",
        "--shadow",
        shadow.as_str(),
    ];
    args.extend_from_slice(extra);
    Daemon::start(&setup.topology.server, &args)
}

/// Reads one response with a Content-Length body (the recording server always sends one).
fn read_response(reader: &mut BufReader<TcpStream>) -> u16 {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read response head");
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .map_or(0, |value| value.trim().parse().expect("content length"));
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("read body");
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code")
}

/// Sends `requests` on one connection from the client namespace: pipelined in one write when
/// `pipelined`, else one after the other. Returns the status codes.
fn send(ns: &NetNs, requests: Vec<Vec<u8>>, pipelined: bool) -> Vec<u16> {
    ns.spawn(move || {
        let stream = TcpStream::connect((SERVER_ADDR, PORT)).expect("connect to primary");
        let mut writer = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        if pipelined {
            writer.write_all(&requests.concat()).expect("write batch");
            requests
                .iter()
                .map(|_| read_response(&mut reader))
                .collect()
        } else {
            requests
                .iter()
                .map(|request| {
                    writer.write_all(request).expect("write");
                    read_response(&mut reader)
                })
                .collect()
        }
    })
    .join()
    .expect("client thread")
    .expect("client namespace")
}

/// Polls the daemon's metrics until `done` holds (at most 20 s); returns the last metrics.
fn wait_for(daemon: &Daemon, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let start = Instant::now();
    loop {
        let metrics = daemon.metrics();
        if done(&metrics) {
            return metrics;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}; metrics: {:#?}",
            metrics.samples
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn replays(metrics: &Metrics, outcome: &str) -> f64 {
    metrics.sum("mirror_replays_total", &[&format!("outcome=\"{outcome}\"")])
}

fn all_replays(metrics: &Metrics) -> f64 {
    metrics.sum("mirror_replays_total", &[])
}

/// The accounting identity: every framed request is skipped or replayed (dropped included).
fn assert_accounting(metrics: &Metrics) {
    let requests = metrics.sum("mirror_requests_total", &[]);
    let skipped = metrics.sum("mirror_requests_skipped_total", &[]);
    assert_eq!(
        requests,
        skipped + all_replays(metrics),
        "requests = skipped + replayed: {:#?}",
        metrics.samples
    );
}

/// Splits the shadow's per-connection streams into the expected requests, greedily; panics on
/// any byte that is not one of them. Returns how often each expected request was received.
fn match_requests(streams: &[Vec<u8>], expected: &[Vec<u8>]) -> Vec<usize> {
    let mut received = vec![0; expected.len()];
    for stream in streams {
        let mut rest = stream.as_slice();
        while !rest.is_empty() {
            let Some(index) = expected
                .iter()
                .position(|request| rest.starts_with(request))
            else {
                panic!(
                    "the shadow received bytes that are no expected request: {:?}",
                    String::from_utf8_lossy(&rest[..rest.len().min(300)])
                );
            };
            received[index] += 1;
            rest = &rest[expected[index].len()..];
        }
    }
    received
}

/// What a recording server read, per connection.
fn shadow_streams(server: &RecordingServer) -> Vec<Vec<u8>> {
    server.settle(Duration::from_millis(500), Duration::from_secs(10));
    server
        .recordings()
        .into_values()
        .map(|recording| recording.request)
        .collect()
}

/// A GET whose Host (and X-Forwarded-Host) the shadow must see with `-shadow` appended.
fn get(target: &str, extra_headers: &str) -> (Vec<u8>, Vec<u8>) {
    let sent = format!("GET {target} HTTP/1.1\r\nHost: search.prod:8080\r\n{extra_headers}\r\n");
    let expected = sent.replace("Host: search.prod:8080", "Host: search.prod-shadow:8080");
    (sent.into_bytes(), expected.into_bytes())
}

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
            (sent.as_bytes().to_vec(), expected.as_bytes().to_vec())
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
    let metrics = wait_for(&daemon, "all replays", |m| all_replays(m) >= mirrored);
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
            [&text[..at], b"search.prod-shadow:8080", &text[at + 16..]].concat()
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
