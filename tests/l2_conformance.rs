//! L2: the one conformance suite on the in-memory fake and on the netlink data plane inside a
//! private network namespace, plus checks with iproute2 that the kernel really holds the
//! entries and that nothing weft does not own is touched.

#[path = "common/netns.rs"]
mod netns;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use weft::config::UnderlaySelect;
use weft::dataplane::conformance::{SuiteEnv, run_suite};
use weft::dataplane::desired::{PeerTarget, vtep_mac, vxlan_mtu, vxlan_state};
use weft::dataplane::fake::FakeDataplane;
use weft::dataplane::netlink::{NetlinkDataplane, discover_underlay, is_onlink};
use weft::dataplane::{
    Bridge, Dataplane, DataplaneError, Op, Route, State, VxlanDevice, reconcile,
};

use netns::{NetnsGuard, netns_available};

const UNDERLAY_IF: &str = "veth-u0";
const UNDERLAY_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// The suite's environment on both data planes: the underlay `veth-u0` at index IFINDEX (192.0.2.1
/// and 2001:db8::1), IPv6 peers on-link at 2001:db8::10.., and a TUN device to configure.
fn suite_env(ifindex: u32) -> SuiteEnv {
    SuiteEnv {
        underlay_ifname: Some(UNDERLAY_IF.into()),
        tun: true,
        peer_ips6: (0x10..0x20)
            .map(|i| std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))
            .collect(),
        ..SuiteEnv::new(UNDERLAY_IP, Some(ifindex), 1500)
    }
}

#[tokio::test]
async fn fake_dataplane_passes_the_suite() {
    let mut dp = FakeDataplane::new();
    dp.set_interface(weft::dataplane::underlay::UnderlayInfo {
        ifname: UNDERLAY_IF.into(),
        ifindex: 2,
        ip: IpAddr::V4(UNDERLAY_IP),
        mtu: 1500,
        ipv6: None,
    });
    run_suite(&mut dp, &suite_env(2)).await;
    // Everything weft programmed is gone; the TUN device stays for the tunnel that owns it.
    assert_eq!(
        State {
            tun: None,
            ..dp.snapshot()
        },
        State::default()
    );
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The state a host with three peers should hold (used after the suite, to inspect the kernel).
fn populated(underlay_ifindex: u32) -> State {
    let device = VxlanDevice {
        name: "weft.1".into(),
        vni: 1,
        port: 8472,
        local_ip: IpAddr::V4(UNDERLAY_IP),
        underlay_ifindex: Some(underlay_ifindex),
        mac: vtep_mac("this-node"),
        mtu: vxlan_mtu(1500, false),
        addr: Some(Ipv4Addr::new(10, 244, 3, 0)),
        addr6: None,
    };
    let bridge = Bridge {
        name: "weftcni0".into(),
        addr: "10.244.3.1/24".parse().ok(),
        addr6: None,
        mtu: 1450,
    };
    let peers: Vec<PeerTarget> = (0..3u8)
        .map(|i| {
            let name = format!("peer-{i}");
            PeerTarget {
                vtep_mac: vtep_mac(&name),
                name,
                subnet: format!("10.244.{}.0/24", 20 + i).parse().ok(),
                underlay_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20 + i)),
                ipv6_subnet: None,
                ipv6_underlay: None,
            }
        })
        .collect();
    vxlan_state(device, Some(bridge), &peers)
}

fn setup(ns: &NetnsGuard) {
    let steps: &[&[&str]] = &[
        &[
            "link",
            "add",
            UNDERLAY_IF,
            "type",
            "veth",
            "peer",
            "name",
            "veth-u1",
        ],
        &["addr", "add", "192.0.2.1/24", "dev", UNDERLAY_IF],
        // An IPv6 underlay beside it (host-gw's IPv6 routes go via on-link peers here).
        &["addr", "add", "2001:db8::1/64", "dev", UNDERLAY_IF, "nodad"],
        &["link", "set", UNDERLAY_IF, "up"],
        &["link", "set", "veth-u1", "up"],
        &[
            "route",
            "add",
            "default",
            "via",
            "192.0.2.254",
            "dev",
            UNDERLAY_IF,
        ],
        // The udp tunnel's device, as the tunnel makes it (persistent, nobody reading).
        &["tuntap", "add", "dev", "weft0", "mode", "tun"],
        // Things weft must never touch.
        &[
            "link", "add", "foreign0", "type", "veth", "peer", "name", "foreign1",
        ],
        &["link", "set", "foreign0", "up"],
        &["link", "add", "cni-foreign", "type", "bridge"],
        &[
            "route",
            "add",
            "10.99.0.0/24",
            "via",
            "192.0.2.254",
            "proto",
            "static",
        ],
        &[
            "route",
            "add",
            "10.244.250.0/24",
            "via",
            "192.0.2.254",
            "proto",
            "static",
        ],
    ];
    for args in steps {
        ns.ip(args).unwrap_or_else(|e| panic!("setup: {e}"));
    }
}

