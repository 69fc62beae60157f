//! L3: real `weft` processes in network namespaces (testnet/netns.sh), one test per backend:
//! host-gw, vxlan, and vxlan with DirectRouting; vxlan, host-gw and udp dual-stack; and each of
//! them IPv6-only over an IPv6-only underlay (where the path probes, over IPv6, must find every
//! pair `ok`). Three hosts each; every container pings every other across hosts (over IPv4, and IPv6 when dual-stack), a
//! 20 MB TCP stream container → container arrives intact (SHA-256), and a don't-fragment ping of
//! exactly the advertised MTU (FLANNEL_MTU) passes while one byte more fails, in each family. A
//! host-gw peer that is not on-link is not programmed and `weft status` says why.
//!
//! The TCP ends are this test binary itself, re-run inside a container namespace
//! (`common/transfer.rs`), so no extra tool is needed.

#[path = "common/testnet.rs"]
mod testnet;
#[path = "common/transfer.rs"]
mod transfer;

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use testnet::{Testnet, l3_available};

const HOSTS: usize = 3;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mtu_of(net: &Testnet, i: usize) -> u32 {
    net.subnet_env(i, "FLANNEL_MTU")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("h{i}: no FLANNEL_MTU"))
}

/// Waits until host I holds `count` weft routes; returns them.
fn wait_routes(net: &Testnet, i: usize, count: usize) -> Vec<String> {
    if net
        .wait_for(Duration::from_secs(60), || {
            net.weft_routes(i).len() == count
        })
        .is_none()
    {
        net.dump_logs();
        panic!(
            "h{i}: expected {count} weft routes, have {:?}",
            net.weft_routes(i)
        );
    }
    net.weft_routes(i)
}

/// Every container pings every other (retrying while routes arrive).
fn ping_all(net: &Testnet) {
    for i in 1..=HOSTS {
        for j in (1..=HOSTS).filter(|j| *j != i) {
            assert!(
                net.ping_eventually(i, j, Duration::from_secs(20)).is_some(),
                "c{i} cannot ping c{j}"
            );
        }
    }
}

/// The address family a check runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn container_ip(self, net: &Testnet, i: usize) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(net.container_ip(i).parse().expect("container IP")),
            Family::V6 => IpAddr::V6(net.container_ip6(i).parse().expect("container IPv6")),
        }
    }

    /// IP + ICMP header bytes in front of a ping's payload.
    fn ping_headers(self) -> u32 {
        match self {
            Family::V4 => 28,
            Family::V6 => 48,
        }
    }
}

/// A don't-fragment ping of `size` ICMP payload bytes from container I to container J.
fn df_ping(net: &Testnet, family: Family, i: usize, j: usize, size: u32) -> Output {
    let dst = family.container_ip(net, j).to_string();
    net.exec(
        &format!("c{i}"),
        &[
            "ping",
            "-n",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            &size.to_string(),
            &dst,
        ],
    )
}

/// The advertised MTU fits exactly: a DF packet of FLANNEL_MTU bytes goes through, one byte more
/// is refused as too big.
fn check_mtu(net: &Testnet, family: Family, i: usize, j: usize) {
    let mtu = mtu_of(net, i);
    let fits = df_ping(net, family, i, j, mtu - family.ping_headers());
    assert!(
        fits.status.success(),
        "c{i} → c{j} ({family:?}): DF ping of the advertised MTU {mtu} failed: {}",
        text(&fits)
    );
    let too_big = df_ping(net, family, i, j, mtu - family.ping_headers() + 1);
    let out = text(&too_big).to_lowercase();
    assert!(
        !too_big.status.success()
            && (out.contains("message too long") || out.contains("frag needed")),
        "c{i} → c{j} ({family:?}): DF ping of MTU {mtu} + 1 did not fail as too big: {out}"
    );
}

/// Streams 20 MB from container I to container J and compares SHA-256 of both ends.
fn transfer(net: &Testnet, family: Family, i: usize, j: usize) {
    if let Err(e) = transfer::stream(
        net,
        family.container_ip(net, j),
        i,
        j,
        Duration::from_secs(120),
    ) {
        panic!("{e}");
    }
}

/// Not a test by itself: the TCP ends of `transfer` (see `transfer::helper_main`).
#[test]
fn helper_tcp_end() {
    transfer::helper_main();
}

