//! The `udp` backend, both halves: [`plane`] is what the agent runs (start, key pair, peer
//! table, peers file); the rest is the userspace tunnel (Linux): a TUN device (`weft0`) the overlay network is
//! routed to, and a UDP socket (`--udp-port`, 8285). Two blocking threads, outside tokio, one per
//! direction: TUN → frame (and seal) → sendmmsg, and recvmmsg → filter (and open) → TUN. The
//! kernel's UDP segmentation offload carries runs of frames as one packet where it can (GSO on
//! send, GRO on receive; [`gso`]), and the TUN device's offloads do the same for the inner TCP
//! ([`offload`]). Buffers are allocated once; nothing is allocated per packet. The agent replaces the peer table as the
//! mesh changes ([`Tunnel::set_peers`]).

mod gso;
mod offload;
mod peers;
pub mod plane;
mod sys;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use weft_proto::frame::{self, PLAIN_HEADER_LEN, SEALED_HEADER_LEN, SEALED_OVERHEAD, TAG_LEN};

pub use peers::{PeerSpec, PeerTable, accept};

/// The TUN device's name.
pub use crate::dataplane::TUN_DEVICE as DEVICE;
/// Default UDP port.
pub const DEFAULT_PORT: u16 = 8285;
/// TUN reads per round, datagrams per recvmmsg (without GRO), messages per sendmmsg.
const BATCH: usize = 64;
/// Receive slots with GRO on: each holds up to 64 KB of coalesced frames.
const GRO_SLOTS: usize = 16;
/// Largest coalesced datagram the kernel delivers.
const GRO_BUF_LEN: usize = 65_536;
/// Bytes of frames the sender gathers before one sendmmsg.
const SEND_ARENA: usize = 512 * 1024;
/// How often the blocking loops look at the stop flag.
const WAKE: Duration = Duration::from_millis(200);

/// Why a packet was dropped; `label()` is the `reason` of `weft_tunnel_drops_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a frame (bad magic/version/type, truncated, inner packet neither IPv4 nor IPv6).
    Garbage,
    /// From an address:port that is not a live peer's.
    UnknownSource,
    /// Inner source address outside the sending peer's subnet.
    Spoofed,
    /// Sealed counter already seen or too old.
    Replay,
    /// Failed authentication, wrong key, or a plain frame where sealed ones are expected (or
    /// the reverse).
    Auth,
    /// Outgoing packet to an address no peer owns (or a peer without a key).
    NoRoute,
    /// A send or TUN write failed.
    Error,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::Garbage,
        DropReason::UnknownSource,
        DropReason::Spoofed,
        DropReason::Replay,
        DropReason::Auth,
        DropReason::NoRoute,
        DropReason::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::Garbage => "garbage",
            DropReason::UnknownSource => "unknown_source",
            DropReason::Spoofed => "spoofed_source",
            DropReason::Replay => "replay",
            DropReason::Auth => "auth",
            DropReason::NoRoute => "no_route",
            DropReason::Error => "error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Packet, byte and drop counters (`rx`: underlay → TUN, `tx`: TUN → underlay).
#[derive(Debug, Default)]
pub struct TunnelCounters {
    /// Set while a tunnel runs; /metrics shows the tunnel rows only then.
    pub enabled: AtomicBool,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Set once the kernel refused UDP GSO (frames then go out one per datagram).
    pub gso_refused: AtomicBool,
    /// Set while the socket delivers GRO-coalesced datagrams.
    pub gro: AtomicBool,
    drops: [AtomicU64; 7],
}

impl TunnelCounters {
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops
            .get(reason.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn flush(&self, local: &mut Local, rx: bool) {
        let (p, b) = if rx {
            (&self.rx_packets, &self.rx_bytes)
        } else {
            (&self.tx_packets, &self.tx_bytes)
        };
        if local.packets > 0 {
            p.fetch_add(local.packets, Ordering::Relaxed);
            b.fetch_add(local.bytes, Ordering::Relaxed);
        }
        for (c, n) in self.drops.iter().zip(local.drops.iter_mut()) {
            if *n > 0 {
                c.fetch_add(*n, Ordering::Relaxed);
                *n = 0;
            }
        }
        local.packets = 0;
        local.bytes = 0;
    }
}

/// Per-thread counts, flushed to the shared counters once per batch.
#[derive(Default)]
struct Local {
    packets: u64,
    bytes: u64,
    drops: [u64; 7],
}

impl Local {
    fn drop(&mut self, r: DropReason) {
        if let Some(n) = self.drops.get_mut(r.index()) {
            *n += 1;
        }
    }
}

/// Bytes a frame adds to an inner packet.
pub fn frame_overhead(encrypted: bool) -> u32 {
    if encrypted {
        SEALED_OVERHEAD as u32
    } else {
        frame::PLAIN_OVERHEAD as u32
    }
}

/// The TUN MTU: underlay MTU − IP header (20, or 40 for IPv6) − UDP (8) − frame overhead.
pub fn tunnel_mtu(underlay_mtu: u32, underlay_v6: bool, encrypted: bool) -> u32 {
    let ip = if underlay_v6 { 40 } else { 20 };
    underlay_mtu.saturating_sub(ip + 8 + frame_overhead(encrypted))
}

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("TUN device {name}: {source}")]
    Tun {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("UDP socket {addr}: {source}")]
    Socket {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("thread: {0}")]
    Thread(std::io::Error),
}

