//! Ring-buffer reader: drains records with tokio's `AsyncFd` (epoll on the ring buffer's fd),
//! decodes them into [`Segment`]s and hands batches to the consumer without ever waiting on it.
//! The batches queued between the two are bounded in bytes ([`QueueBudget`]); a consumer that
//! falls behind loses whole batches, counted in [`ReaderStats`]. The ring buffer itself is always
//! drained, so the kernel side keeps flowing.

use std::{
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use aya::maps::{MapData, RingBuf};
use bytes::{Bytes, BytesMut};
use mirror_common::SEGMENT_HEADER_LEN;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
    task::JoinHandle,
};
use tracing::warn;

use super::CaptureError;
use crate::segment::{self, Segment};

/// Records decoded per wake-up before yielding to other tasks.
const MAX_RECORDS_PER_BATCH: usize = 4096;
/// How often the reader looks at the ring without a wake-up: bounds the delay of records that
/// stay below the classifier's wake-up threshold (capture timestamps are the kernel's, so the
/// delay never shows in measured latencies).
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);
/// The poll interval once the ring has stayed empty for `IDLE_AFTER_EMPTY_POLLS` polls: an
/// idle node then costs the daemon 20 wake-ups a second instead of 200. The classifier's
/// wake-up still ends the wait as soon as a batch's worth of records is pending.
pub const IDLE_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
const IDLE_AFTER_EMPTY_POLLS: u32 = 20;

/// Default bound of the bytes queued between the reader and its consumer
/// (`[limits] capture_queue_bytes`, `mirror capture --capture-queue-bytes`): 64 MiB.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Smallest accepted queue bound: 1 MiB.
pub const MIN_QUEUE_BYTES: u64 = 1024 * 1024;
/// Largest accepted queue bound: 16 GiB.
pub const MAX_QUEUE_BYTES: u64 = 1 << 34;

/// Decoded segments from one drain of the ring buffer, in ring order.
pub type SegmentBatch = Vec<Segment>;

/// Memory a batch of `segments` holds while it is queued: for each segment, the record it was
/// copied from (header and payload: the bytes of the reader's arena it keeps alive) and the
/// `Segment` itself.
pub fn batch_bytes(segments: &[Segment]) -> usize {
    segments
        .iter()
        .map(|segment| SEGMENT_HEADER_LEN + segment.payload.len() + size_of::<Segment>())
        .sum()
}

/// The byte budget of the queue between the reader and its consumer, shared by both ends: the
/// reader reserves a batch's [`batch_bytes`] before sending it, the batch gives them back when
/// it is dropped ([`QueuedBatch`]).
///
/// Rule: a batch is admitted when it fits in what is left of the budget, **or when the queue is
/// empty** - a batch larger than the whole budget then still passes, alone, so a small budget
/// slows the flow down to one batch at a time instead of starving it. The queue thus holds at
/// most `max(limit, one batch)` bytes (a batch is at most 4,096 records).
#[derive(Debug)]
pub struct QueueBudget {
    limit: usize,
    queued: AtomicUsize,
}

