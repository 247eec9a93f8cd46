//! `mirror demo`: the one-command tour. In network namespaces it creates, a primary "search v1"
//! serves client traffic while `mirror run` (the real daemon, as a child process) copies 10% of
//! the GETs off the wire and replays them to a shadow "search v2" (an N+1 regression and a
//! changed price) and to a baseline (a second v1); progress is printed every second, then the
//! verdict, judged from the daemon's metrics by the policy every `mirror verdict` applies,
//! names the slow path and the changed field. Everything it created is removed at the end, also on Ctrl-C (guards in `Drop`).
//! The parts live in [`crate::demo`].

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{
    cli::DemoArgs,
    commands::fetch::{Endpoint, fetch},
    demo::{
        ROUTES, in_netns,
        servers::{self, ServiceCounters, Version},
        traffic::{self, Plan, Traffic, TrafficCounters},
        verdict::{self as demo_verdict, POLICY, Verdict},
    },
    netns::{CLIENT_ADDR, NetNs, SERVER_ADDR, Topology, unique_name},
    stats::{Sample, Snapshot, TargetStats},
    verdict::text,
};

const SAMPLE_PERCENT: f64 = 10.0;
/// Where the daemon serves metrics, inside the server namespace (nothing else listens there).
const METRICS_ADDR: &str = "127.0.0.1:9477";
const DEFAULT_SECONDS: u64 = 20;
const SHORT_SECONDS: u64 = 6;
/// Enough that even the short run mirrors a few hundred requests at 10%.
const REQUESTS_PER_SECOND: u32 = 600;
const KEEP_ALIVE_CLIENTS: u32 = 12;
const SHORT_CLIENTS: u32 = 4;
/// The daemon attaches and serves metrics within a second or two; a debug build under load
/// can take longer.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(30);
/// After the last request: time for the last replays to finish and be counted.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Daemon log lines kept to explain a failure.
const LOG_LINES_KEPT: usize = 40;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo creates network namespaces and loads eBPF: run it as root");
    }
    let seconds = match (args.seconds, args.short) {
        (Some(seconds), _) => seconds,
        (None, true) => SHORT_SECONDS,
        (None, false) => DEFAULT_SECONDS,
    };
    let topology = Topology::create().context("creating the demo's network namespaces")?;
    let names = [topology.client.name.clone(), topology.server.name.clone()];
    let result = tokio::select! {
        result = tour(&topology, Duration::from_secs(seconds)) => result,
        _ = tokio::signal::ctrl_c() => {
            println!("\ninterrupted: cleaning up");
            Ok(())
        }
    };
    // The tour's guards (daemon, servers, clients, temp files) are gone; the namespaces last.
    drop(topology);
    let left: Vec<&String> = names
        .iter()
        .filter(|name| Path::new("/var/run/netns").join(name).exists())
        .collect();
    if left.is_empty() {
        println!(
            "\ncleaned up: namespaces {} and {} (with the veth pair), the daemon, the servers and the temp files are gone.",
            names[0], names[1]
        );
    } else {
        eprintln!(
            "warning: could not delete network namespaces {left:?}: remove them with `ip netns del`"
        );
    }
    result
}

