//! One connection's HTTP state: the two framers and the pairing of responses with requests.
//!
//! # Pairing is proven, never guessed
//!
//! Responses come in request order (RFC 9112 §9.3), so counting proves a pair - but only while
//! both byte streams are known without a hole from a point where the counts were equal. That
//! point is the connection's start (its SYN) or a *quiet point* (below). Between them the
//! connection is **in sync**: the next final response answers the oldest request still
//! waiting, and each pair is checked against causality (the response's segment acknowledges at
//! least one byte of the request; otherwise the count is wrong and the connection drops out of
//! sync). A gap inside a body of known length loses that message but not the count.
//!
//! Anything else that can hide messages - a mid-stream join, a gap elsewhere, a message that
//! did not parse, more pipelined requests than tracked, a contradiction - puts the connection
//! **out of sync**: responses are framed and counted (`responses_unpaired`, by the reason) but
//! never paired, requests are still framed and replayed but marked unpairable, and the
//! requests that were waiting are reported as [`HttpEvent::Unpairable`] so that their
//! comparisons are cancelled. An acknowledgement number alone never resynchronises (under
//! pipelining it names the last request the server had received, not the one it answers).
//!
//! # Quiet point (documented heuristic)
//!
//! Pairing resumes at a request that starts a captured segment when, at that moment:
//! - both directions have been silent for [`HttpConfig::resync_quiet_ns`] (1 s by default), and
//!   the last thing each delivered was data, not a gap;
//! - the client had received every response byte (the request's ACK equals the end of the
//!   response stream) and the server every request byte before it (the last response segment
//!   acknowledges exactly the request's first byte);
//! - both framers are at a message boundary (or lost in the stream, which the quiet point
//!   then ends);
//! - the client was never seen pipelining on this connection (a request sent while an earlier
//!   one was unanswered).
//!
//! A client that waits for each response before its next request cannot have anything
//! outstanding at such a point, so the counts are equal again. What it cannot rule out: a
//! client that pipelines, was never seen doing it since the capture joined, had a request
//! outstanding across the silence, and a server that took longer than the silence to answer
//! it.

use std::collections::VecDeque;

use super::HttpConfig;
use super::event::{
    HttpEvent, HttpStats, LossEvent, LossReason, RequestSummary, ResponseEvent, SkipReason,
    UnpairedReason,
};
use super::head::HeadLimits;
use super::request::RequestFramer;
use super::response::ResponseFramer;
use crate::held::BodyBudget;
use crate::reassembly::{CloseReason, ConnectionHandler, StreamData, StreamEvent};
use crate::segment::{Direction, FlowKey};

/// State shared by all connections: configuration, counters, the event queue.
#[derive(Debug)]
pub struct Shared {
    pub config: HttpConfig,
    pub limits: HeadLimits,
    pub stats: HttpStats,
    pub events: VecDeque<HttpEvent>,
    /// Where response bodies are held for a field-level comparison; `None`: digests only.
    pub hold_bodies: Option<BodyBudget>,
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
            hold_bodies: None,
        }
    }
}

/// A request waiting for its response (in sync only).
#[derive(Debug)]
pub struct Pending {
    pub index: u64,
    pub is_head: bool,
    pub is_connect: bool,
    /// Raw sequence number of the request's first byte.
    pub start_seq: u32,
    /// Timestamp of the latest request byte seen so far.
    pub last_byte_ns: u64,
    /// Method, target and Host, when responses are labelled.
    pub summary: Option<RequestSummary>,
}

/// What one direction delivered last, for the quiet point.
#[derive(Clone, Copy, Debug, Default)]
struct Tail {
    /// Something was delivered.
    seen: bool,
    /// The last thing delivered was data (not a gap).
    clean: bool,
    /// Raw sequence number just past the last byte delivered (or skipped by a gap).
    end_seq: u32,
    last_ns: u64,
    /// Acknowledgement number of the last data segment.
    last_ack: u32,
}

impl Tail {
    fn on_data(&mut self, data: &StreamData) {
        *self = Self {
            seen: true,
            clean: true,
            end_seq: data.seq.wrapping_add(data.payload.len() as u32),
            last_ns: data.timestamp_ns,
            last_ack: data.ack,
        };
    }

    /// Any other event: the last thing delivered is no longer data.
    fn on_other(&mut self, event: &StreamEvent) {
        self.clean = false;
        if let StreamEvent::Gap { len, .. } = event {
            self.end_seq = self.end_seq.wrapping_add(*len as u32);
        }
    }
}

/// `a` is after `b` in sequence space.
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Where a request started, kept for the pipelining evidence.
#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    start_seq: u32,
    /// The response-stream position the client had received when it sent the request.
    start_ack: u32,
}

