//! The cluster keyring on disk and in memory: `--cluster-key-file` names a keyring file (one key
//! per line, `primary` marks the sealing key; a `weft keygen` file is a keyring of one) or a
//! directory (one `*.key` file per key, as `weft keygen` writes them, and a file `primary` holding
//! the primary key's id, needed when there is more than one key). `weft keys install|use|remove`
//! and SIGHUP go through [`KeyStore`]: every change is written to disk first, then applied to the
//! live keyring, so a restart keeps it and a failed write changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use weft_proto::Sealing;
use weft_proto::envelope::{self, KEY_LEN, Keyring};
use weft_proto::keyfile::{KeyIds, KeyringFile, MAX_KEYRING_FILE_LEN, MAX_KEYS, format_id};

/// Name of the file in a keyring directory that holds the primary key's id.
pub const PRIMARY_FILE: &str = "primary";
/// Extension of key files in a keyring directory.
pub const KEY_EXT: &str = "key";

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("{path}: {why}")]
    Read { path: PathBuf, why: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Key(#[from] envelope::KeyError),
    /// A key file other users can read or write (refused, as ssh refuses such private keys).
    #[error(
        "{path} is accessible by group or others (mode {mode:04o}): a cluster key must be \
         private; run `chmod 600 {path}` (or pass --allow-open-key-perms)"
    )]
    OpenPermissions { path: PathBuf, mode: u32 },
}

/// The keyring of a running agent and the file or directory it persists to.
pub struct KeyStore {
    path: PathBuf,
    ring: Arc<RwLock<Keyring>>,
    /// The source of truth for key material; the live keyring is rebuilt from it.
    file: Mutex<KeyringFile>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .field("ids", &self.ids())
            .finish()
    }
}

fn read_err(path: &Path, why: impl std::fmt::Display) -> KeyStoreError {
    KeyStoreError::Read {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn read_bounded(path: &Path) -> Result<String, KeyStoreError> {
    let meta = std::fs::metadata(path).map_err(|e| read_err(path, e))?;
    if meta.len() > MAX_KEYRING_FILE_LEN as u64 {
        return Err(read_err(path, "file too large for a keyring"));
    }
    std::fs::read_to_string(path).map_err(|e| read_err(path, e))
}

/// Reads a keyring file or directory.
pub fn load(path: &Path) -> Result<KeyringFile, KeyStoreError> {
    let meta = std::fs::metadata(path).map_err(|e| read_err(path, e))?;
    if meta.is_dir() {
        load_dir(path)
    } else {
        KeyringFile::parse(&read_bounded(path)?).map_err(|e| read_err(path, e))
    }
}

/// Refuses a keyring file, or a keyring directory's `*.key` files, that group or others may
/// access (any of the mode bits 0o077).
pub fn check_private(path: &Path) -> Result<(), KeyStoreError> {
    let meta = std::fs::metadata(path).map_err(|e| read_err(path, e))?;
    let files = if meta.is_dir() {
        key_files(path)?
    } else {
        vec![path.to_path_buf()]
    };
    for file in files {
        let mode = std::fs::metadata(&file)
            .map_err(|e| read_err(&file, e))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyStoreError::OpenPermissions { path: file, mode });
        }
    }
    Ok(())
}

fn key_files(dir: &Path) -> Result<Vec<PathBuf>, KeyStoreError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
        let entry = entry.map_err(|e| read_err(dir, e))?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == KEY_EXT) && p.is_file() {
            files.push(p);
            if files.len() > MAX_KEYS {
                return Err(read_err(dir, format!("more than {MAX_KEYS} *.key files")));
            }
        }
    }
    files.sort();
    Ok(files)
}

