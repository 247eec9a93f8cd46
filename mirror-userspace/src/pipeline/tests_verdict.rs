//! Several shadows end to end through the pipeline (no capture: segments are fed in): a
//! candidate that changes one field, a baseline that only differs where the primary itself is
//! noisy, their JSON answered by loopback servers. The evidence must name the changed field
//! `real` and the noisy one `noise`, the accounting must hold per shadow, and the sink must
//! hold every compared exchange.

use std::{path::PathBuf, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use prometheus_client::registry::Registry;

use super::tests::{Conn, PORT, scrape};
use super::*;
use crate::{
    config::{ShadowConfig, ShadowUrl, SinkSection},
    held::BodyBudget,
    http::TrackerConfig,
    verdict::FieldClass,
};

const REQUESTS: usize = 300;

/// A JSON body: `id` differs on every response of every side (noise), `price` is the field a
/// candidate may change.
fn body(id: usize, price: u32, score: f64) -> String {
    format!(r#"{{"id":"req-{id}","price":{price},"score":{score}}}"#)
}

fn response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers every `GET /item/<n>` with a JSON body: a fresh id per response; the price is
/// `n % 10` (+1 when `n % 5 == 0` if `changes_price`); the score is `n % 7`.
async fn json_shadow(changes_price: bool) -> ShadowUrl {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut served = 0usize;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            served += 1_000_000;
            let base = served;
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut answered = 0;
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(read) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                        buffer.drain(..end + 4);
                        let n: usize = head
                            .split_whitespace()
                            .nth(1)
                            .and_then(|target| target.strip_prefix("/item/"))
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        let mut price = (n % 10) as u32;
                        if changes_price && n.is_multiple_of(5) {
                            price += 1;
                        }
                        answered += 1;
                        let reply = response(&body(base + answered, price, (n % 7) as f64));
                        if stream.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    ShadowUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap()
}

fn temp_path() -> PathBuf {
    std::env::temp_dir()
        .join(crate::netns::unique_name("mirror-verdict-"))
        .join("x.jsonl")
}

/// `REQUESTS` GETs through a pipeline whose target has the candidate `v2` (changes the price
/// of one item in five) and the baseline `base`, every replay finished; `max_per_second` is the
/// field diff's `[verdict.diff] max_per_second`. The synthetic segments all carry one
/// timestamp, so a rate limit takes exactly its burst (one second's worth).
async fn mirrored(
    max_per_second: u32,
    sink: Option<SinkSection>,
) -> (Pipeline, Registry, SharedEvidence) {
    let candidate = json_shadow(true).await;
    let baseline = json_shadow(false).await;
    let mut target = TargetConfig::with_defaults("t".into(), PORT, candidate.clone());
    target.shadows = vec![ShadowConfig::new("v2", candidate), {
        let mut shadow = ShadowConfig::new("base", baseline);
        shadow.baseline = true;
        shadow
    }];
    let (metrics, mut registry) = Metrics::new();
    let sink = sink.map(|section| Sink::start(&section, &metrics).unwrap());
    let evidence = SharedEvidence::default();
    registry.register_collector(Box::new(EvidenceCollector::new(evidence.clone())));
    let (results_tx, mut results) = mpsc::unbounded_channel();
    let mut verdict = VerdictPolicy::default();
    verdict.diff.max_per_second = max_per_second;
    let mut pipeline = Pipeline::new(
        HttpTracker::new(TrackerConfig::default()),
        &[target],
        metrics,
        None,
        results_tx,
        1,
        PipelineSettings {
            evidence: evidence.clone(),
            hold_bodies: Some(BodyBudget::new(16 << 20)),
            verdict,
            ..PipelineSettings::default()
        },
    );
    if let Some(sink) = sink {
        pipeline.set_sink(sink);
    }
    // The primary answers like the baseline: its ids differ from every shadow's.
    let mut conn = Conn::new(41_000);
    for n in 0..REQUESTS {
        conn.client(format!("GET /item/{n} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        conn.server(&response(&body(n, (n % 10) as u32, (n % 7) as f64)));
    }
    pipeline.on_segments(&conn.segments);
    let mut finished = 0;
    while finished < 2 * REQUESTS {
        let result = tokio::time::timeout(Duration::from_secs(10), results.recv())
            .await
            .expect("every replay ends")
            .expect("results open");
        pipeline.on_replay_result(result, 0);
        finished += 1;
    }
    (pipeline, registry, evidence)
}

#[tokio::test]
async fn a_changed_field_is_real_noise_is_cancelled_and_every_exchange_is_logged() {
    let sink_path = temp_path();
    std::fs::create_dir_all(sink_path.parent().unwrap()).unwrap();
    let sink = SinkSection {
        path: Some(sink_path.clone()),
        ..SinkSection::default()
    };
    // 0: every exchange compared field by field.
    let (mut pipeline, registry, evidence) = mirrored(0, Some(sink)).await;
    {
        let evidence = evidence.lock();
        let target = &evidence.targets[0];
        assert_eq!(target.fields.exchanges("v2"), REQUESTS as u64);
        let fields = target.fields.fields("v2");
        let class = |name: &str| {
            fields
                .iter()
                .find(|stat| stat.field == name)
                .map(|stat| stat.classification.class)
        };
        assert_eq!(class("/price"), Some(FieldClass::Real), "{fields:#?}");
        assert_eq!(class("/id"), Some(FieldClass::Noise), "{fields:#?}");
        assert_eq!(class("/score"), Some(FieldClass::Noise), "{fields:#?}");
        let price = fields.iter().find(|stat| stat.field == "/price").unwrap();
        assert_eq!(price.counts.diffs, (REQUESTS / 5) as u64);
        assert_eq!(price.counts.baseline_diffs, 0);
        assert!(
            target.fields.fields("base").is_empty(),
            "a baseline is never judged"
        );
        let drift = target.drift.drift("v2");
        assert!(drift.iter().any(|stat| stat.field == "/score"), "{drift:?}");
    }
    // The accounting identity, per shadow.
    let samples = scrape(&registry);
    let value = |name: &str, shadow: &str| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == name && s.label("shadow").is_none_or(|label| label == shadow))
            .map(|s| s.value)
            .sum()
    };
    for shadow in ["v2", "base"] {
        assert_eq!(
            value("mirror_requests_total", shadow),
            value("mirror_requests_skipped_total", shadow) + value("mirror_replays_total", shadow),
            "identity for {shadow}"
        );
        assert_eq!(value("mirror_comparisons_total", shadow), REQUESTS as f64);
    }
    assert!(
        samples
            .iter()
            .any(|s| s.name == "mirror_field_differences_total"
                && s.label("field") == Some("/price")
                && s.value == (REQUESTS / 5) as f64),
        "the field counters are exported"
    );
    // Every compared exchange is one line naming both shadows.
    pipeline.take_sink().unwrap().shutdown().await;
    let text = std::fs::read_to_string(&sink_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), REQUESTS);
    let changed = lines
        .iter()
        .filter(|line| {
            line["shadows"][0]["differences"]["fields"]
                .as_array()
                .is_some_and(|fields| fields.iter().any(|field| field == "/price"))
        })
        .count();
    assert_eq!(changed, REQUESTS / 5);
    assert!(
        lines
            .iter()
            .all(|line| line["shadows"][1]["role"] == "baseline")
    );
    let _ = std::fs::remove_dir_all(sink_path.parent().unwrap());
}

/// `[verdict.diff] max_per_second` samples whole exchanges: every shadow of a sampled exchange
/// is diffed (the baseline's diff is there beside the candidate's), the others are compared by
/// digest only and counted; the mismatch counters still see every pair.
#[tokio::test]
async fn the_field_diff_samples_whole_exchanges_at_its_rate() {
    const RATE: u32 = 100;
    let (_pipeline, registry, evidence) = mirrored(RATE, None).await;
    {
        let evidence = evidence.lock();
        let target = &evidence.targets[0];
        assert_eq!(target.fields.exchanges("v2"), u64::from(RATE));
        let fields = target.fields.fields("v2");
        let price = fields.iter().find(|stat| stat.field == "/price").unwrap();
        assert_eq!(price.counts.samples, u64::from(RATE));
        assert_eq!(
            price.counts.baseline_samples,
            u64::from(RATE),
            "the baseline diffed on the same exchanges"
        );
        assert_eq!(price.counts.diffs, u64::from(RATE) / 5);
    }
    let samples = scrape(&registry);
    let value = |name: &str, shadow: &str, label: Option<(&str, &str)>| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == name && s.label("shadow") == Some(shadow))
            .filter(|s| label.is_none_or(|(key, value)| s.label(key) == Some(value)))
            .map(|s| s.value)
            .sum()
    };
    for shadow in ["v2", "base"] {
        assert_eq!(
            value("mirror_comparisons_total", shadow, None),
            REQUESTS as f64
        );
        assert_eq!(
            value(
                "mirror_comparisons_digest_only_total",
                shadow,
                Some(("reason", "diff_rate"))
            ),
            (REQUESTS - RATE as usize) as f64,
            "{shadow}"
        );
        assert_eq!(
            value(
                "mirror_response_mismatches_total",
                shadow,
                Some(("kind", "body"))
            ),
            REQUESTS as f64,
            "every pair's digest compared ({shadow})"
        );
    }
}
