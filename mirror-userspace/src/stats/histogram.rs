//! Quantiles estimated from cumulative histogram buckets, the way PromQL's `histogram_quantile`
//! does it: find the bucket the rank falls in and interpolate linearly inside it, assuming the
//! observations are spread evenly between the bucket's bounds.

/// One cumulative bucket: `count` observations were `<= upper_bound`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub upper_bound: f64,
    pub count: f64,
}

/// An estimated quantile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Quantile {
    /// Interpolated inside a finite bucket.
    Value(f64),
    /// The rank falls in the `+Inf` bucket: the quantile is above the highest finite bound,
    /// which is all that is known. PromQL returns that bound as if it were the value; keeping
    /// the distinction lets the table print `>52.4s` instead of a number that looks exact.
    Above(f64),
}

impl Quantile {
    /// The number PromQL's `histogram_quantile` would return.
    pub fn promql_value(self) -> f64 {
        match self {
            Self::Value(value) | Self::Above(value) => value,
        }
    }
}

/// Estimates quantile `q` (clamped to `0..=1`) of a histogram given by its cumulative buckets in
/// any order. `None` where PromQL returns NaN: no observations, no `+Inf` bucket, or no finite
/// bucket to interpolate in.
pub fn quantile(q: f64, buckets: &[Bucket]) -> Option<Quantile> {
    let q = if q.is_nan() {
        return None;
    } else {
        q.clamp(0.0, 1.0)
    };
    let mut buckets = buckets.to_vec();
    buckets.sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
    buckets.dedup_by(|later, kept| {
        // Same bound twice (e.g. two series that differ only in an ignored label): one bucket.
        let same = later.upper_bound == kept.upper_bound;
        if same {
            kept.count += later.count;
        }
        same
    });
    let last = buckets.last()?;
    if last.upper_bound != f64::INFINITY || buckets.len() < 2 {
        return None;
    }
    // Counts can dip across buckets when a delta straddles a counter reset or a scrape raced an
    // observation; like PromQL, treat the cumulative counts as at least their predecessors.
    let mut running = 0.0_f64;
    for bucket in &mut buckets {
        running = running.max(bucket.count);
        bucket.count = running;
    }
    let total = running;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let finite = &buckets[..buckets.len() - 1];
    let Some(index) = finite.iter().position(|bucket| bucket.count >= rank) else {
        return Some(Quantile::Above(finite[finite.len() - 1].upper_bound));
    };
    let bucket = finite[index];
    if index == 0 && bucket.upper_bound <= 0.0 {
        return Some(Quantile::Value(bucket.upper_bound));
    }
    let (start, below) = match index.checked_sub(1) {
        Some(previous) => (finite[previous].upper_bound, finite[previous].count),
        None => (0.0, 0.0),
    };
    let in_bucket = bucket.count - below;
    if in_bucket <= 0.0 {
        // Only reachable for rank 0 (q = 0) with empty leading buckets; PromQL yields NaN from
        // 0/0 there, the start of the bucket is the sensible answer.
        return Some(Quantile::Value(start));
    }
    Some(Quantile::Value(
        start + (bucket.upper_bound - start) * ((rank - below) / in_bucket),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs
            .iter()
            .map(|&(upper_bound, count)| Bucket { upper_bound, count })
            .collect()
    }

    fn value(q: f64, pairs: &[(f64, f64)]) -> f64 {
        match quantile(q, &buckets(pairs)) {
            Some(Quantile::Value(value)) => value,
            other => panic!("expected a value, got {other:?}"),
        }
    }

    fn close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-12, "{actual} != {expected}");
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn interpolates_linearly_inside_the_bucket() {
        // 10 in (0, 0.1], 30 in (0.1, 0.2], 60 in (0.2, 0.4].
        let h = [(0.1, 10.0), (0.2, 40.0), (0.4, 100.0), (INF, 100.0)];
        // P50: rank 50 is the 10th of 60 in (0.2, 0.4].
        close(value(0.5, &h), 0.2 + 0.2 * (10.0 / 60.0));
        // P99: rank 99 is the 59th of 60.
        close(value(0.99, &h), 0.2 + 0.2 * (59.0 / 60.0));
        // P10: exactly the first bucket's bound; lower ranks interpolate from zero.
        close(value(0.1, &h), 0.1);
        close(value(0.05, &h), 0.05);
        close(value(0.0, &h), 0.0);
        close(value(1.0, &h), 0.4);
    }

    #[test]
    fn order_of_buckets_does_not_matter() {
        let h = [(INF, 100.0), (0.4, 100.0), (0.1, 10.0), (0.2, 40.0)];
        close(value(0.5, &h), 0.2 + 0.2 * (10.0 / 60.0));
    }

    #[test]
    fn empty_histogram_has_no_quantile() {
        assert_eq!(quantile(0.5, &[]), None);
        let h = buckets(&[(0.1, 0.0), (0.2, 0.0), (INF, 0.0)]);
        assert_eq!(quantile(0.5, &h), None);
        assert_eq!(quantile(0.99, &h), None);
    }

    #[test]
    fn everything_in_the_inf_bucket_is_above_the_highest_bound() {
        let h = buckets(&[(0.1, 0.0), (52.4288, 0.0), (INF, 5.0)]);
        assert_eq!(quantile(0.5, &h), Some(Quantile::Above(52.4288)));
        assert_eq!(quantile(0.5, &h).unwrap().promql_value(), 52.4288);
        // Only the tail beyond the last bound: P50 interpolates, P99 does not.
        let h = [(1.0, 90.0), (INF, 100.0)];
        close(value(0.5, &h), 0.5 / 0.9);
        assert_eq!(quantile(0.99, &buckets(&h)), Some(Quantile::Above(1.0)));
    }

    #[test]
    fn single_bucket_histograms() {
        // Only +Inf: nothing to interpolate in (PromQL: NaN).
        assert_eq!(quantile(0.5, &buckets(&[(INF, 10.0)])), None);
        // One finite bucket (plus +Inf) interpolates from zero to its bound.
        let h = [(2.0, 10.0), (INF, 10.0)];
        close(value(0.5, &h), 1.0);
        close(value(0.99, &h), 1.98);
    }

    #[test]
    fn without_an_inf_bucket_there_is_no_quantile() {
        assert_eq!(quantile(0.5, &buckets(&[(0.1, 1.0), (0.2, 2.0)])), None);
    }

    #[test]
    fn non_positive_first_bound_is_returned_as_is() {
        let h = [(-1.0, 5.0), (0.0, 5.0), (1.0, 10.0), (INF, 10.0)];
        close(value(0.2, &h), -1.0);
        close(value(0.75, &h), 0.5);
    }

    #[test]
    fn non_monotonic_counts_are_forced_up() {
        // The 0.2 bucket dipped below 0.1's (a delta across a reset): treated as 10.
        let h = [(0.1, 10.0), (0.2, 8.0), (0.4, 20.0), (INF, 20.0)];
        close(value(0.5, &h), 0.1);
        close(value(0.75, &h), 0.2 + 0.2 * 0.5);
    }

    #[test]
    fn duplicate_bounds_are_merged_and_q_is_clamped() {
        let h = [(1.0, 2.0), (1.0, 2.0), (INF, 4.0), (INF, 4.0)];
        close(value(0.5, &h), 1.0);
        close(value(7.0, &[(1.0, 4.0), (INF, 4.0)]), 1.0);
        assert_eq!(quantile(f64::NAN, &buckets(&h)), None);
    }
}
