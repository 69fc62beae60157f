//! L3 (root): a real `weft run` in a private network namespace whose subnet.env lives on a
//! small tmpfs mounted under the test's temporary directory (unmounted on drop, also on failure).
//!
//! 1. The tmpfs is full when the agent starts: the first write of subnet.env fails, `/readyz` is
//!    503 naming subnet.env; once space is freed the file is written and `/readyz` is 200.
//! 2. The agent restarts with another subnet (a re-claim) while the tmpfs is read-only: the file
//!    still names the old subnet, so `/readyz` is 503 naming subnet.env (today's main says ready
//!    and CNI hands out the old subnet); once writable, the file names the new subnet, 200.
//!
//! And in the two-host testnet with the udp backend, host 1's state directory is a full tmpfs:
//! the state file and the udp peers file cannot be saved, `weft status` says so (not ready,
//! warnings), and both are written once space is freed.

#[path = "common/netns.rs"]
mod netns;
#[path = "common/testnet.rs"]
mod testnet;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns::{NetnsGuard, netns_available};

const API: &str = "127.0.0.1:7948";

/// A tmpfs mounted at a directory; lazily unmounted on drop.
struct TmpfsGuard {
    path: PathBuf,
}

impl TmpfsGuard {
    fn mount(path: &Path, size: &str) -> TmpfsGuard {
        std::fs::create_dir_all(path).unwrap();
        run(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0755"),
            "weft-test",
            path.to_str().unwrap(),
        ]);
        TmpfsGuard {
            path: path.to_path_buf(),
        }
    }

    fn remount(&self, opt: &str) {
        run(&[
            "mount",
            "-o",
            &format!("remount,{opt}"),
            self.path.to_str().unwrap(),
        ]);
    }
}

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let out = Command::new("umount").arg("-l").arg(&self.path).output();
        match out {
            Ok(o) if o.status.success() => {}
            other => eprintln!("warning: umount {}: {other:?}", self.path.display()),
        }
    }
}

