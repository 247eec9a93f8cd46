//! Primary impact, cost and completeness of `mirror run`, printed as Markdown (run by
//! `cargo xtask bench`, as root).
//!
//! One topology: nginx as the primary in the server namespace, wrk (or a paced client) in the
//! client namespace, shadows in the client namespace reached through the captured veth: nginx
//! (fast), nginx with `echo_sleep 0.2` (200 ms), or nothing listening (dead). Modes run in
//! interleaved rounds and ratios are taken between runs of the same round (adjacent in time),
//! then the median over rounds is reported: this machine drifts by +-15% between runs.
//!
//! Tables: primary impact at saturation (wrk, keep-alive), coupling at a fixed rate below
//! saturation (paced client), cost with the sampled share (wrk, short connections),
//! completeness at fixed rates. During paced runs the client's threads are pinned to one CPU
//! and the primary to another, so that wake-up placement does not decide its latency.
//!
//! Usage: `mirror-bench [--rounds N] [--seconds S] [--completeness-seconds S] [--chart PATH]`
//! (`--completeness-seconds 0` skips the fixed-rate runs; `--only TEXT` keeps the baseline and the
//! modes whose label contains TEXT, for profiling one mode; `--tables impact,coupling,scaling`
//! runs only the named tables; `--completeness-rates 10000,10000:8192` runs the fixed-rate
//! completeness at those rates, `RATE:QUEUE` with that `queue` key, instead of
//! [`DEFAULT_COMPLETENESS_RUNS`].) Environment:
//! `MIRROR_BENCH_CAPTURE` and `MIRROR_BENCH_TARGET` add lines to the daemon's `[capture]` and
//! `[[target]]` sections (e.g. `MIRROR_BENCH_TARGET='queue = 8192'`).

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use mirror::netns::{CLIENT_ADDR, NetNs, SERVER_ADDR, Topology, unique_name};
use mirror_tests::daemon::{Daemon, Metrics, clock_ticks_per_second, process_cpu_seconds};

const PORT: u16 = 8080;
const FAST_PORT: u16 = 8080;
const SLOW_PORT: u16 = 8081;
const DEAD_PORT: u16 = 8082;

/// How the load reaches the primary.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Load {
    /// wrk's 32 keep-alive connections to the primary.
    KeepAlive,
    /// wrk with `Connection: close`: a new connection per request.
    Close,
    /// wrk's keep-alive connections to nginx's `mirror` module in front of the primary.
    NginxMirror,
    /// The paced client at a fixed rate on keep-alive connections: a load below saturation,
    /// so the primary's latency shows coupling rather than CPU shared at saturation.
    FixedRate,
    /// The same paced load through nginx's `mirror` module.
    FixedRateNginxMirror,
}

/// Offered rate of the fixed-rate runs as a share of what the primary serves at saturation
/// (measured just before): a busy production pod rather than a load test, on any machine.
const FIXED_RATE_SHARE: f64 = 0.2;
/// What the paced client sends: one request per write (TCP_NODELAY), so per packet.
const PACED_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
/// Keep-alive connections of the paced client.
const PACED_CONNECTIONS: u64 = 50;

/// One measured configuration.
#[derive(Clone, Copy, Debug)]
struct Mode {
    label: &'static str,
    load: Load,
    /// Shadow port, sampling percent, sampled by connection; `None`: no mirror daemon.
    daemon: Option<(u16, &'static str, bool)>,
}

const fn mode(label: &'static str, load: Load, daemon: Option<(u16, &'static str, bool)>) -> Mode {
    Mode {
        label,
        load,
        daemon,
    }
}

/// Primary impact under keep-alive load. Index 0 is the baseline, 1 the fast shadow.
const IMPACT: [Mode; 8] = [
    mode("no mirror", Load::KeepAlive, None),
    mode(
        "mirror 100%, fast shadow",
        Load::KeepAlive,
        Some((FAST_PORT, "100", false)),
    ),
    mode(
        "mirror 10%, fast shadow",
        Load::KeepAlive,
        Some((FAST_PORT, "10", false)),
    ),
    mode(
        "mirror 10% of connections (in-kernel), fast shadow",
        Load::KeepAlive,
        Some((FAST_PORT, "10", true)),
    ),
    // The classifier's own cost: attached and parsing, every connection sampled out in the
    // kernel, nothing reaches the ring buffer.
    mode(
        "classifier only (0% of connections)",
        Load::KeepAlive,
        Some((FAST_PORT, "0", true)),
    ),
    mode(
        "mirror 100%, 200 ms shadow",
        Load::KeepAlive,
        Some((SLOW_PORT, "100", false)),
    ),
    mode(
        "mirror 100%, dead shadow",
        Load::KeepAlive,
        Some((DEAD_PORT, "100", false)),
    ),
    mode(
        "nginx `mirror` module, 200 ms shadow",
        Load::NginxMirror,
        None,
    ),
];

