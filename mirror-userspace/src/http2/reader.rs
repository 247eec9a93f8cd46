//! The frame layer of one direction: bytes in any segmentation, frames out.
//!
//! Memory is bounded whatever the peer sends: DATA payloads are handed on in pieces as they
//! arrive, control payloads are read into fixed buffers (a GOAWAY's debug data and unknown frame
//! types are skipped), and only header blocks (HEADERS or PUSH_PROMISE plus their CONTINUATIONs)
//! are buffered, up to a configured limit.

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{
    DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_LEN, Frame, FrameError, FrameHeader, GapOutcome,
    MAX_MAX_FRAME_SIZE, PREFACE, Priority, Settings, flag, kind,
};

#[derive(Debug)]
enum Payload {
    /// `pad_pending`: the pad length byte is still to come (then `data_left` is unknown).
    Data {
        pad_pending: bool,
        data_left: u32,
        lost: bool,
    },
    /// Appended to the header block buffer.
    Block,
    /// Read into `small` (at most 8 bytes); the rest, if any, is skipped.
    Fixed {
        need: u8,
    },
    /// Read 6 bytes at a time into `small`.
    Settings(Settings),
    Skip,
    /// Skipped without reporting anything (a frame a gap cut into).
    Drop,
}

#[derive(Debug)]
enum State {
    Preface {
        matched: usize,
    },
    Header,
    Payload {
        header: FrameHeader,
        remaining: u32,
        payload: Payload,
    },
    Failed(FrameError),
}

/// A header block waiting for CONTINUATION frames.
#[derive(Debug, Clone, Copy)]
enum Open {
    Headers {
        stream: u32,
        end_stream: bool,
        priority: Option<Priority>,
    },
    PushPromise {
        stream: u32,
        promised: u32,
    },
}

impl Open {
    fn stream(&self) -> u32 {
        match *self {
            Self::Headers { stream, .. } | Self::PushPromise { stream, .. } => stream,
        }
    }
}

/// Reads the frames of one direction. Feed bytes with [`Self::push`], then take frames with
/// [`Self::next_frame`] until it returns `Ok(None)`.
#[derive(Debug)]
pub struct FrameReader {
    state: State,
    input: Bytes,
    /// The first frame must be a non-ACK SETTINGS (the server's preface).
    expect_settings: bool,
    /// The partial frame header or fixed-size payload.
    small: [u8; FRAME_HEADER_LEN],
    small_len: usize,
    block: BytesMut,
    open: Option<Open>,
    max_frame_size: u32,
    max_block_bytes: usize,
}

impl FrameReader {
    /// Reader of the client's bytes: the preface first.
    pub fn client(max_block_bytes: usize) -> Self {
        Self::new(State::Preface { matched: 0 }, false, max_block_bytes)
    }

    /// Reader of the server's bytes: a SETTINGS frame first.
    pub fn server(max_block_bytes: usize) -> Self {
        Self::new(State::Header, true, max_block_bytes)
    }

    fn new(state: State, expect_settings: bool, max_block_bytes: usize) -> Self {
        Self {
            state,
            input: Bytes::new(),
            expect_settings,
            small: [0; FRAME_HEADER_LEN],
            small_len: 0,
            block: BytesMut::new(),
            open: None,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_block_bytes,
        }
    }

    /// The largest frame payload accepted from now on (the receiver's SETTINGS_MAX_FRAME_SIZE).
    pub fn set_max_frame_size(&mut self, size: u32) {
        self.max_frame_size = size.clamp(DEFAULT_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE);
    }

    /// Appends bytes. Take the frames of the previous bytes first: unread input is kept (one
    /// copy).
    pub fn push(&mut self, data: Bytes) {
        if self.input.is_empty() {
            self.input = data;
        } else if !data.is_empty() {
            let mut joined = BytesMut::with_capacity(self.input.len() + data.len());
            joined.extend_from_slice(&self.input);
            joined.extend_from_slice(&data);
            self.input = joined.freeze();
        }
    }

    /// Bytes held: unread input and the header block in progress.
    pub fn buffered_bytes(&self) -> usize {
        self.input.len() + self.block.len()
    }

