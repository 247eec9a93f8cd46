use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;
use crate::config::{PathPattern, SampleBy, ShadowUrl};

/// A request for tests: method, target and headers.
#[derive(Debug)]
struct TestRequest {
    method: &'static str,
    target: &'static str,
    headers: Vec<(&'static str, Vec<u8>)>,
}

impl RequestView for TestRequest {
    fn method(&self) -> &str {
        self.method
    }

    fn target(&self) -> &str {
        self.target
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }
}

fn get(target: &'static str) -> TestRequest {
    request("GET", target)
}

fn request(method: &'static str, target: &'static str) -> TestRequest {
    TestRequest {
        method,
        target,
        headers: Vec::new(),
    }
}

fn with_header(name: &'static str, value: &str) -> TestRequest {
    TestRequest {
        headers: vec![(name, value.as_bytes().to_vec())],
        ..get("/")
    }
}

fn target(name: &str) -> TargetConfig {
    TargetConfig::with_defaults(
        name.into(),
        8080,
        ShadowUrl::parse("http://shadow:8080").unwrap(),
    )
}

const SKIP_SAMPLED: Decision = Decision::Skip(SkipReason::SampledOut);

#[test]
fn methods_outside_the_list_are_skipped_and_case_sensitive() {
    let mut policy = Policy::new(&target("t"));
    assert_eq!(policy.decide(&get("/"), 0, 0, 0), Decision::Mirror);
    assert_eq!(
        policy.decide(&request("HEAD", "/"), 0, 0, 0),
        Decision::Mirror
    );
    for method in ["POST", "PUT", "PATCH", "DELETE", "TRACE", "get"] {
        assert_eq!(
            policy.decide(&request(method, "/"), 0, 0, 0),
            Decision::Skip(SkipReason::Method),
            "{method}"
        );
    }
}

#[test]
fn writes_are_mirrored_only_with_allow_writes() {
    let mut config = TargetConfig {
        methods: vec!["GET".into(), "POST".into()],
        allow_writes: true,
        ..target("t")
    };
    assert_eq!(
        Policy::new(&config).decide(&request("POST", "/pay"), 0, 0, 0),
        Decision::Mirror
    );
    // A config built in code that bypassed validation still never mirrors the write.
    config.allow_writes = false;
    assert_eq!(
        Policy::new(&config).decide(&request("POST", "/pay"), 0, 0, 0),
        Decision::Skip(SkipReason::Method)
    );
}

#[test]
fn path_allow_and_deny() {
    let config = TargetConfig {
        paths: PathFilter {
            allow: vec![PathPattern::new("^/api/").unwrap()],
            deny: vec![PathPattern::new("^/api/admin").unwrap()],
        },
        ..target("t")
    };
    let mut policy = Policy::new(&config);
    assert_eq!(
        policy.decide(&get("/api/items?x=1"), 0, 0, 0),
        Decision::Mirror
    );
    assert_eq!(
        policy.decide(&get("/api/admin"), 0, 0, 0),
        Decision::Skip(SkipReason::Path)
    );
    assert_eq!(
        policy.decide(&get("/health"), 0, 0, 0),
        Decision::Skip(SkipReason::Path)
    );
}

#[test]
fn checks_run_method_path_sampling_rate() {
    let config = TargetConfig {
        sample_percent: 50.0,
        max_rps: 1,
        paths: PathFilter {
            allow: Vec::new(),
            deny: vec![PathPattern::new("^/private").unwrap()],
        },
        ..target("t")
    };
    let mut policy = Policy::new(&config);
    let (sampled_in, sampled_out) = (0, u64::MAX);
    // A write to a denied path that would be sampled out: the method decides.
    assert_eq!(
        policy.decide(&request("POST", "/private"), 0, sampled_out, 0),
        Decision::Skip(SkipReason::Method)
    );
    assert_eq!(
        policy.decide(&get("/private"), 0, sampled_out, 0),
        Decision::Skip(SkipReason::Path)
    );
    // Sampled-out requests spend no token: the one token of the bucket is still there after.
    for _ in 0..5 {
        assert_eq!(policy.decide(&get("/"), 0, sampled_out, 0), SKIP_SAMPLED);
    }
    assert_eq!(policy.decide(&get("/"), 0, sampled_in, 0), Decision::Mirror);
    assert_eq!(
        policy.decide(&get("/"), 0, sampled_in, 0),
        Decision::Skip(SkipReason::RateLimit)
    );

    let counts = policy.counts();
    assert_eq!(counts.mirrored, 1);
    assert_eq!(counts.skipped(SkipReason::Method), 1);
    assert_eq!(counts.skipped(SkipReason::Path), 1);
    assert_eq!(counts.skipped(SkipReason::SampledOut), 5);
    assert_eq!(counts.skipped(SkipReason::RateLimit), 1);
    assert_eq!(counts.total(), 9);
}

#[test]
fn token_bucket_bursts_max_rps_then_refills_with_time() {
    const SECOND: u64 = 1_000_000_000;
    let mut policy = Policy::new(&TargetConfig {
        max_rps: 10,
        ..target("t")
    });
    let mut decide = |now_ns| policy.decide(&get("/"), 0, 0, now_ns);
    let start = 5 * SECOND;
    for _ in 0..10 {
        assert_eq!(decide(start), Decision::Mirror);
    }
    assert_eq!(decide(start), Decision::Skip(SkipReason::RateLimit));
    // 10/s: one token per 100 ms, not earlier.
    assert_eq!(
        decide(start + SECOND / 10 - 1),
        Decision::Skip(SkipReason::RateLimit)
    );
    assert_eq!(decide(start + SECOND / 10), Decision::Mirror);
    assert_eq!(
        decide(start + SECOND / 10),
        Decision::Skip(SkipReason::RateLimit)
    );
    // A long pause refills to the burst size, no more.
    let later = start + 3600 * SECOND;
    let mirrored = (0..50)
        .filter(|_| decide(later) == Decision::Mirror)
        .count();
    assert_eq!(mirrored, 10);
    // A clock stepping back neither refills nor panics.
    assert_eq!(decide(start), Decision::Skip(SkipReason::RateLimit));
    assert_eq!(decide(later + SECOND / 10), Decision::Mirror);
}

#[test]
fn zero_max_rps_is_unlimited() {
    let mut policy = Policy::new(&target("t"));
    assert!((0..10_000).all(|_| policy.decide(&get("/"), 0, 0, 0) == Decision::Mirror));
}

#[test]
fn zero_and_hundred_percent_are_absolute() {
    let mut none = Policy::new(&TargetConfig {
        sample_percent: 0.0,
        ..target("t")
    });
    let mut all = Policy::new(&target("t"));
    for random in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
        assert_eq!(none.decide(&get("/"), 0, random, 0), SKIP_SAMPLED);
        assert_eq!(all.decide(&get("/"), 0, random, 0), Decision::Mirror);
    }
}

