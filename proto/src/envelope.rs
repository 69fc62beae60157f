//! The sealed gossip envelope (see proto/README.md): every gossip datagram on the underlay is
//! wrapped in it, authenticated and encrypted with a cluster key (or, in insecure mode, only
//! framed so that stray bytes are recognised and counted).
//!
//! Layout (all integers big-endian), [`HEADER_LEN`] = 49 bytes of header then the payload:
//!
//! | offset | len | field                                                          |
//! |--------|-----|----------------------------------------------------------------|
//! | 0      | 3   | magic `b"WFT"`                                                 |
//! | 3      | 1   | format version, 2                                              |
//! | 4      | 1   | fragment: high nibble index, low nibble count (1..=15)         |
//! | 5      | 4   | key id: first 4 bytes of SHA-256(cluster key); 0 = plaintext   |
//! | 9      | 16  | sender salt (random, chosen once per process start)            |
//! | 25     | 8   | counter (strictly increasing per sender salt)                  |
//! | 33     | 16  | recipient: the recipient process's salt; zeros = not known yet |
//! | 49     | ..  | sealed: ChaCha20-Poly1305 ciphertext + 16-byte tag; else plain |
//!
//! The per-sender key is HKDF-SHA256(salt = sender salt, ikm = cluster key, info =
//! [`HKDF_INFO`]), 32 bytes; the nonce is 4 zero bytes then the counter; the associated data is
//! the whole 49-byte header. A message larger than one datagram is split into up to 15
//! fragments with consecutive counters (index `i` carries counter `first + i`).
//!
//! Recipient binding: every process draws a random salt at start and puts it in each datagram
//! it sends; a sender that has heard from a peer binds what it sends there to the peer's salt
//! (authenticated, in the header). An [`Opener`] delivers only datagrams bound to its own salt,
//! so a datagram captured on its way to one agent does not open at another, nor at a later
//! process of the same agent. Before a sender has heard from a peer it sends [`ANY_RECIPIENT`]:
//! such a datagram is authenticated but its content is never delivered ([`Opened::Unbound`]);
//! the receiver answers with an empty message bound to the sender (a hello), from which the
//! sender learns the receiver's salt. Addresses are not bound: NAT, `--public-ip` and seeds
//! given by another address of the host make them differ between the two ends.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use lru::LruCache;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::{digest, hkdf};

/// First bytes of every envelope.
pub const MAGIC: [u8; 3] = *b"WFT";
/// Envelope format version this code writes and reads (1 had no recipient field).
pub const VERSION: u8 = 2;
/// Length of the header, which is also the associated data of the AEAD.
pub const HEADER_LEN: usize = 49;
/// Length of the Poly1305 tag that follows the ciphertext.
pub const TAG_LEN: usize = 16;
/// Length of a cluster key.
pub const KEY_LEN: usize = 32;
/// Length of a sender salt.
pub const SALT_LEN: usize = 16;
/// Recipient field of a datagram whose sender does not know the recipient's salt yet.
pub const ANY_RECIPIENT: [u8; SALT_LEN] = [0; SALT_LEN];
/// Key id of plaintext (insecure mode) envelopes.
pub const INSECURE_KEY_ID: u32 = 0;
/// HKDF info string of the per-sender key derivation.
pub const HKDF_INFO: &[u8] = b"weft gossip v1";
/// Largest UDP payload over IPv4; the default datagram limit.
pub const MAX_DATAGRAM: usize = 65_507;
/// Most fragments one message may be split into.
pub const MAX_FRAGMENTS: u8 = 15;
/// Largest message (reassembled plaintext) accepted or produced.
pub const MAX_MESSAGE: usize = 65_536;
/// Width of the replay window, in counters.
pub const REPLAY_WINDOW: u64 = 1024;
/// Senders (salts) whose replay window is tracked at once; the least recently seen is evicted.
pub const MAX_TRACKED_SENDERS: usize = 4096;
/// Derived per-sender keys cached by an [`Opener`].
pub const MAX_CACHED_KEYS: usize = 4096;
/// Partially received fragmented messages kept at once.
pub const MAX_PENDING_MESSAGES: usize = 64;
/// Longest key file content [`decode_key`] looks at, whitespace included.
pub const MAX_KEY_FILE_LEN: usize = 4096;

/// Sealing overhead of one datagram (header + tag).
pub const SEALED_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Why a datagram was not accepted. Each variant is a drop reason the caller counts.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpenError {
    #[error("malformed envelope")]
    Malformed,
    #[error("envelope sealed with a key not in the keyring")]
    UnknownKey,
    #[error("envelope failed authentication")]
    Auth,
    #[error("envelope replayed or too old")]
    Replay,
    #[error("plaintext envelope while sealing is on, or sealed envelope in insecure mode")]
    Plaintext,
    /// Authentic, but bound to another process (captured on its way elsewhere, or sent to an
    /// earlier process of this agent). Carries the sender's salt.
    #[error("envelope bound to another recipient")]
    Misdirected([u8; SALT_LEN]),
}

/// What [`Opener::open`] made of an authentic datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened<'a> {
    /// A complete message bound to this process (or any message in insecure mode), from the
    /// sender whose salt is `sender`. An empty message is a hello: nothing to deliver.
    Message {
        sender: [u8; SALT_LEN],
        message: &'a [u8],
    },
    /// A valid fragment, kept until its siblings arrive.
    Fragment,
    /// Authentic but bound to [`ANY_RECIPIENT`]: its sender does not know this process's salt
    /// yet. Nothing is delivered; answer with a hello bound to `sender`.
    Unbound { sender: [u8; SALT_LEN] },
}

/// Why a message could not be sealed.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    #[error("message of {0} bytes does not fit in the allowed datagrams")]
    TooLarge(usize),
    #[error("datagram limit {0} is too small to carry any payload")]
    DatagramLimit(usize),
    #[error("sender counter exhausted: restart with a new salt")]
    CounterExhausted,
    #[error("AEAD sealing failed")]
    Crypto,
}