    pub fn failed(&self) -> Option<FrameError> {
        match self.state {
            State::Failed(error) => Some(error),
            _ => None,
        }
    }

    /// Stands between frames with no header block open.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header) && self.small_len == 0 && self.open.is_none()
    }

    fn fail(&mut self, error: FrameError) -> Result<Option<Frame>, FrameError> {
        self.state = State::Failed(error);
        self.input = Bytes::new();
        self.block = BytesMut::new();
        Err(error)
    }

    /// The next frame, `Ok(None)` when more bytes are needed, or the connection error that
    /// stopped reading (returned again on every later call).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            match &mut self.state {
                State::Failed(error) => return Err(*error),
                State::Preface { matched } => {
                    if self.input.is_empty() {
                        return Ok(None);
                    }
                    let want = &PREFACE[*matched..];
                    let take = want.len().min(self.input.len());
                    if self.input[..take] != want[..take] {
                        return self.fail(FrameError::NoPreface);
                    }
                    self.input.advance(take);
                    *matched += take;
                    if *matched == PREFACE.len() {
                        self.state = State::Header;
                        return Ok(Some(Frame::Preface));
                    }
                }
                State::Header => {
                    if self.input.is_empty() {
                        return Ok(None);
                    }
                    let take = (FRAME_HEADER_LEN - self.small_len).min(self.input.len());
                    self.small[self.small_len..][..take].copy_from_slice(&self.input[..take]);
                    self.small_len += take;
                    self.input.advance(take);
                    if self.small_len == FRAME_HEADER_LEN {
                        self.small_len = 0;
                        let header = FrameHeader::parse(self.small);
                        if let Err(error) = self.start(header) {
                            return self.fail(error);
                        }
                    }
                }
                State::Payload {
                    header,
                    remaining,
                    payload,
                } => {
                    let header = *header;
                    if let Payload::Data {
                        pad_pending,
                        data_left,
                        lost,
                    } = payload
                    {
                        // Data bytes are handed on as they come.
                        if *remaining > 0 && self.input.is_empty() {
                            return Ok(None);
                        }
                        if *pad_pending && *remaining > 0 {
                            let pad = u32::from(self.input[0]);
                            self.input.advance(1);
                            *remaining -= 1;
                            *pad_pending = false;
                            if pad > *remaining {
                                return self.fail(FrameError::BadPadding);
                            }
                            *data_left = *remaining - pad;
                            continue;
                        }
                        let available = self.input.len().min(*remaining as usize) as u32;
                        let data_now = if *lost || *pad_pending {
                            0
                        } else {
                            available.min(*data_left)
                        };
                        let skip_now = available - data_now;
                        let data = self.input.split_to(data_now as usize);
                        self.input.advance(skip_now as usize);
                        *remaining -= available;
                        *data_left -= data_now;
                        let end_of_frame = *remaining == 0;
                        if end_of_frame {
                            self.state = State::Header;
                        }
                        if data_now > 0 || end_of_frame {
                            return Ok(Some(Frame::Data {
                                stream: header.stream,
                                data,
                                end_of_frame,
                                end_stream: end_of_frame && header.has(flag::END_STREAM),
                            }));
                        }
                        continue;
                    }
                    if *remaining > 0 {
                        if self.input.is_empty() {
                            return Ok(None);
                        }
                        let take = self.input.len().min(*remaining as usize);
                        let chunk = self.input.split_to(take);
                        *remaining -= take as u32;
                        match payload {
                            Payload::Block => self.block.extend_from_slice(&chunk),
                            Payload::Fixed { need } => {
                                let room = usize::from(*need).saturating_sub(self.small_len);
                                let copy = room.min(chunk.len());
                                self.small[self.small_len..][..copy]
                                    .copy_from_slice(&chunk[..copy]);
                                self.small_len += copy;
                            }
                            Payload::Settings(settings) => {
                                for &byte in &chunk {
                                    self.small[self.small_len] = byte;
                                    self.small_len += 1;
                                    if self.small_len == 6 {
                                        self.small_len = 0;
                                        let [a, b, c, d, e, f, ..] = self.small;
                                        let id = u16::from_be_bytes([a, b]);
                                        let value = u32::from_be_bytes([c, d, e, f]);
                                        if let Err(error) = settings.set(id, value) {
                                            return self.fail(error);
                                        }
                                    }
                                }
                            }
                            Payload::Skip | Payload::Drop | Payload::Data { .. } => {}
                        }
                        continue;
                    }
                    let payload = std::mem::replace(payload, Payload::Skip);
                    self.state = State::Header;
                    match self.finish(header, payload) {
                        Ok(Some(frame)) => return Ok(Some(frame)),
                        Ok(None) => {}
                        Err(error) => return self.fail(error),
                    }
                }
            }
        }
    }

    /// Checks a frame header and chooses how to read the payload.
    fn start(&mut self, header: FrameHeader) -> Result<(), FrameError> {
        if std::mem::take(&mut self.expect_settings)
            && (header.kind != kind::SETTINGS || header.has(flag::ACK))
        {
            return Err(FrameError::NoPreface);
        }
        if header.len > self.max_frame_size {
            return Err(FrameError::FrameTooLarge);
        }
        match (self.open, header.kind) {
            (Some(open), kind::CONTINUATION) if open.stream() == header.stream => {}
            (None, kind::CONTINUATION) | (Some(_), _) => return Err(FrameError::BadContinuation),
            (None, _) => {}
        }
        let stream_needed = matches!(
            header.kind,
            kind::DATA
                | kind::HEADERS
                | kind::PRIORITY
                | kind::RST_STREAM
                | kind::PUSH_PROMISE
                | kind::CONTINUATION
        );
        let connection_only = matches!(header.kind, kind::SETTINGS | kind::PING | kind::GOAWAY);
        if (stream_needed && header.stream == 0) || (connection_only && header.stream != 0) {
            return Err(FrameError::BadStreamId);
        }
        let fixed = |need: u8, len_ok: bool| {
            if len_ok {
                Ok(Payload::Fixed { need })
            } else {
                Err(FrameError::BadLength)
            }
        };
        let payload = match header.kind {
            kind::DATA if header.has(flag::PADDED) && header.len == 0 => {
                return Err(FrameError::BadPadding);
            }
            kind::DATA => Payload::Data {
                pad_pending: header.has(flag::PADDED),
                data_left: header.len,
                lost: false,
            },
            kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION => {
                if self.block.len() + header.len as usize > self.max_block_bytes {
                    return Err(FrameError::HeaderBlockTooLarge);
                }
                Payload::Block
            }
            kind::SETTINGS
                if !header.len.is_multiple_of(6) || (header.has(flag::ACK) && header.len > 0) =>
            {
                return Err(FrameError::BadLength);
            }
            kind::SETTINGS => Payload::Settings(Settings::default()),
            kind::PRIORITY => fixed(5, header.len == 5)?,
            kind::RST_STREAM | kind::WINDOW_UPDATE => fixed(4, header.len == 4)?,
            kind::PING => fixed(8, header.len == 8)?,
            kind::GOAWAY => fixed(8, header.len >= 8)?,
            _ => Payload::Skip,
        };
        self.state = State::Payload {
            header,
            remaining: header.len,
            payload,
        };
        Ok(())
    }

    /// The frame whose payload was read whole.
    fn finish(
        &mut self,
        header: FrameHeader,
        payload: Payload,
    ) -> Result<Option<Frame>, FrameError> {
        let small = std::mem::take(&mut self.small);
        self.small_len = 0;
        let word = |at: usize| {
            u32::from_be_bytes([small[at], small[at + 1], small[at + 2], small[at + 3]])
        };
        let frame = match payload {
            Payload::Settings(settings) => Frame::Settings {
                ack: header.has(flag::ACK),
                settings,
            },
            Payload::Block => return self.finish_block(header),
            Payload::Skip => Frame::Unknown {
                kind: header.kind,
                stream: header.stream,
                len: header.len,
            },
            // Handled as the bytes come.
            Payload::Data { .. } | Payload::Drop => return Ok(None),
            Payload::Fixed { .. } => match header.kind {
                kind::PRIORITY => Frame::Priority {
                    stream: header.stream,
                    priority: Priority::parse([small[0], small[1], small[2], small[3], small[4]]),
                },
                kind::RST_STREAM => Frame::RstStream {
                    stream: header.stream,
                    error_code: word(0),
                },
                kind::WINDOW_UPDATE => Frame::WindowUpdate {
                    stream: header.stream,
                    increment: word(0) & 0x7fff_ffff,
                },
                kind::PING => Frame::Ping {
                    ack: header.has(flag::ACK),
                    data: [
                        small[0], small[1], small[2], small[3], small[4], small[5], small[6],
                        small[7],
                    ],
                },
                _ => Frame::GoAway {
                    last_stream_id: word(0) & 0x7fff_ffff,
                    error_code: word(4),
                },
            },
        };
        Ok(Some(frame))
    }

    fn finish_block(&mut self, header: FrameHeader) -> Result<Option<Frame>, FrameError> {
        if header.kind != kind::CONTINUATION {
            // The block holds this frame's payload alone: strip padding and fixed fields.
            let mut start = 0;
            let mut pad = 0;
            if header.has(flag::PADDED) {
                pad = usize::from(*self.block.first().ok_or(FrameError::BadPadding)?);
                start = 1;
            }
            let fixed = match header.kind {
                kind::HEADERS if header.has(flag::PRIORITY) => 5,
                kind::PUSH_PROMISE => 4,
                _ => 0,
            };
            if self.block.len() < start + fixed {
                return Err(FrameError::BadLength);
            }
            if self.block.len() < start + fixed + pad {
                return Err(FrameError::BadPadding);
            }
            let fields = &self.block[start..start + fixed];
            let open = if header.kind == kind::HEADERS {
                Open::Headers {
                    stream: header.stream,
                    end_stream: header.has(flag::END_STREAM),
                    priority: (fixed == 5).then(|| {
                        Priority::parse([fields[0], fields[1], fields[2], fields[3], fields[4]])
                    }),
                }
            } else {
                let promised = u32::from_be_bytes([fields[0], fields[1], fields[2], fields[3]]);
                Open::PushPromise {
                    stream: header.stream,
                    promised: promised & 0x7fff_ffff,
                }
            };
            let end = self.block.len() - pad;
            self.block.truncate(end);
            self.block.advance(start + fixed);
            self.open = Some(open);
        }
        if !header.has(flag::END_HEADERS) {
            return Ok(None);
        }
        let block = self.block.split().freeze();
        Ok(self.open.take().map(|open| match open {
            Open::Headers {
                stream,
                end_stream,
                priority,
            } => Frame::Headers {
                stream,
                end_stream,
                priority,
                block,
            },
            Open::PushPromise { stream, promised } => Frame::PushPromise {
                stream,
                promised,
                block,
            },
        }))
    }

    /// `len` bytes of this direction were lost where the next unread byte would have been.
    /// Take the frames of the bytes before it first.
    pub fn gap(&mut self, len: u64) -> GapOutcome {
        if len == 0 || matches!(self.state, State::Failed(_)) {
            return GapOutcome::Harmless;
        }
        let outcome = match &mut self.state {
            State::Payload {
                header,
                remaining,
                payload,
            } if self.input.is_empty() && len <= u64::from(*remaining) => {
                *remaining -= len as u32;
                match payload {
                    Payload::Data {
                        lost, pad_pending, ..
                    } => {
                        *lost = true;
                        *pad_pending = false;
                        GapOutcome::StreamLost(header.stream)
                    }
                    Payload::Fixed { .. } if header.kind == kind::RST_STREAM => {
                        *payload = Payload::Drop;
                        GapOutcome::StreamLost(header.stream)
                    }
                    // A lost GOAWAY only loses its event; the connection ends soon anyway.
                    Payload::Fixed { .. } | Payload::Skip | Payload::Drop => {
                        *payload = Payload::Drop;
                        GapOutcome::Harmless
                    }
                    Payload::Block | Payload::Settings(_) => GapOutcome::Fatal,
                }
            }
            _ => GapOutcome::Fatal,
        };
        if outcome == GapOutcome::Fatal {
            self.fail(FrameError::Gap).ok();
        }
        outcome
    }
}
