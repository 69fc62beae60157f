//! The path probe datagram (spec: `proto/README.md` section 7): what an agent sends to a peer
//! through the data path it programmed (to UDP port [`PROBE_PORT`] at the peer's overlay
//! address) and what the peer sends back, so each agent knows whether its path to each peer
//! works, and at which packet size.
//!
//! A probe names its sender (node name, generation, VTEP MAC), carries a sequence number and the
//! prober's send time (both echoed in the reply), the length the reply should have, padding up to
//! the length the prober wants to test, and an HMAC-SHA256 tag truncated to 16 bytes under a key
//! derived from the cluster key ([`probe_key`]), so a sender off the cluster cannot fake an
//! answer. Decoding works on the received buffer: nothing is allocated, every length is checked.

use ring::{hkdf, hmac};

use crate::envelope::{INSECURE_KEY_ID, KEY_LEN, Keyring, Sealing};
use crate::record::{MAX_NODE_NAME_LEN, is_valid_node_name};

/// UDP port every agent answers probes on, at its overlay address (the first address of its
/// subnet: `<subnet>.0` on the VXLAN device, the bridge address otherwise). The one place this
/// number is written.
pub const PROBE_PORT: u16 = 7949;
/// First bytes of every probe, `"WPR"`.
pub const MAGIC: [u8; 3] = *b"WPR";
/// Probe format version (byte 3).
pub const VERSION: u8 = 1;
/// Bytes before the sender's name: magic, version, key id, kind, generation, sequence,
/// timestamp, reply length, VTEP MAC, name length.
pub const FIXED_LEN: usize = 42;
/// Length of the authentication tag at the end of every probe (HMAC-SHA256, truncated).
pub const TAG_LEN: usize = 16;
/// Shortest probe: a one-byte name, no padding.
pub const MIN_PROBE_LEN: usize = FIXED_LEN + 1 + TAG_LEN;
/// Longest probe: a datagram filling a 9216-byte jumbo frame is more than any overlay MTU weft
/// sets. Longer datagrams are refused unread.
pub const MAX_PROBE_LEN: usize = 9216;
/// HKDF info string of the probe key derivation.
pub const KDF_INFO: &[u8] = b"weft probe v1";
/// Bytes an IPv4 and a UDP header add to a probe datagram: a probe of datagram length `l`
/// tests packets of `l + 28` bytes on an IPv4 overlay.
pub const IPV4_UDP_OVERHEAD: usize = 28;
/// The same for an IPv6 overlay (40-byte IPv6 header).
pub const IPV6_UDP_OVERHEAD: usize = 48;

/// Whether a probe asks or answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Sent by the prober; the peer answers it.
    Request,
    /// The peer's answer, echoing the request's sequence and timestamp.
    Reply,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Request => 0,
            Kind::Reply => 1,
        }
    }
}

/// Who sent a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sender<'a> {
    /// Node name (1..=253 bytes of `[A-Za-z0-9._-]`, as in the node record).
    pub node_name: &'a str,
    /// The sender's gossip generation (grows at every start).
    pub generation: u64,
    /// The sender's VTEP MAC (vxlan); all zero for other backends.
    pub vtep_mac: [u8; 6],
}

/// One probe, as encoded or decoded (the name borrows from the datagram or the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Probe<'a> {
    /// Request or reply.
    pub kind: Kind,
    /// Who sent it.
    pub sender: Sender<'a>,
    /// The prober's sequence number; a reply carries its request's.
    pub seq: u64,
    /// The prober's send time (microseconds on its own clock, opaque to the peer); a reply
    /// carries its request's.
    pub timestamp: u64,
    /// Request: the datagram length the prober wants the reply to have (0: as short as
    /// possible); the peer never answers with more than the request's own length. Reply: the
    /// request's value, echoed.
    pub reply_len: u16,
}

