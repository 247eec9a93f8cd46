//! Message heads: httparse does the syntax; this file records *where* each part is in the exact
//! wire bytes (so the replayed bytes stay byte-identical and a rewrite can splice them) and derives
//! the message-body framing of RFC 9112 §6.

use std::mem::MaybeUninit;

use bytes::Bytes;

/// Hard upper bound on headers per message (stack storage for httparse).
pub const MAX_HEADERS: usize = 256;

/// Position of one header field inside its message's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderSpan {
    pub name_start: u32,
    pub name_len: u32,
    pub value_start: u32,
    pub value_len: u32,
}

impl HeaderSpan {
    pub fn name<'a>(&self, message: &'a [u8]) -> &'a [u8] {
        let start = self.name_start as usize;
        &message[start..start + self.name_len as usize]
    }

    pub fn value<'a>(&self, message: &'a [u8]) -> &'a [u8] {
        let start = self.value_start as usize;
        &message[start..start + self.value_len as usize]
    }
}

/// Why a head was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed head: {0}")]
    Syntax(httparse::Error),
    #[error("head larger than {0} bytes")]
    TooLarge(usize),
    #[error("invalid or conflicting Content-Length")]
    ContentLength,
    #[error("Transfer-Encoding in a request does not end in chunked")]
    TransferEncoding,
}

/// Limits on a head.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    pub max_headers: usize,
    pub max_head_bytes: usize,
}

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
    /// Until the server closes the connection (responses only).
    Close,
}

/// Header facts that framing and pairing need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadFacts {
    pub content_length: Option<u64>,
    /// Transfer-Encoding present; `Some(true)` when its final coding is chunked.
    pub chunked: Option<bool>,
    pub expect_continue: bool,
    /// Upgrade header plus the `upgrade` connection option (RFC 9110 §7.8).
    pub upgrade: bool,
    /// The `close` / `keep-alive` connection options (RFC 9112 §9.3), in any Connection line.
    pub connection_close: bool,
    pub connection_keep_alive: bool,
    pub host: Option<usize>,
}

fn offset_in(base: &[u8], part: &[u8]) -> u32 {
    (part.as_ptr() as usize - base.as_ptr() as usize) as u32
}

fn eq_token(value: &[u8], token: &[u8]) -> bool {
    value.trim_ascii().eq_ignore_ascii_case(token)
}

/// Whether a comma-separated field value (a Connection field's options, RFC 9110 §7.6.1) lists
/// `option`, compared case-insensitively.
pub fn lists_option(value: &[u8], option: &[u8]) -> bool {
    value
        .split(|&byte| byte == b',')
        .any(|item| eq_token(item, option))
}