/// Pings, 20 MB transfers and the MTU check across every backend test.
fn exercise(net: &Testnet) {
    ping_all(net);
    transfer(net, Family::V4, 1, 2);
    transfer(net, Family::V4, 3, 1);
    check_mtu(net, Family::V4, 1, 2);
    check_mtu(net, Family::V4, 2, 3);
}

/// The same over IPv6 in a dual-stack testnet: every container pings every other with
/// `ping -6`, a 20 MB stream over IPv6, the DF ping at the IPv6 MTU.
fn exercise_ipv6(net: &Testnet) {
    for i in 1..=HOSTS {
        for j in (1..=HOSTS).filter(|j| *j != i) {
            assert!(
                net.ping6_eventually(i, j, Duration::from_secs(20))
                    .is_some(),
                "c{i} cannot ping -6 c{j}"
            );
        }
    }
    transfer(net, Family::V6, 2, 3);
    check_mtu(net, Family::V6, 3, 1);
}

/// Waits until host I has `routes` IPv6 routes of weft's, each containing `expect`.
fn wait_routes6(net: &Testnet, i: usize, routes: usize, expect: &str) {
    if net
        .wait_for(Duration::from_secs(30), || {
            net.weft_routes6(i).len() == routes
        })
        .is_none()
    {
        net.dump_logs();
        panic!("h{i}: IPv6 routes {:?}", net.weft_routes6(i));
    }
    let routes6 = net.weft_routes6(i);
    assert!(
        routes6.iter().all(|r| r.contains(expect)),
        "h{i}: {routes6:?}"
    );
}

/// A dual-stack testnet: each host's IPv6 subnet is paired with its IPv4 one, weft programs
/// both families (`routes` weft routes per family, `expect_v6_route` on every IPv6 one), and
/// subnet.env carries both.
fn dual_stack(tag: &str, backend: &str, routes: usize, expect_v6_route: &str) {
    dual_stack_on(
        Testnet::new(tag).with_env("WEFT_BACKEND", backend),
        routes,
        expect_v6_route,
        |_| {},
    );
}

/// [`dual_stack`] on a testnet set up by the caller, with `check` run once it converged.
fn dual_stack_on(net: Testnet, routes: usize, expect_v6_route: &str, check: impl Fn(&Testnet)) {
    let net = net.with_env("WEFT_IPV6_NETWORK", "fd00:10:244::/56");
    net.up_and_ready(HOSTS);
    for i in 1..=HOSTS {
        wait_routes(&net, i, routes);
        wait_routes6(&net, i, routes, expect_v6_route);
        let v4 = net.subnet(i);
        let v6 = net.subnet_env(i, "FLANNEL_IPV6_SUBNET").unwrap();
        assert_eq!(
            v6,
            format!("fd00:10:244:{:x}::1/64", v4.network().octets()[2]),
            "h{i}: the IPv6 subnet is paired with {v4}"
        );
        assert_eq!(
            net.subnet_env(i, "FLANNEL_IPV6_NETWORK").as_deref(),
            Some("fd00:10:244::/56")
        );
        assert_eq!(
            net.status_json(i)["ipv6_subnet"],
            format!("fd00:10:244:{:x}::/64", v4.network().octets()[2])
        );
        let metrics = net.metrics(i);
        for (family, subnet) in [
            ("ipv4", v4.to_string()),
            (
                "ipv6",
                format!("fd00:10:244:{:x}::/64", v4.network().octets()[2]),
            ),
        ] {
            let row = format!("weft_subnet_info{{family=\"{family}\",subnet=\"{subnet}\"}} 1");
            assert!(metrics.contains(&row), "h{i}: /metrics lacks {row}");
        }
    }
    check(&net);
    exercise(&net);
    exercise_ipv6(&net);
}

#[test]
fn vxlan_dual_stack_three_hosts() {
    if !l3_available("vxlan_dual_stack_three_hosts") {
        return;
    }
    dual_stack("l3vx6", "vxlan", 2, "dev weft.1");
}

#[test]
fn host_gw_dual_stack_three_hosts() {
    if !l3_available("host_gw_dual_stack_three_hosts") {
        return;
    }
    // IPv6 routes go via the peers' IPv6 underlay addresses (found on veth-ul).
    dual_stack("l3hg6", "host-gw", 2, "via fd7e:31:250::");
}