async fn tour(topology: &Topology, duration: Duration) -> anyhow::Result<()> {
    let primary_addr: Ipv4Addr = SERVER_ADDR.parse()?;
    let shadow_addr: Ipv4Addr = CLIENT_ADDR.parse()?;
    println!(
        "mirror demo: test a new release under real traffic, with no risk to users\n\n\
         search v1 (the primary) serves the users. search v2 (the shadow) is the candidate: same API,\n\
         but on a cache miss it fetches each result with its own database call (N+1), and it discounts\n\
         two prices in five twice. Every JSON answer carries a fresh request_id: noise, which a second\n\
         v1 (the baseline) lets mirror tell from real differences. mirror copies {SAMPLE_PERCENT:.0}% of the GET\n\
         requests off the wire with eBPF, replays them to v2 and the baseline, and compares latency,\n\
         status and every JSON field. Users never talk to v2; their POSTs are never replayed.\n"
    );
    let ports: Vec<String> = ROUTES
        .iter()
        .map(|r| format!(":{} {}", r.port, r.serves))
        .collect();
    println!("setup");
    println!(
        "  namespaces  {} (clients, shadow; {CLIENT_ADDR}) <-veth-> {} (primary, mirror; {SERVER_ADDR})",
        topology.client.name, topology.server.name
    );
    let primary = servers::start(&topology.server, primary_addr, Version::V1).await?;
    println!(
        "  primary     search v1 on {SERVER_ADDR}  {} (and POST /click on :8080)",
        ports.join(", ")
    );
    let shadow = servers::start(&topology.client, shadow_addr, Version::V2).await?;
    println!(
        "  shadow      search v2 on {CLIENT_ADDR}, same ports, reached through the captured veth"
    );
    let baseline = servers::start(&topology.client, shadow_addr, Version::Baseline).await?;
    println!(
        "  baseline    search v1 on {CLIENT_ADDR}, ports {} up",
        crate::demo::BASELINE_PORT_OFFSET
    );

    let work_dir = WorkDir::create()?;
    let config_path = work_dir.path.join("mirror.toml");
    let config = config_text(&topology.server_if);
    std::fs::write(&config_path, &config)
        .with_context(|| format!("writing {}", config_path.display()))?;
    println!(
        "  mirror      mirror run --config {} (in {}):",
        config_path.display(),
        topology.server.name
    );
    for line in config.lines().filter(|line| !line.is_empty()) {
        println!("                {line}");
    }
    let mut daemon = Daemon::start(&topology.server, &config_path)?;
    daemon.wait_until_serving(&topology.server).await?;
    println!(
        "              attached to {}; metrics on {METRICS_ADDR} in its namespace\n",
        topology.server_if
    );

    let plan = Plan {
        duration,
        requests_per_second: REQUESTS_PER_SECOND,
        keep_alive_clients: KEEP_ALIVE_CLIENTS,
        short_clients: SHORT_CLIENTS,
    };
    println!(
        "traffic: {} requests/s for {} s from {} clients ({} keep-alive, {} with a new connection per request):\n  \
         {:.0}% GET /search ({:.0}% popular queries, cache hits), {:.0}% GET /suggest, {:.0}% GET /static/*, {:.0}% GET /price, {:.0}% POST /click\n",
        plan.requests_per_second,
        duration.as_secs(),
        plan.keep_alive_clients + plan.short_clients,
        plan.keep_alive_clients,
        plan.short_clients,
        traffic::SEARCH_PERCENT,
        traffic::POPULAR_SEARCH_PERCENT,
        traffic::SUGGEST_PERCENT,
        traffic::STATIC_PERCENT,
        traffic::PRICE_PERCENT,
        traffic::CLICK_PERCENT,
    );
    let counters = Arc::new(TrafficCounters::default());
    let clients = Traffic::start(&topology.client, primary_addr, plan, Arc::clone(&counters));
    println!("{}", Progress::HEADER);
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    // A slow scrape delays the next line rather than bunching lines up.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !clients.is_finished() {
        ticks.tick().await;
        if clients.is_finished() {
            // The final line follows once the last replays are counted.
            break;
        }
        daemon.check_alive()?;
        let (snapshot, _) = scrape(&topology.server).await?;
        println!(
            "{}",
            Progress::new(&snapshot, &counters).line(started.elapsed())
        );
    }
    clients.finish().await?;

    // The last replays finish (and are counted) shortly after the last request.
    let settle_deadline = Instant::now() + SETTLE_TIMEOUT;
    let (snapshot, samples) = loop {
        let (snapshot, samples) = scrape(&topology.server).await?;
        let progress = Progress::new(&snapshot, &counters);
        if progress.settled() || Instant::now() >= settle_deadline {
            println!("{}   (final)", progress.line(started.elapsed()));
            break (snapshot, samples);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    daemon.stop()?;

    println!(
        "\nside by side, from the daemon's /metrics (primary latency measured on the wire, shadow latency on\n\
         the replay connections; every JSON body differs by its request_id, so digests always differ):\n"
    );
    print!("{}", Verdict::new(&snapshot, &ROUTES).table());
    for service in [&primary, &shadow, &baseline] {
        let c = &service.counters;
        println!(
            "{} ({}) served {} GET /search, {} GET /suggest, {} GET /static/*, {} GET /price, {} POST /click; {} database calls",
            service.version.name(),
            service.version.role(),
            ServiceCounters::get(&c.searches),
            ServiceCounters::get(&c.suggests),
            ServiceCounters::get(&c.static_files),
            ServiceCounters::get(&c.prices),
            ServiceCounters::get(&c.clicks),
            ServiceCounters::get(&c.database_calls),
        );
    }
    let skipped_writes = snapshot
        .targets
        .values()
        .filter_map(|stats| stats.skipped.get("method"))
        .fold(0.0, |sum, n| sum + n);
    println!(
        "writes: {skipped_writes:.0} POST /click skipped by the mirror (reason `method`), {} reached search v2\n",
        ServiceCounters::get(&shadow.counters.clicks)
    );
    let policy = demo_verdict::policy();
    let report = demo_verdict::judge(&samples, &policy);
    println!(
        "the verdict: the daemon's evidence judged by the demo's [verdict] (above), as its /verdict and\n\
         `mirror verdict` judge it; a field is real when v2 differs from v1 more often than the baseline does:\n"
    );
    print!(
        "{}",
        text::render(&report, "the daemon's /metrics", policy.drift.threshold)
    );
    println!();
    print!("{}", demo_verdict::conclusion(&report, &ROUTES));
    Ok(())
}

/// The daemon's configuration: one target per port of the service, shadowed on the client side
/// by v2 and the baseline, and the demo's policy as `[verdict]`.
fn config_text(interface: &str) -> String {
    let policy = POLICY.replace("[fields]", "[verdict.fields]");
    let mut text = format!(
        "[capture]\ninterfaces = [\"{interface}\"]\n\n[metrics]\nlisten = \"{METRICS_ADDR}\"\n\n[verdict]\n{policy}"
    );
    for route in ROUTES {
        text.push_str(&format!(
            "\n[[target]]\nname = \"{}\"\nport = {}\nsample_percent = {SAMPLE_PERCENT:.1}\n\
             [[target.shadows]]\nname = \"v2\"\nurl = \"http://{CLIENT_ADDR}:{}\"\n\
             [[target.shadows]]\nname = \"baseline\"\nurl = \"http://{CLIENT_ADDR}:{}\"\nbaseline = true\n",
            route.target,
            route.port,
            Version::V2.port(route.port),
            Version::Baseline.port(route.port),
        ));
    }
    text
}

/// Fetches and parses the daemon's metrics from a thread inside its namespace: as a snapshot
/// (for people) and as samples (for the verdict). The parsing stays on that thread too: the
/// exposition (field histograms included) takes milliseconds to read in a debug build, which
/// on the runtime would stall the demo's own servers, a latency tail the daemon then reports.
async fn scrape(ns: &NetNs) -> anyhow::Result<(Snapshot, Vec<Sample>)> {
    let url = url::Url::parse(&format!("http://{METRICS_ADDR}/metrics"))?;
    in_netns(ns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let timeout = Duration::from_secs(5);
        let text = runtime.block_on(fetch(&url, Endpoint::Daemon, timeout))?;
        let samples = crate::stats::parse(&text)?;
        anyhow::Ok((Snapshot::from_samples(&samples), samples))
    })
    .await?
}

