//! Verdict cost: the daemon's CPU per 100k mirrored requests when each shadow's response is
//! compared with the primary's field by field (both bodies held), against digest-only
//! comparison (`[limits] compare_body_bytes = 0`), with one shadow and with three (a baseline
//! and two candidates). Every server answers with a 1 KiB JSON catalogue page; the load is the
//! paced client at a fixed rate, 100% sampled, on keep-alive connections.

use super::*;

/// The primary of these runs (server namespace): its own nginx, so the page is JSON.
const VERDICT_PORT: u16 = 8090;
/// Size of the JSON page every server answers with, about.
const PAGE_BYTES: usize = 1024;

/// One shadow of a verdict run: name, port in the client namespace, baseline, and how its page
/// differs from the primary's.
#[derive(Clone, Copy)]
struct VerdictShadow {
    name: &'static str,
    port: u16,
    baseline: bool,
    page: Page,
}

/// The first shadow: a candidate. With three, a baseline (a second copy of the primary's
/// version) and a second candidate follow.
const SHADOWS: [VerdictShadow; 3] = [
    VerdictShadow {
        name: "v2",
        port: 8091,
        baseline: false,
        page: Page::Candidate,
    },
    VerdictShadow {
        name: "baseline",
        port: 8092,
        baseline: true,
        page: Page::Baseline,
    },
    VerdictShadow {
        name: "v3",
        port: 8093,
        baseline: false,
        page: Page::Candidate,
    },
];

/// Which version of the catalogue page a server answers with.
#[derive(Clone, Copy, PartialEq)]
enum Page {
    Primary,
    /// The primary's version on another instance: only its `request_id` differs (noise).
    Baseline,
    /// The new version: another `request_id`, and every fifth item's price changed.
    Candidate,
}

/// One measured configuration: how many shadows, and whether bodies are compared field by field.
#[derive(Clone, Copy)]
struct VerdictMode {
    label: &'static str,
    shadows: usize,
    /// `None`: digest only (`[limits] compare_body_bytes = 0`); else the field diff with this
    /// `[verdict.diff] max_per_second` (0: every exchange).
    field_diff: Option<u32>,
}

/// Index 0 is the baseline of the ratios; 2 against 0 is the goal's measure (the default
/// sampling rate, as users run it), 1 against 0 the cost of diffing every exchange.
const MODES: [VerdictMode; 6] = [
    VerdictMode {
        label: "1 shadow, digest only",
        shadows: 1,
        field_diff: None,
    },
    VerdictMode {
        label: "1 shadow, field diff of every exchange",
        shadows: 1,
        field_diff: Some(0),
    },
    VerdictMode {
        label: "1 shadow, field diff at the default 200 exchanges/s",
        shadows: 1,
        field_diff: Some(mirror::verdict::diff::DEFAULT_MAX_PER_SECOND),
    },
    VerdictMode {
        label: "3 shadows (1 baseline), digest only",
        shadows: 3,
        field_diff: None,
    },
    VerdictMode {
        label: "3 shadows (1 baseline), field diff of every exchange",
        shadows: 3,
        field_diff: Some(0),
    },
    VerdictMode {
        label: "3 shadows (1 baseline), field diff at the default 200 exchanges/s",
        shadows: 3,
        field_diff: Some(mirror::verdict::diff::DEFAULT_MAX_PER_SECOND),
    },
];

/// Goal: the field diff adds under this share to the daemon's CPU per request at 1 KiB.
const GOAL_ADDED_SHARE: f64 = 0.20;

/// A catalogue page of `items` items: ids, names, prices, stock, tags, a timestamp.
fn catalogue(items: usize, page: Page) -> String {
    use std::fmt::Write as _;
    let request_id = match page {
        Page::Primary => "9f1c2a7e-0000-4000-8000-000000000001",
        Page::Baseline => "9f1c2a7e-0000-4000-8000-000000000002",
        Page::Candidate => "9f1c2a7e-0000-4000-8000-000000000003",
    };
    let mut text = format!("{{\"page\":1,\"request_id\":\"{request_id}\",\"items\":[");
    for item in 0..items {
        if item > 0 {
            text.push(',');
        }
        let mut price = 9.99 + item as f64 * 2.5;
        if page == Page::Candidate && item % 5 == 0 {
            price += 1.0;
        }
        let _ = write!(
            text,
            "{{\"id\":{},\"name\":\"item number {item}\",\"price\":{price:.2},\"stock\":{},\
             \"tags\":[\"sale\",\"new\"],\"updated_at\":\"2024-05-01T12:00:00Z\"}}",
            1000 + item,
            item * 3 % 17
        );
    }
    let _ = write!(text, "],\"total\":{items}}}");
    text
}

