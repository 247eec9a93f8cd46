//! The `mirror run` daemon as a child process inside a namespace, with its metrics.

use std::{
    cell::RefCell,
    collections::{BTreeMap, VecDeque},
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Stdio},
    sync::mpsc,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{mirror_bin, netns::NetNs};

/// Where the daemon serves metrics inside its namespace.
pub const METRICS_ADDR: &str = "127.0.0.1:9477";

/// A running `mirror run`; SIGTERMed on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    namespace: String,
    /// Lines the daemon logged (stderr), collected in the background.
    pub log: mpsc::Receiver<String>,
    /// Lines logged before it served metrics, until [`Self::log_for`] takes them.
    early: RefCell<VecDeque<String>>,
}

impl Daemon {
    /// Starts `mirror run ARGS --metrics-addr 127.0.0.1:9477` in `ns` and waits until it serves
    /// metrics.
    pub fn start(ns: &NetNs, args: &[&str]) -> Self {
        Self::start_with_env(ns, args, &[])
    }

    /// [`Daemon::start`] with more environment variables (e.g. `NODE_NAME`, which names the
    /// daemon in the replay marker).
    pub fn start_with_env(ns: &NetNs, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = ns
            .command(mirror_bin())
            .arg("run")
            .args(args)
            .args(["--metrics-addr", METRICS_ADDR])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mirror run");
        let (log_tx, log) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if log_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            match log.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("metrics at") => break,
                Ok(line) => seen.push(line),
                Err(_) => panic!("mirror run did not start; it said:\n{}", seen.join("\n")),
            }
        }
        Self {
            child,
            namespace: ns.name.clone(),
            log,
            early: RefCell::new(seen.into()),
        }
    }

    /// Process id (for memory measurements).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Peak resident set size in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        // `ip netns exec` execs the daemon, so the child's pid is the daemon's.
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("daemon /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"))
    }

    /// User plus system CPU seconds the daemon used so far, from /proc.
    pub fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(self.pid())
    }

    /// The raw `/metrics` text.
    pub fn metrics_text(&self) -> String {
        let path = format!("/var/run/netns/{}", self.namespace);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let mut stream = TcpStream::connect(METRICS_ADDR).expect("connect to metrics");
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
                .expect("request metrics");
            let mut response = String::new();
            stream.read_to_string(&mut response).expect("read metrics");
            let (_, body) = response.split_once("\r\n\r\n").expect("http response");
            body.to_owned()
        })
        .join()
        .expect("metrics thread")
    }

    /// Parsed metrics.
    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&self.metrics_text())
    }

    /// Sends `signal` (e.g. SIGHUP to reload the configuration).
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal the daemon");
    }

    /// Waits up to `timeout` for a log line containing `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the daemon did not log {needle:?} within {timeout:?}"),
            }
        }
    }

    /// Every line logged during the next `wait`, after those of start-up not taken yet.
    pub fn log_for(&self, wait: Duration) -> Vec<String> {
        let mut lines: Vec<String> = self.early.borrow_mut().drain(..).collect();
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => return lines,
            }
        }
    }

    /// SIGKILL and wait: no chance to clean up.
    pub fn kill(mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL).expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; panics unless the exit is clean.
    pub fn stop(mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        let status = self.child.wait().expect("wait for mirror run");
        assert!(status.success(), "mirror run exited with {status}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Samples of a metrics exposition: `name{labels}` -> value.
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples: BTreeMap<String, f64>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                Some((key.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self { samples }
    }

    /// Sum of every sample of `name` whose labels contain all of `labels` (`key="value"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(key, _)| {
                let (metric, rest) = key.split_once('{').unwrap_or((key.as_str(), ""));
                metric == name && labels.iter().all(|label| rest.contains(label))
            })
            .map(|(_, value)| value)
            .sum::<f64>()
            // An empty f64 sum is -0.0; report it as 0.
            + 0.0
    }

    /// Whether a sample of `name` whose labels contain all of `labels` exists (whatever its
    /// value).
    pub fn has(&self, name: &str, labels: &[&str]) -> bool {
        self.series(name)
            .iter()
            .any(|(rest, _)| labels.iter().all(|label| rest.contains(label)))
    }

    /// Every sample of `name` as (its labels without the braces, value).
    pub fn series(&self, name: &str) -> Vec<(String, f64)> {
        self.samples
            .iter()
            .filter_map(|(key, value)| {
                let (metric, rest) = key.split_once('{').unwrap_or((key.as_str(), "}"));
                (metric == name).then(|| (rest.trim_end_matches('}').to_owned(), *value))
            })
            .collect()
    }

    /// `label=value` pairs of `name` summed per value of `label` (e.g. per `reason`), sorted:
    /// for printing a family's breakdown.
    pub fn by_label(&self, name: &str, label: &str) -> Vec<(String, f64)> {
        let prefix = format!("{label}=\"");
        let mut totals: BTreeMap<String, f64> = BTreeMap::new();
        for (labels, value) in self.series(name) {
            let value_of = labels
                .split(&prefix)
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_owned();
            *totals.entry(value_of).or_default() += value;
        }
        totals.into_iter().collect()
    }

    /// Cumulative bucket counts `(le seconds, count)` of histogram `name` (`+Inf` last) for the
    /// samples whose labels contain `label`, summed over the other labels, sorted by bound.
    pub fn buckets(&self, name: &str, label: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{");
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for (key, count) in &self.samples {
            let Some(labels) = key.strip_prefix(&prefix) else {
                continue;
            };
            let le = labels
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .and_then(|le| le.parse::<f64>().ok());
            let Some(le) = le.filter(|_| labels.contains(label)) else {
                continue;
            };
            match buckets.iter_mut().find(|(bound, _)| *bound == le) {
                Some(bucket) => bucket.1 += count,
                None => buckets.push((le, *count)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

/// CPU seconds (user + system) that process `pid` has used so far.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / clock_ticks_per_second()
}

/// The kernel's clock tick rate (`/proc` CPU times are in these ticks).
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}
