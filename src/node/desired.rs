//! What the kernel should hold, from what the node knows: its claim (settling or active), the
//! peers it programs (the winners of their subnets), which of them are on-link, the underlay,
//! and the configuration. Pure; the driver gathers the inputs and reconciles the result.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use weft_proto::Backend;

use crate::dataplane::desired::{PeerTarget, vxlan_device_name, vxlan_mtu};
use crate::dataplane::paths::{self, Onlink, Selection};
use crate::dataplane::underlay::UnderlayInfo;
use crate::dataplane::{self, Bridge, Masquerade, Masquerade6, Route, State, TunLink, VxlanDevice};
use crate::files::{first_host, first_host_v6};

/// What the desired state is built from.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// The configured backend.
    pub backend: Backend,
    /// vxlan with plain routes to on-link peers.
    pub direct_routing: bool,
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The VXLAN UDP port.
    pub vxlan_port: u16,
    /// The overlay network.
    pub network: Ipv4Net,
    /// The IPv6 overlay network (dual-stack).
    pub network6: Option<Ipv6Net>,
    /// Whether to masquerade what leaves the overlay (`--ip-masq`).
    pub ip_masq: bool,
    /// The bridge weft owns (`--bridge`).
    pub bridge: Option<&'a str>,
    /// This node's claim (settling or active).
    pub claim: Option<Ipv4Net>,
    /// Its subnet once the claim is active.
    pub active: Option<Ipv4Net>,
    /// The IPv6 subnet claimed with `claim` (dual-stack).
    pub claim6: Option<Ipv6Net>,
    /// The IPv6 subnet claimed with `active`, once active (dual-stack).
    pub active6: Option<Ipv6Net>,
    /// The underlay in use.
    pub underlay: &'a UnderlayInfo,
    /// This node's VTEP MAC (vxlan).
    pub vtep_mac: dataplane::Mac,
    /// The udp tunnel's MTU when the backend is udp.
    pub udp_mtu: Option<u32>,
    /// The peers to program (the winner of each subnet).
    pub peers: &'a [PeerTarget],
    /// Which peers are on-link (host-gw, DirectRouting).
    pub onlink: &'a Onlink,
}

/// The desired state and each peer's fate (programmed, and how; or skipped, and why).
pub fn selection(i: &Inputs) -> Selection {
    let mut selection = peer_selection(i);
    // `--ip-masq`: the masquerade table follows the active subnet.
    selection.state.masq = match i.active {
        Some(subnet) if i.ip_masq => Some(Masquerade {
            network: i.network,
            subnet,
        }),
        _ => None,
    };
    selection.state.masq6 = match (i.network6, i.active6) {
        (Some(network), Some(subnet)) if i.ip_masq => Some(Masquerade6 { network, subnet }),
        _ => None,
    };
    selection
}

/// The MTU containers get (FLANNEL_MTU, the bridge).
pub fn overlay_mtu(i: &Inputs) -> u32 {
    dataplane::desired::overlay_mtu(
        i.backend,
        i.underlay.mtu,
        i.underlay.ip.is_ipv6(),
        i.udp_mtu,
    )
}

/// The bridge, once the claim is active: the first address of each family's subnet.
fn bridge(i: &Inputs, mtu: u32) -> Option<Bridge> {
    let name = i.bridge?;
    if i.active.is_none() && i.active6.is_none() {
        return None;
    }
    Some(Bridge {
        name: name.to_string(),
        addr: i
            .active
            .map(|s| Ipv4Net::new(first_host(s), s.prefix_len()).unwrap_or(s)),
        addr6: i
            .active6
            .map(|s| Ipv6Net::new(first_host_v6(s), s.prefix_len()).unwrap_or(s)),
        mtu,
    })
}

fn peer_selection(i: &Inputs) -> Selection {
    // Nothing is programmed before this node holds a claim (of either family).
    if i.claim.is_none() && i.claim6.is_none() {
        return Selection::default();
    }
    if let Some(mtu) = i.udp_mtu {
        return Selection {
            state: udp_state(i, mtu),
            ..Selection::default()
        };
    }
    let device = match i.backend {
        Backend::Vxlan => Some(VxlanDevice {
            name: vxlan_device_name(i.vni),
            vni: i.vni,
            port: i.vxlan_port,
            local_ip: i.underlay.ip,
            underlay_ifindex: Some(i.underlay.ifindex),
            mac: i.vtep_mac,
            mtu: vxlan_mtu(i.underlay.mtu, i.underlay.ip.is_ipv6()),
            addr: i.claim.map(|s| s.network()),
            addr6: i.claim6.map(|s| s.network()),
        }),
        Backend::HostGw | Backend::Udp => None,
    };
    paths::select(
        i.backend,
        i.direct_routing,
        device,
        bridge(i, overlay_mtu(i)),
        i.peers,
        i.onlink,
    )
}

