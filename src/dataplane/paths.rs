//! Per-peer path selection for the kernel backends (pure): host-gw routes a peer's subnet via its
//! underlay IP and needs the peer on-link (same L2 segment); vxlan encapsulates, and with
//! DirectRouting uses a plain host-gw route for on-link peers and the VXLAN triple for the rest.
//! Peers that cannot be programmed are reported with the reason, never silently dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weft_proto::Backend;

use super::desired::{PeerTarget, host_gw_state, vxlan_state};
use super::{Bridge, State, VxlanDevice};

/// How this host reaches one peer's subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    /// `<subnet> via <underlay IP>` (host-gw, or vxlan with DirectRouting for an on-link peer).
    Direct,
    /// Neighbour + FDB + route through the VXLAN device.
    Vxlan,
}

impl Path {
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "host-gw",
            Path::Vxlan => "vxlan",
        }
    }
}

/// Which underlay addresses are on-link (reachable without a gateway). `Unknown` (e.g. a fake or
/// dry-run data plane that cannot tell) counts every peer as on-link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Onlink {
    #[default]
    Unknown,
    Known(BTreeSet<IpAddr>),
}

impl Onlink {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match self {
            Onlink::Unknown => true,
            Onlink::Known(set) => set.contains(&ip),
        }
    }
}

/// The desired state for a set of peers, and each peer's fate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub state: State,
    /// Programmed peers (by name) and their path.
    pub paths: BTreeMap<String, Path>,
    /// Peers (by name) that are not programmed, with the reason.
    pub skipped: BTreeMap<String, String>,
}

/// Whether a backend needs on-link information at all.
pub fn needs_onlink(backend: Backend, direct_routing: bool) -> bool {
    match backend {
        Backend::HostGw => true,
        Backend::Vxlan => direct_routing,
        Backend::Udp => false,
    }
}

