//! The agent's files: flannel-format `subnet.env`, the persisted state, and the one atomic write
//! every file weft writes goes through ([`write_atomic`]), plus [`KeptFile`], which keeps a file
//! in a wanted state and remembers why it is not (for retries, logs and `/readyz`).
//!
//! An atomic write replaces only a regular file (or creates one): a symlink, directory, FIFO,
//! socket or device at the target is refused and left alone. The new content goes to a temporary
//! file in the same directory, created exclusively (`O_CREAT|O_EXCL`, never following a symlink
//! planted at its name) under a name nobody can predict, then fsync'd, renamed over the target,
//! and the directory fsync'd. On any error the temporary file is removed; temporary files of the
//! same target left by a crash (older than [`STALE_TMP_AGE`]) are removed by the next write.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::{Ipv4Net, Ipv6Net};
use weft_proto::PersistedState;

/// The marker between a target's name and the random part of its temporary files' names:
/// `.<name>.weft-tmp.<pid>.<random>`.
const TMP_MARK: &[u8] = b".weft-tmp.";
/// A temporary file of ours older than this is a crash's leftover, removed by the next write.
pub const STALE_TMP_AGE: Duration = Duration::from_secs(300);
/// Names tried for the temporary file before giving up (each taken one is skipped, not reused).
const TMP_ATTEMPTS: usize = 16;
/// At most this many bytes of the target's name go into a temporary file's name (NAME_MAX is 255).
const TMP_NAME_KEEP: usize = 200;

/// Why a file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A system call failed.
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        /// The file or directory it was about.
        path: PathBuf,
        /// What was being done ("write", "rename", ...).
        op: &'static str,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// The target exists and is not a regular file: weft does not replace it.
    #[error("{}: is {kind}, not a regular file; weft replaces only regular files", path.display())]
    NotRegular {
        /// The target.
        path: PathBuf,
        /// What it is ("a symbolic link", "a character device", ...).
        kind: &'static str,
    },
    /// The path names no file (`/`, `..`).
    #[error("{}: not a file name", path.display())]
    NoFileName {
        /// The path.
        path: PathBuf,
    },
    /// The file is there but does not parse.
    #[error("{}: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

impl FileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Io { path, .. }
            | FileError::NotRegular { path, .. }
            | FileError::NoFileName { path }
            | FileError::Corrupt { path, .. } => path,
        }
    }

    /// The error as an `io::Error` of the same kind, for callers whose errors carry one (the
    /// message leaves the path out: such callers name it themselves).
    pub fn into_io(self) -> io::Error {
        match self {
            FileError::Io { op, source, .. } => {
                io::Error::new(source.kind(), format!("cannot {op}: {source}"))
            }
            FileError::NotRegular { kind, .. } => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("is {kind}, not a regular file; weft replaces only regular files"),
            ),
            FileError::NoFileName { .. } => {
                io::Error::new(io::ErrorKind::InvalidInput, "not a file name")
            }
            FileError::Corrupt { why, .. } => io::Error::new(io::ErrorKind::InvalidData, why),
        }
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Writes `contents` to `path` atomically (see the module documentation), creating the parent
/// directory. A new file gets mode 0644 (less the umask); a replaced one keeps its permissions.
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), FileError> {
    write_with(path, contents.as_bytes(), None, &mut random_suffixes())
}

/// [`write_atomic`] giving the file exactly `mode` (e.g. 0o600 for a key), whatever it had.
pub fn write_atomic_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    write_with(path, contents, Some(mode), &mut random_suffixes())
}

/// Creates a new file at `path` with `contents` and exactly `mode`, complete or not at all, and
/// never over anything already there (a file, a symlink, anything: an `AlreadyExists` error).
/// The temporary file is hard-linked to `path` (`link` fails rather than replace) and removed.
pub fn create_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    write_new(path, contents, Some(mode), false, &mut random_suffixes())
}

fn write_with(
    path: &Path,
    contents: &[u8],
    mode: Option<u32>,
    suffixes: &mut dyn Iterator<Item = OsString>,
) -> Result<(), FileError> {
    write_new(path, contents, mode, true, suffixes)
}

