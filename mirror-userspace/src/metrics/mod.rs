//! Prometheus metrics (contract: the README's "Metrics") and the HTTP endpoint that serves them
//! ([`server`]). Metric names and labels are fixed: dashboards, alerts and canary analysis
//! depend on them.
//!
//! Counters of the classifier and the ring reader are read at scrape time by
//! [`CaptureCollector`]; everything else is updated by the pipeline as events happen.

pub mod server;

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::capture::{KernelCounterReader, ReaderStats};
use mirror_common::Counter as KernelCounter;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetReasonLabels {
    pub target: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetDirectionLabels {
    pub target: String,
    pub direction: &'static str,
}

/// Per-shadow families carry the shadow's name (`shadow` for `shadow = "URL"`); the
/// primary's series of the families shared with shadows carry `shadow=""`, which PromQL reads
/// as no label (match primary and shadow series with `ignoring(shadow)`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetShadowLabels {
    pub target: String,
    pub shadow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetShadowReasonLabels {
    pub target: String,
    pub shadow: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetOutcomeLabels {
    pub target: String,
    pub shadow: String,
    pub outcome: &'static str,
}

/// `role` = primary, shadow (a candidate) or baseline.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetRoleLabels {
    pub target: String,
    pub role: &'static str,
    pub shadow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetRoleCodeLabels {
    pub target: String,
    pub role: &'static str,
    pub shadow: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetKindLabels {
    pub target: String,
    pub shadow: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

fn duration_histogram() -> Histogram {
    // 100 µs .. ~52 s: wire latencies of fast caches up to timed-out shadows.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

type HistogramFamily = Family<TargetRoleLabels, Histogram, fn() -> Histogram>;

/// A counter of estimates (fractions of a request).
pub type EstimateCounter = Counter<f64, std::sync::atomic::AtomicU64>;

/// Handles to every metric the pipeline updates. Cloning shares the underlying values.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub packets: Family<DirectionLabels, Counter>,
    pub capture_bytes: Family<DirectionLabels, Counter>,
    pub tcp_streams_active: Gauge,
    pub tcp_gaps: Counter,
    pub tcp_streams_evicted: Family<ReasonLabels, Counter>,
    /// Retransmitted bytes that differed from the bytes first captured.
    pub tcp_conflicting_bytes: Counter,
    /// Gaps (and their bytes) per target and direction.
    pub target_gaps: Family<TargetDirectionLabels, Counter>,
    pub target_gap_bytes: Family<TargetDirectionLabels, Counter>,
    pub requests: Family<TargetLabels, Counter>,
    pub parse_errors: Family<TargetLabels, Counter>,
    pub requests_skipped: Family<TargetReasonLabels, Counter>,
    /// Extra (not in the contract table): requests abandoned in progress, by reason.
    pub requests_lost: Family<TargetReasonLabels, Counter>,
    /// Requests estimated lost in gaps and unframed bytes (never part of the accounting).
    pub requests_lost_estimated: Family<TargetLabels, EstimateCounter>,
    pub connections_skipped: Family<TargetReasonLabels, Counter>,
    pub responses_unpaired: Family<TargetReasonLabels, Counter>,
    pub comparisons_cancelled: Family<TargetShadowReasonLabels, Counter>,
    pub replays: Family<TargetOutcomeLabels, Counter>,
    pub replay_queue_depth: Family<TargetShadowLabels, Gauge>,
    /// Connections opened to each shadow: replays per connection is `ok` replays over this.
    pub shadow_connections_opened: Family<TargetShadowLabels, Counter>,
    pub response_duration: HistogramFamily,
    pub responses: Family<TargetRoleCodeLabels, Counter>,
    pub mismatches: Family<TargetKindLabels, Counter>,
    /// Pairs of responses compared (primary and one shadow), per shadow.
    pub comparisons: Family<TargetShadowLabels, Counter>,
    /// Of those, compared by digest only (not field by field), by reason.
    pub comparisons_digest_only: Family<TargetShadowReasonLabels, Counter>,
    /// 1 per configured shadow, with its role (shadow: a candidate, or baseline).
    pub shadow_info: Family<TargetRoleLabels, Gauge>,
    /// Per target with `pods`: 1 while its pod watch is established (listed and watching),
    /// 0 otherwise (API unreachable, forbidden, re-listing after a loss).
    pub kubernetes_watch_up: Family<TargetLabels, Gauge>,
    /// Pod events (listed, added, modified, deleted) the watch of a target received.
    pub kubernetes_pod_events: Family<TargetLabels, Counter>,
    /// Addresses of a target's pods on this node, as last reported by its watch.
    pub kubernetes_pod_addresses: Family<TargetLabels, Gauge>,
    /// Exchange records of the sink by outcome: written, dropped (queue full), error (write
    /// failed).
    pub sink_records: Family<OutcomeLabels, Counter>,
    /// Bytes the sink wrote to its files.
    pub sink_bytes: Counter,
}

/// `outcome` values of `mirror_sink_records_total`.
pub const SINK_OUTCOMES: [&str; 3] = ["written", "dropped", "error"];

impl Metrics {
    /// Creates every metric and registers it in a new registry.
    pub fn new() -> (Self, Registry) {
        let mut registry = Registry::default();
        let metrics = Self {
            packets: Family::default(),
            capture_bytes: Family::default(),
            tcp_streams_active: Gauge::default(),
            tcp_gaps: Counter::default(),
            tcp_streams_evicted: Family::default(),
            tcp_conflicting_bytes: Counter::default(),
            target_gaps: Family::default(),
            target_gap_bytes: Family::default(),
            requests: Family::default(),
            parse_errors: Family::default(),
            requests_skipped: Family::default(),
            requests_lost: Family::default(),
            requests_lost_estimated: Family::default(),
            connections_skipped: Family::default(),
            responses_unpaired: Family::default(),
            comparisons_cancelled: Family::default(),
            replays: Family::default(),
            replay_queue_depth: Family::default(),
            shadow_connections_opened: Family::default(),
            response_duration: Family::new_with_constructor(duration_histogram),
            responses: Family::default(),
            mismatches: Family::default(),
            comparisons: Family::default(),
            comparisons_digest_only: Family::default(),
            shadow_info: Family::default(),
            kubernetes_watch_up: Family::default(),
            kubernetes_pod_events: Family::default(),
            kubernetes_pod_addresses: Family::default(),
            sink_records: Family::default(),
            sink_bytes: Counter::default(),
        };
        // Every labelled series is there from start-up, at 0: `rate()` and alerts need a
        // first sample before the first event.
        for direction in ["request", "response"] {
            metrics
                .packets
                .get_or_create_owned(&DirectionLabels { direction });
            metrics
                .capture_bytes
                .get_or_create_owned(&DirectionLabels { direction });
        }
        for reason in crate::reassembly::EvictionReason::ALL {
            metrics
                .tcp_streams_evicted
                .get_or_create_owned(&ReasonLabels {
                    reason: reason.as_str(),
                });
        }
        for outcome in SINK_OUTCOMES {
            metrics
                .sink_records
                .get_or_create_owned(&OutcomeLabels { outcome });
        }
        // prometheus-client appends `_total` to counters.
        let r = &mut registry;
        r.register(
            "mirror_packets",
            "TCP segments captured, by direction",
            metrics.packets.clone(),
        );
        r.register(
            "mirror_capture_bytes",
            "TCP payload bytes captured, by direction",
            metrics.capture_bytes.clone(),
        );
        r.register(
            "mirror_tcp_streams_active",
            "TCP connections being reassembled",
            metrics.tcp_streams_active.clone(),
        );
        r.register(
            "mirror_tcp_gaps",
            "Holes in captured TCP streams declared lost",
            metrics.tcp_gaps.clone(),
        );
        r.register(
            "mirror_tcp_streams_evicted",
            "TCP connections evicted, by reason",
            metrics.tcp_streams_evicted.clone(),
        );
        r.register(
            "mirror_tcp_conflicting_bytes",
            "Retransmitted bytes that differed from the bytes captured first",
            metrics.tcp_conflicting_bytes.clone(),
        );
        r.register(
            "mirror_tcp_target_gaps",
            "Holes in captured TCP streams declared lost, by target and direction",
            metrics.target_gaps.clone(),
        );
        r.register(
            "mirror_tcp_target_gap_bytes",
            "Bytes lost in those holes, by target and direction",
            metrics.target_gap_bytes.clone(),
        );
        r.register(
            "mirror_requests",
            "HTTP requests framed off the wire, by target",
            metrics.requests.clone(),
        );
        r.register(
            "mirror_parse_errors",
            "Request bytes that did not parse as HTTP/1.x",
            metrics.parse_errors.clone(),
        );
        r.register(
            "mirror_requests_skipped",
            "Framed requests not replayed, by reason",
            metrics.requests_skipped.clone(),
        );
        r.register(
            "mirror_requests_lost",
            "Requests abandoned part-way (gap, reset, eviction...), by reason",
            metrics.requests_lost.clone(),
        );
        r.register(
            "mirror_requests_lost_estimated",
            "Estimate of the requests lost whole in gaps or unframed bytes (bytes over the \
             target's mean request size); not part of the accounting",
            metrics.requests_lost_estimated.clone(),
        );
        r.register(
            "mirror_connections_skipped",
            "Connections whose requests stopped being mirrored, by reason",
            metrics.connections_skipped.clone(),
        );
        r.register(
            "mirror_responses_unpaired",
            "Primary responses not paired with a request (no latency sample, no comparison), \
             by why their connection was out of sync",
            metrics.responses_unpaired.clone(),
        );
        r.register(
            "mirror_comparisons_cancelled",
            "Replayed requests whose comparison with the primary could not be made, by shadow and reason",
            metrics.comparisons_cancelled.clone(),
        );
        r.register(
            "mirror_comparisons",
            "Pairs of responses compared, the primary's and one shadow's",
            metrics.comparisons.clone(),
        );
        r.register(
            "mirror_comparisons_digest_only",
            "Compared pairs whose bodies were compared by digest only, not field by field, by reason",
            metrics.comparisons_digest_only.clone(),
        );
        r.register(
            "mirror_shadow_info",
            "1 per configured shadow; role is shadow (a candidate) or baseline",
            metrics.shadow_info.clone(),
        );
        r.register(
            "mirror_replays",
            "Requests handed to each shadow, by outcome (ok, error, timeout, dropped)",
            metrics.replays.clone(),
        );
        r.register(
            "mirror_replay_queue_depth",
            "Requests waiting in each shadow's replay queue",
            metrics.replay_queue_depth.clone(),
        );
        r.register(
            "mirror_shadow_connections_opened",
            "Connections opened to each shadow (replays reuse them while the shadow keeps them open)",
            metrics.shadow_connections_opened.clone(),
        );
        r.register(
            "mirror_response_duration_seconds",
            "Last request byte to first response byte, primary (on the wire), shadows and baseline",
            metrics.response_duration.clone(),
        );
        r.register(
            "mirror_responses",
            "Responses by role (primary, shadow, baseline), shadow and status code",
            metrics.responses.clone(),
        );
        r.register(
            "mirror_response_mismatches",
            "Shadow responses that differ from the primary's, by shadow and kind (status, body)",
            metrics.mismatches.clone(),
        );
        // Their series are created, at 0, for every target with `pods` when its watch starts
        // (`kubernetes::PodWatches`).
        r.register(
            "mirror_kubernetes_watch_up",
            "1 while the pod watch of a target with `pods` is established, 0 while the \
             Kubernetes API cannot be reached (the target records its last known pods, or only \
             its addresses before the first list)",
            metrics.kubernetes_watch_up.clone(),
        );
        r.register(
            "mirror_kubernetes_pod_events",
            "Pod events (listed, added, modified, deleted) received by the pod watch of a target",
            metrics.kubernetes_pod_events.clone(),
        );
        r.register(
            "mirror_kubernetes_pod_addresses",
            "Addresses of the pods on this node that a target with `pods` records",
            metrics.kubernetes_pod_addresses.clone(),
        );
        r.register(
            "mirror_sink_records",
            "Exchange records of the sink ([sink]), by outcome (written, dropped: queue full, \
             error: write failed)",
            metrics.sink_records.clone(),
        );
        r.register(
            "mirror_sink_bytes",
            "Bytes the exchange sink wrote to its files",
            metrics.sink_bytes.clone(),
        );
        let build_info: Family<VersionLabels, Gauge> = Family::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("mirror_build_info", "Build information", build_info);
        (metrics, registry)
    }
}

/// Reports the classifier's and the ring reader's counters at scrape time:
/// `mirror_capture_drops_total{reason}` (records/segments lost before reassembly) and
/// `mirror_capture_lost_bytes_total{reason}`, plus the classifier's own packet counters.
pub struct CaptureCollector {
    kernel: KernelCounterReader,
    reader: Arc<ReaderStats>,
    /// The last successful read, reported if a later read fails (counters never go back).
    last: Mutex<crate::capture::KernelCounters>,
}

impl CaptureCollector {
    pub fn new(kernel: KernelCounterReader, reader: Arc<ReaderStats>) -> Self {
        Self {
            kernel,
            reader,
            last: Mutex::default(),
        }
    }
}

impl fmt::Debug for CaptureCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureCollector").finish_non_exhaustive()
    }
}

fn encode_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&'static str, u64)],
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (reason, value) in values {
        let labels = ReasonLabels { reason };
        ConstCounter::new(*value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for CaptureCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let kernel = {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if let Ok(now) = self.kernel.read() {
                *last = now;
            }
            *last
        };
        encode_family(
            &mut encoder,
            "mirror_capture_drops",
            "Captured records or segments lost before reassembly, by reason",
            &[
                ("ringbuf_full", kernel.get(KernelCounter::RingbufFull)),
                ("copy_error", kernel.get(KernelCounter::CopyErrors)),
                ("decode_error", self.reader.decode_errors()),
                ("consumer_full", self.reader.consumer_dropped()),
            ],
        )?;
        encode_family(
            &mut encoder,
            "mirror_capture_lost_bytes",
            "Payload bytes seen by the classifier but not delivered, by reason",
            &[
                (
                    "ringbuf_full_or_copy_error",
                    kernel.get(KernelCounter::LostBytes),
                ),
                ("truncated", kernel.get(KernelCounter::TruncatedBytes)),
                // Not recorded on purpose while the target's shadow could take no more.
                ("shed_request", kernel.get(KernelCounter::ShedRequestBytes)),
                (
                    "shed_response",
                    kernel.get(KernelCounter::ShedResponseBytes),
                ),
                // Segments the reader dropped: the queue to the pipeline was full.
                ("consumer_full", self.reader.consumer_dropped_bytes()),
            ],
        )?;
        encode_family(
            &mut encoder,
            "mirror_classifier_packets",
            "Packets the classifier ran on, by outcome",
            &[
                ("seen", kernel.get(KernelCounter::PacketsSeen)),
                ("matched", kernel.get(KernelCounter::PacketsMatched)),
                ("self_traffic", kernel.get(KernelCounter::SelfTraffic)),
                ("sampled_out", kernel.get(KernelCounter::SampledOut)),
                ("shed", kernel.get(KernelCounter::ShedPackets)),
                ("other_address", kernel.get(KernelCounter::OtherAddress)),
                ("header_error", kernel.get(KernelCounter::HeaderErrors)),
                ("ip_fragment", kernel.get(KernelCounter::IpFragments)),
            ],
        )
    }
}
