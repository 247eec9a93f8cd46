//! One connection's HTTP state: the two framers and the request/response pairing between them.
//!
//! Pairing is by order (RFC 9112 §9.3: responses come in request order) while the connection is
//! *in sync*. A mid-stream join, a gap or a parse error can hide requests, so order no longer
//! proves anything: the connection drops out of sync and a response is then paired only when the
//! acknowledgement number of its first segment equals the sequence number just past a known
//! request's last byte (the server had received exactly that request when it answered) - exact for
//! the usual request/response ping-pong, and never a wrong pair. Unlike GoReplay, ACK numbers
//! only *resynchronise*; they are not the pairing key.

use std::collections::VecDeque;

use super::HttpConfig;
use super::event::{HttpEvent, HttpStats, LossEvent, LossReason, RequestSummary, SkipReason};
use super::head::HeadLimits;
use super::request::RequestFramer;
use super::response::ResponseFramer;
use crate::reassembly::{CloseReason, ConnectionHandler, StreamEvent};
use crate::segment::{Direction, FlowKey};

/// State shared by all connections: configuration, counters, the event queue.
#[derive(Debug)]
pub struct Shared {
    pub config: HttpConfig,
    pub limits: HeadLimits,
    pub stats: HttpStats,
    pub events: VecDeque<HttpEvent>,
}

impl Shared {
    pub fn new(config: HttpConfig) -> Self {
        let limits = HeadLimits {
            max_headers: config.max_headers,
            max_head_bytes: config.max_head_bytes,
        };
        Self {
            config,
            limits,
            stats: HttpStats::default(),
            events: VecDeque::new(),
        }
    }
}

/// A request waiting for its response.
#[derive(Debug)]
pub struct Pending {
    pub index: u64,
    pub is_head: bool,
    pub is_connect: bool,
    /// Raw sequence number just past the request's last byte seen so far.
    pub end_seq: u32,
    pub last_byte_ns: u64,
    /// Set when the request was emitted.
    pub summary: Option<RequestSummary>,
}

/// Pairing state of one connection.
#[derive(Debug)]
pub struct Pairing {
    pub pending: VecDeque<Pending>,
    pub next_index: u64,
    pub in_sync: bool,
    pub skipped: Option<SkipReason>,
    /// A request head was parsed on this connection (responses before that cannot be paired).
    pub requests_seen: bool,
}

impl Default for Pairing {
    fn default() -> Self {
        Self {
            pending: VecDeque::new(),
            next_index: 0,
            in_sync: true,
            skipped: None,
            requests_seen: false,
        }
    }
}

/// What a framer works with.
pub struct Ctx<'a> {
    pub flow: &'a FlowKey,
    pub pairing: &'a mut Pairing,
    pub shared: &'a mut Shared,
}

