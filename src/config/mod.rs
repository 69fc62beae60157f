//! Configuration: the `weft` command line (clap derive, every flag also a `WEFT_*` variable),
//! flannel's net-conf.json, and validation into one [`Config`] before anything touches the kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

pub use crate::lease::families::Ipv6Pool;
pub use weft_proto::Backend;

mod args;
#[allow(missing_docs)]
mod duration;
#[allow(missing_docs)]
mod error;
mod host;
mod ipv6;
#[allow(missing_docs)]
mod netconf;
mod raw;
mod suggest;
#[cfg(test)]
mod tests;
mod validate;

pub use args::RunArgs;
pub use duration::{DurationError, format_duration, parse_duration};
pub use error::{ConfigError, ParseError};
pub use host::{HostChecks, check_host, check_underlay, preflight, underlay_error};
pub use netconf::NetConf;
pub use raw::env_var;
#[doc(hidden)]
pub use suggest::distance as suggest_distance;
pub use validate::{
    MAX_DEAD_NODE_GRACE, MAX_GOSSIP_INTERVAL, MAX_NODE_NAME_LEN, MAX_PERIOD, MAX_SUBNET_LEN,
    MAX_VNI, MIN_GOSSIP_INTERVAL, check_underlay_overlap, default_settle,
};

/// Defaults of `weft run`, as the flags spell them.
pub mod defaults {
    /// `--listen`.
    pub const LISTEN: &str = "0.0.0.0:7947";
    /// `--network`.
    pub const NETWORK: &str = "10.244.0.0/16";
    /// `--subnet-len`.
    pub const SUBNET_LEN: &str = "24";
    /// `--ipv6-subnet-len` (flannel's IPv6SubnetLen default).
    pub const IPV6_SUBNET_LEN: &str = "64";
    /// `--backend`.
    pub const BACKEND: &str = "vxlan";
    /// `--vni`.
    pub const VNI: &str = "1";
    /// `--vxlan-port`.
    pub const VXLAN_PORT: &str = "8472";
    /// `--udp-port`.
    pub const UDP_PORT: &str = "8285";
    /// `--state-dir`.
    pub const STATE_DIR: &str = "/var/lib/weft";
    /// `--subnet-file`.
    pub const SUBNET_FILE: &str = "/run/weft/subnet.env";
    /// `--api`.
    pub const API: &str = "127.0.0.1:7948";
    /// `--gossip-interval`.
    pub const GOSSIP_INTERVAL: &str = "1s";
    /// `--gossip-fanout`.
    pub const GOSSIP_FANOUT: &str = "2";
    /// `--reservation`.
    pub const RESERVATION: &str = "1h";
    /// `--dead-node-grace`.
    pub const DEAD_NODE_GRACE: &str = "2h";
    /// `--reconcile-interval`.
    pub const RECONCILE_INTERVAL: &str = "10s";
    /// `--cluster-id`.
    pub const CLUSTER_ID: &str = "weft";
}

pub use crate::dataplane::underlay::UnderlaySelect;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// `--log-format`.
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `text` or `json`, case-insensitively.
    pub fn from_name(name: &str) -> Option<LogFormat> {
        match name.trim().to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// A validated configuration for `weft run`. Built by [`crate::config`] from flags, env and
/// net-conf.json, or by hand when embedding.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's name, unique in the cluster (`--node-name`).
    pub node_name: String,
    /// How the underlay interface is chosen (`--iface`).
    pub underlay: UnderlaySelect,
    /// Address announced to peers (`--public-ip`); default: the underlay interface's address.
    pub public_ip: Option<IpAddr>,
    /// Gossip listen address (`--listen`, default 0.0.0.0:7947).
    pub listen: SocketAddr,
    /// Address peers gossip to (default: `public_ip` or underlay IP with the listen port).
    pub advertise: Option<SocketAddr>,
    /// `HOST:PORT` seeds; empty: first node, a mesh of one.
    pub seeds: Vec<String>,
    /// The overlay network (`--network`).
    pub network: Ipv4Net,
    /// Prefix length of each node's subnet (`--subnet-len`).
    pub subnet_len: u8,
    /// First and last subnet that may be claimed (flannel's SubnetMin/SubnetMax).
    pub subnet_min: Ipv4Addr,
    /// Last subnet that may be claimed.
    pub subnet_max: Ipv4Addr,
    /// `--subnet`: a static claim.
    pub static_subnet: Option<Ipv4Net>,
    /// Whether the overlay carries IPv4 (`--no-ipv4`, net-conf `EnableIPv4: false`, turn it off).
    pub ipv4: bool,
    /// The IPv6 overlay (`--ipv6-network`, or net-conf `EnableIPv6` with `IPv6Network`); each
    /// node's IPv6 subnet is claimed with its IPv4 one ([`crate::lease::families`]).
    pub ipv6: Option<Ipv6Pool>,
    /// IPv6 underlay address announced to peers (`--public-ipv6`).
    pub public_ipv6: Option<Ipv6Addr>,
    /// `vxlan`, `host-gw` or `udp` (`--backend`).
    pub backend: Backend,
    /// VXLAN network identifier (`--vni`).
    pub vni: u32,
    /// VXLAN UDP port (`--vxlan-port`).
    pub vxlan_port: u16,
    /// UDP port of the udp backend's tunnel (default 8285).
    pub udp_port: u16,
    /// Seal the udp backend's frames (default: on unless `insecure`).
    pub udp_encryption: bool,
    /// Plain routes to peers on the same L2 segment (`--direct-routing`).
    pub direct_routing: bool,
    /// Where the state file lives (`--state-dir`).
    pub state_dir: PathBuf,
    /// flannel-format subnet.env (`--subnet-file`).
    pub subnet_file: PathBuf,
    /// Bridge to create holding the subnet's first address (`--bridge`).
    pub bridge: Option<String>,
    /// Local API (`--api`, default 127.0.0.1:7948).
    pub api: SocketAddr,
    /// Gossip round period (`--gossip-interval`).
    pub gossip_interval: Duration,
    /// Live peers per gossip round (`--gossip-fanout`, 1 to 3).
    pub gossip_fanout: usize,
    /// Settle period before a claim becomes active (default 10 gossip intervals, at least 5 s).
    pub settle: Duration,
    /// How long a dead node's subnet stays reserved and its routes programmed (default 1 h).
    pub reservation: Duration,
    /// chitchat's dead-node grace period (default 2 h, at least 2 × reservation).
    pub dead_node_grace: Duration,
    /// Full reconcile period (default 10 s).
    pub reconcile_interval: Duration,
    /// Masquerade traffic leaving the overlay (`--ip-masq`, nftables `table ip weft`).
    pub ip_masq: bool,
    /// Probe the data path to every peer (on unless `--no-probes`): PATH, route MTUs, the fleet
    /// view.
    pub probes: bool,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// Gossip name-space: agents with another cluster id ignore each other.
    pub cluster_id: String,
    /// Run without a cluster key (gossip in clear).
    pub insecure: bool,
    /// The cluster key that seals gossip (`weft keygen` makes one).
    pub cluster_key_file: Option<PathBuf>,
    /// Compute and report, never touch the kernel.
    pub dry_run: bool,
}
