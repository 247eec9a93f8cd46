//! Rules of the HTTP layer, driven through [`HttpTracker`] with hand-built segments. Cases follow
//! RFC 9112 (message framing), RFC 9110 (semantics) and RFC 9293 (TCP).

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_128;

use super::*;
use crate::reassembly::EvictionReason;
use crate::segment::{Direction, FlowKey, TcpFlags};

pub(super) const SYN: TcpFlags = TcpFlags::SYN;
pub(super) const SYN_ACK: TcpFlags = TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0);
pub(super) const ACK: TcpFlags = TcpFlags(TcpFlags::ACK.0 | TcpFlags::PSH.0);
pub(super) const FIN: TcpFlags = TcpFlags(TcpFlags::FIN.0 | TcpFlags::ACK.0);
pub(super) const RST: TcpFlags = TcpFlags::RST;

pub(super) fn flow(port: u16) -> FlowKey {
    FlowKey {
        client: ([198, 18, 0, 1], port).into(),
        server: ([198, 18, 0, 2], 8080).into(),
    }
}

/// One TCP connection on the wire, with both sides' next sequence numbers.
pub(super) struct Wire {
    pub port: u16,
    pub client_seq: u32,
    pub server_seq: u32,
    pub now: u64,
}

impl Wire {
    pub fn new(port: u16, client_isn: u32, server_isn: u32) -> Self {
        Self {
            port,
            client_seq: client_isn,
            server_seq: server_isn,
            now: 1_000_000,
        }
    }

