//! One direction of a TCP connection: turns segments in any order into an in-order byte stream.
//!
//! Like quinn-proto's `Assembler`, data is kept as the received `Bytes` (no copy) keyed by stream
//! offset. In-order data with nothing buffered is handed straight through (the fast path);
//! anything else goes through a sorted list of non-overlapping chunks. Overlaps are resolved
//! first-wins, the way most TCP receivers do (RFC 9293 leaves it open): bytes already held win, and
//! differing bytes in an overlap are counted as conflicts (a sign of an evasion attempt or of a
//! broken middlebox). Bytes before the delivery point are retransmissions: they are handed to the
//! consumer as [`StreamEvent::Retransmitted`] (it may still hold them and compare) and go no
//! further.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{ReassemblyStats, StreamData, StreamEvent, seq::SeqSpace};

/// Per-stream limits.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// Bytes held out of order before the stream gives up waiting for the hole.
    pub max_out_of_order_bytes: usize,
    /// How long a hole may stay unfilled, in nanoseconds, before it is declared a gap.
    pub gap_timeout_ns: u64,
}

/// Out-of-order bytes waiting for a hole before them to be filled.
#[derive(Debug)]
struct PendingChunk {
    offset: u64,
    data: Bytes,
    ack: u32,
    timestamp_ns: u64,
    starts_segment: bool,
}

impl PendingChunk {
    fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// What a segment says besides its bytes.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    ack: u32,
    timestamp_ns: u64,
    starts_segment: bool,
}

/// Reassembly state of one direction.
#[derive(Debug, Default)]
pub struct StreamAssembler {
    space: Option<SeqSpace>,
    /// Offset of the next byte to deliver.
    next: u64,
    pending: VecDeque<PendingChunk>,
    pending_bytes: usize,
    /// Offset just past the last byte (the FIN's sequence number), once a FIN was seen.
    fin: Option<u64>,
    fin_seen_ns: u64,
    finished: bool,
}

impl StreamAssembler {
    /// True once the stream knows where its byte 0 is.
    pub fn is_synchronised(&self) -> bool {
        self.space.is_some()
    }

    /// True once every byte up to the FIN was delivered (or declared a gap) and `Fin` was emitted.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Bytes held out of order.
    pub fn buffered_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Raw sequence number of the next byte to deliver, once synchronised.
    pub fn next_seq(&self) -> Option<u32> {
        self.space.map(|space| space.seq_at(self.next))
    }

    /// Starts the stream at `next_seq` (the sequence number of its first data byte).
    pub fn synchronise(&mut self, next_seq: u32) {
        if self.space.is_none() {
            self.space = Some(SeqSpace::new(next_seq));
        }
    }

    /// Whether a SYN with sequence number `seq` is this stream's own (or the stream has none
    /// yet): a different one starts another connection on the same 4-tuple.
    pub fn same_syn(&self, seq: u32) -> bool {
        self.space
            .is_none_or(|space| space.base() == seq.wrapping_add(1))
    }

    /// The raw sequence numbers from the stream's first byte to just past the last one seen
    /// (delivered, held or announced by a FIN).
    pub fn seq_range(&self) -> Option<(u32, u32)> {
        let space = self.space?;
        let end = self
            .pending
            .back()
            .map_or(self.next, PendingChunk::end)
            .max(self.next)
            .max(self.fin.unwrap_or(0));
        Some((space.base(), space.seq_at(end)))
    }

    /// Handles a SYN with sequence number `seq`. Returns false when the stream already runs with a
    /// different initial sequence number (the 4-tuple was reused by a new connection).
    pub fn on_syn(&mut self, seq: u32) -> bool {
        match self.space {
            None => {
                self.space = Some(SeqSpace::new(seq.wrapping_add(1)));
                true
            }
            Some(space) => space.base() == seq.wrapping_add(1),
        }
    }

