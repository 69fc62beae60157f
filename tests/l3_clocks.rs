//! L3 clocks and reservations: real `weft` processes in network namespaces (testnet/netns.sh).
//! A node whose clock is an hour or 56 years behind joins a mesh whose pool is full and takes
//! nothing; observers restarted during and after a dead node's reservation agree with the rest
//! of the mesh on who holds its subnet, and the node that took it keeps it across a restart.
//! Needs root; skips with a reason otherwise, fails instead of skipping when
//! `WEFT_REQUIRE_NETNS=1`.

#[path = "common/testnet.rs"]
mod testnet;

use std::time::Duration;

use testnet::{Testnet, l3_available};

const API: &str = "127.0.0.1:7948";

/// A pool of exactly three /24s of the testnet's 10.244.0.0/16.
const POOL: &str = "--subnet-min 10.244.1.0 --subnet-max 10.244.3.0";

fn status(net: &Testnet, i: usize) -> serde_json::Value {
    net.status_json(i)
}

fn own_subnet(net: &Testnet, i: usize) -> Option<String> {
    status(net, i)["subnet"].as_str().map(str::to_string)
}

/// `weft status --json` of host I if its agent answers.
fn try_status(net: &Testnet, i: usize) -> Option<serde_json::Value> {
    let out = net.exec(
        &format!("h{i}"),
        &[Testnet::bin(), "status", "--json", "--api", API],
    );
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn ready(net: &Testnet, i: usize) -> bool {
    try_status(net, i).is_some_and(|v| v["ready"] == serde_json::Value::Bool(true))
}

fn wait_ready(net: &Testnet, hosts: &[usize], within: Duration) {
    if net
        .wait_for(within, || hosts.iter().all(|i| ready(net, *i)))
        .is_none()
    {
        net.dump_logs();
        panic!("hosts {hosts:?} not ready within {within:?}");
    }
}

fn extra_args(net: &Testnet, i: usize, args: &str) {
    std::fs::create_dir_all(net.host_dir(i)).unwrap();
    std::fs::write(net.host_dir(i).join("extra-args"), format!("{args}\n")).unwrap();
}

/// `(subnet, weft's routes)` of each host.
fn settled(net: &Testnet, hosts: &[usize]) -> Vec<(Option<String>, Vec<String>)> {
    hosts
        .iter()
        .map(|&i| (own_subnet(net, i), net.weft_routes(i)))
        .collect()
}

/// The VTEP MAC of host I's weft.1 device.
fn vtep_mac(net: &Testnet, i: usize) -> String {
    let link = net.ip(&format!("h{i}"), &["-o", "link", "show", "weft.1"]);
    link.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// Whether host I sends SUBNET to the VTEP with MAC: the route via `<subnet>.0` and its neighbour.
fn routes_via(net: &Testnet, i: usize, subnet: &str, mac: &str) -> bool {
    let gw = subnet.split('/').next().unwrap_or_default();
    let routed = net.weft_routes(i).iter().any(|r| r.starts_with(subnet));
    let neigh = net.ip(&format!("h{i}"), &["neigh", "show", "dev", "weft.1"]);
    routed
        && neigh
            .lines()
            .any(|l| l.starts_with(&format!("{gw} ")) && l.contains(mac))
}

#[test]
fn nodes_with_clocks_behind_take_nothing_from_a_full_pool() {
    if !l3_available("nodes_with_clocks_behind_take_nothing_from_a_full_pool") {
        return;
    }
    let net = Testnet::new("cb").with_env("WEFT_ARGS", POOL);
    net.ok(&["up", "5"]);
    net.ok(&["start", "1"]);
    wait_ready(&net, &[1], Duration::from_secs(60));
    net.ok(&["start", "3"]);
    wait_ready(&net, &[1, 2, 3], Duration::from_secs(60));
    let before = settled(&net, &[1, 2, 3]);
    // An hour behind, then 56 years behind (an RTC-less box that booted at 1970).
    for (i, behind_ms) in [(4usize, 3_600_000i64), (5, 56 * 365 * 24 * 3_600_000)] {
        extra_args(&net, i, &format!("--clock-offset-ms -{behind_ms}"));
        net.ok(&["restart", &i.to_string()]);
        let full = net.wait_for(Duration::from_secs(30), || {
            try_status(&net, i).is_some_and(|s| {
                s["ready_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("no free subnet"))
            })
        });
        if full.is_none() {
            net.dump_logs();
        }
        assert!(
            full.is_some(),
            "h{i} (behind by {behind_ms} ms) never reported a full pool"
        );
        // Time for any contest to play out (the settle period is 5 s).
        std::thread::sleep(Duration::from_secs(8));
        let s = status(&net, i);
        assert_eq!(s["subnet"], serde_json::Value::Null, "h{i}: {s}");
        assert_eq!(s["ready"], serde_json::Value::Bool(false));
        assert_eq!(settled(&net, &[1, 2, 3]), before, "after h{i} joined");
        let m1 = net.metrics(1);
        assert!(
            !m1.lines()
                .any(|l| l.starts_with("weft_claims_lost_total") && !l.ends_with(" 0")),
            "h1 lost a claim: {m1}"
        );
        let log = std::fs::read_to_string(net.host_dir(i).join("weft.log")).unwrap();
        assert!(log.contains("cannot claim a subnet"), "h{i} log:\n{log}");
        net.ok(&["kill", &i.to_string()]);
    }
}

#[test]
fn observers_restarted_during_and_after_a_reservation_agree_on_its_end() {
    if !l3_available("observers_restarted_during_and_after_a_reservation_agree_on_its_end") {
        return;
    }
    let net = Testnet::new("cr").with_env("WEFT_ARGS", &format!("{POOL} --reservation 30s"));
    net.ok(&["up", "4"]);
    net.ok(&["start", "1"]);
    wait_ready(&net, &[1], Duration::from_secs(60));
    net.ok(&["start", "3"]);
    wait_ready(&net, &[1, 2, 3], Duration::from_secs(60));
    let s3 = own_subnet(&net, 3).unwrap();

    // h3 dies; h4 joins a full pool and waits for h3's reservation to end.
    net.ok(&["kill", "3"]);
    net.ok(&["restart", "4"]);
    std::thread::sleep(Duration::from_secs(10));
    // An observer restarted during the reservation.
    net.ok(&["restart", "2"]);
    wait_ready(&net, &[2], Duration::from_secs(30));
    assert_eq!(
        own_subnet(&net, 4),
        None,
        "h4 took {s3} inside the reservation"
    );

    let took = net.wait_for(Duration::from_secs(90), || {
        ready(&net, 4) && own_subnet(&net, 4).as_deref() == Some(s3.as_str())
    });
    if took.is_none() {
        net.dump_logs();
    }
    assert!(took.is_some(), "h4 never took {s3} after the reservation");
    let mac4 = vtep_mac(&net, 4);
    assert!(!mac4.is_empty());

    // Every observer routes h3's old subnet to h4 — h2 too, though it restarted 10 s into the
    // reservation and, counting from its own start, would still reserve the subnet for h3.
    let agreed = net.wait_for(Duration::from_secs(10), || {
        [1, 2].iter().all(|&i| routes_via(&net, i, &s3, &mac4))
    });
    assert!(
        agreed.is_some(),
        "observers route {s3} elsewhere than h4 ({mac4})"
    );

    // An observer restarted after the takeover routes it to h4 at once.
    net.ok(&["restart", "1"]);
    wait_ready(&net, &[1], Duration::from_secs(30));
    let soon = net.wait_for(Duration::from_secs(10), || routes_via(&net, 1, &s3, &mac4));
    if soon.is_none() {
        net.dump_logs();
    }
    assert!(soon.is_some(), "restarted h1 routes {s3} elsewhere than h4");
    eprintln!("restarted h1 routed {s3} to h4 {soon:?} after it was ready");

    // h4 restarts: it keeps the subnet, and nobody routes it to the dead h3.
    net.ok(&["restart", "4"]);
    wait_ready(&net, &[4], Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(own_subnet(&net, 4).as_deref(), Some(s3.as_str()));
    for i in [1, 2] {
        assert!(routes_via(&net, i, &s3, &mac4), "h{i} after h4 restarted");
    }
}