    pub fn segment(
        &self,
        direction: Direction,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        payload: &[u8],
    ) -> Segment {
        Segment {
            flow: flow(self.port),
            direction,
            seq,
            ack,
            flags,
            timestamp_ns: self.now,
            ifindex: 1,
            segment_len: payload.len() as u32,
            chunk_offset: 0,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    /// SYN, SYN-ACK, ACK.
    pub fn handshake(&mut self, tracker: &mut HttpTracker) {
        let syn = self.segment(Direction::Request, self.client_seq, 0, SYN, b"");
        self.client_seq = self.client_seq.wrapping_add(1);
        let syn_ack = self.segment(
            Direction::Response,
            self.server_seq,
            self.client_seq,
            SYN_ACK,
            b"",
        );
        self.server_seq = self.server_seq.wrapping_add(1);
        tracker.on_segment(&syn);
        tracker.on_segment(&syn_ack);
        self.flags(tracker, Direction::Request, ACK, b"");
    }

    pub fn flags(
        &mut self,
        tracker: &mut HttpTracker,
        direction: Direction,
        flags: TcpFlags,
        payload: &[u8],
    ) {
        self.now += 1_000;
        let segment = match direction {
            Direction::Request => {
                self.segment(direction, self.client_seq, self.server_seq, flags, payload)
            }
            Direction::Response => {
                self.segment(direction, self.server_seq, self.client_seq, flags, payload)
            }
        };
        let advance = payload.len() as u32 + u32::from(flags.fin());
        match direction {
            Direction::Request => self.client_seq = self.client_seq.wrapping_add(advance),
            Direction::Response => self.server_seq = self.server_seq.wrapping_add(advance),
        }
        tracker.on_segment(&segment);
    }

    pub fn client(&mut self, tracker: &mut HttpTracker, payload: &[u8]) {
        self.flags(tracker, Direction::Request, ACK, payload);
    }

    pub fn server(&mut self, tracker: &mut HttpTracker, payload: &[u8]) {
        self.flags(tracker, Direction::Response, ACK, payload);
    }

    /// Advances the client's sequence number without sending (a segment lost by the capture).
    pub fn client_lost(&mut self, len: usize) {
        self.client_seq = self.client_seq.wrapping_add(len as u32);
    }

    pub fn server_lost(&mut self, len: usize) {
        self.server_seq = self.server_seq.wrapping_add(len as u32);
    }
}

pub(super) fn drain(tracker: &mut HttpTracker) -> Vec<HttpEvent> {
    std::iter::from_fn(|| tracker.poll_event()).collect()
}

fn requests(events: &[HttpEvent]) -> Vec<&RequestEvent> {
    events
        .iter()
        .filter_map(|event| match event {
            HttpEvent::Request(request) => Some(request),
            _ => None,
        })
        .collect()
}

fn responses(events: &[HttpEvent]) -> Vec<&ResponseEvent> {
    events
        .iter()
        .filter_map(|event| match event {
            HttpEvent::Response(response) => Some(response),
            _ => None,
        })
        .collect()
}

fn losses(events: &[HttpEvent]) -> Vec<&LossEvent> {
    events
        .iter()
        .filter_map(|event| match event {
            HttpEvent::Lost(loss) => Some(loss),
            _ => None,
        })
        .collect()
}

fn tracker() -> HttpTracker {
    HttpTracker::new(TrackerConfig::default())
}

fn open(port: u16) -> (HttpTracker, Wire) {
    let mut tracker = tracker();
    let mut wire = Wire::new(port, 1_000, 50_000);
    wire.handshake(&mut tracker);
    (tracker, wire)
}

const GET: &[u8] = b"GET /items?id=7 HTTP/1.1\r\nHost: shop.test\r\nAccept: */*\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn get_request_and_response_are_framed_and_paired() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, GET);
    let request_done = wire.now;
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let [HttpEvent::Request(request), HttpEvent::Response(response)] = events.as_slice() else {
        panic!("unexpected events {events:#?}");
    };
    assert_eq!(request.request.bytes().as_ref(), GET);
    assert_eq!(request.request.method(), "GET");
    assert_eq!(request.request.target(), "/items?id=7");
    assert_eq!(request.request.version_minor(), 1);
    assert_eq!(request.request.host(), Some(&b"shop.test"[..]));
    let names: Vec<&[u8]> = request.request.headers().map(|(name, _)| name).collect();
    assert_eq!(names, [&b"Host"[..], b"Accept"]);
    let span = request.request.header_spans()[1];
    assert_eq!(
        &GET[span.value_start as usize..][..span.value_len as usize],
        b"*/*"
    );
    assert_eq!(request.index, 0);
    assert_eq!(request.skip, None);
    assert_eq!(request.last_byte_ns, request_done);

    assert_eq!(response.request_index, Some(0));
    assert_eq!(response.head.status(), 200);
    assert_eq!(response.body_len, 5);
    assert_eq!(response.body_digest, xxh3_128(b"hello"));
    assert_eq!(response.latency_ns, Some(1_000));
    let summary = response.request.as_ref().unwrap();
    assert_eq!(&summary.method[..], b"GET");
    assert_eq!(&summary.target[..], b"/items?id=7");
    assert_eq!(summary.host.as_deref(), Some(&b"shop.test"[..]));
    let stats = t.stats().http;
    assert_eq!((stats.requests_total, stats.responses_paired), (1, 1));
}

#[test]
fn request_in_one_segment_is_not_copied() {
    let (mut t, wire) = open(1);
    let segment = wire.segment(
        Direction::Request,
        wire.client_seq,
        wire.server_seq,
        ACK,
        GET,
    );
    t.on_segment(&segment);
    let events = drain(&mut t);
    let request = requests(&events)[0];
    assert_eq!(request.request.bytes().as_ptr(), segment.payload.as_ptr());
}

#[test]
fn request_split_at_every_byte_is_identical() {
    let post = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody";
    for split in 1..post.len() {
        let (mut t, mut wire) = open(1);
        wire.client(&mut t, &post[..split]);
        wire.client(&mut t, &post[split..]);
        let events = drain(&mut t);
        let framed = requests(&events);
        assert_eq!(framed.len(), 1, "split at {split}");
        assert_eq!(framed[0].request.bytes().as_ref(), post, "split at {split}");
        assert_eq!(framed[0].request.body_bytes(), b"body");
        assert_eq!(t.buffered_bytes(), 0);
    }
}

#[test]
fn pipelined_requests_and_responses_pair_in_order() {
    let (mut t, mut wire) = open(1);
    let pipeline = [
        GET,
        b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n",
        b"DELETE /d HTTP/1.1\r\nHost: a\r\n\r\n",
    ]
    .concat();
    wire.client(&mut t, &pipeline);
    // The HEAD response announces a length but has no body (RFC 9110 §9.3.2).
    let answers = [
        OK,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]
    .concat();
    wire.server(&mut t, &answers);
    let events = drain(&mut t);
    let framed = requests(&events);
    let indices: Vec<u64> = framed.iter().map(|request| request.index).collect();
    assert_eq!(indices, [0, 1, 2]);
    assert_eq!(framed[1].request.method(), "HEAD");
    let answered = responses(&events);
    let pairs: Vec<(Option<u64>, u16)> = answered
        .iter()
        .map(|response| (response.request_index, response.head.status()))
        .collect();
    assert_eq!(pairs, [(Some(0), 200), (Some(1), 200), (Some(2), 204)]);
    assert_eq!(answered[1].body_len, 0);
}

#[test]
fn chunked_request_with_extensions_and_trailers_keeps_wire_bytes() {
    let (mut t, mut wire) = open(1);
    let chunked = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n";
    let stream = [chunked.as_slice(), GET].concat();
    for piece in stream.chunks(7) {
        wire.client(&mut t, piece);
    }
    let events = drain(&mut t);
    let framed = requests(&events);
    assert_eq!(framed.len(), 2);
    assert_eq!(framed[0].request.bytes().as_ref(), chunked);
    assert_eq!(framed[0].request.body_framing(), BodyFraming::Chunked);
    assert_eq!(framed[1].request.bytes().as_ref(), GET);
}

#[test]
fn chunked_response_digest_covers_decoded_body() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, GET);
    wire.server(
        &mut t,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n",
    );
    wire.server(&mut t, b"2\r\nlo\r\n0\r\n\r\n");
    let events = drain(&mut t);
    let response = responses(&events)[0];
    assert_eq!(response.body_len, 5);
    assert_eq!(response.body_digest, xxh3_128(b"hello"));
}

