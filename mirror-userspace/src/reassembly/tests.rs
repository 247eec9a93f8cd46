//! Connection-level rules of the reassembler, driven through a recording handler.

use bytes::Bytes;

use super::*;

#[derive(Default)]
struct Log {
    lines: Vec<String>,
    /// Bytes each handler pretends to hold, to exercise the memory cap.
    hold: usize,
}

struct Recorder {
    hold: usize,
    wants: bool,
}

impl ConnectionHandler for Recorder {
    type Context = Log;

    fn open(cx: &mut Log, flow: &FlowKey, _: u64) -> Self {
        cx.lines.push(format!("open {}", flow.client.port()));
        Self {
            hold: 0,
            wants: true,
        }
    }

    fn on_stream(
        &mut self,
        cx: &mut Log,
        flow: &FlowKey,
        direction: Direction,
        event: StreamEvent,
    ) {
        let port = flow.client.port();
        let dir = match direction {
            Direction::Request => "req",
            Direction::Response => "resp",
        };
        let line = match event {
            StreamEvent::JoinedMidStream => format!("{port} {dir} mid"),
            StreamEvent::Data(data) => {
                self.hold = cx.hold;
                if data.payload.as_ref() == b"SKIP" {
                    self.wants = false;
                }
                format!(
                    "{port} {dir} data {}",
                    String::from_utf8_lossy(&data.payload)
                )
            }
            StreamEvent::Gap { len, .. } => format!("{port} {dir} gap {len}"),
            StreamEvent::Fin { .. } => format!("{port} {dir} fin"),
            StreamEvent::Retransmitted(data) => format!(
                "{port} {dir} again {}",
                String::from_utf8_lossy(&data.payload)
            ),
        };
        cx.lines.push(line);
    }

    fn on_close(self, cx: &mut Log, flow: &FlowKey, reason: CloseReason) {
        cx.lines
            .push(format!("close {} {reason:?}", flow.client.port()));
    }

    fn buffered_bytes(&self) -> usize {
        self.hold
    }

    fn wants_payload(&self) -> bool {
        self.wants
    }
}

fn flow(port: u16) -> FlowKey {
    FlowKey {
        client: ([198, 18, 0, 1], port).into(),
        server: ([198, 18, 0, 2], 80).into(),
    }
}

fn segment(
    port: u16,
    direction: Direction,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    payload: &[u8],
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
        payload: Bytes::copy_from_slice(payload),
    }
}

const SYN: TcpFlags = TcpFlags::SYN;
const SYN_ACK: TcpFlags = TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0);
const ACK: TcpFlags = TcpFlags::ACK;
const FIN_ACK: TcpFlags = TcpFlags(TcpFlags::FIN.0 | TcpFlags::ACK.0);
const RST: TcpFlags = TcpFlags::RST;

use Direction::{Request as Req, Response as Resp};

fn handshake(r: &mut Reassembler<Recorder>, log: &mut Log, port: u16) {
    r.on_segment(&segment(port, Req, 1000, 0, SYN, b"", 0), log);
    r.on_segment(&segment(port, Resp, 5000, 1001, SYN_ACK, b"", 0), log);
    r.on_segment(&segment(port, Req, 1001, 5001, ACK, b"", 0), log);
}

#[test]
fn both_directions_share_one_connection_and_close_on_fins() {
    let mut r = Reassembler::<Recorder>::new(ReassemblyConfig::default());
    let mut log = Log::default();
    handshake(&mut r, &mut log, 1);
    r.on_segment(&segment(1, Req, 1001, 5001, ACK, b"ping", 1), &mut log);
    r.on_segment(&segment(1, Resp, 5001, 1005, ACK, b"pong", 2), &mut log);
    assert_eq!(r.active_connections(), 1);
    r.on_segment(&segment(1, Req, 1005, 5005, FIN_ACK, b"", 3), &mut log);
    r.on_segment(&segment(1, Resp, 5005, 1006, FIN_ACK, b"", 4), &mut log);
    assert_eq!(
        log.lines,
        [
            "open 1",
            "1 req data ping",
            "1 resp data pong",
            "1 req fin",
            "1 resp fin",
            "close 1 Finished"
        ]
    );
    assert_eq!(r.active_connections(), 0);
    assert_eq!(r.stats().connections_finished, 1);
    // The last ACK of the teardown does not resurrect the connection.
    r.on_segment(&segment(1, Req, 1006, 5006, ACK, b"", 5), &mut log);
    assert_eq!(r.active_connections(), 0);
    assert_eq!(r.stats().segments_ignored, 1);
}

