//! The promote-or-roll-back verdict, I/O-free: values in, values out (no socket, clock or
//! thread), so every rule is unit-tested.
//!
//! Flow, per target:
//! 1. [`exchange::Comparer::compare`] takes the primary's and a shadow's response to one
//!    request: it decodes each body by its `Content-Encoding` within a budget ([`decode`]),
//!    compares the bodies leaf by leaf as JSON ([`diff`]; fields named by [`mod@pointer`], array
//!    indexes generalised to `*`) and the selected headers ([`headers`]), giving a
//!    [`diff::FieldDiff`]: the fields compared, which differ, and numeric pairs.
//! 2. [`fields::FieldTracker::record`] counts, per candidate and field, the candidate's
//!    differences and the baseline's differences on the same requests; [`fields::classify`]
//!    calls each field `real`, `noise` or `insufficient` (Diffy's three-way idea; without a
//!    baseline, [`heuristics`]).
//! 3. [`drift::DriftTracker::record`] sketches numeric fields per side in a fixed bucket layout
//!    that exports as a Prometheus histogram; [`drift::ks_from_cumulative`] gives the
//!    Kolmogorov–Smirnov statistic with its error interval, from one node's sketches or from
//!    buckets summed across nodes.
//! 4. [`inputs::inputs_from_samples`] reads the same statistics back from metric samples (one
//!    daemon's `/metrics`, or Prometheus sums over nodes), for `/verdict`, `mirror verdict` and
//!    `mirror stats`.
//! 5. [`policy::Policy::judge`] turns the statistics of every target and shadow into a
//!    [`report::Report`]: `pass`, `fail` or `inconclusive`, with reasons, serialisable to JSON.
//!
//! Memory is bounded by configuration, not by traffic: `max_fields` counters and
//! `drift.max_fields` pairs of sketches per candidate, and one decoded body pair at a time.

#![deny(missing_docs)]

pub mod decode;
pub mod diff;
pub mod drift;
pub mod exchange;
pub mod fields;
pub mod headers;
pub mod heuristics;
pub mod inputs;
pub mod pointer;
pub mod policy;
pub mod prometheus;
pub mod report;
pub mod text;
mod tree;

pub use self::diff::{DiffConfig, FieldDiff, NumericPair};
pub use self::drift::{
    DriftConfig, DriftStat, DriftTracker, Ks, Layout, Sketch, ks_from_cumulative,
};
pub use self::exchange::{BodyComparison, Comparer, ExchangeComparison, Response};
pub use self::fields::{FieldClass, FieldConfig, FieldCounts, FieldStat, FieldTracker, classify};
pub use self::inputs::{inputs_from_samples, select};
pub use self::policy::{ErrorCounts, Latency, Policy, Role, ShadowInput, TargetInput};
pub use self::report::{Outcome, Report};
