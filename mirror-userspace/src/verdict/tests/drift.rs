use proptest::prelude::*;

use super::*;

/// A fixed-seed generator, so the tests are deterministic.
struct Rng(crate::random::SplitMix64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1_u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn normals(seed: u64, n: usize, mean: f64, sd: f64) -> Vec<f64> {
    let mut rng = Rng(crate::random::SplitMix64::new(seed));
    (0..n).map(|_| mean + sd * rng.normal()).collect()
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    (1.0 - poly * (-x * x).exp()).copysign(x)
}

/// The standard normal CDF.
fn phi(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

fn sketch(layout: &Layout, values: &[f64]) -> Sketch {
    let mut sketch = Sketch::new(layout);
    for value in values {
        sketch.insert(layout, *value);
    }
    sketch
}

/// The exact two-sample KS distance of raw values.
fn exact_ks(a: &[f64], b: &[f64]) -> f64 {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0, 0, 0.0_f64);
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) | (None, Some(x)) => *x,
            (None, None) => unreachable!(),
        };
        while a.get(i).is_some_and(|v| *v <= x) {
            i += 1;
        }
        while b.get(j).is_some_and(|v| *v <= x) {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

#[test]
fn default_layout() {
    let layout = Layout::default();
    let bounds = layout.bounds();
    assert_eq!(layout.buckets(), 323);
    assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]));
    assert!(
        bounds
            .iter()
            .zip(bounds.iter().rev())
            .all(|(a, b)| *a == -*b)
    );
    // 2^-10 = 0.0009765625, rounded half to even.
    assert_eq!(bounds[161], 0.000_976_562);
    assert_eq!(bounds[321], 1.073_74e9);
    assert!(
        (layout.max_ratio() - 2_f64.powf(0.25)).abs() < 1e-4,
        "{}",
        layout.max_ratio()
    );
    // Prometheus `le` semantics: a value equal to a bound is in that bound's bucket.
    assert_eq!(layout.index(bounds[200]), 200);
    assert_eq!(layout.index(bounds[200] * (1.0 + 1e-12)), 201);
    assert_eq!(layout.index(0.0), 161);
    assert_eq!(layout.index(-0.0001), 161);
    assert_eq!(
        layout.index(-0.01),
        layout.index(0.01) - 2 * (layout.index(0.01) - 161)
    );
    assert_eq!(layout.index(1e12), 322);
    assert_eq!(layout.index(-1e12), 0);
    let coarse = Layout::new(&LayoutConfig {
        buckets_per_doubling: 1,
        min_exponent: 0,
        max_exponent: 2,
    });
    assert_eq!(coarse.bounds(), [-4.0, -2.0, -1.0, 1.0, 2.0, 4.0]);
}

#[test]
fn same_distribution_gives_a_small_statistic() {
    let layout = Layout::default();
    let a = sketch(&layout, &normals(1, 20_000, 0.0, 1.0));
    let b = sketch(&layout, &normals(2, 20_000, 0.0, 1.0));
    let ks = ks(&a, &b).unwrap();
    assert!(ks.statistic < 0.02, "{ks:?}");
    assert!(ks.upper < ks.statistic + 0.05, "{ks:?}");
    assert_eq!((ks.samples_a, ks.samples_b), (20_000.0, 20_000.0));
}

