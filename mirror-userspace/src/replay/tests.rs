//! The replay pool against a small HTTP/1.1 server on loopback: pipelined batches are answered
//! in order and paired with the right jobs, a connection the shadow closes part-way through a
//! batch has its unanswered requests sent again, and the depth follows the shadow's latency.
//! Requests whose method is not idempotent reach the shadow at most once: one the shadow hung up
//! on is an error, and one is never written on a connection the shadow closed while idle.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{Mutex, mpsc},
};

use super::*;
use crate::segment::FlowKey;

#[test]
fn pipeline_depth_follows_the_shadow_latency() {
    let timeout = Duration::from_secs(2);
    assert_eq!(pipeline_depth(None, timeout), 1, "unknown latency");
    assert_eq!(
        pipeline_depth(Some(Duration::from_micros(300)), timeout),
        MAX_PIPELINE
    );
    assert_eq!(pipeline_depth(Some(Duration::from_millis(200)), timeout), 2);
    assert_eq!(pipeline_depth(Some(Duration::from_millis(600)), timeout), 1);
    assert_eq!(pipeline_depth(Some(Duration::from_secs(5)), timeout), 1);
    assert_eq!(pipeline_depth(Some(Duration::ZERO), timeout), MAX_PIPELINE);
}

/// What the test server saw: per connection, the number of requests and of reads that
/// carried them.
#[derive(Debug, Default)]
struct Seen {
    connections: Vec<(usize, usize)>,
}

