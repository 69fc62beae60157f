//! The node record: the one atomic chitchat value each node publishes under [`RECORD_KEY`].

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// The chitchat key under which every node publishes its record.
pub const RECORD_KEY: &str = "weft/node";

/// Which data plane a node uses for its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Backend {
    Vxlan,
    HostGw,
    Udp,
}

/// Where a node's subnet claim stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClaimState {
    /// Announced, inside the settle period: may still yield.
    Claimed,
    /// Settled: subnet.env written, bridge configured.
    Active,
    /// `weft leave` in progress: the subnet is released, peers remove its routes.
    Leaving,
}

/// An IPv4 prefix as it travels on the wire (address + prefix length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

/// What a node tells the mesh about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_name: String,
    pub underlay_ip: IpAddr,
    pub backend: Backend,
    /// The overlay network this node was configured with (mixed clusters are refused).
    pub network: Ipv4Cidr,
    /// VXLAN network identifier (0 when the backend is not vxlan).
    pub vni: u32,
    /// The claimed subnet; `None` while the node has no claim (searching, refused identity).
    pub subnet: Option<Ipv4Cidr>,
    /// Unix time in milliseconds at which the claim was first made.
    pub claim_time_ms: u64,
    pub state: ClaimState,
    /// VTEP MAC (vxlan); all zero for other backends.
    pub vtep_mac: [u8; 6],
    /// VXLAN destination port or UDP tunnel port.
    pub tunnel_port: u16,
    /// X25519 public key for the udp backend's encryption.
    pub public_key: Option<[u8; 32]>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is not valid base64")]
    Base64,
    #[error("record too short")]
    Truncated,
    #[error("record too long ({0} bytes)")]
    TooLong(usize),
    #[error("unsupported record format {0}")]
    UnsupportedVersion(u8),
    #[error("record body does not decode")]
    Body,
}

// TEMPORARY (replaced by the proto branch at merge).
impl NodeRecord {
    pub fn encode(&self) -> String {
        use base64::Engine;
        let mut bytes = vec![1u8, 0u8];
        bytes.extend(postcard::to_allocvec(self).unwrap_or_default());
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    }
    pub fn decode(s: &str) -> Result<NodeRecord, RecordError> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(s)
            .map_err(|_| RecordError::Base64)?;
        let body = bytes.get(2..).ok_or(RecordError::Truncated)?;
        postcard::take_from_bytes(body).map(|(r, _)| r).map_err(|_| RecordError::Body)
    }
}
