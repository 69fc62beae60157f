//! The udp backend as the agent runs it: starts the tunnel (the packet engine beside this file),
//! draws its key pair, sizes it from the underlay, takes the peer table the agent computes from
//! the peer view, and with plain frames keeps the last table in the state directory
//! (`udp-peers`), so a restarted agent forwards at once instead of after gossip has refilled
//! it. Its TUN device is configured by the data plane (`dataplane::TunLink`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::{Ipv4Net, Ipv6Net};
use ring::rand::SecureRandom;
use tracing::{info, warn};
use weft_proto::Backend;

use crate::config::Config;
use crate::dataplane::underlay::UnderlayInfo;
use crate::files;
use crate::udp::{self, PeerSpec, Tunnel, TunnelConfig, TunnelCounters, TunnelError};

/// Why the udp backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// The system's random generator failed.
    #[error("cannot draw a tunnel key")]
    Random,
    /// The underlay MTU is too small for the tunnel (a configuration problem).
    #[error("underlay MTU {underlay} leaves {left} for the udp tunnel (at least 576 needed)")]
    Mtu {
        /// The underlay's MTU.
        underlay: u32,
        /// What the tunnel would carry.
        left: u32,
    },
    /// The TUN device or the socket could not be opened.
    #[error("underlay: {0}")]
    Tunnel(#[source] TunnelError),
}

/// What [`UdpPlane::update_peers`] did that the agent reports.
#[derive(Debug, Default)]
pub struct PeersUpdate {
    /// Peers that publish no key while frames are sealed (their traffic is dropped).
    pub unkeyed: Vec<String>,
    /// The peers file write, when one was due.
    pub kept: Option<files::Kept>,
}

/// The udp backend's running part.
pub struct UdpPlane {
    /// `None` when nothing may touch the kernel (dry run, an injected data plane).
    tunnel: Option<Tunnel>,
    public_key: [u8; 32],
    encrypted: bool,
    mtu: u32,
    peers: Vec<PeerSpec>,
    /// The peers file, with plain frames (sealed ones need the peers' current keys, which only
    /// gossip carries).
    peers_file: Option<files::KeptFile>,
    /// Peers restored from the peers file are kept until gossip names any peer, or this
    /// instant passes.
    restored_until: Option<Instant>,
}

/// The peers file's name in the state directory.
pub const PEERS_FILE: &str = "udp-peers";
/// Largest peers file read, in bytes.
const MAX_PEERS_FILE: u64 = 1 << 20;
/// How long restored peers stand in while gossip names none.
const RESTORED_TRUST: Duration = Duration::from_secs(30);
const PEERS_HEADER: &str = "# weft udp peers v1: name subnet address:port [ipv6-subnet]";
/// What the subnet column holds for a peer of an IPv6-only overlay.
const NO_SUBNET: &str = "-";
/// The header before the IPv6 subnet was kept (still read).
const PEERS_HEADER_V4: &str = "# weft udp peers v1: name subnet address:port";

/// The peers file's content: a header line, then `name subnet address:port` per peer (`-` for
/// the subnet in an IPv6-only overlay), and the peer's IPv6 subnet when it has one.
fn peers_text(peers: &[PeerSpec]) -> String {
    let mut s = String::from(PEERS_HEADER);
    s.push('\n');
    for p in peers {
        let subnet = p.subnet.map(|n| n.to_string());
        let subnet = subnet.as_deref().unwrap_or(NO_SUBNET);
        s.push_str(&format!("{} {subnet} {}", p.name, p.addr));
        if let Some(v6) = p.ipv6_subnet {
            s.push_str(&format!(" {v6}"));
        }
        s.push('\n');
    }
    s
}

