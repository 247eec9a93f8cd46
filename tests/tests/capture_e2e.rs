//! End to end: a real HTTP server (Python's http.server) in a server namespace, real clients
//! (curl, wrk) in a client namespace, mirror's capture attached to the server-side veth. Every
//! connection's captured streams must equal, byte for byte, what the server read and wrote, with
//! no loss counted anywhere.

use std::{
    net::{IpAddr, SocketAddr},
    process::Output,
    time::Duration,
};

use mirror_tests::{
    capture::CaptureSession,
    compare::{assert_streams_match, assert_streams_match_except},
    frames::pattern,
    netns::{CLIENT_ADDR, NetNs, SERVER_ADDR, topology},
    privileged,
    server::RecordingServer,
};

const PORT: u16 = 8080;

fn url(path: &str) -> String {
    format!("http://{SERVER_ADDR}:{PORT}{path}")
}

fn run(ns: &NetNs, program: &str, args: &[&str]) -> Output {
    let output = ns
        .command(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn addresses() -> (IpAddr, SocketAddr) {
    (
        CLIENT_ADDR.parse().unwrap(),
        SocketAddr::new(SERVER_ADDR.parse().unwrap(), PORT),
    )
}

#[test]
fn curl_exchanges_are_captured_byte_exact() {
    if !privileged("curl_exchanges_are_captured_byte_exact") {
        return;
    }
    let topology = topology();
    let server = RecordingServer::start(&topology.server, SERVER_ADDR, PORT);
    let capture = CaptureSession::start(&topology.server, &[&topology.server_if], &[PORT]);

    let upload = std::env::temp_dir().join(mirror_tests::unique_name("upload-"));
    std::fs::write(&upload, pattern(200 * 1024, 42)).unwrap();
    let upload_arg = format!("@{}", upload.display());
    let client = &topology.client;
    run(
        client,
        "curl",
        &["-sS", "-o", "/dev/null", &url("/size/100")],
    );
    run(
        client,
        "curl",
        &["-sS", "-o", "/dev/null", "-I", &url("/size/5000")],
    );
    run(client, "curl", &["-sS", "-o", "/dev/null", &url("/empty")]);
    // Large response: the server's GSO path.
    run(
        client,
        "curl",
        &["-sS", "-o", "/dev/null", &url("/size/300000")],
    );
    // 200 KiB upload: the client's GSO path, Content-Length framed.
    run(
        client,
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "--data-binary",
            &upload_arg,
            &url("/upload"),
        ],
    );
    // The same body chunked.
    run(
        client,
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &upload_arg,
            &url("/upload"),
        ],
    );
    // Keep-alive: three requests on one connection.
    run(
        client,
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            &url("/size/10"),
            &url("/size/20000"),
            &url("/empty"),
        ],
    );
    let _ = std::fs::remove_file(&upload);

    server.settle(Duration::from_millis(500), Duration::from_secs(10));
    let captured = capture.stop();
    captured.assert_lossless();
    let recordings = server.recordings();
    assert_eq!(recordings.len(), 7, "one recording per curl connection");
    let (client_addr, server_addr) = addresses();
    let comparison =
        assert_streams_match(&recordings, &captured.segments, client_addr, server_addr);
    assert_eq!(comparison.connections, 7);
    assert_eq!(comparison.responses_not_compared, 0);
    assert!(
        comparison.request_bytes > 400 * 1024,
        "both uploads captured: {comparison:?}"
    );
    assert!(comparison.response_bytes > 300_000, "{comparison:?}");
    // The uploads arrived as GSO/GRO segments larger than one chunk: the multi-chunk path ran.
    assert!(
        captured
            .segments
            .iter()
            .any(|segment| segment.chunk_offset > 0),
        "no multi-chunk segment seen"
    );
}

#[test]
fn thousand_concurrent_short_connections_are_captured_byte_exact() {
    if !privileged("thousand_concurrent_short_connections_are_captured_byte_exact") {
        return;
    }
    let topology = topology();
    // A wide ephemeral range: no client port is reused within the run, so recordings (named by
    // port) map to captured connections one to one. It starts above the target port: a client
    // whose source port is the target port would look like a server to the classifier.
    run(
        &topology.client,
        "sysctl",
        &["-q", "-w", "net.ipv4.ip_local_port_range=10000 65000"],
    );
    let server = RecordingServer::start(&topology.server, SERVER_ADDR, PORT);
    let capture = CaptureSession::start(&topology.server, &[&topology.server_if], &[PORT]);

    // wrk opens 1000 connections at once; `Connection: close` makes every request its own
    // short connection, reopened as soon as it ends.
    let wrk = format!(
        "ulimit -n $(ulimit -Hn) && exec wrk -t 2 -c 1000 -d 3s --timeout 10s -H 'Connection: close' {}",
        url("/size/64")
    );
    let output = run(&topology.client, "sh", &["-c", &wrk]);
    let report = String::from_utf8_lossy(&output.stdout).into_owned();

    server.settle(Duration::from_secs(1), Duration::from_secs(30));
    let captured = capture.stop();
    captured.assert_lossless();
    let (recordings, reused) = server.recordings_and_reused_ports();
    // Ports the kernel handed out twice are left out; at least the first 1,000 concurrent
    // connections must still be compared byte for byte.
    assert!(
        recordings.len() >= 1000,
        "at least 1000 connections with a unique client port, got {} ({} ports reused); wrk said:\n{report}",
        recordings.len(),
        reused.len()
    );
    let (client_addr, server_addr) = addresses();
    let comparison = assert_streams_match_except(
        &recordings,
        &captured.segments,
        client_addr,
        server_addr,
        &reused,
    );
    // Connections wrk closes when its 3 s end may lose their response; all others compare.
    assert!(comparison.responses_not_compared <= 1000, "{comparison:?}");
    eprintln!("compared {comparison:?}; wrk:\n{report}");
}