/// Where each header's name and value lie in `base` (a request's, which the rewriter and the
/// policy read; a response's are never read, so responses skip this allocation).
fn header_spans(base: &[u8], headers: &[httparse::Header<'_>]) -> Vec<HeaderSpan> {
    headers
        .iter()
        .map(|header| HeaderSpan {
            name_start: offset_in(base, header.name.as_bytes()),
            name_len: header.name.len() as u32,
            value_start: offset_in(base, header.value),
            value_len: header.value.len() as u32,
        })
        .collect()
}

fn head_facts(headers: &[httparse::Header<'_>]) -> Result<HeadFacts, HeadError> {
    let mut facts = HeadFacts::default();
    let mut upgrade_header = false;
    let mut connection_upgrade = false;
    for (index, header) in headers.iter().enumerate() {
        let name = header.name.as_bytes();
        let value = header.value;
        if name.eq_ignore_ascii_case(b"content-length") {
            // A list of identical values is allowed (RFC 9110 §8.6); anything else is fatal.
            for item in value.split(|&byte| byte == b',') {
                let item = item.trim_ascii();
                if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                    return Err(HeadError::ContentLength);
                }
                let length = item
                    .iter()
                    .fold(0u64, |acc, &digit| acc * 10 + u64::from(digit - b'0'));
                match facts.content_length {
                    Some(previous) if previous != length => return Err(HeadError::ContentLength),
                    _ => facts.content_length = Some(length),
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The final coding of the last field line decides (codings apply in order).
            let last = value
                .rsplit(|&byte| byte == b',')
                .find(|coding| !coding.trim_ascii().is_empty());
            facts.chunked = Some(last.is_some_and(|coding| eq_token(coding, b"chunked")));
        } else if name.eq_ignore_ascii_case(b"expect") {
            facts.expect_continue |= eq_token(value, b"100-continue");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_header |= !value.trim_ascii().is_empty();
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&byte| byte == b',') {
                let option = option.trim_ascii();
                connection_upgrade |= option.eq_ignore_ascii_case(b"upgrade");
                facts.connection_close |= option.eq_ignore_ascii_case(b"close");
                facts.connection_keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"host") && facts.host.is_none() {
            facts.host = Some(index);
        }
    }
    facts.upgrade = upgrade_header && connection_upgrade;
    Ok(facts)
}

/// A parsed request head, positions relative to the first byte of the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub head_len: usize,
    pub method_len: u32,
    pub target_start: u32,
    pub target_len: u32,
    pub version_minor: u8,
    pub headers: Vec<HeaderSpan>,
    pub facts: HeadFacts,
    pub body: BodyFraming,
}

/// Parses a request head at the start of `buf`. `Ok(None)`: incomplete so far.
pub fn parse_request_head(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<RequestHead>, HeadError> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let headers = &mut storage[..limits.max_headers.clamp(1, MAX_HEADERS)];
    let mut request = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut request, buf, headers)
        .map_err(HeadError::Syntax)?;
    let head_len = match status {
        httparse::Status::Complete(len) if len <= limits.max_head_bytes => len,
        httparse::Status::Partial if buf.len() < limits.max_head_bytes => return Ok(None),
        _ => return Err(HeadError::TooLarge(limits.max_head_bytes)),
    };
    let method = request.method.unwrap_or_default().as_bytes();
    let target = request.path.unwrap_or_default().as_bytes();
    let facts = head_facts(request.headers)?;
    let headers = header_spans(buf, request.headers);
    // RFC 9112 §6.3: chunked (final coding) wins over Content-Length; any other
    // Transfer-Encoding makes a request's length undeterminable; otherwise Content-Length or no
    // body.
    let body = match (facts.chunked, facts.content_length) {
        (Some(true), _) => BodyFraming::Chunked,
        (Some(false), _) => return Err(HeadError::TransferEncoding),
        (None, Some(0) | None) => BodyFraming::None,
        (None, Some(length)) => BodyFraming::Length(length),
    };
    Ok(Some(RequestHead {
        head_len,
        method_len: method.len() as u32,
        target_start: offset_in(buf, target),
        target_len: target.len() as u32,
        version_minor: request.version.unwrap_or(1),
        headers,
        facts,
        body,
    }))
}

/// A parsed response head, positions relative to the first byte of the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub head_len: usize,
    pub status: u16,
    pub version_minor: u8,
    pub facts: HeadFacts,
}

/// Parses a response head at the start of `buf`. `Ok(None)`: incomplete so far.
pub fn parse_response_head(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let headers = &mut storage[..limits.max_headers.clamp(1, MAX_HEADERS)];
    let mut response = httparse::Response::new(&mut []);
    // RFC 9112 §5.2: a recipient may replace obs-fold with a space; nothing reads the value
    // of a folded field here, so accepting it keeps the response and its pair.
    let status = httparse::ParserConfig::default()
        .allow_obsolete_multiline_headers_in_responses(true)
        .parse_response_with_uninit_headers(&mut response, buf, headers)
        .map_err(HeadError::Syntax)?;
    let head_len = match status {
        httparse::Status::Complete(len) if len <= limits.max_head_bytes => len,
        httparse::Status::Partial if buf.len() < limits.max_head_bytes => return Ok(None),
        _ => return Err(HeadError::TooLarge(limits.max_head_bytes)),
    };
    let facts = head_facts(response.headers)?;
    Ok(Some(ResponseHead {
        head_len,
        status: response.code.unwrap_or_default(),
        version_minor: response.version.unwrap_or(1),
        facts,
    }))
}

/// What follows a response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    /// Interim 1xx (other than 101): another response head follows for the same request.
    Interim,
    /// The connection switches protocol (101, or 2xx to CONNECT).
    Switch,
    Body(BodyFraming),
}

