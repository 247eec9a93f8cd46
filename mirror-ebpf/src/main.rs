//! TC classifier: copies every TCP segment to or from a target port into a ring buffer.
//!
//! Minimum kernel: 5.8 (BPF ring buffer); TCX attachment needs 6.6 (older kernels use netlink
//! cls_bpf, chosen by userspace). The program never drops, redirects or modifies a packet and
//! returns `TCX_NEXT` on every path, so programs after ours (the CNI's) always run.
//!
//! Sections: maps, counters, header parsing, payload emission, entry point.
#![no_std]
#![no_main]

use core::{hint::black_box, mem::MaybeUninit};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, TC_ACT_OK},
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skb_load_bytes},
    macros::{classifier, map},
    maps::{
        Array, HashMap, LruHashMap, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::TcContext,
};
use mirror_common::{
    CHUNK_SIZE_CLASSES, COUNTER_COUNT, Counter, Direction, FAMILY_IPV4, FAMILY_IPV6, FlowTuple,
    MAX_CHUNK, MAX_CHUNKS_PER_SEGMENT, SAMPLE_SCALE, SAMPLED_FLOWS_ENTRIES, SCOPE_ENTRIES,
    SCOPE_LIST_SLOTS, SCOPE_PORT_BITS, SELF_TRAFFIC_ENTRIES, ScopeList, SegmentHeader,
    SegmentRecord, TARGET_PORTS_ENTRIES, TCX_NEXT, TargetPort, connection_sample_point, halves,
    scope_key_v4, scope_key_v6, tcp_flags,
};

// ---------------------------------------------------------------------------------------------
// Maps
// ---------------------------------------------------------------------------------------------

/// Default ring size; userspace overrides it with `[capture] ring_buffer_bytes` before loading.
const DEFAULT_RING_BYTES: u32 = 16 * 1024 * 1024;

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Unread bytes in [`EVENTS`] whose crossing wakes the reader; other records are submitted
/// without a wake-up and the reader collects them on its short poll interval. One wake-up per
/// batch instead of one per record keeps the daemon's cost per request low. Set by userspace at
/// load time (`WAKEUP_BYTES` global); 0 wakes on every record.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

#[map(name = "TARGET_PORTS")]
static TARGET_PORTS: Array<TargetPort> = Array::with_max_entries(TARGET_PORTS_ENTRIES, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Socket cookies of the daemon's replay sockets, registered before they connect.
#[map(name = "REPLAY_SOCKETS")]
static REPLAY_SOCKETS: HashMap<u64, u8> = HashMap::with_max_entries(SELF_TRAFFIC_ENTRIES, 0);

/// Connections kept by in-kernel sampling below 100%, keyed client to server, so that a lower
/// rate set later does not cut them (see [`TargetPort`]). LRU: closed connections age out.
#[map(name = "SAMPLED_FLOWS")]
static SAMPLED_FLOWS: LruHashMap<FlowTuple, u8> =
    LruHashMap::with_max_entries(SAMPLED_FLOWS_ENTRIES, 0);

/// Short prefix lists of scoped targets (see [`TargetPort::scope_list`]): an IPv4 packet out of
/// scope is placed with a few compares on one cache line, where a trie walk cost a helper call
/// and a cold node per level. `BPF_F_MMAPABLE` (kernel >= 5.5) for its layout, not for mapping:
/// the values of such an array start on a page, so every entry (five lines) starts on a line.
#[map(name = "SCOPE_LISTS")]
static SCOPE_LISTS: Array<ScopeList> = Array::with_max_entries(SCOPE_LIST_SLOTS, BPF_F_MMAPABLE);

const BPF_F_MMAPABLE: u32 = 1 << 10;

/// The destinations that are a scoped target's primary (see [`TargetPort::scoped`]): prefixes
/// of port + address, all of them, also those of a port with a list in [`SCOPE_LISTS`].
/// `BPF_F_NO_PREALLOC` is required for LPM tries.
#[map(name = "SCOPE_V4")]
static SCOPE_V4: LpmTrie<[u8; 6], u8> = LpmTrie::with_max_entries(SCOPE_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "SCOPE_V6")]
static SCOPE_V6: LpmTrie<[u8; 18], u8> =
    LpmTrie::with_max_entries(SCOPE_ENTRIES, BPF_F_NO_PREALLOC);

