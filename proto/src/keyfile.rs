//! The keyring file (`--cluster-key-file`) and the key-id announcement each node gossips under
//! [`KEYS_KEY`]. Pure text codecs: no filesystem here (the agent reads and writes the files).
//!
//! Keyring file: one base64 cluster key per line; the line of the primary key (the one that
//! seals) starts with the word `primary` and whitespace. Blank lines and lines starting with `#`
//! are ignored. Without a `primary` line the first key is primary, so a file written by
//! `weft keygen` (one key) is a keyring of one. Every key opens.
//!
//! ```text
//! # weft cluster keyring
//! primary 3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
//! 8J+Ss2hlbGxvAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
//! ```
//!
//! Announcement (chitchat value of [`KEYS_KEY`]): `1:<primary id>:<id>,<id>,...`, ids as 8
//! lower-case hex digits (the key id of `envelope::key_id`), installed keys in keyring order.
//! Fields after a third `:` are ignored (room for later versions). Ids only: never key material.

use crate::envelope::{self, KEY_LEN, KeyError, Keyring};

/// Chitchat key under which each node announces the ids of its installed keys.
pub const KEYS_KEY: &str = "weft/keys";
/// Most keys a keyring file (and an announcement) may hold.
pub const MAX_KEYS: usize = 16;
/// Longest keyring file read, in bytes.
pub const MAX_KEYRING_FILE_LEN: usize = 16 * 1024;
/// Longest announcement value decoded, in bytes.
pub const MAX_ANNOUNCEMENT_LEN: usize = 9 + 9 * MAX_KEYS + 64;

/// Why a keyring file or an announcement was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyFileError {
    #[error("keyring file is longer than {MAX_KEYRING_FILE_LEN} bytes")]
    TooLong,
    #[error("keyring holds no key")]
    Empty,
    #[error("keyring holds more than {MAX_KEYS} keys")]
    TooManyKeys,
    #[error("line {line}: {error}")]
    Key { line: usize, error: KeyError },
    #[error("line {line}: a second `primary` key (line {first} is primary)")]
    SeveralPrimaries { line: usize, first: usize },
    #[error("line {line}: the same key twice")]
    Duplicate { line: usize },
    #[error("malformed key announcement")]
    Announcement,
}

/// A keyring as stored: the keys in file order, and which one is primary.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyringFile {
    keys: Vec<[u8; KEY_LEN]>,
    primary: usize,
}

impl std::fmt::Debug for KeyringFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("KeyringFile")
            .field("ids", &self.ids())
            .finish()
    }
}

impl KeyringFile {
    /// A keyring of one key.
    pub fn single(key: [u8; KEY_LEN]) -> Result<Self, KeyError> {
        Self::new(vec![key], 0)
    }

    /// Keys (distinct, each with a non-zero id, at most [`MAX_KEYS`]) and the primary's index.
    pub fn new(keys: Vec<[u8; KEY_LEN]>, primary: usize) -> Result<Self, KeyError> {
        let ids: Vec<u32> = keys.iter().map(envelope::key_id).collect();
        for (i, id) in ids.iter().enumerate() {
            if *id == envelope::INSECURE_KEY_ID {
                return Err(KeyError::ZeroId);
            }
            if ids.get(..i).is_some_and(|before| before.contains(id)) {
                return Err(KeyError::IdCollision(*id));
            }
        }
        if primary >= keys.len() || keys.len() > MAX_KEYS {
            return Err(KeyError::Length(keys.len()));
        }
        Ok(KeyringFile { keys, primary })
    }

