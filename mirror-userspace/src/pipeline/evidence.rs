//! The evidence behind the verdict: per target, the field statistics of every compared exchange
//! (each candidate against the primary, with the baseline's differences on the same request as
//! the noise reference) and the drift sketches of numeric fields. The pipeline records into it
//! as exchanges close; the metrics endpoint exports it as mergeable counters and histograms, from
//! which `/verdict` and `mirror verdict` judge.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter},
};

use crate::{
    compare::Observed,
    verdict::{
        BodyComparison, Comparer, DriftTracker, FieldDiff, FieldTracker, Policy, Response, Sketch,
        pointer::PointerError,
    },
};

/// Why an exchange was compared by digest only, not field by field (the
/// `mirror_comparisons_digest_only_total` reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestOnly {
    /// A body was not held: over `[limits] compare_body_bytes`.
    BodyBudget,
    /// A body is not JSON (its headers are still compared).
    NotJson,
    /// A body's `Content-Encoding` could not be undone within the budget.
    Undecodable,
    /// Beyond `[verdict.diff] max_per_second`: the exchange was not sampled for the field diff.
    DiffRate,
}

impl DigestOnly {
    pub const ALL: [Self; 4] = [
        Self::BodyBudget,
        Self::NotJson,
        Self::Undecodable,
        Self::DiffRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BodyBudget => "body_budget",
            Self::NotJson => "not_json",
            Self::Undecodable => "undecodable",
            Self::DiffRate => "diff_rate",
        }
    }
}

/// The header lines of a response head (status line excluded), names and values trimmed.
/// Continuation lines (obsolete folding) are left out: a folded value is compared by its first
/// line only.
pub(super) fn header_pairs(head: &[u8]) -> Vec<(&[u8], &[u8])> {
    head.split(|byte| *byte == b'\n')
        .skip(1)
        .filter(|line| !line.starts_with(b" ") && !line.starts_with(b"\t"))
        .filter_map(|line| {
            let colon = line.iter().position(|byte| *byte == b':')?;
            Some((line[..colon].trim_ascii(), line[colon + 1..].trim_ascii()))
        })
        .collect()
}

/// Compares two sides field by field ([`Comparer`]), built once from the policy.
#[derive(Debug)]
pub struct FieldComparer(Comparer);

impl FieldComparer {
    pub fn new(policy: &Policy) -> Result<Self, PointerError> {
        Comparer::new(&policy.diff).map(Self)
    }

    /// The field diff of one pair, with why the bodies were left out of it, if they were.
    /// `None` when a body was not held: nothing is known beyond the digests.
    pub fn compare(
        &self,
        primary: &Observed,
        shadow: &Observed,
    ) -> Result<(FieldDiff, Option<DigestOnly>), DigestOnly> {
        let (Some(primary_body), Some(shadow_body)) = (&primary.body, &shadow.body) else {
            return Err(DigestOnly::BodyBudget);
        };
        let primary_headers = header_pairs(&primary.head);
        let shadow_headers = header_pairs(&shadow.head);
        let comparison = self.0.compare(
            &Response {
                headers: &primary_headers,
                body: primary_body.bytes(),
            },
            &Response {
                headers: &shadow_headers,
                body: shadow_body.bytes(),
            },
        );
        let digest_only = match comparison.body {
            BodyComparison::Json => None,
            BodyComparison::NotJson(_) => Some(DigestOnly::NotJson),
            BodyComparison::Undecodable(..) => Some(DigestOnly::Undecodable),
        };
        Ok((comparison.fields, digest_only))
    }
}

/// One shadow as the evidence knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowRole {
    pub name: String,
    pub baseline: bool,
}

/// One target's evidence.
#[derive(Debug)]
pub struct TargetEvidence {
    pub target: String,
    /// In the target's shadow order (the comparator's indexes).
    pub shadows: Vec<ShadowRole>,
    pub fields: FieldTracker,
    pub drift: DriftTracker,
}

impl TargetEvidence {
    pub fn new(target: &str, shadows: Vec<ShadowRole>, policy: &Policy) -> Self {
        let has_baseline = shadows.iter().any(|shadow| shadow.baseline);
        Self {
            target: target.to_owned(),
            shadows,
            fields: FieldTracker::new(policy.fields.clone(), has_baseline),
            drift: DriftTracker::new(policy.drift.clone()),
        }
    }

