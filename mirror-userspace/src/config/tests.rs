//! Loading valid files, defaults, printing and command-line overrides.

use super::*;

const FULL: &str = include_str!("../../tests/config/full.toml");
const MINIMAL: &str = include_str!("../../tests/config/minimal.toml");

fn parse(text: &str) -> Config {
    Config::from_toml(text, "test.toml").unwrap_or_else(|error| panic!("{error}"))
}

fn patterns(sources: &[&str]) -> Vec<PathPattern> {
    sources
        .iter()
        .map(|s| PathPattern::new(s).unwrap())
        .collect()
}

#[test]
fn full_example_parses_to_the_expected_struct() {
    let search = TargetConfig {
        sample_percent: 10.0,
        set_headers: vec![HeaderField::new("x-mirrored-by", "mirror").unwrap()],
        ..TargetConfig::with_defaults(
            "search".into(),
            8080,
            ShadowUrl::parse("http://search-v2.production.svc:8080").unwrap(),
        )
    };
    let checkout = TargetConfig {
        name: "checkout".into(),
        port: 9090,
        shadows: vec![ShadowConfig {
            queue: 16,
            concurrency: 4,
            timeout_ms: 500,
            ..ShadowConfig::new("shadow", ShadowUrl::parse("http://[fd00::7]:9090").unwrap())
        }],
        sample_percent: 0.5,
        sample_by: SampleBy::Header("X-User-Id".into()),
        methods: vec!["GET".into(), "POST".into()],
        allow_writes: true,
        paths: PathFilter {
            allow: patterns(&["^/api/"]),
            deny: patterns(&["^/api/admin", "token="]),
        },
        host: HostMode::Shadow,
        // Tables are read in name order ("X-..." sorts before "x-...").
        set_headers: vec![
            HeaderField::new("X-Mirrored-By", "mirror").unwrap(),
            HeaderField::new("x-env", "shadow").unwrap(),
        ],
        remove_headers: vec!["authorization".into(), "cookie".into()],
        compare_responses: false,
        max_rps: 50,
        queue: 16,
        concurrency: 4,
        timeout_ms: 500,
        addresses: vec![
            parse_address("10.42.0.0/16").unwrap(),
            parse_address("fd00::7").unwrap(),
        ],
        pods: Some(PodSelector::new("shop", "app=checkout,track!=shadow").unwrap()),
    };
    let expected = Config {
        capture: CaptureSection {
            interfaces: vec!["eth0".into(), "veth*".into()],
            ring_buffer_bytes: 16_777_216,
        },
        metrics: MetricsSection {
            listen: "0.0.0.0:9477".parse().unwrap(),
        },
        limits: LimitsSection::default(),
        replay: ReplaySection::default(),
        verdict: Default::default(),
        sink: SinkSection {
            path: Some("/var/log/mirror/exchanges.jsonl".into()),
            max_file_bytes: 1_048_576,
            max_files: 3,
            body_bytes: 4096,
            // Lower-cased, duplicates dropped.
            redact_headers: vec!["authorization".into(), "x-api-key".into()],
            redact_fields: ["/user/email", "/items/*/card", "/a~1b"]
                .map(|source| crate::sink::JsonPointer::parse(source).unwrap())
                .to_vec(),
            only: SinkOnly::Differences,
            queue_bytes: 1_048_576,
        },
        targets: vec![search, checkout],
    };
    assert_eq!(parse(FULL), expected);
}

