//! A tiny HTTP/1.1 client for the local API: one request per connection (`Connection: close`),
//! GET and POST, with a deadline, over TCP or the agent's control socket. Response parsing is a
//! pure function over the bytes received so far; the bytes are treated as untrusted (bounded
//! sizes, no panics).
//!
//! Before anything is sent over a Unix socket the client checks whom it talks to: the socket
//! file is a socket (not a symlink) owned by root or the caller, in a directory no other user
//! can write, and the process that listens on it runs as root or as the caller.

use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::api::NODE_HEADER;
use crate::api::control::{euid, unsafe_dir};

/// The largest response accepted (a status report of thousands of nodes fits easily).
pub const MAX_RESPONSE: usize = 16 << 20;
/// The largest header block accepted.
pub const MAX_HEADERS: usize = 64 << 10;
/// The longest node name accepted in the [`NODE_HEADER`].
const MAX_NODE_HEADER: usize = 253;

/// Where the agent's API is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `HOST:PORT` (read-only calls).
    Tcp(String),
    /// The control socket (every call).
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => f.write_str(addr),
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// The [`NODE_HEADER`]: the agent's node name; `None` when the server is not weft.
    pub node: Option<String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text, lossy.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connection failed: {0}")]
    Io(#[source] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("response larger than {MAX_RESPONSE} bytes")]
    TooLarge,
    /// The socket could have been put there, or be served, by another user: nothing was sent.
    #[error("not trusted, nothing sent: {0}")]
    Untrusted(String),
}

/// `GET path` from `to`.
pub async fn get(to: &Endpoint, path: &str, timeout: Duration) -> Result<Response, HttpError> {
    request(to, "GET", path, None, timeout).await
}

/// `POST path` to `to` with a JSON body.
pub async fn post(
    to: &Endpoint,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, HttpError> {
    request(to, "POST", path, Some(body), timeout).await
}

async fn request(
    to: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let exchange = async {
        match to {
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr.as_str())
                    .await
                    .map_err(HttpError::Connect)?;
                exchange(stream, &encode_request(method, addr, path, body)).await
            }
            Endpoint::Unix(socket) => {
                check_socket(socket)?;
                let stream = UnixStream::connect(socket)
                    .await
                    .map_err(HttpError::Connect)?;
                let uid = stream.peer_cred().map_err(HttpError::Io)?.uid();
                if uid != 0 && uid != euid() {
                    return Err(HttpError::Untrusted(format!(
                        "the process listening on it runs as uid {uid}, not as root or you"
                    )));
                }
                exchange(stream, &encode_request(method, "localhost", path, body)).await
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

/// The socket file must be a socket (not a symlink to one) owned by root or the caller, in a
/// directory that root or the caller owns and nobody else can write (or that is sticky).
pub fn check_socket(socket: &Path) -> Result<(), HttpError> {
    let meta = std::fs::symlink_metadata(socket).map_err(HttpError::Connect)?;
    let me = euid();
    let owners = [0, me];
    if meta.file_type().is_symlink() {
        return Err(HttpError::Untrusted("it is a symbolic link".into()));
    }
    if !meta.file_type().is_socket() {
        return Err(HttpError::Untrusted("it is not a socket".into()));
    }
    if !owners.contains(&meta.uid()) {
        return Err(HttpError::Untrusted(format!(
            "it is owned by uid {}, not by root or you",
            meta.uid()
        )));
    }
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir_meta = std::fs::metadata(dir).map_err(HttpError::Connect)?;
    if let Some(why) = unsafe_dir(&dir_meta, &owners) {
        return Err(HttpError::Untrusted(format!(
            "its directory {} is {why}",
            dir.display()
        )));
    }
    Ok(())
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<Response, HttpError> {
    stream.write_all(request).await.map_err(HttpError::Io)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await.map_err(HttpError::Io)?;
        let eof = n == 0;
        if buf.len() + n > MAX_RESPONSE {
            return Err(HttpError::TooLarge);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(response) = parse_response(&buf, eof)? {
            return Ok(response);
        }
        if eof {
            // parse_response returns an error or a response at EOF; be safe anyway.
            return Err(HttpError::Malformed("connection closed early"));
        }
    }
}

/// The request bytes.
pub fn encode_request(method: &str, host: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: weft/{}\r\n\
         Accept: application/json\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    match body {
        Some(body) => {
            out.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(body);
        }
        None => out.extend_from_slice(b"\r\n"),
    }
    out
}

/// Parses the bytes received so far. `Ok(None)`: more bytes are needed (only when `eof` is
/// false). Bodies are delimited by Content-Length, chunked encoding, or the end of the stream.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, HttpError> {
    let Some(head_len) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEADERS {
            return Err(HttpError::Malformed("headers too large"));
        }
        if eof {
            return Err(HttpError::Malformed(
                "connection closed before the headers ended",
            ));
        }
        return Ok(None);
    };
    if head_len > MAX_HEADERS {
        return Err(HttpError::Malformed("headers too large"));
    }
    let head = std::str::from_utf8(&buf[..head_len])
        .map_err(|_| HttpError::Malformed("headers are not UTF-8"))?;
    let rest = &buf[head_len + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let (status, reason) = parse_status_line(status_line)?;

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut node = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed("header line without ':'"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value
                .parse()
                .map_err(|_| HttpError::Malformed("invalid Content-Length"))?;
            if content_length.is_some_and(|l| l != len) {
                return Err(HttpError::Malformed("conflicting Content-Length headers"));
            }
            content_length = Some(len);
        } else if name.eq_ignore_ascii_case(NODE_HEADER) {
            // Printable, bounded, and only once: anything else is not weft's.
            let valid = !value.is_empty()
                && value.len() <= MAX_NODE_HEADER
                && value.chars().all(|c| c.is_ascii_graphic());
            node = (valid && node.is_none()).then(|| value.to_string());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }

    let response = |body: Vec<u8>| Response {
        status,
        reason: reason.to_string(),
        node: node.clone(),
        body,
    };
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Some(response(Vec::new())));
    }
    if chunked {
        return match decode_chunked(rest)? {
            Some(body) => Ok(Some(response(body))),
            None if eof => Err(HttpError::Malformed(
                "connection closed inside a chunked body",
            )),
            None => Ok(None),
        };
    }
    match content_length {
        Some(len) if len > MAX_RESPONSE => Err(HttpError::TooLarge),
        Some(len) => match rest.get(..len) {
            Some(body) => Ok(Some(response(body.to_vec()))),
            None if eof => Err(HttpError::Malformed(
                "connection closed before the body ended",
            )),
            None => Ok(None),
        },
        None if eof => Ok(Some(response(rest.to_vec()))),
        None => Ok(None),
    }
}

/// `HTTP/1.1 200 OK` → (200, "OK").
fn parse_status_line(line: &str) -> Result<(u16, &str), HttpError> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not an HTTP/1.x status line"));
    }
    let code = parts.next().unwrap_or_default();
    let status: u16 = code
        .parse()
        .ok()
        .filter(|s| (100..=599).contains(s) && code.len() == 3)
        .ok_or(HttpError::Malformed("invalid status code"))?;
    Ok((status, parts.next().unwrap_or_default().trim()))
}

