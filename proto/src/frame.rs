//! The UDP-tunnel frame (backend `udp`): a small header, then the inner IPv4 or IPv6 packet in clear
//! (plain) or sealed with a per-peer AEAD key (sealed). Spec: `proto/README.md` section 5.
//!
//! Everything here works in caller-provided buffers: no allocation per packet, no I/O. Keys come
//! from an X25519 agreement of the two nodes' public keys (gossiped in their records), HKDF-SHA256
//! and AES-256-GCM; nonces are 64-bit counters, and the receiver keeps a replay window.
//!
//! Nonce uniqueness holds by construction: every [`FrameSealer`] draws its counters from a
//! [`CounterSource`], and a process shares one source among all its sealers (the tunnel uses
//! [`CounterSource::process`]). However often a sealer is dropped and rebuilt for the same key
//! (a peer leaving the table and coming back, two records announcing one public key), no
//! counter is handed out twice, so no (key, nonce) pair repeats; and a returning peer's receiver,
//! which may have kept its replay window, sees counters above its old high-water mark.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::hkdf;

/// First two bytes of every frame, `"WU"`.
pub const MAGIC: [u8; 2] = [0x57, 0x55];
/// Format version (byte 2).
pub const VERSION: u8 = 1;
/// Frame type byte (byte 3): inner packet in clear.
pub const TYPE_PLAIN: u8 = 0;
/// Frame type byte (byte 3): inner packet sealed with AES-256-GCM.
pub const TYPE_SEALED: u8 = 1;
pub const PLAIN_HEADER_LEN: usize = 4;
pub const SEALED_HEADER_LEN: usize = 16;
pub const TAG_LEN: usize = 16;
/// Bytes a plain frame adds to the inner packet.
pub const PLAIN_OVERHEAD: usize = PLAIN_HEADER_LEN;
/// Bytes a sealed frame adds to the inner packet (header and tag).
pub const SEALED_OVERHEAD: usize = SEALED_HEADER_LEN + TAG_LEN;
/// Smallest inner packet: an IPv4 header without options.
pub const MIN_PACKET_LEN: usize = 20;
/// Counters accepted below the highest one seen (out-of-order tolerance).
pub const REPLAY_WINDOW: u64 = 2048;
/// HKDF info prefix; one direction byte follows.
pub const KDF_INFO: &[u8] = b"weft udp v1";

/// Why a frame was refused. Small and `Copy`: it is counted per packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame too short")]
    Short,
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported frame version {0}")]
    Version(u8),
    #[error("unknown frame type {0}")]
    Type(u8),
    #[error("inner packet is not a well-formed IPv4 packet")]
    BadPacket,
    #[error("frame sealed with another key")]
    WrongKey,
    #[error("authentication failed")]
    Auth,
    #[error("replayed counter")]
    Replay,
    #[error("buffer too small")]
    NoRoom,
    #[error("a sealed frame reached a plain receiver or the reverse")]
    Mode,
    #[error("bad key material")]
    Key,
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// The inner packet follows at [`PLAIN_HEADER_LEN`].
    Plain,
    /// Ciphertext and tag follow at [`SEALED_HEADER_LEN`].
    Sealed { key_id: u32, counter: u64 },
}

