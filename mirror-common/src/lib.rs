//! Types shared by the `mirror` TC classifier (kernel side) and the daemon (userspace side).
//!
//! Everything here is `#[repr(C)]` and plain old data: the kernel writes these records into a BPF
//! ring buffer and userspace reads them back byte for byte. With the `user` feature the types also
//! implement `aya::Pod` so userspace can read and write them through maps.
#![no_std]

/// Name of the TC classifier program inside the eBPF object. Also the name the program carries in
/// the kernel, which is how stale netlink filters of ours are found and removed.
pub const CLASSIFIER_PROGRAM: &str = "mirror_tc";
/// Ring buffer of [`SegmentRecord`]s.
pub const EVENTS_MAP: &str = "EVENTS";
/// `Array<u32>` indexed by TCP port: non-zero value marks a target port.
pub const TARGET_PORTS_MAP: &str = "TARGET_PORTS";
/// `PerCpuArray<u64>` indexed by [`Counter`].
pub const COUNTERS_MAP: &str = "COUNTERS";
/// `HashMap<u64, u8>`: socket cookies (`SO_COOKIE`) of the daemon's own replay sockets.
pub const REPLAY_SOCKETS_MAP: &str = "REPLAY_SOCKETS";
/// `LruHashMap<FlowTuple, u8>`: 4-tuples (both orientations) of connections the classifier saw
/// leaving a replay socket; their packets are never recorded.
pub const IGNORED_FLOWS_MAP: &str = "IGNORED_FLOWS";
/// Capacity of [`REPLAY_SOCKETS_MAP`] and [`IGNORED_FLOWS_MAP`] (two entries per connection).
pub const SELF_TRAFFIC_ENTRIES: u32 = 65536;

/// Global variable of the classifier: unread ring-buffer bytes from which a record wakes the
/// reader (userspace sets it at load time; see the classifier).
pub const WAKEUP_BYTES_GLOBAL: &str = "WAKEUP_BYTES";

/// Number of entries in [`TARGET_PORTS_MAP`]: one per TCP port.
pub const TARGET_PORTS_ENTRIES: u32 = 65536;
/// Value stored in [`TARGET_PORTS_MAP`] for a port whose every connection is captured. A value
/// `1 + ppm` with `ppm < 1_000_000` samples connections in the kernel: a connection is kept when
/// a hash of its 4-tuple, modulo one million, is below `ppm` (see [`connection_sample_point`]).
/// Zero means "not a target port".
pub const PORT_TARGET: u32 = 1 + SAMPLE_SCALE;
/// Parts per million: the unit of in-kernel connection sampling.
pub const SAMPLE_SCALE: u32 = 1_000_000;
/// `LruHashMap<FlowTuple, u8>`: per-connection sampling decisions (1 keep, 0 drop), so a
/// connection keeps its decision when the rate changes.
pub const SAMPLED_FLOWS_MAP: &str = "SAMPLED_FLOWS";
/// Capacity of [`SAMPLED_FLOWS_MAP`].
pub const SAMPLED_FLOWS_ENTRIES: u32 = 262_144;

/// The [`TARGET_PORTS_MAP`] value for a port sampled at `ppm` parts per million.
pub const fn port_value(ppm: u32) -> u32 {
    1 + if ppm > SAMPLE_SCALE {
        SAMPLE_SCALE
    } else {
        ppm
    }
}

