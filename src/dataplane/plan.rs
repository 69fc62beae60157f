//! The reconcile diff: a pure function from (desired, observed) to an ordered list of [`Op`]s.
//!
//! Order: VXLAN device ops, bridge ops, then removals (route → FDB → neighbour), then additions
//! (neighbour → FDB → route), then the masquerade table. Deleting or recreating a device drops everything the kernel held on
//! it, so the plan treats those entries as gone: it emits no removals for them and re-adds every
//! desired entry.

use std::collections::BTreeSet;

use super::{Bridge, FdbEntry, Neighbour, Op, Route, State, VxlanDevice};

/// Whether two devices differ in a parameter that can only be changed by recreating the device.
fn fixed_params_differ(a: &VxlanDevice, b: &VxlanDevice) -> bool {
    a.name != b.name
        || a.vni != b.vni
        || a.port != b.port
        || a.local_ip != b.local_ip
        || a.underlay_ifindex != b.underlay_ifindex
        || a.mac != b.mac
}

/// The diff between what should be and what is, ordered so that applying it in sequence is safe.
pub fn plan(desired: &State, observed: &State) -> Vec<Op> {
    let mut ops = Vec::new();
    // Devices whose entries the kernel drops during this plan (deleted or recreated).
    let mut dropped: BTreeSet<&str> = BTreeSet::new();

    match (&desired.vxlan, &observed.vxlan) {
        (Some(want), None) => ops.push(Op::CreateVxlan(want.clone())),
        (Some(want), Some(have)) if fixed_params_differ(want, have) => {
            if want.name != have.name {
                ops.push(Op::DeleteVxlan {
                    name: have.name.clone(),
                });
            }
            dropped.insert(have.name.as_str());
            ops.push(Op::CreateVxlan(want.clone()));
        }
        (Some(want), Some(have)) => {
            if want.mtu != have.mtu {
                ops.push(Op::SetVxlanMtu {
                    name: want.name.clone(),
                    mtu: want.mtu,
                });
            }
            if want.addr != have.addr || want.addr6 != have.addr6 {
                ops.push(Op::SetVxlanAddr {
                    name: want.name.clone(),
                    addr: want.addr,
                    addr6: want.addr6,
                });
            }
        }
        (None, Some(have)) => {
            dropped.insert(have.name.as_str());
            ops.push(Op::DeleteVxlan {
                name: have.name.clone(),
            });
        }
        (None, None) => {}
    }

    plan_bridge(
        desired.bridge.as_ref(),
        observed.bridge.as_ref(),
        &mut ops,
        &mut dropped,
    );
    // weft's other devices (a VNI or bridge name changed): gone unless they are the desired one.
    let desired_vxlan = desired.vxlan.as_ref().map(|d| d.name.as_str());
    for name in &observed.other_vxlans {
        if Some(name.as_str()) != desired_vxlan {
            ops.push(Op::DeleteVxlan { name: name.clone() });
        }
    }
    let desired_bridge = desired.bridge.as_ref().map(|b| b.name.as_str());
    for name in &observed.other_bridges {
        if Some(name.as_str()) != desired_bridge {
            ops.push(Op::DeleteBridge { name: name.clone() });
        }
    }

    // The TUN device is configured (never created or deleted: the tunnel owns its life) before
    // any route goes through it.
    if let Some(want) = &desired.tun
        && observed.tun.as_ref() != Some(want)
    {
        ops.push(Op::ConfigureTun(want.clone()));
    }

    // What survives the device ops above.
    let vxlan_kept = observed
        .vxlan
        .as_ref()
        .filter(|dev| !dropped.contains(dev.name.as_str()));
    let empty_n = BTreeSet::new();
    let empty_f = BTreeSet::new();
    let (have_neigh, have_fdb): (&BTreeSet<Neighbour>, &BTreeSet<FdbEntry>) = match vxlan_kept {
        Some(_) => (&observed.neighbours, &observed.fdb),
        None => (&empty_n, &empty_f),
    };
    let have_routes: BTreeSet<&Route> = observed
        .routes
        .iter()
        .filter(|r| r.device.as_deref().is_none_or(|d| !dropped.contains(d)))
        .collect();

    // Neighbour and FDB entries only exist on a VXLAN device: without one, nothing is wanted.
    let (want_neigh, want_fdb) = match desired.vxlan {
        Some(_) => (&desired.neighbours, &desired.fdb),
        None => (&empty_n, &empty_f),
    };

    // Removals: route → FDB → neighbour.
    // A route that differs only in its MTU is not deleted: adding the wanted one replaces it
    // (weft's own routes are replaced in place), so traffic to the peer never stops.
    let mtu_only = |r: &Route| {
        desired.routes.iter().any(|w| {
            Route {
                mtu: r.mtu,
                ..w.clone()
            } == *r
        })
    };
    for route in have_routes
        .iter()
        .filter(|r| !desired.routes.contains(**r) && !mtu_only(r))
    {
        ops.push(Op::DelRoute((*route).clone()));
    }
    if let Some(dev) = vxlan_kept {
        for entry in have_fdb.difference(want_fdb) {
            ops.push(Op::DelFdb {
                device: dev.name.clone(),
                entry: *entry,
            });
        }
        for neighbour in have_neigh.difference(want_neigh) {
            ops.push(Op::DelNeighbour {
                device: dev.name.clone(),
                neighbour: *neighbour,
            });
        }
    }

    // Additions: neighbour → FDB → route.
    if let Some(dev) = &desired.vxlan {
        for neighbour in want_neigh.difference(have_neigh) {
            ops.push(Op::AddNeighbour {
                device: dev.name.clone(),
                neighbour: *neighbour,
            });
        }
        for entry in want_fdb.difference(have_fdb) {
            ops.push(Op::AddFdb {
                device: dev.name.clone(),
                entry: *entry,
            });
        }
    }
    for route in desired.routes.iter().filter(|r| !have_routes.contains(r)) {
        ops.push(Op::AddRoute(route.clone()));
    }
    // The masquerade table stands alone: replaced whole when it differs, deleted when unwanted.
    match (desired.masq, observed.masq) {
        (Some(want), have) if have != Some(want) => ops.push(Op::SetMasq(want)),
        (None, Some(_)) => ops.push(Op::DelMasq),
        _ => {}
    }
    match (desired.masq6, observed.masq6) {
        (Some(want), have) if have != Some(want) => ops.push(Op::SetMasq6(want)),
        (None, Some(_)) => ops.push(Op::DelMasq6),
        _ => {}
    }
    ops
}

