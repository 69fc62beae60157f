//! The sealed gossip transport: a chitchat [`Transport`] whose datagrams on the underlay are
//! wrapped in weft's sealed envelope (`weft_proto::envelope`), opened and counted before chitchat
//! parses anything.
//!
//! chitchat's transport API hands a socket decoded envelopes, and their serialization is private
//! to chitchat, so the sealing cannot happen inside a `Socket` implementation. Instead every
//! opened socket is a relay:
//!
//! ```text
//!  chitchat ──envelope──▶ inner chitchat UdpSocket (127.0.0.1:i)
//!                            │ send_to(relay of peer P)
//!                            ▼
//!                         relay socket of P (127.0.0.1:r) ──seal──▶ underlay socket ──▶ P
//!  P ──▶ underlay socket ──open──▶ relay socket of P ──plaintext──▶ inner socket ──▶ chitchat
//! ```
//!
//! (The loopback address is the gossip address itself when that is a loopback address, see
//! `relay_ip`.) One loopback relay socket per peer gives an exact two-way mapping between a
//! peer's underlay address and a loopback address, so `recv` can report the real peer address.
//! Between agents that know the same nodes, the digests of chitchat's messages travel without
//! their node ids (`digest_codec`): the relay re-encodes each message on its way out and puts
//! the ids back on its way in. Relays are bounded (least recently used evicted). Relays accept datagrams only from the inner
//! socket, and the wrapper only accepts datagrams arriving from a known relay.
//!
//! The inner socket and the relays live in a private network namespace that only this process
//! holds (created once per process with `unshare(CLONE_NEWNET)` on a short-lived thread, its
//! `lo` brought up; sockets are bound there by switching the binding thread into it with
//! `setns` and back, synchronously). chitchat parses (and decompresses) a datagram before the
//! wrapper sees its sender, so a filter after `recv` is too late: no other local process may be
//! able to reach the inner socket at all. A socket filter (BPF on the sender's port) was not
//! chosen: chitchat does not expose its socket's fd, the relay set changes at run time, and a
//! namespace also hides the relays. Creating the namespace needs CAP_SYS_ADMIN, which the shipped
//! systemd unit and DaemonSet do not grant (CAP_NET_ADMIN only); without it (or with
//! `WEFT_GOSSIP_NETNS=off`) the sockets stay on the host's loopback and chitchat's socket gets a
//! classic BPF socket filter instead (`sender_filter`), found by its address among this
//! process's fds: it lets through only datagrams from the relays' address and ports, and is
//! replaced whenever the relay set changes (only ports this process holds bound pass). The
//! filter is the weaker of the two: a datagram that arrives between chitchat's bind and the
//! first filter is not filtered, and a process with CAP_NET_RAW can forge a relay's source.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as ChitchatUdp};
use futures::FutureExt as _;
use lru::LruCache;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use weft_proto::envelope::{
    self, ANY_RECIPIENT, MAX_DATAGRAM, OpenError, Opened, Opener, SALT_LEN, SealError, Sealer,
};

use super::digest_codec::{self, Codec, Decoded, Encoded, Malformed};

pub use weft_proto::envelope::{Keyring, Sealing};

/// Default bound on the number of loopback relay sockets (one per peer talked to recently).
pub const DEFAULT_MAX_RELAYS: usize = 1024;

/// Evicted relay sockets kept bound for a while so that their loopback port is not handed to a
/// new relay while datagrams from the old one may still be queued on the inner socket.
const GRAVEYARD_LEN: usize = 64;

/// Least time between two hellos to one peer (answers to unbound or misdirected datagrams).
const HELLO_INTERVAL: Duration = Duration::from_millis(100);

/// Hellos answering misdirected datagrams from addresses this agent has no relay for (a peer
/// still binding to this agent's previous process: a restart draws a new salt), at most this
/// many a second in all. They create no state, and a hello is smaller than the datagram that
/// asked for it, so replays from spoofed addresses reflect less than they send.
const STRANGER_HELLOS_PER_SEC: u32 = 32;

/// Largest first-contact message kept to be sent again, bound, once the peer's hello arrives
/// (bigger ones are left to chitchat's next round).
const MAX_UNBOUND_KEPT: usize = 8192;

/// Receive buffer: one byte more than the largest valid datagram, to detect oversized ones.
const RECV_BUF_LEN: usize = MAX_DATAGRAM + 1;