/// Where a connection falls in `0..SAMPLE_SCALE`: a fixed mix of its 4-tuple, oriented client to
/// server so both directions agree. Same code in the kernel and in tests.
pub const fn connection_sample_point(
    client_addr: &[u8; 16],
    server_addr: &[u8; 16],
    client_port: u16,
    server_port: u16,
) -> u32 {
    // FNV-1a over the tuple, then a murmur3 finaliser: cheap, no loops the verifier minds
    // beyond 36 constant iterations, and well spread.
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < 16 {
        hash = (hash ^ client_addr[i] as u32).wrapping_mul(0x0100_0193);
        hash = (hash ^ server_addr[i] as u32).wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash = (hash ^ client_port as u32).wrapping_mul(0x0100_0193);
    hash = (hash ^ server_port as u32).wrapping_mul(0x0100_0193);
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^= hash >> 16;
    hash % SAMPLE_SCALE
}

/// Payload capacities of the ring-buffer record size classes, smallest first. Ring-buffer
/// reservations must have a constant size, so each class is its own record type; the classifier
/// picks the smallest class that holds what is left of a segment, so a 200-byte request costs a
/// 512-byte record, not a 2 KiB one, and a full-MSS segment fits one 2 KiB record. All are powers
/// of two (the verifier bound trick needs it).
pub const CHUNK_SIZE_CLASSES: [usize; 3] = [128, 512, 2048];
/// Largest chunk payload.
pub const MAX_CHUNK: usize = CHUNK_SIZE_CLASSES[CHUNK_SIZE_CLASSES.len() - 1];
/// Upper bound on chunks per segment: 64 x 2 KiB = 128 KiB, twice the 64 KiB GSO/GRO maximum.
/// Payload beyond it (BIG TCP) is counted in [`Counter::TruncatedBytes`], never dropped silently.
pub const MAX_CHUNKS_PER_SEGMENT: u32 = 64;

/// `TCX_NEXT`: let the next program in the TCX chain (e.g. the CNI's) see the packet. Any other
/// value would end the chain.
pub const TCX_NEXT: i32 = -1;

/// Address family of a [`SegmentHeader`].
pub const FAMILY_IPV4: u8 = 4;
/// Address family of a [`SegmentHeader`].
pub const FAMILY_IPV6: u8 = 6;

/// Segment direction relative to the target service.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Client to service: the destination port is a target port.
    Request = 0,
    /// Service to client: the source port is a target port.
    Response = 1,
}

impl Direction {
    /// Decodes the on-wire byte; `None` for unknown values.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Request),
            1 => Some(Self::Response),
            _ => None,
        }
    }
}

/// TCP flag bits as in the TCP header's 13th byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// Header of every ring-buffer record. One TCP segment with `payload_len` bytes of payload becomes
/// one or more records (chunks); chunk `i` carries `chunk_len` bytes starting at `chunk_offset`
/// within the segment payload. Segments without payload (SYN/FIN/RST) produce one record with
/// `chunk_len == 0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the classifier saw the packet.
    pub timestamp_ns: u64,
    /// TCP sequence number of the segment (first payload byte, or the SYN itself).
    pub seq: u32,
    /// TCP acknowledgement number.
    pub ack: u32,
    /// Total TCP payload length of the segment (the whole GSO/GRO skb).
    pub payload_len: u32,
    /// Offset of this chunk inside the segment payload.
    pub chunk_offset: u32,
    /// Payload bytes carried by this record.
    pub chunk_len: u32,
    /// Interface the packet was seen on.
    pub ifindex: u32,
    pub src_port: u16,
    pub dst_port: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// [`Direction`] as `u8`.
    pub direction: u8,
    /// TCP flags byte.
    pub tcp_flags: u8,
    pub _padding: u8,
    /// Source address; IPv4 uses the first 4 bytes, the rest is zero.
    pub src_addr: [u8; 16],
    /// Destination address; IPv4 uses the first 4 bytes, the rest is zero.
    pub dst_addr: [u8; 16],
}

/// Key of [`IGNORED_FLOWS_MAP`]: a packet's own addresses and ports as on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    pub _padding: [u8; 3],
}

impl FlowTuple {
    /// The same connection seen in the other direction.
    pub const fn reversed(&self) -> Self {
        Self {
            src_addr: self.dst_addr,
            dst_addr: self.src_addr,
            src_port: self.dst_port,
            dst_port: self.src_port,
            family: self.family,
            _padding: [0; 3],
        }
    }
}

/// Size of [`SegmentHeader`] in a record.
pub const SEGMENT_HEADER_LEN: usize = core::mem::size_of::<SegmentHeader>();

/// One ring-buffer record: header plus up to `N` payload bytes (only `chunk_len` are valid).
#[repr(C)]
pub struct SegmentRecord<const N: usize> {
    pub header: SegmentHeader,
    pub data: [u8; N],
}

