//! Tests of the HTTP/2 layer, and the wire builder they share: frames built by hand and an
//! HPACK encoder with its own dynamic table (independent of the decoder under test).

mod connection;
mod frames;
mod generate;
mod hpack;
mod proptests;

use std::collections::VecDeque;

use bytes::Bytes;

use super::frame::{PREFACE, flag, kind};
use super::{Http2Config, Http2Connection, Http2Event};
use crate::segment::Direction;

pub(super) const REQ: Direction = Direction::Request;
pub(super) const RESP: Direction = Direction::Response;

/// The first 16 entries of the static table (RFC 7541 Appendix A), enough for the tests.
const STATIC: [(&str, &str); 16] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
];

/// Strings whose Huffman codes RFC 7541 Appendix C gives.
pub(super) const HUFFMAN: [(&str, &str); 10] = [
    ("www.example.com", "f1e3c2e5f23a6ba0ab90f4ff"),
    ("no-cache", "a8eb10649cbf"),
    ("custom-key", "25a849e95ba97d7f"),
    ("custom-value", "25a849e95bb8e8b4bf"),
    ("302", "6402"),
    ("307", "640eff"),
    ("private", "aec3771a4b"),
    (
        "Mon, 21 Oct 2013 20:13:21 GMT",
        "d07abe941054d444a8200595040b8166e082a62d1bff",
    ),
    (
        "https://www.example.com",
        "9d29ad171863c78f0b97c8e9ae82ae43d3",
    ),
    ("gzip", "9bd9ab"),
];

pub(super) fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|digit| (digit as char).to_digit(16).unwrap() as u8)
        .collect();
    digits
        .chunks(2)
        .map(|pair| pair[0] << 4 | pair[1])
        .collect()
}

fn integer(out: &mut Vec<u8>, first: u8, prefix: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push(rest as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

fn string(out: &mut Vec<u8>, text: &[u8], huffman: bool) {
    let code = HUFFMAN
        .iter()
        .find(|(plain, _)| huffman && plain.as_bytes() == text);
    match code {
        Some((_, code)) => {
            let code = hex(code);
            integer(out, 0x80, 7, code.len());
            out.extend_from_slice(&code);
        }
        None => {
            integer(out, 0, 7, text.len());
            out.extend_from_slice(text);
        }
    }
}

/// How a literal field is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Repr {
    Incremental,
    Without,
    Never,
}

/// HPACK encoder for the tests: exact matches are indexed, other fields are literals (indexed
/// names when found), Huffman where [`HUFFMAN`] knows the string.
#[derive(Clone, Debug)]
pub(super) struct Encoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
    pub(super) evictions: usize,
}

impl Default for Encoder {
    fn default() -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max: 4096,
            evictions: 0,
        }
    }
}

impl Encoder {
    pub(super) fn size_update(&mut self, out: &mut Vec<u8>, max: usize) {
        integer(out, 0x20, 5, max);
        self.max = max;
        self.evict(0);
    }

    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some((name, value)) = self.table.pop_back() else {
                break;
            };
            self.size -= name.len() + value.len() + 32;
            self.evictions += 1;
        }
    }

    fn find(&self, name: &[u8], value: Option<&[u8]>) -> Option<usize> {
        let statics = STATIC
            .iter()
            .map(|(name, value)| (name.as_bytes(), value.as_bytes()));
        let dynamic = self
            .table
            .iter()
            .map(|(name, value)| (name.as_slice(), value.as_slice()));
        statics
            .enumerate()
            .map(|(index, field)| (index + 1, field))
            .chain(
                dynamic
                    .enumerate()
                    .map(|(index, field)| (index + 62, field)),
            )
            .find(|(_, field)| field.0 == name && value.is_none_or(|value| field.1 == value))
            .map(|(index, _)| index)
    }

    pub(super) fn field(
        &mut self,
        out: &mut Vec<u8>,
        name: &[u8],
        value: &[u8],
        repr: Repr,
        huffman: bool,
    ) {
        if let Some(index) = self.find(name, Some(value)) {
            integer(out, 0x80, 7, index);
            return;
        }
        let name_index = self.find(name, None);
        let (first, prefix) = match repr {
            Repr::Incremental => (0x40, 6),
            Repr::Without => (0x00, 4),
            Repr::Never => (0x10, 4),
        };
        integer(out, first, prefix, name_index.unwrap_or(0));
        if name_index.is_none() {
            string(out, name, huffman);
        }
        string(out, value, huffman);
        if repr == Repr::Incremental {
            let size = name.len() + value.len() + 32;
            if size > self.max {
                self.evict(self.max + 1);
            } else {
                self.evict(size);
                self.table.push_front((name.to_vec(), value.to_vec()));
                self.size += size;
            }
        }
    }

    /// A block of literal-with-indexing or indexed fields, no Huffman.
    pub(super) fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            self.field(
                &mut out,
                name.as_bytes(),
                value.as_bytes(),
                Repr::Incremental,
                false,
            );
        }
        out
    }
}

pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn pad(payload: &[u8], pad: Option<u8>) -> (u8, Vec<u8>) {
    match pad {
        None => (0, payload.to_vec()),
        Some(len) => {
            let mut out = vec![len];
            out.extend_from_slice(payload);
            out.resize(out.len() + usize::from(len), 0);
            (flag::PADDED, out)
        }
    }
}

pub(super) fn data(stream: u32, bytes: &[u8], end_stream: bool, padding: Option<u8>) -> Vec<u8> {
    let (flags, payload) = pad(bytes, padding);
    let end = if end_stream { flag::END_STREAM } else { 0 };
    frame(kind::DATA, flags | end, stream, &payload)
}

/// HEADERS then CONTINUATIONs, the block cut at `cuts` (offsets into the block).
pub(super) fn headers(
    stream: u32,
    block: &[u8],
    end_stream: bool,
    padding: Option<u8>,
    priority: bool,
    cuts: &[usize],
) -> Vec<u8> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        let cut = cut.clamp(start, block.len());
        pieces.push(&block[start..cut]);
        start = cut;
    }
    pieces.push(&block[start..]);
    let mut first = Vec::new();
    if priority {
        first.extend_from_slice(&[0x80, 0, 0, 1, 15]);
    }
    first.extend_from_slice(pieces[0]);
    let (mut flags, payload) = pad(&first, padding);
    if priority {
        flags |= flag::PRIORITY;
    }
    if end_stream {
        flags |= flag::END_STREAM;
    }
    let last = pieces.len() - 1;
    if last == 0 {
        flags |= flag::END_HEADERS;
    }
    let mut out = frame(kind::HEADERS, flags, stream, &payload);
    for (index, piece) in pieces.iter().enumerate().skip(1) {
        let flags = if index == last { flag::END_HEADERS } else { 0 };
        out.extend(frame(kind::CONTINUATION, flags, stream, piece));
    }
    out
}

pub(super) fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = values
        .iter()
        .flat_map(|(id, value)| id.to_be_bytes().into_iter().chain(value.to_be_bytes()))
        .collect();
    frame(kind::SETTINGS, 0, 0, &payload)
}

pub(super) fn settings_ack() -> Vec<u8> {
    frame(kind::SETTINGS, flag::ACK, 0, &[])
}

pub(super) fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(kind::RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub(super) fn goaway(last: u32, code: u32) -> Vec<u8> {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(b"debug");
    frame(kind::GOAWAY, 0, 0, &payload)
}

pub(super) fn ping(ack: bool) -> Vec<u8> {
    frame(kind::PING, if ack { flag::ACK } else { 0 }, 0, b"12345678")
}

pub(super) fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(kind::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// The start of a connection: the client preface and both sides' SETTINGS.
pub(super) fn client_start() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(settings(&[]));
    out
}

pub(super) fn server_start() -> Vec<u8> {
    settings(&[])
}

/// Feeds each `(direction, bytes)` whole and collects the events.
pub(super) fn run(config: &Http2Config, feed: &[(Direction, Vec<u8>)]) -> Vec<Http2Event> {
    let mut connection = Http2Connection::new(config);
    for (direction, bytes) in feed {
        connection.on_bytes(*direction, Bytes::copy_from_slice(bytes));
    }
    drain(&mut connection)
}

pub(super) fn drain(connection: &mut Http2Connection) -> Vec<Http2Event> {
    std::iter::from_fn(|| connection.poll_event()).collect()
}

pub(super) fn fields(list: &[(&str, &str)]) -> super::HeaderList {
    list.iter()
        .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
        .collect()
}