#[test]
fn omitted_settings_take_the_documented_defaults() {
    let config = parse(MINIMAL);
    assert!(config.capture.interfaces.is_empty());
    assert_eq!(config.capture.ring_buffer_bytes, 16_777_216);
    assert_eq!(config.metrics.listen.to_string(), "0.0.0.0:9477");
    assert_eq!(
        config.limits,
        LimitsSection {
            reassembly_memory_bytes: 268_435_456,
            max_connections: 262_144,
            idle_timeout_secs: 120,
            max_message_bytes: 16_777_216,
            capture_queue_bytes: 67_108_864,
            compare_body_bytes: 67_108_864,
        }
    );
    assert_eq!(
        config.sink,
        SinkSection {
            path: None,
            max_file_bytes: 104_857_600,
            max_files: 5,
            body_bytes: 65536,
            redact_headers: [
                "authorization",
                "cookie",
                "set-cookie",
                "proxy-authorization"
            ]
            .map(String::from)
            .to_vec(),
            redact_fields: Vec::new(),
            only: SinkOnly::All,
            queue_bytes: 16_777_216,
        }
    );
    let [target] = config.targets.as_slice() else {
        panic!("one target expected");
    };
    assert_eq!(target.name, "search");
    assert_eq!(target.port, 8080);
    assert_eq!(target.shadows[0].url.authority(), "search-v2:8080");
    assert_eq!(target.sample_percent, 100.0);
    assert_eq!(target.sample_by, SampleBy::Request);
    assert_eq!(target.methods, ["GET", "HEAD", "OPTIONS"]);
    assert!(!target.allow_writes);
    assert_eq!(target.paths, PathFilter::default());
    assert_eq!(target.host, HostMode::Suffix("-shadow".into()));
    assert!(target.set_headers.is_empty());
    assert!(target.remove_headers.is_empty());
    assert!(target.compare_responses);
    assert_eq!(target.max_rps, 0);
    assert_eq!(target.queue, 1024);
    assert_eq!(target.concurrency, 64);
    assert_eq!(target.timeout_ms, 2000);
}

#[test]
fn integer_sample_percent_is_accepted() {
    let config = parse(&MINIMAL.replace("port = 8080", "port = 8080\nsample_percent = 25"));
    assert_eq!(config.targets[0].sample_percent, 25.0);
}

#[test]
fn effective_config_round_trips() {
    for text in [FULL, MINIMAL] {
        let config = parse(text);
        let printed = config.to_toml_string();
        assert_eq!(parse(&printed), config, "printed:\n{printed}");
        // Defaults are spelled out, so the printout shows what the daemon will do.
        assert!(
            printed.contains("ring_buffer_bytes = 16777216"),
            "{printed}"
        );
        assert!(printed.contains("host = \"suffix:-shadow\""), "{printed}");
        assert!(
            printed.contains("capture_queue_bytes = 67108864"),
            "{printed}"
        );
        assert!(printed.contains("\n[sink]\n"), "{printed}");
        assert!(printed.contains("max_file_bytes = "), "{printed}");
    }
    // The sink off is printed as `path = ""`, which reads back as off.
    let printed = parse(MINIMAL).to_toml_string();
    assert!(printed.contains("path = \"\""), "{printed}");
    assert!(printed.contains("only = \"all\""), "{printed}");
}

#[test]
fn sink_path_empty_or_absent_is_off() {
    assert_eq!(parse(MINIMAL).sink.path, None);
    let config = parse(&format!("[sink]\npath = \"\"\n{MINIMAL}"));
    assert_eq!(config.sink, SinkSection::default());
    let config = parse(&format!(
        "[sink]\npath = \"/tmp/x.jsonl\"\nredact_headers = []\nmax_files = 0\nbody_bytes = 0\n{MINIMAL}"
    ));
    assert_eq!(config.sink.path.as_deref(), Some(Path::new("/tmp/x.jsonl")));
    assert!(
        config.sink.redact_headers.is_empty(),
        "an empty list redacts nothing"
    );
    assert_eq!((config.sink.max_files, config.sink.body_bytes), (0, 0));
}

