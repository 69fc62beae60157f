//! L3: real `weft` processes in network namespaces (testnet/netns.sh), one test per backend:
//! host-gw, vxlan, and vxlan with DirectRouting. Three hosts each; every container pings every
//! other across hosts, a 20 MB TCP stream container → container arrives intact (SHA-256), and a
//! don't-fragment ping of exactly the advertised MTU (FLANNEL_MTU) passes while one byte more
//! fails. A host-gw peer that is not on-link is not programmed and `weft status` says why.
//!
//! The TCP ends are this test binary itself, re-run inside a container namespace with
//! `L3_HELPER_ROLE` set (see `helper_tcp_end`), so no extra tool is needed.

#[path = "common/netns.rs"]
mod netns;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TRANSFER_BYTES: usize = 20 * 1024 * 1024;
const TCP_PORT: u16 = 5601;

/// A testnet from `testnet/netns.sh`, torn down (processes and namespaces) on drop.
struct Testnet {
    prefix: String,
    state: PathBuf,
    env: Vec<(String, String)>,
    hosts: usize,
}

impl Testnet {
    /// `up N` with a unique prefix; `env` goes to every netns.sh call (WEFT_BACKEND, ...).
    fn up(tag: &str, hosts: usize, env: &[(&str, &str)]) -> Testnet {
        let prefix = format!("{tag}{}", std::process::id() % 100_000);
        let state = std::env::temp_dir().join(format!("weft-l3-{prefix}"));
        let mut net = Testnet {
            prefix,
            state,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            hosts,
        };
        net.env
            .push(("WEFT_BIN".into(), env!("CARGO_BIN_EXE_weft").into()));
        // A leftover testnet of a crashed earlier run with the same prefix goes first.
        let _ = net.sh(&["down"]);
        net.must(&["up", &hosts.to_string()]);
        net
    }

    fn sh(&self, args: &[&str]) -> Output {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/testnet/netns.sh");
        Command::new("bash")
            .arg(script)
            .args(args)
            .env("WEFT_TESTNET", &self.prefix)
            .env("WEFT_TESTNET_STATE", &self.state)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .expect("run testnet/netns.sh")
    }

