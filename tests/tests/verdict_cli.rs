//! `mirror verdict` end to end, without privileges: the built binary against a stub of
//! Prometheus' query API on loopback (not a Prometheus: a tiny HTTP server that answers
//! `GET /api/v1/query?query=...` with canned instant vectors chosen by the queried family and
//! `target="..."` selector, and records the queries), and against a stub `/metrics` serving a
//! daemon's exposition text. Checked: exit status (0 pass, 1 fail, 2 inconclusive, 3 error) and
//! output in both formats, the PromQL sent, usage and policy errors, and the `--serve` gate.
//! These tests need no root and never skip.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use mirror_tests::mirror_bin;
use serde_json::{Value, json};

/// One target's evidence summed over nodes, as the stub answers for it.
#[derive(Clone, Copy)]
struct Evidence {
    /// Exchanges compared per shadow (the candidate `v2` and the baseline `copy`).
    compared: u64,
    /// Of the candidate's 1000 samples of `/price`, those that differ (the baseline's: 10).
    price_diffs: u64,
}

const PASS: Evidence = Evidence {
    compared: 1000,
    price_diffs: 12,
};
const FAIL: Evidence = Evidence {
    compared: 1000,
    price_diffs: 300,
};
const INCONCLUSIVE: Evidence = Evidence {
    compared: 50,
    price_diffs: 12,
};

fn vector_sample(labels: Value, value: f64) -> Value {
    json!({"metric": labels, "value": [1_717_171_717.5, value.to_string()]})
}

/// The instant vector Prometheus would return for `query` about `target`.
fn answer(query: &str, target: &str, evidence: Evidence) -> Vec<Value> {
    let labels = |extra: Value| {
        let mut labels = json!({"target": target});
        for (key, value) in extra.as_object().expect("labels") {
            labels[key] = value.clone();
        }
        labels
    };
    let mut samples = Vec::new();
    if query.contains("(mirror_shadow_info") {
        for (role, shadow) in [("shadow", "v2"), ("baseline", "copy")] {
            samples.push(vector_sample(
                labels(json!({"role": role, "shadow": shadow})),
                1.0,
            ));
        }
    } else if query.contains("(mirror_comparisons_total") {
        for shadow in ["v2", "copy"] {
            let value = evidence.compared as f64;
            samples.push(vector_sample(labels(json!({"shadow": shadow})), value));
        }
    } else if query.contains("(mirror_responses_total") {
        // No shadow label on the primary's series: `sum by` drops the empty one.
        samples.push(vector_sample(
            labels(json!({"role": "primary", "code": "200"})),
            1000.0,
        ));
        for (role, shadow) in [("shadow", "v2"), ("baseline", "copy")] {
            let value = evidence.compared as f64;
            let labels = labels(json!({"role": role, "shadow": shadow, "code": "200"}));
            samples.push(vector_sample(labels, value));
        }
    } else if query.contains("(mirror_response_duration_seconds_bucket") {
        for (role, shadow) in [("primary", None), ("shadow", Some("v2"))] {
            for (le, count) in [("0.001", 0.3), ("0.01", 0.99), ("+Inf", 1.0)] {
                let mut extra = json!({"role": role, "le": le});
                if let Some(shadow) = shadow {
                    extra["shadow"] = json!(shadow);
                }
                samples.push(vector_sample(labels(extra), count * 1000.0));
            }
        }
    } else if query.contains("(mirror_field_") && !query.contains("value_bucket") {
        let value = if query.contains("(mirror_field_differences_total") {
            evidence.price_diffs
        } else if query.contains("(mirror_field_baseline_differences_total") {
            10
        } else if query.contains("(mirror_field_volatile_differences_total") {
            0
        } else {
            1000
        };
        let labels = labels(json!({"shadow": "v2", "field": "/price"}));
        samples.push(vector_sample(labels, value as f64));
    }
    // mirror_field_value_bucket: no numeric fields, no series.
    samples
}

/// The stub of Prometheus' query API: `targets` is the evidence per target; every query it
/// received is recorded.
struct StubPrometheus {
    url: String,
    queries: Arc<Mutex<Vec<String>>>,
}

impl StubPrometheus {
    fn start(targets: &[(&'static str, Evidence)]) -> Self {
        let targets: BTreeMap<&'static str, Evidence> = targets.iter().copied().collect();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&queries);
        let url = serve(move |path| {
            let url = url::Url::parse(&format!("http://stub{path}")).expect("request target");
            if url.path() != "/api/v1/query" {
                return (
                    404,
                    "{\"status\":\"error\",\"error\":\"no such path\"}".to_owned(),
                );
            }
            let query = url
                .query_pairs()
                .find(|(key, _)| key == "query")
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default();
            recorded.lock().unwrap().push(query.clone());
            let result: Vec<Value> = targets
                .iter()
                .filter(|(target, _)| {
                    !query.contains("target=") || query.contains(&format!("target=\"{target}\""))
                })
                .flat_map(|(target, evidence)| answer(&query, target, *evidence))
                .collect();
            let body =
                json!({"status": "success", "data": {"resultType": "vector", "result": result}});
            (200, body.to_string())
        });
        Self { url, queries }
    }

    fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
}

/// An HTTP/1.1 server on loopback, one response per connection (then close), from `respond`
/// given the request target. Returns its base URL.
fn serve(respond: impl Fn(&str) -> (u16, String) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let respond = Arc::new(respond);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let respond = Arc::clone(&respond);
            thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                let (status, body) = respond(&path);
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            });
        }
    });
    url
}

