//! Response framing: the primary's responses off the wire, each paired with its request.
//!
//! Only the head is kept; the body is delimited (Content-Length, chunked, or connection close)
//! and reduced to its length and an xxh3-128 digest of the decoded payload, so a chunked primary
//! and a Content-Length shadow still compare equal.

use bytes::{Bytes, BytesMut};
use xxhash_rust::xxh3::Xxh3;

use super::chunked::BodyReader;
use super::detect::{Resync, find_status_line, resync_step};
use super::event::{BodyDigest, HttpEvent, LossReason, ResponseEvent, SkipReason};
use super::exchange::{Ctx, Pending};
use super::head::{
    HttpResponseHead, ResponseBody, ResponseHead, parse_response_head, response_body,
};
use crate::reassembly::{StreamData, StreamEvent};
use crate::segment::Direction;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Joined mid-stream: nothing can be paired before a request was seen.
    AwaitRequest,
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
    first_byte_ns: u64,
    body_len: u64,
    size: u64,
    digest: Digest,
    reader: BodyReader,
    /// A gap inside the body: delimited to its end but not emitted.
    lost: bool,
}

#[derive(Debug)]
pub struct ResponseFramer {
    state: State,
    /// Partial head or resync candidate.
    buf: BytesMut,
    head_started_ns: u64,
    head_ack: u32,
    interim: u32,
    /// Boxed: most connections sit idle between messages, and the table holds many.
    message: Option<Box<Message>>,
}

impl Default for ResponseFramer {
    fn default() -> Self {
        Self {
            state: State::Head { tentative: false },
            buf: BytesMut::new(),
            head_started_ns: 0,
            head_ack: 0,
            interim: 0,
            message: None,
        }
    }
}

impl ResponseFramer {
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn on_event(&mut self, event: StreamEvent, cx: &mut Ctx<'_>) {
        match event {
            StreamEvent::JoinedMidStream => {
                self.state = State::AwaitRequest;
                cx.desync();
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
        }
    }

    /// Abandons the response in progress, if any (counted).
    pub fn abandon(&mut self, reason: LossReason, cx: &mut Ctx<'_>) {
        if let Some(message) = self.message.take() {
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
            State::AwaitRequest => return,
            _ => {}
        }
        self.abandon(LossReason::Gap, cx);
        cx.desync();
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
            cx.desync();
        }
        self.message = None;
        self.buf.clear();
        self.state = State::Resync;
    }

    fn on_data(&mut self, data: &StreamData, cx: &mut Ctx<'_>) {
        let input = &data.payload;
        let mut pos = 0;
        while pos < input.len() {
            if cx.pairing.skipped.is_some() {
                self.state = State::Closed;
            }
            match self.state {
                State::Closed => return,
                State::AwaitRequest => {
                    if !cx.pairing.requests_seen {
                        return;
                    }
                    // The first response bytes after a request often start its response.
                    self.state = State::Resync;
                }
                State::Resync => {
                    match resync_step(&mut self.buf, input, &mut pos, find_status_line) {
                        Resync::Found => {
                            cx.stats().resyncs += 1;
                            self.state = State::Head { tentative: true };
                        }
                        Resync::CandidateStarted => {
                            self.head_started_ns = data.timestamp_ns;
                            self.head_ack = data.ack;
                        }
                        Resync::Searching => {}
                    }
                }
                State::Head { tentative } => {
                    if self.buf.is_empty() {
                        self.head_started_ns = data.timestamp_ns;
                        self.head_ack = data.ack;
                        match parse_response_head(&input[pos..], &cx.shared.limits) {
                            Ok(Some(head)) => {
                                let bytes = input.slice(pos..pos + head.head_len);
                                pos += head.head_len;
                                self.start(bytes, head, tentative, cx);
                            }
                            Ok(None) => {
                                self.buf.extend_from_slice(&input[pos..]);
                                pos = input.len();
                            }
                            Err(error) => {
                                self.malformed(error, tentative, cx);
                                pos += 1;
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
                            Err(error) => self.malformed(error, tentative, cx),
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
        let (is_head, is_connect) = cx
            .peek_pair(ack)
            .map_or((false, false), |pair| (pair.is_head, pair.is_connect));
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
                self.state = State::Head { tentative: false };
                return;
            }
            ResponseBody::Switch => None,
            ResponseBody::Body(framing) => Some(framing),
        };
        let pair = cx.take_pair(ack);
        let head = HttpResponseHead::new(bytes, head);
        let reader = framing.map_or(BodyReader::Done, |framing| {
            BodyReader::new(framing, cx.shared.limits.max_head_bytes)
        });
        let size = head.bytes().len() as u64;
        self.message = Some(Box::new(Message {
            head,
            pair,
            first_byte_ns: self.head_started_ns,
            body_len: 0,
            size,
            digest: Digest::Empty,
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
        let body_len = &mut message.body_len;
        let base = input.as_ptr() as usize;
        let result = message.reader.feed(&input[start..], &mut |piece| {
            *body_len += piece.len() as u64;
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
        self.state = State::Head { tentative: false };
        let interim = std::mem::take(&mut self.interim);
        let Some(message) = self.message.take() else {
            return;
        };
        if message.lost {
            return;
        }
        let stats = cx.stats();
        stats.responses_total += 1;
        if message.pair.is_some() {
            stats.responses_paired += 1;
        }
        if message.size > cx.shared.config.max_message_bytes as u64 {
            cx.stats().responses_too_large += 1;
        }
        let (request_index, request, latency_ns) = match message.pair {
            Some(pair) => (
                Some(pair.index),
                pair.summary,
                Some(message.first_byte_ns.saturating_sub(pair.last_byte_ns)),
            ),
            None => (None, None, None),
        };
        let flow = *cx.flow;
        cx.emit(HttpEvent::Response(ResponseEvent {
            flow,
            request_index,
            request,
            head: message.head,
            body_len: message.body_len,
            body_digest: message.digest.finish(),
            first_byte_ns: message.first_byte_ns,
            last_byte_ns,
            latency_ns,
            interim_responses: interim,
        }));
    }
}