/// Key and keyring errors.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    #[error("key id of this key is 0, which means plaintext: generate another key")]
    ZeroId,
    #[error("another key with the same id {0:08x} is already installed")]
    IdCollision(u32),
    #[error("no key with id {0:08x} in the keyring")]
    Unknown(u32),
    #[error("key {0:08x} is the primary key: set another primary first")]
    IsPrimary(u32),
    #[error("random number generator failed")]
    Rng,
    #[error("key is not valid base64")]
    Base64,
    #[error("key has {0} bytes, expected 32")]
    Length(usize),
}

/// The id of a cluster key: the first 4 bytes of its SHA-256, big-endian.
pub fn key_id(key: &[u8; KEY_LEN]) -> u32 {
    let d = digest::digest(&digest::SHA256, key);
    let mut id = [0u8; 4];
    id.copy_from_slice(&d.as_ref()[..4]);
    u32::from_be_bytes(id)
}

/// A fresh random cluster key (never one whose key id is 0).
pub fn generate_key(rng: &dyn ring::rand::SecureRandom) -> Result<[u8; KEY_LEN], KeyError> {
    loop {
        let mut key = [0u8; KEY_LEN];
        rng.fill(&mut key).map_err(|_| KeyError::Rng)?;
        if key_id(&key) != INSECURE_KEY_ID {
            return Ok(key);
        }
    }
}

/// A fresh random sender salt, to be chosen once per process start (never [`ANY_RECIPIENT`]).
pub fn generate_salt(rng: &dyn ring::rand::SecureRandom) -> Result<[u8; SALT_LEN], KeyError> {
    loop {
        let mut salt = [0u8; SALT_LEN];
        rng.fill(&mut salt).map_err(|_| KeyError::Rng)?;
        if salt != ANY_RECIPIENT {
            return Ok(salt);
        }
    }
}

/// A key file's content: standard base64 with padding and a trailing newline.
pub fn encode_key(key: &[u8; KEY_LEN]) -> String {
    let mut s = STANDARD.encode(key);
    s.push('\n');
    s
}

/// Reads a key file's content: standard base64 (padding optional), surrounding whitespace
/// ignored.
pub fn decode_key(s: &str) -> Result<[u8; KEY_LEN], KeyError> {
    if s.len() > MAX_KEY_FILE_LEN {
        return Err(KeyError::Length(s.len()));
    }
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(s.trim().as_bytes())
        .map_err(|_| KeyError::Base64)?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

/// Every keyring state gets a distinct generation, so caches of derived keys notice any change,
/// including the replacement of a whole keyring behind a lock.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// The cluster keys: the primary one seals, every installed one opens.
/// Rotation: install the new key everywhere, make it primary everywhere, remove the old one.
pub struct Keyring {
    keys: Vec<(u32, [u8; KEY_LEN])>,
    primary: u32,
    generation: u64,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids())
            .field("primary", &format_args!("{:08x}", self.primary))
            .finish()
    }
}

impl Keyring {
    /// A keyring holding one key, which is primary.
    pub fn new(primary: [u8; KEY_LEN]) -> Result<Self, KeyError> {
        let id = key_id(&primary);
        if id == INSECURE_KEY_ID {
            return Err(KeyError::ZeroId);
        }
        Ok(Keyring {
            keys: vec![(id, primary)],
            primary: id,
            generation: next_generation(),
        })
    }

    /// Installs a key (for opening); returns its id. Installing a present key is a no-op.
    pub fn add(&mut self, key: [u8; KEY_LEN]) -> Result<u32, KeyError> {
        let id = key_id(&key);
        if id == INSECURE_KEY_ID {
            return Err(KeyError::ZeroId);
        }
        match self.get(id) {
            Some(existing) if *existing == key => return Ok(id),
            Some(_) => return Err(KeyError::IdCollision(id)),
            None => {}
        }
        self.keys.push((id, key));
        self.generation = next_generation();
        Ok(id)
    }

    /// Removes a key that is not the primary.
    pub fn remove(&mut self, id: u32) -> Result<(), KeyError> {
        if id == self.primary {
            return Err(KeyError::IsPrimary(id));
        }
        let before = self.keys.len();
        self.keys.retain(|(k, _)| *k != id);
        if self.keys.len() == before {
            return Err(KeyError::Unknown(id));
        }
        self.generation = next_generation();
        Ok(())
    }

    /// Makes an installed key the one that seals.
    pub fn set_primary(&mut self, id: u32) -> Result<(), KeyError> {
        if self.get(id).is_none() {
            return Err(KeyError::Unknown(id));
        }
        if self.primary != id {
            self.primary = id;
            self.generation = next_generation();
        }
        Ok(())
    }

    pub fn primary_id(&self) -> u32 {
        self.primary
    }

    /// Ids of all installed keys, in installation order.
    pub fn key_ids(&self) -> Vec<u32> {
        self.keys.iter().map(|(id, _)| *id).collect()
    }

    pub fn contains(&self, id: u32) -> bool {
        self.get(id).is_some()
    }

    /// Changes whenever the set of keys or the primary changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The key with this id (the probe authentication keys are derived from it, `probe.rs`).
    pub(crate) fn get(&self, id: u32) -> Option<&[u8; KEY_LEN]> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, key)| key)
    }

    fn primary_key(&self) -> Option<&[u8; KEY_LEN]> {
        self.get(self.primary)
    }
}

/// How gossip is protected. The keyring is shared and may be changed at run time.
#[derive(Clone, Debug)]
pub enum Sealing {
    /// Plaintext envelopes (key id 0): framing only, no authentication.
    Insecure,
    Keyring(Arc<RwLock<Keyring>>),
}

impl Sealing {
    /// Sealing with a fresh shared keyring.
    pub fn keyring(keyring: Keyring) -> Self {
        Sealing::Keyring(Arc::new(RwLock::new(keyring)))
    }

