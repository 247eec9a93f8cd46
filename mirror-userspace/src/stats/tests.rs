//! End-to-end tests of the stats core on exposition text produced by the daemon's own registry
//! and encoder, so a change of the daemon's format breaks these tests rather than the command.

use std::time::Duration;

use super::*;
use crate::{
    config::{ShadowUrl, TargetConfig},
    http::{HttpTracker, TrackerConfig},
    metrics::{
        Metrics, TargetKindLabels, TargetLabels, TargetOutcomeLabels, TargetReasonLabels,
        TargetRoleCodeLabels, TargetRoleLabels, TargetShadowLabels, TargetShadowReasonLabels,
        server::to_prometheus_text,
    },
    pipeline::Pipeline,
};

/// Traffic of one target, applied to the daemon's metrics the way the pipeline updates them.
struct Traffic<'a> {
    target: &'a str,
    requests: u64,
    skipped: &'a [(&'static str, u64)],
    connections_skipped: &'a [(&'static str, u64)],
    lost: &'a [(&'static str, u64)],
    lost_estimated: f64,
    replays: &'a [(&'static str, u64)],
    queue_depth: i64,
    /// (role, status code, count)
    responses: &'a [(&'static str, u16, u64)],
    /// (role, seconds, count)
    latencies: &'a [(&'static str, f64, u64)],
    status_mismatches: u64,
    body_mismatches: u64,
    unpaired: &'a [(&'static str, u64)],
    cancelled: &'a [(&'static str, u64)],
}

impl Traffic<'_> {
    fn apply(&self, metrics: &Metrics) {
        let target = self.target.to_owned();
        let labels = TargetLabels {
            target: target.clone(),
        };
        metrics
            .requests
            .get_or_create(&labels)
            .inc_by(self.requests);
        let shadow = |role: &str| {
            if role == "primary" {
                String::new()
            } else {
                "shadow".to_owned()
            }
        };
        metrics
            .replay_queue_depth
            .get_or_create(&TargetShadowLabels {
                target: target.clone(),
                shadow: shadow("shadow"),
            })
            .set(self.queue_depth);
        metrics
            .requests_lost_estimated
            .get_or_create(&labels)
            .inc_by(self.lost_estimated);
        for (kind, n) in [
            ("status", self.status_mismatches),
            ("body", self.body_mismatches),
        ] {
            metrics
                .mismatches
                .get_or_create(&TargetKindLabels {
                    target: target.clone(),
                    shadow: shadow("shadow"),
                    kind,
                })
                .inc_by(n);
        }
        for (family, counts) in [
            (&metrics.requests_skipped, self.skipped),
            (&metrics.connections_skipped, self.connections_skipped),
            (&metrics.requests_lost, self.lost),
            (&metrics.responses_unpaired, self.unpaired),
        ] {
            for &(reason, n) in counts {
                let labels = TargetReasonLabels {
                    target: target.clone(),
                    reason,
                };
                family.get_or_create(&labels).inc_by(n);
            }
        }
        for &(reason, n) in self.cancelled {
            let labels = TargetShadowReasonLabels {
                target: target.clone(),
                shadow: shadow("shadow"),
                reason,
            };
            metrics
                .comparisons_cancelled
                .get_or_create(&labels)
                .inc_by(n);
        }
        for &(outcome, n) in self.replays {
            let labels = TargetOutcomeLabels {
                target: target.clone(),
                shadow: shadow("shadow"),
                outcome,
            };
            metrics.replays.get_or_create(&labels).inc_by(n);
        }
        for &(role, code, n) in self.responses {
            let labels = TargetRoleCodeLabels {
                target: target.clone(),
                role,
                shadow: shadow(role),
                code,
            };
            metrics.responses.get_or_create(&labels).inc_by(n);
        }
        for &(role, seconds, n) in self.latencies {
            let labels = TargetRoleLabels {
                target: target.clone(),
                role,
                shadow: shadow(role),
            };
            let histogram = metrics.response_duration.get_or_create(&labels);
            for _ in 0..n {
                histogram.observe(seconds);
            }
        }
    }
}

