//! L3: path probes between real `weft` processes in network namespaces (testnet/netns.sh), three
//! hosts each, on vxlan, host-gw and udp (sealed). What an operator meets:
//!
//! - A firewall eating the overlay between two hosts (an nftables rule inside host 1's namespace,
//!   `drop-udp`): both ends report that pair `down` within 30 s, every other pair stays `ok`,
//!   `weft status --paths` on the third host lists the broken pair both ways, and removing the
//!   rule brings it back.
//! - A hop on host 2's underlay path that carries less than the overlay needs, which neither
//!   host's interface shows (`hop-mtu`): the pairs with host 2 are reported `mtu <n>` within
//!   30 s, the per-peer route MTU is set (on udp, a route of the peer's own into the TUN device),
//!   and a 20 MB TCP stream from host 2's container to host 1's completes; the same stream hangs
//!   with `--no-probes` (weft before probes). Restoring the hop removes the route MTUs.
//! - A keyless sender on the overlay (a container) throwing junk and untagged requests at a
//!   host's probe port: counted, unanswered, no path changes.
//! - A peer restarted with a wiped state directory: no pair stays `down` longer than one probe
//!   period after it is back.

#[path = "common/testnet.rs"]
mod testnet;
#[path = "common/transfer.rs"]
mod transfer;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use testnet::{Testnet, l3_available_with};

const HOSTS: usize = 3;
/// The bound: a broken pair is reported within this long.
const REPORTED_WITHIN: Duration = Duration::from_secs(30);
/// The probe period at three hosts (`ScheduleConfig::default`).
const PERIOD: Duration = Duration::from_secs(10);

/// Not a test by itself: the TCP ends of `transfer::stream`.
#[test]
fn helper_tcp_end() {
    transfer::helper_main();
}

/// Host I's view of each peer's path: node name → (state, mtu); `-` when not probed.
fn paths(net: &Testnet, i: usize) -> BTreeMap<String, (String, Option<u64>)> {
    let status = net.status_json(i);
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| !n["is_self"].as_bool().unwrap_or(false))
        .map(|n| {
            let name = n["name"].as_str().unwrap_or_default().to_string();
            let state = n["path"]["state"].as_str().unwrap_or("-").to_string();
            (name, (state, n["path"]["mtu"].as_u64()))
        })
        .collect()
}

/// Every ordered pair of hosts.
fn pairs() -> Vec<(usize, usize)> {
    (1..=HOSTS)
        .flat_map(|i| (1..=HOSTS).filter(move |j| *j != i).map(move |j| (i, j)))
        .collect()
}

/// Each host's paths, read once.
fn snapshot(net: &Testnet) -> BTreeMap<usize, BTreeMap<String, (String, Option<u64>)>> {
    (1..=HOSTS).map(|i| (i, paths(net, i))).collect()
}

fn state_of(
    s: &BTreeMap<usize, BTreeMap<String, (String, Option<u64>)>>,
    i: usize,
    j: usize,
) -> String {
    s[&i]
        .get(&format!("h{j}"))
        .map(|(state, _)| state.clone())
        .unwrap_or_else(|| "absent".into())
}

