//! HTTP/1.1 over the simulated connections: keep-alive exchanges, ping-pong or pipelined, with
//! every message's exact bytes and stream position recorded.
//!
//! Every request target is unique within a case (`/c{conn}/r{n}?pad=…`) and every final response
//! names it in an `X-Answer` header (interim responses do not), so a consumer's output can be
//! checked against the truth without trusting its own pairing.

mod app;
pub mod messages;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;

use bytes::Bytes;

use self::app::Http1App;
use self::messages::{ExchangePlan, make_closing, plan_exchange};
use super::impair::{self, Blackout};
use super::tcp::{self, LinkParams, Side};
use super::{Captured, Case, Conn, Mode, Rng};
use crate::segment::FlowKey;

/// The server every connection talks to.
pub const SERVER: ([u8; 4], u16) = ([198, 19, 0, 10], 8080);

/// How a connection ends once every response arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndMode {
    /// FIN from the client, then from the server.
    ClientFin,
    /// The last response carries `Connection: close` (sometimes close-delimited); the server
    /// closes first.
    ServerClose,
    /// The client aborts with RST.
    Reset,
    /// Nothing: the connection stays open past the end of the capture.
    StaysOpen,
}

impl EndMode {
    const fn short(self) -> &'static str {
        match self {
            Self::ClientFin => "client-fin",
            Self::ServerClose => "server-close",
            Self::Reset => "rst",
            Self::StaysOpen => "open",
        }
    }
}

/// One request and its final response, as they went over the wire.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// Unique within the case; the final response's `X-Answer` value.
    pub target: String,
    pub method: &'static str,
    /// Exact request bytes (head and body).
    pub request: Bytes,
    pub head_len: usize,
    /// Status of the final response.
    pub status: u16,
    /// The final response went out before the request's last byte arrived.
    pub early: bool,
    pub expect_continue: bool,
    /// Compact description of the plan (`PUT(100c)>201cl`).
    pub description: String,
    /// Client-stream offsets of the request (without a stray CRLF before it).
    pub request_range: Option<Range<u64>>,
    /// Server-stream offsets of the final response (head and body).
    pub response_range: Option<Range<u64>>,
    /// Server-stream offsets of the interim responses (100, 103) before it.
    pub interim_ranges: Vec<Range<u64>>,
    /// Simulation times the request started and the response started going out.
    pub sent_ns: Option<u64>,
    pub answered_ns: Option<u64>,
}

impl Exchange {
    fn planned(plan: &ExchangePlan) -> Self {
        let mut request = plan.head.clone();
        request.extend_from_slice(&plan.body);
        Self {
            target: plan.target.clone(),
            method: plan.kind.method(),
            request: Bytes::from(request),
            head_len: plan.head.len(),
            status: plan.status,
            early: plan.early,
            expect_continue: plan.expect_continue,
            description: plan.describe(),
            request_range: None,
            response_range: None,
            interim_ranges: Vec::new(),
            sent_ns: None,
            answered_ns: None,
        }
    }
}

/// Application truth of one connection.
#[derive(Clone, Debug)]
pub struct Http1Conn {
    /// The `{conn}` of its targets.
    pub id: usize,
    /// Requests outstanding at most (1: ping-pong).
    pub window: usize,
    pub end: EndMode,
    pub exchanges: Vec<Exchange>,
}

pub type Http1Case = Case<Http1Conn>;

fn isn(rng: &mut Rng, wrap_within: u64) -> u32 {
    if rng.chance(250) {
        u32::MAX - rng.below(wrap_within) as u32
    } else {
        rng.next_u64() as u32
    }
}

/// Raw sequence numbers just past the last byte (the FIN included) each side of `conn` sent.
fn stream_ends(wire: &[Captured], conn: &Conn<Http1Conn>) -> (u32, u32) {
    let mut ends = [0u64; 2];
    for captured in wire.iter().filter(|captured| captured.conn == conn.app.id) {
        let end = captured.offset + captured.segment.payload.len() as u64;
        let side = &mut ends[captured.side() as usize];
        *side = (*side).max(end);
    }
    // Offset 0 is the byte after the SYN; one more for the FIN.
    (
        conn.client_isn.wrapping_add(ends[0] as u32 + 2),
        conn.server_isn.wrapping_add(ends[1] as u32 + 2),
    )
}

