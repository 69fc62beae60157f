//! Building a [`Config`] from `weft run`'s flags and an optional net-conf.json: flags override the
//! file, the file overrides the defaults, and every rule is checked before anything else runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::args::RunArgs;
use super::duration::format_duration;
use super::error::ConfigError;
use super::netconf::{NetConf, net_conf_field};
use super::raw::{Names, Raw, conf_str, empty, flag, flag_opt, given, pick, pick_opt};
use super::{Backend, Config, LogFormat, UnderlaySelect, defaults};

/// The smallest gossip interval accepted.
pub const MIN_GOSSIP_INTERVAL: Duration = Duration::from_millis(10);
/// The largest gossip interval accepted: failure detection and claims scale with it, and an
/// interval of hours would leave a mesh that never notices anything.
pub const MAX_GOSSIP_INTERVAL: Duration = Duration::from_secs(60);
/// The largest settle period, reconcile period and reservation accepted (beyond this a typo is
/// likelier than intent, and timers are kept far from overflow).
pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// The largest dead-node grace period: dead nodes' records are gossiped for half of it, and
/// every digest grows with them.
pub const MAX_DEAD_NODE_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The largest net-conf.json read, in bytes (flannel's are a few hundred).
pub const MAX_NET_CONF_LEN: u64 = 64 * 1024;
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
        let names = Names::new(&args.from_env);
        let net_conf = match &args.net_conf {
            Some(path) if path.as_os_str().is_empty() => {
                return Err(empty(
                    &names.of("--net-conf"),
                    "omit it to read no net-conf.json",
                ));
            }
            Some(path) => Some(NetConf::read(
                path,
                &names.of("--net-conf"),
                MAX_NET_CONF_LEN,
            )?),
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

/// Address ranges an overlay network must not touch, and why.
const UNUSABLE_NETWORKS: [(&str, &str); 5] = [
    (
        "0.0.0.0/8",
        "0.0.0.0/8 means \"this host\" and is never routed",
    ),
    (
        "127.0.0.0/8",
        "127.0.0.0/8 is loopback: packets never leave the host",
    ),
    (
        "169.254.0.0/16",
        "169.254.0.0/16 is link-local: routers do not forward it",
    ),
    (
        "224.0.0.0/4",
        "224.0.0.0/4 is multicast, not addresses of hosts",
    ),
    (
        "240.0.0.0/4",
        "240.0.0.0/4 is reserved (and holds the broadcast address)",
    ),
];

/// Refuses overlay networks that cannot carry container traffic.
fn check_overlay(raw: &Raw, network: Ipv4Net) -> Result<(), ConfigError> {
    for (range, why) in UNUSABLE_NETWORKS {
        let range: Ipv4Net = range.parse().unwrap_or_default();
        if range.contains(&network) || network.contains(&range) {
            return Err(raw.invalid(format!("cannot be an overlay network: {why}")));
        }
    }
    Ok(())
}

/// Parses and validates `args` merged with `net_conf`; `hostname` gives the default node name.
pub(crate) fn build(
    args: RunArgs,
    net_conf: Option<NetConf>,
    hostname: impl FnOnce() -> Result<String, ConfigError>,
) -> Result<Config, ConfigError> {
    let from_env = args.from_env.clone();
    let names = Names::new(&from_env);
    let n = &names;
    let net_conf = net_conf.map(|c| (args.net_conf.clone().unwrap_or_default(), c));

    // Identity.
    let node_name = match given(n, "--node-name", args.node_name, Some("the hostname"))? {
        Some(raw) => raw,
        None => Raw {
            field: format!("{} (default: the hostname)", n.of("--node-name")),
            value: hostname()?,
        },
    };
    check_name(&node_name, MAX_NODE_NAME_LEN)?;

    // Overlay network and subnets. flannel requires Network in its net-conf.json; weft takes it
    // from --network when the file has none, never silently from the default.
    if let Some((path, conf)) = &net_conf
        && conf.network.is_none()
        && args.network.is_none()
    {
        return Err(ConfigError::Rule {
            field: net_conf_field("Network", path),
            reason: "missing: net-conf.json must set Network (or give --network)".to_string(),
        });
    }
    let subnet_len_given = args.subnet_len.is_some()
        || net_conf
            .as_ref()
            .is_some_and(|(_, c)| c.subnet_len.is_some());
    let network = pick(
        n,
        "--network",
        args.network,
        conf_str(&net_conf, "Network", |c| c.network.clone()),
        defaults::NETWORK,
    )?;
    let network_net = network.cidr()?;
    check_overlay(&network, network_net)?;
    let subnet_len_raw = pick(
        n,
        "--subnet-len",
        args.subnet_len,
        conf_str(&net_conf, "SubnetLen", |c| {
            c.subnet_len.map(|n| n.to_string())
        }),
        defaults::SUBNET_LEN,
    )?;
    let subnet_len: u8 = subnet_len_raw.int_in(1..=MAX_SUBNET_LEN)?;
    if subnet_len <= network_net.prefix_len() {
        let plen = network_net.prefix_len();
        return Err(if subnet_len_given {
            subnet_len_raw.invalid(format!(
                "a /{subnet_len} node subnet does not fit in the network {network_net}: use a \
                 length from {} to {MAX_SUBNET_LEN}",
                (plen + 1).min(MAX_SUBNET_LEN)
            ))
        } else {
            network.invalid(format!(
                "too small: a /{plen} network holds no /{subnet_len} node subnet (use a /{} or \
                 larger network, or set --subnet-len)",
                subnet_len.saturating_sub(1)
            ))
        });
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
        n,
        "--subnet-min",
        args.subnet_min,
        conf_str(&net_conf, "SubnetMin", |c| c.subnet_min.clone()),
    )? {
        Some(raw) => {
            let addr = raw.ipv4()?;
            check_subnet_addr(&raw, addr)?;
            Some((raw, addr))
        }
        // flannel skips the network's first subnet.
        None => None,
    };
    let subnet_max = match pick_opt(
        n,
        "--subnet-max",
        args.subnet_max,
        conf_str(&net_conf, "SubnetMax", |c| c.subnet_max.clone()),
    )? {
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
                    n.of("--subnet-max"),
                    subnet_max.to_string(),
                    format!("smaller than the default subnet minimum {second}"),
                ));
            }
            second
        }
    };
    let static_subnet = match flag_opt(n, "--subnet", args.subnet)? {
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

    let families = super::ipv6::families(
        n,
        super::ipv6::FamilyArgs {
            no_ipv4: args.no_ipv4,
            ipv6_network: args.ipv6_network,
            ipv6_subnet_len: args.ipv6_subnet_len,
            ipv6_subnet_min: args.ipv6_subnet_min,
            ipv6_subnet_max: args.ipv6_subnet_max,
            public_ipv6: args.public_ipv6,
            dry_run: args.dry_run,
        },
        &net_conf,
        &super::ipv6::Ipv4Side {
            network: network_net,
            subnet_len,
            subnet_min,
            subnet_max,
            static_subnet,
        },
    )?;

    // Backend.
    let backend_raw = pick(
        n,
        "--backend",
        args.backend,
        conf_str(&net_conf, "Backend.Type", |c| c.backend_type.clone()),
        defaults::BACKEND,
    )?;
    let backend = parse_backend(&backend_raw)?;
    let vni_raw = pick(
        n,
        "--vni",
        args.vni,
        conf_str(&net_conf, "Backend.VNI", |c| c.vni.map(|n| n.to_string())),
        defaults::VNI,
    )?;
    let vni: u32 = vni_raw.int_in(1..=MAX_VNI)?;
    let port_raw = pick(
        n,
        "--vxlan-port",
        args.vxlan_port,
        conf_str(&net_conf, "Backend.Port", |c| c.port.map(|n| n.to_string())),
        defaults::VXLAN_PORT,
    )?;
    let vxlan_port: u16 = port_raw.int_in(1..=u16::MAX)?;
    let udp_port_raw = pick(
        n,
        "--udp-port",
        args.udp_port,
        conf_str(&net_conf, "Backend.Port", |c| {
            c.port
                .filter(|_| backend == Backend::Udp)
                .map(|n| n.to_string())
        }),
        defaults::UDP_PORT,
    )?;
    let udp_port: u16 = udp_port_raw.int_in(1..=u16::MAX)?;
    let udp_encryption = match flag_opt(n, "--udp-encryption", args.udp_encryption)? {
        None => !args.insecure,
        Some(raw) => match raw.value.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => {
                if args.insecure {
                    return Err(raw.invalid(format!(
                        "conflicts with {}: without a cluster key the tunnel's key exchange is \
                         unauthenticated, so encryption would be a false promise (give \
                         --cluster-key-file instead)",
                        n.of("--insecure")
                    )));
                }
                true
            }
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
    let underlay = match flag_opt(n, "--iface", args.iface)? {
        None => UnderlaySelect::DefaultRoute,
        Some(raw) => match raw.value.trim().parse::<IpAddr>() {
            Ok(ip) => UnderlaySelect::Addr(raw.peer_ip(ip, args.dry_run)?),
            Err(_) => {
                check_iface_name(&raw)?;
                UnderlaySelect::Iface(raw.value)
            }
        },
    };
    let public_ip = match flag_opt(n, "--public-ip", args.public_ip)? {
        Some(raw) => Some(raw.peer_ip(raw.parse()?, args.dry_run)?),
        None => None,
    };
    let listen_raw = flag(n, "--listen", args.listen, defaults::LISTEN)?;
    let listen = listen_raw.socket_addr()?;
    if listen.port() == 0 {
        return Err(listen_raw.invalid(
            "port 0 would gossip on a random port that no peer knows (give a port; the \
             default is 7947)",
        ));
    }
    if listen.ip().is_multicast() || matches!(listen.ip(), IpAddr::V4(v4) if v4.is_broadcast()) {
        return Err(listen_raw.invalid("not a local unicast address"));
    }
    let advertise = match flag_opt(n, "--advertise", args.advertise)? {
        Some(raw) => {
            let addr = raw.socket_addr()?;
            if addr.port() == 0 {
                return Err(raw.invalid("must be a unicast address with a non-zero port"));
            }
            if addr.ip().is_unspecified() || addr.ip().is_multicast() {
                return Err(raw.invalid("must be a unicast address with a non-zero port"));
            }
            raw.peer_ip(addr.ip(), args.dry_run)?;
            Some(addr)
        }
        None => None,
    };
    let seeds_field = n.of("--seeds");
    let given_seeds = !args.seeds.is_empty();
    let seeds_text = args.seeds.join(",");
    let mut seeds: Vec<String> = Vec::new();
    for seed in args.seeds {
        let seed = seed.trim();
        if seed.is_empty() {
            continue;
        }
        check_seed(&seeds_field, seed)?;
        if seeds.iter().any(|s| s.eq_ignore_ascii_case(seed)) {
            return Err(ConfigError::invalid(
                seeds_field.as_str(),
                seed,
                "listed twice",
            ));
        }
        seeds.push(seed.to_string());
    }
    if given_seeds && seeds.is_empty() {
        return Err(ConfigError::invalid(
            seeds_field.as_str(),
            seeds_text,
            "no seed left after parsing (omit it to start a new mesh)",
        ));
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
        check_underlay_overlap(network_net, ip).map_err(|_| {
            network.invalid(format!(
                "the overlay network contains the underlay address {ip}; choose a network \
                 that does not overlap the hosts' network"
            ))
        })?;
    }

    // Files and local API.
    let state_dir = path_or(n, "--state-dir", args.state_dir, defaults::STATE_DIR)?;
    let subnet_file = path_or(n, "--subnet-file", args.subnet_file, defaults::SUBNET_FILE)?;
    if subnet_file.file_name().is_none()
        || subnet_file.as_os_str().as_encoded_bytes().ends_with(b"/")
    {
        return Err(ConfigError::invalid(
            n.of("--subnet-file"),
            subnet_file.display().to_string(),
            "not a file path",
        ));
    }
    let bridge = match flag_opt(n, "--bridge", args.bridge)? {
        Some(raw) => {
            check_iface_name(&raw)?;
            Some(raw.value)
        }
        None => None,
    };
    let api_raw = flag(n, "--api", args.api, defaults::API)?;
    let api = api_raw.socket_addr()?;
    if api.port() == 0 {
        return Err(api_raw.invalid(
            "port 0 would listen on a random port that `weft status` cannot find (the \
             default is 7948)",
        ));
    }
    if api.ip().is_multicast() || matches!(api.ip(), IpAddr::V4(v4) if v4.is_broadcast()) {
        return Err(api_raw.invalid("not a local unicast address"));
    }

    // Timing.
    let gossip_interval = flag(
        n,
        "--gossip-interval",
        args.gossip_interval,
        defaults::GOSSIP_INTERVAL,
    )?
    .duration_in(MIN_GOSSIP_INTERVAL, MAX_GOSSIP_INTERVAL)?;
    let fanout_raw = flag(
        n,
        "--gossip-fanout",
        args.gossip_fanout,
        defaults::GOSSIP_FANOUT,
    )?;
    let gossip_fanout: usize = fanout_raw.int_in(1..=MAX_GOSSIP_FANOUT)?;
    let args_settle_given = args.settle.is_some();
    let settle = match flag_opt(n, "--settle", args.settle)? {
        // A claim must be heard by the mesh before it counts: at least one gossip round.
        Some(raw) => raw.duration_in(gossip_interval, MAX_PERIOD)?,
        None => default_settle(gossip_interval),
    };
    let grace_raw = flag(
        n,
        "--dead-node-grace",
        args.dead_node_grace,
        defaults::DEAD_NODE_GRACE,
    )?;
    let reservation_raw = flag(n, "--reservation", args.reservation, defaults::RESERVATION)?;
    // A reservation shorter than a settle period hands a rebooting host's subnet to someone
    // else before it is even noticed dead.
    let reservation = reservation_raw.duration_in(Duration::ZERO, MAX_PERIOD)?;
    if reservation < settle {
        return Err(reservation_raw.invalid(format!(
            "must be at least the settle period ({}{}): a dead node's subnet must stay \
             reserved longer than a claim takes to settle",
            format_duration(settle),
            if args_settle_given {
                format!(", {}", n.of("--settle"))
            } else {
                String::new()
            }
        )));
    }
    let dead_node_grace = grace_raw.duration_in(gossip_interval, MAX_DEAD_NODE_GRACE)?;
    if reservation > dead_node_grace / 2 {
        return Err(reservation_raw.invalid(format!(
            "must be at most half of {} ({}): dead nodes' records are only gossiped that long",
            grace_raw.field,
            format_duration(dead_node_grace)
        )));
    }
    let reconcile_interval = flag(
        n,
        "--reconcile-interval",
        args.reconcile_interval,
        defaults::RECONCILE_INTERVAL,
    )?
    .duration_in(MIN_GOSSIP_INTERVAL, MAX_PERIOD)?;

    // Gossip sealing: a key, or an explicit --insecure.
    let cluster_key_file = match args.cluster_key_file {
        Some(p) if p.as_os_str().is_empty() => {
            return Err(empty(
                &n.of("--cluster-key-file"),
                "give the key file made by `weft keygen`",
            ));
        }
        other => other,
    };
    match (&cluster_key_file, args.insecure) {
        (None, false) => {
            return Err(ConfigError::invalid(
                n.of("--cluster-key-file"),
                "",
                "no cluster key: give --cluster-key-file (make one with `weft keygen`), or \
                 --insecure to gossip unauthenticated",
            ));
        }
        (Some(p), true) => {
            return Err(ConfigError::invalid(
                n.of("--insecure"),
                "true",
                format!("conflicts with --cluster-key-file {}", p.display()),
            ));
        }
        _ => {}
    }

    // Misc.
    let log_format_raw = flag(n, "--log-format", args.log_format, "text")?;
    let log_format = LogFormat::from_name(&log_format_raw.value)
        .ok_or_else(|| log_format_raw.invalid("expected text or json"))?;
    let cluster_id = flag(n, "--cluster-id", args.cluster_id, defaults::CLUSTER_ID)?;
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
        ipv4: families.ipv4,
        ipv6: families.ipv6,
        public_ipv6: families.public_ipv6,
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
        probes: !args.no_probes,
        log_format,
        cluster_id: cluster_id.value,
        insecure: args.insecure,
        cluster_key_file,
        dry_run: args.dry_run,
    })
}