/// Everything not weft's is still there, untouched.
fn assert_foreign_intact(ns: &NetnsGuard) {
    let routes = ns.ip(&["route", "show"]).unwrap();
    assert!(routes.contains("10.99.0.0/24 via 192.0.2.254"), "{routes}");
    assert!(
        routes.contains("10.244.250.0/24 via 192.0.2.254"),
        "{routes}"
    );
    assert!(routes.contains("default via 192.0.2.254"), "{routes}");
    for link in ["foreign0", "cni-foreign", UNDERLAY_IF] {
        ns.ip(&["link", "show", link])
            .unwrap_or_else(|e| panic!("{link} is gone: {e}"));
    }
    let addrs = ns
        .ip(&["-4", "addr", "show", "dev", "cni-foreign"])
        .unwrap();
    assert!(
        !addrs.contains("inet "),
        "foreign bridge got an address: {addrs}"
    );
}

/// `ip route show proto 87` as (dst, via, dev, onlink, mtu).
fn kernel_routes(ns: &NetnsGuard) -> BTreeSet<(String, String, String, bool, String)> {
    let text = ns.ip(&["route", "show", "proto", "87"]).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            };
            (
                words.first().map(|s| s.to_string()).unwrap_or_default(),
                after("via"),
                after("dev"),
                words.contains(&"onlink"),
                after("mtu"),
            )
        })
        .collect()
}

fn check_kernel_holds(ns: &NetnsGuard, want: &State) {
    // Routes.
    let expected: BTreeSet<_> = want
        .routes
        .iter()
        .map(|r: &Route| {
            (
                r.dst.to_string(),
                r.gateway.to_string(),
                r.device.clone().unwrap_or_default(),
                r.onlink,
                r.mtu.map(|m| m.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(kernel_routes(ns), expected);

    // Neighbours: "10.244.20.0 lladdr aa:bb:.. PERMANENT".
    let text = ns.ip(&["neigh", "show", "dev", "weft.1"]).unwrap();
    let got: BTreeSet<(String, String)> = text
        .lines()
        .filter(|l| l.contains("PERMANENT"))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Some((w.first()?.to_string(), w.get(2)?.to_string()))
        })
        .collect();
    let expected: BTreeSet<_> = want
        .neighbours
        .iter()
        .map(|n| (n.ip.to_string(), mac_text(n.mac)))
        .collect();
    assert_eq!(got, expected, "neighbours:\n{text}");

    // FDB: "aa:bb:.. dst 192.0.2.20 self permanent".
    let text = ns.bridge(&["fdb", "show", "dev", "weft.1"]).unwrap();
    let got: BTreeSet<(String, String)> = text
        .lines()
        .filter(|l| l.contains(" dst "))
        .map(|l| {
            assert!(
                l.contains("self") && l.contains("permanent"),
                "fdb line: {l}"
            );
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].to_string(), w[2].to_string())
        })
        .collect();
    let expected: BTreeSet<_> = want
        .fdb
        .iter()
        .map(|f| (mac_text(f.mac), f.dst.to_string()))
        .collect();
    assert_eq!(got, expected, "fdb:\n{text}");

    // The device itself.
    let dev = want.vxlan.as_ref().unwrap();
    let text = ns.ip(&["-d", "link", "show", "weft.1"]).unwrap();
    for needle in [
        "vxlan id 1 ".to_string(),
        format!("local {UNDERLAY_IP}"),
        format!("dev {UNDERLAY_IF}"),
        "dstport 8472".into(),
        "nolearning".into(),
        format!("mtu {}", dev.mtu),
        format!("link/ether {}", mac_text(dev.mac)),
        "alias weft".into(),
        "state UNKNOWN".into(),
    ] {
        assert!(text.contains(&needle), "missing {needle:?} in:\n{text}");
    }
    let text = ns.ip(&["-4", "addr", "show", "dev", "weft.1"]).unwrap();
    assert!(
        text.contains(&format!("inet {}/32", dev.addr.unwrap())),
        "{text}"
    );

    // The bridge.
    let bridge = want.bridge.as_ref().unwrap();
    let text = ns.ip(&["-d", "addr", "show", "dev", &bridge.name]).unwrap();
    assert!(
        text.contains(&format!("inet {}", bridge.addr.unwrap())),
        "{text}"
    );
    assert!(text.contains("alias weft"), "{text}");
    assert!(text.contains(&format!("mtu {}", bridge.mtu)), "{text}");
    assert!(text.contains("bridge"), "{text}");
}

