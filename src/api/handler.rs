//! What every handler of the local API shares: the state it reads and sends to ([`ApiState`]),
//! and the shape of its answer ([`Reply`]). The routes are in `server.rs`, the keyring's
//! handlers in `keys.rs`.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot, watch};

use super::{ApiAnswer, StatusReport};
use crate::metrics::Metrics;

/// What the handlers read and send.
#[derive(Clone)]
pub struct ApiState {
    /// This agent's node name (the [`NODE_HEADER`] of every answer).
    pub node: String,
    /// The agent's latest status.
    pub status: watch::Receiver<StatusReport>,
    /// The agent's counters (`/metrics`).
    pub metrics: Arc<Metrics>,
    /// A leave request carries the channel its answer comes back on.
    pub leave: mpsc::Sender<oneshot::Sender<String>>,
    /// The keyring (`None` with `--insecure`).
    pub keys: Option<Arc<crate::keys::KeyStore>>,
    /// Which nodes announced which key ids.
    pub key_view: watch::Receiver<Vec<super::NodeKeys>>,
}

/// A handler's answer: the status and an [`ApiAnswer`] body.
pub(super) struct Reply(pub StatusCode, pub String);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let message = self.1.trim_end().to_string();
        (self.0, axum::Json(ApiAnswer { message })).into_response()
    }
}
