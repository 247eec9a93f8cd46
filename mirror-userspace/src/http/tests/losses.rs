//! Bodyless responses, gaps, resynchronisation, eviction and accounting.

use super::*;
use crate::http::UnpairedReason;

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
    assert_eq!(
        answered[0].body_digest.value(),
        xxh3_128(b"part one part two")
    );
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
fn gap_swallowing_whole_requests_stops_pairing_until_a_quiet_point() {
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
    assert_eq!(framed[1].unpaired, Some(UnpairedReason::Order));
    let pairs: Vec<Option<u64>> = responses(&events).iter().map(|r| r.request_index).collect();
    // The answer to the lost request must not be attributed to anything, nor the next one:
    // the count of requests is not known any more.
    assert_eq!(pairs, [Some(0), None, None]);
    assert!(losses(&events).is_empty(), "no message was in progress");
    // A quiet point: both sides silent for a second, everything acknowledged.
    wire.now += 1_500_000_000;
    wire.client(&mut t, b"GET /fourth HTTP/1.1\r\nHost: a\r\n\r\n");
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    assert_eq!(requests(&events)[0].unpaired, None);
    assert_eq!(
        responses(&events)[0].request_index,
        Some(requests(&events)[0].index)
    );
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
fn mid_stream_join_frames_requests_but_pairs_only_after_a_quiet_point() {
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
    // A client that pipelines could have had a request outstanding when the capture joined.
    let pairs: Vec<_> = responses(&events)
        .iter()
        .map(|r| (r.request_index, r.unpaired))
        .collect();
    assert_eq!(pairs, [(None, Some(UnpairedReason::Joined)); 2]);
    assert_eq!(t.stats().http.request_parse_errors, 0);
    assert_eq!(t.stats().tcp.streams_joined_mid_stream, 2);
    wire.now += 1_500_000_000;
    wire.client(&mut t, GET);
    wire.server(&mut t, OK);
    let events = drain(&mut t);
    assert_eq!(responses(&events)[0].request_index, Some(2));
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
        (answered[0].request_index, answered[0].unpaired),
        (None, Some(UnpairedReason::Malformed)),
        "an acknowledgement number alone proves nothing"
    );
    // The first request's comparison is over; the second was framed unpairable.
    assert!(events.iter().any(|event| matches!(
        event,
        HttpEvent::Unpairable {
            index: 0,
            reason: UnpairedReason::Malformed,
            ..
        }
    )));
    assert_eq!(
        requests(&events)[1].unpaired,
        Some(UnpairedReason::Malformed)
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
        reassembly: ReassemblyConfig {
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
    assert_eq!(stats.requests_unanswered, 2);
}
