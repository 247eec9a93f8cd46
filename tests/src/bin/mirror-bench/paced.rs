//! The paced client: a fixed offered rate on keep-alive connections, below saturation, with
//! its threads pinned to one CPU and the primary to the other.

use super::*;

/// CPU the paced client's threads run on; the primary runs on [`PRIMARY_CPU`] meanwhile.
const CLIENT_CPU: usize = 0;
const PRIMARY_CPU: usize = 1;

/// Restricts thread or process `pid` (0: the calling thread) to `cpus`.
fn set_affinity(pid: u32, cpus: &[usize]) {
    let mut set = nix::sched::CpuSet::new();
    for cpu in cpus {
        set.set(*cpu).expect("CPU index");
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid as i32), &set)
        .expect("sched_setaffinity");
}

/// Every CPU of the machine.
fn all_cpus() -> Vec<usize> {
    (0..std::thread::available_parallelism().map_or(1, usize::from)).collect()
}

/// What the paced client saw.
#[derive(Default)]
pub(super) struct Paced {
    pub(super) served: u64,
    pub(super) sent: u64,
    /// Per response, microseconds from the request's write to the response's last byte. (Not
    /// from the scheduled send time, which would add the sleep's wake-up delay; a stalled
    /// primary shows in the served rate instead: each connection waits for its response
    /// before the next request.)
    pub(super) latencies_us: Vec<u32>,
}

impl Paced {
    pub(super) fn latency_ms(&self, quantile: f64) -> f64 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let Some(last) = sorted.len().checked_sub(1) else {
            return f64::NAN;
        };
        f64::from(sorted[(last as f64 * quantile).round() as usize]) / 1000.0
    }
}

/// A paced client: `connections` keep-alive connections to `port` together sending `rate`
/// requests per second for `seconds`, each connection waiting for a response before its next
/// request. One thread per connection sleeping to absolute send times, the connections'
/// schedules staggered across the period: arrivals spread like independent clients' rather
/// than in synchronised bursts (an async timer's 1 ms ticks would send every connection's
/// request at once and measure the queue of the burst).
pub(super) fn paced(
    client: &NetNs,
    processes: Processes,
    port: u16,
    rate: u64,
    seconds: u64,
    connections: u64,
    short: bool,
) -> Paced {
    // Below saturation the primary's latency is mostly wake-ups, and unpinned it depends on
    // where the scheduler puts the client and the primary: on one CPU or two, the no-mirror P50
    // moved between about 27 and 55 us from run to run here. Pinned to different CPUs (a
    // remote client's wake-up path), runs compare; the daemon and the shadows stay unpinned.
    // The client's threads pin themselves (`paced_connection`).
    set_affinity(processes.primary, &[PRIMARY_CPU]);
    let total = client
        .spawn(move || {
            let period = Duration::from_secs_f64(connections as f64 / rate as f64);
            let start = Instant::now() + Duration::from_millis(100);
            let deadline = start + Duration::from_secs(seconds);
            let threads: Vec<_> = (0..connections)
                .map(|index| {
                    let first = start + period.mul_f64(index as f64 / connections as f64);
                    std::thread::spawn(move || {
                        paced_connection(port, first, period, deadline, short)
                    })
                })
                .collect();
            let mut total = Paced::default();
            for thread in threads {
                let mut one = thread.join().expect("client connection");
                total.served += one.served;
                total.sent += one.sent;
                total.latencies_us.append(&mut one.latencies_us);
            }
            total
        })
        .join()
        .expect("paced client")
        .expect("client namespace");
    set_affinity(processes.primary, &all_cpus());
    total
}

/// One connection of [`paced()`]: a request at `first`, then one every `period` until `deadline`
/// (a late response delays the next sends, which then catch up; a primary slower than the
/// period stops at the deadline all the same). With `short`, each request goes on a new
/// connection with `Connection: close` (the primary closes it after its response); the
/// latency then includes the handshake.
fn paced_connection(
    port: u16,
    first: Instant,
    period: Duration,
    deadline: Instant,
    short: bool,
) -> Paced {
    use std::io::{Read, Write};
    set_affinity(0, &[CLIENT_CPU]);
    let connect = || {
        let stream = std::net::TcpStream::connect((SERVER_ADDR, port)).expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
    };
    let mut open = (!short).then(connect);
    let request = if short {
        PACED_REQUEST_CLOSE
    } else {
        PACED_REQUEST
    };
    let mut buffer = vec![0u8; 4096];
    let mut result = Paced::default();
    let mut next = first;
    while next < deadline && Instant::now() < deadline {
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        next += period;
        let written = Instant::now();
        let stream = open.get_or_insert_with(connect);
        stream.write_all(request).expect("write");
        result.sent += 1;
        read_one_response(stream, &mut buffer);
        result.served += 1;
        let latency = written.elapsed().as_micros();
        result
            .latencies_us
            .push(u32::try_from(latency).unwrap_or(u32::MAX));
        if short {
            // Wait for the primary's FIN: the primary, which closes first, then holds the
            // TIME_WAIT rather than the client's port range.
            let after = stream.read(&mut buffer).expect("read the close");
            assert_eq!(after, 0, "bytes after a Connection: close response");
            open = None;
        }
    }
    result
}

/// Reads one response of nginx's page from `stream`. It fits one read in practice; the bytes
/// are counted to be sure one whole response arrived.
fn read_one_response(stream: &mut std::net::TcpStream, buffer: &mut [u8]) {
    use std::io::Read;
    let mut got = 0;
    let mut expected = usize::MAX;
    while got < expected {
        let n = stream.read(&mut buffer[got..]).expect("read");
        assert!(n > 0, "primary closed the connection");
        got += n;
        if let Some(end) = buffer[..got].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]);
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            expected = end + 4 + length;
        }
    }
}
