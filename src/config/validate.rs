//! Building a [`Config`] from `weft run`'s flags and an optional net-conf.json: flags override the
//! file, the file overrides the defaults, and every rule is checked before anything else runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use super::args::RunArgs;
use super::duration::parse_duration;
use super::error::ConfigError;
use super::netconf::{NetConf, net_conf_field};
use super::{Backend, Config, LogFormat, UnderlaySelect, defaults};

/// The smallest gossip interval accepted.
pub const MIN_GOSSIP_INTERVAL: Duration = Duration::from_millis(10);
/// chitchat picks 3 live peers per round; weft can only ask for fewer.
pub const MAX_GOSSIP_FANOUT: usize = crate::cluster::fanout::CHITCHAT_FANOUT;
/// The largest node subnet prefix length (a /30 leaves two usable addresses).
pub const MAX_SUBNET_LEN: u8 = 30;
/// The largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Node names: 1..=253 characters of `[A-Za-z0-9._-]` (a DNS name's length).
pub const MAX_NODE_NAME_LEN: usize = 253;

impl Config {
    /// Builds and validates the configuration of `weft run`: reads `--net-conf` if given and the
    /// hostname if `--node-name` is not. Touches nothing else.
    pub fn from_run_args(args: RunArgs) -> Result<Config, ConfigError> {
        let net_conf = match &args.net_conf {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::NetConfRead {
                        path: path.clone(),
                        source,
                    })?;
                Some(NetConf::parse(&text, path)?)
            }
            None => None,
        };
        build(args, net_conf, hostname)
    }

    /// The default configuration for a node named `node_name` (for embedding and tests).
    pub fn with_defaults(node_name: &str) -> Result<Config, ConfigError> {
        let args = RunArgs {
            node_name: Some(node_name.to_string()),
            // Embedders set `cluster_key_file` (and clear this) for sealed gossip.
            insecure: true,
            ..RunArgs::default()
        };
        build(args, None, hostname)
    }
}

fn hostname() -> Result<String, ConfigError> {
    let name = nix::unistd::gethostname().map_err(|source| ConfigError::Hostname { source })?;
    Ok(name.to_string_lossy().into_owned())
}

/// Fails when the overlay `network` contains the host's underlay address: routes for the overlay
/// would capture the underlay traffic. The agent calls it once it knows its underlay address.
pub fn check_underlay_overlap(network: Ipv4Net, underlay_ip: IpAddr) -> Result<(), ConfigError> {
    match underlay_ip {
        IpAddr::V4(v4) if network.contains(&v4) => Err(ConfigError::invalid(
            "--network",
            network.to_string(),
            format!(
                "the overlay network contains the underlay address {v4}; choose a network that \
                 does not overlap the hosts' network"
            ),
        )),
        _ => Ok(()),
    }
}

/// A raw value and the name of the field it came from (flag or net-conf key).
struct Raw {
    field: String,
    value: String,
}

/// Flag if set, else the net-conf value if present, else the default.
fn pick(
    flag: &str,
    arg: Option<String>,
    conf: Option<(&str, &Path, Option<String>)>,
    default: &str,
) -> Raw {
    if let Some(value) = arg.filter(|v| !v.is_empty()) {
        return Raw {
            field: flag.to_string(),
            value,
        };
    }
    if let Some((key, path, Some(value))) = conf {
        return Raw {
            field: net_conf_field(key, path),
            value,
        };
    }
    Raw {
        field: flag.to_string(),
        value: default.to_string(),
    }
}

/// Like [`pick`] without a default.
fn pick_opt(
    flag: &str,
    arg: Option<String>,
    conf: Option<(&str, &Path, Option<String>)>,
) -> Option<Raw> {
    if let Some(value) = arg.filter(|v| !v.is_empty()) {
        return Some(Raw {
            field: flag.to_string(),
            value,
        });
    }
    match conf {
        Some((key, path, Some(value))) => Some(Raw {
            field: net_conf_field(key, path),
            value,
        }),
        _ => None,
    }
}

fn flag_opt(flag: &str, arg: Option<String>) -> Option<Raw> {
    pick_opt(flag, arg, None)
}

fn flag(flag: &str, arg: Option<String>, default: &str) -> Raw {
    pick(flag, arg, None, default)
}

