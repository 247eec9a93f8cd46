//! TCP and HTTP/1 edge cases, one test per case: each once produced a wrong pair, a phantom or
//! duplicate request, or a lost one.

use super::*;
use crate::http::UnpairedReason;

fn targets(events: &[HttpEvent]) -> Vec<&str> {
    requests(events)
        .iter()
        .map(|request| request.request.target())
        .collect()
}

#[test]
fn tcp_fast_open_data_on_the_syn_starts_after_it() {
    let mut t = tracker();
    let wire = Wire::new(1, 5_000, 9_000);
    // RFC 7413: the request rides on the SYN, whose own sequence number comes first.
    t.on_segment(&wire.segment(Direction::Request, 5_000, 0, SYN, GET));
    t.on_segment(&wire.segment(
        Direction::Response,
        9_000,
        5_001 + GET.len() as u32,
        SYN_ACK,
        b"",
    ));
    t.on_segment(&wire.segment(
        Direction::Response,
        9_001,
        5_001 + GET.len() as u32,
        ACK,
        OK,
    ));
    let events = drain(&mut t);
    assert_eq!(requests(&events)[0].request.bytes().as_ref(), GET);
    assert_eq!(responses(&events)[0].request_index, Some(0));
}

#[test]
fn fin_retransmitted_after_close_opens_no_phantom_connection() {
    let (mut t, mut wire) = open(1);
    let request_seq = wire.client_seq;
    wire.client(&mut t, GET);
    wire.server(&mut t, OK);
    wire.flags(&mut t, Direction::Request, FIN, b"");
    wire.flags(&mut t, Direction::Response, FIN, b"");
    assert_eq!(t.active_connections(), 0);
    // The client's last data segment again (its ACK was lost), then its FIN again.
    let again = wire.segment(Direction::Request, request_seq, wire.server_seq, ACK, GET);
    t.on_segment(&again);
    let fin_again = wire.segment(
        Direction::Request,
        wire.client_seq - 1,
        wire.server_seq,
        FIN,
        b"",
    );
    t.on_segment(&fin_again);
    let events = drain(&mut t);
    assert_eq!(requests(&events).len(), 1, "replayed once: {events:#?}");
    assert_eq!(t.active_connections(), 0);
    assert_eq!(t.stats().tcp.segments_after_close, 1);
}

#[test]
fn data_after_rst_opens_no_phantom_connection() {
    let (mut t, mut wire) = open(1);
    let request_seq = wire.client_seq;
    wire.client(&mut t, GET);
    wire.flags(&mut t, Direction::Response, RST, b"");
    // A retransmission of the request (in flight when the RST was captured).
    t.on_segment(&wire.segment(Direction::Request, request_seq, wire.server_seq, ACK, GET));
    let events = drain(&mut t);
    assert_eq!(requests(&events).len(), 1);
    assert_eq!(t.active_connections(), 0);
}

#[test]
fn four_tuple_reuse_is_a_new_connection_with_its_own_number() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, GET);
    wire.server(&mut t, OK);
    wire.flags(&mut t, Direction::Request, FIN, b"");
    wire.flags(&mut t, Direction::Response, FIN, b"");
    // Same client port moments later, new ISNs.
    let mut again = Wire::new(1, 700_000, 900_000);
    again.now = wire.now + 1_000;
    again.handshake(&mut t);
    again.client(&mut t, b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n");
    again.server(&mut t, OK);
    let events = drain(&mut t);
    let framed = requests(&events);
    assert_eq!(framed.len(), 2);
    assert_eq!((framed[0].index, framed[1].index), (0, 0));
    assert_ne!(framed[0].connection, framed[1].connection);
    let answered = responses(&events);
    assert_eq!(answered[1].connection, framed[1].connection);
    assert_eq!(answered[1].request_index, Some(0));
}

