//! TCP stream reassembly (I/O-free): connection table, per-direction reassembly, gaps, eviction
//! and memory caps.
//!
//! [`Reassembler`] takes captured [`Segment`]s in capture order and hands each connection's two
//! byte streams, in order, to a [`ConnectionHandler`] (the HTTP layer) as [`StreamEvent`]s. It never
//! reads a clock: time is the kernel timestamp carried by segments and the `now_ns` passed to
//! [`Reassembler::on_tick`], so every run over the same input is identical.
//!
//! Rules:
//! - Both directions of a connection share one entry keyed by the client-to-server [`FlowKey`].
//! - Sequence numbers become 64-bit stream offsets ([`seq`]), so wraparound is invisible.
//! - Out-of-order data is held up to [`ReassemblyConfig::max_out_of_order_bytes`] per direction;
//!   retransmitted bytes are dropped; overlaps are first-wins with conflicting bytes counted.
//! - A hole that is not filled within `gap_timeout_ms`, or while more than a window of data waits
//!   behind it, is a gap: [`StreamEvent::Gap`] tells the handler how many bytes are missing so it
//!   can abandon (and count) the message in progress and resynchronise.
//! - A direction whose first seen byte was not preceded by a SYN (the daemon started while the
//!   connection was open) starts with [`StreamEvent::JoinedMidStream`].
//! - A connection ends on FIN in both directions, on RST, after `idle_timeout_secs` without a
//!   segment, or by eviction: least recently used first when `max_connections` or
//!   `reassembly_memory_bytes` (out-of-order bytes plus the handler's buffered bytes, over all
//!   connections) would be exceeded. Each end is counted by reason in [`ReassemblyStats`].
//! - A connection that ended with FIN or RST leaves a tombstone for [`TOMBSTONE_NS`]: segments of
//!   its 4-tuple without a SYN (a retransmission after the FIN, data in flight behind the RST)
//!   are counted and ignored instead of opening a phantom connection that would frame the same
//!   request again. A SYN opens a new connection at once.
//! - Every connection gets a number unique in the reassembler's lifetime (the same 4-tuple used
//!   again is another connection), handed to [`ConnectionHandler::open`].
//! - Data carried on a SYN (TCP Fast Open, RFC 7413) starts at the SYN's sequence number + 1.

mod assembler;
pub mod seq;
mod table;

use bytes::Bytes;

pub use self::assembler::{StreamAssembler, StreamLimits};
use self::table::LruTable;
use crate::segment::{Direction, FlowKey, Segment, TcpFlags};

/// How long the 4-tuple of a connection that ended (FIN or RST) ignores segments without a SYN.
/// Retransmissions come within a few RTOs; a new connection on the same 4-tuple starts with a
/// SYN, which is never ignored.
pub const TOMBSTONE_NS: u64 = 10_000_000_000;
/// Tombstones kept at most (least recently closed first out).
const MAX_TOMBSTONES: usize = 65_536;

/// What a tombstone says about a segment of an unknown 4-tuple.
enum Tombstone {
    None,
    /// Part of the connection that ended: ignore.
    Ignore,
    /// A SYN: a new connection, successor of the one that ended.
    Predecessor(Predecessor),
}

/// Limits of the reassembly layer; the first four map 1:1 to the `[limits]` config keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// All buffered stream bytes together; least-recently-used connections are evicted beyond.
    pub reassembly_memory_bytes: usize,
    /// Tracked connections; the least recently used one is evicted to admit a new one beyond.
    pub max_connections: usize,
    /// A connection without any segment for this long is dropped.
    pub idle_timeout_secs: u64,
    /// Out-of-order bytes held per direction while waiting for a hole to be filled.
    pub max_out_of_order_bytes: usize,
    /// How long a hole may stay unfilled before it is declared a gap. Retransmissions come after
    /// at least one RTO (200 ms minimum on Linux); a segment lost by the capture never comes.
    pub gap_timeout_ms: u64,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        Self {
            reassembly_memory_bytes: 268_435_456,
            max_connections: 262_144,
            idle_timeout_secs: 120,
            max_out_of_order_bytes: 4 << 20,
            gap_timeout_ms: 500,
        }
    }
}

/// In-order bytes of one direction, with the metadata of the segment that carried them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamData {
    pub payload: Bytes,
    /// Raw sequence number of the first byte of `payload`.
    pub seq: u32,
    /// Acknowledgement number of the carrying segment (a position in the other direction).
    pub ack: u32,
    /// Kernel timestamp of the carrying segment.
    pub timestamp_ns: u64,
    /// `payload` starts with the first payload byte of a captured segment (not in the middle of
    /// one, nor after the part of a retransmission that was already delivered): where a sender
    /// usually starts a message it writes on its own.
    pub starts_segment: bool,
}

