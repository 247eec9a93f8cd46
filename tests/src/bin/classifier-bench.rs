//! Classifier cost per packet, printed as a Markdown table (run by `cargo xtask bench`).
//!
//! Two methods, both with `kernel.bpf_stats_enabled=1`:
//! - crafted frames through `BPF_PROG_TEST_RUN` (repeat N): non-target, a target-port packet of
//!   a connection sampled out in the kernel, 100 B and 1.5 KiB target payloads; reported as the
//!   kernel's `run_time_ns / run_cnt`;
//! - real traffic through a veth pair between two namespaces (the classifier attached on the
//!   receiving side's ingress): a bulk TCP transfer in 64 KiB writes arrives as GSO/GRO segments of
//!   up to 64 KiB, and a transfer to a non-target port gives the real non-target cost; each
//!   figure is the median of three transfers (a new namespace pair each), with the range;
//! - a client's ordinary traffic through the same veth and hook, single segments and no GSO:
//!   request/response exchanges of 100 B each way with `TCP_NODELAY` ("small writes"), and a
//!   transfer in 1448 B writes with `TCP_NODELAY` and the client veth's `gso_max_segs` at 1
//!   (full 1.5 KiB frames), each on a non-target and on the target port, each with its own
//!   empty-program floor.
//!
//! Both also measure a target scoped by address (`addresses`): a packet to a listed address (in
//! scope, recorded) and one to an unlisted address on the target port (out of scope, counted,
//! not recorded). Up to `SCOPE_LIST_PREFIXES` (8) prefixes of a family sit in the port's list in
//! the classifier and cost a few compares: 1 entry, and 8 (a full list); 64 entries are
//! looked up in the trie, hosts next to the destination in its /24 (pod addresses of a node): the
//! deepest trie walk for that size. An empty list (a `pods` target before its first pod is known:
//! nothing recorded) ends at the list's length. Crafted frames also measure an IPv6 address out
//! of a full IPv6 list.
//!
//! The ring buffer is drained by a thread meanwhile, so the target figures include a successful
//! reserve/copy/submit, not the cheaper ring-full path (checked: the drop counter must stay 0).
//!
//! Each method also measures an empty program (`r0 = TCX_NEXT; exit`), whose figure is the
//! method's own floor: the test-run loop or the TCX dispatch, and bpf_stats' two clock reads per
//! run (a paravirtual clock on VMs). The table reports each figure with and without that floor.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, TestRun, TestRunOptions},
};
use mirror::{
    capture::{Classifier, KernelCounters},
    config::parse_address,
};
use mirror_common::{Counter, SAMPLE_SCALE, TCX_NEXT};
use mirror_tests::{
    frames::{Frame, pattern},
    netns::{SERVER_ADDR, topology},
};

const TARGET: u16 = 8080;
const OTHER: u16 = 9090;
const RING_BYTES: u32 = 64 << 20;
/// The program in [`empty_program_object`].
const EMPTY_PROGRAM: &str = "empty_tc";

struct StatsGuard(String);

impl StatsGuard {
    fn enable() -> Self {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(path).unwrap_or_else(|_| "0".into());
        std::fs::write(path, "1").expect("enable kernel.bpf_stats_enabled (needs root)");
        Self(old.trim().to_owned())
    }
}