#[test]
fn vxlan_direct_routing_dual_stack_three_hosts() {
    if !l3_available("vxlan_direct_routing_dual_stack_three_hosts") {
        return;
    }
    // On-link peers get plain routes in both families: IPv6 via their IPv6 underlay addresses.
    let net = Testnet::new("l3dr6")
        .with_env("WEFT_BACKEND", "vxlan")
        .with_env("WEFT_DIRECT_ROUTING", "1");
    dual_stack_on(net, 2, "via fd7e:31:250::", |net| {
        for i in 1..=HOSTS {
            let routes = net.weft_routes(i);
            assert!(
                routes.iter().all(|r| r.contains("via 172.31.250.")),
                "h{i}: IPv4 routes via the peers' underlay: {routes:?}"
            );
        }
    });
}

#[test]
fn vxlan_dual_stack_over_an_ipv6_underlay() {
    if !l3_available("vxlan_dual_stack_over_an_ipv6_underlay") {
        return;
    }
    // Gossip, VXLAN and FDB entries on the hosts' IPv6 underlay: the overhead is 70 bytes.
    let net = Testnet::new("l3u6")
        .with_env("WEFT_BACKEND", "vxlan")
        .with_env("WEFT_TESTNET_UNDERLAY6", "1");
    let check = |net: &Testnet| {
        let fdb = net.exec("h1", &["bridge", "fdb", "show", "dev", "weft.1"]);
        let fdb = String::from_utf8_lossy(&fdb.stdout).into_owned();
        assert!(
            fdb.lines()
                .filter(|l| l.contains("self"))
                .all(|l| l.contains("dst fd7e:31:250::")),
            "FDB entries point at the peers' IPv6 underlay addresses: {fdb}"
        );
        assert_eq!(mtu_of(net, 1), 1430, "1500 - 70 over an IPv6 underlay");
    };
    dual_stack_on(net, 2, "dev weft.1", check);
}

/// An IPv6-only overlay over an IPv6-only underlay (the hosts have no IPv4 underlay address
/// or route): each host gets an IPv6 subnet and no IPv4 one, weft programs `routes` IPv6 routes
/// (each with `expect_route`) and no IPv4 route, subnet.env and the status carry no IPv4
/// subnet, and the containers reach each other over IPv6 (pings, 20 MB, the DF ping).
fn ipv6_only(
    tag: &str,
    backend: &str,
    routes: usize,
    expect_route: &str,
    check: impl Fn(&Testnet),
) {
    let net = Testnet::new(tag)
        .with_env("WEFT_BACKEND", backend)
        .with_env("WEFT_TESTNET_UNDERLAY6", "only")
        .with_env("WEFT_NO_IPV4", "1")
        .with_env("WEFT_IPV6_NETWORK", "fd00:10:244::/56");
    net.up_and_ready(HOSTS);
    for i in 1..=HOSTS {
        let host = format!("h{i}");
        let v4 = net.ip(&host, &["-4", "addr", "show", "dev", "veth-ul"]);
        assert!(!v4.contains("inet "), "h{i}: an IPv6-only underlay: {v4}");
        wait_routes6(&net, i, routes, expect_route);
        assert_eq!(
            net.weft_routes(i),
            Vec::<String>::new(),
            "h{i}: no IPv4 route"
        );
        assert_eq!(net.subnet_env(i, "FLANNEL_SUBNET"), None, "h{i}");
        assert_eq!(net.subnet_env(i, "FLANNEL_NETWORK"), None, "h{i}");
        let v6 = net.subnet_env(i, "FLANNEL_IPV6_SUBNET").unwrap();
        let status = net.status_json(i);
        assert_eq!(status["subnet"], serde_json::Value::Null, "h{i}");
        assert_eq!(
            status["ipv6_subnet"],
            v6.replace("::1/64", "::/64"),
            "h{i}: the status shows subnet.env's IPv6 subnet"
        );
        assert_eq!(status["network"], "fd00:10:244::/56", "h{i}");
        let metrics = net.metrics(i);
        assert!(
            metrics.contains(&format!(
                "weft_subnet_info{{family=\"ipv6\",subnet=\"{}\"}} 1",
                v6.replace("::1/64", "::/64")
            )) && !metrics.contains("family=\"ipv4\""),
            "h{i}: /metrics shows the IPv6 subnet alone"
        );
        let cni0 = net.ip(&host, &["-4", "addr", "show", "dev", "cni0"]);
        assert!(
            !cni0.contains("inet "),
            "h{i}: no IPv4 on the bridge: {cni0}"
        );
    }
    check(&net);
    exercise_ipv6(&net);
    wait_paths_ok(&net);
}

