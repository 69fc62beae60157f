//! The peer table (subnet → underlay address and keys) and the receive filter. Pure: the I/O
//! loops in [`super`] own one [`PeerCrypto`] each and consult a shared, immutable [`PeerTable`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use ipnet::{Ipv4Net, Ipv6Net};
use weft_proto::frame::{self, CounterSource, FrameError, FrameOpener, FrameSealer, Header};

use super::DropReason;

/// A peer as the agent hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    pub name: String,
    /// Its IPv4 subnet (none in an IPv6-only overlay).
    pub subnet: Option<Ipv4Net>,
    /// Its IPv6 subnet, in a dual-stack overlay.
    pub ipv6_subnet: Option<Ipv6Net>,
    /// Underlay address and tunnel port frames go to, and must come from.
    pub addr: SocketAddr,
    /// X25519 public key from the peer's record.
    pub public_key: Option<[u8; 32]>,
    /// Alive in the mesh: only live peers' frames are accepted (dead ones are still sent to).
    pub live: bool,
}

/// The keys of one peer pair, derived from this node's private key and the peer's public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairKeys {
    /// Seals the frames sent to the peer.
    pub send: [u8; 32],
    /// Opens the frames received from the peer.
    pub recv: [u8; 32],
    /// The key id frames to the peer carry (this node's public key's id).
    pub send_id: u32,
    /// The key id frames from the peer must carry (its public key's id).
    pub recv_id: u32,
}

/// A peer with its derived keys.
#[derive(Clone, Debug)]
pub struct Peer {
    pub spec: PeerSpec,
    /// Its keys, when encrypting and it publishes a usable public key.
    pub keys: Option<PairKeys>,
}

/// An immutable snapshot, replaced as a whole by the agent.
#[derive(Clone, Debug, Default)]
pub struct PeerTable {
    pub peers: Vec<Peer>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Distinct prefix lengths, longest first, and network → peer index.
    prefixes: Vec<u8>,
    by_net: HashMap<(u32, u8), usize>,
    /// The same for the peers' IPv6 subnets.
    prefixes6: Vec<u8>,
    by_net6: HashMap<(u128, u8), usize>,
}

impl PeerTable {
    /// Builds the table. With `private_key`, derives per-peer keys (peers without a usable public
    /// key get none: nothing is sent to them and nothing accepted from them).
    pub fn new(specs: Vec<PeerSpec>, private_key: Option<&[u8; 32]>) -> PeerTable {
        let mut t = PeerTable::default();
        let own_id = private_key.map(|k| frame::key_id(&frame::public_key(k)));
        for spec in specs {
            let keys = match (private_key, own_id, &spec.public_key) {
                (Some(k), Some(own_id), Some(pk)) => {
                    frame::derive_keys(k, pk).ok().map(|(send, recv)| PairKeys {
                        send,
                        recv,
                        send_id: own_id,
                        recv_id: frame::key_id(pk),
                    })
                }
                _ => None,
            };
            let i = t.peers.len();
            if spec.live {
                t.by_addr.insert(spec.addr, i);
            }
            if let Some(net) = spec.subnet {
                let len = net.prefix_len();
                if !t.prefixes.contains(&len) {
                    t.prefixes.push(len);
                }
                t.by_net.insert((u32::from(net.network()), len), i);
            }
            if let Some(net6) = spec.ipv6_subnet {
                let len = net6.prefix_len();
                if !t.prefixes6.contains(&len) {
                    t.prefixes6.push(len);
                }
                t.by_net6.insert((u128::from(net6.network()), len), i);
            }
            t.peers.push(Peer { spec, keys });
        }
        t.prefixes.sort_unstable_by(|a, b| b.cmp(a));
        t.prefixes6.sort_unstable_by(|a, b| b.cmp(a));
        t
    }

    /// The peer owning `dst`'s subnet, in either family.
    pub fn route_ip(&self, dst: IpAddr) -> Option<usize> {
        match dst {
            IpAddr::V4(v4) => self.route(v4),
            IpAddr::V6(v6) => self.route6(v6),
        }
    }

    /// The peer owning `dst`'s IPv6 subnet.
    pub fn route6(&self, dst: Ipv6Addr) -> Option<usize> {
        let ip = u128::from(dst);
        self.prefixes6.iter().find_map(|&len| {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            self.by_net6.get(&(ip & mask, len)).copied()
        })
    }

