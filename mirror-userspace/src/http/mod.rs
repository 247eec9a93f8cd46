//! HTTP/1.x request and response framing (I/O-free), and [`HttpTracker`], the entry point of the
//! capture core: segments in, requests and responses out.
//!
//! ```text
//! Segment ─▶ reassembly::Reassembler ─▶ StreamEvent ─▶ RequestFramer / ResponseFramer ─▶ HttpEvent
//! ```
//!
//! The tracker never reads a clock or touches a socket: time is the kernel timestamp of each
//! segment and the `now_ns` given to [`HttpTracker::on_tick`].
//!
//! # How a request ends
//!
//! Every request whose head was parsed gets a per-connection index and ends in exactly one way:
//!
//! - **emitted**: an [`HttpEvent::Request`] with the exact wire bytes (replayable when
//!   [`RequestEvent::skip`] is `None`; otherwise framed but not to be replayed: `too_large`,
//!   `upgrade`, `connect`);
//! - **lost**: an [`HttpEvent::Lost`] with a [`LossReason`] (gap, malformed, truncated by FIN,
//!   reset, evicted, connection skipped), counted in [`HttpStats::requests_lost`].
//!
//! Connections that are not HTTP/1.x (TLS, HTTP/2 prior knowledge) or stop being it (Upgrade,
//! CONNECT) produce one [`HttpEvent::ConnectionSkipped`] and nothing after it. Requests that a gap
//! swallowed whole cannot be seen at all; the gap itself is counted
//! ([`ReassemblyStats::gaps`](crate::reassembly::ReassemblyStats::gaps)) and the stream
//! resynchronises at the next request line. Malformed bytes are counted
//! ([`HttpStats::request_parse_errors`]) and skipped the same way; nothing panics.
//!
//! # Responses
//!
//! Responses are framed per RFC 9112 §6.3 (no body for HEAD, 1xx, 204, 304; Content-Length,
//! chunked or close-delimited otherwise), interim 1xx responses are skipped (counted), and each
//! final response is paired with its request in order (the `exchange` module explains what happens
//! after a gap or a mid-stream join). The wire latency is the first response byte's timestamp
//! minus the last request byte's.

mod chunked;
mod detect;
mod event;
mod exchange;
mod head;
mod request;
mod response;

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use self::chunked::{BodyReader, ChunkedDecoder, ChunkedError};
pub use self::detect::{Sniff, sniff_client};
pub use self::event::{
    BodyDigest, HttpEvent, HttpStats, LossCounts, LossEvent, LossReason, RequestEvent,
    RequestSummary, ResponseEvent, SkipCounts, SkipReason, Stats, UnpairedCounts, UnpairedReason,
};
use self::exchange::{HttpConnection, Shared};
pub use self::head::{BodyFraming, HeadError, HeaderSpan, HttpRequest, HttpResponseHead};
// The replay side reads shadow responses with the same framing rules.
#[cfg(test)]
pub(crate) use self::head::parse_request_head;
pub use self::head::{
    HeadLimits, ResponseBody, ResponseHead, lists_option, parse_response_head, response_body,
};
use crate::held::BodyBudget;
use crate::reassembly::{Reassembler, ReassemblyConfig};
use crate::segment::Segment;

/// Limits of the HTTP layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Requests (head plus body on the wire) larger than this are emitted head-only with
    /// [`SkipReason::TooLarge`]; the body is skipped by length, so the stream stays in sync.
    pub max_message_bytes: usize,
    /// Header fields per head (at most `head::MAX_HEADERS`).
    pub max_headers: usize,
    /// Bytes of a head (start line, fields, empty line); also bounds chunked trailers.
    pub max_head_bytes: usize,
    /// Requests waiting for their responses per connection; beyond, the oldest is given up.
    pub max_pipelined_requests: usize,
    /// Header name (lower case) that marks a request as another daemon's replay: such a request
    /// is framed and skipped ([`SkipReason::ReplayMarker`]), and the responses on its connection
    /// (a shadow's) are not reported as the primary's.
    pub replay_marker: Option<Box<[u8]>>,
    /// How long both directions must be silent for pairing to resume at the next request of a
    /// connection that dropped out of sync (the quiet point, see the `exchange` module).
    pub resync_quiet_ns: u64,
    /// Whether responses carry their request's method, target and Host
    /// ([`ResponseEvent::request`]): a copy per request, which `mirror capture` prints and
    /// `mirror run` does not read.
    pub label_responses: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 16_777_216,
            max_headers: 100,
            max_head_bytes: 65_536,
            max_pipelined_requests: 1_024,
            replay_marker: None,
            resync_quiet_ns: 1_000_000_000,
            label_responses: true,
        }
    }
}

/// Configuration of the whole core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerConfig {
    pub reassembly: ReassemblyConfig,
    pub http: HttpConfig,
}

/// Segments in, HTTP events out. See the module docs.
#[derive(Debug)]
pub struct HttpTracker {
    reassembler: Reassembler<HttpConnection>,
    shared: Shared,
}

impl HttpTracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            reassembler: Reassembler::new(config.reassembly),
            shared: Shared::new(config.http),
        }
    }

    /// Holds every response body that starts from now on (de-chunked, as sent) within
    /// `budget`, for a field-level comparison: [`ResponseEvent::body`] carries it when it
    /// fitted. `None` stops holding.
    pub fn hold_bodies(&mut self, budget: Option<BodyBudget>) {
        self.shared.hold_bodies = budget;
    }

    /// Feeds one captured segment chunk (in capture order).
    pub fn on_segment(&mut self, segment: &Segment) {
        self.reassembler.on_segment(segment, &mut self.shared);
    }

    /// Advances time to `now_ns` (CLOCK_MONOTONIC): idle timeouts and stale holes. Call it about
    /// once a second; it costs O(connections holding out-of-order data).
    pub fn on_tick(&mut self, now_ns: u64) {
        self.reassembler.on_tick(now_ns, &mut self.shared);
    }

    /// Capture of `server_port` resumes after a pause: the holes it left are gaps at once (see
    /// [`Reassembler::expect_gaps`]).
    pub fn expect_gaps(&mut self, server_port: u16) {
        self.reassembler.expect_gaps(server_port);
    }

    /// Ends every connection (shutdown); messages in progress are reported lost.
    pub fn drain(&mut self) {
        self.reassembler.drain(&mut self.shared);
    }

    /// Next output event, oldest first.
    pub fn poll_event(&mut self) -> Option<HttpEvent> {
        self.shared.events.pop_front()
    }

    /// Events waiting to be polled.
    pub fn pending_events(&self) -> usize {
        self.shared.events.len()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            tcp: *self.reassembler.stats(),
            http: self.shared.stats,
        }
    }

    /// Tracked connections (`mirror_tcp_streams_active`).
    pub fn active_connections(&self) -> usize {
        self.reassembler.active_connections()
    }

    /// Stream bytes buffered over all connections (bounded by `reassembly_memory_bytes`).
    pub fn buffered_bytes(&self) -> usize {
        self.reassembler.buffered_bytes()
    }
}
