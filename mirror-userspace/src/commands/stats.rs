//! `mirror stats`: fetches a running daemon's `/metrics`, prints the per-target table of
//! [`crate::stats`] once (totals since start), or with `--watch` every few seconds (what happened
//! since the previous refresh), redrawn in place on a terminal.

use std::{
    io::{IsTerminal as _, Write as _},
    net::IpAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use url::{Host, Url};

use crate::{
    cli::StatsArgs,
    http::{BodyFraming, BodyReader},
    stats::{ParseError, Snapshot, Window, in_place, render},
};

/// A scrape that takes longer is stuck (the daemon renders /metrics in microseconds).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Far above any real exposition (~20 KB per target); bounds memory against a wrong URL.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;
/// Response headers parsed; the daemon sends three.
const MAX_HEADERS: usize = 64;

/// Why the metrics could not be fetched or read. Each message names the URL.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("{url}: only http:// URLs are supported (the metrics endpoint serves plain HTTP)")]
    Scheme { url: String },
    #[error("{url}: the URL has no host")]
    NoHost { url: String },
    // The cause is spelled out in the message (with a hint) and deliberately not a `#[source]`:
    // `main` prints the error chain, which would repeat it as "Connection refused (os error 111)".
    #[error("fetching {url}: {}", describe(error))]
    Io { url: String, error: std::io::Error },
    #[error("fetching {url}: no complete response within {}s", FETCH_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("fetching {url}: the response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge { url: String },
    #[error("fetching {url}: malformed HTTP response ({what})")]
    Malformed { url: String, what: &'static str },
    #[error("fetching {url}: HTTP {status} {reason}{}", status_hint(*status))]
    Status {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("reading {url} as Prometheus text")]
    Parse {
        url: String,
        #[source]
        source: ParseError,
    },
    #[error("writing to stdout")]
    Stdout(#[source] std::io::Error),
}

/// An I/O error as a lowercase cause, with a hint where the usual mistake is known.
fn describe(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    let cause: String = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("{cause} (is `mirror run` running? --metrics-addr?)")
        }
        _ => cause,
    }
}

fn status_hint(status: u16) -> &'static str {
    match status {
        404 => " (the daemon serves /metrics)",
        _ => "",
    }
}

/// `GET url` over a fresh connection, returning the body. A minimal HTTP/1.1 client on tokio's
/// `TcpStream` rather than a client library: the URL is always plain `http://host:port/path` on
/// a daemon we wrote, and `Connection: close` lets the response end at EOF.
pub async fn fetch(url: &Url) -> Result<String, StatsError> {
    if url.scheme() != "http" {
        return Err(StatsError::Scheme {
            url: url.to_string(),
        });
    }
    tokio::time::timeout(FETCH_TIMEOUT, fetch_unbounded(url))
        .await
        .unwrap_or_else(|_| {
            Err(StatsError::Timeout {
                url: url.to_string(),
            })
        })
}

