//! The flags of `weft run` as clap parses them (every flag also a `WEFT_*` variable). Values stay
//! raw text here; [`crate::Config::from_run_args`] parses and validates them with one-line errors.

use std::path::PathBuf;

use clap::Args;
use clap::builder::BoolishValueParser;

/// `weft run`: join the mesh, claim a subnet and program this host. Every flag can also be set by
/// the environment variable `WEFT_<FLAG>` (e.g. `WEFT_SEEDS`); flags override net-conf.json.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct RunArgs {
    /// The long names of the flags whose value came from their `WEFT_*` variable (filled by
    /// the command-line parser, so that errors name what the operator set).
    #[arg(skip)]
    pub from_env: Vec<String>,

    /// This node's name, unique in the cluster [default: the hostname]
    #[arg(long, env = "WEFT_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,

    /// Underlay interface, by name or by one of its addresses [default: the default route's]
    #[arg(long, env = "WEFT_IFACE", value_name = "NAME|IP")]
    pub iface: Option<String>,

    /// Underlay address announced to peers [default: the underlay interface's address]
    #[arg(long, env = "WEFT_PUBLIC_IP", value_name = "IP")]
    pub public_ip: Option<String>,

    /// Gossip listen address (UDP) [default: 0.0.0.0:7947]
    #[arg(long, env = "WEFT_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,

    /// Gossip address peers use to reach this node [default: underlay IP with the listen port]
    #[arg(long, env = "WEFT_ADVERTISE", value_name = "ADDR:PORT")]
    pub advertise: Option<String>,

    /// Seed nodes, comma-separated; none: this is the first node
    #[arg(
        long,
        env = "WEFT_SEEDS",
        value_name = "HOST:PORT,...",
        value_delimiter = ','
    )]
    pub seeds: Vec<String>,

    /// Overlay network [default: 10.244.0.0/16, or Network from --net-conf]
    #[arg(long, env = "WEFT_NETWORK", value_name = "CIDR")]
    pub network: Option<String>,

    /// Prefix length of each node's subnet [default: 24, or SubnetLen]
    #[arg(
        long,
        env = "WEFT_SUBNET_LEN",
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub subnet_len: Option<String>,

    /// First subnet that may be claimed [default: the network's second subnet, or SubnetMin]
    #[arg(long, env = "WEFT_SUBNET_MIN", value_name = "IP")]
    pub subnet_min: Option<String>,

    /// Last subnet that may be claimed [default: the network's last subnet, or SubnetMax]
    #[arg(long, env = "WEFT_SUBNET_MAX", value_name = "IP")]
    pub subnet_max: Option<String>,

    /// Claim this subnet instead of choosing one
    #[arg(long, env = "WEFT_SUBNET", value_name = "CIDR")]
    pub subnet: Option<String>,

    /// IPv6 overlay network beside the IPv4 one, e.g. fd00:10:244::/56 [or IPv6Network with
    /// EnableIPv6]
    #[arg(long, env = "WEFT_IPV6_NETWORK", value_name = "CIDR")]
    pub ipv6_network: Option<String>,

    /// Prefix length of each node's IPv6 subnet [default: 64, or IPv6SubnetLen]
    #[arg(
        long,
        env = "WEFT_IPV6_SUBNET_LEN",
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub ipv6_subnet_len: Option<String>,

    /// First IPv6 subnet that may be claimed [default: the IPv6 network's second subnet, or
    /// IPv6SubnetMin]
    #[arg(long, env = "WEFT_IPV6_SUBNET_MIN", value_name = "IP")]
    pub ipv6_subnet_min: Option<String>,

    /// Last IPv6 subnet that may be claimed [default: the IPv6 network's last, or IPv6SubnetMax]
    #[arg(long, env = "WEFT_IPV6_SUBNET_MAX", value_name = "IP")]
    pub ipv6_subnet_max: Option<String>,

    /// No IPv4 overlay: an IPv6-only overlay (needs --ipv6-network) [or EnableIPv4: false]
    #[arg(long, env = "WEFT_NO_IPV4", value_parser = BoolishValueParser::new())]
    pub no_ipv4: bool,

    /// IPv6 underlay address announced to peers [default: the underlay interface's global IPv6
    /// address, when the overlay needs one]
    #[arg(long, env = "WEFT_PUBLIC_IPV6", value_name = "IP")]
    pub public_ipv6: Option<String>,

    /// flannel-style net-conf.json (Network, SubnetLen, SubnetMin, SubnetMax, Backend, EnableIPv4,
    /// EnableIPv6, IPv6Network, IPv6SubnetLen, IPv6SubnetMin, IPv6SubnetMax)
    #[arg(long, env = "WEFT_NET_CONF", value_name = "FILE")]
    pub net_conf: Option<PathBuf>,

    /// Data plane backend: vxlan, host-gw or udp [default: vxlan, or Backend.Type]
    #[arg(long, env = "WEFT_BACKEND", value_name = "vxlan|host-gw|udp")]
    pub backend: Option<String>,

    /// VXLAN network identifier [default: 1, or Backend.VNI]
    #[arg(
        long,
        env = "WEFT_VNI",
        allow_negative_numbers = true,
        value_name = "VNI"
    )]
    pub vni: Option<String>,

    /// VXLAN UDP port [default: 8472, or Backend.Port]
    #[arg(
        long,
        env = "WEFT_VXLAN_PORT",
        allow_negative_numbers = true,
        value_name = "PORT"
    )]
    pub vxlan_port: Option<String>,

    /// UDP port of the udp backend's tunnel [default: 8285, or Backend.Port with Type udp]
    #[arg(
        long,
        env = "WEFT_UDP_PORT",
        allow_negative_numbers = true,
        value_name = "PORT"
    )]
    pub udp_port: Option<String>,

    /// Encrypt the udp backend's tunnel (X25519 keys, AES-256-GCM) [default: on with a cluster
    /// key, off with --insecure]
    #[arg(long, env = "WEFT_UDP_ENCRYPTION", value_name = "on|off")]
    pub udp_encryption: Option<String>,

    /// Plain routes via the underlay to peers on the same L2 segment [or Backend.DirectRouting]
    #[arg(long, env = "WEFT_DIRECT_ROUTING", value_parser = BoolishValueParser::new())]
    pub direct_routing: bool,

    /// Directory for persistent state [default: /var/lib/weft]
    #[arg(long, env = "WEFT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// flannel-format subnet file for CNI and docker [default: /run/weft/subnet.env]
    #[arg(long, env = "WEFT_SUBNET_FILE", value_name = "FILE")]
    pub subnet_file: Option<PathBuf>,

    /// Create this bridge holding the subnet's first address (e.g. cni0)
    #[arg(long, env = "WEFT_BRIDGE", value_name = "NAME")]
    pub bridge: Option<String>,

    /// Local HTTP API address [default: 127.0.0.1:7948]
    #[arg(long, env = "WEFT_API", value_name = "ADDR:PORT")]
    pub api: Option<String>,

    /// Gossip interval, e.g. 200ms, 1s [default: 1s]
    #[arg(long, env = "WEFT_GOSSIP_INTERVAL", value_name = "DURATION")]
    pub gossip_interval: Option<String>,

    /// Live peers each gossip round talks to, 1 to 3 (fewer: fewer bytes, slower failure detection) [default: 2]
    #[arg(
        long,
        env = "WEFT_GOSSIP_FANOUT",
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub gossip_fanout: Option<String>,

    /// How long a claim waits before it becomes active [default: max(10 x gossip interval, 5s)]
    #[arg(long, env = "WEFT_SETTLE", value_name = "DURATION")]
    pub settle: Option<String>,

    /// How long a dead node's subnet stays reserved and routed [default: 1h]
    #[arg(long, env = "WEFT_RESERVATION", value_name = "DURATION")]
    pub reservation: Option<String>,

    /// How long dead nodes are remembered (at least 2 x reservation) [default: 2h]
    #[arg(long, env = "WEFT_DEAD_NODE_GRACE", value_name = "DURATION")]
    pub dead_node_grace: Option<String>,

    /// Period of the full reconcile of the data plane [default: 10s]
    #[arg(long, env = "WEFT_RECONCILE_INTERVAL", value_name = "DURATION")]
    pub reconcile_interval: Option<String>,

    /// Masquerade traffic from the overlay leaving it
    #[arg(long, env = "WEFT_IP_MASQ", value_parser = BoolishValueParser::new())]
    pub ip_masq: bool,

    /// Do not probe the data paths to peers (no PATH column, no per-peer route MTU, no answers
    /// on port 7949); a --dry-run never probes
    #[arg(long, env = "WEFT_NO_PROBES", value_parser = BoolishValueParser::new())]
    pub no_probes: bool,

    /// Log format: text or json [default: text]
    #[arg(long, env = "WEFT_LOG_FORMAT", value_name = "text|json")]
    pub log_format: Option<String>,

    /// Cluster name: agents with another cluster id ignore each other [default: weft]
    #[arg(long, env = "WEFT_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: Option<String>,

    /// Gossip without a cluster key (unauthenticated, in clear)
    #[arg(long, env = "WEFT_INSECURE", value_parser = BoolishValueParser::new())]
    pub insecure: bool,

    /// File holding the cluster key (base64 of 32 bytes, made by `weft keygen`) that seals gossip
    #[arg(long, env = "WEFT_CLUSTER_KEY_FILE", value_name = "FILE")]
    pub cluster_key_file: Option<PathBuf>,

    /// Accept a cluster key file that group or others can read (refused by default, as ssh
    /// refuses such private keys)
    #[arg(long, env = "WEFT_ALLOW_OPEN_KEY_PERMS", value_parser = BoolishValueParser::new())]
    pub allow_open_key_perms: bool,

    /// Join, claim and compute what would be programmed, and report it in `weft status`, without
    /// touching the kernel (no root needed)
    #[arg(long, env = "WEFT_DRY_RUN", value_parser = BoolishValueParser::new())]
    pub dry_run: bool,

    /// Shift this agent's clock by this many milliseconds (tests of clock skew only)
    #[arg(
        long,
        env = "WEFT_CLOCK_OFFSET_MS",
        value_name = "MS",
        hide = true,
        allow_negative_numbers = true
    )]
    pub clock_offset_ms: Option<i64>,

    /// Validate the configuration, print it, and exit
    #[arg(long, env = "WEFT_CHECK_CONFIG", value_parser = BoolishValueParser::new())]
    pub check_config: bool,
}