/// Decodes a chunked body; `Ok(None)` while incomplete. Sizes are checked against the bytes
/// present before anything is copied.
fn decode_chunked(mut buf: &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(buf, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[..line_end])
            .map_err(|_| HttpError::Malformed("invalid chunk size"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Malformed("invalid chunk size"))?;
        if size > MAX_RESPONSE || body.len() + size > MAX_RESPONSE {
            return Err(HttpError::TooLarge);
        }
        buf = &buf[line_end + 2..];
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(end) = find(buf, b"\r\n") else {
                    return Ok(None);
                };
                if end == 0 {
                    return Ok(Some(body));
                }
                buf = &buf[end + 2..];
            }
        }
        let Some(data) = buf.get(..size) else {
            return Ok(None);
        };
        match buf.get(size..size + 2) {
            None => return Ok(None),
            Some(b"\r\n") => {}
            Some(_) => return Err(HttpError::Malformed("chunk not followed by CRLF")),
        }
        body.extend_from_slice(data);
        buf = &buf[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(bytes: &[u8]) -> Response {
        parse_response(bytes, true).unwrap().unwrap()
    }

    #[test]
    fn encodes_get_and_post() {
        let get =
            String::from_utf8(encode_request("GET", "127.0.0.1:7948", "/v1/status", None)).unwrap();
        assert!(get.starts_with("GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:7948\r\n"));
        assert!(get.contains("Connection: close\r\n"));
        assert!(get.ends_with("\r\n\r\n"));
        assert!(!get.contains("Content-Length"));
        let post =
            String::from_utf8(encode_request("POST", "h:1", "/v1/leave", Some(b"{}"))).unwrap();
        assert!(post.starts_with("POST /v1/leave HTTP/1.1\r\n"));
        assert!(post.ends_with("Content-Length: 2\r\n\r\n{}"));
    }

    #[test]
    fn content_length_body() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: x\r\n\r\nhello";
        let r = done(raw);
        assert_eq!(
            (r.status, r.reason.as_str(), r.body.as_slice()),
            (200, "OK", &b"hello"[..])
        );
        assert!(r.is_success());
        // Incomplete: needs more unless at EOF.
        assert_eq!(parse_response(&raw[..raw.len() - 1], false).unwrap(), None);
        assert!(parse_response(&raw[..raw.len() - 1], true).is_err());
        // Complete before EOF.
        assert!(parse_response(raw, false).unwrap().is_some());
    }

    #[test]
    fn body_until_eof() {
        let raw = b"HTTP/1.0 503 Service Unavailable\r\n\r\nnot ready";
        assert_eq!(parse_response(raw, false).unwrap(), None);
        let r = done(raw);
        assert_eq!(r.status, 503);
        assert_eq!(r.reason, "Service Unavailable");
        assert_eq!(r.text(), "not ready");
        assert!(!r.is_success());
    }

    #[test]
    fn chunked_body() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert_eq!(done(raw).body, b"hello world");
        for cut in 40..raw.len() {
            assert_eq!(
                parse_response(&raw[..cut], false).unwrap(),
                None,
                "cut at {cut}"
            );
            assert!(parse_response(&raw[..cut], true).is_err(), "cut at {cut}");
        }
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n";
        assert!(parse_response(bad, true).is_err());
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(parse_response(bad, true).is_err());
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffff\r\n";
        assert!(matches!(
            parse_response(huge, false),
            Err(HttpError::TooLarge)
        ));
    }

    #[test]
    fn no_body_statuses() {
        let r = done(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((r.status, r.body.len()), (204, 0));
    }

    #[test]
    fn rejects_garbage() {
        for raw in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 999 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\n\xff: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            b"",
        ] {
            assert!(
                parse_response(raw, true).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let endless = vec![b'a'; MAX_HEADERS + 1];
        assert!(parse_response(&endless, false).is_err());
    }

    #[tokio::test]
    async fn round_trip_over_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while find(&req, b"\r\n\r\n{}").is_none() {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed early");
                req.extend_from_slice(&buf[..n]);
            }
            // Answer in two writes, keeping the connection open: the client must stop at
            // Content-Length without waiting for EOF.
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(b"cd").await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            String::from_utf8(req).unwrap()
        });
        let r = post(
            &Endpoint::Tcp(addr),
            "/v1/leave",
            b"{}",
            Duration::from_secs(3),
        )
        .await
        .unwrap();
        assert_eq!(r.body, b"abcd");
        server.abort();
    }

    #[tokio::test]
    async fn errors_when_unreachable_or_silent() {
        // A port that was just free: connection refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = get(&Endpoint::Tcp(addr), "/", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Connect(_)), "{e:?}");
        // A server that accepts and never answers: timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let e = get(&Endpoint::Tcp(addr), "/", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Timeout(_)), "{e:?}");
        drop(listener);
    }

    #[test]
    fn node_header_is_read_and_checked() {
        let r = done(b"HTTP/1.1 200 OK\r\nWeft-Node: h1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.node.as_deref(), Some("h1"));
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nweft-node: \r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nweft-node: a b\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nweft-node: a\r\nweft-node: b\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert_eq!(done(raw).node, None, "{}", String::from_utf8_lossy(raw));
        }
        let long = format!(
            "HTTP/1.1 200 OK\r\nweft-node: {}\r\nContent-Length: 0\r\n\r\n",
            "n".repeat(MAX_NODE_HEADER + 1)
        );
        assert_eq!(done(long.as_bytes()).node, None);
    }

    /// A directory only this user can write, holding a socket this process listens on.
    fn socket_in_private_dir() -> (tempfile::TempDir, PathBuf, std::os::unix::net::UnixListener) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.path().join("api.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        (dir, path, listener)
    }

    #[tokio::test]
    async fn unix_socket_round_trip_from_a_trusted_peer() {
        use std::io::{Read, Write};
        let (_dir, path, listener) = socket_in_private_dir();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let n = s.read(&mut req).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nweft-node: h9\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        let r = post(
            &Endpoint::Unix(path),
            "/v1/leave",
            b"{}",
            Duration::from_secs(3),
        )
        .await
        .unwrap();
        assert_eq!(
            (r.node.as_deref(), r.body.as_slice()),
            (Some("h9"), &b"ok"[..])
        );
        let req = server.join().unwrap();
        assert!(
            req.starts_with("POST /v1/leave HTTP/1.1\r\nHost: localhost\r\n"),
            "{req}"
        );
    }

    #[test]
    fn untrusted_sockets_are_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, path, _listener) = socket_in_private_dir();
        check_socket(&path).unwrap();
        // A symlink to a good socket.
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = check_socket(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A regular file.
        let file = dir.path().join("file.sock");
        std::fs::write(&file, b"").unwrap();
        assert!(
            check_socket(&file)
                .unwrap_err()
                .to_string()
                .contains("not a socket")
        );
        // Missing: a plain connection error (the agent is not running).
        let e = check_socket(&dir.path().join("none.sock")).unwrap_err();
        assert!(matches!(e, HttpError::Connect(_)), "{e}");
        // In a directory others can write.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_socket(&path).unwrap_err();
        assert!(e.to_string().contains("writable by other users"), "{e}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        // Owned by another user (only root can hand a file to someone else).
        if euid() == 0 {
            std::os::unix::fs::lchown(&path, Some(65534), Some(65534)).unwrap();
            let e = check_socket(&path).unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
    }
}