/// What the tunnel needs to start.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    pub device: String,
    /// Local UDP address (underlay IP, tunnel port).
    pub bind: SocketAddr,
    /// TUN MTU (see [`tunnel_mtu`]).
    pub mtu: u32,
    /// This node's X25519 private key when sealing, `None` for plain frames.
    pub private_key: Option<[u8; 32]>,
}

struct Shared {
    table: RwLock<Arc<PeerTable>>,
    generation: AtomicU64,
    stop: AtomicBool,
    counters: Arc<TunnelCounters>,
    encrypted: bool,
}

/// A running tunnel. The TUN device is persistent while the tunnel runs: dropping the tunnel
/// (SIGTERM) stops both threads but leaves `weft0`, its address and routes in place, so a
/// restarted agent re-attaches to it and traffic resumes; [`Tunnel::remove`] deletes it.
pub struct Tunnel {
    shared: Arc<Shared>,
    tun: Arc<OwnedFd>,
    private_key: Option<[u8; 32]>,
    threads: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl Tunnel {
    /// Creates the TUN device (the caller sets its MTU, alias and state through netlink) and binds
    /// the socket, then starts the two threads.
    pub fn start(cfg: TunnelConfig, counters: Arc<TunnelCounters>) -> Result<Tunnel, TunnelError> {
        let tun_err = |source| TunnelError::Tun {
            name: cfg.device.clone(),
            source,
        };
        let tun = sys::open_tun(&cfg.device).map_err(tun_err)?;
        sys::set_persist(tun.as_raw_fd(), true).map_err(tun_err)?;
        let socket = UdpSocket::bind(cfg.bind).map_err(|source| TunnelError::Socket {
            addr: cfg.bind,
            source,
        })?;
        let local_addr = socket.local_addr().unwrap_or(cfg.bind);
        let sock_err = |source| TunnelError::Socket {
            addr: cfg.bind,
            source,
        };
        socket.set_read_timeout(Some(WAKE)).map_err(sock_err)?;
        let fd = socket.as_raw_fd();
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if sys::setsockopt_int(fd, libc::SOL_SOCKET, force, 4 << 20).is_err() {
                let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, plain, 4 << 20);
            }
        }
        // Frames must not be fragmented by this host: the TUN MTU accounts for the overhead.
        let _ = sys::setsockopt_int(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DONT,
        );
        let gro = match sys::enable_gro(fd) {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(error = %e, "tunnel: no UDP GRO on this kernel; receiving frame by frame");
                false
            }
        };
        counters.gro.store(gro, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            table: RwLock::new(Arc::new(PeerTable::default())),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            counters,
            encrypted: cfg.private_key.is_some(),
        });
        let mtu = cfg.mtu as usize;
        let rx_slots = if gro {
            (GRO_SLOTS, GRO_BUF_LEN)
        } else {
            (BATCH, (mtu + SEALED_OVERHEAD + 64).max(2048))
        };
        let socket = Arc::new(socket);
        let tun = Arc::new(tun);
        let mut threads = Vec::new();
        let (s, k, t) = (shared.clone(), socket.clone(), tun.clone());
        let tun_rx = tun.clone();
        threads.push(
            std::thread::Builder::new()
                .name("weft-tun-tx".into())
                .spawn(move || tx_loop(&s, &k, &t, mtu))
                .map_err(TunnelError::Thread)?,
        );
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("weft-tun-rx".into())
            .spawn(move || rx_loop(&s, &socket, &tun_rx, rx_slots));
        match spawned {
            Ok(h) => threads.push(h),
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                for h in threads.drain(..) {
                    let _ = h.join();
                }
                return Err(TunnelError::Thread(e));
            }
        }
        shared.counters.enabled.store(true, Ordering::Relaxed);
        Ok(Tunnel {
            shared,
            tun,
            private_key: cfg.private_key,
            threads,
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn counters(&self) -> Arc<TunnelCounters> {
        self.shared.counters.clone()
    }

    /// Replaces the peer table (keys are derived here, not on the packet path).
    pub fn set_peers(&self, peers: Vec<PeerSpec>) {
        let table = Arc::new(PeerTable::new(peers, self.private_key.as_ref()));
        if let Ok(mut t) = self.shared.table.write() {
            *t = table;
        }
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// Stops the threads; the device stays (see [`Tunnel`]).
    pub fn stop(mut self) {
        self.halt();
    }

    /// Stops the threads and deletes the device (with its address and routes): `weft leave`.
    pub fn remove(mut self) {
        self.halt();
        if let Err(e) = sys::set_persist(self.tun.as_raw_fd(), false) {
            tracing::warn!(error = %e, "tunnel: cannot clear the TUN device's persist flag");
        }
        // The threads are joined: this is the last fd, and closing it deletes the device.
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        self.shared.counters.enabled.store(false, Ordering::Relaxed);
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A packet thread's copy of the peer table (and the crypto state derived from it), refreshed
/// when the agent replaced the table.
struct ThreadPeers {
    generation: u64,
    table: Arc<PeerTable>,
    crypto: peers::PeerCrypto,
}

impl ThreadPeers {
    fn new() -> ThreadPeers {
        ThreadPeers {
            generation: u64::MAX,
            table: Arc::new(PeerTable::default()),
            crypto: peers::PeerCrypto::default(),
        }
    }

    fn refresh(&mut self, shared: &Shared, seal: bool) {
        let g = shared.generation.load(Ordering::Acquire);
        if g == self.generation {
            return;
        }
        if let Ok(t) = shared.table.read() {
            self.table = t.clone();
        }
        self.crypto.refresh(&self.table, seal);
        self.generation = g;
    }
}

/// Largest read from the TUN device: a 64 KB super-segment behind its vnet header.
const TUN_READ_LEN: usize = offload::VNET_HDR_LEN + 65_536;

fn tx_loop(shared: &Shared, socket: &UdpSocket, tun: &OwnedFd, mtu: usize) {
    let (head_len, tail_len) = if shared.encrypted {
        (SEALED_HEADER_LEN, TAG_LEN)
    } else {
        (PLAIN_HEADER_LEN, 0)
    };
    let mut batch = gso::SendBatch::new(BATCH, head_len + mtu + tail_len, SEND_ARENA);
    let mut sender = sys::Sender::new(BATCH);
    let mut big = vec![0u8; TUN_READ_LEN].into_boxed_slice();
    let mut view = ThreadPeers::new();
    let mut local = Local::default();
    let (tun_fd, sock_fd) = (tun.as_raw_fd(), socket.as_raw_fd());
    while !shared.stop.load(Ordering::Relaxed) {
        match sys::poll_in(tun_fd, WAKE.as_millis() as i32) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "tunnel: poll on the TUN device failed; stopping");
                break;
            }
        }
        view.refresh(shared, true);
        let mut dead = false;
        for _ in 0..BATCH {
            let len = match sys::read(tun_fd, &mut big) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "tunnel: TUN read failed; stopping");
                    dead = true;
                    break;
                }
            };
            let Some((head, packet)) = big
                .get_mut(..len)
                .and_then(|b| b.split_at_mut_checked(offload::VNET_HDR_LEN))
            else {
                local.drop(DropReason::NoRoute);
                continue;
            };
            let Some(hdr) = offload::VnetHdr::parse(head) else {
                local.drop(DropReason::NoRoute);
                continue;
            };
            // IPv6 or malformed from the local stack, or an offload we did not ask for: nothing
            // to send it to.
            let Ok(plan) = offload::prepare(&hdr, packet) else {
                local.drop(DropReason::NoRoute);
                continue;
            };
            let Some(dst) = frame::packet_dst(packet) else {
                local.drop(DropReason::NoRoute);
                continue;
            };
            let Some(i) = view.table.route_ip(dst) else {
                local.drop(DropReason::NoRoute);
                continue;
            };
            let Some(to) = view.table.peers.get(i).map(|p| p.spec.addr) else {
                local.drop(DropReason::NoRoute);
                continue;
            };
            let count = match plan {
                offload::Plan::One => 1,
                offload::Plan::Tcp4 { count, .. } => count,
            };
            for k in 0..count {
                if batch.next_frame().is_none() {
                    send_batch(shared, &mut batch, &mut sender, sock_fd, &mut local);
                }
                let Some(buf) = batch.next_frame() else { break };
                let Some(out) = buf.get_mut(head_len..head_len + mtu) else {
                    break;
                };
                let written = match plan {
                    offload::Plan::One => out.get_mut(..packet.len()).map(|o| {
                        o.copy_from_slice(packet);
                        packet.len()
                    }),
                    offload::Plan::Tcp4 { hl, mss, .. } => {
                        offload::write_segment(packet, hl, mss, k, out)
                    }
                };
                let Some(seg_len) = written
                    .filter(|&l| out.get(..l).is_some_and(|p| frame::check_packet(p).is_ok()))
                else {
                    // Larger than the MTU allows, or malformed.
                    local.drop(DropReason::NoRoute);
                    continue;
                };
                let total = if shared.encrypted {
                    match view.crypto.sealers.get_mut(i).and_then(Option::as_mut) {
                        Some(sealer) => sealer.seal(buf, seg_len).ok(),
                        None => None,
                    }
                } else {
                    frame::write_plain_header(buf)
                        .ok()
                        .map(|()| PLAIN_HEADER_LEN + seg_len)
                };
                if total.is_some_and(|t| batch.commit(t, to)) {
                    local.bytes += seg_len as u64;
                } else {
                    local.drop(DropReason::NoRoute);
                }
            }
        }
        if !batch.is_empty() {
            send_batch(shared, &mut batch, &mut sender, sock_fd, &mut local);
        }
        shared.counters.flush(&mut local, false);
        if dead {
            break;
        }
    }
}

