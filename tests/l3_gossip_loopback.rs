//! L3: no local process other than the agent can get a datagram parsed by the gossip layer. A
//! real `weft run` (sealed gossip) in a testnet host; every loopback UDP port the agent holds in
//! its namespace (from /proc/<pid>/net/udp) and its gossip port are flooded from the same
//! namespace with crafted chitchat SYNs whose digest is a stream of zstd blocks that each expand
//! to 64 KB (chitchat decompresses a whole stream before parsing it). The agent's peak RSS must
//! stay bounded and gossip keep running: a restarted peer (a new record) that needs this agent
//! (its seed) becomes ready and is seen alive. Needs root; skips with a reason otherwise (fails
//! with WEFT_REQUIRE_NETNS=1).

#[path = "common/netns.rs"]
mod netns;
#[path = "common/testnet.rs"]
mod testnet;

use std::time::Duration;

use testnet::{Testnet, l3_available_with};

/// A chitchat V1 SYN whose digest stream is as many zstd blocks (64 KB of zeros each) as fit in
/// one datagram.
fn bomb() -> Vec<u8> {
    let block = zstd::bulk::compress(&vec![0u8; 65_535], 19).expect("zstd");
    let mut d = vec![0x53, 0xb0, 1, 0]; // magic 45139 (LE), protocol V1, SYN
    while d.len() + 3 + block.len() + 1 < 60_000 {
        d.push(1); // compressed block
        d.extend_from_slice(&(block.len() as u16).to_le_bytes());
        d.extend_from_slice(&block);
    }
    d.push(0); // no more blocks
    d
}

/// Loopback (127/8) UDP ports in the network namespace of process PID.
fn loopback_udp_ports(pid: &str) -> Vec<u16> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let local = l.split_whitespace().nth(1)?;
            let (ip, port) = local.split_once(':')?;
            // Little-endian hex: 127.x.y.z ends in "7F".
            ip.ends_with("7F")
                .then(|| u16::from_str_radix(port, 16).ok())
                .flatten()
        })
        .collect()
}

fn status_kb(pid: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Sends the datagram in file argv[1] to 127.0.0.1:port for every port in argv[3..] and to
/// argv[2] (host:port), for argv[0]... seconds.
const FLOOD: &str = r#"
import socket, sys, time
d = open(sys.argv[1], "rb").read()
host, port = sys.argv[2].split(":")
targets = [(host, int(port))] + [("127.0.0.1", int(p)) for p in sys.argv[4:]]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + float(sys.argv[3]); n = 0
while time.time() < end:
    for t in targets:
        try:
            s.sendto(d, t); n += 1
        except OSError:
            pass
    time.sleep(0.002)
print(n, flush=True)
"#;

/// `weft status --json` of host I, or `None` when the agent does not answer.
fn status(net: &Testnet, i: usize) -> Option<serde_json::Value> {
    let out = net.exec(
        &format!("h{i}"),
        &[
            Testnet::bin(),
            "status",
            "--json",
            "--api",
            "127.0.0.1:7948",
        ],
    );
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// In the private namespace (the agent runs as root).
#[test]
fn local_flood_at_every_loopback_port_leaves_gossip_bounded_and_running() {
    run(
        "local_flood_at_every_loopback_port_leaves_gossip_bounded_and_running",
        false,
    );
}

/// Without the namespace (as with CAP_NET_ADMIN only): the sender filter on chitchat's socket.
#[test]
fn local_flood_is_filtered_without_the_private_namespace() {
    run(
        "local_flood_is_filtered_without_the_private_namespace",
        true,
    );
}

fn run(test: &str, no_netns: bool) {
    if !l3_available_with(test, &[("python3", "python3"), ("curl", "curl")]) {
        return;
    }
    let mut net = Testnet::new("gl");
    if no_netns {
        net = net.with_env("WEFT_GOSSIP_NETNS", "off");
    }
    net.up_and_ready(2);
    let pid = std::fs::read_to_string(net.host_dir(1).join("weft.pid")).unwrap();
    let pid = pid.trim().to_string();
    let ports = loopback_udp_ports(&pid);
    if no_netns {
        assert!(
            !ports.is_empty(),
            "without the namespace the loopback sockets are on the host's loopback"
        );
    }
    println!("h1's agent (pid {pid}) holds loopback UDP ports {ports:?}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bomb");
    std::fs::write(&file, bomb()).unwrap();
    let hwm_before = status_kb(&pid, "VmHWM:");

    let mut argv: Vec<String> = vec![
        "python3".into(),
        "-c".into(),
        FLOOD.into(),
        file.display().to_string(),
        "172.31.250.11:7947".into(),
        "15".into(),
    ];
    argv.extend(ports.iter().map(u16::to_string));
    let flood = std::process::Command::new("ip")
        .args(["netns", "exec", &net.ns("h1")])
        .args(&argv)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Meanwhile a record change: h2 restarts (new generation) and needs h1, its seed.
    std::thread::sleep(Duration::from_secs(2));
    net.ok(&["restart", "2"]);
    let ok = net.wait_for(Duration::from_secs(40), || {
        let (Some(s1), Some(s2)) = (status(&net, 1), status(&net, 2)) else {
            return false;
        };
        let h2_alive_at_h1 = s1["nodes"].as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .any(|n| n["name"] == "h2" && n["liveness"] == "alive")
        });
        s2["ready"] == serde_json::Value::Bool(true) && h2_alive_at_h1
    });
    let out = flood.wait_with_output().unwrap();
    let sent = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "h1's agent died under the flood"
    );
    let hwm_after = status_kb(&pid, "VmHWM:");
    println!(
        "flood: {sent} datagrams; h1 peak RSS {hwm_before} kB before, {hwm_after} kB after; \
         loopback ports {ports:?}"
    );
    if ok.is_none() {
        net.dump_logs();
    }
    assert!(
        ok.is_some(),
        "gossip stalled under the flood: restarted h2 not ready or not seen alive by h1"
    );
    assert!(
        hwm_after < hwm_before + 32 * 1024,
        "h1's peak RSS grew from {hwm_before} kB to {hwm_after} kB under a local flood"
    );
}
