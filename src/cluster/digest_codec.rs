//! Compact digests on the gossip wire. Every chitchat SYN and SYN-ACK carries a digest with one
//! entry per known node: its id (name, generation, gossip address) and three counters
//! (heartbeat, last GC version, max version). In a settled mesh every agent knows the same ids,
//! so between two agents whose id lists hash the same the ids are left out and only the counters
//! travel; the receiver puts its own ids back before chitchat parses the message. Pure bytes in,
//! bytes out: the sealed transport (`transport.rs`) keeps which list each peer last announced.
//!
//! Frames (the plaintext inside weft's sealed envelope):
//! - a chitchat message as chitchat wrote it (it starts with chitchat's magic number);
//! - `FULL`: tag, the sender's id-list hash (u64 LE), the chitchat message unchanged;
//! - `COMPACT`: tag, hash, chitchat's 4-byte header, entry count (u32 LE), compressed length
//!   (u32 LE), zstd of the counters (one column per counter, zigzag deltas, LEB128), then the
//!   rest of the chitchat message (its cluster id or delta) unchanged;
//! - `NACK`: tag, the hash of the list the receiver holds: "that list is not mine, send the
//!   message again in full".
//!
//! The chitchat format read here is that of chitchat 0.13 (protocol V1; `Cargo.toml` pins the
//! minor version): header `magic u16 LE, version u8, type u8`; SYN = digest, cluster id;
//! SYN-ACK = digest, delta; a digest is a stream of blocks (`0` end, `1` zstd, `2` plain, each
//! with a u16 LE length) holding entries `name (u16 len, bytes), generation u64, address (4|6,
//! octets, port u16), heartbeat u64, last GC version u64, max version u64`. Messages this module
//! cannot read travel unchanged.

use std::io;

use zstd::bulk::{Compressor, Decompressor};

use crate::hash::{Fnv1a, splitmix64};

/// Frame tags (chitchat's messages start with 0x53, the low byte of their magic number).
pub const FULL: u8 = 0xD1;
pub const COMPACT: u8 = 0xD2;
pub const NACK: u8 = 0xD3;

const MAGIC: [u8; 2] = 45_139u16.to_le_bytes();
const HEADER_LEN: usize = 4;
const PROTOCOL_V1: u8 = 1;
const SYN: u8 = 0;
const SYN_ACK: u8 = 1;
const ACK: u8 = 2;
const BLOCK_END: u8 = 0;
const BLOCK_ZSTD: u8 = 1;
const BLOCK_PLAIN: u8 = 2;
/// Tag and hash in front of FULL, COMPACT and NACK frames.
const PREFIX_LEN: usize = 1 + 8;

/// Largest message handed to chitchat (its receive buffer, the largest UDP payload).
pub const MAX_MESSAGE: usize = 65_507;
/// Largest decoded digest accepted (a hostile peer cannot make us allocate more).
const MAX_DIGEST: usize = 1 << 20;
/// Counter bytes per entry at most (three LEB128 u64).
const MAX_COUNTER_BYTES: usize = 3 * 10;
/// Outgoing digests with an unchanged id list after which a COMPACT frame is tried on a peer
/// whose list is not known yet.
pub const STABLE_BEFORE_GUESS: u32 = 8;
/// zstd level for the counters (the fastest: they are short).
const ZSTD_LEVEL: i32 = 1;

/// The ids of one digest, in chitchat's order (it sorts them), as chitchat serializes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdList {
    bytes: Vec<u8>,
    ends: Vec<u32>,
    hash: u64,
}

impl IdList {
    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn id(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    fn seal(&mut self) {
        let mut h = Fnv1a::default();
        h.bytes(&self.bytes);
        self.hash = splitmix64(h.finish() ^ self.ends.len() as u64);
    }
}

/// A chitchat SYN or SYN-ACK taken apart.
#[derive(Debug, Default)]
struct Parsed {
    header: [u8; HEADER_LEN],
    ids: IdList,
    counters: Vec<[u64; 3]>,
    /// Where the rest of the message (cluster id or delta) starts.
    tail_start: usize,
}

/// What [`Codec::encode`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoded {
    /// The chitchat message unchanged (not a digest message, or too large to prefix).
    Raw,
    Full,
    Compact,
}

