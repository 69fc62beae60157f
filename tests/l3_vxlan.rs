//! L3: real `weft` processes in network namespaces (testnet/netns.sh), kernel VXLAN, 3 hosts,
//! sealed gossip with a generated cluster key. Needs root; skips with a reason otherwise, fails
//! instead of skipping when `WEFT_REQUIRE_NETNS=1`.

#[path = "common/testnet.rs"]
mod testnet;

use std::time::Duration;
use testnet::{Testnet, l3_available};

const PAIRS: [(usize, usize); 6] = [(1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)];

fn nodes(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status["nodes"].as_array().cloned().unwrap_or_default()
}

#[test]
fn every_container_reaches_every_other_across_hosts() {
    if !l3_available("every_container_reaches_every_other_across_hosts") {
        return;
    }
    let net = Testnet::new("lv");
    net.up_and_ready(3);
    // Three distinct subnets inside the network.
    let subnets: Vec<_> = (1..=3).map(|i| net.subnet(i)).collect();
    let network: ipnet::Ipv4Net = "10.244.0.0/16".parse().unwrap();
    for (i, s) in subnets.iter().enumerate() {
        assert!(
            network.contains(s),
            "h{} subnet {s} outside {network}",
            i + 1
        );
        assert_eq!(s.prefix_len(), 24);
    }
    assert!(subnets[0] != subnets[1] && subnets[1] != subnets[2] && subnets[0] != subnets[2]);
    for (i, j) in PAIRS {
        let r = net.ping(i, j, 3, "0.2");
        assert_eq!(r.received, 3, "c{i} -> c{j}: {r:?}");
    }
    // What flannel's vxlan backend programs, per peer: neighbour, FDB, onlink route.
    let h1_routes = net.weft_routes(1);
    for j in [2, 3] {
        let s = net.subnet(j);
        let want = format!("{s} via {} dev weft.1 onlink", s.network());
        assert!(
            h1_routes.iter().any(|r| r.starts_with(&want)),
            "h1 routes {h1_routes:?} lack {want}"
        );
    }
    let link = net.ip("h1", &["-d", "link", "show", "weft.1"]);
    assert!(
        link.contains("vxlan id 1") && link.contains("dstport 8472"),
        "{link}"
    );
    assert!(link.contains("nolearning"), "learning must be off: {link}");
    assert!(link.contains("mtu 1450"), "{link}");
    assert_eq!(net.subnet_env(1, "FLANNEL_MTU").as_deref(), Some("1450"));
    assert_eq!(
        net.subnet_env(1, "FLANNEL_NETWORK").as_deref(),
        Some("10.244.0.0/16")
    );
    // Every agent sees every node alive, active and programmed.
    for i in 1..=3 {
        let st = net.status_json(i);
        assert_eq!(st["ready"], true, "h{i}: {st}");
        assert_eq!(st["insecure"], false, "h{i} runs with a cluster key: {st}");
        let nodes = nodes(&st);
        assert_eq!(nodes.len(), 3, "h{i}: {st}");
        for n in &nodes {
            assert_eq!(n["state"], "active", "h{i}: {n}");
            assert_eq!(n["liveness"], "alive", "h{i}: {n}");
            if n["is_self"] == false {
                assert_eq!(n["programmed"], true, "h{i}: {n}");
            }
        }
    }
}

#[test]
fn kill_9_and_restart_keeps_the_subnet_and_traffic_comes_back() {
    if !l3_available("kill_9_and_restart_keeps_the_subnet_and_traffic_comes_back") {
        return;
    }
    let net = Testnet::new("lk");
    net.up_and_ready(3);
    let before = net.subnet(2);
    net.ok(&["kill", "2"]);
    // While h2's agent is dead, its routes and device stay: traffic still flows.
    let r = net.ping(1, 2, 3, "0.2");
    assert_eq!(r.received, 3, "kernel state must outlive the agent: {r:?}");
    // Peers keep h2's routes (reservation), even once they mark it dead.
    let dead = net.wait_for(Duration::from_secs(20), || {
        nodes(&net.status_json(1))
            .iter()
            .any(|n| n["name"] == "h2" && n["liveness"] == "dead")
    });
    assert!(dead.is_some(), "h1 never marked h2 dead");
    assert!(
        net.weft_routes(1)
            .iter()
            .any(|r| r.starts_with(&before.to_string())),
        "h1 dropped the dead h2's route during the reservation"
    );
    net.ok(&["start"]);
    net.ok(&["wait-ready", "60"]);
    assert_eq!(net.subnet(2), before, "a restarted agent keeps its subnet");
    for (i, j) in PAIRS {
        assert!(
            net.ping_eventually(i, j, Duration::from_secs(10)).is_some(),
            "c{i} -> c{j} after restart"
        );
    }
}