/// Parses a peers file (hostile: a line that does not parse is skipped, and counted in the
/// second value). No file of another version is read at all. Restored peers count as live and
/// carry no key.
fn parse_peers(text: &str) -> (Vec<PeerSpec>, usize) {
    let mut lines = text.lines();
    if !matches!(lines.next(), Some(PEERS_HEADER | PEERS_HEADER_V4)) {
        return (Vec::new(), usize::from(!text.is_empty()));
    }
    let mut bad = 0;
    let mut peers = Vec::new();
    for line in lines {
        let mut w = line.split(' ');
        let parsed = match (w.next(), w.next(), w.next(), w.next(), w.next()) {
            (Some(name), Some(subnet), Some(addr), v6, None)
                if !name.is_empty()
                    && name.len() <= 253
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
            {
                let v6 = match v6.map(str::parse::<Ipv6Net>) {
                    None => Ok(None),
                    Some(Ok(net)) if net == net.trunc() => Ok(Some(net)),
                    Some(_) => Err(()),
                };
                let subnet = match subnet {
                    NO_SUBNET => Ok(None),
                    s => match s.parse::<Ipv4Net>() {
                        Ok(net) if net == net.trunc() => Ok(Some(net)),
                        _ => Err(()),
                    },
                };
                match (subnet, addr.parse::<SocketAddr>(), v6) {
                    (Ok(subnet), Ok(addr), Ok(ipv6_subnet))
                        if subnet.is_some() || ipv6_subnet.is_some() =>
                    {
                        Some(PeerSpec {
                            name: name.to_string(),
                            subnet,
                            ipv6_subnet,
                            addr,
                            public_key: None,
                            live: true,
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        match parsed {
            Some(p) => peers.push(p),
            None => bad += 1,
        }
    }
    peers.sort_by(|a, b| (a.subnet, &a.name).cmp(&(b.subnet, &b.name)));
    (peers, bad)
}

/// Reads the peers file; missing or unreadable is no peers (logged when unreadable).
fn load_peers(path: &Path) -> Vec<PeerSpec> {
    use std::io::Read;
    let mut text = String::new();
    let read =
        std::fs::File::open(path).and_then(|f| f.take(MAX_PEERS_FILE).read_to_string(&mut text));
    match read {
        Ok(_) => {
            let (peers, bad) = parse_peers(&text);
            if bad > 0 {
                warn!(path = %path.display(), bad, "peers file: lines that do not parse were skipped");
            }
            peers
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "peers file unreadable; waiting for gossip");
            Vec::new()
        }
    }
}

impl UdpPlane {
    /// `None` unless the backend is udp. A fresh X25519 key pair is drawn at every start (ring
    /// cannot persist private keys and need not: peers learn the new public key with the new
    /// generation's record, which rotates every pair's keys at each restart).
    pub async fn start(
        config: &Config,
        underlay: &UnderlayInfo,
        kernel: bool,
        counters: Arc<TunnelCounters>,
    ) -> Result<Option<UdpPlane>, PlaneError> {
        if config.backend != Backend::Udp {
            return Ok(None);
        }
        let mut private_key = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut private_key)
            .map_err(|_| PlaneError::Random)?;
        let public_key = weft_proto::frame::public_key(&private_key);
        let encrypted = config.udp_encryption;
        let mtu = udp::tunnel_mtu(underlay.mtu, underlay.ip.is_ipv6(), encrypted);
        if mtu < 576 {
            return Err(PlaneError::Mtu {
                underlay: underlay.mtu,
                left: mtu,
            });
        }
        let tunnel = if kernel {
            let cfg = TunnelConfig {
                device: udp::DEVICE.into(),
                bind: SocketAddr::new(underlay.ip, config.udp_port),
                mtu,
                private_key: encrypted.then_some(private_key),
            };
            let t = Tunnel::start(cfg, counters).map_err(PlaneError::Tunnel)?;
            Some(t)
        } else {
            None
        };
        let peers_file = (!encrypted && tunnel.is_some())
            .then(|| files::KeptFile::new(config.state_dir.join(PEERS_FILE)));
        let mut peers = Vec::new();
        let mut restored_until = None;
        if let (Some(file), Some(t)) = (&peers_file, &tunnel) {
            peers = load_peers(file.path());
            if !peers.is_empty() {
                info!(node = %config.node_name, peers = peers.len(), "udp tunnel: last known peers restored until gossip speaks");
                t.set_peers(peers.clone());
                restored_until = Some(Instant::now() + RESTORED_TRUST);
            }
        }
        info!(node = %config.node_name, port = config.udp_port, mtu, encrypted, "udp tunnel started");
        if !encrypted {
            warn!(node = %config.node_name, "udp tunnel frames are NOT encrypted (--udp-encryption off)");
        }
        Ok(Some(UdpPlane {
            tunnel,
            public_key,
            encrypted,
            mtu,
            peers,
            peers_file,
            restored_until,
        }))
    }

    /// Why the peers file's last write failed, while it does.
    pub fn peers_file_failure(&self) -> Option<&str> {
        self.peers_file.as_ref().and_then(|f| f.failure())
    }

    /// This start's X25519 public key (published in the record).
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// The tunnel's MTU: what containers get.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Hands the peers the agent computed (sorted) to the tunnel. Restored peers stand in until
    /// gossip names a peer (or for RESTORED_TRUST at most); the peers file is written when they
    /// change and retried while its write fails.
    pub fn update_peers(&mut self, peers: Vec<PeerSpec>) -> PeersUpdate {
        let mut update = PeersUpdate::default();
        let keep_restored = self
            .restored_until
            .is_some_and(|until| peers.is_empty() && Instant::now() < until);
        if !keep_restored {
            self.restored_until = None;
        }
        let changed = !keep_restored && peers != self.peers;
        if changed {
            if self.encrypted {
                update.unkeyed = peers
                    .iter()
                    .filter(|p| p.public_key.is_none())
                    .map(|p| p.name.clone())
                    .collect();
            }
            if let Some(t) = &self.tunnel {
                t.set_peers(peers.clone());
            }
            self.peers = peers;
        }
        if let Some(file) = &mut self.peers_file
            && (changed || file.failure().is_some())
        {
            update.kept = Some(file.keep(&peers_text(&self.peers)));
        }
        update
    }

    /// Stops the tunnel and deletes `weft0` with its address and routes (`weft leave`). A plain
    /// shutdown only drops the tunnel, which leaves the persistent device for the next start.
    pub fn stop(&mut self) {
        if let Some(t) = self.tunnel.take() {
            t.remove();
        }
        if let Some(path) = self.peers_file.as_ref().map(|f| f.path())
            && let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %path.display(), error = %e, "cannot remove the peers file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_file_round_trip_and_hostile_lines() {
        let peers = vec![
            PeerSpec {
                name: "h1".into(),
                subnet: "10.244.1.0/24".parse().ok(),
                ipv6_subnet: None,
                addr: "192.0.2.1:8285".parse().unwrap(),
                public_key: Some([7; 32]),
                live: false,
            },
            PeerSpec {
                name: "h-2.x_y".into(),
                subnet: "10.244.2.0/24".parse().ok(),
                ipv6_subnet: None,
                addr: "[2001:db8::2]:8285".parse().unwrap(),
                public_key: None,
                live: true,
            },
        ];
        let text = peers_text(&peers);
        let (back, bad) = parse_peers(&text);
        assert_eq!(bad, 0);
        assert_eq!(back.len(), 2);
        for (a, b) in back.iter().zip(&peers) {
            assert_eq!((&a.name, a.subnet, a.addr), (&b.name, b.subnet, b.addr));
            assert!(a.live && a.public_key.is_none(), "restored: live, no key");
        }
        let hostile = format!(
            "{text}\nh3 10.244.3.1/24 192.0.2.3:1\nh 4 10.244.4.0/24 192.0.2.4:1\nh5 x 192.0.2.5:1\n\
             h6 10.244.6.0/24 nope\nh7 10.244.7.0/24 192.0.2.7:1 extra\n\u{e9} 10.0.0.0/8 1.2.3.4:5\n"
        );
        let (back, bad) = parse_peers(&hostile);
        assert_eq!((back.len(), bad), (2, 7));
        assert_eq!(parse_peers(""), (Vec::new(), 0));
        assert_eq!(
            parse_peers("h1 10.244.1.0/24 192.0.2.1:8285\n").0,
            Vec::new(),
            "no header"
        );
    }

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
            ipv6: None,
        };
        let counters = Arc::new(TunnelCounters::default());
        let p = UdpPlane::start(&config, &underlay, false, counters.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.mtu(), 1440);
        assert_ne!(p.public_key(), [0u8; 32]);
        config.udp_encryption = false;
        let p = UdpPlane::start(&config, &underlay, false, counters.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.mtu(), 1468);
        config.backend = Backend::Vxlan;
        assert!(
            UdpPlane::start(&config, &underlay, false, counters)
                .await
                .unwrap()
                .is_none()
        );
    }
}
