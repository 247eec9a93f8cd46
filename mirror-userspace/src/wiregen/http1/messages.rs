//! HTTP/1.1 messages of the model and the random plan of one connection: which requests, which
//! responses, and the timing of both ends.

use super::super::Rng;

/// A request method with its body framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Get,
    Head,
    Options,
    Delete,
    /// POST with a Content-Length body of 0..3000 bytes.
    PostLength,
    /// POST with a chunked body (chunk extensions, sometimes trailers).
    PostChunked,
    /// PUT with a 2..40 KiB Content-Length body, streamed in pieces.
    Put,
}

impl RequestKind {
    pub const fn method(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Options => "OPTIONS",
            Self::Delete => "DELETE",
            Self::PostLength | Self::PostChunked => "POST",
            Self::Put => "PUT",
        }
    }

    pub const fn has_body(self) -> bool {
        matches!(self, Self::PostLength | Self::PostChunked | Self::Put)
    }

    const fn short(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Options => "OPT",
            Self::Delete => "DEL",
            Self::PostLength => "POSTcl",
            Self::PostChunked => "POSTch",
            Self::Put => "PUT",
        }
    }
}

/// How the final response is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseKind {
    /// 2xx/4xx with Content-Length and a body.
    Length,
    Chunked,
    NoContent,
    /// 304 with a Content-Length header and no body.
    NotModified,
    /// Answer to HEAD: Content-Length (or chunked) header, no body.
    HeadAnswer,
    /// No Content-Length, no chunked: the body ends with the connection (last response only).
    CloseDelimited,
}

impl ResponseKind {
    const fn short(self) -> &'static str {
        match self {
            Self::Length => "cl",
            Self::Chunked => "ch",
            Self::NoContent => "204",
            Self::NotModified => "304",
            Self::HeadAnswer => "head",
            Self::CloseDelimited => "close",
        }
    }
}

/// Everything decided in advance about one exchange.
#[derive(Clone, Debug)]
pub struct ExchangePlan {
    pub kind: RequestKind,
    pub target: String,
    pub head: Vec<u8>,
    /// Body as on the wire (chunked framing included).
    pub body: Vec<u8>,
    pub expect_continue: bool,
    /// The body is written in pieces over time (large PUTs, and early-answered requests).
    pub streamed: bool,
    pub piece_len: usize,
    pub piece_gap_ns: u64,
    /// Delay from the head to the first body piece.
    pub body_delay_ns: u64,
    /// The server answers once the head is in, while the body is still coming.
    pub early: bool,
    /// `\r\n` written before the request line (RFC 9112 §2.2).
    pub stray_crlf: bool,
    /// Ping-pong: pause after the previous response; pipelining: after the previous request.
    pub think_ns: u64,
    pub service_ns: u64,
    /// 103 Early Hints before the final response.
    pub early_hints: bool,
    pub response_kind: ResponseKind,
    pub status: u16,
    /// Final response head and body.
    pub response_head: Vec<u8>,
    pub response_body: Vec<u8>,
    /// The final response is written in this many pieces, `response_gap_ns` apart.
    pub response_pieces: usize,
    pub response_gap_ns: u64,
    /// Carries `Connection: close`; the server closes after it.
    pub closes: bool,
}

impl ExchangePlan {
    /// E.g. `PUT(100c,early)>201cl`.
    pub fn describe(&self) -> String {
        let mut flags = Vec::new();
        if self.expect_continue {
            flags.push("100c");
        }
        if self.early {
            flags.push("early");
        }
        if self.early_hints {
            flags.push("103");
        }
        if self.stray_crlf {
            flags.push("crlf");
        }
        if self.service_ns >= 50_000_000 {
            flags.push("slow");
        }
        if self.closes {
            flags.push("closes");
        }
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!("({})", flags.join(","))
        };
        format!(
            "{}{}>{}{}",
            self.kind.short(),
            flags,
            self.status,
            self.response_kind.short()
        )
    }
}

pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
pub const EARLY_HINTS: &[u8] =
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n";