/// What a direction delivers to the handler, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// The first bytes of this direction were not preceded by its SYN: the stream starts at an
    /// arbitrary point.
    JoinedMidStream,
    Data(StreamData),
    /// `len` bytes are missing here and will never be delivered.
    Gap {
        len: u64,
        timestamp_ns: u64,
    },
    /// The direction ended with a FIN after its last byte.
    Fin {
        timestamp_ns: u64,
    },
    /// Bytes that were delivered before, seen again (a retransmission): the handler may compare
    /// them with what it still holds.
    Retransmitted(StreamData),
}

/// What is remembered of a connection that ended, for [`TOMBSTONE_NS`]: segments of its
/// 4-tuple that still arrive (retransmissions, network duplicates) are recognised as its own.
#[derive(Clone, Copy, Debug)]
struct Predecessor {
    closed_ns: u64,
    /// Per direction, the raw sequence numbers its stream spanned.
    ranges: [Option<(u32, u32)>; 2],
}

impl Predecessor {
    /// Whether a segment at `seq` in `direction` lies in the ended connection's stream.
    fn owns(&self, direction: Direction, seq: u32) -> bool {
        self.ranges[direction as usize]
            .is_some_and(|(first, end)| seq.wrapping_sub(first) <= end.wrapping_sub(first))
    }
}

/// Why a connection was evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EvictionReason {
    /// No segment for `idle_timeout_secs`.
    Idle,
    /// `reassembly_memory_bytes` exceeded; least recently used first.
    Memory,
    /// `max_connections` reached while admitting a new connection.
    MaxConnections,
}

impl EvictionReason {
    pub const ALL: [Self; 3] = [Self::Idle, Self::Memory, Self::MaxConnections];

    /// Metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Memory => "memory",
            Self::MaxConnections => "max_connections",
        }
    }
}

/// Why a connection left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Both directions ended with FIN and every byte was delivered.
    Finished,
    /// RST seen.
    Reset,
    /// A SYN with a new initial sequence number reused the 4-tuple.
    Reused,
    Evicted(EvictionReason),
}

/// Counters of the reassembly layer (monotonic, except where noted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    pub connections_opened: u64,
    /// Directions that joined an already open connection (no SYN seen).
    pub streams_joined_mid_stream: u64,
    pub connections_finished: u64,
    pub connections_reset: u64,
    pub connections_reused: u64,
    pub evicted_idle: u64,
    pub evicted_memory: u64,
    pub evicted_max_connections: u64,
    /// Holes declared lost (`mirror_tcp_gaps_total`).
    pub gaps: u64,
    pub gap_bytes: u64,
    /// Gaps declared because the out-of-order window overflowed (subset of `gaps`).
    pub gaps_window_exceeded: u64,
    pub duplicate_segments: u64,
    pub duplicate_bytes: u64,
    /// Overlapping bytes that differed from the bytes already held (first wins).
    pub conflicting_bytes: u64,
    pub out_of_order_segments: u64,
    pub segments_after_fin: u64,
    /// Segments without SYN of a 4-tuple whose connection ended moments ago (retransmissions
    /// after the FIN, data behind a RST): ignored.
    pub segments_after_close: u64,
    /// Segments of unknown connections without payload or SYN (late ACKs, RSTs): not tracked.
    pub segments_ignored: u64,
}

impl ReassemblyStats {
    /// `mirror_tcp_streams_evicted_total{reason}`.
    pub const fn evicted(&self, reason: EvictionReason) -> u64 {
        match reason {
            EvictionReason::Idle => self.evicted_idle,
            EvictionReason::Memory => self.evicted_memory,
            EvictionReason::MaxConnections => self.evicted_max_connections,
        }
    }
}

/// Per-connection consumer of reassembled streams (the HTTP layer implements it).
pub trait ConnectionHandler: Sized {
    /// Shared state passed to every call (config, counters, event queue).
    type Context;

    /// A new connection entered the table; `id` is unique for the reassembler's lifetime.
    fn open(cx: &mut Self::Context, flow: &FlowKey, id: u64) -> Self;

    /// In-order stream events of one direction.
    fn on_stream(
        &mut self,
        cx: &mut Self::Context,
        flow: &FlowKey,
        direction: Direction,
        event: StreamEvent,
    );

    /// The connection left the table; whatever is in progress is abandoned.
    fn on_close(self, cx: &mut Self::Context, flow: &FlowKey, reason: CloseReason);

