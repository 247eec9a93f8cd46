//! Header rewriting producing the exact bytes to replay (I/O-free).
//!
//! Only these lines change: Host (per the `host` setting), each X-Forwarded-Host element (same
//! rule: a staging service building redirects from it must not send users to production), the
//! `set_headers` and `remove_headers` fields, and the hop-by-hop fields (below). Everything else
//! stays byte-identical: the request line, header order and case, whitespace, line endings, the
//! body and its chunked framing.
//!
//! Hop-by-hop fields (RFC 9110 §7.6.1) describe the client's connection to the primary, not the
//! daemon's pooled keep-alive connection to the shadow, so they are not replayed: `Connection`,
//! every field its options name, `Keep-Alive`, `Proxy-Connection`, `TE` and `Upgrade`. A client
//! that sends `Connection: close` on every request would otherwise close the replay connection
//! after each replay (a new TCP connection to the shadow per request). Named fields that frame
//! or route the request stay whatever `Connection` says: Transfer-Encoding (the body is replayed
//! as captured), Content-Length and Host. An HTTP/1.0 request keeps its version and gets
//! `Connection: keep-alive` (1.0 closes by default); a shadow that still closes ends that
//! connection after its response. `set_headers` wins over all of this (a configured
//! `Connection` is sent).
//!
//! Decisions where the contract is silent:
//! - `set_headers` replaces the value of the first field of that name in place (name spelling
//!   and whitespace kept), drops later duplicates, and appends `Name: value` before the empty
//!   line when absent (name as configured, the head's own line ending).
//! - A request without Host (HTTP/1.0) gets one only in `shadow` and `literal:` modes, which
//!   name a host; `suffix:` and `keep` have nothing to derive it from and leave it absent. It is
//!   inserted right after the request line (RFC 9110 §7.2: Host first).
//! - obs-fold (a field line starting with whitespace) is rejected, as httparse rejects it in
//!   requests (RFC 9112 §5.2 lets a server reject it).
//! - An absolute-form request target (`GET http://host/ HTTP/1.1`) is not rewritten.
//! - A request with Transfer-Encoding loses its Content-Length fields (RFC 9112 §6.3 item 3: the
//!   request is framed as chunked, and an intermediary that forwards it must remove
//!   Content-Length first; sent with both, it is the ambiguity request smuggling uses).
//!
//! The result keeps head and body apart: the body is a zero-copy slice of the input, and a head
//! with nothing to change is one too. The replay writes a bodiless request's head as it is;
//! otherwise it copies head and body into one buffer per write (one syscall for a pipelined
//! batch).

mod head;
mod host;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use bytes::Bytes;

use crate::{
    config::{HeaderField, ShadowUrl, TargetConfig},
    http::lists_option,
};
use head::HeadLines;
use host::HostRule;

/// Why a request could not be rewritten (the http module only emits heads that cannot fail
/// these checks except obs-fold, which it also rejects).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// `head_len` is larger than the request.
    #[error("head length {head_len} is beyond the request's {len} bytes")]
    HeadLength { head_len: usize, len: usize },
    /// The head does not end with its empty line at `head_len`.
    #[error("the head does not end with an empty line exactly at its length")]
    Unterminated,
    /// A field line continues the previous one (obs-fold); `line` is 1-based.
    #[error("obsolete line folding on head line {line} is not supported")]
    ObsFold { line: usize },
    /// A field line without a colon, or with whitespace in its name; `line` is 1-based.
    #[error("head line {line} is not a `name: value` field")]
    MalformedField { line: usize },
}

/// The request to replay: `head` then `body`, exactly these bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewrittenRequest {
    /// The head, empty line included.
    pub head: Bytes,
    /// The original body bytes (chunked framing and trailers included), zero-copy.
    pub body: Bytes,
    /// The rewritten head asks the server to close the connection after the response (a
    /// `close` option in a Connection field it keeps, sets or appends).
    pub asks_close: bool,
}

impl RewrittenRequest {
    /// Total bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Whether there are no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Head and body in one buffer (copies both; the replay should write the two parts).
    pub fn to_bytes(&self) -> Bytes {
        let mut all = Vec::with_capacity(self.len());
        all.extend_from_slice(&self.head);
        all.extend_from_slice(&self.body);
        Bytes::from(all)
    }
}

