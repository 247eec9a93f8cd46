//! The `mirror stats` table: one block per target, request accounting first, then primary and
//! shadow side by side.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use super::{
    histogram::Quantile,
    snapshot::{ShadowStats, Snapshot, TargetStats},
};
use crate::verdict::{FieldClass, report::TargetReport};

/// Real fields shown per candidate below a target's table.
const TOP_REAL_FIELDS: usize = 3;

/// What period the counts cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Totals since the daemon started (a one-shot run, or the first frame of `--watch`).
    SinceStart,
    /// The difference between two scrapes this far apart.
    Last(Duration),
}

/// Renders `snapshot` as the table `mirror stats` prints; `source` is the scraped URL.
pub fn render(snapshot: &Snapshot, source: &str, window: Window) -> String {
    let mut out = String::new();
    let period = match window {
        Window::SinceStart => "totals since the daemon started".to_owned(),
        Window::Last(elapsed) => format!("last {:.1}s", elapsed.as_secs_f64()),
    };
    let _ = writeln!(out, "mirror stats: {source}, {period}");
    if snapshot.targets.is_empty() {
        out.push_str("no mirror targets in these metrics (is this `mirror run`'s /metrics?)\n");
        return out;
    }
    for (name, stats) in &snapshot.targets {
        out.push('\n');
        let _ = writeln!(out, "target {name}");
        out.push_str(&target_table(stats, window).render());
        let verdict = snapshot
            .verdict
            .iter()
            .flat_map(|report| &report.targets)
            .find(|target| target.target == *name);
        if let Some(target) = verdict.filter(|target| !target.shadows.is_empty()) {
            out.push('\n');
            out.push_str(&verdict_table(target, window).render());
        }
    }
    if snapshot.shed_packets > 0.0 {
        let _ = writeln!(
            out,
            "\nshed: {} packets counted, not recorded, while a shadow could take no more",
            count(snapshot.shed_packets)
        );
    }
    out
}

/// Wraps a frame so that printing it redraws the terminal in place: cursor home, each line
/// followed by erase-to-end-of-line, then erase below. Overwriting instead of clearing first
/// avoids the flicker of a blank screen between frames.
pub fn in_place(frame: &str) -> String {
    let mut out = String::with_capacity(frame.len() + 64);
    out.push_str("\x1b[H");
    for line in frame.lines() {
        out.push_str(line);
        out.push_str("\x1b[K\n");
    }
    out.push_str("\x1b[J");
    out
}