impl Header {
    pub fn len(&self) -> usize {
        match self {
            Header::Plain => PLAIN_HEADER_LEN,
            Header::Sealed { .. } => SEALED_HEADER_LEN,
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Parses the header of any bytes. Plain frames also get their inner packet checked
/// ([`check_packet`]); sealed ones are checked after opening.
pub fn decode(frame: &[u8]) -> Result<Header, FrameError> {
    let (head, rest) = frame.split_first_chunk::<4>().ok_or(FrameError::Short)?;
    if head[..2] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if head[2] != VERSION {
        return Err(FrameError::Version(head[2]));
    }
    match head[3] {
        TYPE_PLAIN => {
            check_packet(rest)?;
            Ok(Header::Plain)
        }
        TYPE_SEALED => {
            let (id, rest) = rest.split_first_chunk::<4>().ok_or(FrameError::Short)?;
            let (counter, rest) = rest.split_first_chunk::<8>().ok_or(FrameError::Short)?;
            if rest.len() < TAG_LEN + MIN_PACKET_LEN {
                return Err(FrameError::Short);
            }
            Ok(Header::Sealed {
                key_id: u32::from_be_bytes(*id),
                counter: u64::from_be_bytes(*counter),
            })
        }
        t => Err(FrameError::Type(t)),
    }
}

/// Checks an inner packet: IPv4 (header length 20..=60 within the packet, total length equal to
/// the packet's length) or IPv6 (a 40-byte header, payload length equal to the rest of the
/// packet; jumbograms are refused). Returns (source, destination).
pub fn check_packet(packet: &[u8]) -> Result<(IpAddr, IpAddr), FrameError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let head = packet.first_chunk::<20>().ok_or(FrameError::BadPacket)?;
            let ihl = usize::from(head[0] & 0x0f) * 4;
            if ihl < 20 || ihl > packet.len() {
                return Err(FrameError::BadPacket);
            }
            let total = usize::from(u16::from_be_bytes([head[2], head[3]]));
            if total != packet.len() {
                return Err(FrameError::BadPacket);
            }
            let (src, dst) = packet_addrs(head);
            Ok((IpAddr::V4(src), IpAddr::V4(dst)))
        }
        Some(6) => {
            let head = packet.first_chunk::<40>().ok_or(FrameError::BadPacket)?;
            let payload = usize::from(u16::from_be_bytes([head[4], head[5]]));
            if IPV6_HEADER_LEN + payload != packet.len() {
                return Err(FrameError::BadPacket);
            }
            let (src, dst) = packet6_addrs(head);
            Ok((IpAddr::V6(src), IpAddr::V6(dst)))
        }
        _ => Err(FrameError::BadPacket),
    }
}

/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;

/// The destination of an IPv4 or IPv6 packet, read from its header only (no length checks
/// beyond the header's own).
pub fn packet_dst(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => Some(IpAddr::V4(packet_addrs(packet.first_chunk::<20>()?).1)),
        6 => Some(IpAddr::V6(packet6_addrs(packet.first_chunk::<40>()?).1)),
        _ => None,
    }
}

/// Source and destination of an IPv4 header (no checks).
pub fn packet_addrs(head: &[u8; 20]) -> (Ipv4Addr, Ipv4Addr) {
    let src = Ipv4Addr::new(head[12], head[13], head[14], head[15]);
    let dst = Ipv4Addr::new(head[16], head[17], head[18], head[19]);
    (src, dst)
}

/// Source and destination of an IPv6 header (no checks).
pub fn packet6_addrs(head: &[u8; 40]) -> (Ipv6Addr, Ipv6Addr) {
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&head[8..24]);
    dst.copy_from_slice(&head[24..40]);
    (Ipv6Addr::from(src), Ipv6Addr::from(dst))
}

/// Writes a plain header into `out[..4]`.
pub fn write_plain_header(out: &mut [u8]) -> Result<(), FrameError> {
    let head = out.first_chunk_mut::<4>().ok_or(FrameError::NoRoom)?;
    *head = [MAGIC[0], MAGIC[1], VERSION, TYPE_PLAIN];
    Ok(())
}

/// Writes a sealed header into `out[..16]`.
pub fn write_sealed_header(out: &mut [u8], key_id: u32, counter: u64) -> Result<(), FrameError> {
    let head = out.first_chunk_mut::<16>().ok_or(FrameError::NoRoom)?;
    head[..4].copy_from_slice(&[MAGIC[0], MAGIC[1], VERSION, TYPE_SEALED]);
    head[4..8].copy_from_slice(&key_id.to_be_bytes());
    head[8..16].copy_from_slice(&counter.to_be_bytes());
    Ok(())
}

/// The key id a sender writes: the first four bytes of its X25519 public key.
pub fn key_id(public_key: &[u8; 32]) -> u32 {
    u32::from_be_bytes([public_key[0], public_key[1], public_key[2], public_key[3]])
}