#[test]
fn missed_syn_ack_is_recovered_from_the_clients_ack() {
    let mut r = Reassembler::<Recorder>::new(ReassemblyConfig::default());
    let mut log = Log::default();
    r.on_segment(&segment(1, Req, 1000, 0, SYN, b"", 0), &mut log);
    r.on_segment(&segment(1, Req, 1001, 5001, ACK, b"GET", 0), &mut log);
    // Response bytes arrive out of order; the first one is at 5001 (named by the client's ACK).
    r.on_segment(&segment(1, Resp, 5003, 1004, ACK, b"TP", 0), &mut log);
    r.on_segment(&segment(1, Resp, 5001, 1004, ACK, b"HT", 0), &mut log);
    assert_eq!(
        log.lines,
        [
            "open 1",
            "1 req data GET",
            "1 resp data HT",
            "1 resp data TP"
        ]
    );
}

#[test]
fn connection_without_handshake_joins_mid_stream() {
    let mut r = Reassembler::<Recorder>::new(ReassemblyConfig::default());
    let mut log = Log::default();
    r.on_segment(&segment(1, Resp, 9000, 77, ACK, b"tail", 0), &mut log);
    r.on_segment(&segment(1, Req, 77, 9004, ACK, b"GET", 0), &mut log);
    assert_eq!(
        log.lines,
        [
            "open 1",
            "1 resp mid",
            "1 resp data tail",
            "1 req mid",
            "1 req data GET"
        ]
    );
    assert_eq!(r.stats().streams_joined_mid_stream, 2);
}

#[test]
fn reset_closes_immediately() {
    let mut r = Reassembler::<Recorder>::new(ReassemblyConfig::default());
    let mut log = Log::default();
    handshake(&mut r, &mut log, 1);
    r.on_segment(&segment(1, Resp, 5001, 1001, RST, b"", 1), &mut log);
    assert_eq!(log.lines.last().unwrap(), "close 1 Reset");
    assert_eq!(r.active_connections(), 0);
    assert_eq!(r.stats().connections_reset, 1);
}

#[test]
fn new_syn_on_a_tracked_tuple_replaces_the_connection() {
    let mut r = Reassembler::<Recorder>::new(ReassemblyConfig::default());
    let mut log = Log::default();
    handshake(&mut r, &mut log, 1);
    r.on_segment(&segment(1, Req, 1000, 0, SYN, b"", 1), &mut log);
    assert_eq!(r.stats().connections_reused, 0, "retransmitted SYN");
    r.on_segment(&segment(1, Req, 70_000, 0, SYN, b"", 2), &mut log);
    assert_eq!(r.stats().connections_reused, 1);
    assert_eq!(r.active_connections(), 1);
    r.on_segment(&segment(1, Req, 70_001, 0, ACK, b"new", 3), &mut log);
    assert_eq!(log.lines.last().unwrap(), "1 req data new");
}

#[test]
fn idle_connections_expire_on_tick() {
    let config = ReassemblyConfig {
        idle_timeout_secs: 10,
        ..ReassemblyConfig::default()
    };
    let mut r = Reassembler::<Recorder>::new(config);
    let mut log = Log::default();
    r.on_segment(&segment(1, Req, 1, 0, ACK, b"a", 1_000_000_000), &mut log);
    r.on_segment(&segment(2, Req, 1, 0, ACK, b"b", 5_000_000_000), &mut log);
    r.on_tick(11_000_000_000, &mut log);
    assert_eq!(r.active_connections(), 1);
    assert_eq!(r.stats().evicted(EvictionReason::Idle), 1);
    assert!(log.lines.contains(&"close 1 Evicted(Idle)".to_string()));
    r.on_tick(15_000_000_000, &mut log);
    assert_eq!(r.active_connections(), 0);
}

#[test]
fn max_connections_evicts_least_recently_used() {
    let config = ReassemblyConfig {
        max_connections: 2,
        ..ReassemblyConfig::default()
    };
    let mut r = Reassembler::<Recorder>::new(config);
    let mut log = Log::default();
    r.on_segment(&segment(1, Req, 1, 0, ACK, b"a", 0), &mut log);
    r.on_segment(&segment(2, Req, 1, 0, ACK, b"a", 0), &mut log);
    // Touching 1 makes 2 the least recently used.
    r.on_segment(&segment(1, Req, 2, 0, ACK, b"b", 0), &mut log);
    r.on_segment(&segment(3, Req, 1, 0, ACK, b"a", 0), &mut log);
    assert_eq!(r.active_connections(), 2);
    assert!(
        log.lines
            .contains(&"close 2 Evicted(MaxConnections)".to_string())
    );
    assert_eq!(r.stats().evicted(EvictionReason::MaxConnections), 1);
}

