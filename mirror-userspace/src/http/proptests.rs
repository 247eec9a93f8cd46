//! Property tests: any segmentation, reordering within the window and duplication of a stream of
//! pipelined requests and responses yields exactly the events of the unsegmented stream; a single
//! gap loses at most the messages it touches and those up to the next segment that starts one.

use proptest::prelude::*;

use super::tests::{ACK, Wire, drain};
use super::*;
use crate::segment::Direction;

#[derive(Clone, Debug)]
enum Request {
    Get(String),
    Head(String),
    PostLength(String),
    PostChunked(Vec<String>),
}

#[derive(Clone, Debug)]
enum Response {
    Length(String),
    Chunked(Vec<String>),
    NoContent,
    NotModified,
}

fn body() -> impl Strategy<Value = String> {
    "[a-z0-9]{0,24}"
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        "/[a-z]{0,8}".prop_map(Request::Get),
        "/[a-z]{0,8}".prop_map(Request::Head),
        body().prop_map(Request::PostLength),
        prop::collection::vec("[a-z0-9]{1,12}", 0..4).prop_map(Request::PostChunked),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        body().prop_map(Response::Length),
        prop::collection::vec("[a-z0-9]{1,12}", 0..4).prop_map(Response::Chunked),
        Just(Response::NoContent),
        Just(Response::NotModified),
    ]
}

fn chunked(chunks: &[String]) -> String {
    let mut out: String = chunks
        .iter()
        .map(|chunk| format!("{:x};ext=1\r\n{chunk}\r\n", chunk.len()))
        .collect();
    out.push_str("0\r\nTrailer: t\r\n\r\n");
    out
}

fn request_bytes(request: &Request) -> Vec<u8> {
    match request {
        Request::Get(path) => format!("GET {path}x HTTP/1.1\r\nHost: a\r\n\r\n"),
        Request::Head(path) => format!("HEAD {path}x HTTP/1.1\r\nHost: a\r\n\r\n"),
        Request::PostLength(body) => format!(
            "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        Request::PostChunked(chunks) => format!(
            "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            chunked(chunks)
        ),
    }
    .into_bytes()
}

fn response_bytes(response: &Response, to_head: bool) -> Vec<u8> {
    match response {
        Response::Length(body) if to_head => {
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
        }
        Response::Length(body) => {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
        Response::Chunked(_) if to_head => {
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".into()
        }
        Response::Chunked(chunks) => format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            chunked(chunks)
        ),
        Response::NoContent => "HTTP/1.1 204 No Content\r\n\r\n".into(),
        Response::NotModified => "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n".into(),
    }
    .into_bytes()
}

/// The exchange as two byte streams, with the byte range of each request.
fn streams(exchanges: &[(Request, Response)]) -> (Vec<u8>, Vec<(usize, usize)>, Vec<u8>) {
    let mut client = Vec::new();
    let mut ranges = Vec::new();
    let mut server = Vec::new();
    for (request, response) in exchanges {
        let start = client.len();
        client.extend(request_bytes(request));
        ranges.push((start, client.len()));
        server.extend(response_bytes(
            response,
            matches!(request, Request::Head(_)),
        ));
    }
    (client, ranges, server)
}

/// Events without timestamps (they depend on how the bytes were cut).
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Request(u64, Vec<u8>),
    Response(Option<u64>, u16, u64, u128),
    Other(String),
}

fn normalise(events: Vec<HttpEvent>) -> Vec<Seen> {
    events
        .into_iter()
        .map(|event| match event {
            HttpEvent::Request(request) => {
                Seen::Request(request.index, request.request.bytes().to_vec())
            }
            HttpEvent::Response(response) => Seen::Response(
                response.request_index,
                response.head.status(),
                response.body_len,
                response.body_digest.value(),
            ),
            other => Seen::Other(format!("{other:?}")),
        })
        .collect()
}

