//! Streams and exchanges: pairing by id, informational responses, trailers, resets, GOAWAY,
//! push, limits, joins and gaps.

use bytes::Bytes;

use super::super::frame::{flag, kind, setting};
use super::super::{
    EndReason, FrameError, HpackError, Http2Config, Http2Connection, Http2Event, RequestHead,
    ResponseHead, StreamLossReason,
};
use super::{
    Encoder, REQ, RESP, client_start, data, drain, fields, frame, goaway, headers, ping, rst, run,
    server_start, settings, settings_ack, window_update,
};
use crate::segment::Direction;

const GET: [(&str, &str); 4] = [
    (":method", "GET"),
    (":scheme", "http"),
    (":authority", "example.com"),
    (":path", "/a"),
];

fn request(stream: u32, list: &[(&str, &str)]) -> Http2Event {
    Http2Event::Request {
        stream,
        head: RequestHead {
            fields: fields(list),
        },
    }
}

fn response(stream: u32, status: u16, list: &[(&str, &str)]) -> Http2Event {
    Http2Event::Response {
        stream,
        head: ResponseHead {
            status,
            fields: fields(list),
        },
    }
}

fn body(stream: u32, direction: Direction, bytes: &'static [u8]) -> Http2Event {
    Http2Event::Data {
        stream,
        direction,
        data: Bytes::from_static(bytes),
    }
}

fn end(stream: u32, direction: Direction) -> Http2Event {
    Http2Event::End { stream, direction }
}

/// Both encoders and the start of both directions.
struct Peers {
    client: Encoder,
    server: Encoder,
    feed: Vec<(Direction, Vec<u8>)>,
}

impl Peers {
    fn new() -> Self {
        Self {
            client: Encoder::default(),
            server: Encoder::default(),
            feed: vec![(REQ, client_start()), (RESP, server_start())],
        }
    }

    fn request(&mut self, stream: u32, list: &[(&str, &str)], end_stream: bool) {
        let block = self.client.block(list);
        self.feed
            .push((REQ, headers(stream, &block, end_stream, None, false, &[])));
    }

    fn response(&mut self, stream: u32, list: &[(&str, &str)], end_stream: bool) {
        let block = self.server.block(list);
        self.feed
            .push((RESP, headers(stream, &block, end_stream, None, false, &[])));
    }

    fn send(&mut self, direction: Direction, bytes: Vec<u8>) {
        self.feed.push((direction, bytes));
    }

    fn run(&self, config: &Http2Config) -> Vec<Http2Event> {
        run(config, &self.feed)
    }
}

#[test]
fn get_exchange() {
    let mut peers = Peers::new();
    peers.request(1, &GET, true);
    peers.send(RESP, settings_ack());
    peers.send(REQ, settings_ack());
    peers.response(
        1,
        &[(":status", "200"), ("content-type", "text/plain")],
        false,
    );
    peers.send(RESP, data(1, b"hello ", false, None));
    peers.send(RESP, data(1, b"world", true, Some(3)));
    let events = peers.run(&Http2Config::default());
    assert_eq!(
        events,
        [
            request(1, &GET),
            end(1, REQ),
            response(
                1,
                200,
                &[(":status", "200"), ("content-type", "text/plain")]
            ),
            body(1, RESP, b"hello "),
            body(1, RESP, b"world"),
            end(1, RESP),
        ]
    );
    let Http2Event::Request { head, .. } = &events[0] else {
        unreachable!()
    };
    assert_eq!(head.method(), b"GET");
    assert_eq!(head.scheme(), Some(&b"http"[..]));
    assert_eq!(head.authority(), Some(&b"example.com"[..]));
    assert_eq!(head.path(), Some(&b"/a"[..]));
}