fn load_dir(dir: &Path) -> Result<KeyringFile, KeyStoreError> {
    let mut keys: Vec<[u8; KEY_LEN]> = Vec::new();
    for p in key_files(dir)? {
        let key = envelope::decode_key(&read_bounded(&p)?).map_err(|e| read_err(&p, e))?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(read_err(dir, "no *.key file in the keyring directory"));
    }
    let primary_path = dir.join(PRIMARY_FILE);
    let primary = match std::fs::metadata(&primary_path) {
        Ok(_) => {
            let text = read_bounded(&primary_path)?;
            let id = weft_proto::keyfile::parse_id(text.trim())
                .ok_or_else(|| read_err(&primary_path, "expected a key id (8 hex digits)"))?;
            keys.iter()
                .position(|k| envelope::key_id(k) == id)
                .ok_or_else(|| read_err(&primary_path, format!("no key with id {id:08x}")))?
        }
        Err(_) if keys.len() == 1 => 0,
        Err(_) => {
            return Err(read_err(
                dir,
                format!(
                    "{} keys and no `{PRIMARY_FILE}` file naming the primary key id",
                    keys.len()
                ),
            ));
        }
    };
    KeyringFile::new(keys, primary).map_err(|e| read_err(dir, e))
}

/// Writes `text` to `path` atomically, mode 0600 ([`crate::files::write_atomic_mode`]).
fn write_atomic(path: &Path, text: &str) -> Result<(), KeyStoreError> {
    crate::files::write_atomic_mode(path, text.as_bytes(), 0o600)
        .map_err(|e| write_err(path)(e.into_io()))
}

/// Writes a keyring to a file or a directory (whichever `path` is).
pub fn save(path: &Path, file: &KeyringFile) -> Result<(), KeyStoreError> {
    if !path.is_dir() {
        return write_atomic(path, &file.render());
    }
    // Directory: one file per key; keys no longer in the ring are deleted after the primary is
    // written, so a crash in between leaves extra keys (harmless), never a missing primary.
    let existing = key_files(path)?;
    let mut present = Vec::new();
    for p in &existing {
        if let Ok(text) = read_bounded(p)
            && let Ok(key) = envelope::decode_key(&text)
        {
            present.push((p.clone(), key));
        }
    }
    for key in file.keys() {
        if !present.iter().any(|(_, k)| k == key) {
            let p = path.join(format!("{}.{KEY_EXT}", format_id(envelope::key_id(key))));
            write_atomic(&p, &envelope::encode_key(key))?;
        }
    }
    write_atomic(
        &path.join(PRIMARY_FILE),
        &format!("{}\n", format_id(file.primary_id())),
    )?;
    for (p, key) in &present {
        if !file.keys().contains(key) {
            std::fs::remove_file(p).map_err(write_err(p))?;
        }
    }
    Ok(())
}

impl KeyStore {
    /// Loads the keyring at `path`.
    pub fn open(path: &Path) -> Result<KeyStore, KeyStoreError> {
        let file = load(path)?;
        let ring = file.to_keyring()?;
        Ok(KeyStore {
            path: path.to_path_buf(),
            ring: Arc::new(RwLock::new(ring)),
            file: Mutex::new(file),
        })
    }

    /// The sealing that shares this store's live keyring.
    pub fn sealing(&self) -> Sealing {
        Sealing::Keyring(Arc::clone(&self.ring))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self) -> MutexGuard<'_, KeyringFile> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ids this node announces.
    pub fn ids(&self) -> KeyIds {
        let f = self.file();
        KeyIds {
            primary: f.primary_id(),
            installed: f.ids(),
        }
    }

    /// Applies `change` to a copy of the keyring, writes it to disk, then makes it live.
    fn change(
        &self,
        change: impl FnOnce(&mut KeyringFile) -> Result<(), envelope::KeyError>,
    ) -> Result<(), KeyStoreError> {
        let mut current = self.file();
        let mut next = current.clone();
        change(&mut next)?;
        if next == *current {
            return Ok(());
        }
        let ring = next.to_keyring()?;
        save(&self.path, &next)?;
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
        *current = next;
        Ok(())
    }

    /// `weft keys install`: adds a key that opens (does not seal); returns its id.
    pub fn install(&self, key: [u8; KEY_LEN]) -> Result<u32, KeyStoreError> {
        self.change(|f| f.install(key).map(|_| ()))?;
        Ok(envelope::key_id(&key))
    }

    /// `weft keys use`: makes an installed key the one that seals.
    pub fn use_key(&self, id: u32) -> Result<(), KeyStoreError> {
        self.change(|f| f.set_primary(id))
    }

    /// `weft keys remove`: removes a key that is not primary.
    pub fn remove(&self, id: u32) -> Result<(), KeyStoreError> {
        self.change(|f| f.remove(id))
    }

