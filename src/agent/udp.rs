//! The `udp` backend in the agent: starts the tunnel ([`crate::tunnel`]), labels and sizes its
//! TUN device, publishes the tunnel port and public key, feeds the peer table from the peer view,
//! and contributes the desired state (one route for the whole overlay network to `weft0`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ipnet::Ipv4Net;
use ring::rand::SecureRandom;
use rtnetlink::LinkUnspec;
use tracing::{info, warn};
use weft_proto::Backend;

use super::{AgentError, UnderlayInfo, Worker, files};
use crate::config::Config;
use crate::dataplane::{self, LINK_ALIAS, Route, State};
use crate::tunnel::{self, PeerSpec, Tunnel, TunnelConfig, TunnelCounters};

/// The udp backend's part of the agent.
pub(super) struct UdpPlane {
    /// `None` when nothing may touch the kernel (dry run, an injected data plane).
    tunnel: Option<Tunnel>,
    public_key: [u8; 32],
    encrypted: bool,
    pub(super) mtu: u32,
    peers: Vec<PeerSpec>,
    /// The subnet whose `.0` address weft0 holds.
    addressed: Option<Ipv4Net>,
}

impl UdpPlane {
    /// `None` unless the backend is udp. A fresh X25519 key pair is drawn at every start (ring
    /// cannot persist private keys and need not: peers learn the new public key with the new
    /// generation's record, which rotates every pair's keys at each restart).
    pub(super) async fn start(
        config: &Config,
        underlay: &UnderlayInfo,
        kernel: bool,
        counters: Arc<TunnelCounters>,
    ) -> Result<Option<UdpPlane>, AgentError> {
        if config.backend != Backend::Udp {
            return Ok(None);
        }
        let mut private_key = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut private_key)
            .map_err(|_| AgentError::Config("cannot draw a tunnel key".into()))?;
        let public_key = weft_proto::frame::public_key(&private_key);
        let encrypted = config.udp_encryption;
        let mtu = tunnel::tunnel_mtu(underlay.mtu, underlay.ip.is_ipv6(), encrypted);
        if mtu < 576 {
            return Err(AgentError::Underlay(format!(
                "underlay MTU {} leaves {mtu} for the udp tunnel (at least 576 needed)",
                underlay.mtu
            )));
        }
        let tunnel = if kernel {
            let cfg = TunnelConfig {
                device: tunnel::DEVICE.into(),
                bind: SocketAddr::new(underlay.ip, config.udp_port),
                mtu,
                private_key: encrypted.then_some(private_key),
            };
            let t =
                Tunnel::start(cfg, counters).map_err(|e| AgentError::Underlay(e.to_string()))?;
            configure_link(mtu).await?;
            Some(t)
        } else {
            None
        };
        info!(node = %config.node_name, port = config.udp_port, mtu, encrypted, "udp tunnel started");
        if !encrypted {
            warn!(node = %config.node_name, "udp tunnel frames are NOT encrypted (--udp-encryption off)");
        }
        Ok(Some(UdpPlane {
            tunnel,
            public_key,
            encrypted,
            mtu,
            peers: Vec::new(),
            addressed: None,
        }))
    }

    pub(super) fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// Stops the tunnel and deletes `weft0` with its address and routes (`weft leave`). A plain
    /// shutdown only drops the tunnel, which leaves the persistent device for the next start.
    pub(super) fn stop(&mut self) {
        if let Some(t) = self.tunnel.take() {
            t.remove();
        }
    }
}

