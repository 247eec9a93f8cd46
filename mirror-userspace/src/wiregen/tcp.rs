//! Event-driven simulation of one TCP connection, captured at the server host.
//!
//! Two endpoints joined by a loss-free path with a one-way delay `d`. A client segment is captured
//! when it arrives at the server (sent + d), a server segment when it is sent. Every segment
//! carries real numbers: `seq` from the sender's ISN (SYN and FIN take one), `ack` = what the
//! sender had received when it built the segment. The [`App`] drives both ends through [`Tcp`]:
//! it writes bytes, sets timers, closes; the simulation tells it what arrived.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use bytes::Bytes;

use super::{Captured, Rng};
use crate::segment::{Direction, FlowKey, Segment, TcpFlags};

const MSS: usize = 1460;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Client = 0,
    Server = 1,
}

impl Side {
    pub const fn peer(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }

    pub const fn direction(self) -> Direction {
        match self {
            Self::Client => Direction::Request,
            Self::Server => Direction::Response,
        }
    }
}

/// How a sender cuts what it flushes into segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segmentation {
    /// Full-sized segments: a message up to the MSS goes in one.
    Mss,
    /// Half full-sized, half of a random size in `1..=MSS`.
    Random,
    /// Random sizes up to 256 bytes (a tiny window or MSS, or a chatty peer).
    Small,
}

/// Path and stack behaviour of one connection.
#[derive(Clone, Debug)]
pub struct LinkParams {
    /// One-way delay.
    pub delay_ns: u64,
    /// Time between two segments of one burst.
    pub pace_ns: u64,
    /// Per side (client, server).
    pub segmentation: [Segmentation; 2],
    /// Per side: probability (‰) that a write waits up to `cork_ns` for more (Nagle, cork).
    pub cork_permille: [u32; 2],
    pub cork_ns: u64,
    /// A pure ACK goes out this long after data arrived, unless data carried it first.
    pub ack_delay_ns: u64,
    /// The client's first write rides on the SYN (TCP Fast Open, RFC 7413).
    pub fast_open: bool,
    /// Probability (‰) that a FIN rides on the last data segment of a flush.
    pub fin_piggyback_permille: u32,
}

impl LinkParams {
    pub fn random(rng: &mut Rng) -> Self {
        let segmentation = |rng: &mut Rng| match rng.weighted(&[50, 40, 10]) {
            0 => Segmentation::Mss,
            1 => Segmentation::Random,
            _ => Segmentation::Small,
        };
        let cork = |rng: &mut Rng| *rng.pick(&[0, 0, 200, 500, 900]);
        Self {
            delay_ns: rng.log_range(50_000..=2_000_000),
            pace_ns: rng.range(1_000..=30_000),
            segmentation: [segmentation(rng), segmentation(rng)],
            cork_permille: [cork(rng), cork(rng)],
            cork_ns: rng.range(50_000..=400_000),
            ack_delay_ns: if rng.chance(300) {
                rng.range(20_000..=500_000)
            } else {
                rng.range(1_000_000..=40_000_000)
            },
            fast_open: false,
            fin_piggyback_permille: 500,
        }
    }

    /// Compact description for failure reports.
    pub fn describe(&self) -> String {
        let seg = |s: Segmentation| match s {
            Segmentation::Mss => "mss",
            Segmentation::Random => "rnd",
            Segmentation::Small => "small",
        };
        format!(
            "d={}us seg={}/{} cork={}/{}‰{}",
            self.delay_ns / 1_000,
            seg(self.segmentation[0]),
            seg(self.segmentation[1]),
            self.cork_permille[0],
            self.cork_permille[1],
            if self.fast_open { " tfo" } else { "" }
        )
    }
}

/// What the simulation tells the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEvent {
    /// The client may write (handshake done; with Fast Open: before the SYN, whose payload is
    /// the first write).
    Connected,
    /// New in-order bytes arrived at this side.
    Data(Side),
    /// The peer's FIN arrived at this side.
    Fin(Side),
    /// A timer set with [`Tcp::timer`].
    Timer(u64),
}

/// Both endpoints' application logic.
pub trait App {
    fn on_event(&mut self, tcp: &mut Tcp, event: AppEvent);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    SynArrives { len: u64 },
    SynAckArrives,
    Arrives { to: Side, len: u64, fin: bool },
    Flush(Side),
    DelayedAck(Side),
    Timer(u64),
}

#[derive(Debug, Default)]
struct Endpoint {
    isn: u32,
    /// Sequence space used so far after the SYN: data bytes, plus one once the FIN was sent.
    sent: u64,
    /// Bytes written but not yet sent.
    buffered: Vec<u8>,
    flush_scheduled: bool,
    fin_queued: bool,
    fin_sent: bool,
    /// In-order bytes received from the peer, and its FIN.
    received: u64,
    peer_fin: bool,
    /// Acknowledgement (received + FIN) last sent.
    acked: u64,
    ack_scheduled: bool,
    /// Earliest time the next segment can leave (pacing of bursts).
    next_free: u64,
}

