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

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
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
