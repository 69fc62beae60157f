//! The address families of the overlay, from flags or flannel's net-conf keys: `--no-ipv4`
//! (`EnableIPv4: false`), `--ipv6-network` (`EnableIPv6: true` with `IPv6Network`),
//! `--ipv6-subnet-len/-min/-max` (`IPv6SubnetLen/Min/Max`) and `--public-ipv6`. Every rule is
//! one line naming the field; the IPv6 pool must pair every claimable IPv4 subnet (one claim
//! covers both families, by index: [`crate::lease::families`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::error::ConfigError;
use super::netconf::{NetConf, net_conf_field};
use super::raw::{Names, Raw, conf_str, flag_opt, pick, pick_opt};
use super::{Ipv6Pool, defaults};
use crate::lease::families;

/// The longest IPv6 node subnet prefix (a /126 holds the gateway and two containers).
pub const MAX_IPV6_SUBNET_LEN: u8 = 126;
/// The most bits a subnet index may take (subnet length − network length).
const MAX_INDEX_BITS: u8 = 63;

/// IPv6 ranges an overlay network must not touch, and why.
const UNUSABLE_NETWORKS: [(&str, &str); 3] = [
    (
        "::/8",
        "::/8 is reserved (unspecified, loopback, IPv4-mapped addresses)",
    ),
    (
        "fe80::/10",
        "fe80::/10 is link-local: routers do not forward it",
    ),
    ("ff00::/8", "ff00::/8 is multicast, not addresses of hosts"),
];

/// The IPv4 side, as validated before the families are.
pub(super) struct Ipv4Side {
    pub network: Ipv4Net,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    pub static_subnet: Option<Ipv4Net>,
}

/// What the families' flags say.
pub(super) struct FamilyArgs {
    pub no_ipv4: bool,
    pub ipv6_network: Option<String>,
    pub ipv6_subnet_len: Option<String>,
    pub ipv6_subnet_min: Option<String>,
    pub ipv6_subnet_max: Option<String>,
    pub public_ipv6: Option<String>,
    pub dry_run: bool,
}

/// The validated families.
#[derive(Debug)]
pub(super) struct Families {
    pub ipv4: bool,
    pub ipv6: Option<Ipv6Pool>,
    pub public_ipv6: Option<Ipv6Addr>,
}

pub(super) fn families(
    n: &Names,
    args: FamilyArgs,
    net_conf: &Option<(PathBuf, NetConf)>,
    v4: &Ipv4Side,
) -> Result<Families, ConfigError> {
    let conf = net_conf.as_ref().map(|(p, c)| (p.as_path(), c));
    let conf_field = |key: &str| conf.map(|(p, _)| net_conf_field(key, p));

    // IPv6 is on when the flag gives a network, or net-conf says EnableIPv6: true. A network in
    // net-conf without EnableIPv6 would be ignored by flannel: refuse it rather than guess.
    let conf_enable_v6 = conf.and_then(|(_, c)| c.enable_ipv6);
    let conf_v6_network = conf.and_then(|(_, c)| c.ipv6_network.clone());
    let enable_v6 = args.ipv6_network.is_some() || conf_enable_v6 == Some(true);
    if !enable_v6 && conf_v6_network.is_some() {
        return Err(ConfigError::Rule {
            field: conf_field("IPv6Network").unwrap_or_default(),
            reason: "set, but EnableIPv6 is not true: flannel would ignore it (set \
                     \"EnableIPv6\": true, or remove it)"
                .to_string(),
        });
    }
    if enable_v6 && args.ipv6_network.is_none() && conf_v6_network.is_none() {
        return Err(ConfigError::Rule {
            field: conf_field("EnableIPv6").unwrap_or_default(),
            reason: "true, but no IPv6Network is set (set it, or give --ipv6-network)".to_string(),
        });
    }
    let ipv6 = if enable_v6 {
        Some(pool(n, &args, net_conf)?)
    } else {
        for (flag, given) in [
            ("--ipv6-subnet-len", args.ipv6_subnet_len.is_some()),
            ("--ipv6-subnet-min", args.ipv6_subnet_min.is_some()),
            ("--ipv6-subnet-max", args.ipv6_subnet_max.is_some()),
        ] {
            if given {
                return Err(ConfigError::Rule {
                    field: n.of(flag),
                    reason: "set without an IPv6 overlay (give --ipv6-network)".to_string(),
                });
            }
        }
        None
    };

    let conf_v4_off = conf.and_then(|(_, c)| c.enable_ipv4) == Some(false);
    let ipv4 = !(args.no_ipv4 || conf_v4_off);
    if !ipv4 && ipv6.is_none() {
        let field = if args.no_ipv4 {
            n.of("--no-ipv4")
        } else {
            conf_field("EnableIPv4").unwrap_or_default()
        };
        return Err(ConfigError::Rule {
            field,
            reason: "no address family left: an IPv6-only overlay needs --ipv6-network (or \
                     EnableIPv6 with IPv6Network)"
                .to_string(),
        });
    }
    if let (true, Some(p)) = (ipv4, &ipv6) {
        check_pairing(n, net_conf, v4, p)?;
    }
    if let (false, Some(p)) = (ipv4, &ipv6) {
        check_ipv6_only(n, net_conf, v4, p)?;
    }

    let public_ipv6 = match flag_opt(n, "--public-ipv6", args.public_ipv6)? {
        Some(raw) => {
            let ip: IpAddr = raw.parse()?;
            let IpAddr::V6(v6) = ip else {
                return Err(raw.invalid("an IPv4 address goes in --public-ip"));
            };
            if v6.to_ipv4_mapped().is_some() {
                return Err(raw.invalid("an IPv4-mapped address goes in --public-ip as IPv4"));
            }
            if v6.is_unicast_link_local() {
                return Err(raw.invalid(
                    "a link-local address has no meaning on other hosts' links (give a \
                     global or unique-local address)",
                ));
            }
            raw.peer_ip(ip, args.dry_run)?;
            if let Some(p) = &ipv6
                && p.network.contains(&v6)
            {
                return Err(raw.invalid(format!(
                    "inside the IPv6 overlay network {}: the underlay must not overlap it",
                    p.network
                )));
            }
            Some(v6)
        }
        None => None,
    };
    Ok(Families {
        ipv4,
        ipv6,
        public_ipv6,
    })
}

