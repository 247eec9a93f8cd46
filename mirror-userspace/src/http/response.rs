//! Response framing: the primary's responses off the wire, each paired with its request.
//!
//! Only the head is kept; the body is delimited (Content-Length, chunked, or connection close)
//! and reduced to its length and an xxh3-128 digest of the decoded payload, so a chunked primary
//! and a Content-Length shadow still compare equal.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use xxhash_rust::xxh3::Xxh3;

use super::chunked::BodyReader;
use super::detect::{Scan, find_status_line};
use super::event::{BodyDigest, LossReason, ResponseEvent, SkipReason, UnpairedReason};
use super::exchange::{Ctx, Pending};
use super::head::{
    HttpResponseHead, ResponseBody, ResponseHead, parse_response_head, response_body,
};
use crate::held::{BodyBudget, BodyHold};
use crate::reassembly::{StreamData, StreamEvent};
use crate::segment::Direction;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for a status line at the start of a captured segment (after a gap, a parse
    /// error or a mid-stream join).
    Resync,
    Head {
        tentative: bool,
    },
    Body,
    Closed,
}

/// Digest of a body that may arrive in pieces; a body in one piece is hashed in one call.
#[derive(Default)]
enum Digest {
    #[default]
    Empty,
    One(Bytes),
    Streaming(Box<Xxh3>),
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("Empty"),
            Self::One(bytes) => write!(f, "One({} bytes)", bytes.len()),
            Self::Streaming(_) => f.write_str("Streaming"),
        }
    }
}

impl Digest {
    fn update(&mut self, piece: Bytes) {
        match self {
            Self::Empty => *self = Self::One(piece),
            Self::One(first) => {
                let mut hasher = Box::new(Xxh3::new());
                hasher.update(first);
                hasher.update(&piece);
                *self = Self::Streaming(hasher);
            }
            Self::Streaming(hasher) => hasher.update(&piece),
        }
    }

    /// Stops holding on to a chunk (called when the body continues in the next one).
    fn detach(&mut self) {
        if let Self::One(first) = self {
            let mut hasher = Box::new(Xxh3::new());
            hasher.update(first);
            *self = Self::Streaming(hasher);
        }
    }

    fn finish(self) -> BodyDigest {
        match self {
            Self::Empty => BodyDigest::deferred(Bytes::new()),
            Self::One(bytes) => BodyDigest::deferred(bytes),
            Self::Streaming(hasher) => BodyDigest::done(hasher.digest128()),
        }
    }
}

#[derive(Debug)]
struct Message {
    head: HttpResponseHead,
    pair: Option<Pending>,
    /// Why it has no pair.
    unpaired: Option<UnpairedReason>,
    first_byte_ns: u64,
    body_len: u64,
    size: u64,
    digest: Digest,
    /// The body, copied when bodies are held ([`Shared::hold_bodies`]) and it fits.
    held: BodyHold,
    reader: BodyReader,
    /// A gap inside the body: delimited to its end but not emitted.
    lost: bool,
}

#[derive(Debug)]
pub struct ResponseFramer {
    state: State,
    /// Partial head or resync candidate.
    buf: BytesMut,
    /// Raw sequence number of `buf`'s first byte.
    buf_seq: u32,
    head_started_ns: u64,
    head_ack: u32,
    head_seq: u32,
    interim: u32,
    /// Boxed: most connections sit idle between messages, and the table holds many.
    message: Option<Box<Message>>,
}

impl Default for ResponseFramer {
    fn default() -> Self {
        Self {
            state: State::Head { tentative: false },
            buf: BytesMut::new(),
            buf_seq: 0,
            head_started_ns: 0,
            head_ack: 0,
            head_seq: 0,
            interim: 0,
            message: None,
        }
    }
}

impl ResponseFramer {
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Stands between messages (or is lost in the stream), for the quiet point. Not after an
    /// interim response: its final response is still to come.
    pub fn at_boundary(&self) -> bool {
        self.buf.is_empty()
            && self.message.is_none()
            && self.interim == 0
            && matches!(self.state, State::Head { .. } | State::Resync)
    }