/// Why a datagram is not a probe this node accepts. Small and `Copy`: counted per datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ProbeError {
    /// Shorter than [`MIN_PROBE_LEN`].
    #[error("probe too short")]
    Short,
    /// Longer than [`MAX_PROBE_LEN`].
    #[error("probe too long")]
    TooLong,
    /// Not [`MAGIC`].
    #[error("bad probe magic")]
    BadMagic,
    /// Another format version.
    #[error("unsupported probe version {0}")]
    Version(u8),
    /// Plaintext (key id 0) while this node has keys, or sealed while it runs insecure.
    #[error("plaintext probe while sealing is on, or sealed probe in insecure mode")]
    Plaintext,
    /// Sealed with a key not in the keyring.
    #[error("probe sealed with a key not in the keyring")]
    UnknownKey,
    /// The tag does not match.
    #[error("probe failed authentication")]
    Auth,
    /// A kind byte other than request or reply.
    #[error("unknown probe kind {0}")]
    Kind(u8),
    /// The name's length is 0, runs past the tag, or the name has bytes a node name cannot.
    #[error("bad sender name in probe")]
    Name,
}

impl ProbeError {
    /// Every label [`ProbeError::reason`] returns, for a metric exported with zeros.
    pub const REASONS: &'static [&'static str] = &["malformed", "plaintext", "unknown_key", "auth"];

    /// Label for counting refused probes (`weft_probes_refused_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            ProbeError::Plaintext => "plaintext",
            ProbeError::UnknownKey => "unknown_key",
            ProbeError::Auth => "auth",
            ProbeError::Short
            | ProbeError::TooLong
            | ProbeError::BadMagic
            | ProbeError::Version(_)
            | ProbeError::Kind(_)
            | ProbeError::Name => "malformed",
        }
    }
}

/// Why a probe could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The sender's name is not a valid node name.
    #[error("sender name is not a valid node name")]
    Name,
    /// The asked datagram length is below what the probe needs or above [`MAX_PROBE_LEN`].
    #[error("probe length {len} outside {min}..={max}")]
    Length {
        /// Asked.
        len: usize,
        /// Shortest possible with this name.
        min: usize,
        /// [`MAX_PROBE_LEN`].
        max: usize,
    },
}

/// The 32-byte HMAC-SHA256 key probes are tagged with under `cluster_key`: HKDF-SHA256 (RFC
/// 5869) with an empty salt, IKM = the cluster key, info = [`KDF_INFO`], L = 32. A key of its
/// own, so a probe tag never says anything about gossip's keys.
pub fn probe_key(cluster_key: &[u8; KEY_LEN]) -> [u8; 32] {
    struct Len32;
    impl hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let mut out = [0u8; 32];
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(cluster_key);
    // Expanding 32 bytes from SHA-256 (at most 255 × 32 allowed) and filling 32 bytes cannot fail.
    prk.expand(&[KDF_INFO], Len32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF-SHA256 expand of 32 bytes cannot fail");
    out
}

/// The probe keys of a keyring: the primary one tags, every installed one verifies. Built from
/// the same keyring as the gossip envelope, and rebuilt when it changes ([`ProbeKeys::refresh`]),
/// so a key rotation moves probes and gossip together.
#[derive(Clone)]
pub struct ProbeKeys {
    /// `None`: insecure (key id 0, no tag checked).
    sealed: Option<SealedKeys>,
}

#[derive(Clone)]
struct SealedKeys {
    generation: u64,
    primary: u32,
    keys: Vec<(u32, hmac::Key)>,
}

impl std::fmt::Debug for ProbeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        match &self.sealed {
            None => f.write_str("ProbeKeys(insecure)"),
            Some(s) => f
                .debug_struct("ProbeKeys")
                .field("primary", &format_args!("{:08x}", s.primary))
                .field("keys", &s.keys.len())
                .finish(),
        }
    }
}

impl ProbeKeys {
    /// No keys: probes carry key id 0 and a zero tag, and only such probes are accepted.
    pub fn insecure() -> Self {
        ProbeKeys { sealed: None }
    }

    /// The probe keys of every key in `keyring`.
    pub fn from_keyring(keyring: &Keyring) -> Self {
        let keys = keyring
            .key_ids()
            .into_iter()
            .filter_map(|id| {
                let key = keyring.get(id)?;
                Some((id, hmac::Key::new(hmac::HMAC_SHA256, &probe_key(key))))
            })
            .collect();
        ProbeKeys {
            sealed: Some(SealedKeys {
                generation: keyring.generation(),
                primary: keyring.primary_id(),
                keys,
            }),
        }
    }