/// Pieces of `stream` as (offset, bytes): cut at `cuts`, reordered by up to `jitter` positions,
/// plus retransmissions of arbitrary ranges.
fn pieces(
    stream: &[u8],
    cuts: &[usize],
    jitter: &[usize],
    retransmits: &[(usize, usize, usize)],
) -> Vec<(usize, Vec<u8>)> {
    let mut bounds: Vec<usize> = cuts.iter().map(|cut| cut % (stream.len() + 1)).collect();
    bounds.extend([0, stream.len()]);
    bounds.sort_unstable();
    bounds.dedup();
    let mut keyed: Vec<(usize, (usize, Vec<u8>))> = bounds
        .windows(2)
        .enumerate()
        .map(|(i, window)| {
            let key = i * 4 + jitter.get(i).copied().unwrap_or(0) % 12;
            (key, (window[0], stream[window[0]..window[1]].to_vec()))
        })
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    let mut out: Vec<(usize, Vec<u8>)> = keyed.into_iter().map(|(_, piece)| piece).collect();
    for &(start, len, at) in retransmits {
        if stream.is_empty() {
            break;
        }
        let start = start % stream.len();
        let end = (start + len).min(stream.len());
        let at = at % (out.len() + 1);
        out.insert(at, (start, stream[start..end].to_vec()));
    }
    out
}

fn send(
    tracker: &mut HttpTracker,
    wire: &mut Wire,
    direction: Direction,
    base: u32,
    pieces: &[(usize, Vec<u8>)],
) {
    for (offset, bytes) in pieces {
        wire.now += 1_000;
        let seq = base.wrapping_add(*offset as u32);
        let ack = match direction {
            Direction::Request => wire.server_seq,
            Direction::Response => wire.client_seq,
        };
        tracker.on_segment(&wire.segment(direction, seq, ack, ACK, bytes));
    }
}