/// RFC 9112 §6.3 for responses, given what the request was.
pub fn response_body(
    head: &ResponseHead,
    request_is_head: bool,
    request_is_connect: bool,
) -> Result<ResponseBody, HeadError> {
    let status = head.status;
    if status == 101 || (request_is_connect && (200..300).contains(&status)) {
        return Ok(ResponseBody::Switch);
    }
    if (100..200).contains(&status) {
        return Ok(ResponseBody::Interim);
    }
    if request_is_head || status == 204 || status == 304 {
        return Ok(ResponseBody::Body(BodyFraming::None));
    }
    Ok(ResponseBody::Body(
        match (head.facts.chunked, head.facts.content_length) {
            (Some(true), _) => BodyFraming::Chunked,
            (Some(false), _) => BodyFraming::Close,
            (None, Some(0)) => BodyFraming::None,
            (None, Some(length)) => BodyFraming::Length(length),
            (None, None) => BodyFraming::Close,
        },
    ))
}

/// A framed request: the exact bytes that were on the wire plus a parsed view of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    bytes: Bytes,
    head: RequestHead,
}

impl HttpRequest {
    pub(crate) fn new(bytes: Bytes, head: RequestHead) -> Self {
        Self { bytes, head }
    }

    /// The exact request bytes (head and body as on the wire, chunked framing included). For a
    /// request that was too large to keep, only the head.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Head bytes, up to and including the empty line.
    pub fn head_bytes(&self) -> &[u8] {
        &self.bytes[..self.head.head_len.min(self.bytes.len())]
    }

    /// Body bytes as on the wire (chunked framing included).
    pub fn body_bytes(&self) -> &[u8] {
        &self.bytes[self.head.head_len.min(self.bytes.len())..]
    }

    pub fn head_len(&self) -> usize {
        self.head.head_len
    }

    pub fn method(&self) -> &str {
        // httparse accepted it as a token: ASCII.
        std::str::from_utf8(&self.bytes[..self.head.method_len as usize]).unwrap_or_default()
    }

    pub fn target(&self) -> &str {
        let start = self.head.target_start as usize;
        std::str::from_utf8(&self.bytes[start..start + self.head.target_len as usize])
            .unwrap_or_default()
    }

    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn version_minor(&self) -> u8 {
        self.head.version_minor
    }

    /// Header positions within [`bytes`](Self::bytes), in wire order.
    pub fn header_spans(&self) -> &[HeaderSpan] {
        &self.head.headers
    }

    /// Header fields in wire order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.head
            .headers
            .iter()
            .map(|span| (span.name(&self.bytes), span.value(&self.bytes)))
    }

    /// First value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(header, _)| header.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }

    /// Host header value, if any.
    pub fn host(&self) -> Option<&[u8]> {
        self.head
            .facts
            .host
            .map(|index| self.head.headers[index].value(&self.bytes))
    }

    /// How the body is delimited.
    pub fn body_framing(&self) -> BodyFraming {
        self.head.body
    }

    /// `Expect: 100-continue` was sent.
    pub fn expects_continue(&self) -> bool {
        self.head.facts.expect_continue
    }

    pub(crate) fn parsed_head(&self) -> &RequestHead {
        &self.head
    }
}

/// A response head off the wire (the body is summarised by its digest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponseHead {
    bytes: Bytes,
    head: ResponseHead,
}

impl HttpResponseHead {
    pub(crate) fn new(bytes: Bytes, head: ResponseHead) -> Self {
        Self { bytes, head }
    }

