//! Request framing: finds where each request starts and ends in the client's byte stream and
//! emits its exact bytes.
//!
//! Zero-copy: a request that lies inside one delivered chunk is emitted as a slice of that chunk;
//! one that spans chunks is collected in a buffer (one copy). Bytes of a request larger than
//! `max_message_bytes` are not kept at all - the body is skipped by its length so the stream stays
//! in sync.
//!
//! Where the framing is lost:
//! - after a gap (or a mid-stream join) the next request is looked for only where the client
//!   started a captured segment, with a known method: a request line inside a body must not be
//!   replayed;
//! - after a request that did not parse, nothing is framed (so nothing replayed) until the
//!   framing is certain again: a quiet point (see `exchange`) or a new connection. Servers
//!   answer such a request with 400 and close; bytes after it are smuggling candidates;
//! - after a request with both Content-Length and Transfer-Encoding (RFC 9112 §6.1), nothing
//!   more of the connection's requests is framed;
//! - after an Upgrade or CONNECT request, the bytes that follow wait (bounded) until its answer
//!   says whether the protocol switched.

use bytes::{Bytes, BytesMut};

use super::chunked::BodyReader;
use super::detect::{METHODS, Sniff, find_request_line, sniff_client};
use super::event::{
    HttpEvent, LossReason, RequestEvent, RequestSummary, SkipReason, UnpairedReason,
};
use super::exchange::{Ctx, Pending};
use super::head::{BodyFraming, HttpRequest, RequestHead, parse_request_head};
use super::response::{compare_held, starts_message};
use crate::reassembly::{StreamData, StreamEvent};
use crate::segment::Direction;

/// Most bytes reserved ahead for a request body of announced length.
const MAX_RESERVE: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a request line. `tentative`: found by looking for one, so a parse failure is
    /// just a false candidate, not a malformed request.
    Head {
        tentative: bool,
    },
    Body,
    /// Looking for a request line at the start of a captured segment.
    Resync,
    /// After a malformed request: nothing is framed until the framing is certain again.
    Discard,
    /// After an Upgrade or CONNECT request: later bytes wait in `buf` for its answer.
    AwaitSwitch,
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
    /// Upgrade or CONNECT: the protocol may switch after it.
    switches: Option<SkipReason>,
    /// Content-Length and Transfer-Encoding both present.
    ambiguous_length: bool,
    /// Carries the replay marker: another daemon's replay.
    replay: bool,
    reader: BodyReader,
}

#[derive(Debug)]
pub struct RequestFramer {
    state: State,
    /// The message in progress when it spans chunks, a partial head, or bytes held while an
    /// upgrade is answered.
    buf: BytesMut,
    /// Raw sequence number of `buf`'s first byte.
    buf_seq: u32,
    /// Look for TLS / HTTP/2 in the next bytes (connection start or mid-stream join).
    sniff: bool,
    /// Only TLS can be recognised after a mid-stream join.
    sniff_tls_only: bool,
    head_started_ns: u64,
    /// Raw sequence number of the first byte of the head in progress, and the ACK of its
    /// segment.
    head_seq: u32,
    head_ack: u32,
    /// Boxed: most connections sit idle between messages, and the table holds many.
    message: Option<Box<Message>>,
}

impl Default for RequestFramer {
    fn default() -> Self {
        Self {
            state: State::Head { tentative: false },
            buf: BytesMut::new(),
            buf_seq: 0,
            sniff: true,
            sniff_tls_only: false,
            head_started_ns: 0,
            head_seq: 0,
            head_ack: 0,
            message: None,
        }
    }
}

impl RequestFramer {
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Stands between messages (or has lost the framing), for the quiet point.
    pub fn at_boundary(&self) -> bool {
        match self.state {
            State::Head { .. } | State::Resync => self.buf.is_empty() && self.message.is_none(),
            State::Discard => true,
            State::Body | State::AwaitSwitch | State::Closed => false,
        }
    }