/// The simulated connection, as the [`App`] sees it.
pub struct Tcp {
    params: LinkParams,
    rng: Rng,
    flow: FlowKey,
    now: u64,
    ends: [Endpoint; 2],
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    order: u64,
    captured: Vec<Captured>,
    /// Fast Open client before the SYN-ACK: its writes wait (the first ones ride on the SYN).
    in_syn: bool,
    reset: bool,
}

impl Tcp {
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Stream offset of the next byte `side` writes (bytes written so far, sent or not).
    pub fn written(&self, side: Side) -> u64 {
        let end = &self.ends[side as usize];
        end.sent - u64::from(end.fin_sent) + end.buffered.len() as u64
    }

    /// In-order bytes `side` has received from its peer.
    pub fn received(&self, side: Side) -> u64 {
        self.ends[side as usize].received
    }

    pub fn peer_fin(&self, side: Side) -> bool {
        self.ends[side as usize].peer_fin
    }

    /// Writes `bytes` on `side`: sent at once, or (corked) together with what follows shortly.
    pub fn write(&mut self, side: Side, bytes: &[u8]) {
        let end = &mut self.ends[side as usize];
        if self.reset || end.fin_queued || bytes.is_empty() {
            return;
        }
        end.buffered.extend_from_slice(bytes);
        if (side == Side::Client && self.in_syn) || end.flush_scheduled {
            return;
        }
        if self.rng.chance(self.params.cork_permille[side as usize]) {
            end.flush_scheduled = true;
            let at = self.now + self.rng.range(1..=self.params.cork_ns);
            self.schedule(at, Event::Flush(side));
        } else {
            self.flush(side);
        }
    }

    /// Closes `side`'s sending direction (FIN after what was written).
    pub fn fin(&mut self, side: Side) {
        let end = &mut self.ends[side as usize];
        if self.reset || end.fin_queued {
            return;
        }
        end.fin_queued = true;
        if !end.flush_scheduled {
            self.flush(side);
        }
    }

    /// Aborts the connection from `side` (RST) once what it wrote is sent; nothing is sent
    /// afterwards.
    pub fn reset(&mut self, side: Side) {
        if self.reset {
            return;
        }
        if !self.ends[side as usize].buffered.is_empty() {
            self.flush(side);
        }
        let at = self.send_time(side);
        self.emit(
            side,
            Bytes::new(),
            TcpFlags(TcpFlags::RST.0 | TcpFlags::ACK.0),
            at,
        );
        self.reset = true;
    }

    /// Calls the app back with [`AppEvent::Timer`]`(token)` at `at` (not before now).
    pub fn timer(&mut self, at: u64, token: u64) {
        self.schedule(at.max(self.now), Event::Timer(token));
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.order += 1;
        self.queue.push(Reverse((at, self.order, event)));
    }

    fn send_time(&mut self, side: Side) -> u64 {
        let end = &mut self.ends[side as usize];
        let at = end.next_free.max(self.now);
        end.next_free = at + self.params.pace_ns;
        at
    }

    /// Puts one segment on the wire at `at` and schedules its arrival.
    fn emit(&mut self, side: Side, payload: Bytes, flags: TcpFlags, at: u64) {
        let peer = &self.ends[side.peer() as usize];
        let peer_isn = peer.isn;
        let end = &mut self.ends[side as usize];
        let syn = flags.syn();
        let seq = if syn {
            end.isn
        } else {
            end.isn.wrapping_add(1).wrapping_add(end.sent as u32)
        };
        let acked = end.received + u64::from(end.peer_fin);
        let ack = if flags.contains(TcpFlags::ACK) {
            end.acked = acked;
            peer_isn.wrapping_add(1).wrapping_add(acked as u32)
        } else {
            0
        };
        let offset = end.sent;
        let len = payload.len() as u64;
        let fin = flags.fin();
        end.sent += len + u64::from(fin);
        if fin {
            end.fin_sent = true;
        }
        let delay = self.params.delay_ns;
        let captured_at = match side {
            Side::Client => at + delay,
            Side::Server => at,
        };
        self.captured.push(Captured {
            segment: Segment {
                flow: self.flow,
                direction: side.direction(),
                seq,
                ack,
                flags,
                timestamp_ns: captured_at,
                ifindex: 1,
                segment_len: len as u32,
                chunk_offset: 0,
                payload,
            },
            conn: 0,
            offset,
            retransmission: false,
        });
        if flags.rst() {
            return;
        }
        let event = match (syn, side) {
            (true, Side::Client) => Event::SynArrives { len },
            (true, Side::Server) => Event::SynAckArrives,
            (false, to) if len > 0 || fin => Event::Arrives {
                to: to.peer(),
                len,
                fin,
            },
            _ => return,
        };
        self.schedule(at + delay, event);
    }

