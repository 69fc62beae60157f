//! The node and its path probes: what it hands the prober (the address it answers on, the peers
//! to probe and where they answer, the overlay MTU) and what it takes back (each path's state:
//! the route MTUs of the desired state, the PATH column, and the fleet view of broken pairs).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use weft_proto::Backend;

use super::Node;
use crate::dataplane::State;
use crate::lease::{self, Subnets};
use crate::probe::fleet::FleetReport;
use crate::probe::path::{Expected, PathState};
use crate::probe::prober::Target;

/// What the prober needs from the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbePlan {
    /// The address this node answers probes on (its active subnet's overlay address), once it
    /// has one.
    pub local: Option<IpAddr>,
    /// The peers to probe.
    pub targets: Vec<Target>,
    /// The largest packet the overlay carries.
    pub overlay_mtu: u32,
}

/// What the probes found, as the node keeps it.
#[derive(Clone, Debug, Default)]
pub struct ProbeFacts {
    /// Each probed peer's path.
    pub states: BTreeMap<String, PathState>,
    /// When they were read (since start).
    pub at: Duration,
    /// The wall clock at the start, in Unix ms (path times count from it).
    pub start_unix_ms: u64,
    /// The fleet's broken pairs.
    pub fleet: Option<FleetReport>,
}

/// Where a node with `subnets` answers probes: on vxlan and udp the subnet's network address
/// (held by `weft.<VNI>` or `weft-tun`), on host-gw the first host address (held by the bridge,
/// weft's own or the CNI plugin's `cni0`). IPv4 when the overlay has it, else IPv6.
pub fn probe_addr(backend: Backend, subnets: Subnets) -> Option<IpAddr> {
    let host_gw = backend == Backend::HostGw;
    if let Some(v4) = subnets.v4 {
        let net = u32::from(v4.network());
        return Some(IpAddr::V4((net + u32::from(host_gw)).into()));
    }
    let v6 = subnets.v6?;
    let net = u128::from(v6.network());
    Some(IpAddr::V6((net + u128::from(host_gw)).into()))
}

impl Node {
    /// The prober's plan: `answering` are the peers that announce a path summary (they answer
    /// probes); of them, the ones this node programs are probed.
    pub fn probe_plan(&self, answering: &BTreeSet<String>) -> ProbePlan {
        let backend = self.config.backend;
        let local = self
            .lease
            .active_subnet()
            .and_then(|s| probe_addr(backend, self.identity.subnets(s)));
        let mut targets = Vec::new();
        if local.is_some() {
            // The newest live generation of each name (a restart's old one may linger).
            let mut alive: BTreeMap<&str, u64> = BTreeMap::new();
            for r in self.view.members.iter().filter(|r| r.member.alive) {
                let g = alive.entry(r.member.name.as_str()).or_insert(0);
                *g = (*g).max(r.member.generation);
            }
            for (name, _, record) in self.targets() {
                if !answering.contains(&name) || self.programming.programmed(&name).is_none() {
                    continue;
                }
                let Some(&generation) = alive.get(name.as_str()) else {
                    continue;
                };
                // Same family as this node's own probe address.
                let Some(addr) = probe_addr(backend, lease::record_subnets(&record))
                    .filter(|a| local.is_some_and(|l| l.is_ipv4() == a.is_ipv4()))
                else {
                    continue;
                };
                targets.push(Target {
                    expected: Expected {
                        name,
                        generation,
                        vtep_mac: (backend == Backend::Vxlan).then_some(record.vtep_mac),
                    },
                    addr,
                });
            }
        }
        ProbePlan {
            local,
            targets,
            overlay_mtu: self.overlay_mtu(),
        }
    }

    /// What the probes found now.
    pub fn probes_observed(&mut self, facts: ProbeFacts) {
        self.probes = Some(facts);
    }

    /// The overlay MTU of the running backend.
    pub fn overlay_mtu(&self) -> u32 {
        let peers: [crate::dataplane::desired::PeerTarget; 0] = [];
        crate::node::desired::overlay_mtu(&self.desired_inputs(&peers))
    }

    /// Puts the per-peer route MTUs on `state`'s routes: every subnet (of either family) of a
    /// peer whose path carries less than the overlay MTU (on udp, a route of its own into the
    /// TUN device).
    pub(super) fn apply_route_mtus(&self, state: &mut State) {
        let Some(probes) = &self.probes else {
            return;
        };
        let overlay_mtu = self.overlay_mtu();
        let mut mtus: BTreeMap<IpNet, u32> = BTreeMap::new();
        for (name, _, record) in self.targets() {
            let Some(mtu) = probes
                .states
                .get(&name)
                .and_then(|s| crate::probe::route_mtu(s, overlay_mtu))
            else {
                continue;
            };
            let subnets = lease::record_subnets(&record);
            if let Some(v4) = subnets.v4 {
                mtus.insert(IpNet::V4(v4), mtu);
            }
            if let Some(v6) = subnets.v6 {
                // The search never goes below 1280, IPv6's minimum.
                mtus.insert(IpNet::V6(v6), mtu.max(1280));
            }
        }
        if self.udp.is_some() {
            // One route carries the whole overlay into the TUN device: a reduced peer gets a
            // longer route of its own, into the same device, with the MTU that passes.
            for (dst, mtu) in mtus {
                let gateway = match dst {
                    IpNet::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    IpNet::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                };
                state.routes.insert(crate::dataplane::Route {
                    dst,
                    gateway,
                    device: Some(crate::dataplane::TUN_DEVICE.into()),
                    onlink: false,
                    mtu: Some(mtu),
                });
            }
            return;
        }
        crate::probe::apply_route_mtus(state, &mtus);
    }

    /// The PATH of one peer for the status.
    pub(super) fn path_report(&self, peer: &str) -> Option<crate::probe::PathReport> {
        let p = self.probes.as_ref()?;
        Some(p.states.get(peer)?.report(p.start_unix_ms))
    }

    /// The fleet view for the status.
    pub(super) fn fleet_report(&self) -> Option<FleetReport> {
        self.probes.as_ref()?.fleet.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_addresses_follow_the_backend_and_family() {
        let v4 = Subnets {
            v4: "10.244.3.0/24".parse().ok(),
            v6: "fd00:0:0:3::/64".parse().ok(),
        };
        let v6 = Subnets {
            v4: None,
            v6: "fd00:0:0:3::/64".parse().ok(),
        };
        let a = |b, s| probe_addr(b, s).map(|a: IpAddr| a.to_string());
        assert_eq!(a(Backend::Vxlan, v4).as_deref(), Some("10.244.3.0"));
        assert_eq!(a(Backend::Udp, v4).as_deref(), Some("10.244.3.0"));
        assert_eq!(a(Backend::HostGw, v4).as_deref(), Some("10.244.3.1"));
        assert_eq!(a(Backend::Vxlan, v6).as_deref(), Some("fd00:0:0:3::"));
        assert_eq!(a(Backend::HostGw, v6).as_deref(), Some("fd00:0:0:3::1"));
        assert_eq!(probe_addr(Backend::Vxlan, Subnets::default()), None);
    }
}
