//! L3: a sealed udp pair whose peer leaves one side's tunnel table and comes back with the same
//! keys passes traffic again at once. Two hosts; h1's gossip towards h2 is cut (an nftables rule
//! inside h1's namespace, outgoing only), so h2 sees h1 dead and, after a short `--reservation`,
//! drops it from its tunnel table, while h1 keeps hearing h2 (h2's digests to its seed) and keeps
//! h2 in its table with its replay window. When the cut heals, h2 takes h1 back with the same
//! keys: its frames to h1 must open there (no nonce restarted under the old key, hence no replay
//! drops). Needs root; skips with a reason otherwise (fails with WEFT_REQUIRE_NETNS=1).

#[path = "common/netns.rs"]
mod netns;
#[path = "common/testnet.rs"]
mod testnet;

use std::time::Duration;

use testnet::{Testnet, l3_available_with};

/// h2's underlay address in the testnet (`host_ip` in testnet/netns.sh).
const H2_IP: &str = "172.31.250.12";

/// Sends N small UDP datagrams from container c2 to ADDR (nobody listens: they only move the
/// sealing counter of h2 → h1 and h1's replay window).
const BURST: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    try:
        s.sendto(b"x" * 32, (sys.argv[1], 9))
    except OSError:
        pass
"#;

fn nft(net: &Testnet, host: usize, args: &str) {
    let out = net.exec(&format!("h{host}"), &["nft", args]);
    assert!(
        out.status.success(),
        "nft {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sealed_peer_leaving_and_returning_passes_traffic_again() {
    if !l3_available_with(
        "sealed_peer_leaving_and_returning_passes_traffic_again",
        &[
            ("python3", "python3"),
            ("curl", "curl"),
            ("nft", "nftables"),
        ],
    ) {
        return;
    }
    let net = Testnet::new("ur").with_env("WEFT_BACKEND", "udp").with_env(
        "WEFT_ARGS",
        "--udp-encryption on --settle 2s --reservation 4s",
    );
    net.up_and_ready(2);
    let c1 = net.container_ip(1);
    assert!(
        net.ping_eventually(2, 1, Duration::from_secs(15)).is_some(),
        "c2 -> c1 before the cut"
    );
    // Move h2's counter (and h1's high-water mark for h2's key) well past the replay window.
    let out = net.exec("c2", &["python3", "-c", BURST, &c1, "6000"]);
    assert!(out.status.success(), "burst failed");

    // One-way cut: h1's gossip no longer reaches h2 (h2's still reaches h1).
    nft(&net, 1, "add table ip weftcut");
    nft(
        &net,
        1,
        "add chain ip weftcut out { type filter hook output priority 0 ; }",
    );
    nft(
        &net,
        1,
        &format!("add rule ip weftcut out ip daddr {H2_IP} udp sport 7947 drop"),
    );
    // h2 drops h1 from its tunnel table: c2's packets to c1 find no route at h2.
    let before = net.tunnel_drops(2, "no_route");
    let left = net.wait_for(Duration::from_secs(40), || {
        let _ = net.exec("c2", &["python3", "-c", BURST, &c1, "3"]);
        net.tunnel_drops(2, "no_route") > before
    });
    if left.is_none() {
        net.dump_logs();
        panic!("h1 never left h2's tunnel table");
    }
    nft(&net, 1, "delete table ip weftcut");

    // h1 comes back into h2's table with the same keys: c2 reaches c1 again within seconds.
    let replay_before = net.tunnel_drops(1, "replay");
    let back = net.ping_eventually(2, 1, Duration::from_secs(20));
    if back.is_none() {
        net.dump_logs();
    }
    let replay_after = net.tunnel_drops(1, "replay");
    assert!(
        back.is_some(),
        "c2 -> c1 not back within 20 s of the heal (h1 counted {} replay drops meanwhile)",
        replay_after - replay_before
    );
    assert_eq!(
        replay_after, replay_before,
        "h1 dropped h2's frames as replays after h2 took it back"
    );
    assert!(net.ping_eventually(1, 2, Duration::from_secs(10)).is_some());
}
