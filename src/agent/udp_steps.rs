//! The driver's udp steps: the desired state of the udp backend (its TUN device, one route for
//! the whole overlay network to it, the bridge) and the peer table computed from the view,
//! handed to the running plane ([`crate::udp::plane`]).

use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;
use tracing::warn;

use super::driver::{Driver, note_kept};
use crate::dataplane::{self, Route, State};
use crate::files;
use crate::udp::plane::UdpPlane;
use crate::udp::{self, PeerSpec};

impl Driver {
    /// The udp backend's desired state: the bridge (if any) and one route for the whole overlay
    /// network to weft0 (the node's own subnet stays on the bridge, a longer prefix).
    pub(super) fn udp_desired(&self, udp: &UdpPlane) -> State {
        if self.lease.claim().is_none() {
            return State::default();
        }
        let mut state = State {
            tun: Some(dataplane::TunLink {
                name: udp::DEVICE.into(),
                mtu: udp.mtu(),
                addr: self.lease.claim().map(|(subnet, _)| subnet.network()),
            }),
            ..State::default()
        };
        if let (Some(bridge), Some(active)) = (&self.config.bridge, self.lease.active_subnet()) {
            state.bridge = Some(dataplane::Bridge {
                name: bridge.clone(),
                addr: Ipv4Net::new(files::first_host(active), active.prefix_len())
                    .unwrap_or(active),
                mtu: udp.mtu(),
            });
        }
        state.routes.insert(Route {
            dst: self.config.network,
            gateway: Ipv4Addr::UNSPECIFIED,
            device: Some(udp::DEVICE.into()),
            onlink: false,
        });
        state
    }

    /// Hands the current winners to the tunnel and keeps weft0's address on the own subnet.
    pub(super) async fn udp_step(&mut self) {
        let Some(udp) = &mut self.udp else { return };
        let claim = self.lease.own_claim();
        let mut peers: Vec<PeerSpec> = if claim.is_some() {
            self.view
                .winners(claim, &self.config.node_name)
                .into_iter()
                .filter_map(|r| {
                    let record = r.record()?;
                    Some(PeerSpec {
                        name: r.member.name.clone(),
                        subnet: r.holds?,
                        addr: SocketAddr::new(record.underlay_ip, record.tunnel_port),
                        public_key: record.public_key,
                        live: r.member.alive,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        peers.sort_by(|a, b| (a.subnet, &a.name).cmp(&(b.subnet, &b.name)));
        let update = udp.update_peers(peers);
        for peer in update.unkeyed {
            warn!(node = %self.config.node_name, peer = %peer, "peer publishes no tunnel key; its traffic is dropped");
        }
        if let Some(kept) = update.kept {
            note_kept(&self.config.node_name, "udp_peers", &self.metrics, kept);
        }
    }
}
