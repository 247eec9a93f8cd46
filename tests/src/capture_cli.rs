//! `mirror capture` (the binary) as a child process inside a namespace, and its exchange lines.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    sync::mpsc,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{mirror_bin, netns::Topology};

/// A running `mirror capture` on the server's interface; SIGKILLed on drop unless stopped.
#[derive(Debug)]
pub struct CaptureCli {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl CaptureCli {
    /// Starts `mirror capture -i <server interface> -p <port>` in the server namespace and waits
    /// until it captures.
    pub fn start(topology: &Topology, port: u16) -> Self {
        Self::start_with(topology, port, &[])
    }

    /// [`Self::start`] with more arguments (e.g. `--segments`).
    pub fn start_with(topology: &Topology, port: u16, extra: &[&str]) -> Self {
        let mut child = topology
            .server
            .command(mirror_bin())
            .args([
                "capture",
                "-i",
                &topology.server_if,
                "-p",
                &port.to_string(),
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mirror capture");
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut stderr_lines = stderr.lines();
        loop {
            let line = stderr_lines
                .next()
                .expect("mirror capture exited before capturing")
                .expect("stderr");
            if line.contains("capturing") {
                break;
            }
        }
        std::thread::spawn(move || for _ in stderr_lines {});
        let (lines_tx, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// SIGINT, waits for a clean exit, and returns every line it printed on stdout.
    pub fn stop(mut self) -> Vec<String> {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).expect("SIGINT");
        assert!(
            self.child
                .wait()
                .expect("wait for mirror capture")
                .success(),
            "mirror capture exited with an error"
        );
        // The reader thread ends with stdout; collect until then.
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(std::time::Duration::from_secs(5)) {
            lines.push(line);
        }
        lines
    }
}

impl Drop for CaptureCli {
    fn drop(&mut self) {
        // Already reaped when stopped: the kill then fails harmlessly.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One exchange line: `time client > server METHOD host target status latency
/// [unpaired:REASON]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub client: String,
    pub method: String,
    pub host: String,
    pub target: String,
    pub status: u16,
    /// `None` for an unpaired response (printed as `-`).
    pub latency_ms: Option<f64>,
    pub unpaired: Option<String>,
}

/// Parses an exchange line; panics on anything else.
pub fn parse(line: &str) -> Line {
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(
        fields.len() == 9 || fields.len() == 10,
        "unexpected line {line:?}"
    );
    assert_eq!(fields[2], ">");
    Line {
        client: fields[1].to_owned(),
        method: fields[4].to_owned(),
        host: fields[5].to_owned(),
        target: fields[6].to_owned(),
        status: fields[7].parse().expect("status"),
        latency_ms: fields[8]
            .strip_suffix("ms")
            .map(|ms| ms.parse().expect("latency")),
        unpaired: fields.get(9).map(|field| {
            field
                .strip_prefix("unpaired:")
                .expect("unpaired")
                .to_owned()
        }),
    }
}
