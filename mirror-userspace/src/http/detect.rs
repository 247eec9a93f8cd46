//! Recognising what a byte stream is: TLS or HTTP/2 instead of HTTP/1.x, and whether a captured
//! segment starts an HTTP/1.x message after joining a connection mid-stream or losing bytes in a
//! gap.

/// Outcome of looking at the first bytes of a client stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniff {
    Http1,
    Tls,
    Http2,
    /// Too few bytes to tell.
    NeedMore,
}

/// HTTP/2 connection preface (RFC 9113 §3.4), of which the first 16 bytes identify it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Looks at the first bytes a client sent on a connection (or after joining it mid-stream).
pub fn sniff_client(bytes: &[u8]) -> Sniff {
    match bytes {
        [] => Sniff::NeedMore,
        // TLS record header: content type (20..=23; 22 is the ClientHello's handshake), then
        // the legacy version 3.x (RFC 8446 §5.1).
        [0x14..=0x17] | [0x14..=0x17, 0x03] => Sniff::NeedMore,
        [0x14..=0x17, 0x03, 0x00..=0x04, ..] => Sniff::Tls,
        _ if bytes.starts_with(H2_PREFACE) => Sniff::Http2,
        _ if H2_PREFACE.starts_with(bytes) => Sniff::NeedMore,
        _ => Sniff::Http1,
    }
}

/// Methods a resynchronising scanner accepts (RFC 9110 §9 plus common WebDAV ones). Requiring a
/// known method keeps body bytes from looking like a request line; the candidate must then parse
/// as a complete head before anything is emitted.
pub(super) const METHODS: [&[u8]; 16] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
    b"PROPFIND ",
    b"PROPPATCH ",
    b"MKCOL ",
    b"COPY ",
    b"MOVE ",
    b"LOCK ",
    b"UNLOCK ",
];

/// Result of scanning for the start of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// A plausible message starts at this index.
    Found(usize),
    /// The bytes from this index on could still become one: keep them and wait.
    Partial(usize),
    NotFound,
}

fn match_prefix(rest: &[u8], prefix: &[u8]) -> Option<bool> {
    if rest.len() >= prefix.len() {
        rest.starts_with(prefix).then_some(true)
    } else {
        prefix.starts_with(rest).then_some(false)
    }
}

/// Candidates are looked for at every position, not only at line starts: a message that follows
/// a Content-Length body starts mid-line.
fn scan(data: &[u8], first_bytes: &[u8], matches: impl Fn(&[u8]) -> Option<bool>) -> Scan {
    let mut position = 0;
    while position < data.len() {
        let Some(skip) = data[position..]
            .iter()
            .position(|byte| first_bytes.contains(byte))
        else {
            break;
        };
        position += skip;
        match matches(&data[position..]) {
            Some(true) => return Scan::Found(position),
            Some(false) => return Scan::Partial(position),
            None => position += 1,
        }
    }
    Scan::NotFound
}

/// Finds the next `METHOD SP`.
pub fn find_request_line(data: &[u8]) -> Scan {
    scan(data, b"GHPDCOTMLU", |rest| {
        let mut partial = false;
        for method in METHODS {
            match match_prefix(rest, method) {
                Some(true) => return Some(true),
                Some(false) => partial = true,
                None => {}
            }
        }
        partial.then_some(false)
    })
}

/// Finds the next `HTTP/1.`.
pub fn find_status_line(data: &[u8]) -> Scan {
    scan(data, b"H", |rest| match_prefix(rest, b"HTTP/1."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_tls_client_hello_and_h2_preface() {
        assert_eq!(sniff_client(&[0x16, 0x03, 0x01, 0x02, 0x00]), Sniff::Tls);
        assert_eq!(
            sniff_client(&[0x17, 0x03, 0x03]),
            Sniff::Tls,
            "mid-stream record"
        );
        assert_eq!(sniff_client(&[0x16]), Sniff::NeedMore);
        assert_eq!(
            sniff_client(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Sniff::Http2
        );
        assert_eq!(sniff_client(b"PRI * HT"), Sniff::NeedMore);
        assert_eq!(sniff_client(b"POST / HTTP/1.1\r\n"), Sniff::Http1);
        assert_eq!(sniff_client(b"GET"), Sniff::Http1);
    }

    #[test]
    fn request_lines_are_found_anywhere() {
        assert_eq!(find_request_line(b"GET / HTTP/1.1"), Scan::Found(0));
        assert_eq!(find_request_line(b"body-bytesPOST /a"), Scan::Found(10));
        assert_eq!(find_request_line(b"tail\r\nDEL"), Scan::Partial(6));
        assert_eq!(find_request_line(b"GETX PUTS"), Scan::NotFound);
        assert_eq!(find_request_line(b"a\nb\nOPTIONS *"), Scan::Found(4));
    }

    #[test]
    fn status_lines_are_found_anywhere() {
        assert_eq!(find_status_line(b"xx\r\nHTTP/1.1 200 OK"), Scan::Found(4));
        assert_eq!(find_status_line(b"xx\r\nHTT"), Scan::Partial(4));
        assert_eq!(find_status_line(b"HTTP/2 200"), Scan::NotFound);
    }
}