/// The IPv6 network, subnet length and claimable range.
fn pool(
    n: &Names,
    args: &FamilyArgs,
    net_conf: &Option<(PathBuf, NetConf)>,
) -> Result<Ipv6Pool, ConfigError> {
    let network_raw = pick_opt(
        n,
        "--ipv6-network",
        args.ipv6_network.clone(),
        conf_str(net_conf, "IPv6Network", |c| c.ipv6_network.clone()),
    )?
    .ok_or_else(|| ConfigError::Rule {
        field: n.of("--ipv6-network"),
        reason: "missing".to_string(),
    })?;
    let network = ipv6_cidr(&network_raw)?;
    for (range, why) in UNUSABLE_NETWORKS {
        let range: Ipv6Net = range.parse().unwrap_or_default();
        if range.contains(&network) || network.contains(&range) {
            return Err(network_raw.invalid(format!("cannot be an overlay network: {why}")));
        }
    }
    let len_raw = pick(
        n,
        "--ipv6-subnet-len",
        args.ipv6_subnet_len.clone(),
        conf_str(net_conf, "IPv6SubnetLen", |c| {
            c.ipv6_subnet_len.map(|l| l.to_string())
        }),
        defaults::IPV6_SUBNET_LEN,
    )?;
    let subnet_len: u8 = len_raw.int_in(1..=MAX_IPV6_SUBNET_LEN)?;
    let plen = network.prefix_len();
    if subnet_len <= plen {
        return Err(len_raw.invalid(format!(
            "a /{subnet_len} node subnet does not fit in the IPv6 network {network}: use a length \
             from {} to {MAX_IPV6_SUBNET_LEN}",
            (plen + 1).min(MAX_IPV6_SUBNET_LEN)
        )));
    }
    if subnet_len - plen > MAX_INDEX_BITS {
        return Err(network_raw.invalid(format!(
            "holds more than 2^{MAX_INDEX_BITS} node subnets of /{subnet_len}: use a longer \
             prefix (at least /{})",
            subnet_len - MAX_INDEX_BITS
        )));
    }
    let count_bits = u32::from(subnet_len - plen);
    let mut pool = Ipv6Pool {
        network,
        subnet_len,
        subnet_min: network.network(),
        subnet_max: network.network(),
    };
    let last_index = (1u64 << count_bits) - 1;
    let at = |i: u64| pool.subnet_at(i).map(|s| s.network());
    let default_max = at(last_index).unwrap_or(network.network());
    let default_min = at(1).unwrap_or(network.network());
    let check = |raw: &Raw| -> Result<Ipv6Addr, ConfigError> {
        let addr: Ipv6Addr = match raw.value.trim().parse::<IpAddr>() {
            Ok(IpAddr::V6(a)) => a,
            Ok(IpAddr::V4(_)) => return Err(raw.invalid("expected an IPv6 address")),
            Err(_) => raw.parse()?,
        };
        if !network.contains(&addr) {
            return Err(raw.invalid(format!("outside the IPv6 network {network}")));
        }
        let aligned = Ipv6Net::new(addr, subnet_len)
            .map(|s| s.network())
            .unwrap_or(addr);
        if aligned != addr {
            return Err(raw.invalid(format!(
                "not the start of a /{subnet_len} subnet (did you mean {aligned}?)"
            )));
        }
        Ok(addr)
    };
    let min_raw = pick_opt(
        n,
        "--ipv6-subnet-min",
        args.ipv6_subnet_min.clone(),
        conf_str(net_conf, "IPv6SubnetMin", |c| c.ipv6_subnet_min.clone()),
    )?;
    let max_raw = pick_opt(
        n,
        "--ipv6-subnet-max",
        args.ipv6_subnet_max.clone(),
        conf_str(net_conf, "IPv6SubnetMax", |c| c.ipv6_subnet_max.clone()),
    )?;
    pool.subnet_max = match &max_raw {
        Some(raw) => check(raw)?,
        None => default_max,
    };
    pool.subnet_min = match &min_raw {
        Some(raw) => {
            let min = check(raw)?;
            if min > pool.subnet_max {
                return Err(raw.invalid(format!(
                    "larger than the IPv6 subnet maximum {}",
                    pool.subnet_max
                )));
            }
            min
        }
        None if default_min > pool.subnet_max => {
            return Err(ConfigError::invalid(
                n.of("--ipv6-subnet-max"),
                pool.subnet_max.to_string(),
                format!("smaller than the default IPv6 subnet minimum {default_min}"),
            ));
        }
        None => default_min,
    };
    Ok(pool)
}