/// Coupling at a fixed offered rate, below saturation. Index 0 is the baseline, 1 the fast
/// shadow.
const COUPLING: [Mode; 6] = [
    mode("no mirror", Load::FixedRate, None),
    mode(
        "mirror 100%, fast shadow",
        Load::FixedRate,
        Some((FAST_PORT, "100", false)),
    ),
    mode(
        "classifier only (0% of connections)",
        Load::FixedRate,
        Some((FAST_PORT, "0", true)),
    ),
    mode(
        "mirror 100%, 200 ms shadow",
        Load::FixedRate,
        Some((SLOW_PORT, "100", false)),
    ),
    mode(
        "mirror 100%, dead shadow",
        Load::FixedRate,
        Some((DEAD_PORT, "100", false)),
    ),
    mode(
        "nginx `mirror` module, 200 ms shadow",
        Load::FixedRateNginxMirror,
        None,
    ),
];

/// Cost scaling with the sampled share, under short connections (so 1% of connections is a
/// meaningful sample). Index 0 is the baseline.
const SCALING: [Mode; 5] = [
    mode("no mirror (short connections)", Load::Close, None),
    mode(
        "classifier only (0% of connections)",
        Load::Close,
        Some((FAST_PORT, "0", true)),
    ),
    mode(
        "mirror 100% of requests",
        Load::Close,
        Some((FAST_PORT, "100", false)),
    ),
    mode(
        "mirror 10% of requests",
        Load::Close,
        Some((FAST_PORT, "10", false)),
    ),
    mode(
        "mirror 1% of connections (in-kernel)",
        Load::Close,
        Some((FAST_PORT, "1", true)),
    ),
];

