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
/// `Array<TargetPort>` indexed by TCP port: which ports are targets and how their connections
/// are sampled in the kernel.
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
/// Parts per million: the unit of in-kernel connection sampling.
pub const SAMPLE_SCALE: u32 = 1_000_000;
/// `LruHashMap<FlowTuple, u8>`, keyed client to server: connections the classifier kept while
/// their port sampled below [`SAMPLE_SCALE`], so that lowering the rate (a configuration reload)
/// does not cut connections already mirrored (see [`TargetPort::remembered_ppm`]).
pub const SAMPLED_FLOWS_MAP: &str = "SAMPLED_FLOWS";
/// Longest-prefix-match tries of the destinations that are a scoped target's primary, keyed
/// by port and address ([`scope_key_v4`], [`scope_key_v6`]); see [`TargetPort::scoped`].
pub const SCOPE_V4_MAP: &str = "SCOPE_V4";
pub const SCOPE_V6_MAP: &str = "SCOPE_V6";
/// Entries of each scope trie (prefixes over all scoped targets).
pub const SCOPE_ENTRIES: u32 = 65_536;
/// Bits of the port in a scope key, before the address.
pub const SCOPE_PORT_BITS: u32 = 16;

/// The data of a [`SCOPE_V4_MAP`] key: the port then the address, big-endian, so that a
/// prefix of `16 + n` bits is "this port, this /n".
pub const fn scope_key_v4(port: u16, address: [u8; 4]) -> [u8; 6] {
    let port = port.to_be_bytes();
    [
        port[0], port[1], address[0], address[1], address[2], address[3],
    ]
}

/// The data of a [`SCOPE_V6_MAP`] key (as [`scope_key_v4`]).
pub const fn scope_key_v6(port: u16, address: [u8; 16]) -> [u8; 18] {
    let mut key = [0u8; 18];
    let port = port.to_be_bytes();
    key[0] = port[0];
    key[1] = port[1];
    let mut index = 0;
    while index < 16 {
        key[2 + index] = address[index];
        index += 1;
    }
    key
}

/// `Array<ScopeList>`: the prefixes of scoped targets whose lists are short, so that a packet
/// is placed with a few compares on one cache line (IPv4) instead of a trie walk (see
/// [`TargetPort::scope_list`]). The tries hold every prefix all the same, which is what a
/// port without a list, or with a longer one, is looked up in.
pub const SCOPE_LISTS_MAP: &str = "SCOPE_LISTS";
/// Prefixes of each family a [`ScopeList`] holds; a family with more is looked up in its trie.
pub const SCOPE_LIST_PREFIXES: usize = 8;
/// Entries of [`SCOPE_LISTS_MAP`]: two per scoped port (the list in use and the next one), so
/// half as many scoped ports have lists; ports scoped beyond that use the tries.
pub const SCOPE_LIST_SLOTS: u32 = 128;
// Pairs, and every index below 255: a port's index torn between `SCOPE_NO_LIST` (all bytes
// 0xff) and its first entry (one byte) is then either the new value or out of range.
const _: () = assert!(SCOPE_LIST_SLOTS.is_multiple_of(2) && SCOPE_LIST_SLOTS <= 255);
/// [`ScopeList::v4_len`] / [`ScopeList::v6_len`] of a family with more than
/// [`SCOPE_LIST_PREFIXES`] prefixes: its trie decides.
pub const SCOPE_IN_TRIE: u32 = u32::MAX;
/// [`TargetPort::scope_list`] of a scoped port without a list: the tries decide.
pub const SCOPE_NO_LIST: u32 = u32::MAX;

/// An IPv6 prefix of a [`ScopeList`]: an address is in it when `address & mask == network`,
/// each the network-order bytes as two native `u64`s ([`halves`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopePrefixV6 {
    pub network: [u64; 2],
    pub mask: [u64; 2],
}

impl ScopePrefixV6 {
    /// `network/prefix_len` (host bits cleared; lengths above 128 count as 128).
    pub const fn new(network: [u8; 16], prefix_len: u8) -> Self {
        let bits = if prefix_len > 128 {
            128
        } else {
            prefix_len as u32
        };
        let mask = match bits {
            0 => 0,
            _ => u128::MAX << (128 - bits),
        };
        let mask = halves(mask.to_be_bytes());
        let network = halves(network);
        Self {
            network: [network[0] & mask[0], network[1] & mask[1]],
            mask,
        }
    }