/// One target's request rewriter.
#[derive(Clone, Debug)]
pub struct Rewriter {
    host: HostRule,
    set_headers: Vec<HeaderField>,
    /// Lower-case names.
    remove_headers: Vec<String>,
}

/// What happens to one field line.
enum Edit {
    Keep,
    Drop,
    /// Replace the value (surrounding bytes of the line kept).
    Value(Vec<u8>),
}

impl Rewriter {
    /// The same rewriter, also setting `marker` on every replay (the `[replay] marker_header`
    /// by which other daemons recognise a replay): it takes the place of a `set_headers` entry
    /// of the same name.
    pub fn with_marker(mut self, marker: Option<HeaderField>) -> Self {
        if let Some(marker) = marker {
            self.set_headers
                .retain(|field| !field.name.eq_ignore_ascii_case(&marker.name));
            self.set_headers.push(marker);
        }
        self
    }

    /// The rewriter of `target`'s replays to `shadow` (its `host`, `set_headers` and
    /// `remove_headers`; `host = "shadow"` names that shadow's authority).
    pub fn new(target: &TargetConfig, shadow: &ShadowUrl) -> Self {
        Self {
            host: HostRule::new(&target.host, shadow),
            set_headers: target.set_headers.clone(),
            remove_headers: target.remove_headers.clone(),
        }
    }

    /// Rewrites one request: `request` is its exact bytes (head and body as captured) and
    /// `head_len` the length of its head, empty line included. Bytes after the head are the
    /// body and are never looked at.
    pub fn rewrite(
        &self,
        request: &Bytes,
        head_len: usize,
    ) -> Result<RewrittenRequest, RewriteError> {
        if head_len > request.len() {
            return Err(RewriteError::HeadLength {
                head_len,
                len: request.len(),
            });
        }
        let head = &request[..head_len];
        let lines = HeadLines::parse(head)?;
        let body = request.slice(head_len..);

        let line_ending = lines.line_ending(head);
        let mut set_done = vec![false; self.set_headers.len()];
        // The head being built, once something changes; bytes of `head` before `copied_to` are
        // in it. While nothing changes it stays `None` and the head is returned without a copy.
        let mut out: Option<Vec<u8>> = None;
        let mut copied_to = 0;
        let has_host = lines
            .fields
            .iter()
            .any(|field| head[field.name.clone()].eq_ignore_ascii_case(b"host"));
        let has_transfer_encoding = lines
            .fields
            .iter()
            .any(|field| head[field.name.clone()].eq_ignore_ascii_case(b"transfer-encoding"));
        if let HostRule::Replace(host) = &self.host
            && !has_host
        {
            let mut new_head = Vec::with_capacity(head_len + 128);
            new_head.extend_from_slice(&head[..lines.request_line_end]);
            push_field(&mut new_head, b"Host", host, line_ending);
            out = Some(new_head);
            copied_to = lines.request_line_end;
        }
        let connection_options = connection_options(head, &lines);
        let mut asks_close = false;
        for field in &lines.fields {
            let name = &head[field.name.clone()];
            let value = &head[field.value.clone()];
            let edit = if has_transfer_encoding && name.eq_ignore_ascii_case(b"content-length") {
                Edit::Drop
            } else {
                self.edit(name, value, &mut set_done, &connection_options)
            };
            if name.eq_ignore_ascii_case(b"connection") {
                asks_close |= match &edit {
                    Edit::Keep => lists_option(value, b"close"),
                    Edit::Value(new_value) => lists_option(new_value, b"close"),
                    Edit::Drop => false,
                };
            }
            if matches!(edit, Edit::Keep) {
                continue;
            }
            let out = out.get_or_insert_with(|| Vec::with_capacity(head_len + 128));
            out.extend_from_slice(&head[copied_to..field.line.start]);
            if let Edit::Value(new_value) = edit {
                out.extend_from_slice(&head[field.line.start..field.value.start]);
                out.extend_from_slice(&new_value);
                out.extend_from_slice(&head[field.value.end..field.line.end]);
            }
            copied_to = field.line.end;
        }

        let sets_connection = self
            .set_headers
            .iter()
            .any(|field| field.name.eq_ignore_ascii_case("connection"));
        let keep_alive = (is_http10(&head[..lines.request_line_end]) && !sets_connection)
            .then_some(&*KEEP_ALIVE);
        let mut appended = self
            .set_headers
            .iter()
            .zip(&set_done)
            .filter(|(_, done)| !**done)
            .map(|(field, _)| field)
            .chain(keep_alive)
            .peekable();
        asks_close |= appended.clone().any(|field| {
            field.name.eq_ignore_ascii_case("connection")
                && lists_option(field.value.as_bytes(), b"close")
        });
        if out.is_none() && appended.peek().is_none() {
            return Ok(RewrittenRequest {
                head: request.slice(..head_len),
                body,
                asks_close,
            });
        }
        let mut out = out.unwrap_or_else(|| Vec::with_capacity(head_len + 128));
        out.extend_from_slice(&head[copied_to..lines.blank_line_start]);
        for field in appended {
            push_field(
                &mut out,
                field.name.as_bytes(),
                field.value.as_bytes(),
                line_ending,
            );
        }
        out.extend_from_slice(line_ending);
        Ok(RewrittenRequest {
            head: Bytes::from(out),
            body,
            asks_close,
        })
    }

