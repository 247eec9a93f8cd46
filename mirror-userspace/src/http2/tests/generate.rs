//! Generated HTTP/2 connections whose events are known: several streams interleaved, header
//! fields repeated (the dynamic table filling and evicting), table size updates, padding,
//! CONTINUATION splits, bodies over several frames, informational responses, trailers,
//! Trailers-Only responses, resets and control frames in between. A connection is built from a
//! seed by a small PRNG.

use super::super::frame::{PREFACE, kind, setting};
use super::super::{Http2Event, RequestHead, ResponseHead};
use super::{
    Encoder, HUFFMAN, REQ, RESP, Repr, data, frame, goaway, headers, ping, rst, settings,
    settings_ack, window_update,
};
use crate::segment::Direction;

pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn text(&mut self, max: usize) -> String {
        let len = self.below(max + 1);
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }
}

type Fields = Vec<(String, String)>;

#[derive(Debug)]
enum Step {
    Head(Fields, bool),
    Data(Vec<u8>, bool),
}

#[derive(Debug, Default)]
struct Script {
    /// Request then response steps, front first.
    steps: [Vec<Step>; 2],
    opened: bool,
    reset: bool,
    /// Opened while fewer than `max_streams` were: reported.
    tracked: bool,
}

fn extras(rng: &mut Rng, fields: &mut Fields) {
    const NAMES: [&str; 8] = [
        "x-a",
        "x-b",
        "cache-control",
        "date",
        "location",
        "custom-key",
        "user-agent",
        "accept",
    ];
    for _ in 0..rng.below(6) {
        let value = match rng.below(4) {
            0 | 1 => rng.pick(&HUFFMAN).0.to_string(),
            2 => rng.text(12),
            // Long enough for small tables to evict.
            _ => rng.text(150),
        };
        fields.push((rng.pick(&NAMES).to_string(), value));
    }
}

fn bodies(rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..rng.below(4))
        .map(|_| {
            let len = rng.below(40);
            (0..len).map(|_| rng.next() as u8).collect()
        })
        .collect()
}

/// Head, DATA frames, optional trailers; END_STREAM on the last.
fn message(rng: &mut Rng, head: Fields, trailers: Option<Fields>, steps: &mut Vec<Step>) {
    let bodies = bodies(rng);
    let head_ends = bodies.is_empty() && trailers.is_none();
    steps.push(Step::Head(head, head_ends));
    let count = bodies.len();
    for (index, body) in bodies.into_iter().enumerate() {
        steps.push(Step::Data(body, index + 1 == count && trailers.is_none()));
    }
    if let Some(trailers) = trailers {
        steps.push(Step::Head(trailers, true));
    }
}

fn script(rng: &mut Rng) -> Script {
    let mut script = Script::default();
    let strings = |list: &[(&str, &str)]| -> Fields {
        list.iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    };
    let path = if rng.chance(50) {
        rng.pick(&["/", "/index.html"]).to_string()
    } else {
        format!("/{}", rng.text(10))
    };
    let mut request = strings(&[
        (":method", *rng.pick(&["GET", "POST"])),
        (":scheme", *rng.pick(&["http", "https"])),
        (":authority", *rng.pick(&["www.example.com", "api"])),
    ]);
    request.push((":path".into(), path));
    extras(rng, &mut request);
    let trailers = rng
        .chance(20)
        .then(|| vec![("x-trailer".to_string(), rng.text(8))]);
    message(rng, request, trailers, &mut script.steps[0]);

    let response = &mut script.steps[1];
    if rng.chance(15) {
        let mut informational = strings(&[(":status", *rng.pick(&["100", "103"]))]);
        extras(rng, &mut informational);
        response.push(Step::Head(informational, false));
    }
    let mut head = strings(&[(":status", *rng.pick(&["200", "204", "302", "307", "404"]))]);
    extras(rng, &mut head);
    if rng.chance(15) {
        // Trailers-Only.
        head.push(("grpc-status".into(), rng.below(17).to_string()));
        response.push(Step::Head(head, true));
    } else {
        let trailers = rng
            .chance(30)
            .then(|| vec![("grpc-status".to_string(), rng.below(17).to_string())]);
        message(rng, head, trailers, response);
    }
    for steps in &mut script.steps {
        steps.reverse();
    }
    script
}