/// Per-CPU counters kept by the classifier, indices into [`COUNTERS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every packet the classifier ran on.
    PacketsSeen = 0,
    /// TCP packets to or from a target port.
    PacketsMatched = 1,
    /// Records submitted to the ring buffer.
    RecordsEmitted = 2,
    /// Payload bytes copied into the ring buffer.
    PayloadBytes = 3,
    /// Records that could not be reserved because the ring buffer was full.
    RingbufFull = 4,
    /// Payload bytes not copied because a record could not be reserved or filled.
    LostBytes = 5,
    /// `bpf_skb_load_bytes` failures (record discarded).
    CopyErrors = 6,
    /// Payload bytes beyond [`MAX_CHUNKS_PER_SEGMENT`] chunks, not copied.
    TruncatedBytes = 7,
    /// IP or TCP headers that could not be read (short or malformed packet).
    HeaderErrors = 8,
    /// IPv4/IPv6 fragments: ports unknown, not inspected.
    IpFragments = 9,
    /// Target-port packets of the daemon's own replay connections, not recorded.
    SelfTraffic = 10,
    /// Target-port packets of connections not sampled (in-kernel connection sampling).
    SampledOut = 11,
}

/// Number of [`Counter`] entries.
pub const COUNTER_COUNT: u32 = 12;

impl Counter {
    /// All counters in index order.
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::PacketsSeen,
        Counter::PacketsMatched,
        Counter::RecordsEmitted,
        Counter::PayloadBytes,
        Counter::RingbufFull,
        Counter::LostBytes,
        Counter::CopyErrors,
        Counter::TruncatedBytes,
        Counter::HeaderErrors,
        Counter::IpFragments,
        Counter::SelfTraffic,
        Counter::SampledOut,
    ];

    /// Stable snake_case name, used in logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::PacketsSeen => "packets_seen",
            Counter::PacketsMatched => "packets_matched",
            Counter::RecordsEmitted => "records_emitted",
            Counter::PayloadBytes => "payload_bytes",
            Counter::RingbufFull => "ringbuf_full",
            Counter::LostBytes => "lost_bytes",
            Counter::CopyErrors => "copy_errors",
            Counter::TruncatedBytes => "truncated_bytes",
            Counter::HeaderErrors => "header_errors",
            Counter::IpFragments => "ip_fragments",
            Counter::SelfTraffic => "self_traffic",
            Counter::SampledOut => "sampled_out",
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` data without padding holes that could hold uninitialised bytes
// (the explicit `_padding` byte fills the only gap), valid for any bit pattern.
unsafe impl aya::Pod for SegmentHeader {}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` data; the explicit `_padding` bytes fill the only gap.
unsafe impl aya::Pod for FlowTuple {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_stable() {
        // The kernel and userspace must agree on this layout byte for byte.
        assert_eq!(SEGMENT_HEADER_LEN, 72);
        assert_eq!(core::mem::align_of::<SegmentHeader>(), 8);
        assert_eq!(core::mem::offset_of!(SegmentHeader, src_addr), 40);
    }

    #[test]
    fn flow_tuple_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<FlowTuple>(), 40);
        let tuple = FlowTuple {
            src_addr: [1; 16],
            dst_addr: [2; 16],
            src_port: 3,
            dst_port: 4,
            family: FAMILY_IPV4,
            _padding: [0; 3],
        };
        assert_eq!(tuple.reversed().reversed(), tuple);
        assert_eq!(tuple.reversed().src_port, 4);
    }

    #[test]
    fn connection_sample_points_spread_evenly() {
        let mut below_tenth = 0;
        let total = 20_000u32;
        for port in 0..total {
            let point = connection_sample_point(&[1; 16], &[2; 16], 1024 + port as u16, 8080);
            assert!(point < SAMPLE_SCALE);
            if point < SAMPLE_SCALE / 10 {
                below_tenth += 1;
            }
        }
        // 10% of 20,000 consecutive client ports, within one point.
        assert!((1800..=2200).contains(&below_tenth), "{below_tenth}");
        assert_eq!(port_value(2_000_000), PORT_TARGET);
        assert_eq!(port_value(0), 1);
    }

    #[test]
    fn size_classes_are_ascending_powers_of_two() {
        for pair in CHUNK_SIZE_CLASSES.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        for class in CHUNK_SIZE_CLASSES {
            assert!(class.is_power_of_two());
        }
        assert!(MAX_CHUNK * MAX_CHUNKS_PER_SEGMENT as usize >= 65536);
    }

    #[test]
    fn counters_are_indexed_in_order() {
        for (index, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, index);
        }
    }
}