#[test]
fn netlink_dataplane_in_netns() {
    if !netns_available("netlink_dataplane_in_netns") {
        return;
    }
    let ns = NetnsGuard::new("weft-dp").expect("create netns");
    setup(&ns);

    // Underlay discovery and the on-link check, then the suite.
    let ifindex = ns.block_on(|| async {
        let by_name = discover_underlay(&UnderlaySelect::Iface(UNDERLAY_IF.into()), None)
            .await
            .expect("underlay by name");
        assert_eq!(by_name.ip, IpAddr::V4(UNDERLAY_IP));
        assert_eq!(by_name.mtu, 1500);
        let by_route = discover_underlay(&UnderlaySelect::DefaultRoute, None)
            .await
            .expect("underlay by default route");
        assert_eq!(by_route, by_name);
        let by_addr = discover_underlay(&UnderlaySelect::Addr(IpAddr::V4(UNDERLAY_IP)), None)
            .await
            .expect("underlay by address");
        assert_eq!(by_addr, by_name);
        assert!(matches!(
            discover_underlay(&UnderlaySelect::Iface("nonexistent0".into()), None).await,
            Err(DataplaneError::Underlay(_))
        ));
        assert!(is_onlink("192.0.2.77".parse().unwrap()).await.unwrap());
        assert!(!is_onlink("198.51.100.1".parse().unwrap()).await.unwrap());

        let mut dp = NetlinkDataplane::new().await.expect("netlink");
        run_suite(&mut dp, &suite_env(by_name.ifindex)).await;
        by_name.ifindex
    });
    // The tunnel's device, as a stopped tunnel leaves it.
    ns.ip(&["link", "del", "weft0"]).unwrap();
    assert_foreign_intact(&ns);
    assert!(kernel_routes(&ns).is_empty());

    // Refusals: a foreign bridge, a foreign route to the same destination.
    ns.block_on(|| async {
        let mut dp = NetlinkDataplane::new().await.expect("netlink");
        let foreign_bridge = Bridge {
            name: "cni-foreign".into(),
            addr: "10.244.3.1/24".parse().ok(),
            addr6: None,
            mtu: 1450,
        };
        let err = dp
            .apply(&Op::EnsureBridge(foreign_bridge))
            .await
            .unwrap_err();
        assert!(matches!(err, DataplaneError::Refused { .. }), "{err}");
        for name in ["foreign0", "cni-foreign"] {
            let err = dp
                .apply(&Op::DeleteBridge { name: name.into() })
                .await
                .unwrap_err();
            assert!(matches!(err, DataplaneError::Refused { .. }), "{err}");
            let err = dp
                .apply(&Op::DeleteVxlan { name: name.into() })
                .await
                .unwrap_err();
            assert!(matches!(err, DataplaneError::Refused { .. }), "{err}");
        }
        let clash = Route {
            dst: "10.244.250.0/24".parse().unwrap(),
            gateway: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 30)),
            device: None,
            onlink: false,
            mtu: None,
        };
        let err = dp.apply(&Op::AddRoute(clash.clone())).await.unwrap_err();
        assert!(matches!(err, DataplaneError::Refused { .. }), "{err}");
        // Deleting "our" route to that destination must not delete the foreign one.
        dp.apply(&Op::DelRoute(clash))
            .await
            .expect("delete missing route");
    });
    assert_foreign_intact(&ns);

    // A populated state, checked with iproute2.
    let want = populated(ifindex);
    let w = want.clone();
    ns.block_on(move || async move {
        let mut dp = NetlinkDataplane::new().await.expect("netlink");
        let report = reconcile(&mut dp, &w, true).await.expect("reconcile");
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert_eq!(dp.observe().await.expect("observe"), w);
    });
    check_kernel_holds(&ns, &want);

    // Drift made with iproute2 is repaired.
    ns.ip(&["route", "del", "10.244.21.0/24"]).unwrap();
    ns.ip(&["neigh", "del", "10.244.22.0", "dev", "weft.1"])
        .unwrap();
    ns.ip(&["link", "set", "weft.1", "mtu", "1300"]).unwrap();
    let w = want.clone();
    ns.block_on(move || async move {
        let mut dp = NetlinkDataplane::new().await.expect("netlink");
        let report = reconcile(&mut dp, &w, true).await.expect("reconcile");
        assert_eq!(report.applied, ["set_mtu", "add_neigh", "add_route"]);
        assert_eq!(dp.observe().await.expect("observe"), w);
    });
    check_kernel_holds(&ns, &want);
    // A second address on weft's device or bridge (added by hand) is observed without a hint
    // as "not what weft configures": the reconcile leaves exactly the desired one.
    ns.ip(&["addr", "add", "10.244.99.0/32", "dev", "weft.1"])
        .unwrap();
    ns.ip(&["addr", "add", "10.244.98.1/24", "dev", "weftcni0"])
        .unwrap();
    let w = want.clone();
    ns.block_on(move || async move {
        let mut dp = NetlinkDataplane::new().await.expect("netlink");
        let report = reconcile(&mut dp, &w, true).await.expect("reconcile");
        assert_eq!(report.applied, ["set_addr", "ensure_bridge"]);
        assert_eq!(dp.observe().await.expect("observe"), w);
    });
    let v4 = |dev: &str| ns.ip(&["-4", "-o", "addr", "show", "dev", dev]).unwrap();
    let on_device = v4("weft.1");
    assert!(
        on_device.contains("10.244.3.0/32") && !on_device.contains("10.244.99.0"),
        "{on_device}"
    );
    let on_bridge = v4("weftcni0");
    assert!(
        on_bridge.contains("10.244.3.1/24") && !on_bridge.contains("10.244.98.1"),
        "{on_bridge}"
    );
    check_kernel_holds(&ns, &want);
    ns.ip(&["link", "del", "weft.1"]).unwrap();
    let w = want.clone();
    ns.block_on(move || async move {
        let mut dp = NetlinkDataplane::new().await.expect("netlink");
        let report = reconcile(&mut dp, &w, true).await.expect("reconcile");
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert_eq!(report.applied.first(), Some(&"create_vxlan"));
    });
    check_kernel_holds(&ns, &want);
    assert_foreign_intact(&ns);

    // A route MTU (path probes) is what iproute2 shows as `mtu N`, and goes again.
    let mut with_mtu = want.clone();
    let first = with_mtu.routes.iter().next().cloned().expect("a route");
    with_mtu.routes.remove(&first);
    with_mtu.routes.insert(Route {
        mtu: Some(1350),
        ..first
    });
    for w in [with_mtu.clone(), want.clone()] {
        let w2 = w.clone();
        ns.block_on(move || async move {
            let mut dp = NetlinkDataplane::new().await.expect("netlink");
            let report = reconcile(&mut dp, &w2, true).await.expect("reconcile");
            assert_eq!(report.applied, ["add_route"]);
            assert_eq!(dp.observe().await.expect("observe"), w2);
        });
        check_kernel_holds(&ns, &w);
    }
    let shown = ns.ip(&["route", "show", "proto", "87"]).unwrap();
    assert!(!shown.contains("mtu"), "{shown}");

    // weft leave: everything weft owns goes, nothing else.
    ns.block_on(|| async {
        let mut dp = NetlinkDataplane::new().await.expect("netlink");
        dp.remove_all_owned().await.expect("remove all owned");
        assert_eq!(dp.observe().await.expect("observe"), State::default());
    });
    assert!(kernel_routes(&ns).is_empty());
    let links = ns.ip(&["-d", "link", "show"]).unwrap();
    assert!(!links.contains("alias weft"), "{links}");
    assert!(!links.contains("weft.1"), "{links}");
    assert_foreign_intact(&ns);
}
