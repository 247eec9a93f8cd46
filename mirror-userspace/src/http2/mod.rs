//! HTTP/2 with prior knowledge (h2c, gRPC included), I/O-free: the frame layer, HPACK, and
//! streams paired by id.
//!
//! ```text
//! (direction, bytes) ─▶ FrameReader ─▶ Frame ─▶ HpackDecoder (header blocks) ─▶ Http2Event
//! ```
//!
//! [`Http2Connection`] is fed the reassembled bytes of both directions of one connection, in
//! capture order, and reports each stream's request and response (heads, body pieces, trailers,
//! end), resets, GOAWAYs and losses. Memory is bounded by [`Http2Config`]: DATA is handed on as
//! it arrives, header blocks are buffered up to a limit, the HPACK tables and decoded lists are
//! capped, and at most `max_streams` streams are tracked at once.
//!
//! # Losses
//!
//! Every header block of a direction must be decoded, tracked stream or not, for the dynamic
//! table to stay in step. So a capture gap ([`Http2Connection::on_gap`]) is survivable only
//! where it cannot hide a header block: inside a DATA payload of known length (that stream is
//! lost, [`StreamLossReason::Gap`]) or inside a control frame that reports nothing. A gap
//! anywhere else ends the connection's mirroring ([`EndReason::Gap`]): nothing is reported
//! after it, so nothing is ever reported wrong. A connection whose start was not captured (no
//! client preface) is [`EndReason::Joined`] and not decoded. Server push is not mirrored:
//! PUSH_PROMISE blocks are decoded (for the table) and counted.

mod connection;
mod event;
pub mod frame;
pub mod hpack;
mod reader;

#[cfg(test)]
mod tests;

pub use self::connection::Http2Connection;
pub use self::event::{
    EndReason, Http2Event, Http2Stats, RequestHead, ResponseHead, StreamLossReason,
};
pub use self::frame::{Frame, FrameError, FrameHeader, GapOutcome, Settings};
pub use self::hpack::{HeaderList, HpackDecoder, HpackError};
pub use self::reader::FrameReader;

/// Limits of an [`Http2Connection`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Http2Config {
    /// Bytes of one header block (HEADERS or PUSH_PROMISE plus CONTINUATIONs) as sent;
    /// beyond, the connection ends ([`FrameError::HeaderBlockTooLarge`]).
    pub max_header_block_bytes: usize,
    /// Decoded size of one header list (RFC 7541 §4.1: names, values, 32 per field); beyond,
    /// the connection ends ([`HpackError::ListTooLarge`]).
    pub max_header_list_bytes: usize,
    /// Largest HPACK dynamic table per direction (at least 4096, the protocol's initial size);
    /// a size update above it ends the connection ([`HpackError::TableTooLarge`]).
    pub max_table_size: usize,
    /// Streams tracked at once; a stream opened beyond is counted
    /// ([`Http2Stats::streams_untracked`]) and not reported.
    pub max_streams: usize,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            max_header_block_bytes: 65_536,
            max_header_list_bytes: 65_536,
            max_table_size: 65_536,
            max_streams: 128,
        }
    }
}