fn run(argv: &[&str]) {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `weft run` inside the namespace (its network namespace only: mounts are the test's);
/// SIGKILLed on drop.
struct AgentProc {
    child: Child,
    log: PathBuf,
}

impl AgentProc {
    fn start(ns: &NetnsGuard, dir: &Path, subnet_file: &Path, subnet: &str) -> AgentProc {
        Self::start_settling(ns, dir, subnet_file, subnet, "1s")
    }

    /// `start`, with the claim settling after SETTLE (when subnet.env is first written).
    fn start_settling(
        ns: &NetnsGuard,
        dir: &Path,
        subnet_file: &Path,
        subnet: &str,
        settle: &str,
    ) -> AgentProc {
        let log = dir.join("weft.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let netns_file = std::fs::File::open(format!("/run/netns/{}", ns.name())).unwrap();
        let fd = netns_file.as_raw_fd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
        for (key, _) in std::env::vars() {
            if key.starts_with("WEFT_") {
                cmd.env_remove(key);
            }
        }
        cmd.args([
            "run",
            "--node-name",
            "files1",
            "--iface",
            "ul0",
            "--listen",
            "192.0.2.10:7947",
            "--insecure",
            "--api",
            API,
            "--gossip-interval",
            "200ms",
            "--settle",
            settle,
            "--subnet",
            subnet,
        ])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--subnet-file")
        .arg(subnet_file)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
        // SAFETY: setns is async-signal-safe; the fd stays open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn weft");
        drop(netns_file);
        AgentProc { child, log }
    }

    /// SIGTERM and wait (a restart).
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "weft did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET PATH` on the agent's API inside the namespace: `(status code, body)`.
fn get(ns: &NetnsGuard, path: &'static str) -> Option<(u16, String)> {
    ns.run_in(move || {
        let mut s = std::net::TcpStream::connect(API).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((code, body))
    })
}

/// Polls `/readyz` until `check(code, body)` holds; returns the last answer.
fn wait_readyz(
    ns: &NetnsGuard,
    agent: &AgentProc,
    within: Duration,
    what: &str,
    check: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + within;
    loop {
        let answer = get(ns, "/readyz");
        if let Some((code, body)) = &answer
            && check(*code, body)
        {
            return (*code, body.clone());
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; last /readyz {answer:?}\nlog:\n{}",
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fills the file system holding DIR with one file until it is full.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = [0u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("fill: {e}"),
        }
    }
    let _ = f.sync_all();
    filler
}

/// [`listing`] without the agent's control socket (`api.sock`, not a file it writes).
fn files_in(dir: &Path) -> Vec<String> {
    listing(dir)
        .into_iter()
        .filter(|n| n != "api.sock")
        .collect()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn subnet_env_write_failures_keep_readyz_503_until_the_file_is_right() {
    if !netns_available("subnet_env_write_failures_keep_readyz_503_until_the_file_is_right") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env_dir = dir.path().join("run-flannel");
    // Declared first: dropped last, after the agent and the namespace are gone.
    let tmpfs = TmpfsGuard::mount(&env_dir, "64k");
    let ns = NetnsGuard::new("wfiles").expect("netns");
    ns.ip(&["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"])
        .unwrap();
    ns.ip(&["link", "set", "ul1", "up"]).unwrap();
    ns.ip(&["addr", "add", "192.0.2.10/24", "dev", "ul0"])
        .unwrap();
    ns.ip(&["link", "set", "ul0", "up"]).unwrap();
    ns.ip(&["route", "add", "default", "via", "192.0.2.1", "dev", "ul0"])
        .unwrap();
    let subnet_file = env_dir.join("subnet.env");

    // 1. First write on a full file system.
    let filler = fill(&env_dir);
    let agent = AgentProc::start(&ns, dir.path(), &subnet_file, "10.244.5.0/24");
    let (code, body) = wait_readyz(
        &ns,
        &agent,
        Duration::from_secs(30),
        "503 naming subnet.env",
        |_, body| body.contains("subnet.env"),
    );
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("10.244.5.0/24"), "{body}");
    assert!(body.contains("No space left on device"), "{body}");
    // It stays unready while the disk is full, retrying (and leaving no temporary file).
    std::thread::sleep(Duration::from_secs(2));
    let (code, body) = get(&ns, "/readyz").expect("readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("subnet.env"), "{body}");
    assert_eq!(listing(&env_dir), ["filler"]);
    let (_, metrics) = get(&ns, "/metrics").expect("metrics");
    assert!(
        metrics.contains("weft_file_write_pending{file=\"subnet_env\"} 1"),
        "{metrics}"
    );
    std::fs::remove_file(&filler).unwrap();
    let (code, _) = wait_readyz(
        &ns,
        &agent,
        Duration::from_secs(10),
        "200 once space is free",
        |code, _| code == 200,
    );
    assert_eq!(code, 200);
    let env = std::fs::read_to_string(&subnet_file).unwrap();
    assert!(env.contains("FLANNEL_SUBNET=10.244.5.1/24\n"), "{env}");
    assert_eq!(listing(&env_dir), ["subnet.env"]);

    // 2. A re-claim (restart on another subnet) while the directory is read-only. A directory
    // that is read-only at start is refused before anything happens (exit 2, see
    // tests/cli_bad_inputs.rs): it turns read-only while the new claim settles.
    agent.stop();
    let agent = AgentProc::start_settling(&ns, dir.path(), &subnet_file, "10.244.6.0/24", "6s");
    wait_readyz(
        &ns,
        &agent,
        Duration::from_secs(10),
        "503 while the new claim settles",
        |code, _| code == 503,
    );
    tmpfs.remount("ro");
    let (code, body) = wait_readyz(
        &ns,
        &agent,
        Duration::from_secs(30),
        "503 naming subnet.env after the re-claim",
        |_, body| body.contains("subnet.env") && body.contains("10.244.6.0/24"),
    );
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("Read-only file system"), "{body}");
    std::thread::sleep(Duration::from_secs(2));
    let (code, body) = get(&ns, "/readyz").expect("readyz");
    assert_eq!(
        code, 503,
        "ready while subnet.env names the old subnet: {body}"
    );
    let env = std::fs::read_to_string(&subnet_file).unwrap();
    assert!(env.contains("FLANNEL_SUBNET=10.244.5.1/24\n"), "{env}");
    tmpfs.remount("rw");
    wait_readyz(
        &ns,
        &agent,
        Duration::from_secs(10),
        "200 once writable",
        |code, _| code == 200,
    );
    let env = std::fs::read_to_string(&subnet_file).unwrap();
    assert!(env.contains("FLANNEL_SUBNET=10.244.6.1/24\n"), "{env}");
    assert_eq!(listing(&env_dir), ["subnet.env"]);
    let log = std::fs::read_to_string(&agent.log).unwrap();
    let failures = log
        .lines()
        .filter(|l| l.contains("cannot write file") && l.contains("subnet_env"))
        .count();
    // Logged once per distinct error (ENOSPC in the first run, EROFS in the second), not per retry.
    assert_eq!(failures, 2, "{log}");
}

#[test]
fn full_state_dir_keeps_state_and_udp_peers_pending_until_space_is_freed() {
    if !testnet::l3_available(
        "full_state_dir_keeps_state_and_udp_peers_pending_until_space_is_freed",
    ) {
        return;
    }
    let net = testnet::Testnet::new("fl")
        .with_env("WEFT_BACKEND", "udp")
        .with_env("WEFT_TESTNET_INSECURE", "1");
    net.ok(&["up", "2"]);
    let state_dir = net.host_dir(1).join("state");
    // Declared after the testnet: unmounted before `down` removes the state directory.
    let _tmpfs = TmpfsGuard::mount(&state_dir, "64k");
    let filler = fill(&state_dir);
    net.ok(&["start"]);

    // h1 is active with h2 as a peer, but saves neither file: not ready, and says why.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let s = net.status_json(1);
        let reason = s["ready_reason"].as_str().unwrap_or_default().to_string();
        let warnings = s["warnings"].to_string();
        if s["state"] == "active"
            && reason.contains("state file not saved")
            && warnings.contains("udp peers file not saved")
        {
            break s;
        }
        assert!(Instant::now() < deadline, "h1 status: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status["ready"], false, "{status}");
    assert!(
        status["ready_reason"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{status}"
    );
    assert_eq!(files_in(&state_dir), ["filler"]);

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = net.status_json(1);
        if s["ready"] == true {
            assert!(!s["warnings"].to_string().contains("not saved"), "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "h1 not ready: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let peers = std::fs::read_to_string(state_dir.join("udp-peers")).unwrap();
    assert!(
        peers.lines().any(|l| l.starts_with("h2 ")),
        "udp-peers: {peers}"
    );
    let state = std::fs::read_to_string(state_dir.join("state.json")).unwrap();
    let subnet = net.subnet(1);
    assert!(state.contains(&subnet.network().to_string()), "{state}");
    assert_eq!(files_in(&state_dir), ["state.json", "udp-peers"]);
}