/// Declares every gossip counter once: the live counters ([`GossipCounters`]), their copy
/// ([`GossipCountersSnapshot`]) and where `/metrics` exports each ([`GOSSIP_METRICS`]: family,
/// label name, label value; an empty label name for a family of one counter). Adding a counter
/// is one line here.
macro_rules! gossip_counters {
    ($( $(#[$doc:meta])* $name:ident => ($family:literal, $label:literal, $value:literal), )*) => {
        /// Gossip traffic counters, shared with whoever exports metrics.
        #[derive(Debug, Default)]
        pub struct GossipCounters {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        /// A point-in-time copy of [`GossipCounters`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct GossipCountersSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl GossipCounters {
            /// A copy of every counter now.
            pub fn snapshot(&self) -> GossipCountersSnapshot {
                GossipCountersSnapshot {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }

        impl GossipCountersSnapshot {
            /// Every counter with its export: (metric family, label name, label value, value).
            pub fn exported(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
                vec![ $( ($family, $label, $value, self.$name), )* ]
            }
        }
    };
}

gossip_counters! {
    /// Datagrams received on the underlay socket (all of them, dropped ones included).
    datagrams_in => ("gossip_datagrams", "direction", "in"),
    /// Bytes received on the underlay socket.
    bytes_in => ("gossip_bytes", "direction", "in"),
    /// Datagrams sent on the underlay socket.
    datagrams_out => ("gossip_datagrams", "direction", "out"),
    /// Bytes sent on the underlay socket.
    bytes_out => ("gossip_bytes", "direction", "out"),
    /// Inbound drops: not an envelope.
    drop_malformed => ("gossip_dropped", "reason", "malformed"),
    /// Inbound drops: sealed with a key this agent does not hold.
    drop_unknown_key => ("gossip_dropped", "reason", "unknown_key"),
    /// Inbound drops: authentication failed.
    drop_auth => ("gossip_dropped", "reason", "auth"),
    /// Inbound drops: a counter already seen.
    drop_replay => ("gossip_dropped", "reason", "replay"),
    /// Inbound drops: unsealed while this agent seals.
    drop_plaintext => ("gossip_dropped", "reason", "plaintext"),
    /// Authentic datagrams bound to another process (captured elsewhere, or sent to an
    /// earlier process of this agent).
    drop_misdirected => ("gossip_dropped", "reason", "misdirected"),
    /// Inbound datagrams over the size limit, and outbound messages too large to seal.
    drop_oversized => ("gossip_dropped", "reason", "oversized"),
    /// Authentic datagrams bound to no process yet (first contact): not delivered, answered
    /// with a hello.
    unbound_in => ("gossip_hellos", "kind", "unbound_received"),
    /// Hellos sent (empty messages telling a peer this process's salt).
    hellos_sent => ("gossip_hellos", "kind", "sent"),
    /// Underlay sends that failed (the message is lost; gossip retries by itself).
    send_errors => ("gossip_send_errors", "", ""),
    /// Relay sockets evicted to respect the bound.
    relays_evicted => ("gossip_relays_evicted", "", ""),
    /// Digest messages sent with ids left out (see `digest_codec`).
    digests_compact => ("gossip_digests", "form", "compact"),
    /// Digest messages sent with ids.
    digests_full => ("gossip_digests", "form", "full"),
    /// Compact digests this agent could not read and asked again for.
    digest_nacks_sent => ("gossip_digest_nacks", "direction", "sent"),
    /// Compact digests this agent was asked to send again in full.
    digest_nacks_received => ("gossip_digest_nacks", "direction", "received"),
    /// chitchat ACKs with an empty delta, not sent (see `digest_codec::is_empty_ack`).
    empty_acks_skipped => ("gossip_empty_acks_skipped", "", ""),
}

/// The help text of each gossip metric family.
pub const GOSSIP_METRICS: &[(&str, &str)] = &[
    (
        "gossip_datagrams",
        "Gossip datagrams on the underlay socket",
    ),
    ("gossip_bytes", "Gossip bytes on the underlay socket"),
    ("gossip_dropped", "Gossip datagrams rejected, by reason"),
    (
        "gossip_hellos",
        "Hellos sent, and first-contact datagrams answered with one",
    ),
    ("gossip_send_errors", "Underlay gossip sends that failed"),
    ("gossip_relays_evicted", "Gossip relay sockets evicted"),
    (
        "gossip_digests",
        "Gossip digests sent, with node ids left out (compact) or not (full)",
    ),
    (
        "gossip_digest_nacks",
        "Compact digests on an id list the receiver did not hold, sent again in full",
    ),
    (
        "gossip_empty_acks_skipped",
        "chitchat ACKs with nothing in them, not sent",
    ),
];

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl GossipCounters {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn count_drop(&self, reason: OpenError) {
        let c = match reason {
            OpenError::Malformed => &self.drop_malformed,
            OpenError::UnknownKey => &self.drop_unknown_key,
            OpenError::Auth => &self.drop_auth,
            OpenError::Replay => &self.drop_replay,
            OpenError::Plaintext => &self.drop_plaintext,
            OpenError::Misdirected(_) => &self.drop_misdirected,
        };
        add(c, 1);
    }
}

impl GossipCountersSnapshot {
    /// All inbound drops together.
    pub fn drops(&self) -> u64 {
        self.exported()
            .iter()
            .filter(|(family, ..)| *family == "gossip_dropped")
            .map(|(.., v)| v)
            .sum()
    }
}

/// A chitchat transport that seals every datagram on the underlay.
#[derive(Debug, Clone)]
pub struct SealedTransport {
    sealing: Sealing,
    counters: Arc<GossipCounters>,
    max_relays: usize,
    max_datagram: usize,
}

impl SealedTransport {
    /// `sealing` is shared: changes to its keyring apply to open sockets at once.
    pub fn new(sealing: Sealing, counters: Arc<GossipCounters>) -> Self {
        SealedTransport {
            sealing,
            counters,
            max_relays: DEFAULT_MAX_RELAYS,
            max_datagram: MAX_DATAGRAM,
        }
    }

    /// Bounds the number of loopback relay sockets (at least 1).
    pub fn with_max_relays(mut self, max_relays: usize) -> Self {
        self.max_relays = max_relays.max(1);
        self
    }

    /// Largest datagram sent on the underlay; bigger messages are split into fragments.
    pub fn with_max_datagram(mut self, max_datagram: usize) -> Self {
        self.max_datagram = max_datagram.min(MAX_DATAGRAM);
        self
    }

    pub fn counters(&self) -> &Arc<GossipCounters> {
        &self.counters
    }

    /// Opens the underlay socket and its relay; the concrete type of what [`Transport::open`]
    /// returns boxed.
    pub async fn open_sealed(&self, listen_addr: SocketAddr) -> anyhow::Result<SealedSocket> {
        let underlay = UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind gossip socket {listen_addr}/udp"))?;
        let underlay_addr = underlay.local_addr()?;
        let loopback = relay_ip(underlay_addr);
        let inner_bind: SocketAddr = (loopback, 0).into();
        let inner = match private_net::get() {
            // Binding a SocketAddr completes at once: no await while in the private namespace.
            Some(net) => net
                .run(|| ChitchatUdp::open(inner_bind).now_or_never())
                .context("failed to enter the private network namespace")?
                .context("binding the inner gossip socket did not complete at once")??,
            None => ChitchatUdp::open(inner_bind).await?,
        };
        let inner_addr = inner.local_addr()?;
        let filtered = match private_net::get() {
            Some(_) => None,
            None => match sender_filter::InnerFilter::find(inner_addr) {
                Ok(f) => Some(f),
                Err(err) => {
                    warn!(error = %err, op = "gossip-filter",
                        "cannot filter chitchat's loopback socket: local processes can reach its parser");
                    None
                }
            },
        };
        let salt = envelope::generate_salt(&ring::rand::SystemRandom::new())
            .context("failed to draw the gossip salt")?;
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            underlay,
            inner_addr,
            sealer: Mutex::new(Sealer::new(self.sealing.clone(), salt)),
            salt,
            relays: Mutex::new(RelayTable {
                by_peer: LruCache::new(
                    NonZeroUsize::new(self.max_relays).unwrap_or(NonZeroUsize::MIN),
                ),
                by_relay: HashMap::new(),
                graveyard: VecDeque::new(),
            }),
            counters: Arc::clone(&self.counters),
            max_datagram: self.max_datagram,
            cancel: cancel.clone(),
            failed: CancellationToken::new(),
            failure: Mutex::new(None),
            scratch: Mutex::new(Vec::new()),
            codec: Mutex::new(Codec::new().context("failed to set up the digest codec")?),
            filter: filtered,
            stranger_hellos: Mutex::new((Instant::now(), 0)),
        });
        shared.refilter(&shared.table());
        tokio::spawn(inbound_loop(
            Arc::clone(&shared),
            Opener::new(self.sealing.clone(), salt),
        ));
        Ok(SealedSocket {
            inner,
            underlay_addr,
            shared,
            _cancel_on_drop: cancel.drop_guard(),
        })
    }
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(self.open_sealed(listen_addr).await?))
    }
}

