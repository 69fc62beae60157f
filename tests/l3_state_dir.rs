//! L3 (root): a state directory that cannot hold the claim is a start-up error. A real `weft run`
//! (no `--dry-run`) in a private network namespace with an underlay, its state directory on a
//! read-only tmpfs (mounted in the process's own mount namespace, so it vanishes with it) or a
//! plain file: exit 2, one line naming the path, the same from `--check-config`, and nothing
//! programmed in the namespace. A writable state directory on the same command line starts and
//! programs the VXLAN device, which shows the refusal comes before the kernel is touched.

#[path = "common/netns.rs"]
mod netns;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use netns::{NetnsGuard, netns_available};

/// A namespace with an underlay: `ul0` (one end of a veth pair) holding 192.0.2.10/24.
fn host() -> NetnsGuard {
    let ns = NetnsGuard::new("wsd").expect("create a network namespace");
    ns.ip(&["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"])
        .unwrap();
    ns.ip(&["link", "set", "ul1", "up"]).unwrap();
    ns.ip(&["addr", "add", "192.0.2.10/24", "dev", "ul0"])
        .unwrap();
    ns.ip(&["link", "set", "ul0", "up"]).unwrap();
    ns
}

/// `weft run` in `ns`, in a new mount namespace where `setup` (shell) ran first; the state
/// directory is `state`.
fn weft(ns: &NetnsGuard, dir: &Path, setup: &str, state: &Path, check: bool) -> Command {
    let mut script = format!(
        "set -e; {setup}; exec nsenter --net=/run/netns/{} \"$@\"",
        ns.name()
    );
    if setup.is_empty() {
        script = format!("exec nsenter --net=/run/netns/{} \"$@\"", ns.name());
    }
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .arg(env!("CARGO_BIN_EXE_weft"))
    .args([
        "run",
        "--node-name",
        "h1",
        "--insecure",
        "--iface",
        "ul0",
        "--network",
        "10.98.0.0/16",
        "--api",
        "127.0.0.1:7948",
    ])
    .arg("--state-dir")
    .arg(state)
    .arg("--subnet-file")
    .arg(dir.join("subnet.env"));
    if check {
        cmd.arg("--check-config");
    }
    for (key, _) in std::env::vars() {
        if key.starts_with("WEFT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn wait(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "weft was not refused within {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn weft_devices(ns: &NetnsGuard) -> Vec<String> {
    ns.ip(&["-o", "link", "show"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_string))
        .filter(|name| name.starts_with("weft"))
        .collect()
}

/// Both `--check-config` and `run` refuse with exactly `line`, and nothing is programmed.
fn refused(ns: &NetnsGuard, dir: &Path, setup: &str, state: &Path, line: &str) {
    for check in [true, false] {
        let child = weft(ns, dir, setup, state, check).spawn().unwrap();
        let out = wait(child, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "check {check}: {stderr}");
        assert_eq!(stderr, format!("{line}\n"), "check {check}");
        assert!(out.stdout.is_empty(), "check {check}");
        assert_eq!(weft_devices(ns), Vec::<String>::new(), "check {check}");
    }
}

#[test]
fn state_dir_that_cannot_hold_the_claim_is_refused_before_the_kernel() {
    if !netns_available("state_dir_that_cannot_hold_the_claim_is_refused_before_the_kernel") {
        return;
    }
    let ns = host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let read_only = format!(
        "mount -t tmpfs weft-test {d}/ro && mkdir {d}/ro/state && mount -o remount,ro {d}/ro"
    );

    // An existing state directory on a read-only filesystem (root's permission bits would let
    // it write anywhere: only the probe file notices).
    let state = ro.join("state");
    refused(
        &ns,
        dir.path(),
        &read_only,
        &state,
        &format!(
            "weft: unusable --state-dir \"{d}/ro/state\": cannot write in it: Read-only file \
             system (os error 30)"
        ),
    );
    // One that would have to be created there.
    let state = ro.join("state/sub");
    refused(
        &ns,
        dir.path(),
        &read_only,
        &state,
        &format!(
            "weft: unusable --state-dir \"{d}/ro/state/sub\": cannot create it: Read-only file \
             system (os error 30)"
        ),
    );
    // A plain file.
    let file = dir.path().join("state-file");
    std::fs::write(&file, "not a directory").unwrap();
    refused(
        &ns,
        dir.path(),
        "",
        &file,
        &format!("weft: unusable --state-dir \"{d}/state-file\": not a directory"),
    );
    assert!(
        !ro.join("state").exists(),
        "the tmpfs stayed in its mount namespace"
    );

    // The same command line with a usable state directory starts and programs the kernel.
    let state = dir.path().join("state");
    let mut child = weft(&ns, dir.path(), "", &state, false)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut devices = Vec::new();
    while start.elapsed() < Duration::from_secs(20) && devices.is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "weft run exited");
        std::thread::sleep(Duration::from_millis(200));
        devices = weft_devices(&ns);
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    assert!(
        devices.iter().any(|d| d.starts_with("weft.1")),
        "{devices:?}"
    );
    assert!(state.is_dir());
}