    /// Whether `data` could start a request where the framer stands (it begins with a method,
    /// after empty lines).
    pub fn may_start_here(&self, data: &StreamData) -> bool {
        let input = &data.payload;
        let start = input
            .iter()
            .position(|byte| !matches!(byte, b'\r' | b'\n'))
            .unwrap_or(input.len());
        start < input.len() && starts_message(&input[start..], find_request_line)
    }

    /// Pairing resumed at a quiet point: the next byte starts a request, for certain.
    pub fn resume(&mut self) {
        if matches!(
            self.state,
            State::Head { .. } | State::Resync | State::Discard
        ) {
            self.state = State::Head { tentative: false };
            self.buf.clear();
        }
    }

    /// Compares retransmitted bytes with the message still held: (compared, differing).
    pub fn compare_retransmission(&self, data: &StreamData) -> (u64, u64) {
        if self.state == State::AwaitSwitch {
            return (0, 0);
        }
        compare_held(&self.buf, self.buf_seq, data)
    }

    pub fn on_event(&mut self, event: StreamEvent, cx: &mut Ctx<'_>) {
        match event {
            StreamEvent::JoinedMidStream => {
                self.state = State::Resync;
                self.sniff = true;
                self.sniff_tls_only = true;
                cx.desync(UnpairedReason::Joined);
            }
            StreamEvent::Data(data) => self.on_data(&data, cx),
            StreamEvent::Gap { len, .. } => self.on_gap(len, cx),
            StreamEvent::Fin { .. } => {
                self.abandon(LossReason::Truncated, cx);
                self.state = State::Closed;
            }
            StreamEvent::Retransmitted(_) => {}
        }
    }

    /// Abandons the message in progress, if any (counted).
    pub fn abandon(&mut self, reason: LossReason, cx: &mut Ctx<'_>) {
        if let Some(message) = self.message.take() {
            if !message.lost {
                cx.lose(Direction::Request, reason, Some(message.index));
            }
        } else if matches!(self.state, State::Head { tentative: false }) && !self.buf.is_empty() {
            cx.lose(Direction::Request, reason, None);
        }
        self.buf.clear();
        self.state = State::Closed;
    }

    /// The answer to the Upgrade or CONNECT request did not switch protocols: the bytes held
    /// meanwhile are requests again.
    pub fn release_held(&mut self, cx: &mut Ctx<'_>) {
        if self.state != State::AwaitSwitch {
            return;
        }
        self.state = State::Head { tentative: false };
        if self.buf.is_empty() {
            return;
        }
        let held = self.buf.split().freeze();
        let data = StreamData {
            seq: self.buf_seq,
            payload: held,
            ack: self.head_ack,
            timestamp_ns: self.head_started_ns,
            starts_segment: false,
        };
        self.on_data(&data, cx);
    }

    /// The bytes held after an Upgrade or CONNECT request cannot be kept: mirroring of the
    /// connection ends, for the reason of that request.
    fn give_up_switch(&mut self, cx: &mut Ctx<'_>) {
        let reason = cx
            .pairing
            .awaiting_switch
            .take()
            .map_or(SkipReason::Upgrade, |(_, reason)| reason);
        cx.skip_connection(reason);
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
        cx.unframed(len);
        match self.state {
            State::Closed | State::Discard => return,
            State::AwaitSwitch => {
                // The held bytes have a hole: whichever way the switch goes, they are lost.
                self.give_up_switch(cx);
                return;
            }
            State::Head { .. } | State::Body | State::Resync => {}
        }
        self.abandon(LossReason::Gap, cx);
        // Whole requests may have vanished in the gap, so order pairing is over.
        cx.desync(UnpairedReason::Gap);
        self.state = State::Resync;
    }

    fn malformed(&mut self, error: impl std::fmt::Display, tentative: bool, cx: &mut Ctx<'_>) {
        let index = self.message.take().map(|message| message.index);
        self.buf.clear();
        if tentative {
            self.state = State::Resync;
            return;
        }
        tracing::debug!(flow = %cx.flow, %error, "malformed request");
        cx.stats().request_parse_errors += 1;
        cx.lose(Direction::Request, LossReason::Malformed, index);
        cx.desync(UnpairedReason::Malformed);
        self.state = State::Discard;
    }

