//! Command-line interface (contract: the README's "Commands").

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::capture::{
    DEFAULT_QUEUE_BYTES, DEFAULT_RING_BUFFER_BYTES, MAX_QUEUE_BYTES, MIN_QUEUE_BYTES,
};

/// Packet-level HTTP/1.x traffic mirror: captures a service's traffic with a TC eBPF classifier,
/// reassembles it and replays sampled requests to a shadow service.
#[derive(Debug, Parser)]
#[command(name = "mirror", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr (verbosity via RUST_LOG, e.g. RUST_LOG=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MIRROR_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommand named on a command line (`args` with the program name first), found without
/// clap, for when clap rejected the line: `mirror verdict` reports usage errors with its own
/// exit status (3), the other subcommands with clap's (2).
pub fn subcommand_name<I, S>(args: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString>,
{
    let mut args = args.into_iter().map(Into::into).skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        if arg == "--log-format" {
            // The one global option with a separate value.
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mirror live traffic: capture, sample, rewrite and replay requests to the shadow, compare
    /// its responses with the primary's, export metrics. Needs root (or CAP_BPF, CAP_NET_ADMIN
    /// and CAP_PERFMON). Flags override the config file; without a file, --interface, --port
    /// and --shadow define one target named "default".
    Run(RunArgs),
    /// Validate a config file: print the effective configuration, or the first error as
    /// file:line:col.
    CheckConfig {
        /// The TOML configuration file.
        file: std::path::PathBuf,
    },
    /// Show the HTTP traffic of target ports as seen on the wire, one line per request/response
    /// pair (method, Host, target, status, primary latency); replays nothing. Needs root (or
    /// CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON).
    Capture(CaptureArgs),
    /// Print a table per target from a running daemon's /metrics: requests seen, mirrored,
    /// skipped by reason, lost; primary vs shadow P50/P99 latency, 5xx rate, status and body
    /// mismatch rates; each candidate's verdict (the daemon's /verdict). Needs no privileges.
    Stats(StatsArgs),
    /// Promote or roll back: judge each candidate shadow by the verdict policy, from one
    /// daemon's /metrics (that node's traffic since it started) or from Prometheus (every node,
    /// over a window). Exit status: 0 pass, 1 fail, 2 inconclusive, 3 error (unreachable,
    /// HTTP error, bad policy file, bad usage). With --serve, an HTTP gate for Flagger webhooks
    /// instead. Needs no privileges.
    Verdict(VerdictArgs),
    /// The one-command tour: in network namespaces it creates (and removes, also on Ctrl-C), a
    /// primary "search v1" and a shadow "search v2" with an N+1 regression, the mirror sampling
    /// 10% of real client traffic, live progress, and a verdict naming the slow path. Needs root.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration file (see `mirror check-config`).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Interface name or glob pattern ('veth*'); repeat for several. Replaces the file's list.
    #[arg(long = "interface", short = 'i', value_name = "IFACE")]
    pub interfaces: Vec<String>,

    /// Primary service port (requests: destination port; responses: source port).
    #[arg(long, short = 'p', value_name = "PORT")]
    pub port: Option<u16>,

    /// Shadow base URL, e.g. http://search-v2:8080.
    #[arg(long, value_name = "URL")]
    pub shadow: Option<String>,

    /// Percentage of requests to mirror, 0..=100, fractions allowed.
    #[arg(long, value_name = "PERCENT")]
    pub sample: Option<f64>,

    /// Also mirror POST, PUT, PATCH and DELETE (off by default: the shadow must not repeat
    /// side effects such as charging a card).
    #[arg(long)]
    pub allow_writes: bool,

    /// Address of the metrics endpoint (/metrics, /healthz), e.g. 0.0.0.0:9477.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Send traffic for 6 seconds instead of 20 (for CI); the verdict is the same.
    #[arg(long, conflicts_with = "seconds")]
    pub short: bool,

    /// Send traffic for SECONDS.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: Option<u64>,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Interface name or glob pattern ('veth*'); repeat for several. Default: every link but
    /// loopback. Loopback, when named, is captured on egress only (it sees each packet twice).
    #[arg(long = "interface", short = 'i', value_name = "IFACE")]
    pub interfaces: Vec<String>,

    /// Target TCP port (the service's port); repeat for several.
    #[arg(long = "port", short = 'p', value_name = "PORT", required = true)]
    pub ports: Vec<u16>,

    /// Stop after N lines.
    #[arg(long, short = 'c', value_name = "N")]
    pub count: Option<u64>,

    /// Print one line per TCP segment (flow, direction, seq, flags, length) instead of one per
    /// HTTP request/response pair.
    #[arg(long)]
    pub segments: bool,

    /// Ring buffer size in bytes (power of two, multiple of the page size).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RING_BUFFER_BYTES)]
    pub ring_buffer_bytes: u32,

    /// Bytes of captured segments queued between the ring reader and the printer, 1048576 ..
    /// 2^34 (`[limits] capture_queue_bytes` of `mirror run`); beyond, batches are dropped and
    /// counted (user.consumer_dropped in the summary).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = DEFAULT_QUEUE_BYTES as u64,
        value_parser = clap::value_parser!(u64).range(MIN_QUEUE_BYTES..=MAX_QUEUE_BYTES),
    )]
    pub capture_queue_bytes: u64,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The daemon's metrics endpoint: its base URL (http://node:9477) or its /metrics URL
    /// (plain http://; `mirror run --metrics-addr` or the config's `[metrics]` `listen` sets
    /// where it is).
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:9477/metrics"
    )]
    pub metrics_url: url::Url,

    /// Refresh every SECONDS (2 if omitted) in place, showing what happened since the previous
    /// refresh (rates over that interval); without --watch, print totals since start once.
    #[arg(
        long,
        value_name = "SECONDS",
        num_args = 0..=1,
        default_missing_value = "2",
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    pub watch: Option<u64>,
}