    /// Parses a keyring file's text (see the module documentation).
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        if text.len() > MAX_KEYRING_FILE_LEN {
            return Err(KeyFileError::TooLong);
        }
        let mut keys: Vec<[u8; KEY_LEN]> = Vec::new();
        let mut primary: Option<(usize, usize)> = None; // (index, line)
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (is_primary, key_text) = match trimmed.strip_prefix("primary") {
                Some(rest) if rest.starts_with(char::is_whitespace) => (true, rest.trim()),
                _ => (false, trimmed),
            };
            let key = envelope::decode_key(key_text)
                .map_err(|error| KeyFileError::Key { line, error })?;
            if envelope::key_id(&key) == envelope::INSECURE_KEY_ID {
                return Err(KeyFileError::Key {
                    line,
                    error: KeyError::ZeroId,
                });
            }
            if keys.contains(&key) {
                return Err(KeyFileError::Duplicate { line });
            }
            if keys
                .iter()
                .any(|k| envelope::key_id(k) == envelope::key_id(&key))
            {
                return Err(KeyFileError::Key {
                    line,
                    error: KeyError::IdCollision(envelope::key_id(&key)),
                });
            }
            if keys.len() >= MAX_KEYS {
                return Err(KeyFileError::TooManyKeys);
            }
            if is_primary {
                if let Some((_, first)) = primary {
                    return Err(KeyFileError::SeveralPrimaries { line, first });
                }
                primary = Some((keys.len(), line));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty);
        }
        Ok(KeyringFile {
            keys,
            primary: primary.map_or(0, |(i, _)| i),
        })
    }

    /// The file text: a comment header, the primary key's line marked `primary`.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# weft cluster keyring: one base64 key per line. The `primary` key seals gossip;\n\
             # every key opens it. Managed by `weft keys`; after editing by hand, send SIGHUP.\n",
        );
        for (i, key) in self.keys.iter().enumerate() {
            if i == self.primary {
                out.push_str("primary ");
            }
            out.push_str(&envelope::encode_key(key));
        }
        out
    }

    /// The keys in order (for writing one file per key).
    pub fn keys(&self) -> &[[u8; KEY_LEN]] {
        &self.keys
    }

    pub fn primary_id(&self) -> u32 {
        self.keys
            .get(self.primary)
            .map(envelope::key_id)
            .unwrap_or(envelope::INSECURE_KEY_ID)
    }

    /// Key ids in order.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.iter().map(envelope::key_id).collect()
    }

    /// The equivalent live keyring.
    pub fn to_keyring(&self) -> Result<Keyring, KeyError> {
        let primary = self
            .keys
            .get(self.primary)
            .ok_or(KeyError::Length(self.keys.len()))?;
        let mut ring = Keyring::new(*primary)?;
        for key in &self.keys {
            ring.add(*key)?;
        }
        Ok(ring)
    }

    /// Adds a key (not primary). Adding a present key is a no-op; returns its id.
    pub fn install(&mut self, key: [u8; KEY_LEN]) -> Result<u32, KeyError> {
        let id = envelope::key_id(&key);
        if id == envelope::INSECURE_KEY_ID {
            return Err(KeyError::ZeroId);
        }
        match self.keys.iter().find(|k| envelope::key_id(k) == id) {
            Some(existing) if *existing == key => return Ok(id),
            Some(_) => return Err(KeyError::IdCollision(id)),
            None => {}
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyError::Length(self.keys.len() + 1));
        }
        self.keys.push(key);
        Ok(id)
    }

    /// Makes an installed key primary.
    pub fn set_primary(&mut self, id: u32) -> Result<(), KeyError> {
        let i = self.position(id).ok_or(KeyError::Unknown(id))?;
        self.primary = i;
        Ok(())
    }

    /// Removes a key that is not primary.
    pub fn remove(&mut self, id: u32) -> Result<(), KeyError> {
        let i = self.position(id).ok_or(KeyError::Unknown(id))?;
        if i == self.primary {
            return Err(KeyError::IsPrimary(id));
        }
        self.keys.remove(i);
        if self.primary > i {
            self.primary -= 1;
        }
        Ok(())
    }

    fn position(&self, id: u32) -> Option<usize> {
        self.keys.iter().position(|k| envelope::key_id(k) == id)
    }
}

/// What a node gossips about its keyring: key ids only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyIds {
    pub primary: u32,
    pub installed: Vec<u32>,
}

/// Formats a key id as weft shows it everywhere: 8 lower-case hex digits.
pub fn format_id(id: u32) -> String {
    format!("{id:08x}")
}