/// Answers every GET with its target as the body. The first connection announces
/// `Connection: close` on its response number `close_after` (1-based) and closes. With
/// `slow`, every answer after the very first waits that long.
async fn serve(
    close_after: Option<usize>,
    slow: Option<Duration>,
) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let close_after = if first { close_after } else { None };
            first = false;
            let index = {
                let mut seen = state.lock().await;
                seen.connections.push((0, 0));
                seen.connections.len() - 1
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut answered = 0;
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    state.lock().await.connections[index].1 += 1;
                    buffer.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buffer.drain(..end + 4).collect();
                        let target = head.split(|b| *b == b' ').nth(1).unwrap().to_vec();
                        answered += 1;
                        state.lock().await.connections[index].0 += 1;
                        let closes = close_after == Some(answered);
                        let total = state
                            .lock()
                            .await
                            .connections
                            .iter()
                            .map(|c| c.0)
                            .sum::<usize>();
                        if let Some(delay) = slow.filter(|_| total > 1) {
                            tokio::time::sleep(delay).await;
                        }
                        let mut response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n",
                            target.len(),
                            if closes { "Connection: close\r\n" } else { "" }
                        )
                        .into_bytes();
                        response.extend_from_slice(&target);
                        // The replayer drops a connection whose answer came too late.
                        if stream.write_all(&response).await.is_err() {
                            return;
                        }
                        if closes {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn job(index: u64) -> ReplayJob {
    let addr: SocketAddr = "198.18.0.1:40000".parse().unwrap();
    ReplayJob {
        key: ExchangeKey {
            connection: 0,
            flow: FlowKey {
                client: addr,
                server: addr,
            },
            index,
        },
        head: Bytes::from(format!("GET /{index} HTTP/1.1\r\nHost: shadow\r\n\r\n")),
        body: Bytes::new(),
        is_head: false,
        pipelinable: true,
        idempotent: true,
        hold_body: true,
    }
}

fn replayer(addr: SocketAddr) -> (Replayer, mpsc::UnboundedReceiver<ReplayResult>) {
    replayer_with_timeout(addr, Duration::from_secs(2))
}

fn replayer_with_timeout(
    addr: SocketAddr,
    timeout: Duration,
) -> (Replayer, mpsc::UnboundedReceiver<ReplayResult>) {
    replayer_with(addr, 64, timeout)
}

/// A one-worker replayer to `addr` with a queue of `queue` jobs.
fn replayer_with(
    addr: SocketAddr,
    queue: usize,
    timeout: Duration,
) -> (Replayer, mpsc::UnboundedReceiver<ReplayResult>) {
    let (results, receiver) = mpsc::unbounded_channel();
    let config = ReplayConfig {
        target: "t".to_owned(),
        shadow: "shadow".into(),
        shadow_host: addr.ip().to_string(),
        shadow_port: addr.port(),
        queue,
        concurrency: 1,
        timeout,
        hold_bodies: None,
        connections_opened: Counter::default(),
    };
    (Replayer::spawn(config, None, results), receiver)
}

/// Each result is Ok and carries the digest of its own job's target.
fn assert_paired(result: &ReplayResult) {
    assert_eq!(result.outcome, ReplayOutcome::Ok, "{result:?}");
    let (response, _) = result.response.as_ref().expect("a response");
    let target = format!("/{}", result.key.index);
    assert_eq!(
        response.body_digest,
        xxhash_rust::xxh3::xxh3_128(target.as_bytes()),
        "job {} got another job's response",
        result.key.index
    );
}

/// A server, a one-worker replayer, and a first exchange done (the worker then knows the
/// shadow's latency and may pipeline).
async fn warmed_up(
    close_after: Option<usize>,
) -> (
    Replayer,
    mpsc::UnboundedReceiver<ReplayResult>,
    Arc<Mutex<Seen>>,
) {
    let (addr, seen) = serve(close_after, None).await;
    let (replayer, mut results) = replayer(addr);
    assert!(replayer.try_send(job(0)));
    assert_paired(&results.recv().await.unwrap());
    (replayer, results, seen)
}

fn run(test: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

#[test]
fn queued_safe_requests_are_pipelined_and_paired_in_order() {
    run(async {
        // The first exchange measures the shadow's latency (depth 1 until then).
        let (replayer, mut results, seen) = warmed_up(None).await;
        for index in 1..=6 {
            assert!(replayer.try_send(job(index)));
        }
        let mut timed = 0;
        for expected in 1..=6 {
            let result = results.recv().await.unwrap();
            assert_eq!(result.key.index, expected, "results in queue order");
            assert_paired(&result);
            timed += usize::from(result.response.unwrap().1.is_some());
        }
        assert_eq!(timed, 1, "one write, so only its first response is timed");
        let seen = seen.lock().await;
        assert_eq!(seen.connections.len(), 1, "one keep-alive connection");
        assert_eq!(seen.connections[0].0, 7);
        assert!(
            seen.connections[0].1 <= 3,
            "six queued requests arrive in one write: {:?}",
            seen.connections
        );
    });
}

#[test]
fn requests_left_unanswered_by_a_closing_shadow_are_sent_again() {
    run(async {
        // The shadow answers two requests on its first connection, the second with
        // `Connection: close`.
        let (replayer, mut results, seen) = warmed_up(Some(2)).await;
        for index in 1..=5 {
            assert!(replayer.try_send(job(index)));
        }
        for expected in 1..=5 {
            let result = results.recv().await.unwrap();
            assert_eq!(result.key.index, expected);
            assert_paired(&result);
        }
        let seen = seen.lock().await;
        assert_eq!(seen.connections.len(), 2, "{:?}", seen.connections);
        assert_eq!(
            seen.connections[0].0, 2,
            "the closing connection answered two"
        );
        assert_eq!(
            seen.connections[1].0, 4,
            "the four unanswered went out again"
        );
    });
}

#[test]
fn requests_that_may_not_be_pipelined_go_alone() {
    run(async {
        let (replayer, mut results, seen) = warmed_up(None).await;
        for index in 1..=4 {
            assert!(replayer.try_send(ReplayJob {
                pipelinable: false,
                ..job(index)
            }));
        }
        for expected in 1..=4 {
            let result = results.recv().await.unwrap();
            assert_eq!(result.key.index, expected);
            assert_paired(&result);
            assert!(result.response.unwrap().1.is_some(), "each is timed alone");
        }
        assert_eq!(
            seen.lock().await.connections[0].1,
            5,
            "one read per request"
        );
    });
}

#[test]
fn a_full_queue_or_a_down_shadow_is_known_before_a_job_is_prepared() {
    run(async {
        // Nothing listens on this port once the listener is gone: connections are refused.
        let refused = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = refused.local_addr().unwrap();
        drop(refused);
        let (replayer, mut results) = replayer(addr);
        assert_eq!(replayer.would_refuse(), None, "nothing known yet");
        assert!(replayer.try_send(job(0)));
        let result = results.recv().await.unwrap();
        assert_eq!(result.outcome, ReplayOutcome::Error);
        assert_eq!(replayer.would_refuse(), Some(Refusal::ShadowDown));
        assert_eq!(Refusal::ShadowDown.outcome(), "error");

        // A shadow that accepts and never answers holds the only worker; one more job fills
        // the queue of one.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (replayer, _results) =
            replayer_with(silent.local_addr().unwrap(), 1, Duration::from_secs(5));
        assert!(replayer.try_send(job(0)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            replayer.would_refuse(),
            None,
            "the worker took the first job"
        );
        assert!(replayer.try_send(job(1)));
        assert_eq!(replayer.would_refuse(), Some(Refusal::QueueFull));
        assert_eq!(Refusal::QueueFull.outcome(), "dropped");
    });
}

#[test]
fn after_a_timed_out_batch_requests_go_one_at_a_time() {
    run(async {
        // Fast once (the worker learns a tiny latency and pipelines), then slower than the
        // timeout.
        let (addr, seen) = serve(None, Some(Duration::from_millis(400))).await;
        let (replayer, mut results) = replayer_with_timeout(addr, Duration::from_millis(300));
        assert!(replayer.try_send(job(0)));
        assert_paired(&results.recv().await.unwrap());
        // Two jobs queued together, twice: first as a batch, then (after its timeout) alone.
        for indexes in [1..=2, 3..=4] {
            for index in indexes.clone() {
                assert!(replayer.try_send(job(index)));
            }
            for _ in indexes {
                assert_eq!(
                    results.recv().await.unwrap().outcome,
                    ReplayOutcome::Timeout
                );
            }
        }
        let seen = seen.lock().await;
        let requests: Vec<usize> = seen.connections.iter().map(|c| c.0).collect();
        assert_eq!(
            requests,
            [3, 1, 1],
            "the two jobs after the timeout went alone, each on a fresh connection (a batch \
             would have shared one)"
        );
    });
}

#[test]
fn idempotent_methods_are_those_of_rfc_9110() {
    for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
        assert!(is_idempotent(method), "{method}");
    }
    for method in ["POST", "PATCH", "CONNECT", "PROPFIND", "get", "Put", ""] {
        assert!(!is_idempotent(method), "{method}");
    }
}

/// One request as the hanging-up server read it.
#[derive(Debug)]
struct Received {
    method: String,
    target: String,
    body: String,
}

/// How [`serve_hanging_up`] ends connections.
#[derive(Clone, Copy, Debug)]
enum HangUp {
    /// Reads every request that comes on a reused connection (one that was already answered)
    /// completely, then closes the connection without answering it.
    OnReused,
    /// Answers every request, then closes the connection without announcing it (as an idle
    /// timeout would).
    AfterAnswering,
}

/// Answers requests (with a Content-Length body or none) with their target as the body and
/// ends connections as `hang_up` says. Returns every request read, in order, and the number of
/// connections accepted.
async fn serve_hanging_up(
    hang_up: HangUp,
) -> (SocketAddr, Arc<Mutex<Vec<Received>>>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (log, accepted) = (Arc::clone(&received), Arc::clone(&connections));
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            accepted.fetch_add(1, Ordering::SeqCst);
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut answered = 0;
                loop {
                    // The head, then its body: the whole request is read before the server
                    // closes (unread bytes would make the close a reset).
                    let end = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8(buffer.drain(..end).collect()).unwrap();
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("Content-Length: "))
                        .map_or(0, |value| value.trim().parse().unwrap());
                    while buffer.len() < length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = String::from_utf8(buffer.drain(..length).collect()).unwrap();
                    let mut words = head.split(' ');
                    let (method, target) = (words.next().unwrap(), words.next().unwrap());
                    log.lock().await.push(Received {
                        method: method.to_owned(),
                        target: target.to_owned(),
                        body,
                    });
                    if matches!(hang_up, HangUp::OnReused) && answered > 0 {
                        return;
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{target}",
                        target.len()
                    );
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    answered += 1;
                    if matches!(hang_up, HangUp::AfterAnswering) {
                        return;
                    }
                }
            });
        }
    });
    (addr, received, connections)
}

