//! One HTTP/2 connection: both directions' frames and header blocks, streams paired by id.

use std::collections::VecDeque;

use bytes::Bytes;

use super::Http2Config;
use super::event::{
    EndReason, Http2Event, Http2Stats, RequestHead, ResponseHead, StreamLossReason,
};
use super::frame::{Frame, FrameError, GapOutcome};
use super::hpack::{AnnouncedSettings, HeaderList, HpackDecoder};
use super::reader::FrameReader;
use crate::hash::HashMap;
use crate::segment::Direction;

/// One direction: its frames, its HPACK table, and the receiver's settings that bound both.
#[derive(Debug)]
struct Half {
    reader: FrameReader,
    decoder: HpackDecoder,
    /// What the receiver of this direction announced.
    receiver: AnnouncedSettings,
}

impl Half {
    fn new(direction: Direction, config: &Http2Config) -> Self {
        let reader = match direction {
            Direction::Request => FrameReader::client(config.max_header_block_bytes),
            Direction::Response => FrameReader::server(config.max_header_block_bytes),
        };
        Self {
            reader,
            decoder: HpackDecoder::new(config.max_table_size, config.max_header_list_bytes),
            receiver: AnnouncedSettings::default(),
        }
    }
}

/// Progress of one direction of a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Side {
    /// No (final, for a response) head yet.
    #[default]
    Idle,
    Open,
    Ended,
}

#[derive(Debug, Default)]
struct Stream {
    sides: [Side; 2],
}

const fn other(direction: Direction) -> Direction {
    match direction {
        Direction::Request => Direction::Response,
        Direction::Response => Direction::Request,
    }
}

/// An HTTP/2 connection with prior knowledge (h2c), fed the bytes of each direction in capture
/// order; reports [`Http2Event`]s.
///
/// The two directions must be fed in the order they were captured (as the reassembler delivers
/// them): a response can only be paired with a request already read, and a SETTINGS frame
/// bounds the other direction from the moment it is read.
#[derive(Debug)]
pub struct Http2Connection {
    halves: [Half; 2],
    streams: HashMap<u32, Stream>,
    /// Highest stream the client opened: a HEADERS frame on a stream at or below it is not a new
    /// stream (RFC 9113 §5.1.1).
    last_client_stream: u32,
    max_streams: usize,
    events: VecDeque<Http2Event>,
    stats: Http2Stats,
}

impl Http2Connection {
    /// A connection whose start is about to be fed.
    pub fn new(config: &Http2Config) -> Self {
        Self {
            halves: [
                Half::new(Direction::Request, config),
                Half::new(Direction::Response, config),
            ],
            streams: HashMap::default(),
            last_client_stream: 0,
            max_streams: config.max_streams,
            events: VecDeque::new(),
            stats: Http2Stats::default(),
        }
    }

    /// Feeds the next bytes of `direction`.
    pub fn on_bytes(&mut self, direction: Direction, data: Bytes) {
        if self.stats.ended.is_some() {
            return;
        }
        self.halves[direction as usize].reader.push(data);
        while self.stats.ended.is_none() {
            match self.halves[direction as usize].reader.next_frame() {
                Ok(Some(frame)) => self.on_frame(direction, frame),
                Ok(None) => break,
                Err(FrameError::NoPreface) => self.end(EndReason::Joined),
                Err(FrameError::Gap) => self.end(EndReason::Gap),
                Err(error) => self.end(EndReason::Frame(error)),
            }
        }
    }

    /// `len` bytes of `direction` were lost after the bytes fed so far.
    pub fn on_gap(&mut self, direction: Direction, len: u64) {
        if self.stats.ended.is_some() {
            return;
        }
        match self.halves[direction as usize].reader.gap(len) {
            GapOutcome::Harmless => self.stats.gaps_survived += 1,
            GapOutcome::StreamLost(stream) => {
                self.stats.gaps_survived += 1;
                self.lose(stream, StreamLossReason::Gap);
            }
            GapOutcome::Fatal => self.end(EndReason::Gap),
        }
    }