    /// The probe keys of what seals gossip.
    pub fn from_sealing(sealing: &Sealing) -> Self {
        match sealing {
            Sealing::Insecure => Self::insecure(),
            Sealing::Keyring(lock) => {
                let ring = lock.read().unwrap_or_else(|p| p.into_inner());
                Self::from_keyring(&ring)
            }
        }
    }

    /// Rebuilds the keys if the keyring behind `sealing` changed since they were built.
    pub fn refresh(&mut self, sealing: &Sealing) {
        let stale = match (sealing, &self.sealed) {
            (Sealing::Insecure, None) => false,
            (Sealing::Keyring(lock), Some(s)) => {
                lock.read().unwrap_or_else(|p| p.into_inner()).generation() != s.generation
            }
            _ => true,
        };
        if stale {
            *self = Self::from_sealing(sealing);
        }
    }

    /// Whether probes go untagged.
    pub fn is_insecure(&self) -> bool {
        self.sealed.is_none()
    }

    fn primary(&self) -> Option<(u32, &hmac::Key)> {
        let s = self.sealed.as_ref()?;
        s.keys
            .iter()
            .find(|(id, _)| *id == s.primary)
            .map(|(id, k)| (*id, k))
    }

    fn get(&self, id: u32) -> Option<&hmac::Key> {
        let s = self.sealed.as_ref()?;
        s.keys.iter().find(|(k, _)| *k == id).map(|(_, k)| k)
    }
}

/// The datagram length of a probe testing packets of `packet_len` bytes (what an MTU counts:
/// IP header included) on an IPv4 (`ipv6` false) or IPv6 overlay; `None` when no probe has that
/// size.
pub fn datagram_len(packet_len: u32, ipv6: bool) -> Option<usize> {
    let overhead = if ipv6 {
        IPV6_UDP_OVERHEAD
    } else {
        IPV4_UDP_OVERHEAD
    };
    let len = usize::try_from(packet_len).ok()?.checked_sub(overhead)?;
    (MIN_PROBE_LEN..=MAX_PROBE_LEN)
        .contains(&len)
        .then_some(len)
}

/// The length a reply to a request of `request_len` bytes asking for `asked` bytes has, when the
/// replying node's name is `name_len` bytes long: what was asked, but never more than the
/// request itself (a probe cannot make a peer send more than it received, so probes do not
/// amplify) and never less than the reply needs.
pub fn reply_len(request_len: usize, asked: u16, name_len: usize) -> usize {
    let min = FIXED_LEN + name_len + TAG_LEN;
    usize::from(asked).min(request_len).max(min)
}

impl<'a> Probe<'a> {
    /// The shortest datagram this probe fits in (no padding).
    pub fn min_len(&self) -> usize {
        FIXED_LEN + self.sender.node_name.len() + TAG_LEN
    }

    /// The reply `me` sends to this request (sequence, timestamp and asked length echoed).
    pub fn answer<'b>(&self, me: Sender<'b>) -> Probe<'b> {
        Probe {
            kind: Kind::Reply,
            sender: me,
            seq: self.seq,
            timestamp: self.timestamp,
            reply_len: self.reply_len,
        }
    }

    /// Writes the probe into `out` (cleared first) as a datagram of exactly `len` bytes: the
    /// fields, zero padding, then the tag under the primary key (or key id 0 and a zero tag when
    /// `keys` is insecure).
    pub fn encode(
        &self,
        len: usize,
        keys: &ProbeKeys,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let name = self.sender.node_name;
        if !is_valid_node_name(name) {
            return Err(EncodeError::Name);
        }
        let min = self.min_len();
        if !(min..=MAX_PROBE_LEN).contains(&len) {
            return Err(EncodeError::Length {
                len,
                min,
                max: MAX_PROBE_LEN,
            });
        }
        let primary = keys.primary();
        out.clear();
        out.reserve(len);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&primary.map_or(INSECURE_KEY_ID, |(id, _)| id).to_be_bytes());
        out.push(self.kind.byte());
        out.extend_from_slice(&self.sender.generation.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.reply_len.to_be_bytes());
        out.extend_from_slice(&self.sender.vtep_mac);
        // A valid name is at most 253 bytes.
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.resize(len - TAG_LEN, 0);
        match primary {
            Some((_, key)) => {
                let tag = hmac::sign(key, out);
                out.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
            }
            None => out.resize(len, 0),
        }
        Ok(())
    }
}