#[test]
fn empty_lines_before_a_request_are_ignored_rfc9112_2_2() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, b"\r\n\r\n");
    wire.client(&mut t, GET);
    let events = drain(&mut t);
    assert_eq!(requests(&events)[0].request.bytes().as_ref(), GET);
    assert_eq!(t.stats().http.request_parse_errors, 0);
}

#[test]
fn expect_100_continue_skips_the_interim_response() {
    let (mut t, mut wire) = open(1);
    wire.client(
        &mut t,
        b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    );
    wire.server(&mut t, b"HTTP/1.1 100 Continue\r\n\r\n");
    wire.client(&mut t, b"abc");
    let body_sent = wire.now;
    wire.server(&mut t, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    let events = drain(&mut t);
    let framed = requests(&events);
    assert_eq!(framed.len(), 1);
    assert!(framed[0].request.expects_continue());
    assert!(framed[0].request.bytes().ends_with(b"\r\n\r\nabc"));
    let answered = responses(&events);
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].head.status(), 201);
    assert_eq!(answered[0].interim_responses, 1);
    assert_eq!(answered[0].latency_ns, Some(wire.now - body_sent));
    assert_eq!(t.stats().http.responses_interim, 1);
}

#[test]
fn early_final_response_pairs_with_the_unfinished_request() {
    let (mut t, mut wire) = open(1);
    wire.client(
        &mut t,
        b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    );
    wire.server(
        &mut t,
        b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n",
    );
    wire.flags(&mut t, Direction::Request, FIN, b"");
    let events = drain(&mut t);
    let answered = responses(&events);
    assert_eq!(answered[0].request_index, Some(0));
    assert_eq!(answered[0].request, None, "the request never completed");
    let lost = losses(&events);
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].reason, LossReason::Truncated);
    assert_eq!(lost[0].request_index, Some(0));
    assert_eq!(t.stats().http.requests_lost.truncated, 1);
}