/// The settle period when `--settle` is not given: 10 gossip intervals, at least 5 s.
pub fn default_settle(gossip_interval: Duration) -> Duration {
    gossip_interval
        .saturating_mul(10)
        .max(Duration::from_secs(5))
}

fn path_or(
    names: &Names,
    flag: &str,
    arg: Option<PathBuf>,
    default: &str,
) -> Result<PathBuf, ConfigError> {
    match arg {
        Some(p) if p.as_os_str().is_empty() => Err(empty(
            &names.of(flag),
            &format!("omit it to use the default, {default}"),
        )),
        Some(p) => Ok(p),
        None => Ok(PathBuf::from(default)),
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

/// `HOST:PORT`, `IPV4:PORT` or `[IPV6]:PORT` with a non-zero port and a unicast address. Names
/// are resolved at run time.
fn check_seed(field: &str, seed: &str) -> Result<(), ConfigError> {
    let invalid = |reason: &str| ConfigError::invalid(field, seed, reason);
    if let Ok(addr) = seed.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(invalid("port 0 is not a valid seed port"));
        }
        let ip = addr.ip();
        if ip.is_unspecified() {
            return Err(invalid(
                "an unspecified address (0.0.0.0) names no host; give a seed's own address",
            ));
        }
        if ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
            return Err(invalid("not a unicast address"));
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