impl Raw {
    fn invalid(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.field.clone(), self.value.clone(), reason)
    }

    fn parse<T: std::str::FromStr>(&self) -> Result<T, ConfigError>
    where
        T::Err: Into<super::error::ParseError>,
    {
        self.value
            .trim()
            .parse::<T>()
            .map_err(|e| ConfigError::parse(self.field.clone(), self.value.clone(), e))
    }

    fn duration(&self) -> Result<Duration, ConfigError> {
        parse_duration(&self.value)
            .map_err(|e| ConfigError::parse(self.field.clone(), self.value.clone(), e))
    }

    fn ip(&self) -> Result<IpAddr, ConfigError> {
        let ip: IpAddr = self.parse()?;
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(self.invalid("not a unicast address"));
        }
        Ok(ip)
    }

    fn ipv4(&self) -> Result<Ipv4Addr, ConfigError> {
        if self.value.trim().parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(self.invalid("IPv6 is not supported for the overlay; use an IPv4 address"));
        }
        self.parse()
    }

    /// `ADDR/LEN`, IPv4, with no host bits set.
    fn cidr(&self) -> Result<Ipv4Net, ConfigError> {
        let text = self.value.trim();
        let Some((addr, len)) = text.split_once('/') else {
            return Err(self.invalid("expected ADDR/LEN, e.g. 10.244.0.0/16"));
        };
        let addr = Raw {
            field: self.field.clone(),
            value: addr.to_string(),
        }
        .ipv4()
        .map_err(|e| match e {
            ConfigError::Parse { source, .. } => {
                ConfigError::parse(self.field.clone(), self.value.clone(), source)
            }
            ConfigError::Invalid { reason, .. } => self.invalid(reason),
            other => other,
        })?;
        let len: u8 = len
            .parse()
            .map_err(|e| ConfigError::parse(self.field.clone(), self.value.clone(), e))?;
        let net = Ipv4Net::new(addr, len)
            .map_err(|_| self.invalid(format!("prefix length {len} is larger than 32")))?;
        if net.network() != addr {
            return Err(self.invalid(format!("host bits are set (did you mean {}?)", net.trunc())));
        }
        Ok(net)
    }

    fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.parse()
    }

    fn duration_at_least(&self, min: Duration) -> Result<Duration, ConfigError> {
        let d = self.duration()?;
        if d < min {
            return Err(self.invalid(format!(
                "must be at least {}",
                super::duration::format_duration(min)
            )));
        }
        Ok(d)
    }
}

fn conf_str<'a>(
    net_conf: &'a Option<(PathBuf, NetConf)>,
    key: &'a str,
    get: impl Fn(&NetConf) -> Option<String>,
) -> Option<(&'a str, &'a Path, Option<String>)> {
    net_conf
        .as_ref()
        .map(|(path, conf)| (key, path.as_path(), get(conf)))
}

