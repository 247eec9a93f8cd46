//! Rules of the HTTP layer, driven through [`HttpTracker`] with hand-built segments. Cases follow
//! RFC 9112 (message framing), RFC 9110 (semantics) and RFC 9293 (TCP).

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_128;

use super::*;
use crate::reassembly::EvictionReason;
use crate::segment::{Direction, FlowKey, TcpFlags};

pub(super) const SYN: TcpFlags = TcpFlags::SYN;
pub(super) const SYN_ACK: TcpFlags = TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0);
pub(super) const ACK: TcpFlags = TcpFlags(TcpFlags::ACK.0 | TcpFlags::PSH.0);
pub(super) const FIN: TcpFlags = TcpFlags(TcpFlags::FIN.0 | TcpFlags::ACK.0);
pub(super) const RST: TcpFlags = TcpFlags::RST;

pub(super) fn flow(port: u16) -> FlowKey {
    FlowKey {
        client: ([198, 18, 0, 1], port).into(),
        server: ([198, 18, 0, 2], 8080).into(),
    }
}

/// One TCP connection on the wire, with both sides' next sequence numbers.
pub(super) struct Wire {
    pub port: u16,
    pub client_seq: u32,
    pub server_seq: u32,
    pub now: u64,
}

impl Wire {
    pub fn new(port: u16, client_isn: u32, server_isn: u32) -> Self {
        Self {
            port,
            client_seq: client_isn,
            server_seq: server_isn,
            now: 1_000_000,
        }
    }

    pub fn segment(
        &self,
        direction: Direction,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        payload: &[u8],
    ) -> Segment {
        Segment {
            flow: flow(self.port),
            direction,
            seq,
            ack,
            flags,
            timestamp_ns: self.now,
            ifindex: 1,
            segment_len: payload.len() as u32,
            chunk_offset: 0,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    /// SYN, SYN-ACK, ACK.
    pub fn handshake(&mut self, tracker: &mut HttpTracker) {
        let syn = self.segment(Direction::Request, self.client_seq, 0, SYN, b"");
        self.client_seq = self.client_seq.wrapping_add(1);
        let syn_ack = self.segment(
            Direction::Response,
            self.server_seq,
            self.client_seq,
            SYN_ACK,
            b"",
        );
        self.server_seq = self.server_seq.wrapping_add(1);
        tracker.on_segment(&syn);
        tracker.on_segment(&syn_ack);
        self.flags(tracker, Direction::Request, ACK, b"");
    }

    pub fn flags(
        &mut self,
        tracker: &mut HttpTracker,
        direction: Direction,
        flags: TcpFlags,
        payload: &[u8],
    ) {
        self.now += 1_000;
        let segment = match direction {
            Direction::Request => {
                self.segment(direction, self.client_seq, self.server_seq, flags, payload)
            }
            Direction::Response => {
                self.segment(direction, self.server_seq, self.client_seq, flags, payload)
            }
        };
        let advance = payload.len() as u32 + u32::from(flags.fin());
        match direction {
            Direction::Request => self.client_seq = self.client_seq.wrapping_add(advance),
            Direction::Response => self.server_seq = self.server_seq.wrapping_add(advance),
        }
        tracker.on_segment(&segment);
    }

    pub fn client(&mut self, tracker: &mut HttpTracker, payload: &[u8]) {
        self.flags(tracker, Direction::Request, ACK, payload);
    }

    pub fn server(&mut self, tracker: &mut HttpTracker, payload: &[u8]) {
        self.flags(tracker, Direction::Response, ACK, payload);
    }

    /// Advances the client's sequence number without sending (a segment lost by the capture).
    pub fn client_lost(&mut self, len: usize) {
        self.client_seq = self.client_seq.wrapping_add(len as u32);
    }

    pub fn server_lost(&mut self, len: usize) {
        self.server_seq = self.server_seq.wrapping_add(len as u32);
    }
}

pub(super) fn drain(tracker: &mut HttpTracker) -> Vec<HttpEvent> {
    std::iter::from_fn(|| tracker.poll_event()).collect()
}

fn requests(events: &[HttpEvent]) -> Vec<&RequestEvent> {
    events
        .iter()
        .filter_map(|event| match event {
            HttpEvent::Request(request) => Some(request),
            _ => None,
        })
        .collect()
}

fn responses(events: &[HttpEvent]) -> Vec<&ResponseEvent> {
    events
        .iter()
        .filter_map(|event| match event {
            HttpEvent::Response(response) => Some(response),
            _ => None,
        })
        .collect()
}

fn losses(events: &[HttpEvent]) -> Vec<&LossEvent> {
    events
        .iter()
        .filter_map(|event| match event {
            HttpEvent::Lost(loss) => Some(loss),
            _ => None,
        })
        .collect()
}

fn tracker() -> HttpTracker {
    HttpTracker::new(TrackerConfig::default())
}

fn open(port: u16) -> (HttpTracker, Wire) {
    let mut tracker = tracker();
    let mut wire = Wire::new(port, 1_000, 50_000);
    wire.handshake(&mut tracker);
    (tracker, wire)
}

const GET: &[u8] = b"GET /items?id=7 HTTP/1.1\r\nHost: shop.test\r\nAccept: */*\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

mod edges;
mod framing;
mod losses;