    /// Bytes the handler holds (counted against `reassembly_memory_bytes`).
    fn buffered_bytes(&self) -> usize;

    /// False once the handler gave up on the connection: payload is then dropped unbuffered.
    fn wants_payload(&self) -> bool;
}

#[derive(Debug)]
struct Connection<H> {
    streams: [StreamAssembler; 2],
    handler: H,
    /// The connection was first seen with a SYN or SYN-ACK, so both directions start at a
    /// message boundary.
    from_handshake: bool,
    last_seen_ns: u64,
    /// Buffered bytes last accounted in [`Reassembler::buffered`].
    footprint: usize,
    /// Per direction: capture paused for a while ([`Reassembler::expect_gaps`]), so a hole
    /// before the next segment is known lost, not reordered.
    gap_expected: [bool; 2],
    /// The connection its 4-tuple carried just before (boxed: rare).
    predecessor: Option<Box<Predecessor>>,
}

impl<H: ConnectionHandler> Connection<H> {
    fn measure(&self) -> usize {
        self.streams[0].buffered_bytes()
            + self.streams[1].buffered_bytes()
            + self.handler.buffered_bytes()
    }

    fn finished(&self) -> bool {
        self.streams[0].is_finished() && self.streams[1].is_finished()
    }

    fn remains(&self, closed_ns: u64) -> Predecessor {
        Predecessor {
            closed_ns,
            ranges: [self.streams[0].seq_range(), self.streams[1].seq_range()],
        }
    }

    /// Whether a data segment is a late copy of the previous connection on this 4-tuple: it
    /// lies in that connection's stream, and not where this one's continues (within
    /// `window` bytes after its next byte; the two can overlap when the new initial sequence
    /// number is close to the old one).
    fn is_predecessors(&mut self, segment: &Segment, window: usize) -> bool {
        let Some(predecessor) = &self.predecessor else {
            return false;
        };
        if segment.timestamp_ns.saturating_sub(predecessor.closed_ns) >= TOMBSTONE_NS {
            self.predecessor = None;
            return false;
        }
        let seq = segment.payload_seq();
        let continues = self.streams[segment.direction as usize]
            .next_seq()
            .is_some_and(|next| seq.wrapping_sub(next) <= window as u32);
        !continues && predecessor.owns(segment.direction, seq)
    }

    /// Whether a SYN (client) or SYN-ACK (server) starts another connection on this 4-tuple.
    fn reused_by(&self, segment: &Segment, flags: TcpFlags) -> bool {
        if !flags.syn() {
            return false;
        }
        let ack = flags.contains(TcpFlags::ACK);
        let stream = match (segment.direction, ack) {
            (Direction::Request, false) => &self.streams[0],
            (Direction::Response, true) => &self.streams[1],
            _ => return false,
        };
        let joined = !self.from_handshake
            && (self.streams[0].is_synchronised() || self.streams[1].is_synchronised());
        // A different initial sequence number, or a handshake on a connection that was
        // joined mid-stream: another connection (a retransmitted SYN is the same one).
        joined || !stream.same_syn(segment.seq)
    }
}

/// The connection table and its reassembly state; see the module docs.
#[derive(Debug)]
pub struct Reassembler<H> {
    config: ReassemblyConfig,
    limits: StreamLimits,
    table: LruTable<Connection<H>>,
    /// 4-tuples of connections that ended with FIN or RST: when, and where their streams lay.
    tombstones: LruTable<Predecessor>,
    stats: ReassemblyStats,
    buffered: usize,
    next_id: u64,
}

impl<H: ConnectionHandler> Reassembler<H> {
    pub fn new(config: ReassemblyConfig) -> Self {
        let limits = StreamLimits {
            max_out_of_order_bytes: config.max_out_of_order_bytes,
            gap_timeout_ns: config.gap_timeout_ms.saturating_mul(1_000_000),
        };
        Self {
            config,
            limits,
            table: LruTable::default(),
            tombstones: LruTable::default(),
            stats: ReassemblyStats::default(),
            buffered: 0,
            next_id: 0,
        }
    }

    pub fn config(&self) -> &ReassemblyConfig {
        &self.config
    }

    pub fn stats(&self) -> &ReassemblyStats {
        &self.stats
    }

    /// Tracked connections (`mirror_tcp_streams_active`).
    pub fn active_connections(&self) -> usize {
        self.table.len()
    }

