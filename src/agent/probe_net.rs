//! Where the prober's datagrams go: the host's UDP (a socket on the overlay address, what
//! `weft run` uses), or an in-memory [`ProbeHub`] for agents that share one process (L1 tests,
//! embedders on a fake data plane), which can cut pairs and cap the size a pair carries.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Datagrams a hub socket holds before more are dropped (as a full socket buffer would).
const HUB_QUEUE: usize = 1024;

/// A bound probe socket.
pub(super) enum ProbeSocket {
    /// The host's UDP.
    Udp(UdpSocket),
    /// An in-memory hub's.
    Hub(HubSocket),
}

impl ProbeSocket {
    /// The next datagram and its source.
    pub(super) async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            ProbeSocket::Udp(s) => s.recv_from(buf).await,
            ProbeSocket::Hub(s) => {
                let (bytes, from) =
                    s.rx.recv()
                        .await
                        .ok_or_else(|| io::Error::other("probe hub closed"))?;
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                Ok((n, from))
            }
        }
    }

    /// Sends without waiting.
    pub(super) fn try_send_to(&self, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self {
            ProbeSocket::Udp(s) => s.try_send_to(bytes, to),
            ProbeSocket::Hub(s) => {
                s.hub.deliver(s.addr, to, bytes);
                Ok(bytes.len())
            }
        }
    }
}

/// A socket of a [`ProbeHub`].
pub(super) struct HubSocket {
    hub: ProbeHub,
    addr: SocketAddr,
    rx: mpsc::Receiver<(Vec<u8>, SocketAddr)>,
}

impl Drop for HubSocket {
    fn drop(&mut self) {
        self.hub.unbind(self.addr);
    }
}

/// An in-memory network for the path probes of agents in one process: each agent's probe
/// socket binds its overlay address here ([`crate::agent::Agent::probe_hub`]), datagrams go to
/// whoever bound the destination, and a test can cut a pair of addresses or cap the packet size
/// between them (IPv4 packet: datagram + 28 bytes).
#[derive(Clone, Default)]
pub struct ProbeHub {
    inner: Arc<Mutex<HubInner>>,
}

#[derive(Default)]
struct HubInner {
    sockets: HashMap<SocketAddr, mpsc::Sender<(Vec<u8>, SocketAddr)>>,
    cut: HashSet<(IpAddr, IpAddr)>,
    limits: HashMap<(IpAddr, IpAddr), usize>,
    sent: HashMap<IpAddr, u64>,
}

fn pair(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

impl ProbeHub {
    /// An empty hub.
    pub fn new() -> ProbeHub {
        ProbeHub::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loses every datagram between `a` and `b`, both ways.
    pub fn cut(&self, a: IpAddr, b: IpAddr) {
        self.lock().cut.insert(pair(a, b));
    }

    /// Between `a` and `b`, both ways, packets longer than `max_packet` bytes (IP header
    /// included) are lost.
    pub fn limit(&self, a: IpAddr, b: IpAddr, max_packet: usize) {
        self.lock().limits.insert(pair(a, b), max_packet);
    }

    /// Undoes every cut and limit.
    pub fn heal(&self) {
        let mut inner = self.lock();
        inner.cut.clear();
        inner.limits.clear();
    }

    /// Datagrams sent from `addr` so far.
    pub fn sent_from(&self, addr: IpAddr) -> u64 {
        self.lock().sent.get(&addr).copied().unwrap_or(0)
    }

    pub(super) fn bind(&self, addr: SocketAddr) -> io::Result<HubSocket> {
        let (tx, rx) = mpsc::channel(HUB_QUEUE);
        let mut inner = self.lock();
        if inner.sockets.get(&addr).is_some_and(|s| !s.is_closed()) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        inner.sockets.insert(addr, tx);
        Ok(HubSocket {
            hub: self.clone(),
            addr,
            rx,
        })
    }

    fn unbind(&self, addr: SocketAddr) {
        self.lock().sockets.remove(&addr);
    }

    fn deliver(&self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let mut inner = self.lock();
        *inner.sent.entry(from.ip()).or_insert(0) += 1;
        let key = pair(from.ip(), to.ip());
        let overhead = if to.is_ipv6() { 48 } else { 28 };
        let too_long = inner
            .limits
            .get(&key)
            .is_some_and(|max| bytes.len() + overhead > *max);
        if inner.cut.contains(&key) || too_long {
            return;
        }
        if let Some(tx) = inner.sockets.get(&to) {
            // A full queue loses the datagram, as a full socket buffer would.
            let _ = tx.try_send((bytes.to_vec(), from));
        }
    }
}