fn mirror(args: &[&str]) -> Output {
    Command::new(mirror_bin())
        .args(args)
        .output()
        .expect("running mirror")
}

fn verdict(args: &[&str]) -> Output {
    let mut all = vec!["verdict"];
    all.extend_from_slice(args);
    mirror(&all)
}

fn status(output: &Output) -> i32 {
    output.status.code().expect("exited")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}\n{}", stdout(output), stderr(output)))
}

#[test]
fn cluster_wide_verdicts_exit_0_1_2() {
    let prometheus =
        StubPrometheus::start(&[("search", PASS), ("checkout", FAIL), ("cart", INCONCLUSIVE)]);
    let url = prometheus.url.as_str();
    for (target, code, outcome) in [
        ("search", 0, "pass"),
        ("checkout", 1, "fail"),
        ("cart", 2, "inconclusive"),
    ] {
        let args = [
            "--prometheus-url",
            url,
            "--target",
            target,
            "--window",
            "30m",
            "--format",
            "json",
        ];
        let output = verdict(&args);
        assert_eq!(status(&output), code, "{target}: {}", stderr(&output));
        let report = report(&output);
        assert_eq!(report["verdict"], outcome, "{report:#}");
        let targets = report["targets"].as_array().unwrap();
        assert_eq!(targets.len(), 1, "only the target asked for: {report:#}");
        assert_eq!(targets[0]["target"], target);
        assert_eq!(targets[0]["baseline"], "copy");
        let candidate = &targets[0]["shadows"][0];
        assert_eq!(candidate["shadow"], "v2");
        assert_eq!(candidate["verdict"], outcome);
    }
    // The failing candidate's reason is its /price field, beyond the baseline's 1% noise.
    let output = verdict(&[
        "--prometheus-url",
        url,
        "--target",
        "checkout",
        "--format",
        "json",
    ]);
    let reasons = report(&output)["targets"][0]["shadows"][0]["reasons"].clone();
    assert_eq!(
        reasons,
        json!(["/price differs in 30.0% of responses (baseline 1.0%)"])
    );
    // What was asked: sums over nodes of counters' increase over the window, per target.
    let queries = prometheus.queries();
    assert!(
        queries.contains(
            &r#"sum by (target, shadow) (increase(mirror_comparisons_total{target="search"}[30m]))"#
                .to_owned()
        ),
        "{queries:#?}"
    );
    assert!(queries.contains(
        &r#"max by (target, role, shadow) (mirror_shadow_info{target="cart"})"#.to_owned()
    ));
    // The default window is an hour.
    assert!(queries.iter().any(|query| query.ends_with("[1h]))")));
}

#[test]
fn every_target_at_once_and_the_text_form() {
    let prometheus = StubPrometheus::start(&[("search", PASS), ("checkout", FAIL)]);
    let output = verdict(&["--prometheus-url", &prometheus.url]);
    assert_eq!(status(&output), 1, "one failing candidate fails all");
    assert_eq!(
        stdout(&output),
        format!(
            "mirror verdict: fail ({}/, all nodes, last 1h)\n\
             checkout v2: fail, 1000 compared: /price differs in 30.0% of responses (baseline \
             1.0%)\n  \
             real fields: /price 30.0% (noise 1.0%)\n\
             search v2: pass, 1000 compared\n",
            prometheus.url
        )
    );
    // A candidate filter that matches nothing: nothing judged, inconclusive.
    let output = verdict(&["--prometheus-url", &prometheus.url, "--shadow", "v9"]);
    assert_eq!(status(&output), 2);
    assert!(stdout(&output).ends_with("no candidate shadow to judge (only a baseline)\n"));
}

