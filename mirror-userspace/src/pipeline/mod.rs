//! The `mirror run` data path after capture: segments -> [`HttpTracker`] -> per-target
//! [`Policy`] -> [`Rewriter`](crate::rewrite::Rewriter) -> [`Replayer`](crate::replay::Replayer) queue, primary responses and replay results ->
//! [`Comparator`], and every step into [`Metrics`]. It never waits: replay queues are only
//! `try_send`, so a slow or dead shadow costs counted drops, not capture.
//!
//! Accounting (per target): every request framed off the wire (`mirror_requests_total`) ends in
//! exactly one of `mirror_requests_skipped_total{reason}` or `mirror_replays_total{outcome}`
//! (`dropped` included), once its replay finished. Requests abandoned after their head was
//! parsed are in `mirror_requests_lost_total{reason}`; connections whose requests stopped being
//! mirrored in `mirror_connections_skipped_total{reason}` (they have no request behind them);
//! requests hidden whole in gaps are estimated in `mirror_requests_lost_estimated_total`;
//! capture losses are in `mirror_capture_drops_total`. None of those is in the identity.
//!
//! Comparisons: a replayed request is compared with the primary's response only when the
//! tracker proves the pair; otherwise the comparison is cancelled and counted
//! (`mirror_comparisons_cancelled_total{reason}`), and the primary's response is counted in
//! `mirror_responses_unpaired_total{reason}`.

mod evidence;
mod exchange_log;
mod judging;
mod reload;
mod replay_results;
mod shadows;
mod target_metrics;

use evidence::FieldComparer;
pub use evidence::{EvidenceCollector, ShadowRole, SharedEvidence, TargetEvidence};
use exchange_log::ExchangeLog;
use judging::ExchangeNotes;

use shadows::Shadow;
use target_metrics::TargetMetrics;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{
    capture::SelfTraffic,
    compare::{Comparator, ExchangeKey, Observed, ShadowSet},
    config::{HeaderField, SampleBy, TargetConfig},
    hash::HashMap,
    held::BodyBudget,
    http::{
        HttpEvent, HttpRequest, HttpTracker, LossEvent, LossReason, RequestEvent, RequestSummary,
        ResponseEvent, Stats,
    },
    metrics::{DirectionLabels, Metrics, ReasonLabels},
    policy::{Decision, Policy, RequestView, connection_id, rate::TokenBucket},
    random::SplitMix64,
    reassembly::EvictionReason,
    replay::{ReplayJob, ReplayOutcome, ReplayResult},
    segment::{Direction, Segment},
    shed::ShedGate,
    sink::Sink,
    verdict::Policy as VerdictPolicy,
};

impl RequestView for HttpRequest {
    fn method(&self) -> &str {
        HttpRequest::method(self)
    }

    fn target(&self) -> &str {
        HttpRequest::target(self)
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        HttpRequest::header(self, name)
    }
}

/// How long a comparison waits for its other side, and how many may be open.
const COMPARE_TTL_NS: u64 = 30_000_000_000;
const COMPARE_MAX_ENTRIES: usize = 65_536;
/// At most one mismatch log line per target per this interval.
const MISMATCH_LOG_INTERVAL_NS: u64 = 1_000_000_000;
/// At most one "shed" log line per target per this interval (a dead shadow is probed again at
/// every end of its back-off).
const SHED_LOG_INTERVAL_NS: u64 = 60_000_000_000;

struct Target {
    config: TargetConfig,
    policy: Policy,
    /// Candidates and the baseline, in the configuration's order (their index is the one the
    /// comparator knows them by).
    shadows: Vec<Shadow>,
    metrics: TargetMetrics,
    last_mismatch_log_ns: u64,
    shed: ShedGate,
    last_shed_log_ns: Option<u64>,
    /// Which exchanges are compared field by field (`[verdict.diff] max_per_second`; `None`:
    /// all).
    diff_rate: Option<TokenBucket>,
}

