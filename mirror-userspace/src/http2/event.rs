//! What an [`Http2Connection`](super::Http2Connection) reports, and its counters.

use bytes::Bytes;

use super::frame::FrameError;
use super::hpack::{HeaderList, HpackError};
use crate::segment::Direction;

/// A request's header block: the decoded fields in wire order, pseudo-header fields first.
///
/// The raw block cannot be replayed (it indexes the connection's dynamic table); the field list
/// is what a replay re-encodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub fields: HeaderList,
}

impl RequestHead {
    pub fn method(&self) -> &[u8] {
        self.fields.get(b":method").unwrap_or_default()
    }

    /// `None` for CONNECT.
    pub fn scheme(&self) -> Option<&[u8]> {
        self.fields.get(b":scheme")
    }

    pub fn authority(&self) -> Option<&[u8]> {
        self.fields.get(b":authority")
    }

    /// `None` for CONNECT.
    pub fn path(&self) -> Option<&[u8]> {
        self.fields.get(b":path")
    }
}

/// A response's header block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub fields: HeaderList,
}

impl ResponseHead {
    /// A 1xx block: the final response is still to come.
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

/// Output of [`Http2Connection::poll_event`](super::Http2Connection::poll_event).
///
/// A stream that got an [`Http2Event::Request`] ends in exactly one way: an
/// [`Http2Event::End`] in both directions, an [`Http2Event::Reset`], or an
/// [`Http2Event::StreamLost`]. Nothing is reported for it after that. A stream whose request
/// head was malformed gets only its [`Http2Event::StreamLost`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Http2Event {
    /// The client opened a stream.
    Request { stream: u32, head: RequestHead },
    /// A response header block: informational (1xx, several may come) or the final one. A
    /// Trailers-Only response (gRPC) is a final head followed at once by its `End`.
    Response { stream: u32, head: ResponseHead },
    /// Body bytes as they arrived (padding removed; never empty).
    Data {
        stream: u32,
        direction: Direction,
        data: Bytes,
    },
    /// A header block after the body (gRPC puts `grpc-status` here).
    Trailers {
        stream: u32,
        direction: Direction,
        fields: HeaderList,
    },
    /// The direction's message is complete (END_STREAM).
    End { stream: u32, direction: Direction },
    /// RST_STREAM sent in `direction`.
    Reset {
        stream: u32,
        direction: Direction,
        error_code: u32,
    },
    /// The stream will not be reported whole.
    StreamLost {
        stream: u32,
        reason: StreamLossReason,
    },
    /// GOAWAY sent in `direction`.
    GoAway {
        direction: Direction,
        last_stream_id: u32,
        error_code: u32,
    },
    /// Mirroring of the connection ended; nothing is reported after this.
    Ended { reason: EndReason },
}

/// Why a stream was given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamLossReason {
    /// A capture gap inside one of its DATA (or RST_STREAM) frames.
    Gap,
    /// Its frames contradicted the protocol (DATA before HEADERS, a response without a valid
    /// `:status`, a request without a `:method`, a second header block without END_STREAM).
    Malformed,
    /// The server's GOAWAY announced it was not processed.
    Refused,
    /// Mirroring of the connection ended while it was in progress.
    ConnectionEnded,
    /// The connection closed while it was in progress.
    Closed,
}

impl StreamLossReason {
    pub const ALL: [Self; 5] = [
        Self::Gap,
        Self::Malformed,
        Self::Refused,
        Self::ConnectionEnded,
        Self::Closed,
    ];

    /// Metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gap => "gap",
            Self::Malformed => "malformed",
            Self::Refused => "refused",
            Self::ConnectionEnded => "connection_ended",
            Self::Closed => "closed",
        }
    }
}

/// Why mirroring of a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// No preface at the start of the client's bytes (or no SETTINGS first from the server):
    /// joined mid-stream, nothing is decoded.
    Joined,
    /// A capture gap hit a frame header, a header block or a SETTINGS frame: the framing or
    /// the dynamic table is lost.
    Gap,
    /// A connection error of the frame layer (the endpoints close the connection too).
    Frame(FrameError),
    /// A header block that did not decode: the dynamic table is lost.
    Hpack(HpackError),
}

impl EndReason {
    /// Metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Joined => "joined",
            Self::Gap => "gap",
            Self::Frame(error) => error.as_str(),
            Self::Hpack(HpackError::Malformed) => "hpack_malformed",
            Self::Hpack(HpackError::TableSizeExceeded) => "hpack_table_size_exceeded",
            Self::Hpack(HpackError::TableTooLarge) => "hpack_table_too_large",
            Self::Hpack(HpackError::ListTooLarge) => "header_list_too_large",
        }
    }
}

/// Counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http2Stats {
    /// Frames read, both directions (a DATA frame counts once).
    pub frames: u64,
    /// Header blocks decoded (HEADERS and PUSH_PROMISE, tracked stream or not).
    pub header_blocks: u64,
    /// Streams tracked (a [`Http2Event::Request`] each).
    pub streams_opened: u64,
    /// Streams not tracked: more than `max_streams` open at once. Their header blocks are still
    /// decoded.
    pub streams_untracked: u64,
    /// Streams ended in both directions.
    pub streams_completed: u64,
    /// Tracked streams reset.
    pub streams_reset: u64,
    /// Tracked streams given up, by [`StreamLossReason`] (indexed by its position in `ALL`).
    pub streams_lost: [u64; StreamLossReason::ALL.len()],
    /// PUSH_PROMISE frames (pushed streams are not mirrored).
    pub pushes_ignored: u64,
    /// Frames of streams not tracked (untracked, ended, pushed), ignored.
    pub frames_ignored: u64,
    /// Frames of unknown types.
    pub frames_unknown: u64,
    /// Gaps that lost only what one frame carried (the framing went on).
    pub gaps_survived: u64,
    /// Why mirroring ended, if it did.
    pub ended: Option<EndReason>,
}

impl Http2Stats {
    pub fn streams_lost(&self, reason: StreamLossReason) -> u64 {
        self.streams_lost[reason as usize]
    }
}
