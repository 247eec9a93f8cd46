//! Sampling: a 64-bit value per request compared with a threshold, so any percentage (0.5%,
//! 0.001%) is exact in expectation, not rounded to whole percent.

use std::net::SocketAddr;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::RequestView;
use crate::config::SampleBy;

/// 2^64: the number of distinct sample values.
const SAMPLE_SPACE: f64 = 18_446_744_073_709_551_616.0;

/// A stable identity of a TCP connection for per-connection sampling: the xxh3 hash of its
/// 4-tuple (client and server address and port; IPv4 as IPv4-mapped IPv6).
pub fn connection_id(client: SocketAddr, server: SocketAddr) -> u64 {
    let mut bytes = [0u8; 36];
    for (chunk, address) in bytes.chunks_exact_mut(18).zip([client, server]) {
        let ip = match address {
            SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
            SocketAddr::V6(v6) => *v6.ip(),
        };
        chunk[..16].copy_from_slice(&ip.octets());
        chunk[16..].copy_from_slice(&address.port().to_be_bytes());
    }
    xxh3_64(&bytes)
}

/// One target's sampler.
#[derive(Clone, Debug)]
pub(super) struct Sampler {
    by: SampleBy,
    /// A request is sampled in when its value is below this (0 = none, 2^64 = all).
    threshold: u128,
    /// Per-target seed of the consistent hashes, derived from the target's name: targets sample
    /// independently of each other, and every node of a DaemonSet makes the same decision for
    /// the same key (a user sampled in on one node is sampled in on all).
    seed: u64,
}

impl Sampler {
    pub fn new(target_name: &str, percent: f64, by: SampleBy) -> Self {
        // Scaling by 2^64 is exact in f64 (a power of two), and the product is an integer for
        // any percentage above ~0.0005; the division by 100 is then done in integers, so the
        // threshold is the exact rounding of percent / 100 * 2^64 (100% gives exactly 2^64).
        let scaled = (percent.clamp(0.0, 100.0) * SAMPLE_SPACE) as u128;
        let threshold = (scaled + 50) / 100;
        Self {
            by,
            threshold,
            seed: xxh3_64(target_name.as_bytes()),
        }
    }

    /// Whether the request is sampled in. `random` is a uniform random u64, used per request
    /// and when a `header:` key is missing.
    pub fn admits(&self, request: &impl RequestView, connection: u64, random: u64) -> bool {
        let value = match &self.by {
            SampleBy::Request => random,
            SampleBy::Connection => xxh3_64_with_seed(&connection.to_le_bytes(), self.seed),
            SampleBy::Header(name) => match request.header(name) {
                Some(value) => xxh3_64_with_seed(value, self.seed),
                // Falls back to per-request sampling: requests without the key (anonymous
                // users, say) are still sampled at the configured rate rather than never.
                None => random,
            },
        };
        u128::from(value) < self.threshold
    }

    #[cfg(test)]
    pub fn threshold(&self) -> u128 {
        self.threshold
    }
}
