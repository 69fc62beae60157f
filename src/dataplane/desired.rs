//! Desired data-plane state computed from the local claim and the programmable peers (pure).
//!
//! vxlan, per remote peer: neighbour `<subnet>.0 → VTEP MAC`, FDB `VTEP MAC → underlay IP`, route
//! `<subnet> via <subnet>.0 dev weft.<VNI> onlink`; in a dual-stack overlay the same device carries
//! IPv6 too: neighbour `<IPv6 subnet>:: → VTEP MAC`, route `<IPv6 subnet> via <IPv6 subnet>:: dev
//! weft.<VNI> onlink` (one FDB entry per peer serves both families). host-gw, per remote peer:
//! route `<subnet> via <underlay IP>`, and `<IPv6 subnet> via <IPv6 underlay IP>`.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use ring::digest;

use super::{Bridge, FdbEntry, Mac, Neighbour, Route, State, VxlanDevice};

/// VXLAN encapsulation overhead over an IPv4 underlay (outer IPv4 20 + UDP 8 + VXLAN 8 + inner
/// Ethernet 14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// The same over an IPv6 underlay (outer IPv6 header is 40 bytes).
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// flannel's VXLAN UDP port.
pub const VXLAN_PORT: u16 = 8472;

/// The VTEP MAC of a node: the first six bytes of SHA-256(node name), made a locally
/// administered unicast address. Stable across restarts and computable by every peer.
pub fn vtep_mac(node_name: &str) -> Mac {
    let hash = digest::digest(&digest::SHA256, node_name.as_bytes());
    let mut mac = [0u8; 6];
    for (out, byte) in mac.iter_mut().zip(hash.as_ref()) {
        *out = *byte;
    }
    mac[0] = (mac[0] | 0x02) & !0x01;
    mac
}

/// MTU of the VXLAN device for an underlay MTU.
pub fn vxlan_mtu(underlay_mtu: u32, underlay_is_v6: bool) -> u32 {
    let overhead = if underlay_is_v6 {
        VXLAN_OVERHEAD_V6
    } else {
        VXLAN_OVERHEAD_V4
    };
    underlay_mtu.saturating_sub(overhead)
}

/// The MTU containers get (FLANNEL_MTU, the bridge) on `backend`: host-gw adds no
/// encapsulation; vxlan (also with DirectRouting, where a peer may move off-link) pays its
/// overhead; udp its tunnel's frame overhead (`udp_mtu`, from [`crate::udp::tunnel_mtu`]).
pub fn overlay_mtu(
    backend: weft_proto::Backend,
    underlay_mtu: u32,
    underlay_is_v6: bool,
    udp_mtu: Option<u32>,
) -> u32 {
    match (backend, udp_mtu) {
        (_, Some(mtu)) => mtu,
        (weft_proto::Backend::HostGw, None) => underlay_mtu,
        _ => vxlan_mtu(underlay_mtu, underlay_is_v6),
    }
}

/// `weft.<vni>`.
pub fn vxlan_device_name(vni: u32) -> String {
    format!("weft.{vni}")
}

/// A remote node the data plane should reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTarget {
    pub name: String,
    /// Its IPv4 subnet (none in an IPv6-only overlay).
    pub subnet: Option<Ipv4Net>,
    pub underlay_ip: IpAddr,
    pub vtep_mac: Mac,
    /// Its IPv6 subnet, in a dual-stack overlay.
    pub ipv6_subnet: Option<Ipv6Net>,
    /// Its IPv6 underlay address (host-gw's IPv6 next hop), when it announces one.
    pub ipv6_underlay: Option<Ipv6Addr>,
}

/// Desired state for the vxlan backend. Peers whose underlay address family differs from the
/// device's local address cannot be reached through it and are left out.
pub fn vxlan_state(device: VxlanDevice, bridge: Option<Bridge>, peers: &[PeerTarget]) -> State {
    let mut state = State {
        bridge,
        ..State::default()
    };
    for peer in peers {
        if peer.underlay_ip.is_ipv4() != device.local_ip.is_ipv4() {
            tracing::debug!(
                peer = %peer.name,
                underlay = %peer.underlay_ip,
                "peer underlay address family differs from ours; not programmed"
            );
            continue;
        }
        let subnets = [
            peer.subnet.map(|s| IpNet::V4(s.trunc())),
            peer.ipv6_subnet
                .filter(|_| device.addr6.is_some())
                .map(|s| IpNet::V6(s.trunc())),
        ];
        for subnet in subnets.into_iter().flatten() {
            let gateway = subnet.network();
            state.neighbours.insert(Neighbour {
                ip: gateway,
                mac: peer.vtep_mac,
            });
            state.routes.insert(Route {
                dst: subnet,
                gateway,
                device: Some(device.name.clone()),
                onlink: true,
                mtu: None,
            });
        }
        state.fdb.insert(FdbEntry {
            mac: peer.vtep_mac,
            dst: peer.underlay_ip,
        });
    }
    state.vxlan = Some(device);
    state
}