impl QueueBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            queued: AtomicUsize::new(0),
        })
    }

    /// The bound, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes of the batches sent and not yet dropped.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Takes `bytes` from the budget if the rule above admits them.
    fn try_reserve(&self, bytes: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let fits = queued
                    .checked_add(bytes)
                    .is_some_and(|total| total <= self.limit);
                (fits || queued == 0).then(|| queued.saturating_add(bytes))
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// A batch on its way from the reader to the consumer: derefs to its segments and gives its
/// bytes back to the [`QueueBudget`] when dropped, so a consumer cannot forget to.
pub struct QueuedBatch {
    segments: SegmentBatch,
    bytes: usize,
    budget: Arc<QueueBudget>,
}

impl QueuedBatch {
    /// Reserves the batch's bytes in `budget`: its [`batch_bytes`], or `arena_bytes` (the
    /// buffers its payloads point into) when more - a batch of a few small records still keeps
    /// a whole arena alive. Gives the segments back when the budget is full.
    pub fn admit(
        segments: SegmentBatch,
        arena_bytes: usize,
        budget: &Arc<QueueBudget>,
    ) -> Result<Self, SegmentBatch> {
        let bytes = batch_bytes(&segments).max(arena_bytes);
        if budget.try_reserve(bytes) {
            Ok(Self {
                segments,
                bytes,
                budget: Arc::clone(budget),
            })
        } else {
            Err(segments)
        }
    }

    /// Bytes the batch holds of the budget.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Deref for QueuedBatch {
    type Target = [Segment];

    fn deref(&self) -> &[Segment] {
        &self.segments
    }
}

impl Drop for QueuedBatch {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

impl std::fmt::Debug for QueuedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedBatch")
            .field("segments", &self.segments.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Counters of the userspace side of capture.
#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Records taken off the ring buffer.
    pub records: AtomicU64,
    /// Records that did not decode (a kernel/userspace layout mismatch; never expected).
    pub decode_errors: AtomicU64,
    /// Segments dropped because the queue to the consumer was full (`capture_queue_bytes`).
    pub consumer_dropped: AtomicU64,
    /// Payload bytes of those segments.
    pub consumer_dropped_bytes: AtomicU64,
}

impl ReaderStats {
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    pub fn decode_errors(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
    }

    pub fn consumer_dropped(&self) -> u64 {
        self.consumer_dropped.load(Ordering::Relaxed)
    }

    pub fn consumer_dropped_bytes(&self) -> u64 {
        self.consumer_dropped_bytes.load(Ordering::Relaxed)
    }
}

/// Arena capacity of the first batch. Later batches reserve what the previous one used, up to
/// [`MAX_ARENA_RESERVE_BYTES`]: a record slice that a stream keeps (a partial request) keeps its
/// whole arena alive, so arenas stay small.
const INITIAL_ARENA_BYTES: usize = 16 * 1024;
const MAX_ARENA_RESERVE_BYTES: usize = 256 * 1024;

/// Async reader over the classifier's ring buffer.
pub struct RingReader {
    fd: AsyncFd<RingBuf<MapData>>,
    /// Bytes the last non-empty batch used: growing the arena record by record copied it
    /// several times over (a tenth of the daemon's CPU under load).
    last_batch_bytes: usize,
    /// Records the last non-empty batch held (capacity of the next one's bookkeeping).
    last_batch_records: usize,
    /// Polls in a row that found the ring empty (saturating).
    empty_polls: u32,
    /// Capacity of the arenas the last batch was copied into.
    last_arena_bytes: usize,
}

// aya's RingBuf has no Debug.
impl std::fmt::Debug for RingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingReader")
            .field("last_batch_bytes", &self.last_batch_bytes)
            .field("last_batch_records", &self.last_batch_records)
            .field("empty_polls", &self.empty_polls)
            .field("last_arena_bytes", &self.last_arena_bytes)
            .finish_non_exhaustive()
    }
}

impl RingReader {
    pub(super) fn new(ring: RingBuf<MapData>) -> Result<Self, CaptureError> {
        // SAFETY: the fd is the ring buffer map's, owned by `ring`, which the AsyncFd owns for its
        // whole life; `RingBuf::as_raw_fd` always returns that same fd.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|error| CaptureError::Reactor(error.into_parts().1))?;
        Ok(Self {
            fd,
            last_batch_bytes: INITIAL_ARENA_BYTES,
            last_batch_records: 0,
            empty_polls: 0,
            last_arena_bytes: 0,
        })
    }