    /// Whether `address` (in [`halves`]) is in the prefix.
    #[inline(always)]
    pub const fn contains(&self, address: [u64; 2]) -> bool {
        address[0] & self.mask[0] == self.network[0] && address[1] & self.mask[1] == self.network[1]
    }
}

/// An IPv6 address in network order as two native `u64`s, the form [`ScopePrefixV6`] compares.
#[inline(always)]
pub const fn halves(address: [u8; 16]) -> [u64; 2] {
    let a = address;
    [
        u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    ]
}

/// A [`SCOPE_LISTS_MAP`] entry: a scoped port's prefixes when a family has at most
/// [`SCOPE_LIST_PREFIXES`] of them. The lengths and the whole IPv4 list fill the first 64 bytes,
/// one cache line (the map's entries are line-aligned), and only the first `v6_len` IPv6
/// prefixes are read: an IPv4 packet costs one line, an IPv6 packet one or a few more.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeList {
    /// IPv4 prefixes in `v4_network`, or [`SCOPE_IN_TRIE`].
    pub v4_len: u32,
    /// IPv6 prefixes in `v6`, or [`SCOPE_IN_TRIE`].
    pub v6_len: u32,
    /// IPv4 networks in host byte order (`u32::from_be_bytes(octets)`).
    pub v4_network: [u32; SCOPE_LIST_PREFIXES],
    /// Per IPv4 network, 32 less its prefix length: how many low bits of an address in it may
    /// differ from the network's.
    pub v4_host_bits: [u8; SCOPE_LIST_PREFIXES],
    /// The rest of the first cache line.
    pub _padding: [u8; 16],
    pub v6: [ScopePrefixV6; SCOPE_LIST_PREFIXES],
}

impl ScopeList {
    /// No prefix of either family: nothing is in scope.
    pub const EMPTY: Self = Self {
        v4_len: 0,
        v6_len: 0,
        v4_network: [0; SCOPE_LIST_PREFIXES],
        v4_host_bits: [0; SCOPE_LIST_PREFIXES],
        _padding: [0; 16],
        v6: [ScopePrefixV6 {
            network: [0; 2],
            mask: [0; 2],
        }; SCOPE_LIST_PREFIXES],
    };

    /// Adds the IPv4 prefix `network/prefix_len` (lengths above 32 count as 32); `false`, and
    /// nothing added, when the list already holds [`SCOPE_LIST_PREFIXES`].
    pub const fn push_v4(&mut self, network: [u8; 4], prefix_len: u8) -> bool {
        let index = self.v4_len as usize;
        if index >= SCOPE_LIST_PREFIXES {
            return false;
        }
        let host_bits = 32u8.saturating_sub(prefix_len);
        // Host bits cleared, as in the trie; a /0 leaves nothing.
        let network = ((u32::from_be_bytes(network) as u64 >> host_bits) << host_bits) as u32;
        self.v4_network[index] = network;
        self.v4_host_bits[index] = host_bits;
        self.v4_len += 1;
        true
    }

    /// Adds the IPv6 prefix `network/prefix_len` (see [`ScopeList::push_v4`]).
    pub const fn push_v6(&mut self, network: [u8; 16], prefix_len: u8) -> bool {
        let index = self.v6_len as usize;
        if index >= SCOPE_LIST_PREFIXES {
            return false;
        }
        self.v6[index] = ScopePrefixV6::new(network, prefix_len);
        self.v6_len += 1;
        true
    }

    /// Whether the IPv4 `address` is in one of the prefixes; `None` when the family's prefixes
    /// are in the trie only.
    #[inline(always)]
    pub fn contains_v4(&self, address: [u8; 4]) -> Option<bool> {
        let len = self.v4_len;
        if len > SCOPE_LIST_PREFIXES as u32 {
            return None;
        }
        // In 64 bits: a /0 shifts out all 32.
        let address = u32::from_be_bytes(address) as u64;
        // A constant bound (a loop the verifier walks at most SCOPE_LIST_PREFIXES times, or
        // unrolled) and an early end.
        for index in 0..SCOPE_LIST_PREFIXES {
            if index as u32 >= len {
                break;
            }
            let host_bits = self.v4_host_bits[index] as u64;
            if (address ^ self.v4_network[index] as u64) >> host_bits == 0 {
                return Some(true);
            }
        }
        Some(false)
    }

