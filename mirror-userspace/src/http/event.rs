//! What the tracker reports: framed requests, paired responses, skipped connections, losses, and
//! the counters that make every request's fate accountable.

use std::sync::Arc;

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_128;

use super::head::{HttpRequest, HttpResponseHead, RequestHead};
use crate::held::HeldBody;
use crate::reassembly::{EvictionReason, ReassemblyStats};
use crate::segment::{Direction, FlowKey};

/// Output of [`HttpTracker::poll_event`](super::HttpTracker::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpEvent {
    Request(RequestEvent),
    Response(ResponseEvent),
    /// Mirroring ended for this connection; its remaining bytes are ignored (for
    /// [`SkipReason::AmbiguousLength`]: its remaining request bytes; responses to the requests
    /// before are still paired).
    ConnectionSkipped {
        flow: FlowKey,
        connection: u64,
        reason: SkipReason,
    },
    /// A message in progress was abandoned.
    Lost(LossEvent),
    /// `len` bytes of a direction were lost (a gap in the captured stream).
    Gap {
        flow: FlowKey,
        direction: Direction,
        len: u64,
    },
    /// `bytes` request bytes were not framed (lost in a gap, or passed over while the framing
    /// was lost): the requests they held, if any, are not counted one by one.
    Unframed {
        flow: FlowKey,
        bytes: u64,
    },
    /// The request `index`, emitted earlier as pairable, will never be paired with a response:
    /// the connection dropped out of sync before its response came (its comparison is over).
    Unpairable {
        flow: FlowKey,
        connection: u64,
        index: u64,
        reason: UnpairedReason,
    },
}

/// A request framed off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestEvent {
    pub flow: FlowKey,
    /// Number of the connection (unique for the tracker's lifetime; a 4-tuple used again is a
    /// new connection).
    pub connection: u64,
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
    /// `None`: a response may still be paired with it (the connection is in sync). `Some`: it
    /// will never be, and why; do not wait for a comparison.
    pub unpaired: Option<UnpairedReason>,
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
        Self::of_head(request.bytes(), request.parsed_head())
    }

    /// From a parsed head and the bytes it was parsed from (at least the head).
    pub(crate) fn of_head(bytes: &[u8], head: &RequestHead) -> Self {
        // The raw bytes (`HttpRequest::target` is empty for a target that is not UTF-8).
        let method = &bytes[..head.method_len as usize];
        let target = &bytes[head.target_start as usize..][..head.target_len as usize];
        let host = head
            .facts
            .host
            .map(|index| head.headers[index].value(bytes));
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
    pub connection: u64,
    /// Index of the request this response answers; `None` when it could not be paired.
    pub request_index: Option<u64>,
    /// Why it could not be paired (`None` when paired).
    pub unpaired: Option<UnpairedReason>,
    /// The request's method, target and host; `None` when unpaired or without
    /// [`HttpConfig::label_responses`](super::HttpConfig::label_responses).
    pub request: Option<RequestSummary>,
    /// Status line and headers of the final response.
    pub head: HttpResponseHead,
    /// Body length after removing chunked framing.
    pub body_len: u64,
    /// xxh3-128 of the body after removing chunked framing.
    pub body_digest: BodyDigest,
    /// The body after removing chunked framing, when bodies are held
    /// ([`HttpTracker::hold_bodies`](super::HttpTracker::hold_bodies)) and it fitted the budget.
    pub body: Option<Arc<HeldBody>>,
    pub first_byte_ns: u64,
    pub last_byte_ns: u64,
    /// Last request byte to first response byte (kernel timestamps), when paired. A response
    /// that starts before its request ended (early response) is timed from the last request
    /// byte before it.
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
    /// A request with both Content-Length and Transfer-Encoding (RFC 9112 §6.1): the server
    /// closes the connection after answering it, so later request bytes are not framed (a
    /// smuggling attempt would hide there). Connection level only.
    AmbiguousLength,
    /// The request carries the `[replay] marker_header`: another daemon's replay, captured on
    /// its way to a shadow. Never mirrored again; its connection's responses are not the
    /// primary's.
    ReplayMarker,
}

impl SkipReason {
    pub const ALL: [Self; 7] = [
        Self::TooLarge,
        Self::Upgrade,
        Self::Connect,
        Self::Tls,
        Self::Http2,
        Self::AmbiguousLength,
        Self::ReplayMarker,
    ];

    /// Reasons a single framed request is not replayed.
    pub const REQUEST: [Self; 4] = [
        Self::TooLarge,
        Self::Upgrade,
        Self::Connect,
        Self::ReplayMarker,
    ];

