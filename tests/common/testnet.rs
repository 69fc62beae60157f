//! Test helper for L3 tests: a `testnet/netns.sh` testnet with a unique prefix, running the
//! `weft` binary this test build made, torn down (every namespace and process) on drop, also
//! when the test fails.
//!
//! Use from an integration test with `#[path = "common/testnet.rs"] mod testnet;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether an L3 test can run here: root, `ip` and `ping`. Prints why not and returns false,
/// or panics when `WEFT_REQUIRE_NETNS=1` (CI must not skip).
pub fn l3_available(test: &str) -> bool {
    l3_available_with(test, &[])
}

/// [`l3_available`], plus extra tools: `(command, Debian package)`, each probed with `--version`.
pub fn l3_available_with(test: &str, tools: &[(&str, &str)]) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let runs = |cmd: &str, arg: &str| Command::new(cmd).arg(arg).output().is_ok();
    let missing = if euid != 0 {
        Some("not running as root".to_string())
    } else if !runs("ip", "-V") {
        Some("the `ip` tool (iproute2) is not installed".to_string())
    } else if !runs("ping", "-V") {
        Some("`ping` is not installed (apt-get install iputils-ping)".to_string())
    } else {
        tools
            .iter()
            .find(|(cmd, _)| !runs(cmd, "--version"))
            .map(|(cmd, pkg)| format!("`{cmd}` is not installed (apt-get install {pkg})"))
    };
    match missing {
        None => true,
        Some(why) if std::env::var("WEFT_REQUIRE_NETNS").as_deref() == Ok("1") => {
            panic!("{test}: cannot run ({why}) and WEFT_REQUIRE_NETNS=1")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: {why} (set WEFT_REQUIRE_NETNS=1 to make this a failure)");
            false
        }
    }
}

/// One testnet; `down` on drop.
pub struct Testnet {
    pub prefix: String,
    pub state: PathBuf,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

/// What `ping` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingResult {
    pub transmitted: u32,
    pub received: u32,
}

impl PingResult {
    pub fn lost(&self) -> u32 {
        self.transmitted.saturating_sub(self.received)
    }
}

