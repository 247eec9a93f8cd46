//! The classifier, run by the kernel on crafted frames through `BPF_PROG_TEST_RUN`: records must be
//! byte-exact against the frame, and every path must return `TCX_NEXT`.

use std::net::IpAddr;

use aya::{
    maps::{MapData, RingBuf},
    programs::{TestRun, TestRunOptions},
};
use bytes::Bytes;
use mirror::{
    capture::{Classifier, KernelCounters},
    segment::{self, Direction, Segment},
};
use mirror_common::{
    Counter, FAMILY_IPV4, SEGMENT_HEADER_LEN, TCX_NEXT, connection_sample_point, tcp_flags,
};
use mirror_tests::{
    frames::{Frame, pattern},
    privileged,
};

const TARGET: u16 = 8080;
const RING_BYTES: u32 = 1 << 20;

struct Harness {
    classifier: Classifier,
    ring: RingBuf<MapData>,
}

/// One record as read off the ring: its decoded segment and the reserved record size.
struct Record {
    segment: Segment,
    reserved: usize,
}

impl Harness {
    fn new() -> Self {
        let mut classifier = Classifier::load(&[TARGET], RING_BYTES).expect("load classifier");
        let ring = classifier.take_ring().expect("ring buffer");
        Self { classifier, ring }
    }

    /// Runs the classifier once on `frame`; returns the records it emitted.
    fn run(&mut self, frame: &[u8]) -> Vec<Record> {
        let program = self.classifier.program().expect("program");
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(
            result.return_value as i32, TCX_NEXT,
            "classifier must return TCX_NEXT on every path"
        );
        let mut records = Vec::new();
        while let Some(item) = self.ring.next() {
            let reserved = item.len();
            let segment = segment::decode(Bytes::copy_from_slice(&item)).expect("decode record");
            records.push(Record { segment, reserved });
        }
        records
    }

    fn counters(&self) -> KernelCounters {
        self.classifier.counters().expect("counters")
    }
}

fn v4(last: u8) -> IpAddr {
    IpAddr::from([198, 18, 0, last])
}

fn v6(last: u16) -> IpAddr {
    IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, last])
}

fn request(src: IpAddr, dst: IpAddr, payload: Vec<u8>) -> Frame {
    let mut frame = Frame::tcp(src, dst, 40000, TARGET);
    frame.payload = payload;
    frame
}

/// Concatenates the records of one segment, checking offsets are contiguous.
fn payload_of(records: &[Record]) -> Vec<u8> {
    let mut payload = Vec::new();
    for record in records {
        assert_eq!(record.segment.chunk_offset as usize, payload.len());
        payload.extend_from_slice(&record.segment.payload);
    }
    payload
}

fn assert_single_exact(records: &[Record], frame: &Frame, direction: Direction) {
    assert_eq!(records.len(), 1, "one record expected");
    let segment = &records[0].segment;
    assert_eq!(segment.payload.as_ref(), frame.payload.as_slice());
    assert_eq!(segment.direction, direction);
    assert_eq!(segment.seq, frame.seq);
    assert_eq!(segment.ack, frame.ack);
    assert_eq!(segment.flags.0, frame.flags);
    assert_eq!(segment.segment_len as usize, frame.payload.len());
    let (client, server) = match direction {
        Direction::Request => ((frame.src, frame.src_port), (frame.dst, frame.dst_port)),
        Direction::Response => ((frame.dst, frame.dst_port), (frame.src, frame.src_port)),
    };
    assert_eq!(segment.flow.client, client.into());
    assert_eq!(segment.flow.server, server.into());
    assert!(segment.timestamp_ns > 0);
}

#[test]
fn ipv4_request_is_byte_exact() {
    if !privileged("ipv4_request_is_byte_exact") {
        return;
    }
    let mut harness = Harness::new();
    let frame = request(v4(1), v4(2), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec());
    let records = harness.run(&frame.bytes());
    assert_single_exact(&records, &frame, Direction::Request);
    let counters = harness.counters();
    assert_eq!(counters.get(Counter::PacketsSeen), 1);
    assert_eq!(counters.get(Counter::PacketsMatched), 1);
    assert_eq!(counters.get(Counter::RecordsEmitted), 1);
    assert_eq!(
        counters.get(Counter::PayloadBytes),
        frame.payload.len() as u64
    );
}

