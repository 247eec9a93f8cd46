//! Throughput of the I/O-free core (reassembly + HTTP framing) on one core.
//!
//! - `small_get/requests`: one small GET per segment over 100 keep-alive connections.
//! - `small_get/exchanges`: the same with a small 200 response per request (pairing included).
//! - `body_64k/requests`: POSTs with 64 KiB bodies in 2 KiB capture chunks (the classifier's
//!   largest chunk class), so each request is reassembled from 33 chunks and copied once.
//! - `body_64k/responses`: 64 KiB response bodies (delimited and hashed with xxh3-128).
//! - `short_connections/exchanges`: a connection per exchange (`Connection: close`): handshake,
//!   request, response, FIN both ways, 20,000 client ports, so each connection's set-up and
//!   tear-down (table insert, tombstone, framer state) is in the figure.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mirror::http::{HttpTracker, TrackerConfig};
use mirror::segment::{Direction, FlowKey, Segment, TcpFlags};

const CONNECTIONS: u16 = 100;
const CHUNK: usize = 2048;
const SMALL_GET: &[u8] = b"GET /api/v1/items?id=12345 HTTP/1.1\r\nHost: shop.example.test\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n\r\n";
const SHORT_GET: &[u8] = b"GET /api/v1/items?id=12345 HTTP/1.1\r\nHost: shop.example.test\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\nConnection: close\r\n\r\n";
const SMALL_OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"id\":12345,\"a\":1}";

fn flow(port: u16) -> FlowKey {
    FlowKey {
        client: ([198, 18, 0, 1], 10_000 + port).into(),
        server: ([198, 18, 0, 2], 8080).into(),
    }
}

struct Connection {
    port: u16,
    client_seq: u32,
    server_seq: u32,
}

fn segment(
    port: u16,
    direction: Direction,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    payload: Bytes,
    ts: u64,
) -> Segment {
    Segment {
        flow: flow(port),
        direction,
        seq,
        ack,
        flags,
        timestamp_ns: ts,
        ifindex: 1,
        segment_len: payload.len() as u32,
        chunk_offset: 0,
        payload,
    }
}

impl Connection {
    fn new(port: u16) -> Self {
        Self {
            port,
            client_seq: 1_000 + u32::from(port),
            server_seq: 9_000_000,
        }
    }

    /// SYN and SYN-ACK at `ts`.
    fn handshake(&mut self, out: &mut Vec<Segment>, ts: u64) {
        out.push(segment(
            self.port,
            Direction::Request,
            self.client_seq,
            0,
            TcpFlags::SYN,
            Bytes::new(),
            ts,
        ));
        self.client_seq += 1;
        out.push(segment(
            self.port,
            Direction::Response,
            self.server_seq,
            self.client_seq,
            TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0),
            Bytes::new(),
            ts,
        ));
        self.server_seq += 1;
    }
}

/// Handshakes of all connections, then `rounds` of `build(connection)` segments round-robin.
fn workload(
    rounds: usize,
    mut build: impl FnMut(&mut Connection, &mut Vec<Segment>, &mut u64),
) -> (Vec<Segment>, Vec<Segment>) {
    let mut ts = 1_000_000;
    let mut setup = Vec::new();
    let mut connections: Vec<Connection> = (0..CONNECTIONS).map(Connection::new).collect();
    for c in &mut connections {
        c.handshake(&mut setup, ts);
    }
    let mut segments = Vec::new();
    for _ in 0..rounds {
        for c in &mut connections {
            ts += 1_000;
            build(c, &mut segments, &mut ts);
        }
    }
    (setup, segments)
}

fn send(
    c: &mut Connection,
    out: &mut Vec<Segment>,
    direction: Direction,
    payload: &Bytes,
    ts: u64,
) {
    let flags = TcpFlags(TcpFlags::ACK.0 | TcpFlags::PSH.0);
    for start in (0..payload.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(payload.len());
        let piece = payload.slice(start..end);
        let segment = match direction {
            Direction::Request => {
                let segment = segment(
                    c.port,
                    direction,
                    c.client_seq,
                    c.server_seq,
                    flags,
                    piece,
                    ts,
                );
                c.client_seq = c.client_seq.wrapping_add((end - start) as u32);
                segment
            }
            Direction::Response => {
                let segment = segment(
                    c.port,
                    direction,
                    c.server_seq,
                    c.client_seq,
                    flags,
                    piece,
                    ts,
                );
                c.server_seq = c.server_seq.wrapping_add((end - start) as u32);
                segment
            }
        };
        out.push(segment);
    }
}