/// Waits until `check` holds for the paths of every host; panics with them (and the logs)
/// otherwise. Returns how long it took.
fn wait_paths(
    net: &Testnet,
    within: Duration,
    what: &str,
    check: impl Fn(&BTreeMap<usize, BTreeMap<String, (String, Option<u64>)>>) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut last = BTreeMap::new();
    while start.elapsed() < within {
        last = snapshot(net);
        if check(&last) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    net.dump_logs();
    panic!("{what}: not within {within:?}; paths: {last:?}");
}

fn all_ok(s: &BTreeMap<usize, BTreeMap<String, (String, Option<u64>)>>) -> bool {
    pairs().into_iter().all(|(i, j)| state_of(s, i, j) == "ok")
}

/// `weft status --paths` on host I.
fn fleet_text(net: &Testnet, i: usize) -> String {
    let out = net.exec(
        &format!("h{i}"),
        &[
            Testnet::bin(),
            "status",
            "--paths",
            "--api",
            "127.0.0.1:7948",
        ],
    );
    assert!(out.status.success(), "weft status --paths on h{i}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The firewall case: drop the backend's UDP port between hosts 1 and 3.
fn dropped_pair(net: &Testnet, port: &str) {
    net.ok(&["drop-udp", "1", "3", port]);
    let took = wait_paths(net, REPORTED_WITHIN, "h1 ↔ h3 down", |s| {
        state_of(s, 1, 3) == "down" && state_of(s, 3, 1) == "down"
    });
    eprintln!("h1 ↔ h3 reported down {took:?} after the rule");
    let s = snapshot(net);
    for (i, j) in [(1, 2), (2, 1), (2, 3), (3, 2)] {
        assert_eq!(state_of(&s, i, j), "ok", "h{i} → h{j} must stay ok: {s:?}");
    }
    let status = net.status_json(1);
    let h3 = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "h3")
        .expect("h3 row");
    assert_eq!(h3["path"]["reason"], "no answer", "{h3}");
    assert!(h3["path"]["since"].as_u64().unwrap_or(0) > 0, "{h3}");
    // The third host sees the broken pair, both ways, once the summaries spread.
    let mut text = String::new();
    let seen = net.wait_for(Duration::from_secs(10), || {
        text = fleet_text(net, 2);
        text.contains("h1    h3  down (no answer), both ways")
            && text.contains("h3    h1  down (no answer), both ways")
    });
    assert!(seen.is_some(), "weft status --paths on h2:\n{text}");
    assert!(
        text.contains("2 broken paths from 3 nodes reporting"),
        "{text}"
    );
    let metrics = net.metrics(1);
    assert!(
        metrics.contains("weft_paths{state=\"down\"} 1"),
        "h1 /metrics: {}",
        metrics
            .lines()
            .filter(|l| l.contains("path"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    net.ok(&["undrop"]);
    let took = wait_paths(net, REPORTED_WITHIN, "every path ok after undrop", all_ok);
    eprintln!("every path ok {took:?} after the rule went");
    let text = fleet_text(net, 3);
    assert!(text.contains("all paths ok (3 nodes reporting)"), "{text}");
}

fn container_ip(net: &Testnet, i: usize) -> IpAddr {
    net.container_ip(i).parse().expect("container IP")
}

/// The weft routes of host I that carry an MTU.
fn routes_with_mtu(net: &Testnet, i: usize) -> Vec<String> {
    net.weft_routes(i)
        .into_iter()
        .filter(|r| r.contains(" mtu "))
        .collect()
}

/// The smaller-hop case: host 2's port on the underlay bridge carries 1400 bytes.
fn smaller_hop(net: &Testnet) {
    net.ok(&["hop-mtu", "2", "1400"]);
    let took = wait_paths(
        net,
        REPORTED_WITHIN,
        "pairs with h2 at a reduced MTU",
        |s| {
            [(1, 2), (2, 1), (3, 2), (2, 3)]
                .into_iter()
                .all(|(i, j)| state_of(s, i, j) == "mtu")
        },
    );
    eprintln!("pairs with h2 reported mtu {took:?} after the hop shrank");
    let s = snapshot(net);
    assert_eq!(state_of(&s, 1, 3), "ok", "{s:?}");
    let (_, mtu) = s[&2]["h1"].clone();
    let mtu = mtu.expect("mtu of h2 → h1");
    let overlay: u64 = net
        .subnet_env(2, "FLANNEL_MTU")
        .and_then(|m| m.parse().ok())
        .expect("FLANNEL_MTU");
    assert!(
        mtu < overlay && mtu >= 1280,
        "reduced MTU {mtu} (overlay {overlay})"
    );
    // The routes towards h2 (on h1 and h3) and from h2 carry the MTU that passes.
    let wanted = format!(" mtu {mtu}");
    let routed = net.wait_for(Duration::from_secs(15), || {
        routes_with_mtu(net, 2).len() == 2
            && routes_with_mtu(net, 1).iter().all(|r| r.contains(&wanted))
            && routes_with_mtu(net, 1).len() == 1
    });
    assert!(
        routed.is_some(),
        "route MTUs: h1 {:?}, h2 {:?}",
        net.weft_routes(1),
        net.weft_routes(2)
    );
    // The direction that blackholes without probes: container 2 sends to container 1.
    transfer::stream(net, container_ip(net, 1), 2, 1, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("with per-peer route MTU: {e}"));
    net.ok(&["hop-mtu", "2", "1500"]);
    let took = wait_paths(
        net,
        Duration::from_secs(40),
        "every path ok after the hop",
        all_ok,
    );
    eprintln!("every path ok {took:?} after the hop was restored");
    let cleared = net.wait_for(Duration::from_secs(15), || {
        (1..=HOSTS).all(|i| routes_with_mtu(net, i).is_empty())
    });
    assert!(
        cleared.is_some(),
        "route MTUs left: {:?}",
        (1..=HOSTS).map(|i| net.weft_routes(i)).collect::<Vec<_>>()
    );
}

/// The restart case: host 3 is killed, its state directory wiped, and it starts again; from
/// the moment it is ready, no pair stays down longer than one probe period.
fn wiped_restart(net: &Testnet) {
    net.ok(&["kill", "3"]);
    let state = net.host_dir(3).join("state");
    std::fs::remove_dir_all(&state).expect("wipe h3's state");
    net.ok(&["start", "3"]);
    net.ok(&["wait-ready", "60"]);
    // Longest stretch any pair was seen down, over two periods after ready.
    let mut down_since: BTreeMap<(usize, usize), Instant> = BTreeMap::new();
    let mut longest = Duration::ZERO;
    let start = Instant::now();
    while start.elapsed() < 2 * PERIOD + Duration::from_secs(5) {
        let s = snapshot(net);
        for (i, j) in pairs() {
            if state_of(&s, i, j) == "down" {
                let since = *down_since.entry((i, j)).or_insert_with(Instant::now);
                longest = longest.max(since.elapsed());
            } else {
                down_since.remove(&(i, j));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        longest <= PERIOD,
        "a pair stayed down {longest:?} after h3 came back"
    );
    wait_paths(
        net,
        REPORTED_WITHIN,
        "every path ok after the restart",
        all_ok,
    );
}

/// The worst a local user can do without the cluster key: from container 2 (anyone on the
/// overlay, no privilege on any host), 500 junk datagrams and 500 well-formed but untagged
/// requests at host 1's probe port. They are counted and dropped, nothing answers them, and
/// every path stays ok.
fn hostile_neighbour(net: &Testnet) {
    let target = net
        .subnet_env(1, "FLANNEL_SUBNET")
        .expect("FLANNEL_SUBNET")
        .replace(".1/24", ".0");
    let before = net.metric(1, "weft_probes_dropped_total{reason=\"malformed\"} ")
        + net.metric(1, "weft_probes_dropped_total{reason=\"plaintext\"} ");
    let replied = net.metric(1, "weft_probes_total{kind=\"replied\"} ");
    // An insecure-format request (key id 0, zero tag) from a sender named "evil": 59 bytes.
    let script = format!(
        "for i in $(seq 500); do printf 'junk' > /dev/udp/{target}/7949; \
         printf 'WPR\\001\\000\\000\\000\\000\\000%050d' 0 > /dev/udp/{target}/7949; done"
    );
    let out = net.exec("c2", &["bash", "-c", &script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counted = net.wait_for(Duration::from_secs(10), || {
        net.metric(1, "weft_probes_dropped_total{reason=\"malformed\"} ")
            + net.metric(1, "weft_probes_dropped_total{reason=\"plaintext\"} ")
            >= before + 1000
    });
    assert!(counted.is_some(), "h1 did not count the junk as dropped");
    std::thread::sleep(PERIOD);
    let s = snapshot(net);
    assert!(all_ok(&s), "paths after the junk: {s:?}");
    // Replies only went to real peers' probes: at most what they asked in that time.
    let replied_now = net.metric(1, "weft_probes_total{kind=\"replied\"} ");
    assert!(replied_now - replied < 100, "{replied} → {replied_now}");
}

fn available(test: &str) -> bool {
    l3_available_with(test, &[("nft", "nftables"), ("curl", "curl")])
}

fn three_hosts(tag: &str, backend: &str) -> Testnet {
    let net = Testnet::new(tag).with_env("WEFT_BACKEND", backend);
    net.up_and_ready(HOSTS);
    wait_paths(&net, Duration::from_secs(60), "every path ok", all_ok);
    net
}

#[test]
fn vxlan_paths_down_mtu_and_restart() {
    if !available("vxlan_paths_down_mtu_and_restart") {
        return;
    }
    let net = three_hosts("l3pvx", "vxlan");
    hostile_neighbour(&net);
    dropped_pair(&net, "8472");
    smaller_hop(&net);
    wiped_restart(&net);
}

#[test]
fn host_gw_paths_down_mtu_and_restart() {
    if !available("host_gw_paths_down_mtu_and_restart") {
        return;
    }
    let net = three_hosts("l3phg", "host-gw");
    // host-gw carries overlay addresses on the underlay: the firewall eats the probe port
    // towards host 3's subnet.
    dropped_pair(&net, "7949");
    smaller_hop(&net);
    wiped_restart(&net);
}

#[test]
fn udp_paths_down_mtu_and_restart() {
    if !available("udp_paths_down_mtu_and_restart") {
        return;
    }
    let net = three_hosts("l3pud", "udp");
    dropped_pair(&net, "8285");
    // The reduced peers get routes of their own into the TUN device.
    smaller_hop(&net);
    wiped_restart(&net);
}

/// Weft without probes (`--no-probes`, what weft did before them): the same smaller hop
/// blackholes the stream from container 2 to container 1.
#[test]
fn without_probes_a_smaller_hop_blackholes_tcp() {
    if !available("without_probes_a_smaller_hop_blackholes_tcp") {
        return;
    }
    let net = Testnet::new("l3pno")
        .with_env("WEFT_BACKEND", "vxlan")
        .with_env("WEFT_NO_PROBES", "1");
    net.up_and_ready(HOSTS);
    net.ok(&["hop-mtu", "2", "1400"]);
    let result = transfer::stream(&net, container_ip(&net, 1), 2, 1, Duration::from_secs(20));
    assert!(
        result.is_err(),
        "the stream crossed a 1400-byte hop without per-peer MTU: the fault is not reproduced"
    );
    assert!(routes_with_mtu(&net, 2).is_empty());
    let status = net.status_json(2);
    assert!(status.get("paths").is_none(), "{status}");
}