/// A generated connection: its frames in wire order and the events they must yield.
pub(super) struct Built {
    pub(super) frames: Vec<(Direction, Vec<u8>)>,
    pub(super) truth: Vec<Http2Event>,
    /// Streams opened within `max_streams` (reported), and beyond (not).
    pub(super) tracked: usize,
    pub(super) untracked: usize,
    pub(super) max_streams: usize,
    /// Dynamic table entries the encoders evicted.
    pub(super) evictions: usize,
}

struct Builder {
    rng: Rng,
    encoders: [Encoder; 2],
    /// SETTINGS_HEADER_TABLE_SIZE the receiver of each direction announced.
    allowed: [usize; 2],
    frames: Vec<(Direction, Vec<u8>)>,
    truth: Vec<Http2Event>,
}

impl Builder {
    fn block(&mut self, direction: Direction, fields: &Fields) -> Vec<u8> {
        let index = direction as usize;
        let mut block = Vec::new();
        if self.rng.chance(12) {
            let allowed = self.allowed[index];
            if self.rng.chance(30) {
                self.encoders[index].size_update(&mut block, 0);
            }
            let size = *self.rng.pick(&[0, 64, 256, 4096, allowed]);
            self.encoders[index].size_update(&mut block, size);
        }
        for (name, value) in fields {
            let repr = *self.rng.pick(&[
                Repr::Incremental,
                Repr::Incremental,
                Repr::Without,
                Repr::Never,
            ]);
            let huffman = self.rng.chance(50);
            self.encoders[index].field(
                &mut block,
                name.as_bytes(),
                value.as_bytes(),
                repr,
                huffman,
            );
        }
        block
    }

    fn padding(&mut self) -> Option<u8> {
        self.rng.chance(20).then(|| self.rng.below(8) as u8)
    }

    fn step(&mut self, stream: u32, direction: Direction, step: Step, first: bool) {
        match step {
            Step::Head(fields, end_stream) => {
                let block = self.block(direction, &fields);
                let cuts: Vec<usize> = (0..self.rng.below(3))
                    .map(|_| self.rng.below(block.len() + 1))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let padding = self.padding();
                let priority = self.rng.chance(10);
                self.frames.push((
                    direction,
                    headers(stream, &block, end_stream, padding, priority, &cuts),
                ));
                let list = fields
                    .iter()
                    .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
                    .collect();
                self.truth.push(match (direction, first) {
                    (Direction::Request, true) => Http2Event::Request {
                        stream,
                        head: RequestHead { fields: list },
                    },
                    (Direction::Response, true) => Http2Event::Response {
                        stream,
                        head: ResponseHead {
                            status: fields[0].1.parse().unwrap(),
                            fields: list,
                        },
                    },
                    (_, false) => Http2Event::Trailers {
                        stream,
                        direction,
                        fields: list,
                    },
                });
                if end_stream {
                    self.truth.push(Http2Event::End { stream, direction });
                }
            }
            Step::Data(body, end_stream) => {
                let padding = self.padding();
                self.frames
                    .push((direction, data(stream, &body, end_stream, padding)));
                if !body.is_empty() {
                    self.truth.push(Http2Event::Data {
                        stream,
                        direction,
                        data: body.into(),
                    });
                }
                if end_stream {
                    self.truth.push(Http2Event::End { stream, direction });
                }
            }
        }
    }

    /// A frame that reports nothing, in either direction.
    fn noise(&mut self, open: Option<u32>) {
        let direction = *self.rng.pick(&[REQ, RESP]);
        let stream = open.unwrap_or(1);
        let bytes = match self.rng.below(6) {
            0 => ping(self.rng.chance(50)),
            1 => window_update(
                *self.rng.pick(&[0, stream]),
                1 + self.rng.below(1000) as u32,
            ),
            2 => frame(kind::PRIORITY, 0, stream, &[0, 0, 0, 0, 16]),
            3 => frame(0x20 + self.rng.below(16) as u8, 0, 0, &[7; 5]),
            _ => {
                let other = match direction {
                    REQ => RESP,
                    RESP => REQ,
                };
                self.frames.push((
                    direction,
                    settings(&[(setting::MAX_CONCURRENT_STREAMS, 100)]),
                ));
                settings_ack_from(other, &mut self.frames);
                return;
            }
        };
        self.frames.push((direction, bytes));
    }
}