const BPF_F_NO_PREALLOC: u32 = 1;

/// Both orientations of every connection seen leaving a replay socket. LRU: closed connections
/// age out without userspace bookkeeping.
#[map(name = "IGNORED_FLOWS")]
static IGNORED_FLOWS: LruHashMap<FlowTuple, u8> =
    LruHashMap::with_max_entries(SELF_TRAFFIC_ENTRIES, 0);

/// Set before the first insert into [`IGNORED_FLOWS`]. Until then every recorded packet skips
/// that lookup: replay connections reach this program only when the shadow is behind a captured
/// interface on a target port, so in most deployments the map stays empty and the lookup (a
/// hash of the 40-byte tuple) would be paid for nothing.
///
/// Read and written with volatile accesses (the BPF target has no 8-bit atomics; an aligned
/// 32-bit load or store is single-copy atomic).
static mut IGNORED_FLOWS_IN_USE: u32 = 0;

// ---------------------------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn count(counter: Counter, amount: u64) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, programs on one CPU do not run concurrently with each other here.
        unsafe { *value += amount };
    }
}

// ---------------------------------------------------------------------------------------------
// Header parsing
// ---------------------------------------------------------------------------------------------

const ETH_HEADER_LEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPV6_HEADER_LEN: usize = 40;
const TCP_MIN_HEADER_LEN: usize = 20;
/// VLAN tags parsed inline (802.1ad outer + 802.1Q inner). Hardware-accelerated tags are already
/// stripped into skb metadata and do not appear in the frame.
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers skipped before giving up.
const MAX_IPV6_EXTENSIONS: usize = 4;

/// Why a packet was not recorded. Only `Header` is a loss worth counting on the hot path; the
/// other outcomes are normal for non-target traffic.
enum Skip {
    /// Not TCP over IPv4/IPv6, or not a target port: nothing to do.
    NotOurs,
    /// Headers could not be read.
    Header,
    /// IP fragment: ports unknown.
    Fragment,
}

/// The parsed facts the record header needs. The addresses first and the struct 8-aligned, so
/// the scope check reads them a word at a time (the BPF backend splits a load it cannot prove
/// aligned into single bytes).
#[repr(C, align(8))]
struct TcpSegment {
    src_addr: [u8; 16],
    dst_addr: [u8; 16],
    family: u8,
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload_offset: u32,
    payload_len: u32,
}

/// Reads a small value at `offset`: directly from the linear packet data when it is there (no
/// helper call, the common case), else through `bpf_skb_load_bytes` (headers in a paged
/// fragment).
#[inline(always)]
fn load<T>(ctx: &TcContext, offset: usize) -> Result<T, Skip> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() <= end {
        // SAFETY: the bounds check above is the one the verifier requires for direct packet
        // access; `T` is a plain byte array or integer, valid for any bytes.
        return Ok(unsafe { ((start + offset) as *const T).read_unaligned() });
    }
    ctx.load::<T>(offset).map_err(|_| Skip::Header)
}