/// One line of live progress: the clients' counts next to the mirror's, summed over targets.
struct Progress {
    sent: u64,
    posts: u64,
    failures: u64,
    seen: f64,
    mirrored: f64,
    sampled_out: f64,
    skipped_method: f64,
    in_flight: f64,
    shadow_errors: f64,
}

impl Progress {
    const HEADER: &str = "   time    sent   POSTs  seen by mirror  mirrored  sampled out  skipped: method  shadow errors  client errors";

    fn new(snapshot: &Snapshot, counters: &TrafficCounters) -> Self {
        let sum = |f: &dyn Fn(&TargetStats) -> f64| {
            snapshot.targets.values().map(f).fold(0.0, |sum, n| sum + n)
        };
        let skipped = |reason: &'static str| {
            move |t: &TargetStats| t.skipped.get(reason).copied().unwrap_or(0.0)
        };
        let replays = |outcome: &'static str| {
            move |t: &TargetStats| t.candidate().replays.get(outcome).copied().unwrap_or(0.0)
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Self {
            sent: counters.sent(),
            posts: load(&counters.posts),
            failures: load(&counters.failures),
            seen: sum(&|t| t.requests),
            mirrored: sum(&|t| t.candidate().mirrored()),
            sampled_out: sum(&skipped("sampled_out")),
            skipped_method: sum(&skipped("method")),
            in_flight: sum(&|t| t.in_flight(&t.candidate())),
            shadow_errors: sum(&replays("error"))
                + sum(&replays("timeout"))
                + sum(&|t| t.candidate().dropped()),
        }
    }

    /// Every request sent was seen, and every replay has finished.
    fn settled(&self) -> bool {
        self.seen >= self.sent as f64 && self.in_flight <= 0.0
    }

    fn line(&self, elapsed: Duration) -> String {
        format!(
            "{:>6.0}s  {:>6}  {:>6}  {:>14.0}  {:>8.0}  {:>11.0}  {:>15.0}  {:>13.0}  {:>13}",
            elapsed.as_secs_f64(),
            self.sent,
            self.posts,
            self.seen,
            self.mirrored,
            self.sampled_out,
            self.skipped_method,
            self.shadow_errors,
            self.failures,
        )
    }
}

