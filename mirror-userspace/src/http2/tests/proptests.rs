//! Property tests over generated connections whose events are known (see `generate`):
//!
//! - Any segmentation of the two byte streams yields exactly the known events.
//! - A gap anywhere yields the known events, or a prefix of a stream's events followed by its
//!   loss, or the connection's end: never an event that is not known.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::super::frame::{PREFACE, kind};
use super::super::{EndReason, Http2Config, Http2Connection, Http2Event, StreamLossReason};
use super::generate::{Built, Rng, build};
use super::{REQ, RESP, drain};
use crate::segment::Direction;

/// Events by stream (body pieces merged), and the connection's own events.
fn by_stream(events: &[Http2Event]) -> (BTreeMap<u32, Vec<Http2Event>>, Vec<Http2Event>) {
    let mut streams: BTreeMap<u32, Vec<Http2Event>> = BTreeMap::new();
    let mut connection = Vec::new();
    for event in events {
        let stream = match event {
            Http2Event::Request { stream, .. }
            | Http2Event::Response { stream, .. }
            | Http2Event::Data { stream, .. }
            | Http2Event::Trailers { stream, .. }
            | Http2Event::End { stream, .. }
            | Http2Event::Reset { stream, .. }
            | Http2Event::StreamLost { stream, .. } => *stream,
            Http2Event::GoAway { .. } | Http2Event::Ended { .. } => {
                connection.push(event.clone());
                continue;
            }
        };
        let list = streams.entry(stream).or_default();
        if let (
            Some(Http2Event::Data {
                direction, data, ..
            }),
            Http2Event::Data {
                direction: next,
                data: more,
                ..
            },
        ) = (list.last_mut(), event)
            && direction == next
        {
            *data = Bytes::from([&data[..], &more[..]].concat());
            continue;
        }
        list.push(event.clone());
    }
    (streams, connection)
}

/// Feeds the frames in wire order, each run of one direction cut at random points; `gap`:
/// (direction, offset, len) of bytes not fed but reported lost.
fn feed(
    built: &Built,
    rng: &mut Rng,
    gap: Option<(Direction, usize, usize)>,
) -> (Vec<Http2Event>, Http2Connection) {
    let mut connection = Http2Connection::new(&Http2Config {
        max_streams: built.max_streams,
        ..Http2Config::default()
    });
    let mut offsets = [0usize; 2];
    let mut index = 0;
    while index < built.frames.len() {
        let direction = built.frames[index].0;
        let mut run = Vec::new();
        while let Some((next, bytes)) = built.frames.get(index)
            && *next == direction
        {
            run.extend_from_slice(bytes);
            index += 1;
        }
        let start = offsets[direction as usize];
        offsets[direction as usize] += run.len();
        let mut cuts: Vec<usize> = match rng.below(10) {
            0 => (1..run.len()).collect(),
            1 => vec![],
            _ => (0..rng.below(6))
                .map(|_| rng.below(run.len() + 1))
                .collect(),
        };
        if let Some((gap_direction, at, len)) = gap
            && gap_direction == direction
        {
            for bound in [at, at + len] {
                if (start..=start + run.len()).contains(&bound) {
                    cuts.push(bound - start);
                }
            }
        }
        cuts.push(0);
        cuts.push(run.len());
        cuts.sort_unstable();
        cuts.dedup();
        for piece in cuts.windows(2) {
            let position = start + piece[0];
            if let Some((gap_direction, at, len)) = gap
                && gap_direction == direction
                && (at..at + len).contains(&position)
            {
                if position == at {
                    connection.on_gap(direction, len as u64);
                }
                continue;
            }
            connection.on_bytes(direction, Bytes::copy_from_slice(&run[piece[0]..piece[1]]));
        }
    }
    (drain(&mut connection), connection)
}

fn segmentation_holds(seed: u64, cut_seed: u64) -> Result<(), TestCaseError> {
    let built = build(seed, true);
    let (events, connection) = feed(&built, &mut Rng(cut_seed | 1), None);
    prop_assert_eq!(by_stream(&events), by_stream(&built.truth));
    let stats = connection.stats();
    prop_assert_eq!(stats.streams_opened, built.tracked as u64);
    prop_assert_eq!(stats.streams_untracked, built.untracked as u64);
    prop_assert_eq!(
        stats.streams_completed + stats.streams_reset,
        built.tracked as u64
    );
    prop_assert_eq!(connection.active_streams(), 0);
    prop_assert_eq!(connection.buffered_bytes(), 0);
    Ok(())
}