const SEARCH: Traffic<'static> = Traffic {
    target: "search",
    requests: 1000,
    skipped: &[("sampled_out", 880), ("method", 20)],
    // Connections, outside the requests' accounting.
    connections_skipped: &[("tls", 3), ("upgrade", 1)],
    lost: &[("gap", 2), ("reset", 1)],
    lost_estimated: 4.6,
    replays: &[("ok", 90), ("error", 3), ("timeout", 2), ("dropped", 1)],
    queue_depth: 2,
    // 1060 primary responses, 1000 of them paired (timed below), 60 unpaired.
    responses: &[
        ("primary", 200, 1050),
        ("primary", 503, 10),
        ("shadow", 200, 85),
        ("shadow", 500, 5),
    ],
    // Buckets are 0.0001 * 2^i: primary 600 in (1.6ms, 3.2ms], 390 in (3.2ms, 6.4ms], 10 in
    // (51.2ms, 102.4ms]; shadow 45 in (6.4ms, 12.8ms], 40 in (12.8ms, 25.6ms], 5 in
    // (204.8ms, 409.6ms].
    latencies: &[
        ("primary", 0.003, 600),
        ("primary", 0.005, 390),
        ("primary", 0.09, 10),
        ("shadow", 0.01, 45),
        ("shadow", 0.02, 40),
        ("shadow", 0.3, 5),
    ],
    status_mismatches: 5,
    body_mismatches: 9,
    unpaired: &[("joined", 40), ("gap", 20)],
    cancelled: &[("gap", 2), ("response_lost", 1)],
};

/// A configured target that has seen nothing: empty histograms.
const IDLE: Traffic<'static> = Traffic {
    target: "checkout",
    requests: 0,
    skipped: &[],
    connections_skipped: &[],
    lost: &[],
    lost_estimated: 0.0,
    replays: &[],
    queue_depth: 0,
    responses: &[],
    latencies: &[],
    status_mismatches: 0,
    body_mismatches: 0,
    unpaired: &[],
    cancelled: &[],
};

/// A shadow slower than the highest bucket: everything in `+Inf`. The primary's 1ms responses
/// fall in (0.8ms, 1.6ms]: P50 1.2ms, P99 1.592ms.
const SLOW: Traffic<'static> = Traffic {
    target: "slow",
    requests: 2,
    skipped: &[],
    connections_skipped: &[],
    lost: &[],
    lost_estimated: 0.0,
    replays: &[("ok", 2)],
    queue_depth: 0,
    responses: &[("primary", 200, 2), ("shadow", 200, 2)],
    latencies: &[("primary", 0.001, 2), ("shadow", 60.0, 2)],
    status_mismatches: 0,
    body_mismatches: 0,
    unpaired: &[],
    cancelled: &[],
};