#[test]
fn errors_exit_3_with_one_sentence() {
    // Prometheus refuses the query.
    let refusing = serve(|_| {
        let body = json!({"status": "error", "errorType": "bad_data", "error": "1:1: parse error"});
        (400, body.to_string())
    });
    let output = verdict(&["--prometheus-url", &refusing]);
    assert_eq!(status(&output), 3);
    assert!(
        stderr(&output).contains(": HTTP 400 X: 1:1: parse error\n"),
        "{}",
        stderr(&output)
    );
    assert!(output.stdout.is_empty());
    // Nothing listens.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = verdict(&["--prometheus-url", &format!("http://{closed}")]);
    assert_eq!(status(&output), 3);
    assert!(
        stderr(&output).contains("connection refused (is Prometheus there? --prometheus-url?)"),
        "{}",
        stderr(&output)
    );
    // A bad policy file: its position.
    let dir = std::env::temp_dir().join(mirror_tests::unique_name("verdict-policy"));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "min_samples = 10\nmax_p99_ratio = \"x\"\n").unwrap();
    let output = verdict(&["--policy", policy.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(status(&output), 3);
    assert!(
        stderr(&output).starts_with(&format!(
            "mirror: reading the policy: {}:2:17: ",
            policy.display()
        )),
        "{}",
        stderr(&output)
    );
}

#[test]
fn usage_errors_of_verdict_exit_3_and_of_other_commands_2() {
    for args in [
        &["verdict", "--window", "1h"][..],
        &[
            "verdict",
            "--prometheus-url",
            "http://p:9090",
            "--window",
            "an hour",
        ],
        &["verdict", "--no-such-flag"],
        &["--log-format", "json", "verdict", "--format", "yaml"],
    ] {
        let output = mirror(args);
        assert_eq!(status(&output), 3, "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).starts_with("error: "),
            "{}",
            stderr(&output)
        );
    }
    assert_eq!(status(&mirror(&["stats", "--no-such-flag"])), 2);
    let help = mirror(&["verdict", "--help"]);
    assert_eq!(status(&help), 0);
    assert!(stdout(&help).contains("--prometheus-url"));
}

/// One daemon: its `/metrics` (the base URL is enough), judged with a policy file.
#[test]
fn one_daemons_metrics_judged_by_a_policy_file() {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    let exposition = "\
# TYPE mirror_shadow_info gauge
mirror_shadow_info{target=\"search\",role=\"shadow\",shadow=\"shadow\"} 1
# TYPE mirror_comparisons_total counter
mirror_comparisons_total{target=\"search\",shadow=\"shadow\"} 120
mirror_responses_total{target=\"search\",role=\"primary\",shadow=\"\",code=\"200\"} 120
mirror_responses_total{target=\"search\",role=\"shadow\",shadow=\"shadow\",code=\"200\"} 100
mirror_responses_total{target=\"search\",role=\"shadow\",shadow=\"shadow\",code=\"503\"} 20
";
    let daemon = serve(move |path| {
        seen.lock().unwrap().push(path.to_owned());
        (200, exposition.to_owned())
    });
    // Under the default policy 120 comparisons are too few (200)...
    let output = verdict(&["--metrics-url", &daemon]);
    assert_eq!(status(&output), 2, "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with(&format!(
            "mirror verdict: inconclusive ({daemon}/metrics, this node since the daemon started)\n"
        )),
        "{}",
        stdout(&output)
    );
    assert_eq!(heads.lock().unwrap().as_slice(), ["/metrics"]);
    // ... a policy that asks for 100 judges them: 16.7% 5xx against none.
    let dir = std::env::temp_dir().join(mirror_tests::unique_name("verdict-policy"));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "min_samples = 100\n").unwrap();
    let url = format!("{daemon}/metrics");
    let output = verdict(&["--metrics-url", &url, "--policy", policy.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(status(&output), 1, "{}", stderr(&output));
    assert!(
        stdout(&output).contains(
            "search shadow: fail, 120 compared: 5xx in 16.7% of responses vs the primary's 0.0% \
             (limit +1.0 points)\n"
        ),
        "{}",
        stdout(&output)
    );
}

/// A free loopback port (bound then released: very likely still free right after).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn request(addr: SocketAddr, request: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Flagger gate: 200 for a passing target, 412 otherwise, the report as the body; it stops
/// cleanly on SIGTERM.
#[test]
fn the_gate_answers_flagger_webhooks() {
    let prometheus = StubPrometheus::start(&[("search", PASS), ("checkout", FAIL)]);
    let addr = free_addr();
    let child = Command::new(mirror_bin())
        .args(["verdict", "--prometheus-url", &prometheus.url, "--serve"])
        .arg(addr.to_string())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the gate");
    let mut gate = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        if let Some(response) = request(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
        ) {
            break response;
        }
        assert!(
            Instant::now() < deadline,
            "the gate never listened on {addr}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    let post = |target: &str| {
        let body = format!(
            r#"{{"name":"{target}","namespace":"shop","phase":"Progressing","metadata":{{}}}}"#
        );
        request(
            addr,
            &format!(
                "POST /gate HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .expect("an answer")
    };
    let pass = post("search");
    assert!(pass.starts_with("HTTP/1.1 200 OK\r\n"), "{pass}");
    let fail = post("checkout");
    assert!(
        fail.starts_with("HTTP/1.1 412 Precondition Failed\r\n"),
        "{fail}"
    );
    let body: Value = serde_json::from_str(fail.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["verdict"], "fail");
    assert_eq!(body["targets"][0]["target"], "checkout");
    // `?target=` wins over the payload; an unknown target has no evidence: 412.
    let get = request(
        addr,
        "GET /gate?target=nobody HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
    );
    assert!(get.unwrap().starts_with("HTTP/1.1 412 "));
    let bare = request(
        addr,
        "GET /gate HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
    );
    assert!(bare.unwrap().starts_with("HTTP/1.1 400 "));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gate.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = gate.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the gate ignored SIGTERM");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0));
}