fn write_new(
    path: &Path,
    contents: &[u8],
    mode: Option<u32>,
    replace: bool,
    suffixes: &mut dyn Iterator<Item = OsString>,
) -> Result<(), FileError> {
    let name = path.file_name().ok_or_else(|| FileError::NoFileName {
        path: path.to_path_buf(),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io_err(dir, "create the directory"))?;
    // Refuse early (nothing is created), and again just before the rename.
    let existing = match regular_or_absent(path) {
        Ok(None) => None,
        Ok(Some(_)) | Err(FileError::NotRegular { .. }) if !replace => {
            return Err(io_err(path, "create")(io::Error::from(
                io::ErrorKind::AlreadyExists,
            )));
        }
        other => other?,
    };
    let prefix = tmp_prefix(name);
    remove_stale_temps(dir, &prefix);
    let mode = mode.or(existing);
    let (tmp, file) = create_exclusive(path, dir, &prefix, mode, suffixes)?;
    let result = fill_and_rename(file, &tmp, path, contents, mode, replace);
    if result.is_err() || !replace {
        // After a link the temporary name goes; the file stays under `path`.
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

fn fill_and_rename(
    mut file: File,
    tmp: &Path,
    path: &Path,
    contents: &[u8],
    mode: Option<u32>,
    replace: bool,
) -> Result<(), FileError> {
    // Errors name the target, not the temporary file (whose name changes at every attempt).
    file.write_all(contents)
        .map_err(io_err(path, "write its temporary file"))?;
    if let Some(mode) = mode {
        // Exactly this mode, whatever the umask.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_err(path, "set the mode of its temporary file"))?;
    }
    file.sync_all()
        .map_err(io_err(path, "fsync its temporary file"))?;
    drop(file);
    if !replace {
        return std::fs::hard_link(tmp, path).map_err(io_err(path, "create"));
    }
    regular_or_absent(path)?;
    std::fs::rename(tmp, path).map_err(io_err(path, "rename a new file over"))
}

/// `Ok(None)` when nothing is at `path`, `Ok(Some(permission bits))` for a regular file, an
/// error for anything else (never following a symlink).
fn regular_or_absent(path: &Path) -> Result<Option<u32>, FileError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            let t = meta.file_type();
            if t.is_file() {
                return Ok(Some(meta.permissions().mode() & 0o777));
            }
            let kind = if t.is_symlink() {
                "a symbolic link"
            } else if t.is_dir() {
                "a directory"
            } else if t.is_char_device() {
                "a character device"
            } else if t.is_block_device() {
                "a block device"
            } else if t.is_fifo() {
                "a FIFO"
            } else if t.is_socket() {
                "a socket"
            } else {
                "something else"
            };
            Err(FileError::NotRegular {
                path: path.to_path_buf(),
                kind,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, "inspect")(e)),
    }
}

/// `.<name>.weft-tmp.`: what every temporary file of this target starts with.
fn tmp_prefix(name: &OsStr) -> Vec<u8> {
    let bytes = name.as_bytes();
    let mut prefix = Vec::with_capacity(TMP_NAME_KEEP + TMP_MARK.len() + 1);
    prefix.push(b'.');
    prefix.extend_from_slice(&bytes[..bytes.len().min(TMP_NAME_KEEP)]);
    prefix.extend_from_slice(TMP_MARK);
    prefix
}

/// `<pid>.<16 random hex digits>`, a fresh one each time.
fn random_suffixes() -> impl Iterator<Item = OsString> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    std::iter::repeat_with(move || {
        let mut r = [0u8; 8];
        let random = match rng.fill(&mut r) {
            Ok(()) => u64::from_le_bytes(r),
            // No randomness: still unique enough, and an exclusive create skips a taken name.
            Err(_) => SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        };
        OsString::from(format!("{}.{random:016x}", std::process::id()))
    })
}

/// Creates the temporary file for `path` with `O_CREAT|O_EXCL|O_NOFOLLOW`: a name that is taken
/// (a file, or a symlink planted there) is skipped, never opened.
fn create_exclusive(
    path: &Path,
    dir: &Path,
    prefix: &[u8],
    mode: Option<u32>,
    suffixes: &mut dyn Iterator<Item = OsString>,
) -> Result<(PathBuf, File), FileError> {
    let op = "create its temporary file";
    for suffix in suffixes.take(TMP_ATTEMPTS) {
        let mut name = prefix.to_vec();
        name.extend_from_slice(suffix.as_bytes());
        let tmp = dir.join(OsString::from_vec(name));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode.unwrap_or(0o644))
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(path, op)(e)),
        }
    }
    Err(io_err(path, op)(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{TMP_ATTEMPTS} names tried, every one taken"),
    )))
}