    fn edit(
        &self,
        name: &[u8],
        value: &[u8],
        set_done: &mut [bool],
        connection_options: &[&[u8]],
    ) -> Edit {
        if let Some(index) = self
            .set_headers
            .iter()
            .position(|field| name.eq_ignore_ascii_case(field.name.as_bytes()))
        {
            if std::mem::replace(&mut set_done[index], true) {
                return Edit::Drop;
            }
            let new_value = self.set_headers[index].value.as_bytes();
            return if value == new_value {
                Edit::Keep
            } else {
                Edit::Value(new_value.to_vec())
            };
        }
        if is_hop_by_hop(name, connection_options)
            || self
                .remove_headers
                .iter()
                .any(|removed| name.eq_ignore_ascii_case(removed.as_bytes()))
        {
            return Edit::Drop;
        }
        let rewritten = if name.eq_ignore_ascii_case(b"host") {
            self.host.host(value)
        } else if name.eq_ignore_ascii_case(b"x-forwarded-host") {
            self.host.forwarded_hosts(value)
        } else {
            None
        };
        rewritten.map_or(Edit::Keep, Edit::Value)
    }
}

/// The field every HTTP/1.0 replay gets, so that the pooled connection stays open.
static KEEP_ALIVE: std::sync::LazyLock<HeaderField> = std::sync::LazyLock::new(|| {
    // A constant that is a valid field.
    HeaderField::new("Connection", "keep-alive").expect("a valid header field")
});

/// Fields that are hop-by-hop whatever `Connection` says (RFC 9110 §7.6.1; `Proxy-Connection`
/// is its pre-standard twin, `Keep-Alive` RFC 2068's).
const HOP_BY_HOP: [&[u8]; 5] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"upgrade",
];

/// Named in `Connection` and yet replayed: they frame or route the request, not the hop.
const NEVER_HOP_BY_HOP: [&[u8]; 3] = [b"transfer-encoding", b"content-length", b"host"];

/// The options of every `Connection` field of the head (tokens, as sent).
fn connection_options<'a>(head: &'a [u8], lines: &HeadLines) -> Vec<&'a [u8]> {
    lines
        .fields
        .iter()
        .filter(|field| head[field.name.clone()].eq_ignore_ascii_case(b"connection"))
        .flat_map(|field| head[field.value.clone()].split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|option| !option.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &[u8], connection_options: &[&[u8]]) -> bool {
    let named = |list: &[&[u8]]| list.iter().any(|listed| name.eq_ignore_ascii_case(listed));
    named(&HOP_BY_HOP) || (named(connection_options) && !named(&NEVER_HOP_BY_HOP))
}

/// Whether the request line (line ending included) is HTTP/1.0's.
fn is_http10(request_line: &[u8]) -> bool {
    request_line.trim_ascii_end().ends_with(b" HTTP/1.0")
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8], line_ending: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(line_ending);
}
