//! The unit of captured data: one ring-buffer record decoded into a typed TCP segment chunk.
//!
//! The classifier splits a large (GSO/GRO) segment into chunks; each chunk becomes its own
//! [`Segment`] whose `seq` is the sequence number of its first payload byte (see
//! [`Segment::payload_seq`] for a SYN that carries data), so consumers can treat
//! chunks exactly like segments.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use bytes::Bytes;
pub use mirror_common::Direction;
use mirror_common::{FAMILY_IPV4, FAMILY_IPV6, SEGMENT_HEADER_LEN, SegmentHeader, tcp_flags};

/// TCP flags of a segment.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: Self = Self(tcp_flags::FIN);
    pub const SYN: Self = Self(tcp_flags::SYN);
    pub const RST: Self = Self(tcp_flags::RST);
    pub const PSH: Self = Self(tcp_flags::PSH);
    pub const ACK: Self = Self(tcp_flags::ACK);

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }

    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }

    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for TcpFlags {
    /// tcpdump style: `S`, `F`, `R`, `P`, `.` for ACK.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for (flag, letter) in [
            (Self::SYN, 'S'),
            (Self::FIN, 'F'),
            (Self::RST, 'R'),
            (Self::PSH, 'P'),
            (Self::ACK, '.'),
        ] {
            if self.contains(flag) {
                write!(f, "{letter}")?;
                any = true;
            }
        }
        if !any {
            write!(f, "none")?;
        }
        Ok(())
    }
}

/// A TCP connection as seen on the wire, oriented client to server: `client` is the peer that
/// talks to the target port, whichever direction the segment travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Three words instead of the derived impl's dozen writes (variant tags, address lengths,
/// octets): every segment and every comparison looks a flow up. It hashes a part of what `Eq`
/// compares (not IPv6 flow labels or scopes), so equal keys still hash equal.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        fn address_bits(address: &SocketAddr) -> u128 {
            match address.ip() {
                IpAddr::V4(ip) => u128::from(u32::from(ip)),
                IpAddr::V6(ip) => u128::from(ip),
            }
        }
        state.write_u128(address_bits(&self.client));
        state.write_u128(address_bits(&self.server));
        state.write_u32(u32::from(self.client.port()) << 16 | u32::from(self.server.port()));
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} > {}", self.client, self.server)
    }
}

/// One captured chunk of a TCP segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Connection, oriented client to server.
    pub flow: FlowKey,
    /// Request (client to server) or response (server to client).
    pub direction: Direction,
    /// The segment's sequence number plus the chunk's offset in its payload: the SYN's own
    /// sequence number for the first chunk of a SYN ([`Self::payload_seq`] is where data starts).
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// CLOCK_MONOTONIC nanoseconds when the kernel saw the packet.
    pub timestamp_ns: u64,
    /// Interface index the packet was seen on.
    pub ifindex: u32,
    /// Payload length of the whole segment this chunk belongs to.
    pub segment_len: u32,
    /// Offset of this chunk within the segment payload.
    pub chunk_offset: u32,
    /// The chunk's payload bytes.
    pub payload: Bytes,
}

impl Segment {
    /// Sequence number of the chunk's first payload byte: a SYN takes one sequence number before
    /// the data it carries (TCP Fast Open, RFC 7413), in every chunk of the segment.
    pub fn payload_seq(&self) -> u32 {
        self.seq.wrapping_add(u32::from(self.flags.syn()))
    }

    /// True for the first chunk of a segment (the one that carries SYN for a SYN segment).
    pub fn is_first_chunk(&self) -> bool {
        self.chunk_offset == 0
    }

    /// True for the last chunk of a segment (the one after which a FIN takes effect).
    pub fn is_last_chunk(&self) -> bool {
        self.chunk_offset + self.payload.len() as u32 >= self.segment_len
    }

    /// Flags that apply to this chunk: SYN only on the first, FIN only on the last, so a consumer
    /// never sees a stream end before all of a segment's bytes.
    pub fn effective_flags(&self) -> TcpFlags {
        let mut bits = self.flags.0;
        if !self.is_first_chunk() {
            bits &= !tcp_flags::SYN;
        }
        if !self.is_last_chunk() {
            bits &= !tcp_flags::FIN;
        }
        TcpFlags(bits)
    }
}