    /// Records the field diffs of one request, `(shadow index, diff)`: each candidate's, with
    /// the baseline's on the same request as its noise reference when the baseline answered.
    pub fn record(&mut self, diffs: &[(usize, FieldDiff)]) {
        let baseline = diffs
            .iter()
            .find(|(shadow, _)| self.shadows.get(*shadow).is_some_and(|role| role.baseline))
            .map(|(_, diff)| diff);
        for (shadow, diff) in diffs {
            let Some(role) = self.shadows.get(*shadow).filter(|role| !role.baseline) else {
                continue;
            };
            self.fields.record(&role.name, diff, baseline);
            self.drift.record(&role.name, &diff.numeric);
        }
    }

    fn candidates(&self) -> impl Iterator<Item = &str> {
        self.shadows
            .iter()
            .filter(|shadow| !shadow.baseline)
            .map(|shadow| shadow.name.as_str())
    }
}

/// Every target's evidence, in the pipeline's target order.
#[derive(Debug, Default)]
pub struct Evidence {
    pub targets: Vec<TargetEvidence>,
}

/// The evidence shared by the pipeline (writer) and the metrics endpoint (reader).
#[derive(Clone, Debug, Default)]
pub struct SharedEvidence(Arc<Mutex<Evidence>>);

impl SharedEvidence {
    pub fn lock(&self) -> MutexGuard<'_, Evidence> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FieldLabels {
    target: String,
    shadow: String,
    field: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ValueLabels {
    target: String,
    shadow: String,
    field: String,
    side: &'static str,
}

/// Exports the evidence at scrape time (field counters and value histograms).
pub struct EvidenceCollector {
    evidence: SharedEvidence,
}

impl EvidenceCollector {
    pub fn new(evidence: SharedEvidence) -> Self {
        Self { evidence }
    }
}

impl fmt::Debug for EvidenceCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvidenceCollector").finish_non_exhaustive()
    }
}

/// The counters of one field, by metric name (see README "Metrics").
const FIELD_COUNTERS: [(&str, &str); 5] = [
    (
        "mirror_field_samples",
        "Exchanges in which a candidate's field was compared with the primary's",
    ),
    (
        "mirror_field_differences",
        "Of those, exchanges in which the field differed",
    ),
    (
        "mirror_field_volatile_differences",
        "Of those differences, the ones between id- or clock-like values",
    ),
    (
        "mirror_field_baseline_samples",
        "Of the field's samples, those with the baseline's response compared too",
    ),
    (
        "mirror_field_baseline_differences",
        "Of those, where the baseline differed from the primary at the field",
    ),
];

/// One sketch as a Prometheus histogram over the layout's bounds.
struct SketchHistogram<'a> {
    sketch: &'a Sketch,
    bounds: &'a [f64],
}

impl EncodeMetric for SketchHistogram<'_> {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.sketch.counts().iter().copied())
            .collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sketch.sum(),
            self.sketch.total(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for EvidenceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let evidence = self.evidence.lock();
        for (index, (name, help)) in FIELD_COUNTERS.iter().enumerate() {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for target in &evidence.targets {
                for candidate in target.candidates() {
                    for stat in target.fields.fields(candidate) {
                        let counts = stat.counts;
                        let value = [
                            counts.samples,
                            counts.diffs,
                            counts.volatile_diffs,
                            counts.baseline_samples,
                            counts.baseline_diffs,
                        ][index];
                        let labels = FieldLabels {
                            target: target.target.clone(),
                            shadow: candidate.to_owned(),
                            field: stat.field.clone(),
                        };
                        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "mirror_field_value",
            "Numeric field values of the compared exchanges, per candidate and side",
            None,
            MetricType::Histogram,
        )?;
        for target in &evidence.targets {
            let bounds = target.drift.layout().bounds();
            for candidate in target.candidates() {
                let Some(drift) = target.drift.candidate(candidate) else {
                    continue;
                };
                for (field, (primary, shadow)) in &drift.fields {
                    for (side, sketch) in [("primary", primary), ("shadow", shadow)] {
                        let labels = ValueLabels {
                            target: target.target.clone(),
                            shadow: candidate.to_owned(),
                            field: field.clone(),
                            side,
                        };
                        SketchHistogram { sketch, bounds }
                            .encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_are_split_and_trimmed() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type:  application/json \r\nX-A: 1\r\n folded\r\nDate: now\r\n\r\n";
        assert_eq!(
            header_pairs(head),
            [
                (&b"Content-Type"[..], &b"application/json"[..]),
                (b"X-A", b"1"),
                (b"Date", b"now"),
            ]
        );
    }
}