#[test]
fn ipv4_response_direction_from_source_port() {
    if !privileged("ipv4_response_direction_from_source_port") {
        return;
    }
    let mut harness = Harness::new();
    let mut frame = Frame::tcp(v4(2), v4(1), TARGET, 40000);
    frame.payload = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
    let records = harness.run(&frame.bytes());
    assert_single_exact(&records, &frame, Direction::Response);
}

#[test]
fn ipv6_request_is_byte_exact() {
    if !privileged("ipv6_request_is_byte_exact") {
        return;
    }
    let mut harness = Harness::new();
    let frame = request(v6(1), v6(2), pattern(300, 6));
    let records = harness.run(&frame.bytes());
    assert_single_exact(&records, &frame, Direction::Request);
}

#[test]
fn vlan_tagged_frames_are_parsed() {
    if !privileged("vlan_tagged_frames_are_parsed") {
        return;
    }
    let mut harness = Harness::new();
    let mut single = request(v4(1), v4(2), pattern(64, 1));
    single.vlan_tags = vec![(0x8100, 42)];
    assert_single_exact(&harness.run(&single.bytes()), &single, Direction::Request);

    let mut double = request(v6(1), v6(2), pattern(64, 2));
    double.vlan_tags = vec![(0x88a8, 100), (0x8100, 42)];
    assert_single_exact(&harness.run(&double.bytes()), &double, Direction::Request);
}

#[test]
fn ipv4_options_are_skipped() {
    if !privileged("ipv4_options_are_skipped") {
        return;
    }
    let mut harness = Harness::new();
    let mut frame = request(v4(1), v4(2), pattern(77, 3));
    // Record-route option (7), 11 bytes, padded with end-of-options to 12.
    frame.ipv4_options = vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_single_exact(&harness.run(&frame.bytes()), &frame, Direction::Request);
}

#[test]
fn non_target_traffic_emits_nothing() {
    if !privileged("non_target_traffic_emits_nothing") {
        return;
    }
    let mut harness = Harness::new();
    let mut other_port = Frame::tcp(v4(1), v4(2), 40000, 9090);
    other_port.payload = pattern(100, 4);
    assert!(harness.run(&other_port.bytes()).is_empty());

    // UDP to the target port.
    let mut udp = request(v4(1), v4(2), pattern(10, 5)).bytes();
    udp[14 + 9] = 17;
    assert!(harness.run(&udp).is_empty());

    // ARP.
    let mut arp = vec![0u8; 42];
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert!(harness.run(&arp).is_empty());

    let counters = harness.counters();
    assert_eq!(counters.get(Counter::PacketsSeen), 3);
    assert_eq!(counters.get(Counter::PacketsMatched), 0);
    assert_eq!(counters.get(Counter::RecordsEmitted), 0);
}

#[test]
fn lifecycle_segments_without_payload_are_recorded() {
    if !privileged("lifecycle_segments_without_payload_are_recorded") {
        return;
    }
    let mut harness = Harness::new();
    for flags in [
        tcp_flags::SYN,
        tcp_flags::FIN | tcp_flags::ACK,
        tcp_flags::RST,
    ] {
        let mut frame = request(v4(1), v4(2), Vec::new());
        frame.flags = flags;
        let records = harness.run(&frame.bytes());
        assert_single_exact(&records, &frame, Direction::Request);
        assert!(records[0].segment.payload.is_empty());
    }
    // A pure ACK carries nothing userspace needs.
    let mut ack = request(v4(1), v4(2), Vec::new());
    ack.flags = tcp_flags::ACK;
    assert!(harness.run(&ack.bytes()).is_empty());
    assert_eq!(harness.counters().get(Counter::PacketsMatched), 4);
}

#[test]
fn one_byte_payload() {
    if !privileged("one_byte_payload") {
        return;
    }
    let mut harness = Harness::new();
    let frame = request(v4(1), v4(2), vec![b'G']);
    assert_single_exact(&harness.run(&frame.bytes()), &frame, Direction::Request);
}