/// What [`Codec::decode`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// `out` holds a chitchat message; the peer announced this id-list hash, if any.
    Message { peer_hash: Option<u64> },
    /// A COMPACT frame built on a list this agent does not hold: answer with [`Codec::nack`].
    Unknown { peer_hash: u64 },
    /// The peer could not read our COMPACT frame; it holds the list `peer_hash`.
    Nack { peer_hash: u64 },
}

/// A frame that is none of the above, or whose contents do not add up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// One agent's encoder and decoder: its own id list and reusable zstd contexts.
pub struct Codec {
    own: IdList,
    /// Outgoing digests since the own id list last changed.
    stable: u32,
    cctx: Compressor<'static>,
    dctx: Decompressor<'static>,
    parsed: Parsed,
    scratch: Vec<u8>,
    /// One decompressed block of an outgoing digest.
    block: Vec<u8>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("ids", &self.own.len())
            .field("hash", &self.own.hash)
            .field("stable", &self.stable)
            .finish()
    }
}

impl Codec {
    pub fn new() -> io::Result<Codec> {
        Ok(Codec {
            own: IdList::default(),
            stable: 0,
            cctx: Compressor::new(ZSTD_LEVEL)?,
            dctx: Decompressor::new()?,
            parsed: Parsed::default(),
            scratch: Vec::new(),
            block: Vec::new(),
        })
    }

    /// The hash of the id list of the last digest this agent sent.
    pub fn own_hash(&self) -> u64 {
        self.own.hash
    }

    /// Writes into `out` the frame carrying chitchat message `msg` to a peer that last
    /// announced id list `peer_hash`: COMPACT when that list is ours (or, unknown, when ours has
    /// not changed for a while), FULL otherwise, the message unchanged when it holds no digest.
    pub fn encode(&mut self, msg: &[u8], peer_hash: Option<u64>, out: &mut Vec<u8>) -> Encoded {
        out.clear();
        let mut parsed = std::mem::take(&mut self.parsed);
        let result = if parse(
            msg,
            &mut self.dctx,
            &mut self.scratch,
            &mut self.block,
            &mut parsed,
        )
        .is_ok()
        {
            if parsed.ids.hash == self.own.hash && parsed.ids == self.own {
                self.stable = self.stable.saturating_add(1);
            } else {
                std::mem::swap(&mut self.own, &mut parsed.ids);
                self.stable = 0;
            }
            let guess = match peer_hash {
                Some(h) => h == self.own.hash,
                None => self.stable >= STABLE_BEFORE_GUESS,
            };
            let tail = &msg[parsed.tail_start..];
            if guess
                && rebuilt_len(&self.own, tail) <= MAX_MESSAGE
                && self.compact(&parsed, tail, out).is_ok()
                && out.len() < msg.len() + PREFIX_LEN
            {
                Encoded::Compact
            } else {
                self.full(msg, out)
            }
        } else {
            out.extend_from_slice(msg);
            Encoded::Raw
        };
        self.parsed = parsed;
        result
    }

    /// Writes into `out` the FULL frame of chitchat message `msg` (the message unchanged when
    /// the prefix would make it too large).
    pub fn full(&self, msg: &[u8], out: &mut Vec<u8>) -> Encoded {
        out.clear();
        if msg.len() + PREFIX_LEN > MAX_MESSAGE {
            out.extend_from_slice(msg);
            return Encoded::Raw;
        }
        out.push(FULL);
        out.extend_from_slice(&self.own.hash.to_le_bytes());
        out.extend_from_slice(msg);
        Encoded::Full
    }

    /// Writes into `out` a NACK naming this agent's id list.
    pub fn nack(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(NACK);
        out.extend_from_slice(&self.own.hash.to_le_bytes());
    }

