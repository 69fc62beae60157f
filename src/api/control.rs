//! The control socket `<state-dir>/api.sock`: the only door for the API's mutating calls
//! (leave, keys install/use/remove/reload). The socket is 0600 in a directory that no other
//! user can write, and every connection's peer credentials are checked (root or the agent's
//! own user) on every request as a second fence; refusals are counted and logged at a bounded
//! rate.

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};

/// The socket's file name in the state directory.
pub const SOCKET_NAME: &str = "api.sock";

/// The longest path a Unix socket can be bound to (`sun_path` holds 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// `<state_dir>/api.sock`: where the agent with this `--state-dir` listens.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Why the control socket could not be set up. Each is about the chosen `--state-dir`.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The path does not fit in a socket address.
    #[error(
        "control socket {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter --state-dir",
        .0.display()
    )]
    PathTooLong(PathBuf),
    /// Something else than a socket (a file, a symlink) is in the way; it is left alone.
    #[error("{} exists and is not a socket; weft does not remove it", .0.display())]
    NotASocket(PathBuf),
    /// A live process answers on the socket.
    #[error(
        "another agent serves {} (stop it, or give this one another --state-dir)",
        .0.display()
    )]
    InUse(PathBuf),
    /// The directory would let another user replace the socket.
    #[error("{}: {why}; the control socket must not live there", .dir.display())]
    UnsafeDir {
        /// The state directory.
        dir: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A system call failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path it was about.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a request was refused (the `reason` label of `weft_api_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// A mutating call over TCP.
    Tcp,
    /// A connection to the control socket from another user.
    PeerUid,
}

impl RefuseReason {
    /// Every reason, in exposition order.
    pub const ALL: [RefuseReason; 2] = [RefuseReason::Tcp, RefuseReason::PeerUid];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RefuseReason::Tcp => "tcp",
            RefuseReason::PeerUid => "peer_uid",
        }
    }
}

/// How often a refusal is logged at most; the others are counted and summed into the next line.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Refused requests: counted by reason, logged at most once per [`LOG_EVERY`].
#[derive(Debug, Default)]
pub struct Refusals {
    tcp: AtomicU64,
    peer_uid: AtomicU64,
    last_log: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl Refusals {
    /// Counts one refusal and logs it unless one was logged in the last 10 s.
    pub fn refuse(&self, reason: RefuseReason, detail: fmt::Arguments<'_>) {
        let counter = match reason {
            RefuseReason::Tcp => &self.tcp,
            RefuseReason::PeerUid => &self.peer_uid,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let log = {
            let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY);
            if due {
                *last = Some(now);
            }
            due
        };
        if log {
            let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(
                op = "api",
                reason = reason.label(),
                not_logged_before = unlogged,
                "local API request refused: {detail}"
            );
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refusals so far for `reason`.
    pub fn count(&self, reason: RefuseReason) -> u64 {
        match reason {
            RefuseReason::Tcp => self.tcp.load(Ordering::Relaxed),
            RefuseReason::PeerUid => self.peer_uid.load(Ordering::Relaxed),
        }
    }

    /// The `weft_api_refused` counter family in OpenMetrics text (without `# EOF`).
    pub fn exposition(&self) -> String {
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        let family = Family::<Vec<(&'static str, String)>, Counter>::default();
        for r in RefuseReason::ALL {
            family
                .get_or_create(&vec![("reason", r.label().to_string())])
                .inc_by(self.count(r));
        }
        let mut reg = prometheus_client::registry::Registry::with_prefix("weft");
        reg.register(
            "api_refused",
            "Local API requests refused: mutating calls over TCP, other users on the control socket",
            family,
        );
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &reg);
        out
    }
}

/// Who connected to the control socket (from `SO_PEERCRED`), and whether that uid may use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The peer's uid, when the kernel told.
    pub uid: Option<u32>,
    /// The peer's pid, when the kernel told.
    pub pid: Option<i32>,
    /// The uid is one the listener allows.
    pub allowed: bool,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, ControlListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, ControlListener>) -> Peer {
        *stream.remote_addr()
    }
}