#[test]
fn upgrade_ends_mirroring_of_the_connection() {
    let (mut t, mut wire) = open(1);
    wire.client(
        &mut t,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    wire.server(
        &mut t,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    wire.client(&mut t, GET);
    let events = drain(&mut t);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(requests(&events)[0].skip, Some(SkipReason::Upgrade));
    assert!(matches!(
        events[1],
        HttpEvent::ConnectionSkipped {
            reason: SkipReason::Upgrade,
            ..
        }
    ));
    let stats = t.stats().http;
    assert_eq!(stats.requests_skipped(SkipReason::Upgrade), 1);
    assert_eq!(stats.connections_skipped(SkipReason::Upgrade), 1);
    assert_eq!(t.buffered_bytes(), 0);
}

#[test]
fn switching_protocols_without_upgrade_request_still_ends_mirroring() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, GET);
    wire.server(&mut t, b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    wire.client(&mut t, GET);
    let events = drain(&mut t);
    assert_eq!(requests(&events).len(), 1);
    assert_eq!(responses(&events)[0].head.status(), 101);
    assert!(matches!(
        events.last(),
        Some(HttpEvent::ConnectionSkipped {
            reason: SkipReason::Upgrade,
            ..
        })
    ));
}

#[test]
fn connect_ends_mirroring_of_the_connection() {
    let (mut t, mut wire) = open(1);
    wire.client(
        &mut t,
        b"CONNECT db.test:5432 HTTP/1.1\r\nHost: db.test:5432\r\nContent-Length: 9\r\n\r\n",
    );
    wire.client(&mut t, b"tunnelled bytes");
    let events = drain(&mut t);
    assert_eq!(events.len(), 2);
    let framed = requests(&events);
    assert_eq!(framed[0].skip, Some(SkipReason::Connect));
    assert_eq!(framed[0].request.target(), "db.test:5432");
    assert_eq!(t.stats().http.connections_skipped(SkipReason::Connect), 1);
}

#[test]
fn http2_prior_knowledge_and_tls_are_detected_and_skipped() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, b"PRI * HTTP/2.0\r\n");
    wire.client(&mut t, b"\r\nSM\r\n\r\n");
    let events = drain(&mut t);
    assert!(matches!(
        events.as_slice(),
        [HttpEvent::ConnectionSkipped {
            reason: SkipReason::Http2,
            ..
        }]
    ));

    let (mut t, mut wire) = open(2);
    wire.client(
        &mut t,
        &[
            0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00, 0x00, 0xf0, 0x03, 0x03,
        ],
    );
    wire.server(&mut t, &[0x16, 0x03, 0x03, 0x00, 0x7a]);
    let events = drain(&mut t);
    assert!(matches!(
        events.as_slice(),
        [HttpEvent::ConnectionSkipped {
            reason: SkipReason::Tls,
            ..
        }]
    ));
    assert_eq!(t.stats().http.connections_skipped(SkipReason::Tls), 1);
    assert_eq!(t.stats().http.request_parse_errors, 0);
}

#[test]
fn too_many_headers_is_counted_and_the_stream_resynchronises() {
    let config = TrackerConfig {
        http: HttpConfig {
            max_headers: 4,
            ..HttpConfig::default()
        },
        ..TrackerConfig::default()
    };
    let mut t = HttpTracker::new(config);
    let mut wire = Wire::new(1, 1, 1);
    wire.handshake(&mut t);
    let many: String = (0..5).map(|i| format!("X-{i}: v\r\n")).collect();
    wire.client(
        &mut t,
        format!("GET /big HTTP/1.1\r\n{many}\r\n").as_bytes(),
    );
    wire.client(&mut t, GET);
    let events = drain(&mut t);
    assert_eq!(losses(&events)[0].reason, LossReason::Malformed);
    let framed = requests(&events);
    assert_eq!(framed.len(), 1);
    assert_eq!(framed[0].request.bytes().as_ref(), GET);
    assert_eq!(t.stats().http.request_parse_errors, 1);
}

#[test]
fn garbage_is_counted_and_skipped_to_the_next_request_line() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, b"\x00\x01garbage that is not http\r\nmore junk\r\n");
    wire.client(&mut t, GET);
    let events = drain(&mut t);
    let framed = requests(&events);
    assert_eq!(framed.len(), 1);
    assert_eq!(framed[0].request.bytes().as_ref(), GET);
    assert_eq!(t.stats().http.request_parse_errors, 1);
}