    /// The peer owning `dst`'s subnet.
    pub fn route(&self, dst: Ipv4Addr) -> Option<usize> {
        let ip = u32::from(dst);
        self.prefixes.iter().find_map(|&len| {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            self.by_net.get(&(ip & mask, len)).copied()
        })
    }

    /// The live peer sending from `addr`.
    pub fn from_addr(&self, addr: &SocketAddr) -> Option<usize> {
        self.by_addr.get(addr).copied()
    }
}

/// Receive keys whose peer left the table, remembered with their replay high-water mark so a
/// peer that comes back with the same keys cannot have old frames replayed to it.
pub const MAX_RETIRED_OPENERS: usize = 4096;

/// One direction's per-peer crypto state, aligned with a [`PeerTable`]'s peers.
///
/// Sealing: every sealer draws its counters from one [`CounterSource`] (the process's, by
/// default), so no (key, nonce) pair repeats whatever the table does: a peer leaving and coming
/// back, two records announcing one public key, this node's own claim lost and regained (an
/// empty table, then a full one). Sealers are kept across refreshes only to save the key setup.
///
/// Opening: peers announcing the same key share one opener (one replay window), and the window
/// of a peer that left is kept as its high-water mark (up to [`MAX_RETIRED_OPENERS`] keys), so
/// frames replayed from before the departure stay refused when it returns.
#[derive(Debug)]
pub struct PeerCrypto {
    counters: CounterSource,
    /// Per peer: its sealer (send direction only).
    pub sealers: Vec<Option<FrameSealer>>,
    seal_keys: Vec<Option<[u8; 32]>>,
    /// Per peer: index into `openers` (receive direction only).
    opener_of: Vec<Option<usize>>,
    openers: Vec<([u8; 32], FrameOpener)>,
    retired: HashMap<[u8; 32], u64>,
    retired_order: VecDeque<[u8; 32]>,
}

impl Default for PeerCrypto {
    fn default() -> Self {
        PeerCrypto::with_counters(CounterSource::process())
    }
}

impl PeerCrypto {
    /// Sealers draw from `counters` (tests; the tunnel uses the process's source).
    pub fn with_counters(counters: CounterSource) -> Self {
        PeerCrypto {
            counters,
            sealers: Vec::new(),
            seal_keys: Vec::new(),
            opener_of: Vec::new(),
            openers: Vec::new(),
            retired: HashMap::new(),
            retired_order: VecDeque::new(),
        }
    }

    /// The opener of peer `i`, if it has keys.
    pub fn opener(&mut self, i: usize) -> Option<&mut FrameOpener> {
        let j = (*self.opener_of.get(i)?)?;
        self.openers.get_mut(j).map(|(_, o)| o)
    }

    /// Receive keys remembered for peers that left (bounded by [`MAX_RETIRED_OPENERS`]).
    pub fn retired_len(&self) -> usize {
        self.retired.len()
    }

    /// Rebuilds for `table`: sealers when `seal`, openers otherwise.
    pub fn refresh(&mut self, table: &PeerTable, seal: bool) {
        if seal {
            self.refresh_sealers(table);
        } else {
            self.refresh_openers(table);
        }
    }

    fn refresh_sealers(&mut self, table: &PeerTable) {
        let mut old: HashMap<[u8; 32], FrameSealer> = HashMap::new();
        let keys = std::mem::take(&mut self.seal_keys);
        let sealers = std::mem::take(&mut self.sealers);
        for (k, s) in keys.into_iter().zip(sealers) {
            if let (Some(k), Some(s)) = (k, s) {
                old.insert(k, s);
            }
        }
        for peer in &table.peers {
            let Some(PairKeys { send, send_id, .. }) = peer.keys else {
                self.seal_keys.push(None);
                self.sealers.push(None);
                continue;
            };
            // A kept or a new sealer: either way its counters come from the shared source.
            let s = old
                .remove(&send)
                .or_else(|| FrameSealer::new(&send, send_id, self.counters.clone()).ok());
            self.seal_keys.push(Some(send));
            self.sealers.push(s);
        }
    }

