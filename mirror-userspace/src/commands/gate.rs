//! `mirror verdict --serve ADDR`: the cluster-wide verdict as an HTTP gate, for Flagger's
//! webhooks (which pass on any 2xx). `GET` or `POST /gate`: 200 when the verdict of the target
//! is pass, 412 when it is fail or inconclusive, the JSON report as the body either way (Flagger
//! logs the body of a failed check); 502 when Prometheus could not be asked, 400 for a request
//! that names no target. `GET /healthz` for probes. Every request judges afresh: nothing is
//! cached, nothing changes state.
//!
//! The target is, first found: `?target=` of the URL, the webhook payload's `"name"` (Flagger
//! sends `{"name": <canary>, "namespace": ..., "phase": ..., "metadata": {...}}`), `--target`.
//! `?shadow=` (else `--shadow`) picks one candidate.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tracing::{info, warn};

use super::verdict::{Source, VerdictError, judge};
use crate::verdict::{Outcome, Policy};

struct Gate {
    source: Source,
    policy: Policy,
    target: Option<String>,
    shadow: Option<String>,
}

/// What the request asks for: `(target, shadow)` from the query, the payload and the defaults.
fn requested(
    query: Option<&str>,
    body: &[u8],
    default_target: Option<&str>,
    default_shadow: Option<&str>,
) -> Result<(String, Option<String>), String> {
    let (mut target, mut shadow) = (None, None);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "target" => target = Some(value.into_owned()),
            "shadow" => shadow = Some(value.into_owned()),
            other => {
                return Err(format!(
                    "unknown query key {other:?}: allowed target, shadow"
                ));
            }
        }
    }
    let named = || {
        let payload: serde_json::Value = serde_json::from_slice(body).ok()?;
        payload.get("name")?.as_str().map(str::to_owned)
    };
    let target = target
        .or_else(named)
        .or_else(|| default_target.map(str::to_owned))
        .filter(|target| !target.is_empty())
        .ok_or_else(|| {
            "no target: add ?target=NAME, send a webhook payload with \"name\", or start the \
             gate with --target"
                .to_owned()
        })?;
    Ok((target, shadow.or_else(|| default_shadow.map(str::to_owned))))
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body + "\n",
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json(status, serde_json::json!({ "error": message }).to_string())
}

async fn gate(State(gate): State<Arc<Gate>>, uri: Uri, body: Bytes) -> Response {
    let (target, shadow) = match requested(
        uri.query(),
        &body,
        gate.target.as_deref(),
        gate.shadow.as_deref(),
    ) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match judge(&gate.source, &gate.policy, Some(&target), shadow.as_deref()).await {
        Ok(report) => {
            info!(%target, verdict = report.verdict.as_str(), "gate");
            let status = if report.verdict == Outcome::Pass {
                StatusCode::OK
            } else {
                StatusCode::PRECONDITION_FAILED
            };
            // A report is strings, numbers and lists: serialisation cannot fail.
            json(
                status,
                serde_json::to_string(&report).expect("a report serialises"),
            )
        }
        Err(failure) => {
            let message = format!("{:#}", anyhow::Error::from(failure));
            warn!(%target, %message, "gate: no verdict");
            error(StatusCode::BAD_GATEWAY, &message)
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Serves the gate on `addr` until SIGTERM or SIGINT.
pub async fn serve(
    addr: SocketAddr,
    source: Source,
    policy: Policy,
    target: Option<String>,
    shadow: Option<String>,
) -> Result<(), VerdictError> {
    let failed = |source| VerdictError::Serve { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(failed)?;
    let app = Router::new()
        .route("/gate", get(gate).post(gate))
        .route("/healthz", get(healthz))
        .with_state(Arc::new(Gate {
            source: source.clone(),
            policy,
            target,
            shadow,
        }));
    info!(%local, evidence = %source.describe(), "verdict gate at http://{local}/gate");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_comes_from_the_query_then_the_payload_then_the_flag() {
        let flagger =
            br#"{"name":"podinfo","namespace":"test","phase":"Progressing","metadata":{}}"#;
        assert_eq!(
            requested(None, flagger, Some("other"), None),
            Ok(("podinfo".into(), None))
        );
        assert_eq!(
            requested(Some("target=search&shadow=v2"), flagger, None, None),
            Ok(("search".into(), Some("v2".into())))
        );
        assert_eq!(
            requested(None, b"", Some("search"), Some("v3")),
            Ok(("search".into(), Some("v3".into())))
        );
        assert_eq!(
            requested(None, b"not json", Some("search"), None),
            Ok(("search".into(), None))
        );
        assert!(
            requested(None, b"{}", None, None)
                .unwrap_err()
                .starts_with("no target")
        );
        assert!(requested(Some("targets=x"), b"", Some("a"), None).is_err());
    }
}