/// The socket chitchat talks to. Dropping it stops every task it spawned.
pub struct SealedSocket {
    inner: ChitchatUdp,
    underlay_addr: SocketAddr,
    shared: Arc<Shared>,
    _cancel_on_drop: tokio_util::sync::DropGuard,
}

impl SealedSocket {
    /// The loopback address of chitchat's inner socket (tests, debugging).
    pub fn inner_addr(&self) -> SocketAddr {
        self.shared.inner_addr
    }

    /// Number of live relay sockets.
    pub fn relay_count(&self) -> usize {
        self.shared.table().by_peer.len()
    }

    /// This process's salt: what peers bind the datagrams they send here to.
    pub fn salt(&self) -> [u8; SALT_LEN] {
        self.shared.salt
    }
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.underlay_addr)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: chitchat::ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let (_, relay_addr) = self.shared.relay_for(to)?;
        self.inner.send(relay_addr, envelope).await
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let outcome = tokio::select! {
                outcome = self.inner.recv() => outcome?,
                () = self.shared.failed.cancelled() => {
                    let why = self.shared.failure.lock().ok().and_then(|f| f.clone());
                    anyhow::bail!(
                        "gossip underlay socket failed: {}",
                        why.unwrap_or_else(|| "unknown error".into())
                    );
                }
            };
            let peer = self
                .shared
                .table()
                .by_relay
                .get(&outcome.from_addr)
                .copied();
            match peer {
                Some(peer) => {
                    return Ok(RecvOutcome {
                        from_addr: peer,
                        ..outcome
                    });
                }
                None => {
                    debug!(from = %outcome.from_addr, op = "gossip-recv",
                        "dropping datagram from an unknown loopback sender");
                }
            }
        }
    }
}