/// Removes this target's temporary files older than [`STALE_TMP_AGE`] (a crash's leftovers);
/// newer ones may be another writer's, in flight. Only names with our prefix are touched, and a
/// symlink is removed itself, never followed. Best effort.
fn remove_stale_temps(dir: &Path, prefix: &[u8]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        if !entry.file_name().as_bytes().starts_with(prefix) {
            continue;
        }
        // DirEntry::metadata does not follow symlinks.
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= STALE_TMP_AGE);
        if old && !meta.is_dir() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// fsync of the directory, so that the rename survives a crash. A file system that cannot
/// fsync a directory (EINVAL) is not an error.
fn sync_dir(dir: &Path) -> Result<(), FileError> {
    let d = File::open(dir).map_err(io_err(dir, "open the directory"))?;
    match d.sync_all() {
        Err(e) if e.raw_os_error() != Some(libc::EINVAL) => {
            Err(io_err(dir, "fsync the directory")(e))
        }
        _ => Ok(()),
    }
}

/// A file the agent keeps holding what it wants (subnet.env, the state file, the udp peers
/// file): written when it differs, retried on the next call after a failure, which it
/// remembers (so that it is logged once and shown in `/readyz` and `weft status`).
#[derive(Debug)]
pub struct KeptFile {
    path: PathBuf,
    /// The content last written or found, when it is known to be on disk.
    held: Option<String>,
    /// Why the last attempt failed, while it does.
    failure: Option<String>,
    /// Attempts that failed since the last success.
    failed_attempts: u64,
}

/// What [`KeptFile::keep`] did.
#[derive(Debug)]
pub enum Kept {
    /// The file already held the content.
    Unchanged,
    /// The file was written; `after_failures` attempts had failed before.
    Written {
        /// Failed attempts before this one.
        after_failures: u64,
    },
    /// The write failed; `new` when this error differs from the previous attempt's (log it).
    Failed {
        /// The error.
        error: FileError,
        /// Whether this error is news (the first, or another than the last one).
        new: bool,
    },
}