/// Generates the case of `seed` under `mode`: 1..=3 connections (sometimes one more reusing a
/// closed connection's 4-tuple), simulated, captured and impaired.
pub fn generate(seed: u64, mode: Mode) -> Http1Case {
    let mut rng = Rng::new(seed);
    let count = 1 + rng.below(3) as usize;
    let reused = rng.chance(150).then(|| rng.below(count as u64) as usize);
    let scenario = (mode == Mode::LostPipelined).then(|| rng.below(count as u64) as usize);
    let base = 1_000_000_000 + rng.below(1_000_000_000);
    let server = SocketAddr::from(SERVER);
    let mut ports = Vec::new();
    let mut conns: Vec<Conn<Http1Conn>> = Vec::new();
    let mut wire = Vec::new();
    let mut blackouts = Vec::new();
    for id in 0..count + usize::from(reused.is_some()) {
        let predecessor = (id == count).then(|| reused.expect("reuse"));
        let flow = match predecessor {
            Some(earlier) => conns[earlier].flow,
            None => {
                let port = loop {
                    let port = rng.range(1024..=65535) as u16;
                    if !ports.contains(&port) {
                        break port;
                    }
                };
                ports.push(port);
                let client = SocketAddr::from((
                    [198, 18, rng.below(256) as u8, 1 + rng.below(254) as u8],
                    port,
                ));
                FlowKey { client, server }
            }
        };
        let mut link = LinkParams::random(&mut rng);
        link.fast_open = mode == Mode::FastOpen && rng.chance(700);
        let lost_request = scenario == Some(id);
        let window = if lost_request || rng.chance(500) {
            rng.range(2..=4) as usize
        } else {
            1
        };
        let requests = if lost_request {
            rng.range(2..=12)
        } else {
            rng.range(1..=12)
        } as usize;
        let mut plans: Vec<ExchangePlan> = (0..requests)
            .map(|number| plan_exchange(&mut rng, id, number, window > 1))
            .collect();
        let end = if reused == Some(id) {
            *rng.pick(&[EndMode::ClientFin, EndMode::ClientFin, EndMode::ServerClose])
        } else {
            match rng.weighted(&[60, 10, 10, 20]) {
                0 => EndMode::ClientFin,
                1 => EndMode::ServerClose,
                2 => EndMode::Reset,
                _ => EndMode::StaysOpen,
            }
        };
        if end == EndMode::ServerClose {
            let close_delimited = rng.chance(400);
            make_closing(
                &mut rng,
                plans.last_mut().expect("a request"),
                close_delimited,
            );
        }
        let lost = lost_request.then(|| {
            // Q1 must be a plain request in segments of its own, answered slowly; Q2 follows
            // at once.
            let index = rng.below(requests as u64 - 1) as usize;
            while plans[index].streamed || plans[index].expect_continue {
                plans[index] = plan_exchange(&mut rng, id, index, true);
            }
            plans[index].service_ns = rng.log_range(300_000_000..=2_500_000_000);
            plans[index + 1].think_ns = 0;
            link.cork_permille[Side::Client as usize] = 0;
            index
        });
        let isns = match predecessor {
            // RFC 6528 initial sequence numbers advance with the clock, and an endpoint in
            // TIME-WAIT takes a new SYN only beyond the old connection's sequence numbers
            // (RFC 6191): the new streams start after the old ones.
            Some(earlier) => {
                let (client_end, server_end) = stream_ends(&wire, &conns[earlier]);
                (
                    client_end.wrapping_add(rng.range(1..=1 << 24) as u32),
                    server_end.wrapping_add(rng.range(1..=1 << 24) as u32),
                )
            }
            None => (isn(&mut rng, 4_000), isn(&mut rng, 60_000)),
        };
        let start_ns = match predecessor {
            Some(earlier) => conns[earlier].end_ns + rng.range(1_000_000..=200_000_000),
            None => base + rng.below(40_000_000),
        };
        let end_delay_ns = rng.range(0..=20_000_000);
        let mut app = Http1App::new(plans, window, end, end_delay_ns);
        let mut captured = tcp::simulate(&mut app, link.clone(), rng.fork(), flow, isns, start_ns);
        for segment in &mut captured {
            segment.conn = id;
        }
        let end_ns = captured.last().map_or(start_ns, |c| c.segment.timestamp_ns);
        if let Some(index) = lost
            && let Some(range) = app.exchanges[index].request_range.clone()
        {
            blackouts.push(Blackout {
                conn: id,
                side: Side::Client,
                range,
            });
        }
        wire.extend(captured);
        conns.push(Conn {
            flow,
            client_isn: isns.0,
            server_isn: isns.1,
            link,
            reuses: predecessor,
            start_ns,
            end_ns,
            app: Http1Conn {
                id,
                window,
                end,
                exchanges: app.exchanges,
            },
        });
    }
    wire.sort_by_key(|captured| captured.segment.timestamp_ns);
    let (delivered, applied) = impair::apply(mode, &mut rng, &wire, conns.len(), &blackouts);
    Case {
        seed,
        mode,
        conns,
        wire,
        delivered,
        joined: applied.joined,
    }
}

/// Compact multi-line description of a case, for failure reports.
pub fn describe(case: &Http1Case) -> String {
    let mut out = format!(
        "seed={:#018x} mode={} segments={} delivered={}",
        case.seed,
        case.mode,
        case.wire.len(),
        case.delivered.len()
    );
    for (index, conn) in case.conns.iter().enumerate() {
        let app = &conn.app;
        let behaviour = if app.window == 1 {
            "ping-pong".to_string()
        } else {
            format!("pipelining(w={})", app.window)
        };
        let _ = write!(
            out,
            "\n  c{} {} isn=c:{:#x}/s:{:#x} {behaviour} {} end={}{}{}\n    [{}]",
            app.id,
            conn.flow.client,
            conn.client_isn,
            conn.server_isn,
            conn.link.describe(),
            app.end.short(),
            conn.reuses
                .map(|earlier| format!(" reuses-c{earlier}"))
                .unwrap_or_default(),
            match case.joined {
                Some((joined, first)) if joined == index => format!(" joined-at-segment-{first}"),
                _ => String::new(),
            },
            app.exchanges
                .iter()
                .map(|exchange| exchange.description.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
}
