//! Ground-truth traffic generator for the framing tests: simulated TCP connections captured at
//! the server host, with exact knowledge of which bytes belong to which message, then impaired the
//! way a real capture is (loss, retransmissions, reordering, a capture that starts mid-stream).
//!
//! ```text
//! app model (http1) ─▶ tcp::simulate ─▶ Captured (truth) ─▶ impair::apply ─▶ delivered ─▶ feed
//! ```
//!
//! - [`Rng`]: a tiny seeded generator; every case is a pure function of its `u64` seed and
//!   [`Mode`].
//! - [`tcp`]: an event-driven simulation of one connection between a client and a server with a
//!   one-way delay, real sequence and acknowledgement numbers, segmentation, Nagle-style
//!   coalescing, delayed ACKs, FIN/RST and optional TCP Fast Open. It is protocol-agnostic: an
//!   [`tcp::App`] drives both ends (the HTTP/1 model is [`http1`]; an HTTP/2 one could be added
//!   next to it).
//! - [`impair`]: what the capture does to the segments ([`Mode`]).
//! - [`Case`]: the connections with their app-level truth, every captured segment, and what was
//!   delivered; [`feed`] replays the delivered segments with ticks every 100 ms.

pub mod http1;
pub mod impair;
pub mod tcp;

use std::fmt;
use std::ops::Range;

use crate::random::SplitMix64;
use crate::segment::{Direction, FlowKey, Segment};

pub use self::tcp::{LinkParams, Side};

/// The crate's SplitMix64 with the draws test data needs: small, fast, stable across platforms.
#[derive(Clone, Debug)]
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed ^ 0x6a09_e667_f3bc_c908))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    /// Uniform in `range` (inclusive).
    pub fn range(&mut self, range: std::ops::RangeInclusive<u64>) -> u64 {
        let (low, high) = (*range.start(), *range.end());
        low + self.below(high - low + 1)
    }

    /// Log-uniform in `range` (inclusive, `start` > 0): as many small values as large ones.
    pub fn log_range(&mut self, range: std::ops::RangeInclusive<u64>) -> u64 {
        let (low, high) = ((*range.start()).max(1) as f64, *range.end() as f64);
        let unit = self.next_u64() as f64 / u64::MAX as f64;
        ((low.ln() + unit * (high.ln() - low.ln())).exp() as u64).clamp(low as u64, high as u64)
    }

    /// True with probability `permille` / 1000.
    pub fn chance(&mut self, permille: u32) -> bool {
        self.below(1000) < u64::from(permille)
    }

    /// Index chosen with the given weights.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&weight| u64::from(weight)).sum();
        let mut pick = self.below(total);
        for (index, &weight) in weights.iter().enumerate() {
            if pick < u64::from(weight) {
                return index;
            }
            pick -= u64::from(weight);
        }
        weights.len() - 1
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An independent generator (for a sub-model whose draws must not shift the others').
    pub fn fork(&mut self) -> Self {
        Self(SplitMix64::new(self.next_u64()))
    }

    /// `len` random ASCII letters and digits (never a space, CR, LF, '/' or '.', so body bytes
    /// cannot look like a start line): a slice of a fixed random pool at a random offset, which
    /// is much cheaper than drawing every byte in a debug build.
    pub fn alnum(&mut self, len: usize) -> Vec<u8> {
        let pool = alnum_pool();
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let take = (len - out.len()).min(pool.len() / 2);
            let start = self.below((pool.len() - take) as u64 + 1) as usize;
            out.extend_from_slice(&pool[start..start + take]);
        }
        out
    }
}

/// 256 KiB of random letters and digits, the same in every run.
fn alnum_pool() -> &'static [u8] {
    static POOL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        const ALPHABET: &[u8; 64] =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789xy";
        let mut rng = Rng::new(0x706f_6f6c);
        let mut pool = Vec::with_capacity(256 * 1024);
        while pool.len() < 256 * 1024 {
            let mut word = rng.next_u64();
            for _ in 0..10 {
                pool.push(ALPHABET[(word & 63) as usize]);
                word >>= 6;
            }
        }
        pool
    })
}

pub use crate::random::mix;

/// What the capture does to the segments of a case (and, for two modes, the traffic itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Every segment, in order, once.
    Clean,
    /// Each segment except SYNs is dropped with probability `permille` / 1000.
    Loss { permille: u32 },
    /// Some segments are delivered again later (retransmissions: same seq and payload, the
    /// acknowledgement number of the moment).
    Duplicate,
    /// Neighbours swapped within a window of four (timestamps stay monotonic).
    Reorder,
    /// For one connection, the capture starts at a random segment (handshake included, nothing
    /// before it is delivered).
    Join,
    /// 2 % loss, duplicates and reordering together.
    Mixed,
    /// A pipelining client sends Q1 and Q2; the capture loses every segment of Q1; the server
    /// answers Q1 slowly (after Q2 arrived), then Q2.
    LostPipelined,
    /// Clean capture of clients that use TCP Fast Open (the first request rides on the SYN).
    FastOpen,
}