#[test]
fn grpc_with_trailers_and_trailers_only() {
    let post = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/pkg.Svc/Call"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    let mut peers = Peers::new();
    peers.request(1, &post, false);
    peers.send(REQ, data(1, b"\0\0\0\0\x02hi", true, None));
    peers.request(3, &post, false);
    peers.send(REQ, data(3, b"\0\0\0\0\x00", false, None));
    peers.request(3, &[("x-client-trailer", "1")], true);
    peers.response(
        1,
        &[(":status", "200"), ("content-type", "application/grpc")],
        false,
    );
    peers.send(RESP, data(1, b"\0\0\0\0\x02ok", false, None));
    peers.response(1, &[("grpc-status", "0")], true);
    let only = [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "5"),
    ];
    peers.response(3, &only, true);
    assert_eq!(
        peers.run(&Http2Config::default()),
        [
            request(1, &post),
            body(1, REQ, b"\0\0\0\0\x02hi"),
            end(1, REQ),
            request(3, &post),
            body(3, REQ, b"\0\0\0\0\x00"),
            Http2Event::Trailers {
                stream: 3,
                direction: REQ,
                fields: fields(&[("x-client-trailer", "1")]),
            },
            end(3, REQ),
            response(
                1,
                200,
                &[(":status", "200"), ("content-type", "application/grpc")]
            ),
            body(1, RESP, b"\0\0\0\0\x02ok"),
            Http2Event::Trailers {
                stream: 1,
                direction: RESP,
                fields: fields(&[("grpc-status", "0")]),
            },
            end(1, RESP),
            response(3, 200, &only),
            end(3, RESP),
        ]
    );
}

#[test]
fn informational_responses_then_final_paired_by_id() {
    let mut peers = Peers::new();
    let expect = [
        (":method", "PUT"),
        (":path", "/u"),
        ("expect", "100-continue"),
    ];
    peers.request(1, &expect, false);
    peers.request(3, &GET, true);
    peers.response(3, &[(":status", "404")], true);
    peers.response(1, &[(":status", "100")], false);
    peers.send(REQ, data(1, b"up", true, None));
    peers.response(1, &[(":status", "103"), ("link", "</s>")], false);
    peers.response(1, &[(":status", "201")], true);
    let config = Http2Config::default();
    let events = peers.run(&config);
    assert_eq!(
        events,
        [
            request(1, &expect),
            request(3, &GET),
            end(3, REQ),
            response(3, 404, &[(":status", "404")]),
            end(3, RESP),
            response(1, 100, &[(":status", "100")]),
            body(1, REQ, b"up"),
            end(1, REQ),
            response(1, 103, &[(":status", "103"), ("link", "</s>")]),
            response(1, 201, &[(":status", "201")]),
            end(1, RESP),
        ]
    );
    let mut connection = Http2Connection::new(&config);
    for (direction, bytes) in &peers.feed {
        connection.on_bytes(*direction, Bytes::copy_from_slice(bytes));
    }
    assert_eq!(connection.stats().streams_completed, 2);
    assert_eq!(connection.active_streams(), 0);
}

#[test]
fn resets_both_ways_and_goaway_refuses_later_streams() {
    let mut peers = Peers::new();
    for stream in [1, 3, 5, 7] {
        peers.request(stream, &GET, false);
    }
    peers.send(REQ, rst(1, 8));
    peers.send(RESP, rst(3, 7));
    peers.send(RESP, rst(9, 7));
    peers.send(RESP, goaway(5, 0));
    peers.send(REQ, data(5, b"late", true, None));
    assert_eq!(
        peers.run(&Http2Config::default())[4..],
        [
            Http2Event::Reset {
                stream: 1,
                direction: REQ,
                error_code: 8
            },
            Http2Event::Reset {
                stream: 3,
                direction: RESP,
                error_code: 7
            },
            Http2Event::GoAway {
                direction: RESP,
                last_stream_id: 5,
                error_code: 0
            },
            Http2Event::StreamLost {
                stream: 7,
                reason: StreamLossReason::Refused
            },
            body(5, REQ, b"late"),
            end(5, REQ),
        ]
    );
}