fn chunked(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut left = len;
    while left > 0 {
        let size = (rng.range(1..=900) as usize).min(left);
        left -= size;
        if rng.chance(200) {
            out.extend_from_slice(format!("{size:X}").as_bytes());
        } else {
            out.extend_from_slice(format!("{size:x}").as_bytes());
        }
        if rng.chance(250) {
            out.extend_from_slice(b";ext=");
            let len = rng.range(1..=8) as usize;
            out.extend(rng.alnum(len));
        }
        out.extend_from_slice(b"\r\n");
        out.extend(rng.alnum(size));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    if rng.chance(300) {
        out.extend_from_slice(b"X-Checksum: ");
        out.extend(rng.alnum(12));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Plans exchange `number` of connection `conn`.
pub fn plan_exchange(rng: &mut Rng, conn: usize, number: usize, pipelining: bool) -> ExchangePlan {
    let kind = match rng.weighted(&[40, 10, 5, 5, 20, 12, 8]) {
        0 => RequestKind::Get,
        1 => RequestKind::Head,
        2 => RequestKind::Options,
        3 => RequestKind::Delete,
        4 => RequestKind::PostLength,
        5 => RequestKind::PostChunked,
        _ => RequestKind::Put,
    };
    let pad_max = if rng.chance(100) { 600 } else { 40 };
    let pad_len = rng.below(pad_max) as usize;
    let pad = String::from_utf8(rng.alnum(pad_len)).expect("ASCII");
    let target = format!("/c{conn}/r{number}?pad={pad}");
    let expect_continue = kind == RequestKind::Put && rng.chance(400);
    let body = match kind {
        RequestKind::PostLength => {
            let max = if rng.chance(100) { 0 } else { 3001 };
            let len = rng.below(max) as usize;
            rng.alnum(len)
        }
        RequestKind::PostChunked => {
            let len = rng.below(2000) as usize;
            chunked(rng, len)
        }
        RequestKind::Put => {
            let len = rng.range(2048..=40 * 1024) as usize;
            rng.alnum(len)
        }
        _ => Vec::new(),
    };
    let early = kind.has_body() && !expect_continue && !body.is_empty() && rng.chance(150);
    let mut head = format!(
        "{} {target} HTTP/1.1\r\nHost: svc{conn}.test\r\nUser-Agent: wiregen/1\r\n",
        kind.method()
    );
    match kind {
        RequestKind::PostChunked => head.push_str("Transfer-Encoding: chunked\r\n"),
        RequestKind::PostLength | RequestKind::Put => {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        _ => {}
    }
    if expect_continue {
        head.push_str("Expect: 100-continue\r\n");
    }
    if rng.chance(300) {
        head.push_str("Accept: */*\r\n");
    }
    head.push_str("\r\n");
    let streamed = kind == RequestKind::Put || early;
    let think_ns = if pipelining {
        if rng.chance(500) {
            0
        } else {
            rng.range(1..=300_000)
        }
    } else if rng.chance(40) {
        rng.range(1_000_000_000..=3_000_000_000)
    } else {
        rng.range(0..=20_000_000)
    };
    let service_ns = if rng.chance(70) {
        rng.log_range(50_000_000..=2_500_000_000)
    } else {
        rng.range(0..=5_000_000)
    };
    let (response_kind, status) = if early {
        (ResponseKind::Length, *rng.pick(&[200, 413]))
    } else {
        match kind {
            RequestKind::Head => (ResponseKind::HeadAnswer, 200),
            RequestKind::Get => match rng.weighted(&[55, 20, 10, 5, 5]) {
                0 => (ResponseKind::Length, 200),
                1 => (ResponseKind::Chunked, 200),
                2 => (ResponseKind::NotModified, 304),
                3 => (ResponseKind::Length, 404),
                _ => (ResponseKind::NoContent, 204),
            },
            RequestKind::Options | RequestKind::Delete => match rng.weighted(&[50, 50]) {
                0 => (ResponseKind::NoContent, 204),
                _ => (ResponseKind::Length, 200),
            },
            _ => match rng.weighted(&[40, 30, 30]) {
                0 => (ResponseKind::Length, 201),
                1 => (ResponseKind::Chunked, 200),
                _ => (ResponseKind::NoContent, 204),
            },
        }
    };
    let mut plan = ExchangePlan {
        kind,
        target,
        head: head.into_bytes(),
        body,
        expect_continue,
        streamed,
        piece_len: rng.range(512..=8192) as usize,
        piece_gap_ns: rng.range(20_000..=2_000_000),
        body_delay_ns: rng.range(200_000..=5_000_000),
        early,
        stray_crlf: pipelining && number > 0 && rng.chance(100),
        think_ns,
        service_ns: if early {
            rng.range(0..=500_000)
        } else {
            service_ns
        },
        early_hints: !early && rng.chance(50),
        response_kind,
        status,
        response_head: Vec::new(),
        response_body: Vec::new(),
        response_pieces: 1,
        response_gap_ns: rng.range(10_000..=2_000_000),
        closes: false,
    };
    build_response(rng, &mut plan);
    plan
}

/// Makes exchange `plan` the connection's last one, answered with `Connection: close` (framed, or
/// close-delimited).
pub fn make_closing(rng: &mut Rng, plan: &mut ExchangePlan, close_delimited: bool) {
    plan.closes = true;
    // A server that closes right after an early answer cuts the body still coming.
    plan.early = false;
    if close_delimited && plan.kind != RequestKind::Head {
        plan.response_kind = ResponseKind::CloseDelimited;
        plan.status = 200;
    }
    build_response(rng, plan);
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        404 => "Not Found",
        413 => "Content Too Large",
        _ => "Whatever",
    }
}

/// Fills `response_head` and `response_body` from the plan's kind and status.
fn build_response(rng: &mut Rng, plan: &mut ExchangePlan) {
    let status = plan.status;
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nX-Answer: {}\r\nServer: wiregen\r\n",
        reason(status),
        plan.target
    );
    let body_len = if rng.chance(100) {
        rng.range(3000..=20_000)
    } else {
        rng.below(3000)
    } as usize;
    let body = match plan.response_kind {
        ResponseKind::Length => {
            let body = rng.alnum(body_len);
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            body
        }
        ResponseKind::Chunked => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            chunked(rng, body_len)
        }
        ResponseKind::NoContent => Vec::new(),
        ResponseKind::NotModified => {
            head.push_str(&format!("Content-Length: {}\r\n", rng.range(1..=5000)));
            Vec::new()
        }
        ResponseKind::HeadAnswer => {
            if rng.chance(200) {
                head.push_str("Transfer-Encoding: chunked\r\n");
            } else {
                head.push_str(&format!("Content-Length: {}\r\n", rng.range(0..=50_000)));
            }
            Vec::new()
        }
        ResponseKind::CloseDelimited => rng.alnum(body_len.max(1)),
    };
    if plan.closes {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    plan.response_head = head.into_bytes();
    plan.response_body = body;
    plan.response_pieces = if plan.response_body.len() > 200 && rng.chance(250) {
        rng.range(2..=3) as usize
    } else {
        1
    };
}