/// Compares two tags in time independent of where they differ.
fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn be_u64(b: &[u8; 8]) -> u64 {
    u64::from_be_bytes(*b)
}

/// Reads a probe from a received datagram. Checks, in order: length, magic, version, key id
/// against `keys`, the tag (constant time), then the fields. Nothing after the tag check is
/// looked at before the tag matched; nothing is allocated.
pub fn decode<'a>(datagram: &'a [u8], keys: &ProbeKeys) -> Result<Probe<'a>, ProbeError> {
    if datagram.len() < MIN_PROBE_LEN {
        return Err(ProbeError::Short);
    }
    if datagram.len() > MAX_PROBE_LEN {
        return Err(ProbeError::TooLong);
    }
    let (body, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    let (fixed, rest) = body
        .split_first_chunk::<FIXED_LEN>()
        .ok_or(ProbeError::Short)?;
    let (magic, f) = fixed.split_first_chunk::<3>().ok_or(ProbeError::Short)?;
    let ([version], f) = f.split_first_chunk::<1>().ok_or(ProbeError::Short)?;
    let (key_id, f) = f.split_first_chunk::<4>().ok_or(ProbeError::Short)?;
    if *magic != MAGIC {
        return Err(ProbeError::BadMagic);
    }
    if *version != VERSION {
        return Err(ProbeError::Version(*version));
    }
    let key_id = u32::from_be_bytes(*key_id);
    match (key_id == INSECURE_KEY_ID, keys.is_insecure()) {
        (true, true) => {}
        (true, false) | (false, true) => return Err(ProbeError::Plaintext),
        (false, false) => {
            let key = keys.get(key_id).ok_or(ProbeError::UnknownKey)?;
            let expected = hmac::sign(key, body);
            if !tags_equal(&expected.as_ref()[..TAG_LEN], tag) {
                return Err(ProbeError::Auth);
            }
        }
    }
    let ([kind], f) = f.split_first_chunk::<1>().ok_or(ProbeError::Short)?;
    let (generation, f) = f.split_first_chunk::<8>().ok_or(ProbeError::Short)?;
    let (seq, f) = f.split_first_chunk::<8>().ok_or(ProbeError::Short)?;
    let (timestamp, f) = f.split_first_chunk::<8>().ok_or(ProbeError::Short)?;
    let (reply_len, f) = f.split_first_chunk::<2>().ok_or(ProbeError::Short)?;
    let (vtep_mac, f) = f.split_first_chunk::<6>().ok_or(ProbeError::Short)?;
    let [name_len] = *f else {
        return Err(ProbeError::Short);
    };
    let kind = match kind {
        0 => Kind::Request,
        1 => Kind::Reply,
        k => return Err(ProbeError::Kind(*k)),
    };
    let name_len = usize::from(name_len);
    if name_len == 0 || name_len > MAX_NODE_NAME_LEN {
        return Err(ProbeError::Name);
    }
    let name = rest.get(..name_len).ok_or(ProbeError::Name)?;
    let name = std::str::from_utf8(name).map_err(|_| ProbeError::Name)?;
    if !is_valid_node_name(name) {
        return Err(ProbeError::Name);
    }
    Ok(Probe {
        kind,
        sender: Sender {
            node_name: name,
            generation: be_u64(generation),
            vtep_mac: *vtep_mac,
        },
        seq: be_u64(seq),
        timestamp: be_u64(timestamp),
        reply_len: u16::from_be_bytes(*reply_len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [0x42; 32];

    fn keys() -> ProbeKeys {
        ProbeKeys::from_keyring(&Keyring::new(KEY).unwrap())
    }

    fn request(name: &str) -> Probe<'_> {
        Probe {
            kind: Kind::Request,
            sender: Sender {
                node_name: name,
                generation: (1 << 62) + 1_700_000_000_000,
                vtep_mac: [0x0a, 0x58, 0x0a, 0xf4, 0x03, 0x00],
            },
            seq: 7,
            timestamp: 123_456_789,
            reply_len: 1422,
        }
    }

    #[test]
    fn round_trip_at_every_length_sealed_and_insecure() {
        let p = request("node-1");
        let mut out = Vec::new();
        for keys in [keys(), ProbeKeys::insecure()] {
            for len in [p.min_len(), p.min_len() + 1, 100, 1422, MAX_PROBE_LEN] {
                p.encode(len, &keys, &mut out).unwrap();
                assert_eq!(out.len(), len);
                assert_eq!(decode(&out, &keys), Ok(p));
            }
        }
    }

    #[test]
    fn lengths_and_names_are_checked_on_encode() {
        let mut out = Vec::new();
        let p = request("node-1");
        assert!(matches!(
            p.encode(p.min_len() - 1, &keys(), &mut out),
            Err(EncodeError::Length { .. })
        ));
        assert!(matches!(
            p.encode(MAX_PROBE_LEN + 1, &keys(), &mut out),
            Err(EncodeError::Length { .. })
        ));
        for bad in ["", "bad name", &"a".repeat(254)] {
            assert_eq!(
                request(bad).encode(500, &keys(), &mut out),
                Err(EncodeError::Name)
            );
        }
        let long = "a".repeat(253);
        let p = request(&long);
        p.encode(p.min_len(), &keys(), &mut out).unwrap();
        assert_eq!(decode(&out, &keys()), Ok(p));
    }

    #[test]
    fn modes_and_keys_must_match() {
        let p = request("node-1");
        let mut sealed = Vec::new();
        let mut plain = Vec::new();
        p.encode(200, &keys(), &mut sealed).unwrap();
        p.encode(200, &ProbeKeys::insecure(), &mut plain).unwrap();
        assert_eq!(decode(&plain, &keys()), Err(ProbeError::Plaintext));
        assert_eq!(
            decode(&sealed, &ProbeKeys::insecure()),
            Err(ProbeError::Plaintext)
        );
        let other = ProbeKeys::from_keyring(&Keyring::new([7; 32]).unwrap());
        assert_eq!(decode(&sealed, &other), Err(ProbeError::UnknownKey));
        // A keyring holding both keys verifies with either; rotation tags with the new primary.
        let mut ring = Keyring::new([7; 32]).unwrap();
        ring.add(KEY).unwrap();
        assert_eq!(decode(&sealed, &ProbeKeys::from_keyring(&ring)), Ok(p));
        let mut forged = sealed.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(decode(&forged, &keys()), Err(ProbeError::Auth));
    }

    #[test]
    fn refresh_follows_the_keyring() {
        let sealing = Sealing::keyring(Keyring::new([7; 32]).unwrap());
        let mut keys = ProbeKeys::from_sealing(&sealing);
        let p = request("node-1");
        let mut out = Vec::new();
        p.encode(
            100,
            &ProbeKeys::from_keyring(&Keyring::new(KEY).unwrap()),
            &mut out,
        )
        .unwrap();
        assert_eq!(decode(&out, &keys), Err(ProbeError::UnknownKey));
        if let Sealing::Keyring(lock) = &sealing {
            lock.write().unwrap().add(KEY).unwrap();
        }
        keys.refresh(&sealing);
        assert_eq!(decode(&out, &keys), Ok(p));
        let mut insecure = ProbeKeys::insecure();
        insecure.refresh(&sealing);
        assert!(!insecure.is_insecure());
        insecure.refresh(&Sealing::Insecure);
        assert!(insecure.is_insecure());
        assert!(
            !format!("{keys:?}").contains("42"),
            "no key material in Debug"
        );
    }

    #[test]
    fn replies_never_amplify() {
        // Asked more than the request carried: the reply is as long as the request.
        assert_eq!(reply_len(100, 1422, 6), 100);
        assert_eq!(reply_len(1422, 1422, 6), 1422);
        assert_eq!(reply_len(1422, 0, 6), FIXED_LEN + 6 + TAG_LEN);
        // A reply never goes below what it needs, even after a short request.
        assert_eq!(reply_len(59, 0, 253), FIXED_LEN + 253 + TAG_LEN);
        let req = request("node-1");
        let reply = req.answer(Sender {
            node_name: "node-2",
            generation: 9,
            vtep_mac: [2; 6],
        });
        assert_eq!(
            (reply.kind, reply.seq, reply.timestamp),
            (Kind::Reply, 7, 123_456_789)
        );
        assert_eq!(reply.reply_len, 1422);
    }

    #[test]
    fn packet_sizes_map_to_datagram_lengths() {
        assert_eq!(datagram_len(1450, false), Some(1422));
        assert_eq!(datagram_len(1430, true), Some(1382));
        assert_eq!(datagram_len(1280, false), Some(1252));
        assert_eq!(datagram_len(80, false), None);
        assert_eq!(datagram_len(u32::MAX, false), None);
    }

    #[test]
    fn hostile_bytes_are_typed_errors() {
        let mut out = Vec::new();
        request("node-1").encode(120, &keys(), &mut out).unwrap();
        assert_eq!(
            decode(&out[..MIN_PROBE_LEN - 1], &keys()),
            Err(ProbeError::Short)
        );
        assert_eq!(
            decode(&vec![0; MAX_PROBE_LEN + 1], &keys()),
            Err(ProbeError::TooLong)
        );
        let mut bad = out.clone();
        bad[0] = b'X';
        assert_eq!(decode(&bad, &keys()), Err(ProbeError::BadMagic));
        bad = out.clone();
        bad[3] = 2;
        assert_eq!(decode(&bad, &keys()), Err(ProbeError::Version(2)));
        // In insecure mode nothing hides the fields: each is still checked.
        let insecure = ProbeKeys::insecure();
        request("node-1").encode(120, &insecure, &mut out).unwrap();
        bad = out.clone();
        bad[8] = 9;
        assert_eq!(decode(&bad, &insecure), Err(ProbeError::Kind(9)));
        for name_len in [0u8, 254, 255] {
            bad = out.clone();
            bad[41] = name_len;
            assert_eq!(decode(&bad, &insecure), Err(ProbeError::Name), "{name_len}");
        }
        bad = out.clone();
        bad[42] = b' ';
        assert_eq!(decode(&bad, &insecure), Err(ProbeError::Name));
        // A name running into the tag.
        let p = request("node-1");
        p.encode(p.min_len(), &insecure, &mut out).unwrap();
        out[41] = 7;
        assert_eq!(decode(&out, &insecure), Err(ProbeError::Name));
        assert_eq!(ProbeError::Auth.reason(), "auth");
        assert_eq!(ProbeError::Name.reason(), "malformed");
    }

    proptest! {
        #[test]
        fn prop_arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000)
        ) {
            let _ = decode(&bytes, &keys());
            if let Ok(p) = decode(&bytes, &ProbeKeys::insecure()) {
                prop_assert!(is_valid_node_name(p.sender.node_name));
            }
        }

        #[test]
        fn prop_any_change_to_a_sealed_probe_is_refused(
            pos in any::<usize>(), xor in 1u8..=255, cut in 1usize..64, extra in 1usize..64,
        ) {
            let p = request("node-1");
            let mut out = Vec::new();
            p.encode(300, &keys(), &mut out).unwrap();
            let mut flipped = out.clone();
            let i = pos % flipped.len();
            flipped[i] ^= xor;
            prop_assert!(decode(&flipped, &keys()).is_err());
            prop_assert!(decode(&out[..out.len() - cut], &keys()).is_err());
            let mut long = out.clone();
            long.resize(out.len() + extra, 0);
            prop_assert!(decode(&long, &keys()).is_err());
        }

        #[test]
        fn prop_round_trip(name in "[A-Za-z0-9._-]{1,253}", generation in any::<u64>(),
                           seq in any::<u64>(), timestamp in any::<u64>(),
                           reply_len in any::<u16>(),
                           mac in any::<[u8; 6]>(), reply in any::<bool>(), pad in 0usize..1500) {
            let p = Probe {
                kind: if reply { Kind::Reply } else { Kind::Request },
                sender: Sender { node_name: &name, generation, vtep_mac: mac },
                seq, timestamp, reply_len,
            };
            let mut out = Vec::new();
            p.encode(p.min_len() + pad, &keys(), &mut out).unwrap();
            prop_assert_eq!(decode(&out, &keys()), Ok(p));
        }
    }
}