#[test]
fn capture_queue_bytes_is_read_from_limits() {
    let with = |bytes: u64| {
        parse(&format!(
            "[limits]\ncapture_queue_bytes = {bytes}\n{MINIMAL}"
        ))
        .limits
        .capture_queue_bytes
    };
    assert_eq!(with(1_048_576), 1_048_576);
    assert_eq!(with(1 << 34), 1 << 34);
    assert_eq!(with(268_435_456), 268_435_456);
}

#[test]
fn shadow_url_forms() {
    let url = ShadowUrl::parse("http://10.0.0.7:8080").unwrap();
    assert_eq!(
        (url.authority(), url.host(), url.port()),
        ("10.0.0.7:8080", "10.0.0.7", 8080)
    );
    // Port 80 is implied, so not part of the Host value.
    let url = ShadowUrl::parse("http://search-v2:80/").unwrap();
    assert_eq!((url.authority(), url.port()), ("search-v2", 80));
    assert_eq!(url.to_string(), "http://search-v2");
    let url = ShadowUrl::parse("http://[::1]:9000").unwrap();
    assert_eq!(
        (url.authority(), url.host(), url.port()),
        ("[::1]:9000", "::1", 9000)
    );
}

#[test]
fn path_filter_deny_wins_and_empty_allow_allows_all() {
    let filter = PathFilter {
        allow: patterns(&["^/api/"]),
        deny: patterns(&["^/api/admin"]),
    };
    assert!(filter.permits("/api/search?q=1"));
    assert!(!filter.permits("/api/admin/users"));
    assert!(!filter.permits("/static/app.js"));
    let deny_only = PathFilter {
        allow: Vec::new(),
        deny: patterns(&["secret"]),
    };
    assert!(deny_only.permits("/anything"));
    assert!(!deny_only.permits("/x?secret=1"));
}

fn flags() -> RunOverrides {
    RunOverrides {
        interfaces: vec!["eth0".into()],
        ..RunOverrides::default()
    }
}

#[test]
fn flags_alone_make_one_implicit_target() {
    let overrides = RunOverrides {
        port: Some(8080),
        shadow: Some("http://10.0.0.7:8080".into()),
        sample_percent: Some(10.0),
        ..flags()
    };
    let config = Config::with_overrides(None, &overrides).unwrap();
    assert_eq!(config.capture.interfaces, ["eth0"]);
    let expected = TargetConfig {
        sample_percent: 10.0,
        ..TargetConfig::with_defaults(
            IMPLICIT_TARGET_NAME.into(),
            8080,
            ShadowUrl::parse("http://10.0.0.7:8080").unwrap(),
        )
    };
    assert_eq!(config.targets, [expected]);
}

#[test]
fn without_a_file_port_shadow_and_interface_are_required() {
    let error = |overrides: RunOverrides| {
        Config::with_overrides(None, &overrides)
            .unwrap_err()
            .to_string()
    };
    let shadow = Some("http://s:1".to_string());
    assert_eq!(
        error(RunOverrides {
            shadow: shadow.clone(),
            ..flags()
        }),
        "--port: --port is required without --config (it defines the implicit target)"
    );
    assert_eq!(
        error(RunOverrides {
            port: Some(1),
            ..flags()
        }),
        "--shadow: --shadow is required without --config (it defines the implicit target)"
    );
    let message = error(RunOverrides {
        port: Some(1),
        shadow,
        ..RunOverrides::default()
    });
    assert!(
        message.starts_with("--interface: no capture interface"),
        "{message}"
    );
}

#[test]
fn flags_override_a_single_target_file() {
    let file = parse(&format!(
        "[capture]\ninterfaces = [\"lo\"]\n[metrics]\nlisten = \"127.0.0.1:1\"\n{MINIMAL}"
    ));
    let overrides = RunOverrides {
        interfaces: vec!["veth*".into()],
        port: Some(9000),
        shadow: Some("http://other:9001".into()),
        sample_percent: Some(0.5),
        allow_writes: true,
        metrics_addr: Some("[::]:9999".into()),
    };
    let config = Config::with_overrides(Some(file), &overrides).unwrap();
    assert_eq!(config.capture.interfaces, ["veth*"]);
    assert_eq!(config.metrics.listen.to_string(), "[::]:9999");
    let target = &config.targets[0];
    assert_eq!(target.name, "search");
    assert_eq!(target.port, 9000);
    assert_eq!(target.shadows[0].url.authority(), "other:9001");
    assert_eq!(target.sample_percent, 0.5);
    assert!(target.allow_writes);
    assert_eq!(
        target.methods,
        ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
    );
}

