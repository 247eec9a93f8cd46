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
//! completeness at fixed rates; the verdict cost (daemon CPU with field-by-field comparison
//! against digests only, 1 and 3 shadows, 1 KiB JSON pages). During paced runs the client's threads are pinned to one CPU
//! and the primary to another, so that wake-up placement does not decide its latency.
//!
//! Options: `mirror-bench --help`. Environment: `MIRROR_BENCH_CAPTURE` and
//! `MIRROR_BENCH_TARGET` add lines to the daemon's `[capture]` and `[[target]]` sections (e.g.
//! `MIRROR_BENCH_TARGET='queue = 8192'`).

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use mirror::netns::{CLIENT_ADDR, NetNs, SERVER_ADDR, Topology, unique_name};
use mirror_tests::daemon::{Daemon, Metrics, clock_ticks_per_second, process_cpu_seconds};

mod chart;
mod completeness;
mod paced;
mod table;
mod verdict;

use chart::latency_chart;
use completeness::{CompletenessRun, DEFAULT_COMPLETENESS_RUNS, completeness};
use paced::{Paced, paced};
use table::{Schedule, table};

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
    /// oha's 32 keep-alive connections: a heavier client than wrk (a tokio runtime on both
    /// cores), so the machine has no idle time left to hide the daemon's share in.
    Oha,
    /// The paced client at a fixed rate on keep-alive connections: a load below saturation,
    /// so the primary's latency shows coupling rather than CPU shared at saturation.
    FixedRate,
    /// The paced client at a fixed rate, a new connection per request (`Connection: close`).
    FixedRateClose,
    /// The same paced load through nginx's `mirror` module.
    FixedRateNginxMirror,
}

/// Offered rate of the fixed-rate runs as a share of what the primary serves at saturation
/// (measured just before): a busy production pod rather than a load test, on any machine.
const FIXED_RATE_SHARE: f64 = 0.2;
/// What the paced client sends: one request per write (TCP_NODELAY), so per packet.
const PACED_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
/// What the paced client sends on short connections.
const PACED_REQUEST_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
/// Keep-alive connections of the paced client.
const PACED_CONNECTIONS: u64 = 50;

