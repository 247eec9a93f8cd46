//! The sink with real files: rotation, modes, the bounded queue against a stalled writer,
//! shutdown, write errors, and the daemon-side API.

use std::fs::{self, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::record::examples::record;
use super::writer::{ErrorLog, RotatingFile};
use super::*;
use crate::metrics::OutcomeLabels;

/// A directory under the system temp dir, removed on drop (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(crate::netns::unique_name("mirror-sink-"));
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn section(path: &Path) -> SinkSection {
    SinkSection {
        path: Some(path.to_owned()),
        ..SinkSection::default()
    }
}

fn count(metrics: &Metrics, outcome: &'static str) -> u64 {
    metrics
        .sink_records
        .get_or_create(&OutcomeLabels { outcome })
        .get()
}

/// The request targets of the records in `path`, every line checked to be a JSON object.
fn targets_in(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["request"]["target"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn files_rotate_by_size_keep_max_files_and_are_0600() {
    let dir = TempDir::new();
    let path = dir.join("exchanges.jsonl");
    let (metrics, _) = Metrics::new();
    let line_len = {
        let mut line = Vec::new();
        line::render(
            &record("/00"),
            &LinePolicy::new(&SinkSection::default()),
            &mut line,
        );
        line.len() as u64
    };
    let config = SinkSection {
        // Three lines per file.
        max_file_bytes: line_len * 3 + line_len / 2,
        max_files: 2,
        ..section(&path)
    };
    let sink = Sink::start(&config, &metrics).unwrap();
    for i in 0..20 {
        assert!(sink.try_submit(record(&format!("/{i:02}"))));
    }
    sink.shutdown().await;

    assert_eq!(count(&metrics, "written"), 20);
    assert_eq!(metrics.sink_bytes.get(), 20 * line_len);
    let names: Vec<PathBuf> = ["exchanges.jsonl", "exchanges.jsonl.1", "exchanges.jsonl.2"]
        .map(|name| dir.join(name))
        .to_vec();
    let mut kept = Vec::new();
    for name in names.iter().rev() {
        assert!(
            fs::metadata(name).unwrap().len() <= config.max_file_bytes,
            "{name:?}"
        );
        assert_eq!(mode(name), 0o600, "{name:?}");
        kept.extend(targets_in(name));
    }
    assert!(!dir.join("exchanges.jsonl.3").exists(), "oldest deleted");
    // 20 records, three per file: files of 18..20 (current), 15..17, 12..14 are kept.
    let expected: Vec<String> = (12..20).map(|i| format!("/{i:02}")).collect();
    assert_eq!(kept, expected);
}

#[test]
fn rotation_renames_down_the_line_and_max_files_zero_deletes() {
    let dir = TempDir::new();
    let path = dir.join("x.jsonl");
    // An existing file is appended to and counts towards the size.
    fs::write(&path, "{\"old\":1}\n").unwrap();
    let mut file = RotatingFile::open(&path, 100, 2).unwrap();
    assert_eq!(file.size(), 10);
    for round in 0..4 {
        file.write(format!("{{\"round\":{round}}}\n").as_bytes())
            .unwrap();
        file.rotate().unwrap();
    }
    assert_eq!(fs::read_to_string(&path).unwrap(), "");
    assert_eq!(
        fs::read_to_string(dir.join("x.jsonl.1")).unwrap(),
        "{\"round\":3}\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("x.jsonl.2")).unwrap(),
        "{\"round\":2}\n"
    );
    assert!(!dir.join("x.jsonl.3").exists());

    let mut file = RotatingFile::open(&path, 100, 0).unwrap();
    file.write(b"{}\n").unwrap();
    file.rotate().unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "");
    assert_eq!(mode(&path), 0o600);
    assert!(file.fits(100) && !file.fits(101));
}

/// A FIFO nobody reads: the writer blocks in write(2) once the pipe is full, like on a disk
/// that stopped answering.
#[tokio::test]
async fn a_stalled_writer_makes_submissions_drop_and_count_never_wait() {
    let dir = TempDir::new();
    let path = dir.join("fifo");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // A reader must exist for the sink to open the FIFO for writing.
    let mut reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    let (metrics, _) = Metrics::new();
    let config = SinkSection {
        queue_bytes: 64 * 1024,
        ..section(&path)
    };
    let sink = Sink::start(&config, &metrics).unwrap();
    let big = |i: usize| {
        let mut record = record(&format!("/{i}"));
        record.request.body = RecordBody::whole(vec![b'a'; 4000]);
        record
    };
    // Far more than the pipe (64 KiB on Linux), the pending batch and the queue hold, slowly
    // enough for the writer to take them: it ends up blocked in write(2).
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..200 {
        if sink.try_submit(big(i)) {
            accepted += 1;
        } else {
            refused += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(writer::FLUSH_INTERVAL + Duration::from_millis(500));

    let started = Instant::now();
    let refused_before = refused;
    for i in 200..1200 {
        if sink.try_submit(big(i)) {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "submissions waited: {:?}",
        started.elapsed()
    );
    // The queue holds at most 64 KiB of ~4.6 KB records.
    assert!(
        refused - refused_before >= 1000 - 16,
        "only {} refused",
        refused - refused_before
    );
    assert_eq!(count(&metrics, "dropped"), refused);

    // Unblock: read everything until the sink closes the FIFO at shutdown.
    let drain = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut buffer = [0u8; 65536];
        loop {
            match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => lines.extend_from_slice(&buffer[..n]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => panic!("{error}"),
            }
        }
        lines
    });
    sink.shutdown().await;
    let written = drain.join().unwrap();
    let lines = written
        .split(|&byte| byte == b'\n')
        .filter(|l| !l.is_empty());
    assert_eq!(lines.count(), accepted);
    assert_eq!(count(&metrics, "written"), accepted as u64);
    assert_eq!(count(&metrics, "error"), 0);
}

#[tokio::test]
async fn shutdown_writes_everything_queued() {
    let dir = TempDir::new();
    let path = dir.join("exchanges.jsonl");
    let (metrics, _) = Metrics::new();
    let sink = Sink::start(&section(&path), &metrics).unwrap();
    for i in 0..500 {
        assert!(sink.try_submit(record(&format!("/{i}"))));
    }
    // No wait for the periodic flush: shutdown writes the rest.
    sink.shutdown().await;
    let expected: Vec<String> = (0..500).map(|i| format!("/{i}")).collect();
    assert_eq!(targets_in(&path), expected);
    assert_eq!(count(&metrics, "written"), 500);
    assert_eq!(metrics.sink_bytes.get(), fs::metadata(&path).unwrap().len());
}

#[tokio::test]
async fn records_reach_the_file_within_the_flush_interval() {
    let dir = TempDir::new();
    let path = dir.join("exchanges.jsonl");
    let (metrics, _) = Metrics::new();
    let sink = Sink::start(&section(&path), &metrics).unwrap();
    for i in 0..3 {
        sink.try_submit(record(&format!("/{i}")));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + writer::FLUSH_INTERVAL * 3;
    while targets_in(&path).len() < 3 {
        assert!(Instant::now() < deadline, "not flushed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sink.shutdown().await;
}

/// /dev/full: every write fails with ENOSPC, as on a full disk.
#[tokio::test]
async fn write_errors_are_counted_and_the_sink_keeps_taking_records() {
    let (metrics, _) = Metrics::new();
    let sink = Sink::start(&section(Path::new("/dev/full")), &metrics).unwrap();
    for i in 0..5 {
        assert!(sink.try_submit(record(&format!("/{i}"))));
    }
    let deadline = Instant::now() + writer::FLUSH_INTERVAL * 3;
    while count(&metrics, "error") < 5 {
        assert!(Instant::now() < deadline, "errors not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still working: later records are taken and tried again.
    assert!(sink.wants(false));
    for i in 5..8 {
        assert!(sink.try_submit(record(&format!("/{i}"))));
    }
    sink.shutdown().await;
    assert_eq!(count(&metrics, "error"), 8);
    assert_eq!(count(&metrics, "written"), 0);
    assert_eq!(count(&metrics, "dropped"), 0);
    assert_eq!(metrics.sink_bytes.get(), 0);
}

#[test]
fn write_errors_are_logged_once_a_minute() {
    let mut log = ErrorLog::default();
    let start = Instant::now();
    assert_eq!(log.should_log(start), Some(0));
    assert_eq!(log.should_log(start + Duration::from_secs(1)), None);
    assert_eq!(log.should_log(start + Duration::from_secs(59)), None);
    assert_eq!(log.should_log(start + Duration::from_secs(60)), Some(2));
    assert_eq!(log.should_log(start + Duration::from_secs(61)), None);
}

#[test]
fn an_unusable_path_fails_at_start() {
    let (metrics, _) = Metrics::new();
    let path = Path::new("/nonexistent-mirror-dir/exchanges.jsonl");
    let error = Sink::start(&section(path), &metrics).unwrap_err();
    assert!(matches!(error, SinkError::Open { .. }), "{error:?}");
    assert!(
        error.to_string().starts_with(
            "opening the sink file /nonexistent-mirror-dir/exchanges.jsonl for appending: "
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_sink_without_path_is_off() {
    let (metrics, _) = Metrics::new();
    let sink = Sink::start(&SinkSection::default(), &metrics).unwrap();
    assert!(!sink.is_enabled());
    assert!(!sink.wants(true));
    assert!(!sink.try_submit(record("/")));
    assert_eq!(count(&metrics, "dropped"), 0);
    sink.shutdown().await;
}

#[tokio::test]
async fn only_differences_keeps_exchanges_where_a_shadow_differs() {
    let dir = TempDir::new();
    let path = dir.join("exchanges.jsonl");
    let (metrics, _) = Metrics::new();
    let config = SinkSection {
        only: SinkOnly::Differences,
        ..section(&path)
    };
    let sink = Sink::start(&config, &metrics).unwrap();
    assert!(sink.wants(true) && !sink.wants(false));
    let mut same = record("/same");
    same.shadows[0].differences = Some(Differences::default());
    assert!(!sink.try_submit(same), "filtered, not queued");
    assert!(sink.try_submit(record("/differs")));
    sink.shutdown().await;
    assert_eq!(targets_in(&path), ["/differs"]);
    assert_eq!(count(&metrics, "dropped"), 0, "filtering is no drop");
}

#[test]
fn body_keeps_whole_json_only_when_fields_are_redacted() {
    let (metrics, _) = Metrics::new();
    let config = SinkSection {
        body_bytes: 4,
        ..SinkSection::default()
    };
    let json = br#"{"user": {"email": "a@b.c"}}"#;
    let sink = Sink::start(&config, &metrics).unwrap();
    assert_eq!(sink.body(json), RecordBody::prefix(json, 4));
    let dir = TempDir::new();
    let config = SinkSection {
        redact_fields: vec![JsonPointer::parse("/user/email").unwrap()],
        ..SinkSection {
            path: Some(dir.join("x")),
            ..config
        }
    };
    let sink = Sink::start(&config, &metrics).unwrap();
    assert_eq!(sink.body(json), RecordBody::whole(&json[..]));
    assert_eq!(
        sink.body(b"plain text"),
        RecordBody::prefix(b"plain text", 4)
    );
}

#[test]
fn sink_metrics_are_exported_at_zero_from_start() {
    let (_, registry) = Metrics::new();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for outcome in ["written", "dropped", "error"] {
        let series = format!("mirror_sink_records_total{{outcome=\"{outcome}\"}} 0\n");
        assert!(text.contains(&series), "{series} missing in:\n{text}");
    }
    assert!(text.contains("mirror_sink_bytes_total 0\n"), "{text}");
}
