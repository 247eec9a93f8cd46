//! From evidence to a verdict, with real processes: a JSON service whose every response carries
//! a fresh id and a timestamp (noise), the primary and a baseline at v1, and two challengers at
//! once: v2 (changes the price of one item in five and shifts every score) and a third v1 copy.
//! `mirror verdict` must fail v2 naming `/price` real, `/id` and `/ts` noise and `/score`
//! drifted, and pass the v1 copy with no real field and no drift; the sink must hold every
//! compared exchange as one JSON line, without the value of a redacted header.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    process::{Child, Stdio},
};

use mirror_tests::{
    daemon::{Daemon, METRICS_ADDR},
    fixtures_dir, mirror_bin,
    mirroring::{PORT, read_response, wait_for},
    netns::{CLIENT_ADDR, NetNs, SERVER_ADDR, topology},
    privileged,
};

/// Requests sent: enough for the policy's minimums set below (200 compared exchanges, 100 per
/// field, 200 values a side for drift).
const REQUESTS: usize = 400;
const CONNECTIONS: usize = 8;
const SECRET: &str = "Bearer SECRET-TOKEN-4d2f";

/// A `json_service.py` process, killed on drop.
struct JsonService(Child);

impl JsonService {
    fn start(ns: &NetNs, bind: &str, port: u16, version: &str) -> Self {
        let mut child = ns
            .command("python3")
            .arg(fixtures_dir().join("json_service.py"))
            .args([
                "--bind",
                bind,
                "--port",
                &port.to_string(),
                "--version",
                version,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting json_service.py");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("reading readiness");
        assert_eq!(ready.trim(), "ready", "json service did not start");
        Self(child)
    }
}

impl Drop for JsonService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The policy's minimums lowered to what `REQUESTS` gives, and every exchange diffed (the
/// burst outruns the default sampling rate, and the sink test counts every changed price): the
/// daemon's `[verdict]` and, as a `--policy` file, `mirror verdict`'s (which does not read the
/// daemon's configuration). Latency is not what this test judges: the four services share two
/// cores with the daemon, so a candidate's P99 can double by chance; only a second's extra
/// latency would fail it.
const POLICY: &str = "min_samples = 200
latency_min_extra_seconds = 1.0

[diff]
max_per_second = 0

[fields]
min_samples = 100

[drift]
min_samples = 200
";

fn config(server_if: &str, sink: &std::path::Path) -> String {
    format!(
        r#"[capture]
interfaces = ["{server_if}"]

[sink]
path = "{sink}"

[verdict]
{POLICY}
[[target]]
name = "api"
port = {PORT}
sample_percent = 100.0

[[target.shadows]]
name = "base"
url = "http://{CLIENT_ADDR}:8081"
baseline = true

[[target.shadows]]
name = "v2"
url = "http://{CLIENT_ADDR}:8082"

[[target.shadows]]
name = "v1-copy"
url = "http://{CLIENT_ADDR}:8083"
"#,
        sink = sink.display(),
        POLICY = POLICY
            .replace("[diff]", "[verdict.diff]")
            .replace("[fields]", "[verdict.fields]")
            .replace("[drift]", "[verdict.drift]"),
    )
}

/// `REQUESTS` GETs of `/items/<n>` on `CONNECTIONS` keep-alive connections, each with the
/// secret Authorization header.
fn load(ns: &NetNs) {
    let handles: Vec<_> = (0..CONNECTIONS)
        .map(|connection| {
            ns.spawn(move || {
                let stream = TcpStream::connect((SERVER_ADDR, PORT)).expect("connect to primary");
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                for n in (connection..REQUESTS).step_by(CONNECTIONS) {
                    let request = format!(
                        "GET /items/{n} HTTP/1.1\r\nHost: api\r\nAuthorization: {SECRET}\r\n\r\n"
                    );
                    writer.write_all(request.as_bytes()).expect("write");
                    assert_eq!(read_response(&mut reader), 200);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("client").expect("client namespace");
    }
}

fn verdict(ns: &NetNs, policy: &std::path::Path) -> (i32, serde_json::Value) {
    let output = ns
        .command(mirror_bin())
        .args([
            "verdict",
            "--metrics-url",
            &format!("http://{METRICS_ADDR}"),
            "--format",
            "json",
            "--policy",
        ])
        .arg(policy)
        .output()
        .expect("running mirror verdict");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "mirror verdict printed no JSON ({error}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().expect("exit code"), report)
}

fn shadow<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["targets"][0]["shadows"]
        .as_array()
        .expect("shadows")
        .iter()
        .find(|shadow| shadow["shadow"] == name)
        .unwrap_or_else(|| panic!("{name} not in {report:#}"))
}

fn class_of<'a>(shadow: &'a serde_json::Value, field: &str) -> Option<&'a str> {
    shadow["fields"]
        .as_array()?
        .iter()
        .find(|entry| entry["field"] == field)
        .and_then(|entry| entry["class"].as_str())
}

#[test]
fn the_verdict_fails_a_changed_field_and_passes_a_copy() {
    if !privileged("the_verdict_fails_a_changed_field_and_passes_a_copy") {
        return;
    }
    let topology = topology();
    let _primary = JsonService::start(&topology.server, SERVER_ADDR, PORT, "v1");
    let _base = JsonService::start(&topology.client, CLIENT_ADDR, 8081, "v1");
    let _v2 = JsonService::start(&topology.client, CLIENT_ADDR, 8082, "v2");
    let _copy = JsonService::start(&topology.client, CLIENT_ADDR, 8083, "v1");
    let dir = TempDir(std::env::temp_dir().join(mirror::netns::unique_name("mirror-verdict-")));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let sink = dir.0.join("exchanges.jsonl");
    let config_path = dir.0.join("mirror.toml");
    std::fs::write(&config_path, config(&topology.server_if, &sink)).expect("config");
    let daemon = Daemon::start(
        &topology.server,
        &["--config", config_path.to_str().expect("utf-8 path")],
    );
    load(&topology.client);
    let compared = |m: &mirror_tests::daemon::Metrics| m.sum("mirror_comparisons_total", &[]);
    wait_for(
        &daemon,
        "every exchange compared with all three shadows",
        |m| compared(m) >= (3 * REQUESTS) as f64,
    );

    let policy = dir.0.join("policy.toml");
    std::fs::write(&policy, POLICY).expect("policy file");
    let (code, report) = verdict(&topology.server, &policy);
    // The daemon's own /verdict judges the same evidence by its [verdict], the same policy.
    let served = topology
        .server
        .command("curl")
        .args(["-sf", &format!("http://{METRICS_ADDR}/verdict")])
        .output()
        .expect("running curl");
    let served: serde_json::Value = serde_json::from_slice(&served.stdout).expect("/verdict JSON");
    assert_eq!(served, report, "/verdict and mirror verdict disagree");
    // `mirror stats` shows the daemon's verdict (its [verdict]: the drift of /score is a third
    // reason, which the default policy would not judge on 400 values).
    let stats = topology
        .server
        .command(mirror_bin())
        .args(["stats", "--metrics-url", &format!("http://{METRICS_ADDR}")])
        .output()
        .expect("running mirror stats");
    let stats = String::from_utf8_lossy(&stats.stdout);
    let v2_line = stats
        .lines()
        .find(|line| line.trim_start().starts_with("verdict v2 "))
        .unwrap_or_else(|| panic!("no verdict line for v2:\n{stats}"));
    assert!(
        v2_line.contains("fail") && v2_line.ends_with("(+2 more)"),
        "{stats}"
    );
    assert_eq!(report["verdict"], "fail", "{report:#}");
    assert_eq!(code, 1, "exit 1 on fail: {report:#}");
    assert_eq!(report["targets"][0]["baseline"], "base");
    let v2 = shadow(&report, "v2");
    assert_eq!(v2["verdict"], "fail", "{v2:#}");
    assert_eq!(class_of(v2, "/price"), Some("real"), "{v2:#}");
    for noisy in ["/id", "/ts"] {
        assert_eq!(class_of(v2, noisy), Some("noise"), "{noisy}: {v2:#}");
    }
    let drifted: Vec<&str> = v2["drift"]
        .as_array()
        .expect("drift")
        .iter()
        .filter(|entry| entry["drifted"] == true)
        .filter_map(|entry| entry["field"].as_str())
        .collect();
    assert_eq!(drifted, ["/score"], "{v2:#}");
    let copy = shadow(&report, "v1-copy");
    assert_eq!(copy["verdict"], "pass", "{copy:#}");
    assert!(
        copy["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .all(|entry| entry["class"] != "real"),
        "{copy:#}"
    );
    assert!(
        copy["drift"]
            .as_array()
            .expect("drift")
            .iter()
            .all(|entry| entry["drifted"] == false),
        "{copy:#}"
    );
    assert!(
        report["targets"][0]["shadows"]
            .as_array()
            .expect("shadows")
            .iter()
            .all(|shadow| shadow["shadow"] != "base"),
        "a baseline is never judged"
    );

    // The sink: every compared exchange, flushed by SIGTERM.
    daemon.stop();
    let text = std::fs::read_to_string(&sink).expect("sink file");
    assert!(
        !text.contains("SECRET-TOKEN"),
        "a redacted header's value reached the sink"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), REQUESTS, "one line per compared exchange");
    for line in &lines {
        let names: Vec<&str> = line["shadows"]
            .as_array()
            .expect("shadows")
            .iter()
            .filter_map(|shadow| shadow["name"].as_str())
            .collect();
        assert_eq!(names, ["base", "v2", "v1-copy"], "{line}");
        assert_eq!(line["primary"]["status"], 200);
    }
    let price_differs = lines
        .iter()
        .filter(|line| {
            line["shadows"][1]["differences"]["fields"]
                .as_array()
                .is_some_and(|fields| fields.iter().any(|field| field == "/price"))
        })
        .count();
    assert_eq!(price_differs, REQUESTS / 5, "v2 changes one price in five");
}
