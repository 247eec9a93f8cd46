//! `mirror verdict`: the promote-or-roll-back decision as an exit status. The evidence comes
//! from one daemon's `/metrics` (that node, since the daemon started) or from Prometheus (every
//! node, summed over a window: [`crate::verdict::prometheus`]); either way it becomes samples,
//! [`inputs_from_samples`] and [`Policy::judge`]. `--serve` answers the same question over HTTP
//! for Flagger's webhooks ([`super::gate`]).

use std::{io::Write as _, time::Duration};

use url::Url;

use super::fetch::{Endpoint, FetchError, fetch, metrics_url};
use crate::{
    cli::{VerdictArgs, VerdictFormat},
    config::{Config, ConfigError},
    stats::{ParseError, Sample, parse},
    verdict::{
        Policy, Report, inputs_from_samples,
        prometheus::{PrometheusError, Query, Window, queries, samples_from_response},
        select,
        text::{exit_code, render},
    },
};

/// The exit status of every error (unreachable, HTTP error, bad policy, bad usage): distinct
/// from the verdicts' 0, 1 and 2, so that a gate never takes a failure to judge for one.
pub const ERROR_EXIT: u8 = 3;

/// Per request: a daemon answers in milliseconds, Prometheus in well under a second for these
/// queries; longer means something is wrong, and a rollout should hear so.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The daemon `mirror verdict` asks when given no URL (the default of `[metrics] listen`).
const LOCAL_DAEMON: &str = "http://127.0.0.1:9477/metrics";

/// Why no verdict could be given.
#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("reading {url} as Prometheus text")]
    Parse {
        url: String,
        #[source]
        source: ParseError,
    },
    #[error("{0}")]
    Prometheus(#[from] PrometheusError),
    #[error("{url}: not a base URL to put /api/v1/query under")]
    PrometheusUrl { url: String },
    #[error("reading the policy")]
    Policy(#[source] ConfigError),
    #[error("serving the gate on {addr}")]
    Serve {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("writing to stdout")]
    Stdout(#[source] std::io::Error),
}

/// Where the evidence comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// One daemon's `/metrics`.
    Daemon(Url),
    /// Prometheus' query API at this base URL, over a window.
    Prometheus { base: Url, window: Window },
}

/// `base`'s instant-query URL for `promql` (a base with a path prefix keeps it).
pub fn query_url(base: &Url, promql: &str) -> Result<Url, VerdictError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    let mut url = base
        .join("api/v1/query")
        .map_err(|_| VerdictError::PrometheusUrl {
            url: base.to_string(),
        })?;
    url.query_pairs_mut().clear().append_pair("query", promql);
    Ok(url)
}

impl Source {
    /// Where the evidence is from, for the headline of the text form.
    pub fn describe(&self) -> String {
        match self {
            Self::Daemon(url) => format!("{url}, this node since the daemon started"),
            Self::Prometheus { base, window } => {
                format!("{base}, all nodes, last {}", window.as_str())
            }
        }
    }

    /// The samples of the evidence, of `target` only when given (Prometheus filters it).
    pub async fn samples(&self, target: Option<&str>) -> Result<Vec<Sample>, VerdictError> {
        match self {
            Self::Daemon(url) => {
                let text = fetch(url, Endpoint::Daemon, TIMEOUT).await?;
                parse(&text).map_err(|source| VerdictError::Parse {
                    url: url.to_string(),
                    source,
                })
            }
            Self::Prometheus { base, window } => {
                // Side by side: the slowest query bounds the wait, not their sum.
                let mut tasks = tokio::task::JoinSet::new();
                for (index, query) in queries(window, target).into_iter().enumerate() {
                    let url = query_url(base, &query.promql)?;
                    tasks.spawn(async move { (index, ask(&url, &query).await) });
                }
                let mut answers = Vec::new();
                while let Some(joined) = tasks.join_next().await {
                    // A task only ends by returning: it neither panics nor is aborted.
                    if let Ok((index, answer)) = joined {
                        answers.push((index, answer?));
                    }
                }
                // The order of `queries`, whatever order the answers came in.
                answers.sort_by_key(|(index, _)| *index);
                Ok(answers
                    .into_iter()
                    .flat_map(|(_, samples)| samples)
                    .collect())
            }
        }
    }
}

