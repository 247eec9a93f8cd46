//! Request framing: finds where each request starts and ends in the client's byte stream and
//! emits its exact bytes.
//!
//! Zero-copy: a request that lies inside one delivered chunk is emitted as a slice of that chunk;
//! one that spans chunks is collected in a buffer (one copy). Bytes of a request larger than
//! `max_message_bytes` are not kept at all - the body is skipped by its length so the stream stays
//! in sync.

use bytes::{Bytes, BytesMut};

use super::chunked::BodyReader;
use super::detect::{Resync, Sniff, find_request_line, resync_step, sniff_client};
use super::event::{HttpEvent, LossReason, RequestEvent, RequestSummary, SkipReason};
use super::exchange::{Ctx, Pending};
use super::head::{BodyFraming, HttpRequest, RequestHead, parse_request_head};
use crate::reassembly::{StreamData, StreamEvent};
use crate::segment::Direction;

/// Most bytes reserved ahead for a request body of announced length.
const MAX_RESERVE: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a request line. `tentative`: found by scanning, so a parse failure is just a
    /// false candidate, not a malformed request.
    Head {
        tentative: bool,
    },
    Body,
    /// Scanning for a line that starts with a method.
    Resync,
    Closed,
}

#[derive(Debug)]
struct Message {
    index: u64,
    head: RequestHead,
    first_byte_ns: u64,
    /// Wire bytes so far.
    size: u64,
    /// Bytes are being collected (false once over `max_message_bytes`, or after a gap).
    keep: bool,
    /// The head, kept for the event of a request too large to keep whole.
    head_only: Option<Bytes>,
    /// A gap inside the body: it is skipped to its end but the request is not emitted.
    lost: bool,
    ends_mirroring: Option<SkipReason>,
    reader: BodyReader,
}

#[derive(Debug)]
pub struct RequestFramer {
    state: State,
    /// The message in progress when it spans chunks, or a partial head or resync candidate.
    buf: BytesMut,
    /// Look for TLS / HTTP/2 in the next bytes (connection start or mid-stream join).
    sniff: bool,
    /// Only TLS can be recognised after a mid-stream join.
    sniff_tls_only: bool,
    head_started_ns: u64,
    /// Boxed: most connections sit idle between messages, and the table holds many.
    message: Option<Box<Message>>,
}

impl Default for RequestFramer {
    fn default() -> Self {
        Self {
            state: State::Head { tentative: false },
            buf: BytesMut::new(),
            sniff: true,
            sniff_tls_only: false,
            head_started_ns: 0,
            message: None,
        }
    }
}

impl RequestFramer {
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn on_event(&mut self, event: StreamEvent, cx: &mut Ctx<'_>) {
        match event {
            StreamEvent::JoinedMidStream => {
                self.state = State::Resync;
                self.sniff = true;
                self.sniff_tls_only = true;
                cx.desync();
            }
            StreamEvent::Data(data) => self.on_data(&data, cx),
            StreamEvent::Gap { len, .. } => self.on_gap(len, cx),
            StreamEvent::Fin { .. } => {
                self.abandon(LossReason::Truncated, cx);
                self.state = State::Closed;
            }
        }
    }

    /// Abandons the message in progress, if any (counted).
    pub fn abandon(&mut self, reason: LossReason, cx: &mut Ctx<'_>) {
        if let Some(message) = self.message.take() {
            if !message.lost {
                cx.lose(Direction::Request, reason, Some(message.index));
            }
            cx.forget_pending(message.index);
        } else if matches!(self.state, State::Head { tentative: false }) && !self.buf.is_empty() {
            cx.lose(Direction::Request, reason, None);
        }
        self.buf.clear();
        self.state = State::Closed;
    }

    fn on_gap(&mut self, len: u64, cx: &mut Ctx<'_>) {
        if let Some(message) = &mut self.message
            && self.state == State::Body
            && message.reader.skip_gap(len)
        {
            // The gap is inside a body of known length: only this request is lost and the next
            // one starts exactly where the body ends.
            if !message.lost {
                message.lost = true;
                message.keep = false;
                let index = message.index;
                cx.lose(Direction::Request, LossReason::Gap, Some(index));
            }
            self.buf.clear();
            return;
        }
        if self.state == State::Closed {
            return;
        }
        self.abandon(LossReason::Gap, cx);
        // Whole requests may have vanished in the gap, so order pairing is over; the gap's end
        // is a likely message boundary (lost segments often hold whole requests).
        cx.desync();
        self.state = State::Resync;
    }

    fn malformed(&mut self, error: impl std::fmt::Display, tentative: bool, cx: &mut Ctx<'_>) {
        if !tentative {
            tracing::debug!(flow = %cx.flow, %error, "malformed request");
            cx.stats().request_parse_errors += 1;
            let index = self.message.as_ref().map(|message| message.index);
            cx.lose(Direction::Request, LossReason::Malformed, index);
            cx.desync();
        }
        if let Some(message) = self.message.take() {
            cx.forget_pending(message.index);
        }
        self.buf.clear();
        self.state = State::Resync;
    }