    fn must(&self, args: &[&str]) -> String {
        let out = self.sh(args);
        assert!(
            out.status.success(),
            "netns.sh {} failed: {}\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ns(&self, kind: char, i: usize) -> String {
        format!("{}-{kind}{i}", self.prefix)
    }

    /// `ip netns exec <ns> ARGS…`.
    fn exec(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ip netns exec")
    }

    fn subnet_env(&self, i: usize, key: &str) -> String {
        let text = std::fs::read_to_string(self.state.join(format!("h{i}/subnet.env")))
            .unwrap_or_else(|e| panic!("h{i}: no subnet.env: {e}"));
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .next_back()
            .unwrap_or_else(|| panic!("h{i}: no {key} in subnet.env:\n{text}"))
            .to_string()
    }

    /// The container address of host I (`.2` of its subnet, as `wire-containers` assigns).
    fn container_ip(&self, i: usize) -> Ipv4Addr {
        let subnet = self.subnet_env(i, "FLANNEL_SUBNET");
        let net: ipnet::Ipv4Net = subnet.parse().expect("FLANNEL_SUBNET");
        Ipv4Addr::from(u32::from(net.network()) + 2)
    }

    fn weft_routes(&self, i: usize) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.ns('h', i), "route", "show", "proto", "87"])
            .output()
            .expect("ip route");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until host I holds `count` weft routes.
    fn wait_routes(&self, i: usize, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let routes = self.weft_routes(i);
            if routes.lines().count() == count {
                return routes;
            }
            if Instant::now() > deadline {
                panic!(
                    "h{i}: expected {count} weft routes, have:\n{routes}\nlog:\n{}",
                    self.sh(&["logs", &i.to_string()])
                        .stdout
                        .iter()
                        .map(|b| *b as char)
                        .collect::<String>()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn status_json(&self, i: usize) -> serde_json::Value {
        let out = self.exec(
            &self.ns('h', i),
            &[
                env!("CARGO_BIN_EXE_weft"),
                "status",
                "--json",
                "--api",
                "127.0.0.1:7948",
            ],
        );
        assert!(
            out.status.success(),
            "weft status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Pings container J from container I; retries for a while (routes may still be arriving).
    fn ping(&self, i: usize, j: usize) {
        let dst = self.container_ip(j).to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.exec(
                &self.ns('c', i),
                &["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", &dst],
            );
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "c{i} cannot ping c{j} ({dst}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn ping_all(&self) {
        for i in 1..=self.hosts {
            for j in 1..=self.hosts {
                if i != j {
                    self.ping(i, j);
                }
            }
        }
    }

    /// A don't-fragment ping of `size` ICMP payload bytes from container I to container J.
    fn df_ping(&self, i: usize, j: usize, size: u32) -> Output {
        let dst = self.container_ip(j).to_string();
        self.exec(
            &self.ns('c', i),
            &[
                "ping",
                "-n",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "2",
                "-M",
                "do",
                "-s",
                &size.to_string(),
                &dst,
            ],
        )
    }

    /// The advertised MTU fits exactly: a DF packet of FLANNEL_MTU bytes goes through, one byte
    /// more is refused as too big.
    fn check_mtu(&self, i: usize, j: usize) {
        let mtu: u32 = self
            .subnet_env(i, "FLANNEL_MTU")
            .parse()
            .expect("FLANNEL_MTU");
        let fits = self.df_ping(i, j, mtu - 28);
        assert!(
            fits.status.success(),
            "c{i} → c{j}: DF ping of the advertised MTU {mtu} failed: {}{}",
            String::from_utf8_lossy(&fits.stdout),
            String::from_utf8_lossy(&fits.stderr)
        );
        let too_big = self.df_ping(i, j, mtu - 27);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&too_big.stdout),
            String::from_utf8_lossy(&too_big.stderr)
        )
        .to_lowercase();
        assert!(
            !too_big.status.success()
                && (text.contains("message too long") || text.contains("frag needed")),
            "c{i} → c{j}: DF ping of MTU {mtu} + 1 did not fail as too big: {text}"
        );
    }

    /// Streams 20 MB from container I to container J and compares SHA-256 of both ends.
    fn transfer(&self, i: usize, j: usize) {
        let dst = self.container_ip(j);
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
        let sink = helper(
            self.ns('c', j),
            "sink",
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, TCP_PORT)).to_string(),
        );
        let sink_guard = ChildGuard(Some(sink));
        let source = helper(
            self.ns('c', i),
            "source",
            SocketAddr::from((dst, TCP_PORT)).to_string(),
        );
        let sent = wait_helper(source, "source");
        let sink = sink_guard.take().expect("sink helper");
        let received = wait_helper(sink, "sink");
        assert_eq!(
            sent, received,
            "c{i} → c{j}: the stream arrived altered ({sent} sent, {received} received)"
        );
        assert!(
            received.contains(&format!("bytes={TRANSFER_BYTES}")),
            "{received}"
        );
    }

    /// Waits until every host is ready and every container is wired.
    fn start_and_wire(&self) {
        self.must(&["start"]);
        self.must(&["wait-ready", "90"]);
        self.must(&["wire-containers"]);
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        let out = self.sh(&["down"]);
        if !out.status.success() {
            eprintln!(
                "netns.sh down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Kills a helper left running (a failed transfer) on drop.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn take(mut self) -> Option<Child> {
        self.0.take()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits (bounded) for a helper and returns its `L3HELPER ...` line.
fn wait_helper(mut child: Child, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match child.try_wait().expect("wait helper") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} helper did not finish within 120 s");
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let out = child.wait_with_output().expect("helper output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| {
            l.split_once("L3HELPER ")
                .map(|(_, rest)| rest.trim().to_string())
        })
        .unwrap_or_else(|| {
            panic!(
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

/// Not a test by itself: the TCP ends of `transfer`, run inside a container namespace when
/// `L3_HELPER_ROLE` is set (`sink` listens and hashes what arrives, `source` sends the pattern).
#[test]
fn helper_tcp_end() {
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

/// Pings, 20 MB transfers and the MTU check across every backend test.
fn exercise(net: &Testnet) {
    net.ping_all();
    net.transfer(1, 2);
    net.transfer(3, 1);
    net.check_mtu(1, 2);
    net.check_mtu(2, 3);
}

#[test]
fn host_gw_three_hosts() {
    if !netns::netns_available("host_gw_three_hosts") {
        return;
    }
    let net = Testnet::up("l3hg", 3, &[("WEFT_BACKEND", "host-gw")]);
    net.start_and_wire();
    for i in 1..=3 {
        let routes = net.wait_routes(i, 2);
        assert!(
            routes
                .lines()
                .all(|r| r.contains("via 172.31.250.") && !r.contains("weft.")),
            "h{i}: host-gw routes go via the peers' underlay IPs:\n{routes}"
        );
    }
    let links = net.exec(&net.ns('h', 1), &["ip", "link", "show", "weft.1"]);
    assert!(!links.status.success(), "host-gw makes no VXLAN device");
    assert_eq!(
        net.subnet_env(1, "FLANNEL_MTU"),
        "1500",
        "host-gw has no overhead"
    );
    exercise(&net);
}

#[test]
fn vxlan_three_hosts() {
    if !netns::netns_available("vxlan_three_hosts") {
        return;
    }
    let net = Testnet::up("l3vx", 3, &[("WEFT_BACKEND", "vxlan")]);
    net.start_and_wire();
    for i in 1..=3 {
        let routes = net.wait_routes(i, 2);
        assert!(
            routes.lines().all(|r| r.contains("dev weft.1")),
            "h{i}: vxlan routes go through weft.1:\n{routes}"
        );
    }
    assert_eq!(net.subnet_env(1, "FLANNEL_MTU"), "1450");
    exercise(&net);
}

/// Hosts 1 and 2 share the underlay subnet; host 3 sits behind a router. With DirectRouting,
/// 1 ↔ 2 use plain routes and everything to or from 3 goes through VXLAN.
#[test]
fn vxlan_direct_routing_mixes_paths() {
    if !netns::netns_available("vxlan_direct_routing_mixes_paths") {
        return;
    }
    let net = Testnet::up(
        "l3dr",
        3,
        &[
            ("WEFT_BACKEND", "vxlan"),
            ("WEFT_DIRECT_ROUTING", "true"),
            ("WEFT_TESTNET_ROUTED", "3"),
        ],
    );
    net.start_and_wire();
    let direct_to = |i: usize, peer_ip: &str| {
        let routes = net.wait_routes(i, 2);
        assert!(
            routes
                .lines()
                .any(|r| r.contains(&format!("via {peer_ip} ")) && !r.contains("weft.")),
            "h{i}: direct route via {peer_ip} expected:\n{routes}"
        );
        routes
    };
    let r1 = direct_to(1, "172.31.250.12");
    let r2 = direct_to(2, "172.31.250.11");
    for (i, routes) in [(1, &r1), (2, &r2)] {
        assert_eq!(
            routes.lines().filter(|r| r.contains("dev weft.1")).count(),
            1,
            "h{i}: host 3 (off-link) goes through VXLAN:\n{routes}"
        );
    }
    let r3 = net.wait_routes(3, 2);
    assert!(
        r3.lines().all(|r| r.contains("dev weft.1")),
        "h3: every peer is off-link, so VXLAN:\n{r3}"
    );
    let status = net.status_json(1);
    assert_eq!(status["backend"], "vxlan (DirectRouting)", "{status}");
    exercise(&net);
}

/// host-gw with host 3 on another underlay subnet: nobody programs it, it programs nobody, and
/// `weft status --json` says why on both sides; hosts 1 and 2 still reach each other.
#[test]
fn host_gw_offlink_peer_is_not_programmed() {
    if !netns::netns_available("host_gw_offlink_peer_is_not_programmed") {
        return;
    }
    let net = Testnet::up(
        "l3ol",
        3,
        &[("WEFT_BACKEND", "host-gw"), ("WEFT_TESTNET_ROUTED", "3")],
    );
    net.start_and_wire();
    net.wait_routes(1, 1);
    net.wait_routes(2, 1);
    let node = |status: &serde_json::Value, name: &str| {
        status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no node {name} in {status}"))
    };
    // Give the agents a reconcile or two with the full view, then look.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s1 = net.status_json(1);
        let s3 = net.status_json(3);
        let h3_seen_by_1 = node(&s1, "h3");
        let h2_seen_by_1 = node(&s1, "h2");
        let h1_seen_by_3 = node(&s3, "h1");
        let done = h3_seen_by_1["programmed"] == false
            && h3_seen_by_1["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not on-link") && r.contains("172.31.251.13"))
            && h2_seen_by_1["programmed"] == true
            && h1_seen_by_3["programmed"] == false
            && h1_seen_by_3["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not on-link"));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status does not show the off-link peer as unprogrammed:\n{s1}\n{s3}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(net.weft_routes(3), "", "h3 programs nobody");
    assert!(!net.weft_routes(1).contains("172.31.251.13"));
    net.ping(1, 2);
    net.ping(2, 1);
    // Logged once, not every tick.
    std::thread::sleep(Duration::from_secs(2));
    let log = String::from_utf8_lossy(&net.sh(&["logs", "1"]).stdout).into_owned();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("peer not programmed") && l.contains("peer=h3"))
            .count(),
        1,
        "{log}"
    );
}