/// The accounting identity over what the tracker emitted: every request head parsed ends as
/// exactly one request event or one loss with its index, except at most `in_progress` still
/// being framed when the input ended; and the counters are the events' counts.
fn check_accounting(tracker: &HttpTracker, events: &[HttpEvent], in_progress: u64) {
    let http = tracker.stats().http;
    let emitted = events
        .iter()
        .filter(|event| matches!(event, HttpEvent::Request(_)))
        .count() as u64;
    let request_losses = events.iter().filter_map(|event| match event {
        HttpEvent::Lost(loss) if loss.direction == Direction::Request => Some(loss),
        _ => None,
    });
    let (lost, lost_indexed) = request_losses.fold((0, 0), |(lost, indexed), loss| {
        (lost + 1, indexed + u64::from(loss.request_index.is_some()))
    });
    assert_eq!(
        http.requests_total, emitted,
        "requests_total against events"
    );
    assert_eq!(
        http.requests_lost.total(),
        lost,
        "requests_lost against events"
    );
    let ended = emitted + lost_indexed;
    assert!(
        ended <= http.requests_started && http.requests_started <= ended + in_progress,
        "{} heads parsed, {emitted} emitted, {lost_indexed} lost with an index",
        http.requests_started
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn segmentation_reordering_and_duplication_change_nothing(
        exchanges in prop::collection::vec((request(), response()), 1..8),
        isn in any::<u32>(),
        client_cuts in prop::collection::vec(any::<usize>(), 0..24),
        server_cuts in prop::collection::vec(any::<usize>(), 0..24),
        jitter in prop::collection::vec(any::<usize>(), 0..24),
        retransmits in prop::collection::vec((any::<usize>(), 1usize..40, any::<usize>()), 0..6),
    ) {
        let (client, _, server) = streams(&exchanges);

        let mut reference = HttpTracker::new(TrackerConfig::default());
        let mut wire = Wire::new(1, isn, isn ^ 0x5a5a_5a5a);
        wire.handshake(&mut reference);
        wire.client(&mut reference, &client);
        wire.server(&mut reference, &server);
        let expected = normalise(drain(&mut reference));
        prop_assert_eq!(expected.iter().filter(|seen| matches!(seen, Seen::Request(..))).count(), exchanges.len());
        prop_assert!(expected.iter().all(|seen| !matches!(seen, Seen::Other(_))));

        let mut tracker = HttpTracker::new(TrackerConfig::default());
        let mut wire = Wire::new(1, isn, isn ^ 0x5a5a_5a5a);
        wire.handshake(&mut tracker);
        let (client_base, server_base) = (wire.client_seq, wire.server_seq);
        send(&mut tracker, &mut wire, Direction::Request, client_base,
            &pieces(&client, &client_cuts, &jitter, &retransmits));
        wire.client_seq = client_base.wrapping_add(client.len() as u32);
        send(&mut tracker, &mut wire, Direction::Response, server_base,
            &pieces(&server, &server_cuts, &jitter, &retransmits));
        let events = drain(&mut tracker);
        check_accounting(&tracker, &events, 0);
        prop_assert_eq!(tracker.stats().http.requests_started, exchanges.len() as u64);
        prop_assert_eq!(normalise(events), expected);
        prop_assert_eq!(tracker.buffered_bytes(), 0);
    }

    #[test]
    fn a_single_gap_loses_at_most_the_messages_it_touches(
        exchanges in prop::collection::vec((request(), response()), 1..8),
        isn in any::<u32>(),
        cuts in prop::collection::vec(any::<usize>(), 1..24),
        dropped in any::<usize>(),
    ) {
        let (client, ranges, server) = streams(&exchanges);
        let cut_pieces = pieces(&client, &cuts, &[], &[]);
        let dropped = dropped % cut_pieces.len();
        let (gap_start, gap_bytes) = &cut_pieces[dropped];
        let gap = (*gap_start, gap_start + gap_bytes.len());

        let mut tracker = HttpTracker::new(TrackerConfig::default());
        let mut wire = Wire::new(1, isn, isn ^ 0x5a5a_5a5a);
        wire.handshake(&mut tracker);
        let client_base = wire.client_seq;
        let kept: Vec<(usize, Vec<u8>)> = cut_pieces
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != dropped)
            .map(|(_, piece)| piece.clone())
            .collect();
        send(&mut tracker, &mut wire, Direction::Request, client_base, &kept);
        wire.client_seq = client_base.wrapping_add(client.len() as u32);
        tracker.on_tick(wire.now + 1_000_000_000);
        wire.now += 1_000_000_000;
        wire.server(&mut tracker, &server);
        let events = drain(&mut tracker);

        let emitted: Vec<Vec<u8>> = events
            .iter()
            .filter_map(|event| match event {
                HttpEvent::Request(request) => Some(request.request.bytes().to_vec()),
                _ => None,
            })
            .collect();
        // Nothing emitted is garbage: emitted requests are reference requests, in order.
        let mut candidates = ranges.iter().map(|&(start, end)| &client[start..end]);
        for request in &emitted {
            prop_assert!(candidates.any(|candidate| candidate == request.as_slice()),
                "emitted request not in the reference stream: {:?}", String::from_utf8_lossy(request));
        }
        // Every request before the gap is emitted, and so is every request from the first one
        // after it that starts a segment (where framing resumes).
        let segment_starts: Vec<usize> = kept.iter().map(|(start, _)| *start).collect();
        let resumed = ranges
            .iter()
            .position(|&(start, _)| start >= gap.1 && segment_starts.contains(&start))
            .unwrap_or(ranges.len());
        let expected = ranges.iter().filter(|&&(_, end)| end <= gap.0).count()
            + (ranges.len() - resumed);
        prop_assert!(emitted.len() >= expected, "gap {:?} in {:?} (segments at {:?}), emitted {}", gap, ranges, segment_starts, emitted.len());
        prop_assert!(tracker.stats().tcp.gaps <= 1);
        // The last request may still wait for the bytes the gap took when they were its end.
        check_accounting(&tracker, &events, 1);
    }
}