fn plan_bridge<'a>(
    want: Option<&Bridge>,
    have: Option<&'a Bridge>,
    ops: &mut Vec<Op>,
    dropped: &mut BTreeSet<&'a str>,
) {
    match (want, have) {
        (Some(want), Some(have)) if want == have => {}
        (Some(want), have) => {
            if let Some(have) = have.filter(|h| h.name != want.name) {
                dropped.insert(have.name.as_str());
                ops.push(Op::DeleteBridge {
                    name: have.name.clone(),
                });
            }
            ops.push(Op::EnsureBridge(want.clone()));
        }
        (None, Some(have)) => {
            dropped.insert(have.name.as_str());
            ops.push(Op::DeleteBridge {
                name: have.name.clone(),
            });
        }
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn dev() -> VxlanDevice {
        VxlanDevice {
            underlay_ifindex: Some(2),
            ..VxlanDevice::for_test()
        }
    }

    fn peer(i: u8) -> (Neighbour, FdbEntry, Route) {
        let mac = [0x02, 0, 0, 0, 1, i];
        let gw = Ipv4Addr::new(10, 244, i, 0);
        (
            Neighbour {
                ip: IpAddr::V4(gw),
                mac,
            },
            FdbEntry {
                mac,
                dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + i)),
            },
            Route {
                dst: format!("10.244.{i}.0/24").parse().unwrap(),
                gateway: IpAddr::V4(gw),
                device: Some("weft.1".into()),
                onlink: true,
                mtu: None,
            },
        )
    }

    fn state(peers: &[u8]) -> State {
        let mut s = State {
            vxlan: Some(dev()),
            ..State::default()
        };
        for &i in peers {
            let (n, f, r) = peer(i);
            s.neighbours.insert(n);
            s.fdb.insert(f);
            s.routes.insert(r);
        }
        s
    }

    fn kinds(ops: &[Op]) -> Vec<&'static str> {
        ops.iter().map(Op::kind).collect()
    }

    #[test]
    fn route_mtu_change_replaces_without_delete() {
        let have = state(&[1, 2]);
        let mut want = have.clone();
        let (_, _, r) = peer(1);
        want.routes.remove(&r);
        let with_mtu = Route {
            mtu: Some(1350),
            ..r.clone()
        };
        want.routes.insert(with_mtu.clone());
        assert_eq!(plan(&want, &have), vec![Op::AddRoute(with_mtu.clone())]);
        // And back: the MTU goes, the route stays.
        assert_eq!(plan(&have, &want), vec![Op::AddRoute(r.clone())]);
        // A different gateway is still a delete and an add.
        let moved = Route {
            gateway: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 9)),
            ..with_mtu
        };
        let mut other = have.clone();
        other.routes.remove(&r);
        other.routes.insert(moved.clone());
        assert_eq!(
            plan(&other, &want),
            vec![
                Op::DelRoute(Route {
                    mtu: Some(1350),
                    ..r
                }),
                Op::AddRoute(moved)
            ]
        );
    }

    fn bridge() -> Bridge {
        Bridge {
            name: "cni0".into(),
            addr: "10.244.3.1/24".parse().ok(),
            addr6: None,
            mtu: 1450,
        }
    }

    #[test]
    fn equal_states_plan_nothing() {
        let s = state(&[1, 2, 5]);
        assert!(plan(&s, &s).is_empty());
        assert!(plan(&State::default(), &State::default()).is_empty());
        let mut b = s.clone();
        b.bridge = Some(bridge());
        assert!(plan(&b, &b).is_empty());
    }

    #[test]
    fn from_nothing_creates_device_then_entries_in_order() {
        let d = state(&[1, 2]);
        let ops = plan(&d, &State::default());
        assert_eq!(
            kinds(&ops),
            [
                "create_vxlan",
                "add_neigh",
                "add_neigh",
                "add_fdb",
                "add_fdb",
                "add_route",
                "add_route"
            ]
        );
        assert_eq!(ops[0], Op::CreateVxlan(dev()));
        let (n, f, r) = peer(1);
        assert!(ops.contains(&Op::AddNeighbour {
            device: "weft.1".into(),
            neighbour: n
        }));
        assert!(ops.contains(&Op::AddFdb {
            device: "weft.1".into(),
            entry: f
        }));
        assert!(ops.contains(&Op::AddRoute(r)));
    }

    #[test]
    fn removal_is_reverse_order_and_precedes_additions() {
        let observed = state(&[1, 2]);
        let desired = state(&[2, 3]);
        let ops = plan(&desired, &observed);
        assert_eq!(
            kinds(&ops),
            [
                "del_route",
                "del_fdb",
                "del_neigh",
                "add_neigh",
                "add_fdb",
                "add_route"
            ]
        );
        let (n1, f1, r1) = peer(1);
        let (n3, f3, r3) = peer(3);
        assert_eq!(ops[0], Op::DelRoute(r1));
        assert_eq!(
            ops[1],
            Op::DelFdb {
                device: "weft.1".into(),
                entry: f1
            }
        );
        assert_eq!(
            ops[2],
            Op::DelNeighbour {
                device: "weft.1".into(),
                neighbour: n1
            }
        );
        assert_eq!(
            ops[3],
            Op::AddNeighbour {
                device: "weft.1".into(),
                neighbour: n3
            }
        );
        assert_eq!(
            ops[4],
            Op::AddFdb {
                device: "weft.1".into(),
                entry: f3
            }
        );
        assert_eq!(ops[5], Op::AddRoute(r3));
    }

    #[test]
    fn moved_peer_replaces_only_its_fdb_entry() {
        let observed = state(&[1, 2]);
        let mut desired = observed.clone();
        let (_, f, _) = peer(2);
        desired.fdb.remove(&f);
        let moved = FdbEntry {
            mac: f.mac,
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)),
        };
        desired.fdb.insert(moved);
        let ops = plan(&desired, &observed);
        assert_eq!(
            ops,
            vec![
                Op::DelFdb {
                    device: "weft.1".into(),
                    entry: f
                },
                Op::AddFdb {
                    device: "weft.1".into(),
                    entry: moved
                }
            ]
        );
    }

    #[test]
    fn mtu_and_addr_changes_do_not_recreate() {
        let observed = state(&[1]);
        let mut desired = observed.clone();
        desired.vxlan.as_mut().unwrap().mtu = 1400;
        assert_eq!(
            plan(&desired, &observed),
            vec![Op::SetVxlanMtu {
                name: "weft.1".into(),
                mtu: 1400
            }]
        );
        desired.vxlan.as_mut().unwrap().addr = Some(Ipv4Addr::new(10, 244, 7, 0));
        assert_eq!(kinds(&plan(&desired, &observed)), ["set_mtu", "set_addr"]);
    }

    #[test]
    fn fixed_param_change_recreates_and_replays_everything() {
        let observed = state(&[1, 2]);
        let changes: [fn(&mut VxlanDevice); 5] = [
            |d| d.vni = 2,
            |d| d.port = 4789,
            |d| d.local_ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
            |d| d.underlay_ifindex = None,
            |d| d.mac = [0x02, 9, 9, 9, 9, 9],
        ];
        for change in changes {
            let mut desired = observed.clone();
            change(desired.vxlan.as_mut().unwrap());
            let ops = plan(&desired, &observed);
            assert_eq!(
                kinds(&ops),
                [
                    "create_vxlan",
                    "add_neigh",
                    "add_neigh",
                    "add_fdb",
                    "add_fdb",
                    "add_route",
                    "add_route"
                ],
                "{ops:?}"
            );
            assert_eq!(ops[0], Op::CreateVxlan(desired.vxlan.clone().unwrap()));
        }
    }

    #[test]
    fn recreate_removes_nothing_the_kernel_already_dropped() {
        let observed = state(&[1, 2]);
        let mut desired = state(&[2]);
        desired.vxlan.as_mut().unwrap().mac = [0x02, 7, 7, 7, 7, 7];
        let ops = plan(&desired, &observed);
        assert_eq!(
            kinds(&ops),
            ["create_vxlan", "add_neigh", "add_fdb", "add_route"]
        );
    }

    #[test]
    fn renamed_device_deletes_the_old_one() {
        let observed = state(&[1]);
        let mut desired = State::default();
        let mut d = dev();
        d.name = "weft.2".into();
        d.vni = 2;
        desired.vxlan = Some(d.clone());
        let (n, f, mut r) = peer(1);
        r.device = Some("weft.2".into());
        desired.neighbours.insert(n);
        desired.fdb.insert(f);
        desired.routes.insert(r.clone());
        let ops = plan(&desired, &observed);
        assert_eq!(
            ops,
            vec![
                Op::DeleteVxlan {
                    name: "weft.1".into()
                },
                Op::CreateVxlan(d),
                Op::AddNeighbour {
                    device: "weft.2".into(),
                    neighbour: n
                },
                Op::AddFdb {
                    device: "weft.2".into(),
                    entry: f
                },
                Op::AddRoute(r),
            ]
        );
    }

    #[test]
    fn no_device_wanted_deletes_device_and_only_foreign_device_routes() {
        let mut observed = state(&[1, 2]);
        let host_gw = Route {
            dst: "10.244.9.0/24".parse().unwrap(),
            gateway: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)),
            device: None,
            onlink: false,
            mtu: None,
        };
        observed.routes.insert(host_gw.clone());
        let ops = plan(&State::default(), &observed);
        assert_eq!(
            ops,
            vec![
                Op::DeleteVxlan {
                    name: "weft.1".into()
                },
                Op::DelRoute(host_gw)
            ]
        );
    }

    #[test]
    fn neighbours_without_a_device_are_ignored() {
        let mut desired = state(&[1]);
        desired.vxlan = None;
        desired.routes.clear();
        assert!(plan(&desired, &State::default()).is_empty());
    }

    #[test]
    fn host_gw_switch_from_vxlan() {
        let observed = state(&[1]);
        let route = Route {
            dst: "10.244.1.0/24".parse().unwrap(),
            gateway: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)),
            device: None,
            onlink: false,
            mtu: None,
        };
        let desired = State {
            routes: [route.clone()].into(),
            ..State::default()
        };
        assert_eq!(
            plan(&desired, &observed),
            vec![
                Op::DeleteVxlan {
                    name: "weft.1".into()
                },
                Op::AddRoute(route)
            ]
        );
    }

    #[test]
    fn bridge_ops() {
        let mut desired = State {
            bridge: Some(bridge()),
            ..State::default()
        };
        assert_eq!(
            plan(&desired, &State::default()),
            vec![Op::EnsureBridge(bridge())]
        );
        let mut observed = desired.clone();
        observed.bridge.as_mut().unwrap().mtu = 1500;
        assert_eq!(plan(&desired, &observed), vec![Op::EnsureBridge(bridge())]);
        observed.bridge.as_mut().unwrap().name = "docker9".into();
        assert_eq!(
            plan(&desired, &observed),
            vec![
                Op::DeleteBridge {
                    name: "docker9".into()
                },
                Op::EnsureBridge(bridge())
            ]
        );
        desired.bridge = None;
        assert_eq!(
            plan(&desired, &observed),
            vec![Op::DeleteBridge {
                name: "docker9".into()
            }]
        );
    }

    #[test]
    fn device_ops_come_before_bridge_ops_and_entries() {
        let mut desired = state(&[1]);
        desired.bridge = Some(bridge());
        let ops = plan(&desired, &State::default());
        assert_eq!(
            kinds(&ops),
            [
                "create_vxlan",
                "ensure_bridge",
                "add_neigh",
                "add_fdb",
                "add_route"
            ]
        );
    }

    #[test]
    fn applying_the_plan_to_a_model_reaches_desired() {
        // A tiny model of the kernel, independent of the fake: checks the plan is complete.
        fn apply(s: &mut State, op: &Op) {
            match op {
                Op::CreateVxlan(d) => {
                    s.vxlan = Some(d.clone());
                    s.neighbours.clear();
                    s.fdb.clear();
                    s.routes
                        .retain(|r| r.device.as_deref() != Some(d.name.as_str()));
                }
                Op::DeleteVxlan { name } => {
                    s.vxlan = None;
                    s.neighbours.clear();
                    s.fdb.clear();
                    s.routes
                        .retain(|r| r.device.as_deref() != Some(name.as_str()));
                }
                Op::SetVxlanMtu { mtu, .. } => s.vxlan.as_mut().unwrap().mtu = *mtu,
                Op::SetVxlanAddr { addr, addr6, .. } => {
                    let dev = s.vxlan.as_mut().unwrap();
                    dev.addr = *addr;
                    dev.addr6 = *addr6;
                }
                Op::EnsureBridge(b) => s.bridge = Some(b.clone()),
                Op::ConfigureTun(t) => s.tun = Some(t.clone()),
                Op::DeleteBridge { .. } => s.bridge = None,
                Op::AddNeighbour { neighbour, .. } => {
                    s.neighbours.insert(*neighbour);
                }
                Op::DelNeighbour { neighbour, .. } => {
                    s.neighbours.remove(neighbour);
                }
                Op::AddFdb { entry, .. } => {
                    s.fdb.insert(*entry);
                }
                Op::DelFdb { entry, .. } => {
                    s.fdb.remove(entry);
                }
                Op::AddRoute(r) => {
                    s.routes.insert(r.clone());
                }
                Op::DelRoute(r) => {
                    s.routes.remove(r);
                }
                Op::SetMasq(m) => s.masq = Some(*m),
                Op::DelMasq => s.masq = None,
                Op::SetMasq6(m) => s.masq6 = Some(*m),
                Op::DelMasq6 => s.masq6 = None,
            }
        }
        let mut variants = vec![
            State::default(),
            state(&[]),
            state(&[1]),
            state(&[1, 2, 3]),
            state(&[2, 4]),
        ];
        let mut recreated = state(&[1, 3]);
        recreated.vxlan.as_mut().unwrap().mac = [2, 1, 1, 1, 1, 1];
        recreated.bridge = Some(bridge());
        variants.push(recreated);
        let mut mtu = state(&[4]);
        mtu.vxlan.as_mut().unwrap().mtu = 1300;
        variants.push(mtu);
        for from in &variants {
            for to in &variants {
                let mut s = from.clone();
                for op in plan(to, from) {
                    apply(&mut s, &op);
                }
                assert_eq!(&s, to, "from {from:?}");
                assert!(plan(to, &s).is_empty());
            }
        }
    }
}
