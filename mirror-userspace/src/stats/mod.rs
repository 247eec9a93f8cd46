//! The I/O-free core of `mirror stats`: a running daemon's `/metrics` text -> [`parse`]d samples
//! -> per-target [`Snapshot`] (differenced between refreshes with [`Snapshot::since`]) ->
//! [`render`]ed table, with each candidate's verdict under the default policy
//! ([`crate::verdict::inputs_from_samples`] on the same samples). Latency quantiles are
//! estimated from the histogram buckets like PromQL's `histogram_quantile` ([`quantile`]). The
//! command that fetches and prints is `commands::stats`.

mod histogram;
mod parse;
mod render;
mod snapshot;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_verdict;

pub use self::histogram::{Bucket, Quantile, quantile};
pub use self::parse::{ParseError, Sample, parse};
pub use self::render::{Window, count, in_place, percent, render, seconds_text};
pub use self::snapshot::{RoleStats, ShadowStats, Snapshot, TargetStats};

impl Snapshot {
    /// Parses exposition text and aggregates it per target.
    pub fn from_text(text: &str) -> Result<Self, ParseError> {
        Ok(Self::from_samples(&parse(text)?))
    }
}
