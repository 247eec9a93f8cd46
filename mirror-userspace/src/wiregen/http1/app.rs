//! Client and server behaviour of one HTTP/1.1 connection, recording where every message went.
//!
//! The client sends requests ping-pong (the next one after the previous response, plus a think
//! time) or pipelined (up to `window` outstanding); the server answers strictly in order, one at
//! a time, after its service time. Both act only on what actually arrived, so the acknowledgement
//! numbers and the interleaving are those of a real exchange.

use std::ops::Range;

use super::super::tcp::{App, AppEvent, Side, Tcp};
use super::messages::{CONTINUE, EARLY_HINTS, ExchangePlan};
use super::{EndMode, Exchange};

/// How long a client waits for `100 Continue` before sending the body anyway.
const CONTINUE_TIMEOUT_NS: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Wake,
    ContinueTimeout(usize),
    BodyPiece(usize),
    Serve(usize),
    ResponsePiece(usize, usize),
    End,
}

impl Timer {
    fn token(self) -> u64 {
        let (kind, index, piece) = match self {
            Self::Wake => (0, 0, 0),
            Self::ContinueTimeout(index) => (1, index, 0),
            Self::BodyPiece(index) => (2, index, 0),
            Self::Serve(index) => (3, index, 0),
            Self::ResponsePiece(index, piece) => (4, index, piece),
            Self::End => (5, 0, 0),
        };
        kind | (index as u64) << 8 | (piece as u64) << 32
    }