    pub fn is_insecure(&self) -> bool {
        matches!(self, Sealing::Insecure)
    }
}

fn read_ring(lock: &RwLock<Keyring>) -> RwLockReadGuard<'_, Keyring> {
    // A writer that panicked cannot leave a Keyring half-updated in a harmful way (every
    // mutation is a single push/retain/assignment), so a poisoned lock is still usable.
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn derive_key(cluster_key: &[u8; KEY_LEN], salt: &[u8; SALT_LEN]) -> Option<LessSafeKey> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(cluster_key);
    let okm = prk.expand(&[HKDF_INFO], &aead::CHACHA20_POLY1305).ok()?;
    Some(LessSafeKey::new(UnboundKey::from(okm)))
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// A parsed envelope header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub frag_index: u8,
    pub frag_count: u8,
    pub key_id: u32,
    pub salt: [u8; SALT_LEN],
    pub counter: u64,
    pub recipient: [u8; SALT_LEN],
}

impl Header {
    /// Appends the 49 header bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push((self.frag_index << 4) | (self.frag_count & 0x0f));
        out.extend_from_slice(&self.key_id.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(&self.recipient);
    }

    /// Splits a datagram into its header (checked: magic, version, fragment fields) and the
    /// payload.
    pub fn parse(datagram: &[u8]) -> Result<(Header, &[u8]), OpenError> {
        let (head, payload) = datagram
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(OpenError::Malformed)?;
        let (magic, rest) = head.split_first_chunk::<3>().ok_or(OpenError::Malformed)?;
        let ([version, frag], rest) = rest.split_first_chunk::<2>().ok_or(OpenError::Malformed)?;
        let (key_id, rest) = rest.split_first_chunk::<4>().ok_or(OpenError::Malformed)?;
        let (salt, rest) = rest
            .split_first_chunk::<SALT_LEN>()
            .ok_or(OpenError::Malformed)?;
        let (counter, rest) = rest.split_first_chunk::<8>().ok_or(OpenError::Malformed)?;
        let recipient = <[u8; SALT_LEN]>::try_from(rest).map_err(|_| OpenError::Malformed)?;
        if *magic != MAGIC || *version != VERSION {
            return Err(OpenError::Malformed);
        }
        let frag_index = frag >> 4;
        let frag_count = frag & 0x0f;
        if frag_count == 0 || frag_index >= frag_count {
            return Err(OpenError::Malformed);
        }
        Ok((
            Header {
                frag_index,
                frag_count,
                key_id: u32::from_be_bytes(*key_id),
                salt: *salt,
                counter: u64::from_be_bytes(*counter),
                recipient,
            },
            payload,
        ))
    }
}

/// The sending side: one per process (one salt, one counter), shared by all peers.
pub struct Sealer {
    sealing: Sealing,
    salt: [u8; SALT_LEN],
    next_counter: u64,
    /// (keyring generation, derived key of the primary for our salt, its key id).
    cached: Option<(u64, u32, LessSafeKey)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("insecure", &self.sealing.is_insecure())
            .field("next_counter", &self.next_counter)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer whose first datagram carries counter 0. `salt` must be fresh random bytes
    /// ([`generate_salt`]) for every sealer ever created with the same keys.
    pub fn new(sealing: Sealing, salt: [u8; SALT_LEN]) -> Self {
        Self::with_counter(sealing, salt, 0)
    }

    /// A sealer starting at `next_counter` (tests, vectors).
    pub fn with_counter(sealing: Sealing, salt: [u8; SALT_LEN], next_counter: u64) -> Self {
        Sealer {
            sealing,
            salt,
            next_counter,
            cached: None,
        }
    }

    pub fn salt(&self) -> [u8; SALT_LEN] {
        self.salt
    }

    /// The counter the next datagram will carry.
    pub fn next_counter(&self) -> u64 {
        self.next_counter
    }

    /// Bytes a datagram adds around its payload in this sealer's mode.
    pub fn overhead(&self) -> usize {
        if self.sealing.is_insecure() {
            HEADER_LEN
        } else {
            SEALED_OVERHEAD
        }
    }

    /// Seals `plaintext` as exactly one datagram into `out` (cleared first), bound to
    /// `recipient` (the recipient's salt, or [`ANY_RECIPIENT`]). Fails with `TooLarge` when it
    /// would exceed [`MAX_DATAGRAM`].
    pub fn seal(
        &mut self,
        plaintext: &[u8],
        recipient: [u8; SALT_LEN],
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        if plaintext.len() + self.overhead() > MAX_DATAGRAM {
            return Err(SealError::TooLarge(plaintext.len()));
        }
        self.refresh_key();
        let counter = self.take_counters(1)?;
        self.seal_one(plaintext, 0, 1, counter, recipient, out)
    }

    /// Seals `plaintext` as one or more datagrams of at most `max_datagram` bytes each (at most
    /// [`MAX_FRAGMENTS`]), bound to `recipient`. `out` is resized to the number of datagrams;
    /// its buffers are reused.
    pub fn seal_fragments(
        &mut self,
        plaintext: &[u8],
        recipient: [u8; SALT_LEN],
        max_datagram: usize,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), SealError> {
        let overhead = self.overhead();
        let capacity = max_datagram
            .min(MAX_DATAGRAM)
            .checked_sub(overhead)
            .filter(|c| *c > 0)
            .ok_or(SealError::DatagramLimit(max_datagram))?;
        if plaintext.len() > MAX_MESSAGE {
            return Err(SealError::TooLarge(plaintext.len()));
        }
        let count = plaintext.len().div_ceil(capacity).max(1);
        let count = u8::try_from(count)
            .ok()
            .filter(|c| *c <= MAX_FRAGMENTS)
            .ok_or(SealError::TooLarge(plaintext.len()))?;
        self.refresh_key();
        let first = self.take_counters(u64::from(count))?;
        out.resize_with(usize::from(count), Vec::new);
        let chunks = plaintext.chunks(capacity);
        // An empty plaintext yields no chunk: send it as one empty fragment.
        let chunks: Box<dyn Iterator<Item = &[u8]>> = if plaintext.is_empty() {
            Box::new(std::iter::once(&[][..]))
        } else {
            Box::new(chunks)
        };
        for ((index, chunk), buf) in (0u8..).zip(chunks).zip(out.iter_mut()) {
            self.seal_one(
                chunk,
                index,
                count,
                first + u64::from(index),
                recipient,
                buf,
            )?;
        }
        Ok(())
    }