/// The bound control socket: every connection comes with its [`Peer`], which the API checks
/// on every request. Removes its file when dropped (if the file is still this socket).
pub struct ControlListener {
    inner: UnixListener,
    path: PathBuf,
    ino: (u64, u64),
    allowed: Vec<u32>,
}

impl fmt::Debug for ControlListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlListener")
            .field("path", &self.path)
            .field("allowed", &self.allowed)
            .finish()
    }
}

impl ControlListener {
    /// Binds `path` (0600); connections from uids outside `allowed` are marked so (the agent
    /// allows root and its own euid). Creates the directory (0700) if needed; refuses a
    /// directory that is not root's or this user's, or that another user can write; removes a
    /// stale socket only when it is a socket (never through a symlink) and nothing answers on
    /// it. Must run inside a runtime.
    pub fn bind(path: &Path, allowed: Vec<u32>) -> Result<ControlListener, ControlError> {
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ControlError::PathTooLong(path.to_path_buf()));
        }
        let io = |source| ControlError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| ControlError::Io {
                path: dir.clone(),
                source,
            })?;
        let meta = std::fs::metadata(&dir).map_err(|source| ControlError::Io {
            path: dir.clone(),
            source,
        })?;
        if let Some(why) = unsafe_dir(&meta, &[0, euid()]) {
            return Err(ControlError::UnsafeDir { dir, why });
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(_) => return Err(ControlError::InUse(path.to_path_buf())),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        tracing::info!(path = %path.display(), op = "api", "removing the stale control socket of an agent that is gone");
                        std::fs::remove_file(path).map_err(io)?;
                    }
                    Err(e) => return Err(io(e)),
                }
            }
            Ok(_) => return Err(ControlError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let inner = UnixListener::bind(path).map_err(io)?;
        // Between bind and chmod the socket has the umask's mode; the peer check covers that
        // moment (and any later chmod).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let m = std::fs::symlink_metadata(path).map_err(io)?;
        Ok(ControlListener {
            inner,
            path: path.to_path_buf(),
            ino: (m.dev(), m.ino()),
            allowed,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the next connection, with its peer.
    pub async fn accept_peer(&mut self) -> (UnixStream, Peer) {
        loop {
            let stream = match self.inner.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, op = "api", "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let cred = stream.peer_cred().ok();
            let uid = cred.map(|c| c.uid());
            let peer = Peer {
                uid,
                pid: cred.and_then(|c| c.pid()),
                allowed: uid.is_some_and(|u| self.allowed.contains(&u)),
            };
            return (stream, peer);
        }
    }
}

impl axum::serve::Listener for ControlListener {
    type Io = UnixStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.accept_peer().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            uid: Some(euid()),
            pid: Some(std::process::id() as i32),
            allowed: true,
        })
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        // Only this socket: a newer agent may have replaced a file it thought stale.
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why a directory is no place for the control socket (or a client's trust in it): owned by a
/// user outside `owners`, or writable by group or others without the sticky bit.
pub fn unsafe_dir(meta: &std::fs::Metadata, owners: &[u32]) -> Option<String> {
    let mode = meta.mode();
    if !meta.is_dir() {
        return Some("not a directory".to_string());
    }
    if !owners.contains(&meta.uid()) {
        return Some(format!(
            "owned by uid {}, not by root or this user",
            meta.uid()
        ));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Some(format!(
            "writable by other users (mode {:o}; chmod go-w)",
            mode & 0o7777
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_and_exposed() {
        let r = Refusals::default();
        for _ in 0..3 {
            r.refuse(RefuseReason::Tcp, format_args!("test"));
        }
        r.refuse(RefuseReason::PeerUid, format_args!("test"));
        assert_eq!(r.count(RefuseReason::Tcp), 3);
        let text = r.exposition();
        assert!(text.contains("# TYPE weft_api_refused counter"), "{text}");
        assert!(
            text.contains("weft_api_refused_total{reason=\"tcp\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("weft_api_refused_total{reason=\"peer_uid\"} 1"),
            "{text}"
        );
        // Two of the four were within 10 s of the first: not logged, remembered.
        assert_eq!(r.unlogged.load(Ordering::Relaxed), 3);
    }

    fn dir_0700() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[tokio::test]
    async fn binds_0600_in_a_new_0700_dir_and_removes_itself() {
        let d = dir_0700();
        let path = d.path().join("state/sub").join(SOCKET_NAME);
        let l = ControlListener::bind(&path, vec![0, euid()]).unwrap();
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o777, 0o600);
        let dm = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(dm.mode() & 0o777, 0o700);
        drop(l);
        assert!(!path.exists(), "the socket file outlived its listener");
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_and_other_files_are_not() {
        let d = dir_0700();
        let path = d.path().join(SOCKET_NAME);
        // A socket nobody listens on any more (its listener closed without removing it).
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let live = ControlListener::bind(&path, vec![0, euid()]).unwrap();
        // A second agent on the same state dir: refused, and the live socket stays.
        let e = ControlListener::bind(&path, vec![0, euid()]).unwrap_err();
        assert!(matches!(e, ControlError::InUse(_)), "{e}");
        assert!(e.to_string().contains("another agent serves"), "{e}");
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_socket()
        );
        drop(live);

        // A regular file and a symlink (to a stale socket) are left alone.
        std::fs::write(&path, b"not a socket").unwrap();
        let e = ControlListener::bind(&path, vec![0, euid()]).unwrap_err();
        assert!(matches!(e, ControlError::NotASocket(_)), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
        std::fs::remove_file(&path).unwrap();
        let target = d.path().join("elsewhere.sock");
        drop(std::os::unix::net::UnixListener::bind(&target).unwrap());
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = ControlListener::bind(&path, vec![0, euid()]).unwrap_err();
        assert!(matches!(e, ControlError::NotASocket(_)), "{e}");
        assert!(target.exists() && std::fs::symlink_metadata(&path).unwrap().is_symlink());
    }

    #[tokio::test]
    async fn unsafe_dirs_and_long_paths_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let shared = d.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ControlListener::bind(&shared.join(SOCKET_NAME), vec![0, euid()]).unwrap_err();
        assert!(matches!(e, ControlError::UnsafeDir { .. }), "{e}");
        assert!(e.to_string().contains("writable by other users"), "{e}");
        // Sticky (like /tmp): others cannot replace what is ours.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        drop(ControlListener::bind(&shared.join(SOCKET_NAME), vec![0, euid()]).unwrap());
        // Owned by another user (only root can give a directory away).
        if euid() == 0 {
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&shared, Some(65534), None).unwrap();
            let e = ControlListener::bind(&shared.join(SOCKET_NAME), vec![0]).unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }

        let long = d.path().join("x".repeat(MAX_SOCKET_PATH)).join(SOCKET_NAME);
        let e = ControlListener::bind(&long, vec![0, euid()]).unwrap_err();
        assert!(matches!(e, ControlError::PathTooLong(_)), "{e}");
        assert!(
            !long.parent().unwrap().exists(),
            "created a directory before refusing"
        );
    }

    #[tokio::test]
    async fn peers_are_told_apart_by_uid() {
        let d = dir_0700();
        let path = d.path().join(SOCKET_NAME);
        for (allowed, expected) in [
            (vec![euid()], true),
            (vec![euid().wrapping_add(4242)], false),
        ] {
            let mut l = ControlListener::bind(&path, allowed).unwrap();
            let _c = UnixStream::connect(&path).await.unwrap();
            let (_s, peer) = tokio::time::timeout(Duration::from_secs(5), l.accept_peer())
                .await
                .unwrap();
            assert_eq!(peer.uid, Some(euid()));
            assert_eq!(peer.pid, Some(std::process::id() as i32));
            assert_eq!(peer.allowed, expected);
        }
    }
}