/// Every host's path probes (over the IPv6 overlay here) find every peer `ok`.
fn wait_paths_ok(net: &Testnet) {
    let all_ok = |i: usize| {
        let status = net.status_json(i);
        status["nodes"].as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .filter(|n| n["is_self"] != true)
                .all(|n| n["path"]["state"] == "ok")
        })
    };
    let ok = net.wait_for(Duration::from_secs(45), || (1..=HOSTS).all(all_ok));
    if ok.is_none() {
        net.dump_logs();
        panic!(
            "paths not all ok: {:?}",
            (1..=HOSTS)
                .map(|i| net.status_json(i)["nodes"].clone())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn vxlan_ipv6_only_over_an_ipv6_only_underlay() {
    if !l3_available("vxlan_ipv6_only_over_an_ipv6_only_underlay") {
        return;
    }
    ipv6_only("l3v6o", "vxlan", 2, "dev weft.1", |net| {
        let fdb = net.exec("h1", &["bridge", "fdb", "show", "dev", "weft.1"]);
        let fdb = String::from_utf8_lossy(&fdb.stdout).into_owned();
        assert!(
            fdb.lines()
                .filter(|l| l.contains("self"))
                .all(|l| l.contains("dst fd7e:31:250::")),
            "FDB entries point at the peers' IPv6 underlay addresses: {fdb}"
        );
        let dev = net.ip("h1", &["-4", "addr", "show", "dev", "weft.1"]);
        assert!(!dev.contains("inet "), "no IPv4 on the VXLAN device: {dev}");
        assert_eq!(mtu_of(net, 1), 1430, "1500 - 70 over an IPv6 underlay");
    });
}

#[test]
fn host_gw_ipv6_only_over_an_ipv6_only_underlay() {
    if !l3_available("host_gw_ipv6_only_over_an_ipv6_only_underlay") {
        return;
    }
    ipv6_only("l3h6o", "host-gw", 2, "via fd7e:31:250::", |net| {
        assert_eq!(mtu_of(net, 1), 1500, "host-gw adds no overhead");
    });
}

#[test]
fn udp_sealed_ipv6_only_over_an_ipv6_only_underlay() {
    if !l3_available("udp_sealed_ipv6_only_over_an_ipv6_only_underlay") {
        return;
    }
    // One route for the IPv6 network into the sealed tunnel, whose socket is an IPv6 one.
    ipv6_only("l3u6o", "udp", 1, "dev weft0", |net| {
        let sockets = net.exec("h1", &["ss", "-u", "-l", "-n"]);
        let sockets = String::from_utf8_lossy(&sockets.stdout).into_owned();
        assert!(
            sockets.contains("[fd7e:31:250::11]:8285"),
            "the tunnel listens on the IPv6 underlay address: {sockets}"
        );
    });
}

#[test]
fn udp_sealed_dual_stack_three_hosts() {
    if !l3_available("udp_sealed_dual_stack_three_hosts") {
        return;
    }
    // One route per family for the whole overlay network, into the sealed tunnel.
    dual_stack("l3ud6", "udp", 1, "dev weft0");
}

#[test]
fn host_gw_three_hosts() {
    if !l3_available("host_gw_three_hosts") {
        return;
    }
    let net = Testnet::new("l3hg").with_env("WEFT_BACKEND", "host-gw");
    net.up_and_ready(HOSTS);
    for i in 1..=HOSTS {
        let routes = wait_routes(&net, i, 2);
        assert!(
            routes
                .iter()
                .all(|r| r.contains("via 172.31.250.") && !r.contains("weft.")),
            "h{i}: host-gw routes go via the peers' underlay IPs: {routes:?}"
        );
    }
    let link = net.exec("h1", &["ip", "link", "show", "weft.1"]);
    assert!(!link.status.success(), "host-gw makes no VXLAN device");
    assert_eq!(mtu_of(&net, 1), 1500, "host-gw adds no overhead");
    assert_eq!(net.status_json(1)["backend"], "host-gw");
    exercise(&net);
}

#[test]
fn vxlan_three_hosts() {
    if !l3_available("vxlan_three_hosts") {
        return;
    }
    let net = Testnet::new("l3vx").with_env("WEFT_BACKEND", "vxlan");
    net.up_and_ready(HOSTS);
    for i in 1..=HOSTS {
        let routes = wait_routes(&net, i, 2);
        assert!(
            routes.iter().all(|r| r.contains("dev weft.1")),
            "h{i}: vxlan routes go through weft.1: {routes:?}"
        );
    }
    assert_eq!(mtu_of(&net, 1), 1450);
    exercise(&net);
}

/// Hosts 1 and 2 share the underlay subnet; host 3 sits behind a router. With DirectRouting,
/// 1 ↔ 2 use plain routes and everything to or from 3 goes through VXLAN.
#[test]
fn vxlan_direct_routing_mixes_paths() {
    if !l3_available("vxlan_direct_routing_mixes_paths") {
        return;
    }
    let net = Testnet::new("l3dr")
        .with_env("WEFT_BACKEND", "vxlan")
        .with_env("WEFT_DIRECT_ROUTING", "true")
        .with_env("WEFT_TESTNET_ROUTED", "3");
    net.up_and_ready(HOSTS);
    for (i, peer_ip) in [(1, "172.31.250.12"), (2, "172.31.250.11")] {
        let routes = wait_routes(&net, i, 2);
        assert!(
            routes
                .iter()
                .any(|r| r.contains(&format!("via {peer_ip} ")) && !r.contains("weft.")),
            "h{i}: a direct route via {peer_ip} expected: {routes:?}"
        );
        assert_eq!(
            routes.iter().filter(|r| r.contains("dev weft.1")).count(),
            1,
            "h{i}: host 3 (off-link) goes through VXLAN: {routes:?}"
        );
    }
    let r3 = wait_routes(&net, 3, 2);
    assert!(
        r3.iter().all(|r| r.contains("dev weft.1")),
        "h3: every peer is off-link, so VXLAN: {r3:?}"
    );
    assert_eq!(net.status_json(1)["backend"], "vxlan (DirectRouting)");
    exercise(&net);
}

/// host-gw with host 3 on another underlay subnet: nobody programs it, it programs nobody, and
/// `weft status --json` says why on both sides; hosts 1 and 2 still reach each other.
#[test]
fn host_gw_offlink_peer_is_not_programmed() {
    if !l3_available("host_gw_offlink_peer_is_not_programmed") {
        return;
    }
    let net = Testnet::new("l3ol")
        .with_env("WEFT_BACKEND", "host-gw")
        .with_env("WEFT_TESTNET_ROUTED", "3");
    net.up_and_ready(HOSTS);
    wait_routes(&net, 1, 1);
    wait_routes(&net, 2, 1);
    let node = |status: &serde_json::Value, name: &str| {
        status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no node {name} in {status}"))
    };
    let shown = net.wait_for(Duration::from_secs(30), || {
        let s1 = net.status_json(1);
        let s3 = net.status_json(3);
        let h3_seen_by_1 = node(&s1, "h3");
        let h1_seen_by_3 = node(&s3, "h1");
        h3_seen_by_1["programmed"] == false
            && h3_seen_by_1["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not on-link") && r.contains("172.31.251.13"))
            && node(&s1, "h2")["programmed"] == true
            && h1_seen_by_3["programmed"] == false
            && h1_seen_by_3["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not on-link"))
    });
    assert!(
        shown.is_some(),
        "status does not show the off-link peer as unprogrammed:\n{}\n{}",
        net.status_json(1),
        net.status_json(3)
    );
    assert!(net.weft_routes(3).is_empty(), "h3 programs nobody");
    assert!(
        net.weft_routes(1)
            .iter()
            .all(|r| !r.contains("172.31.251.13"))
    );
    assert!(net.ping_eventually(1, 2, Duration::from_secs(20)).is_some());
    assert!(net.ping_eventually(2, 1, Duration::from_secs(20)).is_some());
    // Logged once, not every tick.
    std::thread::sleep(Duration::from_secs(2));
    let log = std::fs::read_to_string(net.host_dir(1).join("weft.log")).expect("h1 log");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("peer not programmed") && l.contains("peer=h3"))
            .count(),
        1,
        "{log}"
    );
}

