use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::{
    config::ShadowUrl,
    http::{HeadLimits, TrackerConfig, parse_request_head},
    segment::{FlowKey, TcpFlags},
    stats::{Sample, parse},
};

fn request(bytes: &'static [u8]) -> HttpRequest {
    let limits = HeadLimits {
        max_headers: 16,
        max_head_bytes: 4096,
    };
    let head = parse_request_head(bytes, &limits).unwrap().unwrap();
    HttpRequest::new(Bytes::from_static(bytes), head)
}

#[test]
fn only_safe_keep_alive_http11_requests_are_pipelined() {
    assert!(pipelinable(
        &request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        false
    ));
    assert!(pipelinable(
        &request(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
        false
    ));
    assert!(pipelinable(
        &request(b"HEAD / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"),
        false
    ));
    assert!(!pipelinable(
        &request(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        false
    ));
    assert!(!pipelinable(&request(b"GET / HTTP/1.0\r\n\r\n"), false));
    let closing = request(b"GET / HTTP/1.1\r\nConnection: TE, Close\r\n\r\n");
    assert!(
        !pipelinable(&closing, true),
        "a replay that asks the shadow to close goes alone"
    );
}

pub(super) const PORT: u16 = 8080;

/// A loopback port nothing listens on: every replay fails fast (never leaves the machine).
fn dead_shadow() -> ShadowUrl {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    ShadowUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap()
}

fn pipeline(
    registry_out: &mut Option<prometheus_client::registry::Registry>,
) -> (Pipeline, mpsc::UnboundedReceiver<ReplayResult>) {
    let (metrics, registry) = Metrics::new();
    *registry_out = Some(registry);
    let target = TargetConfig::with_defaults("t".into(), PORT, dead_shadow());
    let (results_tx, results) = mpsc::unbounded_channel();
    let tracker = HttpTracker::new(TrackerConfig::default());
    (
        Pipeline::new(
            tracker,
            &[target],
            metrics,
            None,
            results_tx,
            1,
            Default::default(),
        ),
        results,
    )
}

pub(super) fn scrape(registry: &prometheus_client::registry::Registry) -> Vec<Sample> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    parse(&text).unwrap()
}

fn sum(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|sample| sample.name == name && sample.label("target") == Some("t"))
        .map(|sample| sample.value)
        .sum()
}

#[tokio::test]
async fn every_labelled_counter_is_exported_from_start_up() {
    let mut registry = None;
    let (_pipeline, _results) = pipeline(&mut registry);
    let samples = scrape(registry.as_ref().unwrap());
    let has = |name: &str, label: &str, value: &str| {
        samples.iter().any(|sample| {
            sample.name == name && sample.label(label) == Some(value) && sample.value == 0.0
        })
    };
    let expected: &[(&str, &str, &[&str])] = &[
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
                "replay_marker",
                "unrewritable",
            ],
        ),
        (
            "mirror_replays_total",
            "outcome",
            &["ok", "error", "timeout", "dropped"],
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
            "mirror_connections_skipped_total",
            "reason",
            &["tls", "http2", "upgrade", "connect", "ambiguous_length"],
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
            "mirror_tcp_target_gaps_total",
            "direction",
            &["request", "response"],
        ),
        (
            "mirror_tcp_streams_evicted_total",
            "reason",
            &["idle", "memory", "max_connections"],
        ),
        (
            "mirror_packets_total",
            "direction",
            &["request", "response"],
        ),
        (
            "mirror_response_mismatches_total",
            "kind",
            &["status", "body"],
        ),
    ];
    for (name, label, values) in expected {
        for value in *values {
            assert!(
                has(name, label, value),
                "{name}{{{label}={value:?}}} missing at 0"
            );
        }
    }
    for name in [
        "mirror_requests_total",
        "mirror_parse_errors_total",
        "mirror_requests_lost_estimated_total",
    ] {
        assert!(
            samples.iter().any(|sample| sample.name == name),
            "{name} missing"
        );
    }
}

/// One connection's segments, sequence numbers kept.
pub(super) struct Conn {
    flow: FlowKey,
    client_seq: u32,
    server_seq: u32,
    now: u64,
    pub(super) segments: Vec<Segment>,
}