    /// Reasons mirroring of a connection ends.
    pub const CONNECTION: [Self; 5] = [
        Self::Upgrade,
        Self::Connect,
        Self::Tls,
        Self::Http2,
        Self::AmbiguousLength,
    ];

    /// Metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Upgrade => "upgrade",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Http2 => "http2",
            Self::AmbiguousLength => "ambiguous_length",
            Self::ReplayMarker => "replay_marker",
        }
    }
}

/// Why a response was not paired with a request: the connection was out of sync (see the
/// `exchange` module) since this happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnpairedReason {
    /// The capture joined the connection mid-stream.
    Joined,
    /// Bytes of either direction were lost where they could hide whole messages.
    Gap,
    /// A message did not parse.
    Malformed,
    /// Positions contradicted the order (a response acknowledging none of the request it would
    /// answer, or no request to answer).
    Order,
    /// More pipelined requests than `max_pipelined_requests`.
    Overflow,
}

impl UnpairedReason {
    pub const ALL: [Self; 5] = [
        Self::Joined,
        Self::Gap,
        Self::Malformed,
        Self::Order,
        Self::Overflow,
    ];

    /// Metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Joined => "joined",
            Self::Gap => "gap",
            Self::Malformed => "malformed",
            Self::Order => "order",
            Self::Overflow => "overflow",
        }
    }
}

/// Counts by [`UnpairedReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpairedCounts([u64; UnpairedReason::ALL.len()]);

impl UnpairedCounts {
    pub fn get(&self, reason: UnpairedReason) -> u64 {
        self.0[reason as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub(crate) fn count(&mut self, reason: UnpairedReason) {
        self.0[reason as usize] += 1;
    }
}

/// Counts by [`SkipReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipCounts([u64; SkipReason::ALL.len()]);

impl SkipCounts {
    pub fn get(&self, reason: SkipReason) -> u64 {
        self.0[reason as usize]
    }

    pub(crate) fn count(&mut self, reason: SkipReason) {
        self.0[reason as usize] += 1;
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
    pub connection: u64,
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
    pub requests_skipped_replay_marker: u64,
    /// Responses on connections that carried replays (a shadow's answers), not reported.
    pub responses_of_replays: u64,
    /// Requests abandoned in progress (partial heads included), by reason.
    pub requests_lost: LossCounts,
    /// Request bytes that did not parse as HTTP/1.x (`mirror_parse_errors_total`).
    pub request_parse_errors: u64,
    pub response_parse_errors: u64,
    /// Connections whose mirroring ended, by reason.
    pub connections_skipped: SkipCounts,
    /// Final responses emitted, and how many of those were paired with a request.
    pub responses_total: u64,
    pub responses_paired: u64,
    /// Final responses emitted unpaired, by why (`responses_total - responses_paired`).
    pub responses_unpaired: UnpairedCounts,
    pub responses_interim: u64,
    pub responses_too_large: u64,
    pub responses_lost: LossCounts,
    /// Requests in sync whose response never came (the connection ended first).
    pub requests_unanswered: u64,
    /// Requests that were waiting for a response when their connection dropped out of sync.
    pub requests_unpairable: u64,
    /// Times a connection dropped out of sync, by why.
    pub desyncs: UnpairedCounts,
    /// Times a stream found a message start again after a gap, an error or a mid-stream join.
    pub resyncs: u64,
    /// Times pairing resumed at a quiet point.
    pub resyncs_quiet: u64,
    /// Request bytes not framed because the request stream's framing was lost (after a
    /// malformed request, or skipped while searching for the next request after a gap or a
    /// join): requests hidden there are not counted one by one.
    pub request_bytes_unframed: u64,
    /// Retransmitted bytes compared with bytes the framers still held, and how many differed
    /// (the receiver may have taken either version).
    pub retransmitted_bytes_compared: u64,
    pub retransmitted_bytes_conflicting: u64,
}

impl HttpStats {
    /// Emitted requests that must not be replayed, for `reason`.
    pub const fn requests_skipped(&self, reason: SkipReason) -> u64 {
        match reason {
            SkipReason::TooLarge => self.requests_skipped_too_large,
            SkipReason::Upgrade => self.requests_skipped_upgrade,
            SkipReason::Connect => self.requests_skipped_connect,
            SkipReason::ReplayMarker => self.requests_skipped_replay_marker,
            SkipReason::Tls | SkipReason::Http2 | SkipReason::AmbiguousLength => 0,
        }
    }
}

/// All counters of the core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub tcp: ReassemblyStats,
    pub http: HttpStats,
}