    /// Bytes buffered over all connections (out-of-order data plus handler buffers).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Feeds one captured segment chunk.
    pub fn on_segment(&mut self, segment: &Segment, cx: &mut H::Context) {
        let flags = segment.effective_flags();
        let id = match self.table.find(&segment.flow) {
            Some(id) if self.table.get(id).reused_by(segment, flags) => {
                let predecessor = self.close(id, CloseReason::Reused, cx);
                self.open(segment.flow, Some(predecessor), cx)
            }
            Some(id) => id,
            None if flags.rst() || (segment.payload.is_empty() && !flags.syn()) => {
                self.stats.segments_ignored += 1;
                return;
            }
            None => match self.tombstone(segment, flags.syn()) {
                Tombstone::Ignore => {
                    self.stats.segments_after_close += 1;
                    return;
                }
                Tombstone::Predecessor(predecessor) => {
                    self.open(segment.flow, Some(predecessor), cx)
                }
                Tombstone::None => self.open(segment.flow, None, cx),
            },
        };
        self.table.touch(id);
        let connection = self.table.get_mut(id);
        connection.last_seen_ns = connection.last_seen_ns.max(segment.timestamp_ns);
        if !segment.payload.is_empty()
            && !flags.syn()
            && connection.is_predecessors(segment, self.limits.max_out_of_order_bytes)
        {
            self.stats.segments_after_close += 1;
            return;
        }
        if flags.rst() {
            self.close(id, CloseReason::Reset, cx);
            return;
        }
        let flow = segment.flow;
        let direction = segment.direction;
        let connection = self.table.get_mut(id);
        let [requests, responses] = &mut connection.streams;
        if flags.syn() {
            connection.from_handshake = true;
            match direction {
                Direction::Request => {
                    requests.on_syn(segment.seq);
                }
                Direction::Response => {
                    responses.on_syn(segment.seq);
                    if flags.contains(TcpFlags::ACK) {
                        // SYN-ACK acknowledges the client's ISN + 1 even if the SYN was missed.
                        requests.synchronise(segment.ack);
                    }
                }
            }
        } else if connection.from_handshake
            && direction == Direction::Request
            && flags.contains(TcpFlags::ACK)
            && !responses.is_synchronised()
        {
            // The SYN-ACK was missed; the client's ACK names the server's first byte.
            responses.synchronise(segment.ack);
        }
        let stream = &mut connection.streams[direction as usize];
        if connection.handler.wants_payload() {
            let handler = &mut connection.handler;
            let mut emit = |event| handler.on_stream(cx, &flow, direction, event);
            stream.on_segment(
                segment.payload_seq(),
                segment.is_first_chunk(),
                &segment.payload,
                flags.fin(),
                segment.ack,
                segment.timestamp_ns,
                &self.limits,
                &mut self.stats,
                &mut emit,
            );
            if std::mem::take(&mut connection.gap_expected[direction as usize]) {
                stream.skip_holes(segment.timestamp_ns, &mut self.stats, &mut emit);
            }
            if !connection.handler.wants_payload() {
                for stream in &mut connection.streams {
                    stream.clear_pending();
                }
            }
        } else if flags.fin() {
            stream.abort();
        }
        self.settle(id, cx);
        self.enforce_memory_cap(cx);
    }

    /// What the tombstone of `segment`'s 4-tuple says about it: a segment without SYN of the
    /// connection that ended is ignored; a SYN starts a new connection, which remembers the old
    /// one's streams for its late copies.
    fn tombstone(&mut self, segment: &Segment, syn: bool) -> Tombstone {
        let Some(id) = self.tombstones.find(&segment.flow) else {
            return Tombstone::None;
        };
        let predecessor = *self.tombstones.get(id);
        if segment.timestamp_ns.saturating_sub(predecessor.closed_ns) >= TOMBSTONE_NS {
            self.tombstones.remove(id);
            return Tombstone::None;
        }
        if !syn {
            return Tombstone::Ignore;
        }
        self.tombstones.remove(id);
        Tombstone::Predecessor(predecessor)
    }

    fn bury(&mut self, flow: FlowKey, predecessor: Predecessor) {
        if let Some(id) = self.tombstones.find(&flow) {
            self.tombstones.remove(id);
        }
        if self.tombstones.len() >= MAX_TOMBSTONES
            && let Some(oldest) = self.tombstones.oldest()
        {
            self.tombstones.remove(oldest);
        }
        self.tombstones.insert(flow, predecessor);
    }

