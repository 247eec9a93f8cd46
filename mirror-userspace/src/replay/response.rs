//! Reads one response from a shadow connection with the same framing rules as the capture side
//! (RFC 9112 §6.3), so a keep-alive connection stays usable after every response, and digests
//! the body the same way (xxh3-128 of the de-chunked body) so bodies compare across sides.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use xxhash_rust::xxh3::Xxh3;

use crate::held::{BodyBudget, BodyHold, HeldBody};
use crate::http::{BodyReader, HeadLimits, ResponseBody, parse_response_head};

/// Why a response could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("reading from the shadow: {0}")]
    Io(#[from] std::io::Error),
    #[error("the shadow closed the connection without sending a response")]
    NoResponse,
    #[error("the shadow closed the connection before a complete response")]
    Closed,
    #[error("malformed response head from the shadow: {0}")]
    Head(#[from] crate::http::HeadError),
    #[error("malformed chunked body from the shadow: {0}")]
    Chunked(#[from] crate::http::ChunkedError),
    #[error("the shadow switched protocols (status {0}); the connection cannot be reused")]
    Switched(u16),
}

/// What the comparison needs of a shadow response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowResponse {
    pub status: u16,
    /// The final response's head bytes (status line and header lines).
    pub head: Bytes,
    pub body_len: u64,
    pub body_digest: u128,
    /// The body after removing chunked framing, when bodies are held and it fitted the budget.
    pub body: Option<Arc<HeldBody>>,
    /// The connection must not be reused (close-delimited body, `Connection: close`, HTTP/1.0).
    pub closes: bool,
}

const LIMITS: HeadLimits = HeadLimits {
    max_headers: 100,
    max_head_bytes: 65_536,
};
const MAX_TRAILER_BYTES: usize = 65_536;

/// Reads more bytes into `buffer`; `Ok(false)` at end of stream.
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
) -> std::io::Result<bool> {
    buffer.reserve(16 * 1024);
    Ok(reader.read_buf(buffer).await? > 0)
}

fn connection_closes(head: &crate::http::ResponseHead) -> bool {
    if head.version_minor == 0 {
        !head.facts.connection_keep_alive
    } else {
        head.facts.connection_close
    }
}

/// Reads the final response to one request (interim 1xx responses are skipped).
/// Bytes after the response stay in `buffer` (a well-behaved server sends none). With
/// `hold`, the body is also kept within that budget.
pub async fn read_response<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    request_is_head: bool,
    hold: Option<&BodyBudget>,
) -> Result<ShadowResponse, ResponseError> {
    let mut nothing_received = true;
    loop {
        // Head.
        let head = loop {
            nothing_received &= buffer.is_empty();
            if let Some(head) = parse_response_head(buffer, &LIMITS)? {
                break head;
            }
            if !fill(reader, buffer).await? {
                return Err(if nothing_received {
                    ResponseError::NoResponse
                } else {
                    ResponseError::Closed
                });
            }
        };
        let framing = match crate::http::response_body(&head, request_is_head, false)? {
            ResponseBody::Interim => {
                buffer.advance(head.head_len);
                continue;
            }
            ResponseBody::Switch => return Err(ResponseError::Switched(head.status)),
            ResponseBody::Body(framing) => framing,
        };
        let closes = connection_closes(&head) || framing == crate::http::BodyFraming::Close;
        let head_bytes = buffer.split_to(head.head_len).freeze();
        // Body.
        let mut body = BodyReader::new(framing, MAX_TRAILER_BYTES);
        let mut hasher = Xxh3::new();
        let mut held = hold.map_or(BodyHold::Dropped, BodyBudget::start);
        let mut body_len = 0u64;
        loop {
            let consumed = body.feed(buffer, &mut |data: &[u8]| {
                body_len += data.len() as u64;
                hasher.update(data);
                held.extend(data);
            })?;
            buffer.advance(consumed);
            if body.is_done() {
                break;
            }
            if !fill(reader, buffer).await? {
                if matches!(body, BodyReader::Close) {
                    break;
                }
                return Err(ResponseError::Closed);
            }
        }
        return Ok(ShadowResponse {
            status: head.status,
            head: head_bytes,
            body_len,
            body_digest: hasher.digest128(),
            body: held.finish().map(Arc::new),
            closes,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(input: &[u8], is_head: bool) -> (Result<ShadowResponse, ResponseError>, usize) {
        let mut reader = input;
        let mut buffer = BytesMut::new();
        let result = read_response(&mut reader, &mut buffer, is_head, None).await;
        (result, buffer.len() + reader.len())
    }

    fn run<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn content_length_body_is_digested_and_the_next_response_left() {
        let (result, left) = run(read(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 204 No Content\r\n\r\n",
            false,
        ));
        let response = result.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body_len, 5);
        assert_eq!(response.body_digest, xxhash_rust::xxh3::xxh3_128(b"hello"));
        assert!(!response.closes);
        assert_eq!(left, "HTTP/1.1 204 No Content\r\n\r\n".len());
    }

    #[test]
    fn chunked_body_digest_equals_the_dechunked_body() {
        let (result, _) = run(read(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nhel\r\n2\r\nlo\r\n0\r\nT: v\r\n\r\n",
            false,
        ));
        let response = result.unwrap();
        assert_eq!(response.body_digest, xxhash_rust::xxh3::xxh3_128(b"hello"));
    }

    #[test]
    fn interim_responses_are_skipped_and_head_has_no_body() {
        let (result, left) = run(read(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            true,
        ));
        let response = result.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body_len, 0);
        assert_eq!(left, 0);
    }

    #[test]
    fn close_delimited_and_connection_close_are_not_reusable() {
        let (result, _) = run(read(b"HTTP/1.1 200 OK\r\n\r\nuntil close", false));
        let response = result.unwrap();
        assert!(response.closes);
        assert_eq!(response.body_len, 11);
        let (result, _) = run(read(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        ));
        assert!(result.unwrap().closes);
        let (result, _) = run(read(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false));
        assert!(result.unwrap().closes, "HTTP/1.0 without keep-alive");
        let (result, _) = run(read(
            b"HTTP/1.1 200 OK\r\nConnection: x-a\r\nConnection: TE, Close\r\nContent-Length: 0\r\n\r\n",
            false,
        ));
        assert!(
            result.unwrap().closes,
            "close in the second Connection line"
        );
    }

    #[test]
    fn keep_alive_responses_are_reusable() {
        for response in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-closed\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
        ] {
            let (result, _) = run(read(response, false));
            assert!(
                !result.unwrap().closes,
                "{}",
                String::from_utf8_lossy(response)
            );
        }
    }

    #[test]
    fn truncated_and_malformed_responses_are_errors() {
        let (result, _) = run(read(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            false,
        ));
        assert!(matches!(result, Err(ResponseError::Closed)));
        let (result, _) = run(read(b"", false));
        assert!(matches!(result, Err(ResponseError::NoResponse)));
        let (result, _) = run(read(b"garbage\r\n\r\n", false));
        assert!(matches!(result, Err(ResponseError::Head(_))));
        let (result, _) = run(read(b"HTTP/1.1 101 Switching\r\n\r\n", false));
        assert!(matches!(result, Err(ResponseError::Switched(101))));
    }
}