/// Front nginx port: `mirror` module in front of the primary.
const FRONT_PORT: u16 = 8088;

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx serving a small page on `addr:port` (and a 200 ms location on `slow_port`), from a
/// config of its own in a temporary directory.
fn nginx(ns: &NetNs, addr: &str, ports: &[(u16, bool)], extra: &str) -> (Guard, PathBuf) {
    let dir = std::env::temp_dir().join(unique_name("mirror-nginx-"));
    std::fs::create_dir_all(dir.join("html")).expect("nginx dir");
    std::fs::write(dir.join("html/index.html"), "x".repeat(600)).expect("page");
    let servers: String = ports
        .iter()
        .map(|(port, slow)| {
            let location = if *slow {
                "location / { echo_sleep 0.2; echo \"slow\"; }"
            } else {
                "location / { try_files $uri /index.html; }"
            };
            format!(
                "server {{ listen {addr}:{port} reuseport backlog=4096; root {}/html; access_log off; {location} }}\n",
                dir.display()
            )
        })
        .collect();
    let config = format!(
        "load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;\n\
         daemon off; master_process off; worker_processes 1; pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ keepalive_requests 1000000; {servers} {extra} }}\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), config).expect("nginx.conf");
    let child = ns
        .command("nginx")
        .args(["-c"])
        .arg(dir.join("nginx.conf"))
        .args(["-p"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx (Debian packages nginx, libnginx-mod-http-echo)");
    std::thread::sleep(Duration::from_millis(300));
    (Guard(child), dir)
}

/// Starts `mirror run` in the server namespace with one target on the primary's port.
fn start_daemon(
    topology: &Topology,
    shadow_port: u16,
    sample: &str,
    by_connection: bool,
) -> Daemon {
    start_daemon_with(topology, shadow_port, sample, by_connection, "")
}

/// [`start_daemon`] with `target_lines` added to the `[[target]]` section.
fn start_daemon_with(
    topology: &Topology,
    shadow_port: u16,
    sample: &str,
    by_connection: bool,
    target_lines: &str,
) -> Daemon {
    let shadow = format!("http://{CLIENT_ADDR}:{shadow_port}");
    let config = std::env::temp_dir().join(unique_name("mirror-bench-conf-"));
    let sample_by = if by_connection {
        "connection"
    } else {
        "request"
    };
    std::fs::write(
        &config,
        format!(
            "[capture]\ninterfaces = [\"{}\"]\n{}\n\n[[target]]\nname = \"bench\"\nport = {PORT}\nshadow = \"{shadow}\"\nsample_percent = {sample}.0\nsample_by = \"{sample_by}\"\n{}\n{target_lines}\n",
            topology.server_if,
            std::env::var("MIRROR_BENCH_CAPTURE").unwrap_or_default(),
            std::env::var("MIRROR_BENCH_TARGET").unwrap_or_default()
        ),
    )
    .expect("bench config");
    Daemon::start(
        &topology.server,
        &["--config", config.to_str().expect("utf-8 path")],
    )
}

/// Time of all CPUs so far, in clock ticks, from the first line of `/proc/stat`.
#[derive(Clone, Copy)]
struct MachineTicks {
    /// Idle, including iowait.
    idle: f64,
    /// In softirq (the network stack's receive path; tick-sampled unless the kernel accounts
    /// IRQ time precisely).
    softirq: f64,
    /// Taken by the hypervisor for other guests: a run with much of it measured a slower
    /// machine, not the daemon.
    steal: f64,
    total: f64,
}

fn machine_ticks() -> MachineTicks {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let values: Vec<f64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .expect("/proc/stat cpu line")
        .split_whitespace()
        .filter_map(|value| value.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    MachineTicks {
        idle: values[3] + values[4],
        softirq: values[6],
        steal: values[7],
        total: values.iter().take(8).sum(),
    }
}

fn peak_rss_mib(daemon: &Daemon) -> f64 {
    daemon.peak_rss_kib() as f64 / 1024.0
}

/// An SVG chart of the primary's and the shadow's latency distributions (cumulative share of
/// responses at or below each histogram bound, log-scaled time axis).
fn latency_chart(metrics: &Metrics, title: &str) -> String {
    let (width, height, left, bottom, top, right) = (760.0, 380.0, 70.0, 50.0, 40.0, 20.0);
    let (min_s, max_s) = (1e-4_f64, 1.0_f64);
    let x = |seconds: f64| {
        left + (seconds.clamp(min_s, max_s).log10() - min_s.log10())
            / (max_s.log10() - min_s.log10())
            * (width - left - right)
    };
    let y = |share: f64| top + (1.0 - share) * (height - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"14\">{title}</text>\n"
    );
    for decade in [1e-4, 1e-3, 1e-2, 1e-1, 1.0] {
        let label = if decade < 1e-3 {
            format!("{} us", decade * 1e6)
        } else if decade < 1.0 {
            format!("{} ms", decade * 1e3)
        } else {
            "1 s".to_owned()
        };
        svg += &format!(
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{label}</text>\n",
            x(decade),
            height - bottom,
            height - bottom + 18.0
        );
    }
    for share in [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] {
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/><text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{4}%</text>\n",
            y(share),
            width - right,
            left - 6.0,
            y(share) + 4.0,
            share * 100.0
        );
    }
    svg += &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">last request byte to first response byte</text>\n",
        (width + left) / 2.0,
        height - 8.0
    );
    for (index, (role, color)) in [("primary", "#1f77b4"), ("shadow", "#ff7f0e")]
        .iter()
        .enumerate()
    {
        let buckets = metrics.buckets(
            "mirror_response_duration_seconds",
            &format!("role=\"{role}\""),
        );
        let total = buckets.last().map_or(0.0, |(_, count)| *count).max(1.0);
        let points: Vec<String> = buckets
            .iter()
            .filter(|(le, _)| le.is_finite())
            .map(|(le, count)| format!("{:.1},{:.1}", x(*le), y(count / total)))
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{role} ({total:.0} timed responses)</text>\n",
            points.join(" "),
            left + 12.0,
            top + 18.0 + 16.0 * index as f64
        );
    }
    svg + "</svg>\n"
}

/// The long-lived processes of the topology, by PID.
#[derive(Clone, Copy)]
struct Processes {
    /// nginx serving the primary (and the front server with nginx's `mirror` module).
    primary: u32,
    /// nginx serving the fast and the 200 ms shadows.
    shadows: u32,
}

/// CPU the paced client's threads run on; the primary runs on [`PRIMARY_CPU`] meanwhile.
const CLIENT_CPU: usize = 0;
const PRIMARY_CPU: usize = 1;

/// Restricts thread or process `pid` (0: the calling thread) to `cpus`.
fn set_affinity(pid: u32, cpus: &[usize]) {
    let mut set = nix::sched::CpuSet::new();
    for cpu in cpus {
        set.set(*cpu).expect("CPU index");
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid as i32), &set)
        .expect("sched_setaffinity");
}

/// Every CPU of the machine.
fn all_cpus() -> Vec<usize> {
    (0..std::thread::available_parallelism().map_or(1, usize::from)).collect()
}

/// One run of one mode: wrk's figures, where the machine's time went and, when the daemon ran,
/// (CPU seconds, peak RSS MiB, replays answered by the shadow).
struct Run {
    wrk: WrkResult,
    shares: Shares,
    cost: Option<(f64, f64, f64)>,
}

/// Shares of the machine's CPU time (all cores) during one run: what the shadows and the daemon
/// take away from the primary on the shared cores, and the time no one used.
#[derive(Clone, Copy)]
struct Shares {
    daemon: f64,
    shadow: f64,
    softirq: f64,
    idle: f64,
    steal: f64,
}