    fn take_counters(&mut self, n: u64) -> Result<u64, SealError> {
        let first = self.next_counter;
        self.next_counter = first.checked_add(n).ok_or(SealError::CounterExhausted)?;
        Ok(first)
    }

    fn refresh_key(&mut self) {
        let Sealing::Keyring(lock) = &self.sealing else {
            self.cached = None;
            return;
        };
        let ring = read_ring(lock);
        if matches!(&self.cached, Some((generation, _, _)) if *generation == ring.generation()) {
            return;
        }
        self.cached = ring.primary_key().and_then(|key| {
            derive_key(key, &self.salt).map(|k| (ring.generation(), ring.primary_id(), k))
        });
    }

    fn seal_one(
        &self,
        plaintext: &[u8],
        frag_index: u8,
        frag_count: u8,
        counter: u64,
        recipient: [u8; SALT_LEN],
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        out.clear();
        let key = match (&self.sealing, &self.cached) {
            (Sealing::Insecure, _) => None,
            (Sealing::Keyring(_), Some((_, id, key))) => Some((*id, key)),
            (Sealing::Keyring(_), None) => return Err(SealError::Crypto),
        };
        let header = Header {
            frag_index,
            frag_count,
            key_id: key.map_or(INSECURE_KEY_ID, |(id, _)| id),
            salt: self.salt,
            counter,
            recipient,
        };
        header.write(out);
        out.extend_from_slice(plaintext);
        if let Some((_, key)) = key {
            let (head, body) = out.split_at_mut(HEADER_LEN);
            let tag = key
                .seal_in_place_separate_tag(nonce(counter), Aad::from(&*head), body)
                .map_err(|_| SealError::Crypto)?;
            out.extend_from_slice(tag.as_ref());
        }
        Ok(())
    }
}

