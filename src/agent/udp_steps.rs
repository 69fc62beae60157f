//! The driver's udp step: the peer table computed from the view, handed to the running plane
//! ([`crate::udp::plane`]). The backend's desired state is in `node::desired`.

use std::net::SocketAddr;

use tracing::warn;

use super::driver::{Driver, note_kept};
use crate::udp::PeerSpec;

impl Driver {
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
                        ipv6_subnet: None,
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
