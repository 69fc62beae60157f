//! The peer table (subnet → underlay address and keys) and the receive filter. Pure: the I/O
//! loops in [`super`] own one [`PeerCrypto`] each and consult a shared, immutable [`PeerTable`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;

use ipnet::Ipv4Net;
use weft_proto::frame::{self, FrameError, FrameOpener, FrameSealer, Header};

use super::DropReason;

/// A peer as the agent hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    pub name: String,
    pub subnet: Ipv4Net,
    /// Underlay address and tunnel port frames go to, and must come from.
    pub addr: SocketAddr,
    /// X25519 public key from the peer's record.
    pub public_key: Option<[u8; 32]>,
    /// Alive in the mesh: only live peers' frames are accepted (dead ones are still sent to).
    pub live: bool,
}

/// A peer with its derived keys.
#[derive(Clone, Debug)]
pub struct Peer {
    pub spec: PeerSpec,
    /// (send key, receive key, key id we send with, key id we expect), when encrypting.
    pub keys: Option<([u8; 32], [u8; 32], u32, u32)>,
}

/// An immutable snapshot, replaced as a whole by the agent.
#[derive(Clone, Debug, Default)]
pub struct PeerTable {
    pub peers: Vec<Peer>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Distinct prefix lengths, longest first, and network → peer index.
    prefixes: Vec<u8>,
    by_net: HashMap<(u32, u8), usize>,
}

impl PeerTable {
    /// Builds the table. With `private_key`, derives per-peer keys (peers without a usable public
    /// key get none: nothing is sent to them and nothing accepted from them).
    pub fn new(specs: Vec<PeerSpec>, private_key: Option<&[u8; 32]>) -> PeerTable {
        let mut t = PeerTable::default();
        let own_id = private_key.map(|k| frame::key_id(&frame::public_key(k)));
        for spec in specs {
            let keys = match (private_key, own_id, &spec.public_key) {
                (Some(k), Some(own_id), Some(pk)) => frame::derive_keys(k, pk)
                    .ok()
                    .map(|(s, r)| (s, r, own_id, frame::key_id(pk))),
                _ => None,
            };
            let i = t.peers.len();
            if spec.live {
                t.by_addr.insert(spec.addr, i);
            }
            let len = spec.subnet.prefix_len();
            if !t.prefixes.contains(&len) {
                t.prefixes.push(len);
            }
            t.by_net.insert((u32::from(spec.subnet.network()), len), i);
            t.peers.push(Peer { spec, keys });
        }
        t.prefixes.sort_unstable_by(|a, b| b.cmp(a));
        t
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

/// One direction's per-peer crypto state, aligned with a [`PeerTable`]'s peers. Sealers and
/// openers survive table updates as long as the peer's keys stay the same (a reset counter with
/// an unchanged key would reuse nonces).
#[derive(Debug, Default)]
pub struct PeerCrypto {
    pub sealers: Vec<Option<FrameSealer>>,
    pub openers: Vec<Option<FrameOpener>>,
    keys: Vec<Option<[u8; 32]>>,
}

impl PeerCrypto {
    /// Rebuilds for `table`, keeping state of peers whose keys did not change.
    pub fn refresh(&mut self, table: &PeerTable, seal: bool) {
        let mut old: HashMap<[u8; 32], (Option<FrameSealer>, Option<FrameOpener>)> = HashMap::new();
        let keys = std::mem::take(&mut self.keys);
        let sealers = std::mem::take(&mut self.sealers);
        let openers = std::mem::take(&mut self.openers);
        for ((k, s), o) in keys.into_iter().zip(sealers).zip(openers) {
            if let Some(k) = k {
                old.insert(k, (s, o));
            }
        }
        for peer in &table.peers {
            let Some((send, recv, send_id, recv_id)) = peer.keys else {
                self.keys.push(None);
                self.sealers.push(None);
                self.openers.push(None);
                continue;
            };
            let k = if seal { send } else { recv };
            let (s, o) = old.remove(&k).unwrap_or_else(|| {
                if seal {
                    (FrameSealer::new(&send, send_id).ok(), None)
                } else {
                    (None, FrameOpener::new(&recv, recv_id).ok())
                }
            });
            self.keys.push(Some(k));
            self.sealers.push(s);
            self.openers.push(o);
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
/// inside that peer's subnet. Returns the inner packet's range in `frame`.
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
            let opener = crypto
                .openers
                .get_mut(i)
                .and_then(Option::as_mut)
                .ok_or(DropReason::Auth)?;
            opener.open(frame).map_err(reason)?
        }
        _ => return Err(DropReason::Auth),
    };
    let packet = frame.get(range.clone()).ok_or(DropReason::Garbage)?;
    let head = packet.first_chunk::<20>().ok_or(DropReason::Garbage)?;
    let (src, _) = frame::packet_addrs(head);
    if !peer.spec.subnet.contains(&src) {
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
            subnet: subnet.parse().unwrap(),
            addr: addr.parse().unwrap(),
            public_key: pk,
            live: true,
        }
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
        // A refresh with the same keys keeps the replay window and the counter.
        rx.refresh(&at_b.clone(), false);
        tx.refresh(&at_a.clone(), true);
        assert_eq!(tx.sealers[0].as_ref().unwrap().next_counter(), 1);
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
}