/// Desired state for the host-gw backend: a plain route per peer via its (IPv4) underlay IP.
/// Whether the gateway is on-link is the caller's check (see `netlink::is_onlink`).
pub fn host_gw_state(bridge: Option<Bridge>, peers: &[PeerTarget]) -> State {
    let mut state = State {
        bridge,
        ..State::default()
    };
    for peer in peers {
        match (peer.subnet, peer.underlay_ip) {
            (Some(subnet), IpAddr::V4(gateway)) => {
                state.routes.insert(Route {
                    dst: IpNet::V4(subnet.trunc()),
                    gateway: IpAddr::V4(gateway),
                    device: None,
                    onlink: false,
                    mtu: None,
                });
            }
            (Some(_), IpAddr::V6(_)) => {
                tracing::debug!(peer = %peer.name, "host-gw needs an IPv4 underlay for IPv4 routes")
            }
            (None, _) => {}
        }
        if let (Some(subnet), Some(gateway)) = (peer.ipv6_subnet, peer.ipv6_underlay) {
            state.routes.insert(Route {
                dst: IpNet::V6(subnet.trunc()),
                gateway: IpAddr::V6(gateway),
                device: None,
                onlink: false,
                mtu: None,
            });
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn device() -> VxlanDevice {
        VxlanDevice {
            name: vxlan_device_name(1),
            port: VXLAN_PORT,
            mac: vtep_mac("a"),
            mtu: vxlan_mtu(1500, false),
            ..VxlanDevice::for_test()
        }
    }

    fn peer(name: &str, subnet: &str, ip: IpAddr) -> PeerTarget {
        PeerTarget {
            name: name.into(),
            subnet: subnet.parse().ok(),
            underlay_ip: ip,
            vtep_mac: vtep_mac(name),
            ipv6_subnet: None,
            ipv6_underlay: None,
        }
    }

    #[test]
    fn vtep_mac_is_stable_local_unicast_and_distinct() {
        let a = vtep_mac("node-a");
        assert_eq!(a, vtep_mac("node-a"));
        assert_ne!(a, vtep_mac("node-b"));
        for name in [
            "",
            "x",
            "node-a",
            "node-b",
            "a-very-long-node-name.example.org",
        ] {
            let mac = vtep_mac(name);
            assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
            assert_eq!(mac[0] & 0x01, 0, "unicast");
        }
        // Test vector (SHA-256("node-a") = 66570ff05a20...): peers of every version must agree.
        assert_eq!(a, [0x66, 0x57, 0x0f, 0xf0, 0x5a, 0x20]);
        // SHA-256("node-b") starts 0x93 (a multicast bit): fixed up to 0x92.
        assert_eq!(vtep_mac("node-b")[..2], [0x92, 0xef]);
    }

    #[test]
    fn mtu_overheads() {
        use weft_proto::Backend;
        assert_eq!(overlay_mtu(Backend::Vxlan, 1500, false, None), 1450);
        assert_eq!(overlay_mtu(Backend::Vxlan, 1500, true, None), 1430);
        assert_eq!(overlay_mtu(Backend::HostGw, 9000, false, None), 9000);
        assert_eq!(overlay_mtu(Backend::Udp, 1500, false, Some(1440)), 1440);
        assert_eq!(vxlan_mtu(1500, false), 1450);
        assert_eq!(vxlan_mtu(1500, true), 1430);
        assert_eq!(vxlan_mtu(9000, false), 8950);
        assert_eq!(vxlan_mtu(10, false), 0);
    }

    #[test]
    fn device_name() {
        assert_eq!(vxlan_device_name(1), "weft.1");
        assert_eq!(vxlan_device_name(4096), "weft.4096");
    }

    #[test]
    fn vxlan_state_per_peer_entries() {
        let peers = [
            peer("b", "10.244.1.0/24", "192.0.2.2".parse().unwrap()),
            // Not normalised on purpose: the network address is what counts.
            peer("c", "10.244.2.7/24", "192.0.2.3".parse().unwrap()),
            peer("v6", "10.244.4.0/24", IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        let s = vxlan_state(device(), None, &peers);
        assert_eq!(s.vxlan, Some(device()));
        assert_eq!(s.bridge, None);
        assert_eq!(s.neighbours.len(), 2);
        assert_eq!(s.fdb.len(), 2);
        assert_eq!(s.routes.len(), 2);
        assert!(s.neighbours.contains(&Neighbour {
            ip: IpAddr::V4(Ipv4Addr::new(10, 244, 2, 0)),
            mac: vtep_mac("c")
        }));
        assert!(s.fdb.contains(&FdbEntry {
            mac: vtep_mac("b"),
            dst: "192.0.2.2".parse().unwrap()
        }));
        assert!(s.routes.contains(&Route {
            dst: "10.244.2.0/24".parse().unwrap(),
            gateway: IpAddr::V4(Ipv4Addr::new(10, 244, 2, 0)),
            device: Some("weft.1".into()),
            onlink: true,
            mtu: None,
        }));
    }

    #[test]
    fn host_gw_state_routes_via_underlay() {
        let bridge = Bridge {
            name: "cni0".into(),
            addr: "10.244.3.1/24".parse().ok(),
            addr6: None,
            mtu: 1500,
        };
        let peers = [
            peer("b", "10.244.1.0/24", "192.0.2.2".parse().unwrap()),
            peer("v6", "10.244.4.0/24", IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        let s = host_gw_state(Some(bridge.clone()), &peers);
        assert_eq!(s.vxlan, None);
        assert_eq!(s.bridge, Some(bridge));
        assert!(s.neighbours.is_empty() && s.fdb.is_empty());
        assert_eq!(
            s.routes.into_iter().collect::<Vec<_>>(),
            vec![Route {
                dst: "10.244.1.0/24".parse().unwrap(),
                gateway: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
                device: None,
                onlink: false,
                mtu: None,
            }]
        );
    }
}
