//! Compares what the recording server exchanged with what the capture saw, connection by
//! connection.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use mirror::segment::{Direction, FlowKey, Segment};

use crate::{
    server::Recording,
    streams::{CapturedStream, assemble},
};

/// Outcome of a comparison; every field is asserted by the caller.
#[derive(Debug, Default)]
pub struct Comparison {
    pub connections: usize,
    pub request_bytes: usize,
    pub response_bytes: usize,
    /// Connections whose server-side write failed (client gone): only requests are compared.
    pub responses_not_compared: usize,
}

fn describe(stream: Option<&CapturedStream>) -> String {
    match stream {
        None => "no captured stream".to_owned(),
        Some(stream) => format!(
            "{} bytes, base {:?}, {} holes, {} conflicts, {} unplaced segments",
            stream.bytes.len(),
            stream.base,
            stream.holes(),
            stream.conflicts,
            stream.unplaced
        ),
    }
}

fn check(
    flow: FlowKey,
    direction: Direction,
    stream: Option<&CapturedStream>,
    expected: &[u8],
    exact: bool,
) {
    let ok = stream.is_some_and(|stream| {
        stream.base.is_some()
            && stream.holes() == 0
            && stream.conflicts == 0
            && stream.unplaced == 0
            && if exact {
                stream.bytes == expected
            } else {
                expected.starts_with(&stream.bytes) || stream.bytes.starts_with(expected)
            }
    });
    assert!(
        ok,
        "{flow} {direction:?}: captured {} but the peer exchanged {} bytes; first captured bytes {:?}, expected {:?}",
        describe(stream),
        expected.len(),
        stream.map(|s| String::from_utf8_lossy(&s.bytes[..s.bytes.len().min(80)]).into_owned()),
        String::from_utf8_lossy(&expected[..expected.len().min(80)]),
    );
}

/// For every connection the server recorded, the captured request stream must equal what the
/// server read and the captured response stream what it wrote; every captured connection that
/// carried data must be one the server recorded.
pub fn assert_streams_match(
    recordings: &BTreeMap<u16, Recording>,
    segments: &[Segment],
    client: std::net::IpAddr,
    server: SocketAddr,
) -> Comparison {
    assert_streams_match_except(recordings, segments, client, server, &BTreeSet::new())
}

/// [`assert_streams_match`] leaving out client ports used by several connections.
pub fn assert_streams_match_except(
    recordings: &BTreeMap<u16, Recording>,
    segments: &[Segment],
    client: std::net::IpAddr,
    server: SocketAddr,
    reused_ports: &BTreeSet<u16>,
) -> Comparison {
    let streams = assemble(segments);
    let mut comparison = Comparison::default();
    for (port, recording) in recordings {
        let flow = FlowKey {
            client: SocketAddr::new(client, *port),
            server,
        };
        check(
            flow,
            Direction::Request,
            streams.get(&(flow, Direction::Request)),
            &recording.request,
            true,
        );
        if !recording.complete {
            comparison.responses_not_compared += 1;
        }
        check(
            flow,
            Direction::Response,
            streams.get(&(flow, Direction::Response)),
            &recording.response,
            recording.complete,
        );
        comparison.connections += 1;
        comparison.request_bytes += recording.request.len();
        comparison.response_bytes += recording.response.len();
    }
    for ((flow, direction), stream) in &streams {
        if *direction == Direction::Request
            && !stream.bytes.is_empty()
            && !reused_ports.contains(&flow.client.port())
        {
            assert!(
                recordings.contains_key(&flow.client.port()),
                "{flow}: captured {} request bytes the server never recorded",
                stream.bytes.len()
            );
        }
    }
    comparison
}
