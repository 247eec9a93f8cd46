//! Completeness at fixed rates: every difference between what the primary served and what
//! reached the shadow must show in a counter.

use super::*;

/// The fixed-rate completeness runs: each rate with the default replay queue, and 10k req/s
/// once more with a queue of one second of that rate. The shadow nginx shares the two cores
/// with the primary, the client and the daemon, and at times serves below 10k req/s for up to
/// a second; the default queue (1024) plus what the workers hold in flight rides out about
/// half of that, and the second run shows what sizing the queue to the rate (the advice in the
/// README) buys.
pub(super) const DEFAULT_COMPLETENESS_RUNS: &str = "5000,10000,10000:10000,20000";

/// One fixed-rate completeness run: `RATE` or `RATE:QUEUE` on the command line.
#[derive(Clone)]
pub(super) struct CompletenessRun {
    pub(super) rate: u64,
    /// The target's `queue` key; `None`: the default.
    pub(super) queue: Option<u64>,
}

impl std::str::FromStr for CompletenessRun {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let number = |part: &str| {
            part.trim()
                .parse()
                .map_err(|_| format!("{text:?}: expected RATE or RATE:QUEUE"))
        };
        Ok(match text.split_once(':') {
            Some((rate, queue)) => Self {
                rate: number(rate)?,
                queue: Some(number(queue)?),
            },
            None => Self {
                rate: number(text)?,
                queue: None,
            },
        })
    }
}

/// The target's `queue` key when the config leaves it out, as the daemon defaults it.
fn default_queue() -> usize {
    let shadow = mirror::config::ShadowUrl::parse("http://127.0.0.1:1").expect("a shadow URL");
    mirror::config::TargetConfig::with_defaults(String::new(), PORT, shadow).queue
}

/// Completeness at a fixed rate, fast shadow, 100% sampling: every difference between what the
/// primary served and what reached the shadow must show in a counter.
pub(super) fn completeness(
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
        false,
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
            None => format!("default queue of {}", default_queue()),
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