    /// [`ScopeList::contains_v4`] for an IPv6 address in [`halves`].
    #[inline(always)]
    pub fn contains_v6(&self, address: [u64; 2]) -> Option<bool> {
        let len = self.v6_len;
        if len > SCOPE_LIST_PREFIXES as u32 {
            return None;
        }
        for (index, prefix) in self.v6.iter().enumerate() {
            if index as u32 >= len {
                break;
            }
            if prefix.contains(address) {
                return Some(true);
            }
        }
        Some(false)
    }
}

/// Capacity of [`SAMPLED_FLOWS_MAP`].
pub const SAMPLED_FLOWS_ENTRIES: u32 = 262_144;

/// The [`TARGET_PORTS_MAP`] entry of one port.
///
/// A connection of a target port is kept when its [`connection_sample_point`] is below
/// `sample_ppm`: a pure function of the 4-tuple, so an unsampled packet costs a hash and no map
/// lookup. Kept connections are remembered in [`SAMPLED_FLOWS_MAP`] (ports sampling below
/// [`SAMPLE_SCALE`] only); a point in `sample_ppm..remembered_ppm` is kept only if remembered,
/// which is how a connection mirrored under an earlier, higher rate stays mirrored while it
/// lives. A connection that a raised rate newly selects is picked up at its next request.
///
/// While `shed` is set, nothing of the port is recorded: userspace sets it while the target's
/// shadow cannot take more (its replay queue stays full, or it is down), so that requests
/// which could only be dropped cost the node a counted skip instead of a copy and framing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetPort {
    /// Non-zero for a target port.
    pub is_target: u32,
    /// Connections kept, in parts per million ([`SAMPLE_SCALE`] or more: all).
    pub sample_ppm: u32,
    /// Upper end of the band of points kept only when remembered; at most `sample_ppm` when
    /// there is no band.
    pub remembered_ppm: u32,
    /// Non-zero while the port's packets are counted ([`Counter::ShedPackets`]) and not
    /// recorded.
    pub shed: u32,
    /// Non-zero when only some destinations on the port are the primary: a packet is recorded
    /// only if its server address (destination of a request, source of a response) is in the
    /// port's prefixes in [`SCOPE_V4_MAP`] / [`SCOPE_V6_MAP`]; others are counted
    /// ([`Counter::OtherAddress`]).
    pub scoped: u32,
    /// While `scoped`: the [`SCOPE_LISTS_MAP`] entry holding the port's prefixes, or
    /// [`SCOPE_NO_LIST`] (the tries decide). Userspace writes the next list into the other entry
    /// of the port's pair (`2k`, `2k + 1`) and then flips this index, a change of one bit, so a
    /// packet sees the old list or the new one, never half of each.
    pub scope_list: u32,
}

impl TargetPort {
    /// Not a target port.
    pub const NONE: Self = Self {
        is_target: 0,
        sample_ppm: 0,
        remembered_ppm: 0,
        shed: 0,
        scoped: 0,
        scope_list: 0,
    };

    /// A target port whose every connection is captured.
    pub const ALL: Self = Self::sampled(SAMPLE_SCALE);

    /// A target port keeping `ppm` parts per million of its connections, with no band.
    pub const fn sampled(ppm: u32) -> Self {
        let ppm = if ppm > SAMPLE_SCALE {
            SAMPLE_SCALE
        } else {
            ppm
        };
        Self {
            is_target: 1,
            sample_ppm: ppm,
            remembered_ppm: 0,
            shed: 0,
            scoped: 0,
            scope_list: 0,
        }
    }

    /// The entry that replaces `self` when the port's rate becomes `ppm`: the band of points
    /// kept if remembered grows to cover every earlier remembering rate, so a connection
    /// mirrored under any of them stays mirrored; it is dropped once the rate reaches it.
    /// (At [`SAMPLE_SCALE`] nothing is remembered, so that rate adds no band.) The new entry
    /// records again: shedding starts over with the new configuration.
    pub const fn resampled(self, ppm: u32) -> Self {
        let mut next = Self::sampled(ppm);
        next.scoped = self.scoped;
        next.scope_list = self.scope_list;
        if self.is_target == 0 {
            return next;
        }
        let mut band = self.remembered_ppm;
        if self.sample_ppm < SAMPLE_SCALE && self.sample_ppm > band {
            band = self.sample_ppm;
        }
        if band > next.sample_ppm {
            next.remembered_ppm = band;
        }
        next
    }