/// The CNI delegate the flannel CNI plugin builds from a subnet.env (flannel-io/cni-plugin: a
/// `bridge` with `isGateway`, `ipMasq` the opposite of FLANNEL_IPMASQ, FLANNEL_MTU, and
/// `host-local` ranges for FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET with routes to both networks).
/// The plugin itself is not packaged here; its delegate is what reads weft's values. Like the
/// plugin (Go's `net.ParseCIDR`), the subnets go as networks: `10.244.3.1/24` → `10.244.3.0/24`.
fn flannel_delegate(net: &Testnet, i: usize, data_dir: &std::path::Path) -> String {
    let env = |k: &str| {
        net.subnet_env(i, k)
            .unwrap_or_else(|| panic!("h{i}: no {k}"))
    };
    let network_of = |k: &str| {
        env(k)
            .parse::<ipnet::IpNet>()
            .unwrap_or_else(|e| panic!("h{i}: {k}: {e}"))
            .trunc()
            .to_string()
    };
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "cbr0",
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "ipMasq": env("FLANNEL_IPMASQ") != "true",
        "mtu": env("FLANNEL_MTU").parse::<u32>().unwrap(),
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir,
            "ranges": [
                [{"subnet": network_of("FLANNEL_SUBNET")}],
                [{"subnet": network_of("FLANNEL_IPV6_SUBNET")}]
            ],
            "routes": [
                {"dst": env("FLANNEL_NETWORK")},
                {"dst": env("FLANNEL_IPV6_NETWORK")}
            ]
        }
    })
    .to_string()
}

