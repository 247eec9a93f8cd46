//! The writer thread: renders queued records as JSON lines, appends them to the sink file in
//! batches, rotates it by size and reports failures without ever stopping.
//!
//! A thread of its own, not a task: the daemon's runtime has one thread, which must never wait
//! for a disk (a full or slow one, fsync) nor spend its time rendering and redacting bodies.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tracing::warn;

use super::SinkError;
use super::line::{LinePolicy, render};
use super::queue::RecordQueue;
use super::record::SinkRecord;

/// Lines reach the file at least this often while records come.
pub(super) const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// ... or as soon as this many bytes are pending.
const FLUSH_BYTES: usize = 64 * 1024;
/// At most one log line per this interval about failed writes (a full disk would otherwise
/// log once per record).
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The sink file (`path`) and its rotated predecessors (`path.1` newest .. `path.N` oldest).
#[derive(Debug)]
pub(super) struct RotatingFile {
    path: PathBuf,
    max_file_bytes: u64,
    max_files: u32,
    /// `None` after a rotation whose new file could not be created: the next write tries again
    /// (without rotating again).
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// A failed write left part of a line at the end that could not be cut off: the next write
    /// starts with a newline, so that the fragment is a line of its own.
    torn: bool,
}

/// Creates (mode 0600: exchanges carry users' data) or appends to `path`.
fn open_append(path: &Path) -> Result<File, SinkError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| SinkError::Open {
            path: path.to_owned(),
            source,
        })
}