#[test]
fn shifted_normals_match_the_analytic_statistic() {
    let layout = Layout::default();
    // Sampling error of each empirical CDF (DKW: P(sup > 0.015) < 2 e^(−2 n 0.015²) = 2.5e-4).
    let sampling = 2.0 * 0.015;
    for delta in [0.25, 0.5, 1.0, 2.0] {
        let a = normals(3, 20_000, 0.0, 1.0);
        let b = normals(4, 20_000, delta, 1.0);
        let analytic = 2.0 * phi(delta / 2.0) - 1.0;
        let ks = ks(&sketch(&layout, &a), &sketch(&layout, &b)).unwrap();
        // The documented interval holds for the raw samples exactly...
        let exact = exact_ks(&a, &b);
        assert!(
            ks.statistic <= exact + 1e-12 && exact <= ks.upper + 1e-12,
            "{delta}: {ks:?} {exact}"
        );
        // ...and so around the analytic value, up to sampling error.
        assert!(
            ks.statistic - sampling <= analytic && analytic <= ks.upper + sampling,
            "{delta}: {ks:?} {analytic}"
        );
        // Around zero the log buckets are fine: the estimate itself is close.
        assert!(
            (ks.statistic - analytic).abs() < sampling,
            "{delta}: {ks:?} {analytic}"
        );
        assert!(ks.upper - ks.statistic < 0.05, "{delta}: {ks:?}");
    }
}

#[test]
fn narrow_distributions_get_a_wide_interval() {
    // N(1000, 100²): buckets near 1000 are ~190 wide, so the interval is honest about it.
    let layout = Layout::default();
    let a = normals(5, 20_000, 1000.0, 100.0);
    let b = normals(6, 20_000, 1100.0, 100.0);
    let analytic = 2.0 * phi(0.5) - 1.0;
    let ks = ks(&sketch(&layout, &a), &sketch(&layout, &b)).unwrap();
    let exact = exact_ks(&a, &b);
    assert!(ks.statistic <= exact && exact <= ks.upper, "{ks:?} {exact}");
    assert!(
        ks.statistic - 0.03 <= analytic && analytic <= ks.upper + 0.03,
        "{ks:?} {analytic}"
    );
    assert!(ks.upper - ks.statistic > 0.2, "{ks:?}");
}

#[test]
fn merging_sketches_equals_sketching_the_union() {
    let layout = Layout::default();
    let a = normals(7, 5_000, 10.0, 30.0);
    let b: Vec<f64> = normals(8, 3_000, -5.0, 1e4)
        .into_iter()
        .chain([0.0, 1e12, -1e12])
        .collect();
    let mut merged = sketch(&layout, &a);
    assert!(merged.merge(&sketch(&layout, &b)));
    let union: Vec<f64> = a.iter().chain(&b).copied().collect();
    let union = sketch(&layout, &union);
    assert_eq!(merged.counts(), union.counts());
    // Sums differ only by the order of the additions.
    assert!((merged.sum() - union.sum()).abs() <= 1e-9 * union.sum().abs().max(1.0));
    assert_eq!(merged.total(), 8_003);
    // The statistic from summed cumulative counts (as from Prometheus) is the same.
    let other = sketch(&layout, &normals(9, 4_000, 12.0, 30.0));
    let summed: Vec<f64> = sketch(&layout, &a)
        .cumulative()
        .iter()
        .zip(sketch(&layout, &b).cumulative())
        .map(|(x, y)| x + y)
        .collect();
    assert_eq!(
        ks_from_cumulative(&summed, &other.cumulative()),
        ks(&merged, &other)
    );
    // Another layout does not merge.
    let coarse = Layout::new(&LayoutConfig {
        buckets_per_doubling: 1,
        ..LayoutConfig::default()
    });
    assert!(!merged.merge(&Sketch::new(&coarse)));
}

#[test]
fn cumulative_counts_edge_cases() {
    assert_eq!(ks_from_cumulative(&[1.0, 2.0], &[1.0]), None);
    assert_eq!(ks_from_cumulative(&[0.0, 0.0], &[1.0, 2.0]), None);
    assert_eq!(ks_from_cumulative(&[], &[]), None);
    let same = ks_from_cumulative(&[1.0, 3.0, 4.0], &[2.0, 6.0, 8.0]).unwrap();
    assert_eq!(same.statistic, 0.0);
    assert_eq!(same.upper, 0.5);
    // A dip (counter reset) is raised to the running maximum.
    let dipped = ks_from_cumulative(&[2.0, 1.0, 4.0], &[2.0, 2.0, 4.0]).unwrap();
    assert_eq!(dipped.statistic, 0.0);
    let disjoint = ks_from_cumulative(&[5.0, 5.0, 5.0], &[0.0, 0.0, 7.0]).unwrap();
    assert_eq!((disjoint.statistic, disjoint.upper), (1.0, 1.0));
}

