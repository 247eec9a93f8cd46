//! The exchange sink (`[sink]`): every compared exchange (the request, the primary's response
//! and each shadow's) as one JSON object per line in a file, to collect the cases where
//! versions disagree.
//!
//! The pipeline fills a [`SinkRecord`] and hands it to [`Sink::try_submit`], which never waits:
//! records go through a queue bounded in bytes (`queue_bytes`; beyond it they are dropped and
//! counted) to a writer thread that renders them ([`line`]: header and JSON-field redaction,
//! bodies cut at `body_bytes`, base64 for bodies that are not UTF-8), appends them to the file
//! (created 0600) in batches flushed at least every second, rotates it by size, and on
//! [`Sink::shutdown`] writes everything queued and fsyncs. Write errors are counted and logged
//! once a minute; the sink keeps going.
//!
//! Settings are read at start-up: a SIGHUP reload does not change them (the daemon says so).
//!
//! Metrics: `mirror_sink_records_total{outcome="written"|"dropped"|"error"}` and
//! `mirror_sink_bytes_total`.

mod line;
mod queue;
mod record;
mod redact;
mod writer;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests_line;
#[cfg(test)]
mod tests_writer;

use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;
use tracing::error;

pub use record::{
    Differences, HeaderList, PrimaryRecord, RecordBody, RequestRecord, ShadowOutcome, ShadowRecord,
    ShadowRole, SinkRecord,
};
pub use redact::{JsonPointer, REDACTED};

use crate::config::{SinkOnly, SinkSection};
use crate::metrics::{Metrics, OutcomeLabels};
use line::LinePolicy;
use queue::{RecordQueue, Refused};
use writer::{RotatingFile, Writer, WriterCounters};

/// Why the sink could not start, or a write failed (the writer logs those and goes on).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("opening the sink file {path} for appending: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing to the sink file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rotating the sink file: renaming {from} to {to}: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rotating the sink file: removing {path} (max_files = 0): {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fsync of the sink file {path}: {source}")]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the sink writer thread: {0}")]
    SpawnThread(#[source] std::io::Error),
}

/// The daemon's handle on the sink. Without `path` the sink is off: it wants nothing and
/// [`shutdown`](Self::shutdown) returns at once.
#[derive(Debug)]
pub struct Sink {
    /// `None` when off.
    queue: Option<Arc<RecordQueue>>,
    only: SinkOnly,
    body_bytes: usize,
    keep_whole_json: bool,
    dropped: Counter,
    /// Completed by the writer thread when it has written and synced everything.
    finished: Option<oneshot::Receiver<()>>,
}

impl Sink {
    /// Opens (or creates, mode 0600) the file and starts the writer thread; an unusable path
    /// fails here, at start-up. Counters are `metrics`' `mirror_sink_*`.
    pub fn start(config: &SinkSection, metrics: &Metrics) -> Result<Self, SinkError> {
        let counter = |outcome: &'static str| {
            metrics
                .sink_records
                .get_or_create_owned(&OutcomeLabels { outcome })
        };
        let mut sink = Self {
            queue: None,
            only: config.only,
            body_bytes: config.body_bytes,
            keep_whole_json: !config.redact_fields.is_empty(),
            dropped: counter("dropped"),
            finished: None,
        };
        let Some(path) = &config.path else {
            return Ok(sink);
        };
        let file = RotatingFile::open(path, config.max_file_bytes, config.max_files)?;
        let writer = Writer::new(
            file,
            LinePolicy::new(config),
            WriterCounters {
                written: counter("written"),
                error: counter("error"),
                bytes: metrics.sink_bytes.clone(),
            },
        );
        let queue = Arc::new(RecordQueue::new(config.queue_bytes));
        let (done, finished) = oneshot::channel();
        let thread_queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name("mirror-sink".into())
            .spawn(move || {
                writer::run(thread_queue, writer);
                let _ = done.send(());
            })
            .map_err(SinkError::SpawnThread)?;
        sink.queue = Some(queue);
        sink.finished = Some(finished);
        Ok(sink)
    }

    /// Whether the sink is on (has a `path`).
    pub fn is_enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Whether an exchange is to be recorded: the sink is on, and it keeps every exchange or
    /// (`only = "differences"`) this one `differs`. Lets the pipeline skip building records
    /// that would not be written.
    pub fn wants(&self, differs: bool) -> bool {
        self.is_enabled() && (self.only == SinkOnly::All || differs)
    }

    /// `[sink] body_bytes`: the most of a body a line shows.
    pub fn body_bytes(&self) -> usize {
        self.body_bytes
    }

    /// The part of a body worth queueing: its first `body_bytes`, or all of a JSON body when
    /// `redact_fields` is set (fields are redacted in the whole document before it is cut; a
    /// JSON body cut before would be withheld).
    pub fn body(&self, body: &[u8]) -> RecordBody {
        if self.keep_whole_json && redact::looks_like_json(body) {
            RecordBody::whole(bytes::Bytes::copy_from_slice(body))
        } else {
            RecordBody::prefix(body, self.body_bytes)
        }
    }

    /// Queues `record` for writing without waiting (a lock is held only to push it). Returns
    /// false when it is not queued: the sink is off, `only` excludes it, or it does not fit in
    /// what is left of `queue_bytes` (counted as `dropped`).
    pub fn try_submit(&self, record: SinkRecord) -> bool {
        let Some(queue) = &self.queue else {
            return false;
        };
        if !self.wants(record.differs()) {
            return false;
        }
        match queue.push(record) {
            Ok(()) => true,
            Err(Refused::Full | Refused::Closed) => {
                self.dropped.inc();
                false
            }
        }
    }

    /// Stops taking records, waits until the writer has written every record already queued and
    /// fsynced the file. Takes as long as the disk does: the caller bounds it if needed.
    pub async fn shutdown(mut self) {
        if let Some(queue) = &self.queue {
            queue.close();
        }
        if let Some(finished) = self.finished.take()
            && finished.await.is_err()
        {
            error!("the exchange sink's writer thread ended abnormally: queued records are lost");
        }
    }
}

impl Drop for Sink {
    /// Without [`shutdown`](Self::shutdown) the writer still writes what is queued, but nobody
    /// waits for it.
    fn drop(&mut self) {
        if let Some(queue) = &self.queue {
            queue.close();
        }
    }
}