/// A ring-buffer record that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the {SEGMENT_HEADER_LEN}-byte header")]
    Short(usize),
    #[error("record claims {claimed} payload bytes but carries {available}")]
    ChunkOverrun { claimed: u32, available: usize },
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("unknown direction {0}")]
    Direction(u8),
}

fn address(family: u8, bytes: [u8; 16]) -> Result<IpAddr, DecodeError> {
    match family {
        FAMILY_IPV4 => Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        FAMILY_IPV6 => Ok(IpAddr::V6(Ipv6Addr::from(bytes))),
        other => Err(DecodeError::Family(other)),
    }
}

/// Reads the fixed header at the start of a record.
pub fn decode_header(record: &[u8]) -> Result<SegmentHeader, DecodeError> {
    if record.len() < SEGMENT_HEADER_LEN {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: length checked above; SegmentHeader is plain data valid for any bit pattern and
    // read_unaligned has no alignment requirement.
    Ok(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<SegmentHeader>()) })
}

/// The bytes of `record` that carry information: the header and its `chunk_len` payload bytes.
/// The classifier reserves records in size classes, so an 840-byte response sits in a 2 KiB
/// record whose tail is garbage; a reader copies only this prefix. The whole record when the
/// header cannot be read or overstates the payload (the decoder then reports it).
pub fn record_len(record: &[u8]) -> usize {
    decode_header(record).map_or(record.len(), |header| {
        (SEGMENT_HEADER_LEN + header.chunk_len as usize).min(record.len())
    })
}

/// Decodes one record. `record` is a slice of a shared buffer, so the payload is a zero-copy
/// sub-slice of it.
pub fn decode(record: Bytes) -> Result<Segment, DecodeError> {
    let len = record.len();
    decode_in(&record, 0..len)
}

/// Decodes the record at `range` of `buffer` (a batch of records); the payload is a zero-copy
/// slice of `buffer`.
pub fn decode_in(buffer: &Bytes, range: std::ops::Range<usize>) -> Result<Segment, DecodeError> {
    let record = &buffer[range.clone()];
    let header = decode_header(record)?;
    let available = record.len() - SEGMENT_HEADER_LEN;
    let chunk_len = header.chunk_len as usize;
    if chunk_len > available {
        return Err(DecodeError::ChunkOverrun {
            claimed: header.chunk_len,
            available,
        });
    }
    let direction =
        Direction::from_u8(header.direction).ok_or(DecodeError::Direction(header.direction))?;
    let src = SocketAddr::new(address(header.family, header.src_addr)?, header.src_port);
    let dst = SocketAddr::new(address(header.family, header.dst_addr)?, header.dst_port);
    let flow = match direction {
        Direction::Request => FlowKey {
            client: src,
            server: dst,
        },
        Direction::Response => FlowKey {
            client: dst,
            server: src,
        },
    };
    Ok(Segment {
        flow,
        direction,
        seq: header.seq.wrapping_add(header.chunk_offset),
        ack: header.ack,
        flags: TcpFlags(header.tcp_flags),
        timestamp_ns: header.timestamp_ns,
        ifindex: header.ifindex,
        segment_len: header.payload_len,
        chunk_offset: header.chunk_offset,
        payload: buffer
            .slice(range.start + SEGMENT_HEADER_LEN..range.start + SEGMENT_HEADER_LEN + chunk_len),
    })
}