impl KeptFile {
    /// A file at `path`, state unknown.
    pub fn new(path: PathBuf) -> KeptFile {
        KeptFile {
            path,
            held: None,
            failure: None,
            failed_attempts: 0,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the file hold `want`: reads it (what is on disk counts, not what was written last:
    /// someone may have changed or removed it) and writes it atomically when it differs.
    pub fn keep(&mut self, want: &str) -> Kept {
        let limit = want.len() as u64 + 1;
        if read_regular(&self.path, limit).is_ok_and(|on_disk| on_disk == want.as_bytes()) {
            self.held = Some(want.to_string());
            return match self.failure.take() {
                // Fixed by someone else (or an earlier rename that reported an error).
                Some(_) => Kept::Written {
                    after_failures: std::mem::take(&mut self.failed_attempts),
                },
                None => Kept::Unchanged,
            };
        }
        self.held = None;
        match write_atomic(&self.path, want) {
            Ok(()) => {
                self.held = Some(want.to_string());
                self.failure = None;
                Kept::Written {
                    after_failures: std::mem::take(&mut self.failed_attempts),
                }
            }
            Err(error) => {
                let text = error.to_string();
                let new = self.failure.as_deref() != Some(text.as_str());
                self.failure = Some(text);
                self.failed_attempts += 1;
                Kept::Failed { error, new }
            }
        }
    }

    /// Whether the file is known to hold `want`.
    pub fn holds(&self, want: &str) -> bool {
        self.held.as_deref() == Some(want)
    }

    /// Why the last attempt failed, while the file is not written.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }
}

/// Largest state file read, in bytes (it is a few hundred).
const MAX_STATE_FILE: u64 = 1 << 20;

/// Reads at most `limit` bytes of the regular file at `path`, never following a symlink and
/// never blocking on a FIFO (`O_NOFOLLOW|O_NONBLOCK`); anything but a regular file is an error.
fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    f.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// flannel's subnet.env for an IPv4 overlay: what the flannel CNI plugin and docker's `--bip`
/// read.
pub fn subnet_env(network: Ipv4Net, subnet: Ipv4Net, mtu: u32, ip_masq: bool) -> String {
    subnet_env_families(Some((network, subnet)), None, mtu, ip_masq)
}

/// flannel's subnet.env for any families, keys in flannel's order: `FLANNEL_NETWORK` and
/// `FLANNEL_SUBNET` (IPv4: network, and the subnet's first host with its length), then
/// `FLANNEL_IPV6_NETWORK` and `FLANNEL_IPV6_SUBNET` (the same for IPv6), `FLANNEL_MTU`,
/// `FLANNEL_IPMASQ`. The flannel CNI plugin hands out an address of each family it finds.
pub fn subnet_env_families(
    ipv4: Option<(Ipv4Net, Ipv4Net)>,
    ipv6: Option<(Ipv6Net, Ipv6Net)>,
    mtu: u32,
    ip_masq: bool,
) -> String {
    let mut text = String::new();
    if let Some((network, subnet)) = ipv4 {
        let first = first_host(subnet);
        text.push_str(&format!(
            "FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={first}/{}\n",
            subnet.prefix_len()
        ));
    }
    if let Some((network, subnet)) = ipv6 {
        let first = first_host_v6(subnet);
        text.push_str(&format!(
            "FLANNEL_IPV6_NETWORK={network}\nFLANNEL_IPV6_SUBNET={first}/{}\n",
            subnet.prefix_len()
        ));
    }
    text.push_str(&format!("FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ip_masq}\n"));
    text
}

/// The IPv6 subnet's first host address (the bridge's), e.g. fd00:10:244:3::1 for
/// fd00:10:244:3::/64.
pub fn first_host_v6(subnet: Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(subnet.network()).saturating_add(1))
}

/// The subnet's first host address (the bridge's), e.g. 10.244.3.1 for 10.244.3.0/24.
pub fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

/// `<state-dir>/state.json`.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("state.json")
}

/// Reads the persisted state; a missing file is `Ok(None)`, a corrupt one an error to log.
pub fn load_state(state_dir: &Path) -> Result<Option<PersistedState>, FileError> {
    let path = state_path(state_dir);
    let text = read_regular(&path, MAX_STATE_FILE).and_then(|bytes| {
        String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    });
    match text {
        Ok(s) => PersistedState::from_json(&s)
            .map(Some)
            .map_err(|e| FileError::Corrupt {
                path: path.clone(),
                why: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path, "read")(e)),
    }
}

/// Writes the persisted state to `<state-dir>/state.json` atomically.
pub fn save_state(state_dir: &Path, state: &PersistedState) -> Result<(), FileError> {
    write_atomic(&state_path(state_dir), &state.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn subnet_env_is_flannel_format() {
        let env = subnet_env(
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
            1450,
            false,
        );
        assert_eq!(
            env,
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
    }

    #[test]
    fn dual_stack_and_ipv6_only_subnet_env_use_flannels_keys_and_order() {
        let v4 = Some((
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
        ));
        let v6 = Some((
            "fd00:10:244::/56".parse().unwrap(),
            "fd00:10:244:3::/64".parse().unwrap(),
        ));
        assert_eq!(
            subnet_env_families(v4, v6, 1450, true),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n\
             FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\n\
             FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
        assert_eq!(
            subnet_env_families(None, v6, 1430, false),
            "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\n\
             FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
        );
    }

    /// The directory's entries, sorted.
    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn atomic_write_replaces_content_and_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/dir/x.env");
        write_atomic(&p, "a").unwrap();
        write_atomic(&p, "b").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b");
        assert_eq!(listing(p.parent().unwrap()), ["x.env"]);
    }

    #[test]
    fn a_symlink_at_the_target_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("subnet.env");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = write_atomic(&link, "FLANNEL_SUBNET=x\n").unwrap_err();
        assert!(
            matches!(err, FileError::NotRegular { kind, .. } if kind == "a symbolic link"),
            "{err}"
        );
        assert!(err.to_string().contains("subnet.env"), "{err}");
        assert_eq!(std::fs::read_link(&link).unwrap(), victim);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // A dangling symlink too (it would otherwise be replaced).
        let dangling = dir.path().join("state.json");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(write_atomic(&dangling, "{}").is_err());
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(listing(dir.path()), ["state.json", "subnet.env", "victim"]);
    }

    #[test]
    fn special_files_at_the_target_are_refused_and_the_temporary_file_removed() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let subdir = dir.path().join("subdir");
        std::fs::create_dir(&subdir).unwrap();
        std::fs::write(subdir.join("inside"), "kept").unwrap();
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for (target, kind) in [
            (&fifo, "a FIFO"),
            (&subdir, "a directory"),
            (&socket, "a socket"),
        ] {
            let err = write_atomic(target, "x").unwrap_err();
            assert!(
                matches!(&err, FileError::NotRegular { kind: k, .. } if *k == kind),
                "{}: {err}",
                target.display()
            );
        }
        assert!(fifo.metadata().unwrap().file_type().is_fifo());
        assert!(socket.metadata().unwrap().file_type().is_socket());
        assert_eq!(
            std::fs::read_to_string(subdir.join("inside")).unwrap(),
            "kept"
        );
        // Refused at the last check too (the target turned into a directory while the temporary
        // file was being written): the temporary file is removed.
        let target = dir.path().join("late");
        let mut suffixes = std::iter::once_with(|| {
            std::fs::create_dir(&target).unwrap();
            OsString::from("fixed")
        });
        let err = write_with(&target, b"x", None, &mut suffixes).unwrap_err();
        assert!(matches!(err, FileError::NotRegular { .. }), "{err}");
        assert_eq!(listing(dir.path()), ["fifo", "late", "socket", "subdir"]);
    }

    #[test]
    fn the_temporary_file_is_created_exclusively_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("subnet.env");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        // Another local user planted a symlink at the first name, and a file at the second.
        let planted = dir.path().join(".subnet.env.weft-tmp.one");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let busy = dir.path().join(".subnet.env.weft-tmp.two");
        std::fs::write(&busy, "someone else's").unwrap();
        let mut names = ["one", "two", "three"].into_iter().map(OsString::from);
        write_with(&target, b"FLANNEL_MTU=1450\n", None, &mut names).unwrap();
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "FLANNEL_MTU=1450\n"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_link(&planted).unwrap(), victim);
        assert_eq!(std::fs::read_to_string(&busy).unwrap(), "someone else's");
        // Every name taken: an error, nothing written, nothing left behind.
        let mut names = ["one", "two"].into_iter().map(OsString::from);
        let err = write_with(&target, b"new", None, &mut names).unwrap_err();
        assert!(
            matches!(&err, FileError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "FLANNEL_MTU=1450\n"
        );
        assert_eq!(
            listing(dir.path()),
            [
                ".subnet.env.weft-tmp.one",
                ".subnet.env.weft-tmp.two",
                "subnet.env",
                "victim"
            ]
        );
    }