/// A dual-stack claim takes the IPv6 subnet at its IPv4 subnet's index: every claimable IPv4
/// index (and a static `--subnet`) must have one.
fn check_pairing(
    n: &Names,
    net_conf: &Option<(PathBuf, NetConf)>,
    v4: &Ipv4Side,
    pool: &Ipv6Pool,
) -> Result<(), ConfigError> {
    let v4_range =
        families::ipv4_index_range(v4.network, v4.subnet_len, v4.subnet_min, v4.subnet_max);
    let v6_range = pool.index_range();
    let (Some(v4_range), Some(v6_range)) = (v4_range, v6_range) else {
        return Ok(());
    };
    if v6_range.start() > v4_range.start() || v6_range.end() < v4_range.end() {
        return Err(ConfigError::Rule {
            field: ipv6_network_field(n, net_conf),
            reason: format!(
                "its claimable subnets {} to {} (indices {}..={}) do not pair every IPv4 subnet \
                 {} to {} (indices {}..={}): a node's IPv6 subnet has its IPv4 subnet's index \
                 (use a larger IPv6 network, or a smaller IPv4 range)",
                pool.subnet_min,
                pool.subnet_max,
                v6_range.start(),
                v6_range.end(),
                v4.subnet_min,
                v4.subnet_max,
                v4_range.start(),
                v4_range.end()
            ),
        });
    }
    if let Some(subnet) = v4.static_subnet
        && pool.paired_with(v4.network, subnet).is_none()
    {
        return Err(ConfigError::Rule {
            field: n.of("--subnet"),
            reason: format!(
                "{subnet} has no IPv6 subnet at its index in {} (between {} and {})",
                pool.network, pool.subnet_min, pool.subnet_max
            ),
        });
    }
    Ok(())
}

/// Where the IPv6 network was given: net-conf's `IPv6Network`, or the flag.
fn ipv6_network_field(n: &Names, net_conf: &Option<(PathBuf, NetConf)>) -> String {
    match net_conf {
        Some((path, c)) if c.ipv6_network.is_some() => net_conf_field("IPv6Network", path),
        _ => n.of("--ipv6-network"),
    }
}

