//! `mirror stats` end to end, without root: the built binary scrapes a tiny HTTP server that
//! serves exposition text exactly as `mirror run` does, and prints the table.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// What `GET /metrics` of `mirror run` returned for two targets, `search` (traffic) and
/// `checkout` (configured, idle), produced by the daemon's own registry and encoder (see
/// `print_fixture` in `src/stats/tests.rs`), plus the scrape-time capture counters.
///
/// Every labelled counter is there from start-up at 0 with each known label value, as the
/// daemon exports it.
///
/// search: 1000 requests; skipped sampled_out 880, method 20; connections skipped tls 3,
/// upgrade 1; replays ok 90, error 3, timeout 2, dropped 1; lost gap 2, reset 1, estimated 4.6;
/// primary 1050x200 + 10x503, 1000 of them paired (timed) with 600 in (1.6ms, 3.2ms], 390 in
/// (3.2ms, 6.4ms], 10 in (51.2ms, 102.4ms], and 60 unpaired (joined 40, gap 20); shadow 85x200 +
/// 5x500 with 45 in (6.4ms, 12.8ms], 40 in (12.8ms, 25.6ms], 5 in (204.8ms, 409.6ms];
/// mismatches status 5, body 9; comparisons cancelled gap 2, response_lost 1.
const EXPOSITION: &str = "\
# HELP mirror_packets_total TCP segments captured, by direction.
# TYPE mirror_packets_total counter
mirror_packets_total{direction=\"response\"} 0
mirror_packets_total{direction=\"request\"} 0
# HELP mirror_capture_bytes_total TCP payload bytes captured, by direction.
# TYPE mirror_capture_bytes_total counter
mirror_capture_bytes_total{direction=\"response\"} 0
mirror_capture_bytes_total{direction=\"request\"} 0
# HELP mirror_tcp_streams_active TCP connections being reassembled.
# TYPE mirror_tcp_streams_active gauge
mirror_tcp_streams_active 0
# HELP mirror_tcp_gaps_total Holes in captured TCP streams declared lost.
# TYPE mirror_tcp_gaps_total counter
mirror_tcp_gaps_total 0
# HELP mirror_tcp_streams_evicted_total TCP connections evicted, by reason.
# TYPE mirror_tcp_streams_evicted_total counter
mirror_tcp_streams_evicted_total{reason=\"memory\"} 0
mirror_tcp_streams_evicted_total{reason=\"idle\"} 0
mirror_tcp_streams_evicted_total{reason=\"max_connections\"} 0
# HELP mirror_tcp_conflicting_bytes_total Retransmitted bytes that differed from the bytes captured first.
# TYPE mirror_tcp_conflicting_bytes_total counter
mirror_tcp_conflicting_bytes_total 0
# HELP mirror_tcp_target_gaps_total Holes in captured TCP streams declared lost, by target and direction.
# TYPE mirror_tcp_target_gaps_total counter
mirror_tcp_target_gaps_total{target=\"checkout\",direction=\"response\"} 0
mirror_tcp_target_gaps_total{target=\"checkout\",direction=\"request\"} 0
mirror_tcp_target_gaps_total{target=\"search\",direction=\"response\"} 0
mirror_tcp_target_gaps_total{target=\"search\",direction=\"request\"} 0
# HELP mirror_tcp_target_gap_bytes_total Bytes lost in those holes, by target and direction.
# TYPE mirror_tcp_target_gap_bytes_total counter
mirror_tcp_target_gap_bytes_total{target=\"checkout\",direction=\"request\"} 0
mirror_tcp_target_gap_bytes_total{target=\"search\",direction=\"response\"} 0
mirror_tcp_target_gap_bytes_total{target=\"search\",direction=\"request\"} 0
mirror_tcp_target_gap_bytes_total{target=\"checkout\",direction=\"response\"} 0
# HELP mirror_requests_total HTTP requests framed off the wire, by target.
# TYPE mirror_requests_total counter
mirror_requests_total{target=\"checkout\"} 0
mirror_requests_total{target=\"search\"} 1000
# HELP mirror_parse_errors_total Request bytes that did not parse as HTTP/1.x.
# TYPE mirror_parse_errors_total counter
mirror_parse_errors_total{target=\"search\"} 0
mirror_parse_errors_total{target=\"checkout\"} 0
# HELP mirror_requests_skipped_total Framed requests not replayed, by reason.
# TYPE mirror_requests_skipped_total counter
mirror_requests_skipped_total{target=\"checkout\",reason=\"sampled_out\"} 0
mirror_requests_skipped_total{target=\"checkout\",reason=\"connect\"} 0
mirror_requests_skipped_total{target=\"search\",reason=\"connect\"} 0
mirror_requests_skipped_total{target=\"search\",reason=\"sampled_out\"} 880
mirror_requests_skipped_total{target=\"search\",reason=\"upgrade\"} 0
mirror_requests_skipped_total{target=\"checkout\",reason=\"too_large\"} 0
mirror_requests_skipped_total{target=\"checkout\",reason=\"rate_limit\"} 0
mirror_requests_skipped_total{target=\"search\",reason=\"path\"} 0
mirror_requests_skipped_total{target=\"checkout\",reason=\"method\"} 0
mirror_requests_skipped_total{target=\"checkout\",reason=\"path\"} 0
mirror_requests_skipped_total{target=\"checkout\",reason=\"unrewritable\"} 0
mirror_requests_skipped_total{target=\"search\",reason=\"method\"} 20
mirror_requests_skipped_total{target=\"search\",reason=\"rate_limit\"} 0
mirror_requests_skipped_total{target=\"checkout\",reason=\"upgrade\"} 0
mirror_requests_skipped_total{target=\"search\",reason=\"unrewritable\"} 0
mirror_requests_skipped_total{target=\"search\",reason=\"too_large\"} 0
# HELP mirror_requests_lost_total Requests abandoned part-way (gap, reset, eviction...), by reason.
# TYPE mirror_requests_lost_total counter
mirror_requests_lost_total{target=\"search\",reason=\"truncated\"} 0
mirror_requests_lost_total{target=\"search\",reason=\"reset\"} 1
mirror_requests_lost_total{target=\"checkout\",reason=\"malformed\"} 0
mirror_requests_lost_total{target=\"checkout\",reason=\"truncated\"} 0
mirror_requests_lost_total{target=\"search\",reason=\"connection_skipped\"} 0
mirror_requests_lost_total{target=\"checkout\",reason=\"reset\"} 0
mirror_requests_lost_total{target=\"search\",reason=\"evicted\"} 0
mirror_requests_lost_total{target=\"checkout\",reason=\"connection_skipped\"} 0
mirror_requests_lost_total{target=\"search\",reason=\"malformed\"} 0
mirror_requests_lost_total{target=\"checkout\",reason=\"evicted\"} 0
mirror_requests_lost_total{target=\"checkout\",reason=\"gap\"} 0
mirror_requests_lost_total{target=\"search\",reason=\"gap\"} 2
# HELP mirror_requests_lost_estimated_total Estimate of the requests lost whole in gaps or unframed bytes (bytes over the target's mean request size); not part of the accounting.
# TYPE mirror_requests_lost_estimated_total counter
mirror_requests_lost_estimated_total{target=\"checkout\"} 0.0
mirror_requests_lost_estimated_total{target=\"search\"} 4.6
# HELP mirror_connections_skipped_total Connections whose requests stopped being mirrored, by reason.
# TYPE mirror_connections_skipped_total counter
mirror_connections_skipped_total{target=\"search\",reason=\"ambiguous_length\"} 0
mirror_connections_skipped_total{target=\"search\",reason=\"upgrade\"} 1
mirror_connections_skipped_total{target=\"checkout\",reason=\"connect\"} 0
mirror_connections_skipped_total{target=\"checkout\",reason=\"tls\"} 0
mirror_connections_skipped_total{target=\"checkout\",reason=\"ambiguous_length\"} 0
mirror_connections_skipped_total{target=\"search\",reason=\"http2\"} 0
mirror_connections_skipped_total{target=\"search\",reason=\"connect\"} 0
mirror_connections_skipped_total{target=\"checkout\",reason=\"upgrade\"} 0
mirror_connections_skipped_total{target=\"search\",reason=\"tls\"} 3
mirror_connections_skipped_total{target=\"checkout\",reason=\"http2\"} 0
# HELP mirror_responses_unpaired_total Primary responses not paired with a request (no latency sample, no comparison), by why their connection was out of sync.
# TYPE mirror_responses_unpaired_total counter
mirror_responses_unpaired_total{target=\"search\",reason=\"gap\"} 20
mirror_responses_unpaired_total{target=\"checkout\",reason=\"gap\"} 0
mirror_responses_unpaired_total{target=\"checkout\",reason=\"order\"} 0
mirror_responses_unpaired_total{target=\"checkout\",reason=\"overflow\"} 0
mirror_responses_unpaired_total{target=\"checkout\",reason=\"malformed\"} 0
mirror_responses_unpaired_total{target=\"search\",reason=\"order\"} 0
mirror_responses_unpaired_total{target=\"search\",reason=\"joined\"} 40
mirror_responses_unpaired_total{target=\"search\",reason=\"overflow\"} 0
mirror_responses_unpaired_total{target=\"search\",reason=\"malformed\"} 0
mirror_responses_unpaired_total{target=\"checkout\",reason=\"joined\"} 0
# HELP mirror_comparisons_cancelled_total Replayed requests whose comparison with the primary could not be made, by reason.
# TYPE mirror_comparisons_cancelled_total counter
mirror_comparisons_cancelled_total{target=\"checkout\",reason=\"joined\"} 0
mirror_comparisons_cancelled_total{target=\"checkout\",reason=\"order\"} 0
mirror_comparisons_cancelled_total{target=\"search\",reason=\"gap\"} 2
mirror_comparisons_cancelled_total{target=\"search\",reason=\"response_lost\"} 1
mirror_comparisons_cancelled_total{target=\"checkout\",reason=\"gap\"} 0
mirror_comparisons_cancelled_total{target=\"checkout\",reason=\"malformed\"} 0
mirror_comparisons_cancelled_total{target=\"checkout\",reason=\"response_lost\"} 0
mirror_comparisons_cancelled_total{target=\"checkout\",reason=\"expired\"} 0
mirror_comparisons_cancelled_total{target=\"search\",reason=\"order\"} 0
mirror_comparisons_cancelled_total{target=\"checkout\",reason=\"overflow\"} 0
mirror_comparisons_cancelled_total{target=\"search\",reason=\"malformed\"} 0
mirror_comparisons_cancelled_total{target=\"search\",reason=\"overflow\"} 0
mirror_comparisons_cancelled_total{target=\"search\",reason=\"expired\"} 0
mirror_comparisons_cancelled_total{target=\"search\",reason=\"joined\"} 0
# HELP mirror_replays_total Requests handed to the shadow, by outcome (ok, error, timeout, dropped).
# TYPE mirror_replays_total counter
mirror_replays_total{target=\"checkout\",outcome=\"timeout\"} 0
mirror_replays_total{target=\"search\",outcome=\"timeout\"} 2
mirror_replays_total{target=\"search\",outcome=\"ok\"} 90
mirror_replays_total{target=\"search\",outcome=\"dropped\"} 1
mirror_replays_total{target=\"checkout\",outcome=\"dropped\"} 0
mirror_replays_total{target=\"checkout\",outcome=\"error\"} 0
mirror_replays_total{target=\"checkout\",outcome=\"ok\"} 0
mirror_replays_total{target=\"search\",outcome=\"error\"} 3
# HELP mirror_replay_queue_depth Requests waiting in the replay queue.
# TYPE mirror_replay_queue_depth gauge
mirror_replay_queue_depth{target=\"checkout\"} 0
mirror_replay_queue_depth{target=\"search\"} 2
# HELP mirror_response_duration_seconds Last request byte to first response byte, primary (on the wire) and shadow.
# TYPE mirror_response_duration_seconds histogram
mirror_response_duration_seconds_sum{target=\"checkout\",role=\"shadow\"} 0.0
mirror_response_duration_seconds_count{target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0001\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0002\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0004\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0008\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0016\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0032\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0064\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0128\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0256\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0512\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.1024\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.2048\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.4096\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.8192\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"1.6384\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"3.2768\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"6.5536\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"13.1072\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"26.2144\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"52.4288\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"+Inf\",target=\"checkout\",role=\"shadow\"} 0
mirror_response_duration_seconds_sum{target=\"search\",role=\"primary\"} 4.649999999999929
mirror_response_duration_seconds_count{target=\"search\",role=\"primary\"} 1000
mirror_response_duration_seconds_bucket{le=\"0.0001\",target=\"search\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0002\",target=\"search\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0004\",target=\"search\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0008\",target=\"search\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0016\",target=\"search\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0032\",target=\"search\",role=\"primary\"} 600
mirror_response_duration_seconds_bucket{le=\"0.0064\",target=\"search\",role=\"primary\"} 990
mirror_response_duration_seconds_bucket{le=\"0.0128\",target=\"search\",role=\"primary\"} 990
mirror_response_duration_seconds_bucket{le=\"0.0256\",target=\"search\",role=\"primary\"} 990
mirror_response_duration_seconds_bucket{le=\"0.0512\",target=\"search\",role=\"primary\"} 990
mirror_response_duration_seconds_bucket{le=\"0.1024\",target=\"search\",role=\"primary\"} 1000
mirror_response_duration_seconds_bucket{le=\"0.2048\",target=\"search\",role=\"primary\"} 1000
mirror_response_duration_seconds_bucket{le=\"0.4096\",target=\"search\",role=\"primary\"} 1000
mirror_response_duration_seconds_bucket{le=\"0.8192\",target=\"search\",role=\"primary\"} 1000
mirror_response_duration_seconds_bucket{le=\"1.6384\",target=\"search\",role=\"primary\"} 1000
mirror_response_duration_seconds_bucket{le=\"3.2768\",target=\"search\",role=\"primary\"} 1000
mirror_response_duration_seconds_bucket{le=\"6.5536\",target=\"search\",role=\"primary\"} 1000
mirror_response_duration_seconds_bucket{le=\"13.1072\",target=\"search\",role=\"primary\"} 1000
mirror_response_duration_seconds_bucket{le=\"26.2144\",target=\"search\",role=\"primary\"} 1000
mirror_response_duration_seconds_bucket{le=\"52.4288\",target=\"search\",role=\"primary\"} 1000
mirror_response_duration_seconds_bucket{le=\"+Inf\",target=\"search\",role=\"primary\"} 1000
mirror_response_duration_seconds_sum{target=\"search\",role=\"shadow\"} 2.7500000000000006
mirror_response_duration_seconds_count{target=\"search\",role=\"shadow\"} 90
mirror_response_duration_seconds_bucket{le=\"0.0001\",target=\"search\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0002\",target=\"search\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0004\",target=\"search\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0008\",target=\"search\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0016\",target=\"search\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0032\",target=\"search\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0064\",target=\"search\",role=\"shadow\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0128\",target=\"search\",role=\"shadow\"} 45
mirror_response_duration_seconds_bucket{le=\"0.0256\",target=\"search\",role=\"shadow\"} 85
mirror_response_duration_seconds_bucket{le=\"0.0512\",target=\"search\",role=\"shadow\"} 85
mirror_response_duration_seconds_bucket{le=\"0.1024\",target=\"search\",role=\"shadow\"} 85
mirror_response_duration_seconds_bucket{le=\"0.2048\",target=\"search\",role=\"shadow\"} 85
mirror_response_duration_seconds_bucket{le=\"0.4096\",target=\"search\",role=\"shadow\"} 90
mirror_response_duration_seconds_bucket{le=\"0.8192\",target=\"search\",role=\"shadow\"} 90
mirror_response_duration_seconds_bucket{le=\"1.6384\",target=\"search\",role=\"shadow\"} 90
mirror_response_duration_seconds_bucket{le=\"3.2768\",target=\"search\",role=\"shadow\"} 90
mirror_response_duration_seconds_bucket{le=\"6.5536\",target=\"search\",role=\"shadow\"} 90
mirror_response_duration_seconds_bucket{le=\"13.1072\",target=\"search\",role=\"shadow\"} 90
mirror_response_duration_seconds_bucket{le=\"26.2144\",target=\"search\",role=\"shadow\"} 90
mirror_response_duration_seconds_bucket{le=\"52.4288\",target=\"search\",role=\"shadow\"} 90
mirror_response_duration_seconds_bucket{le=\"+Inf\",target=\"search\",role=\"shadow\"} 90
mirror_response_duration_seconds_sum{target=\"checkout\",role=\"primary\"} 0.0
mirror_response_duration_seconds_count{target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0001\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0002\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0004\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0008\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0016\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0032\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0064\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0128\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0256\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.0512\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.1024\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.2048\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.4096\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"0.8192\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"1.6384\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"3.2768\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"6.5536\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"13.1072\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"26.2144\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"52.4288\",target=\"checkout\",role=\"primary\"} 0
mirror_response_duration_seconds_bucket{le=\"+Inf\",target=\"checkout\",role=\"primary\"} 0
# HELP mirror_responses_total Responses by role and status code.
# TYPE mirror_responses_total counter
mirror_responses_total{target=\"search\",role=\"primary\",code=\"200\"} 1050
mirror_responses_total{target=\"search\",role=\"shadow\",code=\"500\"} 5
mirror_responses_total{target=\"search\",role=\"primary\",code=\"503\"} 10
mirror_responses_total{target=\"search\",role=\"shadow\",code=\"200\"} 85
# HELP mirror_response_mismatches_total Shadow responses that differ from the primary's, by kind (status, body).
# TYPE mirror_response_mismatches_total counter
mirror_response_mismatches_total{target=\"search\",kind=\"body\"} 9
mirror_response_mismatches_total{target=\"checkout\",kind=\"status\"} 0
mirror_response_mismatches_total{target=\"search\",kind=\"status\"} 5
mirror_response_mismatches_total{target=\"checkout\",kind=\"body\"} 0
# HELP mirror_build_info Build information.
# TYPE mirror_build_info gauge
mirror_build_info{version=\"0.1.0\"} 1
# HELP mirror_capture_drops_total Captured records or segments lost before reassembly, by reason.
# TYPE mirror_capture_drops_total counter
mirror_capture_drops_total{reason=\"ringbuf_full\"} 0
mirror_capture_drops_total{reason=\"copy_error\"} 0
mirror_capture_drops_total{reason=\"decode_error\"} 0
mirror_capture_drops_total{reason=\"consumer_full\"} 0
# HELP mirror_capture_lost_bytes_total Payload bytes seen by the classifier but not delivered, by reason.
# TYPE mirror_capture_lost_bytes_total counter
mirror_capture_lost_bytes_total{reason=\"ringbuf_full_or_copy_error\"} 0
mirror_capture_lost_bytes_total{reason=\"truncated\"} 0
mirror_capture_lost_bytes_total{reason=\"shed_request\"} 0
mirror_capture_lost_bytes_total{reason=\"shed_response\"} 0
mirror_capture_lost_bytes_total{reason=\"consumer_full\"} 0
";

fn ok_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `responses` to successive connections (one response each, then close) and reports
/// each request head it read.
fn serve(responses: Vec<Vec<u8>>) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (heads, received) = mpsc::channel();
    thread::spawn(move || {
        for response in responses {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut head = Vec::new();
            let mut byte = [0u8];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
            let _ = stream.write_all(&response);
        }
    });
    (port, received)
}

fn mirror_stats(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mirror"))
        .arg("stats")
        .args(args)
        .output()
        .unwrap()
}

const SEARCH_TABLE: &str = "
target search
                         requests  of seen
  seen                       1000
  mirrored                     95    9.50%  error 3, ok 90, timeout 2
  dropped                       1    0.10%  replay queue full
  skipped                     900   90.00%
    method                     20    2.00%
    sampled_out               880   88.00%
  in flight                     4    0.40%  replays not finished yet
  lost                          3           abandoned before framing
    gap                         2
    reset                       1
  lost (estimated)             ~5           estimate: requests lost whole in gaps, not in seen
  connections skipped           4           connections no longer mirrored
    tls                         3
    upgrade                     1
  replay queue                  2           waiting now

                          primary   shadow
  responses                  1060       90
  paired                     1000           94.34% of primary responses: P50/P99 of these only
  unpaired                     60           gap 20, joined 40
  P50 latency              2.93ms   12.8ms
  P99 latency              6.40ms    373ms
  5xx rate                  0.94%    5.56%
  status mismatches                  5.56%  5 of 90 shadow responses
  body mismatches                   10.00%  9 of 90 shadow responses
  comparisons cancelled                  3  gap 2, response_lost 1

  verdict  inconclusive  only 0 exchanges compared (minimum 200)
";

#[test]
fn one_shot_prints_totals_per_target() {
    let (port, heads) = serve(vec![ok_response(EXPOSITION)]);
    // The daemon's base URL: /metrics is where its metrics are.
    let output = mirror_stats(&["--metrics-url", &format!("http://127.0.0.1:{port}")]);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let head = heads.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(head.starts_with("GET /metrics HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
        "{head}"
    );
    let expected = format!(
        "mirror stats: {url}, totals since the daemon started

target checkout
                     requests  of seen
  seen                      0
  mirrored                  0        -  error 0, ok 0, timeout 0
  dropped                   0        -  replay queue full
  skipped                   0        -
  lost                      0           abandoned before framing
  replay queue              0           waiting now

                      primary   shadow
  responses                 0        0
  P50 latency               -        -
  P99 latency               -        -
  5xx rate                  -        -
  status mismatches                  -  0 of 0 shadow responses
  body mismatches                    -  0 of 0 shadow responses

  verdict  inconclusive  only 0 exchanges compared (minimum 200)
{SEARCH_TABLE}"
    );
    assert_eq!(stdout, expected, "\n{stdout}");
}

#[test]
fn watch_refreshes_with_what_happened_in_between() {
    // 100 more requests: 90 sampled out, 10 replayed ok; 20 more primary 503s; one more body
    // mismatch.
    let later = EXPOSITION
        .replace(
            "mirror_requests_total{target=\"search\"} 1000",
            "mirror_requests_total{target=\"search\"} 1100",
        )
        .replace("reason=\"sampled_out\"} 880", "reason=\"sampled_out\"} 970")
        .replace("outcome=\"ok\"} 90", "outcome=\"ok\"} 100")
        .replace("code=\"503\"} 10", "code=\"503\"} 30")
        .replace("code=\"200\"} 85", "code=\"200\"} 95")
        .replace("kind=\"body\"} 9", "kind=\"body\"} 10")
        // Two more TLS connections; the 20 new primary responses all unpaired after a gap; one
        // more comparison cancelled; about 3 more requests estimated lost.
        .replace(
            "mirror_connections_skipped_total{target=\"search\",reason=\"tls\"} 3",
            "mirror_connections_skipped_total{target=\"search\",reason=\"tls\"} 5",
        )
        .replace(
            "mirror_responses_unpaired_total{target=\"search\",reason=\"gap\"} 20",
            "mirror_responses_unpaired_total{target=\"search\",reason=\"gap\"} 40",
        )
        .replace(
            "mirror_comparisons_cancelled_total{target=\"search\",reason=\"response_lost\"} 1",
            "mirror_comparisons_cancelled_total{target=\"search\",reason=\"response_lost\"} 2",
        )
        .replace(
            "mirror_requests_lost_estimated_total{target=\"search\"} 4.6",
            "mirror_requests_lost_estimated_total{target=\"search\"} 7.6",
        );
    for changed in [
        "reason=\"tls\"} 5",
        "reason=\"gap\"} 40",
        "reason=\"response_lost\"} 2",
        "} 7.6",
    ] {
        assert!(later.contains(changed), "{changed}");
    }
    let (port, _heads) = serve(vec![ok_response(EXPOSITION), ok_response(&later)]);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mirror"))
        .args(["stats", "--metrics-url", &url, "--watch", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut output = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while output
        .iter()
        .filter(|line: &&String| line.starts_with("refreshing"))
        .count()
        < 2
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => output.push(line),
            Err(_) => break,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let output = output.join("\n");
    // Not a terminal: frames follow each other, no escape sequences.
    assert!(!output.contains('\x1b'), "{output}");
    let (first, second) = output
        .split_once("refreshing every 1s; Ctrl-C to quit")
        .unwrap_or_else(|| panic!("no frame in {output:?}"));
    assert!(first.contains("totals since the daemon started"), "{first}");
    assert!(
        first.contains("  seen                       1000\n"),
        "{first}"
    );
    assert!(
        second.contains("refreshing every 1s"),
        "second frame missing: {output}"
    );
    assert!(
        second.contains(&format!("mirror stats: {url}, last 1.")),
        "{second}"
    );
    // The counters of the new frame: what happened in between, reasons without events left out.
    for line in [
        "  seen                        100  ",
        "  mirrored                     10   10.00%  error 0, ok 10, timeout 0\n",
        "  skipped                      90   90.00%\n    sampled_out                90   90.00%\n  lost",
        "  lost (estimated)             ~3           estimate: requests lost whole in gaps, not in seen\n",
        "  connections skipped           2           connections no longer mirrored\n",
        "\n    tls                         2\n  replay queue",
        // The 20 new primary responses came after a gap: none paired, so no latency sample.
        "  responses                    20       10\n",
        "  paired                        0           0.00% of primary responses: P50/P99 of these only\n",
        "  unpaired                     20           gap 20\n",
        // 20 of 20 new primary responses were 503s; 0 of 10 new shadow responses were 5xx.
        "  5xx rate                100.00%    0.00%\n",
        "  body mismatches                   10.00%  1 of 10 shadow responses\n",
        "  comparisons cancelled                  1  response_lost 1\n",
        // Latency histograms did not move: no quantile for the interval.
        "  P99 latency                   -        -\n",
        // The verdict is the totals' (a few seconds of evidence would say little).
        "  verdict (totals)  inconclusive  only 0 exchanges compared (minimum 200)\n",
    ] {
        assert!(second.contains(line), "{line:?} in\n{second}");
    }
}

#[test]
fn a_daemon_that_is_not_running_is_one_clear_sentence() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let output = mirror_stats(&["--metrics-url", &url]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "mirror: fetching {url}: connection refused (is `mirror run` running? --metrics-addr?)\n"
        )
    );
}

#[test]
fn a_wrong_path_or_a_non_prometheus_body_is_reported() {
    let (port, _heads) = serve(vec![
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
        ok_response("<html>\n<body>hello</body>\n"),
    ]);
    let url = format!("http://127.0.0.1:{port}/metrix");
    let output = mirror_stats(&["--metrics-url", &url]);
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("mirror: fetching {url}: HTTP 404 Not Found (the daemon serves /metrics)\n")
    );
    let output = mirror_stats(&["--metrics-url", &url]);
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("mirror: reading {url} as Prometheus text: line 1: expected a metric name\n")
    );
}
