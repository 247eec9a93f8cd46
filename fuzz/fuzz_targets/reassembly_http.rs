//! Drives `HttpTracker` (reassembly + HTTP framing) with arbitrary segments and ticks.
//!
//! Input format (simple so seeds can be written by hand, see `corpus/reassembly_http/`):
//! a sequence of records.
//! - `op < 0x80`: a segment. `op & 3` picks one of four connections, bit 2 the direction
//!   (0 request, 1 response), bit 3 whether to take the sequence number as given (an `i8`
//!   offset from the next expected byte of that direction) or exactly the next byte. Then:
//!   flags byte, offset byte, length byte (payload length, up to 255), payload.
//! - `op >= 0x80`: a tick; time advances by `(op & 0x7f) * 50 ms`.
//!
//! Invariants checked after every record: no panic, buffered bytes under the configured cap,
//! connection count under its cap, and counters consistent with the events polled.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mirror::http::{HttpConfig, HttpEvent, HttpTracker, TrackerConfig};
use mirror::reassembly::ReassemblyConfig;
use mirror::segment::{Direction, FlowKey, Segment, TcpFlags};

const MEMORY_CAP: usize = 4096;
const MAX_CONNECTIONS: usize = 3;

fn flow(connection: u8) -> FlowKey {
    FlowKey {
        client: ([198, 18, 0, 1], 40_000 + u16::from(connection)).into(),
        server: ([198, 18, 0, 2], 8080).into(),
    }
}

fuzz_target!(|data: &[u8]| {
    // Both ways of pairing: with and without a copy of the request on the response.
    let label_responses = data.first().is_some_and(|byte| byte & 1 == 1);
    // With and without the replay marker (requests carrying it are framed and skipped, their
    // connection's responses not reported).
    let replay_marker = data
        .first()
        .is_some_and(|byte| byte & 2 == 2)
        .then(|| Box::from(&b"x-mirror-replay"[..]));
    let config = TrackerConfig {
        reassembly: ReassemblyConfig {
            reassembly_memory_bytes: MEMORY_CAP,
            max_connections: MAX_CONNECTIONS,
            idle_timeout_secs: 1,
            max_out_of_order_bytes: 2048,
            gap_timeout_ms: 100,
        },
        http: HttpConfig {
            max_message_bytes: 2048,
            max_headers: 16,
            max_head_bytes: 1024,
            max_pipelined_requests: 8,
            // Short, so that the fuzzer's clock reaches quiet points.
            resync_quiet_ns: 50_000,
            label_responses,
            replay_marker,
        },
    };
    let mut tracker = HttpTracker::new(config);
    // Next sequence number per connection and direction.
    let mut next = [[1_000u32, 500_000u32]; 4];
    let mut now = 1_000_000_000u64;
    let (mut requests, mut responses) = (0u64, 0u64);
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        if op >= 0x80 {
            now += u64::from(op & 0x7f) * 50_000_000;
            tracker.on_tick(now);
        } else {
            let [flags, offset, len, tail @ ..] = rest else {
                break;
            };
            let len = usize::from(*len).min(tail.len());
            let payload = Bytes::copy_from_slice(&tail[..len]);
            rest = &tail[len..];
            let connection = op & 3;
            let direction = if op & 4 == 0 {
                Direction::Request
            } else {
                Direction::Response
            };
            let cursor = &mut next[usize::from(connection)];
            let (own, other) = match direction {
                Direction::Request => (cursor[0], cursor[1]),
                Direction::Response => (cursor[1], cursor[0]),
            };
            let seq = if op & 8 == 0 {
                own
            } else {
                own.wrapping_add_signed(i32::from(*offset as i8))
            };
            let flags = TcpFlags(*flags);
            let end = seq
                .wrapping_add(len as u32)
                .wrapping_add(u32::from(flags.syn() || flags.fin()));
            if (end.wrapping_sub(own) as i32) > 0 {
                cursor[direction as usize] = end;
            }
            now += 1_000;
            tracker.on_segment(&Segment {
                flow: flow(connection),
                direction,
                seq,
                ack: other,
                flags,
                timestamp_ns: now,
                ifindex: 1,
                segment_len: len as u32,
                chunk_offset: 0,
                payload,
            });
        }
        while let Some(event) = tracker.poll_event() {
            match event {
                HttpEvent::Request(request) => {
                    requests += 1;
                    let bytes = request.request.bytes();
                    assert!(bytes.starts_with(request.request.method().as_bytes()));
                    assert!(!request.request.method().is_empty());
                    if request.skip.is_none() {
                        assert!(bytes.len() >= request.request.head_len());
                        assert!(bytes.len() <= 2048);
                    }
                }
                HttpEvent::Response(response) => {
                    responses += 1;
                    assert!(response.request.is_none() || response.request_index.is_some());
                    assert!(label_responses || response.request.is_none());
                    // Paired, or counted with why not: never both, never neither.
                    assert_eq!(
                        response.request_index.is_some(),
                        response.unpaired.is_none()
                    );
                }
                HttpEvent::ConnectionSkipped { .. }
                | HttpEvent::Lost(_)
                | HttpEvent::Unpairable { .. }
                | HttpEvent::Gap { .. }
                | HttpEvent::Unframed { .. } => {}
            }
        }
        assert!(tracker.buffered_bytes() <= MEMORY_CAP);
        assert!(tracker.active_connections() <= MAX_CONNECTIONS);
        let stats = tracker.stats();
        assert_eq!(stats.http.requests_total, requests);
        assert_eq!(stats.http.responses_total, responses);
        assert!(stats.http.requests_total <= stats.http.requests_started);
        assert_eq!(
            stats.http.responses_paired + stats.http.responses_unpaired.total(),
            stats.http.responses_total
        );
    }
    tracker.drain();
    assert_eq!(tracker.active_connections(), 0);
    assert_eq!(tracker.buffered_bytes(), 0);
});