fn target_table(stats: &TargetStats, window: Window) -> Table {
    let mut table = Table::default();
    let seen = stats.requests;
    let share = |count: f64| percent(count, seen);
    let seen_note = match window {
        Window::Last(elapsed) if !elapsed.is_zero() => {
            format!("{:.1}/s", seen / elapsed.as_secs_f64())
        }
        _ => String::new(),
    };
    // One shadow (`shadow = "URL"`) reads as before; several name theirs in each line.
    let single = stats.shadows.len() == 1;
    let named = |label: &str, name: &str, shadow: &ShadowStats| {
        if single {
            label.to_owned()
        } else if shadow.baseline {
            format!("{label} {name} (baseline)")
        } else {
            format!("{label} {name}")
        }
    };
    table.row(["", "requests", "of seen", ""]);
    table.row(["seen", &count(seen), "", &seen_note]);
    for (name, shadow) in &stats.shadows {
        let outcomes: Vec<String> = shadow
            .replays
            .iter()
            .filter(|(outcome, _)| *outcome != super::snapshot::DROPPED)
            .map(|(outcome, n)| format!("{outcome} {}", count(*n)))
            .collect();
        let mirrored = shadow.mirrored();
        table.row([
            &named("mirrored", name, shadow),
            &count(mirrored),
            &share(mirrored),
            &outcomes.join(", "),
        ]);
        let dropped = shadow.dropped();
        table.row([
            &named("dropped", name, shadow),
            &count(dropped),
            &share(dropped),
            "replay queue full",
        ]);
    }
    let skipped = stats.skipped_total();
    table.row(["skipped", &count(skipped), &share(skipped), ""]);
    // The daemon exports every reason from start-up: only those that happened are listed.
    for (reason, n) in nonzero(&stats.skipped) {
        table.row([&format!("  {reason}"), &count(n), &share(n), ""]);
    }
    for (name, shadow) in &stats.shadows {
        let in_flight = stats.in_flight(shadow);
        if window == Window::SinceStart && in_flight > 0.0 {
            table.row([
                &named("in flight", name, shadow),
                &count(in_flight),
                &share(in_flight),
                "replays not finished yet",
            ]);
        }
    }
    table.row([
        "lost",
        &count(stats.lost_total()),
        "",
        "abandoned before framing",
    ]);
    for (reason, n) in nonzero(&stats.lost) {
        table.row([&format!("  {reason}"), &count(n), "", ""]);
    }
    if stats.lost_estimated > 0.0 {
        table.row([
            "lost (estimated)",
            &estimate(stats.lost_estimated),
            "",
            "estimate: requests lost whole in gaps, not in seen",
        ]);
    }
    // Connections, not requests: outside the accounting above, so no share of seen.
    let connections = stats.connections_skipped_total();
    if connections > 0.0 {
        table.row([
            "connections skipped",
            &count(connections),
            "",
            "connections no longer mirrored",
        ]);
        for (reason, n) in nonzero(&stats.connections_skipped) {
            table.row([&format!("  {reason}"), &count(n), "", ""]);
        }
    }
    for (name, shadow) in &stats.shadows {
        if let Some(depth) = shadow.queue_depth {
            table.row([
                &named("replay queue", name, shadow),
                &count(depth),
                "",
                "waiting now",
            ]);
        }
    }

    let primary = &stats.primary;
    let responses = primary.response_count();
    for (index, (name, shadow)) in stats.shadows.iter().enumerate() {
        table.blank();
        let column = if single {
            "shadow".to_owned()
        } else if shadow.baseline {
            format!("{name} (baseline)")
        } else {
            name.clone()
        };
        let observed = &shadow.responses;
        table.row(["", "primary", &column, ""]);
        table.row([
            "responses",
            &count(responses),
            &count(observed.response_count()),
            "",
        ]);
        if index == 0 {
            // Only responses paired with their request (proven by byte positions) have a
            // primary latency and a comparison: say how many when that is not all of them.
            let paired = primary.timed();
            let unpaired = stats.unpaired_total();
            if responses > 0.0 && (unpaired > 0.0 || paired < responses) {
                table.row([
                    "paired",
                    &count(paired),
                    "",
                    &format!(
                        "{} of primary responses: P50/P99 of these only",
                        percent(paired, responses)
                    ),
                ]);
            }
            if unpaired > 0.0 {
                table.row([
                    "unpaired",
                    &count(unpaired),
                    "",
                    &breakdown(&stats.unpaired),
                ]);
            }
        }
        for (label, q) in [("P50 latency", 0.5), ("P99 latency", 0.99)] {
            table.row([
                label,
                &latency(primary.latency(q)),
                &latency(observed.latency(q)),
                "",
            ]);
        }
        table.row([
            "5xx rate",
            &percent(primary.server_errors(), primary.response_count()),
            &percent(observed.server_errors(), observed.response_count()),
            "",
        ]);
        let compared = observed.response_count();
        for (label, mismatches) in [
            ("status mismatches", shadow.status_mismatches),
            ("body mismatches", shadow.body_mismatches),
        ] {
            table.row([
                label,
                "",
                &percent(mismatches, compared),
                &format!(
                    "{} of {} shadow responses",
                    count(mismatches),
                    count(compared)
                ),
            ]);
        }
        let cancelled = shadow.cancelled_total();
        if cancelled > 0.0 {
            table.row([
                "comparisons cancelled",
                "",
                &count(cancelled),
                &breakdown(&shadow.cancelled),
            ]);
        }
    }
    table
}

/// Per candidate: its verdict under the default policy with the first reason, then its top
/// real fields (difference rate, and the baseline's as the noise it was judged against).
/// `mirror verdict` gives every reason and takes a policy file.
fn verdict_table(target: &TargetReport, window: Window) -> Table {
    let mut table = Table::default();
    let since = match window {
        Window::SinceStart => "",
        Window::Last(_) => " (totals)",
    };
    let single = target.shadows.len() == 1;
    for shadow in &target.shadows {
        let label = if single {
            format!("verdict{since}")
        } else {
            format!("verdict {}{since}", shadow.shadow)
        };
        let outcome = shadow.verdict.as_str();
        let note = match shadow.reasons.as_slice() {
            [] => String::new(),
            [only] => only.clone(),
            [first, rest @ ..] => format!("{first} (+{} more)", rest.len()),
        };
        table.row([&label, outcome, "", &note]);
        let real = shadow
            .fields
            .iter()
            .filter(|field| field.class == FieldClass::Real)
            .take(TOP_REAL_FIELDS);
        for field in real {
            let noise = match field.noise_rate {
                Some(rate) => format!("real field; baseline {:.2}%", rate * 100.0),
                None => "real field; no baseline".to_owned(),
            };
            table.row([
                &format!("  {}", field.field),
                &format!("{:.2}%", field.diff_rate * 100.0),
                "",
                &noise,
            ]);
        }
    }
    table
}

/// The entries of a by-reason map that are not zero, in label order.
fn nonzero(map: &BTreeMap<String, f64>) -> impl Iterator<Item = (&str, f64)> {
    map.iter()
        .filter(|(_, n)| **n != 0.0)
        .map(|(reason, n)| (reason.as_str(), *n))
}