/// Feeds `segments` into a fresh tracker per iteration; only the feeding is timed.
fn run(iters: u64, setup: &[Segment], segments: &[Segment]) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut tracker = HttpTracker::new(TrackerConfig::default());
        for segment in setup {
            tracker.on_segment(segment);
        }
        let start = Instant::now();
        let mut events = 0usize;
        for segment in segments {
            tracker.on_segment(segment);
            while let Some(event) = tracker.poll_event() {
                black_box(&event);
                events += 1;
            }
        }
        total += start.elapsed();
        black_box(events);
        assert_eq!(tracker.stats().http.request_parse_errors, 0);
    }
    total
}

fn small_get(c: &mut Criterion) {
    let mut group = c.benchmark_group("small_get");
    let rounds = 1_000;
    let get = Bytes::from_static(SMALL_GET);
    let ok = Bytes::from_static(SMALL_OK);

    let (setup, segments) = workload(rounds, |c, out, ts| {
        send(c, out, Direction::Request, &get, *ts);
    });
    group.throughput(Throughput::Elements(segments.len() as u64));
    group.bench_function("requests", |b| {
        b.iter_custom(|iters| run(iters, &setup, &segments));
    });

    let (setup, segments) = workload(rounds, |c, out, ts| {
        send(c, out, Direction::Request, &get, *ts);
        *ts += 500;
        send(c, out, Direction::Response, &ok, *ts);
    });
    group.throughput(Throughput::Elements(
        (rounds * usize::from(CONNECTIONS)) as u64,
    ));
    group.bench_function("exchanges", |b| {
        b.iter_custom(|iters| run(iters, &setup, &segments));
    });
    group.finish();
}

fn body_64k(c: &mut Criterion) {
    let mut group = c.benchmark_group("body_64k");
    let rounds = 10;
    let body = vec![b'x'; 65_536];
    let post = Bytes::from(
        [
            b"POST /upload HTTP/1.1\r\nHost: shop.example.test\r\nContent-Length: 65536\r\n\r\n"
                .as_slice(),
            &body,
        ]
        .concat(),
    );
    let response = Bytes::from(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n".as_slice(),
            &body,
        ]
        .concat(),
    );
    let small = Bytes::from_static(SMALL_GET);

    let (setup, segments) = workload(rounds, |c, out, ts| {
        send(c, out, Direction::Request, &post, *ts);
    });
    let bytes: usize = segments.iter().map(|segment| segment.payload.len()).sum();
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("requests", |b| {
        b.iter_custom(|iters| run(iters, &setup, &segments));
    });

    let (setup, segments) = workload(rounds, |c, out, ts| {
        send(c, out, Direction::Request, &small, *ts);
        send(c, out, Direction::Response, &response, *ts + 500);
    });
    let bytes: usize = segments
        .iter()
        .filter(|segment| segment.direction == Direction::Response)
        .map(|segment| segment.payload.len())
        .sum();
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("responses", |b| {
        b.iter_custom(|iters| run(iters, &setup, &segments));
    });
    group.finish();
}

/// A new connection per exchange: SYN, SYN-ACK, request (ACK), response with FIN, the client's
/// FIN. Pure ACKs are left out, as the classifier does not record them.
fn short_connections(c: &mut Criterion) {
    const PORTS: u16 = 20_000;
    let mut group = c.benchmark_group("short_connections");
    let get = Bytes::from_static(SHORT_GET);
    let ok = Bytes::from_static(SMALL_OK);
    let mut segments = Vec::new();
    let mut ts = 1_000_000;
    for port in 0..PORTS {
        ts += 1_000;
        let mut c = Connection::new(port);
        c.handshake(&mut segments, ts);
        send(&mut c, &mut segments, Direction::Request, &get, ts);
        segments.push(segment(
            port,
            Direction::Response,
            c.server_seq,
            c.client_seq,
            TcpFlags(TcpFlags::ACK.0 | TcpFlags::PSH.0 | TcpFlags::FIN.0),
            ok.clone(),
            ts + 500,
        ));
        c.server_seq += ok.len() as u32 + 1;
        segments.push(segment(
            port,
            Direction::Request,
            c.client_seq,
            c.server_seq,
            TcpFlags(TcpFlags::ACK.0 | TcpFlags::FIN.0),
            Bytes::new(),
            ts + 600,
        ));
    }
    group.throughput(Throughput::Elements(u64::from(PORTS)));
    group.bench_function("exchanges", |b| {
        b.iter_custom(|iters| run(iters, &[], &segments));
    });
    group.finish();
}

criterion_group!(benches, small_get, body_64k, short_connections);
criterion_main!(benches);