struct WrkResult {
    seconds: f64,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse_duration_ms(text: &str) -> f64 {
    let (number, unit) =
        text.split_at(text.find(|c: char| c.is_alphabetic()).unwrap_or(text.len()));
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        _ => f64::NAN,
    }
}

fn wrk(client: &NetNs, seconds: u64, load: Load) -> WrkResult {
    let mut command = client.command("wrk");
    command.args([
        "-t",
        "2",
        "-c",
        "32",
        "-d",
        &format!("{seconds}s"),
        "--latency",
    ]);
    let port = match load {
        Load::KeepAlive => PORT,
        Load::Close => {
            command.args(["-H", "Connection: close"]);
            PORT
        }
        Load::NginxMirror => FRONT_PORT,
        Load::FixedRate | Load::FixedRateNginxMirror => unreachable!("paced loads do not use wrk"),
    };
    let output = command
        .arg(format!("http://{SERVER_ADDR}:{port}/"))
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|line| {
                line.trim()
                    .strip_prefix(prefix)
                    .map(str::trim)
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    };
    WrkResult {
        seconds: seconds as f64,
        requests_per_second: field("Requests/sec:").parse().unwrap_or(f64::NAN),
        p50_ms: parse_duration_ms(&field("50%")),
        p99_ms: parse_duration_ms(&field("99%")),
    }
}

/// One run of `load` against the primary (or nginx's `mirror` module in front of it).
/// `fixed_rate`: requests per second of the paced loads.
fn measure(
    client: &NetNs,
    processes: Processes,
    seconds: u64,
    load: Load,
    fixed_rate: u64,
) -> WrkResult {
    let port = match load {
        Load::FixedRate => PORT,
        Load::FixedRateNginxMirror => FRONT_PORT,
        Load::KeepAlive | Load::Close | Load::NginxMirror => return wrk(client, seconds, load),
    };
    let paced = paced(
        client,
        processes,
        port,
        fixed_rate,
        seconds,
        PACED_CONNECTIONS,
    );
    WrkResult {
        seconds: seconds as f64,
        requests_per_second: paced.served as f64 / seconds as f64,
        p50_ms: paced.latency_ms(0.50),
        p99_ms: paced.latency_ms(0.99),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// What the paced client saw.
#[derive(Default)]
struct Paced {
    served: u64,
    sent: u64,
    /// Per response, microseconds from the request's write to the response's last byte. (Not
    /// from the scheduled send time, which would add the sleep's wake-up delay; a stalled
    /// primary shows in the served rate instead: each connection waits for its response
    /// before the next request.)
    latencies_us: Vec<u32>,
}

impl Paced {
    fn latency_ms(&self, quantile: f64) -> f64 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let Some(last) = sorted.len().checked_sub(1) else {
            return f64::NAN;
        };
        f64::from(sorted[(last as f64 * quantile).round() as usize]) / 1000.0
    }
}

/// A paced client: `connections` keep-alive connections to `port` together sending `rate`
/// requests per second for `seconds`, each connection waiting for a response before its next
/// request. One thread per connection sleeping to absolute send times, the connections'
/// schedules staggered across the period: arrivals spread like independent clients' rather
/// than in synchronised bursts (an async timer's 1 ms ticks would send every connection's
/// request at once and measure the queue of the burst).
fn paced(
    client: &NetNs,
    processes: Processes,
    port: u16,
    rate: u64,
    seconds: u64,
    connections: u64,
) -> Paced {
    // Below saturation the primary's latency is mostly wake-ups, and unpinned it depends on
    // where the scheduler puts the client and the primary: on one CPU or two, the no-mirror P50
    // moved between about 27 and 55 us from run to run here. Pinned to different CPUs (a
    // remote client's wake-up path), runs compare; the daemon and the shadows stay unpinned.
    // The client's threads pin themselves (`paced_connection`).
    set_affinity(processes.primary, &[PRIMARY_CPU]);
    let total = client
        .spawn(move || {
            let period = Duration::from_secs_f64(connections as f64 / rate as f64);
            let start = Instant::now() + Duration::from_millis(100);
            let deadline = start + Duration::from_secs(seconds);
            let threads: Vec<_> = (0..connections)
                .map(|index| {
                    let first = start + period.mul_f64(index as f64 / connections as f64);
                    std::thread::spawn(move || paced_connection(port, first, period, deadline))
                })
                .collect();
            let mut total = Paced::default();
            for thread in threads {
                let mut one = thread.join().expect("client connection");
                total.served += one.served;
                total.sent += one.sent;
                total.latencies_us.append(&mut one.latencies_us);
            }
            total
        })
        .join()
        .expect("paced client")
        .expect("client namespace");
    set_affinity(processes.primary, &all_cpus());
    total
}

/// One connection of [`paced`]: a request at `first`, then one every `period` until `deadline`
/// (a late response delays the next sends, which then catch up; a primary slower than the
/// period stops at the deadline all the same).
fn paced_connection(port: u16, first: Instant, period: Duration, deadline: Instant) -> Paced {
    use std::io::{Read, Write};
    set_affinity(0, &[CLIENT_CPU]);
    let mut stream = std::net::TcpStream::connect((SERVER_ADDR, port)).expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let request = PACED_REQUEST;
    let mut buffer = vec![0u8; 4096];
    let mut result = Paced::default();
    let mut next = first;
    while next < deadline && Instant::now() < deadline {
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        next += period;
        let written = Instant::now();
        stream.write_all(request).expect("write");
        result.sent += 1;
        // nginx's reply to this page fits one read in practice; count bytes to be sure one
        // whole response arrived.
        let mut got = 0;
        let mut expected = usize::MAX;
        while got < expected {
            let n = stream.read(&mut buffer[got..]).expect("read");
            assert!(n > 0, "primary closed the connection");
            got += n;
            if let Some(end) = buffer[..got].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..end]);
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                expected = end + 4 + length;
            }
        }
        result.served += 1;
        let latency = written.elapsed().as_micros();
        result
            .latencies_us
            .push(u32::try_from(latency).unwrap_or(u32::MAX));
    }
    result
}

