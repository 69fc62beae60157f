//! The local HTTP API. Read-only calls (`/healthz`, `/readyz`, `/metrics`, `/v1/status` (JSON,
//! the [`StatusReport`] below), `GET /v1/keys`) are served on TCP (`--api`, default
//! 127.0.0.1:7948) and on the control socket `<state-dir>/api.sock`; the mutating ones
//! (`POST /v1/leave` and `POST /v1/keys/*`, see `keys.rs`) only on the control socket (see
//! `control.rs`): over TCP they are refused with 403, counted and logged.
//!
//! Every answer carries the header [`NODE_HEADER`] with the agent's node name, and every answer
//! of a `POST` (or an error) is an [`ApiAnswer`]: this is how a client knows it talks to weft.

use serde::{Deserialize, Serialize};

/// What `GET /v1/status` returns and `weft status` renders.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// This node's name.
    pub node_name: String,
    /// This agent's gossip generation (2^62 + start time in ms; grows at every start).
    pub generation: u64,
    /// Underlay address announced to peers.
    pub underlay_ip: String,
    /// `vxlan` | `host-gw` | `udp`.
    pub backend: String,
    /// The overlay network.
    pub network: String,
    /// This node's subnet, once claimed.
    pub subnet: Option<String>,
    /// `searching` | `claimed` | `active` | `refused` | `leaving`.
    pub state: String,
    /// Subnet active and data plane programmed.
    pub ready: bool,
    /// Why not ready (e.g. "no seed reachable yet: 10.0.0.1:7947").
    pub ready_reason: Option<String>,
    /// Gossip runs without a cluster key.
    pub insecure: bool,
    /// Conditions an operator must see (identity conflicts, lost claims, failed applies).
    pub warnings: Vec<String>,
    /// Every node this agent knows, itself included, sorted by name.
    pub nodes: Vec<NodeStatus>,
}

/// One row of `weft status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Gossip generation.
    pub generation: u64,
    /// Underlay address.
    pub underlay_ip: String,
    /// Subnet the node claims, if any.
    pub subnet: Option<String>,
    /// `claimed` | `active` | `leaving` | `none`.
    pub state: String,
    /// `alive` | `dead`.
    pub liveness: String,
    /// Whether this row is the agent itself.
    pub is_self: bool,
    /// Whether this agent has programmed the node's routes.
    pub programmed: bool,
    /// Why not programmed, when it is not.
    pub reason: Option<String>,
}

/// The response header every answer of the API carries: the agent's node name.
pub const NODE_HEADER: &str = "weft-node";

/// The body of every `POST` answer and of every error: one line for a person to read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiAnswer {
    /// What the agent did, or why it did not.
    pub message: String,
}

pub mod control;
#[allow(missing_docs)]
mod keys;
mod server;
pub use control::{ControlError, ControlListener, Refusals, RefuseReason, socket_path};
pub use keys::{KeyRequest, KeysReport, NodeKeys};
pub use server::{ApiState, BindError, Listeners, serve};