impl Mode {
    /// Every mode, in report order.
    pub const ALL: [Self; 9] = [
        Self::Clean,
        Self::Loss { permille: 10 },
        Self::Loss { permille: 40 },
        Self::Duplicate,
        Self::Reorder,
        Self::Join,
        Self::Mixed,
        Self::LostPipelined,
        Self::FastOpen,
    ];

    /// Short name (also what [`Mode::parse`] reads).
    pub fn name(self) -> String {
        match self {
            Self::Clean => "clean".into(),
            Self::Loss { permille } if permille % 10 == 0 => format!("loss{}", permille / 10),
            Self::Loss { permille } => format!("loss{permille}permille"),
            Self::Duplicate => "duplicate".into(),
            Self::Reorder => "reorder".into(),
            Self::Join => "join".into(),
            Self::Mixed => "mixed".into(),
            Self::LostPipelined => "lost-pipelined".into(),
            Self::FastOpen => "fast-open".into(),
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.name() == name)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// One segment as the capture point saw it, with where its payload sits in its stream.
#[derive(Clone, Debug)]
pub struct Captured {
    pub segment: Segment,
    /// Index of the connection in [`Case::conns`].
    pub conn: usize,
    /// Stream offset of the first payload byte (0 = the byte after the SYN).
    pub offset: u64,
    /// A copy delivered again by [`Mode::Duplicate`].
    pub retransmission: bool,
}

impl Captured {
    pub fn side(&self) -> Side {
        match self.segment.direction {
            Direction::Request => Side::Client,
            Direction::Response => Side::Server,
        }
    }

    /// Stream bytes carried.
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.segment.payload.len() as u64
    }
}

/// One simulated TCP connection and what its application model knows about it.
#[derive(Clone, Debug)]
pub struct Conn<T> {
    pub flow: FlowKey,
    pub client_isn: u32,
    pub server_isn: u32,
    pub link: LinkParams,
    /// Index of the earlier connection whose 4-tuple this one reuses.
    pub reuses: Option<usize>,
    /// Capture time of the SYN and of the last segment.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Application-level ground truth (e.g. [`http1::Http1Conn`]).
    pub app: T,
}

/// A generated case: the truth and what the capture delivered.
#[derive(Clone, Debug)]
pub struct Case<T> {
    pub seed: u64,
    pub mode: Mode,
    pub conns: Vec<Conn<T>>,
    /// Every segment on the wire at the capture point, in capture order.
    pub wire: Vec<Captured>,
    /// What the capture delivered, in delivery order.
    pub delivered: Vec<Captured>,
    /// Connection whose capture started mid-stream ([`Mode::Join`]) and the index (in that
    /// connection's own segments) of its first delivered segment.
    pub joined: Option<(usize, usize)>,
}

impl<T> Case<T> {
    /// Stream bytes of `side` of connection `conn` that the capture delivered.
    pub fn coverage(&self, conn: usize, side: Side) -> Coverage {
        Coverage::of(
            self.delivered
                .iter()
                .filter(|captured| captured.conn == conn && captured.side() == side)
                .map(Captured::range),
        )
    }
}

/// A set of byte ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage(Vec<Range<u64>>);

impl Coverage {
    pub fn of(ranges: impl IntoIterator<Item = Range<u64>>) -> Self {
        let mut ranges: Vec<Range<u64>> = ranges.into_iter().filter(|r| !r.is_empty()).collect();
        ranges.sort_by_key(|range| range.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => merged.push(range),
            }
        }
        Self(merged)
    }

    /// Every byte of `range` is in the set.
    pub fn covers(&self, range: &Range<u64>) -> bool {
        range.is_empty()
            || self
                .0
                .iter()
                .any(|have| have.start <= range.start && range.end <= have.end)
    }

    /// Some byte of `range` is in the set.
    pub fn touches(&self, range: &Range<u64>) -> bool {
        self.0
            .iter()
            .any(|have| have.start < range.end && range.start < have.end)
    }
}

/// Tick period of [`feed`].
pub const TICK_NS: u64 = 100_000_000;
/// How long after the last segment [`feed`] ticks once more.
pub const SETTLE_NS: u64 = 10_000_000_000;

/// Replays `segments` in order, calling `on_tick(t)` at every 100 ms boundary `t` the capture
/// clock passes, and once at the end at the last timestamp + 10 s. Returns that final time.
pub fn feed<'a>(
    segments: impl IntoIterator<Item = &'a Segment>,
    mut on_segment: impl FnMut(&Segment),
    mut on_tick: impl FnMut(u64),
) -> u64 {
    let mut next_tick: Option<u64> = None;
    let mut last = 0;
    for segment in segments {
        let now = segment.timestamp_ns;
        let boundary = next_tick.get_or_insert((now / TICK_NS + 1) * TICK_NS);
        while *boundary <= now {
            on_tick(*boundary);
            *boundary += TICK_NS;
        }
        on_segment(segment);
        last = last.max(now);
    }
    let end = last + SETTLE_NS;
    on_tick(end);
    end
}

#[cfg(test)]
mod tests;