/// Sends and empties `batch`; turns GSO off (once, logged) when the kernel refuses it.
fn send_batch(
    shared: &Shared,
    batch: &mut gso::SendBatch,
    sender: &mut sys::Sender,
    sock_fd: i32,
    local: &mut Local,
) {
    let sent = sender.send(sock_fd, batch);
    local.packets += sent.frames as u64;
    for _ in 0..sent.failed {
        local.drop(DropReason::Error);
    }
    if let Some(kind) = sent.gso_refused
        && batch.gso()
    {
        batch.set_gso(false);
        shared.counters.gso_refused.store(true, Ordering::Relaxed);
        tracing::warn!(error = %kind, "tunnel: the kernel refuses UDP GSO; sending frame by frame");
    }
    batch.clear();
}

/// Writes the held GRO run (if any) to the TUN device.
fn gro_flush(gro: &mut offload::Gro, tun_fd: i32, local: &mut Local) {
    let count = gro.count() as u64;
    if let Some((head, packet, bytes)) = gro.take() {
        match sys::write2(tun_fd, &head, packet) {
            Ok(_) => {
                local.packets += count;
                local.bytes += bytes as u64;
            }
            Err(_) => {
                for _ in 0..count {
                    local.drop(DropReason::Error);
                }
            }
        }
    }
}

