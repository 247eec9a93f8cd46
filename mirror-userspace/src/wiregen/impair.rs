//! What the capture does to the wire: drops, duplicates, reorders, starts late.

use std::collections::HashMap;
use std::ops::Range;

use super::{Captured, Mode, Rng, Side};

/// Probability (‰) that a data segment is retransmitted ([`Mode::Duplicate`], [`Mode::Mixed`]).
const DUPLICATE_PERMILLE: u32 = 60;
/// A retransmission is delivered up to this many segments after the original.
const DUPLICATE_DISTANCE: u64 = 20;
/// Probability (‰) that a segment swaps with a neighbour ([`Mode::Reorder`], [`Mode::Mixed`]).
const REORDER_PERMILLE: u32 = 80;
/// Loss probability of [`Mode::Mixed`].
const MIXED_LOSS_PERMILLE: u32 = 20;

/// Stream bytes the capture must lose whatever the mode (e.g. every segment of one request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blackout {
    pub conn: usize,
    pub side: Side,
    pub range: Range<u64>,
}

/// What [`apply`] did, besides the delivered segments.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// ([`Mode::Join`]) connection and index of its first delivered segment.
    pub joined: Option<(usize, usize)>,
}

/// Applies `mode` (and `blackouts`) to `wire` (every segment in capture order); returns the
/// delivered sequence.
pub fn apply(
    mode: Mode,
    rng: &mut Rng,
    wire: &[Captured],
    conns: usize,
    blackouts: &[Blackout],
) -> (Vec<Captured>, Applied) {
    let mut applied = Applied::default();
    let mut out: Vec<Captured> = wire
        .iter()
        .filter(|captured| {
            !blackouts.iter().any(|blackout| {
                blackout.conn == captured.conn
                    && blackout.side == captured.side()
                    && !captured.segment.payload.is_empty()
                    && blackout.range.start < captured.range().end
                    && captured.range().start < blackout.range.end
            })
        })
        .cloned()
        .collect();
    match mode {
        Mode::Clean | Mode::LostPipelined | Mode::FastOpen => {}
        Mode::Loss { permille } => out = lose(rng, out, permille),
        Mode::Duplicate => out = duplicate(rng, out),
        Mode::Reorder => out = reorder(rng, out),
        Mode::Join => {
            let conn = rng.below(conns as u64) as usize;
            let count = out.iter().filter(|captured| captured.conn == conn).count();
            if count > 1 {
                let first = 1 + rng.below(count as u64 - 1) as usize;
                let mut index = 0;
                out.retain(|captured| {
                    if captured.conn != conn {
                        return true;
                    }
                    index += 1;
                    index > first
                });
                applied.joined = Some((conn, first));
            }
        }
        Mode::Mixed => {
            out = duplicate(rng, out);
            out = reorder(rng, out);
            out = lose(rng, out, MIXED_LOSS_PERMILLE);
        }
    }
    (out, applied)
}

fn lose(rng: &mut Rng, segments: Vec<Captured>, permille: u32) -> Vec<Captured> {
    segments
        .into_iter()
        .filter(|captured| captured.segment.flags.syn() || !rng.chance(permille))
        .collect()
}

/// Retransmissions of data (and FIN) segments, delivered a few segments later with the
/// acknowledgement number their sender had by then. Never after the connection's RST.
fn duplicate(rng: &mut Rng, segments: Vec<Captured>) -> Vec<Captured> {
    let reset_at: HashMap<usize, usize> = segments
        .iter()
        .enumerate()
        .filter(|(_, captured)| captured.segment.flags.rst())
        .map(|(index, captured)| (captured.conn, index))
        .collect();
    let mut due: Vec<(usize, Captured)> = Vec::new();
    let mut last_ack: HashMap<(usize, Side), u32> = HashMap::new();
    let mut out = Vec::with_capacity(segments.len() + segments.len() / 8);
    for (index, captured) in segments.iter().enumerate() {
        last_ack.insert((captured.conn, captured.side()), captured.segment.ack);
        out.push(captured.clone());
        let carries = !captured.segment.payload.is_empty() || captured.segment.flags.fin();
        if carries && !captured.segment.flags.syn() && rng.chance(DUPLICATE_PERMILLE) {
            let mut at = index + 1 + rng.below(DUPLICATE_DISTANCE) as usize;
            if let Some(&reset) = reset_at.get(&captured.conn) {
                at = at.min(reset.saturating_sub(1));
            }
            if at > index {
                let mut copy = captured.clone();
                copy.retransmission = true;
                due.push((at, copy));
            }
        }
        let timestamp = captured.segment.timestamp_ns;
        let mut pending = Vec::new();
        due.retain(|(at, copy)| {
            if *at <= index {
                pending.push(copy.clone());
                false
            } else {
                true
            }
        });
        for mut copy in pending {
            copy.segment.timestamp_ns = timestamp;
            if let Some(&ack) = last_ack.get(&(copy.conn, copy.side())) {
                copy.segment.ack = ack;
            }
            out.push(copy);
        }
    }
    let end = out
        .last()
        .map_or(0, |captured| captured.segment.timestamp_ns);
    for (_, mut copy) in due {
        copy.segment.timestamp_ns = end;
        out.push(copy);
    }
    out
}

/// Swaps neighbours within a window of four; SYNs stay where they are (nothing can overtake a
/// handshake). Timestamps are reassigned in order: a capture stamps packets as they come.
fn reorder(rng: &mut Rng, mut segments: Vec<Captured>) -> Vec<Captured> {
    let timestamps: Vec<u64> = segments
        .iter()
        .map(|captured| captured.segment.timestamp_ns)
        .collect();
    let len = segments.len();
    for index in 0..len.saturating_sub(1) {
        if !rng.chance(REORDER_PERMILLE) {
            continue;
        }
        let other = index + 1 + rng.below(3.min(len - index - 1) as u64) as usize;
        if segments[index].segment.flags.syn() || segments[other].segment.flags.syn() {
            continue;
        }
        segments.swap(index, other);
    }
    for (captured, timestamp) in segments.iter_mut().zip(timestamps) {
        captured.segment.timestamp_ns = timestamp;
    }
    segments
}