/// `mirror run` as a child process in the server namespace; stopped on drop.
struct Daemon {
    child: Child,
    /// The last lines it logged, to explain a failure.
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Daemon {
    fn start(ns: &NetNs, config: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the mirror binary")?;
        let mut child = ns
            .command(exe)
            .args(["--log-format", "text", "run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting mirror run")?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let stderr = child.stderr.take().context("mirror run's stderr")?;
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
                if kept.len() == LOG_LINES_KEPT {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        Ok(Self { child, log })
    }

    /// Waits until the metrics endpoint answers: the classifier is attached by then.
    async fn wait_until_serving(&mut self, ns: &NetNs) -> anyhow::Result<()> {
        let deadline = Instant::now() + DAEMON_START_TIMEOUT;
        loop {
            self.check_alive()?;
            if scrape(ns).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "mirror run did not serve metrics within {} s; it logged:\n{}",
                    DAEMON_START_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                // Let the log thread read the last lines.
                std::thread::sleep(Duration::from_millis(100));
                bail!(
                    "mirror run exited ({status}); it logged:\n{}",
                    self.log_tail()
                )
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().map(|line| format!("  {line}\n")).collect()
    }

    /// SIGTERM and wait: the daemon detaches the classifier and exits cleanly.
    fn stop(&mut self) -> anyhow::Result<()> {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let status = self.child.wait().context("waiting for mirror run")?;
        if !status.success() {
            bail!(
                "mirror run exited with {status}; it logged:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            // The daemon exits within milliseconds of SIGTERM; a stuck one is killed.
            for _ in 0..30 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A temporary directory for the generated config, removed on drop.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(unique_name("mirror-demo-"));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
