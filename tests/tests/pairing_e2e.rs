//! No wrong pair: `mirror run` compares the shadow's responses with the primary's only for pairs
//! that byte positions prove. Primary and shadow serve identical content, so any status or body
//! mismatch reported is a request paired with another request's response. The traffic is what
//! breaks naive pairing: keep-alive clients pipelining bursts of requests whose answers all
//! differ in size, a daemon that joins their connections mid-stream, and a ring buffer so small
//! that captured records are dropped (gaps).
//!
//! Typical run (debug daemon, two shared cores): about 16,000 requests sent, 11,600 framed and
//! replayed, 8,000-9,000 records dropped (ringbuf_full), 7,000 primary responses of which
//! 1,300-1,600 paired and compared, the rest unpaired (gap about 4,000, joined 1,400, order
//! 200-400), no mismatch. With the desync ignored (pairing by count after gaps and joins), the same run
//! reports about 900 status and 3,900 body mismatches.

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use mirror_tests::{daemon::Metrics, mirroring::*, netns::SERVER_ADDR, privileged};

/// Client connections at any time.
const CLIENTS: usize = 8;
/// How long the clients send.
const TRAFFIC: Duration = Duration::from_secs(12);
/// When the daemon starts, after the clients did: their first connections are joined.
const DAEMON_AFTER: Duration = Duration::from_millis(1500);
/// The classifier's ring (the smallest the configuration accepts is 4096): 16 KiB holds eight
/// full 2 KiB chunks, far less than the traffic puts in it between two reads of the daemon, yet
/// enough that connections without a loss from their start remain (pairs to compare).
const RING_BUFFER_BYTES: u32 = 16384;

/// xorshift64: a deterministic sequence per client.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// A request and the answer the recording server gives it: (target, status, body bytes): 12%
/// `/empty` (204), 0.5% `/size/N` of 60 to 120 KB (bursts the ring cannot hold), the rest
/// `/size/N` under 3000 bytes. Every `/size/N` answer has its own length (and N deterministic
/// bytes), so a response paired with a neighbour's request differs in body, and a 204 paired
/// with a 200 in status.
fn pick(random: &mut Random) -> (String, u16, usize) {
    let roll = random.below(1000);
    if roll < 120 {
        ("/empty".to_owned(), 204, 0)
    } else if roll < 125 {
        let size = 60_000 + random.below(60_000) as usize;
        (format!("/size/{size}"), 200, size)
    } else {
        let size = random.below(3000) as usize;
        (format!("/size/{size}"), 200, size)
    }
}

/// Reads one response: (status, body length).
fn read_answer(reader: &mut BufReader<TcpStream>) -> (u16, usize) {
    let mut status = None;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read response head");
        if status.is_none() {
            status = line
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok());
        } else if let Some(value) = line.strip_prefix("Content-Length: ") {
            length = value.trim().parse().expect("content length");
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("read body");
    (status.expect("status line"), length)
}

/// One client until `end`: keep-alive connections, each carrying bursts of 1 to 16 pipelined
/// GETs (one write per burst). A burst is often written before the answers to the previous
/// ones are all read, so requests and responses overlap on the wire (order alone, or what the
/// server acknowledged, cannot tell which request an answer is for). The first connection
/// lives past the daemon's start (joined mid-stream); later ones last 20 to 320 ms, so new
/// connections keep starting in sync. Returns the requests sent; every primary answer is
/// checked.
fn client(id: usize, daemon_up: &OnceLock<Instant>, end: Instant) -> usize {
    let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1).wrapping_mul(0x2545_f491));
    let mut sent = 0;
    // The first connection: until a moment after the daemon is up.
    let joined_for = Duration::from_millis(200 + random.below(1300));
    let mut until = end;
    let mut first = true;
    while Instant::now() < end {
        let stream = TcpStream::connect((SERVER_ADDR, PORT)).expect("connect to primary");
        stream.set_nodelay(true).expect("nodelay");
        let mut writer = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        let mut outstanding = VecDeque::new();
        loop {
            if first && let Some(up) = daemon_up.get() {
                until = *up + joined_for;
            }
            if Instant::now() >= until.min(end) {
                break;
            }
            let burst: Vec<_> = (0..1 + random.below(16))
                .map(|_| pick(&mut random))
                .collect();
            let bytes: String = burst
                .iter()
                .map(|(target, _, _)| {
                    format!("GET {target} HTTP/1.1\r\nHost: search.prod:8080\r\n\r\n")
                })
                .collect();
            writer.write_all(bytes.as_bytes()).expect("write burst");
            sent += burst.len();
            outstanding.extend(burst);
            // Read all the answers, or leave some (at most 16) for after the next burst.
            let leave = if random.below(2) == 0 {
                0
            } else {
                random.below(outstanding.len() as u64 + 1).min(16) as usize
            };
            while outstanding.len() > leave {
                expect_answer(&mut reader, &mut outstanding);
            }
            std::thread::sleep(Duration::from_millis(20 + random.below(40)));
        }
        while !outstanding.is_empty() {
            expect_answer(&mut reader, &mut outstanding);
        }
        first = false;
        until = Instant::now() + Duration::from_millis(20 + random.below(300));
    }
    sent
}

