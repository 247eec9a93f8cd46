//! TCP sequence-number arithmetic (RFC 9293 §3.4) mapped onto 64-bit stream offsets.
//!
//! Raw sequence numbers wrap at 2^32; comparing them directly breaks on long-lived connections.
//! A stream therefore works in *offsets*: bytes since its first byte, as `u64`, which never wrap.
//! A raw number is turned into an offset by choosing the value within ±2^31 of a reference
//! offset (the next expected byte), which is exact as long as a segment is less than 2 GiB away
//! from the reassembly point - TCP windows are at most 1 GiB (RFC 7323), so this always holds
//! for real traffic.

/// Maps raw sequence numbers of one stream direction to stream offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqSpace {
    /// Raw sequence number of offset 0.
    base: u32,
}

impl SeqSpace {
    /// A space whose offset 0 is the raw sequence number `base`.
    pub const fn new(base: u32) -> Self {
        Self { base }
    }

    /// Raw sequence number of offset 0.
    pub const fn base(self) -> u32 {
        self.base
    }

    /// Signed distance from `reference`'s raw number to `seq`, in the half-open range
    /// `[-2^31, 2^31)`, added to `reference`. Offsets before 0 saturate at 0 (they precede the
    /// stream; callers treat them as duplicates).
    pub fn offset(self, seq: u32, reference: u64) -> u64 {
        let reference_seq = self.seq_at(reference);
        let delta = i64::from(seq.wrapping_sub(reference_seq) as i32);
        reference.saturating_add_signed(delta)
    }

    /// Signed variant of [`offset`](Self::offset): negative when `seq` precedes the stream start.
    pub fn signed_offset(self, seq: u32, reference: u64) -> i64 {
        let reference_seq = self.seq_at(reference);
        let delta = i64::from(seq.wrapping_sub(reference_seq) as i32);
        reference as i64 + delta
    }

    /// Raw sequence number of `offset`.
    pub const fn seq_at(self, offset: u64) -> u32 {
        self.base.wrapping_add(offset as u32)
    }
}

/// `a < b` in sequence space (RFC 9293 §3.4 "less than" modulo 2^32).
pub const fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_continue_across_wraparound() {
        let space = SeqSpace::new(u32::MAX - 9);
        assert_eq!(space.offset(u32::MAX - 9, 0), 0);
        assert_eq!(space.offset(u32::MAX, 0), 9);
        // 10 bytes after the base the raw number wraps to 0 but the offset keeps growing.
        assert_eq!(space.offset(0, 9), 10);
        assert_eq!(space.offset(5, 9), 15);
        assert_eq!(space.seq_at(15), 5);
    }

    #[test]
    fn offsets_beyond_four_gib_stay_monotonic() {
        let space = SeqSpace::new(1000);
        let far = (1u64 << 32) + 500;
        let seq = space.seq_at(far);
        assert_eq!(space.offset(seq, far - 100), far);
        assert_eq!(space.offset(seq.wrapping_sub(200), far), far - 200);
    }

    #[test]
    fn sequence_before_the_stream_start_is_negative() {
        let space = SeqSpace::new(100);
        assert_eq!(space.signed_offset(90, 0), -10);
        assert_eq!(space.offset(90, 0), 0, "saturates at the stream start");
    }

    #[test]
    fn seq_lt_is_modular() {
        assert!(seq_lt(1, 2));
        assert!(!seq_lt(2, 1));
        assert!(seq_lt(u32::MAX, 0), "u32::MAX precedes 0 after wraparound");
        assert!(!seq_lt(5, 5));
    }
}
