//! The SVG chart of the primary's and the shadow's latency distributions.

use super::*;

/// An SVG chart of the primary's and the shadow's latency distributions (cumulative share of
/// responses at or below each histogram bound, log-scaled time axis).
pub(super) fn latency_chart(metrics: &Metrics, title: &str) -> String {
    let (width, height, left, bottom, top, right) = (760.0, 380.0, 70.0, 50.0, 40.0, 20.0);
    let (min_s, max_s) = (1e-4_f64, 1.0_f64);
    let x = |seconds: f64| {
        left + (seconds.clamp(min_s, max_s).log10() - min_s.log10())
            / (max_s.log10() - min_s.log10())
            * (width - left - right)
    };
    let y = |share: f64| top + (1.0 - share) * (height - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"14\">{title}</text>\n"
    );
    for decade in [1e-4, 1e-3, 1e-2, 1e-1, 1.0] {
        let label = if decade < 1e-3 {
            format!("{} us", decade * 1e6)
        } else if decade < 1.0 {
            format!("{} ms", decade * 1e3)
        } else {
            "1 s".to_owned()
        };
        svg += &format!(
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{label}</text>\n",
            x(decade),
            height - bottom,
            height - bottom + 18.0
        );
    }
    for share in [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] {
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/><text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{4}%</text>\n",
            y(share),
            width - right,
            left - 6.0,
            y(share) + 4.0,
            share * 100.0
        );
    }
    svg += &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">last request byte to first response byte</text>\n",
        (width + left) / 2.0,
        height - 8.0
    );
    for (index, (role, color)) in [("primary", "#1f77b4"), ("shadow", "#ff7f0e")]
        .iter()
        .enumerate()
    {
        let buckets = metrics.buckets(
            "mirror_response_duration_seconds",
            &format!("role=\"{role}\""),
        );
        let total = buckets.last().map_or(0.0, |(_, count)| *count).max(1.0);
        let points: Vec<String> = buckets
            .iter()
            .filter(|(le, _)| le.is_finite())
            .map(|(le, count)| format!("{:.1},{:.1}", x(*le), y(count / total)))
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{role} ({total:.0} timed responses)</text>\n",
            points.join(" "),
            left + 12.0,
            top + 18.0 + 16.0 * index as f64
        );
    }
    svg + "</svg>\n"
}