    /// SIGHUP: re-reads the file or directory. On error the live keyring is unchanged.
    /// Returns whether anything changed.
    pub fn reload(&self) -> Result<bool, KeyStoreError> {
        let next = load(&self.path)?;
        let ring = next.to_keyring()?;
        let mut current = self.file();
        if next == *current {
            return Ok(false);
        }
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
        *current = next;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 32] = [0x11; 32];
    const B: [u8; 32] = [0x22; 32];

    fn live_ids(store: &KeyStore) -> (u32, Vec<u32>) {
        let ring = store.ring.read().unwrap();
        (ring.primary_id(), ring.key_ids())
    }

    #[test]
    fn file_store_persists_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        std::fs::write(&path, envelope::encode_key(&A)).unwrap();
        let store = KeyStore::open(&path).unwrap();
        let (a, b) = (envelope::key_id(&A), envelope::key_id(&B));
        assert_eq!(live_ids(&store), (a, vec![a]));
        assert_eq!(store.install(B).unwrap(), b);
        assert_eq!(live_ids(&store), (a, vec![a, b]));
        assert_eq!(load(&path).unwrap().ids(), vec![a, b]);
        assert!(store.remove(a).is_err(), "primary cannot be removed");
        store.use_key(b).unwrap();
        store.remove(a).unwrap();
        assert_eq!(live_ids(&store), (b, vec![b]));
        let reopened = KeyStore::open(&path).unwrap();
        assert_eq!(reopened.ids().primary, b);
        assert_eq!(reopened.ids().installed, vec![b]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn reload_applies_edits_and_keeps_the_ring_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, envelope::encode_key(&A)).unwrap();
        let store = KeyStore::open(&path).unwrap();
        let (a, b) = (envelope::key_id(&A), envelope::key_id(&B));
        assert!(!store.reload().unwrap());
        std::fs::write(
            &path,
            format!(
                "{}primary {}",
                envelope::encode_key(&A),
                envelope::encode_key(&B)
            ),
        )
        .unwrap();
        assert!(store.reload().unwrap());
        assert_eq!(live_ids(&store), (b, vec![b, a]));
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(live_ids(&store), (b, vec![b, a]));
    }

    #[test]
    fn open_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster.key");
        std::fs::write(&file, envelope::encode_key(&A)).unwrap();
        for (mode, open) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let result = check_private(&file);
            assert_eq!(result.is_err(), open, "mode {mode:o}: {result:?}");
        }
        // In a keyring directory every *.key file counts; the directory's own mode does not.
        let ring = dir.path().join("ring");
        std::fs::create_dir(&ring).unwrap();
        std::fs::set_permissions(&ring, std::fs::Permissions::from_mode(0o755)).unwrap();
        let key = ring.join("a.key");
        std::fs::write(&key, envelope::encode_key(&A)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_private(&ring).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_private(&ring).unwrap_err().to_string();
        assert!(
            e.contains("a.key is accessible by group or others (mode 0644)"),
            "{e}"
        );
    }

    #[test]
    fn directory_store() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (envelope::key_id(&A), envelope::key_id(&B));
        std::fs::write(dir.path().join("first.key"), envelope::encode_key(&A)).unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert_eq!(live_ids(&store), (a, vec![a]));
        store.install(B).unwrap();
        assert!(dir.path().join(format!("{b:08x}.key")).exists());
        store.use_key(b).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("primary")).unwrap(),
            format!("{b:08x}\n")
        );
        store.remove(a).unwrap();
        assert!(!dir.path().join("first.key").exists());
        let reopened = load(dir.path()).unwrap();
        assert_eq!((reopened.primary_id(), reopened.ids()), (b, vec![b]));
        // Two keys and no primary file: refused, naming the problem.
        std::fs::remove_file(dir.path().join("primary")).unwrap();
        std::fs::write(dir.path().join("other.key"), envelope::encode_key(&A)).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no `primary` file"), "{e}");
        std::fs::write(dir.path().join("primary"), "nothex\n").unwrap();
        assert!(load(dir.path()).is_err());
        std::fs::write(dir.path().join("primary"), format!("{a:08x}")).unwrap();
        assert_eq!(load(dir.path()).unwrap().primary_id(), a);
    }
}