/// What a gap at `at..at + len` of `direction` must do, from the frame it falls in.
#[derive(Debug, PartialEq)]
enum Expect {
    Harmless,
    Lost(u32),
    Fatal,
}

/// Frames of `direction` as (offset of the header, offset of the payload's end, type, stream).
fn frames_of(built: &Built, direction: Direction) -> Vec<(usize, usize, u8, u32)> {
    let mut frames = Vec::new();
    let mut offset = 0;
    for (frame_direction, bytes) in &built.frames {
        if *frame_direction != direction {
            continue;
        }
        // The client's first entry starts with the preface.
        let rest = bytes.strip_prefix(PREFACE).unwrap_or(bytes);
        let mut position = offset + bytes.len() - rest.len();
        let mut rest = rest;
        while !rest.is_empty() {
            let payload = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            frames.push((position, position + 9 + payload, rest[3], stream));
            position += 9 + payload;
            rest = &rest[9 + payload..];
        }
        offset += bytes.len();
    }
    frames
}

fn expect(built: &Built, direction: Direction, at: usize, len: usize) -> Expect {
    let frames = frames_of(built, direction);
    let Some(&(start, end, kind, stream)) = frames.iter().find(|frame| at < frame.1) else {
        return Expect::Fatal;
    };
    match kind {
        _ if at < start + 9 || at + len > end => Expect::Fatal,
        kind::DATA | kind::RST_STREAM => Expect::Lost(stream),
        kind::HEADERS | kind::CONTINUATION | kind::SETTINGS => Expect::Fatal,
        // PING, WINDOW_UPDATE, PRIORITY, GOAWAY, unknown types.
        _ => Expect::Harmless,
    }
}

/// Where a gap goes: anywhere (one time in three), else inside a payload, mostly within it.
fn gap_position(built: &Built, direction: Direction, rng: &mut Rng) -> (usize, usize) {
    let frames = frames_of(built, direction);
    let total = frames.last().map_or(0, |frame| frame.1);
    let with_payload: Vec<_> = frames
        .iter()
        .filter(|frame| frame.1 > frame.0 + 9)
        .collect();
    if rng.below(3) == 0 || with_payload.is_empty() {
        let at = rng.below(total);
        return (at, 1 + rng.below((total - at).min(48)));
    }
    let &&(start, end, ..) = &with_payload[rng.below(with_payload.len())];
    let at = start + 9 + rng.below(end - start - 9);
    let within = end - at;
    let len = if rng.below(8) == 0 {
        1 + rng.below(total - at)
    } else {
        1 + rng.below(within)
    };
    (at, len)
}

/// `actual` is `truth` cut short, its last body piece possibly cut short too.
fn is_prefix(actual: &[Http2Event], truth: &[Http2Event]) -> bool {
    let Some((last, before)) = actual.split_last() else {
        return true;
    };
    if actual.len() > truth.len() || before != &truth[..before.len()] {
        return false;
    }
    match (last, &truth[before.len()]) {
        (
            Http2Event::Data {
                direction, data, ..
            },
            Http2Event::Data {
                direction: expected,
                data: whole,
                ..
            },
        ) => direction == expected && whole.starts_with(data),
        (last, expected) => last == expected,
    }
}

