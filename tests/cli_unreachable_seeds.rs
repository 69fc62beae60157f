//! A real `weft run --dry-run` process whose only seed does not answer: it keeps running,
//! `/readyz` answers 503 naming the seed, and the log says it is retrying. No root needed.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    // A UDP port nobody listens on right now (the gossip port) and a TCP one (the API).
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn get(api: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(api).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn unreachable_seed_is_retried_and_reported_in_readyz() {
    let dir = tempfile::tempdir().unwrap();
    let api = format!("127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let dead_seed = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("weft.log");
    let child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "run",
            "--dry-run",
            "--insecure",
            "--node-name",
            "lonely",
            "--iface",
            "lo",
            "--public-ip",
            "127.0.0.1",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--seeds",
            &dead_seed,
            "--gossip-interval",
            "100ms",
            "--api",
            &api,
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--subnet-file")
        .arg(dir.path().join("subnet.env"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut agent = Agent(child);
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(20) {
        if let Some(resp) = get(&api, "/readyz") {
            last = Some(resp);
            // Several seconds in: still running, still not ready, still saying why.
            if start.elapsed() > Duration::from_secs(4) {
                break;
            }
        }
        assert!(
            agent.0.try_wait().unwrap().is_none(),
            "weft exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let resp = last.expect("the API never answered");
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(
        resp.contains("no seed reachable") && resp.contains(&dead_seed),
        "{resp}"
    );
    assert!(get(&api, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200")));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("no seed reachable yet; retrying"), "{text}");
    assert!(
        !dir.path().join("subnet.env").exists(),
        "a node that never reached the mesh must not claim"
    );
}