/// The most subnets an IPv6-only overlay claims among: a claim ranks every candidate (a
/// rendezvous hash each), so the range is bounded as an IPv4 one is by its 32 bits.
pub const MAX_IPV6_ONLY_SUBNETS: u64 = 1 << 20;

/// An IPv6-only overlay claims in the IPv6 pool: no static IPv4 subnet, and a range of at most
/// [`MAX_IPV6_ONLY_SUBNETS`].
fn check_ipv6_only(
    n: &Names,
    net_conf: &Option<(PathBuf, NetConf)>,
    v4: &Ipv4Side,
    pool: &Ipv6Pool,
) -> Result<(), ConfigError> {
    if let Some(subnet) = v4.static_subnet {
        return Err(ConfigError::Rule {
            field: n.of("--subnet"),
            reason: format!("{subnet} is an IPv4 subnet, and the overlay is IPv6-only"),
        });
    }
    let count = pool
        .index_range()
        .map(|r| r.end().saturating_sub(*r.start()).saturating_add(1))
        .unwrap_or(0);
    if count > MAX_IPV6_ONLY_SUBNETS {
        return Err(ConfigError::Rule {
            field: ipv6_network_field(n, net_conf),
            reason: format!(
                "an IPv6-only overlay claims among at most {MAX_IPV6_ONLY_SUBNETS} subnets, and \
                 {} to {} holds {count}: narrow it with --ipv6-subnet-min/--ipv6-subnet-max \
                 (IPv6SubnetMin/IPv6SubnetMax) or a longer prefix",
                pool.subnet_min, pool.subnet_max
            ),
        });
    }
    Ok(())
}