struct Relay {
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
    cancel: CancellationToken,
    /// The id list the peer last announced (see `digest_codec`).
    peer_hash: Option<u64>,
    /// The last message sent to the peer as a compact digest, until the peer answers: sent
    /// again in full if the peer cannot read it.
    pending: Option<Vec<u8>>,
    /// The peer process's salt, learnt from a datagram it bound to this process: what is sent
    /// there is bound to it ([`ANY_RECIPIENT`] until then).
    peer_salt: Option<[u8; SALT_LEN]>,
    /// When the last hello went to the peer (rate limit).
    last_hello: Option<Instant>,
    /// The last message sent unbound (before `peer_salt` was known), sent again bound when the
    /// peer's hello arrives: the receiver never delivers an unbound message.
    unbound: Option<Vec<u8>>,
}

struct RelayTable {
    by_peer: LruCache<SocketAddr, Relay>,
    by_relay: HashMap<SocketAddr, SocketAddr>,
    graveyard: VecDeque<Arc<UdpSocket>>,
}

/// State shared by the socket wrapper and its tasks.
struct Shared {
    underlay: UdpSocket,
    inner_addr: SocketAddr,
    sealer: Mutex<Sealer>,
    /// The salt `sealer` sends with, which the opener requires as recipient.
    salt: [u8; SALT_LEN],
    relays: Mutex<RelayTable>,
    counters: Arc<GossipCounters>,
    max_datagram: usize,
    cancel: CancellationToken,
    /// Cancelled when the underlay socket cannot receive anymore.
    failed: CancellationToken,
    failure: Mutex<Option<String>>,
    /// Receive and sealing buffers lent to relays while they forward one datagram: a relay
    /// waits for readiness without holding one, so an agent keeps a handful of 64 KB buffers
    /// rather than one per peer.
    scratch: Mutex<Vec<Scratch>>,
    /// Compact digests: this agent's id list and zstd contexts.
    codec: Mutex<Codec>,
    /// Without the private namespace: the sender filter on chitchat's socket.
    filter: Option<sender_filter::InnerFilter>,
    /// Hellos to addresses without a relay in the current second: (second's start, count).
    stranger_hellos: Mutex<(Instant, u32)>,
}

/// One relay's working buffers while it forwards a datagram.
struct Scratch {
    buf: Vec<u8>,
    frame: Vec<u8>,
    frags: Vec<Vec<u8>>,
}