#[test]
fn ethernet_padding_is_not_payload() {
    if !privileged("ethernet_padding_is_not_payload") {
        return;
    }
    let mut harness = Harness::new();
    let mut frame = request(v4(1), v4(2), b"abc".to_vec());
    frame.trailer = vec![0xee; 7];
    assert_single_exact(&harness.run(&frame.bytes()), &frame, Direction::Request);
}

#[test]
fn payload_spanning_several_chunks_is_byte_exact() {
    if !privileged("payload_spanning_several_chunks_is_byte_exact") {
        return;
    }
    let mut harness = Harness::new();
    for (frame, family) in [
        (request(v4(1), v4(2), pattern(3000, 7)), "IPv4"),
        (request(v6(1), v6(2), pattern(3200, 8)), "IPv6"),
    ] {
        let records = harness.run(&frame.bytes());
        assert_eq!(records.len(), 2, "{family}: 2048 + tail");
        assert_eq!(payload_of(&records), frame.payload, "{family}");
        for record in &records {
            assert_eq!(record.segment.segment_len as usize, frame.payload.len());
            assert_eq!(
                record.segment.seq,
                frame.seq.wrapping_add(record.segment.chunk_offset)
            );
        }
    }
    let counters = harness.counters();
    assert_eq!(counters.get(Counter::PayloadBytes), 6200);
    assert_eq!(counters.lost_bytes(), 0);
}

#[test]
fn records_use_the_smallest_size_class() {
    if !privileged("records_use_the_smallest_size_class") {
        return;
    }
    let mut harness = Harness::new();
    for (len, class) in [(1, 128), (128, 128), (200, 512), (1448, 2048), (2048, 2048)] {
        let frame = request(v4(1), v4(2), pattern(len, 9));
        let records = harness.run(&frame.bytes());
        assert_eq!(records.len(), 1, "{len} bytes");
        assert_eq!(
            records[0].reserved,
            SEGMENT_HEADER_LEN + class,
            "{len}-byte payload"
        );
    }
}

#[test]
fn ip_fragments_are_counted_not_recorded() {
    if !privileged("ip_fragments_are_counted_not_recorded") {
        return;
    }
    let mut harness = Harness::new();
    let mut bytes = request(v4(1), v4(2), pattern(40, 10)).bytes();
    // More-fragments flag set.
    bytes[14 + 6] = 0x20;
    assert!(harness.run(&bytes).is_empty());
    assert_eq!(harness.counters().get(Counter::IpFragments), 1);
}

#[test]
fn full_ring_buffer_is_counted() {
    if !privileged("full_ring_buffer_is_counted") {
        return;
    }
    // Smallest ring: one page. Without draining, a few 2 KiB records fill it.
    let page = 4096u32;
    let classifier = Classifier::load(&[TARGET], page).expect("load");
    let frame = request(v4(1), v4(2), pattern(2000, 11)).bytes();
    let program = classifier.program().expect("program");
    for _ in 0..4 {
        program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: 1,
                ..Default::default()
            })
            .expect("test run");
    }
    let counters = classifier.counters().expect("counters");
    assert!(counters.get(Counter::RingbufFull) >= 2, "{counters:?}");
    assert_eq!(
        counters.get(Counter::LostBytes),
        2000 * counters.get(Counter::RingbufFull)
    );
    assert_eq!(
        counters.get(Counter::RecordsEmitted) + counters.get(Counter::RingbufFull),
        4
    );
}

/// The address bytes the classifier hashes: IPv4 in the first four bytes, the rest zero.
fn hashed_address(addr: IpAddr) -> [u8; 16] {
    let mut bytes = [0; 16];
    match addr {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes = v6.octets(),
    }
    bytes
}

/// Runs a request and its response of the connection from `client_port`; returns whether each
/// was recorded.
fn exchange_recorded(harness: &mut Harness, client_port: u16) -> (bool, bool) {
    let mut request = Frame::tcp(v4(1), v4(2), client_port, TARGET);
    request.payload = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    let mut response = Frame::tcp(v4(2), v4(1), TARGET, client_port);
    response.payload = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
    (
        !harness.run(&request.bytes()).is_empty(),
        !harness.run(&response.bytes()).is_empty(),
    )
}