#[test]
fn ignored_h2c_upgrade_goes_on_as_http1() {
    let (mut t, mut wire) = open(1);
    // Java's HttpClient asks for h2c on its first request; most servers answer plain 200.
    wire.client(
        &mut t,
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    );
    // Sent before the answer: held until it is known.
    wire.client(&mut t, b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(targets(&drain(&mut t)), ["/a"]);
    wire.server(&mut t, OK);
    wire.server(&mut t, OK);
    wire.client(&mut t, b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n");
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    assert_eq!(targets(&events), ["/b", "/c"]);
    let pairs: Vec<_> = responses(&events)
        .iter()
        .map(|response| response.request_index)
        .collect();
    assert_eq!(pairs, [Some(0), Some(1), Some(2)]);
    assert_eq!(
        t.stats().http.connections_skipped.get(SkipReason::Upgrade),
        0
    );
    assert_eq!(t.stats().http.requests_skipped(SkipReason::Upgrade), 1);
}

#[test]
fn content_length_with_transfer_encoding_is_chunked_and_ends_request_framing() {
    let (mut t, mut wire) = open(1);
    wire.client(
        &mut t,
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    // RFC 9112 §6.1: the server closes after answering; whatever follows could be smuggled.
    wire.client(&mut t, b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let framed = requests(&events);
    assert_eq!(targets(&events), ["/a"]);
    assert_eq!(
        framed[0].request.body_bytes(),
        b"3\r\nabc\r\n0\r\n\r\n",
        "framed as chunked"
    );
    assert_eq!(responses(&events)[0].request_index, Some(0));
    assert_eq!(
        t.stats()
            .http
            .connections_skipped
            .get(SkipReason::AmbiguousLength),
        1
    );
}

#[test]
fn obs_folded_response_header_keeps_its_pair() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, GET);
    wire.server(
        &mut t,
        b"HTTP/1.1 200 OK\r\nX-Long: first\r\n  second\r\nContent-Length: 5\r\n\r\nhello",
    );
    let events = drain(&mut t);
    assert_eq!(responses(&events)[0].request_index, Some(0));
    assert_eq!(t.stats().http.response_parse_errors, 0);
}

#[test]
fn stray_crlf_between_pipelined_requests_keeps_the_latency() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, GET);
    let first_sent = wire.now;
    wire.client(&mut t, b"\r\n");
    wire.client(&mut t, b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    let second_sent = wire.now;
    wire.server(&mut t, OK);
    let first_answered = wire.now;
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let latencies: Vec<_> = responses(&events)
        .iter()
        .map(|response| response.latency_ns)
        .collect();
    assert_eq!(
        latencies,
        [
            Some(first_answered - first_sent),
            Some(wire.now - second_sent)
        ]
    );
}

#[test]
fn early_response_to_a_large_upload_is_paired_and_timed() {
    let (mut t, mut wire) = open(1);
    wire.client(
        &mut t,
        b"PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n",
    );
    wire.client(&mut t, &[b'x'; 1000]);
    let last_before = wire.now;
    // nginx `return 200` answers as soon as the head is read.
    wire.server(&mut t, OK);
    let answered_at = wire.now;
    for _ in 0..199 {
        wire.client(&mut t, &[b'x'; 1000]);
    }
    wire.client(&mut t, GET);
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    // The request's event comes first, then its (early) response.
    assert!(
        matches!(events[0], HttpEvent::Request(_)),
        "{:#?}",
        &events[..2]
    );
    let HttpEvent::Response(early) = &events[1] else {
        panic!("{:#?}", &events[..2]);
    };
    assert_eq!(early.request_index, Some(0));
    assert_eq!(early.request.as_ref().unwrap().target(), b"/upload");
    assert_eq!(early.latency_ns, Some(answered_at - last_before));
    assert_eq!(requests(&events)[0].unpaired, None);
    assert_eq!(responses(&events)[1].request_index, Some(1));
}

#[test]
fn joined_connection_closes_on_its_fins() {
    let mut t = tracker();
    let mut wire = Wire::new(1, 7_000, 90_000);
    wire.client(&mut t, GET);
    // The server sends no data after the join: only its FIN.
    wire.flags(&mut t, Direction::Request, FIN, b"");
    wire.flags(&mut t, Direction::Response, FIN, b"");
    assert_eq!(t.active_connections(), 0);
}

#[test]
fn retransmission_of_a_held_request_is_compared() {
    let (mut t, mut wire) = open(1);
    let start = wire.client_seq;
    let post = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234";
    wire.client(&mut t, post);
    // The same bytes again with one differing (an evasion attempt, or a broken middlebox).
    let mut altered = post.to_vec();
    *altered.last_mut().unwrap() = b'X';
    t.on_segment(&wire.segment(Direction::Request, start, wire.server_seq, ACK, &altered));
    let http = t.stats().http;
    assert_eq!(http.retransmitted_bytes_compared, post.len() as u64);
    assert_eq!(http.retransmitted_bytes_conflicting, 1);
    wire.client(&mut t, b"56789");
    assert_eq!(requests(&drain(&mut t)).len(), 1, "first copy wins, once");
}

#[test]
fn response_without_a_request_drops_the_connection_out_of_sync() {
    let (mut t, mut wire) = open(1);
    // An unsolicited 408 on an idle connection, then a request: the 408 answers nothing.
    wire.server(
        &mut t,
        b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n",
    );
    wire.client(&mut t, GET);
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let unpaired: Vec<_> = responses(&events)
        .iter()
        .map(|response| response.unpaired)
        .collect();
    assert_eq!(unpaired, [Some(UnpairedReason::Order); 2]);
}

#[test]
fn response_acknowledging_none_of_its_request_is_not_paired() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, GET);
    // Sent before the server had any byte of the request (its ACK is the request's first
    // byte): it cannot answer it.
    let early = wire.segment(
        Direction::Response,
        wire.server_seq,
        wire.client_seq - GET.len() as u32,
        ACK,
        OK,
    );
    t.on_segment(&early);
    let events = drain(&mut t);
    assert_eq!(responses(&events)[0].unpaired, Some(UnpairedReason::Order));
}