    /// Waits until records are available, then drains up to `MAX_RECORDS_PER_BATCH` of them.
    /// Records are copied once, into an arena sized like the last batch (another one when it
    /// fills up); every segment's payload is a zero-copy slice of its arena.
    ///
    /// The classifier wakes the reader only when a batch's worth of data is pending (see
    /// `WAKEUP_BYTES` in the classifier), so the reader also looks every [`POLL_INTERVAL`]
    /// ([`IDLE_POLL_INTERVAL`] while nothing comes).
    pub async fn next_batch(&mut self, stats: &ReaderStats) -> Result<SegmentBatch, CaptureError> {
        loop {
            let batch = self.drain(stats);
            if !batch.is_empty() {
                self.empty_polls = 0;
                return Ok(batch);
            }
            self.empty_polls = self.empty_polls.saturating_add(1);
            let interval = poll_interval(self.empty_polls);
            // Clear readiness before the next drain, never after: a wake-up that arrives in
            // between then shows as readiness instead of being lost.
            if let Ok(guard) = tokio::time::timeout(interval, self.fd.readable_mut()).await {
                guard.map_err(CaptureError::Reactor)?.clear_ready();
            }
        }
    }

    /// Capacity of the arenas the last batch was copied into: memory it keeps alive.
    pub fn last_arena_bytes(&self) -> usize {
        self.last_arena_bytes
    }

    fn drain(&mut self, stats: &ReaderStats) -> SegmentBatch {
        let ring = self.fd.get_mut();
        let mut batch = Vec::new();
        let mut arena = BytesMut::with_capacity(self.last_batch_bytes);
        self.last_arena_bytes = arena.capacity();
        let mut bounds = Vec::with_capacity(self.last_batch_records);
        let (mut records, mut bytes) = (0, 0);
        while records < MAX_RECORDS_PER_BATCH {
            let Some(item) = ring.next() else {
                break;
            };
            let record = &item[..segment::record_len(&item)];
            if arena.capacity() - arena.len() < record.len() && !bounds.is_empty() {
                // Full: the records so far keep this arena, the rest go to a new one (growing
                // it in place would copy them again).
                decode_into(&mut batch, arena.split().freeze(), bounds.drain(..), stats);
                arena.reserve(self.last_batch_bytes.max(record.len()));
                self.last_arena_bytes += arena.capacity();
            }
            let start = arena.len();
            arena.extend_from_slice(record);
            bounds.push(start..arena.len());
            records += 1;
            bytes += record.len();
        }
        if records > 0 {
            decode_into(&mut batch, arena.freeze(), bounds.drain(..), stats);
            self.last_batch_bytes = bytes.clamp(INITIAL_ARENA_BYTES, MAX_ARENA_RESERVE_BYTES);
            self.last_batch_records = records;
        }
        batch
    }
}

/// Decodes the records at `bounds` of `arena` onto `batch`.
fn decode_into(
    batch: &mut SegmentBatch,
    arena: Bytes,
    bounds: impl ExactSizeIterator<Item = std::ops::Range<usize>>,
    stats: &ReaderStats,
) {
    stats
        .records
        .fetch_add(bounds.len() as u64, Ordering::Relaxed);
    batch.reserve(bounds.len());
    for range in bounds {
        match segment::decode_in(&arena, range) {
            Ok(segment) => batch.push(segment),
            Err(error) => {
                stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                warn!(%error, "undecodable ring-buffer record");
            }
        }
    }
}

/// How long to wait for the classifier's wake-up after `empty_polls` drains in a row found
/// nothing.
fn poll_interval(empty_polls: u32) -> std::time::Duration {
    if empty_polls > IDLE_AFTER_EMPTY_POLLS {
        IDLE_POLL_INTERVAL
    } else {
        POLL_INTERVAL
    }
}

