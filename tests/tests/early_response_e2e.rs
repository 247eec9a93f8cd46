//! A server that answers before it has read the request: nginx's `return` answers a large PUT
//! without reading its body (it discards the body afterwards). `mirror capture` must still pair
//! the response with the PUT - the answer came while the request was still arriving - and keep
//! the order of the next request on the same connection. A second capture (the library's, on
//! the same interface) checks that the answer really was early.

use mirror::segment::Direction;
use mirror_tests::{
    capture::CaptureSession,
    capture_cli::{CaptureCli, Line, parse},
    frames::pattern,
    netns::{SERVER_ADDR, topology},
    nginx::Nginx,
    privileged,
};

const PORT: u16 = 8080;
const UPLOAD_BYTES: usize = 200 * 1024;

#[test]
fn nginx_answering_a_large_put_early_is_paired() {
    if !privileged("nginx_answering_a_large_put_early_is_paired") {
        return;
    }
    let topology = topology();
    let _nginx = Nginx::start(
        &topology.server,
        SERVER_ADDR,
        PORT,
        "client_max_body_size 10m; keepalive_requests 100;",
        "location /upload { return 200 \"early\\n\"; } location / { return 200 \"after\\n\"; }",
    );
    let capture = CaptureCli::start(&topology, PORT);
    let segments = CaptureSession::start(&topology.server, &[&topology.server_if], &[PORT]);

    let upload = std::env::temp_dir().join(mirror_tests::unique_name("upload-"));
    std::fs::write(&upload, pattern(UPLOAD_BYTES, 5)).expect("write upload");
    let url = |path: &str| format!("http://{SERVER_ADDR}:{PORT}{path}");
    // One connection: the PUT (no `Expect: 100-continue`, so the body follows the head at
    // once), then a GET.
    let output = topology
        .client
        .command("curl")
        .args(["-sS", "-X", "PUT", "-H", "Expect:", "--data-binary"])
        .arg(format!("@{}", upload.display()))
        .arg(url("/upload"))
        .args(["--next", "-sS"])
        .arg(url("/after"))
        .output()
        .expect("curl");
    let _ = std::fs::remove_file(&upload);
    assert!(
        output.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "early\nafter\n");

    std::thread::sleep(std::time::Duration::from_millis(500));
    let captured = segments.stop();
    captured.assert_lossless();
    // The server acknowledged less than the whole PUT when it answered: the GET after it starts
    // beyond what the first response segment acknowledges.
    let get_seq = captured
        .segments
        .iter()
        .find(|segment| {
            segment.direction == Direction::Request && segment.payload.starts_with(b"GET /after")
        })
        .expect("the GET captured")
        .payload_seq();
    let answer = captured
        .segments
        .iter()
        .find(|segment| segment.direction == Direction::Response && !segment.payload.is_empty())
        .expect("the answer captured");
    let unacknowledged = get_seq.wrapping_sub(answer.ack) as i32;
    assert!(
        unacknowledged > 0,
        "nginx answered after it had received the whole PUT: the scenario is not an early \
         answer (ack {}, PUT ends at {get_seq})",
        answer.ack
    );
    eprintln!("nginx answered with {unacknowledged} bytes of the PUT not yet received");

    let printed = capture.stop();
    eprintln!("mirror capture printed:\n{}", printed.join("\n"));
    let lines: Vec<Line> = printed.iter().map(|line| parse(line)).collect();
    let host = format!("{SERVER_ADDR}:{PORT}");
    let seen: Vec<(&str, &str, &str, u16, Option<&str>)> = lines
        .iter()
        .map(|line| {
            (
                line.method.as_str(),
                line.host.as_str(),
                line.target.as_str(),
                line.status,
                line.unpaired.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("PUT", host.as_str(), "/upload", 200, None),
            ("GET", host.as_str(), "/after", 200, None),
        ],
        "a paired `PUT {host} /upload 200 <latency>ms` line, then the GET"
    );
    for line in &lines {
        let latency = line.latency_ms.expect("paired lines are timed");
        assert!(
            (0.0..5_000.0).contains(&latency),
            "wire latency of {line:?}"
        );
    }
    assert_eq!(lines[0].client, lines[1].client, "one connection");
}