#[test]
fn connection_sampling_is_per_connection_and_survives_a_lower_rate() {
    if !privileged("connection_sampling_is_per_connection_and_survives_a_lower_rate") {
        return;
    }
    let mut harness = Harness::new();
    let point = |client_port: u16| {
        connection_sample_point(
            FAMILY_IPV4,
            &hashed_address(v4(1)),
            &hashed_address(v4(2)),
            client_port,
            TARGET,
        )
    };
    let set_rate = |harness: &mut Harness, ppm: u32| {
        harness
            .classifier
            .set_ports(&[TARGET], &[(TARGET, ppm)])
            .expect("set the rate");
    };
    let seen_first: Vec<u16> = (41_000..41_200).collect();
    let seen_later: Vec<u16> = (42_000..42_200).collect();

    // 30%: both directions of a connection follow its sample point.
    set_rate(&mut harness, 300_000);
    let mut kept = 0;
    for &port in &seen_first {
        let expected = point(port) < 300_000;
        assert_eq!(exchange_recorded(&mut harness, port), (expected, expected));
        kept += usize::from(expected);
    }
    assert!((30..=90).contains(&kept), "{kept} of 200 kept at 30%");
    let sampled_out = harness.counters().get(Counter::SampledOut);
    assert_eq!(sampled_out, 2 * (200 - kept as u64));

    // Lowered to 10%: the connections kept at 30% stay kept; new ones get the new rate.
    set_rate(&mut harness, 100_000);
    for &port in &seen_first {
        let expected = point(port) < 300_000;
        assert_eq!(exchange_recorded(&mut harness, port), (expected, expected));
    }
    let mut in_band = 0;
    for &port in &seen_later {
        let expected = point(port) < 100_000;
        assert_eq!(exchange_recorded(&mut harness, port), (expected, expected));
        in_band += usize::from((100_000..300_000).contains(&point(port)));
    }
    assert!(
        in_band > 0,
        "some new connections fall in the remembered band"
    );

    // Raised to 50%: connections it now selects are picked up.
    set_rate(&mut harness, 500_000);
    for &port in seen_first.iter().chain(&seen_later) {
        let expected = point(port) < 500_000;
        assert_eq!(exchange_recorded(&mut harness, port), (expected, expected));
    }
}

#[test]
fn a_shed_port_is_counted_not_recorded_and_keeps_its_sampling() {
    if !privileged("a_shed_port_is_counted_not_recorded_and_keeps_its_sampling") {
        return;
    }
    let mut harness = Harness::new();
    harness
        .classifier
        .set_ports(&[TARGET], &[(TARGET, 300_000)])
        .expect("set the rate");
    let kept: Vec<u16> = (43_000..43_400)
        .filter(|port| exchange_recorded(&mut harness, *port) == (true, true))
        .take(3)
        .collect();
    assert_eq!(kept.len(), 3, "30% keeps some of 400 connections");

    harness.classifier.set_shed(TARGET, true).expect("shed");
    for &port in &kept {
        assert_eq!(exchange_recorded(&mut harness, port), (false, false));
    }
    let counters = harness.counters();
    assert_eq!(counters.get(Counter::ShedPackets), 6);
    let request_len = b"GET / HTTP/1.1\r\n\r\n".len() as u64;
    let response_len = b"HTTP/1.1 204 No Content\r\n\r\n".len() as u64;
    assert_eq!(counters.get(Counter::ShedRequestBytes), 3 * request_len);
    assert_eq!(counters.get(Counter::ShedResponseBytes), 3 * response_len);
    // Shedding another port (not a target) makes nothing a target.
    harness
        .classifier
        .set_shed(TARGET + 1, true)
        .expect("no-op");
    let mut other = Frame::tcp(v4(1), v4(2), 43_000, TARGET + 1);
    other.payload = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    assert!(harness.run(&other.bytes()).is_empty());

    // Recording again: the same connections are kept, at the same rate.
    harness
        .classifier
        .set_shed(TARGET, false)
        .expect("record again");
    for &port in &kept {
        assert_eq!(exchange_recorded(&mut harness, port), (true, true));
    }
    assert_eq!(harness.counters().get(Counter::ShedPackets), 6);
}