    pub fn on_data(&mut self, data: &StreamData, cx: &mut Ctx<'_>) {
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
                State::Discard => {
                    cx.unframed((input.len() - pos) as u64);
                    return;
                }
                State::AwaitSwitch => {
                    let held = &input[pos..];
                    if self.buf.len() + held.len() > cx.shared.limits.max_head_bytes {
                        self.give_up_switch(cx);
                        return;
                    }
                    if self.buf.is_empty() {
                        self.buf_seq = data.seq.wrapping_add(pos as u32);
                        self.head_ack = data.ack;
                        self.head_started_ns = data.timestamp_ns;
                    }
                    self.buf.extend_from_slice(held);
                    return;
                }
                State::Resync => {
                    if self.sniff {
                        self.sniff = false;
                        if sniff_client(&input[pos..]) == Sniff::Tls {
                            cx.skip_connection(SkipReason::Tls);
                            return;
                        }
                    }
                    // Only where the client started a segment (see the module docs).
                    let start = pos
                        + input[pos..]
                            .iter()
                            .position(|byte| !matches!(byte, b'\r' | b'\n'))
                            .unwrap_or(input.len() - pos);
                    if pos == 0
                        && data.starts_segment
                        && start < input.len()
                        && starts_message(&input[start..], find_request_line)
                    {
                        cx.stats().resyncs += 1;
                        self.state = State::Head { tentative: true };
                    } else {
                        cx.unframed((input.len() - pos) as u64);
                        return;
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
                        self.head_seq = data.seq.wrapping_add(pos as u32);
                        self.head_ack = data.ack;
                        if self.sniff {
                            match self.apply_sniff(sniff_client(&input[pos..]), cx) {
                                Some(Sniff::NeedMore) => {
                                    self.buf_seq = self.head_seq;
                                    self.buf.extend_from_slice(&input[pos..]);
                                    break;
                                }
                                Some(_) => {}
                                None => return,
                            }
                        }
                        match parse_request_head(&input[pos..], &cx.shared.limits) {
                            Ok(Some(head)) if tentative && !known_method(&input[pos..], &head) => {
                                self.malformed("unknown method", true, cx);
                                return;
                            }
                            Ok(Some(head)) => {
                                pos += head.head_len;
                                self.start(head, Some((input, msg_start)), data, pos, cx);
                                self.advance_body(input, &mut pos, &mut msg_start, data, cx);
                            }
                            Ok(None) => {
                                self.buf_seq = self.head_seq;
                                self.buf.extend_from_slice(&input[pos..]);
                                break;
                            }
                            Err(error) => {
                                self.malformed(error, tentative, cx);
                                if self.state == State::Discard {
                                    cx.unframed((input.len() - pos) as u64);
                                }
                                return;
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
                            Ok(Some(head)) if tentative && !known_method(&self.buf, &head) => {
                                self.malformed("unknown method", true, cx);
                                return;
                            }
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
                                self.malformed(error, tentative, cx);
                                return;
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
            if self.buf.is_empty() {
                self.buf_seq = data.seq.wrapping_add(msg_start as u32);
            }
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
        let head_bytes: &[u8] = match in_input {
            Some((input, msg_start)) => &input[msg_start..pos],
            None => &self.buf,
        };
        let method = &head_bytes[..head.method_len as usize];
        let is_head = method == b"HEAD";
        let is_connect = method == b"CONNECT";
        let index = cx.pairing.next_index;
        cx.pairing.next_index += 1;
        cx.stats().requests_started += 1;
        let summary = cx
            .shared
            .config
            .label_responses
            .then(|| RequestSummary::of_head(head_bytes, &head));
        let switches = if is_connect {
            // RFC 9110 §9.3.6: a CONNECT request has no content; the tunnel follows.
            head.body = BodyFraming::None;
            Some(SkipReason::Connect)
        } else if head.facts.upgrade {
            Some(SkipReason::Upgrade)
        } else {
            None
        };
        let pairable = cx.request_started(
            Pending {
                index,
                is_head,
                is_connect,
                start_seq: self.head_seq,
                last_byte_ns: data.timestamp_ns,
                summary,
            },
            self.head_ack,
        );
        if pairable && let Some(reason) = switches {
            cx.pairing.awaiting_switch = Some((index, reason));
        }
        let ambiguous_length =
            head.facts.content_length.is_some() && head.body == BodyFraming::Chunked;
        let replay = cx
            .shared
            .config
            .replay_marker
            .as_deref()
            .is_some_and(|marker| has_header(head_bytes, &head, marker));
        if replay {
            // A shadow's connection: its responses are not the primary's.
            cx.pairing.replay_connection = true;
        }
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
            switches,
            ambiguous_length,
            replay,
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
                *pos = input.len();
                return;
            }
        };
        *pos += consumed;
        message.size += consumed as u64;
        if consumed > 0
            && let Some(pending) = cx.pairing.pending.back_mut()
            && pending.index == message.index
        {
            // An early response is timed from the last request byte before it.
            pending.last_byte_ns = data.timestamp_ns;
        }
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
        if let Some(pending) = cx.pending_mut(message.index) {
            pending.last_byte_ns = data.timestamp_ns;
        }
        if !message.lost {
            let bytes = match message.head_only {
                Some(head) => head,
                None if self.buf.is_empty() => input.slice(msg_start..pos),
                None => {
                    self.buf.extend_from_slice(&input[msg_start..pos]);
                    self.buf.split().freeze()
                }
            };
            let skip = if message.replay {
                Some(SkipReason::ReplayMarker)
            } else {
                message
                    .switches
                    .or((!message.keep).then_some(SkipReason::TooLarge))
            };
            let request = HttpRequest::new(bytes, message.head);
            let stats = cx.stats();
            stats.requests_total += 1;
            match skip {
                Some(SkipReason::TooLarge) => stats.requests_skipped_too_large += 1,
                Some(SkipReason::Upgrade) => stats.requests_skipped_upgrade += 1,
                Some(SkipReason::Connect) => stats.requests_skipped_connect += 1,
                Some(SkipReason::ReplayMarker) => stats.requests_skipped_replay_marker += 1,
                _ => {}
            }
            let event = RequestEvent {
                flow: *cx.flow,
                connection: cx.connection(),
                index: message.index,
                request,
                first_byte_ns: message.first_byte_ns,
                last_byte_ns: data.timestamp_ns,
                skip,
                unpaired: cx.unpaired(message.index),
            };
            cx.emit(HttpEvent::Request(event));
            cx.request_emitted(message.index);
        }
        self.buf.clear();
        if message.ambiguous_length {
            // RFC 9112 §6.1: the server closes the connection after answering; later request
            // bytes are not framed (responses to the requests before are still paired).
            cx.halt_requests(SkipReason::AmbiguousLength);
            self.state = State::Closed;
        } else if let Some(reason) = message.switches {
            if cx
                .pairing
                .awaiting_switch
                .is_some_and(|(index, _)| index == message.index)
            {
                // Held until the answer says whether the protocol switched.
                self.state = State::AwaitSwitch;
            } else if cx.pairing.desync.is_some() {
                // Out of sync the answer cannot be told: stop here.
                cx.skip_connection(reason);
                self.state = State::Closed;
            }
            // Otherwise the answer came already and did not switch: go on.
        }
    }
}

/// Whether the head has a field named `name` (lower case), compared case-insensitively.
fn has_header(bytes: &[u8], head: &RequestHead, name: &[u8]) -> bool {
    head.headers.iter().any(|span| {
        span.name_len as usize == name.len() && span.name(bytes).eq_ignore_ascii_case(name)
    })
}

/// Whether a head found by looking for one starts with a method the scanner knows (httparse
/// takes any token for a method, and a candidate must not be body bytes).
fn known_method(bytes: &[u8], head: &RequestHead) -> bool {
    let method = &bytes[..head.method_len as usize];
    METHODS
        .iter()
        .any(|known| known.strip_suffix(b" ") == Some(method))
}
