//! The recording HTTP server (Python's http.server, `fixtures/recording_server.py`) run inside a
//! namespace, and the per-connection recordings it leaves behind.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Stdio},
};

use crate::{fixtures_dir, netns::NetNs, unique_name};

/// What the server read from and wrote to one client connection.
#[derive(Debug, Default)]
pub struct Recording {
    pub request: Vec<u8>,
    pub response: Vec<u8>,
    /// Every write succeeded, so `response` is exactly what went on the wire.
    pub complete: bool,
}

/// A running recording server; killed and its directory removed on drop.
#[derive(Debug)]
pub struct RecordingServer {
    child: Child,
    pub dir: PathBuf,
}

/// How the recording server behaves.
#[derive(Clone, Copy, Debug, Default)]
pub enum Behaviour {
    #[default]
    Normal,
    /// Every reply waits this long.
    Slow(std::time::Duration),
    /// Every connection is answered with a TCP reset.
    Reset,
    /// Every Nth POST that comes on a reused connection (one that already carried an answered
    /// request) is read whole and left unanswered: the server closes the connection.
    HangUpOnReusedPost(u32),
}

impl RecordingServer {
    pub fn start(ns: &NetNs, bind: &str, port: u16) -> Self {
        Self::start_with(ns, bind, port, Behaviour::Normal)
    }

    pub fn start_with(ns: &NetNs, bind: &str, port: u16, behaviour: Behaviour) -> Self {
        let dir = std::env::temp_dir().join(unique_name("mirror-rec-"));
        std::fs::create_dir_all(&dir).expect("create recordings dir");
        let mut command = ns.command("python3");
        command
            .arg(fixtures_dir().join("recording_server.py"))
            .args(["--bind", bind, "--port", &port.to_string(), "--dir"])
            .arg(&dir);
        match behaviour {
            Behaviour::Normal => {}
            Behaviour::Slow(delay) => {
                command.args(["--delay-ms", &delay.as_millis().to_string()]);
            }
            Behaviour::Reset => {
                command.arg("--reset");
            }
            Behaviour::HangUpOnReusedPost(every) => {
                command.args(["--hang-up-every", &every.to_string()]);
            }
        }
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting python3 recording server");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("reading server readiness");
        assert_eq!(ready.trim(), "ready", "recording server did not start");
        Self { child, dir }
    }

    /// Recordings by client port. Panics if a port was used by two connections: the comparison
    /// with captured flows would be ambiguous.
    pub fn recordings(&self) -> BTreeMap<u16, Recording> {
        let (recordings, reused) = load(&self.dir);
        assert!(
            reused.is_empty(),
            "client ports reused within one test ({reused:?}): recordings are ambiguous"
        );
        recordings
    }

    /// What the server read on every connection, client ports used twice included (replays
    /// from two hosts may share a port number): for counting requests, not for pairing them
    /// with captured flows.
    pub fn request_streams(&self) -> Vec<Vec<u8>> {
        let mut streams = Vec::new();
        for entry in std::fs::read_dir(&self.dir).expect("read recordings dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|extension| extension == "req") {
                streams.push(std::fs::read(&path).expect("read .req"));
            }
        }
        streams
    }

    /// Recordings of client ports used by exactly one connection, and the ports used by more
    /// (the kernel's port selection is randomised, so a long run may reuse a few; which
    /// connection is which is then ambiguous, so they are left out of comparisons).
    pub fn recordings_and_reused_ports(&self) -> (BTreeMap<u16, Recording>, BTreeSet<u16>) {
        let (mut recordings, reused) = load(&self.dir);
        recordings.retain(|port, _| !reused.contains(port));
        (recordings, reused)
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn load(dir: &Path) -> (BTreeMap<u16, Recording>, BTreeSet<u16>) {
    let mut recordings = BTreeMap::new();
    let mut reused = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("read recordings dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((port, kind)) = name.split_once('.') else {
            continue;
        };
        let port: u16 = port.parse().expect("recording named by port");
        if name.contains(".dup") {
            reused.insert(port);
            continue;
        }
        let recording: &mut Recording = recordings.entry(port).or_default();
        match kind {
            "req" => recording.request = std::fs::read(&path).expect("read .req"),
            "resp" => recording.response = std::fs::read(&path).expect("read .resp"),
            "done" => recording.complete = true,
            _ => {}
        }
    }
    (recordings, reused)
}

impl RecordingServer {
    /// Waits until no new connection has been saved for `quiet` (handlers save when their
    /// connection ends), at most `limit`.
    pub fn settle(&self, quiet: std::time::Duration, limit: std::time::Duration) {
        let start = std::time::Instant::now();
        let mut last = usize::MAX;
        let mut since = std::time::Instant::now();
        while start.elapsed() < limit {
            let count = std::fs::read_dir(&self.dir).map_or(0, Iterator::count);
            if count != last {
                last = count;
                since = std::time::Instant::now();
            } else if since.elapsed() >= quiet {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