    /// Whether points from `sample_ppm` up need a look in [`SAMPLED_FLOWS_MAP`].
    pub const fn has_band(&self) -> bool {
        self.remembered_ppm > self.sample_ppm
    }

    /// The same entry, scoped to its prefixes or not; sampling and shedding state are kept.
    pub const fn with_scope(self, scoped: bool) -> Self {
        Self {
            scoped: scoped as u32,
            ..self
        }
    }

    /// The same entry with its prefixes in [`SCOPE_LISTS_MAP`] entry `list` (or
    /// [`SCOPE_NO_LIST`]); whether it is scoped is unchanged.
    pub const fn with_scope_list(self, list: u32) -> Self {
        Self {
            scope_list: list,
            ..self
        }
    }

    /// The same entry, shed or recording again; sampling state is kept.
    pub const fn with_shed(self, shed: bool) -> Self {
        Self {
            shed: shed as u32,
            ..self
        }
    }
}

/// Where a connection falls in `0..SAMPLE_SCALE`: a fixed mix of its 4-tuple, oriented client to
/// server so both directions agree. `family` is [`FAMILY_IPV4`] (addresses in the first four
/// bytes) or [`FAMILY_IPV6`]. Same code in the kernel and in tests.
pub const fn connection_sample_point(
    family: u8,
    client_addr: &[u8; 16],
    server_addr: &[u8; 16],
    client_port: u16,
    server_port: u16,
) -> u32 {
    // murmur3's block mix over the tuple as 32-bit words (three for IPv4, nine for IPv6), then
    // its finaliser: a short dependency chain (the classifier computes this on every packet of
    // a sampled port) and well spread. Multiply-shift maps the hash onto 0..SAMPLE_SCALE without
    // a division. IPv4 mixes only the words that hold its addresses: the twelve zero bytes
    // after them would add six blocks of work to every packet and nothing to the spread.
    let address_bytes = if family == FAMILY_IPV4 { 4 } else { 16 };
    let mut hash: u32 = 0x9747_b28c;
    let mut i = 0;
    while i < address_bytes {
        hash = murmur_block(hash, word(client_addr, i));
        hash = murmur_block(hash, word(server_addr, i));
        i += 4;
    }
    hash = murmur_block(hash, ((client_port as u32) << 16) | server_port as u32);
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^= hash >> 16;
    ((hash as u64 * SAMPLE_SCALE as u64) >> 32) as u32
}

const fn word(bytes: &[u8; 16], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

const fn murmur_block(hash: u32, block: u32) -> u32 {
    let block = block
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (hash ^ block)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
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
    /// Two fields rather than `[u8; 3]`: the BPF backend zeroes an unaligned 3-byte array with
    /// a call to a byte-loop `memset`, on every packet that builds a key.
    pub _padding_byte: u8,
    pub _padding_half: u16,
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
            _padding_byte: 0,
            _padding_half: 0,
        }
    }
}

/// Size of [`SegmentHeader`] in a record.
pub const SEGMENT_HEADER_LEN: usize = size_of::<SegmentHeader>();

/// One ring-buffer record: header plus up to `N` payload bytes (only `chunk_len` are valid).
#[repr(C)]
#[derive(Debug)]
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
    /// Target-port packets not recorded while their port was shed ([`TargetPort::shed`]).
    ShedPackets = 12,
    /// Payload bytes of those packets, client to server (requests).
    ShedRequestBytes = 13,
    /// Payload bytes of those packets, server to client (responses).
    ShedResponseBytes = 14,
    /// Target-port packets whose server address is not in the target's scope
    /// ([`TargetPort::scoped`]), not recorded.
    OtherAddress = 15,
}

