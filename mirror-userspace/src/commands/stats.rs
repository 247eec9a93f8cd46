//! `mirror stats`: fetches a running daemon's `/metrics`, prints the per-target table of
//! [`crate::stats`] once (totals since start), or with `--watch` every few seconds (what happened
//! since the previous refresh), redrawn in place on a terminal; below each target, its
//! candidates' verdicts under the default policy (from the same scrape's totals).

use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use url::Url;

use super::fetch::{Endpoint, FetchError, fetch, metrics_url};
use crate::{
    cli::StatsArgs,
    stats::{ParseError, Snapshot, Window, in_place, render},
};

/// A scrape that takes longer is stuck (the daemon renders /metrics in microseconds).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the metrics could not be fetched or read. Each message names the URL.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("reading {url} as Prometheus text")]
    Parse {
        url: String,
        #[source]
        source: ParseError,
    },
    #[error("writing to stdout")]
    Stdout(#[source] std::io::Error),
}

async fn scrape(url: &Url) -> Result<Snapshot, StatsError> {
    let text = fetch(url, Endpoint::Daemon, FETCH_TIMEOUT).await?;
    Snapshot::from_text(&text).map_err(|source| StatsError::Parse {
        url: url.to_string(),
        source,
    })
}

/// Prints a frame: redrawn in place on a terminal, one after the other (blank line between)
/// when stdout is a file or pipe, so a log of frames stays readable. `Ok(false)` when the reader
/// went away (`mirror stats --watch | head`): that is the reader's choice, not a failure.
fn show(frame: &str, terminal: bool) -> Result<bool, StatsError> {
    let mut stdout = std::io::stdout().lock();
    let written = if terminal {
        stdout.write_all(in_place(frame).as_bytes())
    } else {
        stdout.write_all(frame.as_bytes())
    };
    match written.and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(StatsError::Stdout(error)),
    }
}

/// `mirror stats [--metrics-url URL] [--watch [SECONDS]]`.
pub async fn run(args: StatsArgs) -> anyhow::Result<()> {
    // A base URL (`http://node:9477`) or the /metrics URL itself.
    let url = metrics_url(&args.metrics_url);
    // The first scrape fails the command: a wrong URL should not turn into a retry loop.
    let mut previous = scrape(&url).await?;
    let mut previous_at = Instant::now();
    let first = render(&previous, url.as_str(), Window::SinceStart);
    let Some(seconds) = args.watch else {
        show(&first, false)?;
        return Ok(());
    };
    let interval = Duration::from_secs(seconds);
    let terminal = std::io::stdout().is_terminal();
    let footer = format!("\nrefreshing every {seconds}s; Ctrl-C to quit\n");
    let separator = if terminal { "" } else { "\n" };
    let mut frame = first;
    while show(&format!("{frame}{footer}{separator}"), terminal)? {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(interval) => {}
        }
        // Later failures (a restarting daemon) are shown and retried; counters that went back
        // are taken as a restart by `Snapshot::since`.
        frame = match scrape(&url).await {
            Ok(now) => {
                let at = Instant::now();
                let window = Window::Last(at.duration_since(previous_at));
                let frame = render(&now.since(&previous), url.as_str(), window);
                (previous, previous_at) = (now, at);
                frame
            }
            Err(error) => format!("mirror stats: {:#}\n", anyhow::Error::from(error)),
        };
    }
    Ok(())
}
