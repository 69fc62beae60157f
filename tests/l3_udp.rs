//! L3: the udp backend with real `weft` processes in network namespaces (testnet/netns.sh), plain
//! and encrypted. Three hosts: every container pings every other, a 20 MB TCP transfer arrives
//! intact, the path MTU is exactly FLANNEL_MTU, and hostile datagrams (garbage, from an unknown
//! source, with a spoofed inner source, forged seals) injected from an attacker namespace on the
//! underlay bridge are dropped and counted while real traffic keeps flowing. `weft leave` removes
//! weft0. Needs root; skips with a reason otherwise (fails with WEFT_REQUIRE_NETNS=1).

#[path = "common/netns.rs"]
mod netns;
#[path = "common/testnet.rs"]
mod testnet;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use netns::NetnsGuard;
use testnet::{Testnet, l3_available_with, parse_ping};

fn tools_available(test: &str) -> bool {
    l3_available_with(test, &[("python3", "python3"), ("curl", "curl")])
}

/// A udp testnet (`WEFT_BACKEND=udp`) whose agents get ARGS.
fn udp_testnet(tag: &str, args: &str) -> Testnet {
    Testnet::new(tag)
        .with_env("WEFT_BACKEND", "udp")
        .with_env("WEFT_ARGS", args)
}

/// Runs a command in namespace NS (a full name).
fn exec_in(ns: &str, argv: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .output()
        .unwrap()
}

/// Container I's address (the subnet's .2, see `wire-containers`) and its subnet's first
/// three octets.
fn container(net: &Testnet, i: usize) -> (String, String) {
    let ip = net.container_ip(i);
    let prefix = ip.rsplit_once('.').unwrap().0.to_string();
    (ip, prefix)
}

/// One ping from container FROM to TO; with SIZE, a DF ping of that payload size.
fn ping(net: &Testnet, from: usize, to: &str, size: Option<usize>) -> bool {
    let mut argv = vec!["ping", "-n", "-c", "1", "-W", "2"];
    let s;
    if let Some(size) = size {
        s = size.to_string();
        argv.extend(["-M", "do", "-s", &s]);
    }
    argv.push(to);
    net.exec(&format!("c{from}"), &argv).status.success()
}

