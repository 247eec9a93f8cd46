//! Request and response framing rules (RFC 9112).

use super::*;
use crate::http::UnpairedReason;

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
    assert_eq!(response.body_digest.value(), xxh3_128(b"hello"));
    assert_eq!(response.latency_ns, Some(1_000));
    let summary = response.request.as_ref().unwrap();
    assert_eq!(summary.method(), b"GET");
    assert_eq!(summary.target(), b"/items?id=7");
    assert_eq!(summary.host(), Some(&b"shop.test"[..]));
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
fn a_response_summary_does_not_hold_its_request_buffer() {
    let (mut t, mut wire) = open(1);
    let post = [
        &b"POST /upload HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 4096\r\n\r\n"[..],
        &[b'x'; 4096],
    ]
    .concat();
    wire.client(&mut t, &post);
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let request = requests(&events)[0].request.bytes().clone();
    let Some(HttpEvent::Response(response)) = events.last() else {
        panic!("unexpected events {events:#?}");
    };
    let summary = response.request.as_ref().expect("paired");
    assert_eq!(
        &RequestSummary::of(&requests(&events)[0].request),
        summary,
        "the response is labelled with its own request"
    );
    assert_eq!(summary.method(), b"POST");
    assert_eq!(summary.target(), b"/upload");
    assert_eq!(summary.host(), Some(&b"shop.test"[..]));
    // A slice of the request would keep its body alive until the shadow answered.
    let buffer = request.as_ptr_range();
    for part in [summary.method(), summary.target(), summary.host().unwrap()] {
        assert!(
            !buffer.contains(&part.as_ptr()),
            "summary points into the request"
        );
    }
}

#[test]
fn unlabelled_responses_are_paired_without_a_copy_of_their_request() {
    let config = TrackerConfig {
        http: HttpConfig {
            label_responses: false,
            ..HttpConfig::default()
        },
        ..TrackerConfig::default()
    };
    let mut t = HttpTracker::new(config);
    let mut wire = Wire::new(1, 1, 1);
    wire.handshake(&mut t);
    wire.client(&mut t, GET);
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let [HttpEvent::Request(request), HttpEvent::Response(response)] = events.as_slice() else {
        panic!("unexpected events {events:#?}");
    };
    assert_eq!(request.request.bytes().as_ref(), GET);
    assert_eq!(response.request_index, Some(request.index));
    assert_eq!(response.head.status(), 200);
    assert_eq!(response.request, None);
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
    assert_eq!(response.body_digest.value(), xxh3_128(b"hello"));
}

#[test]
fn held_bodies_are_dechunked_and_kept_within_the_budget() {
    let budget = BodyBudget::new(8);
    let (mut t, mut wire) = open(1);
    t.hold_bodies(Some(budget.clone()));
    wire.client(&mut t, GET);
    wire.server(
        &mut t,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n",
    );
    wire.server(&mut t, b"2\r\nlo\r\n0\r\n\r\n");
    wire.client(&mut t, GET);
    // 5 bytes held by the first event: the next 5 do not fit in 8.
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let [first, second] = responses(&events)[..] else {
        panic!("two responses expected: {events:#?}");
    };
    assert_eq!(
        first.body.as_ref().map(|body| body.bytes()),
        Some(&b"hello"[..])
    );
    assert_eq!(second.body, None, "over the budget: digest only");
    assert_eq!(second.body_digest.value(), xxh3_128(b"hello"));
    assert_eq!(budget.used(), 5);
    drop(events);
    assert_eq!(budget.used(), 0, "dropping the event returns the bytes");
}

#[test]
fn bodies_are_not_held_by_default() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, GET);
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    assert_eq!(responses(&events)[0].body, None);
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
    let summary = answered[0]
        .request
        .as_ref()
        .expect("labelled at the request's head");
    assert_eq!(summary.target(), b"/f");
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
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(requests(&events)[0].skip, Some(SkipReason::Upgrade));
    assert_eq!(responses(&events)[0].head.status(), 101);
    assert!(matches!(
        events[2],
        HttpEvent::ConnectionSkipped {
            reason: SkipReason::Upgrade,
            ..
        }
    ));
    let stats = t.stats().http;
    assert_eq!(stats.requests_skipped(SkipReason::Upgrade), 1);
    assert_eq!(stats.connections_skipped.get(SkipReason::Upgrade), 1);
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
    // Sent before the tunnel was confirmed: held until the answer.
    wire.client(&mut t, b"GET /tunnelled HTTP/1.1\r\n\r\n");
    assert_eq!(requests(&drain(&mut t)).len(), 1);
    wire.server(&mut t, b"HTTP/1.1 200 Connection Established\r\n\r\n");
    wire.client(&mut t, b"more tunnelled bytes");
    let events = drain(&mut t);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(responses(&events)[0].head.status(), 200);
    assert!(
        requests(&events).is_empty(),
        "nothing in the tunnel is framed"
    );
    assert_eq!(t.stats().http.requests_total, 1);
    assert_eq!(
        t.stats().http.connections_skipped.get(SkipReason::Connect),
        1
    );
    assert_eq!(t.buffered_bytes(), 0);
}

