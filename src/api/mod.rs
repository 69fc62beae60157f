//! The local HTTP API (`--api`, default 127.0.0.1:7948): `/healthz`, `/readyz`, `/metrics`,
//! `/v1/status` (JSON, the [`StatusReport`] below), `POST /v1/leave`, and the keyring under
//! `/v1/keys` (see `keys.rs`).

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

#[allow(missing_docs)]
mod keys;
mod server;
pub use keys::{KeyRequest, KeysReport, NodeKeys};
pub use server::{ApiState, serve};