async fn fetch_unbounded(url: &Url) -> Result<String, StatsError> {
    let io = |error| StatsError::Io {
        url: url.to_string(),
        error,
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let mut stream = match url.host() {
        Some(Host::Domain(domain)) => TcpStream::connect((domain, port)).await,
        Some(Host::Ipv4(ip)) => TcpStream::connect((IpAddr::V4(ip), port)).await,
        Some(Host::Ipv6(ip)) => TcpStream::connect((IpAddr::V6(ip), port)).await,
        None => {
            return Err(StatsError::NoHost {
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
    // Asking for 0.0.4 explicitly: the daemon sends OpenMetrics only when asked for it.
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/plain; version=0.0.4\r\n\
         User-Agent: mirror-stats/{}\r\nConnection: close\r\n\r\n",
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
        return Err(StatsError::TooLarge {
            url: url.to_string(),
        });
    }
    response_body(url, &response)
}

/// The body of a complete `Connection: close` response, if its status is 200.
fn response_body(url: &Url, response: &[u8]) -> Result<String, StatsError> {
    let malformed = |what| StatsError::Malformed {
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
    if status != 200 {
        return Err(StatsError::Status {
            url: url.to_string(),
            status,
            reason: head.reason.unwrap_or("").to_owned(),
        });
    }
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
    reader
        .feed(&response[head_len..], &mut |data| {
            body.extend_from_slice(data)
        })
        .map_err(|_| malformed("invalid chunked body"))?;
    if !reader.is_done() && framing != BodyFraming::Close {
        return Err(malformed("the body is truncated"));
    }
    String::from_utf8(body).map_err(|_| malformed("the body is not UTF-8"))
}

async fn scrape(url: &Url) -> Result<Snapshot, StatsError> {
    let text = fetch(url).await?;
    Snapshot::from_text(&text).map_err(|source| StatsError::Parse {
        url: url.to_string(),
        source,
    })
}

/// Prints a frame: redrawn in place on a terminal, one after the other (blank line between)
/// when stdout is a file or pipe, so a log of frames stays readable. `Ok(false)` when the reader
/// went away (`mirror stats --watch | head`): that is the reader's choice, not a failure.
fn show(frame: &str, terminal: bool) -> Result<bool, StatsError> {
    let mut stdout = std::io::stdout().lock();
    let written = if terminal {
        stdout.write_all(in_place(frame).as_bytes())
    } else {
        stdout.write_all(frame.as_bytes())
    };
    match written.and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(StatsError::Stdout(error)),
    }
}

/// `mirror stats [--metrics-url URL] [--watch [SECONDS]]`.
pub async fn run(args: StatsArgs) -> anyhow::Result<()> {
    let url = args.metrics_url;
    // The first scrape fails the command: a wrong URL should not turn into a retry loop.
    let mut previous = scrape(&url).await?;
    let mut previous_at = Instant::now();
    let first = render(&previous, url.as_str(), Window::SinceStart);
    let Some(seconds) = args.watch else {
        show(&first, false)?;
        return Ok(());
    };
    let interval = Duration::from_secs(seconds);
    let terminal = std::io::stdout().is_terminal();
    let footer = format!("\nrefreshing every {seconds}s; Ctrl-C to quit\n");
    let separator = if terminal { "" } else { "\n" };
    let mut frame = first;
    while show(&format!("{frame}{footer}{separator}"), terminal)? {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(interval) => {}
        }
        // Later failures (a restarting daemon) are shown and retried; counters that went back
        // are taken as a restart by `Snapshot::since`.
        frame = match scrape(&url).await {
            Ok(now) => {
                let at = Instant::now();
                let window = Window::Last(at.duration_since(previous_at));
                let frame = render(&now.since(&previous), url.as_str(), window);
                (previous, previous_at) = (now, at);
                frame
            }
            Err(error) => format!("mirror stats: {:#}\n", anyhow::Error::from(error)),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("http://127.0.0.1:9477/metrics").unwrap()
    }

    #[test]
    fn connection_refused_names_the_url_and_a_hint() {
        let error = StatsError::Io {
            url: url().into(),
            error: std::io::Error::from_raw_os_error(libc::ECONNREFUSED),
        };
        assert_eq!(
            error.to_string(),
            "fetching http://127.0.0.1:9477/metrics: connection refused (is `mirror run` \
             running? --metrics-addr?)"
        );
    }

    #[test]
    fn bodies_of_every_framing_are_read() {
        let length = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nm 1\n\nextra";
        assert_eq!(response_body(&url(), length).unwrap(), "m 1\n\n");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nm 1\r\n1\r\n\n\r\n0\r\n\r\n";
        assert_eq!(response_body(&url(), chunked).unwrap(), "m 1\n");
        let close = b"HTTP/1.0 200 OK\r\n\r\nm 2\n";
        assert_eq!(response_body(&url(), close).unwrap(), "m 2\n");
    }

    #[test]
    fn bad_responses_are_named() {
        let not_found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            response_body(&url(), not_found).unwrap_err().to_string(),
            "fetching http://127.0.0.1:9477/metrics: HTTP 404 Not Found (the daemon serves \
             /metrics)"
        );
        let truncated = b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nm 1\n";
        assert_eq!(
            response_body(&url(), truncated).unwrap_err().to_string(),
            "fetching http://127.0.0.1:9477/metrics: malformed HTTP response (the body is \
             truncated)"
        );
        assert!(matches!(
            response_body(&url(), b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(StatsError::Malformed { .. })
        ));
    }

    #[tokio::test]
    async fn only_plain_http_is_fetched() {
        let url = Url::parse("https://127.0.0.1:9477/metrics").unwrap();
        assert_eq!(
            fetch(&url).await.unwrap_err().to_string(),
            "https://127.0.0.1:9477/metrics: only http:// URLs are supported (the metrics \
             endpoint serves plain HTTP)"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_connection_refused() {
        // Bind then drop: the port is very likely closed right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = Url::parse(&format!("http://127.0.0.1:{port}/metrics")).unwrap();
        let error = fetch(&url).await.unwrap_err().to_string();
        assert!(
            error.ends_with("connection refused (is `mirror run` running? --metrics-addr?)"),
            "{error}"
        );
    }
}