/// The `N` header bytes at `offset`, in place in the linear packet data when they are there
/// (the common case), else copied into `scratch` (headers in a paged fragment). In place, only
/// the bytes a caller reads are loaded: copying whole headers first cost a load and a store per
/// byte on every packet.
#[inline(always)]
fn header<'a, const N: usize>(
    ctx: &TcContext,
    offset: usize,
    scratch: &'a mut MaybeUninit<[u8; N]>,
) -> Result<&'a [u8; N], Skip> {
    let start = ctx.data();
    if start + offset + N <= ctx.data_end() {
        // SAFETY: the bounds check above is the one the verifier requires for direct packet
        // access; the packet outlives this program run and is not modified by it.
        return Ok(unsafe { &*((start + offset) as *const [u8; N]) });
    }
    // SAFETY: `skb` is the context pointer the kernel passed to this program; the helper writes
    // exactly N bytes into `scratch` or fails.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            offset as u32,
            scratch.as_mut_ptr().cast(),
            N as u32,
        )
    };
    if ret != 0 {
        return Err(Skip::Header);
    }
    // SAFETY: the helper succeeded, so all N bytes are written.
    Ok(unsafe { scratch.assume_init_ref() })
}

#[inline(always)]
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

#[inline(always)]
fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Returns the ethertype and the offset of the network header, skipping inline VLAN tags.
#[inline(always)]
fn parse_ethernet(ctx: &TcContext) -> Result<(u16, usize), Skip> {
    let mut ethertype = u16::from_be(load::<u16>(ctx, 12).map_err(|_| Skip::NotOurs)?);
    let mut offset = ETH_HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = u16::from_be(load::<u16>(ctx, offset + 2)?);
        offset += 4;
    }
    Ok((ethertype, offset))
}

/// The IP header of a packet, in place or in the caller's scratch buffer.
enum IpHeader<'a> {
    V4(&'a [u8; 20]),
    V6(&'a [u8; IPV6_HEADER_LEN]),
}

/// The IPv4 address at `header[at..at + 4]` in the first four of sixteen bytes, the rest zero.
/// Built as one 128-bit value: zeroing the twelve bytes of a byte array separately compiles to
/// a call to a byte-loop `memset`.
#[inline(always)]
fn ipv4_in_16(header: &[u8; 20], at: usize) -> [u8; 16] {
    let octets = [header[at], header[at + 1], header[at + 2], header[at + 3]];
    u128::from(u32::from_ne_bytes(octets)).to_ne_bytes()
}

/// Checks an IPv4 header and returns the offset of the TCP header. Only what decides whether
/// the packet is TCP with ports is read here; addresses and lengths wait for the port check.
#[inline(always)]
fn locate_ipv4(header: &[u8; 20], offset: usize) -> Result<usize, Skip> {
    let first = header[0];
    if first >> 4 != 4 {
        return Err(Skip::Header);
    }
    let header_len = ((first & 0x0f) as usize) * 4;
    if header_len < 20 {
        return Err(Skip::Header);
    }
    if header[9] != IPPROTO_TCP {
        return Err(Skip::NotOurs);
    }
    // More-fragments flag or a fragment offset: only the first fragment has ports, and we do
    // not reassemble IP; TCP with PMTU discovery does not fragment in practice.
    if (header[6] & 0x3f) | header[7] != 0 {
        return Err(Skip::Fragment);
    }
    Ok(offset + header_len)
}

/// Checks an IPv6 header, skips extension headers and returns the offset of the TCP header.
#[inline(always)]
fn locate_ipv6(
    ctx: &TcContext,
    header: &[u8; IPV6_HEADER_LEN],
    offset: usize,
) -> Result<usize, Skip> {
    if header[0] >> 4 != 6 {
        return Err(Skip::Header);
    }
    let mut next_header = header[6];
    let mut l4_offset = offset + IPV6_HEADER_LEN;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        match next_header {
            // Hop-by-hop, routing, destination options: skip by their length field.
            0 | 43 | 60 => {
                let extension: [u8; 2] = load(ctx, l4_offset)?;
                next_header = extension[0];
                l4_offset += (extension[1] as usize + 1) * 8;
            }
            44 => return Err(Skip::Fragment),
            _ => break,
        }
    }
    if next_header != IPPROTO_TCP {
        return Err(Skip::NotOurs);
    }
    Ok(l4_offset)
}

