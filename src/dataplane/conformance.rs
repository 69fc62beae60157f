//! The one conformance suite every [`Dataplane`] must pass (test code: it panics on failure).
//! It only speaks through the trait and [`reconcile`], so the fake and the netlink
//! implementation are held to the same behaviour.

use std::net::{IpAddr, Ipv4Addr};

use super::desired::{
    PeerTarget, host_gw_state, vtep_mac, vxlan_device_name, vxlan_mtu, vxlan_state,
};
use super::underlay::UnderlaySelect;
use super::{
    Bridge, Dataplane, Op, ReconcileReport, Route, State, TunLink, VxlanDevice, plan, reconcile,
};

/// Where the suite runs.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct SuiteEnv {
    /// The local underlay address (the VXLAN device's local IP).
    pub underlay_ip: IpAddr,
    pub underlay_ifindex: Option<u32>,
    pub underlay_mtu: u32,
    pub vni: u32,
    /// A bridge name free for weft to create.
    pub bridge_name: String,
    /// Underlay addresses for simulated peers (at least 6). For host-gw they must be on-link.
    pub peer_ips: Vec<Ipv4Addr>,
    /// The underlay interface's name, when the data plane has one to look up (`underlay()`
    /// cases: by name, by address, by default route, and a missing name).
    pub underlay_ifname: Option<String>,
    /// IPv6 underlay addresses for simulated peers' host-gw IPv6 routes (on-link), when the
    /// environment has an IPv6 underlay; empty: the dual-stack cases run on vxlan only.
    pub peer_ips6: Vec<std::net::Ipv6Addr>,
    /// A TUN device named [`super::TUN_DEVICE`] exists, as the udp tunnel leaves it (the TUN
    /// cases run last and leave it configured: the tunnel owns its life, the caller removes it).
    pub tun: bool,
}

impl SuiteEnv {
    /// An environment with an IPv4 underlay `192.0.2.1/24`-style: peers at `.10`, `.11`, ….
    pub fn new(underlay_ip: Ipv4Addr, underlay_ifindex: Option<u32>, underlay_mtu: u32) -> Self {
        let [a, b, c, _] = underlay_ip.octets();
        Self {
            underlay_ip: IpAddr::V4(underlay_ip),
            underlay_ifindex,
            underlay_mtu,
            vni: 1,
            bridge_name: "weftcni0".into(),
            peer_ips: (10..20).map(|d| Ipv4Addr::new(a, b, c, d)).collect(),
            underlay_ifname: None,
            peer_ips6: Vec::new(),
            tun: false,
        }
    }

    fn device(&self) -> VxlanDevice {
        VxlanDevice {
            name: vxlan_device_name(self.vni),
            vni: self.vni,
            port: 8472,
            local_ip: self.underlay_ip,
            underlay_ifindex: self.underlay_ifindex,
            mac: vtep_mac("suite-self"),
            mtu: vxlan_mtu(self.underlay_mtu, self.underlay_ip.is_ipv6()),
            addr: Some(Ipv4Addr::new(10, 244, 3, 0)),
            addr6: None,
        }
    }

    fn bridge(&self) -> Bridge {
        Bridge {
            name: self.bridge_name.clone(),
            addr: "10.244.3.1/24".parse().ok(),
            addr6: None,
            mtu: vxlan_mtu(self.underlay_mtu, self.underlay_ip.is_ipv6()),
        }
    }

    /// Peer `i`: subnet 10.244.(10+i).0/24, underlay `peer_ips[i]`.
    fn peer(&self, i: u8) -> PeerTarget {
        let name = format!("suite-peer-{i}");
        let ip = self
            .peer_ips
            .get(usize::from(i))
            .copied()
            .unwrap_or_else(|| panic!("SuiteEnv.peer_ips needs more than {i} entries"));
        PeerTarget {
            vtep_mac: vtep_mac(&name),
            name,
            subnet: ipnet::Ipv4Net::new(Ipv4Addr::new(10, 244, 10 + i, 0), 24).ok(),
            underlay_ip: IpAddr::V4(ip),
            ipv6_subnet: None,
            ipv6_underlay: None,
        }
    }

    fn peers(&self, ids: &[u8]) -> Vec<PeerTarget> {
        ids.iter().map(|&i| self.peer(i)).collect()
    }
}

