//! `mirror run` replays a write at most once: 300 POSTs from a real client to the primary, a
//! shadow (the recording server) that reads every third POST coming on a reused keep-alive
//! connection and closes the connection without answering it. The shadow may have processed
//! such a POST, so the daemon must count it as an error and never send it again; the shadow
//! listens on the primary's port through the captured interface, as in `mirror_e2e`.

use std::{path::PathBuf, time::Duration};

use mirror_tests::{
    daemon::Daemon,
    mirroring::*,
    privileged,
    server::{Behaviour, RecordingServer},
};

const CONNECTIONS: usize = 10;
const PER_CONNECTION: usize = 30;
const POSTS: usize = CONNECTIONS * PER_CONNECTION;

/// POST number `i` of client connection `connection`: its id in the target and in the body.
fn post(connection: usize, i: usize) -> Vec<u8> {
    let body = format!("{{\"order\": \"{connection:02}-{i:02}\"}}\n");
    format!(
        "POST /orders/{connection:02}-{i:02} HTTP/1.1\r\nHost: search.prod:8080\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A file removed on drop (the daemon's config file, also when the test fails).
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the shadow read and wrote, per connection, every connection included (also the rare
/// client port the kernel used twice).
fn exchanges(server: &RecordingServer) -> Vec<(Vec<u8>, Vec<u8>)> {
    server.settle(Duration::from_millis(500), Duration::from_secs(10));
    let mut exchanges = Vec::new();
    for entry in std::fs::read_dir(&server.dir).expect("read recordings dir") {
        let path = entry.expect("dir entry").path();
        let Some(base) = path.to_str().and_then(|path| path.strip_suffix(".req")) else {
            continue;
        };
        let request = std::fs::read(&path).expect("read .req");
        let response = std::fs::read(format!("{base}.resp")).expect("read .resp");
        exchanges.push((request, response));
    }
    exchanges
}

#[test]
fn a_post_the_shadow_hung_up_on_is_an_error_and_never_sent_again() {
    if !privileged("a_post_the_shadow_hung_up_on_is_an_error_and_never_sent_again") {
        return;
    }
    let setup = setup_with_shadow(Behaviour::HangUpOnReusedPost(3));
    // Eight workers: each keeps its connection for dozens of POSTs, so most come on reused ones.
    let config = RemovedOnDrop(write_config(
        &setup,
        "sample_percent = 100.0\nallow_writes = true\nmethods = [\"POST\"]\nconcurrency = 8\n",
    ));
    let daemon = Daemon::start(
        &setup.topology.server,
        &["--config", config.0.to_str().expect("utf-8 path")],
    );
    // One POST per write, each answered by the primary before the next.
    load_in_windows(&setup.topology.client, CONNECTIONS, PER_CONNECTION, 1, post);
    let metrics = wait_for(&daemon, "300 POSTs framed and replayed", |m| {
        m.sum("mirror_requests_total", &[]) >= POSTS as f64
            && all_replays(m) + m.sum("mirror_requests_skipped_total", &[])
                >= m.sum("mirror_requests_total", &[])
            && m.sum("mirror_replay_queue_depth", &[]) == 0.0
    });
    let replayed = all_replays(&metrics);
    assert_eq!(
        metrics.sum("mirror_requests_total", &[]),
        POSTS as f64,
        "{:#?}",
        metrics.samples
    );
    assert_eq!(replayed, POSTS as f64, "every POST replayed");
    let (ok, error, timeout, dropped) = (
        replays(&metrics, "ok"),
        replays(&metrics, "error"),
        replays(&metrics, "timeout"),
        replays(&metrics, "dropped"),
    );
    assert_eq!(
        ok + error + timeout + dropped,
        replayed,
        "every replayed POST ends with one outcome: {:#?}",
        metrics.samples
    );
    assert_accounting(&metrics);
    // The shadow records a connection when it closes: stop the daemon's keep-alive pool first.
    daemon.stop();

    let expected: Vec<Vec<u8>> = (0..CONNECTIONS)
        .flat_map(|connection| (0..PER_CONNECTION).map(move |i| post(connection, i)))
        .map(|request| {
            String::from_utf8(request)
                .expect("ascii request")
                .replace("Host: search.prod:8080", "Host: search.prod-shadow:8080")
                .into_bytes()
        })
        .map(with_replay_marker)
        .collect();
    let exchanges = exchanges(&setup.shadow);
    let streams: Vec<Vec<u8>> = exchanges.iter().map(|(req, _)| req.clone()).collect();
    let received = match_requests(&streams, &expected);
    let twice: Vec<usize> = (0..POSTS).filter(|index| received[*index] > 1).collect();
    assert!(
        twice.is_empty(),
        "{} POSTs reached the shadow more than once (indexes {twice:?})",
        twice.len()
    );
    // Every replay that was not dropped reached the shadow (once).
    let reached = received.iter().sum::<usize>() as f64;
    assert_eq!(reached, ok + error + timeout, "{:#?}", metrics.samples);
    let answered = exchanges
        .iter()
        .map(|(_, response)| {
            response
                .windows(b"HTTP/1.1 200 ".len())
                .filter(|window| *window == b"HTTP/1.1 200 ")
                .count()
        })
        .sum::<usize>() as f64;
    let hung_up = reached - answered;
    assert!(
        hung_up > 0.0,
        "the shadow hung up on no POST: the test exercised nothing"
    );
    assert_eq!(
        error, hung_up,
        "each POST the shadow read without answering is one error: {:#?}",
        metrics.samples
    );
    assert_eq!(ok + timeout, answered, "{:#?}", metrics.samples);
    eprintln!(
        "{POSTS} POSTs: {ok} ok, {error} error (the shadow hung up on {hung_up}), {timeout} \
         timeout, {dropped} dropped; none reached the shadow twice"
    );
}