#[test]
fn memory_cap_counts_out_of_order_and_handler_bytes() {
    let config = ReassemblyConfig {
        reassembly_memory_bytes: 100,
        ..ReassemblyConfig::default()
    };
    let mut r = Reassembler::<Recorder>::new(config);
    let mut log = Log::default();
    // Connection 1 holds 60 out-of-order bytes behind a hole.
    r.on_segment(&segment(1, Req, 1, 0, ACK, b"x", 0), &mut log);
    r.on_segment(&segment(1, Req, 10, 0, ACK, &[b'y'; 60], 0), &mut log);
    assert_eq!(r.buffered_bytes(), 60);
    // Connection 2's handler claims 50 bytes: 110 > 100 evicts connection 1 (least recent).
    log.hold = 50;
    r.on_segment(&segment(2, Req, 1, 0, ACK, b"z", 0), &mut log);
    assert_eq!(r.buffered_bytes(), 50);
    assert_eq!(r.active_connections(), 1);
    assert_eq!(r.stats().evicted(EvictionReason::Memory), 1);
    assert!(log.lines.contains(&"close 1 Evicted(Memory)".to_string()));
}

#[test]
fn stale_holes_become_gaps_on_tick() {
    let mut r = Reassembler::<Recorder>::new(ReassemblyConfig::default());
    let mut log = Log::default();
    handshake(&mut r, &mut log, 1);
    r.on_segment(&segment(1, Req, 1011, 5001, ACK, b"after", 1_000), &mut log);
    r.on_tick(100_000_000, &mut log);
    assert!(!log.lines.iter().any(|line| line.contains("gap")));
    r.on_tick(600_000_000, &mut log);
    assert_eq!(&log.lines[1..], ["1 req gap 10", "1 req data after"]);
    assert_eq!(r.stats().gaps, 1);
    assert_eq!(r.buffered_bytes(), 0);
}

#[test]
fn holes_after_a_capture_pause_are_gaps_at_once() {
    let mut r = Reassembler::<Recorder>::new(ReassemblyConfig::default());
    let mut log = Log::default();
    handshake(&mut r, &mut log, 1);
    r.on_segment(&segment(1, Req, 1001, 5001, ACK, b"before", 10), &mut log);
    // Another server port's pause does not concern this connection: its hole waits.
    r.expect_gaps(81);
    r.on_segment(&segment(1, Req, 1017, 5001, ACK, b"after", 20), &mut log);
    assert_eq!(&log.lines[1..], ["1 req data before"]);
    r.expect_gaps(80);
    // The response direction goes on in order (nothing was sent during the pause), which uses
    // up that direction's expectation; the request direction's next segment ends the hole.
    r.on_segment(&segment(1, Resp, 5001, 1007, ACK, b"ok", 30), &mut log);
    r.on_segment(&segment(1, Req, 1022, 5003, ACK, b"next", 40), &mut log);
    assert_eq!(
        &log.lines[1..],
        [
            "1 req data before",
            "1 resp data ok",
            "1 req gap 10",
            "1 req data after",
            "1 req data next"
        ]
    );
    // A later hole waits for a retransmission as usual.
    r.on_segment(&segment(1, Resp, 5013, 1026, ACK, b"late", 50), &mut log);
    assert_eq!(
        log.lines.last().map(String::as_str),
        Some("1 req data next")
    );
    assert_eq!(r.stats().gaps, 1);
}

#[test]
fn skipped_connections_drop_payload_but_still_close() {
    let mut r = Reassembler::<Recorder>::new(ReassemblyConfig::default());
    let mut log = Log::default();
    handshake(&mut r, &mut log, 1);
    r.on_segment(&segment(1, Req, 1001, 5001, ACK, b"SKIP", 0), &mut log);
    r.on_segment(&segment(1, Req, 1010, 5001, ACK, b"ignored", 0), &mut log);
    assert_eq!(r.buffered_bytes(), 0);
    r.on_segment(&segment(1, Req, 1017, 5001, FIN_ACK, b"", 0), &mut log);
    r.on_segment(&segment(1, Resp, 5001, 1018, FIN_ACK, b"", 0), &mut log);
    assert_eq!(r.active_connections(), 0);
    assert_eq!(log.lines.last().unwrap(), "close 1 Finished");
}