/// X25519 public key of a private key.
pub fn public_key(private_key: &[u8; 32]) -> [u8; 32] {
    let secret = x25519_dalek::StaticSecret::from(*private_key);
    x25519_dalek::PublicKey::from(&secret).to_bytes()
}

/// The two directional keys of a pair of nodes: (this node sends with, this node opens with).
/// HKDF-SHA256 with IKM = X25519(private, peer public), salt = the two public keys in ascending
/// byte order, info = [`KDF_INFO`] ‖ direction, where direction 0 is the key the node with the
/// smaller public key sends with.
pub fn derive_keys(
    private_key: &[u8; 32],
    peer_public: &[u8; 32],
) -> Result<([u8; 32], [u8; 32]), FrameError> {
    let mine = public_key(private_key);
    if mine == *peer_public {
        return Err(FrameError::Key);
    }
    let secret = x25519_dalek::StaticSecret::from(*private_key);
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*peer_public));
    if !shared.was_contributory() {
        return Err(FrameError::Key);
    }
    let (lo, hi) = if mine < *peer_public {
        (mine, *peer_public)
    } else {
        (*peer_public, mine)
    };
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(&lo);
    salt[32..].copy_from_slice(&hi);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(shared.as_bytes());
    let expand = |dir: u8| -> Result<[u8; 32], FrameError> {
        let info = [KDF_INFO, &[dir][..]];
        let okm = prk
            .expand(&info, hkdf::HKDF_SHA256)
            .map_err(|_| FrameError::Key)?;
        let mut key = [0u8; 32];
        okm.fill(&mut key).map_err(|_| FrameError::Key)?;
        Ok(key)
    };
    let k0 = expand(0)?;
    let k1 = expand(1)?;
    Ok(if mine < *peer_public {
        (k0, k1)
    } else {
        (k1, k0)
    })
}

fn aead_key(key: &[u8; 32]) -> Result<LessSafeKey, FrameError> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| FrameError::Key)
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// A strictly increasing source of sealing counters, shared by every [`FrameSealer`] that may
/// ever hold the same key. Clones share the source. Counters are never handed out twice, and
/// `u64::MAX` never (the receiver refuses it).
#[derive(Clone, Debug, Default)]
pub struct CounterSource(Arc<AtomicU64>);

impl CounterSource {
    /// A new source whose first counter is `first` (tests and vectors; the tunnel uses
    /// [`process`](Self::process)).
    pub fn starting_at(first: u64) -> Self {
        CounterSource(Arc::new(AtomicU64::new(first)))
    }

    /// The source shared by the whole process: every tunnel sealer draws from it, so no two
    /// sealers of this process can use one counter, whatever keys they hold.
    pub fn process() -> Self {
        static PROCESS: std::sync::OnceLock<CounterSource> = std::sync::OnceLock::new();
        PROCESS.get_or_init(CounterSource::default).clone()
    }

    /// Takes the next counter; `None` once the space is exhausted (never wraps).
    pub fn take(&self) -> Option<u64> {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                c.checked_add(1).filter(|n| *n < u64::MAX)
            })
            .ok()
    }

    /// The counter [`take`](Self::take) would hand out next.
    pub fn peek(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Seals frames to one peer. Counters come from a shared [`CounterSource`], so a (key, nonce)
/// pair is never reused, even by several sealers built for the same key.
pub struct FrameSealer {
    key: LessSafeKey,
    key_id: u32,
    counters: CounterSource,
}

impl std::fmt::Debug for FrameSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSealer")
            .field("key_id", &self.key_id)
            .field("next_counter", &self.counters.peek())
            .finish()
    }
}

impl FrameSealer {
    /// A sealer for `key` drawing its counters from `counters`: pass the same source to every
    /// sealer that may ever hold the same key ([`CounterSource::process`]).
    pub fn new(key: &[u8; 32], key_id: u32, counters: CounterSource) -> Result<Self, FrameError> {
        Ok(FrameSealer {
            key: aead_key(key)?,
            key_id,
            counters,
        })
    }

