//! Drives `Http2Connection` (frames, HPACK, streams) with arbitrary bytes in arbitrary chunks on
//! both directions, and capture gaps.
//!
//! Input format (simple so seeds can be written by hand, see `corpus/http2_framing/`): a first
//! byte of options (bit 0: feed the client preface and both sides' empty SETTINGS first, so the
//! rest goes straight to the frame layer), then records `op, len, bytes[len]`:
//! - `op & 1`: the direction (0 request, 1 response);
//! - `op & 6 == 6`: a gap of `len` bytes in that direction (no bytes follow);
//! - `op & 8`: the connection closes after this record;
//! - otherwise `len` bytes (as many as remain) fed to that direction.
//!
//! Invariants checked after every record: no panic; memory held under the limits; events
//! consistent (nothing for a stream before its request or after its end, reset or loss, nothing
//! at all after the connection's end) and counted.

#![no_main]

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mirror::http2::{Http2Config, Http2Connection, Http2Event};
use mirror::segment::Direction;

const MAX_BLOCK: usize = 2048;
const MAX_STREAMS: usize = 4;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

/// What the events said so far about each stream: which directions ended.
#[derive(Default)]
struct Check {
    open: HashMap<u32, [bool; 2]>,
    done: HashSet<u32>,
    requests: u64,
    ended: bool,
}

impl Check {
    fn event(&mut self, event: Http2Event) {
        assert!(!self.ended, "event after the end: {event:?}");
        match event {
            Http2Event::Request { stream, head } => {
                assert!(stream % 2 == 1);
                assert!(!head.method().is_empty());
                assert!(!self.done.contains(&stream) && !self.open.contains_key(&stream));
                self.open.insert(stream, [false; 2]);
                self.requests += 1;
            }
            Http2Event::Response { stream, head } => {
                let ends = self.open.get(&stream).expect("response to a request");
                assert!(!ends[1]);
                assert!((100..1000).contains(&head.status));
            }
            Http2Event::Data {
                stream,
                direction,
                data,
            } => {
                assert!(!data.is_empty());
                assert!(!self.open.get(&stream).expect("data of a request")[direction as usize]);
            }
            Http2Event::Trailers {
                stream, direction, ..
            } => {
                assert!(
                    !self.open.get(&stream).expect("trailers of a request")[direction as usize]
                );
            }
            Http2Event::End { stream, direction } => {
                let ends = self.open.get_mut(&stream).expect("end of a request");
                assert!(!ends[direction as usize]);
                ends[direction as usize] = true;
                if *ends == [true; 2] {
                    self.open.remove(&stream);
                    self.done.insert(stream);
                }
            }
            Http2Event::Reset { stream, .. } => {
                assert!(
                    self.open.remove(&stream).is_some(),
                    "reset of a tracked stream"
                );
                self.done.insert(stream);
            }
            Http2Event::StreamLost { stream, .. } => {
                assert!(!self.done.contains(&stream));
                self.open.remove(&stream);
                self.done.insert(stream);
            }
            Http2Event::GoAway { .. } => {}
            Http2Event::Ended { .. } => {
                assert!(self.open.is_empty(), "streams lost before the end");
                self.ended = true;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, mut rest)) = data.split_first() else {
        return;
    };
    let config = Http2Config {
        max_header_block_bytes: MAX_BLOCK,
        max_header_list_bytes: 4096,
        max_table_size: 4096,
        max_streams: MAX_STREAMS,
    };
    let mut connection = Http2Connection::new(&config);
    let mut check = Check::default();
    if options & 1 == 1 {
        let mut start = PREFACE.to_vec();
        start.extend_from_slice(&EMPTY_SETTINGS);
        connection.on_bytes(Direction::Request, start.into());
        connection.on_bytes(Direction::Response, Bytes::from_static(&EMPTY_SETTINGS));
    }
    while let [op, len, tail @ ..] = rest {
        let direction = if op & 1 == 0 {
            Direction::Request
        } else {
            Direction::Response
        };
        if op & 6 == 6 {
            connection.on_gap(direction, u64::from(*len));
            rest = tail;
        } else {
            let len = usize::from(*len).min(tail.len());
            connection.on_bytes(direction, Bytes::copy_from_slice(&tail[..len]));
            rest = &tail[len..];
        }
        if op & 8 == 8 {
            connection.on_close();
        }
        while let Some(event) = connection.poll_event() {
            check.event(event);
        }
        // Input is read whole; only header blocks in progress are held.
        assert!(connection.buffered_bytes() <= 2 * MAX_BLOCK);
        assert!(connection.active_streams() <= MAX_STREAMS);
        assert_eq!(connection.active_streams(), check.open.len());
        assert_eq!(connection.stats().streams_opened, check.requests);
        assert_eq!(connection.ended().is_some(), check.ended);
    }
});