async fn converge(dp: &mut dyn Dataplane, desired: &State, step: &str) -> ReconcileReport {
    let report = reconcile(dp, desired, true)
        .await
        .unwrap_or_else(|e| panic!("[{step}] reconcile failed: {e}"));
    assert!(
        report.failed.is_empty(),
        "[{step}] failed ops: {:?}",
        report.failed
    );
    report
}

async fn assert_holds(dp: &mut dyn Dataplane, desired: &State, step: &str) {
    let observed = dp
        .observe()
        .await
        .unwrap_or_else(|e| panic!("[{step}] observe failed: {e}"));
    assert_eq!(
        &observed, desired,
        "[{step}] observed state differs from desired"
    );
    let left = plan(desired, &observed);
    assert!(left.is_empty(), "[{step}] plan not empty: {left:?}");
}

/// The IPv6 subnet the suite pairs with an IPv4 one: 10.244.N.0/24 → fd00:10:244:N::/64.
fn v6_subnet_of(subnet: ipnet::Ipv4Net) -> ipnet::Ipv6Net {
    let n = subnet.network().octets()[2];
    ipnet::Ipv6Net::new(
        std::net::Ipv6Addr::new(0xfd00, 0x10, 0x244, u16::from(n), 0, 0, 0, 0),
        64,
    )
    .unwrap_or_default()
}

/// host-gw in IPv6 with `peers` reached at the environment's IPv6 peer addresses (when it has
/// them): `per_peer` routes each, converged and held.
async fn host_gw6_case(
    dp: &mut dyn Dataplane,
    env: &SuiteEnv,
    peers: &[PeerTarget],
    bridge: &Bridge,
    per_peer: usize,
    step: &str,
) {
    if env.peer_ips6.is_empty() {
        return;
    }
    let gw_peers: Vec<PeerTarget> = peers
        .iter()
        .zip(&env.peer_ips6)
        .map(|(p, ip6)| PeerTarget {
            ipv6_underlay: Some(*ip6),
            ..p.clone()
        })
        .collect();
    let gw6 = host_gw_state(Some(bridge.clone()), &gw_peers);
    assert_eq!(gw6.routes.len(), per_peer * gw_peers.len(), "[{step}]");
    converge(dp, &gw6, step).await;
    assert_holds(dp, &gw6, step).await;
}

