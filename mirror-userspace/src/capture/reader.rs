//! Ring-buffer reader: drains records with tokio's `AsyncFd` (epoll on the ring buffer's fd),
//! decodes them into [`Segment`]s and hands batches to a bounded channel without ever waiting on
//! the consumer. A consumer that falls behind loses whole batches, counted in [`ReaderStats`];
//! the ring buffer itself is always drained, so the kernel side keeps flowing.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use aya::maps::{MapData, RingBuf};
use bytes::{Bytes, BytesMut};
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

/// Decoded segments from one drain of the ring buffer, in ring order.
pub type SegmentBatch = Vec<Segment>;

/// Counters of the userspace side of capture.
#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Records taken off the ring buffer.
    pub records: AtomicU64,
    /// Records that did not decode (a kernel/userspace layout mismatch; never expected).
    pub decode_errors: AtomicU64,
    /// Segments dropped because the consumer channel was full.
    pub consumer_dropped: AtomicU64,
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

    fn drain(&mut self, stats: &ReaderStats) -> SegmentBatch {
        let ring = self.fd.get_mut();
        let mut batch = Vec::new();
        let mut arena = BytesMut::with_capacity(self.last_batch_bytes);
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

/// Spawns a task that drains `reader` into a channel of `capacity` batches. A full channel drops
/// the batch (counted in `consumer_dropped`) rather than stalling the drain. The task ends when
/// the receiver is dropped or the reactor fails.
pub fn spawn_reader(
    mut reader: RingReader,
    capacity: usize,
) -> (
    mpsc::Receiver<SegmentBatch>,
    Arc<ReaderStats>,
    JoinHandle<Result<(), CaptureError>>,
) {
    let (sender, receiver) = mpsc::channel(capacity);
    let stats = Arc::new(ReaderStats::default());
    let task_stats = Arc::clone(&stats);
    let task = tokio::spawn(async move {
        loop {
            let batch = reader.next_batch(&task_stats).await?;
            let len = batch.len() as u64;
            match sender.try_send(batch) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    task_stats
                        .consumer_dropped
                        .fetch_add(len, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
            }
        }
    });
    (receiver, stats, task)
}

#[cfg(test)]
mod tests {
    use super::*;

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