/// The desired state for the kernel backends. `device` is the VXLAN device (vxlan only; host-gw
/// passes `None`). A host-gw peer that is not on-link is skipped with a reason; with DirectRouting
/// such a peer goes through VXLAN instead. `udp` has no per-peer kernel entries: only the bridge.
pub fn select(
    backend: Backend,
    direct_routing: bool,
    device: Option<VxlanDevice>,
    bridge: Option<Bridge>,
    peers: &[PeerTarget],
    onlink: &Onlink,
) -> Selection {
    let mut direct = Vec::new();
    let mut tunnelled = Vec::new();
    let mut skipped = BTreeMap::new();
    for peer in peers {
        let on_link = onlink.contains(peer.underlay_ip);
        match backend {
            // An IPv4 subnet is routed via the peer's IPv4 underlay address.
            Backend::HostGw if peer.subnet.is_some() && !peer.underlay_ip.is_ipv4() => {
                skipped.insert(
                    peer.name.clone(),
                    format!(
                        "host-gw needs an IPv4 underlay; peer is at {}",
                        peer.underlay_ip
                    ),
                );
            }
            Backend::HostGw if !on_link => {
                skipped.insert(
                    peer.name.clone(),
                    format!(
                        "not on-link: underlay IP {} is not on a directly connected network (host-gw needs L2 adjacency; use vxlan, or vxlan with DirectRouting)",
                        peer.underlay_ip
                    ),
                );
            }
            // A dual-stack peer's IPv6 subnet is routed via its IPv6 underlay address.
            Backend::HostGw if peer.ipv6_subnet.is_some() && peer.ipv6_underlay.is_none() => {
                skipped.insert(
                    peer.name.clone(),
                    "host-gw needs the peer's IPv6 underlay address for its IPv6 subnet (it \
                     announces none: give it --public-ipv6, or a global IPv6 address on its \
                     underlay interface)"
                        .to_string(),
                );
            }
            Backend::HostGw => direct.push(peer.clone()),
            Backend::Vxlan => {
                let family_ok = device
                    .as_ref()
                    .is_some_and(|d| d.local_ip.is_ipv4() == peer.underlay_ip.is_ipv4());
                if !family_ok {
                    skipped.insert(
                        peer.name.clone(),
                        format!(
                            "underlay address family of {} differs from this node's",
                            peer.underlay_ip
                        ),
                    );
                } else if direct_routing
                    && on_link
                    && (peer.subnet.is_none() || peer.underlay_ip.is_ipv4())
                    && (peer.ipv6_subnet.is_none() || peer.ipv6_underlay.is_some())
                {
                    direct.push(peer.clone());
                } else {
                    tunnelled.push(peer.clone());
                }
            }
            // The udp tunnel reaches peers through its own device and loop, not per-peer
            // kernel entries.
            Backend::Udp => {}
        }
    }
    let mut state = match device {
        Some(dev) if backend == Backend::Vxlan => vxlan_state(dev, bridge.clone(), &tunnelled),
        _ => State {
            bridge: bridge.clone(),
            ..State::default()
        },
    };
    state.routes.extend(host_gw_state(None, &direct).routes);
    let mut paths = BTreeMap::new();
    for p in &direct {
        paths.insert(p.name.clone(), Path::Direct);
    }
    for p in &tunnelled {
        paths.insert(p.name.clone(), Path::Vxlan);
    }
    Selection {
        state,
        paths,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::dataplane::Route;
    use crate::dataplane::desired::{VXLAN_PORT, vtep_mac, vxlan_device_name};

    fn device() -> VxlanDevice {
        VxlanDevice {
            name: vxlan_device_name(1),
            port: VXLAN_PORT,
            mac: vtep_mac("a"),
            ..VxlanDevice::for_test()
        }
    }

    fn peer(name: &str, subnet: &str, ip: &str) -> PeerTarget {
        PeerTarget {
            name: name.into(),
            subnet: subnet.parse().ok(),
            underlay_ip: ip.parse().unwrap(),
            vtep_mac: vtep_mac(name),
            ipv6_subnet: None,
            ipv6_underlay: None,
        }
    }

    fn peers() -> Vec<PeerTarget> {
        vec![
            peer("b", "10.244.1.0/24", "192.0.2.2"),
            peer("c", "10.244.2.0/24", "198.51.100.3"),
        ]
    }

    fn onlink(ips: &[&str]) -> Onlink {
        Onlink::Known(ips.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn direct_route(dst: &str, gw: [u8; 4]) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            gateway: IpAddr::V4(Ipv4Addr::from(gw)),
            device: None,
            onlink: false,
            mtu: None,
        }
    }

    #[test]
    fn host_gw_programs_onlink_peers_and_explains_the_rest() {
        let s = select(
            Backend::HostGw,
            false,
            None,
            None,
            &peers(),
            &onlink(&["192.0.2.2"]),
        );
        assert_eq!(s.state.vxlan, None);
        assert!(s.state.neighbours.is_empty() && s.state.fdb.is_empty());
        assert_eq!(
            s.state.routes.iter().cloned().collect::<Vec<_>>(),
            vec![direct_route("10.244.1.0/24", [192, 0, 2, 2])]
        );
        assert_eq!(s.paths.get("b"), Some(&Path::Direct));
        assert!(!s.paths.contains_key("c"));
        let why = s.skipped.get("c").expect("c skipped");
        assert!(
            why.contains("not on-link") && why.contains("198.51.100.3"),
            "{why}"
        );
    }

    #[test]
    fn host_gw_with_unknown_onlink_programs_everyone() {
        let s = select(
            Backend::HostGw,
            false,
            None,
            None,
            &peers(),
            &Onlink::Unknown,
        );
        assert_eq!(s.state.routes.len(), 2);
        assert!(s.skipped.is_empty());
    }

    #[test]
    fn host_gw_refuses_ipv6_peers() {
        let mut ps = peers();
        ps.push(PeerTarget {
            underlay_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
            ..peer("v6", "10.244.4.0/24", "192.0.2.9")
        });
        let s = select(Backend::HostGw, false, None, None, &ps, &Onlink::Unknown);
        assert_eq!(s.state.routes.len(), 2);
        assert!(s.skipped["v6"].contains("IPv4"));
    }

    #[test]
    fn vxlan_without_direct_routing_tunnels_everyone() {
        let s = select(
            Backend::Vxlan,
            false,
            Some(device()),
            None,
            &peers(),
            &onlink(&["192.0.2.2", "198.51.100.3"]),
        );
        assert_eq!(s.state.vxlan, Some(device()));
        assert_eq!(s.state.fdb.len(), 2);
        assert_eq!(s.state.neighbours.len(), 2);
        assert!(
            s.state
                .routes
                .iter()
                .all(|r| r.onlink && r.device.is_some())
        );
        assert_eq!(s.paths.values().filter(|p| **p == Path::Vxlan).count(), 2);
    }

    #[test]
    fn direct_routing_splits_by_onlink() {
        let s = select(
            Backend::Vxlan,
            true,
            Some(device()),
            None,
            &peers(),
            &onlink(&["192.0.2.2"]),
        );
        assert_eq!(s.paths["b"], Path::Direct);
        assert_eq!(s.paths["c"], Path::Vxlan);
        assert!(s.skipped.is_empty());
        assert!(
            s.state
                .routes
                .contains(&direct_route("10.244.1.0/24", [192, 0, 2, 2]))
        );
        // c: the full VXLAN triple; b: no neighbour or FDB entry.
        assert_eq!(s.state.fdb.len(), 1);
        assert_eq!(s.state.fdb.iter().next().unwrap().mac, vtep_mac("c"));
        assert_eq!(s.state.neighbours.len(), 1);
        assert!(s.state.routes.contains(&Route {
            dst: "10.244.2.0/24".parse().unwrap(),
            gateway: IpAddr::V4(Ipv4Addr::new(10, 244, 2, 0)),
            device: Some("weft.1".into()),
            onlink: true,
            mtu: None,
        }));
        // The device stays even when every peer is direct (peers may move off-link).
        let all_direct = select(
            Backend::Vxlan,
            true,
            Some(device()),
            None,
            &peers(),
            &onlink(&["192.0.2.2", "198.51.100.3"]),
        );
        assert_eq!(all_direct.state.vxlan, Some(device()));
        assert!(all_direct.state.fdb.is_empty());
        assert_eq!(all_direct.state.routes.len(), 2);
    }

    #[test]
    fn needs_onlink_only_where_it_matters() {
        assert!(needs_onlink(Backend::HostGw, false));
        assert!(needs_onlink(Backend::Vxlan, true));
        assert!(!needs_onlink(Backend::Vxlan, false));
        assert!(!needs_onlink(Backend::Udp, true));
    }
}