#[test]
fn streams_beyond_the_limit_are_counted_and_their_blocks_still_decoded() {
    let config = Http2Config {
        max_streams: 1,
        ..Http2Config::default()
    };
    let mut peers = Peers::new();
    peers.request(1, &GET, false);
    // Not tracked, but its literal enters the client's table...
    peers.request(3, &[(":method", "GET"), ("x-shared", "v")], true);
    peers.send(REQ, data(3, b"ignored", true, None));
    peers.response(3, &[(":status", "200")], true);
    peers.response(1, &[(":status", "200")], true);
    peers.send(REQ, data(1, b"", true, None));
    // ...and is indexed here.
    peers.request(5, &[(":method", "GET"), ("x-shared", "v")], true);
    let events = peers.run(&config);
    assert_eq!(
        events,
        [
            request(1, &GET),
            response(1, 200, &[(":status", "200")]),
            end(1, RESP),
            end(1, REQ),
            request(5, &[(":method", "GET"), ("x-shared", "v")]),
            end(5, REQ),
        ]
    );
    let mut connection = Http2Connection::new(&config);
    for (direction, bytes) in &peers.feed {
        connection.on_bytes(*direction, Bytes::copy_from_slice(bytes));
    }
    let stats = connection.stats();
    assert_eq!((stats.streams_untracked, stats.streams_opened), (1, 2));
    assert_eq!(stats.header_blocks, 5);
    assert_eq!(stats.frames_ignored, 2);
}

#[test]
fn push_promises_are_decoded_and_ignored() {
    let mut peers = Peers::new();
    peers.request(1, &GET, true);
    let mut block = Vec::new();
    let promised = [(":method", "GET"), (":path", "/pushed.css"), ("x-p", "1")];
    for (name, value) in promised {
        peers.server.field(
            &mut block,
            name.as_bytes(),
            value.as_bytes(),
            super::Repr::Incremental,
            false,
        );
    }
    let mut payload = 2u32.to_be_bytes().to_vec();
    payload.extend(block);
    peers.send(
        RESP,
        frame(kind::PUSH_PROMISE, flag::END_HEADERS, 1, &payload),
    );
    peers.response(2, &[(":status", "200"), ("x-p", "1")], false);
    peers.send(RESP, data(2, b"css", true, None));
    peers.response(1, &[(":status", "200"), ("x-p", "1")], true);
    let events = peers.run(&Http2Config::default());
    assert_eq!(
        events[2..],
        [
            response(1, 200, &[(":status", "200"), ("x-p", "1")]),
            end(1, RESP),
        ]
    );
}

#[test]
fn joined_connections_are_not_decoded() {
    let mut encoder = Encoder::default();
    let block = encoder.block(&GET);
    let events = run(
        &Http2Config::default(),
        &[
            (REQ, headers(1, &block, true, None, false, &[])),
            (RESP, server_start()),
        ],
    );
    assert_eq!(
        events,
        [Http2Event::Ended {
            reason: EndReason::Joined
        }]
    );
    let server_joined = run(
        &Http2Config::default(),
        &[(RESP, ping(false)), (REQ, client_start())],
    );
    assert_eq!(
        server_joined,
        [Http2Event::Ended {
            reason: EndReason::Joined
        }]
    );
}

#[test]
fn a_gap_in_data_loses_that_stream_only() {
    let mut connection = Http2Connection::new(&Http2Config::default());
    let mut peers = Peers::new();
    peers.request(1, &GET, false);
    peers.request(3, &GET, false);
    for (direction, bytes) in &peers.feed {
        connection.on_bytes(*direction, Bytes::copy_from_slice(bytes));
    }
    let lost = data(1, b"0123456789", true, None);
    connection.on_bytes(REQ, Bytes::copy_from_slice(&lost[..12]));
    connection.on_gap(REQ, 4);
    connection.on_bytes(REQ, Bytes::copy_from_slice(&lost[16..]));
    connection.on_bytes(REQ, data(3, b"ok", true, None).into());
    let mut encoder = peers.server.clone();
    let block = encoder.block(&[(":status", "200")]);
    connection.on_bytes(RESP, headers(1, &block, true, None, false, &[]).into());
    assert_eq!(
        drain(&mut connection)[2..],
        [
            body(1, REQ, b"012"),
            Http2Event::StreamLost {
                stream: 1,
                reason: StreamLossReason::Gap
            },
            body(3, REQ, b"ok"),
            end(3, REQ),
        ]
    );
    assert_eq!(connection.stats().gaps_survived, 1);
    // A gap between frames ends the connection; the open stream is lost with it.
    connection.on_gap(RESP, 9);
    connection.on_bytes(REQ, ping(false).into());
    assert_eq!(
        drain(&mut connection),
        [
            Http2Event::StreamLost {
                stream: 3,
                reason: StreamLossReason::ConnectionEnded
            },
            Http2Event::Ended {
                reason: EndReason::Gap
            },
        ]
    );
    assert_eq!(connection.buffered_bytes(), 0);
    assert_eq!(connection.ended(), Some(EndReason::Gap));
}

