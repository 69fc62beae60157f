//! The persisted state file (`<state-dir>/state.json`): what a restart needs to keep its claim.

use serde::{Deserialize, Serialize};

use crate::record::Ipv4Cidr;

/// Everything an agent keeps across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Format version of this file (currently 1).
    pub version: u32,
    pub node_name: String,
    pub network: Ipv4Cidr,
    pub subnet: Ipv4Cidr,
    /// Unix ms of the original claim (kept across restarts inside the reservation period).
    pub claim_time_ms: u64,
    /// Unix ms at which the agent last saved this file while alive.
    pub last_alive_ms: u64,
    /// Whether the claim had settled (`active`).
    pub active: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file does not parse: {0}")]
    Parse(String),
    #[error("unsupported state file version {0}")]
    UnsupportedVersion(u32),
}

// TEMPORARY (replaced by the proto branch at merge).
impl PersistedState {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
    pub fn from_json(s: &str) -> Result<Self, StateError> {
        serde_json::from_str(s).map_err(|e| StateError::Parse(e.to_string()))
    }
}