/// `mirror verdict --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VerdictFormat {
    /// One line per candidate with its verdict and reasons, then its real and drifted fields.
    Text,
    /// The whole report (the shape of the daemon's /verdict).
    Json,
}

#[derive(Debug, Args)]
pub struct VerdictArgs {
    /// One daemon: its base URL (http://node:9477) or its /metrics URL. Judges that node's
    /// traffic since the daemon started. The default when --prometheus-url is not given.
    #[arg(long, value_name = "URL", conflicts_with = "prometheus_url")]
    pub metrics_url: Option<url::Url>,

    /// Every node: Prometheus' base URL (http://prometheus:9090); sums each daemon's evidence
    /// over --window with `sum by (...) (increase(...))`.
    #[arg(long, value_name = "URL")]
    pub prometheus_url: Option<url::Url>,

    /// With --prometheus-url: the window the counters' increase is taken over, a Prometheus
    /// duration (30m, 1h, 1h30m, 1d). Default 1h.
    #[arg(long, value_name = "DURATION", requires = "prometheus_url")]
    pub window: Option<crate::verdict::prometheus::Window>,

    /// Judge only this target (a `[[target]]` name).
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,

    /// Judge only this candidate shadow (its name; `shadow` for `shadow = "URL"`).
    #[arg(long, value_name = "NAME")]
    pub shadow: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = VerdictFormat::Text)]
    pub format: VerdictFormat,

    /// A TOML file with the keys of a configuration's `[verdict]` section at its top level
    /// (`min_samples`, `max_p99_ratio`, `[fields]`, `[drift]`...). Default: the built-in policy.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<std::path::PathBuf>,

    /// Serve an HTTP gate on ADDR (e.g. 0.0.0.0:8080) instead of judging once: GET or POST
    /// /gate answers 200 when the cluster-wide verdict of the target (`?target=`, else the
    /// Flagger webhook payload's "name", else --target) is pass, 412 otherwise, with the JSON
    /// report as the body. Needs --prometheus-url.
    #[arg(long, value_name = "ADDR", requires = "prometheus_url")]
    pub serve: Option<std::net::SocketAddr>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn capture_takes_repeated_interfaces_and_ports() {
        let cli = Cli::try_parse_from([
            "mirror",
            "capture",
            "-i",
            "eth0",
            "--interface",
            "veth*",
            "--port",
            "8080",
            "-p",
            "9090",
            "--count",
            "5",
        ])
        .unwrap();
        let Command::Capture(args) = cli.command else {
            panic!("parsed as capture");
        };
        assert_eq!(args.interfaces, ["eth0", "veth*"]);
        assert_eq!(args.ports, [8080, 9090]);
        assert_eq!(args.count, Some(5));
        assert_eq!(args.capture_queue_bytes, DEFAULT_QUEUE_BYTES as u64);
    }

    #[test]
    fn capture_queue_bytes_is_range_checked() {
        let parse = |bytes: &str| {
            Cli::try_parse_from([
                "mirror",
                "capture",
                "-p",
                "80",
                "--capture-queue-bytes",
                bytes,
            ])
        };
        let Command::Capture(args) = parse("1048576").unwrap().command else {
            panic!("parsed as capture");
        };
        assert_eq!(args.capture_queue_bytes, MIN_QUEUE_BYTES);
        assert!(parse("1048575").is_err());
        assert!(parse(&(MAX_QUEUE_BYTES + 1).to_string()).is_err());
    }

    #[test]
    fn run_takes_the_contract_flags() {
        let cli = Cli::try_parse_from([
            "mirror",
            "run",
            "--interface",
            "eth0",
            "--port",
            "8080",
            "--shadow",
            "http://10.0.0.7:8080",
            "--sample",
            "10",
            "--allow-writes",
            "--metrics-addr",
            "127.0.0.1:9477",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("parsed as run");
        };
        assert_eq!(args.interfaces, ["eth0"]);
        assert_eq!(args.port, Some(8080));
        assert_eq!(args.sample, Some(10.0));
        assert!(args.allow_writes);
        assert_eq!(args.metrics_addr.as_deref(), Some("127.0.0.1:9477"));
    }

    #[test]
    fn capture_interfaces_are_optional() {
        let cli = Cli::try_parse_from(["mirror", "capture", "--port", "8080"]).unwrap();
        let Command::Capture(args) = cli.command else {
            panic!("parsed as capture");
        };
        assert!(args.interfaces.is_empty());
    }

    #[test]
    fn capture_requires_a_port() {
        let error = Cli::try_parse_from(["mirror", "capture", "-i", "eth0"]).unwrap_err();
        assert!(error.to_string().contains("--port"), "{error}");
    }

    #[test]
    fn stats_defaults_to_the_local_endpoint_and_watch_takes_an_optional_interval() {
        let Command::Stats(args) = Cli::try_parse_from(["mirror", "stats"]).unwrap().command else {
            panic!("parsed as stats");
        };
        assert_eq!(args.metrics_url.as_str(), "http://127.0.0.1:9477/metrics");
        assert_eq!(args.watch, None);
        let cli = Cli::try_parse_from([
            "mirror",
            "stats",
            "--watch",
            "--metrics-url",
            "http://[::1]:9000/metrics",
        ]);
        let Command::Stats(args) = cli.unwrap().command else {
            panic!("parsed as stats");
        };
        assert_eq!(args.watch, Some(2));
        assert_eq!(args.metrics_url.port(), Some(9000));
        let cli = Cli::try_parse_from(["mirror", "stats", "--watch", "5"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Stats(StatsArgs { watch: Some(5), .. })
        ));
        assert!(Cli::try_parse_from(["mirror", "stats", "--watch", "0"]).is_err());
        let base = Cli::try_parse_from(["mirror", "stats", "--metrics-url", "http://n:9477"]);
        assert!(
            base.is_ok(),
            "a base URL is accepted (and normalised by the command)"
        );
        assert!(Cli::try_parse_from(["mirror", "stats", "--metrics-url", "not a url"]).is_err());
    }

    #[test]
    fn the_subcommand_is_found_past_global_options() {
        assert_eq!(
            subcommand_name(["mirror", "verdict", "--window", "x"]).as_deref(),
            Some("verdict")
        );
        assert_eq!(
            subcommand_name(["mirror", "--log-format", "json", "verdict"]).as_deref(),
            Some("verdict")
        );
        assert_eq!(
            subcommand_name(["mirror", "--log-format=json", "stats"]).as_deref(),
            Some("stats")
        );
        assert_eq!(subcommand_name(["mirror", "--help"]), None);
        assert_eq!(subcommand_name(Vec::<String>::new()), None);
    }

    #[test]
    fn verdict_takes_one_source_and_filters() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["mirror", "verdict"].iter().chain(args)).map(|cli| cli.command)
        };
        let Ok(Command::Verdict(args)) = parse(&[]) else {
            panic!("parsed as verdict");
        };
        assert_eq!(
            args.metrics_url, None,
            "the command defaults to the local daemon"
        );
        assert_eq!(args.format, VerdictFormat::Text);
        let Ok(Command::Verdict(args)) = parse(&[
            "--prometheus-url",
            "http://prometheus:9090",
            "--window",
            "30m",
            "--target",
            "search",
            "--shadow",
            "v2",
            "--format",
            "json",
            "--policy",
            "p.toml",
        ]) else {
            panic!("parsed as verdict");
        };
        assert_eq!(args.window.unwrap().as_str(), "30m");
        assert_eq!(args.target.as_deref(), Some("search"));
        assert_eq!(args.format, VerdictFormat::Json);
        for bad in [
            &[
                "--metrics-url",
                "http://a:9477",
                "--prometheus-url",
                "http://p:9090",
            ][..],
            &["--window", "1h"],
            &["--prometheus-url", "http://p:9090", "--window", "soon"],
            &["--serve", "0.0.0.0:8080"],
            &["--format", "yaml"],
            &["--metrics-url", "not a url"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse(&[
                "--prometheus-url",
                "http://p:9090",
                "--serve",
                "0.0.0.0:8080"
            ])
            .is_ok()
        );
    }
}