/// `ADDR/LEN`, IPv6, with no host bits set.
fn ipv6_cidr(raw: &Raw) -> Result<Ipv6Net, ConfigError> {
    let text = raw.value.trim();
    let Some((addr, len)) = text.split_once('/') else {
        return Err(raw.invalid("expected ADDR/LEN, e.g. fd00:10:244::/56"));
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|e| ConfigError::parse(raw.field.clone(), raw.value.clone(), e))?;
    let IpAddr::V6(addr) = addr else {
        return Err(raw.invalid("an IPv4 network goes in --network"));
    };
    let net = Ipv6Net::new(addr, raw.prefix_len(len, 128)?).unwrap_or_default();
    raw.no_host_bits(IpNet::V6(net), IpAddr::V6(addr))?;
    Ok(net)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::validate::build;
    use super::super::{Config, ConfigError, NetConf, RunArgs};

    fn args() -> RunArgs {
        RunArgs {
            node_name: Some("node-1".into()),
            insecure: true,
            ..RunArgs::default()
        }
    }

    fn dual() -> RunArgs {
        RunArgs {
            ipv6_network: Some("fd00:10:244::/56".into()),
            ..args()
        }
    }

    fn build_with(args: RunArgs, conf: Option<&str>) -> Result<Config, ConfigError> {
        let conf = conf.map(|t| NetConf::parse(t, Path::new("/etc/weft/net-conf.json")).unwrap());
        let args = RunArgs {
            net_conf: conf.as_ref().map(|_| "/etc/weft/net-conf.json".into()),
            ..args
        };
        build(args, conf, || Ok("host".into()))
    }

    fn ok(args: RunArgs, conf: Option<&str>) -> Config {
        build_with(args, conf).unwrap_or_else(|e| panic!("unexpected error: {e}"))
    }

    /// Refused in one line that names `field` and says `needle`.
    fn refused(args: RunArgs, conf: Option<&str>, field: &str, needle: &str) {
        let e = build_with(args, conf).expect_err("should be refused");
        let text = e.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(e.field().contains(field), "{text} (field {})", e.field());
        assert!(text.contains(needle), "{text:?} lacks {needle:?}");
    }

    #[test]
    fn ipv4_only_stays_the_default() {
        let c = ok(args(), None);
        assert!(c.ipv4);
        assert_eq!(c.ipv6, None);
    }

    #[test]
    fn dual_stack_from_flags_takes_flannels_defaults() {
        let c = ok(dual(), None);
        assert!(c.ipv4);
        let p = c.ipv6.unwrap();
        assert_eq!(p.network.to_string(), "fd00:10:244::/56");
        assert_eq!(p.subnet_len, 64);
        assert_eq!(p.subnet_min.to_string(), "fd00:10:244:1::");
        assert_eq!(p.subnet_max.to_string(), "fd00:10:244:ff::");
        // Every claimable IPv4 subnet has its IPv6 pair.
        for s in crate::lease::subnets(&crate::lease::LeaseConfig {
            node_name: "n".into(),
            network: ipnet::IpNet::V4(c.network),
            subnet_len: c.subnet_len,
            subnet_min: c.subnet_min.into(),
            subnet_max: c.subnet_max.into(),
            static_subnet: None,
            settle_ms: 0,
            reservation_ms: 0,
            warmup_ms: 0,
            quiet_ms: 0,
            settle_max_ms: 0,
        }) {
            let ipnet::IpNet::V4(s) = s else {
                panic!("{s}")
            };
            assert!(p.paired_with(c.network, s).is_some(), "{s}");
        }
    }

    #[test]
    fn net_conf_keys_mean_what_they_mean_to_flannel() {
        let c = ok(
            args(),
            Some(
                r#"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/48",
                    "IPv6SubnetLen": 64, "IPv6SubnetMin": "fd00:10:244:1::", "IPv6SubnetMax": "fd00:10:244:fff::"}"#,
            ),
        );
        let p = c.ipv6.unwrap();
        assert_eq!(p.subnet_min.to_string(), "fd00:10:244:1::");
        assert_eq!(p.subnet_max.to_string(), "fd00:10:244:fff::");
        // IPv6-only: EnableIPv4 false.
        let c = ok(
            args(),
            Some(
                r#"{"EnableIPv4": false, "Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}"#,
            ),
        );
        assert!(!c.ipv4);
        assert!(c.ipv6.is_some());
        // Flags override the file.
        let c = ok(
            RunArgs {
                ipv6_subnet_len: Some("80".into()),
                ..args()
            },
            Some(
                r#"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/72"}"#,
            ),
        );
        assert_eq!(c.ipv6.unwrap().subnet_len, 80);
        // flannel's "off" values stay accepted.
        let c = ok(
            args(),
            Some(r#"{"Network": "10.9.0.0/16", "EnableIPv4": true, "EnableIPv6": false}"#),
        );
        assert_eq!(c.ipv6, None);
    }

    #[test]
    fn ipv6_only_from_flags() {
        let c = ok(
            RunArgs {
                no_ipv4: true,
                ..dual()
            },
            None,
        );
        assert!(!c.ipv4);
        assert!(c.ipv6.is_some());
    }

    #[test]
    fn bad_combinations_fail_in_one_line_naming_the_field() {
        let conf = Some(r#"{"Network": "10.244.0.0/16", "EnableIPv6": true}"#);
        refused(args(), conf, "EnableIPv6", "no IPv6Network");
        let conf = Some(r#"{"Network": "10.244.0.0/16", "IPv6Network": "fd00::/56"}"#);
        refused(args(), conf, "IPv6Network", "EnableIPv6 is not true");
        refused(
            RunArgs {
                no_ipv4: true,
                ..args()
            },
            None,
            "--no-ipv4",
            "no address family left",
        );
        let conf = Some(r#"{"Network": "10.244.0.0/16", "EnableIPv4": false}"#);
        refused(args(), conf, "EnableIPv4", "no address family left");
        refused(
            RunArgs {
                ipv6_subnet_len: Some("64".into()),
                ..args()
            },
            None,
            "--ipv6-subnet-len",
            "without an IPv6 overlay",
        );
    }

    #[test]
    fn ipv6_network_and_subnet_rules() {
        let with = |net: &str| RunArgs {
            ipv6_network: Some(net.into()),
            ..args()
        };
        refused(
            with("10.0.0.0/16"),
            None,
            "--ipv6-network",
            "goes in --network",
        );
        refused(
            with("fd00::1/56"),
            None,
            "--ipv6-network",
            "did you mean fd00::/56",
        );
        refused(
            with("fd00::/129"),
            None,
            "--ipv6-network",
            "larger than 128",
        );
        refused(with("fd00::"), None, "--ipv6-network", "ADDR/LEN");
        refused(with("fe80::/56"), None, "--ipv6-network", "link-local");
        refused(with("ff00::/56"), None, "--ipv6-network", "multicast");
        refused(with("::/56"), None, "--ipv6-network", "reserved");
        refused(with("::ffff:0:0/104"), None, "--ipv6-network", "reserved");
        let len = |l: &str| RunArgs {
            ipv6_subnet_len: Some(l.into()),
            ..dual()
        };
        refused(len("56"), None, "--ipv6-subnet-len", "does not fit");
        refused(len("127"), None, "--ipv6-subnet-len", "from 1 to 126");
        refused(len("-1"), None, "--ipv6-subnet-len", "whole number");
        refused(
            RunArgs {
                ipv6_network: Some("fd00::/8".into()),
                ipv6_subnet_len: Some("124".into()),
                ..args()
            },
            None,
            "--ipv6-network",
            "more than 2^63",
        );
        let min = |m: &str| RunArgs {
            ipv6_subnet_min: Some(m.into()),
            ..dual()
        };
        refused(min("fd00:10:245::"), None, "--ipv6-subnet-min", "outside");
        refused(
            min("fd00:10:244:3::1"),
            None,
            "--ipv6-subnet-min",
            "did you mean fd00:10:244:3::",
        );
        refused(min("10.0.0.0"), None, "--ipv6-subnet-min", "IPv6");
        refused(
            RunArgs {
                ipv6_subnet_min: Some("fd00:10:244:9::".into()),
                ipv6_subnet_max: Some("fd00:10:244:8::".into()),
                ..dual()
            },
            None,
            "--ipv6-subnet-min",
            "larger than the IPv6 subnet maximum",
        );
    }

    #[test]
    fn the_ipv6_pool_must_pair_every_ipv4_subnet() {
        // A /16 of /24s has indices 1..=255; a /60 of /64s only 1..=15.
        refused(
            RunArgs {
                ipv6_network: Some("fd00::/60".into()),
                ..args()
            },
            None,
            "--ipv6-network",
            "do not pair every IPv4 subnet",
        );
        // Narrowing the IPv4 range to what the IPv6 pool pairs is accepted.
        ok(
            RunArgs {
                ipv6_network: Some("fd00::/60".into()),
                subnet_max: Some("10.244.15.0".into()),
                ..args()
            },
            None,
        );
        // A static subnet outside the IPv6 range is refused.
        refused(
            RunArgs {
                ipv6_network: Some("fd00::/56".into()),
                ipv6_subnet_max: Some("fd00:0:0:ff::".into()),
                subnet: Some("10.244.0.0/24".into()),
                ..args()
            },
            None,
            "--subnet",
            "no IPv6 subnet at its index",
        );
    }

    #[test]
    fn public_ipv6_rules() {
        let with = |ip: &str| RunArgs {
            public_ipv6: Some(ip.into()),
            ..dual()
        };
        assert_eq!(
            ok(with("2001:db8::7"), None)
                .public_ipv6
                .unwrap()
                .to_string(),
            "2001:db8::7"
        );
        refused(
            with("192.0.2.1"),
            None,
            "--public-ipv6",
            "goes in --public-ip",
        );
        refused(with("fe80::1"), None, "--public-ipv6", "link-local");
        refused(
            with("::ffff:192.0.2.1"),
            None,
            "--public-ipv6",
            "IPv4-mapped",
        );
        refused(with("::1"), None, "--public-ipv6", "loopback");
        refused(with("ff02::1"), None, "--public-ipv6", "unicast");
        refused(
            with("fd00:10:244:3::9"),
            None,
            "--public-ipv6",
            "inside the IPv6 overlay",
        );
    }

    #[test]
    fn an_ipv6_only_overlay_claims_in_a_bounded_ipv6_pool_and_takes_no_ipv4_subnet() {
        let v6_only = |extra: RunArgs| RunArgs {
            no_ipv4: true,
            ..extra
        };
        let c = ok(v6_only(dual()), None);
        assert!(!c.ipv4 && c.ipv6.is_some());
        // 2^32 candidates: refused, with the way out.
        let wide = RunArgs {
            ipv6_network: Some("fd00:10::/32".into()),
            ..dual()
        };
        refused(v6_only(wide), None, "--ipv6-network", "--ipv6-subnet-max");
        // The same network narrowed to 4,096 subnets runs.
        let narrowed = RunArgs {
            ipv6_network: Some("fd00:10::/32".into()),
            ipv6_subnet_min: Some("fd00:10:0:1::".into()),
            ipv6_subnet_max: Some("fd00:10:0:1000::".into()),
            ..dual()
        };
        assert!(ok(v6_only(narrowed), None).ipv6.is_some());
        let with_static = RunArgs {
            subnet: Some("10.244.3.0/24".into()),
            ..dual()
        };
        refused(v6_only(with_static), None, "--subnet", "IPv6-only");
    }
}