fn gap_holds(seed: u64, cut_seed: u64, gap_seed: u64) -> Result<(), TestCaseError> {
    // All streams tracked: a stream lost early would free its place for one the truth has
    // untracked.
    let built = build(seed, false);
    let direction = if gap_seed.is_multiple_of(2) {
        REQ
    } else {
        RESP
    };
    let (at, len) = gap_position(&built, direction, &mut Rng(gap_seed | 1));
    let expected = expect(&built, direction, at, len);
    let (events, connection) = feed(&built, &mut Rng(cut_seed | 1), Some((direction, at, len)));
    let (streams, connection_events) = by_stream(&events);
    let (truth, truth_connection) = by_stream(&built.truth);
    let ended = connection_events
        .iter()
        .any(|event| matches!(event, Http2Event::Ended { .. }));
    for (stream, actual) in &streams {
        let truth = &truth[stream];
        let (lost, kept): (Vec<_>, Vec<_>) = actual
            .iter()
            .cloned()
            .partition(|event| matches!(event, Http2Event::StreamLost { .. }));
        prop_assert!(is_prefix(&kept, truth), "stream {}: {:?}", stream, actual);
        prop_assert!(lost.len() <= 1);
        prop_assert!(
            kept == *truth || !lost.is_empty(),
            "stream {} cut short",
            stream
        );
        if let Some(Http2Event::StreamLost { reason, .. }) = lost.first() {
            let allowed = match expected {
                Expect::Lost(lost) if lost == *stream => StreamLossReason::Gap,
                _ => StreamLossReason::ConnectionEnded,
            };
            prop_assert_eq!(*reason, allowed);
        }
    }
    for event in &connection_events {
        let gap_end = Http2Event::Ended {
            reason: EndReason::Gap,
        };
        prop_assert!(truth_connection.contains(event) || *event == gap_end);
    }
    match expected {
        Expect::Fatal => prop_assert!(ended, "{:?}", connection_events),
        Expect::Harmless | Expect::Lost(_) => {
            prop_assert!(!ended);
            prop_assert_eq!(connection.stats().gaps_survived, 1);
            for (stream, truth) in &truth {
                if expected != Expect::Lost(*stream) {
                    prop_assert_eq!(streams.get(stream), Some(truth));
                }
            }
        }
    }
    Ok(())
}

/// The generator is not vacuous: over a few hundred seeds every feature shows up.
#[test]
fn generated_connections_cover_the_cases() {
    let mut seen = BTreeMap::<&str, usize>::new();
    let mut rng = Rng(7);
    for seed in 1..=300 {
        let built = build(seed, true);
        *seen.entry("evictions").or_default() += built.evictions;
        *seen.entry("untracked").or_default() += built.untracked;
        for (_, bytes) in &built.frames {
            let mut rest = bytes.strip_prefix(PREFACE).unwrap_or(bytes);
            while !rest.is_empty() {
                let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
                let name = match (rest[3], rest[4]) {
                    (kind::CONTINUATION, _) => "continuation",
                    (kind::DATA | kind::HEADERS, flags) if flags & 0x8 != 0 => "padded",
                    (kind::HEADERS, flags) if flags & 0x20 != 0 => "priority",
                    (kind, _) if kind > kind::CONTINUATION => "unknown",
                    _ => "other",
                };
                *seen.entry(name).or_default() += 1;
                // A size update starts the block (no padding or priority before it).
                if rest[3] == kind::HEADERS
                    && rest[4] & 0x28 == 0
                    && len > 0
                    && rest[9] & 0xe0 == 0x20
                {
                    *seen.entry("size update").or_default() += 1;
                }
                rest = &rest[9 + len..];
            }
        }
        for window in built.truth.windows(2) {
            let name = match window {
                [Http2Event::Reset { .. }, _] => "reset",
                [Http2Event::Trailers { .. }, _] => "trailers",
                [Http2Event::Response { head, .. }, _] if head.is_informational() => "1xx",
                [
                    Http2Event::Response { stream, .. },
                    Http2Event::End { stream: end, .. },
                ] if stream == end => "trailers-only or empty",
                [_, Http2Event::GoAway { .. }] => "goaway",
                _ => continue,
            };
            *seen.entry(name).or_default() += 1;
        }
        let direction = [REQ, RESP][seed as usize % 2];
        let (at, len) = gap_position(&built, direction, &mut rng);
        let name = match expect(&built, direction, at, len) {
            Expect::Fatal => "gap fatal",
            Expect::Lost(_) => "gap lost",
            Expect::Harmless => "gap harmless",
        };
        *seen.entry(name).or_default() += 1;
    }
    for name in [
        "evictions",
        "untracked",
        "continuation",
        "padded",
        "priority",
        "unknown",
        "size update",
        "reset",
        "trailers",
        "1xx",
        "trailers-only or empty",
        "goaway",
        "gap fatal",
        "gap lost",
        "gap harmless",
    ] {
        assert!(seen.get(name).copied().unwrap_or(0) > 3, "{name}: {seen:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_segmentation_yields_the_known_events(seed: u64, cut_seed: u64) {
        segmentation_holds(seed, cut_seed)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn a_gap_yields_known_events_or_counted_loss(
        seed: u64,
        cut_seed: u64,
        gap_seed: u64,
    ) {
        gap_holds(seed, cut_seed, gap_seed)?;
    }
}
