//! The metrics endpoint: `/metrics` (Prometheus text format), `/healthz`, and `/verdict` (this
//! node's verdict as JSON), served with axum. Nothing here changes state: the listener is on the
//! node's network (`hostNetwork`).

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, Uri, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::verdict::{Policy, inputs_from_samples, select};

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

/// What the handlers read: the registry, and the policy `/verdict` judges by (`[verdict]`).
#[derive(Clone)]
struct Served {
    registry: Arc<Registry>,
    policy: Arc<Policy>,
}

async fn metrics(
    State(Served { registry, .. }): State<Served>,
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
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {error}"),
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// `target` and `shadow` of a `/verdict` query; anything else is a mistake worth a 400 (a typo
/// would otherwise silently widen the verdict to every target).
fn verdict_query(query: Option<&str>) -> Result<(Option<String>, Option<String>), String> {
    let (mut target, mut shadow) = (None, None);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let slot = match key.as_ref() {
            "target" => &mut target,
            "shadow" => &mut shadow,
            other => {
                return Err(format!(
                    "unknown query key {other:?}: allowed target, shadow"
                ));
            }
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(format!("query key {key:?} given twice"));
        }
    }
    Ok((target, shadow))
}

/// `GET /verdict[?target=T&shadow=S]`: the registry as it would be scraped, read back and judged
/// by the daemon's policy. This node's evidence only: a DaemonSet's daemon sees its node's
/// traffic (`mirror verdict --prometheus-url` judges the cluster). Always 200 with the report:
/// the verdict is the body, not the status.
async fn verdict(State(Served { registry, policy }): State<Served>, uri: Uri) -> impl IntoResponse {
    let (target, shadow) = match verdict_query(uri.query()) {
        Ok(filter) => filter,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    let mut text = String::new();
    let samples = prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|error| format!("encoding metrics: {error}"))
        .and_then(|()| crate::stats::parse(&text).map_err(|error| format!("{error}")));
    let samples = match samples {
        Ok(samples) => samples,
        Err(message) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{message}\n")).into_response();
        }
    };
    let inputs = select(
        inputs_from_samples(&samples, &policy),
        target.as_deref(),
        shadow.as_deref(),
    );
    match serde_json::to_string(&policy.judge(&inputs)) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("serialising the verdict: {error}\n"),
        )
            .into_response(),
    }
}

/// Binds `addr` (so a taken port fails start-up, not later) and returns the serving future;
/// `/verdict` judges by `policy`.
pub async fn bind(
    addr: SocketAddr,
    registry: Arc<Registry>,
    policy: Policy,
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
        .route("/verdict", get(verdict))
        .with_state(Served {
            registry,
            policy: Arc::new(policy),
        });
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
    fn verdict_queries_take_target_and_shadow_only() {
        assert_eq!(verdict_query(None), Ok((None, None)));
        assert_eq!(
            verdict_query(Some("target=search&shadow=v%202")),
            Ok((Some("search".into()), Some("v 2".into())))
        );
        assert_eq!(
            verdict_query(Some("taget=search")),
            Err("unknown query key \"taget\": allowed target, shadow".into())
        );
        assert!(verdict_query(Some("target=a&target=b")).is_err());
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    /// `/verdict` judges what `/metrics` shows, by the daemon's policy, filtered by the query.
    #[tokio::test]
    async fn verdict_is_the_registry_judged_as_json() {
        use crate::metrics::{Metrics, TargetRoleLabels, TargetShadowLabels};
        let (metrics, registry) = Metrics::new();
        for (target, shadow, compared) in [("api", "v2", 500), ("api", "v3", 10), ("web", "v2", 0)]
        {
            let labels = TargetRoleLabels {
                target: target.into(),
                role: "shadow",
                shadow: shadow.into(),
            };
            metrics.shadow_info.get_or_create(&labels).set(1);
            let labels = TargetShadowLabels {
                target: target.into(),
                shadow: shadow.into(),
            };
            metrics.comparisons.get_or_create(&labels).inc_by(compared);
        }
        let policy = Policy {
            min_samples: 100,
            ..Policy::default()
        };
        let (addr, serve) = bind("127.0.0.1:0".parse().unwrap(), Arc::new(registry), policy)
            .await
            .unwrap();
        let client = async {
            (
                get(addr, "/verdict").await,
                get(addr, "/verdict?target=api&shadow=v2").await,
                get(addr, "/verdict?target=api&shadows=v2").await,
                get(addr, "/healthz").await,
            )
        };
        let (all, one, typo, health) = tokio::select! {
            served = serve => panic!("stopped: {served:?}"),
            responses = client => responses,
        };
        assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
        assert!(all.contains("content-type: application/json\r\n"), "{all}");
        let body = |response: &str| -> serde_json::Value {
            serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap()
        };
        // v3 and web/v2 are under the policy's 100 comparisons: inconclusive overall.
        let all = body(&all);
        assert_eq!(all["verdict"], "inconclusive");
        assert_eq!(all["targets"].as_array().unwrap().len(), 2);
        let one = body(&one);
        assert_eq!(one["verdict"], "pass");
        assert_eq!(one["targets"][0]["shadows"][0]["shadow"], "v2");
        assert_eq!(one["targets"][0]["shadows"][0]["samples"], 500);
        assert!(typo.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{typo}");
        assert!(typo.ends_with("unknown query key \"shadows\": allowed target, shadow\n"));
        assert!(health.ends_with("ok\n"));
    }

    #[test]
    fn counters_are_named_with_total_and_openmetrics_lines_go() {
        let openmetrics = "# HELP mirror_requests Requests.\n# TYPE mirror_requests counter\nmirror_requests_total{target=\"a\"} 3\n# HELP mirror_queue Depth.\n# TYPE mirror_queue gauge\n# UNIT mirror_queue requests\nmirror_queue 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(openmetrics),
            "# HELP mirror_requests_total Requests.\n# TYPE mirror_requests_total counter\nmirror_requests_total{target=\"a\"} 3\n# HELP mirror_queue Depth.\n# TYPE mirror_queue gauge\nmirror_queue 1\n"
        );
    }
}
