//! L3 (root): real `weft` agents in the network-namespace testnet. `/metrics` is fetched with
//! curl inside a host namespace and its counters are seen moving; `--ip-masq` installs the
//! `table ip weft` masquerade rules, SIGTERM leaves them, `weft leave` removes them.

#[path = "common/testnet.rs"]
mod testnet;

use std::time::{Duration, Instant};

use testnet::{Testnet, l3_available_with};

/// Runs a command in host I's namespace: `(success, stdout + stderr)`.
fn exec(net: &Testnet, i: usize, cmd: &[&str]) -> (bool, String) {
    let out = net.exec(&format!("h{i}"), cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The value of the sample `key` (name with labels) in an exposition.
fn sample(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn must(text: &str, key: &str) -> f64 {
    sample(text, key).unwrap_or_else(|| panic!("no sample {key} in /metrics:\n{text}"))
}

#[test]
fn metrics_move_and_ip_masq_follows_the_agent() {
    let tools = [("nft", "nftables"), ("curl", "curl")];
    if !l3_available_with("metrics_move_and_ip_masq_follows_the_agent", &tools) {
        return;
    }
    let net = Testnet::new("op").with_env("WEFT_ARGS", "--ip-masq");
    net.ok(&["up", "2"]);
    net.ok(&["start"]);
    net.ok(&["wait-ready", "90"]);

    // /metrics: the agent's state and counters.
    // Every node ready means each has seen the others active; h1's gauges follow within a
    // status refresh.
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let m = net.metrics(1);
        let settled = m
            .lines()
            .any(|l| l == "weft_nodes_by_state{liveness=\"alive\",state=\"active\"} 2");
        if settled || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(must(&first, "weft_ready"), 1.0);
    assert_eq!(must(&first, "weft_nodes{liveness=\"alive\"}"), 2.0);
    assert_eq!(
        must(
            &first,
            "weft_nodes_by_state{liveness=\"alive\",state=\"active\"}"
        ),
        2.0
    );
    assert!(must(&first, "weft_claims_total") >= 1.0);
    assert!(must(&first, "weft_time_to_ready_seconds") > 0.0);
    assert!(must(&first, "weft_reconciles_total") >= 1.0);
    assert!(
        must(
            &first,
            "weft_reconcile_ops_by_kind_total{kind=\"add_route\",result=\"ok\"}"
        ) >= 1.0
    );
    assert!(
        must(
            &first,
            "weft_reconcile_ops_by_kind_total{kind=\"ip_masq\",result=\"ok\"}"
        ) >= 1.0
    );
    assert_eq!(
        must(&first, "weft_gossip_dropped_total{reason=\"auth\"}"),
        0.0
    );
    assert!(first.contains("# TYPE weft_tunnel_packets counter"));
    let key_in = "weft_gossip_datagrams_total{direction=\"in\"}";
    let key_out = "weft_gossip_bytes_total{direction=\"out\"}";
    let (in0, out0) = (must(&first, key_in), must(&first, key_out));
    assert!(in0 > 0.0 && out0 > 0.0, "{first}");
    // Gossip runs every 200 ms: the counters move.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = net.metrics(1);
        if must(&now, key_in) > in0 && must(&now, key_out) > out0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gossip counters did not move:\n{now}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // --ip-masq: flannel's rules in table ip weft, and FLANNEL_IPMASQ=true.
    for i in [1, 2] {
        assert_eq!(net.subnet_env(i, "FLANNEL_IPMASQ").as_deref(), Some("true"));
        let subnet = net.subnet(i);
        let (ok, table) = exec(&net, i, &["nft", "list", "table", "ip", "weft"]);
        assert!(ok, "h{i}: no table ip weft: {table}");
        assert!(
            table.contains("ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return"),
            "{table}"
        );
        assert!(table.contains("masquerade"), "{table}");
        assert!(
            table.contains(&format!(
                "ip saddr != 10.244.0.0/16 ip daddr {subnet} return"
            )),
            "{table}"
        );
    }
    // The agent puts the table back when someone deletes it (reconcile every 10 s by default).
    let (ok, text) = exec(&net, 1, &["nft", "delete", "table", "ip", "weft"]);
    assert!(ok, "{text}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !exec(&net, 1, &["nft", "list", "table", "ip", "weft"]).0 {
        assert!(Instant::now() < deadline, "table ip weft not restored");
        std::thread::sleep(Duration::from_millis(300));
    }

    // SIGTERM (restart) keeps the rules; `weft leave` removes them.
    net.ok(&["stop", "2"]);
    let (ok, table) = exec(&net, 2, &["nft", "list", "table", "ip", "weft"]);
    assert!(
        ok && table.contains("masquerade"),
        "h2 lost its rules on SIGTERM: {table}"
    );
    let state_dir = net.agent_state_dir(1);
    let (ok, text) = exec(
        &net,
        1,
        &[Testnet::bin(), "leave", "--state-dir", &state_dir],
    );
    assert!(ok, "weft leave: {text}");
    let (ok, table) = exec(&net, 1, &["nft", "list", "table", "ip", "weft"]);
    assert!(!ok, "table ip weft still there after leave: {table}");
    let (_, all) = exec(&net, 1, &["nft", "list", "ruleset"]);
    assert!(!all.contains("weft"), "{all}");
}