fn sorted(mut kinds: Vec<&'static str>) -> Vec<&'static str> {
    kinds.sort_unstable();
    kinds
}

/// Run every check. Leaves the data plane empty (nothing owned by weft) on success, but for the
/// TUN device when `env.tun` (configured: its owner removes it).
#[doc(hidden)]
pub async fn run_suite(dp: &mut dyn Dataplane, env: &SuiteEnv) {
    let empty = State::default();

    // 0. Start from nothing.
    converge(dp, &empty, "clean start").await;
    assert_holds(dp, &empty, "clean start").await;

    // 0b. The masquerade table (ip-masq): installed, left alone when right, replaced for another
    // subnet, removed when unwanted.
    let masq = |subnet: &str| State {
        masq: Some(super::Masquerade {
            network: "10.244.0.0/16".parse().unwrap_or_default(),
            subnet: subnet.parse().unwrap_or_default(),
        }),
        ..State::default()
    };
    let report = converge(dp, &masq("10.244.3.0/24"), "masq install").await;
    assert_eq!(report.applied, vec!["ip_masq"], "[masq install]");
    assert_holds(dp, &masq("10.244.3.0/24"), "masq install").await;
    let report = converge(dp, &masq("10.244.3.0/24"), "masq again").await;
    assert!(
        report.applied.is_empty(),
        "[masq again] {:?}",
        report.applied
    );
    let report = converge(dp, &masq("10.244.4.0/24"), "masq moves").await;
    assert_eq!(report.applied, vec!["ip_masq"], "[masq moves]");
    assert_holds(dp, &masq("10.244.4.0/24"), "masq moves").await;
    let report = converge(dp, &empty, "masq removed").await;
    assert_eq!(report.applied, vec!["del_masq"], "[masq removed]");
    assert_holds(dp, &empty, "masq removed").await;

    // 0c. Dual-stack: the IPv6 table beside the IPv4 one, each replaced and removed alone.
    let masq6 = |subnet: &str| super::Masquerade6 {
        network: "fd00:10:244::/56".parse().unwrap_or_default(),
        subnet: subnet.parse().unwrap_or_default(),
    };
    let both = |s4: &str, s6: &str| State {
        masq6: Some(masq6(s6)),
        ..masq(s4)
    };
    let report = converge(
        dp,
        &both("10.244.3.0/24", "fd00:10:244:3::/64"),
        "masq dual",
    )
    .await;
    assert_eq!(
        sorted(report.applied),
        sorted(vec!["ip_masq", "ip_masq6"]),
        "[masq dual]"
    );
    assert_holds(
        dp,
        &both("10.244.3.0/24", "fd00:10:244:3::/64"),
        "masq dual",
    )
    .await;
    let report = converge(
        dp,
        &both("10.244.3.0/24", "fd00:10:244:4::/64"),
        "masq6 moves",
    )
    .await;
    assert_eq!(report.applied, vec!["ip_masq6"], "[masq6 moves]");
    let report = converge(dp, &masq("10.244.3.0/24"), "masq6 removed").await;
    assert_eq!(report.applied, vec!["del_masq6"], "[masq6 removed]");
    assert_holds(dp, &masq("10.244.3.0/24"), "masq6 removed").await;
    converge(dp, &empty, "masq removed again").await;
    assert_holds(dp, &empty, "masq removed again").await;

    // 1. A first desired state is reached.
    let dev = env.device();
    let bridge = env.bridge();
    let mut want = vxlan_state(dev.clone(), Some(bridge.clone()), &env.peers(&[0, 1, 2]));
    let report = converge(dp, &want, "initial apply").await;
    assert_eq!(
        sorted(report.applied),
        sorted(vec![
            "create_vxlan",
            "ensure_bridge",
            "add_neigh",
            "add_neigh",
            "add_neigh",
            "add_fdb",
            "add_fdb",
            "add_fdb",
            "add_route",
            "add_route",
            "add_route",
        ]),
        "[initial apply]"
    );
    assert_holds(dp, &want, "initial apply").await;

    // 2. Idempotent: nothing left to do, and re-applying every add is harmless.
    let report = converge(dp, &want, "second reconcile").await;
    assert!(
        report.applied.is_empty(),
        "[second reconcile] {:?}",
        report.applied
    );
    let shell = State {
        vxlan: want.vxlan.clone(),
        bridge: want.bridge.clone(),
        ..State::default()
    };
    for op in plan(&want, &shell) {
        dp.apply(&op)
            .await
            .unwrap_or_else(|e| panic!("[re-add] {} failed: {e}", op.kind()));
    }
    dp.apply(&Op::EnsureBridge(bridge.clone()))
        .await
        .unwrap_or_else(|e| panic!("[re-ensure bridge] {e}"));
    assert_holds(dp, &want, "re-add").await;

    // 3. Peers change: 0 leaves, 3 joins, 1 moves to another underlay address.
    let mut peers = env.peers(&[1, 2, 3]);
    if let Some(p) = peers.first_mut() {
        p.underlay_ip = IpAddr::V4(env.peer_ips.get(9).copied().unwrap_or(Ipv4Addr::LOCALHOST));
    }
    want = vxlan_state(dev.clone(), Some(bridge.clone()), &peers);
    let report = converge(dp, &want, "peer change").await;
    assert_eq!(
        sorted(report.applied),
        sorted(vec![
            "del_route",
            "del_fdb",
            "del_fdb",
            "del_neigh",
            "add_neigh",
            "add_fdb",
            "add_fdb",
            "add_route",
        ]),
        "[peer change]"
    );
    assert_holds(dp, &want, "peer change").await;

    // 4. An MTU change reaches the existing device (no recreate).
    let mut dev2 = dev.clone();
    dev2.mtu = dev.mtu.saturating_sub(20);
    want = vxlan_state(dev2.clone(), Some(bridge.clone()), &peers);
    let report = converge(dp, &want, "mtu change").await;
    assert_eq!(report.applied, ["set_mtu"], "[mtu change]");
    assert_holds(dp, &want, "mtu change").await;

    // 5. An address change too.
    dev2.addr = Some(Ipv4Addr::new(10, 244, 4, 0));
    want = vxlan_state(dev2.clone(), Some(bridge.clone()), &peers);
    let report = converge(dp, &want, "addr change").await;
    assert_eq!(report.applied, ["set_addr"], "[addr change]");
    assert_holds(dp, &want, "addr change").await;

    // 6. Bridge MTU change.
    let mut bridge2 = bridge.clone();
    bridge2.mtu = bridge.mtu.saturating_sub(20);
    want = vxlan_state(dev2.clone(), Some(bridge2.clone()), &peers);
    let report = converge(dp, &want, "bridge mtu").await;
    assert_eq!(report.applied, ["ensure_bridge"], "[bridge mtu]");
    assert_holds(dp, &want, "bridge mtu").await;

    // 6b. weft's leftover devices (an old VNI's VXLAN device, an old --bridge) are found by
    // weft's mark alone and removed; the device in use and its entries stay.
    let old_vni = VxlanDevice {
        name: vxlan_device_name(env.vni + 76),
        vni: env.vni + 76,
        ..dev2.clone()
    };
    let old_bridge = Bridge {
        name: format!("{}o", env.bridge_name),
        ..bridge2.clone()
    };
    for op in [
        Op::CreateVxlan(old_vni.clone()),
        Op::EnsureBridge(old_bridge.clone()),
    ] {
        dp.apply(&op)
            .await
            .unwrap_or_else(|e| panic!("[leftovers] {} failed: {e}", op.kind()));
    }
    let observed = dp
        .observe()
        .await
        .unwrap_or_else(|e| panic!("[leftovers] observe: {e}"));
    assert_eq!(
        observed.other_vxlans,
        [old_vni.name.clone()].into(),
        "[leftovers] the old VNI's device"
    );
    assert_eq!(
        observed.other_bridges,
        [old_bridge.name.clone()].into(),
        "[leftovers] the old bridge"
    );
    assert_eq!(observed.vxlan.as_ref().map(|d| &d.name), Some(&dev2.name));
    let report = converge(dp, &want, "leftovers removed").await;
    assert_eq!(
        sorted(report.applied),
        sorted(vec!["delete_bridge", "delete_vxlan"]),
        "[leftovers removed]"
    );
    assert_holds(dp, &want, "leftovers removed").await;

    // 7. The device disappears: its entries go with it; reconcile brings everything back.
    dp.apply(&Op::DeleteVxlan {
        name: dev2.name.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("[delete device] {e}"));
    let observed = dp
        .observe()
        .await
        .unwrap_or_else(|e| panic!("[device gone] observe: {e}"));
    assert_eq!(observed.vxlan, None, "[device gone]");
    assert!(
        observed.neighbours.is_empty(),
        "[device gone] {:?}",
        observed.neighbours
    );
    assert!(observed.fdb.is_empty(), "[device gone] {:?}", observed.fdb);
    assert!(
        observed
            .routes
            .iter()
            .all(|r| r.device.as_deref() != Some(dev2.name.as_str())),
        "[device gone] {:?}",
        observed.routes
    );
    // A route through the missing device cannot be added.
    if let Some(route) = want.routes.iter().next() {
        assert!(
            dp.apply(&Op::AddRoute(route.clone())).await.is_err(),
            "[device gone] route via a missing device was accepted"
        );
    }
    converge(dp, &want, "device recreated").await;
    assert_holds(dp, &want, "device recreated").await;

    // 8. A fixed parameter (the MAC) changes: recreate and replay every entry.
    dev2.mac = vtep_mac("suite-self-renamed");
    want = vxlan_state(dev2.clone(), Some(bridge2.clone()), &peers);
    let report = converge(dp, &want, "recreate").await;
    assert_eq!(report.applied.first(), Some(&"create_vxlan"), "[recreate]");
    assert_eq!(
        report.applied.len(),
        1 + 3 * peers.len(),
        "[recreate] {:?}",
        report.applied
    );
    assert_holds(dp, &want, "recreate").await;

    // 9. With allow_delete false nothing is removed, additions still happen.
    let before = want.clone();
    let held_peers = env.peers(&[2, 3, 4]);
    let held = vxlan_state(dev2.clone(), Some(bridge2.clone()), &held_peers);
    let report = reconcile(dp, &held, false)
        .await
        .unwrap_or_else(|e| panic!("[no delete] {e}"));
    assert!(report.failed.is_empty(), "[no delete] {:?}", report.failed);
    let observed = dp
        .observe()
        .await
        .unwrap_or_else(|e| panic!("[no delete] observe: {e}"));
    for n in before.neighbours.iter().chain(&held.neighbours) {
        assert!(observed.neighbours.contains(n), "[no delete] missing {n:?}");
    }
    for f in before.fdb.iter().chain(&held.fdb) {
        assert!(observed.fdb.contains(f), "[no delete] missing {f:?}");
    }
    for r in before.routes.iter().chain(&held.routes) {
        assert!(observed.routes.contains(r), "[no delete] missing {r:?}");
    }
    let report = reconcile(dp, &empty, false)
        .await
        .unwrap_or_else(|e| panic!("[no delete, empty] {e}"));
    assert!(
        report.applied.is_empty(),
        "[no delete, empty] {:?}",
        report.applied
    );
    converge(dp, &held, "deletes allowed again").await;
    assert_holds(dp, &held, "deletes allowed again").await;

    // 10. Switch to host-gw: plain routes via the peers' underlay addresses, no device.
    let gw = host_gw_state(Some(bridge2.clone()), &held_peers);
    converge(dp, &gw, "host-gw").await;
    assert_holds(dp, &gw, "host-gw").await;
    let observed = dp
        .observe()
        .await
        .unwrap_or_else(|e| panic!("[host-gw] observe: {e}"));
    assert_eq!(observed.vxlan, None, "[host-gw] device left behind");
    assert!(
        observed.routes.iter().all(|r: &Route| r.device.is_none()),
        "[host-gw] {:?}",
        observed.routes
    );

    // 11. And back to vxlan (routes to the same subnets change shape).
    converge(dp, &held, "back to vxlan").await;
    assert_holds(dp, &held, "back to vxlan").await;

    // 11b. A per-peer route MTU (path probes): set, read back, changed and removed in place,
    // never by deleting the route (traffic to the peer does not stop).
    for (mtu, step) in [
        (Some(1350), "route mtu set"),
        (Some(1300), "route mtu changed"),
        (None, "route mtu removed"),
    ] {
        let mut want = held.clone();
        if let Some(first) = want.routes.iter().next().cloned() {
            want.routes.remove(&first);
            want.routes.insert(Route { mtu, ..first });
        }
        let report = converge(dp, &want, step).await;
        assert_eq!(report.applied, ["add_route"], "[{step}]");
        assert_holds(dp, &want, step).await;
        let again = converge(dp, &want, step).await;
        assert!(
            again.applied.is_empty(),
            "[{step}] not idempotent: {:?}",
            again.applied
        );
    }

    // 12. Deleting what is not there succeeds.
    let missing_route = Route {
        dst: "10.244.200.0/24".parse().unwrap_or_default(),
        gateway: IpAddr::V4(Ipv4Addr::new(10, 244, 200, 0)),
        device: Some(dev2.name.clone()),
        onlink: true,
        mtu: None,
    };
    let missing_peer = env.peer(5);
    let deletes = [
        Op::DelRoute(missing_route),
        Op::DelFdb {
            device: dev2.name.clone(),
            entry: super::FdbEntry {
                mac: missing_peer.vtep_mac,
                dst: missing_peer.underlay_ip,
            },
        },
        Op::DelNeighbour {
            device: dev2.name.clone(),
            neighbour: super::Neighbour {
                ip: IpAddr::V4(missing_peer.subnet.unwrap_or_default().network()),
                mac: missing_peer.vtep_mac,
            },
        },
        Op::DeleteVxlan {
            name: "weft.4242".into(),
        },
        Op::DeleteBridge {
            name: "weftnone0".into(),
        },
        Op::DelNeighbour {
            device: "weft.4242".into(),
            neighbour: super::Neighbour {
                ip: IpAddr::V4(missing_peer.subnet.unwrap_or_default().network()),
                mac: missing_peer.vtep_mac,
            },
        },
    ];
    for op in &deletes {
        dp.apply(op)
            .await
            .unwrap_or_else(|e| panic!("[delete missing] {} failed: {e}", op.kind()));
    }
    assert_holds(dp, &held, "delete missing").await;

    // 12b. A dual-stack overlay: the same device carries IPv6 (its /128, a neighbour and an
    // onlink route per peer), the bridge holds both gateways, one FDB entry per peer serves
    // both families; an IPv6 address change is repaired; back to IPv4 only removes IPv6 alone.
    let dual_peers: Vec<PeerTarget> = held_peers
        .iter()
        .map(|p| PeerTarget {
            ipv6_subnet: p.subnet.map(v6_subnet_of),
            ..p.clone()
        })
        .collect();
    let dual_dev = VxlanDevice {
        addr6: dev2
            .addr
            .map(|a| v6_subnet_of(ipnet::Ipv4Net::new(a, 24).unwrap_or_default()).network()),
        ..dev2.clone()
    };
    let dual_bridge = Bridge {
        addr6: "fd00:10:244:3::1/64".parse().ok(),
        ..bridge2.clone()
    };
    let dual = vxlan_state(dual_dev.clone(), Some(dual_bridge.clone()), &dual_peers);
    assert_eq!(
        dual.fdb.len(),
        dual_peers.len(),
        "[dual-stack] one FDB entry per peer"
    );
    assert_eq!(dual.neighbours.len(), 2 * dual_peers.len(), "[dual-stack]");
    let report = converge(dp, &dual, "dual-stack").await;
    assert_eq!(
        sorted(report.applied),
        sorted(vec![
            "set_addr",
            "ensure_bridge",
            "add_neigh",
            "add_neigh",
            "add_neigh",
            "add_route",
            "add_route",
            "add_route",
        ]),
        "[dual-stack]"
    );
    assert_holds(dp, &dual, "dual-stack").await;
    let moved = VxlanDevice {
        addr6: Some(
            "fd00:10:244:9::"
                .parse()
                .unwrap_or(std::net::Ipv6Addr::UNSPECIFIED),
        ),
        ..dual_dev.clone()
    };
    let dual_moved = vxlan_state(moved, Some(dual_bridge.clone()), &dual_peers);
    let report = converge(dp, &dual_moved, "dual-stack addr").await;
    assert_eq!(report.applied, ["set_addr"], "[dual-stack addr]");
    assert_holds(dp, &dual_moved, "dual-stack addr").await;
    host_gw6_case(dp, env, &dual_peers, &dual_bridge, 2, "host-gw dual-stack").await;

    // 12c. An IPv6-only overlay: the device and the bridge hold no IPv4 address (the dual-stack
    // ones are removed), a neighbour and an onlink route per peer in IPv6 alone, one FDB entry
    // per peer; an IPv4 address put back is removed again. host-gw routes IPv6 alone.
    let v6_peers: Vec<PeerTarget> = dual_peers
        .iter()
        .map(|p| PeerTarget {
            subnet: None,
            ..p.clone()
        })
        .collect();
    let v6_dev = VxlanDevice {
        addr: None,
        ..dual_dev.clone()
    };
    let v6_bridge = Bridge {
        addr: None,
        ..dual_bridge.clone()
    };
    let v6_only = vxlan_state(v6_dev.clone(), Some(v6_bridge.clone()), &v6_peers);
    assert_eq!(v6_only.neighbours.len(), v6_peers.len(), "[IPv6-only]");
    assert!(
        v6_only.routes.iter().all(|r| r.dst.addr().is_ipv6()),
        "[IPv6-only] {:?}",
        v6_only.routes
    );
    converge(dp, &v6_only, "IPv6-only").await;
    assert_holds(dp, &v6_only, "IPv6-only").await;
    let with_v4 = vxlan_state(dual_dev.clone(), Some(v6_bridge.clone()), &v6_peers);
    converge(dp, &with_v4, "IPv6-only, an IPv4 address added").await;
    let report = converge(dp, &v6_only, "IPv6-only, the IPv4 address removed").await;
    assert_eq!(report.applied, ["set_addr"], "[IPv6-only, IPv4 removed]");
    assert_holds(dp, &v6_only, "IPv6-only, the IPv4 address removed").await;
    host_gw6_case(dp, env, &v6_peers, &v6_bridge, 1, "host-gw IPv6-only").await;
    converge(dp, &held, "back to IPv4 only").await;
    assert_holds(dp, &held, "back to IPv4 only").await;

    // 13. Empty desired: everything weft owns is gone.
    converge(dp, &empty, "teardown").await;
    assert_holds(dp, &empty, "teardown").await;
    let observed = dp
        .observe()
        .await
        .unwrap_or_else(|e| panic!("[teardown] observe: {e}"));
    assert_eq!(
        observed, empty,
        "[teardown] leftovers seen when looking for the old names"
    );

    // 14. The underlay as the data plane reads it: by name, by its address, by the default
    // route; a missing name is the typed underlay error.
    if let Some(ifname) = &env.underlay_ifname {
        let by_name = dp
            .underlay(&UnderlaySelect::Iface(ifname.clone()), None)
            .await
            .unwrap_or_else(|e| panic!("[underlay] by name: {e}"));
        assert_eq!(by_name.ip, env.underlay_ip, "[underlay] by name");
        assert_eq!(by_name.mtu, env.underlay_mtu, "[underlay] by name");
        assert_eq!(
            Some(by_name.ifindex),
            env.underlay_ifindex,
            "[underlay] by name"
        );
        let by_addr = dp
            .underlay(&UnderlaySelect::Addr(env.underlay_ip), None)
            .await
            .unwrap_or_else(|e| panic!("[underlay] by address: {e}"));
        assert_eq!(by_addr, by_name, "[underlay] by address");
        let by_route = dp
            .underlay(&UnderlaySelect::DefaultRoute, None)
            .await
            .unwrap_or_else(|e| panic!("[underlay] by default route: {e}"));
        assert_eq!(by_route, by_name, "[underlay] by default route");
        let missing = dp
            .underlay(&UnderlaySelect::Iface("weftnothere0".into()), None)
            .await;
        assert!(
            matches!(missing, Err(super::DataplaneError::Underlay(_))),
            "[underlay] missing: {missing:?}"
        );
    }

    // 15. The udp backend's TUN device: configured (alias, MTU, its one address, up) with the
    // route through it; idempotent; MTU and address changes repaired; a stale configuration (a
    // crashed agent's) taken over.
    if env.tun {
        let tun = |mtu: u32, last: u8| TunLink {
            name: super::TUN_DEVICE.into(),
            mtu,
            addr: Some(Ipv4Addr::new(10, 244, 3, last)),
            addr6: None,
        };
        let with_tun = |t: TunLink| State {
            routes: [Route {
                dst: "10.244.0.0/16".parse().unwrap_or_default(),
                gateway: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                device: Some(t.name.clone()),
                onlink: false,
                mtu: None,
            }]
            .into(),
            tun: Some(t),
            ..State::default()
        };
        let want = with_tun(tun(1440, 0));
        let report = converge(dp, &want, "tun configured").await;
        assert_eq!(
            report.applied,
            ["tun_link", "add_route"],
            "[tun configured]"
        );
        assert_holds(dp, &want, "tun configured").await;
        let report = converge(dp, &want, "tun again").await;
        assert!(
            report.applied.is_empty(),
            "[tun again] {:?}",
            report.applied
        );
        let want = with_tun(tun(1400, 0));
        let report = converge(dp, &want, "tun mtu").await;
        assert_eq!(report.applied, ["tun_link"], "[tun mtu]");
        assert_holds(dp, &want, "tun mtu").await;
        let want = with_tun(tun(1400, 7));
        let report = converge(dp, &want, "tun addr").await;
        assert_eq!(report.applied, ["tun_link"], "[tun addr]");
        assert_holds(dp, &want, "tun addr").await;
        // A stale configuration: what a crashed agent of another subnet left.
        dp.apply(&Op::ConfigureTun(tun(1300, 9)))
            .await
            .unwrap_or_else(|e| panic!("[tun stale] {e}"));
        let report = converge(dp, &want, "tun stale").await;
        assert_eq!(report.applied, ["tun_link"], "[tun stale]");
        assert_holds(dp, &want, "tun stale").await;
        // Dual-stack: the device gains its IPv6 /128 and a route for the IPv6 network.
        let mut dual = with_tun(TunLink {
            addr6: "fd00:10:244:3::".parse().ok(),
            ..tun(1400, 7)
        });
        dual.routes.insert(Route {
            dst: "fd00:10:244::/56"
                .parse()
                .unwrap_or(ipnet::IpNet::V4(Default::default())),
            gateway: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            device: Some(super::TUN_DEVICE.into()),
            onlink: false,
            mtu: None,
        });
        let report = converge(dp, &dual, "tun dual-stack").await;
        assert_eq!(
            report.applied,
            ["tun_link", "add_route"],
            "[tun dual-stack]"
        );
        assert_holds(dp, &dual, "tun dual-stack").await;
        let report = converge(dp, &want, "tun IPv4 only again").await;
        assert_eq!(
            sorted(report.applied),
            sorted(vec!["tun_link", "del_route"]),
            "[tun IPv4 only again]"
        );
        assert_holds(dp, &want, "tun IPv4 only again").await;
        // Without a udp backend the route goes; the device stays for its owner.
        let left = State {
            tun: want.tun.clone(),
            ..State::default()
        };
        let report = converge(dp, &left, "tun route removed").await;
        assert_eq!(report.applied, ["del_route"], "[tun route removed]");
    }
}
