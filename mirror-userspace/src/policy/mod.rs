//! Per-target mirroring decisions (I/O-free): method and write safety, path filters, sampling
//! and the `max_rps` rate limit. Randomness and time are passed in, so every decision is
//! reproducible.
//!
//! Checks run in this order, and the first that fails is the skip reason:
//!
//! 1. **method** - not in `methods`, or a write without `allow_writes`. First, so an unsafe
//!    write is never mirrored whatever the other settings say (the shadow must never charge a
//!    card twice).
//! 2. **path** - the `paths` allow/deny regexes on the request target.
//! 3. **sampling** - `sample_percent` keyed per request, per connection or per header value.
//! 4. **rate limit** - the token bucket, last so that only requests that would otherwise be
//!    mirrored spend tokens (a filtered or sampled-out request must not starve others).
//!
//! Wiring: one [`Policy`] per target, fed each framed request of that target's port with the
//! connection's [`connection_id`], a fresh uniform random `u64` and the request's timestamp.

pub mod rate;
mod sampler;

#[cfg(test)]
mod tests;

use crate::config::{PathFilter, TargetConfig, is_safe_method};

pub use sampler::connection_id;

/// The parts of a parsed request the policy looks at. The http module's `HttpRequest` has
/// methods of these exact signatures; an adapter is three one-line forwards.
pub trait RequestView {
    /// The method as on the wire (case-sensitive, e.g. `GET`).
    fn method(&self) -> &str;
    /// The request target as on the wire (origin form: path and query).
    fn target(&self) -> &str;
    /// The first value of header `name` (case-insensitive), without surrounding whitespace.
    fn header(&self, name: &str) -> Option<&[u8]>;
}

/// What to do with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Rewrite and replay it.
    Mirror,
    /// Count it under this reason and drop it.
    Skip(SkipReason),
}

/// Why the policy did not mirror a request: the `reason` label of
/// `mirror_requests_skipped_total` (framing adds its own reasons, e.g. `upgrade`, `tls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Method not in `methods` (or an unsafe method without `allow_writes`).
    Method,
    /// Rejected by `paths` allow/deny.
    Path,
    /// Not selected by `sample_percent`.
    SampledOut,
    /// Over `max_rps`.
    RateLimit,
}

impl SkipReason {
    /// Every reason, for registering metric label values up front.
    pub const ALL: [Self; 4] = [Self::Method, Self::Path, Self::SampledOut, Self::RateLimit];

    /// Metric label value (stable, snake_case).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Path => "path",
            Self::SampledOut => "sampled_out",
            Self::RateLimit => "rate_limit",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// How many decisions a policy made, by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecisionCounts {
    /// Requests decided [`Decision::Mirror`].
    pub mirrored: u64,
    skipped: [u64; SkipReason::ALL.len()],
}

impl DecisionCounts {
    /// Requests skipped for `reason`.
    pub fn skipped(&self, reason: SkipReason) -> u64 {
        self.skipped[reason.index()]
    }

    /// All decisions made.
    pub fn total(&self) -> u64 {
        self.mirrored + self.skipped.iter().sum::<u64>()
    }
}

/// One target's mirroring policy.
#[derive(Clone, Debug)]
pub struct Policy {
    target_name: String,
    methods: Vec<String>,
    allow_writes: bool,
    paths: PathFilter,
    sampler: sampler::Sampler,
    /// `None` when `max_rps = 0` (unlimited).
    rate_limit: Option<rate::TokenBucket>,
    counts: DecisionCounts,
}

impl Policy {
    /// The policy of `target`, with a full token bucket and zero counts.
    pub fn new(target: &TargetConfig) -> Self {
        Self {
            target_name: target.name.clone(),
            methods: target.methods.clone(),
            allow_writes: target.allow_writes,
            paths: target.paths.clone(),
            sampler: sampler::Sampler::new(
                &target.name,
                target.sample_percent,
                target.sample_by.clone(),
            ),
            rate_limit: (target.max_rps > 0).then(|| rate::TokenBucket::new(target.max_rps)),
            counts: DecisionCounts::default(),
        }
    }

    /// Decides about one request and counts the decision.
    ///
    /// - `connection`: the request's connection, as [`connection_id`] of its 4-tuple (any
    ///   stable per-connection `u64` works).
    /// - `random`: a uniform random `u64`, fresh for each request.
    /// - `now_ns`: the request's time in nanoseconds (any monotonic clock; captured requests
    ///   use the kernel timestamp).
    pub fn decide(
        &mut self,
        request: &impl RequestView,
        connection: u64,
        random: u64,
        now_ns: u64,
    ) -> Decision {
        let decision = self.evaluate(request, connection, random, now_ns);
        match decision {
            Decision::Mirror => self.counts.mirrored += 1,
            Decision::Skip(reason) => self.counts.skipped[reason.index()] += 1,
        }
        decision
    }

    fn evaluate(
        &mut self,
        request: &impl RequestView,
        connection: u64,
        random: u64,
        now_ns: u64,
    ) -> Decision {
        let method = request.method();
        // Config validation already refuses writes without allow_writes; checked again here
        // because a mirrored write cannot be taken back.
        let method_allowed = self.methods.iter().any(|allowed| allowed == method)
            && (self.allow_writes || is_safe_method(method));
        if !method_allowed {
            return Decision::Skip(SkipReason::Method);
        }
        if !self.paths.permits(request.target()) {
            return Decision::Skip(SkipReason::Path);
        }
        if !self.sampler.admits(request, connection, random) {
            return Decision::Skip(SkipReason::SampledOut);
        }
        if let Some(bucket) = &mut self.rate_limit
            && !bucket.try_take(now_ns)
        {
            return Decision::Skip(SkipReason::RateLimit);
        }
        Decision::Mirror
    }

    /// The target's name (the `target` metric label).
    pub fn target_name(&self) -> &str {
        &self.target_name
    }

    /// Decisions so far, by outcome.
    pub fn counts(&self) -> &DecisionCounts {
        &self.counts
    }
}