/// Number of [`Counter`] entries.
pub const COUNTER_COUNT: u32 = 16;

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
        Counter::ShedPackets,
        Counter::ShedRequestBytes,
        Counter::ShedResponseBytes,
        Counter::OtherAddress,
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
            Counter::ShedPackets => "shed_packets",
            Counter::ShedRequestBytes => "shed_request_bytes",
            Counter::ShedResponseBytes => "shed_response_bytes",
            Counter::OtherAddress => "other_address",
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
#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, six `u32`s, no padding; any bit pattern is valid.
unsafe impl aya::Pod for TargetPort {}
#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`: ten `u32`s, 24 bytes, then `u64`s from offset 64; no implicit padding
// (the explicit `_padding` fills the first line); any bit pattern is valid.
unsafe impl aya::Pod for ScopeList {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_stable() {
        // The kernel and userspace must agree on this layout byte for byte.
        assert_eq!(SEGMENT_HEADER_LEN, 72);
        assert_eq!(align_of::<SegmentHeader>(), 8);
        assert_eq!(core::mem::offset_of!(SegmentHeader, src_addr), 40);
    }

    #[test]
    fn flow_tuple_has_no_implicit_padding() {
        assert_eq!(size_of::<FlowTuple>(), 40);
        let tuple = FlowTuple {
            src_addr: [1; 16],
            dst_addr: [2; 16],
            src_port: 3,
            dst_port: 4,
            family: FAMILY_IPV4,
            _padding_byte: 0,
            _padding_half: 0,
        };
        assert_eq!(tuple.reversed().reversed(), tuple);
        assert_eq!(tuple.reversed().src_port, 4);
    }

    #[test]
    fn connection_sample_points_spread_evenly() {
        let mut ipv4_client = [0u8; 16];
        ipv4_client[..4].copy_from_slice(&[198, 18, 0, 1]);
        let mut ipv4_server = [0u8; 16];
        ipv4_server[..4].copy_from_slice(&[198, 18, 0, 2]);
        for (family, client, server) in [
            (FAMILY_IPV4, ipv4_client, ipv4_server),
            (FAMILY_IPV6, [1; 16], [2; 16]),
        ] {
            let mut below_tenth = 0;
            let total = 20_000u32;
            for port in 0..total {
                let point =
                    connection_sample_point(family, &client, &server, 1024 + port as u16, 8080);
                assert!(point < SAMPLE_SCALE);
                if point < SAMPLE_SCALE / 10 {
                    below_tenth += 1;
                }
            }
            // 10% of 20,000 consecutive client ports, within one point.
            assert!(
                (1800..=2200).contains(&below_tenth),
                "family {family}: {below_tenth}"
            );
        }
        assert_eq!(TargetPort::sampled(2_000_000), TargetPort::ALL);
    }