#[test]
fn fractional_percentages_are_exact() {
    // 0.5% of evenly spread values is exactly 0.5%: no rounding to whole percent.
    let mut policy = Policy::new(&TargetConfig {
        sample_percent: 0.5,
        ..target("t")
    });
    let n: u128 = 200_000;
    // The middle of each of n equal slices of the u64 range.
    let value = |i: u128| (((2 * i + 1) << 64) / (2 * n)) as u64;
    let mirrored = (0..n)
        .filter(|&i| policy.decide(&get("/"), 0, value(i), 0) == Decision::Mirror)
        .count();
    assert_eq!(mirrored, 1000);
    let sampler = sampler::Sampler::new("t", 0.5, SampleBy::Request);
    assert_eq!(sampler.threshold(), 92_233_720_368_547_758);
}

#[test]
fn ten_percent_of_random_requests_is_ten_percent() {
    let mut policy = Policy::new(&TargetConfig {
        sample_percent: 10.0,
        ..target("t")
    });
    let mut rng = crate::random::SplitMix64::new(42);
    let mirrored = (0..20_000)
        .filter(|_| policy.decide(&get("/"), 0, rng.next_u64(), 0) == Decision::Mirror)
        .count();
    assert!((1800..=2200).contains(&mirrored), "{mirrored} of 20000");
}