/// Hands `segments` to the consumer if the queue's byte budget admits them (see
/// [`QueueBudget`]); otherwise drops them, counted in `consumer_dropped` (segments) and
/// `consumer_dropped_bytes` (payload). False once the consumer is gone.
fn forward(
    segments: SegmentBatch,
    arena_bytes: usize,
    budget: &Arc<QueueBudget>,
    sender: &mpsc::UnboundedSender<QueuedBatch>,
    stats: &ReaderStats,
) -> bool {
    match QueuedBatch::admit(segments, arena_bytes, budget) {
        // A batch the consumer no longer takes is dropped here, giving its bytes back.
        Ok(batch) => sender.send(batch).is_ok(),
        Err(segments) => {
            let payload: usize = segments.iter().map(|segment| segment.payload.len()).sum();
            stats
                .consumer_dropped
                .fetch_add(segments.len() as u64, Ordering::Relaxed);
            stats
                .consumer_dropped_bytes
                .fetch_add(payload as u64, Ordering::Relaxed);
            true
        }
    }
}

/// Spawns a task that drains `reader` into a queue bounded to `queue_bytes` (see
/// [`QueueBudget`] for the rule; the channel itself is unbounded: every batch holds at least one
/// segment, so the byte bound also bounds the batches). A full queue drops the batch (counted
/// in `consumer_dropped` and `consumer_dropped_bytes`) rather than stalling the drain. The task
/// ends when the receiver is dropped or the reactor fails.
pub fn spawn_reader(
    mut reader: RingReader,
    queue_bytes: usize,
) -> (
    mpsc::UnboundedReceiver<QueuedBatch>,
    Arc<ReaderStats>,
    JoinHandle<Result<(), CaptureError>>,
) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let budget = QueueBudget::new(queue_bytes);
    let stats = Arc::new(ReaderStats::default());
    let task_stats = Arc::clone(&stats);
    let task = tokio::spawn(async move {
        loop {
            let batch = reader.next_batch(&task_stats).await?;
            let arena_bytes = reader.last_arena_bytes();
            if !forward(batch, arena_bytes, &budget, &sender, &task_stats) {
                return Ok(());
            }
        }
    });
    (receiver, stats, task)
}

#[cfg(test)]
mod tests {
    use mirror_common::{FAMILY_IPV4, SegmentHeader};

    use super::*;
    use crate::segment::Direction;

    /// A segment decoded from a record with `payload` bytes, and that record's length.
    fn segment(payload: usize) -> (Segment, usize) {
        let header = SegmentHeader {
            timestamp_ns: 1,
            seq: 1,
            ack: 1,
            payload_len: payload as u32,
            chunk_offset: 0,
            chunk_len: payload as u32,
            ifindex: 1,
            src_port: 40000,
            dst_port: 8080,
            family: FAMILY_IPV4,
            direction: Direction::Request as u8,
            tcp_flags: 0,
            _padding: 0,
            src_addr: [0; 16],
            dst_addr: [0; 16],
        };
        let record = segment::encode(&header, &vec![b'x'; payload]);
        let len = record.len();
        (segment::decode(Bytes::from(record)).unwrap(), len)
    }

    /// `count` segments of `payload` bytes each.
    fn batch(count: usize, payload: usize) -> SegmentBatch {
        (0..count).map(|_| segment(payload).0).collect()
    }

    #[test]
    fn a_batch_accounts_its_records_and_segments() {
        let (empty, empty_record) = segment(0);
        let (small, small_record) = segment(100);
        let (full, full_record) = segment(2048);
        assert_eq!(empty_record, SEGMENT_HEADER_LEN);
        assert_eq!(full_record, SEGMENT_HEADER_LEN + 2048);
        assert_eq!(batch_bytes(&[]), 0);
        assert_eq!(
            batch_bytes(&[empty, small, full]),
            empty_record + small_record + full_record + 3 * size_of::<Segment>()
        );
        // The payload is a slice of the record: 72 + 2048 + the segment, whatever its arena.
        assert_eq!(
            batch_bytes(&batch(4096, 2048)),
            4096 * (72 + 2048 + size_of::<Segment>())
        );
    }