    /// Pairing resumed at a quiet point: the next byte starts a response.
    pub fn resume(&mut self) {
        if self.state != State::Closed {
            self.state = State::Head { tentative: false };
            self.interim = 0;
        }
    }

    /// Compares retransmitted bytes with the partial head still held: (compared, differing).
    pub fn compare_retransmission(&self, data: &StreamData) -> (u64, u64) {
        compare_held(&self.buf, self.buf_seq, data)
    }

    pub fn on_event(&mut self, event: StreamEvent, cx: &mut Ctx<'_>) {
        match event {
            StreamEvent::JoinedMidStream => {
                self.state = State::Resync;
                cx.desync(UnpairedReason::Joined);
            }
            StreamEvent::Data(data) => self.on_data(&data, cx),
            StreamEvent::Gap { len, .. } => self.on_gap(len, cx),
            StreamEvent::Fin { timestamp_ns } => {
                if let Some(message) = &self.message
                    && message.reader == BodyReader::Close
                {
                    // RFC 9112 §6.3 rule 8: the close ends a close-delimited body.
                    self.finish(timestamp_ns, cx);
                }
                self.abandon(LossReason::Truncated, cx);
            }
            StreamEvent::Retransmitted(_) => {}
        }
    }

    /// Abandons the response in progress, if any (counted).
    pub fn abandon(&mut self, reason: LossReason, cx: &mut Ctx<'_>) {
        if let Some(message) = self.message.take() {
            cx.pairing.answering = None;
            if !message.lost {
                let index = message.pair.map(|pair| pair.index);
                cx.lose(Direction::Response, reason, index);
            }
        } else if matches!(self.state, State::Head { tentative: false }) && !self.buf.is_empty() {
            cx.lose(Direction::Response, reason, None);
        }
        self.buf.clear();
        self.state = State::Closed;
    }

    fn on_gap(&mut self, len: u64, cx: &mut Ctx<'_>) {
        if let Some(message) = &mut self.message
            && message.reader.skip_gap(len)
        {
            if !message.lost {
                message.lost = true;
                let index = message.pair.as_ref().map(|pair| pair.index);
                cx.lose(Direction::Response, LossReason::Gap, index);
            }
            return;
        }
        match self.state {
            State::Closed => return,
            State::Resync => {
                self.buf.clear();
                return;
            }
            _ => {}
        }
        self.abandon(LossReason::Gap, cx);
        cx.desync(UnpairedReason::Gap);
        self.state = State::Resync;
    }

    fn malformed(&mut self, error: impl std::fmt::Display, tentative: bool, cx: &mut Ctx<'_>) {
        if !tentative {
            tracing::debug!(flow = %cx.flow, %error, "malformed response");
            cx.stats().response_parse_errors += 1;
            let index = self
                .message
                .as_ref()
                .and_then(|message| message.pair.as_ref())
                .map(|pair| pair.index);
            cx.lose(Direction::Response, LossReason::Malformed, index);
            cx.desync(UnpairedReason::Malformed);
        }
        self.message = None;
        self.buf.clear();
        self.state = State::Resync;
    }