/// Parses and validates `args` merged with `net_conf`; `hostname` gives the default node name.
pub(crate) fn build(
    args: RunArgs,
    net_conf: Option<NetConf>,
    hostname: impl FnOnce() -> Result<String, ConfigError>,
) -> Result<Config, ConfigError> {
    let net_conf = net_conf.map(|c| (args.net_conf.clone().unwrap_or_default(), c));

    // Identity.
    let node_name = match flag_opt("--node-name", args.node_name) {
        Some(raw) => raw,
        None => Raw {
            field: "--node-name (default: the hostname)".to_string(),
            value: hostname()?,
        },
    };
    check_name(&node_name, MAX_NODE_NAME_LEN)?;

    // Overlay network and subnets.
    let network = pick(
        "--network",
        args.network,
        conf_str(&net_conf, "Network", |c| c.network.clone()),
        defaults::NETWORK,
    );
    let network_net = network.cidr()?;
    let subnet_len_raw = pick(
        "--subnet-len",
        args.subnet_len,
        conf_str(&net_conf, "SubnetLen", |c| {
            c.subnet_len.map(|n| n.to_string())
        }),
        defaults::SUBNET_LEN,
    );
    let subnet_len: u8 = subnet_len_raw.parse()?;
    if subnet_len <= network_net.prefix_len() || subnet_len > MAX_SUBNET_LEN {
        return Err(subnet_len_raw.invalid(format!(
            "must be larger than the network's prefix length {} ({}) and at most {MAX_SUBNET_LEN}",
            network_net.prefix_len(),
            network_net
        )));
    }
    let subnet_size: u32 = 1 << (32 - u32::from(subnet_len));
    let first = u32::from(network_net.network());
    let last_subnet = u32::from(network_net.broadcast()) - (subnet_size - 1);
    let check_subnet_addr = |raw: &Raw, addr: Ipv4Addr| -> Result<(), ConfigError> {
        if !network_net.contains(&addr) {
            return Err(raw.invalid(format!("outside the network {network_net}")));
        }
        if u32::from(addr) % subnet_size != 0 {
            return Err(raw.invalid(format!(
                "not the start of a /{subnet_len} subnet (did you mean {}?)",
                Ipv4Addr::from(u32::from(addr) & !(subnet_size - 1))
            )));
        }
        Ok(())
    };
    let subnet_min = match pick_opt(
        "--subnet-min",
        args.subnet_min,
        conf_str(&net_conf, "SubnetMin", |c| c.subnet_min.clone()),
    ) {
        Some(raw) => {
            let addr = raw.ipv4()?;
            check_subnet_addr(&raw, addr)?;
            Some((raw, addr))
        }
        // flannel skips the network's first subnet.
        None => None,
    };
    let subnet_max = match pick_opt(
        "--subnet-max",
        args.subnet_max,
        conf_str(&net_conf, "SubnetMax", |c| c.subnet_max.clone()),
    ) {
        Some(raw) => {
            let addr = raw.ipv4()?;
            check_subnet_addr(&raw, addr)?;
            addr
        }
        None => Ipv4Addr::from(last_subnet),
    };
    let subnet_min = match subnet_min {
        Some((raw, addr)) => {
            if addr > subnet_max {
                return Err(raw.invalid(format!("larger than the subnet maximum {subnet_max}")));
            }
            addr
        }
        None => {
            let second = Ipv4Addr::from(first + subnet_size);
            if second > subnet_max {
                return Err(ConfigError::invalid(
                    "--subnet-max",
                    subnet_max.to_string(),
                    format!("smaller than the default subnet minimum {second}"),
                ));
            }
            second
        }
    };
    let static_subnet = match flag_opt("--subnet", args.subnet) {
        Some(raw) => {
            let subnet = raw.cidr()?;
            if subnet.prefix_len() != subnet_len {
                return Err(raw.invalid(format!(
                    "prefix length /{} differs from the subnet length /{subnet_len}",
                    subnet.prefix_len()
                )));
            }
            if !network_net.contains(&subnet) {
                return Err(raw.invalid(format!("outside the network {network_net}")));
            }
            Some(subnet)
        }
        None => None,
    };

    // Backend.
    let backend_raw = pick(
        "--backend",
        args.backend,
        conf_str(&net_conf, "Backend.Type", |c| c.backend_type.clone()),
        defaults::BACKEND,
    );
    let backend = parse_backend(&backend_raw)?;
    let vni_raw = pick(
        "--vni",
        args.vni,
        conf_str(&net_conf, "Backend.VNI", |c| c.vni.map(|n| n.to_string())),
        defaults::VNI,
    );
    let vni: u32 = vni_raw.parse()?;
    if !(1..=MAX_VNI).contains(&vni) {
        return Err(vni_raw.invalid(format!("must be in 1..={MAX_VNI}")));
    }
    let port_raw = pick(
        "--vxlan-port",
        args.vxlan_port,
        conf_str(&net_conf, "Backend.Port", |c| c.port.map(|n| n.to_string())),
        defaults::VXLAN_PORT,
    );
    let vxlan_port: u16 = port_raw.parse()?;
    if vxlan_port == 0 {
        return Err(port_raw.invalid("must be in 1..=65535"));
    }
    let udp_port_raw = pick(
        "--udp-port",
        args.udp_port,
        conf_str(&net_conf, "Backend.Port", |c| {
            c.port
                .filter(|_| backend == Backend::Udp)
                .map(|n| n.to_string())
        }),
        defaults::UDP_PORT,
    );
    let udp_port: u16 = udp_port_raw.parse()?;
    if udp_port == 0 {
        return Err(udp_port_raw.invalid("must be in 1..=65535"));
    }
    let udp_encryption = match flag_opt("--udp-encryption", args.udp_encryption) {
        None => !args.insecure,
        Some(raw) => match raw.value.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => true,
            "off" | "false" | "no" | "0" => false,
            _ => return Err(raw.invalid("expected on or off")),
        },
    };
    let direct_routing = args.direct_routing
        || net_conf
            .as_ref()
            .and_then(|(_, c)| c.direct_routing)
            .unwrap_or(false);

    // Underlay and gossip.
    let underlay = match flag_opt("--iface", args.iface) {
        None => UnderlaySelect::DefaultRoute,
        Some(raw) => match raw.value.trim().parse::<IpAddr>() {
            Ok(_) => UnderlaySelect::Addr(raw.ip()?),
            Err(_) => {
                check_iface_name(&raw)?;
                UnderlaySelect::Iface(raw.value)
            }
        },
    };
    let public_ip = flag_opt("--public-ip", args.public_ip)
        .map(|raw| raw.ip())
        .transpose()?;
    let listen = flag("--listen", args.listen, defaults::LISTEN).socket_addr()?;
    let advertise = match flag_opt("--advertise", args.advertise) {
        Some(raw) => {
            let addr = raw.socket_addr()?;
            if addr.ip().is_unspecified() || addr.ip().is_multicast() || addr.port() == 0 {
                return Err(raw.invalid("must be a unicast address with a non-zero port"));
            }
            Some(addr)
        }
        None => None,
    };
    let mut seeds = Vec::new();
    for seed in args.seeds {
        let seed = seed.trim();
        if seed.is_empty() {
            continue;
        }
        check_seed(seed)?;
        seeds.push(seed.to_string());
    }
    // Underlay addresses known now must not fall inside the overlay.
    let known_underlay = [
        match &underlay {
            UnderlaySelect::Addr(ip) => Some(*ip),
            _ => None,
        },
        public_ip,
        advertise.map(|a| a.ip()),
    ];
    for ip in known_underlay.into_iter().flatten() {
        check_underlay_overlap(network_net, ip)?;
    }

    // Files and local API.
    let state_dir = path_or(args.state_dir, defaults::STATE_DIR);
    let subnet_file = path_or(args.subnet_file, defaults::SUBNET_FILE);
    if subnet_file.file_name().is_none() {
        return Err(ConfigError::invalid(
            "--subnet-file",
            subnet_file.display().to_string(),
            "not a file path",
        ));
    }
    let bridge = match flag_opt("--bridge", args.bridge) {
        Some(raw) => {
            check_iface_name(&raw)?;
            Some(raw.value)
        }
        None => None,
    };
    let api = flag("--api", args.api, defaults::API).socket_addr()?;

    // Timing.
    let gossip_interval = flag(
        "--gossip-interval",
        args.gossip_interval,
        defaults::GOSSIP_INTERVAL,
    )
    .duration_at_least(MIN_GOSSIP_INTERVAL)?;
    let fanout_raw = flag(
        "--gossip-fanout",
        args.gossip_fanout,
        defaults::GOSSIP_FANOUT,
    );
    let gossip_fanout: usize = fanout_raw.parse()?;
    if !(1..=MAX_GOSSIP_FANOUT).contains(&gossip_fanout) {
        return Err(fanout_raw.invalid(format!("must be 1 to {MAX_GOSSIP_FANOUT}")));
    }
    let settle = match flag_opt("--settle", args.settle) {
        Some(raw) => raw.duration()?,
        None => default_settle(gossip_interval),
    };
    let reservation_raw = flag("--reservation", args.reservation, defaults::RESERVATION);
    let reservation = reservation_raw.duration()?;
    let grace_raw = flag(
        "--dead-node-grace",
        args.dead_node_grace,
        defaults::DEAD_NODE_GRACE,
    );
    let dead_node_grace = grace_raw.duration_at_least(gossip_interval)?;
    if reservation > dead_node_grace / 2 {
        return Err(reservation_raw.invalid(format!(
            "must be at most half of --dead-node-grace ({}): dead nodes' records are only \
             gossiped that long",
            super::duration::format_duration(dead_node_grace)
        )));
    }
    let reconcile_interval = flag(
        "--reconcile-interval",
        args.reconcile_interval,
        defaults::RECONCILE_INTERVAL,
    )
    .duration_at_least(MIN_GOSSIP_INTERVAL)?;

    // Gossip sealing: a key, or an explicit --insecure.
    let cluster_key_file = args.cluster_key_file.filter(|p| !p.as_os_str().is_empty());
    match (&cluster_key_file, args.insecure) {
        (None, false) => {
            return Err(ConfigError::invalid(
                "--cluster-key-file",
                "",
                "no cluster key: give --cluster-key-file (make one with `weft keygen`), or \
                 --insecure to gossip unauthenticated",
            ));
        }
        (Some(p), true) => {
            return Err(ConfigError::invalid(
                "--insecure",
                "true",
                format!("conflicts with --cluster-key-file {}", p.display()),
            ));
        }
        _ => {}
    }

    // Misc.
    let log_format_raw = flag("--log-format", args.log_format, "text");
    let log_format = LogFormat::from_name(&log_format_raw.value)
        .ok_or_else(|| log_format_raw.invalid("expected text or json"))?;
    let cluster_id = flag("--cluster-id", args.cluster_id, defaults::CLUSTER_ID);
    check_cluster_id(&cluster_id)?;

    Ok(Config {
        node_name: node_name.value,
        underlay,
        public_ip,
        listen,
        advertise,
        seeds,
        network: network_net,
        subnet_len,
        subnet_min,
        subnet_max,
        static_subnet,
        backend,
        vni,
        vxlan_port,
        udp_port,
        udp_encryption,
        direct_routing,
        state_dir,
        subnet_file,
        bridge,
        api,
        gossip_interval,
        gossip_fanout,
        settle,
        reservation,
        dead_node_grace,
        reconcile_interval,
        ip_masq: args.ip_masq,
        log_format,
        cluster_id: cluster_id.value,
        insecure: args.insecure,
        cluster_key_file,
        dry_run: args.dry_run,
    })
}