fn ping_until(net: &Testnet, from: usize, to: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ping(net, from, to, None) {
        assert!(Instant::now() < deadline, "c{from} cannot ping {to}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const SERVER: &str = r#"
import socket, hashlib
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(1); s.settimeout(60)
c, _ = s.accept(); c.settimeout(60); h = hashlib.sha256(); n = 0
while True:
    d = c.recv(65536)
    if not d: break
    h.update(d); n += len(d)
print(n, h.hexdigest(), flush=True)
"#;

const CLIENT: &str = r#"
import socket, hashlib, random, sys, time
data = random.Random(7).randbytes(20 * 1024 * 1024)
for _ in range(100):
    try:
        s = socket.create_connection((sys.argv[1], 5001), timeout=10); break
    except OSError:
        time.sleep(0.1)
s.settimeout(60); s.sendall(data); s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"#;

/// Sends hand-made UDP datagrams with any source (raw socket): argv = src sport dst dport hex.
const FORGE: &str = r#"
import socket, struct, sys
src, sport, dst, dport, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), bytes.fromhex(sys.argv[5])
udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(5):
    s.sendto(ip + udp, (dst, 0))
"#;

/// An inner IPv4/UDP packet from `src` to `dst`, as hex.
fn inner_packet(src: &str, dst: &str) -> String {
    let ip = |s: &str| -> Vec<u8> { s.split('.').map(|o| o.parse::<u8>().unwrap()).collect() };
    let payload = b"forged";
    let total = 28 + payload.len();
    let mut p = vec![0x45, 0, 0, total as u8, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p.extend(ip(src));
    p.extend(ip(dst));
    p.extend([0x13, 0x88, 0x13, 0x88, 0, (8 + payload.len()) as u8, 0, 0]);
    p.extend(payload);
    p.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(tag: &str, encrypted: bool) {
    let args = if encrypted {
        "--udp-encryption on"
    } else {
        "--udp-encryption off"
    };
    let net = udp_testnet(tag, args);
    net.up_and_ready(3);
    let c: Vec<(String, String)> = (1..=3).map(|i| container(&net, i)).collect();

    // Every container reaches every other.
    for i in 1..=3 {
        for j in 1..=3 {
            if i != j {
                ping_until(&net, i, &c[j - 1].0);
            }
        }
    }

    // 20 MB over TCP, byte for byte.
    let mut server = Command::new("ip")
        .args(["netns", "exec", &net.ns("c2"), "python3", "-c", SERVER])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let client = net.exec("c1", &["python3", "-c", CLIENT, &c[1].0]);
    let server_out = {
        let _ = server.wait();
        let mut s = String::new();
        use std::io::Read;
        server
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    };
    let sent = String::from_utf8_lossy(&client.stdout).trim().to_string();
    assert!(client.status.success(), "client: {client:?}");
    assert!(sent.starts_with("20971520 "), "client sent: {sent}");
    assert_eq!(server_out.trim(), sent, "the transfer arrived altered");

    // The path MTU is exactly FLANNEL_MTU.
    let mtu: usize = net.subnet_env(1, "FLANNEL_MTU").unwrap().parse().unwrap();
    let expected = if encrypted {
        1500 - 28 - 32
    } else {
        1500 - 28 - 4
    };
    assert_eq!(mtu, expected);
    assert!(
        ping(&net, 1, &c[1].0, Some(mtu - 28)),
        "a DF packet of FLANNEL_MTU bytes is lost"
    );
    assert!(
        !ping(&net, 1, &c[1].0, Some(mtu - 27)),
        "a DF packet above FLANNEL_MTU passes"
    );

    // An attacker on the underlay bridge.
    let attacker = NetnsGuard::new(&format!("{tag}x")).unwrap();
    let ul = net.ns("ul");
    let st = Command::new("ip")
        .args([
            "-n", &ul, "link", "add", "xa", "type", "veth", "peer", "name", "x0",
        ])
        .args(["netns", attacker.name()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        Command::new("ip")
            .args(["-n", &ul, "link", "set", "xa", "master", "br0", "up"])
            .status()
            .unwrap()
            .success()
    );
    attacker
        .ip(&["addr", "add", "172.31.250.99/24", "dev", "x0"])
        .unwrap();
    attacker.ip(&["link", "set", "x0", "up"]).unwrap();
    let (h1, h2) = ("172.31.250.11", "172.31.250.12");
    let forge = |src: &str, payload: &str| {
        let out = exec_in(
            attacker.name(),
            &["python3", "-c", FORGE, src, "8285", h1, "8285", payload],
        );
        assert!(out.status.success(), "forge: {out:?}");
    };
    let before = |r: &str| net.tunnel_drops(1, r);
    let (garbage0, unknown0, spoofed0, auth0) = (
        before("garbage"),
        before("unknown_source"),
        before("spoofed_source"),
        before("auth"),
    );
    let plain_frame = |src: &str| format!("57550100{}", inner_packet(src, &c[0].0));
    // Garbage from a real peer's address and port.
    forge(h2, "00112233445566778899aabbccddeeff00112233445566778899");
    // A well-formed frame from an address that is no peer.
    forge("172.31.250.99", &plain_frame(&format!("{}.5", c[1].1)));
    // From h2's address, claiming to come from h3's subnet.
    forge(h2, &plain_frame(&format!("{}.5", c[2].1)));
    // A forged sealed frame from h2's address.
    let mut sealed = String::from("5755010112345678000000000000abcd");
    sealed.push_str(&"ab".repeat(60));
    forge(h2, &sealed);
    std::thread::sleep(Duration::from_millis(300));
    assert!(before("garbage") >= garbage0 + 5, "garbage not counted");
    assert!(
        before("unknown_source") >= unknown0 + 5,
        "unknown source not counted"
    );
    if encrypted {
        // The plain spoofed frame and the forged seal both fail authentication.
        assert!(
            before("auth") >= auth0 + 10,
            "forgeries not counted as auth failures"
        );
        assert_eq!(before("spoofed_source"), spoofed0);
    } else {
        assert!(
            before("spoofed_source") >= spoofed0 + 5,
            "spoofed inner source not counted"
        );
        assert!(
            before("auth") >= auth0 + 5,
            "a sealed frame at a plain receiver must be refused"
        );
    }
    // h2 received the 20 MB: counted per inner segment, also when coalesced into one TUN write.
    assert!(net.metric(2, "weft_tunnel_packets_total{dir=\"rx\"}") > 14_000);
    // Real traffic still flows.
    for j in [2, 3] {
        ping_until(&net, 1, &c[j - 1].0);
    }

    // `weft leave` removes weft0 and its route.
    let state_dir = net.agent_state_dir(3);
    let out = net.exec("h3", &[Testnet::bin(), "leave", "--state-dir", &state_dir]);
    assert!(out.status.success(), "leave: {out:?}");
    let link = net.exec("h3", &["ip", "link", "show", "weft0"]);
    assert!(!link.status.success(), "weft0 is still there after leave");
    assert_eq!(net.weft_routes(3), Vec::<String>::new());
}

#[test]
fn udp_plain_three_hosts() {
    if tools_available("udp_plain_three_hosts") {
        run("up", false);
    }
}

#[test]
fn udp_encrypted_three_hosts() {
    if tools_available("udp_encrypted_three_hosts") {
        run("ue", true);
    }
}

/// A plain restart (SIGTERM, start) of h2's agent: weft0 and its route stay, the new agent
/// re-attaches to the persistent device, and a ping every 100 ms from c1 to c2 resumes by
/// itself (it loses those sent while no agent serves the device or knows its peers).
fn restart(tag: &str, encrypted: bool) {
    let args = if encrypted {
        "--udp-encryption on"
    } else {
        "--udp-encryption off"
    };
    let net = udp_testnet(tag, args);
    net.up_and_ready(2);
    let c2 = net.container_ip(2);
    ping_until(&net, 1, &c2);
    let pinger = Command::new("ip")
        .args(["netns", "exec", &net.ns("c1")])
        .args(["ping", "-n", "-i", "0.1", "-W", "1", "-w", "12", &c2])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    net.ok(&["stop", "2"]);
    let stopped = t0.elapsed();
    let link = net.exec("h2", &["ip", "link", "show", "weft0"]);
    assert!(link.status.success(), "weft0 vanished with the agent");
    assert!(
        net.weft_routes(2).iter().any(|r| r.contains("dev weft0")),
        "weft0's route vanished with the agent"
    );
    net.ok(&["start", "2"]);
    let started = t0.elapsed();
    // Until the restarted agent knows its peers again, frames from them are unknown sources.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping(&net, 1, &c2, None) && Instant::now() < deadline {}
    eprintln!(
        "{tag}: stopped after {stopped:?}, started after {started:?}, c2 reachable after {:?}",
        t0.elapsed()
    );
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = parse_ping(&text).unwrap_or_else(|| panic!("no ping summary: {text}"));
    let (sent, received) = (summary.transmitted, summary.received);
    let line = format!("{summary:?}");
    eprintln!("{tag}: restart of h2: {sent} pings sent, {received} answered");
    assert!(sent >= 100, "ping: {line}");
    // Measured: 4 lost (the old agent exits ~120 ms after SIGTERM; the new one forwards at once
    // from the peer table it kept in its state directory, before gossip has spoken). Earlier:
    // 23 lost without that table (and with netns.sh waiting ~2 s for the stopped agent's
    // zombie to be reaped), 15 with the table alone; a lost table shows up here.
    assert!(
        sent - received <= 12,
        "a restart lost {} of {sent} pings: {line}",
        sent - received
    );
    // Still flowing after the restart.
    ping_until(&net, 1, &c2);
}

#[test]
fn udp_plain_restart_keeps_traffic() {
    if tools_available("udp_plain_restart_keeps_traffic") {
        restart("ur", false);
    }
}