/// MTU, alias and up on weft0, through rtnetlink.
async fn configure_link(mtu: u32) -> Result<(), AgentError> {
    let index = ifindex(tunnel::DEVICE)
        .ok_or_else(|| AgentError::Underlay(format!("{} vanished", tunnel::DEVICE)))?;
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| AgentError::Underlay(format!("netlink: {e}")))?;
    let task = tokio::spawn(conn);
    let msg = LinkUnspec::new_with_index(index)
        .mtu(mtu)
        // The TX thread drains the queue in batches; the default 500 drops under a burst and
        // TCP then backs off (measured: 2,700 retransmits in 5 s at 500, none at 10,000).
        .txqueuelen(10_000)
        .alias(LINK_ALIAS)
        .up()
        .build();
    let result = handle.link().set(msg).execute().await;
    task.abort();
    // No IPv6 on weft0: the tunnel carries IPv4 only (and router solicitations would count as
    // drops). /proc/sys/net is this network namespace's. Best effort.
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", tunnel::DEVICE),
        "1",
    );
    result.map_err(|e| AgentError::Underlay(format!("configure {}: {e}", tunnel::DEVICE)))
}

/// `<subnet>.0/32` on weft0, the source address the host uses towards the overlay.
async fn set_address(subnet: Ipv4Net) -> Result<(), String> {
    let index = ifindex(tunnel::DEVICE).ok_or("no device")?;
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let result = handle
        .address()
        .add(index, IpAddr::V4(subnet.network()), 32)
        .replace()
        .execute()
        .await;
    task.abort();
    result.map_err(|e| e.to_string())
}

fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

impl Worker {
    /// The udp backend's desired state: the bridge (if any) and one route for the whole overlay
    /// network to weft0 (the node's own subnet stays on the bridge, a longer prefix).
    pub(super) fn udp_desired(&self, udp: &UdpPlane) -> State {
        if self.lease.claim().is_none() {
            return State::default();
        }
        let mut state = State::default();
        if let (Some(bridge), Some(active)) = (&self.config.bridge, self.lease.active_subnet()) {
            state.bridge = Some(dataplane::Bridge {
                name: bridge.clone(),
                addr: Ipv4Net::new(files::first_host(active), active.prefix_len())
                    .unwrap_or(active),
                mtu: udp.mtu,
            });
        }
        state.routes.insert(Route {
            dst: self.config.network,
            gateway: Ipv4Addr::UNSPECIFIED,
            device: Some(tunnel::DEVICE.into()),
            onlink: false,
        });
        state
    }

    /// Hands the current winners to the tunnel and keeps weft0's address on the own subnet.
    pub(super) async fn udp_step(&mut self) {
        let Some(udp) = &mut self.udp else { return };
        let claim = self.lease.claim();
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
        if peers != udp.peers {
            if udp.encrypted {
                for p in peers.iter().filter(|p| p.public_key.is_none()) {
                    warn!(node = %self.config.node_name, peer = %p.name, "peer publishes no tunnel key; its traffic is dropped");
                }
            }
            if let Some(t) = &udp.tunnel {
                t.set_peers(peers.clone());
            }
            udp.peers = peers;
        }
        let own = claim.map(|(s, _)| s);
        if let Some(subnet) = own
            && udp.tunnel.is_some()
            && own != udp.addressed
        {
            match set_address(subnet).await {
                Ok(()) => udp.addressed = Some(subnet),
                Err(e) => warn!(node = %self.config.node_name, error = %e, "cannot address weft0"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plane_without_kernel() {
        let mut config = Config::with_defaults("n1").unwrap();
        config.backend = Backend::Udp;
        config.udp_encryption = true;
        let underlay = UnderlayInfo {
            ifname: "eth0".into(),
            ifindex: 2,
            ip: "192.0.2.1".parse().unwrap(),
            mtu: 1500,
        };
        let counters = Arc::new(TunnelCounters::default());
        let p = UdpPlane::start(&config, &underlay, false, counters.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.mtu, 1440);
        assert_ne!(p.public_key(), [0u8; 32]);
        config.udp_encryption = false;
        let p = UdpPlane::start(&config, &underlay, false, counters.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.mtu, 1468);
        config.backend = Backend::Vxlan;
        assert!(
            UdpPlane::start(&config, &underlay, false, counters)
                .await
                .unwrap()
                .is_none()
        );
    }
}