/// The page of about [`PAGE_BYTES`] in version `page`.
fn page_of(page: Page) -> String {
    let items = (1..64)
        .min_by_key(|items| catalogue(*items, Page::Primary).len().abs_diff(PAGE_BYTES))
        .expect("item counts");
    catalogue(items, page)
}

/// nginx answering every request on each `(port, page)` of `addr` with that page as
/// `application/json`.
fn json_nginx(ns: &NetNs, addr: &str, servers: &[(u16, Page)]) -> (Guard, Vec<PathBuf>) {
    let pages = std::env::temp_dir().join(unique_name("mirror-verdict-pages-"));
    let blocks: String = servers
        .iter()
        .map(|(port, page)| {
            let root = pages.join(port.to_string());
            std::fs::create_dir_all(&root).expect("page dir");
            std::fs::write(root.join("catalogue.json"), page_of(*page)).expect("page");
            format!(
                "server {{ listen {addr}:{port} reuseport backlog=4096; root {}; access_log off; \
                 location / {{ default_type application/json; try_files /catalogue.json =404; }} }}\n",
                root.display()
            )
        })
        .collect();
    let (guard, dir) = nginx(ns, addr, &[], &blocks);
    (guard, vec![dir, pages])
}

/// Starts the daemon for `mode`: one target on the verdict primary, its shadows listed.
fn start_verdict_daemon(topology: &Topology, mode: VerdictMode) -> Daemon {
    let limits = match mode.field_diff {
        Some(rate) => format!("[verdict.diff]\nmax_per_second = {rate}\n"),
        None => "[limits]\ncompare_body_bytes = 0\n".to_owned(),
    };
    let mut targets = format!(
        "[[target]]\nname = \"bench\"\nport = {VERDICT_PORT}\nsample_percent = 100.0\n{}\n",
        std::env::var("MIRROR_BENCH_TARGET").unwrap_or_default()
    );
    for shadow in &SHADOWS[..mode.shadows] {
        targets.push_str(&format!(
            "[[target.shadows]]\nname = \"{}\"\nurl = \"http://{CLIENT_ADDR}:{}\"\nbaseline = {}\n",
            shadow.name, shadow.port, shadow.baseline
        ));
    }
    start_daemon_config(topology, &limits, &targets)
}