/// Parses 8 hex digits (either case) into a key id.
pub fn parse_id(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

impl KeyIds {
    pub fn encode(&self) -> String {
        let installed: Vec<String> = self.installed.iter().map(|id| format_id(*id)).collect();
        format!("1:{}:{}", format_id(self.primary), installed.join(","))
    }

    /// Decodes an announcement; hostile input gives an error, never a panic, and at most
    /// [`MAX_KEYS`] ids are kept.
    pub fn decode(s: &str) -> Result<KeyIds, KeyFileError> {
        if s.len() > MAX_ANNOUNCEMENT_LEN {
            return Err(KeyFileError::Announcement);
        }
        let mut parts = s.split(':');
        let (Some("1"), Some(primary), Some(installed)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyFileError::Announcement);
        };
        let primary = parse_id(primary).ok_or(KeyFileError::Announcement)?;
        let mut ids = Vec::new();
        if !installed.is_empty() {
            for id in installed.split(',') {
                if ids.len() >= MAX_KEYS {
                    return Err(KeyFileError::Announcement);
                }
                ids.push(parse_id(id).ok_or(KeyFileError::Announcement)?);
            }
        }
        Ok(KeyIds {
            primary,
            installed: ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: [u8; 32] = [0x11; 32];
    const B: [u8; 32] = [0x22; 32];
    const C: [u8; 32] = [0x33; 32];

    #[test]
    fn single_key_file_is_a_keyring_of_one() {
        let f = KeyringFile::parse(&envelope::encode_key(&A)).unwrap();
        assert_eq!(f.ids(), vec![envelope::key_id(&A)]);
        assert_eq!(f.primary_id(), envelope::key_id(&A));
        let ring = f.to_keyring().unwrap();
        assert_eq!(ring.primary_id(), envelope::key_id(&A));
    }

    #[test]
    fn primary_marker_comments_and_round_trip() {
        let text = format!(
            "# comment\n\n{}primary   {}  # not a comment: refused\n",
            envelope::encode_key(&A),
            envelope::encode_key(&B).trim()
        );
        assert!(matches!(
            KeyringFile::parse(&text),
            Err(KeyFileError::Key { line: 4, .. })
        ));
        let text = format!(
            "# comment\n\n{}primary   {}\n{}",
            envelope::encode_key(&A),
            envelope::encode_key(&B).trim(),
            envelope::encode_key(&C)
        );
        let f = KeyringFile::parse(&text).unwrap();
        assert_eq!(f.primary_id(), envelope::key_id(&B));
        assert_eq!(f.keys(), &[A, B, C]);
        assert_eq!(KeyringFile::parse(&f.render()).unwrap(), f);
        let ring = f.to_keyring().unwrap();
        assert_eq!(ring.primary_id(), envelope::key_id(&B));
        assert_eq!(ring.key_ids().len(), 3);
        assert!(!format!("{f:?}").contains("17, 17"));
    }

    #[test]
    fn refusals() {
        let a = envelope::encode_key(&A);
        let b = envelope::encode_key(&B);
        assert_eq!(KeyringFile::parse(""), Err(KeyFileError::Empty));
        assert_eq!(KeyringFile::parse("# only\n"), Err(KeyFileError::Empty));
        assert_eq!(
            KeyringFile::parse(&format!("{a}{a}")),
            Err(KeyFileError::Duplicate { line: 2 })
        );
        assert_eq!(
            KeyringFile::parse(&format!("primary {a}primary {b}")),
            Err(KeyFileError::SeveralPrimaries { line: 2, first: 1 })
        );
        assert!(matches!(
            KeyringFile::parse("primary\n"),
            Err(KeyFileError::Key { line: 1, .. })
        ));
        assert!(matches!(
            KeyringFile::parse("primaryAAAA\n"),
            Err(KeyFileError::Key { line: 1, .. })
        ));
        assert_eq!(
            KeyringFile::parse(&"#".repeat(MAX_KEYRING_FILE_LEN + 1)),
            Err(KeyFileError::TooLong)
        );
        let many: String = (0..=MAX_KEYS as u8)
            .map(|i| envelope::encode_key(&[i + 1; 32]))
            .collect();
        assert_eq!(KeyringFile::parse(&many), Err(KeyFileError::TooManyKeys));
    }

    #[test]
    fn rotation_steps() {
        let mut f = KeyringFile::single(A).unwrap();
        let (a, b) = (envelope::key_id(&A), envelope::key_id(&B));
        assert_eq!(f.install(B), Ok(b));
        assert_eq!(f.install(B), Ok(b));
        assert_eq!(f.remove(a), Err(KeyError::IsPrimary(a)));
        assert_eq!(
            f.set_primary(0xdead_beef),
            Err(KeyError::Unknown(0xdead_beef))
        );
        f.set_primary(b).unwrap();
        f.remove(a).unwrap();
        assert_eq!(f.ids(), vec![b]);
        assert_eq!(f.primary_id(), b);
        assert_eq!(f.remove(a), Err(KeyError::Unknown(a)));
        // Removing a key before the primary keeps the primary.
        let mut f = KeyringFile::new(vec![A, B, C], 2).unwrap();
        f.remove(a).unwrap();
        assert_eq!(f.primary_id(), envelope::key_id(&C));
        assert!(KeyringFile::new(vec![A, A], 0).is_err());
        assert!(KeyringFile::new(vec![A], 1).is_err());
        assert!(KeyringFile::new(vec![], 0).is_err());
    }

    #[test]
    fn announcements() {
        let ids = KeyIds {
            primary: 0xa1b2_c3d4,
            installed: vec![0xa1b2_c3d4, 0x0000_0001],
        };
        let s = ids.encode();
        assert_eq!(s, "1:a1b2c3d4:a1b2c3d4,00000001");
        assert_eq!(KeyIds::decode(&s), Ok(ids.clone()));
        assert_eq!(KeyIds::decode(&format!("{s}:future")), Ok(ids));
        assert_eq!(
            KeyIds::decode("1:a1b2c3d4:"),
            Ok(KeyIds {
                primary: 0xa1b2_c3d4,
                installed: vec![]
            })
        );
        for bad in [
            "",
            "1",
            "1:",
            "2:a1b2c3d4:",
            "1:a1b2c3d:",
            "1:a1b2c3d4:x",
            "1:+1b2c3d4:",
        ] {
            assert_eq!(
                KeyIds::decode(bad),
                Err(KeyFileError::Announcement),
                "{bad}"
            );
        }
        let many = format!("1:00000001:{}", vec!["00000001"; MAX_KEYS + 1].join(","));
        assert_eq!(KeyIds::decode(&many), Err(KeyFileError::Announcement));
        assert_eq!(parse_id("A1B2C3D4"), Some(0xa1b2_c3d4));
        assert_eq!(parse_id("a1b2c3d4e"), None);
    }

    proptest! {
        #[test]
        fn prop_parse_arbitrary_never_panics(s in ".{0,400}") {
            let _ = KeyringFile::parse(&s);
            let _ = KeyIds::decode(&s);
        }

        #[test]
        fn prop_announcement_round_trip(primary in any::<u32>(),
                                        installed in proptest::collection::vec(any::<u32>(), 0..=MAX_KEYS)) {
            let ids = KeyIds { primary, installed };
            prop_assert_eq!(KeyIds::decode(&ids.encode()), Ok(ids));
        }

        #[test]
        fn prop_mutated_file_never_panics(pos in any::<usize>(), val in any::<u8>()) {
            let f = KeyringFile::new(vec![A, B, C], 1).unwrap();
            let mut bytes = f.render().into_bytes();
            let i = pos % bytes.len();
            bytes[i] = val;
            if let Ok(text) = String::from_utf8(bytes)
                && let Ok(parsed) = KeyringFile::parse(&text)
            {
                prop_assert!(parsed.keys().len() <= 3);
                prop_assert!(parsed.to_keyring().is_ok());
            }
        }
    }
}
