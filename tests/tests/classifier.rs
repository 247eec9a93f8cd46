//! The classifier, run by the kernel on crafted frames through `BPF_PROG_TEST_RUN`: records must be
//! byte-exact against the frame, and every path must return `TCX_NEXT`.

use std::net::IpAddr;

use aya::{
    maps::{
        Array, Map, MapData, MapInfo, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{TestRun, TestRunOptions},
};
use bytes::Bytes;
use mirror::{
    capture::{Classifier, KernelCounters},
    config::parse_address,
    segment::{self, Direction, Segment},
};
use mirror_common::{
    Counter, FAMILY_IPV4, SCOPE_IN_TRIE, SCOPE_LIST_PREFIXES, SCOPE_LIST_SLOTS, SCOPE_LISTS_MAP,
    SCOPE_NO_LIST, SCOPE_PORT_BITS, SCOPE_V4_MAP, SEGMENT_HEADER_LEN, ScopeList, TARGET_PORTS_MAP,
    TCX_NEXT, TargetPort, connection_sample_point, scope_key_v4, tcp_flags,
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

// ---------------------------------------------------------------------------------------------
// Scopes: the server address of a scoped port's packets, in the port's list or in the trie
// ---------------------------------------------------------------------------------------------

/// A map of the loaded classifier, opened again by name through the kernel (the classifier
/// keeps its own handles private): lets a test read which list a port uses and tamper with a
/// trie to prove which of the two decided.
fn kernel_map(classifier: &Classifier, name: &str) -> Map {
    let info = classifier.program().expect("program").info().expect("info");
    for id in info.map_ids().expect("map ids").expect("map ids supported") {
        if MapInfo::from_id(id).expect("map info").name_as_str() == Some(name) {
            let data = MapData::from_id(id).expect("open map");
            return match name {
                "SCOPE_V4" | "SCOPE_V6" => Map::LpmTrie(data),
                _ => Map::Array(data),
            };
        }
    }
    panic!("the classifier has no map {name}");
}

/// The [`ScopeList`] the classifier reads for [`TARGET`], `None` when the port has none.
fn list_in_use(classifier: &Classifier) -> (TargetPort, Option<ScopeList>) {
    let ports: Array<MapData, TargetPort> =
        Array::try_from(kernel_map(classifier, TARGET_PORTS_MAP)).expect("ports");
    let port = ports.get(&u32::from(TARGET), 0).expect("port entry");
    let lists: Array<MapData, ScopeList> =
        Array::try_from(kernel_map(classifier, SCOPE_LISTS_MAP)).expect("lists");
    let list = (port.scope_list != SCOPE_NO_LIST)
        .then(|| lists.get(&port.scope_list, 0).expect("list entry"));
    (port, list)
}

fn scope(harness: &mut Harness, nets: Option<&[&str]>) {
    let nets: Option<Vec<_>> = nets.map(|nets| {
        nets.iter()
            .map(|net| parse_address(net).expect("address"))
            .collect()
    });
    harness
        .classifier
        .set_scope(TARGET, nets.as_deref())
        .expect("scope the target port");
}

/// Whether a request to `server` (from a client outside every scope) and its response (from
/// `server`) are recorded. Both must agree: the server address is the destination of one and
/// the source of the other.
fn server_recorded(harness: &mut Harness, server: &str) -> bool {
    let server: IpAddr = server.parse().expect("address");
    let client: IpAddr = match server {
        IpAddr::V4(_) => "203.0.113.250".parse().unwrap(),
        IpAddr::V6(_) => "2001:db8:ffff:ffff::fa".parse().unwrap(),
    };
    let before = harness.counters().get(Counter::OtherAddress);
    let request = !harness
        .run(&request(client, server, b"GET / HTTP/1.1\r\n\r\n".to_vec()).bytes())
        .is_empty();
    let mut answer = Frame::tcp(server, client, TARGET, 40000);
    answer.payload = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
    let response = !harness.run(&answer.bytes()).is_empty();
    assert_eq!(request, response, "{server}: request and response disagree");
    let counted = harness.counters().get(Counter::OtherAddress) - before;
    assert_eq!(
        counted,
        if request { 0 } else { 2 },
        "{server}: other_address"
    );
    request
}

/// Asserts each address of `inside` is recorded and each of `outside` is not.
fn assert_scope(harness: &mut Harness, inside: &[&str], outside: &[&str], what: &str) {
    for address in inside {
        assert!(
            server_recorded(harness, address),
            "{what}: {address} in scope"
        );
    }
    for address in outside {
        assert!(
            !server_recorded(harness, address),
            "{what}: {address} out of scope"
        );
    }
}

/// `count` IPv4 hosts and `count` IPv6 hosts that no check uses, to push a family's list past
/// the inline length.
fn filler(count: usize) -> Vec<String> {
    (1..=count)
        .flat_map(|host| {
            [
                format!("192.0.2.{host}"),
                format!("2001:db8:eeee::{host:x}"),
            ]
        })
        .collect()
}

#[test]
fn scope_prefixes_of_each_length_place_the_server_address_in_the_list_and_in_the_trie() {
    if !privileged(
        "scope_prefixes_of_each_length_place_the_server_address_in_the_list_and_in_the_trie",
    ) {
        return;
    }
    let mut harness = Harness::new();
    let prefixes = [
        "10.0.0.0/8",
        "172.20.7.0/24",
        "198.18.0.2/32",
        "2001:db8:1:2::/64",
        "2001:db8::2/128",
    ];
    let inside = [
        "10.0.0.1",
        "10.255.255.254",
        "172.20.7.0",
        "172.20.7.255",
        "198.18.0.2",
        "2001:db8:1:2::1",
        "2001:db8:1:2:ffff:ffff:ffff:ffff",
        "2001:db8::2",
    ];
    let outside = [
        "11.0.0.1",
        "9.255.255.255",
        "172.20.8.1",
        "172.20.6.255",
        "198.18.0.3",
        "198.18.0.1",
        "2001:db8:1:3::1",
        "2001:db8:1:1:ffff:ffff:ffff:ffff",
        "2001:db8::3",
        "2001:db8::1",
        // The same bits in the other family.
        "::ffff:10.0.0.1",
    ];
    for (padding, in_trie) in [(0, false), (SCOPE_LIST_PREFIXES, true)] {
        let filler = filler(padding);
        let nets: Vec<&str> = prefixes
            .iter()
            .copied()
            .chain(filler.iter().map(String::as_str))
            .collect();
        scope(&mut harness, Some(&nets));
        let (_, list) = list_in_use(&harness.classifier);
        let list = list.expect("a list");
        let lengths = if in_trie {
            (SCOPE_IN_TRIE, SCOPE_IN_TRIE)
        } else {
            (3, 2)
        };
        assert_eq!((list.v4_len, list.v6_len), lengths);
        let what = if in_trie { "trie" } else { "list" };
        assert_scope(&mut harness, &inside, &outside, what);
    }
    // /0: every address of its family, none of the other (an IPv4-mapped IPv6 address is
    // IPv6).
    scope(&mut harness, Some(&["0.0.0.0/0"]));
    assert_scope(
        &mut harness,
        &["203.0.113.7", "198.18.0.3"],
        &["2001:db8:abcd::7", "::ffff:10.0.0.1"],
        "0.0.0.0/0",
    );
    scope(&mut harness, Some(&["::/0"]));
    assert_scope(
        &mut harness,
        &["2001:db8:abcd::7", "::ffff:10.0.0.1"],
        &["203.0.113.7", "198.18.0.3"],
        "::/0",
    );
}

#[test]
fn a_list_of_the_inline_length_is_read_inline_and_one_more_goes_to_the_trie() {
    if !privileged("a_list_of_the_inline_length_is_read_inline_and_one_more_goes_to_the_trie") {
        return;
    }
    let mut harness = Harness::new();
    let hosts: Vec<String> = (1..=SCOPE_LIST_PREFIXES + 1)
        .map(|host| format!("198.18.1.{host}"))
        .collect();
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let outside = ["198.18.1.100", "198.18.2.1"];
    let key = |host: &str| {
        let octets = host.parse::<std::net::Ipv4Addr>().unwrap().octets();
        Key::new(SCOPE_PORT_BITS + 32, scope_key_v4(TARGET, octets))
    };
    for len in [SCOPE_LIST_PREFIXES, SCOPE_LIST_PREFIXES + 1] {
        let listed = &hosts[..len];
        scope(&mut harness, Some(listed));
        let (_, list) = list_in_use(&harness.classifier);
        let inline = len <= SCOPE_LIST_PREFIXES;
        let expected_len = if inline { len as u32 } else { SCOPE_IN_TRIE };
        assert_eq!(list.expect("a list").v4_len, expected_len, "{len} hosts");
        assert_scope(&mut harness, listed, &outside, &format!("{len} hosts"));

        // Take the last host out of the trie behind the daemon's back: only a port whose list
        // is in the trie loses it, so this tells which of the two decided.
        let mut trie: LpmTrie<MapData, [u8; 6], u8> =
            LpmTrie::try_from(kernel_map(&harness.classifier, SCOPE_V4_MAP)).expect("trie");
        let last = listed[len - 1];
        trie.remove(&key(last)).expect("remove from the trie");
        assert_eq!(
            server_recorded(&mut harness, last),
            inline,
            "{len} hosts: {last} out of the trie only"
        );
        trie.insert(&key(last), 1, 0).expect("put it back");
    }
}

#[test]
fn reloads_grow_and_shrink_the_list_and_flip_one_bit_of_its_index() {
    if !privileged("reloads_grow_and_shrink_the_list_and_flip_one_bit_of_its_index") {
        return;
    }
    let mut harness = Harness::new();
    let candidates: Vec<String> = (1..=12)
        .flat_map(|host| [format!("198.18.3.{host}"), format!("2001:db8:3::{host:x}")])
        .collect();
    let set = |hosts: std::ops::RangeInclusive<usize>| -> Vec<String> {
        hosts
            .flat_map(|host| [format!("198.18.3.{host}"), format!("2001:db8:3::{host:x}")])
            .collect()
    };
    let steps: [(&str, Option<Vec<String>>); 9] = [
        ("one", Some(set(1..=1))),
        ("grown to three", Some(set(1..=3))),
        ("moved", Some(set(3..=3))),
        ("grown past the list", Some(set(2..=11))),
        ("shrunk into the list", Some(set(4..=5))),
        ("full list", Some(set(5..=12))),
        ("empty: nothing recorded", Some(Vec::new())),
        ("unscoped: everything recorded", None),
        ("scoped again", Some(set(7..=7))),
    ];
    let mut previous_index: Option<u32> = None;
    for (what, nets) in steps {
        let borrowed: Option<Vec<&str>> = nets
            .as_ref()
            .map(|nets| nets.iter().map(String::as_str).collect());
        scope(&mut harness, borrowed.as_deref());
        let (port, list) = list_in_use(&harness.classifier);
        assert_eq!(port.scoped != 0, nets.is_some(), "{what}");
        if nets.is_some() {
            let list = list.expect("a list");
            let per_family = nets.as_ref().map_or(0, |nets| nets.len() / 2);
            let expected = if per_family <= SCOPE_LIST_PREFIXES {
                per_family as u32
            } else {
                SCOPE_IN_TRIE
            };
            assert_eq!((list.v4_len, list.v6_len), (expected, expected), "{what}");
            if let Some(previous) = previous_index {
                assert_eq!(
                    port.scope_list ^ previous,
                    1,
                    "{what}: the other entry of the pair"
                );
            }
            previous_index = Some(port.scope_list);
        } else {
            previous_index = None;
        }
        let (inside, outside): (Vec<&str>, Vec<&str>) =
            candidates.iter().map(String::as_str).partition(|address| {
                nets.as_ref()
                    .is_none_or(|nets| nets.iter().any(|net| net == address))
            });
        assert_scope(&mut harness, &inside, &outside, what);
    }
}

#[test]
fn ports_scoped_beyond_the_lists_use_the_trie_and_take_a_freed_list() {
    if !privileged("ports_scoped_beyond_the_lists_use_the_trie_and_take_a_freed_list") {
        return;
    }
    let mut harness = Harness::new();
    let pairs = SCOPE_LIST_SLOTS as u16 / 2;
    // Other ports take every pair of lists first.
    for port in 1..=pairs {
        let net = parse_address("198.18.9.9").unwrap();
        harness
            .classifier
            .set_scope(TARGET + port, Some(&[net]))
            .expect("scope another port");
    }
    scope(&mut harness, Some(&["198.18.4.1", "2001:db8:4::1"]));
    let (port, _) = list_in_use(&harness.classifier);
    assert_eq!(port.scope_list, SCOPE_NO_LIST);
    assert_scope(
        &mut harness,
        &["198.18.4.1", "2001:db8:4::1"],
        &["198.18.4.2", "2001:db8:4::2", "198.18.9.9"],
        "no list",
    );
    // A port unscoped frees its pair; the next change of ours takes it.
    harness
        .classifier
        .set_scope(TARGET + 1, None)
        .expect("unscope");
    scope(&mut harness, Some(&["198.18.4.2"]));
    let (port, list) = list_in_use(&harness.classifier);
    assert_ne!(port.scope_list, SCOPE_NO_LIST);
    assert_eq!(list.expect("a list").v4_len, 1);
    assert_scope(
        &mut harness,
        &["198.18.4.2"],
        &["198.18.4.1", "2001:db8:4::1"],
        "freed list",
    );
}
