//! L3 (root): real `weft` agents in the network-namespace testnet. `/metrics` is fetched with
//! curl inside a host namespace and its counters are seen moving; `--ip-masq` installs the
//! `table ip weft` masquerade rules, SIGTERM leaves them, `weft leave` removes them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Whether this test may run; prints why not, and panics instead when `WEFT_REQUIRE_NETNS=1`.
fn available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let tool = |name: &str, arg: &str| Command::new(name).arg(arg).output().is_ok();
    let missing = if euid != 0 {
        Some("not root")
    } else if !tool("ip", "-V") {
        Some("no `ip` command (apt-get install iproute2)")
    } else if !tool("nft", "--version") {
        Some("no `nft` command (apt-get install nftables)")
    } else if !tool("curl", "--version") {
        Some("no `curl` command (apt-get install curl)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(reason) if std::env::var("WEFT_REQUIRE_NETNS").as_deref() == Ok("1") => {
            panic!("{test}: needs network namespaces, but {reason} (WEFT_REQUIRE_NETNS=1)")
        }
        Some(reason) => {
            eprintln!("SKIPPED {test}: needs network namespaces: {reason}");
            false
        }
    }
}

/// A testnet with a unique prefix, torn down (processes and namespaces) on drop.
struct Testnet {
    prefix: String,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Testnet {
    fn new(tag: &str) -> Testnet {
        let dir = tempfile::tempdir().unwrap();
        Testnet {
            prefix: format!("{tag}{}", std::process::id()),
            state: dir.path().join("state"),
            _dir: dir,
        }
    }

    fn script(&self, args: &[&str], weft_args: &str) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testnet/netns.sh");
        Command::new("bash")
            .arg(script)
            .args(args)
            .env("WEFT_TESTNET", &self.prefix)
            .env("WEFT_TESTNET_STATE", &self.state)
            .env("WEFT_BIN", env!("CARGO_BIN_EXE_weft"))
            .env("WEFT_ARGS", weft_args)
            .output()
            .expect("run netns.sh")
    }

    fn ok(&self, args: &[&str], weft_args: &str) -> String {
        let out = self.script(args, weft_args);
        assert!(
            out.status.success(),
            "netns.sh {args:?} failed:\nstdout: {}\nstderr: {}\nlogs:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn logs(&self) -> String {
        (1..=2)
            .map(|i| {
                std::fs::read_to_string(self.state.join(format!("h{i}/weft.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    }

    /// Runs a command in host `i`'s namespace: `(success, stdout + stderr)`.
    fn exec(&self, i: u32, cmd: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &format!("{}-h{i}", self.prefix)])
            .args(cmd)
            .output()
            .expect("ip netns exec");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn metrics(&self, i: u32) -> String {
        let (ok, text) = self.exec(
            i,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                "http://127.0.0.1:7948/metrics",
            ],
        );
        assert!(ok, "curl /metrics on h{i}: {text}");
        text
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        let _ = self.script(&["down"], "");
    }
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
    if !available("metrics_move_and_ip_masq_follows_the_agent") {
        return;
    }
    let net = Testnet::new("op");
    net.ok(&["up", "2"], "");
    net.ok(&["start"], "--ip-masq");
    net.ok(&["wait-ready", "90"], "");

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
        let env = std::fs::read_to_string(net.state.join(format!("h{i}/subnet.env"))).unwrap();
        assert!(env.contains("FLANNEL_IPMASQ=true"), "{env}");
        let subnet = env
            .lines()
            .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
            .unwrap()
            .to_string();
        let (ok, table) = net.exec(i, &["nft", "list", "table", "ip", "weft"]);
        assert!(ok, "h{i}: no table ip weft: {table}");
        assert!(
            table.contains("ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return"),
            "{table}"
        );
        assert!(table.contains("masquerade"), "{table}");
        // FLANNEL_SUBNET is the first host (x.y.z.1/24); the rule names the subnet (x.y.z.0/24).
        let net_addr = subnet.replacen(".1/", ".0/", 1);
        assert!(
            table.contains(&format!(
                "ip saddr != 10.244.0.0/16 ip daddr {net_addr} return"
            )),
            "{table}"
        );
    }
    // The agent puts the table back when someone deletes it (reconcile every 10 s by default).
    let (ok, text) = net.exec(1, &["nft", "delete", "table", "ip", "weft"]);
    assert!(ok, "{text}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !net.exec(1, &["nft", "list", "table", "ip", "weft"]).0 {
        assert!(
            Instant::now() < deadline,
            "table ip weft not restored\n{}",
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // SIGTERM (restart) keeps the rules; `weft leave` removes them.
    net.ok(&["stop", "2"], "");
    let (ok, table) = net.exec(2, &["nft", "list", "table", "ip", "weft"]);
    assert!(
        ok && table.contains("masquerade"),
        "h2 lost its rules on SIGTERM: {table}"
    );
    let weft = env!("CARGO_BIN_EXE_weft");
    let (ok, text) = net.exec(1, &[weft, "leave", "--api", "127.0.0.1:7948"]);
    assert!(ok, "weft leave: {text}\n{}", net.logs());
    let (ok, table) = net.exec(1, &["nft", "list", "table", "ip", "weft"]);
    assert!(!ok, "table ip weft still there after leave: {table}");
    let (_, all) = net.exec(1, &["nft", "list", "ruleset"]);
    assert!(!all.contains("weft"), "{all}");
}
