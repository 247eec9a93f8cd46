//! Peak heap with 10,000 open connections, measured with a counting global allocator.
//!
//! Three states are measured, each on a fresh tracker:
//! - `idle`: handshake plus one completed keep-alive exchange per connection (the common case);
//! - `partial`: additionally half a request head buffered per connection (a stalled client);
//! - `out_of_order`: additionally 4 KiB held behind a hole per connection (a lost segment).
//!
//! Run with `cargo bench -p mirror-userspace --bench memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use mirror::http::{HttpTracker, TrackerConfig};
use mirror::segment::{Direction, FlowKey, Segment, TcpFlags};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CONNECTIONS: u32 = 10_000;

fn segment(
    index: u32,
    direction: Direction,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    payload: &'static [u8],
) -> Segment {
    Segment {
        flow: FlowKey {
            client: ([198, 18, (index >> 8) as u8, index as u8], 40_000).into(),
            server: ([198, 19, 0, 1], 8080).into(),
        },
        direction,
        seq,
        ack,
        flags,
        timestamp_ns: 1_000_000,
        ifindex: 1,
        segment_len: payload.len() as u32,
        chunk_offset: 0,
        payload: Bytes::from_static(payload),
    }
}

const GET: &[u8] =
    b"GET /api/v1/items?id=12345 HTTP/1.1\r\nHost: shop.example.test\r\nAccept: */*\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const HALF_HEAD: &[u8] = b"GET /api/v1/items?id=12345 HTTP/1.1\r\nHost: shop.exa";
static HELD: [u8; 4096] = [b'x'; 4096];

fn measure(name: &str, partial: bool, out_of_order: bool) {
    let ack = TcpFlags(TcpFlags::ACK.0 | TcpFlags::PSH.0);
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut tracker = HttpTracker::new(TrackerConfig::default());
    for i in 0..CONNECTIONS {
        let (c, s) = (1_000u32, 5_000_000u32);
        tracker.on_segment(&segment(i, Direction::Request, c, 0, TcpFlags::SYN, b""));
        tracker.on_segment(&segment(
            i,
            Direction::Response,
            s,
            c + 1,
            TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0),
            b"",
        ));
        tracker.on_segment(&segment(i, Direction::Request, c + 1, s + 1, ack, GET));
        let c_next = c + 1 + GET.len() as u32;
        tracker.on_segment(&segment(i, Direction::Response, s + 1, c_next, ack, OK));
        if partial {
            tracker.on_segment(&segment(
                i,
                Direction::Request,
                c_next,
                s + 1 + OK.len() as u32,
                ack,
                HALF_HEAD,
            ));
        }
        if out_of_order {
            let after_hole = c_next + HALF_HEAD.len() as u32 + 100;
            tracker.on_segment(&segment(
                i,
                Direction::Request,
                after_hole,
                s + 1,
                ack,
                &HELD,
            ));
        }
        while tracker.poll_event().is_some() {}
    }
    let live = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    println!(
        "{name:>13}: {} connections, live heap {:>6.2} MiB ({:>5} B/connection), peak {:>6.2} MiB, buffered_bytes {} B",
        tracker.active_connections(),
        live as f64 / 1048576.0,
        live / CONNECTIONS as usize,
        peak as f64 / 1048576.0,
        tracker.buffered_bytes(),
    );
    drop(tracker);
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    measure("idle", false, false);
    measure("partial", true, false);
    measure("out_of_order", true, true);
}
