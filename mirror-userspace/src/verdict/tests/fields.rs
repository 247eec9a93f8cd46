use super::*;
use crate::verdict::diff::FieldOutcome;

/// A comparison where each `(field, differs, volatile)` was compared.
fn diff(fields: &[(&str, bool, bool)]) -> FieldDiff {
    FieldDiff {
        fields: fields
            .iter()
            .map(|(field, differs, volatile)| {
                (
                    (*field).to_owned(),
                    FieldOutcome {
                        differs: *differs,
                        volatile: *volatile && *differs,
                    },
                )
            })
            .collect(),
        ..FieldDiff::default()
    }
}

fn stat<'a>(stats: &'a [FieldStat], field: &str) -> &'a FieldStat {
    stats
        .iter()
        .find(|stat| stat.field == field)
        .unwrap_or_else(|| panic!("{field} missing: {stats:?}"))
}

fn class_and_rule(stats: &[FieldStat], field: &str) -> (FieldClass, Rule) {
    let classification = stat(stats, field).classification;
    (classification.class, classification.rule)
}

/// 1000 requests against a candidate and a baseline:
/// - `/ts` differs always, in both (noise);
/// - `/price` differs in the candidate only, every 5th request (real, 20%);
/// - `/minor` differs in the candidate only, every 50th request (2%: below the absolute threshold);
/// - `/flaky` differs in the candidate every 10th request and in the baseline 9 in 100 (relative
///   difference 5%: below the relative threshold);
/// - `/new` exists only in the candidate (one-sided: differs always, never in the baseline).
fn three_way(requests: u64, baseline_every: u64) -> FieldTracker {
    let mut tracker = FieldTracker::new(FieldConfig::default(), true);
    for request in 0..requests {
        let candidate = diff(&[
            ("/ts", true, false),
            ("/price", request % 5 == 0, false),
            ("/minor", request % 50 == 0, false),
            ("/flaky", request % 10 == 0, false),
            ("/new", true, false),
            ("/same", false, false),
        ]);
        let baseline = diff(&[
            ("/ts", true, false),
            ("/price", false, false),
            ("/minor", false, false),
            ("/flaky", request % 100 < 9, false),
            ("/same", false, false),
        ]);
        let baseline = (request % baseline_every == 0).then_some(&baseline);
        tracker.record("v2", &candidate, baseline);
    }
    tracker
}

#[test]
fn baseline_separates_noise_from_real_differences() {
    let tracker = three_way(1000, 1);
    let stats = tracker.fields("v2");
    assert_eq!(tracker.exchanges("v2"), 1000);
    assert_eq!(
        class_and_rule(&stats, "/ts"),
        (FieldClass::Noise, Rule::Baseline)
    );
    assert_eq!(
        class_and_rule(&stats, "/price"),
        (FieldClass::Real, Rule::Baseline)
    );
    assert_eq!(
        class_and_rule(&stats, "/minor"),
        (FieldClass::Noise, Rule::Baseline)
    );
    assert_eq!(
        class_and_rule(&stats, "/flaky"),
        (FieldClass::Noise, Rule::Baseline)
    );
    assert_eq!(
        class_and_rule(&stats, "/new"),
        (FieldClass::Real, Rule::Baseline)
    );
    assert_eq!(
        class_and_rule(&stats, "/same"),
        (FieldClass::Noise, Rule::Baseline)
    );
    let price = stat(&stats, "/price").classification;
    assert!((price.diff_rate - 0.2).abs() < 1e-9);
    assert_eq!(price.noise_rate, Some(0.0));
    let ts = stat(&stats, "/ts").classification;
    assert_eq!((ts.diff_rate, ts.noise_rate), (1.0, Some(1.0)));
    // Sorted by difference rate.
    let rates: Vec<f64> = stats.iter().map(|stat| stat.counts.diff_rate()).collect();
    assert!(rates.windows(2).all(|pair| pair[0] >= pair[1]), "{rates:?}");
}

#[test]
fn baseline_counts_only_requests_it_answered() {
    let tracker = three_way(1000, 4);
    let stats = tracker.fields("v2");
    let price = stat(&stats, "/price").counts;
    assert_eq!((price.samples, price.baseline_samples), (1000, 250));
    assert_eq!(
        class_and_rule(&stats, "/price"),
        (FieldClass::Real, Rule::Baseline)
    );
    // Too few baseline samples: insufficient, not guessed.
    let tracker = three_way(1000, 20);
    assert_eq!(
        class_and_rule(&tracker.fields("v2"), "/price"),
        (FieldClass::Insufficient, Rule::MinSamples)
    );
}