    fn refresh_openers(&mut self, table: &PeerTable) {
        let mut old: HashMap<[u8; 32], FrameOpener> =
            std::mem::take(&mut self.openers).into_iter().collect();
        self.opener_of.clear();
        let mut index: HashMap<[u8; 32], usize> = HashMap::new();
        for peer in &table.peers {
            let Some(PairKeys { recv, recv_id, .. }) = peer.keys else {
                self.opener_of.push(None);
                continue;
            };
            if let Some(&j) = index.get(&recv) {
                self.opener_of.push(Some(j));
                continue;
            }
            let opener = match old.remove(&recv) {
                Some(o) => Some(o),
                None => {
                    let next = self.retired.remove(&recv).unwrap_or(0);
                    FrameOpener::resume(&recv, recv_id, next).ok()
                }
            };
            match opener {
                Some(o) => {
                    index.insert(recv, self.openers.len());
                    self.opener_of.push(Some(self.openers.len()));
                    self.openers.push((recv, o));
                }
                None => self.opener_of.push(None),
            }
        }
        for (k, o) in old {
            if o.high_water() > 0 && self.retired.insert(k, o.high_water()).is_none() {
                self.retired_order.push_back(k);
            }
        }
        while self.retired.len() > MAX_RETIRED_OPENERS {
            match self.retired_order.pop_front() {
                Some(k) => {
                    self.retired.remove(&k);
                }
                None => break,
            }
        }
        // Keys taken back out of `retired` leave stale entries in the order: drop them.
        if self.retired_order.len() > 2 * MAX_RETIRED_OPENERS {
            let retired = &self.retired;
            self.retired_order.retain(|k| retired.contains_key(k));
        }
    }
}

fn reason(e: FrameError) -> DropReason {
    match e {
        FrameError::Replay => DropReason::Replay,
        FrameError::Auth | FrameError::WrongKey | FrameError::Mode | FrameError::Key => {
            DropReason::Auth
        }
        FrameError::Short
        | FrameError::BadMagic
        | FrameError::Version(_)
        | FrameError::Type(_)
        | FrameError::BadPacket
        | FrameError::NoRoom => DropReason::Garbage,
    }
}