/// Requests remembered for the pipelining evidence while out of sync.
const RECENT_REQUESTS: usize = 4;

/// Pairing state of one connection.
#[derive(Debug)]
pub struct Pairing {
    /// In sync: the requests not yet answered, oldest first. Out of sync: empty.
    pub pending: VecDeque<Pending>,
    pub next_index: u64,
    /// Requests below this index were emitted or lost (they end in order).
    pub requests_done: u64,
    /// `None`: in sync. `Some`: why responses cannot be paired now.
    pub desync: Option<UnpairedReason>,
    pub skipped: Option<SkipReason>,
    /// The connection number the reassembler gave.
    pub connection: u64,
    /// The client was seen sending a request while an earlier one was unanswered.
    pipelined: bool,
    /// The last requests started, a ring (`recent_next` is where the next one goes; the
    /// first `recent_len` slots are in use).
    recent: [Sent; RECENT_REQUESTS],
    recent_next: u8,
    recent_len: u8,
    /// A final response that came before its request's last byte, held until the request's
    /// event is out (so the comparison sees the request first).
    pub held_response: Option<ResponseEvent>,
    /// The request whose response is being framed (paired at its head).
    pub answering: Option<u64>,
    /// The index of an Upgrade or CONNECT request whose answer decides whether the connection
    /// switches protocols; request bytes after it wait meanwhile.
    pub awaiting_switch: Option<(u64, SkipReason)>,
    /// Set when the answer to `awaiting_switch` came and did not switch.
    pub switch_declined: bool,
    /// The connection carried a request with the replay marker: another daemon's replay
    /// connection to a shadow. Its responses are a shadow's, never reported as the primary's.
    pub replay_connection: bool,
    tails: [Tail; 2],
}

