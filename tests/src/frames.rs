//! Crafted Ethernet frames for `BPF_PROG_TEST_RUN`. Checksums are left zero: the classifier does
//! not look at them.

use std::net::IpAddr;

/// Everything that varies between test frames.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Outer-first VLAN tags as (TPID, VLAN id): 0x88a8 for 802.1ad, 0x8100 for 802.1Q.
    pub vlan_tags: Vec<(u16, u16)>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    pub ipv4_options: Vec<u8>,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
    /// Extra bytes after the IP packet (Ethernet padding of short frames).
    pub trailer: Vec<u8>,
}

impl Frame {
    pub fn tcp(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> Self {
        Self {
            vlan_tags: Vec::new(),
            src,
            dst,
            ipv4_options: Vec::new(),
            src_port,
            dst_port,
            seq: 1000,
            ack: 2000,
            flags: 0x18, // PSH | ACK
            payload: Vec::new(),
            trailer: Vec::new(),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]); // destination MAC
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // source MAC
        for (tpid, id) in &self.vlan_tags {
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&id.to_be_bytes());
        }
        let tcp = self.tcp_segment();
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                frame.extend_from_slice(&0x0800u16.to_be_bytes());
                let header_len = 20 + self.ipv4_options.len();
                assert!(
                    header_len.is_multiple_of(4) && header_len <= 60,
                    "bad IPv4 options"
                );
                let total = (header_len + tcp.len()) as u16;
                frame.push(0x40 | (header_len / 4) as u8);
                frame.push(0);
                frame.extend_from_slice(&total.to_be_bytes());
                frame.extend_from_slice(&[0, 1, 0x40, 0]); // id, DF
                frame.extend_from_slice(&[64, 6, 0, 0]); // ttl, TCP, checksum
                frame.extend_from_slice(&src.octets());
                frame.extend_from_slice(&dst.octets());
                frame.extend_from_slice(&self.ipv4_options);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                frame.extend_from_slice(&0x86ddu16.to_be_bytes());
                frame.extend_from_slice(&[0x60, 0, 0, 0]);
                frame.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
                frame.extend_from_slice(&[6, 64]); // next header TCP, hop limit
                frame.extend_from_slice(&src.octets());
                frame.extend_from_slice(&dst.octets());
            }
            _ => panic!("mixed address families"),
        }
        frame.extend_from_slice(&tcp);
        frame.extend_from_slice(&self.trailer);
        frame
    }

    fn tcp_segment(&self) -> Vec<u8> {
        let mut tcp = Vec::with_capacity(20 + self.payload.len());
        tcp.extend_from_slice(&self.src_port.to_be_bytes());
        tcp.extend_from_slice(&self.dst_port.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        tcp.push(5 << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
        tcp.extend_from_slice(&self.payload);
        tcp
    }
}

/// Deterministic, position-dependent bytes: a misplaced chunk never compares equal by accident.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// Sends raw Ethernet frames out of `interface` (AF_PACKET) from the calling thread's network
/// namespace: crafted traffic at a rate no real client pool reaches (floods, stalled peers).
/// Frames to the wrong MAC are still seen by the peer's TC ingress hook, which is all a capture
/// test needs; the peer's stack then drops or resets them.
pub fn inject(interface: &str, frames: impl IntoIterator<Item = Vec<u8>>) -> usize {
    let name = std::ffi::CString::new(interface).expect("interface name");
    // SAFETY: plain libc calls with valid arguments; the fd is closed below.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        assert!(index != 0, "no interface {interface}");
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            (libc::ETH_P_ALL as u16).to_be() as i32,
        );
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut address: libc::sockaddr_ll = std::mem::zeroed();
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = index as i32;
        address.sll_halen = 6;
        let mut sent = 0;
        for frame in frames {
            let n = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const address).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            if n == frame.len() as isize {
                sent += 1;
            }
        }
        libc::close(fd);
        sent
    }
}
