//! `mirror run`: the daemon. Wires capture, the pipeline, replay and the metrics endpoint, and
//! shuts down cleanly on SIGINT/SIGTERM (the classifier is detached; TCX would detach it even
//! on SIGKILL).

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{error, info, warn};

use crate::{
    capture::{Capture, CaptureConfig, SAMPLE_SCALE, spawn_reader},
    cli::RunArgs,
    config::{Config, RunOverrides, SampleBy},
    http::{HttpConfig, HttpTracker, TrackerConfig},
    kubernetes::{PodUpdate, PodWatches, node_name_from_env},
    metrics::{CaptureCollector, Metrics, server},
    pipeline::Pipeline,
    reassembly::ReassemblyConfig,
    scopes::{ScopeChange, Scopes},
};

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

/// Replay results handled per turn of the event loop, so that captured batches wait at most
/// this many behind them.
const MAX_RESULTS_PER_TURN: usize = 256;

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
    if let Err(failure) = watches.prepare(&new.targets).await {
        error!("configuration reload rejected, the running configuration stays: {failure}");
        return None;
    }
    if new.capture != running.capture
        || new.limits != running.limits
        || new.metrics != running.metrics
    {
        warn!("[capture], [limits] and [metrics] changes take effect at the next restart");
    }
    let ports = |config: &Config| config.targets.iter().map(|t| t.port).collect::<Vec<_>>();
    if let Err(failure) = capture
        .classifier()
        .set_ports(&ports(running), &kernel_sampling(&new))
    {
        error!(%failure, "configuration reload rejected: updating the target ports");
        return None;
    }
    apply_scopes(capture, scopes.configure(&new.targets));
    // A target whose `pods` changed gets a new watch; the others keep theirs.
    watches.configure(&new.targets);
    pipeline.reload(&new.targets, monotonic_ns());
    info!(targets = new.targets.len(), "configuration reloaded");
    Some(new)
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = effective_config(&args)?;
    let (metrics, mut registry) = Metrics::new();
    // Targets with `pods` need this node's name and a Kubernetes client: checked before
    // anything is attached.
    let (mut watches, mut pod_updates) = PodWatches::new(&metrics, node_name_from_env(), None);
    watches.prepare(&config.targets).await?;
    let mut capture = Capture::start(&CaptureConfig {
        interfaces: config.capture.interfaces.clone(),
        ports: config.targets.iter().map(|target| target.port).collect(),
        ring_buffer_bytes: config.capture.ring_buffer_bytes,
    })
    .context("starting capture")?;
    capture
        .classifier()
        .set_ports(&[], &kernel_sampling(&config))
        .context("configuring in-kernel connection sampling")?;
    let mut scopes = Scopes::default();
    apply_scopes(&mut capture, scopes.configure(&config.targets));
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
    registry.register_collector(Box::new(CaptureCollector::new(
        capture.classifier().counter_reader(),
        Arc::clone(&reader_stats),
    )));
    let (metrics_addr, serve) = server::bind(config.metrics.listen, Arc::new(registry))
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
    );
    // Handlers before the start-up lines: a signal sent as soon as they are read must be handled.
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    for target in &config.targets {
        info!(
            target = %target.name,
            port = target.port,
            shadow = %target.shadow.authority(),
            sample_percent = target.sample_percent,
            "mirroring"
        );
    }
    info!(%metrics_addr, "metrics at http://{metrics_addr}/metrics");

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut config = config;
    loop {
        tokio::select! {
            batch = batches.recv() => {
                let Some(batch) = batch else { break };
                pipeline.on_segments(&batch);
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
    info!(
        requests = stats.http.requests_total,
        responses = stats.http.responses_total,
        gaps = stats.tcp.gaps,
        "stopped"
    );
    Ok(())
}