/// Buffers kept for reuse; more are allocated while more relays forward at once.
const SCRATCH_KEPT: usize = 4;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few non-panicking map operations; a poisoned lock's
    // data is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, RelayTable> {
        lock(&self.relays)
    }

    /// Lets chitchat's socket hear the current relays only (no-op in the private namespace).
    fn refilter(&self, table: &RelayTable) {
        let Some(filter) = &self.filter else { return };
        let ports: Vec<u16> = table.by_relay.keys().map(SocketAddr::port).collect();
        if let Err(err) = filter.allow(self.inner_addr.ip(), &ports) {
            warn!(error = %err, op = "gossip-filter", "cannot update the loopback sender filter");
        }
    }

    /// The relay of `peer`, created (and its task spawned) on first use.
    fn relay_for(self: &Arc<Self>, peer: SocketAddr) -> io::Result<(Arc<UdpSocket>, SocketAddr)> {
        let mut table = self.table();
        if let Some(relay) = table.by_peer.get(&peer) {
            return Ok((Arc::clone(&relay.socket), relay.addr));
        }
        let bind = (self.inner_addr.ip(), 0);
        let std_socket = match private_net::get() {
            Some(net) => net.run(|| std::net::UdpSocket::bind(bind))??,
            None => std::net::UdpSocket::bind(bind)?,
        };
        std_socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        let addr = socket.local_addr()?;
        let cancel = self.cancel.child_token();
        tokio::spawn(outbound_loop(
            Arc::clone(self),
            Arc::clone(&socket),
            peer,
            cancel.clone(),
        ));
        let relay = Relay {
            socket: Arc::clone(&socket),
            addr,
            cancel,
            peer_hash: None,
            pending: None,
            peer_salt: None,
            last_hello: None,
            unbound: None,
        };
        if let Some((old_peer, old)) = table.by_peer.push(peer, relay) {
            // `peer` was absent, so this is the least recently used relay making room.
            debug!(peer = %old_peer, op = "relay-evict", "evicting gossip relay");
            table.by_relay.remove(&old.addr);
            old.cancel.cancel();
            table.graveyard.push_back(old.socket);
            if table.graveyard.len() > GRAVEYARD_LEN {
                table.graveyard.pop_front();
            }
            add(&self.counters.relays_evicted, 1);
        }
        table.by_relay.insert(addr, peer);
        self.refilter(&table);
        Ok((socket, addr))
    }

    /// Seals one chitchat datagram and sends it (as one or more underlay datagrams) to `peer`.
    async fn seal_and_send(&self, plaintext: &[u8], peer: SocketAddr, frags: &mut Vec<Vec<u8>>) {
        let recipient = {
            let mut table = self.table();
            match table.by_peer.peek_mut(&peer) {
                Some(relay) => match relay.peer_salt {
                    Some(salt) => salt,
                    None => {
                        relay.unbound =
                            (plaintext.len() <= MAX_UNBOUND_KEPT).then(|| plaintext.to_vec());
                        ANY_RECIPIENT
                    }
                },
                None => ANY_RECIPIENT,
            }
        };
        let sealed =
            lock(&self.sealer).seal_fragments(plaintext, recipient, self.max_datagram, frags);
        match sealed {
            Ok(()) => {}
            Err(SealError::TooLarge(_) | SealError::DatagramLimit(_)) => {
                add(&self.counters.drop_oversized, 1);
                warn!(peer = %peer, len = plaintext.len(), op = "gossip-send",
                    "gossip message too large to seal, dropped");
                return;
            }
            Err(err) => {
                add(&self.counters.send_errors, 1);
                warn!(peer = %peer, error = %err, op = "gossip-send", "cannot seal gossip");
                return;
            }
        }
        for datagram in frags.iter() {
            match self.underlay.send_to(datagram, peer).await {
                Ok(n) => {
                    add(&self.counters.datagrams_out, 1);
                    add(&self.counters.bytes_out, n as u64);
                }
                Err(err) => {
                    add(&self.counters.send_errors, 1);
                    debug!(peer = %peer, error = %err, op = "gossip-send", "underlay send failed");
                }
            }
        }
    }

    /// Writes into `frame` what goes to `peer` for chitchat message `message` (see
    /// `digest_codec`), remembering a compact one until the peer answers.
    fn encode(&self, message: &[u8], peer: SocketAddr, frame: &mut Vec<u8>) {
        let peer_hash = self.table().by_peer.peek(&peer).and_then(|r| r.peer_hash);
        let encoded = lock(&self.codec).encode(message, peer_hash, frame);
        match encoded {
            Encoded::Compact => add(&self.counters.digests_compact, 1),
            Encoded::Full => add(&self.counters.digests_full, 1),
            Encoded::Raw => {}
        }
        if let Some(relay) = self.table().by_peer.peek_mut(&peer) {
            relay.pending = (encoded == Encoded::Compact).then(|| message.to_vec());
        }
    }

    /// Reads one opened frame from `peer`: the chitchat message to forward is left in `out`
    /// (`true`); NACKs are answered here (`false`).
    async fn decode(
        &self,
        frame: &[u8],
        peer: SocketAddr,
        out: &mut Vec<u8>,
        frags: &mut Vec<Vec<u8>>,
    ) -> bool {
        let decoded = lock(&self.codec).decode(frame, out);
        let decoded = match decoded {
            Ok(d) => d,
            Err(Malformed) => {
                add(&self.counters.drop_malformed, 1);
                debug!(peer = %peer, op = "gossip-recv", "malformed gossip frame dropped");
                return false;
            }
        };
        let (peer_hash, pending) = {
            let mut table = self.table();
            let relay = table.by_peer.peek_mut(&peer);
            match (relay, decoded) {
                (Some(relay), Decoded::Message { peer_hash }) => {
                    relay.peer_hash = peer_hash.or(relay.peer_hash);
                    relay.pending = None;
                    return true;
                }
                (Some(relay), Decoded::Unknown { peer_hash } | Decoded::Nack { peer_hash }) => {
                    relay.peer_hash = Some(peer_hash);
                    (peer_hash, relay.pending.take())
                }
                (None, Decoded::Message { .. }) => return true,
                (None, Decoded::Unknown { peer_hash } | Decoded::Nack { peer_hash }) => {
                    (peer_hash, None)
                }
            }
        };
        match decoded {
            Decoded::Unknown { .. } => {
                add(&self.counters.digest_nacks_sent, 1);
                debug!(peer = %peer, peer_hash, op = "gossip-recv",
                    "compact digest on an id list not held here, asking again");
                lock(&self.codec).nack(out);
                self.seal_and_send(out, peer, frags).await;
            }
            Decoded::Nack { .. } => {
                add(&self.counters.digest_nacks_received, 1);
                if let Some(message) = pending {
                    if lock(&self.codec).full(&message, out) == Encoded::Full {
                        add(&self.counters.digests_full, 1);
                    }
                    self.seal_and_send(out, peer, frags).await;
                }
            }
            Decoded::Message { .. } => {}
        }
        false
    }

    /// Remembers the salt of the process at `peer`, from a datagram it bound to this process;
    /// returns the message last sent there unbound, if any, to be sent again.
    fn learn(&self, peer: SocketAddr, salt: [u8; SALT_LEN]) -> Option<Vec<u8>> {
        let mut table = self.table();
        let relay = table.by_peer.peek_mut(&peer)?;
        relay.peer_salt = Some(salt);
        relay.unbound.take()
    }

    /// Sends `peer` (whose process's salt is `peer_salt`) a hello: an empty message bound to
    /// it, from which it learns this process's salt. At most one per [`HELLO_INTERVAL`] per
    /// peer with a relay (created when `create`: after an unbound datagram, which the replay
    /// window lets through once; never for a misdirected one, which an attacker may replay from
    /// any address); to an address without a relay, within [`STRANGER_HELLOS_PER_SEC`] in all.
    async fn hello(
        self: &Arc<Self>,
        peer: SocketAddr,
        peer_salt: [u8; SALT_LEN],
        create: bool,
        buf: &mut Vec<u8>,
    ) {
        if create && let Err(err) = self.relay_for(peer) {
            warn!(peer = %peer, error = %err, op = "relay", "cannot create gossip relay");
            return;
        }
        let now = Instant::now();
        {
            let mut table = self.table();
            match table.by_peer.peek_mut(&peer) {
                Some(relay) => {
                    if relay
                        .last_hello
                        .is_some_and(|t| now.duration_since(t) < HELLO_INTERVAL)
                    {
                        return;
                    }
                    relay.last_hello = Some(now);
                }
                // No relay: a peer still binding to this agent's previous process (the first
                // node restarted, and has no seeds to speak first). Answered without creating
                // any state, under a global rate.
                None => {
                    let mut budget = lock(&self.stranger_hellos);
                    if now.duration_since(budget.0) >= Duration::from_secs(1) {
                        *budget = (now, 0);
                    }
                    if budget.1 >= STRANGER_HELLOS_PER_SEC {
                        return;
                    }
                    budget.1 += 1;
                }
            }
        }
        if let Err(err) = lock(&self.sealer).seal(&[], peer_salt, buf) {
            add(&self.counters.send_errors, 1);
            warn!(peer = %peer, error = %err, op = "gossip-send", "cannot seal a hello");
            return;
        }
        match self.underlay.send_to(buf, peer).await {
            Ok(n) => {
                add(&self.counters.datagrams_out, 1);
                add(&self.counters.bytes_out, n as u64);
                add(&self.counters.hellos_sent, 1);
            }
            Err(err) => {
                add(&self.counters.send_errors, 1);
                debug!(peer = %peer, error = %err, op = "gossip-send", "underlay send failed");
            }
        }
    }

    fn take_scratch(&self) -> Scratch {
        lock(&self.scratch).pop().unwrap_or_else(|| Scratch {
            buf: vec![0u8; RECV_BUF_LEN],
            frame: Vec::new(),
            frags: Vec::new(),
        })
    }

    fn give_scratch(&self, scratch: Scratch) {
        let mut kept = lock(&self.scratch);
        if kept.len() < SCRATCH_KEPT {
            kept.push(scratch);
        }
    }

    fn fail(&self, err: &io::Error) {
        warn!(error = %err, op = "gossip-recv", "gossip underlay socket failed");
        *lock(&self.failure) = Some(err.to_string());
        self.failed.cancel();
    }
}