// The shadows and their metric handles have no Debug.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("config", &self.config)
            .field("policy", &self.policy)
            .field("last_mismatch_log_ns", &self.last_mismatch_log_ns)
            .field("shed", &self.shed)
            .field("last_shed_log_ns", &self.last_shed_log_ns)
            .field("diff_rate", &self.diff_rate)
            .finish_non_exhaustive()
    }
}

/// Everything between the ring reader and the shadow.
#[derive(Debug)]
pub struct Pipeline {
    tracker: HttpTracker,
    self_traffic: Option<SelfTraffic>,
    results: mpsc::UnboundedSender<ReplayResult>,
    targets: Vec<Target>,
    by_port: HashMap<u16, usize>,
    comparator: Comparator<ExchangeNotes>,
    /// Field-level comparison of held bodies (`None`: digests only).
    comparer: Option<FieldComparer>,
    evidence: SharedEvidence,
    /// Where compared exchanges are written (`[sink]`), when on.
    sink: Option<Sink>,
    metrics: Metrics,
    last_stats: Stats,
    /// Per-request sampling draws (no global RNG: deterministic when seeded).
    random: SplitMix64,
    settings: PipelineSettings,
}

/// What every target and shadow shares.
#[derive(Clone, Debug, Default)]
pub struct PipelineSettings {
    /// Where the evidence behind the verdict is kept (shared with the metrics endpoint).
    pub evidence: SharedEvidence,
    /// How responses are compared and judged (`[verdict]`).
    pub verdict: VerdictPolicy,
    /// Set on every replay (`[replay] marker_header`, with this daemon's name).
    pub marker: Option<HeaderField>,
    /// Where response bodies are held for the field-level comparison (`[limits]
    /// compare_body_bytes`); `None`: digests only.
    pub hold_bodies: Option<BodyBudget>,
}