/// What `GET /metrics` returns (Prometheus text 0.0.4) after `traffic`. A real pipeline with one
/// target per traffic creates the series the daemon exports from start-up (every labelled
/// counter at 0 with each known label value), so the table is tested on those zeros too.
fn exposition(traffic: &[&Traffic<'_>]) -> String {
    let (metrics, registry) = Metrics::new();
    let targets: Vec<TargetConfig> = (8080..)
        .zip(traffic)
        .map(|(port, traffic)| {
            // Never contacted: the replay workers are spawned on a runtime that never runs.
            let shadow = ShadowUrl::parse("http://127.0.0.1:9").unwrap();
            TargetConfig::with_defaults(traffic.target.to_owned(), port, shadow)
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let pipeline = {
        let _entered = runtime.enter();
        let (results, _) = tokio::sync::mpsc::unbounded_channel();
        let tracker = HttpTracker::new(TrackerConfig::default());
        Pipeline::new(
            tracker,
            &targets,
            metrics.clone(),
            None,
            results,
            1,
            Default::default(),
        )
    };
    for traffic in traffic {
        traffic.apply(&metrics);
    }
    let mut openmetrics = String::new();
    prometheus_client::encoding::text::encode(&mut openmetrics, &registry).unwrap();
    drop(pipeline);
    to_prometheus_text(&openmetrics)
}

fn close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
}

#[test]
fn the_daemons_exposition_aggregates_per_target() {
    let text = exposition(&[&SEARCH, &IDLE, &SLOW]);
    assert!(text.contains("mirror_response_duration_seconds_bucket{le=\"+Inf\""));
    let snapshot = Snapshot::from_text(&text).unwrap();
    assert_eq!(
        snapshot.targets.keys().collect::<Vec<_>>(),
        ["checkout", "search", "slow"]
    );
    let search = &snapshot.targets["search"];
    assert_eq!(search.requests, 1000.0);
    assert_eq!(search.skipped_total(), 900.0);
    assert_eq!(search.skipped["sampled_out"], 880.0);
    assert_eq!(search.lost_total(), 3.0);
    assert_eq!(search.shadows["shadow"].mirrored(), 95.0);
    assert_eq!(search.shadows["shadow"].dropped(), 1.0);
    assert_eq!(search.in_flight(&search.shadows["shadow"]), 4.0);
    assert_eq!(search.shadows["shadow"].queue_depth, Some(2.0));
    assert_eq!(search.shadows["shadow"].status_mismatches, 5.0);
    assert_eq!(search.shadows["shadow"].body_mismatches, 9.0);
    // Every known reason is there from start-up; connection skips stay out of the accounting.
    assert_eq!(search.skipped.len(), 9);
    assert!(!search.skipped.contains_key("tls"));
    assert_eq!(search.skipped["too_large"], 0.0);
    assert_eq!(search.connections_skipped_total(), 4.0);
    assert_eq!(search.connections_skipped["tls"], 3.0);
    assert_eq!(search.connections_skipped["http2"], 0.0);
    close(search.lost_estimated, 4.6);
    assert_eq!(search.primary.response_count(), 1060.0);
    assert_eq!(
        search.primary.timed(),
        1000.0,
        "paired: the histogram's count"
    );
    assert_eq!(search.unpaired_total(), 60.0);
    assert_eq!(search.unpaired["joined"], 40.0);
    assert_eq!(search.unpaired.len(), 5);
    assert_eq!(search.shadows["shadow"].cancelled_total(), 3.0);
    assert_eq!(search.shadows["shadow"].cancelled["response_lost"], 1.0);
    assert_eq!(search.shadows["shadow"].cancelled.len(), 7);
    assert_eq!(search.shadows["shadow"].responses.timed(), 90.0);
    assert_eq!(search.primary.server_errors(), 10.0);
    assert_eq!(search.shadows["shadow"].responses.server_errors(), 5.0);
    // 20 exponential buckets plus +Inf.
    assert_eq!(search.primary.buckets.len(), 21);
    // P50: the 500th of 600 in (1.6ms, 3.2ms]; P99: the 990th is the last of (3.2ms, 6.4ms].
    let p50 = search.primary.latency(0.5).unwrap().promql_value();
    close(p50, 0.0016 + 0.0016 * 500.0 / 600.0);
    close(search.primary.latency(0.99).unwrap().promql_value(), 0.0064);
    // Shadow P99: rank 89.1 is 4.1 of 5 into (204.8ms, 409.6ms].
    let p99 = search.shadows["shadow"]
        .responses
        .latency(0.99)
        .unwrap()
        .promql_value();
    close(p99, 0.2048 + 0.2048 * 4.1 / 5.0);

    let idle = &snapshot.targets["checkout"];
    assert_eq!(idle.requests, 0.0);
    assert_eq!(idle.primary.timed(), 0.0);
    assert_eq!(
        idle.connections_skipped_total() + idle.unpaired_total(),
        0.0
    );
    assert_eq!(idle.primary.latency(0.5), None);
    assert_eq!(idle.shadows["shadow"].responses.latency(0.99), None);
    let slow = &snapshot.targets["slow"];
    assert_eq!(
        slow.shadows["shadow"].responses.latency(0.5),
        Some(Quantile::Above(52.4288))
    );
}

#[test]
fn the_table_shows_accounting_latency_and_rates_per_target() {
    let snapshot = Snapshot::from_text(&exposition(&[&SEARCH, &IDLE, &SLOW])).unwrap();
    let table = render(
        &snapshot,
        "http://127.0.0.1:9477/metrics",
        Window::SinceStart,
    );
    let expected = "\
mirror stats: http://127.0.0.1:9477/metrics, totals since the daemon started

target checkout
                     requests  of seen
  seen                      0
  mirrored                  0        -  error 0, ok 0, timeout 0
  dropped                   0        -  replay queue full
  skipped                   0        -
  lost                      0           abandoned before framing
  replay queue              0           waiting now

                      primary   shadow
  responses                 0        0
  P50 latency               -        -
  P99 latency               -        -
  5xx rate                  -        -
  status mismatches                  -  0 of 0 shadow responses
  body mismatches                    -  0 of 0 shadow responses

  verdict  inconclusive  only 0 exchanges compared (minimum 200)

target search
                         requests  of seen
  seen                       1000
  mirrored                     95    9.50%  error 3, ok 90, timeout 2
  dropped                       1    0.10%  replay queue full
  skipped                     900   90.00%
    method                     20    2.00%
    sampled_out               880   88.00%
  in flight                     4    0.40%  replays not finished yet
  lost                          3           abandoned before framing
    gap                         2
    reset                       1
  lost (estimated)             ~5           estimate: requests lost whole in gaps, not in seen
  connections skipped           4           connections no longer mirrored
    tls                         3
    upgrade                     1
  replay queue                  2           waiting now

                          primary   shadow
  responses                  1060       90
  paired                     1000           94.34% of primary responses: P50/P99 of these only
  unpaired                     60           gap 20, joined 40
  P50 latency              2.93ms   12.8ms
  P99 latency              6.40ms    373ms
  5xx rate                  0.94%    5.56%
  status mismatches                  5.56%  5 of 90 shadow responses
  body mismatches                   10.00%  9 of 90 shadow responses
  comparisons cancelled                  3  gap 2, response_lost 1

  verdict  inconclusive  only 0 exchanges compared (minimum 200)

target slow
                     requests  of seen
  seen                      2
  mirrored                  2  100.00%  error 0, ok 2, timeout 0
  dropped                   0    0.00%  replay queue full
  skipped                   0    0.00%
  lost                      0           abandoned before framing
  replay queue              0           waiting now

                      primary   shadow
  responses                 2        2
  P50 latency          1.20ms   >52.4s
  P99 latency          1.59ms   >52.4s
  5xx rate              0.00%    0.00%
  status mismatches              0.00%  0 of 2 shadow responses
  body mismatches                0.00%  0 of 2 shadow responses

  verdict  inconclusive  only 0 exchanges compared (minimum 200)
";
    assert_eq!(table, expected, "\n{table}");
}

#[test]
fn watch_frames_show_what_happened_since_the_previous_scrape() {
    let before = Snapshot::from_text(&exposition(&[&SEARCH])).unwrap();
    let more = Traffic {
        requests: 1100,
        skipped: &[("sampled_out", 970), ("method", 20)],
        connections_skipped: &[("tls", 5), ("upgrade", 1)],
        lost_estimated: 6.6,
        replays: &[("ok", 97), ("error", 3), ("timeout", 2), ("dropped", 1)],
        // 110 more primary responses: 100 paired (timed below), 10 unpaired after a gap.
        responses: &[
            ("primary", 200, 1150),
            ("primary", 503, 20),
            ("shadow", 200, 90),
            ("shadow", 500, 7),
        ],
        latencies: &[
            ("primary", 0.003, 600),
            ("primary", 0.005, 390),
            ("primary", 0.09, 10),
            // The 100 new primary responses all took ~40ms.
            ("primary", 0.04, 100),
            ("shadow", 0.01, 45),
            ("shadow", 0.02, 40),
            ("shadow", 0.3, 5),
            ("shadow", 0.02, 7),
        ],
        status_mismatches: 6,
        unpaired: &[("joined", 40), ("gap", 30)],
        cancelled: &[("gap", 4), ("response_lost", 1)],
        ..SEARCH
    };
    let after = Snapshot::from_text(&exposition(&[&more])).unwrap();
    let delta = after.since(&before);
    let search = &delta.targets["search"];
    assert_eq!(search.requests, 100.0);
    assert_eq!(search.skipped["sampled_out"], 90.0);
    assert_eq!(search.skipped["method"], 0.0);
    assert_eq!(search.shadows["shadow"].mirrored(), 7.0);
    assert_eq!(
        search.shadows["shadow"].queue_depth,
        Some(2.0),
        "gauges are not differenced"
    );
    assert_eq!(search.primary.server_errors(), 10.0);
    assert_eq!(search.primary.response_count(), 110.0);
    assert_eq!(search.primary.timed(), 100.0);
    assert_eq!(search.unpaired["gap"], 10.0);
    assert_eq!(search.unpaired["joined"], 0.0);
    assert_eq!(search.connections_skipped["tls"], 2.0);
    assert_eq!(search.shadows["shadow"].cancelled["gap"], 2.0);
    close(search.lost_estimated, 2.0);
    assert_eq!(search.shadows["shadow"].responses.server_errors(), 2.0);
    assert_eq!(search.shadows["shadow"].status_mismatches, 1.0);
    assert_eq!(search.shadows["shadow"].body_mismatches, 0.0);
    // Only the last interval's latencies count: all 100 in (25.6ms, 51.2ms].
    let p50 = search.primary.latency(0.5).unwrap().promql_value();
    close(p50, 0.0256 + 0.0256 * 0.5);

    let table = render(&delta, "u", Window::Last(Duration::from_secs(2)));
    assert!(table.starts_with("mirror stats: u, last 2.0s\n"), "{table}");
    assert!(
        table.contains("  seen                        100           50.0/s\n"),
        "{table}"
    );
    assert!(
        table.contains("  5xx rate                  9.09%   28.57%\n"),
        "{table}"
    );
    assert!(!table.contains("in flight"), "{table}");
    // The new counters are differenced too; reasons without events in the interval are left out.
    for line in [
        "  lost (estimated)             ~2           estimate: requests lost whole in gaps, not in \
         seen\n",
        "  connections skipped           2           connections no longer mirrored\n",
        "\n    tls                         2\n  replay queue",
        "  paired                      100           90.91% of primary responses: P50/P99 of these \
         only\n  unpaired                     10           gap 10\n",
        "  comparisons cancelled                  2  gap 2\n",
    ] {
        assert!(table.contains(line), "{line:?} in\n{table}");
    }
    assert!(!table.contains("method"), "{table}");
}

#[test]
fn a_restarted_daemon_counts_from_zero_again() {
    let before = Snapshot::from_text(&exposition(&[&SEARCH])).unwrap();
    let restarted = Traffic {
        requests: 10,
        skipped: &[("sampled_out", 9)],
        replays: &[("ok", 1)],
        ..IDLE
    };
    let after = Snapshot::from_text(&exposition(&[&Traffic {
        target: "search",
        ..restarted
    }]))
    .unwrap();
    let search = &after.since(&before).targets["search"];
    assert_eq!(search.requests, 10.0);
    assert_eq!(search.skipped["sampled_out"], 9.0);
    assert_eq!(search.shadows["shadow"].mirrored(), 1.0);
    // New targets are taken whole; vanished ones disappear.
    let fresh = Snapshot::from_text(&exposition(&[&SLOW])).unwrap();
    let delta = fresh.since(&before);
    assert_eq!(delta.targets.keys().collect::<Vec<_>>(), ["slow"]);
    assert_eq!(delta.targets["slow"].requests, 2.0);
}

#[test]
fn foreign_and_partial_samples_are_ignored() {
    let text = "\
process_cpu_seconds_total 12.5
http_requests_total{target=\"search\"} 99
mirror_requests_total{target=\"a\"} 3
mirror_requests_skipped_total{target=\"a\"} 7
mirror_responses_total{target=\"a\",role=\"canary\",code=\"200\"} 4
mirror_response_duration_seconds_bucket{target=\"a\",role=\"primary\",le=\"oops\"} 1
mirror_response_duration_seconds_bucket{target=\"a\",role=\"primary\",le=\"0.5\"} 1
mirror_response_duration_seconds_bucket{target=\"a\",role=\"primary\",le=\"+Inf\"} 2
mirror_response_duration_seconds_sum{target=\"a\",role=\"primary\"} 1.2
mirror_response_duration_seconds_count{target=\"a\",role=\"primary\"} 2
";
    let snapshot = Snapshot::from_text(text).unwrap();
    assert_eq!(snapshot.targets.keys().collect::<Vec<_>>(), ["a"]);
    let a = &snapshot.targets["a"];
    assert_eq!(a.requests, 3.0);
    assert_eq!(a.skipped_total(), 0.0, "no reason label: not attributable");
    assert_eq!(a.primary.response_count(), 0.0);
    assert!(a.shadows.is_empty(), "role=\"canary\" is no shadow");
    assert_eq!(
        a.primary.buckets,
        [
            Bucket {
                upper_bound: 0.5,
                count: 1.0
            },
            Bucket {
                upper_bound: f64::INFINITY,
                count: 2.0
            }
        ]
    );
    assert_eq!(a.primary.latency(0.99), Some(Quantile::Above(0.5)));
}

#[test]
fn shed_packets_are_shown_and_differenced() {
    let scrape = |shed: u64| {
        format!(
            "mirror_classifier_packets_total{{reason=\"matched\"}} 50\n\
             mirror_classifier_packets_total{{reason=\"shed\"}} {shed}\n\
             mirror_requests_total{{target=\"a\"}} 3\n"
        )
    };
    let before = Snapshot::from_text(&scrape(400)).unwrap();
    let after = Snapshot::from_text(&scrape(1000)).unwrap();
    assert_eq!(before.shed_packets, 400.0);
    let last = after.since(&before);
    assert_eq!(last.shed_packets, 600.0);
    let text = render(
        &last,
        "http://x/metrics",
        Window::Last(Duration::from_secs(2)),
    );
    assert!(
        text.ends_with(
            "\nshed: 600 packets counted, not recorded, while a shadow could take no more\n"
        ),
        "{text}"
    );
    let quiet = render(
        &before.since(&before),
        "http://x/metrics",
        Window::SinceStart,
    );
    assert!(!quiet.contains("shed"), "{quiet}");
}

#[test]
fn a_broken_exposition_is_an_error_not_a_half_table() {
    let error =
        Snapshot::from_text("mirror_requests_total{target=\"a\"} 3\nmirror_x{ 1\n").unwrap_err();
    assert_eq!(error.to_string(), "line 2: expected a label name");
}

/// Prints the exposition the daemon would serve, to refresh the fixture of
/// `tests/stats_cli.rs`: `cargo test -p mirror-userspace print_fixture -- --ignored --nocapture`.
#[test]
#[ignore = "prints the end-to-end test's fixture; nothing to assert"]
fn print_fixture() {
    print!("{}", exposition(&[&SEARCH, &IDLE]));
}