#[test]
fn oversized_request_is_emitted_head_only_and_the_stream_stays_in_sync() {
    let config = TrackerConfig {
        http: HttpConfig {
            max_message_bytes: 100,
            ..HttpConfig::default()
        },
        ..TrackerConfig::default()
    };
    let mut t = HttpTracker::new(config);
    let mut wire = Wire::new(1, 1, 1);
    wire.handshake(&mut t);
    let head = b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 300\r\n\r\n";
    wire.client(&mut t, head);
    for _ in 0..3 {
        wire.client(&mut t, &[b'x'; 100]);
        assert_eq!(t.buffered_bytes(), 0, "a too-large body is never buffered");
    }
    // Chunked bodies only reveal their size as they go.
    let chunked_head = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    wire.client(&mut t, chunked_head);
    wire.client(
        &mut t,
        format!("c8\r\n{}\r\n0\r\n\r\n", "y".repeat(200)).as_bytes(),
    );
    wire.client(&mut t, GET);
    let events = drain(&mut t);
    let framed = requests(&events);
    assert_eq!(framed.len(), 3);
    assert_eq!(framed[0].skip, Some(SkipReason::TooLarge));
    assert_eq!(framed[0].request.bytes().as_ref(), head);
    assert_eq!(framed[1].skip, Some(SkipReason::TooLarge));
    assert_eq!(framed[1].request.bytes().as_ref(), chunked_head);
    assert_eq!(framed[2].skip, None);
    assert_eq!(framed[2].request.bytes().as_ref(), GET);
    assert_eq!(t.stats().http.requests_skipped(SkipReason::TooLarge), 2);
}

#[test]
fn responses_without_body_rfc9112_6_3() {
    let (mut t, mut wire) = open(1);
    for _ in 0..3 {
        wire.client(&mut t, GET);
    }
    // 304 and 204 carry no body even when they announce a length; the next response follows.
    wire.server(
        &mut t,
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    );
    wire.server(&mut t, b"HTTP/1.1 204 No Content\r\n\r\n");
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let statuses: Vec<(u16, u64)> = responses(&events)
        .iter()
        .map(|response| (response.head.status(), response.body_len))
        .collect();
    assert_eq!(statuses, [(304, 0), (204, 0), (200, 5)]);
}

#[test]
fn close_delimited_response_ends_at_fin() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, b"GET / HTTP/1.0\r\n\r\n");
    wire.server(&mut t, b"HTTP/1.0 200 OK\r\n\r\npart one ");
    wire.server(&mut t, b"part two");
    assert!(responses(&drain(&mut t)).is_empty());
    wire.flags(&mut t, Direction::Response, FIN, b"");
    let events = drain(&mut t);
    let answered = responses(&events);
    assert_eq!(answered[0].body_len, 17);
    assert_eq!(answered[0].body_digest, xxh3_128(b"part one part two"));
    assert!(losses(&events).is_empty());
}

#[test]
fn gap_inside_a_length_body_loses_only_that_request() {
    let (mut t, mut wire) = open(1);
    wire.client(
        &mut t,
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123",
    );
    wire.client_lost(3);
    wire.client(&mut t, b"789");
    wire.client(&mut t, GET);
    t.on_tick(wire.now + 1_000_000_000);
    wire.server(&mut t, OK);
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let lost = losses(&events);
    assert_eq!(lost.len(), 1);
    assert_eq!(
        (lost[0].reason, lost[0].request_index),
        (LossReason::Gap, Some(0))
    );
    let framed = requests(&events);
    assert_eq!(framed.len(), 1);
    assert_eq!(
        (framed[0].index, framed[0].request.bytes().as_ref()),
        (1, GET)
    );
    // Order pairing survives: the boundary was never in doubt.
    let pairs: Vec<Option<u64>> = responses(&events).iter().map(|r| r.request_index).collect();
    assert_eq!(pairs, [Some(0), Some(1)]);
    assert_eq!(t.stats().tcp.gaps, 1);
    assert_eq!(t.stats().http.requests_lost.gap, 1);
}