/// The loopback address of the inner socket and the relays: the gossip address itself when it
/// is an IPv4 loopback address (many agents on one host, as the simulator runs them: each agent's
/// relays then have their own address's ports, instead of all agents sharing the ephemeral ports
/// of 127.0.0.1, which 200 agents x 200 peers exhaust), 127.0.0.1 otherwise.
fn relay_ip(underlay: SocketAddr) -> Ipv4Addr {
    match underlay.ip() {
        std::net::IpAddr::V4(ip) if ip.is_loopback() => ip,
        _ => Ipv4Addr::LOCALHOST,
    }
}

fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::OutOfMemory
            | io::ErrorKind::WouldBlock
    ) || err.raw_os_error() == Some(libc::ENOBUFS)
}

/// Reads what the inner socket sent to `peer`'s relay, seals it, sends it on the underlay.
async fn outbound_loop(
    shared: Arc<Shared>,
    relay: Arc<UdpSocket>,
    peer: SocketAddr,
    cancel: CancellationToken,
) {
    loop {
        let ready = tokio::select! {
            () = cancel.cancelled() => return,
            r = relay.readable() => r,
        };
        if let Err(err) = ready {
            warn!(peer = %peer, error = %err, op = "relay", "gossip relay socket failed");
            return;
        }
        let mut scratch = shared.take_scratch();
        let received = relay.try_recv_from(&mut scratch.buf);
        match received {
            Ok((n, from)) if from == shared.inner_addr => {
                if let Some(message) = scratch.buf.get(..n) {
                    if digest_codec::is_empty_ack(message) {
                        add(&shared.counters.empty_acks_skipped, 1);
                        shared.give_scratch(scratch);
                        continue;
                    }
                    shared.encode(message, peer, &mut scratch.frame);
                    shared
                        .seal_and_send(&scratch.frame, peer, &mut scratch.frags)
                        .await;
                }
            }
            Ok((_, from)) => {
                debug!(from = %from, op = "relay", "relay datagram not from the inner socket, dropped");
            }
            Err(err) if is_transient(&err) => {}
            Err(err) => {
                warn!(peer = %peer, error = %err, op = "relay", "gossip relay socket failed");
                return;
            }
        }
        shared.give_scratch(scratch);
    }
}