async fn ask(url: &Url, query: &Query) -> Result<Vec<Sample>, VerdictError> {
    let body = fetch(url, Endpoint::Prometheus, TIMEOUT).await?;
    Ok(samples_from_response(query, &body)?)
}

/// The verdict of `target`'s (or every target's) candidates (`shadow`: one of them).
pub async fn judge(
    source: &Source,
    policy: &Policy,
    target: Option<&str>,
    shadow: Option<&str>,
) -> Result<Report, VerdictError> {
    let samples = source.samples(target).await?;
    let inputs = select(inputs_from_samples(&samples, policy), target, shadow);
    Ok(policy.judge(&inputs))
}

/// The policy of `--policy FILE`, or the built-in one.
pub fn policy(file: Option<&std::path::Path>) -> Result<Policy, VerdictError> {
    file.map_or_else(
        || Ok(Policy::default()),
        |file| Config::load_policy(file).map_err(VerdictError::Policy),
    )
}

/// `mirror verdict ...`: the exit status (errors are printed here, as `main` prints others).
pub async fn run(args: VerdictArgs) -> u8 {
    match verdict(args).await {
        Ok(status) => status,
        Err(error) => {
            eprintln!("mirror: {:#}", anyhow::Error::from(error));
            ERROR_EXIT
        }
    }
}

async fn verdict(args: VerdictArgs) -> Result<u8, VerdictError> {
    let policy = policy(args.policy.as_deref())?;
    let source = match (args.prometheus_url, args.metrics_url) {
        (Some(base), _) => Source::Prometheus {
            base,
            window: args.window.unwrap_or_default(),
        },
        (None, Some(url)) => Source::Daemon(metrics_url(&url)),
        // The URL is a constant that parses.
        (None, None) => Source::Daemon(Url::parse(LOCAL_DAEMON).expect("a URL")),
    };
    if let Some(addr) = args.serve {
        super::gate::serve(addr, source, policy, args.target, args.shadow).await?;
        return Ok(0);
    }
    let report = judge(
        &source,
        &policy,
        args.target.as_deref(),
        args.shadow.as_deref(),
    )
    .await?;
    let output = match args.format {
        VerdictFormat::Text => render(&report, &source.describe(), policy.drift.threshold),
        // A report is strings, numbers and lists: serialisation cannot fail.
        VerdictFormat::Json => {
            serde_json::to_string_pretty(&report).expect("a report serialises") + "\n"
        }
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A reader that went away (`| head`) does not change the verdict.
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(VerdictError::Stdout(error));
        }
        _ => {}
    }
    Ok(exit_code(report.verdict))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_go_under_the_base_path() {
        for (base, expected) in [
            (
                "http://prometheus:9090",
                "http://prometheus:9090/api/v1/query?query=up+%3D%3D+1",
            ),
            (
                "http://gw/prometheus",
                "http://gw/prometheus/api/v1/query?query=up+%3D%3D+1",
            ),
            (
                "http://gw/prometheus/?x=1",
                "http://gw/prometheus/api/v1/query?query=up+%3D%3D+1",
            ),
        ] {
            let url = query_url(&Url::parse(base).unwrap(), "up == 1").unwrap();
            assert_eq!(url.as_str(), expected);
        }
    }

    #[test]
    fn sources_describe_their_scope() {
        let daemon = Source::Daemon(Url::parse("http://n:9477/metrics").unwrap());
        assert_eq!(
            daemon.describe(),
            "http://n:9477/metrics, this node since the daemon started"
        );
        let cluster = Source::Prometheus {
            base: Url::parse("http://p:9090").unwrap(),
            window: "30m".parse().unwrap(),
        };
        assert_eq!(cluster.describe(), "http://p:9090/, all nodes, last 30m");
    }

    #[test]
    fn a_bad_policy_file_is_an_error_with_its_position() {
        let dir = std::env::temp_dir().join(crate::netns::unique_name("policy"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("policy.toml");
        std::fs::write(&file, "min_samples = 10\nmax_p99_ratio = \"high\"\n").unwrap();
        let error = anyhow::Error::from(policy(Some(&file)).unwrap_err());
        let message = format!("{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            message.starts_with(&format!("reading the policy: {}:2:17: ", file.display())),
            "{message}"
        );
        assert_eq!(policy(None).unwrap(), Policy::default());
    }
}
