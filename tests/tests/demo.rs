//! `mirror demo --short` end to end: it runs to completion, its verdict names the slow path and
//! the changed field, writes stay off the shadow, and it leaves no network namespace behind.

use std::process::Command;

use mirror_tests::{mirror_bin, privileged};

/// The number right after `prefix` on the line that starts with it.
fn number_after(output: &str, prefix: &str) -> u64 {
    let line = output
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{output}"));
    line.split_whitespace()
        .next()
        .and_then(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("no number after {prefix:?}: {line:?}"))
}

#[test]
fn short_demo_names_the_regression_and_cleans_up() {
    if !privileged("short_demo_names_the_regression_and_cleans_up") {
        return;
    }
    let output = Command::new(mirror_bin())
        .args(["demo", "--short"])
        .output()
        .expect("run mirror demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "mirror demo failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    // The verdict (the policy's, from the daemon's metrics) names the slow target and the
    // changed field; the request_id that differs in every answer is noise, not a reason; the
    // unchanged targets pass.
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{stdout}"))
    };
    let search = line("FAIL: target `search` (GET /search on port 8080), shadow v2: ");
    assert!(search.contains("P99 latency"), "{stdout}");
    let price = line("FAIL: target `price` (GET /price on port 8083), shadow v2: ");
    assert!(
        price.contains("/price_cents differs in") && price.contains("(baseline 0.0%)"),
        "{stdout}"
    );
    line("PASS: target `suggest` (GET /suggest on port 8081), shadow v2: ");
    line("PASS: target `static` (GET /static/* on port 8082), shadow v2: ");
    assert!(!stdout.contains("/request_id differs"), "{stdout}");
    assert!(
        stdout.contains("DECISION: roll search v2 back (`mirror verdict` would exit 1): it fails on search, price."),
        "{stdout}"
    );

    // POSTs reached the primary, were skipped by the mirror for their method, and never
    // reached the shadow (counted by the shadow itself).
    let skipped_writes = number_after(&stdout, "writes: ");
    assert!(skipped_writes > 0, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "writes: {skipped_writes} POST /click skipped by the mirror (reason `method`), 0 reached search v2"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("search v2 (shadow) served") && stdout.contains(", 0 POST /click;"),
        "{stdout}"
    );

    // Every namespace the demo printed is gone.
    let created: Vec<&str> = stdout
        .split(|c: char| c.is_whitespace() || c == ')' || c == '(' || c == ',')
        .filter(|word| word.starts_with("mirror-c") || word.starts_with("mirror-s"))
        .collect();
    assert!(created.len() >= 2, "no namespace names in:\n{stdout}");
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    for name in created {
        assert!(
            !list.split_whitespace().any(|listed| listed == name),
            "namespace {name} is left over:\n{list}"
        );
    }
}