    /// Exact head bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn status(&self) -> u16 {
        self.head.status
    }

    pub fn version_minor(&self) -> u8 {
        self.head.version_minor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_headers: 8,
        max_head_bytes: 256,
    };

    fn request(text: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request_head(text.as_bytes(), &LIMITS)
    }

    #[test]
    fn request_line_and_header_positions() {
        let text = "GET /a?b=c HTTP/1.1\r\nHost: example.test\r\nX-A:  1 \r\n\r\nrest";
        let head = request(text).unwrap().unwrap();
        assert_eq!(head.head_len, text.len() - 4);
        let parsed = HttpRequest::new(Bytes::from(text), head);
        assert_eq!(parsed.method(), "GET");
        assert_eq!(parsed.target(), "/a?b=c");
        assert_eq!(parsed.version_minor(), 1);
        assert_eq!(parsed.host(), Some(&b"example.test"[..]));
        // RFC 9112 §5: surrounding whitespace is not part of the value.
        assert_eq!(parsed.header("x-a"), Some(&b"1"[..]));
        assert_eq!(parsed.body_framing(), BodyFraming::None);
    }

    #[test]
    fn incomplete_head_waits_and_oversized_head_fails() {
        assert_eq!(request("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(300));
        assert_eq!(request(&long), Err(HeadError::TooLarge(256)));
        let many: String = (0..9).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(
            request(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Err(HeadError::Syntax(httparse::Error::TooManyHeaders))
        );
    }

    #[test]
    fn content_length_rules_rfc9110_8_6() {
        let framing = |headers: &str| {
            request(&format!("POST / HTTP/1.1\r\n{headers}\r\n")).map(|h| h.unwrap().body)
        };
        assert_eq!(framing("Content-Length: 5\r\n"), Ok(BodyFraming::Length(5)));
        assert_eq!(
            framing("Content-Length: 5, 5\r\n"),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            framing("Content-Length: 5\r\nContent-Length: 5\r\n"),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(framing("Content-Length: 0\r\n"), Ok(BodyFraming::None));
        assert_eq!(
            framing("Content-Length: 5\r\nContent-Length: 6\r\n"),
            Err(HeadError::ContentLength)
        );
        assert_eq!(
            framing("Content-Length: -1\r\n"),
            Err(HeadError::ContentLength)
        );
        assert_eq!(
            framing("Content-Length: 1e3\r\n"),
            Err(HeadError::ContentLength)
        );
    }

    #[test]
    fn transfer_encoding_rules_rfc9112_6_3() {
        let framing = |headers: &str| {
            request(&format!("POST / HTTP/1.1\r\n{headers}\r\n")).map(|h| h.unwrap().body)
        };
        assert_eq!(
            framing("Transfer-Encoding: chunked\r\n"),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(
            framing("Transfer-Encoding: gzip, Chunked\r\n"),
            Ok(BodyFraming::Chunked)
        );
        // Chunked overrides Content-Length.
        assert_eq!(
            framing("Content-Length: 10\r\nTransfer-Encoding: chunked\r\n"),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(
            framing("Transfer-Encoding: chunked, gzip\r\n"),
            Err(HeadError::TransferEncoding)
        );
    }

    #[test]
    fn response_framing_rfc9112_6_3() {
        let body = |text: &str, head_request: bool, connect: bool| {
            let head = parse_response_head(text.as_bytes(), &LIMITS)
                .unwrap()
                .unwrap();
            response_body(&head, head_request, connect).unwrap()
        };
        let with_length = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n";
        assert_eq!(
            body(with_length, false, false),
            ResponseBody::Body(BodyFraming::Length(7))
        );
        assert_eq!(
            body(with_length, true, false),
            ResponseBody::Body(BodyFraming::None),
            "no body for HEAD"
        );
        for status in ["204 No Content", "304 Not Modified"] {
            let text = format!("HTTP/1.1 {status}\r\nContent-Length: 7\r\n\r\n");
            assert_eq!(
                body(&text, false, false),
                ResponseBody::Body(BodyFraming::None)
            );
        }
        assert_eq!(
            body("HTTP/1.1 100 Continue\r\n\r\n", false, false),
            ResponseBody::Interim
        );
        assert_eq!(
            body("HTTP/1.1 101 Switching Protocols\r\n\r\n", false, false),
            ResponseBody::Switch
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\n\r\n", false, true),
            ResponseBody::Switch
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\n\r\n", false, false),
            ResponseBody::Body(BodyFraming::Close)
        );
        assert_eq!(
            body(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                false
            ),
            ResponseBody::Body(BodyFraming::Close)
        );
        assert_eq!(
            body(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                false,
                false
            ),
            ResponseBody::Body(BodyFraming::Chunked)
        );
    }

    #[test]
    fn connection_options_are_listed_tokens() {
        assert!(lists_option(b"TE, Close", b"close"));
        assert!(lists_option(b"keep-alive", b"Keep-Alive"));
        assert!(!lists_option(b"closed, x-close", b"close"));
        assert!(!lists_option(b"", b"close"));
    }

    #[test]
    fn upgrade_needs_the_connection_option() {
        let facts = |headers: &str| {
            request(&format!("GET / HTTP/1.1\r\n{headers}\r\n"))
                .unwrap()
                .unwrap()
                .facts
        };
        assert!(facts("Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n").upgrade);
        assert!(!facts("Upgrade: websocket\r\n").upgrade);
        assert!(facts("Expect: 100-Continue\r\n").expect_continue);
    }
}