/// The settle period when `--settle` is not given: 10 gossip intervals, at least 5 s.
pub fn default_settle(gossip_interval: Duration) -> Duration {
    (gossip_interval * 10).max(Duration::from_secs(5))
}

fn path_or(arg: Option<PathBuf>, default: &str) -> PathBuf {
    match arg {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => PathBuf::from(default),
    }
}

fn parse_backend(raw: &Raw) -> Result<Backend, ConfigError> {
    match raw.value.trim().to_ascii_lowercase().as_str() {
        "vxlan" => Ok(Backend::Vxlan),
        "host-gw" => Ok(Backend::HostGw),
        "udp" => Ok(Backend::Udp),
        _ => Err(raw.invalid("unknown backend (expected vxlan, host-gw or udp)")),
    }
}

fn check_name(raw: &Raw, max_len: usize) -> Result<(), ConfigError> {
    let name = &raw.value;
    if name.is_empty() || name.len() > max_len {
        return Err(raw.invalid(format!("must be 1 to {max_len} characters long")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(raw.invalid(format!(
            "character {c:?} is not allowed (use A-Z, a-z, 0-9, '.', '_', '-')"
        )));
    }
    Ok(())
}

fn check_cluster_id(raw: &Raw) -> Result<(), ConfigError> {
    check_name(raw, 128)
}

/// Linux interface names: 1..=15 bytes, no '/', ':' or whitespace, not "." or "..".
fn check_iface_name(raw: &Raw) -> Result<(), ConfigError> {
    let name = &raw.value;
    if name.is_empty() || name.len() > 15 {
        return Err(raw.invalid("an interface name is 1 to 15 characters long"));
    }
    if name == "." || name == ".." {
        return Err(raw.invalid("not an interface name"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(raw.invalid("an interface name has no '/', ':' or whitespace"));
    }
    Ok(())
}

/// `HOST:PORT`, `IPV4:PORT` or `[IPV6]:PORT` with a non-zero port. Names are resolved at run time.
fn check_seed(seed: &str) -> Result<(), ConfigError> {
    let invalid = |reason: &str| ConfigError::invalid("--seeds", seed, reason);
    if seed.parse::<SocketAddr>().is_ok() {
        if seed.ends_with(":0") {
            return Err(invalid("port 0 is not a valid seed port"));
        }
        return Ok(());
    }
    let Some((host, port)) = seed.rsplit_once(':') else {
        return Err(invalid("expected HOST:PORT"));
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(invalid("expected HOST:PORT with a port in 1..=65535")),
        Ok(_) => {}
    }
    if host.is_empty()
        || host.len() > 253
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(invalid(
            "expected HOST:PORT with a host name or address ([IPV6]:PORT for IPv6)",
        ));
    }
    Ok(())
}
