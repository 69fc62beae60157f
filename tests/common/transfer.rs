//! Test helper for L3 tests: a 20 MB TCP stream from one container to another, checked by
//! SHA-256 at both ends. The TCP ends are the test binary itself, re-run inside a container
//! namespace with `L3_HELPER_ROLE` set: each test binary that streams declares
//! `#[test] fn helper_tcp_end() { transfer::helper_main() }`, so no extra tool is needed.
//!
//! Use with `#[path = "common/transfer.rs"] mod transfer;` beside `testnet`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::testnet::Testnet;

/// Bytes streamed.
pub const TRANSFER_BYTES: usize = 20 * 1024 * 1024;
const TCP_PORT: u16 = 5601;

/// Streams [`TRANSFER_BYTES`] from container I to container J (at `dst`) and compares the
/// SHA-256 of both ends; `Err` says what went wrong (not done within `within`, altered, short).
pub fn stream(
    net: &Testnet,
    dst: IpAddr,
    i: usize,
    j: usize,
    within: Duration,
) -> Result<(), String> {
    let any = match dst {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let exe = std::env::current_exe().expect("test binary");
    let helper = |ns: String, role: &str, addr: String| -> Child {
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(&exe)
            .args([
                "helper_tcp_end",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("L3_HELPER_ROLE", role)
            .env("L3_HELPER_ADDR", addr)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn helper")
    };
    let deadline = Instant::now() + within;
    let sink = ChildGuard(Some(helper(
        net.ns(&format!("c{j}")),
        "sink",
        SocketAddr::from((any, TCP_PORT)).to_string(),
    )));
    let source = ChildGuard(Some(helper(
        net.ns(&format!("c{i}")),
        "source",
        SocketAddr::from((dst, TCP_PORT)).to_string(),
    )));
    let sent = wait_helper(source, "source", deadline)?;
    let received = wait_helper(sink, "sink", deadline)?;
    if sent != received {
        return Err(format!(
            "c{i} → c{j}: the stream arrived altered ({sent} sent, {received} received)"
        ));
    }
    if !received.contains(&format!("bytes={TRANSFER_BYTES}")) {
        return Err(format!("c{i} → c{j}: short stream: {received}"));
    }
    Ok(())
}

/// Kills a helper left running (a failed transfer) on drop.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `deadline` for a helper and returns its `L3HELPER ...` line.
fn wait_helper(mut guard: ChildGuard, what: &str, deadline: Instant) -> Result<String, String> {
    let child = guard.0.as_mut().expect("helper");
    loop {
        match child.try_wait().expect("wait helper") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                return Err(format!("the {what} did not finish in time"));
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let out = guard
        .0
        .take()
        .expect("helper")
        .wait_with_output()
        .expect("helper output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| {
            l.split_once("L3HELPER ")
                .map(|(_, rest)| rest.trim().to_string())
        })
        .ok_or_else(|| {
            format!(
                "{what} helper failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Deterministic bytes (xorshift), so the stream is not trivially compressible or uniform.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The TCP ends, when `L3_HELPER_ROLE` is set (`sink` listens and hashes what arrives, `source`
/// sends the pattern); nothing otherwise.
pub fn helper_main() {
    let (Ok(role), Ok(addr)) = (
        std::env::var("L3_HELPER_ROLE"),
        std::env::var("L3_HELPER_ADDR"),
    ) else {
        return;
    };
    let addr: SocketAddr = addr.parse().expect("L3_HELPER_ADDR");
    match role.as_str() {
        "sink" => {
            let listener = TcpListener::bind(addr).expect("bind");
            let (mut conn, _) = listener.accept().expect("accept");
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0usize;
            loop {
                let n = conn.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                ctx.update(&buf[..n]);
                total += n;
            }
            println!(
                "\nL3HELPER sha256={} bytes={total}",
                hex(ctx.finish().as_ref())
            );
        }
        "source" => {
            let data = pattern(TRANSFER_BYTES);
            let digest = ring::digest::digest(&ring::digest::SHA256, &data);
            // The sink may still be starting: retry the connect for a while.
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut conn = loop {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(c) => break c,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("connect {addr}: {e}; retrying");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => panic!("connect {addr}: {e}"),
                }
            };
            conn.write_all(&data).expect("send");
            conn.shutdown(std::net::Shutdown::Write).expect("shutdown");
            // Wait for the sink to close: everything was read.
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
            println!(
                "\nL3HELPER sha256={} bytes={}",
                hex(digest.as_ref()),
                data.len()
            );
        }
        other => panic!("unknown L3_HELPER_ROLE {other}"),
    }
}
