//! `/v1/keys`: the cluster keyring through the local API (`weft keys list|install|use|remove|
//! reload`). Key material only ever travels from the CLI to the agent (install), over the
//! control socket (the `POST`s are not served on TCP); answers carry key ids.
//!
//! - `GET /v1/keys` → [`KeysReport`] (JSON)
//! - `POST /v1/keys/install` `{"key": "<base64>"}`
//! - `POST /v1/keys/use` `{"id": "<8 hex>", "force": false}`
//! - `POST /v1/keys/remove` `{"id": "<8 hex>", "force": false}`
//! - `POST /v1/keys/reload` (what SIGHUP does)
//!
//! `use` refuses while a live node is not known to hold the key (it could not open this node's
//! gossip anymore), and `remove` while a live node still seals with it, unless `force` is set.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use weft_proto::keyfile::{format_id, parse_id};

use super::handler::{ApiState, Reply};
use crate::keys::KeyStoreError;

/// What `GET /v1/keys` returns and `weft keys list` renders.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysReport {
    /// Gossip runs without keys (`--insecure`).
    pub insecure: bool,
    /// The keyring file or directory.
    pub path: Option<String>,
    /// This node's primary key id (8 hex digits).
    pub primary: Option<String>,
    /// This node's installed key ids.
    pub installed: Vec<String>,
    /// Every node that announced its key ids, this node included, sorted by name.
    pub nodes: Vec<NodeKeys>,
}

/// The key ids one node announced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeKeys {
    pub name: String,
    pub generation: u64,
    pub alive: bool,
    pub is_self: bool,
    /// `None`: the node announced nothing (older agent, insecure, or not heard yet).
    pub primary: Option<String>,
    pub keys: Vec<String>,
}

/// Body of the `POST /v1/keys/*` requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRequest {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub force: bool,
}

type Answer = Reply;

fn answer(status: StatusCode, text: impl Into<String>) -> Answer {
    Reply(status, text.into())
}

pub(super) async fn list(State(s): State<ApiState>) -> Json<KeysReport> {
    let nodes = s.key_view.borrow().clone();
    let report = match &s.keys {
        None => KeysReport {
            insecure: true,
            nodes,
            ..KeysReport::default()
        },
        Some(store) => {
            let ids = store.ids();
            KeysReport {
                insecure: false,
                path: Some(store.path().display().to_string()),
                primary: Some(format_id(ids.primary)),
                installed: ids.installed.iter().map(|i| format_id(*i)).collect(),
                nodes,
            }
        }
    };
    Json(report)
}

fn parse_body(body: &[u8]) -> Result<KeyRequest, Answer> {
    if body.is_empty() {
        return Ok(KeyRequest::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| answer(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

fn parse_request_id(req: &KeyRequest) -> Result<u32, Answer> {
    let text = req
        .id
        .as_deref()
        .ok_or_else(|| answer(StatusCode::BAD_REQUEST, "missing key id"))?;
    parse_id(text).ok_or_else(|| {
        answer(
            StatusCode::BAD_REQUEST,
            "a key id is 8 hex digits (see `weft keys list`)",
        )
    })
}

fn store_error(e: KeyStoreError) -> Answer {
    match e {
        KeyStoreError::Key(k) => answer(StatusCode::CONFLICT, k.to_string()),
        other => answer(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

fn insecure() -> Answer {
    answer(
        StatusCode::CONFLICT,
        "gossip is not sealed (--insecure): there is no keyring; restart with --cluster-key-file",
    )
}

pub(super) async fn install(State(s): State<ApiState>, body: axum::body::Bytes) -> Answer {
    let Some(store) = &s.keys else {
        return insecure();
    };
    let req = match parse_body(&body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let Some(text) = req.key.as_deref() else {
        return answer(StatusCode::BAD_REQUEST, "missing key");
    };
    let key = match weft_proto::envelope::decode_key(text) {
        Ok(k) => k,
        Err(e) => return answer(StatusCode::BAD_REQUEST, format!("invalid key: {e}")),
    };
    match store.install(key) {
        Ok(id) => {
            tracing::info!(key = %format_id(id), op = "keys", "cluster key installed");
            answer(
                StatusCode::OK,
                format!(
                    "installed key {}; it opens gossip now. Install it on every node, then `weft keys use {}` everywhere",
                    format_id(id),
                    format_id(id)
                ),
            )
        }
        Err(e) => store_error(e),
    }
}

/// Live peers (not this node) for which `bad` holds, by name.
fn live_peers_where(s: &ApiState, bad: impl Fn(&NodeKeys) -> bool) -> Vec<String> {
    s.key_view
        .borrow()
        .iter()
        .filter(|n| n.alive && !n.is_self && bad(n))
        .map(|n| n.name.clone())
        .collect()
}

pub(super) async fn use_key(State(s): State<ApiState>, body: axum::body::Bytes) -> Answer {
    let Some(store) = &s.keys else {
        return insecure();
    };
    let (req, id) = match parse_body(&body).and_then(|r| parse_request_id(&r).map(|id| (r, id))) {
        Ok(x) => x,
        Err(a) => return a,
    };
    let hex = format_id(id);
    if !req.force {
        let missing = live_peers_where(&s, |n| !n.keys.contains(&hex));
        if !missing.is_empty() {
            return answer(
                StatusCode::CONFLICT,
                format!(
                    "live nodes without key {hex} could not open this node's gossip: {}; install it there first (or --force)",
                    missing.join(", ")
                ),
            );
        }
    }
    match store.use_key(id) {
        Ok(()) => {
            tracing::info!(key = %hex, op = "keys", "primary cluster key switched");
            answer(
                StatusCode::OK,
                format!("key {hex} is primary: it seals gossip now"),
            )
        }
        Err(e) => store_error(e),
    }
}

pub(super) async fn remove(State(s): State<ApiState>, body: axum::body::Bytes) -> Answer {
    let Some(store) = &s.keys else {
        return insecure();
    };
    let (req, id) = match parse_body(&body).and_then(|r| parse_request_id(&r).map(|id| (r, id))) {
        Ok(x) => x,
        Err(a) => return a,
    };
    let hex = format_id(id);
    if !req.force {
        let sealing = live_peers_where(&s, |n| n.primary.as_deref() == Some(hex.as_str()));
        if !sealing.is_empty() {
            return answer(
                StatusCode::CONFLICT,
                format!(
                    "live nodes still seal with key {hex}: {}; switch them first (or --force)",
                    sealing.join(", ")
                ),
            );
        }
    }
    match store.remove(id) {
        Ok(()) => {
            tracing::info!(key = %hex, op = "keys", "cluster key removed");
            answer(StatusCode::OK, format!("removed key {hex}"))
        }
        Err(e) => store_error(e),
    }
}

pub(super) async fn reload(State(s): State<ApiState>) -> Answer {
    let Some(store) = &s.keys else {
        return insecure();
    };
    match crate::metrics::reload_keys(store, &s.metrics) {
        Ok(true) => answer(StatusCode::OK, "keyring reloaded"),
        Ok(false) => answer(StatusCode::OK, "keyring unchanged"),
        Err(e) => answer(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}