impl Drop for StatsGuard {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// An ELF object holding one classifier, [`EMPTY_PROGRAM`], that returns `TCX_NEXT` at once. Built here
/// rather than in the eBPF crate: it is a measuring instrument, not part of the product.
fn empty_program_object() -> Vec<u8> {
    use object::{
        Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
        write::{Object, Symbol, SymbolSection},
    };
    let mut object = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let text = object.add_section(Vec::new(), b"classifier".to_vec(), SectionKind::Text);
    // `r0 = TCX_NEXT` (BPF_ALU64 | BPF_MOV | BPF_K, 32-bit immediate sign-extended), `exit`.
    let mut code = vec![0xb7, 0x00, 0x00, 0x00];
    code.extend_from_slice(&TCX_NEXT.to_le_bytes());
    code.extend_from_slice(&[0x95, 0, 0, 0, 0, 0, 0, 0]);
    object.append_section_data(text, &code, 8);
    object.add_symbol(Symbol {
        name: EMPTY_PROGRAM.as_bytes().to_vec(),
        value: 0,
        size: code.len() as u64,
        kind: SymbolKind::Text,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Section(text),
        flags: SymbolFlags::None,
    });
    let license = object.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
    object.append_section_data(license, b"GPL\0", 1);
    object.write().expect("write the empty program's object")
}

/// The program under measurement.
enum Subject {
    /// The classifier, its ring buffer drained on a thread until dropped.
    Classifier {
        classifier: Box<Classifier>,
        stop: Arc<AtomicBool>,
        drain: Option<std::thread::JoinHandle<()>>,
    },
    /// The empty program: the method's floor.
    Empty(Ebpf),
}

impl Subject {
    fn classifier(sample_ppm: u32) -> Self {
        Self::scoped(sample_ppm, None)
    }