    pub fn on_data(&mut self, data: &StreamData, cx: &mut Ctx<'_>) {
        let input = &data.payload;
        let mut pos = 0;
        while pos < input.len() {
            if cx.pairing.skipped.is_some() {
                self.state = State::Closed;
            }
            match self.state {
                State::Closed => return,
                State::Resync => {
                    // Only where the server started a segment: a status line inside a body
                    // must not be taken for a response.
                    if pos == 0 && data.starts_segment && starts_message(input, find_status_line) {
                        cx.stats().resyncs += 1;
                        self.state = State::Head { tentative: true };
                    } else {
                        return;
                    }
                }
                State::Head { tentative } => {
                    if self.buf.is_empty() {
                        // Empty lines before a status line are passed over, as RFC 9112 §2.2
                        // asks of servers before a request line (a stray CRLF after a body).
                        while pos < input.len() && matches!(input[pos], b'\r' | b'\n') {
                            pos += 1;
                        }
                        if pos == input.len() {
                            break;
                        }
                        self.head_started_ns = data.timestamp_ns;
                        self.head_ack = data.ack;
                        self.head_seq = data.seq.wrapping_add(pos as u32);
                        match parse_response_head(&input[pos..], &cx.shared.limits) {
                            Ok(Some(head)) => {
                                let bytes = input.slice(pos..pos + head.head_len);
                                pos += head.head_len;
                                self.start(bytes, head, tentative, cx);
                            }
                            Ok(None) => {
                                self.buf_seq = self.head_seq;
                                self.buf.extend_from_slice(&input[pos..]);
                                pos = input.len();
                            }
                            Err(error) => {
                                self.malformed(error, tentative, cx);
                                return;
                            }
                        }
                    } else {
                        let old = self.buf.len();
                        let room = (cx.shared.limits.max_head_bytes + 1).saturating_sub(old);
                        let take = (input.len() - pos).min(room.max(1));
                        self.buf.extend_from_slice(&input[pos..pos + take]);
                        match parse_response_head(&self.buf, &cx.shared.limits) {
                            Ok(Some(head)) => {
                                self.buf.truncate(head.head_len);
                                pos += head.head_len - old;
                                let bytes = self.buf.split().freeze();
                                self.start(bytes, head, tentative, cx);
                            }
                            Ok(None) => pos += take,
                            Err(error) => {
                                self.malformed(error, tentative, cx);
                                return;
                            }
                        }
                    }
                }
                State::Body => self.advance_body(input, &mut pos, data, cx),
            }
        }
        if let Some(message) = &mut self.message {
            message.digest.detach();
        }
    }

    /// A head was parsed: decide its framing and pairing.
    fn start(&mut self, bytes: Bytes, head: ResponseHead, tentative: bool, cx: &mut Ctx<'_>) {
        let ack = self.head_ack;
        cx.response_started(self.head_seq, ack);
        let peeked = cx
            .peek_pair(ack)
            .map(|pair| (pair.index, pair.is_head, pair.is_connect));
        if peeked == Err(UnpairedReason::Order) && cx.pairing.desync.is_none() {
            // In sync, yet no request this response can answer: the count is wrong.
            cx.desync(UnpairedReason::Order);
        }
        let (is_head, is_connect) =
            peeked.map_or((false, false), |(_, head, connect)| (head, connect));
        let status = head.status;
        let body = match response_body(&head, is_head, is_connect) {
            Ok(body) => body,
            Err(error) => {
                self.malformed(error, tentative, cx);
                return;
            }
        };
        let framing = match body {
            ResponseBody::Interim => {
                // 100 Continue (RFC 9110 §15.2) and friends: the final response follows.
                cx.stats().responses_interim += 1;
                self.interim += 1;
                self.state = State::Head {
                    tentative: cx.pairing.desync.is_some(),
                };
                return;
            }
            ResponseBody::Switch => None,
            ResponseBody::Body(framing) => Some(framing),
        };
        let (pair, unpaired) = match peeked {
            Ok((index, ..)) => {
                let pair = cx.take_pair();
                cx.pairing.answering = Some(index);
                if cx
                    .pairing
                    .awaiting_switch
                    .is_some_and(|(awaited, _)| awaited == index)
                    && framing.is_some()
                {
                    // Only a switch (101, or 2xx to CONNECT) changes the protocol.
                    cx.pairing.awaiting_switch = None;
                    cx.pairing.switch_declined = true;
                }
                (pair, None)
            }
            Err(reason) => (None, Some(reason)),
        };
        let head = HttpResponseHead::new(bytes, head);
        let reader = framing.map_or(BodyReader::Done, |framing| {
            BodyReader::new(framing, cx.shared.limits.max_head_bytes)
        });
        let size = head.bytes().len() as u64;
        self.message = Some(Box::new(Message {
            head,
            pair,
            unpaired,
            first_byte_ns: self.head_started_ns,
            body_len: 0,
            size,
            digest: Digest::Empty,
            held: cx
                .shared
                .hold_bodies
                .as_ref()
                .map_or(BodyHold::Dropped, BodyBudget::start),
            reader,
            lost: false,
        }));
        self.state = State::Body;
        if framing.is_none() {
            self.finish(self.head_started_ns, cx);
            cx.skip_connection(if status == 101 {
                SkipReason::Upgrade
            } else {
                SkipReason::Connect
            });
            self.state = State::Closed;
        } else if self.message.as_ref().is_some_and(|m| m.reader.is_done()) {
            self.finish(self.head_started_ns, cx);
        }
    }