    fn compact(&mut self, parsed: &Parsed, tail: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.scratch.clear();
        for column in 0..3 {
            let mut prev = 0u64;
            for c in &parsed.counters {
                put_varint(&mut self.scratch, zigzag(c[column].wrapping_sub(prev)));
                prev = c[column];
            }
        }
        out.push(COMPACT);
        out.extend_from_slice(&self.own.hash.to_le_bytes());
        out.extend_from_slice(&parsed.header);
        out.extend_from_slice(&(parsed.counters.len() as u32).to_le_bytes());
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        out.resize(
            start + zstd::zstd_safe::compress_bound(self.scratch.len()),
            0,
        );
        let n = self
            .cctx
            .compress_to_buffer(&self.scratch, &mut out[start..])?;
        out.truncate(start + n);
        out[len_at..start].copy_from_slice(&(n as u32).to_le_bytes());
        out.extend_from_slice(tail);
        Ok(())
    }

    /// Reads one frame. A chitchat message (the frame's own, or a COMPACT one rebuilt with this
    /// agent's ids) is left in `out`.
    pub fn decode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<Decoded, Malformed> {
        out.clear();
        let (&tag, rest) = frame.split_first().ok_or(Malformed)?;
        if frame.starts_with(&MAGIC) {
            out.extend_from_slice(frame);
            return Ok(Decoded::Message { peer_hash: None });
        }
        let hash = rest
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or(Malformed)?;
        let body = &rest[8..];
        match tag {
            FULL if body.starts_with(&MAGIC) => {
                out.extend_from_slice(body);
                Ok(Decoded::Message {
                    peer_hash: Some(hash),
                })
            }
            NACK if body.is_empty() => Ok(Decoded::Nack { peer_hash: hash }),
            COMPACT => {
                let header: [u8; HEADER_LEN] = body
                    .get(..HEADER_LEN)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(Malformed)?;
                if header[..2] != MAGIC
                    || header[2] != PROTOCOL_V1
                    || !matches!(header[3], SYN | SYN_ACK)
                {
                    return Err(Malformed);
                }
                let count = read_u32(body, HEADER_LEN).ok_or(Malformed)? as usize;
                let zlen = read_u32(body, HEADER_LEN + 4).ok_or(Malformed)? as usize;
                let zstart = HEADER_LEN + 8;
                let zend = zstart.checked_add(zlen).ok_or(Malformed)?;
                let packed = body.get(zstart..zend).ok_or(Malformed)?;
                let tail = &body[zend..];
                if hash != self.own.hash || count != self.own.len() {
                    return Ok(Decoded::Unknown { peer_hash: hash });
                }
                if rebuilt_len(&self.own, tail) > MAX_MESSAGE {
                    return Ok(Decoded::Unknown { peer_hash: hash });
                }
                let counters = self.unpack(packed, count)?;
                rebuild(&header, &self.own, &counters, tail, out);
                Ok(Decoded::Message {
                    peer_hash: Some(hash),
                })
            }
            _ => Err(Malformed),
        }
    }

    fn unpack(&mut self, packed: &[u8], count: usize) -> Result<Vec<[u64; 3]>, Malformed> {
        self.scratch.clear();
        self.scratch.resize(count * MAX_COUNTER_BYTES, 0);
        let n = self
            .dctx
            .decompress_to_buffer(packed, &mut self.scratch[..])
            .map_err(|_| Malformed)?;
        let mut input = &self.scratch[..n];
        let mut counters = vec![[0u64; 3]; count];
        for column in 0..3 {
            let mut prev = 0u64;
            for c in counters.iter_mut() {
                let v = prev.wrapping_add(unzigzag(take_varint(&mut input).ok_or(Malformed)?));
                c[column] = v;
                prev = v;
            }
        }
        if input.is_empty() {
            Ok(counters)
        } else {
            Err(Malformed)
        }
    }
}

/// Whether `msg` is a chitchat ACK with nothing in its delta: the end of an exchange in which
/// the initiator had nothing the responder lacked. Its receiver would only count it, so the
/// transport does not send it (a quarter of an idle mesh's datagrams).
pub fn is_empty_ack(msg: &[u8]) -> bool {
    msg == [MAGIC[0], MAGIC[1], PROTOCOL_V1, ACK, BLOCK_END]
}