#[test]
fn table_size_updates_follow_the_receivers_settings() {
    let sized = |announce: Option<u32>, update: usize| {
        let mut peers = Peers::new();
        if let Some(size) = announce {
            peers.send(RESP, settings(&[(setting::HEADER_TABLE_SIZE, size)]));
        }
        let mut block = Vec::new();
        peers.client.size_update(&mut block, update);
        block.extend(peers.client.block(&GET));
        peers.send(REQ, headers(1, &block, true, None, false, &[]));
        peers.run(&Http2Config::default())
    };
    assert_eq!(
        sized(Some(8192), 8192)[..2],
        [request(1, &GET), end(1, REQ)]
    );
    assert_eq!(
        sized(None, 8192),
        [Http2Event::Ended {
            reason: EndReason::Hpack(HpackError::TableSizeExceeded)
        }]
    );
    assert_eq!(
        sized(Some(1 << 20), 1 << 17),
        [Http2Event::Ended {
            reason: EndReason::Hpack(HpackError::TableTooLarge)
        }],
        "over max_table_size"
    );
}

#[test]
fn frame_size_follows_the_receivers_settings() {
    let big = || data(1, &[b'x'; 20_000], true, None);
    let mut peers = Peers::new();
    peers.request(1, &GET, false);
    peers.send(REQ, big());
    let events = peers.run(&Http2Config::default());
    assert_eq!(
        events[1..],
        [
            Http2Event::StreamLost {
                stream: 1,
                reason: StreamLossReason::ConnectionEnded
            },
            Http2Event::Ended {
                reason: EndReason::Frame(FrameError::FrameTooLarge)
            }
        ]
    );
    let mut peers = Peers::new();
    peers.send(RESP, settings(&[(setting::MAX_FRAME_SIZE, 32_768)]));
    peers.request(1, &GET, false);
    peers.send(REQ, settings_ack());
    peers.send(REQ, big());
    let events = peers.run(&Http2Config::default());
    assert!(matches!(&events[1], Http2Event::Data { data, .. } if data.len() == 20_000));
}

#[test]
fn malformed_streams_are_lost_alone() {
    let mut peers = Peers::new();
    peers.request(1, &[(":path", "/no-method")], true);
    peers.request(3, &GET, true);
    peers.send(RESP, data(3, b"early", false, None));
    peers.request(5, &GET, true);
    peers.response(5, &[(":status", "2xx")], true);
    peers.request(7, &GET, false);
    peers.request(7, &[("x-not-final", "1")], false);
    peers.request(9, &GET, true);
    peers.send(RESP, window_update(0, 100));
    peers.response(9, &[(":status", "100")], true);
    let lost = |stream| Http2Event::StreamLost {
        stream,
        reason: StreamLossReason::Malformed,
    };
    let events = peers.run(&Http2Config::default());
    let losses: Vec<_> = events
        .iter()
        .filter(|event| matches!(event, Http2Event::StreamLost { .. }))
        .cloned()
        .collect();
    assert_eq!(losses, [lost(1), lost(3), lost(5), lost(7), lost(9)]);
}

#[test]
fn oversized_header_lists_end_the_connection() {
    let config = Http2Config {
        max_header_list_bytes: 200,
        ..Http2Config::default()
    };
    let mut peers = Peers::new();
    peers.request(1, &[(":method", "GET"), ("x-big", &"v".repeat(200))], true);
    assert_eq!(
        peers.run(&config),
        [Http2Event::Ended {
            reason: EndReason::Hpack(HpackError::ListTooLarge)
        }]
    );
}

#[test]
fn close_loses_streams_in_progress() {
    let mut connection = Http2Connection::new(&Http2Config::default());
    let mut peers = Peers::new();
    peers.request(1, &GET, false);
    peers.request(3, &GET, false);
    for (direction, bytes) in &peers.feed {
        connection.on_bytes(*direction, Bytes::copy_from_slice(bytes));
    }
    drain(&mut connection);
    connection.on_close();
    let lost = |stream| Http2Event::StreamLost {
        stream,
        reason: StreamLossReason::Closed,
    };
    assert_eq!(drain(&mut connection), [lost(1), lost(3)]);
}