/// Which counters of one sender were seen: the highest, and a 1024-bit ring bitmap of the
/// counters within [`REPLAY_WINDOW`] below it (bit `c % 1024` stands for counter `c`).
#[derive(Clone, Debug)]
struct ReplayWindow {
    top: u64,
    bits: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl ReplayWindow {
    fn new(first: u64) -> Self {
        let mut w = ReplayWindow {
            top: first,
            bits: [0; (REPLAY_WINDOW / 64) as usize],
        };
        w.set(first);
        w
    }

    fn slot(counter: u64) -> (usize, u64) {
        let bit = counter % REPLAY_WINDOW;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    fn set(&mut self, counter: u64) {
        let (word, mask) = Self::slot(counter);
        if let Some(w) = self.bits.get_mut(word) {
            *w |= mask;
        }
    }

    fn is_set(&self, counter: u64) -> bool {
        let (word, mask) = Self::slot(counter);
        self.bits.get(word).is_some_and(|w| w & mask != 0)
    }

    /// Accepts `counter` once: false when it was seen or is older than the window.
    fn accept(&mut self, counter: u64) -> bool {
        if counter > self.top {
            let ahead = counter - self.top;
            if ahead >= REPLAY_WINDOW {
                self.bits = [0; (REPLAY_WINDOW / 64) as usize];
            } else {
                for c in self.top + 1..counter {
                    let (word, mask) = Self::slot(c);
                    if let Some(w) = self.bits.get_mut(word) {
                        *w &= !mask;
                    }
                }
                let (word, mask) = Self::slot(counter);
                if let Some(w) = self.bits.get_mut(word) {
                    *w &= !mask;
                }
            }
            self.top = counter;
            self.set(counter);
            true
        } else if self.top - counter >= REPLAY_WINDOW || self.is_set(counter) {
            false
        } else {
            self.set(counter);
            true
        }
    }
}

/// A message whose fragments are still arriving.
struct Pending {
    count: u8,
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

/// The receiving side: opens datagrams from every peer, tracks replay windows per sender.
pub struct Opener {
    sealing: Sealing,
    /// This process's salt: sealed datagrams must be bound to it.
    own_salt: [u8; SALT_LEN],
    keys_generation: u64,
    keys: LruCache<(u32, [u8; SALT_LEN]), LessSafeKey>,
    windows: LruCache<[u8; SALT_LEN], ReplayWindow>,
    pending: LruCache<([u8; SALT_LEN], u64), Pending>,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("insecure", &self.sealing.is_insecure())
            .field("tracked_senders", &self.windows.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

impl Opener {
    /// An opener for the process whose salt (the one its [`Sealer`] sends with) is `own_salt`.
    pub fn new(sealing: Sealing, own_salt: [u8; SALT_LEN]) -> Self {
        Opener {
            sealing,
            own_salt,
            keys_generation: 0,
            keys: LruCache::new(nonzero(MAX_CACHED_KEYS)),
            windows: LruCache::new(nonzero(MAX_TRACKED_SENDERS)),
            pending: LruCache::new(nonzero(MAX_PENDING_MESSAGES)),
        }
    }

    /// Opens one datagram (see [`Opened`]; a message's plaintext is in `out`). The recipient and
    /// replay are checked only after authentication succeeded; a misdirected datagram does not
    /// touch the replay window. In insecure mode nothing is authenticated and neither the
    /// recipient nor replay is checked.
    pub fn open<'a>(
        &mut self,
        datagram: &[u8],
        out: &'a mut Vec<u8>,
    ) -> Result<Opened<'a>, OpenError> {
        out.clear();
        let (header, payload) = Header::parse(datagram)?;
        let mut unbound = false;
        match (&self.sealing, header.key_id) {
            (Sealing::Insecure, INSECURE_KEY_ID) => out.extend_from_slice(payload),
            (Sealing::Insecure, _) | (Sealing::Keyring(_), INSECURE_KEY_ID) => {
                return Err(OpenError::Plaintext);
            }
            (Sealing::Keyring(lock), id) => {
                if payload.len() < TAG_LEN {
                    return Err(OpenError::Malformed);
                }
                let lock = Arc::clone(lock);
                let ring = read_ring(&lock);
                if ring.generation() != self.keys_generation {
                    self.keys.clear();
                    self.keys_generation = ring.generation();
                }
                let cache_key = (id, header.salt);
                let mut fresh = None;
                let derived: &LessSafeKey = match self.keys.get(&cache_key) {
                    Some(k) => k,
                    None => {
                        let cluster_key = ring.get(id).ok_or(OpenError::UnknownKey)?;
                        fresh.insert(derive_key(cluster_key, &header.salt).ok_or(OpenError::Auth)?)
                    }
                };
                let head = datagram.get(..HEADER_LEN).ok_or(OpenError::Malformed)?;
                out.extend_from_slice(payload);
                let len = derived
                    .open_in_place(nonce(header.counter), Aad::from(head), out)
                    .map_err(|_| OpenError::Auth)?
                    .len();
                out.truncate(len);
                drop(ring);
                // Authenticated: only now may this sender's state change.
                if let Some(key) = fresh {
                    self.keys.put(cache_key, key);
                }
                if header.recipient == ANY_RECIPIENT {
                    unbound = true;
                } else if header.recipient != self.own_salt {
                    return Err(OpenError::Misdirected(header.salt));
                }
                match self.windows.get_mut(&header.salt) {
                    Some(window) => {
                        if !window.accept(header.counter) {
                            return Err(OpenError::Replay);
                        }
                    }
                    None => {
                        self.windows
                            .put(header.salt, ReplayWindow::new(header.counter));
                    }
                }
            }
        }
        if unbound {
            out.clear();
            return Ok(Opened::Unbound {
                sender: header.salt,
            });
        }
        if header.frag_count == 1 {
            return Ok(Opened::Message {
                sender: header.salt,
                message: out.as_slice(),
            });
        }
        self.reassemble(&header, out)
    }

    fn reassemble<'a>(
        &mut self,
        header: &Header,
        out: &'a mut Vec<u8>,
    ) -> Result<Opened<'a>, OpenError> {
        let first = header
            .counter
            .checked_sub(u64::from(header.frag_index))
            .ok_or(OpenError::Malformed)?;
        let key = (header.salt, first);
        let entry = self.pending.get_or_insert_mut(key, || Pending {
            count: header.frag_count,
            parts: vec![None; usize::from(header.frag_count)],
            bytes: 0,
        });
        let slot = entry.parts.get_mut(usize::from(header.frag_index));
        let bad = entry.count != header.frag_count
            || entry.bytes + out.len() > MAX_MESSAGE
            || !matches!(slot, Some(None));
        if bad {
            self.pending.pop(&key);
            return Err(OpenError::Malformed);
        }
        let len = out.len();
        if let Some(slot) = slot {
            *slot = Some(std::mem::take(out));
        }
        entry.bytes += len;
        if entry.parts.iter().any(Option::is_none) {
            return Ok(Opened::Fragment);
        }
        let Some(done) = self.pending.pop(&key) else {
            return Ok(Opened::Fragment);
        };
        out.clear();
        out.reserve(done.bytes);
        for part in done.parts.into_iter().flatten() {
            out.extend_from_slice(&part);
        }
        Ok(Opened::Message {
            sender: header.salt,
            message: out.as_slice(),
        })
    }

    /// Number of senders whose replay window is tracked.
    pub fn tracked_senders(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ring::rand::SystemRandom;

    const KEY_A: [u8; 32] = [0x11; 32];
    const KEY_B: [u8; 32] = [0x22; 32];
    const SALT: [u8; 16] = [0x5a; 16];
    /// The receiving process's salt in these tests.
    const ME: [u8; 16] = [0x77; 16];

    fn ring_of(keys: &[[u8; 32]]) -> Sealing {
        let mut ring = Keyring::new(keys[0]).unwrap();
        for k in &keys[1..] {
            ring.add(*k).unwrap();
        }
        Sealing::keyring(ring)
    }

    fn delivered(o: Result<Opened<'_>, OpenError>) -> Option<Vec<u8>> {
        match o {
            Ok(Opened::Message { message, .. }) => Some(message.to_vec()),
            _ => None,
        }
    }

    fn open_one(opener: &mut Opener, d: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut out = Vec::new();
        opener.open(d, &mut out).map(|m| match m {
            Opened::Message { message, .. } => message.to_vec(),
            _ => Vec::new(),
        })
    }

    #[test]
    fn round_trip_sealed_and_insecure() {
        for sealing in [ring_of(&[KEY_A]), Sealing::Insecure] {
            let mut sealer = Sealer::new(sealing.clone(), SALT);
            let mut opener = Opener::new(sealing.clone(), ME);
            for msg in [&b""[..], b"hello", &[7u8; 3000][..]] {
                let mut d = Vec::new();
                sealer.seal(msg, ME, &mut d).unwrap();
                assert_eq!(d.len(), msg.len() + sealer.overhead());
                assert_eq!(&d[..3], b"WFT");
                assert_eq!(open_one(&mut opener, &d).unwrap(), msg);
            }
            assert_eq!(sealer.next_counter(), 3);
        }
    }

    #[test]
    fn sealed_payload_is_not_plaintext() {
        let mut sealer = Sealer::new(ring_of(&[KEY_A]), SALT);
        let mut d = Vec::new();
        let msg = b"a very recognisable gossip message";
        sealer.seal(msg, ME, &mut d).unwrap();
        assert!(!d.windows(msg.len()).any(|w| w == msg));
        assert_eq!(&d[5..9], &key_id(&KEY_A).to_be_bytes());
    }

    #[test]
    fn tamper_any_byte_fails() {
        let sealing = ring_of(&[KEY_A]);
        let mut sealer = Sealer::new(sealing.clone(), SALT);
        let mut d = Vec::new();
        sealer.seal(b"some gossip", ME, &mut d).unwrap();
        for i in 0..d.len() {
            for flip in [0x01u8, 0x80] {
                let mut t = d.clone();
                t[i] ^= flip;
                let mut opener = Opener::new(sealing.clone(), ME);
                let r = open_one(&mut opener, &t);
                assert!(
                    matches!(
                        r,
                        Err(OpenError::Auth | OpenError::Malformed | OpenError::UnknownKey)
                    ),
                    "byte {i}: {r:?}"
                );
            }
        }
        // Truncation at every length fails too.
        for cut in 0..d.len() {
            let mut opener = Opener::new(sealing.clone(), ME);
            assert!(open_one(&mut opener, &d[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn replay_rejected_and_window_slides() {
        let sealing = ring_of(&[KEY_A]);
        let mut sealer = Sealer::new(sealing.clone(), SALT);
        let mut opener = Opener::new(sealing.clone(), ME);
        let mut all = Vec::new();
        for i in 0..2000u32 {
            let mut d = Vec::new();
            sealer.seal(&i.to_be_bytes(), ME, &mut d).unwrap();
            all.push(d);
        }
        // Deliver out of order inside the window: 10 then 5.
        assert!(open_one(&mut opener, &all[10]).is_ok());
        assert!(open_one(&mut opener, &all[5]).is_ok());
        assert_eq!(open_one(&mut opener, &all[5]), Err(OpenError::Replay));
        assert_eq!(open_one(&mut opener, &all[10]), Err(OpenError::Replay));
        // Jump ahead: 1500. Counter 476 (= 1500 - 1024) is too old, 477 still inside.
        assert!(open_one(&mut opener, &all[1500]).is_ok());
        assert_eq!(open_one(&mut opener, &all[476]), Err(OpenError::Replay));
        assert_eq!(open_one(&mut opener, &all[11]), Err(OpenError::Replay));
        assert!(open_one(&mut opener, &all[477]).is_ok());
        assert_eq!(open_one(&mut opener, &all[477]), Err(OpenError::Replay));
        // Sliding by one step at a time clears the bits that fall out.
        for d in &all[1501..2000] {
            assert!(open_one(&mut opener, d).is_ok());
        }
        assert!(open_one(&mut opener, &all[1499]).is_ok());
        assert_eq!(open_one(&mut opener, &all[1999]), Err(OpenError::Replay));
    }

    #[test]
    fn replay_check_after_auth() {
        // A forged datagram with a far-future counter must not move the window.
        let sealing = ring_of(&[KEY_A]);
        let mut sealer = Sealer::new(sealing.clone(), SALT);
        let mut opener = Opener::new(sealing.clone(), ME);
        let mut d0 = Vec::new();
        sealer.seal(b"x", ME, &mut d0).unwrap();
        let mut d1 = Vec::new();
        sealer.seal(b"y", ME, &mut d1).unwrap();
        assert!(open_one(&mut opener, &d0).is_ok());
        let mut forged = d1.clone();
        forged[25..33].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(open_one(&mut opener, &forged), Err(OpenError::Auth));
        assert_eq!(open_one(&mut opener, &d1).unwrap(), b"y");
    }

    #[test]
    fn datagrams_open_only_at_their_recipient() {
        let sealing = ring_of(&[KEY_A]);
        let other: [u8; 16] = [0x66; 16];
        let mut sealer = Sealer::new(sealing.clone(), SALT);
        let mut at_me = Opener::new(sealing.clone(), ME);
        let mut at_other = Opener::new(sealing.clone(), other);
        let mut d = Vec::new();
        sealer.seal(b"for me", ME, &mut d).unwrap();
        // Captured on its way to ME, delivered elsewhere: refused, before and after ME saw it,
        // and the refusal does not burn the counter at the other recipient.
        assert_eq!(
            open_one(&mut at_other, &d),
            Err(OpenError::Misdirected(SALT))
        );
        assert_eq!(open_one(&mut at_me, &d).unwrap(), b"for me");
        assert_eq!(
            open_one(&mut at_other, &d),
            Err(OpenError::Misdirected(SALT))
        );
        // Rewriting the recipient breaks the tag.
        let mut moved = d.clone();
        moved[33..49].copy_from_slice(&other);
        assert_eq!(open_one(&mut at_other, &moved), Err(OpenError::Auth));
        // A later process of the same agent (new salt) does not open it either.
        let mut restarted = Opener::new(sealing.clone(), [0x78; 16]);
        assert_eq!(
            open_one(&mut restarted, &d),
            Err(OpenError::Misdirected(SALT))
        );
        // Unbound: authenticated, never delivered, once per counter.
        let mut u = Vec::new();
        sealer.seal(b"hello?", ANY_RECIPIENT, &mut u).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            at_other.open(&u, &mut out),
            Ok(Opened::Unbound { sender: SALT })
        );
        assert!(
            out.is_empty(),
            "nothing of an unbound datagram is handed out"
        );
        assert_eq!(at_other.open(&u, &mut out), Err(OpenError::Replay));
        let mut forged = u.clone();
        forged[HEADER_LEN] ^= 1;
        assert_eq!(at_me.open(&forged, &mut out), Err(OpenError::Auth));
        // Fragments are bound too.
        let mut frags = Vec::new();
        sealer
            .seal_fragments(&[3u8; 3000], ME, 1000, &mut frags)
            .unwrap();
        for f in &frags {
            assert_eq!(
                at_other.open(f, &mut out),
                Err(OpenError::Misdirected(SALT))
            );
        }
        // Insecure mode binds nothing (nothing is authenticated there).
        let mut plain = Sealer::new(Sealing::Insecure, SALT);
        plain.seal(b"p", ME, &mut d).unwrap();
        assert_eq!(
            open_one(&mut Opener::new(Sealing::Insecure, other), &d).unwrap(),
            b"p"
        );
        assert_ne!(generate_salt(&SystemRandom::new()).unwrap(), ANY_RECIPIENT);
    }

    #[test]
    fn rotation() {
        let mut sealer_b = Sealer::new(ring_of(&[KEY_B]), SALT);
        let mut d = Vec::new();
        sealer_b.seal(b"from b", ME, &mut d).unwrap();
        let mut only_a = Opener::new(ring_of(&[KEY_A]), ME);
        assert_eq!(open_one(&mut only_a, &d), Err(OpenError::UnknownKey));
        let mut a_and_b = Opener::new(ring_of(&[KEY_A, KEY_B]), ME);
        assert_eq!(open_one(&mut a_and_b, &d).unwrap(), b"from b");

        // Live rotation through the shared lock.
        let sealing = ring_of(&[KEY_A]);
        let Sealing::Keyring(lock) = &sealing else {
            unreachable!()
        };
        let mut sealer = Sealer::new(sealing.clone(), [1; 16]);
        let mut opener = Opener::new(sealing.clone(), ME);
        let peer_b = ring_of(&[KEY_B]);
        let mut opener_b = Opener::new(peer_b.clone(), ME);
        sealer.seal(b"1", ME, &mut d).unwrap();
        assert_eq!(open_one(&mut opener, &d).unwrap(), b"1");
        assert_eq!(open_one(&mut opener_b, &d), Err(OpenError::UnknownKey));
        let id_b = lock.write().unwrap().add(KEY_B).unwrap();
        lock.write().unwrap().set_primary(id_b).unwrap();
        sealer.seal(b"2", ME, &mut d).unwrap();
        assert_eq!(&d[5..9], &id_b.to_be_bytes());
        assert_eq!(open_one(&mut opener, &d).unwrap(), b"2");
        assert_eq!(open_one(&mut opener_b, &d).unwrap(), b"2");
        // Remove A: an A-sealed datagram (from another sender) no longer opens, even though
        // its derived key may have been cached.
        let mut sealer_a = Sealer::new(ring_of(&[KEY_A]), [2; 16]);
        sealer_a.seal(b"3", ME, &mut d).unwrap();
        assert_eq!(open_one(&mut opener, &d).unwrap(), b"3");
        lock.write().unwrap().remove(key_id(&KEY_A)).unwrap();
        sealer_a.seal(b"4", ME, &mut d).unwrap();
        assert_eq!(open_one(&mut opener, &d), Err(OpenError::UnknownKey));
    }

    #[test]
    fn keyring_rules() {
        let mut ring = Keyring::new(KEY_A).unwrap();
        let a = key_id(&KEY_A);
        assert_eq!(ring.primary_id(), a);
        assert_eq!(ring.remove(a), Err(KeyError::IsPrimary(a)));
        assert_eq!(ring.set_primary(0x1234), Err(KeyError::Unknown(0x1234)));
        let g = ring.generation();
        let b = ring.add(KEY_B).unwrap();
        assert_ne!(ring.generation(), g);
        assert_eq!(ring.add(KEY_B), Ok(b));
        assert_eq!(ring.key_ids(), vec![a, b]);
        ring.set_primary(b).unwrap();
        ring.remove(a).unwrap();
        assert_eq!(ring.remove(a), Err(KeyError::Unknown(a)));
        assert_eq!(ring.key_ids(), vec![b]);
        assert!(!format!("{ring:?}").contains("34, 34"));
    }

    #[test]
    fn plaintext_and_sealed_mismatch() {
        let mut insecure = Sealer::new(Sealing::Insecure, SALT);
        let mut sealed = Sealer::new(ring_of(&[KEY_A]), SALT);
        let (mut p, mut s) = (Vec::new(), Vec::new());
        insecure.seal(b"p", ME, &mut p).unwrap();
        sealed.seal(b"s", ME, &mut s).unwrap();
        assert_eq!(&p[5..9], &[0, 0, 0, 0]);
        assert_eq!(
            open_one(&mut Opener::new(ring_of(&[KEY_A]), ME), &p),
            Err(OpenError::Plaintext)
        );
        assert_eq!(
            open_one(&mut Opener::new(Sealing::Insecure, ME), &s),
            Err(OpenError::Plaintext)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let mut opener = Opener::new(ring_of(&[KEY_A]), ME);
        for g in [
            &b""[..],
            b"WFT",
            b"junk junk junk junk junk junk junk junk",
            &[0u8; 100],
        ] {
            assert_eq!(open_one(&mut opener, g), Err(OpenError::Malformed));
        }
        let mut sealer = Sealer::new(Sealing::Insecure, SALT);
        let mut d = Vec::new();
        sealer.seal(b"p", ME, &mut d).unwrap();
        let mut bad_version = d.clone();
        bad_version[3] = 1; // version 1 (no recipient field) is not read: see proto/README.md

        let mut bad_frag = d.clone();
        bad_frag[4] = 0x22; // index 2 of 2
        let mut zero_count = d.clone();
        zero_count[4] = 0x00;
        let mut insecure = Opener::new(Sealing::Insecure, ME);
        for t in [bad_version, bad_frag, zero_count] {
            assert_eq!(open_one(&mut insecure, &t), Err(OpenError::Malformed));
        }
        // Sealed header with a payload shorter than a tag.
        let mut s = Vec::new();
        Sealer::new(ring_of(&[KEY_A]), SALT)
            .seal(b"", ME, &mut s)
            .unwrap();
        assert_eq!(
            open_one(&mut opener, &s[..HEADER_LEN + 3]),
            Err(OpenError::Malformed)
        );
    }

    #[test]
    fn fragments_reassemble_in_any_order() {
        for sealing in [ring_of(&[KEY_A]), Sealing::Insecure] {
            let mut sealer = Sealer::new(sealing.clone(), SALT);
            let mut opener = Opener::new(sealing.clone(), ME);
            let msg: Vec<u8> = (0..MAX_DATAGRAM as u32).map(|i| i as u8).collect();
            let mut one = Vec::new();
            assert_eq!(
                sealer.seal(&msg, ME, &mut one),
                Err(SealError::TooLarge(msg.len()))
            );
            let mut frags = Vec::new();
            sealer
                .seal_fragments(&msg, ME, MAX_DATAGRAM, &mut frags)
                .unwrap();
            assert_eq!(frags.len(), 2);
            assert!(frags.iter().all(|f| f.len() <= MAX_DATAGRAM));
            let mut out = Vec::new();
            assert_eq!(opener.open(&frags[1], &mut out), Ok(Opened::Fragment));
            assert_eq!(
                delivered(opener.open(&frags[0], &mut out)),
                Some(msg.clone())
            );
            // A small message is a single datagram.
            sealer
                .seal_fragments(b"small", ME, 1400, &mut frags)
                .unwrap();
            assert_eq!(frags.len(), 1);
            assert_eq!(
                delivered(opener.open(&frags[0], &mut out)),
                Some(b"small".to_vec())
            );
            // Many fragments, reversed.
            let msg = vec![9u8; 10_000];
            sealer.seal_fragments(&msg, ME, 1000, &mut frags).unwrap();
            assert_eq!(frags.len(), 10_000usize.div_ceil(1000 - sealer.overhead()));
            for f in frags.iter().skip(1).rev() {
                assert_eq!(opener.open(f, &mut out), Ok(Opened::Fragment));
            }
            assert_eq!(
                delivered(opener.open(&frags[0], &mut out)),
                Some(msg.clone())
            );
            // Too many fragments needed.
            assert!(matches!(
                sealer.seal_fragments(&msg, ME, 200, &mut frags),
                Err(SealError::TooLarge(_))
            ));
            assert!(matches!(
                sealer.seal_fragments(&msg, ME, 10, &mut frags),
                Err(SealError::DatagramLimit(10))
            ));
        }
    }

    #[test]
    fn duplicate_fragment_in_insecure_mode_is_malformed() {
        let mut sealer = Sealer::new(Sealing::Insecure, SALT);
        let mut opener = Opener::new(Sealing::Insecure, ME);
        let mut frags = Vec::new();
        sealer
            .seal_fragments(&[1u8; 3000], ME, 1100, &mut frags)
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(opener.open(&frags[0], &mut out), Ok(Opened::Fragment));
        assert_eq!(opener.open(&frags[0], &mut out), Err(OpenError::Malformed));
    }

    #[test]
    fn key_helpers() {
        let rng = SystemRandom::new();
        let k = generate_key(&rng).unwrap();
        assert_ne!(key_id(&k), 0);
        assert_ne!(generate_key(&rng).unwrap(), k);
        let s = encode_key(&k);
        assert_eq!(s.len(), 45);
        assert_eq!(decode_key(&s), Ok(k));
        assert_eq!(decode_key(&format!("  \n{}\n\n", s.trim())), Ok(k));
        assert_eq!(decode_key(s.trim().trim_end_matches('=')), Ok(k));
        assert_eq!(decode_key("AAAA"), Err(KeyError::Length(3)));
        assert_eq!(decode_key("not a key!"), Err(KeyError::Base64));
        assert!(decode_key(&"A".repeat(MAX_KEY_FILE_LEN + 1)).is_err());
        let salt = generate_salt(&rng).unwrap();
        assert_ne!(salt, generate_salt(&rng).unwrap());
    }

    proptest! {
        #[test]
        fn prop_open_arbitrary_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut out = Vec::new();
            let _ = Opener::new(ring_of(&[KEY_A]), ME).open(&bytes, &mut out);
            let _ = Opener::new(Sealing::Insecure, ME).open(&bytes, &mut out);
        }

        #[test]
        fn prop_open_with_valid_header_never_panics(
            frag in any::<u8>(), key in prop_oneof![Just(0u32), Just(key_id(&KEY_A)), any::<u32>()],
            counter in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut d = Vec::new();
            d.extend_from_slice(b"WFT");
            d.push(VERSION);
            d.push(frag);
            d.extend_from_slice(&key.to_be_bytes());
            d.extend_from_slice(&SALT);
            d.extend_from_slice(&counter.to_be_bytes());
            d.extend_from_slice(&body);
            let mut out = Vec::new();
            let mut sealed = Opener::new(ring_of(&[KEY_A]), ME);
            let mut insecure = Opener::new(Sealing::Insecure, ME);
            for _ in 0..2 {
                let _ = sealed.open(&d, &mut out);
                let _ = insecure.open(&d, &mut out);
            }
        }

        #[test]
        fn prop_round_trip(msgs in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..3000), 1..8), limit in 100usize..2000) {
            let sealing = ring_of(&[KEY_A, KEY_B]);
            let mut sealer = Sealer::new(sealing.clone(), SALT);
            let mut opener = Opener::new(sealing, ME);
            let mut frags = Vec::new();
            let mut out = Vec::new();
            for m in &msgs {
                match sealer.seal_fragments(m, ME, limit, &mut frags) {
                    Ok(()) => {
                        let (last, rest) = frags.split_last().unwrap();
                        for f in rest {
                            prop_assert_eq!(opener.open(f, &mut out), Ok(Opened::Fragment));
                        }
                        prop_assert_eq!(delivered(opener.open(last, &mut out)), Some(m.clone()));
                    }
                    Err(SealError::TooLarge(_)) => {
                        prop_assert!(m.len().div_ceil(limit - SEALED_OVERHEAD) > 15);
                    }
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
        }
    }
}