/// Length of the chitchat message [`rebuild`] writes.
fn rebuilt_len(ids: &IdList, tail: &[u8]) -> usize {
    let entries = ids.bytes.len() + 24 * ids.len();
    HEADER_LEN + entries + 3 * entries.div_ceil(usize::from(u16::MAX)) + 1 + tail.len()
}

/// Writes a chitchat V1 message: `header`, the digest of `ids` and `counters` in plain blocks,
/// then `tail`.
fn rebuild(
    header: &[u8; HEADER_LEN],
    ids: &IdList,
    counters: &[[u64; 3]],
    tail: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(header);
    let mut entries = Vec::with_capacity(ids.bytes.len() + 24 * ids.len());
    for (i, c) in counters.iter().enumerate() {
        entries.extend_from_slice(ids.id(i));
        for v in c {
            entries.extend_from_slice(&v.to_le_bytes());
        }
    }
    for block in entries.chunks(usize::from(u16::MAX)) {
        out.push(BLOCK_PLAIN);
        out.extend_from_slice(&(block.len() as u16).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.push(BLOCK_END);
    out.extend_from_slice(tail);
}

/// Takes a chitchat V1 SYN or SYN-ACK apart into `parsed`; anything else is an error.
fn parse(
    msg: &[u8],
    dctx: &mut Decompressor<'static>,
    digest: &mut Vec<u8>,
    block_buf: &mut Vec<u8>,
    parsed: &mut Parsed,
) -> Result<(), Malformed> {
    let header: [u8; HEADER_LEN] = msg
        .get(..HEADER_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(Malformed)?;
    if header[..2] != MAGIC || header[2] != PROTOCOL_V1 || !matches!(header[3], SYN | SYN_ACK) {
        return Err(Malformed);
    }
    parsed.header = header;
    digest.clear();
    let mut pos = HEADER_LEN;
    loop {
        let tag = *msg.get(pos).ok_or(Malformed)?;
        pos += 1;
        if tag == BLOCK_END {
            break;
        }
        let len = read_u16(msg, pos).ok_or(Malformed)? as usize;
        pos += 2;
        let block = msg.get(pos..pos + len).ok_or(Malformed)?;
        pos += len;
        match tag {
            BLOCK_PLAIN => digest.extend_from_slice(block),
            BLOCK_ZSTD => {
                // Decompressed into the spare capacity of `block_buf`: no zeroing.
                block_buf.clear();
                block_buf.reserve_exact(usize::from(u16::MAX));
                dctx.decompress_to_buffer(block, block_buf)
                    .map_err(|_| Malformed)?;
                digest.extend_from_slice(block_buf);
            }
            _ => return Err(Malformed),
        }
        if digest.len() > MAX_DIGEST {
            return Err(Malformed);
        }
    }
    parsed.tail_start = pos;
    parse_entries(digest, &mut parsed.ids, &mut parsed.counters)
}

/// Splits decoded digest entries into their ids and counters.
fn parse_entries(
    mut d: &[u8],
    ids: &mut IdList,
    counters: &mut Vec<[u64; 3]>,
) -> Result<(), Malformed> {
    ids.bytes.clear();
    ids.ends.clear();
    counters.clear();
    while !d.is_empty() {
        let name_len = read_u16(d, 0).ok_or(Malformed)? as usize;
        let ip_tag_at = 2 + name_len + 8;
        let ip_len = match d.get(ip_tag_at) {
            Some(4) => 4,
            Some(6) => 16,
            _ => return Err(Malformed),
        };
        let id_len = ip_tag_at + 1 + ip_len + 2;
        let id = d.get(..id_len).ok_or(Malformed)?;
        let mut c = [0u64; 3];
        for (i, v) in c.iter_mut().enumerate() {
            *v = read_u64(d, id_len + 8 * i).ok_or(Malformed)?;
        }
        ids.bytes.extend_from_slice(id);
        ids.ends
            .push(u32::try_from(ids.bytes.len()).map_err(|_| Malformed)?);
        counters.push(c);
        d = &d[id_len + 24..];
    }
    ids.seal();
    Ok(())
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn zigzag(v: u64) -> u64 {
    (v << 1) ^ ((v as i64 >> 63) as u64)
}

fn unzigzag(v: u64) -> u64 {
    (v >> 1) ^ (v & 1).wrapping_neg()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chitchat V1 message built the way chitchat 0.13 writes it: a zstd block of entries.
    fn chitchat_msg(kind: u8, nodes: &[(&str, u64, u16, [u64; 3])], tail: &[u8]) -> Vec<u8> {
        let mut entries = Vec::new();
        for (name, generation, port, counters) in nodes {
            entries.extend_from_slice(&(name.len() as u16).to_le_bytes());
            entries.extend_from_slice(name.as_bytes());
            entries.extend_from_slice(&generation.to_le_bytes());
            entries.push(4);
            entries.extend_from_slice(&[127, 0, 0, 1]);
            entries.extend_from_slice(&port.to_le_bytes());
            for v in counters {
                entries.extend_from_slice(&v.to_le_bytes());
            }
        }
        let mut msg = MAGIC.to_vec();
        msg.push(PROTOCOL_V1);
        msg.push(kind);
        for block in entries.chunks(16_384) {
            let z = zstd::bulk::compress(block, 3).unwrap();
            msg.push(BLOCK_ZSTD);
            msg.extend_from_slice(&(z.len() as u16).to_le_bytes());
            msg.extend_from_slice(&z);
        }
        msg.push(BLOCK_END);
        msg.extend_from_slice(tail);
        msg
    }

    fn nodes(n: u64, beat: u64) -> Vec<(String, u64, u16, [u64; 3])> {
        (0..n)
            .map(|i| {
                (
                    format!("n{i:05}"),
                    (1 << 62) + 1_700_000_000_000 + i * 37,
                    7946,
                    [beat + i * 13 % 200, 0, 40 + i % 7],
                )
            })
            .collect()
    }

    fn msg_of(kind: u8, nodes: &[(String, u64, u16, [u64; 3])], tail: &[u8]) -> Vec<u8> {
        let v: Vec<_> = nodes
            .iter()
            .map(|(a, b, c, d)| (a.as_str(), *b, *c, *d))
            .collect();
        chitchat_msg(kind, &v, tail)
    }

    /// The digest entries of a chitchat message, decompressed, and its tail.
    fn contents(msg: &[u8]) -> (Vec<u8>, Vec<[u64; 3]>, Vec<u8>) {
        let mut parsed = Parsed::default();
        let mut d = Decompressor::new().unwrap();
        parse(msg, &mut d, &mut Vec::new(), &mut Vec::new(), &mut parsed).unwrap();
        (
            parsed.ids.bytes.clone(),
            parsed.counters.clone(),
            msg[parsed.tail_start..].to_vec(),
        )
    }

    #[test]
    fn compact_round_trip_between_agents_with_the_same_ids() {
        let mut a = Codec::new().unwrap();
        let mut b = Codec::new().unwrap();
        let mut frame = Vec::new();
        let mut out = Vec::new();
        // b learns its own list by sending a digest of the same nodes.
        let from_b = msg_of(SYN, &nodes(100, 5_000), b"cluster");
        assert_eq!(b.encode(&from_b, None, &mut frame), Encoded::Full);
        // a's message, to a peer that announced b's hash.
        let syn_ack = msg_of(SYN_ACK, &nodes(100, 9_000), b"\x00delta-bytes");
        let enc = a.encode(&syn_ack, Some(b.own_hash()), &mut frame);
        assert_eq!(enc, Encoded::Compact);
        assert!(
            frame.len() * 2 < syn_ack.len(),
            "{} vs {}",
            frame.len(),
            syn_ack.len()
        );
        let dec = b.decode(&frame, &mut out).unwrap();
        assert_eq!(
            dec,
            Decoded::Message {
                peer_hash: Some(a.own_hash())
            }
        );
        assert_eq!(contents(&out), contents(&syn_ack));
    }

    #[test]
    fn different_ids_get_a_full_frame_or_a_nack() {
        let mut a = Codec::new().unwrap();
        let mut b = Codec::new().unwrap();
        let (mut frame, mut out) = (Vec::new(), Vec::new());
        b.encode(&msg_of(SYN, &nodes(10, 1), b"c"), None, &mut frame);
        let syn = msg_of(SYN, &nodes(11, 1), b"c");
        // Known to differ: FULL, decoded as the message itself.
        assert_eq!(
            a.encode(&syn, Some(b.own_hash()), &mut frame),
            Encoded::Full
        );
        assert_eq!(
            b.decode(&frame, &mut out),
            Ok(Decoded::Message {
                peer_hash: Some(a.own_hash())
            })
        );
        assert_eq!(out, syn);
        // Claimed equal but not: the receiver asks again, naming its list.
        assert_eq!(
            a.encode(&syn, Some(a.own_hash()), &mut frame),
            Encoded::Compact
        );
        assert_eq!(
            b.decode(&frame, &mut out),
            Ok(Decoded::Unknown {
                peer_hash: a.own_hash()
            })
        );
        b.nack(&mut frame);
        assert_eq!(
            a.decode(&frame, &mut out),
            Ok(Decoded::Nack {
                peer_hash: b.own_hash()
            })
        );
    }

    #[test]
    fn unknown_peers_get_compact_frames_once_the_list_is_stable() {
        let mut a = Codec::new().unwrap();
        let mut frame = Vec::new();
        let syn = msg_of(SYN, &nodes(20, 100), b"c");
        let forms: Vec<_> = (0..=STABLE_BEFORE_GUESS)
            .map(|_| a.encode(&syn, None, &mut frame))
            .collect();
        assert!(
            forms[..STABLE_BEFORE_GUESS as usize]
                .iter()
                .all(|f| *f == Encoded::Full)
        );
        assert_eq!(forms.last(), Some(&Encoded::Compact));
        // A changed list starts the count again.
        let other = msg_of(SYN, &nodes(21, 100), b"c");
        assert_eq!(a.encode(&other, None, &mut frame), Encoded::Full);
    }

    #[test]
    fn only_empty_acks_are_empty_acks() {
        assert!(is_empty_ack(&[
            MAGIC[0],
            MAGIC[1],
            PROTOCOL_V1,
            ACK,
            BLOCK_END
        ]));
        assert!(!is_empty_ack(&[
            MAGIC[0],
            MAGIC[1],
            PROTOCOL_V1,
            ACK,
            BLOCK_END,
            0
        ]));
        assert!(!is_empty_ack(&[
            MAGIC[0],
            MAGIC[1],
            PROTOCOL_V1,
            SYN_ACK,
            BLOCK_END
        ]));
        assert!(!is_empty_ack(&[
            MAGIC[0],
            MAGIC[1],
            PROTOCOL_V1,
            ACK,
            BLOCK_PLAIN
        ]));
    }

    #[test]
    fn other_messages_travel_unchanged() {
        let mut a = Codec::new().unwrap();
        let (mut frame, mut out) = (Vec::new(), Vec::new());
        let ack = [MAGIC[0], MAGIC[1], PROTOCOL_V1, 2, 0, 1, 2];
        assert_eq!(a.encode(&ack, Some(0), &mut frame), Encoded::Raw);
        assert_eq!(frame, ack);
        assert_eq!(
            a.decode(&frame, &mut out),
            Ok(Decoded::Message { peer_hash: None })
        );
        assert_eq!(out, ack);
    }

    #[test]
    fn counters_survive_extremes() {
        let mut a = Codec::new().unwrap();
        let mut b = Codec::new().unwrap();
        let (mut frame, mut out) = (Vec::new(), Vec::new());
        let mut ns = nodes(3, 0);
        ns[0].3 = [u64::MAX, 0, u64::MAX];
        ns[1].3 = [0, u64::MAX, 1];
        ns[2].3 = [1 << 63, 5, 0];
        let syn = msg_of(SYN, &ns, b"");
        b.encode(&syn, None, &mut frame);
        assert_eq!(
            a.encode(&syn, Some(b.own_hash()), &mut frame),
            Encoded::Compact
        );
        b.decode(&frame, &mut out).unwrap();
        assert_eq!(contents(&out), contents(&syn));
    }

    #[test]
    fn hostile_frames_are_errors_not_panics() {
        let mut b = Codec::new().unwrap();
        let mut a = Codec::new().unwrap();
        let (mut frame, mut out) = (Vec::new(), Vec::new());
        let syn = msg_of(SYN, &nodes(50, 10), b"c");
        b.encode(&syn, None, &mut frame);
        a.encode(&syn, Some(b.own_hash()), &mut frame);
        let good = frame.clone();
        // Every truncation and every single-byte change of a valid COMPACT frame.
        for cut in 0..good.len() {
            let _ = b.decode(&good[..cut], &mut out);
        }
        for i in 0..good.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut f = good.clone();
                f[i] ^= x;
                let _ = b.decode(&f, &mut out);
            }
        }
        // Random frames under each tag, and a huge claimed count.
        let mut rng = crate::hash::SplitMix64::new(7);
        for tag in [FULL, COMPACT, NACK, 0x00, 0x53] {
            for len in [0usize, 1, 9, 20, 200] {
                let mut f = vec![tag];
                f.extend((0..len).map(|_| rng.next_u64() as u8));
                let _ = b.decode(&f, &mut out);
            }
        }
        let mut f = good.clone();
        f[PREFIX_LEN + HEADER_LEN..PREFIX_LEN + HEADER_LEN + 4]
            .copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            b.decode(&f, &mut out),
            Ok(Decoded::Unknown { .. })
        ));
        assert_eq!(b.decode(&[], &mut out), Err(Malformed));
        // Outgoing garbage is passed through, never parsed into a panic.
        for len in [0usize, 3, 4, 5, 40] {
            let mut m = vec![MAGIC[0], MAGIC[1], PROTOCOL_V1, SYN];
            m.extend((0..len).map(|_| rng.next_u64() as u8));
            assert_eq!(a.encode(&m, None, &mut frame), Encoded::Raw);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any node set and counters survive the compact form exactly; any change to the
        /// frame is an error or some message, never a panic or an allocation beyond bounds.
        #[test]
        fn compact_frames_round_trip_and_resist_tampering(
            n in 1u64..120,
            beat in 0u64..u64::MAX / 2,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            flips in proptest::collection::vec((0usize..4096, 1u8..=255), 0..4),
        ) {
            let mut a = Codec::new().unwrap();
            let mut b = Codec::new().unwrap();
            let (mut frame, mut out) = (Vec::new(), Vec::new());
            let syn = msg_of(SYN_ACK, &nodes(n, beat), &tail);
            b.encode(&syn, None, &mut frame);
            proptest::prop_assert_eq!(a.encode(&syn, Some(b.own_hash()), &mut frame), Encoded::Compact);
            b.decode(&frame, &mut out).unwrap();
            proptest::prop_assert_eq!(contents(&out), contents(&syn));
            for (at, x) in flips {
                let i = at % frame.len();
                frame[i] ^= x;
            }
            let _ = b.decode(&frame, &mut out);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        ) {
            let mut a = Codec::new().unwrap();
            let mut out = Vec::new();
            let _ = a.decode(&bytes, &mut out);
            let mut m = vec![MAGIC[0], MAGIC[1], PROTOCOL_V1, SYN];
            m.extend_from_slice(&bytes);
            let _ = a.encode(&m, Some(0), &mut out);
            let _ = a.encode(&bytes, None, &mut out);
        }
    }

    #[test]
    fn large_lists_fall_back_to_full_frames() {
        let mut a = Codec::new().unwrap();
        let mut b = Codec::new().unwrap();
        let mut frame = Vec::new();
        // 3,000 entries of ~45 bytes: the rebuilt message would not fit in a datagram.
        let syn = msg_of(SYN, &nodes(3_000, 1), b"c");
        b.encode(&syn, None, &mut frame);
        assert_eq!(
            a.encode(&syn, Some(b.own_hash()), &mut frame),
            Encoded::Full
        );
    }
}
