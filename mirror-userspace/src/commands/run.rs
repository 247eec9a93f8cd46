//! `mirror run`: the daemon. Wires capture, the pipeline, replay and the metrics endpoint, and
//! shuts down cleanly on SIGINT/SIGTERM (the classifier is detached; TCX would detach it even
//! on SIGKILL).

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{debug, error, info, warn};

use crate::{
    capture::{Capture, CaptureConfig, SAMPLE_SCALE, spawn_reader},
    cli::RunArgs,
    config::{Config, ConfigWatch, RunOverrides, SampleBy, WatchError},
    held::BodyBudget,
    http::{HttpConfig, HttpTracker, TrackerConfig},
    kubernetes::{PodUpdate, PodWatches, node_name_from_env},
    metrics::{CaptureCollector, Metrics, server},
    pipeline::{EvidenceCollector, Pipeline, PipelineSettings, SharedEvidence},
    reassembly::ReassemblyConfig,
    scopes::{ScopeChange, Scopes},
    sink::Sink,
};

/// The header every replay carries (`[replay] marker_header`), its value this daemon's node
/// (`NODE_NAME`, set by the DaemonSet) or host name: a shadow's logs then tell which daemon sent
/// a replay.
fn replay_marker(config: &Config) -> Option<crate::config::HeaderField> {
    let name = config.replay.marker_header.as_deref()?;
    let node = std::env::var("NODE_NAME")
        .ok()
        .filter(|node| !node.is_empty())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|host| host.into_string().ok())
        })
        .unwrap_or_else(|| "mirror".to_owned());
    crate::config::HeaderField::new(name, &node)
        .or_else(|_| crate::config::HeaderField::new(name, "mirror"))
        .ok()
}

/// Resolves when the watched configuration file changed (never without a watch).
async fn config_changed(watch: &mut Option<ConfigWatch>) -> Result<(), WatchError> {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

/// Hands scope changes to the classifier; a failure is logged (the port keeps its last scope).
fn apply_scopes(capture: &mut Capture, changes: Vec<ScopeChange>) {
    for (port, nets) in changes {
        if let Err(failure) = capture.classifier().set_scope(port, nets.as_deref()) {
            error!(%failure, port, "scoping a target port in the classifier");
        }
    }
}

/// New pod addresses of a target: its scope in the classifier follows, unless a reload
/// replaced the watch that sent them.
fn apply_pods(capture: &mut Capture, scopes: &mut Scopes, watches: &PodWatches, update: PodUpdate) {
    if !watches.is_current(&update) {
        return;
    }
    info!(
        target = %update.target,
        addresses = ?update.addresses,
        "the target's pods on this node changed"
    );
    if let Some(change) = scopes.pods_changed(&update.target, update.addresses) {
        apply_scopes(capture, vec![change]);
    }
}

/// How long the exchange sink may take to write what is queued at shutdown.
const SINK_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Replay results handled per turn of the event loop, so that captured batches wait at most
/// this many behind them.
const MAX_RESULTS_PER_TURN: usize = 256;
/// Captured segments framed between two looks at the replay queues.
const SEGMENTS_PER_TURN: usize = 256;

/// CLOCK_MONOTONIC now, the clock of the kernel's segment timestamps.
pub fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(Duration::ZERO, Duration::from);
    now.as_nanos() as u64
}

fn effective_config(args: &RunArgs) -> anyhow::Result<Config> {
    let file = args.config.as_ref().map(Config::load).transpose()?;
    let overrides = RunOverrides {
        interfaces: args.interfaces.clone(),
        port: args.port,
        shadow: args.shadow.clone(),
        sample_percent: args.sample,
        allow_writes: args.allow_writes,
        metrics_addr: args.metrics_addr.clone(),
    };
    Ok(Config::with_overrides(file, &overrides)?)
}

/// Per target port, the share of connections the classifier keeps: targets sampled by
/// connection are sampled in the kernel, so unsampled connections never reach userspace (their
/// cost is one map lookup per packet); the others are captured whole.
fn kernel_sampling(config: &Config) -> Vec<(u16, u32)> {
    config
        .targets
        .iter()
        .map(|target| {
            let ppm = if target.sample_by == SampleBy::Connection {
                (target.sample_percent * f64::from(SAMPLE_SCALE) / 100.0).round() as u32
            } else {
                SAMPLE_SCALE
            };
            (target.port, ppm)
        })
        .collect()
}

