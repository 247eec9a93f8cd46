//! `mirror capture`: a tcpdump-like view of target-port traffic; replays nothing. By default one
//! line per HTTP request/response pair, with `--segments` one line per TCP segment.

use std::{collections::HashMap, fmt::Write as _, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::{
    capture::{Capture, CaptureConfig, KernelCounters, ReaderStats, spawn_reader},
    cli::CaptureArgs,
    http::{
        HttpEvent, HttpTracker, LossCounts, ResponseEvent, SkipReason, Stats, TrackerConfig,
        UnpairedReason,
    },
    reassembly::EvictionReason,
    segment::{Direction, Segment},
};

fn timestamp(ns: u64) -> String {
    format!("{}.{:06}", ns / 1_000_000_000, ns % 1_000_000_000 / 1_000)
}

/// One line per TCP segment (its first chunk carries the segment's total length).
pub fn segment_line(segment: &Segment, interface: &str) -> String {
    let (src, dst, direction) = match segment.direction {
        Direction::Request => (segment.flow.client, segment.flow.server, "request"),
        Direction::Response => (segment.flow.server, segment.flow.client, "response"),
    };
    format!(
        "{} {interface} {src} > {dst} {direction} seq={} ack={} flags=[{}] len={}",
        timestamp(segment.timestamp_ns),
        segment.seq,
        segment.ack,
        segment.flags,
        segment.segment_len,
    )
}

/// One line per request/response pair:
/// `time client > server METHOD host target status latency`. Fields that are unknown (a response
/// whose request was not seen) are `-`.
pub fn exchange_line(response: &ResponseEvent) -> String {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let (method, host, target) = match &response.request {
        Some(request) => (
            text(request.method()),
            request.host().map_or_else(|| "-".to_owned(), text),
            text(request.target()),
        ),
        None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
    };
    let latency = response
        .latency_ns
        .map_or_else(|| "-".to_owned(), |ns| format!("{:.3}ms", ns as f64 / 1e6));
    let unpaired = response.unpaired.map_or_else(String::new, |reason| {
        format!(" unpaired:{}", reason.as_str())
    });
    format!(
        "{} {} > {} {method} {host} {target} {} {latency}{unpaired}",
        timestamp(response.first_byte_ns),
        response.flow.client,
        response.flow.server,
        response.head.status(),
    )
}

fn row(text: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = writeln!(text, "  {name:<28} {value}");
}

fn losses(counts: &LossCounts) -> String {
    format!(
        "gap={} malformed={} truncated={} reset={} evicted={} skipped={}",
        counts.gap,
        counts.malformed,
        counts.truncated,
        counts.reset,
        counts.evicted,
        counts.skipped
    )
}

/// Counter summary printed on exit: kernel, reader, reassembly and HTTP counters by reason.
pub fn summary(kernel: &KernelCounters, reader: &ReaderStats, core: Option<&Stats>) -> String {
    let mut text = String::from("capture summary:\n");
    for (counter, value) in kernel.iter() {
        row(&mut text, &format!("kernel.{}", counter.name()), value);
    }
    row(&mut text, "user.records_read", reader.records());
    row(&mut text, "user.decode_errors", reader.decode_errors());
    row(
        &mut text,
        "user.consumer_dropped",
        reader.consumer_dropped(),
    );
    row(
        &mut text,
        "user.consumer_dropped_bytes",
        reader.consumer_dropped_bytes(),
    );
    let Some(stats) = core else { return text };
    let (tcp, http) = (&stats.tcp, &stats.http);
    row(&mut text, "tcp.connections_opened", tcp.connections_opened);
    row(
        &mut text,
        "tcp.joined_mid_stream",
        tcp.streams_joined_mid_stream,
    );
    row(
        &mut text,
        "tcp.gaps",
        format!("{} ({} bytes)", tcp.gaps, tcp.gap_bytes),
    );
    for reason in EvictionReason::ALL {
        row(
            &mut text,
            &format!("tcp.evicted.{}", reason.as_str()),
            tcp.evicted(reason),
        );
    }
    row(&mut text, "http.requests", http.requests_total);
    row(&mut text, "http.responses", http.responses_total);
    row(&mut text, "http.responses_paired", http.responses_paired);
    row(
        &mut text,
        "http.responses_unpaired",
        UnpairedReason::ALL
            .iter()
            .map(|reason| {
                format!(
                    "{}={}",
                    reason.as_str(),
                    http.responses_unpaired.get(*reason)
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
    );
    row(
        &mut text,
        "http.requests_unanswered",
        http.requests_unanswered,
    );
    row(
        &mut text,
        "http.requests_unpairable",
        http.requests_unpairable,
    );
    row(&mut text, "http.parse_errors", http.request_parse_errors);
    for reason in SkipReason::ALL {
        let requests = http.requests_skipped(reason);
        let connections = http.connections_skipped.get(reason);
        if requests + connections > 0 {
            let name = format!("http.skipped.{}", reason.as_str());
            row(
                &mut text,
                &name,
                format!("requests={requests} connections={connections}"),
            );
        }
    }
    row(&mut text, "http.requests_lost", losses(&http.requests_lost));
    row(
        &mut text,
        "http.responses_lost",
        losses(&http.responses_lost),
    );
    text
}

/// Turns batches into output lines.
enum Printer {
    Segments { interfaces: HashMap<u32, String> },
    Exchanges { tracker: Box<HttpTracker> },
}

impl Printer {
    fn lines(&mut self, batch: &[Segment], out: &mut Vec<String>) {
        match self {
            Printer::Segments { interfaces } => {
                for segment in batch.iter().filter(|segment| segment.is_first_chunk()) {
                    let interface = interfaces.get(&segment.ifindex).map_or("?", String::as_str);
                    out.push(segment_line(segment, interface));
                }
            }
            Printer::Exchanges { tracker } => {
                for segment in batch {
                    tracker.on_segment(segment);
                }
                Self::drain(tracker, out);
            }
        }
    }

    fn drain(tracker: &mut HttpTracker, out: &mut Vec<String>) {
        while let Some(event) = tracker.poll_event() {
            match event {
                HttpEvent::Response(response) => out.push(exchange_line(&response)),
                HttpEvent::ConnectionSkipped { flow, reason, .. } => {
                    out.push(format!("# {flow} not mirrored: {}", reason.as_str()));
                }
                HttpEvent::Request(_)
                | HttpEvent::Lost(_)
                | HttpEvent::Unpairable { .. }
                | HttpEvent::Gap { .. }
                | HttpEvent::Unframed { .. } => {}
            }
        }
    }

    fn tick(&mut self, out: &mut Vec<String>) {
        if let Printer::Exchanges { tracker } = self {
            tracker.on_tick(super::run::monotonic_ns());
            Self::drain(tracker, out);
        }
    }

    fn stats(&self) -> Option<Stats> {
        match self {
            Printer::Segments { .. } => None,
            Printer::Exchanges { tracker } => Some(tracker.stats()),
        }
    }
}

pub async fn run(args: CaptureArgs) -> anyhow::Result<()> {
    let interfaces = if args.interfaces.is_empty() {
        // `--interface` is optional (README "Commands"); without it, everything but loopback (which
        // would show local traffic twice over and is rarely what is meant).
        crate::capture::interfaces::list_interfaces()?
            .into_iter()
            .filter(|interface| !interface.is_loopback())
            .map(|interface| interface.name)
            .collect()
    } else {
        args.interfaces
    };
    let config = CaptureConfig {
        interfaces,
        ports: args.ports,
        ring_buffer_bytes: args.ring_buffer_bytes,
    };
    let mut capture = Capture::start(&config).context("starting capture")?;
    let mut printer = if args.segments {
        Printer::Segments {
            interfaces: capture
                .interfaces()
                .into_iter()
                .map(|interface| (interface.index, interface.name))
                .collect(),
        }
    } else {
        Printer::Exchanges {
            tracker: Box::new(HttpTracker::new(TrackerConfig::default())),
        }
    };
    let reader = capture
        .take_reader()
        .context("opening the ring buffer")?
        .context("ring buffer already taken")?;
    // Bytes queued between the ring reader and the printer; beyond, batches are dropped and
    // counted (user.consumer_dropped).
    let queue_bytes = usize::try_from(args.capture_queue_bytes).unwrap_or(usize::MAX);
    let (mut batches, reader_stats, reader_task) = spawn_reader(reader, queue_bytes);
    // Handlers first: a signal sent as soon as "capturing" is read must stop us cleanly.
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    info!(ports = ?config.ports, "capturing; Ctrl-C to stop");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut printed = 0u64;
    let limit = args.count.unwrap_or(u64::MAX);
    let mut lines = Vec::new();
    while printed < limit {
        lines.clear();
        tokio::select! {
            batch = batches.recv() => {
                let Some(batch) = batch else { break };
                printer.lines(&batch, &mut lines);
            }
            _ = tick.tick() => printer.tick(&mut lines),
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
        let take = lines.len().min((limit - printed) as usize);
        let mut stdout = String::new();
        for line in &lines[..take] {
            stdout.push_str(line);
            stdout.push('\n');
        }
        print!("{stdout}");
        printed += take as u64;
    }
    reader_task.abort();
    let counters = capture.counters().context("reading capture counters")?;
    capture.detach();
    eprint!(
        "{}",
        summary(&counters, &reader_stats, printer.stats().as_ref())
    );
    Ok(())
}