fn rx_loop(shared: &Shared, socket: &UdpSocket, tun: &OwnedFd, (slots, buf_len): (usize, usize)) {
    let mut batch = sys::Batch::new(slots, buf_len);
    let mut gro = offload::Gro::default();
    let mut view = ThreadPeers::new();
    let mut local = Local::default();
    let (tun_fd, sock_fd) = (tun.as_raw_fd(), socket.as_raw_fd());
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match batch.recv(sock_fd) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "tunnel: receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if n == 0 {
            continue;
        }
        view.refresh(shared, false);
        for i in 0..n {
            let Some(sys::Received {
                data,
                from,
                truncated,
                seg,
            }) = batch.received(i)
            else {
                continue;
            };
            if truncated {
                local.drop(DropReason::Garbage);
                continue;
            }
            for r in gso::split(data.len(), seg) {
                let Some(frame) = data.get_mut(r) else { break };
                rx_frame(shared, &mut view, &mut gro, tun_fd, &mut local, from, frame);
            }
        }
        gro_flush(&mut gro, tun_fd, &mut local);
        shared.counters.flush(&mut local, true);
    }
}

/// One received frame: filter (and open), then coalesce into `gro` or write to the TUN device.
fn rx_frame(
    shared: &Shared,
    view: &mut ThreadPeers,
    gro: &mut offload::Gro,
    tun_fd: i32,
    local: &mut Local,
    from: Option<SocketAddr>,
    frame: &mut [u8],
) {
    match accept(&view.table, &mut view.crypto, shared.encrypted, from, frame) {
        Ok(range) => {
            let Some(packet) = frame.get(range) else {
                return;
            };
            if !gro.push(packet) {
                gro_flush(gro, tun_fd, local);
                if !gro.push(packet) {
                    match sys::write2(tun_fd, &[0u8; offload::VNET_HDR_LEN], packet) {
                        Ok(_) => {
                            local.packets += 1;
                            local.bytes += packet.len() as u64;
                        }
                        Err(_) => local.drop(DropReason::Error),
                    }
                }
            }
            if gro.closed() {
                gro_flush(gro, tun_fd, local);
            }
        }
        Err(r) => local.drop(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_arithmetic() {
        assert_eq!(tunnel_mtu(1500, false, false), 1468);
        assert_eq!(tunnel_mtu(1500, false, true), 1440);
        assert_eq!(tunnel_mtu(1500, true, true), 1420);
        assert_eq!(tunnel_mtu(9000, false, true), 8940);
        assert_eq!(tunnel_mtu(10, false, true), 0);
    }
}
