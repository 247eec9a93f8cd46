//! The verdict's serialised shape (JSON through serde):
//!
//! ```json
//! {"verdict": "pass|fail|inconclusive",
//!  "targets": [{"target": "api", "baseline": "v1-copy", "shadows": [{"shadow": "v2",
//!     "verdict": "fail", "samples": 1234,
//!     "reasons": ["/price differs in 20.1% of responses (baseline 0.0%)"],
//!     "notes": [],
//!     "fields": [{"field": "/price", "class": "real", "diff_rate": 0.201, "noise_rate": 0.0,
//!                 "rule": "baseline", "samples": 1234, "noise_samples": 1200}],
//!     "drift": [{"field": "/score", "statistic": 0.41, "drifted": true, "upper": 0.43,
//!                "primary_samples": 1234, "shadow_samples": 1234}],
//!     "latency": {...}, "errors": {...}}]}]}
//! ```
//!
//! `baseline` is omitted without a baseline shadow (which is never listed among `shadows`);
//! `noise_rate` is `null` when no baseline response was compared for the field; `fields` lists
//! the fields that differed at least once on either side (`fields_compared` counts all);
//! `latency` and `errors` are omitted when not measured.

use serde::Serialize;

use super::fields::{FieldClass, Rule};

/// A verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Nothing wrong found with enough evidence.
    Pass,
    /// Not enough evidence either way.
    Inconclusive,
    /// A limit of the policy was exceeded.
    Fail,
}

impl Outcome {
    /// The lowercase name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Inconclusive => "inconclusive",
            Self::Fail => "fail",
        }
    }
}

/// The whole verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// `fail` if any candidate fails, else `inconclusive` if any is (or there is no candidate),
    /// else `pass`.
    pub verdict: Outcome,
    /// Per target.
    pub targets: Vec<TargetReport>,
}

/// One target's candidates.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetReport {
    /// The target's name.
    pub target: String,
    /// The baseline shadow's name, if the target has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// The candidates.
    pub shadows: Vec<ShadowReport>,
}

/// One candidate's verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShadowReport {
    /// The shadow's name.
    pub shadow: String,
    /// Its verdict.
    pub verdict: Outcome,
    /// Exchanges compared.
    pub samples: u64,
    /// Why it failed or is inconclusive, one sentence each (empty for a pass).
    pub reasons: Vec<String>,
    /// Observations that did not decide the verdict.
    pub notes: Vec<String>,
    /// Fields compared (tracked ones, `other` included).
    pub fields_compared: usize,
    /// The fields that differed at least once, real first.
    pub fields: Vec<FieldEntry>,
    /// The numeric fields tracked for drift.
    pub drift: Vec<DriftEntry>,
    /// Latency quantiles, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyEntry>,
    /// 5xx shares, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<ErrorEntry>,
}

/// One field's class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldEntry {
    /// The field.
    pub field: String,
    /// `real`, `noise` or `insufficient`.
    pub class: FieldClass,
    /// The candidate's difference rate.
    pub diff_rate: f64,
    /// The baseline's difference rate; `null` without baseline samples.
    pub noise_rate: Option<f64>,
    /// The rule that decided the class.
    pub rule: Rule,
    /// Exchanges the field was compared in.
    pub samples: u64,
    /// Of those, with a baseline response compared too.
    pub noise_samples: u64,
}

/// One numeric field's drift.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DriftEntry {
    /// The field.
    pub field: String,
    /// KS `D` at the bucket bounds (a lower bound of the exact `D`); 0 without values.
    pub statistic: f64,
    /// Whether the field has drifted.
    pub drifted: bool,
    /// Upper bound of the exact `D`.
    pub upper: f64,
    /// The primary's values.
    pub primary_samples: u64,
    /// The candidate's values.
    pub shadow_samples: u64,
}

/// Latency quantiles in seconds (`null` when unknown).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LatencyEntry {
    /// The primary's median.
    pub primary_p50: Option<f64>,
    /// The candidate's median.
    pub shadow_p50: Option<f64>,
    /// The primary's 99th percentile.
    pub primary_p99: Option<f64>,
    /// The candidate's 99th percentile.
    pub shadow_p99: Option<f64>,
}

/// 5xx shares of responses.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ErrorEntry {
    /// The primary's 5xx share.
    pub primary_rate: f64,
    /// The candidate's 5xx share.
    pub shadow_rate: f64,
}
