//! The verdict block below each target's table: every candidate's verdict under the default
//! policy, with its first reason and its top real fields.

use std::time::Duration;

use super::*;

/// Target `api`: candidates `v2` (fails: four real fields) and `v3` (passes), baseline `copy`.
fn exposition() -> String {
    let mut text = String::from(
        "mirror_requests_total{target=\"api\"} 1000\n\
         mirror_shadow_info{target=\"api\",role=\"shadow\",shadow=\"v2\"} 1\n\
         mirror_shadow_info{target=\"api\",role=\"shadow\",shadow=\"v3\"} 1\n\
         mirror_shadow_info{target=\"api\",role=\"baseline\",shadow=\"copy\"} 1\n\
         mirror_comparisons_total{target=\"api\",shadow=\"v2\"} 1000\n\
         mirror_comparisons_total{target=\"api\",shadow=\"v3\"} 1000\n\
         mirror_comparisons_total{target=\"api\",shadow=\"copy\"} 1000\n",
    );
    // (field, candidate differences, baseline differences) of 1000 samples each.
    let fields = [
        ("v2", "/price", 300, 10),
        ("v2", "/total", 250, 5),
        ("v2", "/currency", 100, 0),
        ("v2", "/tax", 80, 0),
        ("v2", "/request_id", 1000, 1000),
        ("v3", "/price", 12, 10),
    ];
    for (shadow, field, diffs, noise) in fields {
        for (family, value) in [
            ("samples", 1000),
            ("differences", diffs),
            ("baseline_samples", 1000),
            ("baseline_differences", noise),
        ] {
            text.push_str(&format!(
                "mirror_field_{family}_total{{target=\"api\",shadow=\"{shadow}\",field=\"{field}\"}} {value}\n"
            ));
        }
    }
    text
}

#[test]
fn each_candidate_gets_its_verdict_and_top_real_fields() {
    let snapshot = Snapshot::from_text(&exposition()).unwrap();
    let table = render(&snapshot, "u", Window::SinceStart);
    let block = table.split_once("\n\n  verdict v2").map(|(_, block)| block);
    // Real fields by difference rate, three at most (`/tax` is the fourth); `/request_id`
    // differs as often in the baseline: noise, not shown.
    let expected = "     fail  /price differs in 30.0% of responses (baseline 1.0%) (+3 more)
    /price     30.00%  real field; baseline 1.00%
    /total     25.00%  real field; baseline 0.50%
    /currency  10.00%  real field; baseline 0.00%
  verdict v3     pass
";
    assert_eq!(block, Some(expected), "\n{table}");
}

#[test]
fn watch_frames_show_the_verdict_on_the_totals() {
    let before = Snapshot::from_text(&exposition()).unwrap();
    let later = exposition().replace("shadow=\"v3\"} 1000\n", "shadow=\"v3\"} 1100\n");
    let after = Snapshot::from_text(&later).unwrap();
    let delta = after.since(&before);
    assert_eq!(
        delta.verdict, after.verdict,
        "the latest scrape's, not the difference's"
    );
    let table = render(&delta, "u", Window::Last(Duration::from_secs(2)));
    assert!(
        table.contains("\n  verdict v3 (totals)    pass\n"),
        "{table}"
    );
    // No candidate (nothing configured with a shadow): no block.
    let bare = Snapshot::from_text("mirror_requests_total{target=\"api\"} 3\n").unwrap();
    assert!(!render(&bare, "u", Window::SinceStart).contains("verdict"));
}
