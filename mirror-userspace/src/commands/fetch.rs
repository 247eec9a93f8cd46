//! `GET` over plain HTTP for the commands that read a daemon's `/metrics` (`mirror stats`,
//! `mirror verdict --metrics-url`) or Prometheus' query API (`mirror verdict --prometheus-url`).
//!
//! A minimal HTTP/1.1 client on tokio's `TcpStream` rather than a client library: the URL is
//! always plain `http://host:port/path?query`, and `Connection: close` lets the response end at
//! EOF. Every error names the URL, and where the usual mistake is known, a hint.

use std::{net::IpAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use url::{Host, Url};

use crate::http::{BodyFraming, BodyReader};

/// Far above any real exposition (~20 KB per target) or query result; bounds memory against a
/// wrong URL.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;
/// Response headers parsed; the daemon sends three, Prometheus a handful.
const MAX_HEADERS: usize = 64;
/// Characters of an error response's body quoted in the error.
const MAX_DETAIL_CHARS: usize = 300;

/// What is asked, which decides the `Accept` header and the hints of errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A daemon's `/metrics`.
    Daemon,
    /// Prometheus' HTTP API.
    Prometheus,
}

/// Why a URL could not be fetched. Each message names the URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: only http:// URLs are supported")]
    Scheme { url: String },
    #[error("{url}: the URL has no host")]
    NoHost { url: String },
    // The cause is spelled out in the message (with a hint) and deliberately not a `#[source]`:
    // `main` prints the error chain, which would repeat it as "Connection refused (os error 111)".
    #[error("fetching {url}: {}", describe(error, *endpoint))]
    Io {
        url: String,
        error: std::io::Error,
        endpoint: Endpoint,
    },
    #[error("fetching {url}: no complete response within {}s", timeout.as_secs_f64())]
    Timeout { url: String, timeout: Duration },
    #[error("fetching {url}: the response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge { url: String },
    #[error("fetching {url}: malformed HTTP response ({what})")]
    Malformed { url: String, what: &'static str },
    #[error("fetching {url}: HTTP {status} {reason}{detail}")]
    Status {
        url: String,
        status: u16,
        reason: String,
        /// A hint, or what the server said.
        detail: String,
    },
}

/// An I/O error as a lowercase cause, with a hint where the usual mistake is known.
fn describe(error: &std::io::Error, endpoint: Endpoint) -> String {
    let text = error.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    let cause: String = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    match (error.kind(), endpoint) {
        (std::io::ErrorKind::ConnectionRefused, Endpoint::Daemon) => {
            format!("{cause} (is `mirror run` running? --metrics-addr?)")
        }
        (std::io::ErrorKind::ConnectionRefused, Endpoint::Prometheus) => {
            format!("{cause} (is Prometheus there? --prometheus-url?)")
        }
        _ => cause,
    }
}

/// What follows an error status: a hint for the daemon, Prometheus' own `error` for its API.
fn status_detail(status: u16, body: &[u8], endpoint: Endpoint) -> String {
    match endpoint {
        Endpoint::Daemon if status == 404 => " (the daemon serves /metrics)".to_owned(),
        Endpoint::Daemon => String::new(),
        Endpoint::Prometheus => {
            let said = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|json| json.get("error")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
            if said.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    said.chars().take(MAX_DETAIL_CHARS).collect::<String>()
                )
            }
        }
    }
}

/// A daemon's `/metrics` URL from what the user typed: its base URL (`http://host:9477`, with
/// or without the final `/`) gets the path `/metrics`; any other path is kept as typed (a typo
/// should come back as the 404 of what was typed).
pub fn metrics_url(url: &Url) -> Url {
    let mut url = url.clone();
    if matches!(url.path(), "" | "/" | "/metrics/") {
        url.set_path("/metrics");
    }
    url
}

/// `GET url` over a fresh connection, returning the body of a 200 response.
pub async fn fetch(url: &Url, endpoint: Endpoint, timeout: Duration) -> Result<String, FetchError> {
    if url.scheme() != "http" {
        return Err(FetchError::Scheme {
            url: url.to_string(),
        });
    }
    tokio::time::timeout(timeout, fetch_unbounded(url, endpoint))
        .await
        .unwrap_or_else(|_| {
            Err(FetchError::Timeout {
                url: url.to_string(),
                timeout,
            })
        })
}

async fn fetch_unbounded(url: &Url, endpoint: Endpoint) -> Result<String, FetchError> {
    let io = |error| FetchError::Io {
        url: url.to_string(),
        error,
        endpoint,
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let mut stream = match url.host() {
        Some(Host::Domain(domain)) => TcpStream::connect((domain, port)).await,
        Some(Host::Ipv4(ip)) => TcpStream::connect((IpAddr::V4(ip), port)).await,
        Some(Host::Ipv6(ip)) => TcpStream::connect((IpAddr::V6(ip), port)).await,
        None => {
            return Err(FetchError::NoHost {
                url: url.to_string(),
            });
        }
    }
    .map_err(io)?;
    let authority = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => String::new(),
    };
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    // The daemon sends OpenMetrics only when asked for it: ask for 0.0.4 explicitly.
    let accept = match endpoint {
        Endpoint::Daemon => "text/plain; version=0.0.4",
        Endpoint::Prometheus => "application/json",
    };
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: {accept}\r\n\
         User-Agent: mirror/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut response)
        .await
        .map_err(io)?;
    if response.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(FetchError::TooLarge {
            url: url.to_string(),
        });
    }
    response_body(url, &response, endpoint)
}