/// Reads the underlay socket, opens each datagram, forwards plaintext to the inner socket from
/// the sender's relay.
async fn inbound_loop(shared: Arc<Shared>, mut opener: Opener) {
    let mut buf = vec![0u8; RECV_BUF_LEN];
    let mut out = Vec::new();
    let mut decoded = Vec::new();
    let mut frags = Vec::new();
    let mut hello = Vec::new();
    let counters = Arc::clone(&shared.counters);
    loop {
        let received = tokio::select! {
            () = shared.cancel.cancelled() => return,
            r = shared.underlay.recv_from(&mut buf) => r,
        };
        let (n, from) = match received {
            Ok(r) => r,
            Err(err) if is_transient(&err) => continue,
            Err(err) => {
                shared.fail(&err);
                return;
            }
        };
        add(&counters.datagrams_in, 1);
        add(&counters.bytes_in, n as u64);
        let Some(datagram) = buf.get(..n).filter(|_| n <= MAX_DATAGRAM) else {
            add(&counters.drop_oversized, 1);
            continue;
        };
        let (sender, message) = match opener.open(datagram, &mut out) {
            Ok(Opened::Message { sender, message }) => (sender, message),
            Ok(Opened::Fragment) => continue,
            Ok(Opened::Unbound { sender }) => {
                add(&counters.unbound_in, 1);
                shared.hello(from, sender, true, &mut hello).await;
                continue;
            }
            Err(reason @ OpenError::Misdirected(sender)) => {
                counters.count_drop(reason);
                debug!(peer = %from, op = "gossip-recv", "gossip datagram bound to another process dropped");
                shared.hello(from, sender, false, &mut hello).await;
                continue;
            }
            Err(reason) => {
                counters.count_drop(reason);
                debug!(peer = %from, reason = %reason, op = "gossip-recv", "gossip datagram dropped");
                continue;
            }
        };
        let relay = match shared.relay_for(from) {
            Ok((relay, _)) => relay,
            Err(err) => {
                warn!(peer = %from, error = %err, op = "relay", "cannot create gossip relay");
                continue;
            }
        };
        let resend = shared.learn(from, sender);
        if message.is_empty() {
            // A hello: it told us the sender's salt; what it could not read goes again, bound.
            if let Some(unbound) = resend {
                shared.seal_and_send(&unbound, from, &mut frags).await;
            }
            continue;
        }
        if !shared.decode(message, from, &mut decoded, &mut frags).await {
            continue;
        }
        if let Err(err) = relay.send_to(&decoded, shared.inner_addr).await {
            debug!(peer = %from, error = %err, op = "relay", "forward to chitchat failed");
        }
    }
}

/// The private network namespace of the loopback sockets (see the module doc).
mod private_net {
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::OnceLock;

    /// A network namespace only this process holds, kept alive by its fd.
    pub(super) struct PrivateNet {
        ns: File,
    }

    static NET: OnceLock<Option<PrivateNet>> = OnceLock::new();