    #[test]
    fn a_consumer_that_does_not_drain_makes_the_reader_drop_and_count() {
        let one = batch_bytes(&batch(10, 500));
        let budget = QueueBudget::new(3 * one);
        let stats = ReaderStats::default();
        let (sender, mut receiver) = mpsc::unbounded_channel();
        for _ in 0..5 {
            assert!(forward(batch(10, 500), 0, &budget, &sender, &stats));
        }
        assert_eq!(budget.queued(), 3 * one, "three batches fit, no more");
        assert_eq!(stats.consumer_dropped(), 20);
        assert_eq!(stats.consumer_dropped_bytes(), 2 * 10 * 500);

        // A batch the consumer drops gives its bytes back: the next one passes.
        let taken = receiver.try_recv().unwrap();
        assert_eq!((taken.len(), taken.bytes()), (10, one));
        assert_eq!(budget.queued(), 3 * one, "held until dropped");
        drop(taken);
        assert_eq!(budget.queued(), 2 * one);
        assert!(forward(batch(10, 500), 0, &budget, &sender, &stats));
        assert_eq!(budget.queued(), 3 * one);
        assert_eq!(stats.consumer_dropped(), 20);

        // A smaller batch fits in what is left; a larger one does not.
        while let Ok(batch) = receiver.try_recv() {
            drop(batch);
        }
        assert_eq!(budget.queued(), 0);
        assert!(forward(batch(25, 500), 0, &budget, &sender, &stats));
        assert!(forward(batch(6, 500), 0, &budget, &sender, &stats));
        assert_eq!(stats.consumer_dropped(), 26);
        assert_eq!(stats.consumer_dropped_bytes(), 26 * 500);
        assert!(forward(batch(5, 500), 0, &budget, &sender, &stats));
        assert_eq!(budget.queued(), 3 * one);

        // Batches still queued when the consumer goes away give their bytes back too.
        drop(receiver);
        assert_eq!(budget.queued(), 0);
        assert!(!forward(batch(1, 1), 0, &budget, &sender, &stats));
        assert_eq!(budget.queued(), 0);
    }

    #[test]
    fn a_few_small_records_count_the_arena_they_keep() {
        let budget = QueueBudget::new(64 * 1024);
        let (sender, _receiver) = mpsc::unbounded_channel();
        let stats = ReaderStats::default();
        // One 100-byte record in a 16 KiB arena holds the arena.
        assert!(forward(
            batch(1, 100),
            INITIAL_ARENA_BYTES,
            &budget,
            &sender,
            &stats
        ));
        assert_eq!(budget.queued(), INITIAL_ARENA_BYTES);
    }

    #[test]
    fn a_batch_larger_than_the_budget_passes_alone() {
        let budget = QueueBudget::new(1024);
        let stats = ReaderStats::default();
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let large = batch(4, 2048);
        let bytes = batch_bytes(&large);
        assert!(bytes > budget.limit());
        assert!(forward(large, 0, &budget, &sender, &stats));
        assert_eq!(budget.queued(), bytes);
        // Not even the smallest batch joins it.
        assert!(forward(batch(1, 0), 0, &budget, &sender, &stats));
        assert_eq!((stats.consumer_dropped(), budget.queued()), (1, bytes));
        drop(receiver.try_recv().unwrap());
        assert_eq!(budget.queued(), 0);
        assert!(forward(batch(4, 2048), 0, &budget, &sender, &stats));
        assert_eq!(stats.consumer_dropped(), 1);
        assert_eq!(receiver.try_recv().unwrap().len(), 4);
    }

    #[test]
    fn polls_slow_down_only_after_a_quiet_spell() {
        assert_eq!(poll_interval(1), POLL_INTERVAL);
        assert_eq!(poll_interval(IDLE_AFTER_EMPTY_POLLS), POLL_INTERVAL);
        assert_eq!(
            poll_interval(IDLE_AFTER_EMPTY_POLLS + 1),
            IDLE_POLL_INTERVAL
        );
        assert_eq!(poll_interval(u32::MAX), IDLE_POLL_INTERVAL);
    }
}