    fn advance_body(
        &mut self,
        input: &Bytes,
        pos: &mut usize,
        data: &StreamData,
        cx: &mut Ctx<'_>,
    ) {
        let Some(message) = &mut self.message else {
            self.state = State::Head { tentative: false };
            return;
        };
        let start = *pos;
        let digest = &mut message.digest;
        let held = &mut message.held;
        let body_len = &mut message.body_len;
        let base = input.as_ptr() as usize;
        let result = message.reader.feed(&input[start..], &mut |piece| {
            *body_len += piece.len() as u64;
            held.extend(piece);
            let offset = piece.as_ptr() as usize - base;
            digest.update(input.slice(offset..offset + piece.len()));
        });
        let consumed = match result {
            Ok(consumed) => consumed,
            Err(error) => {
                self.malformed(error, false, cx);
                return;
            }
        };
        *pos += consumed;
        message.size += consumed as u64;
        if message.reader.is_done() {
            self.finish(data.timestamp_ns, cx);
        }
    }

    fn finish(&mut self, last_byte_ns: u64, cx: &mut Ctx<'_>) {
        // Out of sync, a response to an unknown request may be framed wrongly (a HEAD's
        // response has no body whatever its Content-Length): what follows is only a candidate.
        self.state = State::Head {
            tentative: cx.pairing.desync.is_some(),
        };
        let interim = std::mem::take(&mut self.interim);
        let Some(message) = self.message.take() else {
            return;
        };
        cx.pairing.answering = None;
        if message.lost {
            return;
        }
        if message.size > cx.shared.config.max_message_bytes as u64 {
            cx.stats().responses_too_large += 1;
        }
        let (request_index, request, latency_ns, emitted) = match message.pair {
            Some(pair) => (
                Some(pair.index),
                pair.summary,
                Some(message.first_byte_ns.saturating_sub(pair.last_byte_ns)),
                cx.request_done(pair.index),
            ),
            None => (None, None, None, true),
        };
        let event = ResponseEvent {
            flow: *cx.flow,
            connection: cx.connection(),
            request_index,
            unpaired: message.unpaired,
            request,
            head: message.head,
            body_len: message.body_len,
            body_digest: message.digest.finish(),
            body: message.held.finish().map(Arc::new),
            first_byte_ns: message.first_byte_ns,
            last_byte_ns,
            latency_ns,
            interim_responses: interim,
        };
        if emitted {
            cx.emit_response(event);
        } else {
            // An early response: out once its request is (see `Ctx::request_emitted`). Requests
            // end in order, so one is held at a time; never drop one all the same.
            if let Some(previous) = cx.pairing.held_response.replace(event) {
                cx.emit_response(previous);
            }
        }
    }
}

/// Whether a message of the kind `find` looks for starts at the beginning of `input` (or could,
/// when `input` is shorter than a start line's first word).
pub(super) fn starts_message(input: &[u8], find: fn(&[u8]) -> Scan) -> bool {
    matches!(find(input), Scan::Found(0) | Scan::Partial(0))
}

/// Compares retransmitted bytes with the bytes `held` (starting at raw sequence number
/// `held_seq`) where they overlap: (compared, differing).
pub(super) fn compare_held(held: &[u8], held_seq: u32, data: &StreamData) -> (u64, u64) {
    let offset = data.seq.wrapping_sub(held_seq) as i32 as i64;
    let (held_from, data_from) = if offset >= 0 {
        (offset as usize, 0)
    } else {
        (0, (-offset) as usize)
    };
    if held_from >= held.len() || data_from >= data.payload.len() {
        return (0, 0);
    }
    let len = (held.len() - held_from).min(data.payload.len() - data_from);
    let differing = held[held_from..held_from + len]
        .iter()
        .zip(&data.payload[data_from..data_from + len])
        .filter(|(a, b)| a != b)
        .count();
    (len as u64, differing as u64)
}