    /// The process's private namespace, created on first use; `None` (warned once) without
    /// the privilege to create one.
    pub(super) fn get() -> Option<&'static PrivateNet> {
        NET.get_or_init(|| {
            if std::env::var("WEFT_GOSSIP_NETNS").is_ok_and(|v| v == "off") {
                tracing::info!(
                    op = "gossip-netns",
                    "private gossip namespace off (WEFT_GOSSIP_NETNS=off)"
                );
                return None;
            }
            create_or_warn()
        })
        .as_ref()
    }

    fn create_or_warn() -> Option<PrivateNet> {
        match create() {
            Ok(net) => Some(net),
            Err(err) => {
                tracing::warn!(error = %err, op = "gossip-netns",
                    "no private network namespace for the gossip loopback sockets (needs \
                     CAP_SYS_ADMIN): chitchat's loopback socket gets a sender filter instead");
                None
            }
        }
    }

    fn create() -> io::Result<PrivateNet> {
        std::thread::Builder::new()
            .name("weft-netns".into())
            .spawn(|| {
                // SAFETY: plain syscall; CLONE_NEWNET moves only this (short-lived) thread.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                let ns = File::open("/proc/thread-self/ns/net")?;
                lo_up()?;
                Ok(PrivateNet { ns })
            })?
            .join()
            .map_err(|_| io::Error::other("namespace thread panicked"))?
    }

    /// `ip link set lo up` in the calling thread's namespace.
    fn lo_up() -> io::Result<()> {
        // SAFETY: plain syscall; the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero ifreq is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
        unsafe {
            if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
                return Err(io::Error::last_os_error());
            }
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn setns(fd: &File) -> io::Result<()> {
        // SAFETY: plain syscall on a namespace fd we hold.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    impl PrivateNet {
        /// Runs `f` with the calling thread in the private namespace (sockets `f` creates stay
        /// there), then moves the thread back. `f` must not yield (no `.await` inside).
        pub(super) fn run<R>(&self, f: impl FnOnce() -> R) -> io::Result<R> {
            let back = File::open("/proc/thread-self/ns/net")?;
            setns(&self.ns)?;
            let r = f();
            if let Err(err) = setns(&back) {
                // A thread left in the private namespace would bind the next underlay socket
                // there: better stop than run half-deaf.
                tracing::error!(error = %err, "cannot leave the private network namespace");
                std::process::abort();
            }
            Ok(r)
        }
    }
}

/// The sender filter on chitchat's loopback socket, used without the private namespace.
mod sender_filter {
    use std::io;
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// Offset of the network header for classic BPF loads (`SKF_NET_OFF`).
    const SKF_NET_OFF: i32 = -0x10_0000;
    /// Largest classic BPF program (`BPF_MAXINSNS`).
    const MAX_INSNS: usize = 4096;

    /// A duplicate of chitchat's socket fd (the same socket: filters set on it apply there).
    pub(super) struct InnerFilter {
        fd: OwnedFd,
    }

    fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        }
    }

    fn local_addr(fd: i32) -> Option<SocketAddr> {
        // SAFETY: getsockname writes at most `len` bytes into the storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let rc =
            unsafe { libc::getsockname(fd, (&raw mut storage).cast::<libc::sockaddr>(), &mut len) };
        if rc != 0 || i32::from(storage.ss_family) != libc::AF_INET {
            return None;
        }
        // SAFETY: the family says it is a sockaddr_in.
        let sin = unsafe { *(&raw const storage).cast::<libc::sockaddr_in>() };
        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
    }

    impl InnerFilter {
        /// Finds the socket bound to `addr` among this process's fds, and filters it to drop
        /// everything until [`allow`](Self::allow) says otherwise.
        pub(super) fn find(addr: SocketAddr) -> io::Result<InnerFilter> {
            for entry in std::fs::read_dir("/proc/self/fd")? {
                let Some(fd) = entry?
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<i32>().ok())
                else {
                    continue;
                };
                if local_addr(fd) != Some(addr) {
                    continue;
                }
                // SAFETY: dup of an open fd; the copy is ours.
                let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
                if dup < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: a fresh fd nobody else owns.
                let filter = InnerFilter {
                    fd: unsafe { OwnedFd::from_raw_fd(dup) },
                };
                filter.allow(addr.ip(), &[])?;
                return Ok(filter);
            }
            Err(io::Error::other(format!(
                "no socket bound to {addr} in /proc/self/fd"
            )))
        }

        /// Accepts only datagrams from `ip` and one of `ports`.
        pub(super) fn allow(&self, ip: IpAddr, ports: &[u16]) -> io::Result<()> {
            let IpAddr::V4(ip) = ip else {
                return Err(io::Error::other("IPv4 loopback only"));
            };
            const ACCEPT: u32 = u32::MAX;
            let ld = libc::BPF_LD | libc::BPF_ABS;
            let mut prog = vec![
                // Source address (IPv4 header offset 12) must be the relays' address.
                stmt(ld | libc::BPF_W, (SKF_NET_OFF + 12) as u32),
                jeq(u32::from(ip), 1, 0),
                stmt(libc::BPF_RET | libc::BPF_K, 0),
                // Source port: the UDP header is at offset 0.
                stmt(ld | libc::BPF_H, 0),
            ];
            for &port in ports.iter().take((MAX_INSNS - 5) / 2) {
                prog.push(jeq(u32::from(port), 0, 1));
                prog.push(stmt(libc::BPF_RET | libc::BPF_K, ACCEPT));
            }
            prog.push(stmt(libc::BPF_RET | libc::BPF_K, 0));
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_mut_ptr(),
            };
            // SAFETY: the kernel copies the program; `prog` outlives the call.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ATTACH_FILTER,
                    (&raw const fprog).cast(),
                    std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
    }
}