    /// Advances time: drops idle connections and declares stale holes gaps. One pass over every
    /// tracked connection to find those holding out-of-order data; call it about once a second.
    pub fn on_tick(&mut self, now_ns: u64, cx: &mut H::Context) {
        while let Some(id) = self.tombstones.oldest() {
            if now_ns.saturating_sub(self.tombstones.get(id).closed_ns) < TOMBSTONE_NS {
                break;
            }
            self.tombstones.remove(id);
        }
        let idle_ns = self.config.idle_timeout_secs.saturating_mul(1_000_000_000);
        while let Some(id) = self.table.oldest() {
            if now_ns.saturating_sub(self.table.get(id).last_seen_ns) < idle_ns {
                break;
            }
            self.close(id, CloseReason::Evicted(EvictionReason::Idle), cx);
        }
        let waiting: Vec<u32> = self
            .table
            .ids()
            .filter(|&id| {
                let connection = self.table.get(id);
                connection.streams.iter().any(StreamAssembler::is_waiting)
            })
            .collect();
        for id in waiting {
            let flow = self.table.key(id);
            let connection = self.table.get_mut(id);
            for direction in [Direction::Request, Direction::Response] {
                let handler = &mut connection.handler;
                connection.streams[direction as usize].expire_holes(
                    now_ns,
                    &self.limits,
                    &mut self.stats,
                    &mut |event| handler.on_stream(cx, &flow, direction, event),
                );
            }
            self.settle(id, cx);
        }
        self.enforce_memory_cap(cx);
    }

    /// Capture of `server_port` was paused and resumes now: on each of its connections, a hole
    /// before the next segment of a direction is a gap at once instead of after the gap timeout
    /// (holding everything behind it meanwhile).
    pub fn expect_gaps(&mut self, server_port: u16) {
        let ids: Vec<u32> = self
            .table
            .ids()
            .filter(|&id| self.table.key(id).server.port() == server_port)
            .collect();
        for id in ids {
            self.table.get_mut(id).gap_expected = [true; 2];
        }
    }

    /// Ends every connection (daemon shutdown); in-progress messages are counted as evicted.
    pub fn drain(&mut self, cx: &mut H::Context) {
        while let Some(id) = self.table.oldest() {
            self.close(id, CloseReason::Evicted(EvictionReason::Idle), cx);
        }
    }

    fn open(
        &mut self,
        flow: FlowKey,
        predecessor: Option<Predecessor>,
        cx: &mut H::Context,
    ) -> u32 {
        if self.table.len() >= self.config.max_connections.max(1)
            && let Some(oldest) = self.table.oldest()
        {
            self.close(
                oldest,
                CloseReason::Evicted(EvictionReason::MaxConnections),
                cx,
            );
        }
        self.stats.connections_opened += 1;
        let id = self.next_id;
        self.next_id += 1;
        let handler = H::open(cx, &flow, id);
        self.table.insert(
            flow,
            Connection {
                streams: Default::default(),
                handler,
                from_handshake: false,
                last_seen_ns: 0,
                footprint: 0,
                gap_expected: [false; 2],
                predecessor: predecessor.map(Box::new),
            },
        )
    }

    /// Re-measures `id`'s buffered bytes and closes it when both directions are done.
    fn settle(&mut self, id: u32, cx: &mut H::Context) {
        let connection = self.table.get_mut(id);
        let footprint = connection.measure();
        self.buffered = self.buffered - connection.footprint + footprint;
        connection.footprint = footprint;
        if connection.finished() {
            self.close(id, CloseReason::Finished, cx);
        }
    }

    fn enforce_memory_cap(&mut self, cx: &mut H::Context) {
        while self.buffered > self.config.reassembly_memory_bytes {
            let Some(oldest) = self.table.oldest() else {
                break;
            };
            self.close(oldest, CloseReason::Evicted(EvictionReason::Memory), cx);
        }
    }

    /// Removes connection `id`; returns what a successor on its 4-tuple must know of it.
    fn close(&mut self, id: u32, reason: CloseReason, cx: &mut H::Context) -> Predecessor {
        let (flow, connection) = self.table.remove(id);
        self.buffered -= connection.footprint;
        let counter = match reason {
            CloseReason::Finished => &mut self.stats.connections_finished,
            CloseReason::Reset => &mut self.stats.connections_reset,
            CloseReason::Reused => &mut self.stats.connections_reused,
            CloseReason::Evicted(EvictionReason::Idle) => &mut self.stats.evicted_idle,
            CloseReason::Evicted(EvictionReason::Memory) => &mut self.stats.evicted_memory,
            CloseReason::Evicted(EvictionReason::MaxConnections) => {
                &mut self.stats.evicted_max_connections
            }
        };
        *counter += 1;
        let remains = connection.remains(connection.last_seen_ns);
        if matches!(reason, CloseReason::Finished | CloseReason::Reset) {
            self.bury(flow, remains);
        }
        connection.handler.on_close(cx, &flow, reason);
        remains
    }
}

#[cfg(test)]
mod tests;