/// Encodes a record exactly as the classifier lays it out; used by tests and benchmarks that feed
/// the decoder without a kernel.
pub fn encode(header: &SegmentHeader, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(SEGMENT_HEADER_LEN + payload.len());
    // SAFETY: SegmentHeader is #[repr(C)] plain data with no uninitialised padding.
    let header_bytes = unsafe {
        std::slice::from_raw_parts(
            (header as *const SegmentHeader).cast::<u8>(),
            SEGMENT_HEADER_LEN,
        )
    };
    record.extend_from_slice(header_bytes);
    record.extend_from_slice(payload);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(direction: Direction, family: u8) -> SegmentHeader {
        let mut src_addr = [0u8; 16];
        let mut dst_addr = [0u8; 16];
        src_addr[..4].copy_from_slice(&[198, 18, 0, 1]);
        dst_addr[..4].copy_from_slice(&[198, 18, 0, 2]);
        SegmentHeader {
            timestamp_ns: 42,
            seq: u32::MAX - 1,
            ack: 7,
            payload_len: 10,
            chunk_offset: 4,
            chunk_len: 6,
            ifindex: 3,
            src_port: 40000,
            dst_port: 8080,
            family,
            direction: direction as u8,
            tcp_flags: tcp_flags::PSH | tcp_flags::ACK | tcp_flags::FIN,
            _padding: 0,
            src_addr,
            dst_addr,
        }
    }

    #[test]
    fn decodes_request_chunk_with_wrapping_seq() {
        // The record carries 8 bytes of class padding after the 6 valid ones.
        let record = encode(
            &header(Direction::Request, FAMILY_IPV4),
            b"abcdef\0\0\0\0\0\0\0\0",
        );
        let segment = decode(Bytes::from(record)).unwrap();
        assert_eq!(segment.payload, Bytes::from_static(b"abcdef"));
        assert_eq!(segment.seq, 2, "u32::MAX - 1 + 4 wraps to 2");
        assert_eq!(segment.flow.client, "198.18.0.1:40000".parse().unwrap());
        assert_eq!(segment.flow.server, "198.18.0.2:8080".parse().unwrap());
        assert!(segment.is_last_chunk());
        assert!(segment.effective_flags().fin());
    }

    #[test]
    fn batch_of_trimmed_records_decodes_in_place() {
        // Two records in their size-class padding, trimmed to header + chunk_len as the ring
        // reader copies them, back to back in one buffer.
        let padded = encode(
            &header(Direction::Request, FAMILY_IPV4),
            b"abcdef\0\0\0\0\0\0\0\0",
        );
        assert_eq!(record_len(&padded), SEGMENT_HEADER_LEN + 6);
        let mut second = header(Direction::Response, FAMILY_IPV4);
        second.chunk_len = 3;
        let second = encode(&second, b"xyz\0");
        let mut buffer = padded[..record_len(&padded)].to_vec();
        let split = buffer.len();
        buffer.extend_from_slice(&second[..record_len(&second)]);
        assert_eq!(buffer.len(), 2 * SEGMENT_HEADER_LEN + 9);
        let buffer = Bytes::from(buffer);
        let first = decode_in(&buffer, 0..split).unwrap();
        let second = decode_in(&buffer, split..buffer.len()).unwrap();
        assert_eq!(first.payload, Bytes::from_static(b"abcdef"));
        assert_eq!(second.payload, Bytes::from_static(b"xyz"));
        assert_eq!(second.direction, Direction::Response);
        // A record claiming more than it holds is kept whole, for the decoder to reject.
        let overrun = encode(&header(Direction::Request, FAMILY_IPV4), b"abc");
        assert_eq!(record_len(&overrun), overrun.len());
        assert_eq!(record_len(b"short"), 5);
    }

    #[test]
    fn response_flow_is_oriented_client_to_server() {
        let record = encode(&header(Direction::Response, FAMILY_IPV4), b"abcdef");
        let segment = decode(Bytes::from(record)).unwrap();
        assert_eq!(segment.flow.client, "198.18.0.2:8080".parse().unwrap());
        assert_eq!(segment.flow.server, "198.18.0.1:40000".parse().unwrap());
    }

    #[test]
    fn fin_applies_to_last_chunk_only() {
        let mut first = header(Direction::Request, FAMILY_IPV4);
        first.chunk_offset = 0;
        first.chunk_len = 4;
        let segment = decode(Bytes::from(encode(&first, b"abcd"))).unwrap();
        assert!(!segment.is_last_chunk());
        assert!(!segment.effective_flags().fin());
    }

    #[test]
    fn rejects_overrun_and_bad_family() {
        let record = encode(&header(Direction::Request, FAMILY_IPV4), b"abc");
        assert_eq!(
            decode(Bytes::from(record)),
            Err(DecodeError::ChunkOverrun {
                claimed: 6,
                available: 3
            })
        );
        let record = encode(&header(Direction::Request, 9), b"abcdef");
        assert_eq!(decode(Bytes::from(record)), Err(DecodeError::Family(9)));
        assert_eq!(
            decode(Bytes::from_static(b"short")),
            Err(DecodeError::Short(5))
        );
    }

    #[test]
    fn ipv6_addresses_use_all_sixteen_bytes() {
        let mut h = header(Direction::Request, FAMILY_IPV6);
        h.src_addr = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        h.dst_addr = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets();
        let segment = decode(Bytes::from(encode(&h, b"abcdef"))).unwrap();
        assert_eq!(segment.flow.client, "[2001:db8::1]:40000".parse().unwrap());
    }
}