/// The receive filter: a frame is accepted only from a known live peer's address, only in the
/// configured mode (sealed frames opened with that peer's key), and only if the inner source is
/// inside that peer's subnet of the packet's family (an IPv6 packet from a peer without an IPv6
/// subnet is spoofed). Returns the inner packet's range in `frame`.
pub fn accept(
    table: &PeerTable,
    crypto: &mut PeerCrypto,
    encrypted: bool,
    from: Option<SocketAddr>,
    frame: &mut [u8],
) -> Result<Range<usize>, DropReason> {
    let i = from
        .and_then(|a| table.from_addr(&a))
        .ok_or(DropReason::UnknownSource)?;
    let peer = table.peers.get(i).ok_or(DropReason::UnknownSource)?;
    let header = frame::decode(frame).map_err(reason)?;
    let range = match (header, encrypted) {
        (Header::Plain, false) => frame::PLAIN_HEADER_LEN..frame.len(),
        (Header::Sealed { .. }, true) => {
            let opener = crypto.opener(i).ok_or(DropReason::Auth)?;
            opener.open(frame).map_err(reason)?
        }
        _ => return Err(DropReason::Auth),
    };
    let packet = frame.get(range.clone()).ok_or(DropReason::Garbage)?;
    let (src, _) = frame::check_packet(packet).map_err(reason)?;
    let inside = match src {
        IpAddr::V4(v4) => peer.spec.subnet.is_some_and(|n| n.contains(&v4)),
        IpAddr::V6(v6) => peer.spec.ipv6_subnet.is_some_and(|n| n.contains(&v6)),
    };
    if !inside {
        return Err(DropReason::Spoofed);
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::frame::{SEALED_HEADER_LEN, SEALED_OVERHEAD};

    fn packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[0; 8]);
        p
    }

    fn spec(name: &str, subnet: &str, addr: &str, pk: Option<[u8; 32]>) -> PeerSpec {
        PeerSpec {
            name: name.into(),
            subnet: subnet.parse().ok(),
            ipv6_subnet: None,
            addr: addr.parse().unwrap(),
            public_key: pk,
            live: true,
        }
    }

    fn packet6(src: &str, dst: &str) -> Vec<u8> {
        let src: Ipv6Addr = src.parse().unwrap();
        let dst: Ipv6Addr = dst.parse().unwrap();
        let mut p = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[0; 8]);
        p
    }

    #[test]
    fn ipv6_routes_and_sources_are_checked_per_family() {
        let with6 = |name, v4, v6: &str, addr| PeerSpec {
            ipv6_subnet: Some(v6.parse().unwrap()),
            ..spec(name, v4, addr, None)
        };
        let t = PeerTable::new(
            vec![
                with6("a", "10.244.1.0/24", "fd00:10:244:1::/64", "192.0.2.1:8285"),
                with6("b", "10.244.2.0/24", "fd00:10:244:2::/64", "192.0.2.2:8285"),
                spec("v4only", "10.244.3.0/24", "192.0.2.3:8285", None),
            ],
            None,
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(t.route_ip(ip("fd00:10:244:2::9")), Some(1));
        assert_eq!(t.route_ip(ip("fd00:10:244:1::1")), Some(0));
        assert_eq!(t.route_ip(ip("fd00:10:244:3::1")), None);
        assert_eq!(t.route_ip(ip("10.244.3.7")), Some(2));
        let mut c = PeerCrypto::default();
        c.refresh(&t, false);
        let from = |a: &str| Some(a.parse().unwrap());
        let good = packet6("fd00:10:244:1::5", "fd00:10:244:2::5");
        let mut f = plain(&good);
        let r = accept(&t, &mut c, false, from("192.0.2.1:8285"), &mut f).unwrap();
        assert_eq!(&f[r], &good[..]);
        // b's IPv6 source from a's address; any IPv6 source from a peer without an IPv6 subnet.
        let mut f = plain(&packet6("fd00:10:244:2::5", "fd00:10:244:1::5"));
        assert_eq!(
            accept(&t, &mut c, false, from("192.0.2.1:8285"), &mut f),
            Err(DropReason::Spoofed)
        );
        let mut f = plain(&packet6("fd00:10:244:3::5", "fd00:10:244:1::5"));
        assert_eq!(
            accept(&t, &mut c, false, from("192.0.2.3:8285"), &mut f),
            Err(DropReason::Spoofed)
        );
        // An IPv4 source outside the IPv4 subnet stays spoofed next to a valid IPv6 subnet.
        let mut f = plain(&packet([10, 244, 2, 5], [10, 244, 1, 5]));
        assert_eq!(
            accept(&t, &mut c, false, from("192.0.2.1:8285"), &mut f),
            Err(DropReason::Spoofed)
        );
    }

    fn plain(p: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 4];
        frame::write_plain_header(&mut f).unwrap();
        f.extend_from_slice(p);
        f
    }

    #[test]
    fn routes_by_longest_prefix() {
        let t = PeerTable::new(
            vec![
                spec("a", "10.244.1.0/24", "192.0.2.1:8285", None),
                spec("b", "10.244.2.0/24", "192.0.2.2:8285", None),
                spec("c", "10.244.4.0/22", "192.0.2.3:8285", None),
                spec("d", "10.244.5.0/24", "192.0.2.4:8285", None),
            ],
            None,
        );
        assert_eq!(t.route("10.244.1.9".parse().unwrap()), Some(0));
        assert_eq!(t.route("10.244.2.255".parse().unwrap()), Some(1));
        assert_eq!(t.route("10.244.6.1".parse().unwrap()), Some(2));
        assert_eq!(t.route("10.244.5.1".parse().unwrap()), Some(3));
        assert_eq!(t.route("10.244.3.1".parse().unwrap()), None);
        assert_eq!(t.from_addr(&"192.0.2.2:8285".parse().unwrap()), Some(1));
        assert_eq!(t.from_addr(&"192.0.2.2:8286".parse().unwrap()), None);
    }

    #[test]
    fn plain_filter_reasons() {
        let mut dead = spec("dead", "10.244.3.0/24", "192.0.2.3:8285", None);
        dead.live = false;
        let t = PeerTable::new(
            vec![spec("a", "10.244.1.0/24", "192.0.2.1:8285", None), dead],
            None,
        );
        let mut c = PeerCrypto::default();
        c.refresh(&t, false);
        let a = Some("192.0.2.1:8285".parse().unwrap());
        let good = packet([10, 244, 1, 5], [10, 244, 2, 5]);
        let mut f = plain(&good);
        let r = accept(&t, &mut c, false, a, &mut f).unwrap();
        assert_eq!(&f[r], &good[..]);
        let mut f = plain(&good);
        assert_eq!(
            accept(
                &t,
                &mut c,
                false,
                Some("192.0.2.9:8285".parse().unwrap()),
                &mut f
            ),
            Err(DropReason::UnknownSource)
        );
        let mut f = plain(&packet([10, 244, 3, 5], [10, 244, 2, 5]));
        assert_eq!(
            accept(
                &t,
                &mut c,
                false,
                Some("192.0.2.3:8285".parse().unwrap()),
                &mut f
            ),
            Err(DropReason::UnknownSource),
            "dead peers' frames are not accepted"
        );
        let mut f = plain(&packet([10, 244, 3, 5], [10, 244, 2, 5]));
        assert_eq!(
            accept(&t, &mut c, false, a, &mut f),
            Err(DropReason::Spoofed)
        );
        let mut f = b"garbage garbage garbage garbage".to_vec();
        assert_eq!(
            accept(&t, &mut c, false, a, &mut f),
            Err(DropReason::Garbage)
        );
        let mut f = vec![0u8; SEALED_HEADER_LEN + 40];
        frame::write_sealed_header(&mut f, 1, 1).unwrap();
        assert_eq!(accept(&t, &mut c, false, a, &mut f), Err(DropReason::Auth));
    }

    #[test]
    fn sealed_filter_and_key_continuity() {
        let (ka, kb) = ([3u8; 32], [4u8; 32]);
        let (pa, pb) = (frame::public_key(&ka), frame::public_key(&kb));
        let addr_a = "192.0.2.1:8285";
        // b's view of a, and a's view of b.
        let at_b = PeerTable::new(
            vec![spec("a", "10.244.1.0/24", addr_a, Some(pa))],
            Some(&kb),
        );
        let at_a = PeerTable::new(
            vec![spec("b", "10.244.2.0/24", "192.0.2.2:8285", Some(pb))],
            Some(&ka),
        );
        let mut tx = PeerCrypto::default();
        tx.refresh(&at_a, true);
        let mut rx = PeerCrypto::default();
        rx.refresh(&at_b, false);
        let seal = |tx: &mut PeerCrypto, p: &[u8]| {
            let mut buf = vec![0u8; p.len() + SEALED_OVERHEAD];
            buf[SEALED_HEADER_LEN..SEALED_HEADER_LEN + p.len()].copy_from_slice(p);
            let n = tx.sealers[0]
                .as_mut()
                .unwrap()
                .seal(&mut buf, p.len())
                .unwrap();
            buf.truncate(n);
            buf
        };
        let from = Some(addr_a.parse().unwrap());
        let good = packet([10, 244, 1, 5], [10, 244, 2, 5]);
        let mut f = seal(&mut tx, &good);
        let replay = f.clone();
        let r = accept(&at_b, &mut rx, true, from, &mut f).unwrap();
        assert_eq!(&f[r], &good[..]);
        let mut f = replay.clone();
        assert_eq!(
            accept(&at_b, &mut rx, true, from, &mut f),
            Err(DropReason::Replay)
        );
        // A refresh with the same keys keeps the replay window.
        rx.refresh(&at_b.clone(), false);
        tx.refresh(&at_a.clone(), true);
        let mut f = replay.clone();
        assert_eq!(
            accept(&at_b, &mut rx, true, from, &mut f),
            Err(DropReason::Replay)
        );
        let mut f = seal(&mut tx, &packet([10, 244, 9, 5], [10, 244, 2, 5]));
        assert_eq!(
            accept(&at_b, &mut rx, true, from, &mut f),
            Err(DropReason::Spoofed)
        );
        let mut f = plain(&good);
        assert_eq!(
            accept(&at_b, &mut rx, true, from, &mut f),
            Err(DropReason::Auth)
        );
        // A peer restarting with a new key pair: old frames no longer open.
        let new_pa = frame::public_key(&[5u8; 32]);
        let at_b2 = PeerTable::new(
            vec![spec("a", "10.244.1.0/24", addr_a, Some(new_pa))],
            Some(&kb),
        );
        rx.refresh(&at_b2, false);
        let mut f = seal(&mut tx, &good);
        assert_eq!(
            accept(&at_b2, &mut rx, true, from, &mut f),
            Err(DropReason::Auth)
        );
    }

    /// Table churn as the agent can produce it, seen from this node (key `OWN`).
    #[derive(Clone, Debug)]
    enum Churn {
        /// The peer in this slot drops out of the table (reservation expired, contested).
        Leave(usize),
        /// It comes back with the keys it had.
        Return(usize),
        /// It restarts: a new key pair (one of the pool).
        NewKey(usize, usize),
        /// Its record announces another slot's public key.
        Duplicate(usize, usize),
        /// This node's own claim is lost (empty table), then regained.
        ClaimLost,
        ClaimBack,
        /// Frames sealed to the slot's peer.
        Send(usize, usize),
    }

    const OWN: [u8; 32] = [0x42; 32];
    const SLOTS: usize = 4;
    const POOL: usize = 6;

    fn churn() -> impl proptest::strategy::Strategy<Value = Churn> {
        use proptest::prelude::*;
        prop_oneof![
            (0..SLOTS).prop_map(Churn::Leave),
            (0..SLOTS).prop_map(Churn::Return),
            (0..SLOTS, 0..POOL).prop_map(|(s, k)| Churn::NewKey(s, k)),
            (0..SLOTS, 0..SLOTS).prop_map(|(s, f)| Churn::Duplicate(s, f)),
            Just(Churn::ClaimLost),
            Just(Churn::ClaimBack),
            (0..SLOTS, 1..4usize).prop_map(|(s, n)| Churn::Send(s, n)),
            (0..SLOTS, 1..4usize).prop_map(|(s, n)| Churn::Send(s, n)),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// No (key, nonce) pair is ever sealed twice whatever the table does, and every frame
        /// opens at its peer, whose table kept this node all along (no replay blackhole).
        #[test]
        fn no_nonce_reuse_under_churn(ops in proptest::collection::vec(churn(), 1..80)) {
            let pool: Vec<[u8; 32]> = (0..POOL).map(|i| [i as u8 + 1; 32]).collect();
            let own_pub = frame::public_key(&OWN);
            // slot -> (present, pool index of its key)
            let mut slots: Vec<(bool, usize)> = (0..SLOTS).map(|i| (true, i)).collect();
            let mut claimed = true;
            let table_of = |slots: &[(bool, usize)], claimed: bool| {
                let specs = if claimed {
                    slots.iter().enumerate().filter(|(_, (present, _))| *present)
                        .map(|(i, (_, k))| spec(
                            &format!("p{i}"),
                            &format!("10.244.{}.0/24", i + 1),
                            &format!("192.0.2.{}:8285", i + 1),
                            Some(frame::public_key(&pool[*k])),
                        ))
                        .collect()
                } else {
                    Vec::new()
                };
                PeerTable::new(specs, Some(&OWN))
            };
            // Each pool key's receiver: its table holds this node, unchanged throughout.
            let mut receivers: Vec<(PeerTable, PeerCrypto)> = pool.iter().map(|k| {
                let t = PeerTable::new(
                    vec![spec("own", "10.244.100.0/24", "192.0.2.100:8285", Some(own_pub))],
                    Some(k),
                );
                let mut c = PeerCrypto::default();
                c.refresh(&t, false);
                (t, c)
            }).collect();
            let mut tx = PeerCrypto::default();
            let mut table = table_of(&slots, claimed);
            tx.refresh(&table, true);
            let mut seen = std::collections::HashSet::new();
            let from = Some("192.0.2.100:8285".parse().unwrap());
            for op in ops {
                match op {
                    Churn::Leave(s) => slots[s].0 = false,
                    Churn::Return(s) => slots[s].0 = true,
                    Churn::NewKey(s, k) => slots[s] = (true, k),
                    Churn::Duplicate(s, f) => slots[s] = (true, slots[f].1),
                    Churn::ClaimLost => claimed = false,
                    Churn::ClaimBack => claimed = true,
                    Churn::Send(s, n) => {
                        let Some(i) = table.peers.iter()
                            .position(|p| p.spec.name == format!("p{s}")) else { continue };
                        let key_index = slots[s].1;
                        for _ in 0..n {
                            let p = packet([10, 244, 100, 1], [10, 244, s as u8 + 1, 1]);
                            let mut buf = vec![0u8; p.len() + SEALED_OVERHEAD];
                            buf[SEALED_HEADER_LEN..SEALED_HEADER_LEN + p.len()].copy_from_slice(&p);
                            let len = tx.sealers[i].as_mut().unwrap().seal(&mut buf, p.len()).unwrap();
                            buf.truncate(len);
                            let Ok(Header::Sealed { counter, .. }) = frame::decode(&buf) else {
                                panic!("not a sealed frame");
                            };
                            let send_key = table.peers[i].keys.unwrap().send;
                            proptest::prop_assert!(seen.insert((send_key, counter)),
                                "nonce {counter} reused under one key");
                            let (rt, rc) = &mut receivers[key_index];
                            proptest::prop_assert_eq!(accept(rt, rc, true, from, &mut buf).map(|_| ()), Ok(()));
                        }
                        continue;
                    }
                }
                table = table_of(&slots, claimed);
                tx.refresh(&table, true);
            }
        }
    }

    #[test]
    fn returning_peer_keeps_its_replay_state_and_duplicates_share_it() {
        let (ka, kb) = ([3u8; 32], [4u8; 32]);
        let pa = frame::public_key(&ka);
        let addr_a = "192.0.2.1:8285";
        let at_b = PeerTable::new(
            vec![spec("a", "10.244.1.0/24", addr_a, Some(pa))],
            Some(&kb),
        );
        let at_a = PeerTable::new(
            vec![spec(
                "b",
                "10.244.2.0/24",
                "192.0.2.2:8285",
                Some(frame::public_key(&kb)),
            )],
            Some(&ka),
        );
        let mut tx = PeerCrypto::default();
        tx.refresh(&at_a, true);
        let mut rx = PeerCrypto::default();
        rx.refresh(&at_b, false);
        let good = packet([10, 244, 1, 5], [10, 244, 2, 5]);
        let mut f = vec![0u8; good.len() + SEALED_OVERHEAD];
        f[SEALED_HEADER_LEN..SEALED_HEADER_LEN + good.len()].copy_from_slice(&good);
        let n = tx.sealers[0]
            .as_mut()
            .unwrap()
            .seal(&mut f, good.len())
            .unwrap();
        f.truncate(n);
        let old = f.clone();
        let from = Some(addr_a.parse().unwrap());
        assert!(accept(&at_b, &mut rx, true, from, &mut f).is_ok());
        // a leaves b's table, then returns with the same key: its old frame stays a replay.
        rx.refresh(&PeerTable::new(Vec::new(), Some(&kb)), false);
        assert_eq!(rx.retired_len(), 1);
        rx.refresh(&at_b, false);
        assert_eq!(rx.retired_len(), 0);
        assert_eq!(
            accept(&at_b, &mut rx, true, from, &mut old.clone()),
            Err(DropReason::Replay)
        );
        // Two records with a's key (another address, same subnet): one replay window, so
        // a's frame replayed from the other address is refused too.
        let dup = PeerTable::new(
            vec![
                spec("a", "10.244.1.0/24", addr_a, Some(pa)),
                spec("a2", "10.244.1.0/24", "192.0.2.9:8285", Some(pa)),
            ],
            Some(&kb),
        );
        rx.refresh(&dup, false);
        assert_eq!(
            accept(
                &dup,
                &mut rx,
                true,
                Some("192.0.2.9:8285".parse().unwrap()),
                &mut old.clone()
            ),
            Err(DropReason::Replay)
        );
        // Retired keys are bounded.
        for i in 0..(MAX_RETIRED_OPENERS + 10) {
            let mut k = [9u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let t = PeerTable::new(
                vec![spec(
                    "x",
                    "10.244.7.0/24",
                    "192.0.2.7:8285",
                    Some(frame::public_key(&k)),
                )],
                Some(&kb),
            );
            rx.refresh(&t, false);
            let mut f = vec![0u8; good.len() + SEALED_OVERHEAD];
            let (send, _) = frame::derive_keys(&k, &frame::public_key(&kb)).unwrap();
            let mut s = FrameSealer::new(
                &send,
                frame::key_id(&frame::public_key(&k)),
                CounterSource::default(),
            )
            .unwrap();
            let p = packet([10, 244, 7, 5], [10, 244, 2, 5]);
            f[SEALED_HEADER_LEN..SEALED_HEADER_LEN + p.len()].copy_from_slice(&p);
            let n = s.seal(&mut f, p.len()).unwrap();
            f.truncate(n);
            accept(
                &t,
                &mut rx,
                true,
                Some("192.0.2.7:8285".parse().unwrap()),
                &mut f,
            )
            .unwrap();
        }
        rx.refresh(&PeerTable::new(Vec::new(), Some(&kb)), false);
        assert_eq!(rx.retired_len(), MAX_RETIRED_OPENERS);
    }
}