#[test]
fn too_few_samples_are_insufficient() {
    let tracker = three_way(99, 1);
    for stat in tracker.fields("v2") {
        assert_eq!(
            (stat.classification.class, stat.classification.rule),
            (FieldClass::Insufficient, Rule::MinSamples),
            "{}",
            stat.field
        );
    }
    assert!(tracker.fields("unknown").is_empty());
    // Either side short is enough; without a baseline only the candidate's samples count.
    let config = FieldConfig::default();
    let counts = |samples, baseline_samples| FieldCounts {
        samples,
        diffs: samples / 2,
        baseline_samples,
        ..FieldCounts::default()
    };
    let class = |counts, has_baseline| classify("/x", &counts, has_baseline, &config).class;
    assert_eq!(class(counts(99, 1000), true), FieldClass::Insufficient);
    assert_eq!(class(counts(1000, 99), true), FieldClass::Insufficient);
    assert_eq!(class(counts(100, 100), true), FieldClass::Real);
    assert_eq!(class(counts(99, 0), false), FieldClass::Insufficient);
    assert_eq!(class(counts(100, 0), false), FieldClass::Real);
}

#[test]
fn the_z_test_needs_more_samples_for_smaller_excesses() {
    let config = FieldConfig::default();
    // 10% vs 0%: 7 points above the absolute threshold; 3 standard errors are 9 points at 100
    // samples, 2.8 at 1000.
    let counts = |samples: u64| FieldCounts {
        samples,
        diffs: samples / 10,
        baseline_samples: samples,
        ..FieldCounts::default()
    };
    assert_eq!(
        classify("/x", &counts(100), true, &config).class,
        FieldClass::Noise
    );
    assert_eq!(
        classify("/x", &counts(1000), true, &config).class,
        FieldClass::Real
    );
    // The relative threshold, alone: 40% vs 30% is 10 points but (c − b)/(c + b) = 0.14.
    let close = FieldCounts {
        samples: 10_000,
        diffs: 4_000,
        baseline_samples: 10_000,
        baseline_diffs: 3_000,
        volatile_diffs: 0,
    };
    assert_eq!(
        classify("/x", &close, true, &config).class,
        FieldClass::Noise
    );
    let far = FieldCounts {
        baseline_diffs: 2_000,
        ..close
    };
    assert_eq!(classify("/x", &far, true, &config).class, FieldClass::Real);
}

#[test]
fn without_a_baseline_heuristics_and_the_absolute_threshold_decide() {
    let mut tracker = FieldTracker::new(FieldConfig::default(), false);
    for request in 0..1000_u64 {
        let candidate = diff(&[
            ("/meta/request_id", true, false),
            ("/session", true, true),
            ("/items/*/updatedAt", true, false),
            ("header:x-request-id", true, false),
            ("/price", request % 5 == 0, false),
            ("/minor", request % 50 == 0, false),
            ("/user_id", request % 5 == 0, false),
        ]);
        tracker.record("v2", &candidate, None);
    }
    let stats = tracker.fields("v2");
    assert_eq!(
        class_and_rule(&stats, "/meta/request_id"),
        (FieldClass::Noise, Rule::Name)
    );
    assert_eq!(
        class_and_rule(&stats, "/items/*/updatedAt"),
        (FieldClass::Noise, Rule::Name)
    );
    assert_eq!(
        class_and_rule(&stats, "header:x-request-id"),
        (FieldClass::Noise, Rule::Name)
    );
    assert_eq!(
        class_and_rule(&stats, "/session"),
        (FieldClass::Noise, Rule::Value)
    );
    assert_eq!(
        class_and_rule(&stats, "/price"),
        (FieldClass::Real, Rule::NoBaseline)
    );
    assert_eq!(
        class_and_rule(&stats, "/user_id"),
        (FieldClass::Real, Rule::NoBaseline)
    );
    assert_eq!(
        class_and_rule(&stats, "/minor"),
        (FieldClass::Noise, Rule::NoBaseline)
    );
    assert_eq!(stat(&stats, "/price").classification.noise_rate, None);
    // Heuristics off: the name no longer saves it.
    let config = FieldConfig {
        heuristics: false,
        ..FieldConfig::default()
    };
    let counts = stat(&stats, "/meta/request_id").counts;
    assert_eq!(
        classify("/meta/request_id", &counts, false, &config).class,
        FieldClass::Real
    );
}

