//! Building blocks of the `mirror run` end-to-end tests: a primary and a recording shadow
//! (Python's http.server) around the daemon, raw clients, metric polling and the accounting
//! identity.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use crate::{
    daemon::{Daemon, Metrics},
    netns::{CLIENT_ADDR, NetNs, SERVER_ADDR, Topology, topology},
    server::{Behaviour, RecordingServer},
};

pub const PORT: u16 = 8080;

#[derive(Debug)]
pub struct Setup {
    pub topology: Topology,
    pub primary: RecordingServer,
    pub shadow: RecordingServer,
}

pub fn setup() -> Setup {
    setup_with_shadow(Behaviour::Normal)
}

/// [`setup`] with a shadow that behaves as `behaviour` says.
pub fn setup_with_shadow(behaviour: Behaviour) -> Setup {
    let topology = topology();
    let primary = RecordingServer::start(&topology.server, SERVER_ADDR, PORT);
    let shadow = RecordingServer::start_with(&topology.client, CLIENT_ADDR, PORT, behaviour);
    Setup {
        topology,
        primary,
        shadow,
    }
}

pub fn start_daemon(setup: &Setup, extra: &[&str]) -> Daemon {
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
pub fn read_response(reader: &mut BufReader<TcpStream>) -> u16 {
    read_response_sized(reader).0
}

/// [`read_response`], with the response's size on the wire.
pub fn read_response_sized(reader: &mut BufReader<TcpStream>) -> (u16, usize) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read response head");
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .map_or(0, |value| value.trim().parse().expect("content length"));
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("read body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    (status, head.len() + length)
}

/// Sends `requests` on one connection from the client namespace: pipelined in one write when
/// `pipelined`, else one after the other. Returns the status codes.
pub fn send(ns: &NetNs, requests: Vec<Vec<u8>>, pipelined: bool) -> Vec<u16> {
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

/// Writes `bytes` on a new connection to the primary from `ns`, half-closes, and reads whatever
/// comes back (at most 2 s).
pub fn send_raw(ns: &NetNs, bytes: Vec<u8>) {
    ns.spawn(move || {
        let mut stream = TcpStream::connect((SERVER_ADDR, PORT)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    })
    .join()
    .expect("raw client")
    .expect("client namespace");
}

/// Polls the daemon's metrics until `done` holds (at most 20 s); returns the last metrics.
pub fn wait_for(daemon: &Daemon, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
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

pub fn replays(metrics: &Metrics, outcome: &str) -> f64 {
    metrics.sum("mirror_replays_total", &[&format!("outcome=\"{outcome}\"")])
}

pub fn all_replays(metrics: &Metrics) -> f64 {
    metrics.sum("mirror_replays_total", &[])
}

/// The accounting identity: every framed request is skipped or replayed (dropped included).
pub fn assert_accounting(metrics: &Metrics) {
    let requests = metrics.sum("mirror_requests_total", &[]);
    let skipped = metrics.sum("mirror_requests_skipped_total", &[]);
    assert_eq!(
        requests,
        skipped + all_replays(metrics),
        "requests = skipped + replayed: {:#?}",
        metrics.samples
    );
}

/// Waits (at most 30 s) until the daemon is done with what it captured: no replay is queued,
/// neither the framed requests, the responses nor the replays moved for a second, and the
/// accounting identity holds - or, if it does not, nothing moved for three seconds (the caller's
/// assertion then shows the difference). Returns the metrics of that moment.
pub fn wait_until_settled(daemon: &Daemon) -> Metrics {
    let start = Instant::now();
    let progress = |m: &Metrics| {
        (
            m.sum("mirror_requests_total", &[]),
            m.sum("mirror_responses_total", &[]),
            all_replays(m),
            m.sum("mirror_requests_skipped_total", &[]),
        )
    };
    let mut previous = daemon.metrics();
    let mut still = 0;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let metrics = daemon.metrics();
        let requests = metrics.sum("mirror_requests_total", &[]);
        let decided = metrics.sum("mirror_requests_skipped_total", &[]) + all_replays(&metrics);
        if metrics.sum("mirror_replay_queue_depth", &[]) == 0.0
            && progress(&metrics) == progress(&previous)
        {
            still += 1;
        } else {
            still = 0;
        }
        if (still >= 1 && requests == decided) || still >= 3 {
            return metrics;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the daemon did not settle in 30 s (requests {requests}, skipped + replayed \
             {decided}): {:#?}",
            metrics.samples
        );
        previous = metrics;
    }
}

/// Splits the shadow's per-connection streams into the expected requests, greedily; panics on
/// any byte that is not one of them. Returns how often each expected request was received.
pub fn match_requests(streams: &[Vec<u8>], expected: &[Vec<u8>]) -> Vec<usize> {
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
pub fn shadow_streams(server: &RecordingServer) -> Vec<Vec<u8>> {
    server.settle(Duration::from_millis(500), Duration::from_secs(10));
    server
        .recordings()
        .into_values()
        .map(|recording| recording.request)
        .collect()
}

/// A GET whose Host (and X-Forwarded-Host) the shadow must see with `-shadow` appended, and
/// the replay marker added.
pub fn get(target: &str, extra_headers: &str) -> (Vec<u8>, Vec<u8>) {
    let sent = format!("GET {target} HTTP/1.1\r\nHost: search.prod:8080\r\n{extra_headers}\r\n");
    let expected = sent.replace("Host: search.prod:8080", "Host: search.prod-shadow:8080");
    (sent.into_bytes(), with_replay_marker(expected.into_bytes()))
}

/// `request` as a shadow receives it from a daemon with the default `[replay] marker_header`:
/// `X-Mirror-Replay: <node>` last in the head, `<node>` being the daemon's NODE_NAME (inherited
/// from this process) or else the host name.
pub fn with_replay_marker(request: Vec<u8>) -> Vec<u8> {
    let node = std::env::var("NODE_NAME").unwrap_or_else(|_| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("host name")
            .trim()
            .to_owned()
    });
    let end = request
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a complete head")
        + 2;
    [
        &request[..end],
        format!("X-Mirror-Replay: {node}\r\n").as_bytes(),
        &request[end..],
    ]
    .concat()
}

/// Sends `per_connection` requests on each of `connections` keep-alive connections (pipelined
/// in windows of 50) from the client namespace; `request(connection, i)` builds each one. Every
/// response must be a 200 from the primary, whatever the shadow does.
pub fn load(
    ns: &NetNs,
    connections: usize,
    per_connection: usize,
    request: fn(usize, usize) -> Vec<u8>,
) {
    load_in_windows(ns, connections, per_connection, 50, request);
}

/// [`load`] with `window` requests written at a time (1: one request per packet).
pub fn load_in_windows(
    ns: &NetNs,
    connections: usize,
    per_connection: usize,
    window: usize,
    request: fn(usize, usize) -> Vec<u8>,
) {
    let threads: Vec<_> = (0..connections)
        .map(|connection| {
            ns.spawn(move || {
                let stream = TcpStream::connect((SERVER_ADDR, PORT)).expect("connect to primary");
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                for window in (0..per_connection).collect::<Vec<_>>().chunks(window) {
                    let batch: Vec<u8> = window
                        .iter()
                        .flat_map(|i| request(connection, *i))
                        .collect();
                    writer.write_all(&batch).expect("write");
                    for _ in window {
                        assert_eq!(read_response(&mut reader), 200, "primary answered");
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("client").expect("client namespace");
    }
}

/// Targets of the requests the shadow received (`GET <target> HTTP/1.1` lines).
pub fn shadow_targets(shadow: &RecordingServer) -> Vec<String> {
    shadow_streams(shadow)
        .iter()
        .flat_map(|stream| {
            String::from_utf8_lossy(stream)
                .lines()
                .filter_map(|line| line.strip_prefix("GET "))
                .filter_map(|rest| rest.split(' ').next())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn write_config(setup: &Setup, target_lines: &str) -> std::path::PathBuf {
    write_config_with(setup, "", target_lines)
}

/// A config file with `capture_lines` after the interfaces line (more `[capture]` keys, then
/// any other section) and `target_lines` in the one target.
pub fn write_config_with(
    setup: &Setup,
    capture_lines: &str,
    target_lines: &str,
) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(crate::unique_name("mirror-conf-"));
    write_config_at_with(setup, &path, capture_lines, target_lines);
    path
}

/// A config file written by [`ConfigFile::write`], removed on drop (also when a test fails).
#[derive(Debug)]
pub struct ConfigFile(pub std::path::PathBuf);

impl ConfigFile {
    /// [`write_config_with`], removed on drop.
    pub fn write(setup: &Setup, capture_lines: &str, target_lines: &str) -> Self {
        Self(write_config_with(setup, capture_lines, target_lines))
    }

    /// `mirror run` with this file, in the server's namespace.
    pub fn start(&self, setup: &Setup) -> Daemon {
        let path = self.0.to_str().expect("utf-8 path");
        Daemon::start(&setup.topology.server, &["--config", path])
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn write_config_at(setup: &Setup, path: &std::path::Path, target_lines: &str) {
    write_config_at_with(setup, path, "", target_lines);
}

fn write_config_at_with(
    setup: &Setup,
    path: &std::path::Path,
    capture_lines: &str,
    target_lines: &str,
) {
    let config = format!(
        "[capture]\ninterfaces = [\"{}\"]\n{capture_lines}\n[[target]]\nname = \"search\"\nport = {PORT}\nshadow = \"http://{CLIENT_ADDR}:{PORT}\"\n{target_lines}\n",
        setup.topology.server_if
    );
    std::fs::write(path, config).expect("write config");
}

pub fn start_with_config(setup: &Setup, target_lines: &str) -> Daemon {
    let path = write_config(setup, target_lines);
    let path = path.to_str().expect("utf-8 path").to_owned();
    Daemon::start(&setup.topology.server, &["--config", &path])
}

pub fn plain_get(connection: usize, i: usize) -> Vec<u8> {
    format!("GET /c/{connection}/{i} HTTP/1.1\r\nHost: search.prod:8080\r\n\r\n").into_bytes()
}

/// Bytes of every [`fixed_get`] request.
pub const FIXED_GET_LEN: usize = 51;

/// [`plain_get`] with zero-padded numbers (up to 100 connections of 10,000 requests): every
/// request has [`FIXED_GET_LEN`] bytes, so shed request bytes convert to requests exactly.
pub fn fixed_get(connection: usize, i: usize) -> Vec<u8> {
    let request =
        format!("GET /c/{connection:02}/{i:04} HTTP/1.1\r\nHost: search.prod:8080\r\n\r\n");
    assert_eq!(request.len(), FIXED_GET_LEN, "{request}");
    request.into_bytes()
}

/// Requests whose packets the classifier shed (the daemon's shadow could take no more), when
/// every request is one [`fixed_get`] per packet.
pub fn shed_requests(metrics: &Metrics) -> f64 {
    let bytes = metrics.sum(
        "mirror_capture_lost_bytes_total",
        &["reason=\"shed_request\""],
    );
    bytes / FIXED_GET_LEN as f64
}

/// Every one of `sent` [`fixed_get`] requests, sent one per packet, is framed (and then decided:
/// replayed or skipped), lost with a counted reason, or shed; and no replay is still queued.
pub fn all_accounted(metrics: &Metrics, sent: usize) -> bool {
    let framed = metrics.sum("mirror_requests_total", &[]);
    let decided = metrics.sum("mirror_requests_skipped_total", &[]) + all_replays(metrics);
    let lost = metrics.sum("mirror_requests_lost_total", &[]);
    framed == decided
        && framed + lost + shed_requests(metrics) == sent as f64
        && metrics.sum("mirror_replay_queue_depth", &[]) == 0.0
}

/// Groups shadow targets `/c/<key>/<i>` by key and checks each key is all or nothing.
pub fn assert_all_or_nothing(targets: &[String], keys: usize, per_key: usize) {
    let mut per: Vec<usize> = vec![0; keys];
    for target in targets {
        let key: usize = target
            .split('/')
            .nth(2)
            .and_then(|key| key.parse().ok())
            .unwrap_or_else(|| panic!("unexpected target {target}"));
        per[key] += 1;
    }
    assert!(
        per.iter().all(|count| *count == 0 || *count == per_key),
        "every key all or nothing: {per:?}"
    );
    let sampled = per.iter().filter(|count| **count > 0).count();
    assert!(
        sampled > 0 && sampled < keys,
        "50% of {keys} keys sampled, got {sampled}"
    );
}

/// Replaces the shadow with a normal one and checks replay resumes: new requests are replayed
/// `ok` (after at most one back-off period).
pub fn assert_recovers(setup: &mut Setup, daemon: &Daemon) {
    setup.shadow = RecordingServer::start(&setup.topology.client, CLIENT_ADDR, PORT);
    let before = replays(&daemon.metrics(), "ok");
    let start = Instant::now();
    loop {
        load(&setup.topology.client, 1, 20, plain_get);
        std::thread::sleep(Duration::from_millis(300));
        if replays(&daemon.metrics(), "ok") > before {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "replay did not resume after the shadow recovered"
        );
    }
}

pub fn assert_bounded_memory(daemon: &Daemon) {
    let rss_mib = daemon.rss_kib() / 1024;
    // The limits (256 MiB of reassembly, 1024-deep queues) bound it far below this; a leak
    // under a dead shadow (GoReplay's failure) would not stay here.
    assert!(rss_mib < 200, "daemon RSS {rss_mib} MiB");
}