    fn of(token: u64) -> Self {
        let index = ((token >> 8) & 0xff_ffff) as usize;
        let piece = (token >> 32) as usize;
        match token & 0xff {
            0 => Self::Wake,
            1 => Self::ContinueTimeout(index),
            2 => Self::BodyPiece(index),
            3 => Self::Serve(index),
            4 => Self::ResponsePiece(index, piece),
            _ => Self::End,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sending {
    Idle,
    /// Head sent, waiting for 100 Continue.
    AwaitContinue(usize),
    /// Body pieces going out; `usize` bytes of it sent.
    Body(usize, usize),
}

pub struct Http1App {
    pub plans: Vec<ExchangePlan>,
    pub window: usize,
    pub end: EndMode,
    pub end_delay_ns: u64,
    pub exchanges: Vec<Exchange>,
    // Client.
    next_send: usize,
    completed: usize,
    earliest: u64,
    wake_at: Option<u64>,
    sending: Sending,
    client_closed: bool,
    end_scheduled: bool,
    head_end: Vec<Option<u64>>,
    continue_end: Vec<Option<u64>>,
    // Server.
    next_serve: usize,
    serving: bool,
    continue_considered: Vec<bool>,
    hints_sent: Vec<bool>,
    server_closed: bool,
}

impl Http1App {
    pub fn new(plans: Vec<ExchangePlan>, window: usize, end: EndMode, end_delay_ns: u64) -> Self {
        let count = plans.len();
        let exchanges = plans.iter().map(Exchange::planned).collect();
        Self {
            plans,
            window,
            end,
            end_delay_ns,
            exchanges,
            next_send: 0,
            completed: 0,
            earliest: 0,
            wake_at: None,
            sending: Sending::Idle,
            client_closed: false,
            end_scheduled: false,
            head_end: vec![None; count],
            continue_end: vec![None; count],
            next_serve: 0,
            serving: false,
            continue_considered: vec![false; count],
            hints_sent: vec![false; count],
            server_closed: false,
        }
    }

    fn client_pump(&mut self, tcp: &mut Tcp) {
        while !self.client_closed && self.sending == Sending::Idle {
            let index = self.next_send;
            if index == self.plans.len() {
                if self.completed == index && !self.end_scheduled {
                    self.end_scheduled = true;
                    tcp.timer(tcp.now() + self.end_delay_ns, Timer::End.token());
                }
                return;
            }
            if index - self.completed >= self.window {
                return;
            }
            if tcp.now() < self.earliest {
                if self.wake_at != Some(self.earliest) {
                    self.wake_at = Some(self.earliest);
                    tcp.timer(self.earliest, Timer::Wake.token());
                }
                return;
            }
            self.send_request(tcp, index);
        }
    }

    fn send_request(&mut self, tcp: &mut Tcp, index: usize) {
        let plan = &self.plans[index];
        if plan.stray_crlf {
            tcp.write(Side::Client, b"\r\n");
        }
        let start = tcp.written(Side::Client);
        let head_end = start + plan.head.len() as u64;
        self.head_end[index] = Some(head_end);
        let exchange = &mut self.exchanges[index];
        exchange.request_range = Some(start..start + exchange.request.len() as u64);
        exchange.sent_ns = Some(tcp.now());
        if plan.expect_continue {
            tcp.write(Side::Client, &plan.head);
            self.sending = Sending::AwaitContinue(index);
            tcp.timer(
                tcp.now() + CONTINUE_TIMEOUT_NS,
                Timer::ContinueTimeout(index).token(),
            );
        } else if plan.streamed {
            tcp.write(Side::Client, &plan.head);
            self.sending = Sending::Body(index, 0);
            tcp.timer(
                tcp.now() + plan.body_delay_ns,
                Timer::BodyPiece(index).token(),
            );
        } else {
            let mut bytes = plan.head.clone();
            bytes.extend_from_slice(&plan.body);
            tcp.write(Side::Client, &bytes);
        }
        self.next_send += 1;
        if self.window > 1
            && let Some(next) = self.plans.get(self.next_send)
        {
            self.earliest = tcp.now() + next.think_ns;
        }
    }

    fn send_body_piece(&mut self, tcp: &mut Tcp, index: usize) {
        let Sending::Body(current, sent) = self.sending else {
            return;
        };
        if current != index {
            return;
        }
        let plan = &self.plans[index];
        let end = (sent + plan.piece_len).min(plan.body.len());
        tcp.write(Side::Client, &plan.body[sent..end]);
        if end == plan.body.len() {
            self.sending = Sending::Idle;
            self.client_pump(tcp);
        } else {
            self.sending = Sending::Body(index, end);
            tcp.timer(
                tcp.now() + plan.piece_gap_ns,
                Timer::BodyPiece(index).token(),
            );
        }
    }

    fn start_body(&mut self, tcp: &mut Tcp, index: usize) {
        if self.sending == Sending::AwaitContinue(index) {
            self.sending = Sending::Body(index, 0);
            self.send_body_piece(tcp, index);
        }
    }

    fn client_received(&mut self, tcp: &mut Tcp) {
        let received = tcp.received(Side::Client);
        if let Sending::AwaitContinue(index) = self.sending
            && self.continue_end[index].is_some_and(|end| received >= end)
        {
            self.start_body(tcp, index);
        }
        while let Some(range) = self
            .exchanges
            .get(self.completed)
            .and_then(|exchange| exchange.response_range.clone())
        {
            if received < range.end {
                break;
            }
            self.completed += 1;
            if self.window == 1
                && let Some(next) = self.plans.get(self.next_send)
            {
                self.earliest = tcp.now() + next.think_ns;
            }
        }
        self.client_pump(tcp);
    }

    fn server_pump(&mut self, tcp: &mut Tcp) {
        if self.serving || self.server_closed {
            return;
        }
        let index = self.next_serve;
        if index == self.plans.len() {
            if tcp.peer_fin(Side::Server) {
                self.server_closed = true;
                tcp.fin(Side::Server);
            }
            return;
        }
        let Some(head_end) = self.head_end[index] else {
            return;
        };
        let received = tcp.received(Side::Server);
        if received < head_end {
            return;
        }
        let plan = &self.plans[index];
        if plan.expect_continue && !self.continue_considered[index] {
            self.continue_considered[index] = true;
            // A client that gave up waiting already sends the body: no 100 then.
            if received == head_end {
                let range = write_range(tcp, CONTINUE);
                self.continue_end[index] = Some(range.end);
                self.exchanges[index].interim_ranges.push(range);
            }
        }
        let request_end = self.exchanges[index]
            .request_range
            .as_ref()
            .map_or(u64::MAX, |range| range.end);
        if !plan.early && received < request_end {
            return;
        }
        if plan.early_hints && !self.hints_sent[index] {
            self.hints_sent[index] = true;
            let range = write_range(tcp, EARLY_HINTS);
            self.exchanges[index].interim_ranges.push(range);
        }
        self.serving = true;
        tcp.timer(tcp.now() + plan.service_ns, Timer::Serve(index).token());
    }

    /// Writes piece `piece` of response `index`.
    fn respond(&mut self, tcp: &mut Tcp, index: usize, piece: usize) {
        let plan = &self.plans[index];
        let total = plan.response_head.len() + plan.response_body.len();
        if piece == 0 {
            let start = tcp.written(Side::Server);
            self.exchanges[index].response_range = Some(start..start + total as u64);
            self.exchanges[index].answered_ns = Some(tcp.now());
        }
        let bounds = |piece: usize| {
            if piece == 0 {
                0
            } else {
                plan.response_head.len() + plan.response_body.len() * piece / plan.response_pieces
            }
        };
        let (from, to) = (bounds(piece), bounds(piece + 1).min(total));
        let mut bytes = Vec::with_capacity(to - from);
        let head_len = plan.response_head.len();
        if from < head_len {
            bytes.extend_from_slice(&plan.response_head[from..head_len.min(to)]);
        }
        if to > head_len {
            bytes.extend_from_slice(
                &plan.response_body[from.max(head_len) - head_len..to - head_len],
            );
        }
        tcp.write(Side::Server, &bytes);
        if piece + 1 < plan.response_pieces {
            tcp.timer(
                tcp.now() + plan.response_gap_ns,
                Timer::ResponsePiece(index, piece + 1).token(),
            );
            return;
        }
        self.serving = false;
        self.next_serve += 1;
        if plan.closes {
            self.server_closed = true;
            tcp.fin(Side::Server);
            return;
        }
        self.server_pump(tcp);
    }

    fn end(&mut self, tcp: &mut Tcp) {
        if self.client_closed {
            return;
        }
        match self.end {
            EndMode::ClientFin => {
                self.client_closed = true;
                tcp.fin(Side::Client);
            }
            EndMode::Reset => {
                self.client_closed = true;
                tcp.reset(Side::Client);
            }
            EndMode::ServerClose | EndMode::StaysOpen => {}
        }
    }
}

fn write_range(tcp: &mut Tcp, bytes: &[u8]) -> Range<u64> {
    let start = tcp.written(Side::Server);
    tcp.write(Side::Server, bytes);
    start..start + bytes.len() as u64
}

impl App for Http1App {
    fn on_event(&mut self, tcp: &mut Tcp, event: AppEvent) {
        match event {
            AppEvent::Connected => self.client_pump(tcp),
            AppEvent::Data(Side::Client) => self.client_received(tcp),
            AppEvent::Data(Side::Server) => self.server_pump(tcp),
            AppEvent::Fin(Side::Client) => {
                // The server closed: the client closes its side too.
                if !self.client_closed {
                    self.client_closed = true;
                    tcp.fin(Side::Client);
                }
            }
            AppEvent::Fin(Side::Server) => self.server_pump(tcp),
            AppEvent::Timer(token) => match Timer::of(token) {
                Timer::Wake => {
                    self.wake_at = None;
                    self.client_pump(tcp);
                }
                Timer::ContinueTimeout(index) => self.start_body(tcp, index),
                Timer::BodyPiece(index) => self.send_body_piece(tcp, index),
                Timer::Serve(index) => self.respond(tcp, index, 0),
                Timer::ResponsePiece(index, piece) => self.respond(tcp, index, piece),
                Timer::End => self.end(tcp),
            },
        }
    }
}