#[test]
fn cni_bridge_and_host_local_hand_out_both_families_from_weft_subnet_env() {
    const CNI: &str = "/usr/lib/cni";
    if !testnet::l3_available_with(
        "cni_bridge_and_host_local_hand_out_both_families_from_weft_subnet_env",
        &[
            ("/usr/lib/cni/bridge", "containernetworking-plugins"),
            ("nft", "nftables"),
        ],
    ) {
        return;
    }
    // flannel deployments masquerade in the agent (FLANNEL_IPMASQ=true), so the plugin does not.
    let net = Testnet::new("l3cni")
        .with_env("WEFT_IPV6_NETWORK", "fd00:10:244::/56")
        .with_env("WEFT_IP_MASQ", "true");
    net.ok(&["up", "2"]);
    net.ok(&["start"]);
    net.ok(&["wait-ready", "90"]);
    let data = tempfile::tempdir().unwrap();
    // Pods in namespaces named like the testnet's containers, so `down` removes them.
    let mut pods = Vec::new();
    for i in 1..=2 {
        let pod = net.ns(&format!("c{}", 10 + i));
        let added = Command::new("ip").args(["netns", "add", &pod]).status();
        assert!(added.is_ok_and(|s| s.success()), "ip netns add {pod}");
        let conf = flannel_delegate(&net, i, &data.path().join(format!("h{i}")));
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.ns(&format!("h{i}")),
                &format!("{CNI}/bridge"),
            ])
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("pod{i}"))
            .env("CNI_NETNS", format!("/run/netns/{pod}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the bridge plugin");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "CNI ADD on h{i}: {}", text(&out));
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("CNI result");
        let ips: Vec<String> = result["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .map(|ip| ip["address"].as_str().unwrap().to_string())
            .collect();
        let v4 = net.subnet(i);
        let v6 = net.subnet_env(i, "FLANNEL_IPV6_SUBNET").unwrap();
        let v6: ipnet::Ipv6Net = v6.parse().unwrap();
        assert_eq!(ips.len(), 2, "h{i}: one address per family: {ips:?}");
        let a4: ipnet::Ipv4Net = ips[0].parse().unwrap();
        let a6: ipnet::Ipv6Net = ips[1].parse().unwrap();
        assert!(v4.contains(&a4.addr()), "h{i}: {a4} in {v4}");
        assert!(v6.trunc().contains(&a6.addr()), "h{i}: {a6} in {v6}");
        pods.push((pod, a4.addr().to_string(), a6.addr().to_string()));
    }
    // The two pods reach each other over both families across the overlay.
    for (from, to) in [(0, 1), (1, 0)] {
        for dst in [&pods[to].1, &pods[to].2] {
            let ok = (0..40).any(|_| {
                Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &pods[from].0,
                        "ping",
                        "-n",
                        "-c",
                        "1",
                        "-W",
                        "1",
                        dst,
                    ])
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
            assert!(ok, "{} cannot ping {dst}", pods[from].0);
        }
    }
}
