//! What the tracker reports: framed requests, paired responses, skipped connections, losses, and
//! the counters that make every request's fate accountable.

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_128;

use super::head::{HttpRequest, HttpResponseHead};
use crate::reassembly::{EvictionReason, ReassemblyStats};
use crate::segment::{Direction, FlowKey};

/// Output of [`HttpTracker::poll_event`](super::HttpTracker::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpEvent {
    Request(RequestEvent),
    Response(ResponseEvent),
    /// Mirroring ended for this connection; its remaining bytes are ignored.
    ConnectionSkipped {
        flow: FlowKey,
        reason: SkipReason,
    },
    /// A message in progress was abandoned.
    Lost(LossEvent),
}

/// A request framed off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestEvent {
    pub flow: FlowKey,
    /// Per-connection number of the request (0-based, in wire order; numbers of requests lost
    /// after their head was parsed are not reused).
    pub index: u64,
    /// Exact bytes and parsed view. For [`SkipReason::TooLarge`] the bytes are the head only.
    pub request: HttpRequest,
    /// Kernel timestamps of the segments carrying the first and the last byte.
    pub first_byte_ns: u64,
    pub last_byte_ns: u64,
    /// `None`: replayable. `Some`: framed (and counted) but must not be replayed.
    pub skip: Option<SkipReason>,
}

/// Enough of a request to label its response: method, target and Host, copied into one small
/// buffer. It waits with the request's pending response and in the comparison until the
/// shadow answers; slices of the request itself would keep its whole buffer alive meanwhile
/// (a body of up to a mebibyte, or the ring-buffer arena a small request was framed in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSummary {
    /// Method, target and Host one after the other: one allocation per request.
    text: Box<[u8]>,
    method_end: usize,
    target_end: usize,
    has_host: bool,
}

impl RequestSummary {
    pub fn of(request: &HttpRequest) -> Self {
        // The raw bytes (`HttpRequest::target` is empty for a target that is not UTF-8).
        let (bytes, head) = (request.bytes(), request.parsed_head());
        let method = &bytes[..head.method_len as usize];
        let target = &bytes[head.target_start as usize..][..head.target_len as usize];
        let host = request.host();
        Self {
            text: [method, target, host.unwrap_or_default()].concat().into(),
            method_end: method.len(),
            target_end: method.len() + target.len(),
            has_host: host.is_some(),
        }
    }

    pub fn method(&self) -> &[u8] {
        &self.text[..self.method_end]
    }

    pub fn target(&self) -> &[u8] {
        &self.text[self.method_end..self.target_end]
    }

    pub fn host(&self) -> Option<&[u8]> {
        self.has_host.then(|| &self.text[self.target_end..])
    }
}

/// A response of the primary, captured off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseEvent {
    pub flow: FlowKey,
    /// Index of the request this response answers; `None` when it could not be paired.
    pub request_index: Option<u64>,
    /// The request's method, target and host; `None` when unpaired, when the response came
    /// before the request's last byte (e.g. a 417 to `Expect: 100-continue`), or without
    /// [`HttpConfig::label_responses`](super::HttpConfig::label_responses).
    pub request: Option<RequestSummary>,
    /// Status line and headers of the final response.
    pub head: HttpResponseHead,
    /// Body length after removing chunked framing.
    pub body_len: u64,
    /// xxh3-128 of the body after removing chunked framing.
    pub body_digest: BodyDigest,
    pub first_byte_ns: u64,
    pub last_byte_ns: u64,
    /// Last request byte to first response byte (kernel timestamps), when paired.
    pub latency_ns: Option<u64>,
    /// Interim (1xx) responses that preceded this one.
    pub interim_responses: u32,
}

/// xxh3-128 of a response body after removing chunked framing. A body that arrived in one
/// piece is hashed by [`Self::value`] (at each call; the pipeline asks once, and only for
/// compared responses: most requests are not sampled). It holds that piece meanwhile, a slice
/// of the capture buffer, so an event is meant to be handled, not kept.
#[derive(Clone)]
pub struct BodyDigest(DigestState);

#[derive(Clone)]
enum DigestState {
    Done(u128),
    Deferred(Bytes),
}

impl BodyDigest {
    pub(crate) fn done(value: u128) -> Self {
        Self(DigestState::Done(value))
    }

    pub(crate) fn deferred(body: Bytes) -> Self {
        Self(DigestState::Deferred(body))
    }

    pub fn value(&self) -> u128 {
        match &self.0 {
            DigestState::Done(value) => *value,
            DigestState::Deferred(body) => xxh3_128(body),
        }
    }
}

impl PartialEq for BodyDigest {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl Eq for BodyDigest {}

impl std::fmt::Debug for BodyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.value())
    }
}

/// Why a framed request or a connection is not mirrored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Larger than `max_message_bytes`.
    TooLarge,
    /// `Upgrade` request or `101` response: the protocol changes.
    Upgrade,
    /// `CONNECT` tunnel.
    Connect,
    /// TLS record seen where HTTP/1.x was expected.
    Tls,
    /// HTTP/2 prior-knowledge preface.
    Http2,
}

