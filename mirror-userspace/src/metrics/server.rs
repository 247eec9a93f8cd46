//! The metrics endpoint: `/metrics` (Prometheus text format) and `/healthz`, served with axum.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsServerError {
    #[error("binding the metrics endpoint to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving metrics: {0}")]
    Serve(#[source] std::io::Error),
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Converts prometheus-client's OpenMetrics output to the Prometheus text format (0.0.4), which
/// every scraper and `promtool` read: counter families are named with their `_total` suffix in
/// `# HELP`/`# TYPE`, and the OpenMetrics-only `# EOF`/`# UNIT` lines go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(renamed) => text.push_str(&renamed),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

async fn metrics(
    State(registry): State<Arc<Registry>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let mut body = String::new();
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) if openmetrics => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Ok(()) => (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            to_prometheus_text(&body),
        )
            .into_response(),
        Err(error) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {error}"),
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Binds `addr` (so a taken port fails start-up, not later) and returns the serving future.
pub async fn bind(
    addr: SocketAddr,
    registry: Arc<Registry>,
) -> Result<
    (
        SocketAddr,
        impl Future<Output = Result<(), MetricsServerError>>,
    ),
    MetricsServerError,
> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsServerError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| MetricsServerError::Bind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(registry);
    let serve = async move {
        axum::serve(listener, app)
            .await
            .map_err(MetricsServerError::Serve)
    };
    Ok((local, serve))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_total_and_openmetrics_lines_go() {
        let openmetrics = "# HELP mirror_requests Requests.\n# TYPE mirror_requests counter\nmirror_requests_total{target=\"a\"} 3\n# HELP mirror_queue Depth.\n# TYPE mirror_queue gauge\n# UNIT mirror_queue requests\nmirror_queue 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(openmetrics),
            "# HELP mirror_requests_total Requests.\n# TYPE mirror_requests_total counter\nmirror_requests_total{target=\"a\"} 3\n# HELP mirror_queue Depth.\n# TYPE mirror_queue gauge\nmirror_queue 1\n"
        );
    }
}