/// Whether a request may share a connection write with others (see [`crate::replay`]): a safe
/// method on HTTP/1.1 whose replay does not ask the shadow to close the connection.
fn pipelinable(request: &HttpRequest, asks_close: bool) -> bool {
    matches!(request.method(), "GET" | "HEAD" | "OPTIONS")
        && request.version_minor() == 1
        && !asks_close
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl Pipeline {
    /// Builds the per-target state and starts one replay pool per shadow (inside a tokio
    /// runtime). Replay results arrive on `results`. `seed` seeds per-request sampling and is
    /// the clock the first shed windows start at (the daemon passes CLOCK_MONOTONIC).
    pub fn new(
        tracker: HttpTracker,
        targets: &[TargetConfig],
        metrics: Metrics,
        self_traffic: Option<SelfTraffic>,
        results: mpsc::UnboundedSender<ReplayResult>,
        seed: u64,
        settings: PipelineSettings,
    ) -> Self {
        // The configuration validated the policy: a failure here only means digests.
        let comparer = FieldComparer::new(&settings.verdict)
            .inspect_err(|error| warn!(%error, "responses compared by digest only"))
            .ok();
        let mut pipeline = Self {
            tracker,
            self_traffic,
            results,
            targets: Vec::new(),
            by_port: HashMap::default(),
            comparator: Comparator::new(COMPARE_TTL_NS, COMPARE_MAX_ENTRIES),
            comparer,
            sink: None,
            evidence: settings.evidence.clone(),
            metrics,
            last_stats: Stats::default(),
            random: SplitMix64::new(seed),
            settings,
        };
        pipeline.reload(targets, seed);
        pipeline
    }

    fn target_of(&self, server_port: u16) -> Option<usize> {
        self.by_port.get(&server_port).copied()
    }

    /// Feeds one batch of captured segments.
    pub fn on_segments(&mut self, batch: &[Segment]) {
        let mut counts = [(0u64, 0u64); 2];
        for segment in batch {
            let slot = &mut counts[segment.direction as usize];
            slot.0 += u64::from(segment.is_first_chunk());
            slot.1 += segment.payload.len() as u64;
            self.tracker.on_segment(segment);
        }
        for (direction, (packets, bytes)) in [
            (Direction::Request, counts[0]),
            (Direction::Response, counts[1]),
        ] {
            let labels = DirectionLabels {
                direction: match direction {
                    Direction::Request => "request",
                    Direction::Response => "response",
                },
            };
            self.metrics.packets.get_or_create(&labels).inc_by(packets);
            self.metrics
                .capture_bytes
                .get_or_create(&labels)
                .inc_by(bytes);
        }
        self.drain_events();
    }

    /// Whether a shadow's replay queue is more than half full: its workers should run before
    /// more requests are framed.
    pub fn replay_queues_filling(&self) -> bool {
        self.targets.iter().any(|target| {
            target
                .shadows
                .iter()
                .any(|shadow| shadow.replayer.queue_depth() * 2 > shadow.replayer.queue_capacity())
        })
    }

    /// Advances time: idle connections, stale holes, expired comparisons, gauges.
    pub fn on_tick(&mut self, now_ns: u64) {
        self.tracker.on_tick(now_ns);
        self.drain_events();
        let mut expired = Vec::new();
        self.comparator
            .expire(now_ns, |closed| expired.push(closed));
        for closed in expired {
            self.close(closed, "expired");
        }
        for target in &self.targets {
            for shadow in &target.shadows {
                shadow
                    .metrics
                    .queue_depth
                    .set(shadow.replayer.queue_depth() as i64);
            }
        }
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.tracker.poll_event() {
            match event {
                HttpEvent::Request(request) => self.on_request(request),
                HttpEvent::Response(response) => self.on_primary_response(&response),
                HttpEvent::ConnectionSkipped { flow, reason, .. } => {
                    // TLS and HTTP/2 connections hide their requests: the unit is a connection,
                    // outside the requests' accounting.
                    if let Some(target) = self.target_of(flow.server.port()) {
                        self.targets[target]
                            .metrics
                            .connection_skipped(reason)
                            .inc();
                    }
                }
                HttpEvent::Lost(loss) => self.on_loss(&loss),
                HttpEvent::Unpairable {
                    flow,
                    connection,
                    index,
                    reason,
                } => {
                    let key = ExchangeKey {
                        flow,
                        connection,
                        index,
                    };
                    if let Some(closed) = self.comparator.cancel(key) {
                        self.close(closed, reason.as_str());
                    }
                }
                HttpEvent::Gap {
                    flow,
                    direction,
                    len,
                } => {
                    if let Some(target) = self.target_of(flow.server.port()) {
                        let metrics = &self.targets[target].metrics;
                        metrics.gaps[direction as usize].inc();
                        metrics.gap_bytes[direction as usize].inc_by(len);
                    }
                }
                HttpEvent::Unframed { flow, bytes } => {
                    if let Some(target) = self.target_of(flow.server.port()) {
                        self.targets[target].metrics.unframed(bytes);
                    }
                }
            }
        }
        self.update_tcp_metrics();
    }

    fn update_tcp_metrics(&mut self) {
        let stats = self.tracker.stats();
        let before = &self.last_stats;
        self.metrics
            .tcp_gaps
            .inc_by(stats.tcp.gaps.saturating_sub(before.tcp.gaps));
        let conflicting = |stats: &Stats| {
            stats.tcp.conflicting_bytes + stats.http.retransmitted_bytes_conflicting
        };
        self.metrics
            .tcp_conflicting_bytes
            .inc_by(conflicting(&stats).saturating_sub(conflicting(before)));
        for reason in EvictionReason::ALL {
            let delta = stats
                .tcp
                .evicted(reason)
                .saturating_sub(before.tcp.evicted(reason));
            if delta > 0 {
                self.metrics
                    .tcp_streams_evicted
                    .get_or_create(&ReasonLabels {
                        reason: reason.as_str(),
                    })
                    .inc_by(delta);
            }
        }
        self.metrics
            .tcp_streams_active
            .set(self.tracker.active_connections() as i64);
        self.last_stats = stats;
    }

    fn on_loss(&mut self, loss: &LossEvent) {
        let Some(target) = self.target_of(loss.flow.server.port()) else {
            return;
        };
        if loss.direction == Direction::Response {
            // The primary's response is gone: nothing to compare the shadow's with.
            if let Some(index) = loss.request_index {
                let key = ExchangeKey {
                    flow: loss.flow,
                    connection: loss.connection,
                    index,
                };
                if let Some(closed) = self.comparator.cancel(key) {
                    self.close(closed, "response_lost");
                }
            }
            return;
        }
        if loss.reason == LossReason::Malformed {
            self.targets[target].metrics.parse_errors.inc();
        }
        self.targets[target].metrics.lost(loss.reason).inc();
    }

    fn on_request(&mut self, event: RequestEvent) {
        let Some(index) = self.target_of(event.flow.server.port()) else {
            return;
        };
        self.targets[index].metrics.requests.inc();
        self.targets[index]
            .metrics
            .request_bytes(event.request.bytes().len());
        if let Some(reason) = event.skip {
            self.skipped(index, reason.as_str());
            return;
        }
        let random = self.random.next_u64();
        let connection = connection_id(event.flow.client, event.flow.server);
        let target = &mut self.targets[index];
        let decision = target
            .policy
            .decide(&event.request, connection, random, event.last_byte_ns);
        if let Decision::Skip(reason) = decision {
            self.skipped(index, reason.as_str());
            return;
        }
        let key = ExchangeKey {
            flow: event.flow,
            connection: event.connection,
            index: event.index,
        };
        let request = &event.request;
        // Whether this exchange is compared field by field, decided before its replays so that
        // the shadows hold their bodies only then (every shadow alike: the baseline's diff is
        // the candidates' noise reference).
        let field_diff = self.comparer.is_some()
            && target.config.compare_responses
            && event.unpaired.is_none()
            && target
                .diff_rate
                .as_mut()
                .is_none_or(|rate| rate.try_take(event.last_byte_ns));
        let mut accepted: ShadowSet = 0;
        // Shadows the request did not reach, and whether that was an error (not a drop).
        let mut unsent: Vec<(usize, bool)> = Vec::new();
        let mut refused = true;
        for (shadow_index, shadow) in target.shadows.iter_mut().enumerate() {
            // A full queue or a shadow known to be down: count the outcome without preparing a
            // replay nobody will send (keeps a dead or slow shadow cheap for the daemon).
            if let Some(refusal) = shadow.replayer.would_refuse() {
                shadow.replayed(refusal.outcome());
                unsent.push((shadow_index, refusal.outcome() != "dropped"));
                continue;
            }
            let rewritten = match shadow.rewriter.rewrite(request.bytes(), request.head_len()) {
                Ok(rewritten) => rewritten,
                Err(error) if shadow_index == 0 => {
                    // Framing accepted the head, so this is a head the rewriter will not touch
                    // (e.g. obsolete line folding): never replay something we cannot rewrite.
                    // It fails for every shadow alike: the request is skipped.
                    warn!(target = %target.config.name, %error, "request not rewritable");
                    target.shed.on_offered(false);
                    self.skipped(index, "unrewritable");
                    return;
                }
                Err(_) => {
                    shadow.replayed(ReplayOutcome::Error.as_str());
                    unsent.push((shadow_index, true));
                    continue;
                }
            };
            let job = ReplayJob {
                key,
                head: rewritten.head,
                body: rewritten.body,
                is_head: request.method() == "HEAD",
                pipelinable: pipelinable(request, rewritten.asks_close),
                idempotent: crate::replay::is_idempotent(request.method()),
                hold_body: field_diff,
            };
            if shadow.replayer.try_send(job) {
                accepted |= 1 << shadow_index;
                refused = false;
            } else {
                shadow.replayed("dropped");
                unsent.push((shadow_index, false));
            }
        }
        // The target is shed only when every shadow refuses (see `update_shedding`).
        target.shed.on_offered(refused);
        if accepted == 0 || !target.config.compare_responses {
            return;
        }
        if let Some(reason) = event.unpaired {
            // The primary's response will not be paired: no comparison to wait for.
            target.cancelled(accepted, reason.as_str());
        } else {
            let log = self
                .sink
                .as_ref()
                .filter(|sink| sink.is_enabled())
                .map(|sink| {
                    let mut log = ExchangeLog::new(sink, request);
                    for (shadow, error) in unsent {
                        let identity = target.shadows[shadow].identity();
                        if error {
                            log.failed(shadow, identity, ReplayOutcome::Error);
                        } else {
                            log.dropped(shadow, identity);
                        }
                    }
                    Box::new(log)
                });
            let notes = ExchangeNotes {
                diffs: Vec::new(),
                log,
                field_diff,
            };
            if let Some(evicted) = self.comparator.open(
                key,
                index,
                RequestSummary::of(request),
                event.last_byte_ns,
                accepted,
                notes,
            ) {
                self.close(evicted, "expired");
            }
        }
    }

    fn on_primary_response(&mut self, response: &ResponseEvent) {
        let Some(target) = self.target_of(response.flow.server.port()) else {
            return;
        };
        self.primary_response(target, response.head.status());
        if let Some(reason) = response.unpaired {
            self.targets[target].metrics.unpaired(reason).inc();
        }
        if let Some(latency) = response.latency_ns {
            self.targets[target]
                .metrics
                .primary_duration
                .observe(seconds(latency));
        }
        if let Some(index) = response.request_index {
            let key = ExchangeKey {
                flow: response.flow,
                connection: response.connection,
                index,
            };
            // Hashed only when compared (see `BodyDigest`).
            let observed = || Observed {
                status: response.head.status(),
                body_digest: response.body_digest.value(),
                head: response.head.bytes().clone(),
                body: response.body.clone(),
                latency_seconds: response.latency_ns.map(seconds),
            };
            let mut verdicts = Vec::new();
            let closed = self.comparator.on_primary(key, observed, &mut verdicts);
            self.judged(verdicts, closed, response.first_byte_ns);
        }
    }

    /// Re-evaluates which targets the classifier should shed (see [`crate::shed`]) and returns
    /// the changes as (port, shed) for the caller to apply.
    pub fn update_shedding(&mut self, now_ns: u64) -> Vec<(u16, bool)> {
        let mut changes = Vec::new();
        for target in &mut self.targets {
            let load = shadows::load(&target.shadows);
            let Some(state) = target.shed.evaluate(now_ns, &load) else {
                continue;
            };
            changes.push((target.config.port, state.is_some()));
            let Some(reason) = state else {
                self.tracker.expect_gaps(target.config.port);
                debug!(target = %target.config.name, "recording again");
                continue;
            };
            let quiet = target
                .last_shed_log_ns
                .is_some_and(|at| now_ns.saturating_sub(at) < SHED_LOG_INTERVAL_NS);
            if quiet {
                debug!(target = %target.config.name, reason = reason.as_str(), "shed");
            } else {
                target.last_shed_log_ns = Some(now_ns);
                warn!(
                    target = %target.config.name,
                    reason = reason.as_str(),
                    "no shadow can take more: the target's packets are counted, not recorded, \
                     until one can (mirror_classifier_packets_total{{reason=\"shed\"}}; at most \
                     one such line per minute per target)"
                );
            }
        }
        changes
    }

    /// The evidence behind the verdict, for the metrics endpoint.
    pub fn evidence(&self) -> SharedEvidence {
        self.evidence.clone()
    }

    /// Writes every compared exchange to `sink` from now on.
    pub fn set_sink(&mut self, sink: Sink) {
        self.sink = Some(sink);
    }

    /// The sink, to flush it at shutdown.
    pub fn take_sink(&mut self) -> Option<Sink> {
        self.sink.take()
    }

    /// Counters of the core (for logs and the exit summary).
    pub fn stats(&self) -> Stats {
        self.tracker.stats()
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_verdict;