impl SkipReason {
    pub const ALL: [Self; 5] = [
        Self::TooLarge,
        Self::Upgrade,
        Self::Connect,
        Self::Tls,
        Self::Http2,
    ];

    /// Metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Upgrade => "upgrade",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Http2 => "http2",
        }
    }
}

/// Why a message in progress was abandoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossReason {
    /// Bytes missing in the stream (capture drop or lost segment).
    Gap,
    /// The bytes did not parse (`mirror_parse_errors_total` counts these too).
    Malformed,
    /// The peer closed (FIN) before the message ended.
    Truncated,
    /// RST, or the 4-tuple was reused by a new connection.
    Reset,
    /// The connection was evicted or timed out.
    Evicted(EvictionReason),
    /// Mirroring of the connection ended (upgrade, tunnel) while the message was in progress.
    Skipped,
}

/// A message abandoned part-way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LossEvent {
    pub flow: FlowKey,
    pub direction: Direction,
    pub reason: LossReason,
    /// The request's index when its head had been parsed (for a response: the request it
    /// answered, if paired).
    pub request_index: Option<u64>,
}

/// Abandoned messages by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossCounts {
    pub gap: u64,
    pub malformed: u64,
    pub truncated: u64,
    pub reset: u64,
    pub evicted: u64,
    pub skipped: u64,
}

impl LossCounts {
    pub fn total(&self) -> u64 {
        self.gap + self.malformed + self.truncated + self.reset + self.evicted + self.skipped
    }

    pub(crate) fn count(&mut self, reason: LossReason) {
        *match reason {
            LossReason::Gap => &mut self.gap,
            LossReason::Malformed => &mut self.malformed,
            LossReason::Truncated => &mut self.truncated,
            LossReason::Reset => &mut self.reset,
            LossReason::Evicted(_) => &mut self.evicted,
            LossReason::Skipped => &mut self.skipped,
        } += 1;
    }
}

/// Counters of the HTTP layer.
///
/// Accounting: every request head parsed gets an index and ends as exactly one of a
/// [`RequestEvent`] (`requests_total`, of which `requests_skipped` are not replayable) or a loss
/// (`requests_lost`, with a [`LossEvent`]), unless it is still in progress. Requests whose bytes
/// never arrived at all (swallowed whole by a gap) cannot be counted individually; the gap is
/// (`ReassemblyStats::gaps`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Request heads parsed (indices handed out).
    pub requests_started: u64,
    /// [`RequestEvent`]s emitted (`mirror_requests_total`).
    pub requests_total: u64,
    /// Emitted requests not to be replayed, by reason (`too_large`, `upgrade`, `connect`).
    pub requests_skipped_too_large: u64,
    pub requests_skipped_upgrade: u64,
    pub requests_skipped_connect: u64,
    /// Requests abandoned in progress (partial heads included), by reason.
    pub requests_lost: LossCounts,
    /// Request bytes that did not parse as HTTP/1.x (`mirror_parse_errors_total`).
    pub request_parse_errors: u64,
    pub response_parse_errors: u64,
    /// Connections whose mirroring ended, by reason.
    pub connections_skipped_tls: u64,
    pub connections_skipped_http2: u64,
    pub connections_skipped_upgrade: u64,
    pub connections_skipped_connect: u64,
    /// Final responses emitted, and how many of those were paired with a request.
    pub responses_total: u64,
    pub responses_paired: u64,
    pub responses_interim: u64,
    pub responses_too_large: u64,
    pub responses_lost: LossCounts,
    /// Requests that were emitted but whose response never came (or could not be paired).
    pub requests_unanswered: u64,
    /// Times a stream found a message start again after a gap, an error or a mid-stream join.
    pub resyncs: u64,
}

impl HttpStats {
    /// Emitted requests that must not be replayed, for `reason`.
    pub const fn requests_skipped(&self, reason: SkipReason) -> u64 {
        match reason {
            SkipReason::TooLarge => self.requests_skipped_too_large,
            SkipReason::Upgrade => self.requests_skipped_upgrade,
            SkipReason::Connect => self.requests_skipped_connect,
            SkipReason::Tls | SkipReason::Http2 => 0,
        }
    }

    /// Connections whose mirroring ended, for `reason`.
    pub const fn connections_skipped(&self, reason: SkipReason) -> u64 {
        match reason {
            SkipReason::Tls => self.connections_skipped_tls,
            SkipReason::Http2 => self.connections_skipped_http2,
            SkipReason::Upgrade => self.connections_skipped_upgrade,
            SkipReason::Connect => self.connections_skipped_connect,
            SkipReason::TooLarge => 0,
        }
    }
}

/// All counters of the core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub tcp: ReassemblyStats,
    pub http: HttpStats,
}