#[test]
fn file_values_stay_when_no_flag_is_given() {
    let file = parse(FULL);
    let config = Config::with_overrides(Some(file.clone()), &RunOverrides::default()).unwrap();
    assert_eq!(config, file);
}

#[test]
fn several_targets_refuse_port_and_shadow_but_take_sample_and_writes() {
    let file = parse(FULL);
    let error = Config::with_overrides(
        Some(file.clone()),
        &RunOverrides {
            port: Some(1),
            ..flags()
        },
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "--port: --port applies to a single target but the config file defines 2 (search, checkout); set it in the file's [[target]] instead"
    );
    let error = Config::with_overrides(
        Some(file.clone()),
        &RunOverrides {
            shadow: Some("http://x:1".into()),
            ..flags()
        },
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("--shadow: --shadow applies to a single target"),
        "{error}"
    );

    let config = Config::with_overrides(
        Some(file),
        &RunOverrides {
            sample_percent: Some(1.5),
            allow_writes: true,
            ..RunOverrides::default()
        },
    )
    .unwrap();
    for target in &config.targets {
        assert_eq!(target.sample_percent, 1.5);
        assert!(target.allow_writes);
        assert_eq!(target.unallowed_write(), None);
    }
    // Methods already listed are not added twice.
    assert_eq!(
        config.targets[1].methods,
        ["GET", "POST", "PUT", "PATCH", "DELETE"]
    );
}

#[test]
fn invalid_flag_values_name_the_flag() {
    let base = RunOverrides {
        port: Some(8080),
        shadow: Some("http://s:1".into()),
        ..flags()
    };
    let error = |overrides: RunOverrides| {
        Config::with_overrides(None, &overrides)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        error(RunOverrides {
            sample_percent: Some(101.0),
            ..base.clone()
        }),
        "--sample: sample_percent = 101 is out of range: allowed 0..=100 (fractions allowed)"
    );
    assert_eq!(
        error(RunOverrides {
            shadow: Some("https://s".into()),
            ..base.clone()
        }),
        "--shadow: invalid shadow URL `https://s`: https shadows are not supported yet; use http://host[:port]"
    );
    assert_eq!(
        error(RunOverrides {
            metrics_addr: Some("localhost".into()),
            ..base.clone()
        }),
        "--metrics-addr: invalid listen address `localhost`: expected ip:port such as 0.0.0.0:9477 or [::]:9477"
    );
    assert_eq!(
        error(RunOverrides {
            port: Some(0),
            ..base.clone()
        }),
        "--port: port 0 is invalid: allowed 1..=65535"
    );
    assert!(
        error(RunOverrides {
            interfaces: vec!["a/b".into()],
            ..base
        })
        .starts_with("--interface: invalid interface `a/b`")
    );
}

#[test]
fn load_reads_a_file_and_reports_io_errors_with_the_path() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/config/full.toml");
    assert_eq!(Config::load(path).unwrap(), parse(FULL));
    let error = Config::load("/nonexistent/mirror.toml").unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/mirror.toml: cannot read the config file: "),
        "{error}"
    );
}

#[test]
fn target_for_port_finds_the_owner() {
    let config = parse(FULL);
    assert_eq!(
        config.target_for_port(9090).map(|t| t.name.as_str()),
        Some("checkout")
    );
    assert!(config.target_for_port(1).is_none());
}