/// Reads the answer to the oldest outstanding request and checks it.
fn expect_answer(
    reader: &mut BufReader<TcpStream>,
    outstanding: &mut VecDeque<(String, u16, usize)>,
) {
    let (target, status, length) = outstanding.pop_front().expect("an outstanding request");
    assert_eq!(
        read_answer(reader),
        (status, length),
        "the primary's answer to {target}"
    );
}

fn print_family(metrics: &Metrics, name: &str, label: &str) {
    let parts: Vec<String> = metrics
        .by_label(name, label)
        .iter()
        .map(|(value, count)| format!("{value}={count}"))
        .collect();
    eprintln!("  {name}: {}", parts.join(" "));
}

#[test]
fn no_wrong_pair_under_pipelining_joins_and_ring_overflow() {
    if !privileged("no_wrong_pair_under_pipelining_joins_and_ring_overflow") {
        return;
    }
    let setup = setup();
    let config = ConfigFile::write(
        &setup,
        &format!("ring_buffer_bytes = {RING_BUFFER_BYTES}\n"),
        "sample_percent = 100.0\ncompare_responses = true\n",
    );
    let start = Instant::now();
    let end = start + TRAFFIC;
    let daemon_up = Arc::new(OnceLock::new());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            setup.topology.client.spawn({
                let daemon_up = Arc::clone(&daemon_up);
                move || client(id, &daemon_up, end)
            })
        })
        .collect();
    std::thread::sleep(DAEMON_AFTER);
    let daemon = config.start(&setup);
    daemon_up.set(Instant::now()).expect("set once");
    let sent: usize = clients
        .into_iter()
        .map(|client| {
            client
                .join()
                .expect("client: every primary answer as expected")
                .expect("client namespace")
        })
        .sum();
    let metrics = wait_until_settled(&daemon);

    let sum = |name: &str, labels: &[&str]| metrics.sum(name, labels);
    let requests = sum("mirror_requests_total", &[]);
    let replayed = all_replays(&metrics);
    let replayed_ok = replays(&metrics, "ok");
    let primary = sum("mirror_responses_total", &["role=\"primary\""]);
    let shadow = sum("mirror_responses_total", &["role=\"shadow\""]);
    let unpaired = sum("mirror_responses_unpaired_total", &[]);
    let cancelled = sum("mirror_comparisons_cancelled_total", &[]);
    let paired = primary - unpaired;
    let timed = sum(
        "mirror_response_duration_seconds_count",
        &["role=\"primary\""],
    );
    // A paired primary response is compared unless its request was not replayed `ok` (or was
    // lost), or its comparison was cancelled for another reason than pairing: a lower bound.
    let compared_at_least = paired
        - (requests - replayed_ok)
        - sum("mirror_requests_lost_total", &[])
        - sum(
            "mirror_comparisons_cancelled_total",
            &["reason=\"expired\""],
        )
        - sum(
            "mirror_comparisons_cancelled_total",
            &["reason=\"response_lost\""],
        );
    let status_mismatches = sum("mirror_response_mismatches_total", &["kind=\"status\""]);
    let body_mismatches = sum("mirror_response_mismatches_total", &["kind=\"body\""]);
    let ringbuf_full = sum("mirror_capture_drops_total", &["reason=\"ringbuf_full\""]);
    eprintln!(
        "pipelining + joins + {RING_BUFFER_BYTES}-byte ring: {sent} requests sent on {CLIENTS} \
         client threads over {TRAFFIC:?}, daemon started after {DAEMON_AFTER:?}"
    );
    eprintln!(
        "  requests framed {requests}, replayed {replayed} (ok {replayed_ok}), skipped {}",
        sum("mirror_requests_skipped_total", &[])
    );
    eprintln!(
        "  primary responses {primary}: paired {paired} (timed {timed}), unpaired {unpaired}; \
         shadow responses {shadow}; compared at least {compared_at_least}"
    );
    eprintln!("  mismatches: status {status_mismatches}, body {body_mismatches}");
    for (name, label) in [
        ("mirror_replays_total", "outcome"),
        ("mirror_responses_unpaired_total", "reason"),
        ("mirror_comparisons_cancelled_total", "reason"),
        ("mirror_requests_lost_total", "reason"),
        ("mirror_capture_drops_total", "reason"),
        ("mirror_capture_lost_bytes_total", "reason"),
        ("mirror_tcp_target_gaps_total", "direction"),
    ] {
        print_family(&metrics, name, label);
    }

    // Not one wrong pair.
    assert_eq!(status_mismatches, 0.0, "a status mismatch is a wrong pair");
    assert_eq!(body_mismatches, 0.0, "a body mismatch is a wrong pair");
    // The scenario happened: drops (so gaps), joins, pairs compared.
    assert!(ringbuf_full > 0.0, "the ring must overflow");
    assert!(sum("mirror_tcp_gaps_total", &[]) > 0.0, "drops become gaps");
    assert!(
        sum("mirror_responses_unpaired_total", &["reason=\"joined\""]) > 0.0,
        "connections were joined mid-stream"
    );
    assert!(unpaired > 0.0 && cancelled > 0.0 && shadow > 0.0);
    assert_eq!(
        paired, timed,
        "exactly the paired primary responses have a latency"
    );
    assert!(
        compared_at_least >= 100.0,
        "too few pairs compared to prove anything: at least {compared_at_least}"
    );
    // Every framed request skipped or replayed, exactly.
    assert_accounting(&metrics);
    daemon.stop();
}
