//! The generator checks itself: the wire is a consistent TCP conversation and the truth matches
//! the bytes on it.

use super::http1::{self, Http1Case};
use super::*;

/// Each direction's stream rebuilt from the wire (offset-addressed, so order does not matter).
fn streams(case: &Http1Case, conn: usize) -> [Vec<u8>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for captured in case.wire.iter().filter(|captured| captured.conn == conn) {
        let stream = &mut out[captured.side() as usize];
        let range = captured.range();
        if stream.len() < range.end as usize {
            stream.resize(range.end as usize, 0);
        }
        stream[range.start as usize..range.end as usize].copy_from_slice(&captured.segment.payload);
    }
    out
}

fn check_wire(case: &Http1Case) {
    let context = http1::describe(case);
    assert!(
        case.wire
            .windows(2)
            .all(|pair| pair[0].segment.timestamp_ns <= pair[1].segment.timestamp_ns),
        "capture order is time order: {context}"
    );
    for (index, conn) in case.conns.iter().enumerate() {
        let [client, server] = streams(case, index);
        let isn = [conn.client_isn, conn.server_isn];
        // Bytes of each side captured so far, to bound the other side's ACKs.
        let mut seen = [0u64; 2];
        let mut last_ack = [None::<u64>; 2];
        for captured in case.wire.iter().filter(|captured| captured.conn == index) {
            let side = captured.side();
            let segment = &captured.segment;
            if segment.flags.syn() {
                assert_eq!(segment.seq, isn[side as usize], "{context}");
            } else {
                assert_eq!(
                    segment.seq,
                    isn[side as usize]
                        .wrapping_add(1)
                        .wrapping_add(captured.offset as u32),
                    "{context}"
                );
            }
            seen[side as usize] =
                seen[side as usize].max(captured.range().end + u64::from(segment.flags.fin()));
            if segment.flags.contains(crate::segment::TcpFlags::ACK) {
                let peer = side.peer() as usize;
                let acked = u64::from(segment.ack.wrapping_sub(isn[peer].wrapping_add(1)));
                assert!(
                    acked <= seen[peer],
                    "{side:?} acknowledges {acked} bytes, only {} captured: {context}",
                    seen[peer]
                );
                assert!(
                    last_ack[side as usize].is_none_or(|last| last <= acked),
                    "{context}"
                );
                last_ack[side as usize] = Some(acked);
            }
        }
        let syn = case.wire.iter().find(|c| c.conn == index).expect("a SYN");
        assert!(
            syn.segment.flags.syn() && syn.side() == Side::Client,
            "{context}"
        );
        assert_eq!(syn.segment.timestamp_ns, conn.start_ns + conn.link.delay_ns);
        for exchange in &conn.app.exchanges {
            assert!(
                exchange
                    .request
                    .starts_with(format!("{} ", exchange.method).as_bytes())
            );
            let request = exchange
                .request_range
                .clone()
                .expect("every request is sent");
            assert!(
                request.end as usize <= client.len(),
                "request {} {request:?} past the client stream ({}): {context}",
                exchange.target,
                client.len()
            );
            assert_eq!(
                &client[request.start as usize..request.end as usize],
                &exchange.request[..],
                "{context}"
            );
            let response = exchange
                .response_range
                .clone()
                .expect("every request is answered");
            let response = &server[response.start as usize..response.end as usize];
            let status_line = format!("HTTP/1.1 {} ", exchange.status);
            assert!(response.starts_with(status_line.as_bytes()), "{context}");
            let answer = format!("\r\nX-Answer: {}\r\n", exchange.target);
            assert!(
                response
                    .windows(answer.len())
                    .any(|window| window == answer.as_bytes()),
                "{context}"
            );
            for interim in &exchange.interim_ranges {
                assert!(server[interim.start as usize..].starts_with(b"HTTP/1.1 10"));
            }
        }
    }
}

#[test]
fn every_mode_generates_a_consistent_wire() {
    for seed in 0..300u64 {
        let mode = Mode::ALL[seed as usize % Mode::ALL.len()];
        check_wire(&http1::generate(seed, mode));
    }
}