/// The family, addresses and the bytes from the TCP header to the end of the IP packet, read
/// once the packet is known to be a target's.
#[inline(always)]
fn network(
    ctx: &TcContext,
    ip: &IpHeader,
    l3_offset: usize,
    l4_offset: usize,
) -> (u8, [u8; 16], [u8; 16], u32) {
    let frame_l3_len = ctx.len().saturating_sub(l3_offset as u32);
    let ip_len = (l4_offset - l3_offset) as u32;
    match ip {
        IpHeader::V4(header) => {
            let total_len = be16(*header, 2) as u32;
            // BIG TCP IPv4 GSO packets carry total length 0; fall back to the skb length.
            // Otherwise the header's length excludes Ethernet padding of short frames.
            let l3_len = if total_len == 0 {
                frame_l3_len
            } else {
                total_len.min(frame_l3_len)
            };
            (
                FAMILY_IPV4,
                ipv4_in_16(header, 12),
                ipv4_in_16(header, 16),
                l3_len.saturating_sub(ip_len),
            )
        }
        IpHeader::V6(header) => {
            let payload_len = be16(*header, 4) as u32;
            // Jumbograms (BIG TCP) carry payload length 0.
            let l3_len = if payload_len == 0 {
                frame_l3_len
            } else {
                (IPV6_HEADER_LEN as u32 + payload_len).min(frame_l3_len)
            };
            let mut src_addr = [0u8; 16];
            let mut dst_addr = [0u8; 16];
            src_addr.copy_from_slice(&header[8..24]);
            dst_addr.copy_from_slice(&header[24..40]);
            (
                FAMILY_IPV6,
                src_addr,
                dst_addr,
                l3_len.saturating_sub(ip_len),
            )
        }
    }
}

/// The [`TARGET_PORTS`] entry of `port` if it is a target port.
#[inline(always)]
fn target_port(port: u16) -> Option<&'static TargetPort> {
    TARGET_PORTS
        .get(port as u32)
        .filter(|entry| entry.is_target != 0)
}