    /// The counter the next frame would carry if no other sealer of the source sealed first.
    pub fn next_counter(&self) -> u64 {
        self.counters.peek()
    }

    /// Seals in place. `buf[SEALED_HEADER_LEN..SEALED_HEADER_LEN + packet_len]` holds the inner
    /// packet; the header is written before it and the tag after it. Returns the frame length.
    pub fn seal(&mut self, buf: &mut [u8], packet_len: usize) -> Result<usize, FrameError> {
        let end = SEALED_HEADER_LEN + packet_len;
        let total = end + TAG_LEN;
        if buf.len() < total {
            return Err(FrameError::NoRoom);
        }
        let counter = self.counters.take().ok_or(FrameError::Key)?;
        let (head, body) = buf.split_at_mut(SEALED_HEADER_LEN);
        write_sealed_header(head, self.key_id, counter)?;
        let (plain, tag_out) = body.split_at_mut(packet_len);
        let tag: Tag = self
            .key
            .seal_in_place_separate_tag(nonce(counter), Aad::from(&head[..]), plain)
            .map_err(|_| FrameError::Key)?;
        tag_out
            .get_mut(..TAG_LEN)
            .ok_or(FrameError::NoRoom)?
            .copy_from_slice(tag.as_ref());
        Ok(total)
    }
}

/// Opens frames from one peer: key id check, authentication, then the replay window.
pub struct FrameOpener {
    key: LessSafeKey,
    key_id: u32,
    window: ReplayWindow,
}

impl std::fmt::Debug for FrameOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameOpener")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl FrameOpener {
    pub fn new(key: &[u8; 32], key_id: u32) -> Result<Self, FrameError> {
        Self::resume(key, key_id, 0)
    }

    /// An opener that takes every counter below `next` as already seen: the replay state of
    /// an earlier opener for the same key, kept as its [`high_water`](Self::high_water) mark.
    pub fn resume(key: &[u8; 32], key_id: u32, next: u64) -> Result<Self, FrameError> {
        Ok(FrameOpener {
            key: aead_key(key)?,
            key_id,
            window: ReplayWindow::after(next),
        })
    }

    /// One above the highest counter accepted (0: none yet).
    pub fn high_water(&self) -> u64 {
        self.window.next
    }

    /// Opens a sealed frame in place; returns the range of the inner packet in `frame`, which
    /// has been checked with [`check_packet`].
    pub fn open(&mut self, frame: &mut [u8]) -> Result<std::ops::Range<usize>, FrameError> {
        let Header::Sealed { key_id, counter } = decode(frame)? else {
            return Err(FrameError::Mode);
        };
        if key_id != self.key_id {
            return Err(FrameError::WrongKey);
        }
        if !self.window.fresh(counter) {
            return Err(FrameError::Replay);
        }
        let (head, body) = frame.split_at_mut(SEALED_HEADER_LEN);
        let plain = self
            .key
            .open_in_place(nonce(counter), Aad::from(&head[..]), body)
            .map_err(|_| FrameError::Auth)?;
        check_packet(plain)?;
        let len = plain.len();
        self.window.accept(counter);
        Ok(SEALED_HEADER_LEN..SEALED_HEADER_LEN + len)
    }
}

/// The highest counter accepted and a bitmap of the [`REPLAY_WINDOW`] counters below it.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// Highest counter accepted + 1 (0: none yet).
    next: u64,
    bits: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            next: 0,
            bits: [0; (REPLAY_WINDOW / 64) as usize],
        }
    }
}

impl ReplayWindow {
    /// A window that refuses every counter below `next`, as if all had been seen.
    pub fn after(next: u64) -> Self {
        let fill = if next == 0 { 0 } else { u64::MAX };
        ReplayWindow {
            next,
            bits: [fill; (REPLAY_WINDOW / 64) as usize],
        }
    }