/// A request of `method` to `/<index>` with the body `order <index>` (none for GET), sent
/// alone as the pipeline sends a write or an HTTP/1.0 request.
fn request(index: u64, method: &str) -> ReplayJob {
    let body = if method == "GET" {
        String::new()
    } else {
        format!("order {index}")
    };
    ReplayJob {
        head: Bytes::from(format!(
            "{method} /{index} HTTP/1.1\r\nHost: shadow\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )),
        body: Bytes::from(body),
        pipelinable: false,
        idempotent: is_idempotent(method),
        ..job(index)
    }
}

/// Sends `job` and waits for its result: one request on the wire at a time, so which
/// connection carries it is known.
async fn replay_alone(
    replayer: &Replayer,
    results: &mut mpsc::UnboundedReceiver<ReplayResult>,
    job: ReplayJob,
) -> ReplayResult {
    let index = job.key.index;
    assert!(replayer.try_send(job));
    let result = results.recv().await.unwrap();
    assert_eq!(result.key.index, index);
    result
}

/// How many times the server read a request to `/<index>`, and whether each carried the body
/// that request was sent with.
async fn times_received(received: &Mutex<Vec<Received>>, index: u64) -> usize {
    let target = format!("/{index}");
    let received = received.lock().await;
    let copies: Vec<&Received> = received.iter().filter(|r| r.target == target).collect();
    for copy in &copies {
        let expected = if copy.method == "GET" {
            String::new()
        } else {
            format!("order {index}")
        };
        assert_eq!(copy.body, expected, "{copy:?}");
    }
    copies.len()
}

#[test]
fn a_post_the_shadow_hung_up_on_is_an_error_and_is_never_sent_again() {
    run(async {
        let (addr, received, connections) = serve_hanging_up(HangUp::OnReused).await;
        let (replayer, mut results) = replayer(addr);
        // Every second POST goes on the connection the one before opened (the worker keeps it)
        // and is read by the shadow, which then closes without answering.
        let mut posts = Vec::new();
        for index in 0..10 {
            posts.push(replay_alone(&replayer, &mut results, request(index, "POST")).await);
        }
        let mut twice = Vec::new();
        for index in 0..10 {
            match times_received(&received, index).await {
                1 => {}
                2 => twice.push(index),
                times => panic!("POST /{index} reached the shadow {times} times"),
            }
        }
        assert!(
            twice.is_empty(),
            "POSTs {twice:?} reached the shadow twice: {:?}",
            received.lock().await
        );
        for result in &posts {
            if result.key.index % 2 == 0 {
                assert_paired(result);
            } else {
                assert_eq!(result.outcome, ReplayOutcome::Error, "{result:?}");
                assert!(result.response.is_none());
            }
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            5,
            "a fresh connection after each hang-up, none for a second copy"
        );

        // Idempotent requests in the same situation are sent again on a fresh connection,
        // where the shadow answers them.
        let methods = ["GET", "PUT", "GET", "DELETE", "GET"];
        for (index, method) in (10..).zip(methods) {
            let result = replay_alone(&replayer, &mut results, request(index, method)).await;
            assert_paired(&result);
        }
        assert_eq!(
            times_received(&received, 10).await,
            1,
            "the first went on a fresh connection"
        );
        for index in 11..15 {
            assert_eq!(
                times_received(&received, index).await,
                2,
                "/{index} was hung up on and sent again: {:?}",
                received.lock().await
            );
        }
    });
}

#[test]
fn a_post_is_not_written_on_a_connection_the_shadow_closed_while_idle() {
    run(async {
        let (addr, received, connections) = serve_hanging_up(HangUp::AfterAnswering).await;
        let (replayer, mut results) = replayer(addr);
        for index in 0..5 {
            let result = replay_alone(&replayer, &mut results, request(index, "POST")).await;
            assert_paired(&result);
            // The shadow's close reaches the idle connection before the next request.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for index in 0..5 {
            assert_eq!(times_received(&received, index).await, 1);
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            5,
            "each POST on a fresh connection"
        );
    });
}
