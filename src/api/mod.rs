//! The local HTTP API. Read-only calls (`/healthz`, `/readyz`, `/metrics`, `/v1/status` (JSON,
//! the [`StatusReport`] below), `GET /v1/keys`) are served on TCP (`--api`, default
//! 127.0.0.1:7948) and on the control socket `<state-dir>/api.sock`; the mutating ones
//! (`POST /v1/leave` and `POST /v1/keys/*`, see `keys.rs`) only on the control socket (see
//! `control.rs`): over TCP they are refused with 403, counted and logged.
//!
//! Every answer carries the header [`NODE_HEADER`] with the agent's node name, and every answer
//! of a `POST` (or an error) is an [`ApiAnswer`]: this is how a client knows it talks to weft.

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Where a node's claim stands, as `weft status` shows it (lowercase in JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimStatus {
    /// Looking for a subnet (also while warming up).
    #[default]
    Searching,
    /// Claimed, settling.
    Claimed,
    /// Settled: the subnet is this node's.
    Active,
    /// Refused by an identity conflict: claims nothing.
    Refused,
    /// `weft leave` in progress.
    Leaving,
    /// A peer with no claim.
    None,
}

impl ClaimStatus {
    /// The word shown in tables, JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimStatus::Searching => "searching",
            ClaimStatus::Claimed => "claimed",
            ClaimStatus::Active => "active",
            ClaimStatus::Refused => "refused",
            ClaimStatus::Leaving => "leaving",
            ClaimStatus::None => "none",
        }
    }
}

impl std::fmt::Display for ClaimStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether gossip hears a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Heard recently.
    #[default]
    Alive,
    /// Not heard for the failure detector's threshold.
    Dead,
}

impl Liveness {
    /// The word shown in tables, JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Dead => "dead",
        }
    }
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `GET /v1/status` returns and `weft status` renders.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
    pub subnet: Option<Ipv4Net>,
    /// Its IPv6 subnet, claimed with it (dual-stack); absent from the JSON otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_subnet: Option<Ipv6Net>,
    /// `searching` | `claimed` | `active` | `refused` | `leaving`.
    pub state: ClaimStatus,
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
    /// The fleet's broken paths, from every live node's gossiped summary (`weft status
    /// --paths`); absent until this agent probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<crate::probe::fleet::FleetReport>,
}

/// One row of `weft status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Gossip generation.
    pub generation: u64,
    /// Underlay address.
    pub underlay_ip: String,
    /// Subnet the node claims, if any.
    pub subnet: Option<Ipv4Net>,
    /// Its IPv6 subnet (dual-stack); absent from the JSON otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_subnet: Option<Ipv6Net>,
    /// `claimed` | `active` | `leaving` | `none`.
    pub state: ClaimStatus,
    /// `alive` | `dead`.
    pub liveness: Liveness,
    /// Whether this row is the agent itself.
    pub is_self: bool,
    /// Whether this agent has programmed the node's routes.
    pub programmed: bool,
    /// Why not programmed, when it is not.
    pub reason: Option<String>,
    /// This agent's data path to the node, as its probes find it (absent for itself and for
    /// nodes it does not probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<crate::probe::PathReport>,
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
mod handler;
#[allow(missing_docs)]
mod keys;
mod server;
pub use control::{ControlError, ControlListener, Refusals, RefuseReason, socket_path};
pub use handler::ApiState;
pub use keys::{KeyRequest, KeysReport, NodeKeys};
pub use server::{BindError, Listeners, serve};

#[cfg(test)]
mod tests {
    use super::*;

    /// Embedders get types; `/v1/status` keeps its JSON words.
    #[test]
    fn typed_status_keeps_the_json_words() {
        let report = StatusReport {
            subnet: Some("10.244.3.0/24".parse().unwrap()),
            state: ClaimStatus::Active,
            nodes: vec![NodeStatus {
                state: ClaimStatus::None,
                liveness: Liveness::Dead,
                ..NodeStatus::default()
            }],
            ..StatusReport::default()
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["subnet"], "10.244.3.0/24");
        assert_eq!(json["state"], "active");
        assert_eq!(json["nodes"][0]["state"], "none");
        assert_eq!(json["nodes"][0]["liveness"], "dead");
        assert_eq!(json["nodes"][0]["subnet"], serde_json::Value::Null);
        let back: StatusReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
        for s in [
            ClaimStatus::Searching,
            ClaimStatus::Claimed,
            ClaimStatus::Active,
            ClaimStatus::Refused,
            ClaimStatus::Leaving,
            ClaimStatus::None,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
