//! SplitMix64 (Steele, Lea and Flood, 2014): the one small deterministic generator of the crate.
//! Per-request sampling draws from it (seeded, so a run can be replayed); the demo's traffic and
//! the tests' generators build on it. Not for anything an adversary must not predict.

/// A SplitMix64 generator: 64 bits of state, a full period, stable across platforms.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..bound` (0 when `bound` is 0), by multiply-shift rather than a modulo.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SplitMix64's finaliser: a bijective mix of 64 bits (also derives per-case seeds from a
/// counter).
pub const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference sequence for seed 1234567 (from the published C implementation).
    #[test]
    fn the_sequence_is_splitmix64s() {
        let mut random = SplitMix64::new(1_234_567);
        assert_eq!(random.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(random.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn below_and_unit_stay_in_range() {
        let mut random = SplitMix64::new(7);
        for _ in 0..10_000 {
            assert!(random.below(10) < 10);
            let unit = random.unit();
            assert!((0.0..1.0).contains(&unit));
        }
        assert_eq!(random.below(0), 0);
    }
}
