//! Modes run in interleaved rounds and printed as a Markdown table: medians over rounds, ratios
//! taken between runs of the same round.

use super::*;

/// How long and how hard each table's runs go.
#[derive(Clone, Copy)]
pub(super) struct Schedule<'a> {
    pub(super) rounds: u64,
    /// Of each run.
    pub(super) seconds: u64,
    /// Requests per second of the paced loads.
    pub(super) fixed_rate: u64,
    /// `--only`: the modes kept besides the baseline.
    pub(super) only: Option<&'a str>,
}

/// Runs the modes of `modes` that `--only` keeps in interleaved rounds and prints their table
/// under `heading`. With `fast_shadow_second`, mode 1 is the fast-shadow run that throughput is
/// also compared with.
pub(super) fn table(
    topology: &Topology,
    modes: &[Mode],
    processes: Processes,
    fast_shadow_second: bool,
    heading: &str,
    schedule: Schedule<'_>,
) {
    let kept = selected(modes, schedule.only);
    let results = rounds_of(topology, &kept, processes, schedule);
    println!("{heading}\n");
    let fast = modes
        .get(1)
        .filter(|_| fast_shadow_second)
        .and_then(|fast| kept.iter().position(|mode| mode.label == fast.label));
    print_table(&kept, &results, fast);
}

/// Runs every mode once per round, in order, so ratios compare runs adjacent in time.
pub(super) fn rounds_of(
    topology: &Topology,
    modes: &[Mode],
    processes: Processes,
    schedule: Schedule<'_>,
) -> Vec<Vec<Run>> {
    let Schedule {
        rounds,
        seconds,
        fixed_rate,
        ..
    } = schedule;
    let mut results = Vec::new();
    for round in 0..rounds {
        let mut row = Vec::new();
        for mode in modes {
            let daemon = mode.daemon.map(|(port, sample, by_connection)| {
                start_daemon_with(topology, port, sample, by_connection, mode.target_lines)
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
                let metrics = daemon.metrics();
                DaemonCost {
                    cpu_seconds: daemon_cpu,
                    peak_rss_mib: peak_rss_mib(daemon),
                    replayed_ok: metrics.sum("mirror_replays_total", &["outcome=\"ok\""]),
                    shadow_connections: metrics.sum("mirror_shadow_connections_opened_total", &[]),
                }
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
pub(super) fn print_table(modes: &[Mode], results: &[Vec<Run>], fast: Option<usize>) {
    println!(
        "| mode | req/s | P50 ms | P99 ms | throughput / {} | throughput / fast shadow | P50 / {} | P50 - {} us | daemon CPU s per 100k requests | daemon peak RSS MiB | replayed ok / served | replays per shadow connection | machine: daemon / shadow / softirq / idle / steal |",
        modes[0].label, modes[0].label, modes[0].label
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
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
        let daemon_median = |figure: &dyn Fn(DaemonCost, f64) -> f64| {
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
        let per_100k = daemon_median(&|cost, served| cost.cpu_seconds / served * 100_000.0);
        let rss = daemon_median(&|cost, _| cost.peak_rss_mib);
        // The share actually mirrored: with connection sampling it depends on which of wrk's
        // 32 connections the hash picks.
        let mirrored = daemon_median(&|cost, served| cost.replayed_ok / served * 100.0);
        // NaN (printed `-`) when no connection was opened.
        let per_connection = daemon_median(&|cost, _| {
            if cost.shadow_connections > 0.0 {
                cost.replayed_ok / cost.shadow_connections
            } else {
                f64::NAN
            }
        });
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
            "| {} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {:+.0} | {} | {} | {} | {} | {:.1}% / {:.1}% / {:.1}% / {:.1}% / {:.1}% |",
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
            number(per_connection, 0),
            share(&|shares| shares.daemon),
            share(&|shares| shares.shadow),
            share(&|shares| shares.softirq),
            share(&|shares| shares.idle),
            share(&|shares| shares.steal),
        );
    }
}