#[test]
fn drift_is_judged_on_enough_samples_above_the_threshold() {
    let config = DriftConfig::default();
    let ks = |statistic, upper, n| {
        Some(Ks {
            statistic,
            upper,
            samples_a: n,
            samples_b: n,
        })
    };
    let judged = config.judge("/score", ks(0.41, 0.43, 1000.0));
    assert!(judged.drifted && judged.resolved && judged.enough_samples);
    let judged = config.judge("/score", ks(0.41, 0.43, 999.0));
    assert!(!judged.drifted && !judged.enough_samples);
    let judged = config.judge("/score", ks(0.05, 0.08, 5000.0));
    assert!(!judged.drifted && judged.resolved);
    let judged = config.judge("/score", ks(0.05, 0.3, 5000.0));
    assert!(!judged.drifted && !judged.resolved);
    assert!(!config.judge("/score", None).drifted);
}

#[test]
fn tracker_caps_fields_per_candidate() {
    let mut tracker = DriftTracker::new(DriftConfig {
        max_fields: 2,
        min_samples: 100,
        ..DriftConfig::default()
    });
    let mut rng = Rng(crate::random::SplitMix64::new(10));
    for _ in 0..500 {
        let x = rng.normal();
        let pairs = [
            NumericPair {
                field: "/a".into(),
                primary: x,
                shadow: x,
            },
            NumericPair {
                field: "/b".into(),
                primary: x,
                shadow: x + 3.0,
            },
            NumericPair {
                field: "/c".into(),
                primary: x,
                shadow: x,
            },
        ];
        tracker.record("v2", &pairs);
    }
    let drift = tracker.drift("v2");
    assert_eq!(
        drift
            .iter()
            .map(|stat| stat.field.as_str())
            .collect::<Vec<_>>(),
        ["/a", "/b"]
    );
    assert!(!drift[0].drifted);
    assert_eq!(drift[0].ks.unwrap().statistic, 0.0);
    assert!(drift[1].drifted, "{:?}", drift[1]);
    assert_eq!(tracker.candidate("v2").unwrap().untracked_values, 500);
    assert!(tracker.drift("v3").is_empty());
    assert_eq!(tracker.layout().buckets(), 323);
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        -5.0..5.0_f64,
        -1e4..1e4_f64,
        Just(0.0),
        (0_u32..40).prop_map(|e| 2_f64.powf(f64::from(e) / 4.0 - 8.0)),
        prop_oneof![Just(-2e9), Just(3e9)],
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The documented bound: statistic ≤ exact D ≤ upper ≤ statistic + largest bucket share.
    #[test]
    fn the_interval_contains_the_exact_statistic(
        a in proptest::collection::vec(value(), 1..200),
        b in proptest::collection::vec(value(), 1..200),
    ) {
        let layout = Layout::default();
        let (sa, sb) = (sketch(&layout, &a), sketch(&layout, &b));
        let ks = ks(&sa, &sb).unwrap();
        let exact = exact_ks(&a, &b);
        prop_assert!(ks.statistic <= exact + 1e-12, "{:?} {}", ks, exact);
        prop_assert!(exact <= ks.upper + 1e-12, "{:?} {}", ks, exact);
        let largest = sa.counts().iter().map(|c| *c as f64 / a.len() as f64)
            .chain(sb.counts().iter().map(|c| *c as f64 / b.len() as f64))
            .fold(0.0, f64::max);
        prop_assert!(ks.upper <= ks.statistic + largest + 1e-12, "{:?} {}", ks, largest);
    }
}