fn settings_ack_from(direction: Direction, frames: &mut Vec<(Direction, Vec<u8>)>) {
    frames.push((direction, settings_ack()));
}

/// `limit`: sometimes track as few streams as 1 to 3.
pub(super) fn build(seed: u64, limit: bool) -> Built {
    let mut rng = Rng(seed | 1);
    let announced = [*rng.pick(&[4096, 8192]), *rng.pick(&[4096, 8192])];
    let scripts: Vec<Script> = (0..1 + rng.below(6)).map(|_| script(&mut rng)).collect();
    // Sometimes few enough that streams go untracked (their blocks are still decoded).
    let max_streams = if rng.chance(30) && limit {
        1 + rng.below(3)
    } else {
        128
    };
    let mut active = 0;
    let mut builder = Builder {
        rng,
        encoders: [Encoder::default(), Encoder::default()],
        // The client's blocks are bounded by what the server announced, and the reverse.
        allowed: [announced[1], announced[0]],
        frames: Vec::new(),
        truth: Vec::new(),
    };
    let mut start = PREFACE.to_vec();
    start.extend(settings(&[(
        setting::HEADER_TABLE_SIZE,
        announced[0] as u32,
    )]));
    builder.frames.push((REQ, start));
    let server = settings(&[(setting::HEADER_TABLE_SIZE, announced[1] as u32)]);
    builder.frames.push((RESP, server));
    builder.frames.push((RESP, settings_ack()));
    builder.frames.push((REQ, settings_ack()));
    let mut scripts = scripts;
    let streams = scripts.len();
    loop {
        let open = (0..streams).find(|&index| scripts[index].opened && !scripts[index].reset);
        if builder.rng.chance(15) {
            builder.noise(open.map(|index| 2 * index as u32 + 1));
        }
        // A stream opens after the ones before it (ids increase); a response follows its
        // request's head.
        let next_to_open = scripts.iter().position(|script| !script.opened);
        let eligible: Vec<(usize, usize)> = (0..streams)
            .flat_map(|index| [(index, 0), (index, 1)])
            .filter(|&(index, side)| {
                let script = &scripts[index];
                !script.reset
                    && !script.steps[side].is_empty()
                    && (script.opened || (side == 0 && next_to_open == Some(index)))
            })
            .collect();
        if eligible.is_empty() {
            break;
        }
        let (index, side) = *builder.rng.pick(&eligible);
        let stream = 2 * index as u32 + 1;
        let direction = [REQ, RESP][side];
        if scripts[index].opened && builder.rng.chance(3) {
            let code = builder.rng.below(14) as u32;
            builder.frames.push((direction, rst(stream, code)));
            if scripts[index].tracked {
                builder.truth.push(Http2Event::Reset {
                    stream,
                    direction,
                    error_code: code,
                });
                active -= 1;
            }
            scripts[index].reset = true;
            continue;
        }
        let script = &mut scripts[index];
        let first = match side {
            0 => !script.opened,
            _ => {
                matches!(script.steps[1].last(), Some(Step::Head(fields, _)) if fields[0].0 == ":status")
            }
        };
        if !script.opened {
            script.tracked = active < max_streams;
            active += usize::from(script.tracked);
        }
        script.opened = true;
        let step = script.steps[side].pop().unwrap();
        let mark = builder.truth.len();
        builder.step(stream, direction, step, first);
        if !script.tracked {
            builder.truth.truncate(mark);
        } else if script.steps.iter().all(Vec::is_empty) {
            active -= 1;
        }
    }
    let tracked = scripts.iter().filter(|script| script.tracked).count();
    if builder.rng.chance(30) {
        let last = 2 * streams as u32 - 1;
        builder.frames.push((RESP, goaway(last, 0)));
        builder.truth.push(Http2Event::GoAway {
            direction: RESP,
            last_stream_id: last,
            error_code: 0,
        });
    }
    Built {
        frames: builder.frames,
        truth: builder.truth,
        tracked,
        untracked: streams - tracked,
        max_streams,
        evictions: builder
            .encoders
            .iter()
            .map(|encoder| encoder.evictions)
            .sum(),
    }
}