/// One run of one mode.
struct VerdictRun {
    served_per_second: f64,
    /// Daemon CPU seconds per 100k requests it framed (all mirrored: 100% sampling).
    cpu_per_100k: f64,
    pairs_per_request: f64,
    /// Digest-only comparisons per compared pair.
    digest_only_share: f64,
    peak_rss_mib: f64,
    idle: f64,
    steal: f64,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Runs the verdict modes in `rounds` interleaved rounds at `rate` req/s for `seconds` each and
/// prints the table and the goal line.
pub(super) fn verdict_cost(topology: &Topology, rounds: u64, rate: u64, seconds: u64) {
    let (primary, primary_dirs) = json_nginx(
        &topology.server,
        SERVER_ADDR,
        &[(VERDICT_PORT, Page::Primary)],
    );
    let shadow_servers: Vec<(u16, Page)> = SHADOWS
        .iter()
        .map(|shadow| (shadow.port, shadow.page))
        .collect();
    let (shadows, shadow_dirs) = json_nginx(&topology.client, CLIENT_ADDR, &shadow_servers);
    let processes = Processes {
        primary: primary.0.id(),
        shadows: shadows.0.id(),
    };
    let load_before = load_average();
    let mut results: Vec<Vec<VerdictRun>> = Vec::new();
    for round in 0..rounds {
        let mut row = Vec::new();
        for mode in MODES {
            let daemon = start_verdict_daemon(topology, mode);
            let cpu_before = daemon.cpu_seconds();
            let before = machine_ticks();
            let paced = paced(
                &topology.client,
                processes,
                VERDICT_PORT,
                rate,
                seconds,
                PACED_CONNECTIONS,
                false,
            );
            let after = machine_ticks();
            // The last responses' replays and comparisons.
            std::thread::sleep(Duration::from_millis(500));
            let cpu = daemon.cpu_seconds() - cpu_before;
            let metrics = daemon.metrics();
            let requests = metrics.sum("mirror_requests_total", &[]).max(1.0);
            let pairs = metrics.sum("mirror_comparisons_total", &[]);
            let digest_only = metrics.sum("mirror_comparisons_digest_only_total", &[]);
            let ticks = (after.total - before.total).max(1.0);
            let run = VerdictRun {
                served_per_second: paced.served as f64 / seconds as f64,
                cpu_per_100k: cpu / requests * 100_000.0,
                pairs_per_request: pairs / requests,
                digest_only_share: digest_only / pairs.max(1.0),
                peak_rss_mib: peak_rss_mib(&daemon),
                idle: (after.idle - before.idle) / ticks,
                steal: (after.steal - before.steal) / ticks,
            };
            eprintln!(
                "round {round} {}: {:.0} req/s, {:.3} CPU s per 100k, {:.2} pairs per request, {:.1}% digest only",
                mode.label,
                run.served_per_second,
                run.cpu_per_100k,
                run.pairs_per_request,
                run.digest_only_share * 100.0
            );
            row.push(run);
            drop(daemon);
        }
        results.push(row);
    }
    let load_after = load_average();
    drop(primary);
    drop(shadows);
    for dir in primary_dirs.iter().chain(&shadow_dirs) {
        let _ = std::fs::remove_dir_all(dir);
    }

    let page_bytes = page_of(Page::Primary).len();
    println!(
        "\n### Verdict cost: daemon CPU per 100k mirrored requests, {page_bytes} B JSON bodies ({rate} req/s offered by the paced client on {PACED_CONNECTIONS} keep-alive connections, 100% sampling, {seconds} s per run, {rounds} interleaved rounds)\n"
    );
    print_verdict_table(&results);
    println!(
        "\nLoad average (1, 5, 15 min) before the runs: {load_before}; after: {load_after} \
         (2 cores, shared with other work)."
    );
    print_goal(&results);
}

/// The per-round ratio of mode `index`'s CPU per request to mode `base`'s, median over rounds.
fn cpu_ratio(results: &[Vec<VerdictRun>], index: usize, base: usize) -> f64 {
    median(
        results
            .iter()
            .map(|row| row[index].cpu_per_100k / row[base].cpu_per_100k)
            .collect(),
    )
}

/// Microseconds of daemon CPU the field diff added per compared pair: mode `index` (field diff)
/// against mode `base` (digest only, same shadows) in each round, median over rounds.
fn added_us_per_pair(results: &[Vec<VerdictRun>], index: usize, base: usize) -> f64 {
    median(
        results
            .iter()
            .map(|row| {
                // CPU s per 100k requests -> us per request, then per compared pair.
                (row[index].cpu_per_100k - row[base].cpu_per_100k) * 10.0
                    / row[index].pairs_per_request.max(f64::MIN_POSITIVE)
            })
            .collect(),
    )
}

fn print_verdict_table(results: &[Vec<VerdictRun>]) {
    println!(
        "| mode | req/s served | daemon CPU s per 100k requests | CPU / {} | compared pairs per request | digest-only fallbacks per compared pair | daemon peak RSS MiB | machine idle / steal |",
        MODES[0].label
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (index, mode) in MODES.iter().enumerate() {
        let column = |f: &dyn Fn(&VerdictRun) -> f64| {
            median(results.iter().map(|row| f(&row[index])).collect())
        };
        println!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.2} | {:.1}% | {:.1} | {:.1}% / {:.1}% |",
            mode.label,
            column(&|run| run.served_per_second),
            column(&|run| run.cpu_per_100k),
            cpu_ratio(results, index, 0),
            column(&|run| run.pairs_per_request),
            column(&|run| run.digest_only_share) * 100.0,
            column(&|run| run.peak_rss_mib),
            column(&|run| run.idle) * 100.0,
            column(&|run| run.steal) * 100.0,
        );
    }
}

fn print_goal(results: &[Vec<VerdictRun>]) {
    let added = cpu_ratio(results, 2, 0) - 1.0;
    let met = added < GOAL_ADDED_SHARE;
    println!(
        "\n**Goal: the field diff adds under {:.0}% to the daemon's CPU per request at 1 KiB \
         bodies.** At the default sampling of the diff (`[verdict.diff] max_per_second = {}` \
         per target) it adds {:+.1}% with one shadow (`{}` / `{}`, per-round ratio, median over \
         rounds): **{}**; {:+.1}% with three shadows against three compared by digest. Diffing \
         every exchange (`max_per_second = 0`) adds {:+.1}% with one shadow and {:+.1}% with \
         three: per compared pair the diff cost the daemon {:.1} us with one shadow and {:.1} us \
         with three (the CPU difference between the every-exchange and the digest-only run of \
         a round, divided by the compared pairs; median over rounds).",
        GOAL_ADDED_SHARE * 100.0,
        mirror::verdict::diff::DEFAULT_MAX_PER_SECOND,
        added * 100.0,
        MODES[2].label,
        MODES[0].label,
        if met { "met" } else { "not met" },
        (cpu_ratio(results, 5, 3) - 1.0) * 100.0,
        (cpu_ratio(results, 1, 0) - 1.0) * 100.0,
        (cpu_ratio(results, 4, 3) - 1.0) * 100.0,
        added_us_per_pair(results, 1, 0),
        added_us_per_pair(results, 4, 3),
    );
}