#[test]
fn a_seed_reproduces_its_case() {
    for mode in Mode::ALL {
        let first = http1::generate(42, mode);
        let second = http1::generate(42, mode);
        let key = |case: &Http1Case| -> Vec<(u32, u32, u64, bytes::Bytes)> {
            case.delivered
                .iter()
                .map(|c| {
                    let s = &c.segment;
                    (s.seq, s.ack, s.timestamp_ns, s.payload.clone())
                })
                .collect()
        };
        assert_eq!(key(&first), key(&second));
        assert_eq!(http1::describe(&first), http1::describe(&second));
    }
}

/// The traffic has the shapes the oracle needs: pipelined requests answered after later requests
/// arrived, early responses, interim responses, wrapping sequence numbers, coalesced messages.
#[test]
fn the_traffic_is_adversarial() {
    let (mut answered_late, mut early, mut interim, mut wrapped, mut shared) = (0, 0, 0, 0, 0);
    let mut continued = 0;
    for seed in 0..400u64 {
        let case = http1::generate(seed, Mode::Clean);
        for (index, conn) in case.conns.iter().enumerate() {
            let wraps = |isn: u32, len: u64| u64::from(isn) + len > u64::from(u32::MAX);
            let server_len = conn
                .app
                .exchanges
                .iter()
                .filter_map(|e| e.response_range.clone());
            if wraps(
                conn.server_isn,
                server_len.map(|r| r.end).max().unwrap_or(0),
            ) {
                wrapped += 1;
            }
            let segments: Vec<&Captured> = case.wire.iter().filter(|c| c.conn == index).collect();
            for exchange in &conn.app.exchanges {
                let request = exchange.request_range.clone().unwrap();
                let response = exchange.response_range.clone().unwrap();
                early += usize::from(exchange.early);
                interim += usize::from(!exchange.interim_ranges.is_empty());
                continued +=
                    usize::from(exchange.expect_continue && !exchange.interim_ranges.is_empty());
                let first = segments
                    .iter()
                    .find(|c| c.side() == Side::Server && c.range().contains(&response.start))
                    .unwrap();
                let acked = u64::from(
                    first
                        .segment
                        .ack
                        .wrapping_sub(conn.client_isn.wrapping_add(1)),
                );
                answered_late += usize::from(acked > request.end);
                shared += usize::from(segments.iter().any(|c| {
                    c.side() == Side::Server
                        && c.range().start < response.end
                        && c.range().end > response.end
                }));
            }
        }
    }
    assert!(
        answered_late > 100,
        "answered after later requests: {answered_late}"
    );
    assert!(early > 20, "early responses: {early}");
    assert!(interim > 20, "with interim responses: {interim}");
    assert!(continued > 10, "100 Continue: {continued}");
    assert!(wrapped > 10, "server sequence numbers wrapping: {wrapped}");
    assert!(
        shared > 50,
        "response tail sharing a segment with the next: {shared}"
    );
}

#[test]
fn lost_pipelined_scenario_loses_one_whole_request() {
    for seed in 0..50u64 {
        let case = http1::generate(seed, Mode::LostPipelined);
        let lost: Vec<(usize, &http1::Exchange)> = case
            .conns
            .iter()
            .enumerate()
            .flat_map(|(index, conn)| conn.app.exchanges.iter().map(move |e| (index, e)))
            .filter(|(index, exchange)| {
                !case
                    .coverage(*index, Side::Client)
                    .touches(exchange.request_range.as_ref().unwrap())
            })
            .collect();
        assert_eq!(lost.len(), 1, "{}", http1::describe(&case));
        let (index, exchange) = lost[0];
        let conn = &case.conns[index].app;
        let position = conn
            .exchanges
            .iter()
            .position(|e| e.target == exchange.target)
            .unwrap();
        let next = &conn.exchanges[position + 1];
        assert!(
            exchange.answered_ns.unwrap() > next.sent_ns.unwrap(),
            "answered after the next request was sent: {}",
            http1::describe(&case)
        );
    }
}

#[test]
fn feed_ticks_every_100ms_and_once_at_the_end() {
    let case = http1::generate(7, Mode::Clean);
    let mut ticks = Vec::new();
    let mut segments = 0;
    let end = feed(
        case.delivered.iter().map(|c| &c.segment),
        |_| segments += 1,
        |t| ticks.push(t),
    );
    assert_eq!(segments, case.delivered.len());
    assert_eq!(*ticks.last().unwrap(), end);
    assert!(ticks[..ticks.len() - 1].iter().all(|t| t % TICK_NS == 0));
    assert!(ticks.windows(2).all(|pair| pair[0] < pair[1]));
}