#[test]
fn a_plain_restart_loses_at_most_one_ping() {
    if !l3_available("a_plain_restart_loses_at_most_one_ping") {
        return;
    }
    let net = Testnet::new("lr");
    net.up_and_ready(3);
    let before = net.subnet(2);
    // 100 pings at 100 ms (10 s) from c1 to c2 and from c2 to c3 while h2's agent restarts.
    std::thread::scope(|s| {
        let a = s.spawn(|| net.ping(1, 2, 100, "0.1"));
        let b = s.spawn(|| net.ping(2, 3, 100, "0.1"));
        std::thread::sleep(Duration::from_secs(2));
        net.ok(&["restart", "2"]);
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert!(
            a.transmitted >= 95 && a.lost() <= 1,
            "c1 -> c2 across h2's restart: {a:?}"
        );
        assert!(
            b.transmitted >= 95 && b.lost() <= 1,
            "c2 -> c3 across h2's restart: {b:?}"
        );
    });
    net.ok(&["wait-ready", "60"]);
    assert_eq!(net.subnet(2), before);
}

#[test]
fn deleted_route_device_and_mtu_drift_are_repaired() {
    if !l3_available("deleted_route_device_and_mtu_drift_are_repaired") {
        return;
    }
    let net = Testnet::new("ld");
    net.ok(&["up", "3"]);
    // Objects that are not weft's: a route, a link and a route inside the overlay range
    // with another protocol id. weft must leave them alone through all of this.
    net.ip(
        "h1",
        &["route", "add", "198.51.100.0/24", "via", "172.31.250.1"],
    );
    net.ip("h1", &["link", "add", "keep0", "type", "bridge"]);
    net.ip("h1", &["link", "set", "keep0", "up"]);
    net.ip(
        "h1",
        &[
            "route",
            "add",
            "10.244.255.128/25",
            "dev",
            "keep0",
            "proto",
            "static",
        ],
    );
    net.ok(&["start"]);
    net.ok(&["wait-ready", "90"]);
    net.ok(&["wire-containers"]);
    let s2 = net.subnet(2);
    assert_eq!(net.ping(1, 2, 2, "0.2").received, 2);

    // A route deleted by hand comes back (periodic reconcile, default every 10 s).
    net.ip("h1", &["route", "del", &s2.to_string()]);
    assert!(
        !net.weft_routes(1)
            .iter()
            .any(|r| r.starts_with(&s2.to_string()))
    );
    let back = net.wait_for(Duration::from_secs(15), || {
        net.weft_routes(1)
            .iter()
            .any(|r| r.starts_with(&s2.to_string()))
    });
    assert!(
        back.is_some(),
        "the deleted route to {s2} did not come back within 15 s"
    );
    assert!(net.ping_eventually(1, 2, Duration::from_secs(5)).is_some());

    // A neighbour and an FDB entry deleted by hand come back too.
    let mac = net.ip(
        "h1",
        &["neigh", "show", "dev", "weft.1", &s2.network().to_string()],
    );
    assert!(mac.contains("PERMANENT"), "{mac}");
    net.ip(
        "h1",
        &["neigh", "del", &s2.network().to_string(), "dev", "weft.1"],
    );
    let back = net.wait_for(Duration::from_secs(15), || {
        net.ip(
            "h1",
            &["neigh", "show", "dev", "weft.1", &s2.network().to_string()],
        )
        .contains("PERMANENT")
    });
    assert!(
        back.is_some(),
        "the deleted neighbour did not come back within 15 s"
    );

    // A deleted device is recreated and every entry replayed.
    net.ip("h1", &["link", "del", "weft.1"]);
    let back = net.wait_for(Duration::from_secs(15), || {
        net.weft_routes(1).len() == 2 && net.ip("h1", &["link", "show"]).contains("weft.1")
    });
    assert!(
        back.is_some(),
        "weft.1 and its routes did not come back within 15 s: {:?}",
        net.weft_routes(1)
    );
    for j in [2, 3] {
        assert!(
            net.ping_eventually(1, j, Duration::from_secs(5)).is_some(),
            "c1 -> c{j} after weft.1 came back"
        );
    }

    // An MTU changed by hand is put back on the existing device (same ifindex).
    let ifindex = |net: &Testnet| {
        net.ip("h1", &["-o", "link", "show", "weft.1"])
            .split(':')
            .next()
            .unwrap_or("")
            .to_string()
    };
    let idx = ifindex(&net);
    net.ip("h1", &["link", "set", "weft.1", "mtu", "1300"]);
    let back = net.wait_for(Duration::from_secs(15), || {
        net.ip("h1", &["link", "show", "weft.1"])
            .contains("mtu 1450")
    });
    assert!(back.is_some(), "weft.1's MTU was not restored");
    assert_eq!(
        ifindex(&net),
        idx,
        "the MTU fix must not recreate the device"
    );

    // The underlay MTU shrinks: the overlay MTU follows (device and subnet.env).
    net.ip("h1", &["link", "set", "veth-ul", "mtu", "1400"]);
    let follows = net.wait_for(Duration::from_secs(15), || {
        net.ip("h1", &["link", "show", "weft.1"])
            .contains("mtu 1350")
            && net.subnet_env(1, "FLANNEL_MTU").as_deref() == Some("1350")
    });
    assert!(
        follows.is_some(),
        "the overlay MTU did not follow the underlay's: {}",
        net.ip("h1", &["link", "show", "weft.1"])
    );
    assert_eq!(ifindex(&net), idx);

    // Not weft's: untouched.
    let routes = net.ip("h1", &["route", "show"]);
    assert!(
        routes.contains("198.51.100.0/24 via 172.31.250.1"),
        "{routes}"
    );
    assert!(routes.contains("10.244.255.128/25 dev keep0"), "{routes}");
    assert!(net.ip("h1", &["link", "show"]).contains("keep0"));

    // `weft leave` removes weft's objects on h1, and only those; peers drop h1's routes.
    let s1 = net.subnet(1);
    let state_dir = net.agent_state_dir(1);
    let out = net.exec("h1", &[Testnet::bin(), "leave", "--state-dir", &state_dir]);
    assert!(
        out.status.success(),
        "weft leave: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = net.wait_for(Duration::from_secs(15), || {
        [2, 3].iter().all(|&i| {
            !net.weft_routes(i)
                .iter()
                .any(|r| r.starts_with(&s1.to_string()))
        })
    });
    assert!(gone.is_some(), "peers kept h1's routes after it left");
    assert!(net.weft_routes(1).is_empty(), "{:?}", net.weft_routes(1));
    let links = net.ip("h1", &["link", "show"]);
    assert!(
        !links.contains("weft.1") && !links.contains("cni0"),
        "{links}"
    );
    assert!(links.contains("keep0"), "{links}");
    let routes = net.ip("h1", &["route", "show"]);
    assert!(
        routes.contains("198.51.100.0/24 via 172.31.250.1"),
        "{routes}"
    );
    assert!(routes.contains("10.244.255.128/25 dev keep0"), "{routes}");
    assert!(
        !net.host_dir(1).join("subnet.env").exists(),
        "leave removes subnet.env"
    );
}

#[test]
fn the_readme_demo_runs() {
    if !l3_available("the_readme_demo_runs") {
        return;
    }
    let net = Testnet::new("dm");
    let out = net.ok(&["demo", "--down-after"]);
    assert!(
        out.contains("every host had a route to every other host's subnet"),
        "{out}"
    );
    assert_eq!(out.matches(" 0% packet loss").count(), 2, "{out}");
    assert!(out.contains("ready"), "{out}");
    // The path probes of h1 find both peers ok.
    let (_, probes) = out
        .split_once("h1's path probes through the overlay")
        .unwrap_or_else(|| panic!("no path probes shown: {out}"));
    let ok_rows = probes
        .lines()
        .filter(|l| (l.starts_with("h2 ") || l.starts_with("h3 ")) && l.contains(" ok "))
        .count();
    assert_eq!(ok_rows, 2, "{out}");
}