    /// The classifier with [`TARGET`] scoped to `addresses` (`None`: every destination).
    fn scoped(sample_ppm: u32, addresses: Option<&[String]>) -> Self {
        let mut classifier = Classifier::load(&[TARGET], RING_BYTES).expect("load classifier");
        classifier
            .set_ports(&[TARGET], &[(TARGET, sample_ppm)])
            .expect("sampling rate");
        if let Some(addresses) = addresses {
            let nets: Vec<_> = addresses
                .iter()
                .map(|address| parse_address(address).expect("address"))
                .collect();
            classifier
                .set_scope(TARGET, Some(&nets))
                .expect("scope the target port");
        }
        let mut ring = classifier.take_ring().expect("ring");
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let drain = std::thread::spawn(move || {
            while !thread_stop.load(Ordering::Relaxed) {
                let mut any = false;
                while let Some(item) = ring.next() {
                    std::hint::black_box(item.len());
                    any = true;
                }
                if !any {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        });
        Self::Classifier {
            classifier: Box::new(classifier),
            stop,
            drain: Some(drain),
        }
    }

    fn empty() -> Self {
        let mut subject =
            Self::Empty(Ebpf::load(&empty_program_object()).expect("parse the empty program"));
        subject
            .program_mut()
            .load()
            .expect("load the empty program");
        subject
    }

    fn program_mut(&mut self) -> &mut SchedClassifier {
        match self {
            Self::Classifier { classifier, .. } => classifier.program_mut().expect("program"),
            Self::Empty(ebpf) => ebpf
                .program_mut(EMPTY_PROGRAM)
                .expect(EMPTY_PROGRAM)
                .try_into()
                .expect("a classifier"),
        }
    }

    /// (run_time_ns, run_cnt) so far.
    fn stats(&mut self) -> (u128, u64) {
        let info = self.program_mut().info().expect("info");
        (info.run_time().as_nanos(), info.run_count())
    }

    /// The classifier's counters; none for the empty program.
    fn counters(&self) -> Option<KernelCounters> {
        match self {
            Self::Classifier { classifier, .. } => Some(classifier.counters().expect("counters")),
            Self::Empty(_) => None,
        }
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        if let Self::Classifier { stop, drain, .. } = self {
            stop.store(true, Ordering::Relaxed);
            if let Some(drain) = drain.take() {
                let _ = drain.join();
            }
        }
    }
}

/// Runs `frame` through `subject` `repeat` times with `BPF_PROG_TEST_RUN`; returns ns per run
/// (bpf_stats) and the classifier's counters.
fn test_run_ns(mut subject: Subject, frame: &[u8], repeat: u32) -> (f64, Option<KernelCounters>) {
    let (time0, count0) = subject.stats();
    // In rounds, so the drain thread keeps the ring from filling.
    let rounds = 20;
    for _ in 0..rounds {
        subject
            .program_mut()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: repeat / rounds,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
    }
    let (time1, count1) = subject.stats();
    let per_packet = (time1 - time0) as f64 / (count1 - count0) as f64;
    (per_packet, subject.counters())
}

/// The client's traffic in a veth run.
#[derive(Clone, Copy)]
enum Traffic {
    /// A bulk transfer of this many bytes in 64 KiB writes: GSO segments of up to 64 KiB.
    Bulk(usize),
    /// This many request/response exchanges of [`EXCHANGE_BYTES`] each way with `TCP_NODELAY`:
    /// small single segments (and the client's ACKs) at the server's ingress.
    Exchanges(usize),
    /// This many bytes in writes of [`MSS_BYTES`] with `TCP_NODELAY`, the client veth's
    /// `gso_max_segs` set to 1 so that the stack sends every segment as its own packet: full
    /// 1.5 KiB frames, none GSO.
    MssWrites(usize),
}

/// Payload of each request and each response of [`Traffic::Exchanges`].
const EXCHANGE_BYTES: usize = 100;
/// TCP payload of a full segment on a 1500-byte MTU with timestamps.
const MSS_BYTES: usize = 1448;

/// Runs `traffic` from the client namespace to `port` in the server namespace, the subject
/// `make` returns attached to the server veth's ingress. Returns ns per packet, average payload
/// bytes per matched packet, and the classifier's counters.
fn real_traffic(
    make: impl FnOnce() -> Subject + Send + 'static,
    port: u16,
    traffic: Traffic,
) -> (f64, f64, Option<KernelCounters>) {
    let topology = topology();
    if let Traffic::MssWrites(_) = traffic {
        topology
            .client
            .ip(&[
                "link",
                "set",
                "dev",
                &topology.client_if,
                "gso_max_segs",
                "1",
            ])
            .expect("gso_max_segs 1 on the client veth");
    }
    let server_if = topology.server_if.clone();
    let (loaded_tx, loaded_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let server = topology.server.spawn(move || {
        let mut subject = make();
        subject
            .program_mut()
            .attach(&server_if, TcAttachType::Ingress)
            .expect("attach ingress");
        let listener = TcpListener::bind((SERVER_ADDR, port)).expect("bind");
        loaded_tx.send(()).expect("signal");
        let (mut stream, _) = listener.accept().expect("accept");
        let before = subject.stats();
        if let Traffic::Exchanges(_) = traffic {
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let response = pattern(EXCHANGE_BYTES, 3);
            let mut request = [0u8; EXCHANGE_BYTES];
            while stream.read_exact(&mut request).is_ok() {
                stream.write_all(&response).expect("respond");
            }
        } else {
            let mut buffer = vec![0u8; 1 << 20];
            while stream.read(&mut buffer).expect("read") > 0 {}
        }
        let after = subject.stats();
        let _ = done_rx.recv_timeout(Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(200));
        (before, after, subject.counters())
    });
    loaded_rx.recv().expect("server ready");
    let client = topology.client.spawn(move || {
        let mut stream = TcpStream::connect((SERVER_ADDR, port)).expect("connect");
        let (chunk, total) = match traffic {
            Traffic::Bulk(total) => (pattern(64 * 1024, 1), total),
            Traffic::MssWrites(total) => (pattern(MSS_BYTES, 1), total),
            Traffic::Exchanges(count) => {
                stream.set_nodelay(true).expect("TCP_NODELAY");
                let request = pattern(EXCHANGE_BYTES, 1);
                let mut response = [0u8; EXCHANGE_BYTES];
                for _ in 0..count {
                    stream.write_all(&request).expect("request");
                    stream.read_exact(&mut response).expect("response");
                }
                return;
            }
        };
        if let Traffic::MssWrites(_) = traffic {
            stream.set_nodelay(true).expect("TCP_NODELAY");
        }
        let mut sent = 0;
        while sent < total {
            stream.write_all(&chunk).expect("write");
            sent += chunk.len();
        }
    });
    client.join().expect("client").expect("client namespace");
    let _ = done_tx.send(());
    let ((time0, count0), (time1, count1), counters) =
        server.join().expect("server").expect("server namespace");
    let per_packet = (time1 - time0) as f64 / (count1 - count0).max(1) as f64;
    let bytes_per_packet = counters.as_ref().map_or(0.0, |counters| {
        counters.get(Counter::PayloadBytes) as f64
            / counters.get(Counter::PacketsMatched).max(1) as f64
    });
    (per_packet, bytes_per_packet, counters)
}

/// [`real_traffic`] three times (a new namespace pair each): the median ns per packet, the
/// range, and the median run's payload per packet. `check` sees each run's counters.
fn real_traffic_median<F>(
    make: F,
    port: u16,
    traffic: Traffic,
    check: impl Fn(Option<&KernelCounters>),
) -> (f64, String, f64)
where
    F: FnOnce() -> Subject + Send + Clone + 'static,
{
    let mut runs: Vec<(f64, f64)> = (0..3)
        .map(|_| {
            let (ns, payload_bytes, counters) = real_traffic(make.clone(), port, traffic);
            check(counters.as_ref());
            (ns, payload_bytes)
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    (
        runs[1].0,
        format!("{:.0}-{:.0}", runs[0].0, runs[2].0),
        runs[1].1,
    )
}

fn assert_no_loss(label: &str, counters: Option<&KernelCounters>) {
    if let Some(counters) = counters {
        assert_eq!(
            counters.lost_records() + counters.lost_bytes(),
            0,
            "{label}: the ring buffer dropped data, the figure would be wrong: {counters:?}"
        );
    }
}

/// Checks that a scoped run measured what its label says: every target-port packet in scope
/// (matched, none counted `other_address`) or every one out of scope (none matched).
fn assert_scope(label: &str, in_scope: bool, counters: Option<&KernelCounters>) {
    let counters = counters.expect("the classifier's counters");
    let (matched, other) = (
        counters.get(Counter::PacketsMatched),
        counters.get(Counter::OtherAddress),
    );
    let ok = if in_scope {
        matched > 0 && other == 0
    } else {
        matched == 0 && other > 0
    };
    assert!(ok, "{label}: matched {matched}, other_address {other}");
}

/// Scope lists of `len` entries: hosts of [`SERVER_ADDR`]'s /24 from .3 up, with
/// [`SERVER_ADDR`] itself first when `with_destination` (in scope) and not at all otherwise.
fn scope_list(len: usize, with_destination: bool) -> Vec<String> {
    let destination = with_destination.then(|| SERVER_ADDR.to_owned());
    destination
        .into_iter()
        .chain((3..).map(|host| format!("198.18.0.{host}")))
        .take(len)
        .collect()
}

/// [`scope_list`] in IPv6: hosts of [`SERVER_V6`]'s /64 from ::3 up.
fn scope_list_v6(len: usize, with_destination: bool) -> Vec<String> {
    let destination = with_destination.then(|| SERVER_V6.to_owned());
    destination
        .into_iter()
        .chain((3..).map(|host| format!("2001:2::{host:x}")))
        .take(len)
        .collect()
}

/// Client and server of the IPv6 crafted frames (2001:2::/48 is reserved for benchmarking).
const CLIENT_V6: &str = "2001:2::1";
const SERVER_V6: &str = "2001:2::2";

/// One row of the table.
struct Row {
    label: &'static str,
    method: &'static str,
    ns: f64,
    range: String,
    /// `ns` less the empty program's figure by the same method.
    without_floor: Option<f64>,
    payload_bytes: f64,
}

const TEST_RUN: &str = "BPF_PROG_TEST_RUN";
const VETH: &str = "veth, bpf_stats";
const VETH_SMALL: &str = "veth, bpf_stats, small writes";
const VETH_MSS: &str = "veth, bpf_stats, 1448 B writes";
/// The bulk transfer of the GSO rows.
const BULK: Traffic = Traffic::Bulk(256 << 20);
/// Exchanges of the small-writes rows: about 40,000 packets at the server's ingress.
const EXCHANGES: Traffic = Traffic::Exchanges(20_000);
/// The transfer of the 1448 B rows: about 46,000 packets.
const MSS_WRITES: Traffic = Traffic::MssWrites(64 << 20);

/// Rows of a client's ordinary traffic through the veth: single segments, no GSO, each method
/// with its own floor.
fn client_traffic_rows(rows: &mut Vec<Row>) {
    for (method, traffic, rows_of) in [
        (
            VETH_SMALL,
            EXCHANGES,
            [
                ("empty program (100 B exchanges, the method's floor)", None),
                ("non-target TCP packet (100 B exchanges)", Some(OTHER)),
                ("target, 100 B exchanges", Some(TARGET)),
            ],
        ),
        (
            VETH_MSS,
            MSS_WRITES,
            [
                ("empty program (1448 B writes, the method's floor)", None),
                ("non-target TCP packet (1448 B writes)", Some(OTHER)),
                ("target, 1448 B writes (1.5 KiB frames)", Some(TARGET)),
            ],
        ),
    ] {
        let mut floor = 0.0;
        for (label, port) in rows_of {
            let Some(port) = port else {
                let (ns, range, _) = real_traffic_median(Subject::empty, OTHER, traffic, |_| {});
                floor = ns;
                rows.push(Row {
                    label,
                    method,
                    ns,
                    range,
                    without_floor: None,
                    payload_bytes: 0.0,
                });
                continue;
            };
            let (ns, range, payload_bytes) = real_traffic_median(
                || Subject::classifier(SAMPLE_SCALE),
                port,
                traffic,
                |counters| assert_no_loss(label, counters),
            );
            rows.push(Row {
                label,
                method,
                ns,
                range,
                without_floor: Some(ns - floor),
                payload_bytes,
            });
        }
    }
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "classifier-bench needs root (BPF, network namespaces)"
    );
    let _stats = StatsGuard::enable();
    let src = "198.18.0.1".parse().unwrap();
    let dst = "198.18.0.2".parse().unwrap();

    // Three loads of the program per frame; the median is reported with the range, since single
    // runs spread by about +-5% here.
    let median_of_three = |make: &dyn Fn() -> Subject, frame: &[u8], repeat: u32| {
        let mut runs: Vec<f64> = (0..3)
            .map(|_| {
                let (ns, counters) = test_run_ns(make(), frame, repeat);
                assert_no_loss("test_run", counters.as_ref());
                ns
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        (runs[1], format!("{:.0}-{:.0}", runs[0], runs[2]))
    };
    let frame = |port: u16, len: usize| {
        let mut frame = Frame::tcp(src, dst, 40000, port);
        frame.payload = pattern(len, 2);
        frame.bytes()
    };
    let mut rows = Vec::new();
    let (floor, range) = median_of_three(&Subject::empty, &frame(TARGET, 100), 2_000_000);
    rows.push(Row {
        label: "empty program (the method's floor)",
        method: TEST_RUN,
        ns: floor,
        range,
        without_floor: None,
        payload_bytes: 100.0,
    });
    let crafted: [(&str, u16, usize, u32, u32); 4] = [
        ("non-target TCP packet", OTHER, 100, SAMPLE_SCALE, 2_000_000),
        // What every packet of an unsampled connection costs with `sample_by = "connection"`.
        (
            "target, connection sampled out in the kernel",
            TARGET,
            100,
            0,
            2_000_000,
        ),
        ("target, 100 B payload", TARGET, 100, SAMPLE_SCALE, 400_000),
        (
            "target, 1448 B payload (1.5 KiB frame)",
            TARGET,
            1448,
            SAMPLE_SCALE,
            400_000,
        ),
    ];
    for (label, port, len, sample_ppm, repeat) in crafted {
        let (ns, range) = median_of_three(
            &|| Subject::classifier(sample_ppm),
            &frame(port, len),
            repeat,
        );
        rows.push(Row {
            label,
            method: TEST_RUN,
            ns,
            range,
            without_floor: Some(ns - floor),
            payload_bytes: len as f64,
        });
    }

    let frame_v6 = |port: u16, len: usize| {
        let mut frame = Frame::tcp(
            CLIENT_V6.parse().unwrap(),
            SERVER_V6.parse().unwrap(),
            40000,
            port,
        );
        frame.payload = pattern(len, 2);
        frame.bytes()
    };
    for (label, len, in_scope, ipv6) in [
        (
            "target scoped to 1 address (list), in scope, 100 B payload",
            1,
            true,
            false,
        ),
        (
            "target scoped to 64 addresses (trie), in scope, 100 B payload",
            64,
            true,
            false,
        ),
        ("target port, empty scope (0 listed)", 0, false, false),
        (
            "target port, address out of scope (1 listed)",
            1,
            false,
            false,
        ),
        (
            "target port, address out of scope (8 listed: a full list)",
            8,
            false,
            false,
        ),
        (
            "target port, IPv6 address out of scope (8 listed: a full list)",
            8,
            false,
            true,
        ),
        (
            "target port, address out of scope (64 listed: trie)",
            64,
            false,
            false,
        ),
    ] {
        let payload = 100;
        let (list, frame) = if ipv6 {
            (scope_list_v6(len, in_scope), frame_v6(TARGET, payload))
        } else {
            (scope_list(len, in_scope), frame(TARGET, payload))
        };
        let repeat = if in_scope { 400_000 } else { 2_000_000 };
        let make = || Subject::scoped(SAMPLE_SCALE, Some(&list));
        let (_, counters) = test_run_ns(make(), &frame, 1000);
        assert_scope(label, in_scope, counters.as_ref());
        let (ns, range) = median_of_three(&make, &frame, repeat);
        rows.push(Row {
            label,
            method: TEST_RUN,
            ns,
            range,
            without_floor: Some(ns - floor),
            payload_bytes: payload as f64,
        });
    }

    let (floor, range, _) = real_traffic_median(Subject::empty, OTHER, BULK, |_| {});
    rows.push(Row {
        label: "empty program (GSO bulk, the method's floor)",
        method: VETH,
        ns: floor,
        range,
        without_floor: None,
        payload_bytes: 0.0,
    });
    for (label, port) in [
        ("non-target TCP packet (GSO bulk)", OTHER),
        ("target, 64 KiB GSO segments", TARGET),
    ] {
        let (ns, range, payload_bytes) = real_traffic_median(
            || Subject::classifier(SAMPLE_SCALE),
            port,
            BULK,
            |counters| assert_no_loss(label, counters),
        );
        rows.push(Row {
            label,
            method: VETH,
            ns,
            range,
            without_floor: Some(ns - floor),
            payload_bytes,
        });
    }
    for (label, len, in_scope) in [
        (
            "target scoped to 1 address (list), in scope, 64 KiB GSO segments",
            1,
            true,
        ),
        (
            "target scoped to 64 addresses (trie), in scope, 64 KiB GSO segments",
            64,
            true,
        ),
        ("target port, empty scope (0 listed, GSO bulk)", 0, false),
        (
            "target port, address out of scope (1 listed, GSO bulk)",
            1,
            false,
        ),
        (
            "target port, address out of scope (8 listed: a full list, GSO bulk)",
            8,
            false,
        ),
        (
            "target port, address out of scope (64 listed: trie, GSO bulk)",
            64,
            false,
        ),
    ] {
        let list = scope_list(len, in_scope);
        let (ns, range, payload_bytes) = real_traffic_median(
            move || Subject::scoped(SAMPLE_SCALE, Some(&list)),
            TARGET,
            BULK,
            |counters| {
                assert_no_loss(label, counters);
                assert_scope(label, in_scope, counters);
            },
        );
        rows.push(Row {
            label,
            method: VETH,
            ns,
            range,
            without_floor: Some(ns - floor),
            payload_bytes,
        });
    }

    client_traffic_rows(&mut rows);

    print_table(rows);
}

fn print_table(rows: Vec<Row>) {
    println!(
        "| packet | method | ns/packet (median of 3) | range | ns less the empty program | avg payload B/packet |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for row in rows {
        let without_floor = row
            .without_floor
            .map_or_else(|| "-".to_owned(), |ns| format!("{ns:.0}"));
        println!(
            "| {} | {} | {:.0} | {} | {without_floor} | {:.0} |",
            row.label, row.method, row.ns, row.range, row.payload_bytes
        );
    }
}
