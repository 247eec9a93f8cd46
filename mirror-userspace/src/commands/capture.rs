//! `mirror capture`: a tcpdump-like view of target-port traffic; replays nothing.

use std::{collections::HashMap, fmt::Write as _};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::{
    capture::{Capture, CaptureConfig, KernelCounters, ReaderStats, spawn_reader},
    cli::CaptureArgs,
    segment::{Direction, Segment},
};

/// Batches buffered between the ring reader and the printer.
const CHANNEL_BATCHES: usize = 256;

/// One output line per TCP segment (its first chunk carries the segment's total length).
pub fn segment_line(segment: &Segment, interface: &str) -> String {
    let (src, dst, direction) = match segment.direction {
        Direction::Request => (segment.flow.client, segment.flow.server, "request"),
        Direction::Response => (segment.flow.server, segment.flow.client, "response"),
    };
    format!(
        "{}.{:06} {interface} {src} > {dst} {direction} seq={} ack={} flags=[{}] len={}",
        segment.timestamp_ns / 1_000_000_000,
        segment.timestamp_ns % 1_000_000_000 / 1_000,
        segment.seq,
        segment.ack,
        segment.flags,
        segment.segment_len,
    )
}

/// Counter summary printed on exit.
pub fn summary(kernel: &KernelCounters, reader: &ReaderStats) -> String {
    let mut text = String::from("capture summary:\n");
    for (counter, value) in kernel.iter() {
        let _ = writeln!(text, "  kernel.{:<20} {value}", counter.name());
    }
    let _ = writeln!(text, "  user.records_read         {}", reader.records());
    let _ = writeln!(
        text,
        "  user.decode_errors        {}",
        reader.decode_errors()
    );
    let _ = writeln!(
        text,
        "  user.consumer_dropped     {}",
        reader.consumer_dropped()
    );
    text
}

pub async fn run(args: CaptureArgs) -> anyhow::Result<()> {
    let config = CaptureConfig {
        interfaces: args.interfaces,
        ports: args.ports,
        ring_buffer_bytes: args.ring_buffer_bytes,
    };
    let mut capture = Capture::start(&config).context("starting capture")?;
    let names: HashMap<u32, String> = capture
        .interfaces()
        .into_iter()
        .map(|interface| (interface.index, interface.name))
        .collect();
    let reader = capture
        .take_reader()
        .context("opening the ring buffer")?
        .context("ring buffer already taken")?;
    let (mut batches, reader_stats, reader_task) = spawn_reader(reader, CHANNEL_BATCHES);
    info!(ports = ?config.ports, "capturing; Ctrl-C to stop");

    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut printed = 0u64;
    let limit = args.count.unwrap_or(u64::MAX);
    let mut stdout = String::new();
    'outer: while printed < limit {
        tokio::select! {
            batch = batches.recv() => {
                let Some(batch) = batch else { break };
                stdout.clear();
                for segment in batch.iter().filter(|segment| segment.is_first_chunk()) {
                    let interface = names.get(&segment.ifindex).map_or("?", String::as_str);
                    stdout.push_str(&segment_line(segment, interface));
                    stdout.push('\n');
                    printed += 1;
                    if printed >= limit {
                        print!("{stdout}");
                        break 'outer;
                    }
                }
                print!("{stdout}");
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    reader_task.abort();
    let counters = capture.counters().context("reading capture counters")?;
    capture.detach();
    eprint!("{}", summary(&counters, &reader_stats));
    Ok(())
}