    #[test]
    fn a_crash_leftover_does_not_wedge_the_next_write_and_is_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state.json");
        let old = SystemTime::now() - STALE_TMP_AGE - Duration::from_secs(60);
        let stale = dir.path().join(format!(
            ".state.json.weft-tmp.{}.00000000deadbeef",
            std::process::id()
        ));
        File::create(&stale).unwrap().set_modified(old).unwrap();
        let fresh = dir.path().join(".state.json.weft-tmp.1.0000000000000001");
        std::fs::write(&fresh, "in flight").unwrap();
        let other = dir.path().join(".subnet.env.weft-tmp.1.0000000000000002");
        File::create(&other).unwrap().set_modified(old).unwrap();
        let unrelated = dir.path().join(".state.json.bak");
        File::create(&unrelated).unwrap().set_modified(old).unwrap();
        // The leftover is removed before the temporary file is created, so even its name can be
        // drawn again.
        let leftover =
            stale.file_name().unwrap().as_bytes()[b".state.json.weft-tmp.".len()..].to_vec();
        let mut names = [OsString::from_vec(leftover), OsString::from("next")].into_iter();
        write_with(&target, b"{}", None, &mut names).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}");
        assert_eq!(
            listing(dir.path()),
            [
                ".state.json.bak",
                ".state.json.weft-tmp.1.0000000000000001",
                ".subnet.env.weft-tmp.1.0000000000000002",
                "state.json"
            ]
        );
        assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "in flight");
    }

    #[test]
    fn modes_new_file_explicit_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("cluster.key");
        write_atomic_mode(&key, b"k", 0o600).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        let opts = dir.path().join("docker_opts.env");
        std::fs::write(&opts, "old").unwrap();
        std::fs::set_permissions(&opts, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&opts, "new").unwrap();
        assert_eq!(mode(&opts), 0o640);
        assert_eq!(std::fs::read_to_string(&opts).unwrap(), "new");
    }

    #[test]
    fn kept_file_retries_until_written_and_reports_each_error_once() {
        let dir = tempfile::tempdir().unwrap();
        // The directory cannot be created: a regular file is in the way.
        let blocker = dir.path().join("run");
        std::fs::write(&blocker, "").unwrap();
        let mut kept = KeptFile::new(blocker.join("subnet.env"));
        assert!(matches!(kept.keep("A\n"), Kept::Failed { new: true, .. }));
        assert!(matches!(kept.keep("A\n"), Kept::Failed { new: false, .. }));
        assert!(!kept.holds("A\n"));
        assert!(
            kept.failure().unwrap().contains("run"),
            "{:?}",
            kept.failure()
        );
        std::fs::remove_file(&blocker).unwrap();
        assert!(matches!(
            kept.keep("A\n"),
            Kept::Written { after_failures: 2 }
        ));
        assert!(kept.holds("A\n") && kept.failure().is_none());
        assert!(matches!(kept.keep("A\n"), Kept::Unchanged));
        // Changed or removed behind the agent's back: written again.
        std::fs::write(kept.path(), "B\n").unwrap();
        assert!(matches!(
            kept.keep("A\n"),
            Kept::Written { after_failures: 0 }
        ));
        std::fs::remove_file(kept.path()).unwrap();
        assert!(matches!(kept.keep("A\n"), Kept::Written { .. }));
        assert_eq!(std::fs::read_to_string(kept.path()).unwrap(), "A\n");
    }

    #[test]
    fn kept_file_at_a_fifo_or_symlink_fails_without_blocking_or_following() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("subnet.env");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Reading a FIFO with no writer would block the agent loop forever.
        let mut kept = KeptFile::new(fifo.clone());
        let kept_result = kept.keep("A\n");
        assert!(
            matches!(&kept_result, Kept::Failed { error: FileError::NotRegular { kind, .. }, new: true } if *kind == "a FIFO"),
            "{kept_result:?}"
        );
        assert!(fifo.symlink_metadata().unwrap().file_type().is_fifo());
        // A symlink to a file that already holds the content is not taken for the file.
        let real = dir.path().join("real.env");
        std::fs::write(&real, "A\n").unwrap();
        let link = dir.path().join("link.env");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut kept = KeptFile::new(link.clone());
        assert!(matches!(kept.keep("A\n"), Kept::Failed { .. }));
        assert!(!kept.holds("A\n"));
        assert!(kept.failure().unwrap().contains("symbolic link"));
        // The state file: a FIFO there is an error at start, not a hang.
        let state_dir = dir.path().join("state");
        std::fs::create_dir(&state_dir).unwrap();
        nix::unistd::mkfifo(
            &state_path(&state_dir),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(load_state(&state_dir).is_err());
    }

    #[test]
    fn create_atomic_never_replaces_anything() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("new/cluster.key");
        create_atomic(&key, b"secret\n", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "secret\n");
        let meta = std::fs::symlink_metadata(&key).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.nlink(), 1, "the temporary name is gone");
        assert_eq!(listing(key.parent().unwrap()), ["cluster.key"]);
        // An existing file, or a symlink (dangling or not), is an error and stays as it was.
        let err = create_atomic(&key, b"other\n", 0o600).unwrap_err();
        assert!(
            matches!(&err, FileError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "secret\n");
        let link = dir.path().join("new/link.key");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        assert!(create_atomic(&link, b"x", 0o600).is_err());
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(listing(key.parent().unwrap()), ["cluster.key", "link.key"]);
    }

    #[test]
    fn load_state_errors_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_state(dir.path()).unwrap().is_none());
        std::fs::write(state_path(dir.path()), "not json").unwrap();
        assert!(matches!(
            load_state(dir.path()),
            Err(FileError::Corrupt { .. })
        ));
    }
}