/// `reason n, reason n` of the non-zero entries.
fn breakdown(map: &BTreeMap<String, f64>) -> String {
    nonzero(map)
        .map(|(reason, n)| format!("{reason} {}", count(n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An estimated count: `~12`, or `<1` for a fraction of one.
fn estimate(value: f64) -> String {
    if value < 1.0 {
        "<1".to_owned()
    } else {
        format!("~{value:.0}")
    }
}

/// A count as an integer (counters are; a fraction would be a foreign exporter's doing).
pub fn count(value: f64) -> String {
    format!("{value:.0}")
}

/// `part` as a percentage of `whole`, or `-` when there is nothing to divide by.
pub fn percent(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.2}%", 100.0 * part / whole)
    } else {
        "-".to_owned()
    }
}

/// A latency with three significant digits in a unit that keeps it readable.
fn latency(quantile: Option<Quantile>) -> String {
    match quantile {
        None => "-".to_owned(),
        Some(Quantile::Value(seconds)) => seconds_text(seconds, ""),
        Some(Quantile::Above(bound)) => format!(">{}", seconds_text(bound, "")),
    }
}

/// A duration in seconds as s, ms or µs with three significant digits; `separator` goes
/// between the number and the unit.
pub fn seconds_text(seconds: f64, separator: &str) -> String {
    let (value, unit) = if seconds >= 1.0 {
        (seconds, "s")
    } else if seconds >= 1e-3 {
        (seconds * 1e3, "ms")
    } else {
        (seconds * 1e6, "µs")
    };
    let decimals = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    format!("{value:.decimals$}{separator}{unit}")
}

/// Rows of a label, two right-aligned value columns and a free-text note.
#[derive(Default)]
struct Table {
    rows: Vec<Option<[String; 4]>>,
}

impl Table {
    fn row(&mut self, cells: [&str; 4]) {
        self.rows.push(Some(cells.map(str::to_owned)));
    }

    fn blank(&mut self) {
        self.rows.push(None);
    }

    fn render(&self) -> String {
        let mut widths = [0usize; 3];
        for cells in self.rows.iter().flatten() {
            for (width, cell) in widths.iter_mut().zip(cells) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let Some([label, first, second, note]) = row else {
                out.push('\n');
                continue;
            };
            // `{:>width$}` counts chars, which is what a terminal shows for these cells. A
            // column empty in every row takes no room.
            let mut line = format!("  {label:<w0$}", w0 = widths[0]);
            for (cell, width) in [(first, widths[1]), (second, widths[2])] {
                if width > 0 {
                    line.push_str(&format!("  {cell:>width$}"));
                }
            }
            line.push_str(&format!("  {note}"));
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_keep_three_significant_digits() {
        assert_eq!(seconds_text(0.000_45, ""), "450µs");
        assert_eq!(seconds_text(0.000_004_2, ""), "4.20µs");
        assert_eq!(seconds_text(0.0021, ""), "2.10ms");
        assert_eq!(seconds_text(0.048, ""), "48.0ms");
        assert_eq!(seconds_text(0.2, ""), "200ms");
        assert_eq!(seconds_text(1.5, ""), "1.50s");
        assert_eq!(latency(Some(Quantile::Above(52.4288))), ">52.4s");
        assert_eq!(latency(None), "-");
    }

    #[test]
    fn percentages_need_a_denominator() {
        assert_eq!(percent(1.0, 8.0), "12.50%");
        assert_eq!(percent(0.0, 0.0), "-");
        assert_eq!(count(12000.0), "12000");
    }

    #[test]
    fn estimates_are_marked_and_breakdowns_skip_zeros() {
        assert_eq!(estimate(4.6), "~5");
        assert_eq!(estimate(0.4), "<1");
        let map: BTreeMap<String, f64> = [("gap", 2.0), ("joined", 0.0), ("order", 1.0)]
            .map(|(reason, n)| (reason.to_owned(), n))
            .into();
        assert_eq!(breakdown(&map), "gap 2, order 1");
    }

    #[test]
    fn in_place_homes_erases_each_line_and_below() {
        assert_eq!(in_place("a\nbc\n"), "\x1b[Ha\x1b[K\nbc\x1b[K\n\x1b[J");
    }

    #[test]
    fn no_targets_says_so() {
        let text = render(&Snapshot::default(), "http://x/metrics", Window::SinceStart);
        assert_eq!(
            text,
            "mirror stats: http://x/metrics, totals since the daemon started\n\
             no mirror targets in these metrics (is this `mirror run`'s /metrics?)\n"
        );
    }

    #[test]
    fn columns_align_on_the_widest_cell() {
        let mut table = Table::default();
        table.row(["a", "1", "x", ""]);
        table.row(["long label", "12345", "", "note"]);
        table.blank();
        assert_eq!(
            table.render(),
            "  a               1  x\n  long label  12345     note\n\n"
        );
        let mut sparse = Table::default();
        sparse.row(["verdict", "fail", "", "why"]);
        assert_eq!(sparse.render(), "  verdict  fail  why\n");
    }
}