/// The body of a complete `Connection: close` response, if its status is 200.
fn response_body(url: &Url, response: &[u8], endpoint: Endpoint) -> Result<String, FetchError> {
    let malformed = |what| FetchError::Malformed {
        url: url.to_string(),
        what,
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(response) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(malformed("the head is incomplete")),
        Err(_) => return Err(malformed("unparsable head")),
    };
    let status = head.code.unwrap_or(0);
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| String::from_utf8_lossy(header.value).trim().to_owned())
    };
    let framing = if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        BodyFraming::Chunked
    } else if let Some(length) = header("content-length") {
        BodyFraming::Length(
            length
                .parse()
                .map_err(|_| malformed("invalid Content-Length"))?,
        )
    } else {
        BodyFraming::Close
    };
    let mut reader = BodyReader::new(framing, 4096);
    let mut body = Vec::new();
    let read = reader.feed(&response[head_len..], &mut |data| {
        body.extend_from_slice(data);
    });
    if status != 200 {
        return Err(FetchError::Status {
            url: url.to_string(),
            status,
            reason: head.reason.unwrap_or("").to_owned(),
            detail: status_detail(status, &body, endpoint),
        });
    }
    read.map_err(|_| malformed("invalid chunked body"))?;
    if !reader.is_done() && framing != BodyFraming::Close {
        return Err(malformed("the body is truncated"));
    }
    String::from_utf8(body).map_err(|_| malformed("the body is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("http://127.0.0.1:9477/metrics").unwrap()
    }

    fn body(response: &[u8]) -> Result<String, FetchError> {
        response_body(&url(), response, Endpoint::Daemon)
    }

    #[test]
    fn base_urls_get_the_metrics_path() {
        for (typed, expected) in [
            ("http://127.0.0.1:9477", "http://127.0.0.1:9477/metrics"),
            ("http://127.0.0.1:9477/", "http://127.0.0.1:9477/metrics"),
            (
                "http://127.0.0.1:9477/metrics",
                "http://127.0.0.1:9477/metrics",
            ),
            (
                "http://127.0.0.1:9477/metrics/",
                "http://127.0.0.1:9477/metrics",
            ),
            (
                "http://node-1:9477/metrics?x=1",
                "http://node-1:9477/metrics?x=1",
            ),
            (
                "http://127.0.0.1:9477/metrix",
                "http://127.0.0.1:9477/metrix",
            ),
            ("http://[::1]:9000", "http://[::1]:9000/metrics"),
        ] {
            let url = metrics_url(&Url::parse(typed).unwrap());
            assert_eq!(url.as_str(), expected, "{typed}");
        }
    }

    #[test]
    fn connection_refused_names_the_url_and_a_hint() {
        let refused = |endpoint| FetchError::Io {
            url: url().into(),
            error: std::io::Error::from_raw_os_error(libc::ECONNREFUSED),
            endpoint,
        };
        assert_eq!(
            refused(Endpoint::Daemon).to_string(),
            "fetching http://127.0.0.1:9477/metrics: connection refused (is `mirror run` \
             running? --metrics-addr?)"
        );
        assert!(
            refused(Endpoint::Prometheus)
                .to_string()
                .ends_with("connection refused (is Prometheus there? --prometheus-url?)")
        );
    }

    #[test]
    fn bodies_of_every_framing_are_read() {
        let length = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nm 1\n\nextra";
        assert_eq!(body(length).unwrap(), "m 1\n\n");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nm 1\r\n1\r\n\n\r\n0\r\n\r\n";
        assert_eq!(body(chunked).unwrap(), "m 1\n");
        let close = b"HTTP/1.0 200 OK\r\n\r\nm 2\n";
        assert_eq!(body(close).unwrap(), "m 2\n");
    }

    #[test]
    fn bad_responses_are_named() {
        let not_found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            body(not_found).unwrap_err().to_string(),
            "fetching http://127.0.0.1:9477/metrics: HTTP 404 Not Found (the daemon serves \
             /metrics)"
        );
        let truncated = b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nm 1\n";
        assert_eq!(
            body(truncated).unwrap_err().to_string(),
            "fetching http://127.0.0.1:9477/metrics: malformed HTTP response (the body is \
             truncated)"
        );
        assert!(matches!(
            body(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(FetchError::Malformed { .. })
        ));
    }

    #[test]
    fn prometheus_errors_quote_what_it_said() {
        let json = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        let response = [
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\n\r\n",
                json.len()
            )
            .as_bytes(),
            json,
        ]
        .concat();
        let error = response_body(&url(), &response, Endpoint::Prometheus).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("HTTP 400 Bad Request: parse error at char 5"),
            "{error}"
        );
        let plain = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\nstarting\n";
        let error = response_body(&url(), plain, Endpoint::Prometheus).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("HTTP 503 Service Unavailable: starting")
        );
    }

    #[tokio::test]
    async fn only_plain_http_is_fetched() {
        let url = Url::parse("https://127.0.0.1:9477/metrics").unwrap();
        let error = fetch(&url, Endpoint::Daemon, Duration::from_secs(1)).await;
        assert_eq!(
            error.unwrap_err().to_string(),
            "https://127.0.0.1:9477/metrics: only http:// URLs are supported"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_connection_refused_and_silence_a_timeout() {
        // Bind then drop: the port is very likely closed right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = Url::parse(&format!("http://127.0.0.1:{port}/metrics")).unwrap();
        let error = fetch(&url, Endpoint::Daemon, Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.ends_with("connection refused (is `mirror run` running? --metrics-addr?)"),
            "{error}"
        );
        // A listener that never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/metrics", silent.local_addr().unwrap())).unwrap();
        let error = fetch(&url, Endpoint::Prometheus, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::Timeout { .. }), "{error}");
        assert!(
            error
                .to_string()
                .ends_with("no complete response within 0.2s"),
            "{error}"
        );
    }
}