    /// Takes one segment chunk. `emit` receives the in-order data, gaps and the FIN.
    #[expect(
        clippy::too_many_arguments,
        reason = "segment fields are passed unpacked"
    )]
    pub fn on_segment(
        &mut self,
        seq: u32,
        starts_segment: bool,
        payload: &Bytes,
        fin: bool,
        ack: u32,
        timestamp_ns: u64,
        limits: &StreamLimits,
        stats: &mut ReassemblyStats,
        emit: &mut impl FnMut(StreamEvent),
    ) {
        if self.finished {
            if !payload.is_empty() {
                stats.segments_after_fin += 1;
            }
            return;
        }
        let space = match self.space {
            Some(space) => space,
            None if payload.is_empty() && !fin => return,
            None => {
                // Joined mid-stream: this segment's first byte becomes offset 0.
                let space = SeqSpace::new(seq);
                self.space = Some(space);
                stats.streams_joined_mid_stream += 1;
                emit(StreamEvent::JoinedMidStream);
                space
            }
        };
        let start = space.signed_offset(seq, self.next);
        let end = start + payload.len() as i64;
        if fin && self.fin.is_none() && end >= 0 {
            self.fin = Some(end as u64);
            self.fin_seen_ns = timestamp_ns;
        }
        if !payload.is_empty() {
            let segment = Arrival {
                ack,
                timestamp_ns,
                starts_segment,
            };
            self.accept(start, payload, segment, limits, stats, emit);
        }
        self.expire_holes(timestamp_ns, limits, stats, emit);
        self.deliver_fin(timestamp_ns, emit);
    }

    fn accept(
        &mut self,
        start: i64,
        payload: &Bytes,
        segment: Arrival,
        limits: &StreamLimits,
        stats: &mut ReassemblyStats,
        emit: &mut impl FnMut(StreamEvent),
    ) {
        let Arrival {
            ack,
            timestamp_ns,
            mut starts_segment,
        } = segment;
        let end = start + payload.len() as i64;
        let next = self.next as i64;
        if end <= next {
            stats.duplicate_segments += 1;
            stats.duplicate_bytes += payload.len() as u64;
            self.retransmitted(start, payload.clone(), segment, emit);
            return;
        }
        // Bytes beyond the FIN cannot belong to this stream.
        let mut data = payload.clone();
        let mut offset = start;
        if offset < next {
            let skip = (next - offset) as usize;
            stats.duplicate_bytes += skip as u64;
            self.retransmitted(start, data.slice(..skip), segment, emit);
            data = data.slice(skip..);
            offset = next;
            starts_segment = false;
        }
        let offset = offset as u64;
        if let Some(fin) = self.fin
            && offset + data.len() as u64 > fin
        {
            if offset >= fin {
                stats.segments_after_fin += 1;
                return;
            }
            data.truncate((fin - offset) as usize);
        }
        if offset == self.next && self.pending.is_empty() {
            // Fast path: in order, nothing waiting.
            self.next += data.len() as u64;
            emit(StreamEvent::Data(StreamData {
                seq: self.seq_at(offset),
                payload: data,
                ack,
                timestamp_ns,
                starts_segment,
            }));
            return;
        }
        if offset > self.next {
            stats.out_of_order_segments += 1;
        }
        let segment = Arrival {
            ack,
            timestamp_ns,
            starts_segment,
        };
        self.insert(offset, data, segment, stats);
        self.drain(emit);
        if self.pending_bytes > limits.max_out_of_order_bytes {
            // The hole is not going to be filled in time: a window's worth of data went by.
            stats.gaps_window_exceeded += 1;
            while self.pending_bytes > limits.max_out_of_order_bytes / 2 && !self.pending.is_empty()
            {
                self.skip_hole(timestamp_ns, stats, emit);
            }
        }
    }

    fn seq_at(&self, offset: u64) -> u32 {
        self.space.map_or(0, |space| space.seq_at(offset))
    }

    /// Hands already delivered bytes seen again to the consumer (`start`: their signed offset;
    /// bytes before offset 0 of a stream joined mid-way are dropped).
    fn retransmitted(
        &self,
        start: i64,
        mut data: Bytes,
        segment: Arrival,
        emit: &mut impl FnMut(StreamEvent),
    ) {
        let mut offset = start;
        if offset < 0 {
            let skip = (-offset).min(data.len() as i64) as usize;
            data = data.slice(skip..);
            offset = 0;
        }
        if data.is_empty() {
            return;
        }
        emit(StreamEvent::Retransmitted(StreamData {
            seq: self.seq_at(offset as u64),
            payload: data,
            ack: segment.ack,
            timestamp_ns: segment.timestamp_ns,
            starts_segment: false,
        }));
    }

    /// Inserts `data` at `offset` (> `next` or overlapping pending chunks) first-wins.
    fn insert(&mut self, offset: u64, data: Bytes, segment: Arrival, stats: &mut ReassemblyStats) {
        let Arrival {
            ack,
            timestamp_ns,
            starts_segment,
        } = segment;
        let end = offset + data.len() as u64;
        let mut index = self.pending.partition_point(|chunk| chunk.end() <= offset);
        let mut cursor = offset;
        while cursor < end {
            let Some(existing) = self.pending.get(index) else {
                break;
            };
            if existing.offset >= end {
                break;
            }
            if existing.offset > cursor {
                let piece =
                    data.slice((cursor - offset) as usize..(existing.offset - offset) as usize);
                self.pending_bytes += piece.len();
                self.pending.insert(
                    index,
                    PendingChunk {
                        offset: cursor,
                        data: piece,
                        ack,
                        timestamp_ns,
                        starts_segment: starts_segment && cursor == offset,
                    },
                );
                index += 1;
                cursor = self.pending[index].offset;
            }
            let existing = &self.pending[index];
            let overlap_end = end.min(existing.end());
            let new_bytes = &data[(cursor - offset) as usize..(overlap_end - offset) as usize];
            let old_bytes = &existing.data
                [(cursor - existing.offset) as usize..(overlap_end - existing.offset) as usize];
            let conflicts = new_bytes
                .iter()
                .zip(old_bytes)
                .filter(|(new, old)| new != old)
                .count();
            stats.duplicate_bytes += new_bytes.len() as u64;
            stats.conflicting_bytes += conflicts as u64;
            cursor = overlap_end;
            index += 1;
        }
        if cursor < end {
            let piece = data.slice((cursor - offset) as usize..);
            self.pending_bytes += piece.len();
            self.pending.insert(
                index,
                PendingChunk {
                    offset: cursor,
                    data: piece,
                    ack,
                    timestamp_ns,
                    starts_segment: starts_segment && cursor == offset,
                },
            );
        }
    }

    /// Delivers pending chunks that start at the delivery point.
    fn drain(&mut self, emit: &mut impl FnMut(StreamEvent)) {
        while let Some(front) = self.pending.front() {
            if front.offset > self.next {
                break;
            }
            let chunk = self.pending.pop_front().expect("front exists");
            self.pending_bytes -= chunk.data.len();
            // Chunks never overlap each other and start at or after `next` when inserted.
            debug_assert_eq!(chunk.offset, self.next);
            self.next = chunk.end();
            emit(StreamEvent::Data(StreamData {
                seq: self.seq_at(chunk.offset),
                payload: chunk.data,
                ack: chunk.ack,
                timestamp_ns: chunk.timestamp_ns,
                starts_segment: chunk.starts_segment,
            }));
        }
    }

    /// Declares the first hole a gap and delivers what follows it.
    fn skip_hole(
        &mut self,
        timestamp_ns: u64,
        stats: &mut ReassemblyStats,
        emit: &mut impl FnMut(StreamEvent),
    ) {
        let until = match (self.pending.front(), self.fin) {
            (Some(front), _) => front.offset,
            (None, Some(fin)) if fin > self.next => fin,
            _ => return,
        };
        let len = until - self.next;
        stats.gaps += 1;
        stats.gap_bytes += len;
        self.next = until;
        emit(StreamEvent::Gap { len, timestamp_ns });
        self.drain(emit);
    }

    /// Declares every hole a gap now (the data behind it is known never to come) and delivers
    /// what waits behind them.
    pub fn skip_holes(
        &mut self,
        timestamp_ns: u64,
        stats: &mut ReassemblyStats,
        emit: &mut impl FnMut(StreamEvent),
    ) {
        if self.finished {
            return;
        }
        while !self.pending.is_empty() || self.fin.is_some_and(|fin| fin > self.next) {
            self.skip_hole(timestamp_ns, stats, emit);
        }
        self.deliver_fin(timestamp_ns, emit);
    }

    /// Declares holes older than the gap timeout lost. Called on every segment and on ticks.
    pub fn expire_holes(
        &mut self,
        now_ns: u64,
        limits: &StreamLimits,
        stats: &mut ReassemblyStats,
        emit: &mut impl FnMut(StreamEvent),
    ) {
        if self.finished {
            return;
        }
        let oldest = self.pending.iter().map(|chunk| chunk.timestamp_ns).min();
        let waiting_since = match (oldest, self.fin) {
            (Some(oldest), _) => oldest,
            (None, Some(fin)) if fin > self.next => self.fin_seen_ns,
            _ => return,
        };
        if now_ns.saturating_sub(waiting_since) < limits.gap_timeout_ns {
            return;
        }
        self.skip_holes(now_ns, stats, emit);
    }

    fn deliver_fin(&mut self, timestamp_ns: u64, emit: &mut impl FnMut(StreamEvent)) {
        if !self.finished && self.fin == Some(self.next) && self.space.is_some() {
            self.finished = true;
            self.pending.clear();
            self.pending_bytes = 0;
            emit(StreamEvent::Fin { timestamp_ns });
        }
    }

    /// True while data or a FIN waits behind a hole (so [`expire_holes`](Self::expire_holes) has
    /// work to do).
    pub fn is_waiting(&self) -> bool {
        !self.finished && (!self.pending.is_empty() || self.fin.is_some_and(|fin| fin > self.next))
    }

    /// Drops held out-of-order data (the consumer no longer wants the payload).
    pub fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
    }

    /// Marks the stream finished without a FIN (the connection was reset or dropped).
    pub fn abort(&mut self) {
        self.finished = true;
        self.pending.clear();
        self.pending_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: StreamLimits = StreamLimits {
        max_out_of_order_bytes: 64,
        gap_timeout_ns: 1_000,
    };

    #[derive(Default)]
    struct Harness {
        stream: StreamAssembler,
        stats: ReassemblyStats,
        out: Vec<u8>,
        events: Vec<String>,
    }

    impl Harness {
        fn with_syn(isn: u32) -> Self {
            let mut harness = Self::default();
            assert!(harness.stream.on_syn(isn));
            harness
        }

        fn segment(&mut self, seq: u32, data: &[u8], fin: bool, now: u64) {
            let Self {
                stream,
                stats,
                out,
                events,
            } = self;
            stream.on_segment(
                seq,
                true,
                &Bytes::copy_from_slice(data),
                fin,
                0,
                now,
                &LIMITS,
                stats,
                &mut |event| match event {
                    StreamEvent::Data(data) => out.extend_from_slice(&data.payload),
                    StreamEvent::Gap { len, .. } => events.push(format!("gap {len}")),
                    StreamEvent::Fin { .. } => events.push("fin".into()),
                    StreamEvent::JoinedMidStream => events.push("mid".into()),
                    StreamEvent::Retransmitted(data) => {
                        events.push(format!("again {}", String::from_utf8_lossy(&data.payload)));
                    }
                },
            );
        }

        fn tick(&mut self, now: u64) {
            let Self {
                stream,
                stats,
                out,
                events,
            } = self;
            stream.expire_holes(now, &LIMITS, stats, &mut |event| match event {
                StreamEvent::Data(data) => out.extend_from_slice(&data.payload),
                StreamEvent::Gap { len, .. } => events.push(format!("gap {len}")),
                StreamEvent::Fin { .. } => events.push("fin".into()),
                StreamEvent::JoinedMidStream => events.push("mid".into()),
                StreamEvent::Retransmitted(_) => events.push("again".into()),
            });
        }
    }

    #[test]
    fn in_order_segments_pass_through() {
        let mut h = Harness::with_syn(99);
        h.segment(100, b"hello ", false, 0);
        h.segment(106, b"world", true, 0);
        assert_eq!(h.out, b"hello world");
        assert_eq!(h.events, ["fin"]);
        assert!(h.stream.is_finished());
    }

    #[test]
    fn reordered_segments_are_buffered_then_delivered() {
        let mut h = Harness::with_syn(0);
        h.segment(7, b"world", false, 0);
        h.segment(4, b"lo ", false, 0);
        assert!(h.out.is_empty());
        assert_eq!(h.stream.buffered_bytes(), 8);
        h.segment(1, b"hel", false, 0);
        assert_eq!(h.out, b"hello world");
        assert_eq!(h.stream.buffered_bytes(), 0);
        assert_eq!(h.stats.out_of_order_segments, 2);
    }

    #[test]
    fn reassembly_crosses_sequence_wraparound() {
        let mut h = Harness::with_syn(u32::MAX - 3);
        // Offset 0 is u32::MAX - 2; "abcdef" wraps after 3 bytes.
        h.segment(0, b"def", false, 0);
        h.segment(u32::MAX - 2, b"abc", false, 0);
        h.segment(3, b"g", false, 0);
        assert_eq!(h.out, b"abcdefg");
    }

    #[test]
    fn retransmissions_are_dropped() {
        let mut h = Harness::with_syn(0);
        h.segment(1, b"abcd", false, 0);
        h.segment(1, b"abcd", false, 0);
        h.segment(3, b"cdef", false, 0);
        assert_eq!(h.out, b"abcdef");
        assert_eq!(h.stats.duplicate_segments, 1);
        assert_eq!(h.stats.duplicate_bytes, 6);
    }

    #[test]
    fn overlaps_are_first_wins_and_conflicts_counted() {
        let mut h = Harness::with_syn(0);
        h.segment(5, b"EFGH", false, 0);
        // Covers offsets 2..10; offsets 4..8 overlap "EFGH" with two differing bytes.
        h.segment(3, b"cdEFxyij", false, 0);
        h.segment(1, b"ab", false, 0);
        assert_eq!(h.out, b"abcdEFGHij");
        assert_eq!(h.stats.conflicting_bytes, 2);
    }

    #[test]
    fn window_overflow_declares_a_gap() {
        let mut h = Harness::with_syn(0);
        h.segment(11, &[b'x'; 40], false, 0);
        h.segment(51, &[b'y'; 40], false, 0);
        assert_eq!(h.events, ["gap 10"], "80 bytes exceed the 64-byte window");
        assert_eq!(h.out.len(), 80);
        assert_eq!(h.stats.gaps, 1);
        assert_eq!(h.stream.buffered_bytes(), 0);
    }

    #[test]
    fn holes_expire_after_the_gap_timeout() {
        let mut h = Harness::with_syn(0);
        h.segment(6, b"later", false, 100);
        h.tick(500);
        assert!(h.events.is_empty());
        h.tick(1_100);
        assert_eq!(h.events, ["gap 5"]);
        assert_eq!(h.out, b"later");
    }

    #[test]
    fn fin_waits_for_missing_data() {
        let mut h = Harness::with_syn(0);
        h.segment(4, b"def", true, 0);
        assert!(h.events.is_empty());
        h.segment(1, b"abc", false, 0);
        assert_eq!(h.out, b"abcdef");
        assert_eq!(h.events, ["fin"]);
    }

    #[test]
    fn tail_loss_before_fin_expires() {
        let mut h = Harness::with_syn(0);
        h.segment(1, b"abc", false, 0);
        h.segment(7, b"", true, 10);
        h.tick(2_000);
        assert_eq!(h.events, ["gap 3", "fin"]);
    }

    #[test]
    fn mid_stream_join_starts_at_first_payload() {
        let mut h = Harness::default();
        h.segment(5000, b"GET", false, 0);
        h.segment(4990, b"0123456789", false, 0);
        h.segment(5003, b" /", false, 0);
        assert_eq!(h.events, ["mid"]);
        assert_eq!(h.out, b"GET /");
    }

    #[test]
    fn data_after_fin_is_ignored() {
        let mut h = Harness::with_syn(0);
        h.segment(1, b"ab", true, 0);
        h.segment(3, b"cd", false, 0);
        assert_eq!(h.out, b"ab");
        assert_eq!(h.stats.segments_after_fin, 1);
    }

    #[test]
    fn syn_with_other_isn_reports_reuse() {
        let mut stream = StreamAssembler::default();
        assert!(stream.on_syn(10));
        assert!(
            stream.on_syn(10),
            "a retransmitted SYN is the same connection"
        );
        assert!(!stream.on_syn(77));
    }
}