    fn slot(counter: u64) -> (usize, u64) {
        let bit = counter % REPLAY_WINDOW;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    /// Whether `counter` would be accepted (not seen, not older than the window).
    /// `u64::MAX` is never fresh (a sealer never uses it).
    pub fn fresh(&self, counter: u64) -> bool {
        if counter == u64::MAX {
            return false;
        }
        if counter >= self.next {
            return true;
        }
        if self.next - counter > REPLAY_WINDOW {
            return false;
        }
        let (word, mask) = Self::slot(counter);
        self.bits.get(word).is_some_and(|w| w & mask == 0)
    }

    /// Records `counter`; false (and no change) if it is not [`fresh`](Self::fresh).
    pub fn accept(&mut self, counter: u64) -> bool {
        if !self.fresh(counter) {
            return false;
        }
        if counter >= self.next {
            let ahead = counter - self.next;
            if ahead >= REPLAY_WINDOW {
                self.bits = [0; (REPLAY_WINDOW / 64) as usize];
            } else {
                for c in self.next..counter {
                    let (word, mask) = Self::slot(c);
                    if let Some(w) = self.bits.get_mut(word) {
                        *w &= !mask;
                    }
                }
            }
            self.next = counter.saturating_add(1);
        }
        let (word, mask) = Self::slot(counter);
        if let Some(w) = self.bits.get_mut(word) {
            *w |= mask;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let total = 20 + payload.len();
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            17,
            0,
            0,
        ];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    /// An IPv6/UDP-less packet (next header 59, "no next header") carrying `payload`.
    pub(crate) fn packet6(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u16;
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[59, 64]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(payload);
        p
    }

    fn pair() -> (FrameSealer, FrameOpener) {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let (a_send, _) = derive_keys(&a, &public_key(&b)).unwrap();
        let (_, b_recv) = derive_keys(&b, &public_key(&a)).unwrap();
        let id = key_id(&public_key(&a));
        (
            FrameSealer::new(&a_send, id, CounterSource::default()).unwrap(),
            FrameOpener::new(&b_recv, id).unwrap(),
        )
    }

    fn seal(s: &mut FrameSealer, p: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; p.len() + SEALED_OVERHEAD];
        buf[SEALED_HEADER_LEN..SEALED_HEADER_LEN + p.len()].copy_from_slice(p);
        let n = s.seal(&mut buf, p.len()).unwrap();
        assert_eq!(n, buf.len());
        buf
    }

    #[test]
    fn directional_keys_match() {
        let a = [7u8; 32];
        let b = [9u8; 32];
        let (a_send, a_recv) = derive_keys(&a, &public_key(&b)).unwrap();
        let (b_send, b_recv) = derive_keys(&b, &public_key(&a)).unwrap();
        assert_eq!(a_send, b_recv);
        assert_eq!(b_send, a_recv);
        assert_ne!(a_send, a_recv);
        assert_eq!(derive_keys(&a, &public_key(&a)), Err(FrameError::Key));
        // A low-order point gives an all-zero secret: refused.
        assert_eq!(derive_keys(&a, &[0u8; 32]), Err(FrameError::Key));
    }

    #[test]
    fn seal_open_and_refusals() {
        let (mut s, mut o) = pair();
        let p = packet([10, 244, 1, 2], [10, 244, 2, 3], b"hello");
        let mut f = seal(&mut s, &p);
        let mut again = f.clone();
        let r = o.open(&mut f).unwrap();
        assert_eq!(&f[r], &p[..]);
        assert_eq!(o.open(&mut again), Err(FrameError::Replay));
        let mut tampered = seal(&mut s, &p);
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(o.open(&mut tampered), Err(FrameError::Auth));
        let mut wrong_id = seal(&mut s, &p);
        wrong_id[4] ^= 0xff;
        assert_eq!(o.open(&mut wrong_id), Err(FrameError::WrongKey));
        // The header is authenticated: a changed counter fails.
        let mut moved = seal(&mut s, &p);
        moved[15] ^= 0x40;
        assert_eq!(o.open(&mut moved), Err(FrameError::Auth));
        // Failed frames did not burn their counters: the next good one still opens.
        let mut ok = seal(&mut s, &p);
        assert!(o.open(&mut ok).is_ok());
        let mut plain = vec![0u8; 4];
        write_plain_header(&mut plain).unwrap();
        plain.extend_from_slice(&p);
        assert_eq!(o.open(&mut plain), Err(FrameError::Mode));
    }

    #[test]
    fn replay_window_edges() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(0));
        assert!(!w.accept(0));
        assert!(w.accept(5));
        assert!(w.accept(3));
        assert!(!w.accept(3));
        assert!(w.accept(5 + REPLAY_WINDOW));
        assert!(!w.accept(5), "older than the window");
        assert!(w.accept(6), "exactly at the window's edge");
        assert!(!w.accept(u64::MAX));
        assert!(w.accept(u64::MAX - 1));
        assert!(!w.accept(u64::MAX - 1));
    }

    #[test]
    fn counters_are_shared_and_resumed_windows_refuse_the_past() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let (a_send, _) = derive_keys(&a, &public_key(&b)).unwrap();
        let (_, b_recv) = derive_keys(&b, &public_key(&a)).unwrap();
        let id = key_id(&public_key(&a));
        let source = CounterSource::default();
        // Two sealers on one key never emit the same counter.
        let mut s1 = FrameSealer::new(&a_send, id, source.clone()).unwrap();
        let mut s2 = FrameSealer::new(&a_send, id, source.clone()).unwrap();
        let p = packet([10, 244, 1, 2], [10, 244, 2, 3], b"x");
        let counter = |f: &[u8]| match decode(f) {
            Ok(Header::Sealed { counter, .. }) => counter,
            other => panic!("{other:?}"),
        };
        let f1 = seal(&mut s1, &p);
        let f2 = seal(&mut s2, &p);
        let f3 = seal(&mut s1, &p);
        assert_eq!([counter(&f1), counter(&f2), counter(&f3)], [0, 1, 2]);
        // A receiver resuming at the old high-water mark opens the new frames, not the old.
        let mut o = FrameOpener::new(&b_recv, id).unwrap();
        assert!(o.open(&mut f1.clone()).is_ok());
        assert!(o.open(&mut f2.clone()).is_ok());
        let mut o = FrameOpener::resume(&b_recv, id, o.high_water()).unwrap();
        assert_eq!(o.open(&mut f1.clone()), Err(FrameError::Replay));
        assert_eq!(o.open(&mut f2.clone()), Err(FrameError::Replay));
        assert!(o.open(&mut f3.clone()).is_ok());
        // The source never hands out u64::MAX, nor wraps.
        let end = CounterSource::starting_at(u64::MAX - 2);
        assert_eq!(end.take(), Some(u64::MAX - 2));
        assert_eq!(end.take(), None);
        assert_eq!(end.take(), None);
        let mut s = FrameSealer::new(&a_send, id, end).unwrap();
        let mut buf = vec![0u8; p.len() + SEALED_OVERHEAD];
        assert_eq!(s.seal(&mut buf, p.len()), Err(FrameError::Key));
        assert!(!ReplayWindow::after(5).fresh(4));
        assert!(ReplayWindow::after(5).fresh(5));
        assert!(ReplayWindow::after(0).fresh(0));
    }

    #[test]
    fn decode_refusals() {
        assert_eq!(decode(b""), Err(FrameError::Short));
        assert_eq!(decode(b"XX\x01\x00"), Err(FrameError::BadMagic));
        assert_eq!(decode(b"WU\x02\x00"), Err(FrameError::Version(2)));
        assert_eq!(decode(b"WU\x01\x07"), Err(FrameError::Type(7)));
        assert_eq!(decode(b"WU\x01\x00"), Err(FrameError::BadPacket));
        let mut f = b"WU\x01\x00".to_vec();
        let p = packet([1, 2, 3, 4], [5, 6, 7, 8], b"x");
        f.extend_from_slice(&p);
        assert_eq!(decode(&f), Ok(Header::Plain));
        f.push(0);
        assert_eq!(decode(&f), Err(FrameError::BadPacket), "trailing bytes");
        assert_eq!(
            check_packet(&p),
            Ok((
                IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)),
                IpAddr::V4(Ipv4Addr::new(5, 6, 7, 8))
            ))
        );
        // An IPv4 header with the version nibble of IPv6 is not an IPv6 packet.
        let mut v6 = p.clone();
        v6[0] = 0x65;
        assert_eq!(check_packet(&v6), Err(FrameError::BadPacket));
        // A real IPv6 packet: 40-byte header, payload length = the rest.
        let p6 = packet6(
            "fd00:10:244:1::2".parse().unwrap(),
            "fd00:10:244:2::3".parse().unwrap(),
            b"weft",
        );
        assert_eq!(
            check_packet(&p6),
            Ok((
                "fd00:10:244:1::2".parse().unwrap(),
                "fd00:10:244:2::3".parse().unwrap()
            ))
        );
        assert_eq!(packet_dst(&p6), Some("fd00:10:244:2::3".parse().unwrap()));
        let mut short6 = p6.clone();
        short6.pop();
        assert_eq!(check_packet(&short6), Err(FrameError::BadPacket));
        let mut jumbo = p6.clone();
        jumbo[4..6].copy_from_slice(&[0, 0]);
        assert_eq!(check_packet(&jumbo), Err(FrameError::BadPacket));
        assert_eq!(check_packet(&p6[..39]), Err(FrameError::BadPacket));
        let mut f6 = b"WU\x01\x00".to_vec();
        f6.extend_from_slice(&p6);
        assert_eq!(decode(&f6), Ok(Header::Plain));
        let mut ihl = p.clone();
        ihl[0] = 0x4f;
        assert_eq!(check_packet(&ihl), Err(FrameError::BadPacket));
    }

    proptest! {
        #[test]
        fn decode_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let _ = check_packet(&bytes);
            let (_, mut o) = pair();
            let mut b = bytes.clone();
            prop_assert!(o.open(&mut b).is_err());
        }

        #[test]
        fn sealed_headers_decode_any_bytes(tail in proptest::collection::vec(any::<u8>(), 0..100),
                                          id in any::<u32>(), counter in any::<u64>()) {
            let mut f = vec![0u8; 16];
            write_sealed_header(&mut f, id, counter).unwrap();
            f.extend_from_slice(&tail);
            match decode(&f) {
                Ok(h) => prop_assert_eq!(h, Header::Sealed { key_id: id, counter }),
                Err(e) => prop_assert_eq!(e, FrameError::Short),
            }
        }

        #[test]
        fn round_trip(payload in proptest::collection::vec(any::<u8>(), 0..1400),
                      src in any::<[u8; 4]>(), dst in any::<[u8; 4]>()) {
            let p = packet(src, dst, &payload);
            let mut f = vec![0u8; 4];
            write_plain_header(&mut f).unwrap();
            f.extend_from_slice(&p);
            prop_assert_eq!(decode(&f), Ok(Header::Plain));
            prop_assert_eq!(check_packet(&f[PLAIN_HEADER_LEN..]),
                            Ok((IpAddr::from(src), IpAddr::from(dst))));
            let (mut s, mut o) = pair();
            let mut sealed = seal(&mut s, &p);
            prop_assert_eq!(sealed.len(), p.len() + SEALED_OVERHEAD);
            let r = o.open(&mut sealed).unwrap();
            prop_assert_eq!(&sealed[r], &p[..]);
        }

        #[test]
        fn round_trip_ipv6(payload in proptest::collection::vec(any::<u8>(), 0..1400),
                           src in any::<[u8; 16]>(), dst in any::<[u8; 16]>()) {
            let p = packet6(Ipv6Addr::from(src), Ipv6Addr::from(dst), &payload);
            let mut f = vec![0u8; 4];
            write_plain_header(&mut f).unwrap();
            f.extend_from_slice(&p);
            prop_assert_eq!(decode(&f), Ok(Header::Plain));
            prop_assert_eq!(check_packet(&f[PLAIN_HEADER_LEN..]),
                            Ok((IpAddr::from(src), IpAddr::from(dst))));
            let (mut s, mut o) = pair();
            let mut sealed = seal(&mut s, &p);
            let r = o.open(&mut sealed).unwrap();
            prop_assert_eq!(&sealed[r], &p[..]);
        }
    }
}