impl Ctx<'_> {
    pub fn emit(&mut self, event: HttpEvent) {
        self.shared.events.push_back(event);
    }

    pub fn stats(&mut self) -> &mut HttpStats {
        &mut self.shared.stats
    }

    /// Ends mirroring of the connection (once).
    pub fn skip_connection(&mut self, reason: SkipReason) {
        if self.pairing.skipped.is_some() {
            return;
        }
        self.pairing.skipped = Some(reason);
        let stats = &mut self.shared.stats;
        *match reason {
            SkipReason::Tls => &mut stats.connections_skipped_tls,
            SkipReason::Http2 => &mut stats.connections_skipped_http2,
            SkipReason::Upgrade => &mut stats.connections_skipped_upgrade,
            SkipReason::Connect | SkipReason::TooLarge => &mut stats.connections_skipped_connect,
        } += 1;
        let flow = *self.flow;
        self.emit(HttpEvent::ConnectionSkipped { flow, reason });
    }

    /// Counts and reports an abandoned message.
    pub fn lose(&mut self, direction: Direction, reason: LossReason, request_index: Option<u64>) {
        let stats = &mut self.shared.stats;
        match direction {
            Direction::Request => stats.requests_lost.count(reason),
            Direction::Response => stats.responses_lost.count(reason),
        }
        let flow = *self.flow;
        self.emit(HttpEvent::Lost(LossEvent {
            flow,
            direction,
            reason,
            request_index,
        }));
    }

    /// Order no longer proves which request a response answers.
    pub fn desync(&mut self) {
        self.pairing.in_sync = false;
    }

    /// Adds a request to the pairing queue, bounded by `max_pipelined_requests`.
    pub fn push_pending(&mut self, pending: Pending) {
        if self.pairing.pending.len() >= self.shared.config.max_pipelined_requests.max(1) {
            self.pairing.pending.pop_front();
            self.shared.stats.requests_unanswered += 1;
            self.pairing.in_sync = false;
        }
        self.pairing.pending.push_back(pending);
    }

    pub fn pending_mut(&mut self, index: u64) -> Option<&mut Pending> {
        self.pairing
            .pending
            .iter_mut()
            .rev()
            .find(|pending| pending.index == index)
    }

    pub fn forget_pending(&mut self, index: u64) {
        self.pairing
            .pending
            .retain(|pending| pending.index != index);
    }

    /// The request a response starting in a segment with acknowledgement `ack` answers.
    pub fn take_pair(&mut self, ack: u32) -> Option<Pending> {
        if !self.pairing.in_sync {
            let position = self
                .pairing
                .pending
                .iter()
                .position(|pending| pending.end_seq == ack)?;
            self.shared.stats.requests_unanswered += position as u64;
            self.pairing.pending.drain(..position);
            self.pairing.in_sync = true;
        }
        self.pairing.pending.pop_front()
    }

    /// Method facts of the request the next response answers, without taking it.
    pub fn peek_pair(&self, ack: u32) -> Option<&Pending> {
        if self.pairing.in_sync {
            self.pairing.pending.front()
        } else {
            self.pairing
                .pending
                .iter()
                .find(|pending| pending.end_seq == ack)
        }
    }
}

/// Per-connection handler given to the reassembler.
#[derive(Debug, Default)]
pub struct HttpConnection {
    requests: RequestFramer,
    responses: ResponseFramer,
    pairing: Pairing,
}

impl ConnectionHandler for HttpConnection {
    type Context = Shared;

    fn open(_: &mut Shared, _: &FlowKey) -> Self {
        Self::default()
    }

    fn on_stream(
        &mut self,
        shared: &mut Shared,
        flow: &FlowKey,
        direction: Direction,
        event: StreamEvent,
    ) {
        if self.pairing.skipped.is_some() {
            return;
        }
        let mut cx = Ctx {
            flow,
            pairing: &mut self.pairing,
            shared,
        };
        match direction {
            Direction::Request => self.requests.on_event(event, &mut cx),
            Direction::Response => self.responses.on_event(event, &mut cx),
        }
        if cx.pairing.skipped.is_some() {
            // Whatever the other direction had in progress will never complete.
            match direction {
                Direction::Request => self.responses.abandon(LossReason::Skipped, &mut cx),
                Direction::Response => self.requests.abandon(LossReason::Skipped, &mut cx),
            }
            cx.shared.stats.requests_unanswered += cx.pairing.pending.len() as u64;
            cx.pairing.pending.clear();
        }
    }

    fn on_close(mut self, shared: &mut Shared, flow: &FlowKey, reason: CloseReason) {
        let reason = match reason {
            CloseReason::Finished => LossReason::Truncated,
            CloseReason::Reset | CloseReason::Reused => LossReason::Reset,
            CloseReason::Evicted(eviction) => LossReason::Evicted(eviction),
        };
        let mut cx = Ctx {
            flow,
            pairing: &mut self.pairing,
            shared,
        };
        self.requests.abandon(reason, &mut cx);
        self.responses.abandon(reason, &mut cx);
        cx.shared.stats.requests_unanswered += cx.pairing.pending.len() as u64;
    }

    fn buffered_bytes(&self) -> usize {
        self.requests.buffered_bytes() + self.responses.buffered_bytes()
    }

    fn wants_payload(&self) -> bool {
        self.pairing.skipped.is_none()
    }
}