#[test]
fn a_pipelining_client_never_resynchronises_at_a_quiet_point() {
    let (mut t, mut wire) = open(1);
    // Seen pipelining while in sync.
    wire.client(&mut t, &[GET, GET].concat());
    wire.server(&mut t, OK);
    wire.server(&mut t, OK);
    // Then a gap, and a quiet point.
    wire.client_lost(GET.len());
    wire.server(&mut t, OK);
    wire.client(&mut t, GET);
    t.on_tick(wire.now + 1_000_000_000);
    wire.server(&mut t, OK);
    wire.now += 2_000_000_000;
    wire.client(&mut t, GET);
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    assert!(responses(&events).last().unwrap().unpaired.is_some());
    assert_eq!(t.stats().http.resyncs_quiet, 0);
}

#[test]
fn stray_crlf_after_a_response_body_keeps_the_next_pair() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, &[GET, GET].concat());
    wire.server(&mut t, &[OK, b"\r\n", OK].concat());
    let events = drain(&mut t);
    let pairs: Vec<_> = responses(&events)
        .iter()
        .map(|response| response.request_index)
        .collect();
    assert_eq!(pairs, [Some(0), Some(1)]);
    assert_eq!(t.stats().http.response_parse_errors, 0);
}

#[test]
fn no_quiet_point_while_a_final_response_is_due() {
    let mut t = tracker();
    let mut wire = Wire::new(1, 7_000, 90_000);
    // Joined mid-stream: a request whose head is not seen, answered `100 Continue`; after a
    // second of silence its body comes, and it starts like a request.
    wire.client(
        &mut t,
        b"tail of a head\r\nExpect: 100-continue\r\nContent-Length: 36\r\n\r\n",
    );
    wire.server(&mut t, b"HTTP/1.1 100 Continue\r\n\r\n");
    wire.now += 1_500_000_000;
    wire.client(&mut t, b"GET /inside-a-body HTTP/1.1\r\n\r\n\r\n");
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    assert_eq!(t.stats().http.resyncs_quiet, 0);
    assert!(
        responses(&events)
            .iter()
            .all(|response| response.request_index.is_none())
    );
}

#[test]
fn bytes_held_for_a_connect_answer_are_bounded() {
    let (mut t, mut wire) = open(1);
    wire.client(
        &mut t,
        b"CONNECT db.test:5432 HTTP/1.1\r\nHost: db.test:5432\r\n\r\n",
    );
    // A client that does not wait for the answer sends more than a head's worth.
    for _ in 0..70 {
        wire.client(&mut t, &[b'x'; 1000]);
    }
    assert!(t.buffered_bytes() <= HttpConfig::default().max_head_bytes);
    assert_eq!(
        t.stats().http.connections_skipped.get(SkipReason::Connect),
        1
    );
}

#[test]
fn another_daemons_replays_are_framed_skipped_and_their_answers_not_the_primarys() {
    let config = TrackerConfig {
        http: HttpConfig {
            replay_marker: Some(b"x-mirror-replay".to_vec().into()),
            ..HttpConfig::default()
        },
        ..TrackerConfig::default()
    };
    let mut t = HttpTracker::new(config);
    let mut wire = Wire::new(1, 1, 1);
    wire.handshake(&mut t);
    // A replay from the daemon of another node, arriving at a shadow on a target port here.
    wire.client(
        &mut t,
        b"GET /a HTTP/1.1\r\nHost: search-shadow\r\nX-Mirror-Replay: node-a\r\n\r\n",
    );
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let framed = requests(&events);
    assert_eq!(framed[0].skip, Some(SkipReason::ReplayMarker));
    assert!(
        responses(&events).is_empty(),
        "a shadow's answer: {events:#?}"
    );
    let http = t.stats().http;
    assert_eq!(http.requests_skipped(SkipReason::ReplayMarker), 1);
    assert_eq!(http.responses_of_replays, 1);
    assert_eq!(http.responses_total, 0);
}