#[test]
fn fields_beyond_the_cap_fold_into_other() {
    let config = FieldConfig {
        max_fields: 3,
        min_samples: 1,
        ..FieldConfig::default()
    };
    let mut tracker = FieldTracker::new(config, false);
    tracker.record(
        "v2",
        &diff(&[
            ("/a", false, false),
            ("/b", true, false),
            ("/c", false, false),
        ]),
        None,
    );
    // Table full; /d equal: folded. /e differing: takes the slot of an idle field (/a or /c).
    tracker.record(
        "v2",
        &diff(&[
            ("/a", false, false),
            ("/b", true, false),
            ("/c", false, false),
            ("/d", false, false),
            ("/e", true, false),
        ]),
        None,
    );
    let stats = tracker.fields("v2");
    let names: Vec<&str> = stats.iter().map(|stat| stat.field.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        names.contains(&"/b") && names.contains(&"/e") && names.contains(&OTHER),
        "{names:?}"
    );
    let other = stat(&stats, OTHER).counts;
    // /d's observation, and the evicted idle field's two.
    assert_eq!((other.samples, other.diffs), (3, 0));
    // Totals are conserved.
    let total: u64 = stats.iter().map(|stat| stat.counts.samples).sum();
    assert_eq!(total, 8);
    // Once no tracked field is idle, differing newcomers fold too.
    for field in ["/f", "/g", "/h"] {
        tracker.record(
            "v2",
            &diff(&[
                ("/a", true, false),
                ("/c", true, false),
                (field, true, false),
            ]),
            None,
        );
    }
    assert!(tracker.fields("v2").len() <= 4);
    let long = format!("/{}", "x".repeat(MAX_FIELD_LEN));
    tracker.record("w", &diff(&[(long.as_str(), true, false)]), None);
    assert_eq!(tracker.fields("w")[0].field, OTHER);
}

/// Ground truth, randomized (seeded): exchanges drawn with a known chance that the candidate
/// differs from the primary (`c`) and that the baseline does (`b`). Where the truth is noise
/// (`c == b`), the class may be `real` only at the z test's false-positive rate (one-sided
/// z > 3: 0.13%; at most 0.5% allowed); where the candidate clearly exceeds the baseline (by
/// twice the absolute and relative thresholds, with 2000 samples and more), it must be `real`
/// in at least 99% of the cases. Everything between is the thresholds' business, not checked.
#[test]
fn classes_agree_with_the_true_rates() {
    let config = FieldConfig::default();
    let mut random = crate::random::SplitMix64::new(21);
    let (mut noise_cases, mut false_real) = (0u32, 0u32);
    let (mut real_cases, mut missed) = (0u32, 0u32);
    for _ in 0..3000 {
        let samples = 100 + random.below(5000);
        let b = random.unit() * 0.6;
        let is_noise = random.below(2) == 0;
        let c = if is_noise {
            b
        } else {
            (b + 0.06 + random.unit() * 0.3).min(1.0)
        };
        if !is_noise && (samples < 2000 || (c - b) / (c + b) < 2.0 * config.relative_threshold) {
            continue;
        }
        let mut counts = FieldCounts::default();
        for _ in 0..samples {
            counts.samples += 1;
            counts.diffs += u64::from(random.unit() < c);
            counts.baseline_samples += 1;
            counts.baseline_diffs += u64::from(random.unit() < b);
        }
        let real = classify("/price", &counts, true, &config).class == FieldClass::Real;
        if is_noise {
            noise_cases += 1;
            false_real += u32::from(real);
        } else {
            real_cases += 1;
            missed += u32::from(!real);
        }
    }
    assert!(
        noise_cases > 1000 && real_cases > 200,
        "{noise_cases} {real_cases}"
    );
    assert!(
        f64::from(false_real) <= 0.005 * f64::from(noise_cases),
        "{false_real} of {noise_cases} noise fields called real"
    );
    assert!(
        f64::from(missed) <= 0.01 * f64::from(real_cases),
        "{missed} of {real_cases} real fields missed"
    );
}
