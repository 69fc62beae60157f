//! The HTTP server behind the local API (axum), shut down by a cancellation token.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::StatusReport;
use crate::agent::Metrics;

/// What the handlers read and send.
#[derive(Clone)]
pub struct ApiState {
    /// The agent's latest status.
    pub status: watch::Receiver<StatusReport>,
    /// The agent's counters (`/metrics`).
    pub metrics: Arc<Metrics>,
    /// A leave request carries the channel its answer comes back on.
    pub leave: mpsc::Sender<oneshot::Sender<String>>,
    /// The keyring (`None` with `--insecure`).
    pub keys: Option<Arc<crate::agent::keys::KeyStore>>,
    /// Which nodes announced which key ids.
    pub key_view: watch::Receiver<Vec<super::NodeKeys>>,
}

/// Serves until `cancel` fires; in-flight requests (a leave) complete first.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState, cancel: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/leave", post(leave))
        .route("/v1/keys", get(super::keys::list))
        .route("/v1/keys/install", post(super::keys::install))
        .route("/v1/keys/use", post(super::keys::use_key))
        .route("/v1/keys/remove", post(super::keys::remove))
        .route("/v1/keys/reload", post(super::keys::reload))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
    {
        tracing::warn!(error = %e, "local API stopped");
    }
}

async fn readyz(State(s): State<ApiState>) -> impl IntoResponse {
    let report = s.status.borrow();
    if report.ready {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        let why = report.ready_reason.as_deref().unwrap_or("starting");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
    }
}

/// The report is serialized where it lies (it holds every peer and route: cloning it for each
/// poll cost more than writing it).
async fn status(State(s): State<ApiState>) -> axum::response::Response {
    let body = serde_json::to_vec(&*s.status.borrow());
    match body {
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(&[]),
    )
}

async fn leave(State(s): State<ApiState>) -> impl IntoResponse {
    let (tx, rx) = oneshot::channel();
    if s.leave.send(tx).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "agent is stopping\n".to_string(),
        );
    }
    match rx.await {
        Ok(answer) => (StatusCode::OK, answer),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "agent stopped before leaving\n".to_string(),
        ),
    }
}