/// Parses "N packets transmitted, M received" from ping's summary.
pub fn parse_ping(out: &str) -> Option<PingResult> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let transmitted = nums.next()?.parse().ok()?;
    let received = nums.next()?.parse().ok()?;
    Some(PingResult {
        transmitted,
        received,
    })
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Testnet {
    /// A testnet named `<tag><pid>x<n>` (tag: a few letters naming the test file).
    pub fn new(tag: &str) -> Testnet {
        let dir = tempfile::tempdir().expect("temp dir");
        let prefix = format!(
            "{tag}{}x{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        assert!(prefix.len() <= 20, "prefix {prefix} too long");
        Testnet {
            prefix,
            state: dir.path().join("state"),
            env: Vec::new(),
            _dir: dir,
        }
    }

    /// An environment variable for every script call (e.g. `WEFT_ARGS`).
    pub fn with_env(mut self, key: &str, value: &str) -> Testnet {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_weft")
    }

    pub fn script(&self, args: &[&str]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testnet/netns.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(script)
            .args(args)
            .env("WEFT_TESTNET", &self.prefix)
            .env("WEFT_TESTNET_STATE", &self.state)
            .env("WEFT_BIN", Self::bin());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().expect("run testnet/netns.sh")
    }

    /// Runs the script and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.script(args);
        if !out.status.success() {
            self.dump_logs();
            panic!("netns.sh {args:?} failed:\n{}", text(&out));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `up N`, `start`, `wait-ready`, `wire-containers`.
    pub fn up_and_ready(&self, n: usize) {
        self.ok(&["up", &n.to_string()]);
        self.ok(&["start"]);
        self.ok(&["wait-ready", "90"]);
        self.ok(&["wire-containers"]);
    }

    pub fn ns(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    pub fn host_dir(&self, i: usize) -> PathBuf {
        self.state.join(format!("h{i}"))
    }

    /// Host I's `--state-dir`: `weft leave` and `weft keys` reach its agent with it.
    pub fn agent_state_dir(&self, i: usize) -> String {
        self.host_dir(i).join("state").display().to_string()
    }

    /// Runs a command inside namespace `<prefix>-<suffix>`.
    pub fn exec(&self, suffix: &str, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(suffix)])
            .args(argv)
            .output()
            .expect("ip netns exec")
    }

    /// `ip -n <ns> ARGS`, asserting success; returns stdout.
    pub fn ip(&self, suffix: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(self.ns(suffix))
            .args(args)
            .output()
            .expect("ip");
        assert!(
            out.status.success(),
            "ip -n {suffix} {args:?}: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A key of host I's subnet.env.
    pub fn subnet_env(&self, i: usize, key: &str) -> Option<String> {
        let env = std::fs::read_to_string(self.host_dir(i).join("subnet.env")).ok()?;
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
    }

    /// Host I's node subnet (e.g. 10.244.7.0/24) from its subnet.env.
    pub fn subnet(&self, i: usize) -> ipnet::Ipv4Net {
        let s = self
            .subnet_env(i, "FLANNEL_SUBNET")
            .unwrap_or_else(|| panic!("h{i} has no subnet.env"));
        s.parse::<ipnet::Ipv4Net>()
            .unwrap_or_else(|e| panic!("h{i}: FLANNEL_SUBNET {s}: {e}"))
            .trunc()
    }

    /// The address `wire-containers` gave container I (.2 of its host's subnet).
    pub fn container_ip(&self, i: usize) -> String {
        let net = u32::from(self.subnet(i).network());
        std::net::Ipv4Addr::from(net + 2).to_string()
    }

    /// The IPv6 address `wire-containers` gave container I (::2 of its host's IPv6 subnet).
    pub fn container_ip6(&self, i: usize) -> String {
        let s = self
            .subnet_env(i, "FLANNEL_IPV6_SUBNET")
            .unwrap_or_else(|| panic!("h{i} has no FLANNEL_IPV6_SUBNET"));
        let net: ipnet::Ipv6Net = s
            .parse()
            .unwrap_or_else(|e| panic!("h{i}: FLANNEL_IPV6_SUBNET {s}: {e}"));
        std::net::Ipv6Addr::from(u128::from(net.network()) + 2).to_string()
    }

    /// `ping` from container I to container J: COUNT pings every INTERVAL seconds.
    pub fn ping(&self, i: usize, j: usize, count: u32, interval: &str) -> PingResult {
        self.ping_to(i, &self.container_ip(j), count, interval)
    }

    /// `ping -6` from container I to container J's IPv6 address.
    pub fn ping6(&self, i: usize, j: usize, count: u32, interval: &str) -> PingResult {
        self.ping_to(i, &self.container_ip6(j), count, interval)
    }

    fn ping_to(&self, i: usize, dst: &str, count: u32, interval: &str) -> PingResult {
        let out = self.exec(
            &format!("c{i}"),
            &[
                "ping",
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                interval,
                "-W",
                "1",
                dst,
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        parse_ping(&stdout)
            .unwrap_or_else(|| panic!("c{i} -> {dst}: no ping summary:\n{}", text(&out)))
    }

    /// Pings over IPv6 until one gets through or the deadline passes.
    pub fn ping6_eventually(&self, i: usize, j: usize, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.ping6(i, j, 1, "0.2").received == 1 {
                return Some(start.elapsed());
            }
        }
        None
    }

    /// Pings until one gets through or the deadline passes; returns the time it took.
    pub fn ping_eventually(&self, i: usize, j: usize, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.ping(i, j, 1, "0.2").received == 1 {
                return Some(start.elapsed());
            }
        }
        None
    }

    /// `weft status --json` of host I, parsed.
    pub fn status_json(&self, i: usize) -> serde_json::Value {
        let out = self.exec(
            &format!("h{i}"),
            &[Self::bin(), "status", "--json", "--api", "127.0.0.1:7948"],
        );
        assert!(out.status.success(), "weft status on h{i}: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Host I's `/metrics` exposition, fetched with curl inside its namespace.
    pub fn metrics(&self, i: usize) -> String {
        let out = self.exec(
            &format!("h{i}"),
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                "http://127.0.0.1:7948/metrics",
            ],
        );
        assert!(
            out.status.success(),
            "curl /metrics on h{i}: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value of the /metrics sample starting with LINE_START on host HOST.
    pub fn metric(&self, host: usize, line_start: &str) -> u64 {
        let text = self.metrics(host);
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in h{host}'s metrics:\n{text}"))
    }

    /// Host HOST's udp tunnel drops for REASON.
    pub fn tunnel_drops(&self, host: usize, reason: &str) -> u64 {
        self.metric(
            host,
            &format!("weft_tunnel_drops_total{{reason=\"{reason}\"}}"),
        )
    }

    /// Host I's IPv6 routes with weft's protocol id (87), one line each.
    pub fn weft_routes6(&self, i: usize) -> Vec<String> {
        self.ip(&format!("h{i}"), &["-6", "route", "show", "proto", "87"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Host I's routes with weft's protocol id (87), one line each.
    pub fn weft_routes(&self, i: usize) -> Vec<String> {
        self.ip(&format!("h{i}"), &["route", "show", "proto", "87"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until `check` holds, polling every 100 ms; returns the time it took.
    pub fn wait_for(&self, within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if check() {
                return Some(start.elapsed());
            }
            if start.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Prints every agent's log (on failure, to explain it).
    pub fn dump_logs(&self) {
        let Ok(n) = std::fs::read_to_string(self.state.join("n")) else {
            return;
        };
        for i in 1..=n.trim().parse::<usize>().unwrap_or(0) {
            if let Ok(log) = std::fs::read_to_string(self.host_dir(i).join("weft.log")) {
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- h{i} weft.log (last 40 lines)");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let out = self.script(&["down"]);
        if !out.status.success() {
            eprintln!("netns.sh down failed: {}", text(&out));
        }
    }
}