/// One measured configuration.
#[derive(Clone, Copy, Debug)]
struct Mode {
    label: &'static str,
    load: Load,
    /// Shadow port, sampling percent, sampled by connection; `None`: no mirror daemon.
    daemon: Option<(u16, &'static str, bool)>,
    /// Lines added to the daemon's `[[target]]` section.
    target_lines: &'static str,
}

const fn mode(label: &'static str, load: Load, daemon: Option<(u16, &'static str, bool)>) -> Mode {
    Mode {
        label,
        load,
        daemon,
        target_lines: "",
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

/// Short connections at a fixed rate (the paced client opening a connection per request): what
/// replaying them over the daemon's pooled connections costs. Index 0 is the baseline.
const SHORT: [Mode; 4] = [
    mode("no mirror (short connections)", Load::FixedRateClose, None),
    mode(
        "mirror 100% of requests",
        Load::FixedRateClose,
        Some((FAST_PORT, "100", false)),
    ),
    mode(
        "mirror 10% of requests",
        Load::FixedRateClose,
        Some((FAST_PORT, "10", false)),
    ),
    // Before hop-by-hop fields were left out, the client's `Connection: close` was replayed:
    // the shadow closed the daemon's connection after every replay. Asking for it restores that.
    Mode {
        target_lines: "set_headers = { Connection = \"close\" }",
        ..mode(
            "mirror 100%, every replay asking the shadow to close (as before hop-by-hop fields were dropped)",
            Load::FixedRateClose,
            Some((FAST_PORT, "100", false)),
        )
    },
];

/// Primary impact as a new user first measures it: oha instead of wrk, nothing pinned. Index 0
/// is the baseline.
const OHA: [Mode; 4] = [
    mode("no mirror (oha)", Load::Oha, None),
    mode("mirror 100%", Load::Oha, Some((FAST_PORT, "100", false))),
    mode("mirror 10%", Load::Oha, Some((FAST_PORT, "10", false))),
    mode(
        "mirror 10% of connections (in-kernel)",
        Load::Oha,
        Some((FAST_PORT, "10", true)),
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

/// Starts `mirror run` in the server namespace with one target on the primary's port,
/// `target_lines` added to its `[[target]]` section.
fn start_daemon_with(
    topology: &Topology,
    shadow_port: u16,
    sample: &str,
    by_connection: bool,
    target_lines: &str,
) -> Daemon {
    let shadow = format!("http://{CLIENT_ADDR}:{shadow_port}");
    let sample_by = if by_connection {
        "connection"
    } else {
        "request"
    };
    start_daemon_config(
        topology,
        "",
        &format!(
            "[[target]]\nname = \"bench\"\nport = {PORT}\nshadow = \"{shadow}\"\nsample_percent = {sample}.0\nsample_by = \"{sample_by}\"\n{}\n{target_lines}\n",
            std::env::var("MIRROR_BENCH_TARGET").unwrap_or_default()
        ),
    )
}

/// Starts `mirror run --config FILE` in the server namespace, FILE holding the `[capture]`
/// section on the server's veth (with `MIRROR_BENCH_CAPTURE`), then `sections` (e.g. `[limits]`)
/// and `targets` (the `[[target]]` tables).
fn start_daemon_config(topology: &Topology, sections: &str, targets: &str) -> Daemon {
    let config = std::env::temp_dir().join(unique_name("mirror-bench-conf-"));
    std::fs::write(
        &config,
        format!(
            "[capture]\ninterfaces = [\"{}\"]\n{}\n\n{sections}\n{targets}",
            topology.server_if,
            std::env::var("MIRROR_BENCH_CAPTURE").unwrap_or_default(),
        ),
    )
    .expect("bench config");
    let daemon = Daemon::start(
        &topology.server,
        &["--config", config.to_str().expect("utf-8 path")],
    );
    // Read once the daemon serves metrics; the bench never asks it to reload.
    let _ = std::fs::remove_file(&config);
    daemon
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

/// The long-lived processes of the topology, by PID.
#[derive(Clone, Copy)]
struct Processes {
    /// nginx serving the primary (and the front server with nginx's `mirror` module).
    primary: u32,
    /// nginx serving the fast and the 200 ms shadows.
    shadows: u32,
}

/// One run of one mode: wrk's figures, where the machine's time went and, when the daemon ran,
/// what it cost and did.
struct Run {
    wrk: WrkResult,
    shares: Shares,
    cost: Option<DaemonCost>,
}

/// What the daemon took and did during one run.
#[derive(Clone, Copy)]
struct DaemonCost {
    cpu_seconds: f64,
    peak_rss_mib: f64,
    /// Replays the shadow answered (`mirror_replays_total{outcome="ok"}`).
    replayed_ok: f64,
    /// `mirror_shadow_connections_opened_total`.
    shadow_connections: f64,
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
        Load::Oha | Load::FixedRate | Load::FixedRateClose | Load::FixedRateNginxMirror => {
            unreachable!("not a wrk load")
        }
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

/// oha at saturation: 32 keep-alive connections for `seconds`, its JSON summary.
fn oha(client: &NetNs, seconds: u64) -> WrkResult {
    let output = client
        .command("oha")
        .args([
            "-c",
            "32",
            "-z",
            &format!("{seconds}s"),
            "--no-tui",
            "--output-format",
            "json",
        ])
        .arg(format!("http://{SERVER_ADDR}:{PORT}/"))
        .output()
        .expect("oha (cargo install oha)");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let seconds_ms = |value: &serde_json::Value| value.as_f64().map_or(f64::NAN, |s| s * 1000.0);
    WrkResult {
        seconds: seconds as f64,
        requests_per_second: report["summary"]["requestsPerSec"]
            .as_f64()
            .unwrap_or(f64::NAN),
        p50_ms: seconds_ms(&report["latencyPercentiles"]["p50"]),
        p99_ms: seconds_ms(&report["latencyPercentiles"]["p99"]),
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
    let (port, short) = match load {
        Load::FixedRate => (PORT, false),
        Load::FixedRateClose => (PORT, true),
        Load::FixedRateNginxMirror => (FRONT_PORT, false),
        Load::KeepAlive | Load::Close | Load::NginxMirror => return wrk(client, seconds, load),
        Load::Oha => return oha(client, seconds),
    };
    let paced = paced(
        client,
        processes,
        port,
        fixed_rate,
        seconds,
        PACED_CONNECTIONS,
        short,
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

/// Primary impact, cost and completeness of `mirror run`, printed as Markdown (needs root).
#[derive(clap::Parser)]
struct Args {
    /// Interleaved rounds of each table.
    #[arg(long, default_value_t = 3)]
    rounds: u64,
    /// Seconds of each table run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds of each fixed-rate completeness run; 0 skips them.
    #[arg(long, default_value_t = 30)]
    completeness_seconds: u64,
    /// The fixed-rate completeness runs, comma-separated: RATE, or RATE:QUEUE to set the
    /// target's `queue` key.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_COMPLETENESS_RUNS)]
    completeness_rates: Vec<CompletenessRun>,
    /// Only these tables, comma-separated (default: all; `none` for only the completeness runs).
    #[arg(long, value_delimiter = ',', value_parser = ["impact", "oha", "coupling", "scaling", "short", "verdict", "none"])]
    tables: Option<Vec<String>>,
    /// Offered rate of the short-connection runs, requests per second.
    #[arg(long, default_value_t = 6000)]
    short_rate: u64,
    /// Offered rate of the verdict-cost runs, requests per second.
    #[arg(long, default_value_t = 4000)]
    verdict_rate: u64,
    /// Seconds of each verdict-cost run.
    #[arg(long, default_value_t = 10)]
    verdict_seconds: u64,
    /// Keep the baseline and the modes whose label contains TEXT (to profile one mode).
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Where to write the latency chart (SVG) of the 10k req/s run.
    #[arg(long, value_name = "PATH")]
    chart: Option<PathBuf>,
}

impl Args {
    fn table_selected(&self, name: &str) -> bool {
        self.tables
            .as_ref()
            .is_none_or(|tables| tables.iter().any(|table| table == name))
    }
}

/// The baseline (index 0) and the modes whose label contains `only`.
fn selected(modes: &[Mode], only: Option<&str>) -> Vec<Mode> {
    modes
        .iter()
        .enumerate()
        .filter(|(index, mode)| *index == 0 || only.is_none_or(|text| mode.label.contains(text)))
        .map(|(_, mode)| *mode)
        .collect()
}

fn cleanup(dirs: &[&Path]) {
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    assert!(
        nix::unistd::geteuid().is_root(),
        "mirror-bench needs root (BPF, network namespaces)"
    );
    let Args {
        rounds,
        seconds,
        completeness_seconds,
        ..
    } = args;

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
    let (saturation, fixed_rate) = if args.table_selected("coupling") {
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
        only: args.only.as_deref(),
    };
    let runs = |name: &str, modes: &[Mode], fast_shadow_second: bool, heading: &str| {
        if !args.table_selected(name) {
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
    runs(
        "oha",
        &OHA,
        false,
        &format!(
            "\n### Primary impact with oha (oha -c 32 keep-alive, {seconds} s per run, {rounds} interleaved rounds)"
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

    let short_rate = args.short_rate;
    if args.table_selected("short") {
        table(
            &topology,
            &SHORT,
            processes,
            false,
            &format!(
                "\n### Short connections at a fixed rate ({short_rate} req/s offered by a paced client on {PACED_CONNECTIONS} threads, each opening a new connection per request with `Connection: close`, {seconds} s per run, {rounds} interleaved rounds)"
            ),
            Schedule {
                fixed_rate: short_rate,
                ..schedule
            },
        );
    }

    if args.table_selected("verdict") {
        verdict::verdict_cost(&topology, rounds, args.verdict_rate, args.verdict_seconds);
    }

    let runs: &[CompletenessRun] = if completeness_seconds == 0 {
        &[]
    } else {
        &args.completeness_rates
    };
    for run in runs {
        // The chart comes from the 10k req/s run with the default queue.
        let chart = (run.rate == 10_000 && run.queue.is_none())
            .then_some(args.chart.as_deref())
            .flatten();
        completeness(&topology, processes, run, completeness_seconds, chart);
    }
    cleanup(&[&primary_dir, &shadow_dir]);
}