impl Conn {
    pub(super) fn new(port: u16) -> Self {
        let mut conn = Self {
            flow: FlowKey {
                client: ([198, 18, 0, 1], port).into(),
                server: ([198, 18, 0, 2], PORT).into(),
            },
            client_seq: 1_000,
            server_seq: 50_000,
            now: 1_000_000,
            segments: Vec::new(),
        };
        conn.push(Direction::Request, TcpFlags::SYN, b"");
        conn.push(
            Direction::Response,
            TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0),
            b"",
        );
        conn
    }

    fn push(&mut self, direction: Direction, flags: TcpFlags, payload: &[u8]) {
        self.now += 1_000;
        let (seq, ack) = match direction {
            Direction::Request => (self.client_seq, self.server_seq),
            Direction::Response => (self.server_seq, self.client_seq),
        };
        self.segments.push(Segment {
            flow: self.flow,
            direction,
            seq,
            ack,
            flags,
            timestamp_ns: self.now,
            ifindex: 1,
            segment_len: payload.len() as u32,
            chunk_offset: 0,
            payload: Bytes::copy_from_slice(payload),
        });
        let advance = payload.len() as u32 + u32::from(flags.syn() || flags.fin());
        match direction {
            Direction::Request => self.client_seq = self.client_seq.wrapping_add(advance),
            Direction::Response => self.server_seq = self.server_seq.wrapping_add(advance),
        }
    }

    pub(super) fn client(&mut self, payload: &[u8]) -> &mut Self {
        self.push(Direction::Request, TcpFlags::ACK, payload);
        self
    }

    pub(super) fn server(&mut self, payload: &[u8]) -> &mut Self {
        self.push(Direction::Response, TcpFlags::ACK, payload);
        self
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[tokio::test]
async fn the_accounting_identity_holds_exactly() {
    let mut registry = None;
    let (mut pipeline, mut results) = pipeline(&mut registry);
    let mut batch = Vec::new();
    // Plain requests, a write without allow_writes, a request lost to a reset.
    let mut plain = Conn::new(40_001);
    plain.client(GET).server(OK).client(GET).server(OK);
    plain
        .client(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
        .server(OK);
    plain.client(b"GET /cut HTTP/1.1\r\nHo");
    plain.push(Direction::Request, TcpFlags::RST, b"");
    // An upgrade the server accepts: one request, then a connection skipped.
    let mut upgrade = Conn::new(40_002);
    upgrade
        .client(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .server(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        .client(b"\x81\x05hello");
    // TLS and garbage: connections with no request behind them.
    let mut tls = Conn::new(40_003);
    tls.client(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]);
    let mut garbage = Conn::new(40_004);
    garbage
        .client(b"\x00\x01 not http at all\r\n\r\n")
        .client(GET);
    for conn in [plain, upgrade, tls, garbage] {
        batch.extend(conn.segments);
    }
    pipeline.on_segments(&batch);
    // Every replay finishes (the shadow refuses connections).
    let mut finished = 0;
    while let Ok(Some(result)) = tokio::time::timeout(Duration::from_secs(5), results.recv()).await
    {
        pipeline.on_replay_result(result, 0);
        finished += 1;
        let samples = scrape(registry.as_ref().unwrap());
        let in_flight = sum(&samples, "mirror_requests_total")
            - sum(&samples, "mirror_requests_skipped_total")
            - sum(&samples, "mirror_replays_total");
        if in_flight == 0.0 {
            break;
        }
    }
    let samples = scrape(registry.as_ref().unwrap());
    let requests = sum(&samples, "mirror_requests_total");
    assert_eq!(requests, 4.0, "2 GETs, a POST, the upgrade request");
    assert_eq!(
        requests,
        sum(&samples, "mirror_requests_skipped_total") + sum(&samples, "mirror_replays_total"),
        "{finished} replays finished"
    );
    let value = |name: &str, label: &str, value: &str| {
        samples
            .iter()
            .find(|sample| {
                sample.name == name
                    && sample.label("target") == Some("t")
                    && sample.label(label) == Some(value)
            })
            .map_or(0.0, |sample| sample.value)
    };
    assert_eq!(
        value("mirror_requests_skipped_total", "reason", "method"),
        1.0
    );
    assert_eq!(
        value("mirror_requests_skipped_total", "reason", "upgrade"),
        1.0
    );
    assert_eq!(value("mirror_requests_skipped_total", "reason", "tls"), 0.0);
    assert_eq!(
        value("mirror_connections_skipped_total", "reason", "tls"),
        1.0
    );
    assert_eq!(
        value("mirror_connections_skipped_total", "reason", "upgrade"),
        1.0
    );
    assert_eq!(value("mirror_requests_lost_total", "reason", "reset"), 1.0);
    assert_eq!(
        value("mirror_requests_lost_total", "reason", "malformed"),
        1.0
    );
}
