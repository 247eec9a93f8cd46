//! `mirror capture` (the binary) in the server namespace prints one line per HTTP request/response
//! pair for real clients: curl GET/HEAD/POST (Content-Length and chunked), a 204, a pipelined
//! batch, and a keep-alive connection opened before the daemon started (picked up mid-stream:
//! its response is printed unpaired, since what the client had outstanding when the capture
//! joined is unknown).

use std::{
    io::{BufReader, Write},
    net::TcpStream,
    sync::mpsc,
    time::Duration,
};

use mirror_tests::{
    capture_cli::{CaptureCli, Line, parse},
    frames::pattern,
    mirroring::read_response,
    netns::{NetNs, SERVER_ADDR, Topology, topology},
    privileged,
    server::RecordingServer,
};

const PORT: u16 = 8080;

/// A keep-alive connection that sends one request now and one when told to.
fn early_connection(
    ns: &NetNs,
) -> (
    mpsc::Sender<()>,
    std::thread::JoinHandle<Result<(), mirror::netns::NetnsError>>,
) {
    let (go_tx, go_rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = ns.spawn(move || {
        let stream = TcpStream::connect((SERVER_ADDR, PORT)).expect("connect");
        let mut writer = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        writer
            .write_all(b"GET /size/7 HTTP/1.1\r\nHost: early\r\n\r\n")
            .expect("write");
        read_response(&mut reader);
        ready_tx.send(()).expect("ready");
        go_rx.recv().expect("go");
        writer
            .write_all(b"GET /size/8 HTTP/1.1\r\nHost: early\r\n\r\n")
            .expect("write");
        read_response(&mut reader);
    });
    ready_rx.recv().expect("early connection ready");
    (go_tx, thread)
}

fn pipelined_batch(ns: &NetNs) {
    ns.spawn(|| {
        let stream = TcpStream::connect((SERVER_ADDR, PORT)).expect("connect");
        let mut writer = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        let batch: String = (1..=3)
            .map(|n| format!("GET /size/{n} HTTP/1.1\r\nHost: pipelined\r\n\r\n"))
            .collect();
        writer.write_all(batch.as_bytes()).expect("write batch");
        for _ in 0..3 {
            assert_eq!(read_response(&mut reader), 200);
        }
    })
    .join()
    .expect("pipelined client")
    .expect("client namespace");
}

fn curl(topology: &Topology, args: &[&str]) {
    let status = topology
        .client
        .command("curl")
        .args(["-sS", "-o", "/dev/null"])
        .args(args)
        .status()
        .expect("curl");
    assert!(status.success(), "curl {args:?}: {status}");
}

#[test]
fn capture_prints_one_line_per_exchange() {
    if !privileged("capture_prints_one_line_per_exchange") {
        return;
    }
    let topology = topology();
    let _server = RecordingServer::start(&topology.server, SERVER_ADDR, PORT);
    let (go, early) = early_connection(&topology.client);

    let capture = CaptureCli::start(&topology, PORT);
    go.send(()).expect("go");
    early
        .join()
        .expect("early client")
        .expect("client namespace");

    let upload = std::env::temp_dir().join(mirror_tests::unique_name("upload-"));
    std::fs::write(&upload, pattern(50_000, 3)).expect("write upload");
    let upload_arg = format!("@{}", upload.display());
    let url = |path: &str| format!("http://{SERVER_ADDR}:{PORT}{path}");
    curl(&topology, &[&url("/size/100")]);
    curl(&topology, &["-I", &url("/size/50")]);
    curl(&topology, &["--data-binary", &upload_arg, &url("/upload")]);
    curl(
        &topology,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &upload_arg,
            &url("/upload"),
        ],
    );
    curl(&topology, &[&url("/empty")]);
    pipelined_batch(&topology.client);
    let _ = std::fs::remove_file(&upload);

    std::thread::sleep(Duration::from_millis(500));
    let printed: Vec<Line> = capture.stop().iter().map(|line| parse(line)).collect();

    let host = format!("{SERVER_ADDR}:{PORT}");
    let expected: Vec<(&str, &str, &str, u16)> = vec![
        ("-", "-", "-", 200),
        ("GET", &host, "/size/100", 200),
        ("HEAD", &host, "/size/50", 200),
        ("POST", &host, "/upload", 200),
        ("POST", &host, "/upload", 200),
        ("GET", &host, "/empty", 204),
        ("GET", "pipelined", "/size/1", 200),
        ("GET", "pipelined", "/size/2", 200),
        ("GET", "pipelined", "/size/3", 200),
    ];
    let seen: Vec<(&str, &str, &str, u16)> = printed
        .iter()
        .map(|line| {
            (
                line.method.as_str(),
                line.host.as_str(),
                line.target.as_str(),
                line.status,
            )
        })
        .collect();
    assert_eq!(seen, expected, "printed lines: {printed:#?}");
    assert_eq!(printed[0].unpaired.as_deref(), Some("joined"));
    assert_eq!(printed[0].latency_ms, None);
    for line in &printed[1..] {
        assert_eq!(line.unpaired, None);
        let latency = line.latency_ms.expect("paired lines are timed");
        assert!(
            latency > 0.0 && latency < 5_000.0,
            "wire latency of {line:?}"
        );
    }
    // The pipelined batch shares one connection; the request before the daemon started is not
    // invented.
    assert_eq!(printed[6].client, printed[8].client);
    assert!(!printed.iter().any(|line| line.target == "/size/7"));
}