#[test]
fn gap_inside_a_response_body_loses_only_that_response() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, GET);
    wire.client(&mut t, GET);
    wire.server(&mut t, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01");
    wire.server_lost(5);
    wire.server(&mut t, b"789");
    wire.server(&mut t, OK);
    t.on_tick(wire.now + 1_000_000_000);
    let events = drain(&mut t);
    let lost = losses(&events);
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].direction, Direction::Response);
    assert_eq!(lost[0].request_index, Some(0));
    let pairs: Vec<Option<u64>> = responses(&events).iter().map(|r| r.request_index).collect();
    assert_eq!(pairs, [Some(1)]);
    assert_eq!(t.stats().http.responses_lost.gap, 1);
}

#[test]
fn gap_swallowing_whole_requests_resynchronises_and_pairs_by_ack() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, GET);
    wire.server(&mut t, OK);
    // The second request is lost by the capture; the server still answers it.
    wire.client_lost(GET.len());
    wire.server(&mut t, OK);
    wire.client(&mut t, b"GET /third HTTP/1.1\r\nHost: a\r\n\r\n");
    t.on_tick(wire.now + 1_000_000_000);
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let framed = requests(&events);
    let targets: Vec<&str> = framed.iter().map(|r| r.request.target()).collect();
    assert_eq!(targets, ["/items?id=7", "/third"]);
    let pairs: Vec<Option<u64>> = responses(&events).iter().map(|r| r.request_index).collect();
    // The answer to the lost request must not be attributed to anything.
    assert_eq!(pairs, [Some(0), None, Some(1)]);
    assert!(losses(&events).is_empty(), "no message was in progress");
}

#[test]
fn gap_in_a_head_abandons_it_and_resynchronises() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, b"GET /a HTTP/1.1\r\nHo");
    wire.client_lost(10);
    wire.client(&mut t, b"e\r\n\r\n");
    wire.client(&mut t, GET);
    t.on_tick(wire.now + 1_000_000_000);
    let events = drain(&mut t);
    assert_eq!(losses(&events)[0].reason, LossReason::Gap);
    let framed = requests(&events);
    assert_eq!(framed.len(), 1);
    assert_eq!(framed[0].request.bytes().as_ref(), GET);
}

#[test]
fn mid_stream_join_starts_at_the_next_request_line() {
    let mut t = tracker();
    let mut wire = Wire::new(1, 7_000, 90_000);
    // Tail of a body of a request the daemon never saw the start of, then a new request.
    wire.client(&mut t, b"rest of an earlier body\r\n");
    wire.server(&mut t, b"tail of an earlier response");
    wire.client(&mut t, GET);
    wire.server(&mut t, OK);
    wire.client(&mut t, b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let framed = requests(&events);
    assert_eq!(framed.len(), 2);
    assert_eq!(framed[0].request.bytes().as_ref(), GET);
    let pairs: Vec<Option<u64>> = responses(&events).iter().map(|r| r.request_index).collect();
    assert_eq!(pairs, [Some(0), Some(1)]);
    assert_eq!(t.stats().http.request_parse_errors, 0);
    assert_eq!(t.stats().tcp.streams_joined_mid_stream, 2);
}

#[test]
fn mid_stream_join_on_tls_is_skipped() {
    let mut t = tracker();
    let mut wire = Wire::new(1, 7_000, 90_000);
    wire.client(&mut t, &[0x17, 0x03, 0x03, 0x00, 0x20, 0xaa, 0xbb]);
    let events = drain(&mut t);
    assert!(matches!(
        events.as_slice(),
        [HttpEvent::ConnectionSkipped {
            reason: SkipReason::Tls,
            ..
        }]
    ));
}

#[test]
fn reset_loses_the_message_in_progress() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n01");
    wire.flags(&mut t, Direction::Request, RST, b"");
    let events = drain(&mut t);
    assert_eq!(losses(&events)[0].reason, LossReason::Reset);
    assert_eq!(t.active_connections(), 0);
    assert_eq!(t.buffered_bytes(), 0);
}