    /// Sends everything `side` has buffered (and its FIN, if queued).
    fn flush(&mut self, side: Side) {
        let end = &mut self.ends[side as usize];
        end.flush_scheduled = false;
        let data = Bytes::from(std::mem::take(&mut end.buffered));
        let fin = end.fin_queued && !end.fin_sent;
        let piggyback =
            fin && !data.is_empty() && self.rng.chance(self.params.fin_piggyback_permille);
        let mut position = 0;
        while position < data.len() {
            let rest = data.len() - position;
            let len = match self.params.segmentation[side as usize] {
                Segmentation::Mss => rest.min(MSS),
                Segmentation::Random if self.rng.chance(500) => rest.min(MSS),
                Segmentation::Random => self.rng.range(1..=rest.min(MSS) as u64) as usize,
                Segmentation::Small => self.rng.range(1..=rest.min(256) as u64) as usize,
            };
            let last = position + len == data.len();
            let mut flags = TcpFlags(TcpFlags::ACK.0 | TcpFlags::PSH.0);
            if last && piggyback {
                flags = TcpFlags(flags.0 | TcpFlags::FIN.0);
            }
            let at = self.send_time(side);
            self.emit(side, data.slice(position..position + len), flags, at);
            position += len;
        }
        if fin && !piggyback {
            let at = self.send_time(side);
            self.emit(
                side,
                Bytes::new(),
                TcpFlags(TcpFlags::FIN.0 | TcpFlags::ACK.0),
                at,
            );
        }
    }

    fn arrive(&mut self, to: Side, len: u64, fin: bool) {
        let end = &mut self.ends[to as usize];
        end.received += len;
        end.peer_fin |= fin;
        if !end.ack_scheduled {
            end.ack_scheduled = true;
            let at = self.now + self.params.ack_delay_ns;
            self.schedule(at, Event::DelayedAck(to));
        }
    }
}

/// Simulates one connection from the client's SYN at `start_ns` until nothing is left to happen;
/// returns its captured segments in capture order (`conn` fields 0).
pub fn simulate(
    app: &mut impl App,
    params: LinkParams,
    rng: Rng,
    flow: FlowKey,
    isns: (u32, u32),
    start_ns: u64,
) -> Vec<Captured> {
    let mut tcp = Tcp {
        params,
        rng,
        flow,
        now: start_ns,
        ends: Default::default(),
        queue: BinaryHeap::new(),
        order: 0,
        captured: Vec::new(),
        in_syn: false,
        reset: false,
    };
    tcp.ends[0].isn = isns.0;
    tcp.ends[1].isn = isns.1;
    let mut syn_payload = Bytes::new();
    if tcp.params.fast_open {
        tcp.in_syn = true;
        app.on_event(&mut tcp, AppEvent::Connected);
        let buffered = std::mem::take(&mut tcp.ends[0].buffered);
        let take = buffered.len().min(1000);
        syn_payload = Bytes::from(buffered[..take].to_vec());
        tcp.ends[0].buffered = buffered[take..].to_vec();
    }
    tcp.emit(Side::Client, syn_payload, TcpFlags::SYN, start_ns);
    let mut steps = 0u32;
    while let Some(Reverse((at, _, event))) = tcp.queue.pop() {
        steps += 1;
        assert!(steps < 1_000_000, "runaway simulation");
        if tcp.reset {
            break;
        }
        tcp.now = at;
        match event {
            Event::SynArrives { len } => {
                tcp.ends[1].received = len;
                let at = tcp.send_time(Side::Server);
                tcp.emit(
                    Side::Server,
                    Bytes::new(),
                    TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0),
                    at,
                );
                if len > 0 {
                    app.on_event(&mut tcp, AppEvent::Data(Side::Server));
                }
            }
            Event::SynAckArrives => {
                tcp.in_syn = false;
                if tcp.ends[0].buffered.is_empty() {
                    let at = tcp.send_time(Side::Client);
                    tcp.emit(Side::Client, Bytes::new(), TcpFlags::ACK, at);
                } else {
                    // Fast Open: what did not fit in the SYN follows, carrying the ACK.
                    tcp.flush(Side::Client);
                }
                if !tcp.params.fast_open {
                    app.on_event(&mut tcp, AppEvent::Connected);
                }
            }
            Event::Arrives { to, len, fin } => {
                tcp.arrive(to, len, fin);
                if len > 0 {
                    app.on_event(&mut tcp, AppEvent::Data(to));
                }
                if fin {
                    app.on_event(&mut tcp, AppEvent::Fin(to));
                }
            }
            Event::Flush(side) => tcp.flush(side),
            Event::DelayedAck(side) => {
                let end = &mut tcp.ends[side as usize];
                end.ack_scheduled = false;
                if end.acked < end.received + u64::from(end.peer_fin) {
                    let at = tcp.send_time(side);
                    tcp.emit(side, Bytes::new(), TcpFlags::ACK, at);
                }
            }
            Event::Timer(token) => app.on_event(&mut tcp, AppEvent::Timer(token)),
        }
    }
    let mut captured = tcp.captured;
    // Capture order: client segments are seen a delay after they were built.
    captured.sort_by_key(|captured| captured.segment.timestamp_ns);
    captured
}