    /// The connection closed (FIN or RST): the streams in progress are lost.
    pub fn on_close(&mut self) {
        self.lose_all(|_| true, StreamLossReason::Closed);
    }

    /// Next output event, oldest first.
    pub fn poll_event(&mut self) -> Option<Http2Event> {
        self.events.pop_front()
    }

    pub fn stats(&self) -> &Http2Stats {
        &self.stats
    }

    /// Why mirroring ended, if it did.
    pub fn ended(&self) -> Option<EndReason> {
        self.stats.ended
    }

    /// Streams tracked now.
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes held by the frame readers (partial frames, header blocks in progress).
    pub fn buffered_bytes(&self) -> usize {
        self.halves
            .iter()
            .map(|half| half.reader.buffered_bytes())
            .sum()
    }

    fn end(&mut self, reason: EndReason) {
        if self.stats.ended.is_some() {
            return;
        }
        self.lose_all(|_| true, StreamLossReason::ConnectionEnded);
        self.stats.ended = Some(reason);
        self.events.push_back(Http2Event::Ended { reason });
        // Frees the buffers and dynamic tables.
        let config = Http2Config {
            max_header_block_bytes: 0,
            max_table_size: 0,
            ..Http2Config::default()
        };
        self.halves = [
            Half::new(Direction::Request, &config),
            Half::new(Direction::Response, &config),
        ];
    }

    /// Gives up the tracked streams `which` selects, in stream order.
    fn lose_all(&mut self, which: impl Fn(u32) -> bool, reason: StreamLossReason) {
        let mut ids: Vec<u32> = self
            .streams
            .keys()
            .copied()
            .filter(|&id| which(id))
            .collect();
        ids.sort_unstable();
        for stream in ids {
            self.lose(stream, reason);
        }
    }

    fn lose(&mut self, stream: u32, reason: StreamLossReason) {
        if self.streams.remove(&stream).is_some() {
            self.stats.streams_lost[reason as usize] += 1;
            self.events
                .push_back(Http2Event::StreamLost { stream, reason });
        }
    }

    fn on_frame(&mut self, direction: Direction, frame: Frame) {
        if !matches!(
            frame,
            Frame::Data {
                end_of_frame: false,
                ..
            } | Frame::Preface
        ) {
            self.stats.frames += 1;
        }
        match frame {
            Frame::Preface | Frame::Ping { .. } | Frame::WindowUpdate { .. } => {}
            Frame::Priority { .. } => {}
            Frame::Unknown { .. } => self.stats.frames_unknown += 1,
            Frame::Settings { ack: true, .. } => {
                let half = &mut self.halves[direction as usize];
                half.receiver.acknowledge();
                half.reader
                    .set_max_frame_size(half.receiver.max_frame_size());
            }
            Frame::Settings {
                ack: false,
                settings,
            } => {
                let half = &mut self.halves[other(direction) as usize];
                half.receiver.announce(settings);
                half.reader
                    .set_max_frame_size(half.receiver.max_frame_size());
            }
            Frame::Headers {
                stream,
                end_stream,
                block,
                ..
            } => {
                if let Some(fields) = self.decode(direction, &block) {
                    self.on_headers(direction, stream, end_stream, fields);
                }
            }
            Frame::PushPromise { block, .. } => {
                // Decoded only to keep the table in step.
                if self.decode(direction, &block).is_some() {
                    self.stats.pushes_ignored += 1;
                }
            }
            Frame::Data {
                stream,
                data,
                end_of_frame,
                end_stream,
            } => self.on_data(direction, stream, data, end_of_frame, end_stream),
            Frame::RstStream { stream, error_code } => {
                if self.streams.remove(&stream).is_some() {
                    self.stats.streams_reset += 1;
                    self.events.push_back(Http2Event::Reset {
                        stream,
                        direction,
                        error_code,
                    });
                } else {
                    self.stats.frames_ignored += 1;
                }
            }
            Frame::GoAway {
                last_stream_id,
                error_code,
            } => {
                self.events.push_back(Http2Event::GoAway {
                    direction,
                    last_stream_id,
                    error_code,
                });
                // The client's streams above it were not processed (RFC 9113 §6.8).
                if direction == Direction::Response {
                    self.lose_all(|id| id > last_stream_id, StreamLossReason::Refused);
                }
            }
        }
    }