fn tracker_config(config: &Config) -> TrackerConfig {
    TrackerConfig {
        reassembly: ReassemblyConfig {
            reassembly_memory_bytes: config.limits.reassembly_memory_bytes,
            max_connections: config.limits.max_connections,
            idle_timeout_secs: config.limits.idle_timeout_secs,
            ..ReassemblyConfig::default()
        },
        http: HttpConfig {
            max_message_bytes: config.limits.max_message_bytes,
            replay_marker: config
                .replay
                .marker_header
                .as_ref()
                .map(|name| name.to_ascii_lowercase().into_bytes().into()),
            // The pipeline labels only the requests it compares (`RequestSummary::of`).
            label_responses: false,
            ..HttpConfig::default()
        },
    }
}

/// SIGHUP: re-reads the config file and applies the targets (sampling, shadow, filters,
/// headers, ports) without detaching or losing capture state. A bad file is rejected with a log
/// line and the running configuration stays. Returns the new configuration when applied.
async fn reload(
    args: &RunArgs,
    running: &Config,
    capture: &mut Capture,
    pipeline: &mut Pipeline,
    scopes: &mut Scopes,
    watches: &mut PodWatches,
) -> Option<Config> {
    if args.config.is_none() {
        warn!("SIGHUP ignored: no --config file to reload");
        return None;
    }
    let new = match effective_config(args) {
        Ok(new) => new,
        Err(failure) => {
            error!("configuration reload rejected, the running configuration stays: {failure:#}");
            return None;
        }
    };
    if new == *running {
        debug!("configuration unchanged");
        return None;
    }
    if let Err(failure) = watches.prepare(&new.targets).await {
        error!("configuration reload rejected, the running configuration stays: {failure}");
        return None;
    }
    if new.capture != running.capture
        || new.limits != running.limits
        || new.metrics != running.metrics
        || new.sink != running.sink
        || new.verdict != running.verdict
    {
        warn!(
            "[capture], [limits], [metrics], [sink] and [verdict] changes take effect at the \
             next restart"
        );
    }
    let ports = |config: &Config| config.targets.iter().map(|t| t.port).collect::<Vec<_>>();
    // Scopes that narrow go in before the ports change and scopes that widen after: a port
    // that becomes a scoped target is scoped from its first packet, and a port that stops
    // being one is no target any more when its scope goes.
    let (narrowing, widening): (Vec<ScopeChange>, Vec<ScopeChange>) = scopes
        .configure(&new.targets)
        .into_iter()
        .partition(|(_, nets)| nets.is_some());
    apply_scopes(capture, narrowing);
    if let Err(failure) = capture
        .classifier()
        .set_ports(&ports(running), &kernel_sampling(&new))
    {
        error!(%failure, "configuration reload rejected: updating the target ports");
        return None;
    }
    apply_scopes(capture, widening);
    // A target whose `pods` changed gets a new watch; the others keep theirs.
    watches.configure(&new.targets);
    pipeline.reload(&new.targets, monotonic_ns());
    info!(targets = new.targets.len(), "configuration reloaded");
    Some(new)
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = effective_config(&args)?;
    let (metrics, mut registry) = Metrics::new();
    // Opened before anything is attached: a sink that cannot write fails the start.
    let sink = Sink::start(&config.sink, &metrics).context("opening the exchange sink")?;
    // Targets with `pods` need this node's name and a Kubernetes client: checked before
    // anything is attached.
    let (mut watches, mut pod_updates) = PodWatches::new(&metrics, node_name_from_env(), None);
    watches.prepare(&config.targets).await?;
    let mut scopes = Scopes::default();
    let initial_scopes = scopes.configure(&config.targets);
    // Sampling and scopes go in before the first attach: no packet is recorded under
    // settings the configuration does not have.
    let mut capture = Capture::start_configured(
        &CaptureConfig {
            interfaces: config.capture.interfaces.clone(),
            ports: config.targets.iter().map(|target| target.port).collect(),
            ring_buffer_bytes: config.capture.ring_buffer_bytes,
        },
        |classifier| {
            classifier.set_ports(&[], &kernel_sampling(&config))?;
            for (port, nets) in initial_scopes {
                classifier.set_scope(port, nets.as_deref())?;
            }
            Ok(())
        },
    )
    .context("starting capture")?;
    // Until a watch reports, its target records only its `addresses` (fail closed).
    watches.configure(&config.targets);
    let reader = capture
        .take_reader()
        .context("opening the ring buffer")?
        .context("ring buffer already taken")?;
    // Beyond `capture_queue_bytes` queued, batches are dropped and counted
    // (`mirror_capture_drops_total{reason="consumer_full"}`, their payload in
    // `mirror_capture_lost_bytes_total{reason="consumer_full"}`).
    let (mut batches, reader_stats, reader_task) =
        spawn_reader(reader, config.limits.capture_queue_bytes);
    let evidence = SharedEvidence::default();
    registry.register_collector(Box::new(EvidenceCollector::new(evidence.clone())));
    registry.register_collector(Box::new(CaptureCollector::new(
        capture.classifier().counter_reader(),
        Arc::clone(&reader_stats),
    )));
    let (metrics_addr, serve) = server::bind(
        config.metrics.listen,
        Arc::new(registry),
        config.verdict.clone(),
    )
    .await
    .context("starting the metrics endpoint")?;
    let mut serve = std::pin::pin!(serve);

    let (results_tx, mut results) = mpsc::unbounded_channel();
    let mut pipeline = Pipeline::new(
        HttpTracker::new(tracker_config(&config)),
        &config.targets,
        metrics,
        Some(capture.classifier().self_traffic()),
        results_tx,
        monotonic_ns(),
        PipelineSettings {
            evidence,
            verdict: config.verdict.clone(),
            marker: replay_marker(&config),
            hold_bodies: (config.limits.compare_body_bytes > 0)
                .then(|| BodyBudget::new(config.limits.compare_body_bytes)),
        },
    );
    pipeline.set_sink(sink);
    // Handlers before the start-up lines: a signal sent as soon as they are read must be handled.
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    for target in &config.targets {
        for shadow in &target.shadows {
            info!(
                target = %target.name,
                port = target.port,
                shadow = %shadow.name,
                url = %shadow.url.authority(),
                baseline = shadow.baseline,
                sample_percent = target.sample_percent,
                "mirroring"
            );
        }
    }
    info!(%metrics_addr, "metrics at http://{metrics_addr}/metrics");

    // ConfigMap updates (and edits of the file) apply by themselves; SIGHUP still works.
    let mut watch = args.config.as_deref().and_then(|path| {
        ConfigWatch::new(path)
            .inspect_err(|failure| {
                warn!(%failure, "configuration changes need SIGHUP: the file cannot be watched");
            })
            .ok()
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut config = config;
    loop {
        tokio::select! {
            batch = batches.recv() => {
                let Some(batch) = batch else { break };
                // One thread frames and replays: while it frames a batch, no replay worker
                // takes a job. A batch after a stall (up to 4096 records) would otherwise queue
                // its replays all at once and overflow a queue the workers keep up with.
                for slice in batch.chunks(SEGMENTS_PER_TURN) {
                    pipeline.on_segments(slice);
                    if pipeline.replay_queues_filling() {
                        tokio::task::yield_now().await;
                    }
                }
            }
            Some(result) = results.recv() => {
                // One result per replay: those already waiting are taken in the same turn of
                // the loop (one clock read, one shedding check) rather than a turn each.
                let now_ns = monotonic_ns();
                pipeline.on_replay_result(result, now_ns);
                for _ in 1..MAX_RESULTS_PER_TURN {
                    let Ok(result) = results.try_recv() else { break };
                    pipeline.on_replay_result(result, now_ns);
                }
            }
            _ = tick.tick() => {
                pipeline.on_tick(monotonic_ns());
                // Pods come and go: attach to links matching the patterns as they appear.
                if let Err(failure) = capture.refresh() {
                    error!(%failure, "following interface changes");
                }
            }
            changed = config_changed(&mut watch) => {
                if let Err(failure) = changed {
                    warn!(%failure, "configuration changes need SIGHUP from now on");
                    watch = None;
                } else if let Some(reloaded) = reload(
                    &args,
                    &config,
                    &mut capture,
                    &mut pipeline,
                    &mut scopes,
                    &mut watches,
                )
                .await
                {
                    config = reloaded;
                }
            }
            Some(update) = pod_updates.recv() => {
                apply_pods(&mut capture, &mut scopes, &watches, update);
            }
            _ = hangup.recv() => {
                let reloaded = reload(
                    &args,
                    &config,
                    &mut capture,
                    &mut pipeline,
                    &mut scopes,
                    &mut watches,
                )
                .await;
                if let Some(reloaded) = reloaded {
                    config = reloaded;
                }
            }
            served = &mut serve => {
                if let Err(failure) = served {
                    error!(%failure, "metrics endpoint stopped");
                }
                break;
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
        for (port, shed) in pipeline.update_shedding(monotonic_ns()) {
            if let Err(failure) = capture.classifier().set_shed(port, shed) {
                error!(%failure, port, shed, "shedding a target in the classifier");
            }
        }
    }
    reader_task.abort();
    drop(watches);
    let stats = pipeline.stats();
    capture.detach();
    if let Some(sink) = pipeline.take_sink() {
        // Every queued record is written and the file synced before the daemon exits.
        if tokio::time::timeout(SINK_FLUSH_TIMEOUT, sink.shutdown())
            .await
            .is_err()
        {
            warn!("the exchange sink did not finish writing in time; its last records are lost");
        }
    }
    info!(
        requests = stats.http.requests_total,
        responses = stats.http.responses_total,
        gaps = stats.tcp.gaps,
        "stopped"
    );
    Ok(())
}