/// Parses the packet down to TCP and decides the direction; `Skip::NotOurs` for anything that is
/// not a target-port TCP segment. Most packets are not a target's, so the port check comes as
/// early as the headers allow: before it only the fields that decide whether the packet is TCP
/// are read; the addresses, lengths and TCP fields after it.
#[inline(always)]
fn parse(ctx: &TcContext) -> Result<(Direction, &'static TargetPort, TcpSegment), Skip> {
    let (ethertype, l3_offset) = parse_ethernet(ctx)?;
    // One buffer for either header (used only when it is not in the linear data).
    let mut ip_scratch = MaybeUninit::<[u8; IPV6_HEADER_LEN]>::uninit();
    let (ip, l4_offset) = match ethertype {
        ETH_P_IPV4 => {
            // SAFETY: the first 20 bytes of a 40-byte buffer; both are byte arrays.
            let scratch = unsafe { &mut *ip_scratch.as_mut_ptr().cast::<MaybeUninit<[u8; 20]>>() };
            let header = header(ctx, l3_offset, scratch)?;
            (IpHeader::V4(header), locate_ipv4(header, l3_offset)?)
        }
        ETH_P_IPV6 => {
            let header = header(ctx, l3_offset, &mut ip_scratch)?;
            (IpHeader::V6(header), locate_ipv6(ctx, header, l3_offset)?)
        }
        _ => return Err(Skip::NotOurs),
    };
    let mut scratch = MaybeUninit::uninit();
    let tcp: &[u8; TCP_MIN_HEADER_LEN] = header(ctx, l4_offset, &mut scratch)?;
    let src_port = be16(tcp, 0);
    let dst_port = be16(tcp, 2);
    // Destination port first: a client that happens to use a target port as its source port
    // still sends requests.
    let (direction, port) = match target_port(dst_port) {
        Some(port) => (Direction::Request, port),
        None => (
            Direction::Response,
            target_port(src_port).ok_or(Skip::NotOurs)?,
        ),
    };
    let (family, src_addr, dst_addr, l4_len) = network(ctx, &ip, l3_offset, l4_offset);
    let tcp_header_len = ((tcp[12] >> 4) as u32) * 4;
    if tcp_header_len < TCP_MIN_HEADER_LEN as u32 || tcp_header_len > l4_len {
        return Err(Skip::Header);
    }
    Ok((
        direction,
        port,
        TcpSegment {
            family,
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            seq: be32(tcp, 4),
            ack: be32(tcp, 8),
            flags: tcp[13],
            payload_offset: l4_offset as u32 + tcp_header_len,
            payload_len: l4_len - tcp_header_len,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// Payload emission
// ---------------------------------------------------------------------------------------------

/// Reserves one record of payload class `N`, copies `len` (1..=N, or 0 for a bare SYN/FIN/RST)
/// payload bytes starting at `chunk_offset` and submits it. Returns the bytes copied.
#[inline(always)]
fn emit_chunk<const N: usize>(
    ctx: &TcContext,
    header: &SegmentHeader,
    segment: &TcpSegment,
    chunk_offset: u32,
    len: u32,
) -> Result<u32, ()> {
    let Some(mut entry) = EVENTS.reserve::<SegmentRecord<N>>(0) else {
        count(Counter::RingbufFull, 1);
        return Err(());
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points at a reserved, exclusively owned ring-buffer slot of the right size.
    unsafe {
        (*record).header = SegmentHeader {
            chunk_offset,
            chunk_len: len,
            ..*header
        };
    }
    if len > 0 {
        // The verifier must see a length it can prove is within 1..=N: mask it (N is a power of
        // two) after hiding the value from the optimiser, which would otherwise fold the mask
        // away because it "knows" len <= N. `TcContext::load_bytes` is rejected here (aya #1207).
        let n = black_box(len as usize);
        let n = ((n - 1) & (N - 1)) + 1;
        // SAFETY: the destination is the record's N-byte data array, n <= N.
        let ret = unsafe {
            bpf_skb_load_bytes(
                ctx.skb.skb.cast(),
                segment.payload_offset + chunk_offset,
                (*record).data.as_mut_ptr().cast(),
                n as u32,
            )
        };
        if ret != 0 {
            entry.discard(0);
            count(Counter::CopyErrors, 1);
            return Err(());
        }
    }
    // SAFETY: a plain read of a global the loader may have rewritten; volatile so the compiler
    // does not fold the initial value in.
    let wakeup_bytes = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    // Wake the reader only when this record makes the unread data cross the threshold: a
    // wake-up is an irq_work costing microseconds, so a lagging reader must not get one per
    // record. A crossing missed because another CPU submitted concurrently is caught by the
    // reader's poll interval.
    let record_bytes = (size_of::<SegmentRecord<N>>() + 8) as u64;
    let unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let flags = if unread >= wakeup_bytes && unread < wakeup_bytes + record_bytes {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
    count(Counter::RecordsEmitted, 1);
    count(Counter::PayloadBytes, len as u64);
    Ok(len)
}

/// Emits the tail of a segment (`1..MAX_CHUNK` bytes) in the smallest size class that holds it.
#[inline(always)]
fn emit_tail(
    ctx: &TcContext,
    header: &SegmentHeader,
    segment: &TcpSegment,
    chunk_offset: u32,
    len: u32,
) -> Result<u32, ()> {
    const C0: usize = CHUNK_SIZE_CLASSES[0];
    const C1: usize = CHUNK_SIZE_CLASSES[1];
    const C2: usize = CHUNK_SIZE_CLASSES[2];
    if len <= C0 as u32 {
        emit_chunk::<C0>(ctx, header, segment, chunk_offset, len)
    } else if len <= C1 as u32 {
        emit_chunk::<C1>(ctx, header, segment, chunk_offset, len)
    } else {
        emit_chunk::<C2>(ctx, header, segment, chunk_offset, len)
    }
}

/// Out of line: the copy loop is most of the program's code, and inlined into the entry point it
/// sat between the blocks every packet runs, spreading them over more instruction-cache lines.
#[inline(never)]
fn emit_segment(ctx: &TcContext, direction: Direction, segment: &TcpSegment) {
    let header = SegmentHeader {
        // SAFETY: helper without preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        seq: segment.seq,
        ack: segment.ack,
        payload_len: segment.payload_len,
        chunk_offset: 0,
        chunk_len: 0,
        // SAFETY: `skb` is the context pointer the kernel passed to this program.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        src_port: segment.src_port,
        dst_port: segment.dst_port,
        family: segment.family,
        direction: direction as u8,
        tcp_flags: segment.flags,
        _padding: 0,
        src_addr: segment.src_addr,
        dst_addr: segment.dst_addr,
    };
    if segment.payload_len == 0 {
        // Bare SYN/FIN/RST: userspace needs them for the connection lifecycle.
        let _ = emit_chunk::<{ CHUNK_SIZE_CLASSES[0] }>(ctx, &header, segment, 0, 0);
        return;
    }
    // Full chunks first, in a loop whose body has a single constant-size class: the verifier
    // walks each iteration, and branching on the size class inside it would multiply its states
    // past the complexity limit. The tail is emitted once, after the loop, in the smallest class.
    let mut chunk_offset = 0u32;
    for _ in 0..MAX_CHUNKS_PER_SEGMENT {
        if segment.payload_len - chunk_offset < MAX_CHUNK_U32 {
            break;
        }
        if emit_chunk::<MAX_CHUNK>(ctx, &header, segment, chunk_offset, MAX_CHUNK_U32).is_err() {
            // The rest of this segment is lost; account for it so userspace sees a counted gap
            // rather than a silent one.
            count(
                Counter::LostBytes,
                (segment.payload_len - chunk_offset) as u64,
            );
            return;
        }
        chunk_offset += MAX_CHUNK_U32;
    }
    let remaining = segment.payload_len - chunk_offset;
    if remaining >= MAX_CHUNK_U32 {
        // More than MAX_CHUNKS_PER_SEGMENT full chunks (BIG TCP): counted, not copied.
        count(Counter::TruncatedBytes, remaining as u64);
        return;
    }
    if remaining > 0 && emit_tail(ctx, &header, segment, chunk_offset, remaining).is_err() {
        count(Counter::LostBytes, remaining as u64);
    }
}

const MAX_CHUNK_U32: u32 = MAX_CHUNK as u32;

// ---------------------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Self-traffic
// ---------------------------------------------------------------------------------------------

/// The packet's 4-tuple as [`IGNORED_FLOWS`] keys it. Built only where a lookup needs it: most
/// recorded packets make none.
#[inline(always)]
fn flow_tuple(segment: &TcpSegment) -> FlowTuple {
    FlowTuple {
        src_addr: segment.src_addr,
        dst_addr: segment.dst_addr,
        src_port: segment.src_port,
        dst_port: segment.dst_port,
        family: segment.family,
        _padding_byte: 0,
        _padding_half: 0,
    }
}

/// True for packets of the daemon's own replay connections, which must never be recorded (a
/// shadow on a captured interface and target port would otherwise loop). Independent of the
/// shadow's address and port: a packet that leaves one of our registered sockets (found by its
/// socket cookie, present on locally generated packets) marks its 4-tuple, as seen on this hook
/// after any NAT, in both orientations; replies then match the reversed tuple.
#[inline(always)]
fn is_self_traffic(ctx: &TcContext, segment: &TcpSegment) -> bool {
    // SAFETY: see IGNORED_FLOWS_IN_USE.
    let in_use = unsafe { core::ptr::read_volatile(&raw const IGNORED_FLOWS_IN_USE) } != 0;
    // SAFETY: lookup of a plain key; the value is not dereferenced.
    if in_use && unsafe { IGNORED_FLOWS.get(flow_tuple(segment)) }.is_some() {
        return true;
    }
    // SAFETY: `skb` is the context pointer the kernel passed to this program.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    // SAFETY: lookup of a plain key; the value is not dereferenced.
    if cookie == 0 || unsafe { REPLAY_SOCKETS.get(cookie) }.is_none() {
        return false;
    }
    let tuple = flow_tuple(segment);
    // Before the inserts: a reply that finds the flow must find the flag set too. The reply
    // follows this packet's departure, so the store is visible by then.
    // SAFETY: see IGNORED_FLOWS_IN_USE.
    unsafe { core::ptr::write_volatile(&raw mut IGNORED_FLOWS_IN_USE, 1) };
    // Failing inserts (map full of live entries) only cost the next packet another lookup.
    let _ = IGNORED_FLOWS.insert(tuple, 1, 0);
    let _ = IGNORED_FLOWS.insert(tuple.reversed(), 1, 0);
    true
}

// ---------------------------------------------------------------------------------------------
// Scope: the destinations that are the primary
// ---------------------------------------------------------------------------------------------

/// For a scoped target: whether the server side of the packet (destination of a request, source
/// of a response) is one of the target's prefixes. Up to [`mirror_common::SCOPE_LIST_PREFIXES`]
/// prefixes of the packet's family are compared in the port's list; a port without a list, or
/// with more prefixes of that family, costs one trie lookup instead. Measured on bulk traffic
/// through a veth (caches cold between packets), the list took an out-of-scope packet from
/// about 125 to about 45 ns above an empty program (60 with a full list of 8), a non-target
/// port's figure within about 15 ns: the trie lookup was most of it (a helper call and a cold
/// node per level; with the trie empty the packet still cost about 110 ns). Inline: as a
/// function of its own it cost about 25 ns more. The IPv4 scan is a bounded loop (verifier
/// support since 5.3, below the 5.8 minimum).
#[inline(always)]
fn in_scope(port: &TargetPort, direction: Direction, segment: &TcpSegment) -> bool {
    // Two words chosen by value: a choice of pointer made the backend read the bytes singly.
    let address = match direction {
        Direction::Request => halves(segment.dst_addr),
        Direction::Response => halves(segment.src_addr),
    };
    let listed = SCOPE_LISTS.get(port.scope_list).and_then(|list| {
        if segment.family == FAMILY_IPV4 {
            let first = address[0].to_ne_bytes();
            list.contains_v4([first[0], first[1], first[2], first[3]])
        } else {
            list.contains_v6(address)
        }
    });
    match listed {
        Some(inside) => inside,
        None => in_scope_trie(direction, segment),
    }
}

/// [`in_scope`] by a trie lookup. Out of line: the key is built on the stack, and only ports
/// with long lists (or none) come here.
#[inline(never)]
fn in_scope_trie(direction: Direction, segment: &TcpSegment) -> bool {
    let (port, address) = match direction {
        Direction::Request => (segment.dst_port, &segment.dst_addr),
        Direction::Response => (segment.src_port, &segment.src_addr),
    };
    if segment.family == FAMILY_IPV4 {
        let v4 = [address[0], address[1], address[2], address[3]];
        let key = Key::new(SCOPE_PORT_BITS + 32, scope_key_v4(port, v4));
        SCOPE_V4.get(&key).is_some()
    } else {
        let key = Key::new(SCOPE_PORT_BITS + 128, scope_key_v6(port, *address));
        SCOPE_V6.get(&key).is_some()
    }
}

// ---------------------------------------------------------------------------------------------
// In-kernel connection sampling
// ---------------------------------------------------------------------------------------------

/// For targets sampled by connection: whether this connection is kept (see [`TargetPort`]).
/// The decision is a hash of the 4-tuple, so an unsampled connection costs no map lookup unless
/// its point falls in the band of a rate lowered while it may have been mirrored.
#[inline(always)]
fn is_sampled(direction: Direction, port: &TargetPort, segment: &TcpSegment) -> bool {
    port.sample_ppm >= SAMPLE_SCALE || is_sampled_connection(direction, port, segment)
}

/// [`is_sampled`] below 100%. Out of line because inlining it pushes the program's stack past
/// the BPF limit; the 100% path does not make the call.
#[inline(never)]
fn is_sampled_connection(direction: Direction, port: &TargetPort, segment: &TcpSegment) -> bool {
    let (client_addr, server_addr, client_port, server_port) = match direction {
        Direction::Request => (
            &segment.src_addr,
            &segment.dst_addr,
            segment.src_port,
            segment.dst_port,
        ),
        Direction::Response => (
            &segment.dst_addr,
            &segment.src_addr,
            segment.dst_port,
            segment.src_port,
        ),
    };
    let point = connection_sample_point(
        segment.family,
        client_addr,
        server_addr,
        client_port,
        server_port,
    );
    let kept = point < port.sample_ppm;
    if !kept && point >= port.remembered_ppm {
        return false;
    }
    let key = FlowTuple {
        src_addr: *client_addr,
        dst_addr: *server_addr,
        src_port: client_port,
        dst_port: server_port,
        family: segment.family,
        _padding_byte: 0,
        _padding_half: 0,
    };
    // SAFETY: lookup of a plain key; the value is not dereferenced.
    let remembered = unsafe { SAMPLED_FLOWS.get(key) }.is_some();
    if kept && !remembered {
        // A full map of live entries only means this connection would be cut by a lower rate.
        let _ = SAMPLED_FLOWS.insert(key, 1, 0);
    }
    kept || remembered
}

fn try_mirror_tc(ctx: &TcContext) -> Result<(), Skip> {
    count(Counter::PacketsSeen, 1);
    let (direction, port, segment) = parse(ctx)?;
    // Another destination on the port (another service, the shadow itself): not a target.
    if port.scoped != 0 && !in_scope(port, direction, &segment) {
        count(Counter::OtherAddress, 1);
        return Ok(());
    }
    if port.shed != 0 {
        // The shadow cannot take more: count what would have been recorded, copy nothing. The
        // replays still in flight to a shadow on a captured target port are not shed requests;
        // their answers are not told apart here (a lookup per response packet while shed).
        if direction == Direction::Request && is_self_traffic(ctx, &segment) {
            count(Counter::SelfTraffic, 1);
            return Ok(());
        }
        count(Counter::ShedPackets, 1);
        let bytes = match direction {
            Direction::Request => Counter::ShedRequestBytes,
            Direction::Response => Counter::ShedResponseBytes,
        };
        count(bytes, segment.payload_len as u64);
        return Ok(());
    }
    // Sampling first: an unsampled connection then costs a hash, not the three map lookups of
    // the self-traffic check (a replay connection that is sampled out is not recorded either way).
    if !is_sampled(direction, port, &segment) {
        count(Counter::SampledOut, 1);
        return Ok(());
    }
    if is_self_traffic(ctx, &segment) {
        count(Counter::SelfTraffic, 1);
        return Ok(());
    }
    count(Counter::PacketsMatched, 1);
    let lifecycle = segment.flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) != 0;
    if segment.payload_len == 0 && !lifecycle {
        // Pure ACK: carries nothing userspace needs.
        return Ok(());
    }
    emit_segment(ctx, direction, &segment);
    Ok(())
}

/// Entry point. Always `TCX_NEXT`: we observe, never decide.
#[classifier]
pub fn mirror_tc(ctx: TcContext) -> i32 {
    match try_mirror_tc(&ctx) {
        Ok(()) | Err(Skip::NotOurs) => {}
        Err(Skip::Header) => count(Counter::HeaderErrors, 1),
        Err(Skip::Fragment) => count(Counter::IpFragments, 1),
    }
    // TC_ACT_OK would end a TCX chain; keep the constant referenced so a reader sees the contrast.
    const _: () = assert!(TCX_NEXT != TC_ACT_OK);
    TCX_NEXT
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