impl RotatingFile {
    /// Opens `path` for appending, creating it if needed; an existing file keeps its contents
    /// (and its mode), and counts towards `max_file_bytes`.
    pub fn open(path: &Path, max_file_bytes: u64, max_files: u32) -> Result<Self, SinkError> {
        let file = open_append(path)?;
        let size = file
            .metadata()
            .map_err(|source| SinkError::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        Ok(Self {
            path: path.to_owned(),
            max_file_bytes,
            max_files,
            file: Some(file),
            size,
            torn: false,
        })
    }

    /// Whether `more` bytes can go into the current file without taking it over
    /// `max_file_bytes`.
    pub fn fits(&self, more: usize) -> bool {
        self.size.saturating_add(more as u64) <= self.max_file_bytes
    }

    /// Bytes in the current file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends `bytes` (whole lines) in full, or not at all: a failed write is cut off again
    /// (or, if that fails too, closed by the next write's newline).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        if self.file.is_none() {
            self.file = Some(open_append(&self.path)?);
            self.size = 0;
            self.torn = false;
        }
        let file = self.file.as_mut().expect("opened above");
        let result = (|| {
            if self.torn {
                file.write_all(b"\n")?;
                self.torn = false;
                self.size += 1;
            }
            file.write_all(bytes)
        })();
        match result {
            Ok(()) => {
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(source) => {
                if file.set_len(self.size).is_err() {
                    self.torn = true;
                    self.size = file.metadata().map_or(self.size, |meta| meta.len());
                }
                Err(SinkError::Write {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// `path.N-1` -> `path.N` (replacing the oldest) .. `path` -> `path.1`, then a new empty
    /// `path`. With `max_files = 0` the current file is deleted instead.
    pub fn rotate(&mut self) -> Result<(), SinkError> {
        if self.file.is_some() {
            if self.max_files == 0 {
                ignore_missing(std::fs::remove_file(&self.path)).map_err(|source| {
                    SinkError::Remove {
                        path: self.path.clone(),
                        source,
                    }
                })?;
            } else {
                for index in (1..self.max_files).rev() {
                    self.rename(&self.numbered(index), &self.numbered(index + 1))?;
                }
                self.rename(&self.path, &self.numbered(1))?;
            }
            // Closing the old file flushes nothing: every write went straight to the kernel.
            self.file = None;
        }
        self.file = Some(open_append(&self.path)?);
        self.size = 0;
        self.torn = false;
        Ok(())
    }

    /// fsync: what the daemon wrote is on the disk when it exits.
    pub fn sync(&mut self) -> Result<(), SinkError> {
        match &self.file {
            Some(file) => file.sync_all().map_err(|source| SinkError::Sync {
                path: self.path.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    fn numbered(&self, index: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{index}"));
        PathBuf::from(name)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), SinkError> {
        ignore_missing(std::fs::rename(from, to)).map_err(|source| SinkError::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
            source,
        })
    }
}

/// Rotated files that do not exist yet (the first rotations) are nothing to move.
fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Write failures are logged at most once per [`ERROR_LOG_INTERVAL`] (I/O-free: time passed in).
#[derive(Debug, Default)]
pub(super) struct ErrorLog {
    last: Option<Instant>,
    /// Failures since the last line.
    suppressed: u64,
}

impl ErrorLog {
    /// Whether to log a failure at `now`; if so, how many were not logged since the last line.
    pub fn should_log(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < ERROR_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The `mirror_sink_*` counters the writer updates.
#[derive(Clone, Debug)]
pub(super) struct WriterCounters {
    pub written: Counter,
    pub error: Counter,
    pub bytes: Counter,
}

/// Renders records into a pending batch and writes it to the file.
pub(super) struct Writer {
    file: RotatingFile,
    policy: LinePolicy,
    counters: WriterCounters,
    /// Complete lines not written yet, and how many records they are.
    pending: Vec<u8>,
    pending_records: u64,
    /// Scratch for one line.
    line: Vec<u8>,
    last_flush: Instant,
    errors: ErrorLog,
}

impl Writer {
    pub fn new(file: RotatingFile, policy: LinePolicy, counters: WriterCounters) -> Self {
        Self {
            file,
            policy,
            counters,
            pending: Vec::with_capacity(FLUSH_BYTES),
            pending_records: 0,
            line: Vec::new(),
            last_flush: Instant::now(),
            errors: ErrorLog::default(),
        }
    }

    /// Adds one record. The file is rotated before a line that would take it over
    /// `max_file_bytes` (a line larger than that gets a file of its own).
    pub fn add(&mut self, record: &SinkRecord) {
        self.line.clear();
        render(record, &self.policy, &mut self.line);
        let before = self.pending.len() as u64 + self.file.size();
        if before > 0 && !self.file.fits(self.pending.len() + self.line.len()) {
            self.flush();
            if self.file.size() > 0
                && let Err(error) = self.file.rotate()
            {
                // Writing on would take the file over its size: the line is lost instead, and
                // the next one tries the rotation again.
                self.failed(1, &error);
                return;
            }
        }
        self.pending.extend_from_slice(&self.line);
        self.pending_records += 1;
        if self.pending.len() >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Writes the pending lines, if any.
    pub fn flush(&mut self) {
        self.last_flush = Instant::now();
        if self.pending.is_empty() {
            return;
        }
        match self.file.write(&self.pending) {
            Ok(()) => {
                self.counters.written.inc_by(self.pending_records);
                self.counters.bytes.inc_by(self.pending.len() as u64);
            }
            Err(error) => self.failed(self.pending_records, &error),
        }
        self.pending.clear();
        self.pending_records = 0;
    }

    /// Time until the pending lines are due, `None` with nothing pending.
    pub fn flush_due_in(&self) -> Option<Duration> {
        (!self.pending.is_empty()).then(|| FLUSH_INTERVAL.saturating_sub(self.last_flush.elapsed()))
    }

    /// Writes what is pending and syncs the file to the disk.
    pub fn finish(&mut self) {
        self.flush();
        if let Err(error) = self.file.sync() {
            self.report(&error);
        }
    }

    fn failed(&mut self, records: u64, error: &SinkError) {
        self.counters.error.inc_by(records);
        self.report(error);
    }

    fn report(&mut self, error: &SinkError) {
        if let Some(suppressed) = self.errors.should_log(Instant::now()) {
            warn!(
                %error,
                failures_not_logged = suppressed,
                "exchange sink: records lost (mirror_sink_records_total{{outcome=\"error\"}}); \
                 the sink keeps trying, and logs this at most once a minute"
            );
        }
    }
}

/// The writer thread's body: takes batches until the queue is closed and drained, then flushes
/// and syncs.
pub(super) fn run(queue: Arc<RecordQueue>, mut writer: Writer) {
    loop {
        let batch = queue.take(writer.flush_due_in());
        for queued in batch.records {
            writer.add(&queued.record);
            drop(queued.record);
            queue.release(queued.bytes);
        }
        if batch.closed {
            writer.finish();
            return;
        }
        if writer.flush_due_in().is_some_and(|due| due.is_zero()) {
            writer.flush();
        }
    }
}