    #[test]
    fn lowering_a_rate_remembers_the_band_until_the_rate_covers_it() {
        let ten_percent = TargetPort::NONE.resampled(100_000);
        assert_eq!(ten_percent, TargetPort::sampled(100_000));
        assert!(!ten_percent.has_band());
        // 10% -> 1% -> 5%: connections kept at 10% stay kept through both changes.
        let one_percent = ten_percent.resampled(10_000);
        assert_eq!(
            (one_percent.sample_ppm, one_percent.remembered_ppm),
            (10_000, 100_000)
        );
        let five_percent = one_percent.resampled(50_000);
        assert_eq!(five_percent.remembered_ppm, 100_000);
        assert!(five_percent.has_band());
        // Back at (or above) the highest remembering rate: no band, no lookups.
        assert!(!five_percent.resampled(100_000).has_band());
        assert!(!five_percent.resampled(SAMPLE_SCALE).has_band());
        // Nothing is remembered at 100%, so lowering from it adds no band.
        assert!(!TargetPort::ALL.resampled(10_000).has_band());
        // Rate 0 still keeps the connections mirrored before; a port that stopped being a
        // target (reset to NONE) starts again without a band.
        assert_eq!(five_percent.resampled(0).remembered_ppm, 100_000);
        assert!(!TargetPort::NONE.resampled(0).has_band());
        // Shedding keeps the sampling state, and a new rate records again.
        let shed = five_percent.with_shed(true);
        assert_eq!(shed.shed, 1);
        assert_eq!(shed.with_shed(false), five_percent);
        assert_eq!(shed.resampled(50_000).shed, 0);
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
    fn scope_prefixes_match_by_their_length() {
        let cases: [([u8; 4], u8, [u8; 4], bool); 11] = [
            ([10, 1, 2, 3], 0, [192, 168, 0, 1], true),
            ([10, 1, 2, 3], 8, [10, 200, 0, 1], true),
            ([10, 1, 2, 3], 8, [11, 1, 2, 3], false),
            ([10, 1, 2, 3], 24, [10, 1, 2, 200], true),
            ([10, 1, 2, 3], 24, [10, 1, 3, 3], false),
            ([10, 1, 2, 3], 32, [10, 1, 2, 3], true),
            ([10, 1, 2, 3], 32, [10, 1, 2, 2], false),
            // Host bits of the network are cleared, as the trie ignores them.
            ([10, 1, 2, 255], 25, [10, 1, 2, 127], false),
            ([10, 1, 2, 255], 25, [10, 1, 2, 128], true),
            ([128, 0, 0, 0], 1, [255, 255, 255, 255], true),
            ([10, 1, 2, 3], 40, [10, 1, 2, 3], true),
        ];
        for (network, len, address, inside) in cases {
            let mut list = ScopeList::EMPTY;
            assert!(list.push_v4(network, len));
            assert_eq!(
                list.contains_v4(address),
                Some(inside),
                "{address:?} in {network:?}/{len}"
            );
        }
        let mut host_bits_cleared = ScopeList::EMPTY;
        host_bits_cleared.push_v4([10, 1, 2, 255], 25);
        assert_eq!(host_bits_cleared.v4_network[0], 0x0a01_0280);

        let net6 = [
            0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let with_last = |last: u8, byte7: u8| {
            let mut address = net6;
            address[15] = last;
            address[7] = byte7;
            halves(address)
        };
        let cases6: [(u8, [u64; 2], bool); 9] = [
            (0, halves([0xfe; 16]), true),
            (64, with_last(0x99, 2), true),
            (64, with_last(0x10, 3), false),
            (127, with_last(0x11, 2), true),
            (127, with_last(0x12, 2), false),
            (128, with_last(0x10, 2), true),
            (128, with_last(0x11, 2), false),
            (56, with_last(0x10, 0xff), true),
            (200, with_last(0x10, 2), true),
        ];
        for (len, address, inside) in cases6 {
            let mut list = ScopeList::EMPTY;
            assert!(list.push_v6(net6, len));
            assert_eq!(
                list.contains_v6(address),
                Some(inside),
                "{address:x?} in /{len}"
            );
        }
    }

    #[test]
    fn scope_lists_read_their_length_only_and_defer_to_the_trie() {
        let mut list = ScopeList::EMPTY;
        let address = |host: u8| [10, 0, 0, host];
        assert_eq!(list.contains_v4(address(1)), Some(false));
        assert_eq!(list.contains_v6(halves([0; 16])), Some(false));
        for host in 1..=SCOPE_LIST_PREFIXES as u8 {
            assert!(list.push_v4(address(host), 32));
        }
        assert!(!list.push_v4(address(100), 32), "a full list takes no more");
        assert_eq!(list.contains_v4(address(8)), Some(true));
        assert_eq!(list.contains_v4(address(9)), Some(false));
        assert_eq!(list.contains_v4(address(100)), Some(false));
        // Entries past the length are not read, whatever they hold.
        list.v4_len = 3;
        assert_eq!(list.contains_v4(address(3)), Some(true));
        assert_eq!(list.contains_v4(address(4)), Some(false));
        list.v4_len = SCOPE_IN_TRIE;
        assert_eq!(list.contains_v4(address(1)), None);
        list.v4_len = SCOPE_LIST_PREFIXES as u32 + 1;
        assert_eq!(list.contains_v4(address(1)), None);
        // The families are separate.
        assert_eq!(list.contains_v6(halves([0; 16])), Some(false));
        assert!(list.push_v6([0; 16], 0));
        assert_eq!(list.contains_v6(halves([0xab; 16])), Some(true));
        list.v6_len = SCOPE_IN_TRIE;
        assert_eq!(list.contains_v6(halves([0xab; 16])), None);

        // The lengths and the IPv4 list are one cache line; five lines in all.
        assert_eq!(core::mem::offset_of!(ScopeList, v6), 64);
        assert_eq!(size_of::<ScopeList>(), 5 * 64);
        assert_eq!(size_of::<TargetPort>(), 24);
        // Resampling and shedding keep the port's list.
        let scoped = TargetPort::ALL.with_scope(true).with_scope_list(5);
        assert_eq!(scoped.resampled(10_000).scope_list, 5);
        assert_eq!(scoped.with_shed(true).scope_list, 5);
        assert_eq!(scoped.with_scope_list(4).scoped, 1);
    }

    #[test]
    fn counters_are_indexed_in_order() {
        for (index, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, index);
        }
    }
}
