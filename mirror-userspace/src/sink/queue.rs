//! The queue between the pipeline and the writer thread, bounded in bytes (`queue_bytes`): a push
//! never waits (over the budget the record is refused), and the writer takes everything queued
//! at once.
//!
//! A record's bytes stay counted until the writer has written it and released them, so the
//! budget bounds all the memory records hold, not only what waits.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::record::SinkRecord;

/// A queued record and the bytes it was counted for.
#[derive(Debug)]
pub(super) struct Queued {
    pub record: SinkRecord,
    pub bytes: usize,
}

/// Why a push was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The record does not fit in what is left of the budget.
    Full,
    /// The sink is shutting down.
    Closed,
}

/// What [`RecordQueue::take`] returns: the records queued, and whether the queue is closed
/// (nothing more will come once these are written).
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub records: VecDeque<Queued>,
    pub closed: bool,
}

#[derive(Debug, Default)]
struct State {
    records: VecDeque<Queued>,
    /// Bytes of the records queued or taken and not yet released.
    bytes: usize,
    closed: bool,
    /// The writer sleeps on the condition variable: only then is a wake-up (a futex call) worth
    /// making.
    writer_waiting: bool,
}

#[derive(Debug)]
pub(super) struct RecordQueue {
    budget: usize,
    state: Mutex<State>,
    ready: Condvar,
}

impl RecordQueue {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            state: Mutex::default(),
            ready: Condvar::new(),
        }
    }

    /// The lock is held only to move records in or out, never across I/O; a panic while held
    /// leaves consistent state (plain pushes and pops), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `record` if its bytes fit in the budget.
    pub fn push(&self, record: SinkRecord) -> Result<(), Refused> {
        let bytes = record.queued_bytes();
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.bytes.saturating_add(bytes) > self.budget {
            return Err(Refused::Full);
        }
        state.bytes += bytes;
        state.records.push_back(Queued { record, bytes });
        let wake = std::mem::take(&mut state.writer_waiting);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Takes every queued record. When there is none and the queue is open, waits for one (or
    /// the close) at most `timeout`, forever with `None`.
    pub fn take(&self, timeout: Option<Duration>) -> Batch {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let mut state = self.lock();
        while state.records.is_empty() && !state.closed {
            state.writer_waiting = true;
            state = match deadline {
                None => self
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    self.ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        state.writer_waiting = false;
        Batch {
            records: std::mem::take(&mut state.records),
            closed: state.closed,
        }
    }

    /// The writer is done with a record of `bytes`: its memory is free.
    pub fn release(&self, bytes: usize) {
        let mut state = self.lock();
        state.bytes = state.bytes.saturating_sub(bytes);
    }

    /// Refuses further pushes and wakes the writer, which writes what is queued and stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Bytes counted now (queued, or taken and not released).
    #[cfg(test)]
    pub fn counted_bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::record::examples::record;
    use super::*;

    #[test]
    fn pushes_beyond_the_budget_are_refused_until_bytes_are_released() {
        let size = record("/0").queued_bytes();
        let queue = RecordQueue::new(size * 3 + size / 2);
        for i in 0..3 {
            assert_eq!(queue.push(record(&format!("/{i}"))), Ok(()));
        }
        // Nobody takes: the fourth does not fit, however often it is tried.
        for _ in 0..100 {
            assert_eq!(queue.push(record("/3")), Err(Refused::Full));
        }
        assert_eq!(queue.counted_bytes(), size * 3);
        let batch = queue.take(Some(Duration::ZERO));
        assert_eq!(batch.records.len(), 3);
        assert!(!batch.closed);
        // Taken but not written yet: still counted.
        assert_eq!(queue.push(record("/3")), Err(Refused::Full));
        queue.release(batch.records[0].bytes);
        assert_eq!(queue.push(record("/3")), Ok(()));
    }

    #[test]
    fn a_record_larger_than_the_budget_is_refused() {
        let queue = RecordQueue::new(100);
        assert_eq!(queue.push(record("/")), Err(Refused::Full));
        assert_eq!(queue.counted_bytes(), 0);
    }

    #[test]
    fn take_times_out_empty_and_returns_what_was_pushed_in_order() {
        let queue = RecordQueue::new(1 << 20);
        let started = Instant::now();
        let batch = queue.take(Some(Duration::from_millis(50)));
        assert!(batch.records.is_empty() && !batch.closed);
        assert!(started.elapsed() >= Duration::from_millis(50));
        queue.push(record("/a")).unwrap();
        queue.push(record("/b")).unwrap();
        let targets: Vec<String> = queue
            .take(None)
            .records
            .into_iter()
            .map(|queued| queued.record.request.target)
            .collect();
        assert_eq!(targets, ["/a", "/b"]);
    }

    #[test]
    fn a_waiting_writer_is_woken_by_a_push_and_by_close() {
        let queue = Arc::new(RecordQueue::new(1 << 20));
        let writer = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                let first = queue.take(None);
                let second = queue.take(None);
                (first.records.len(), second.closed)
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        queue.push(record("/")).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        queue.close();
        assert_eq!(writer.join().unwrap(), (1, true));
        assert_eq!(queue.push(record("/")), Err(Refused::Closed));
    }
}
