//! The persisted state file (`<state-dir>/state.json`): what a restart needs to keep its claim.

use serde::{Deserialize, Serialize};

use crate::record::{Ipv4Cidr, Ipv6Cidr};

/// Everything an agent keeps across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Format version of this file (currently 1).
    pub version: u32,
    pub node_name: String,
    /// The IPv4 overlay network and the subnet claimed in it; absent for an IPv6-only overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Ipv4Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Cidr>,
    /// Unix ms of the original claim (kept across restarts inside the reservation period).
    pub claim_time_ms: u64,
    /// Unix ms at which the agent last saved this file while alive.
    pub last_alive_ms: u64,
    /// Whether the claim had settled (`active`).
    pub active: bool,
    /// The IPv6 overlay network and the subnet claimed in it (with `subnet`, dual-stack), when
    /// the node runs one (absent in files of IPv4-only nodes and of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_network: Option<Ipv6Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_subnet: Option<Ipv6Cidr>,
}

/// The state file format version this code writes and reads.
pub const STATE_VERSION: u32 = 1;

/// Largest state file [`PersistedState::from_json`] accepts, in bytes.
pub const MAX_STATE_LEN: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file does not parse")]
    Parse(#[from] serde_json::Error),
    #[error("unsupported state file version {0}")]
    UnsupportedVersion(u32),
    #[error("state file too large ({0} bytes)")]
    TooLong(usize),
}

/// Only the version field, read first so that a file of another version is refused as such
/// even when its other fields differ.
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

impl PersistedState {
    /// The file's content: pretty JSON, newline-terminated.
    pub fn to_json(&self) -> String {
        // Serializing plain owned data with string keys into a String cannot fail.
        let mut s = serde_json::to_string_pretty(self)
            .expect("serializing PersistedState to JSON cannot fail");
        s.push('\n');
        s
    }

    /// Parses a state file. Refuses files over [`MAX_STATE_LEN`] bytes and versions other than
    /// [`STATE_VERSION`]. Unknown fields are ignored.
    pub fn from_json(s: &str) -> Result<Self, StateError> {
        if s.len() > MAX_STATE_LEN {
            return Err(StateError::TooLong(s.len()));
        }
        let VersionOnly { version } = serde_json::from_str(s)?;
        if version != STATE_VERSION {
            return Err(StateError::UnsupportedVersion(version));
        }
        Ok(serde_json::from_str(s)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn sample() -> PersistedState {
        PersistedState {
            version: 1,
            node_name: "node-1".into(),
            network: Some(Ipv4Cidr {
                addr: Ipv4Addr::new(10, 244, 0, 0),
                len: 16,
            }),
            subnet: Some(Ipv4Cidr {
                addr: Ipv4Addr::new(10, 244, 3, 0),
                len: 24,
            }),
            claim_time_ms: 1_700_000_000_000,
            last_alive_ms: 1_700_000_360_000,
            active: true,
            ipv6_network: None,
            ipv6_subnet: None,
        }
    }

    #[test]
    fn ipv6_fields_round_trip_and_old_files_load() {
        let mut s = sample();
        let old = s.to_json();
        assert!(
            !old.contains("ipv6"),
            "an IPv4-only file stays as it was: {old}"
        );
        s.ipv6_network = Some("fd00:10:244::/56".parse().unwrap());
        s.ipv6_subnet = Some("fd00:10:244:3::/64".parse().unwrap());
        let j = s.to_json();
        assert_eq!(PersistedState::from_json(&j).unwrap(), s);
        let back = PersistedState::from_json(&old).unwrap();
        assert_eq!(back.ipv6_subnet, None);
        // An IPv6-only node's file has no IPv4 fields.
        s.network = None;
        s.subnet = None;
        let v6only = s.to_json();
        assert!(!v6only.contains("\"subnet\""), "{v6only}");
        assert_eq!(PersistedState::from_json(&v6only).unwrap(), s);
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let j = s.to_json();
        assert_eq!(PersistedState::from_json(&j).unwrap(), s);
    }

    #[test]
    fn exact_format() {
        let expected = r#"{
  "version": 1,
  "node_name": "node-1",
  "network": {
    "addr": "10.244.0.0",
    "len": 16
  },
  "subnet": {
    "addr": "10.244.3.0",
    "len": 24
  },
  "claim_time_ms": 1700000000000,
  "last_alive_ms": 1700000360000,
  "active": true
}
"#;
        assert_eq!(sample().to_json(), expected);
    }

    #[test]
    fn other_version_refused() {
        let j = sample()
            .to_json()
            .replace("\"version\": 1", "\"version\": 2");
        assert!(matches!(
            PersistedState::from_json(&j),
            Err(StateError::UnsupportedVersion(2))
        ));
        // A future version with a different shape is still reported as a version problem.
        assert!(matches!(
            PersistedState::from_json(r#"{"version": 3, "whatever": []}"#),
            Err(StateError::UnsupportedVersion(3))
        ));
    }

    #[test]
    fn unknown_fields_ignored() {
        let j = sample().to_json().replace(
            "\"active\": true",
            "\"active\": true, \"future\": {\"x\": 1}",
        );
        assert_eq!(PersistedState::from_json(&j).unwrap(), sample());
    }

    #[test]
    fn bad_inputs() {
        assert!(matches!(
            PersistedState::from_json(""),
            Err(StateError::Parse(_))
        ));
        assert!(matches!(
            PersistedState::from_json("{\"version\": 1}"),
            Err(StateError::Parse(_))
        ));
        assert!(matches!(
            PersistedState::from_json("[1,2,3]"),
            Err(StateError::Parse(_))
        ));
        let big = format!("{}{}", sample().to_json(), " ".repeat(MAX_STATE_LEN));
        assert!(matches!(
            PersistedState::from_json(&big),
            Err(StateError::TooLong(_))
        ));
        // Truncated files fail cleanly at every cut.
        let j = sample().to_json();
        for cut in 0..j.len() - 2 {
            assert!(PersistedState::from_json(&j[..cut]).is_err(), "cut {cut}");
        }
    }
}
