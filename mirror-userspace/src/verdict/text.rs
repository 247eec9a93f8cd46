//! The text form of a [`Report`] (`mirror verdict --format text`): a headline, then one line per
//! candidate with its verdict and reasons, and under it its top real fields and drifted fields.
//!
//! ```text
//! mirror verdict: fail (http://prometheus:9090, all nodes, last 1h)
//! search v2: fail, 1234 compared: /price differs in 20.1% of responses (baseline 0.5%); ...
//!   real fields: /price 20.1% (noise 0.5%), header:cache-control 4.0% (noise 0.0%)
//!   drifted: /score (KS D 0.41, limit 0.10)
//! search v3: pass, 1300 compared
//! ```

use std::fmt::Write as _;

use super::{
    fields::FieldClass,
    report::{Outcome, Report},
};

/// Real fields listed per candidate.
pub const TOP_FIELDS: usize = 5;

/// The report as text; `source` says where the evidence came from (shown in the headline).
pub fn render(report: &Report, source: &str, drift_threshold: f64) -> String {
    let mut out = format!("mirror verdict: {} ({source})\n", report.verdict.as_str());
    let candidates = report
        .targets
        .iter()
        .map(|target| target.shadows.len())
        .sum::<usize>();
    if candidates == 0 {
        out.push_str(if report.targets.is_empty() {
            "no target in the evidence (none matched, or nothing was mirrored yet)\n"
        } else {
            "no candidate shadow to judge (only a baseline)\n"
        });
        return out;
    }
    for target in &report.targets {
        for shadow in &target.shadows {
            let _ = write!(
                out,
                "{} {}: {}, {} compared",
                target.target,
                shadow.shadow,
                shadow.verdict.as_str(),
                shadow.samples
            );
            if !shadow.reasons.is_empty() {
                let _ = write!(out, ": {}", shadow.reasons.join("; "));
            }
            out.push('\n');
            let real: Vec<String> = shadow
                .fields
                .iter()
                .filter(|field| field.class == FieldClass::Real)
                .take(TOP_FIELDS)
                .map(|field| {
                    let noise = match field.noise_rate {
                        Some(rate) => format!("noise {:.1}%", rate * 100.0),
                        None => "no baseline".to_owned(),
                    };
                    format!("{} {:.1}% ({noise})", field.field, field.diff_rate * 100.0)
                })
                .collect();
            if !real.is_empty() {
                let _ = writeln!(out, "  real fields: {}", real.join(", "));
            }
            let drifted: Vec<String> = shadow
                .drift
                .iter()
                .filter(|drift| drift.drifted)
                .map(|drift| {
                    format!(
                        "{} (KS D {:.2}, limit {drift_threshold:.2})",
                        drift.field, drift.statistic
                    )
                })
                .collect();
            if !drifted.is_empty() {
                let _ = writeln!(out, "  drifted: {}", drifted.join(", "));
            }
        }
    }
    out
}

/// The process exit status of a verdict: 0 pass, 1 fail, 2 inconclusive (3 is an error).
pub fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Pass => 0,
        Outcome::Fail => 1,
        Outcome::Inconclusive => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{
        FieldConfig, FieldCounts, FieldStat, Policy, Role, ShadowInput, TargetInput, classify,
        drift::{DriftConfig, Ks},
    };

    fn field(name: &str, samples: u64, diffs: u64, noise: Option<u64>) -> FieldStat {
        let counts = FieldCounts {
            samples,
            diffs,
            volatile_diffs: 0,
            baseline_samples: noise.map_or(0, |_| samples),
            baseline_diffs: noise.unwrap_or(0),
        };
        FieldStat {
            field: name.to_owned(),
            counts,
            classification: classify(name, &counts, noise.is_some(), &FieldConfig::default()),
        }
    }

    fn candidate(name: &str, samples: u64) -> ShadowInput {
        ShadowInput {
            shadow: name.to_owned(),
            role: Role::Candidate,
            samples,
            latency: None,
            errors: None,
            fields: Vec::new(),
            drift: Vec::new(),
        }
    }

    #[test]
    fn one_line_per_candidate_then_real_and_drifted_fields() {
        let mut v2 = candidate("v2", 1000);
        v2.fields = vec![
            field("/price", 1000, 201, Some(5)),
            field("/name", 1000, 40, Some(39)),
        ];
        let ks = Ks {
            statistic: 0.41,
            upper: 0.43,
            samples_a: 1000.0,
            samples_b: 1000.0,
        };
        v2.drift = vec![DriftConfig::default().judge("/score", Some(ks))];
        let targets = [TargetInput {
            target: "search".into(),
            shadows: vec![v2, candidate("v3", 1300), candidate("v4", 12)],
        }];
        let report = Policy::default().judge(&targets);
        assert_eq!(exit_code(report.verdict), 1);
        assert_eq!(
            render(&report, "http://p:9090, all nodes, last 1h", 0.1),
            "mirror verdict: fail (http://p:9090, all nodes, last 1h)\n\
             search v2: fail, 1000 compared: /price differs in 20.1% of responses (baseline \
             0.5%); /score drifted: KS D = 0.41 (limit 0.10; 1000 primary and 1000 candidate \
             values)\n  \
             real fields: /price 20.1% (noise 0.5%)\n  \
             drifted: /score (KS D 0.41, limit 0.10)\n\
             search v3: pass, 1300 compared\n\
             search v4: inconclusive, 12 compared: only 12 exchanges compared (minimum 200)\n"
        );
    }

    #[test]
    fn nothing_to_judge_says_why() {
        let empty = Policy::default().judge(&[]);
        assert_eq!(exit_code(empty.verdict), 2);
        assert_eq!(
            render(&empty, "x", 0.1),
            "mirror verdict: inconclusive (x)\n\
             no target in the evidence (none matched, or nothing was mirrored yet)\n"
        );
        let mut baseline = candidate("copy", 10);
        baseline.role = Role::Baseline;
        let only_baseline = Policy::default().judge(&[TargetInput {
            target: "a".into(),
            shadows: vec![baseline],
        }]);
        assert!(render(&only_baseline, "x", 0.1).ends_with("(only a baseline)\n"));
        assert_eq!(exit_code(Outcome::Pass), 0);
    }
}