/// The udp backend: its TUN device with `<subnet>.0`, the bridge, and one route for each
/// family's whole overlay network to the device (the node's own subnet stays on the bridge, a
/// longer prefix).
fn udp_state(i: &Inputs, mtu: u32) -> State {
    let mut state = State {
        tun: Some(TunLink {
            name: dataplane::TUN_DEVICE.into(),
            mtu,
            addr: i.claim.map(|s| s.network()),
            addr6: i.claim6.map(|s| s.network()),
        }),
        bridge: bridge(i, mtu),
        ..State::default()
    };
    if i.claim.is_some() {
        state.routes.insert(Route {
            dst: IpNet::V4(i.network),
            gateway: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            device: Some(dataplane::TUN_DEVICE.into()),
            onlink: false,
            mtu: None,
        });
    }
    if let Some(network6) = i.network6.filter(|_| i.claim6.is_some()) {
        state.routes.insert(Route {
            dst: IpNet::V6(network6),
            gateway: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            device: Some(dataplane::TUN_DEVICE.into()),
            onlink: false,
            mtu: None,
        });
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(
        underlay: &'a UnderlayInfo,
        peers: &'a [PeerTarget],
        onlink: &'a Onlink,
    ) -> Inputs<'a> {
        Inputs {
            backend: Backend::Vxlan,
            direct_routing: false,
            vni: 1,
            vxlan_port: 8472,
            network: "10.244.0.0/16".parse().unwrap(),
            network6: None,
            ip_masq: true,
            bridge: Some("cni0"),
            claim: Some("10.244.3.0/24".parse().unwrap()),
            active: None,
            claim6: None,
            active6: None,
            underlay,
            vtep_mac: [2, 0, 0, 0, 0, 1],
            udp_mtu: None,
            peers,
            onlink,
        }
    }

    #[test]
    fn an_ipv6_only_node_programs_no_ipv4_on_any_backend() {
        let underlay = UnderlayInfo {
            ifname: "eth0".into(),
            ifindex: 2,
            ip: "2001:db8::1".parse().unwrap(),
            mtu: 1500,
            ipv6: Some("2001:db8::1".parse().unwrap()),
        };
        let peers = [PeerTarget {
            name: "b".into(),
            subnet: None,
            underlay_ip: "2001:db8::2".parse().unwrap(),
            vtep_mac: [2, 0, 0, 0, 0, 2],
            ipv6_subnet: Some("fd00:10:244:4::/64".parse().unwrap()),
            ipv6_underlay: Some("2001:db8::2".parse().unwrap()),
        }];
        let onlink = Onlink::Known(std::collections::BTreeSet::from(["2001:db8::2"
            .parse()
            .unwrap()]));
        let mut i = inputs(&underlay, &peers, &onlink);
        i.network6 = Some("fd00:10:244::/56".parse().unwrap());
        i.claim = None;
        i.claim6 = Some("fd00:10:244:3::/64".parse().unwrap());
        i.active6 = i.claim6;
        let v4_free = |s: &State| {
            s.routes.iter().all(|r| r.dst.addr().is_ipv6())
                && s.neighbours.iter().all(|n| n.ip.is_ipv6())
                && s.bridge.as_ref().is_none_or(|b| b.addr.is_none())
                && s.masq.is_none()
        };
        let s = selection(&i).state;
        let dev = s.vxlan.as_ref().unwrap();
        assert_eq!((dev.addr, dev.mtu), (None, 1430));
        assert_eq!(dev.addr6, Some("fd00:10:244:3::".parse().unwrap()));
        assert!(v4_free(&s), "{s:?}");
        assert_eq!(s.routes.len(), 1);
        assert_eq!(
            s.masq6.map(|m| m.subnet.to_string()).as_deref(),
            Some("fd00:10:244:3::/64"),
            "--ip-masq: the IPv6 table alone"
        );
        i.backend = Backend::HostGw;
        let s = selection(&i).state;
        assert!(v4_free(&s), "{s:?}");
        assert_eq!(
            s.routes
                .iter()
                .map(|r| r.gateway.to_string())
                .collect::<Vec<_>>(),
            ["2001:db8::2"],
            "host-gw via the peer's IPv6 underlay"
        );
        i.backend = Backend::Udp;
        i.udp_mtu = Some(1420);
        let s = selection(&i).state;
        assert!(v4_free(&s), "{s:?}");
        let tun = s.tun.as_ref().unwrap();
        assert_eq!((tun.addr, tun.addr6), (None, i.claim6.map(|s| s.network())));
        assert_eq!(s.routes.len(), 1, "one route, for the IPv6 network");
    }

    #[test]
    fn a_dual_stack_node_carries_both_families_on_one_device_and_one_fdb_entry_per_peer() {
        let underlay = UnderlayInfo {
            ifname: "eth0".into(),
            ifindex: 2,
            ip: "192.0.2.1".parse().unwrap(),
            mtu: 1500,
            ipv6: None,
        };
        let peers = [PeerTarget {
            name: "b".into(),
            subnet: "10.244.4.0/24".parse().ok(),
            underlay_ip: "192.0.2.2".parse().unwrap(),
            vtep_mac: [2, 0, 0, 0, 0, 2],
            ipv6_subnet: Some("fd00:10:244:4::/64".parse().unwrap()),
            ipv6_underlay: None,
        }];
        let onlink = Onlink::Unknown;
        let mut i = inputs(&underlay, &peers, &onlink);
        i.claim6 = Some("fd00:10:244:3::/64".parse().unwrap());
        i.active = i.claim;
        i.active6 = i.claim6;
        let s = selection(&i).state;
        let dev = s.vxlan.as_ref().unwrap();
        assert_eq!(dev.addr6, Some("fd00:10:244:3::".parse().unwrap()));
        assert_eq!(dev.mtu, 1450, "the same device, the same MTU rule");
        assert_eq!(
            s.bridge
                .as_ref()
                .and_then(|b| b.addr6)
                .map(|a| a.to_string()),
            Some("fd00:10:244:3::1/64".into())
        );
        assert_eq!(s.fdb.len(), 1, "one FDB entry serves both families");
        let neighbours: Vec<String> = s.neighbours.iter().map(|n| n.ip.to_string()).collect();
        assert_eq!(neighbours, ["10.244.4.0", "fd00:10:244:4::"]);
        let routes: Vec<String> = s
            .routes
            .iter()
            .map(|r| format!("{} via {} onlink={}", r.dst, r.gateway, r.onlink))
            .collect();
        assert_eq!(
            routes,
            [
                "10.244.4.0/24 via 10.244.4.0 onlink=true",
                "fd00:10:244:4::/64 via fd00:10:244:4:: onlink=true"
            ]
        );
        // host-gw: IPv6 routes go via the peer's IPv6 underlay address, when it announces one.
        i.backend = Backend::HostGw;
        let sel = selection(&i);
        assert!(sel.state.routes.is_empty(), "{:?}", sel.state.routes);
        assert!(
            sel.skipped
                .get("b")
                .is_some_and(|why| why.contains("IPv6 underlay address")),
            "a dual-stack peer without an IPv6 underlay address is not half-programmed: {:?}",
            sel.skipped
        );
        let peers6 = [PeerTarget {
            ipv6_underlay: Some("2001:db8::2".parse().unwrap()),
            ..peers[0].clone()
        }];
        i.peers = &peers6;
        let s = selection(&i).state;
        assert!(
            s.routes
                .iter()
                .any(|r| r.dst.to_string() == "fd00:10:244:4::/64"
                    && r.gateway.to_string() == "2001:db8::2"),
            "{:?}",
            s.routes
        );
    }

    #[test]
    fn bridge_and_masquerade_wait_for_the_active_subnet_and_mtus_follow_the_backend() {
        let underlay = UnderlayInfo {
            ifname: "eth0".into(),
            ifindex: 2,
            ip: "192.0.2.1".parse().unwrap(),
            mtu: 1500,
            ipv6: None,
        };
        let peers = [PeerTarget {
            name: "b".into(),
            subnet: "10.244.4.0/24".parse().ok(),
            underlay_ip: "192.0.2.2".parse().unwrap(),
            vtep_mac: [2, 0, 0, 0, 0, 2],
            ipv6_subnet: None,
            ipv6_underlay: None,
        }];
        let onlink = Onlink::Unknown;
        let mut i = inputs(&underlay, &peers, &onlink);
        let settling = selection(&i).state;
        assert_eq!(settling.vxlan.as_ref().map(|d| d.mtu), Some(1450));
        assert!(settling.bridge.is_none() && settling.masq.is_none());
        assert_eq!(settling.routes.len(), 1);
        i.active = i.claim;
        let active = selection(&i).state;
        assert_eq!(
            active
                .bridge
                .as_ref()
                .map(|b| (b.addr.unwrap().to_string(), b.mtu)),
            Some(("10.244.3.1/24".into(), 1450))
        );
        assert_eq!(active.masq.map(|m| m.subnet), i.claim);
        // udp: the TUN device at the tunnel MTU, one route for the network, no VXLAN.
        i.udp_mtu = Some(1440);
        i.backend = Backend::Udp;
        let udp = selection(&i).state;
        assert_eq!(
            udp.tun.as_ref().map(|t| (t.mtu, t.addr)),
            Some((1440, Some("10.244.3.0".parse().unwrap())))
        );
        assert!(udp.vxlan.is_none());
        assert_eq!(udp.bridge.map(|b| b.mtu), Some(1440));
        // host-gw: the underlay MTU.
        i.udp_mtu = None;
        i.backend = Backend::HostGw;
        assert_eq!(overlay_mtu(&i), 1500);
        // No claim: nothing but what needs no subnet.
        i.claim = None;
        i.active = None;
        assert_eq!(selection(&i).state, State::default());
    }
}
