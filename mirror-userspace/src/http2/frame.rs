//! HTTP/2 frames (RFC 9113 §4, §6): the wire constants and what the
//! [`FrameReader`](super::FrameReader) yields.

use bytes::Bytes;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const FRAME_HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE before any SETTINGS, and its smallest legal value.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// Largest legal SETTINGS_MAX_FRAME_SIZE (2^24 - 1).
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

/// Frame type codes (RFC 9113 §6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6).
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Setting identifiers (RFC 9113 §6.5.2).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// The 9-byte frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length (24 bits).
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// Stream identifier, reserved bit cleared.
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(bytes: [u8; FRAME_HEADER_LEN]) -> Self {
        Self {
            len: u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]),
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let len = self.len.to_be_bytes();
        let stream = self.stream.to_be_bytes();
        [
            len[1], len[2], len[3], self.kind, self.flags, stream[0], stream[1], stream[2],
            stream[3],
        ]
    }

    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// The settings of one SETTINGS frame (the last value of each identifier wins, RFC 9113
/// §6.5.3); unknown identifiers are ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub header_table_size: Option<u32>,
    pub enable_push: Option<u32>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_window_size: Option<u32>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
}

impl Settings {
    pub(super) fn set(&mut self, id: u16, value: u32) -> Result<(), FrameError> {
        let slot = match id {
            setting::HEADER_TABLE_SIZE => &mut self.header_table_size,
            setting::ENABLE_PUSH if value <= 1 => &mut self.enable_push,
            setting::MAX_CONCURRENT_STREAMS => &mut self.max_concurrent_streams,
            setting::INITIAL_WINDOW_SIZE if value <= 0x7fff_ffff => &mut self.initial_window_size,
            setting::MAX_FRAME_SIZE
                if (DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) =>
            {
                &mut self.max_frame_size
            }
            setting::MAX_HEADER_LIST_SIZE => &mut self.max_header_list_size,
            setting::ENABLE_PUSH | setting::INITIAL_WINDOW_SIZE | setting::MAX_FRAME_SIZE => {
                return Err(FrameError::BadSetting);
            }
            _ => return Ok(()),
        };
        *slot = Some(value);
        Ok(())
    }
}

/// The PRIORITY fields of a HEADERS or PRIORITY frame (deprecated by RFC 9113, still parsed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority {
    pub dependency: u32,
    pub exclusive: bool,
    pub weight: u8,
}

impl Priority {
    pub(super) fn parse(bytes: [u8; 5]) -> Self {
        let word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        Self {
            dependency: word & 0x7fff_ffff,
            exclusive: word & 0x8000_0000 != 0,
            weight: bytes[4],
        }
    }
}

/// What a [`FrameReader`](super::FrameReader) yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The client preface was read whole.
    Preface,
    /// A piece of a DATA frame's data (padding removed). Every DATA frame ends with one piece
    /// with `end_of_frame` set (possibly empty); `end_stream` is only set on that one.
    Data {
        stream: u32,
        data: Bytes,
        end_of_frame: bool,
        end_stream: bool,
    },
    /// A complete header block: HEADERS plus its CONTINUATIONs, padding and priority removed.
    Headers {
        stream: u32,
        end_stream: bool,
        priority: Option<Priority>,
        block: Bytes,
    },
    /// A complete PUSH_PROMISE header block.
    PushPromise {
        stream: u32,
        promised: u32,
        block: Bytes,
    },
    Priority {
        stream: u32,
        priority: Priority,
    },
    RstStream {
        stream: u32,
        error_code: u32,
    },
    Settings {
        ack: bool,
        settings: Settings,
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    /// GOAWAY (its debug data is skipped).
    GoAway {
        last_stream_id: u32,
        error_code: u32,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    /// A frame of an unknown type, skipped (RFC 9113 §4.1).
    Unknown {
        kind: u8,
        stream: u32,
        len: u32,
    },
}

/// Connection errors of the frame layer: reading stops for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// The client's first bytes are not the preface, or the server's first frame is not a
    /// SETTINGS frame: the capture joined the connection after its start.
    NoPreface,
    /// Longer than the SETTINGS_MAX_FRAME_SIZE the receiver allowed.
    FrameTooLarge,
    /// A header block over the configured limit.
    HeaderBlockTooLarge,
    /// Stream identifier 0 where a stream is needed, or the reverse.
    BadStreamId,
    /// A payload length the frame type does not allow.
    BadLength,
    /// Padding longer than the payload.
    BadPadding,
    /// CONTINUATION where none was expected, or another frame where one was.
    BadContinuation,
    /// A setting value out of its range.
    BadSetting,
    /// Bytes were lost where the framing needed them
    /// ([`FrameReader::gap`](super::FrameReader::gap)).
    Gap,
}

impl FrameError {
    /// Metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoPreface => "no_preface",
            Self::FrameTooLarge => "frame_too_large",
            Self::HeaderBlockTooLarge => "header_block_too_large",
            Self::BadStreamId => "bad_stream_id",
            Self::BadLength => "bad_length",
            Self::BadPadding => "bad_padding",
            Self::BadContinuation => "bad_continuation",
            Self::BadSetting => "bad_setting",
            Self::Gap => "gap",
        }
    }
}

/// What a capture gap did to the frame in progress
/// ([`FrameReader::gap`](super::FrameReader::gap)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapOutcome {
    /// It fell inside a payload that carries nothing reported (PING, WINDOW_UPDATE, PRIORITY,
    /// GOAWAY, unknown types): reading goes on.
    Harmless,
    /// It fell inside the payload of a DATA or RST_STREAM frame of this stream: that stream's
    /// content is lost, reading goes on after the frame.
    StreamLost(u32),
    /// It hit a frame header, a header block, a SETTINGS frame or crossed a frame's end: the
    /// framing or the HPACK state is lost, reading stops.
    Fatal,
}