    fn on_data(&mut self, data: &StreamData, cx: &mut Ctx<'_>) {
        let input = &data.payload;
        let mut pos = 0;
        // The message in progress is `buf` followed by `input[msg_start..pos]`.
        let mut msg_start = 0;
        while pos < input.len() {
            if cx.pairing.skipped.is_some() {
                self.buf.clear();
                self.state = State::Closed;
            }
            match self.state {
                State::Closed => return,
                State::Resync => {
                    if self.sniff {
                        self.sniff = false;
                        if sniff_client(&input[pos..]) == Sniff::Tls {
                            cx.skip_connection(SkipReason::Tls);
                            return;
                        }
                    }
                    match resync_step(&mut self.buf, input, &mut pos, find_request_line) {
                        Resync::Found => {
                            // The message starts in `buf` (a confirmed candidate) or at `pos`.
                            msg_start = pos;
                            cx.stats().resyncs += 1;
                            self.state = State::Head { tentative: true };
                        }
                        Resync::CandidateStarted => self.head_started_ns = data.timestamp_ns,
                        Resync::Searching => {}
                    }
                }
                State::Head { tentative } => {
                    if self.buf.is_empty() {
                        // RFC 9112 §2.2: empty lines before a request line are ignored (and
                        // not replayed).
                        while pos < input.len() && matches!(input[pos], b'\r' | b'\n') {
                            pos += 1;
                        }
                        if pos == input.len() {
                            break;
                        }
                        msg_start = pos;
                        self.head_started_ns = data.timestamp_ns;
                        if self.sniff {
                            match self.apply_sniff(sniff_client(&input[pos..]), cx) {
                                Some(Sniff::NeedMore) => {
                                    self.buf.extend_from_slice(&input[pos..]);
                                    break;
                                }
                                Some(_) => {}
                                None => return,
                            }
                        }
                        match parse_request_head(&input[pos..], &cx.shared.limits) {
                            Ok(Some(head)) => {
                                pos += head.head_len;
                                self.start(head, Some((input, msg_start)), data, pos, cx);
                                self.advance_body(input, &mut pos, &mut msg_start, data, cx);
                            }
                            Ok(None) => {
                                self.buf.extend_from_slice(&input[pos..]);
                                break;
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
                        if self.sniff {
                            match self.apply_sniff(sniff_client(&self.buf), cx) {
                                Some(Sniff::NeedMore) => {
                                    pos += take;
                                    continue;
                                }
                                Some(_) => {}
                                None => return,
                            }
                        }
                        match parse_request_head(&self.buf, &cx.shared.limits) {
                            Ok(Some(head)) => {
                                self.buf.truncate(head.head_len);
                                pos += head.head_len - old;
                                msg_start = pos;
                                self.start(head, None, data, pos, cx);
                                self.advance_body(input, &mut pos, &mut msg_start, data, cx);
                            }
                            Ok(None) => {
                                pos += take;
                                msg_start = pos;
                            }
                            Err(error) => {
                                // The buffered bytes are dropped; scanning continues in `input`.
                                self.malformed(error, tentative, cx);
                            }
                        }
                    }
                }
                State::Body => self.advance_body(input, &mut pos, &mut msg_start, data, cx),
            }
        }
        if self.state == State::Body
            && let Some(message) = &self.message
            && message.keep
        {
            self.buf.extend_from_slice(&input[msg_start..]);
        }
    }

    /// Acts on TLS / HTTP/2 detection at the start of a connection. `None`: connection skipped.
    fn apply_sniff(&mut self, sniffed: Sniff, cx: &mut Ctx<'_>) -> Option<Sniff> {
        match sniffed {
            Sniff::NeedMore => Some(Sniff::NeedMore),
            Sniff::Http1 => {
                self.sniff = false;
                Some(Sniff::Http1)
            }
            Sniff::Http2 if self.sniff_tls_only => {
                self.sniff = false;
                Some(Sniff::Http1)
            }
            Sniff::Tls => {
                cx.skip_connection(SkipReason::Tls);
                None
            }
            Sniff::Http2 => {
                cx.skip_connection(SkipReason::Http2);
                None
            }
        }
    }

    /// A head was parsed; `pos` is just past it.
    /// `in_input`: the head is `input[msg_start..pos]`; `None`: it is all of `buf`.
    fn start(
        &mut self,
        mut head: RequestHead,
        in_input: Option<(&Bytes, usize)>,
        data: &StreamData,
        pos: usize,
        cx: &mut Ctx<'_>,
    ) {
        self.sniff = false;
        let method = match in_input {
            Some((input, msg_start)) => &input[msg_start..msg_start + head.method_len as usize],
            None => &self.buf[..head.method_len as usize],
        };
        let is_head = method == b"HEAD";
        let is_connect = method == b"CONNECT";
        let index = cx.pairing.next_index;
        cx.pairing.next_index += 1;
        cx.pairing.requests_seen = true;
        cx.stats().requests_started += 1;
        cx.push_pending(Pending {
            index,
            is_head,
            is_connect,
            end_seq: data.seq.wrapping_add(pos as u32),
            last_byte_ns: data.timestamp_ns,
            summary: None,
        });
        let ends_mirroring = if is_connect {
            // RFC 9110 §9.3.6: a CONNECT request has no content; the tunnel follows.
            head.body = BodyFraming::None;
            Some(SkipReason::Connect)
        } else if head.facts.upgrade {
            Some(SkipReason::Upgrade)
        } else {
            None
        };
        let head_len = head.head_len as u64;
        let max = cx.shared.config.max_message_bytes as u64;
        let keep = match head.body {
            BodyFraming::Length(length) => head_len.saturating_add(length) <= max,
            _ => head_len <= max,
        };
        let head_only = match (keep, in_input) {
            (true, _) => None,
            (false, Some((input, msg_start))) => Some(input.slice(msg_start..pos)),
            (false, None) => Some(self.buf.split().freeze()),
        };
        if keep && let BodyFraming::Length(length) = head.body {
            // One allocation for the whole request instead of doubling as chunks arrive; capped
            // so a large announced length costs nothing until its bytes actually come.
            let total = (head_len + length).min(MAX_RESERVE) as usize;
            self.buf.reserve(total.saturating_sub(self.buf.len()));
        }
        let reader = BodyReader::new(head.body, cx.shared.limits.max_head_bytes);
        self.message = Some(Box::new(Message {
            index,
            head,
            first_byte_ns: self.head_started_ns,
            size: head_len,
            keep,
            head_only,
            lost: false,
            ends_mirroring,
            reader,
        }));
        self.state = State::Body;
    }

    fn advance_body(
        &mut self,
        input: &Bytes,
        pos: &mut usize,
        msg_start: &mut usize,
        data: &StreamData,
        cx: &mut Ctx<'_>,
    ) {
        let Some(message) = &mut self.message else {
            self.state = State::Head { tentative: false };
            return;
        };
        let consumed = match message.reader.feed(&input[*pos..], &mut |_| {}) {
            Ok(consumed) => consumed,
            Err(error) => {
                self.malformed(error, false, cx);
                return;
            }
        };
        *pos += consumed;
        message.size += consumed as u64;
        if message.keep && message.size > cx.shared.config.max_message_bytes as u64 {
            message.keep = false;
            let head_len = message.head.head_len;
            message.head_only = Some(if self.buf.is_empty() {
                input.slice(*msg_start..*msg_start + head_len)
            } else {
                Bytes::copy_from_slice(&self.buf[..head_len])
            });
            self.buf = BytesMut::new();
        }
        if message.reader.is_done() {
            self.finish(input, *pos, *msg_start, data, cx);
            *msg_start = *pos;
        }
    }

    fn finish(
        &mut self,
        input: &Bytes,
        pos: usize,
        msg_start: usize,
        data: &StreamData,
        cx: &mut Ctx<'_>,
    ) {
        self.state = State::Head { tentative: false };
        let Some(message) = self.message.take() else {
            return;
        };
        let end_seq = data.seq.wrapping_add(pos as u32);
        if message.lost {
            if let Some(pending) = cx.pending_mut(message.index) {
                pending.end_seq = end_seq;
                pending.last_byte_ns = data.timestamp_ns;
            }
        } else {
            let bytes = match message.head_only {
                Some(head) => head,
                None if self.buf.is_empty() => input.slice(msg_start..pos),
                None => {
                    self.buf.extend_from_slice(&input[msg_start..pos]);
                    self.buf.split().freeze()
                }
            };
            let skip = message
                .ends_mirroring
                .or((!message.keep).then_some(SkipReason::TooLarge));
            let request = HttpRequest::new(bytes, message.head);
            let stats = cx.stats();
            stats.requests_total += 1;
            match skip {
                Some(SkipReason::TooLarge) => stats.requests_skipped_too_large += 1,
                Some(SkipReason::Upgrade) => stats.requests_skipped_upgrade += 1,
                Some(SkipReason::Connect) => stats.requests_skipped_connect += 1,
                _ => {}
            }
            let label = cx.shared.config.label_responses;
            if let Some(pending) = cx.pending_mut(message.index) {
                pending.end_seq = end_seq;
                pending.last_byte_ns = data.timestamp_ns;
                pending.summary = label.then(|| RequestSummary::of(&request));
            }
            let flow = *cx.flow;
            cx.emit(HttpEvent::Request(RequestEvent {
                flow,
                index: message.index,
                request,
                first_byte_ns: message.first_byte_ns,
                last_byte_ns: data.timestamp_ns,
                skip,
            }));
        }
        self.buf.clear();
        if let Some(reason) = message.ends_mirroring {
            cx.skip_connection(reason);
            self.state = State::Closed;
        }
    }
}