fn address(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn per_connection_sampling_is_all_or_nothing() {
    let mut policy = Policy::new(&TargetConfig {
        sample_percent: 20.0,
        sample_by: SampleBy::Connection,
        ..target("t")
    });
    let server = address("198.18.0.1:8080");
    let mut rng = crate::random::SplitMix64::new(7);
    let mut connections_in = 0;
    for port in 10_000..11_000u16 {
        let connection = connection_id(SocketAddr::new(address("198.18.0.2:1").ip(), port), server);
        let decisions: Vec<Decision> = (0..20)
            .map(|_| policy.decide(&get("/"), connection, rng.next_u64(), 0))
            .collect();
        assert!(
            decisions.iter().all(|d| *d == decisions[0]),
            "port {port}: {decisions:?}"
        );
        connections_in += usize::from(decisions[0] == Decision::Mirror);
    }
    assert!(
        (150..=250).contains(&connections_in),
        "{connections_in} of 1000"
    );
}

#[test]
fn connection_id_depends_on_the_whole_four_tuple() {
    let a = connection_id(address("198.18.0.2:40000"), address("198.18.0.1:8080"));
    assert_eq!(
        a,
        connection_id(address("198.18.0.2:40000"), address("198.18.0.1:8080"))
    );
    assert_ne!(
        a,
        connection_id(address("198.18.0.2:40001"), address("198.18.0.1:8080"))
    );
    assert_ne!(
        a,
        connection_id(address("198.18.0.3:40000"), address("198.18.0.1:8080"))
    );
    assert_ne!(
        a,
        connection_id(address("198.18.0.2:40000"), address("198.18.0.1:8081"))
    );
    assert_ne!(
        a,
        connection_id(address("198.18.0.1:8080"), address("198.18.0.2:40000"))
    );
    assert_ne!(
        a,
        connection_id(address("[::ffff:198.18.0.2]:40000"), address("[::1]:8080"))
    );
}

#[test]
fn per_header_sampling_is_all_or_nothing_per_value() {
    let config = TargetConfig {
        sample_percent: 25.0,
        sample_by: SampleBy::Header("X-User-Id".into()),
        ..target("t")
    };
    let mut policy = Policy::new(&config);
    let mut rng = crate::random::SplitMix64::new(3);
    let mut users_in = 0;
    for user in 0..1000 {
        let request = with_header("x-user-id", &format!("user-{user}"));
        let first = policy.decide(&request, rng.next_u64(), rng.next_u64(), 0);
        for _ in 0..10 {
            // Other connections, other random values: same decision.
            assert_eq!(
                policy.decide(&request, rng.next_u64(), rng.next_u64(), 0),
                first
            );
        }
        users_in += usize::from(first == Decision::Mirror);
    }
    assert!((200..=300).contains(&users_in), "{users_in} of 1000");
}

#[test]
fn missing_sample_header_falls_back_to_per_request_random() {
    let mut policy = Policy::new(&TargetConfig {
        sample_percent: 50.0,
        sample_by: SampleBy::Header("X-User-Id".into()),
        ..target("t")
    });
    assert_eq!(policy.decide(&get("/"), 0, 0, 0), Decision::Mirror);
    assert_eq!(policy.decide(&get("/"), 0, u64::MAX, 0), SKIP_SAMPLED);
}

#[test]
fn targets_sample_independently() {
    let policy_for = |name: &str| {
        Policy::new(&TargetConfig {
            sample_percent: 10.0,
            sample_by: SampleBy::Header("X-Request-Id".into()),
            ..target(name)
        })
    };
    let (mut a, mut b) = (policy_for("a"), policy_for("b"));
    let (mut in_a, mut in_both) = (0, 0);
    for id in 0..20_000 {
        let request = with_header("X-Request-Id", &id.to_string());
        let mirrored_a = a.decide(&request, 0, 0, 0) == Decision::Mirror;
        let mirrored_b = b.decide(&request, 0, 0, 0) == Decision::Mirror;
        in_a += usize::from(mirrored_a);
        in_both += usize::from(mirrored_a && mirrored_b);
    }
    assert!((1800..=2200).contains(&in_a), "{in_a}");
    // Independent: about 10% of a's sample is also in b's (the same seed would give 100%).
    assert!(in_both < in_a / 5, "{in_both} of {in_a}");
}

#[test]
fn skip_reason_labels_are_stable() {
    let labels: Vec<&str> = SkipReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels, ["method", "path", "sampled_out", "rate_limit"]);
}

proptest! {
    /// Every daemon of a DaemonSet, and a daemon after a restart, must decide a request alike:
    /// without a rate limit (the one state a policy keeps on purpose) a decision depends on its
    /// inputs only, never on the requests decided before. A fresh policy decides each request
    /// as the long-lived one that saw the whole history.
    #[test]
    fn decisions_depend_on_the_request_not_on_history(
        percent in 0.0..=100.0f64,
        by in 0..3u8,
        inputs in proptest::collection::vec((any::<u64>(), any::<u64>(), 0..3_000_000_000u64, 0..4usize), 1..64),
    ) {
        let sample_by = match by {
            0 => SampleBy::Request,
            1 => SampleBy::Connection,
            _ => SampleBy::Header("x-key".into()),
        };
        let config = TargetConfig { sample_percent: percent, sample_by, max_rps: 0, ..target("p") };
        let mut long_lived = Policy::new(&config);
        let mut now_ns = 0;
        for (connection, random, step_ns, shape) in inputs {
            now_ns += step_ns;
            let request = match shape {
                0 => get("/"),
                1 => request("POST", "/"),
                2 => with_header("X-Key", &connection.to_string()),
                _ => get("/other"),
            };
            prop_assert_eq!(
                long_lived.decide(&request, connection, random, now_ns),
                Policy::new(&config).decide(&request, connection, random, now_ns)
            );
        }
    }
}