    fn decode(&mut self, direction: Direction, block: &[u8]) -> Option<HeaderList> {
        let half = &mut self.halves[direction as usize];
        match half.decoder.decode(block, half.receiver.table_size()) {
            Ok(fields) => {
                self.stats.header_blocks += 1;
                Some(fields)
            }
            Err(error) => {
                self.end(EndReason::Hpack(error));
                None
            }
        }
    }

    fn on_headers(
        &mut self,
        direction: Direction,
        stream: u32,
        end_stream: bool,
        fields: HeaderList,
    ) {
        // Even streams are pushed by the server; the client never opens them.
        if stream.is_multiple_of(2) {
            self.stats.frames_ignored += 1;
            return;
        }
        if direction == Direction::Request
            && stream > self.last_client_stream
            && !self.streams.contains_key(&stream)
        {
            self.last_client_stream = stream;
            if self.streams.len() >= self.max_streams {
                self.stats.streams_untracked += 1;
                return;
            }
            if fields.get(b":method").is_none_or(<[u8]>::is_empty) {
                self.stats.streams_lost[StreamLossReason::Malformed as usize] += 1;
                self.events.push_back(Http2Event::StreamLost {
                    stream,
                    reason: StreamLossReason::Malformed,
                });
                return;
            }
            self.stats.streams_opened += 1;
            self.streams.insert(
                stream,
                Stream {
                    sides: [Side::Open, Side::Idle],
                },
            );
            self.events.push_back(Http2Event::Request {
                stream,
                head: RequestHead { fields },
            });
            if end_stream {
                self.end_side(direction, stream);
            }
            return;
        }
        let Some(state) = self.streams.get_mut(&stream) else {
            self.stats.frames_ignored += 1;
            return;
        };
        let event = match state.sides[direction as usize] {
            Side::Idle => {
                let Some(status) = fields.get(b":status").and_then(parse_status) else {
                    return self.lose(stream, StreamLossReason::Malformed);
                };
                let head = ResponseHead { status, fields };
                if head.is_informational() {
                    if end_stream {
                        return self.lose(stream, StreamLossReason::Malformed);
                    }
                } else {
                    state.sides[direction as usize] = Side::Open;
                }
                Http2Event::Response { stream, head }
            }
            // Trailers end the stream (RFC 9113 §8.1).
            Side::Open if end_stream => Http2Event::Trailers {
                stream,
                direction,
                fields,
            },
            Side::Open | Side::Ended => return self.lose(stream, StreamLossReason::Malformed),
        };
        self.events.push_back(event);
        if end_stream {
            self.end_side(direction, stream);
        }
    }

    fn on_data(
        &mut self,
        direction: Direction,
        stream: u32,
        data: Bytes,
        end_of_frame: bool,
        end_stream: bool,
    ) {
        let Some(state) = self.streams.get(&stream) else {
            if end_of_frame {
                self.stats.frames_ignored += 1;
            }
            return;
        };
        if state.sides[direction as usize] != Side::Open {
            return self.lose(stream, StreamLossReason::Malformed);
        }
        if !data.is_empty() {
            self.events.push_back(Http2Event::Data {
                stream,
                direction,
                data,
            });
        }
        if end_stream {
            self.end_side(direction, stream);
        }
    }

    /// END_STREAM on a tracked stream's open side.
    fn end_side(&mut self, direction: Direction, stream: u32) {
        self.events.push_back(Http2Event::End { stream, direction });
        let Some(state) = self.streams.get_mut(&stream) else {
            return;
        };
        state.sides[direction as usize] = Side::Ended;
        if state.sides == [Side::Ended; 2] {
            self.streams.remove(&stream);
            self.stats.streams_completed += 1;
        }
    }
}

/// A `:status` of three digits.
fn parse_status(value: &[u8]) -> Option<u16> {
    match value {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}