fn arg(name: &str, default: u64) -> u64 {
    text_arg(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value following `name` on the command line.
fn text_arg(name: &str) -> Option<String> {
    let mut args = std::env::args().skip_while(|a| a != name);
    args.next().and(args.next())
}

/// `--chart PATH`: where to write the latency chart (SVG) of the 10k req/s run.
fn chart_path() -> Option<PathBuf> {
    text_arg("--chart").map(PathBuf::from)
}

/// `--tables LIST`: whether the table `name` is among the comma-separated LIST (default: all).
fn table_selected(name: &str) -> bool {
    text_arg("--tables").is_none_or(|list| list.split(',').any(|table| table == name))
}

/// `--only TEXT`: keep the baseline (index 0) and the modes whose label contains TEXT.
fn selected(modes: &[Mode]) -> Vec<Mode> {
    let only = text_arg("--only");
    modes
        .iter()
        .enumerate()
        .filter(|(index, mode)| {
            *index == 0 || only.as_deref().is_none_or(|text| mode.label.contains(text))
        })
        .map(|(_, mode)| *mode)
        .collect()
}

fn cleanup(dirs: &[&Path]) {
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "mirror-bench needs root (BPF, network namespaces)"
    );
    let rounds = arg("--rounds", 3);
    let seconds = arg("--seconds", 5);
    let completeness_seconds = arg("--completeness-seconds", 30);

    let topology = Topology::create().expect("namespaces");
    // Short-connection runs open tens of thousands of connections per run: a wide ephemeral
    // range (above the target ports) and TIME_WAIT reuse keep the client from running out of
    // ports, which would measure the port allocator instead of the mirror.
    for (ns, settings) in [
        (
            &topology.client,
            &[
                "net.ipv4.ip_local_port_range=10000 65000",
                "net.ipv4.tcp_tw_reuse=1",
            ][..],
        ),
        (&topology.server, &["net.ipv4.tcp_tw_reuse=1"][..]),
    ] {
        for setting in settings {
            let status = ns
                .command("sysctl")
                .args(["-q", "-w", setting])
                .status()
                .expect("sysctl");
            assert!(status.success(), "sysctl {setting}");
        }
    }
    // The front server: nginx's own `mirror` module, the slow shadow as mirror target.
    let front = format!(
        "server {{ listen {SERVER_ADDR}:{FRONT_PORT} reuseport backlog=4096; access_log off; \
         location / {{ mirror /mirror; proxy_pass http://{SERVER_ADDR}:{PORT}; }} \
         location = /mirror {{ internal; proxy_pass http://{CLIENT_ADDR}:{SLOW_PORT}$request_uri; }} }}"
    );
    let (primary, primary_dir) = nginx(&topology.server, SERVER_ADDR, &[(PORT, false)], &front);
    let (shadows, shadow_dir) = nginx(
        &topology.client,
        CLIENT_ADDR,
        &[(FAST_PORT, false), (SLOW_PORT, true)],
        "",
    );
    let processes = Processes {
        primary: primary.0.id(),
        shadows: shadows.0.id(),
    };

    // The fixed rate follows this machine: a share of what the primary serves at saturation.
    let (saturation, fixed_rate) = if table_selected("coupling") {
        let saturation = wrk(&topology.client, seconds, Load::KeepAlive).requests_per_second;
        let rate = (saturation * FIXED_RATE_SHARE / 1000.0).floor().max(1.0) * 1000.0;
        (saturation, rate as u64)
    } else {
        (f64::NAN, 0)
    };
    let schedule = Schedule {
        rounds,
        seconds,
        fixed_rate,
    };
    let runs = |name: &str, modes: &[Mode], fast_shadow_second: bool, heading: &str| {
        if !table_selected(name) {
            return;
        }
        table(
            &topology,
            modes,
            processes,
            fast_shadow_second,
            heading,
            schedule,
        );
    };
    runs(
        "impact",
        &IMPACT,
        true,
        &format!(
            "### Primary impact (wrk -t2 -c32 keep-alive, {seconds} s per run, {rounds} interleaved rounds)"
        ),
    );
    let share = FIXED_RATE_SHARE * 100.0;
    runs(
        "coupling",
        &COUPLING,
        true,
        &format!(
            "\n### Coupling at a fixed rate ({fixed_rate} req/s, {share:.0}% of the {saturation:.0} req/s the primary served at saturation just before, offered by a paced client on {PACED_CONNECTIONS} keep-alive connections, latency from each request's write to its response's last byte, {seconds} s per run, {rounds} interleaved rounds)"
        ),
    );
    runs(
        "scaling",
        &SCALING,
        false,
        &format!(
            "\n### Cost with the sampled share (wrk -t2 -c32 with `Connection: close`, {seconds} s per run, {rounds} interleaved rounds)"
        ),
    );

    let chart = chart_path();
    let runs: Vec<CompletenessRun> = if completeness_seconds == 0 {
        Vec::new()
    } else {
        text_arg("--completeness-rates")
            .as_deref()
            .unwrap_or(DEFAULT_COMPLETENESS_RUNS)
            .split(',')
            .map(CompletenessRun::parse)
            .collect()
    };
    for run in &runs {
        // The chart comes from the 10k req/s run with the default queue.
        let chart = (run.rate == 10_000 && run.queue.is_none())
            .then_some(chart.as_deref())
            .flatten();
        completeness(&topology, processes, run, completeness_seconds, chart);
    }
    cleanup(&[&primary_dir, &shadow_dir]);
}

/// How long and how hard each table's runs go.
#[derive(Clone, Copy)]
struct Schedule {
    rounds: u64,
    /// Of each run.
    seconds: u64,
    /// Requests per second of the paced loads.
    fixed_rate: u64,
}

/// Runs the modes of `modes` that `--only` keeps in interleaved rounds and prints their table
/// under `heading`. With `fast_shadow_second`, mode 1 is the fast-shadow run that throughput is
/// also compared with.
fn table(
    topology: &Topology,
    modes: &[Mode],
    processes: Processes,
    fast_shadow_second: bool,
    heading: &str,
    schedule: Schedule,
) {
    let kept = selected(modes);
    let results = rounds_of(topology, &kept, processes, schedule);
    println!("{heading}\n");
    let fast = modes
        .get(1)
        .filter(|_| fast_shadow_second)
        .and_then(|fast| kept.iter().position(|mode| mode.label == fast.label));
    print_table(&kept, &results, fast);
}

/// Runs every mode once per round, in order, so ratios compare runs adjacent in time.
fn rounds_of(
    topology: &Topology,
    modes: &[Mode],
    processes: Processes,
    schedule: Schedule,
) -> Vec<Vec<Run>> {
    let Schedule {
        rounds,
        seconds,
        fixed_rate,
    } = schedule;
    let mut results = Vec::new();
    for round in 0..rounds {
        let mut row = Vec::new();
        for mode in modes {
            let daemon = mode.daemon.map(|(port, sample, by_connection)| {
                start_daemon(topology, port, sample, by_connection)
            });
            let cpu_before = daemon.as_ref().map(Daemon::cpu_seconds);
            let shadow_before = process_cpu_seconds(processes.shadows);
            let before = machine_ticks();
            let result = measure(&topology.client, processes, seconds, mode.load, fixed_rate);
            let after = machine_ticks();
            let machine_ticks = (after.total - before.total).max(1.0);
            let machine_seconds = machine_ticks / clock_ticks_per_second();
            let daemon_cpu = daemon.as_ref().map_or(0.0, |daemon| {
                daemon.cpu_seconds() - cpu_before.unwrap_or(0.0)
            });
            let shares = Shares {
                daemon: daemon_cpu / machine_seconds,
                shadow: (process_cpu_seconds(processes.shadows) - shadow_before) / machine_seconds,
                softirq: (after.softirq - before.softirq) / machine_ticks,
                idle: (after.idle - before.idle) / machine_ticks,
                steal: (after.steal - before.steal) / machine_ticks,
            };
            let cost = daemon.as_ref().map(|daemon| {
                let replayed = daemon
                    .metrics()
                    .sum("mirror_replays_total", &["outcome=\"ok\""]);
                (daemon_cpu, peak_rss_mib(daemon), replayed)
            });
            eprintln!(
                "round {round} {}: {:.0} req/s, P50 {:.3} ms, P99 {:.3} ms",
                mode.label, result.requests_per_second, result.p50_ms, result.p99_ms
            );
            row.push(Run {
                wrk: result,
                shares,
                cost,
            });
            drop(daemon);
        }
        results.push(row);
    }
    results
}

/// Medians over rounds; ratios per round against mode 0 (and `fast`), then their median.
/// Daemon CPU is per 100,000 requests the primary served in that run.
fn print_table(modes: &[Mode], results: &[Vec<Run>], fast: Option<usize>) {
    println!(
        "| mode | req/s | P50 ms | P99 ms | throughput / {} | throughput / fast shadow | P50 / {} | P50 - {} us | daemon CPU s per 100k requests | daemon peak RSS MiB | replayed ok / served | machine: daemon / shadow / softirq / idle / steal |",
        modes[0].label, modes[0].label, modes[0].label
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (index, mode) in modes.iter().enumerate() {
        let column = |f: &dyn Fn(&WrkResult) -> f64| {
            median(results.iter().map(|row| f(&row[index].wrk)).collect())
        };
        // The same pairing in absolute terms: what a ratio of a small latency hides or magnifies.
        let p50_difference_us = median(
            results
                .iter()
                .map(|row| (row[index].wrk.p50_ms - row[0].wrk.p50_ms) * 1000.0)
                .collect(),
        );
        let ratio = |base: usize, f: &dyn Fn(&WrkResult) -> f64| {
            median(
                results
                    .iter()
                    .map(|row| f(&row[index].wrk) / f(&row[base].wrk))
                    .collect(),
            )
        };
        // Median over rounds of a figure of the daemon's runs, given the requests served.
        let daemon_median = |figure: &dyn Fn((f64, f64, f64), f64) -> f64| {
            median(
                results
                    .iter()
                    .filter_map(|row| {
                        let run = &row[index];
                        let served = run.wrk.requests_per_second * run.wrk.seconds;
                        run.cost.map(|cost| figure(cost, served.max(1.0)))
                    })
                    .collect(),
            )
        };
        let per_100k = daemon_median(&|(cpu, _, _), served| cpu / served * 100_000.0);
        let rss = daemon_median(&|(_, rss, _), _| rss);
        // The share actually mirrored: with connection sampling it depends on which of wrk's
        // 32 connections the hash picks.
        let mirrored = daemon_median(&|(_, _, replayed), served| replayed / served * 100.0);
        let number = |value: f64, digits: usize| {
            if value.is_nan() {
                "-".to_owned()
            } else {
                format!("{value:.digits$}")
            }
        };
        let share = |f: &dyn Fn(&Shares) -> f64| {
            median(results.iter().map(|row| f(&row[index].shares)).collect()) * 100.0
        };
        println!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {:+.0} | {} | {} | {} | {:.1}% / {:.1}% / {:.1}% / {:.1}% / {:.1}% |",
            mode.label,
            column(&|r| r.requests_per_second),
            column(&|r| r.p50_ms),
            column(&|r| r.p99_ms),
            ratio(0, &|r| r.requests_per_second),
            fast.map_or_else(
                || "-".to_owned(),
                |fast| number(ratio(fast, &|r| r.requests_per_second), 3)
            ),
            ratio(0, &|r| r.p50_ms),
            p50_difference_us,
            number(per_100k, 2),
            number(rss, 1),
            if mirrored.is_nan() {
                "-".to_owned()
            } else {
                format!("{mirrored:.1}%")
            },
            share(&|shares| shares.daemon),
            share(&|shares| shares.shadow),
            share(&|shares| shares.softirq),
            share(&|shares| shares.idle),
            share(&|shares| shares.steal),
        );
    }
}

/// The fixed-rate completeness runs: each rate with the default replay queue, and 10k req/s
/// once more with a queue of one second of that rate. The shadow nginx shares the two cores
/// with the primary, the client and the daemon, and at times serves below 10k req/s for up to
/// a second; the default queue (1024) plus what the workers hold in flight rides out about
/// half of that, and the second run shows what sizing the queue to the rate (the advice in the
/// README) buys.
const DEFAULT_COMPLETENESS_RUNS: &str = "5000,10000,10000:10000,20000";

/// One fixed-rate completeness run: `RATE` or `RATE:QUEUE` on the command line.
struct CompletenessRun {
    rate: u64,
    /// The target's `queue` key; `None`: the default.
    queue: Option<u64>,
}

impl CompletenessRun {
    fn parse(text: &str) -> Self {
        let number = |part: &str| -> u64 {
            part.trim()
                .parse()
                .expect("--completeness-rates: RATE or RATE:QUEUE, comma-separated")
        };
        match text.split_once(':') {
            Some((rate, queue)) => Self {
                rate: number(rate),
                queue: Some(number(queue)),
            },
            None => Self {
                rate: number(text),
                queue: None,
            },
        }
    }
}

/// Completeness at a fixed rate, fast shadow, 100% sampling: every difference between what the
/// primary served and what reached the shadow must show in a counter.
fn completeness(
    topology: &Topology,
    processes: Processes,
    run: &CompletenessRun,
    seconds: u64,
    chart: Option<&Path>,
) {
    let rate = run.rate;
    let queue_line = run.queue.map(|queue| format!("queue = {queue}"));
    let daemon = start_daemon_with(
        topology,
        FAST_PORT,
        "100",
        false,
        queue_line.as_deref().unwrap_or_default(),
    );
    let cpu_before = daemon.cpu_seconds();
    let machine_before = machine_ticks();
    let Paced { served, sent, .. } = paced(
        &topology.client,
        processes,
        PORT,
        rate,
        seconds,
        PACED_CONNECTIONS,
    );
    let machine_after = machine_ticks();
    std::thread::sleep(Duration::from_secs(3));
    let cpu = daemon.cpu_seconds() - cpu_before;
    if let Some(path) = chart {
        let title = format!(
            "Latency distributions at {rate} req/s, 100% mirrored: primary (on the wire) vs shadow (replay connections)"
        );
        std::fs::write(path, latency_chart(&daemon.metrics(), &title)).expect("write chart");
    }
    let metrics = daemon.metrics();
    let metric = |name: &str, label: &str| {
        let labels: &[&str] = if label.is_empty() { &[] } else { &[label] };
        metrics.sum(name, labels)
    };
    let framed = metric("mirror_requests_total", "");
    let ok = metric("mirror_replays_total", "outcome=\"ok\"");
    let dropped = metric("mirror_replays_total", "outcome=\"dropped\"");
    let errors = metric("mirror_replays_total", "outcome=\"error\"");
    let timeouts = metric("mirror_replays_total", "outcome=\"timeout\"");
    let skipped = metric("mirror_requests_skipped_total", "");
    let lost = metric("mirror_requests_lost_total", "");
    let capture_drops = metric("mirror_capture_drops_total", "");
    let gaps = metric("mirror_tcp_gaps_total", "");
    let shed = metric("mirror_classifier_packets_total", "reason=\"shed\"");
    // Shed request packets are counted by their payload bytes; every request here is the same
    // and travels alone in its packet.
    let shed_requests = metric("mirror_capture_lost_bytes_total", "reason=\"shed_request\"")
        / PACED_REQUEST.len() as f64;
    let achieved = served as f64 / seconds as f64;
    println!(
        "\n### Completeness at {rate} req/s for {seconds} s (paced client, {PACED_CONNECTIONS} keep-alive connections, 100% sampling, fast shadow, {})\n",
        match run.queue {
            Some(queue) => format!("`queue = {queue}`"),
            None => "default queue of 1024".to_owned(),
        }
    );
    println!("| measure | value |\n|---|---:|");
    println!(
        "| requests sent / served by the primary | {sent} / {served} ({achieved:.0} req/s achieved) |"
    );
    println!("| requests framed by mirror | {framed} |");
    println!("| replayed ok | {ok} |");
    println!(
        "| **completeness** (replayed ok / served) | **{:.4}%** |",
        ok / served.max(1) as f64 * 100.0
    );
    println!(
        "| replays dropped (queue full) / error / timeout | {dropped} / {errors} / {timeouts} |"
    );
    println!("| requests skipped / lost in reassembly | {skipped} / {lost} |");
    println!("| capture drops (records) / TCP gaps | {capture_drops} / {gaps} |");
    println!(
        "| packets shed (the shadow could take no more) / requests among them (shed request bytes / {} B) | {shed} / {shed_requests} |",
        PACED_REQUEST.len()
    );
    println!(
        "| shortfall not in a counter (served - ok - dropped - error - timeout - skipped - lost - shed) | {} |",
        served as f64 - ok - dropped - errors - timeouts - skipped - lost - shed_requests
    );
    println!(
        "| daemon CPU | {cpu:.2} s ({:.2} s per 100k requests) |",
        cpu / framed.max(1.0) * 100_000.0
    );
    println!("| daemon peak RSS | {:.1} MiB |", peak_rss_mib(&daemon));
    let machine_ticks = (machine_after.total - machine_before.total).max(1.0);
    println!(
        "| machine CPU idle / taken by the hypervisor (steal) | {:.1}% / {:.1}% |",
        (machine_after.idle - machine_before.idle) / machine_ticks * 100.0,
        (machine_after.steal - machine_before.steal) / machine_ticks * 100.0
    );
}