#[test]
fn idle_connection_with_partial_request_is_evicted_and_counted() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, b"GET /slow HTTP/1.1\r\nHost");
    assert!(t.buffered_bytes() > 0);
    t.on_tick(wire.now + 121_000_000_000);
    let events = drain(&mut t);
    assert_eq!(
        losses(&events)[0].reason,
        LossReason::Evicted(EvictionReason::Idle)
    );
    assert_eq!(t.stats().tcp.evicted(EvictionReason::Idle), 1);
    assert_eq!(t.buffered_bytes(), 0);
}

#[test]
fn malformed_response_is_counted_and_resynchronises() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, GET);
    wire.server(&mut t, b"HTTP/1.1 abc Broken\r\n\r\n");
    wire.client(&mut t, GET);
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    assert_eq!(t.stats().http.response_parse_errors, 1);
    let answered = responses(&events);
    assert_eq!(answered.len(), 1);
    assert_eq!(
        answered[0].request_index,
        Some(1),
        "paired by ack after the error"
    );
}

#[test]
fn out_of_order_and_retransmitted_segments_change_nothing() {
    let stream = [
        GET,
        b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        GET,
    ]
    .concat();
    let (mut reference, mut wire) = open(1);
    wire.client(&mut reference, &stream);
    let expected = drain(&mut reference);

    let (mut t, wire) = open(1);
    let pieces: Vec<(u32, &[u8])> = stream
        .chunks(9)
        .enumerate()
        .map(|(i, piece)| (wire.client_seq.wrapping_add(9 * i as u32), piece))
        .collect();
    let mut order: Vec<usize> = (0..pieces.len()).rev().collect();
    order.extend([0, 3, 5]);
    for i in order {
        let (seq, piece) = pieces[i];
        t.on_segment(&wire.segment(Direction::Request, seq, wire.server_seq, ACK, piece));
    }
    let events = drain(&mut t);
    let bytes = |events: &[HttpEvent]| -> Vec<Bytes> {
        requests(events)
            .iter()
            .map(|r| r.request.bytes().clone())
            .collect()
    };
    assert_eq!(bytes(&events), bytes(&expected));
    assert!(t.stats().tcp.duplicate_segments >= 3);
}

#[test]
fn sequence_wraparound_inside_a_request() {
    let mut t = tracker();
    let mut wire = Wire::new(1, u32::MAX - 20, u32::MAX - 3);
    wire.handshake(&mut t);
    wire.client(&mut t, &GET[..30]);
    wire.client(&mut t, &GET[30..]);
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    assert_eq!(requests(&events)[0].request.bytes().as_ref(), GET);
    assert_eq!(responses(&events)[0].request_index, Some(0));
}

#[test]
fn memory_cap_bounds_many_stalled_connections() {
    let config = TrackerConfig {
        reassembly: crate::reassembly::ReassemblyConfig {
            reassembly_memory_bytes: 10_000,
            ..Default::default()
        },
        ..TrackerConfig::default()
    };
    let mut t = HttpTracker::new(config);
    for port in 0..1_000u16 {
        let mut wire = Wire::new(port, 1, 1);
        wire.handshake(&mut t);
        wire.client(
            &mut t,
            b"GET /stalled HTTP/1.1\r\nHost: a\r\nX-Pad: 0123456789",
        );
        assert!(t.buffered_bytes() <= 10_000);
    }
    let stats = t.stats();
    // 49 bytes per connection: about 200 fit under the cap.
    assert!(stats.tcp.evicted(EvictionReason::Memory) > 750);
    assert_eq!(
        stats.http.requests_lost.evicted,
        stats.tcp.evicted(EvictionReason::Memory),
        "every evicted connection had a partial request"
    );
}

#[test]
fn every_started_request_is_accounted() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, GET);
    wire.client(&mut t, b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n01");
    wire.flags(&mut t, Direction::Request, RST, b"");
    let stats = t.stats().http;
    assert_eq!(stats.requests_started, 2);
    assert_eq!(
        stats.requests_total + stats.requests_lost.total(),
        stats.requests_started
    );
    assert_eq!(stats.requests_unanswered, 1);
}