#[test]
fn refused_connect_goes_on_as_http1() {
    let (mut t, mut wire) = open(1);
    wire.client(
        &mut t,
        b"CONNECT db.test:5432 HTTP/1.1\r\nHost: db.test:5432\r\n\r\n",
    );
    wire.client(&mut t, GET);
    wire.server(
        &mut t,
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
    );
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let framed = requests(&events);
    assert_eq!(framed.len(), 2, "{events:#?}");
    assert_eq!(framed[0].skip, Some(SkipReason::Connect));
    assert_eq!(framed[1].request.bytes().as_ref(), GET);
    let pairs: Vec<_> = responses(&events)
        .iter()
        .map(|response| (response.request_index, response.head.status()))
        .collect();
    assert_eq!(pairs, [(Some(0), 407), (Some(1), 200)]);
    assert_eq!(
        t.stats().http.connections_skipped.get(SkipReason::Connect),
        0
    );
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
    assert_eq!(t.stats().http.connections_skipped.get(SkipReason::Tls), 1);
    assert_eq!(t.stats().http.request_parse_errors, 0);
}

#[test]
fn too_many_headers_is_counted_and_nothing_is_framed_until_a_quiet_point() {
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
    let big = format!("GET /big HTTP/1.1\r\n{many}\r\n");
    wire.client(&mut t, big.as_bytes());
    // Right behind it, a request is not framed: the framing is not certain.
    wire.client(&mut t, GET);
    wire.server(
        &mut t,
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    );
    let events = drain(&mut t);
    assert_eq!(losses(&events)[0].reason, LossReason::Malformed);
    assert!(requests(&events).is_empty(), "{events:#?}");
    assert_eq!(
        responses(&events)[0].unpaired,
        Some(UnpairedReason::Malformed)
    );
    assert_eq!(t.stats().http.request_parse_errors, 1);
    assert_eq!(
        t.stats().http.request_bytes_unframed,
        (big.len() + GET.len()) as u64
    );
    // After a second of silence on both sides, with everything acknowledged: certain again.
    wire.now += 1_500_000_000;
    wire.client(&mut t, GET);
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    let framed = requests(&events);
    assert_eq!(framed.len(), 1);
    assert_eq!(framed[0].request.bytes().as_ref(), GET);
    assert_eq!(framed[0].unpaired, None);
    assert_eq!(responses(&events)[0].request_index, Some(framed[0].index));
    assert_eq!(t.stats().http.resyncs_quiet, 1);
}

#[test]
fn garbage_is_counted_and_not_framed_until_a_quiet_point() {
    let (mut t, mut wire) = open(1);
    wire.client(&mut t, b"\x00\x01garbage that is not http\r\nmore junk\r\n");
    wire.client(&mut t, GET);
    let events = drain(&mut t);
    assert!(requests(&events).is_empty());
    assert_eq!(t.stats().http.request_parse_errors, 1);
    wire.server(
        &mut t,
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    );
    wire.now += 1_500_000_000;
    wire.client(&mut t, GET);
    let events = drain(&mut t);
    let framed = requests(&events);
    assert_eq!(framed.len(), 1);
    assert_eq!(framed[0].request.bytes().as_ref(), GET);
}

#[test]
fn smuggling_after_a_malformed_head_is_never_replayed() {
    let (mut t, mut wire) = open(1);
    // Differing Content-Length values: where this request ends is unknowable (RFC 9110 §8.6),
    // and the bytes after it hide a second request.
    wire.client(
        &mut t,
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 30\r\n\r\n",
    );
    wire.client(&mut t, b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
    wire.server(
        &mut t,
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    );
    wire.client(&mut t, b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
    let events = drain(&mut t);
    assert!(requests(&events).is_empty(), "{events:#?}");
    assert_eq!(t.stats().http.requests_lost.malformed, 1);
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
