//! The network part of `testnet/netns.sh` (needs root): `up` builds hosts that reach each other
//! over the underlay bridge, `wire-containers` addresses containers from each host's subnet.env,
//! and `down` removes everything, also when run twice. The agent is not involved: cni0 and the
//! routes between hosts are made by hand here, host-gw style.

#[path = "common/testnet.rs"]
mod testnet;

use std::process::Command;
use testnet::{Testnet, l3_available as netns_available};

fn namespaces(net: &Testnet) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{}-", net.prefix)))
        .map(String::from)
        .collect()
}

#[test]
fn up_ping_over_underlay_and_down() {
    if !netns_available("up_ping_over_underlay_and_down") {
        return;
    }
    let net = Testnet::new("tn");
    net.ok(&["up", "3"]);
    let mut names = namespaces(&net);
    names.sort();
    let mut expected: Vec<String> = ["c1", "c2", "c3", "h1", "h2", "h3", "ul"]
        .iter()
        .map(|s| net.ns(s))
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    // A second `up` refuses instead of clobbering.
    assert!(!net.script(&["up", "2"]).status.success());
    for (i, j) in [("1", "2"), ("2", "3"), ("3", "1")] {
        let out = net.ok(&["uping", i, j, "2"]);
        assert!(out.contains("2 received"), "{out}");
    }
    // Out-of-range host numbers are refused.
    assert!(!net.script(&["uping", "1", "4"]).status.success());
    net.ok(&["down"]);
    assert_eq!(namespaces(&net), Vec::<String>::new());
    assert!(!net.state.exists());
    net.ok(&["down"]);
}

#[test]
fn wire_containers_from_subnet_env() {
    if !netns_available("wire_containers_from_subnet_env") {
        return;
    }
    let net = Testnet::new("tn");
    net.ok(&["up", "2"]);
    // What the agent would do: a bridge with the subnet's first address, subnet.env, routes.
    for i in 1..=2 {
        let host = format!("h{i}");
        net.ip(&host, &["link", "add", "cni0", "type", "bridge"]);
        net.ip(
            &host,
            &["addr", "add", &format!("10.244.{i}.1/24"), "dev", "cni0"],
        );
        net.ip(&host, &["link", "set", "cni0", "up"]);
        let peer = 3 - i;
        net.ip(
            &host,
            &[
                "route",
                "add",
                &format!("10.244.{peer}.0/24"),
                "via",
                &format!("172.31.250.{}", 10 + peer),
            ],
        );
        std::fs::write(
            net.state.join(&host).join("subnet.env"),
            format!("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.{i}.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n"),
        )
        .unwrap();
    }
    net.ok(&["wire-containers"]);
    let out = net.ok(&["ping", "1", "2", "2"]);
    assert!(
        out.contains("from 10.244.2.2") && out.contains("2 received"),
        "{out}"
    );
    let out = net.ok(&["ping", "2", "1", "2"]);
    assert!(
        out.contains("from 10.244.1.2") && out.contains("2 received"),
        "{out}"
    );
    let addr = Command::new("ip")
        .args(["-n", &net.ns("c1"), "-o", "addr", "show", "eth0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&addr.stdout).contains("10.244.1.2/24"));
    let link = Command::new("ip")
        .args(["-n", &net.ns("c1"), "link", "show", "eth0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&link.stdout).contains("mtu 1400"));
    // Idempotent.
    net.ok(&["wire-containers"]);
}
