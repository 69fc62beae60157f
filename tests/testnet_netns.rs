//! The network part of `testnet/netns.sh` (needs root): `up` builds hosts that reach each other
//! over the underlay bridge, `wire-containers` addresses containers from each host's subnet.env,
//! and `down` removes everything, also when run twice. The agent is not involved: cni0 and the
//! routes between hosts are made by hand here, host-gw style.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether this test may run; prints why not, and panics instead when `WEFT_REQUIRE_NETNS=1`.
fn netns_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let missing = if euid != 0 {
        Some("not root")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("no `ip` command")
    } else if Command::new("ping").arg("-V").output().is_err() {
        Some("no `ping` command (apt-get install iputils-ping)")
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

/// One testnet with a unique prefix; `down` on drop, also when the test fails.
struct Testnet {
    prefix: String,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Testnet {
    fn new() -> Testnet {
        let dir = tempfile::tempdir().unwrap();
        Testnet {
            prefix: format!(
                "wt{}x{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
            state: dir.path().join("state"),
            _dir: dir,
        }
    }

    fn script(&self, args: &[&str]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testnet/netns.sh");
        Command::new("bash")
            .arg(script)
            .args(args)
            .env("WEFT_TESTNET", &self.prefix)
            .env("WEFT_TESTNET_STATE", &self.state)
            .output()
            .expect("run netns.sh")
    }

    /// Runs the script and asserts success.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.script(args);
        assert!(
            out.status.success(),
            "netns.sh {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ns(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    fn namespaces(&self) -> Vec<String> {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&format!("{}-", self.prefix)))
            .map(String::from)
            .collect()
    }

    fn ip(&self, ns: &str, args: &[&str]) {
        let out = Command::new("ip")
            .arg("-n")
            .arg(self.ns(ns))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip -n {ns} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        let _ = self.script(&["down"]);
    }
}

#[test]
fn up_ping_over_underlay_and_down() {
    if !netns_available("up_ping_over_underlay_and_down") {
        return;
    }
    let net = Testnet::new();
    net.ok(&["up", "3"]);
    let mut names = net.namespaces();
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
    assert_eq!(net.namespaces(), Vec::<String>::new());
    assert!(!net.state.exists());
    net.ok(&["down"]);
}

#[test]
fn wire_containers_from_subnet_env() {
    if !netns_available("wire_containers_from_subnet_env") {
        return;
    }
    let net = Testnet::new();
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