impl Pairing {
    fn new(connection: u64) -> Self {
        Self {
            pending: VecDeque::new(),
            next_index: 0,
            requests_done: 0,
            desync: None,
            skipped: None,
            connection,
            pipelined: false,
            recent: [Sent::default(); RECENT_REQUESTS],
            recent_next: 0,
            recent_len: 0,
            held_response: None,
            answering: None,
            awaiting_switch: None,
            switch_declined: false,
            replay_connection: false,
            tails: [Tail::default(); 2],
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

    pub fn connection(&self) -> u64 {
        self.pairing.connection
    }

    /// Ends mirroring of the connection (once).
    pub fn skip_connection(&mut self, reason: SkipReason) {
        if self.pairing.skipped.is_some() {
            return;
        }
        self.pairing.skipped = Some(reason);
        self.report_skip(reason);
    }

    /// Counts and reports that the connection's requests stopped being mirrored.
    fn report_skip(&mut self, reason: SkipReason) {
        self.shared.stats.connections_skipped.count(reason);
        let flow = *self.flow;
        let connection = self.pairing.connection;
        self.emit(HttpEvent::ConnectionSkipped {
            flow,
            connection,
            reason,
        });
    }

    /// Request bytes passed over without framing (see [`HttpEvent::Unframed`]).
    pub fn unframed(&mut self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.shared.stats.request_bytes_unframed += bytes;
        let flow = *self.flow;
        self.emit(HttpEvent::Unframed { flow, bytes });
    }

    /// Ends the framing of the connection's requests (once), not of its responses: the
    /// requests before are still answered and paired.
    pub fn halt_requests(&mut self, reason: SkipReason) {
        self.report_skip(reason);
    }

    /// Counts and reports an abandoned message.
    pub fn lose(&mut self, direction: Direction, reason: LossReason, request_index: Option<u64>) {
        let stats = &mut self.shared.stats;
        match direction {
            Direction::Request => stats.requests_lost.count(reason),
            Direction::Response => stats.responses_lost.count(reason),
        }
        let flow = *self.flow;
        let connection = self.pairing.connection;
        self.emit(HttpEvent::Lost(LossEvent {
            flow,
            connection,
            direction,
            reason,
            request_index,
        }));
        if direction == Direction::Request
            && let Some(index) = request_index
        {
            self.request_emitted(index);
        }
    }

    /// Order no longer proves which request a response answers: every request waiting becomes
    /// unpairable (reported, so that its comparison is cancelled).
    pub fn desync(&mut self, reason: UnpairedReason) {
        if self.pairing.desync.is_none() {
            self.pairing.desync = Some(reason);
            self.shared.stats.desyncs.count(reason);
        }
        let flow = *self.flow;
        let connection = self.pairing.connection;
        while let Some(pending) = self.pairing.pending.pop_front() {
            self.shared.stats.requests_unpairable += 1;
            if pending.index < self.pairing.requests_done {
                self.shared.events.push_back(HttpEvent::Unpairable {
                    flow,
                    connection,
                    index: pending.index,
                    reason,
                });
            }
        }
        self.release_held_response();
        if let Some((_, switches)) = self.pairing.awaiting_switch.take() {
            // The answer that decides the protocol can no longer be told apart.
            self.skip_connection(switches);
        }
    }

    /// A request head was parsed at `start_seq` (the segment carrying it acknowledged
    /// `start_ack`). Returns whether a response may be paired with it.
    pub fn request_started(&mut self, pending: Pending, start_ack: u32) -> bool {
        let pairing = &mut *self.pairing;
        pairing.recent[usize::from(pairing.recent_next)] = Sent {
            start_seq: pending.start_seq,
            start_ack,
        };
        pairing.recent_next = (pairing.recent_next + 1) % RECENT_REQUESTS as u8;
        pairing.recent_len = (pairing.recent_len + 1).min(RECENT_REQUESTS as u8);
        if self.pairing.desync.is_some() {
            return false;
        }
        if !self.pairing.pending.is_empty() {
            // Sent before the previous request was answered.
            self.pairing.pipelined = true;
        }
        if self.pairing.pending.len() >= self.shared.config.max_pipelined_requests.max(1) {
            self.desync(UnpairedReason::Overflow);
            return false;
        }
        self.pairing.pending.push_back(pending);
        true
    }

    pub fn pending_mut(&mut self, index: u64) -> Option<&mut Pending> {
        self.pairing
            .pending
            .iter_mut()
            .rev()
            .find(|pending| pending.index == index)
    }

    /// Whether the request `index`'s event (or its loss) is out.
    pub fn request_done(&self, index: u64) -> bool {
        index < self.pairing.requests_done
    }

    /// The request's event (or its loss) is out: a response held for it may follow.
    pub fn request_emitted(&mut self, index: u64) {
        self.pairing.requests_done = self.pairing.requests_done.max(index + 1);
        if self
            .pairing
            .held_response
            .as_ref()
            .is_some_and(|held| held.request_index == Some(index))
        {
            self.release_held_response();
        }
    }

    fn release_held_response(&mut self) {
        if let Some(held) = self.pairing.held_response.take() {
            self.emit_response(held);
        }
    }

    /// Emits a final response, counted as it goes out (paired, or unpaired by why).
    pub fn emit_response(&mut self, response: ResponseEvent) {
        let stats = &mut self.shared.stats;
        if self.pairing.replay_connection {
            stats.responses_of_replays += 1;
            return;
        }
        stats.responses_total += 1;
        match response.unpaired {
            None => stats.responses_paired += 1,
            Some(reason) => stats.responses_unpaired.count(reason),
        }
        self.emit(HttpEvent::Response(response));
    }

    /// Why the request `index` can no longer be paired; `None` while it can (or was, by an
    /// early response).
    pub fn unpaired(&self, index: u64) -> Option<UnpairedReason> {
        let pairing = &self.pairing;
        if let Some(reason) = pairing.desync {
            return Some(reason);
        }
        // The request that ends is the last one started: the back of the queue when waiting.
        let pairable = pairing
            .pending
            .back()
            .is_some_and(|pending| pending.index == index)
            || pairing.answering == Some(index)
            || pairing
                .held_response
                .as_ref()
                .is_some_and(|held| held.request_index == Some(index))
            || pairing.pending.iter().any(|pending| pending.index == index);
        // In sync but no longer waiting: its slot went when the connection dropped out of sync
        // and came back (a quiet point) before it ended.
        (!pairable).then_some(UnpairedReason::Order)
    }

    /// A response head starts at raw sequence number `start_seq` in a segment acknowledging
    /// `ack`. Looks for evidence of pipelining: a request the server had not received when it
    /// sent this response, sent by a client that had not received it yet, was sent while an
    /// earlier request was unanswered.
    pub fn response_started(&mut self, start_seq: u32, ack: u32) {
        let pairing = &*self.pairing;
        let evidence = pairing.recent[..usize::from(pairing.recent_len)]
            .iter()
            .any(|sent| !seq_after(ack, sent.start_seq) && !seq_after(sent.start_ack, start_seq));
        self.pairing.pipelined |= evidence;
    }

    /// The request a response starting in a segment acknowledging `ack` answers, without
    /// taking it (the framing of the response depends on it). `Err`: it cannot be paired.
    pub fn peek_pair(&self, ack: u32) -> Result<&Pending, UnpairedReason> {
        if let Some(reason) = self.pairing.desync {
            return Err(reason);
        }
        match self.pairing.pending.front() {
            // The server answered after receiving at least one byte of the request.
            Some(front) if seq_after(ack, front.start_seq) => Ok(front),
            _ => Err(UnpairedReason::Order),
        }
    }

    /// Takes the request a final response answers (after [`Self::peek_pair`] said which).
    pub fn take_pair(&mut self) -> Option<Pending> {
        self.pairing.pending.pop_front()
    }

    /// Whether the quiet point (module docs) holds for a request whose segment is `data`.
    /// `framers_at_boundary`: both framers stand between messages (or are lost).
    pub fn quiet_point(&self, data: &StreamData, framers_at_boundary: bool) -> bool {
        let [requests, responses] = &self.pairing.tails;
        let quiet = self.shared.config.resync_quiet_ns;
        self.pairing.desync.is_some()
            && self.pairing.skipped.is_none()
            && !self.pairing.pipelined
            && framers_at_boundary
            && data.starts_segment
            && requests.seen
            && requests.clean
            && requests.end_seq == data.seq
            && data.timestamp_ns.saturating_sub(requests.last_ns) >= quiet
            && responses.seen
            && responses.clean
            && responses.end_seq == data.ack
            && responses.last_ack == data.seq
            && data.timestamp_ns.saturating_sub(responses.last_ns) >= quiet
    }

    /// Resumes pairing at a quiet point.
    pub fn resync(&mut self) {
        self.pairing.desync = None;
        self.pairing.pending.clear();
        self.shared.stats.resyncs_quiet += 1;
    }
}

/// Per-connection handler given to the reassembler.
#[derive(Debug)]
pub struct HttpConnection {
    requests: RequestFramer,
    responses: ResponseFramer,
    pairing: Pairing,
}

impl HttpConnection {
    /// Out of sync, a request segment arrives: resumes pairing if it is a quiet point.
    #[cold]
    fn try_quiet_point(
        requests: &mut RequestFramer,
        responses: &mut ResponseFramer,
        data: &StreamData,
        cx: &mut Ctx<'_>,
    ) {
        if requests.may_start_here(data)
            && cx.quiet_point(data, requests.at_boundary() && responses.at_boundary())
        {
            cx.resync();
            requests.resume();
            responses.resume();
        }
    }
}

impl ConnectionHandler for HttpConnection {
    type Context = Shared;

    fn open(_: &mut Shared, _: &FlowKey, id: u64) -> Self {
        Self {
            requests: RequestFramer::default(),
            responses: ResponseFramer::default(),
            pairing: Pairing::new(id),
        }
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
        match event {
            // The hot path: in-order bytes, one match, nothing moved.
            StreamEvent::Data(data) => {
                match direction {
                    Direction::Request => {
                        if data.starts_segment && cx.pairing.desync.is_some() {
                            Self::try_quiet_point(
                                &mut self.requests,
                                &mut self.responses,
                                &data,
                                &mut cx,
                            );
                        }
                        self.requests.on_data(&data, &mut cx);
                    }
                    Direction::Response => self.responses.on_data(&data, &mut cx),
                }
                cx.pairing.tails[direction as usize].on_data(&data);
            }
            StreamEvent::Retransmitted(data) => {
                let (compared, conflicting) = match direction {
                    Direction::Request => self.requests.compare_retransmission(&data),
                    Direction::Response => self.responses.compare_retransmission(&data),
                };
                cx.shared.stats.retransmitted_bytes_compared += compared;
                cx.shared.stats.retransmitted_bytes_conflicting += conflicting;
                return;
            }
            other => {
                if let StreamEvent::Gap { len, .. } = other {
                    cx.emit(HttpEvent::Gap {
                        flow: *flow,
                        direction,
                        len,
                    });
                }
                cx.pairing.tails[direction as usize].on_other(&other);
                match direction {
                    Direction::Request => self.requests.on_event(other, &mut cx),
                    Direction::Response => self.responses.on_event(other, &mut cx),
                }
            }
        }
        if direction == Direction::Response && std::mem::take(&mut cx.pairing.switch_declined) {
            self.requests.release_held(&mut cx);
        }
        if cx.pairing.skipped.is_some() {
            // Whatever the other direction had in progress will never complete.
            match direction {
                Direction::Request => self.responses.abandon(LossReason::Skipped, &mut cx),
                Direction::Response => self.requests.abandon(LossReason::Skipped, &mut cx),
            }
            cx.release_held_response();
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
        cx.release_held_response();
        cx.shared.stats.requests_unanswered += cx.pairing.pending.len() as u64;
    }

    fn buffered_bytes(&self) -> usize {
        self.requests.buffered_bytes() + self.responses.buffered_bytes()
    }

    fn wants_payload(&self) -> bool {
        self.pairing.skipped.is_none()
    }
}
