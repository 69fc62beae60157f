//! Unit tests of configuration building: defaults, net-conf merging and every validation rule.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use super::validate::build;
use super::*;

fn args() -> RunArgs {
    RunArgs {
        node_name: Some("node-1".into()),
        insecure: true,
        ..RunArgs::default()
    }
}

#[test]
fn gossip_needs_a_key_or_insecure() {
    let mut a = args();
    a.insecure = false;
    assert_err(a, "--cluster-key-file", "no cluster key");
    let mut a = args();
    a.cluster_key_file = Some("/etc/weft/key".into());
    assert_err(a, "--insecure", "conflicts with --cluster-key-file");
    let mut a = args();
    a.insecure = false;
    a.cluster_key_file = Some("/etc/weft/key".into());
    assert_eq!(ok(a).cluster_key_file, Some(PathBuf::from("/etc/weft/key")));
}

fn ok(args: RunArgs) -> Config {
    match build(args, None, || Ok("host".into())) {
        Ok(c) => c,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn err(args: RunArgs) -> ConfigError {
    let e = build(args, None, || Ok("host".into())).expect_err("config should be rejected");
    let text = e.to_string();
    assert!(!text.contains('\n'), "error is not one line: {text}");
    assert!(
        text.contains(e.field()),
        "error {text:?} does not name {}",
        e.field()
    );
    e
}

/// Asserts the error is about `field` and mentions `needle`.
fn assert_err(args: RunArgs, field: &str, needle: &str) {
    let e = err(args);
    assert_eq!(e.field(), field, "{e}");
    assert!(
        e.to_string().contains(needle),
        "{e:?} does not contain {needle:?}: {e}"
    );
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn defaults() {
    let c = ok(args());
    assert_eq!(c.node_name, "node-1");
    assert_eq!(c.underlay, UnderlaySelect::DefaultRoute);
    assert_eq!(c.public_ip, None);
    assert_eq!(c.listen, "0.0.0.0:7947".parse::<SocketAddr>().unwrap());
    assert_eq!(c.advertise, None);
    assert!(c.seeds.is_empty());
    assert_eq!(c.network, net("10.244.0.0/16"));
    assert_eq!(c.subnet_len, 24);
    assert_eq!(c.subnet_min, ip4("10.244.1.0"));
    assert_eq!(c.subnet_max, ip4("10.244.255.0"));
    assert_eq!(c.static_subnet, None);
    assert_eq!(c.backend, Backend::Vxlan);
    assert_eq!(c.vni, 1);
    assert_eq!(c.vxlan_port, 8472);
    assert!(!c.direct_routing);
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/weft"));
    assert_eq!(c.subnet_file, PathBuf::from("/run/weft/subnet.env"));
    assert_eq!(c.bridge, None);
    assert_eq!(c.api, "127.0.0.1:7948".parse::<SocketAddr>().unwrap());
    assert_eq!(c.gossip_interval, Duration::from_secs(1));
    assert_eq!(c.settle, Duration::from_secs(10));
    assert_eq!(c.reservation, Duration::from_secs(3600));
    assert_eq!(c.dead_node_grace, Duration::from_secs(7200));
    assert_eq!(c.reconcile_interval, Duration::from_secs(10));
    assert!(!c.ip_masq);
    assert!(c.probes);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.cluster_id, "weft");
    assert!(c.insecure, "the test arguments ask for --insecure");
    assert_eq!(c.cluster_key_file, None);
    assert!(!c.dry_run);
}

#[test]
fn with_defaults_matches_run_defaults() {
    let c = Config::with_defaults("n1").unwrap();
    assert_eq!(c.node_name, "n1");
    assert_eq!(c.network, net("10.244.0.0/16"));
    assert!(Config::with_defaults("bad name").is_err());
}

#[test]
fn node_name_defaults_to_hostname() {
    let a = RunArgs {
        insecure: true,
        ..RunArgs::default()
    };
    let c = build(a.clone(), None, || Ok("my-host.example".into())).unwrap();
    assert_eq!(c.node_name, "my-host.example");
    // An empty value (`--node-name ""`) is refused, never silently the hostname.
    let a = RunArgs {
        node_name: Some(String::new()),
        insecure: true,
        ..RunArgs::default()
    };
    let e = build(a, None, || Ok("h".into())).unwrap_err();
    assert!(e.to_string().contains("empty value"), "{e}");
    // A hostname that is not a valid node name is reported as such.
    let e = build(RunArgs::default(), None, || Ok("bad host".into())).unwrap_err();
    assert!(e.to_string().contains("--node-name"), "{e}");
    // The real hostname reader works on this machine.
    assert!(
        Config::from_run_args(RunArgs {
            insecure: true,
            ..RunArgs::default()
        })
        .is_ok()
            || hostname_is_odd()
    );
}

fn hostname_is_odd() -> bool {
    nix::unistd::gethostname()
        .map(|h| {
            let h = h.to_string_lossy().into_owned();
            h.is_empty()
                || h.chars()
                    .any(|c| !(c.is_ascii_alphanumeric() || ".-_".contains(c)))
        })
        .unwrap_or(true)
}

#[test]
fn all_flags_parse() {
    let c = ok(RunArgs {
        node_name: Some("a.b_c-D9".into()),
        iface: Some("eth1".into()),
        public_ip: Some("192.0.2.10".into()),
        listen: Some("192.0.2.10:17947".into()),
        advertise: Some("198.51.100.1:7000".into()),
        seeds: vec![
            "192.0.2.11:7947".into(),
            " seed.example:7947 ".into(),
            "".into(),
            "[2001:db8::1]:7947".into(),
        ],
        network: Some("10.50.0.0/16".into()),
        subnet_len: Some("26".into()),
        subnet_min: Some("10.50.0.64".into()),
        subnet_max: Some("10.50.10.192".into()),
        subnet: Some("10.50.3.128/26".into()),
        ipv6_network: Some("fd00:50::/48".into()),
        ipv6_subnet_len: Some("64".into()),
        ipv6_subnet_min: Some("fd00:50:0:1::".into()),
        ipv6_subnet_max: Some("fd00:50:0:ff::".into()),
        no_ipv4: false,
        public_ipv6: Some("2001:db8::10".into()),
        net_conf: None,
        backend: Some("VXLAN".into()),
        vni: Some("16777215".into()),
        vxlan_port: Some("4789".into()),
        udp_port: Some("9285".into()),
        udp_encryption: Some("OFF".into()),
        direct_routing: true,
        state_dir: Some("/tmp/s".into()),
        subnet_file: Some("/tmp/s/subnet.env".into()),
        bridge: Some("cni0".into()),
        api: Some("127.0.0.1:9000".into()),
        gossip_interval: Some("200ms".into()),
        gossip_fanout: Some("3".into()),
        settle: Some("1s".into()),
        reservation: Some("10m".into()),
        dead_node_grace: Some("20m".into()),
        reconcile_interval: Some("2s".into()),
        ip_masq: true,
        no_probes: true,
        log_format: Some("JSON".into()),
        cluster_id: Some("prod-eu".into()),
        insecure: true,
        check_config: false,
        cluster_key_file: None,
        dry_run: false,
        clock_offset_ms: None,
        allow_open_key_perms: false,
        from_env: Vec::new(),
    });
    assert_eq!(c.node_name, "a.b_c-D9");
    assert_eq!(c.underlay, UnderlaySelect::Iface("eth1".into()));
    assert_eq!(c.public_ip, Some("192.0.2.10".parse().unwrap()));
    assert_eq!(c.listen, "192.0.2.10:17947".parse().unwrap());
    assert_eq!(c.advertise, Some("198.51.100.1:7000".parse().unwrap()));
    assert_eq!(
        c.seeds,
        vec!["192.0.2.11:7947", "seed.example:7947", "[2001:db8::1]:7947"]
    );
    assert_eq!(c.network, net("10.50.0.0/16"));
    assert_eq!(c.subnet_len, 26);
    assert_eq!(c.subnet_min, ip4("10.50.0.64"));
    assert_eq!(c.subnet_max, ip4("10.50.10.192"));
    assert_eq!(c.static_subnet, Some(net("10.50.3.128/26")));
    assert!(c.ipv4);
    let v6 = c.ipv6.expect("IPv6 overlay");
    assert_eq!(v6.network, "fd00:50::/48".parse().unwrap());
    assert_eq!(v6.subnet_len, 64);
    assert_eq!(
        v6.subnet_min,
        "fd00:50:0:1::".parse::<std::net::Ipv6Addr>().unwrap()
    );
    assert_eq!(
        v6.subnet_max,
        "fd00:50:0:ff::".parse::<std::net::Ipv6Addr>().unwrap()
    );
    assert_eq!(c.public_ipv6, Some("2001:db8::10".parse().unwrap()));
    assert_eq!(c.backend, Backend::Vxlan);
    assert_eq!(c.vni, 16_777_215);
    assert_eq!(c.vxlan_port, 4789);
    assert_eq!(c.udp_port, 9285);
    assert!(!c.udp_encryption, "explicit off");
    assert!(c.direct_routing);
    assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
    assert_eq!(c.subnet_file, PathBuf::from("/tmp/s/subnet.env"));
    assert_eq!(c.bridge.as_deref(), Some("cni0"));
    assert_eq!(c.api, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.gossip_interval, Duration::from_millis(200));
    assert_eq!(c.settle, Duration::from_secs(1));
    assert_eq!(c.reservation, Duration::from_secs(600));
    assert_eq!(c.dead_node_grace, Duration::from_secs(1200));
    assert_eq!(c.reconcile_interval, Duration::from_secs(2));
    assert!(c.ip_masq);
    assert!(!c.probes);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.cluster_id, "prod-eu");
    assert!(c.insecure);
}

#[test]
fn iface_by_address() {
    let c = ok(RunArgs {
        iface: Some("192.0.2.7".into()),
        ..args()
    });
    assert_eq!(
        c.underlay,
        UnderlaySelect::Addr("192.0.2.7".parse().unwrap())
    );
    assert_err(
        RunArgs {
            iface: Some("0.0.0.0".into()),
            ..args()
        },
        "--iface",
        "unicast",
    );
    assert_err(
        RunArgs {
            iface: Some("a-very-long-interface".into()),
            ..args()
        },
        "--iface",
        "15",
    );
    assert_err(
        RunArgs {
            iface: Some("eth/0".into()),
            ..args()
        },
        "--iface",
        "'/'",
    );
}

#[test]
fn network_rules() {
    let bad = |v: &str, needle: &str| {
        assert_err(
            RunArgs {
                network: Some(v.into()),
                ..args()
            },
            "--network",
            needle,
        )
    };
    bad("10.0.0.0/33", "larger than 32");
    bad("10.0.0.0", "ADDR/LEN");
    bad("10.0.0/16", "invalid");
    bad("10.0.0.0/x", "invalid digit");
    bad("10.244.1.0/16", "did you mean 10.244.0.0/16");
    bad("fd00::/64", "IPv6");
    let e = err(RunArgs {
        network: Some("10.0.0.0/33".into()),
        ..args()
    });
    assert_eq!(
        e.to_string(),
        "invalid --network \"10.0.0.0/33\": prefix length 33 is larger than 32"
    );
}

#[test]
fn subnet_len_rules() {
    let bad = |len: &str, network: &str| {
        assert_err(
            RunArgs {
                subnet_len: Some(len.into()),
                network: Some(network.into()),
                ..args()
            },
            "--subnet-len",
            len,
        )
    };
    bad("16", "10.244.0.0/16");
    bad("8", "10.244.0.0/16");
    bad("31", "10.244.0.0/16");
    bad("x", "10.244.0.0/16");
    bad("300", "10.244.0.0/16");
    let c = ok(RunArgs {
        subnet_len: Some("30".into()),
        ..args()
    });
    assert_eq!(c.subnet_min, ip4("10.244.0.4"));
    assert_eq!(c.subnet_max, ip4("10.244.255.252"));
    let c = ok(RunArgs {
        subnet_len: Some("17".into()),
        ..args()
    });
    assert_eq!(c.subnet_min, ip4("10.244.128.0"));
    assert_eq!(c.subnet_max, ip4("10.244.128.0"));
}

#[test]
fn subnet_min_max_rules() {
    let with = |min: Option<&str>, max: Option<&str>| RunArgs {
        subnet_min: min.map(Into::into),
        subnet_max: max.map(Into::into),
        ..args()
    };
    let c = ok(with(Some("10.244.0.0"), Some("10.244.9.0")));
    assert_eq!(
        (c.subnet_min, c.subnet_max),
        (ip4("10.244.0.0"), ip4("10.244.9.0"))
    );
    let c = ok(with(Some("10.244.9.0"), Some("10.244.9.0")));
    assert_eq!(c.subnet_min, c.subnet_max);
    assert_err(
        with(Some("10.244.10.0"), Some("10.244.9.0")),
        "--subnet-min",
        "larger than",
    );
    assert_err(
        with(Some("10.245.1.0"), None),
        "--subnet-min",
        "outside the network",
    );
    assert_err(
        with(None, Some("10.243.1.0")),
        "--subnet-max",
        "outside the network",
    );
    assert_err(
        with(Some("10.244.1.5"), None),
        "--subnet-min",
        "did you mean 10.244.1.0",
    );
    assert_err(
        with(None, Some("10.244.1.128")),
        "--subnet-max",
        "not the start",
    );
    assert_err(with(Some("banana"), None), "--subnet-min", "invalid");
    // Only the first subnet as maximum: the default minimum (the second) is above it.
    assert_err(
        with(None, Some("10.244.0.0")),
        "--subnet-max",
        "default subnet minimum",
    );
}

#[test]
fn static_subnet_rules() {
    let with = |s: &str| RunArgs {
        subnet: Some(s.into()),
        ..args()
    };
    assert_eq!(
        ok(with("10.244.7.0/24")).static_subnet,
        Some(net("10.244.7.0/24"))
    );
    // The first subnet may be claimed statically.
    assert_eq!(
        ok(with("10.244.0.0/24")).static_subnet,
        Some(net("10.244.0.0/24"))
    );
    assert_err(
        with("10.244.7.0/25"),
        "--subnet",
        "differs from the subnet length /24",
    );
    assert_err(with("10.245.7.0/24"), "--subnet", "outside the network");
    assert_err(with("10.244.7.1/24"), "--subnet", "host bits");
    assert_err(with("10.244.7.0"), "--subnet", "ADDR/LEN");
}

#[test]
fn backend_rules() {
    let with = |b: &str| RunArgs {
        backend: Some(b.into()),
        ..args()
    };
    assert_eq!(ok(with("vxlan")).backend, Backend::Vxlan);
    assert_eq!(ok(with("host-gw")).backend, Backend::HostGw);
    assert_eq!(ok(with("HOST-GW")).backend, Backend::HostGw);
    let udp = ok(with("udp"));
    assert_eq!(udp.backend, Backend::Udp);
    assert_eq!(udp.udp_port, 8285);
    assert!(!udp.udp_encryption, "off by default with --insecure");
    let bad = |v: &str| RunArgs {
        udp_encryption: Some(v.into()),
        ..with("udp")
    };
    assert!(!ok(bad("off")).udp_encryption);
    assert_err(bad("maybe"), "--udp-encryption", "on or off");
    let port0 = RunArgs {
        udp_port: Some("0".into()),
        ..with("udp")
    };
    assert_err(port0, "--udp-port", "from 1 to 65535");
    assert_err(with("ipsec"), "--backend", "unknown backend");
}

#[test]
fn vni_and_port_rules() {
    assert_eq!(
        ok(RunArgs {
            vni: Some("1".into()),
            ..args()
        })
        .vni,
        1
    );
    assert_err(
        RunArgs {
            vni: Some("0".into()),
            ..args()
        },
        "--vni",
        "from 1 to 16777215",
    );
    assert_err(
        RunArgs {
            vni: Some("16777216".into()),
            ..args()
        },
        "--vni",
        "from 1 to 16777215",
    );
    assert_err(
        RunArgs {
            vni: Some("-1".into()),
            ..args()
        },
        "--vni",
        "from 1 to 16777215",
    );
    assert_err(
        RunArgs {
            vxlan_port: Some("0".into()),
            ..args()
        },
        "--vxlan-port",
        "from 1 to 65535",
    );
    assert_err(
        RunArgs {
            vxlan_port: Some("65536".into()),
            ..args()
        },
        "--vxlan-port",
        "from 1 to 65535",
    );
}

#[test]
fn node_name_rules() {
    let with = |n: String| RunArgs {
        node_name: Some(n),
        insecure: true,
        ..RunArgs::default()
    };
    assert_eq!(ok(with("x".repeat(253))).node_name.len(), 253);
    assert_err(with("x".repeat(254)), "--node-name", "1 to 253");
    assert_err(with("node 1".into()), "--node-name", "' '");
    assert_err(with("nöde".into()), "--node-name", "'ö'");
    assert_err(with("a/b".into()), "--node-name", "'/'");
}

#[test]
fn gossip_fanout_is_one_to_three() {
    assert_eq!(ok(args()).gossip_fanout, 2);
    for bad in ["0", "4"] {
        assert_err(
            RunArgs {
                gossip_fanout: Some(bad.into()),
                ..args()
            },
            "--gossip-fanout",
            "from 1 to 3",
        );
    }
}

#[test]
fn timing_rules() {
    let c = ok(RunArgs {
        gossip_interval: Some("10ms".into()),
        ..args()
    });
    assert_eq!(c.gossip_interval, Duration::from_millis(10));
    assert_err(
        RunArgs {
            gossip_interval: Some("9ms".into()),
            ..args()
        },
        "--gossip-interval",
        "at least 10ms",
    );
    assert_err(
        RunArgs {
            gossip_interval: Some("1".into()),
            ..args()
        },
        "--gossip-interval",
        "missing unit",
    );
    // Settle: 10 gossip intervals, at least 5 s.
    assert_eq!(
        ok(RunArgs {
            gossip_interval: Some("200ms".into()),
            ..args()
        })
        .settle,
        Duration::from_secs(5)
    );
    assert_eq!(
        ok(RunArgs {
            gossip_interval: Some("2s".into()),
            ..args()
        })
        .settle,
        Duration::from_secs(20)
    );
    assert_err(
        RunArgs {
            settle: Some("0s".into()),
            ..args()
        },
        "--settle",
        "at least 1s",
    );
    assert_err(
        RunArgs {
            settle: Some("soon".into()),
            ..args()
        },
        "--settle",
        "expected a number",
    );
    // Reservation at most half the dead-node grace period.
    let c = ok(RunArgs {
        reservation: Some("30m".into()),
        dead_node_grace: Some("1h".into()),
        ..args()
    });
    assert_eq!(c.reservation, Duration::from_secs(1800));
    assert_err(
        RunArgs {
            reservation: Some("31m".into()),
            dead_node_grace: Some("1h".into()),
            ..args()
        },
        "--reservation",
        "at most half of --dead-node-grace (1h)",
    );
    assert_err(
        RunArgs {
            reservation: Some("2h".into()),
            ..args()
        },
        "--reservation",
        "half",
    );
    assert_err(
        RunArgs {
            reconcile_interval: Some("0s".into()),
            ..args()
        },
        "--reconcile-interval",
        "at least",
    );
    assert_err(
        RunArgs {
            dead_node_grace: Some("0s".into()),
            ..args()
        },
        "--dead-node-grace",
        "at least",
    );
}

#[test]
fn address_rules() {
    assert_err(
        RunArgs {
            listen: Some("0.0.0.0".into()),
            ..args()
        },
        "--listen",
        "invalid",
    );
    assert_err(
        RunArgs {
            api: Some("localhost:7948".into()),
            ..args()
        },
        "--api",
        "invalid",
    );
    assert_err(
        RunArgs {
            advertise: Some("0.0.0.0:7947".into()),
            ..args()
        },
        "--advertise",
        "unicast",
    );
    assert_err(
        RunArgs {
            advertise: Some("192.0.2.1:0".into()),
            ..args()
        },
        "--advertise",
        "non-zero port",
    );
    assert_err(
        RunArgs {
            public_ip: Some("224.0.0.1".into()),
            ..args()
        },
        "--public-ip",
        "unicast",
    );
    assert_err(
        RunArgs {
            public_ip: Some("host".into()),
            ..args()
        },
        "--public-ip",
        "invalid",
    );
    for bad in [
        "nohost",
        "host:",
        ":7947",
        "host:0",
        "1.2.3.4:0",
        "host:99999",
        "ho st:1",
        "[::1:7947",
    ] {
        assert_err(
            RunArgs {
                seeds: vec![bad.into()],
                ..args()
            },
            "--seeds",
            bad,
        );
    }
}

#[test]
fn misc_rules() {
    assert_err(
        RunArgs {
            log_format: Some("xml".into()),
            ..args()
        },
        "--log-format",
        "text or json",
    );
    assert_err(
        RunArgs {
            cluster_id: Some("a b".into()),
            ..args()
        },
        "--cluster-id",
        "not allowed",
    );
    assert_err(
        RunArgs {
            bridge: Some("br/0".into()),
            ..args()
        },
        "--bridge",
        "'/'",
    );
    assert_err(
        RunArgs {
            subnet_file: Some("/".into()),
            ..args()
        },
        "--subnet-file",
        "not a file",
    );
}

#[test]
fn underlay_overlap() {
    let network = net("10.244.0.0/16");
    assert!(check_underlay_overlap(network, IpAddr::V4(ip4("10.243.255.255"))).is_ok());
    assert!(check_underlay_overlap(network, IpAddr::V4(ip4("10.245.0.0"))).is_ok());
    assert!(check_underlay_overlap(network, "2001:db8::1".parse().unwrap()).is_ok());
    let e = check_underlay_overlap(network, IpAddr::V4(ip4("10.244.3.4"))).unwrap_err();
    assert_eq!(e.field(), "--network");
    assert!(e.to_string().contains("underlay address 10.244.3.4"), "{e}");
    // Addresses known from flags are checked at once.
    assert_err(
        RunArgs {
            public_ip: Some("10.244.0.9".into()),
            ..args()
        },
        "--network",
        "10.244.0.9",
    );
    assert_err(
        RunArgs {
            iface: Some("10.244.0.9".into()),
            ..args()
        },
        "--network",
        "10.244.0.9",
    );
    assert_err(
        RunArgs {
            advertise: Some("10.244.0.9:7947".into()),
            ..args()
        },
        "--network",
        "10.244.0.9",
    );
}

fn write_conf(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn with_conf(path: &Path) -> RunArgs {
    RunArgs {
        net_conf: Some(path.to_path_buf()),
        ..args()
    }
}

#[test]
fn net_conf_sets_values() {
    let f = write_conf(
        r#"{"Network": "10.9.0.0/16", "SubnetLen": 26, "SubnetMin": "10.9.1.0", "SubnetMax": "10.9.2.0",
            "Backend": {"Type": "vxlan", "VNI": 7, "Port": 4789, "DirectRouting": true}}"#,
    );
    let c = Config::from_run_args(with_conf(f.path())).unwrap();
    assert_eq!(c.network, net("10.9.0.0/16"));
    assert_eq!(c.subnet_len, 26);
    assert_eq!(c.subnet_min, ip4("10.9.1.0"));
    assert_eq!(c.subnet_max, ip4("10.9.2.0"));
    assert_eq!(c.vni, 7);
    assert_eq!(c.vxlan_port, 4789);
    assert!(c.direct_routing);
}

#[test]
fn net_conf_partial_uses_flannel_defaults() {
    let f = write_conf(r#"{"Network": "10.9.0.0/16", "SubnetLen": 20}"#);
    let c = Config::from_run_args(with_conf(f.path())).unwrap();
    assert_eq!(c.network, net("10.9.0.0/16"));
    assert_eq!(c.subnet_min, ip4("10.9.16.0"));
    assert_eq!(c.subnet_max, ip4("10.9.240.0"));
    assert_eq!(c.backend, Backend::Vxlan);
    assert_eq!(c.vni, 1);
    assert_eq!(c.vxlan_port, 8472);
    assert!(!c.direct_routing);
}

#[test]
fn flags_override_net_conf() {
    let f = write_conf(
        r#"{"Network": "10.9.0.0/16", "SubnetLen": 26, "Backend": {"Type": "vxlan", "VNI": 7, "Port": 4789}}"#,
    );
    let c = Config::from_run_args(RunArgs {
        network: Some("10.8.0.0/16".into()),
        subnet_len: Some("24".into()),
        vni: Some("9".into()),
        vxlan_port: Some("8000".into()),
        direct_routing: true,
        ..with_conf(f.path())
    })
    .unwrap();
    assert_eq!(c.network, net("10.8.0.0/16"));
    assert_eq!(c.subnet_len, 24);
    assert_eq!(c.subnet_min, ip4("10.8.1.0"));
    assert_eq!(c.vni, 9);
    assert_eq!(c.vxlan_port, 8000);
    assert!(c.direct_routing);
}

#[test]
fn net_conf_errors_name_file_and_key() {
    let f = write_conf(r#"{"Network": "10.9.0.0/33"}"#);
    let path = f.path().display().to_string();
    let e = Config::from_run_args(with_conf(f.path())).unwrap_err();
    assert_eq!(e.field(), format!("Network in net-conf {path:?}"));
    assert_eq!(
        e.to_string(),
        format!(
            "invalid Network in net-conf {path:?} \"10.9.0.0/33\": prefix length 33 is larger than 32"
        )
    );
    // flannel's udp backend takes its port from Backend.Port.
    let f = write_conf(r#"{"Network": "10.9.0.0/16", "Backend": {"Type": "udp", "Port": 9000}}"#);
    let c = Config::from_run_args(with_conf(f.path())).unwrap();
    assert_eq!((c.backend, c.udp_port), (Backend::Udp, 9000));
    let f = write_conf(r#"{"Network": "10.9.0.0/16", "Backend": {"Type": "udp", "Port": 0}}"#);
    let e = Config::from_run_args(with_conf(f.path())).unwrap_err();
    assert!(e.field().starts_with("Backend.Port in net-conf"), "{e}");
    let f = write_conf(r#"{"Network": "10.9.0.0/16", "Backend": {"VNI": 0}}"#);
    let e = Config::from_run_args(with_conf(f.path())).unwrap_err();
    assert!(e.field().starts_with("Backend.VNI in net-conf"), "{e}");
    let f = write_conf(r#"{"Network": "10.9.0.0/16", "SubnetLen": 300}"#);
    let e = Config::from_run_args(with_conf(f.path())).unwrap_err();
    assert!(e.field().starts_with("SubnetLen in net-conf"), "{e}");
}

#[test]
fn net_conf_unreadable_or_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let e = Config::from_run_args(with_conf(&missing)).unwrap_err();
    assert!(matches!(e, ConfigError::NetConfRead { .. }), "{e:?}");
    assert!(e.to_string().starts_with("cannot read --net-conf"), "{e}");
    assert!(!e.to_string().contains('\n'));
    let f = write_conf("{not json");
    let e = Config::from_run_args(with_conf(f.path())).unwrap_err();
    assert!(matches!(e, ConfigError::NetConfSyntax { .. }), "{e:?}");
    assert_eq!(e.field(), "--net-conf");
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn empty_values_are_refused_not_defaulted() {
    let cases: [(RunArgs, &str); 6] = [
        (
            RunArgs {
                network: Some(String::new()),
                ..args()
            },
            "--network",
        ),
        (
            RunArgs {
                backend: Some(" ".into()),
                ..args()
            },
            "--backend",
        ),
        (
            RunArgs {
                listen: Some(String::new()),
                ..args()
            },
            "--listen",
        ),
        (
            RunArgs {
                state_dir: Some(PathBuf::new()),
                ..args()
            },
            "--state-dir",
        ),
        (
            RunArgs {
                subnet_file: Some(PathBuf::new()),
                ..args()
            },
            "--subnet-file",
        ),
        (
            RunArgs {
                settle: Some(String::new()),
                ..args()
            },
            "--settle",
        ),
    ];
    for (a, field) in cases {
        assert_err(a, field, "empty value");
    }
}

#[test]
fn errors_name_the_variable_that_was_set() {
    let a = RunArgs {
        network: Some("10.0.0.0/33".into()),
        from_env: vec!["network".into()],
        ..args()
    };
    assert_err(a, "WEFT_NETWORK", "larger than 32");
    let a = RunArgs {
        gossip_interval: Some("2h".into()),
        from_env: vec!["gossip-interval".into()],
        ..args()
    };
    assert_err(a, "WEFT_GOSSIP_INTERVAL", "at most 1m");
}

#[test]
fn overlay_networks_that_cannot_work() {
    for (network, needle) in [
        ("127.0.0.0/16", "loopback"),
        ("224.0.0.0/16", "multicast"),
        ("169.254.0.0/16", "link-local"),
        ("0.0.0.0/8", "this"),
        ("0.0.0.0/0", "this"),
        ("240.0.0.0/8", "reserved"),
    ] {
        assert_err(
            RunArgs {
                network: Some(network.into()),
                ..args()
            },
            "--network",
            needle,
        );
    }
    assert_err(
        RunArgs {
            network: Some("10.0.0.0/24".into()),
            ..args()
        },
        "--network",
        "too small: a /24 network holds no /24 node subnet",
    );
    assert_err(
        RunArgs {
            network: Some("10.0.0.0/24".into()),
            subnet_len: Some("20".into()),
            ..args()
        },
        "--subnet-len",
        "does not fit",
    );
}

#[test]
fn seeds_listen_and_addresses() {
    let seeds = |s: &[&str]| RunArgs {
        seeds: s.iter().map(|s| s.to_string()).collect(),
        ..args()
    };
    assert_err(seeds(&["", ""]), "--seeds", "no seed left");
    assert_err(seeds(&["a:1", "a:1"]), "--seeds", "listed twice");
    assert_err(seeds(&["0.0.0.0:7947"]), "--seeds", "unspecified");
    assert_err(seeds(&["224.0.0.1:7947"]), "--seeds", "unicast");
    assert_err(
        RunArgs {
            listen: Some("0.0.0.0:0".into()),
            ..args()
        },
        "--listen",
        "port 0",
    );
    assert_err(
        RunArgs {
            api: Some("127.0.0.1:0".into()),
            ..args()
        },
        "--api",
        "port 0",
    );
    assert_err(
        RunArgs {
            public_ip: Some("255.255.255.255".into()),
            ..args()
        },
        "--public-ip",
        "broadcast",
    );
    assert_err(
        RunArgs {
            public_ip: Some("127.0.0.1".into()),
            ..args()
        },
        "--public-ip",
        "loopback",
    );
    // A --dry-run mesh on one machine's loopback keeps working.
    let c = ok(RunArgs {
        public_ip: Some("127.0.0.1".into()),
        dry_run: true,
        ..args()
    });
    assert_eq!(c.public_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
}

#[test]
fn duration_bounds_name_the_right_flag() {
    let bad = |a: RunArgs, field: &str, needle: &str| assert_err(a, field, needle);
    bad(
        RunArgs {
            reservation: Some("0s".into()),
            ..args()
        },
        "--reservation",
        "at least",
    );
    bad(
        RunArgs {
            gossip_interval: Some("3h".into()),
            ..args()
        },
        "--gossip-interval",
        "at most 1m",
    );
    bad(
        RunArgs {
            dead_node_grace: Some("100d".into()),
            ..args()
        },
        "--dead-node-grace",
        "at most 7d",
    );
    bad(
        RunArgs {
            reconcile_interval: Some("30d".into()),
            ..args()
        },
        "--reconcile-interval",
        "at most 1d",
    );
    bad(
        RunArgs {
            settle: Some("2d".into()),
            ..args()
        },
        "--settle",
        "at most 1d",
    );
}

#[test]
fn encryption_needs_a_key() {
    assert_err(
        RunArgs {
            backend: Some("udp".into()),
            udp_encryption: Some("on".into()),
            ..args()
        },
        "--udp-encryption",
        "conflicts with --insecure",
    );
}

#[test]
fn net_conf_typos_duplicates_and_missing_network() {
    for (text, field, needle) in [
        (
            r#"{"Network": "10.9.0.0/16", "SubnetLength": 26}"#,
            "SubnetLength",
            "did you mean SubnetLen?",
        ),
        (
            r#"{"Network": "10.9.0.0/16", "Backend": {"VNII": 2}}"#,
            "Backend.VNII",
            "did you mean VNI?",
        ),
        (
            r#"{"Network": "10.9.0.0/16", "Network": "10.8.0.0/16"}"#,
            "Network",
            "duplicate key",
        ),
        (r#"{"SubnetLen": 26}"#, "Network", "missing"),
        (
            r#"{"Network": "10.9.0.0/16", "EnableIPv6": true}"#,
            "EnableIPv6",
            "no IPv6Network",
        ),
    ] {
        let f = write_conf(text);
        let e = Config::from_run_args(with_conf(f.path())).unwrap_err();
        let path = f.path().display().to_string();
        assert_eq!(
            e.field(),
            format!("{field} in net-conf {path:?}"),
            "{text}: {e}"
        );
        assert!(e.to_string().contains(needle), "{text}: {e}");
        assert!(!e.to_string().contains('\n'));
    }
    // flannel's own defaults for keys weft does not implement are accepted.
    let f = write_conf(
        r#"{"Network": "10.9.0.0/16", "EnableIPv4": true, "EnableIPv6": false, "Backend": {"Type": "vxlan", "GBP": false}}"#,
    );
    Config::from_run_args(with_conf(f.path())).unwrap();
    // Only a regular file of sane size is read.
    let e = Config::from_run_args(with_conf(Path::new("/dev/zero"))).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let big = write_conf(&" ".repeat(70_000));
    let e = Config::from_run_args(with_conf(big.path())).unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
}
