//! Real `weft run --dry-run` processes on loopback (no root needed): two agents on one machine
//! with different `--state-dir`s are each reached by the client commands given the same flag;
//! a third agent on a state dir in use exits 2; changes over TCP are refused (403) and counted;
//! `weft leave` prints the agent's confirmation and removes the control socket on the way out.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `weft ARGS` with no `WEFT_*` variable from this environment.
fn weft(args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("WEFT_") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run weft")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn keygen(path: &Path) -> String {
    let out = weft(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .split("id ")
        .nth(1)
        .and_then(|s| s.get(..8))
        .expect("keygen prints the id")
        .to_string()
}

/// A dry-run agent named `name` with `<dir>/state` and its own cluster key `<dir>/cluster.key`.
fn spawn(name: &str, dir: &Path, api: &str) -> Agent {
    std::fs::create_dir_all(dir).unwrap();
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(bin())
        .args(["run", "--dry-run", "--node-name", name, "--iface", "lo"])
        .args(["--public-ip", "127.0.0.1", "--gossip-interval", "100ms"])
        .args(["--listen", &format!("127.0.0.1:{}", free_udp())])
        .args(["--api", api])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--subnet-file")
        .arg(dir.join("subnet.env"))
        .arg("--cluster-key-file")
        .arg(dir.join("cluster.key"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Agent { child, log }
}

fn status_of(state_dir: &str) -> Option<serde_json::Value> {
    let out = weft(&["status", "--json", "--state-dir", state_dir]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("status JSON"))
}

fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// One raw HTTP/1.1 request over TCP; the whole answer.
fn raw(api: &str, request: &str) -> String {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn two_agents_one_machine_each_reached_by_its_state_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    keygen(&dir_a.join("cluster.key"));
    keygen(&dir_b.join("cluster.key"));
    let (api_a, api_b) = (free_tcp(), free_tcp());
    let mut a = spawn("alpha", &dir_a, &api_a);
    let mut b = spawn("beta", &dir_b, &api_b);
    let state_a = dir_a.join("state").display().to_string();
    let state_b = dir_b.join("state").display().to_string();

    // `weft status` reaches each agent by its state dir (control socket) or its --api.
    let up = wait_until(Duration::from_secs(20), || {
        status_of(&state_a).is_some() && status_of(&state_b).is_some()
    });
    assert!(up, "agents did not answer:\n{}\n{}", a.log(), b.log());
    assert_eq!(status_of(&state_a).unwrap()["node_name"], "alpha");
    assert_eq!(status_of(&state_b).unwrap()["node_name"], "beta");
    let out = weft(&["status", "--json", "--api", &api_b]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"node_name\": \"beta\""));

    // A third agent on alpha's state dir stops at once, saying why; alpha keeps running.
    let mut c = spawn("gamma", &dir_a, &free_tcp());
    let code = wait_until(Duration::from_secs(10), || {
        c.child.try_wait().unwrap().is_some()
    });
    assert!(code, "a second agent on the same state dir kept running");
    assert_eq!(c.child.wait().unwrap().code(), Some(2), "{}", c.log());
    assert!(c.log().contains("another agent serves"), "{}", c.log());
    assert_eq!(status_of(&state_a).unwrap()["node_name"], "alpha");

    // `weft keys install` goes to the agent of the state dir given, and only there.
    let new_key = tmp.path().join("new.key");
    let id = keygen(&new_key);
    let out = weft(&[
        "keys",
        "install",
        new_key.to_str().unwrap(),
        "--state-dir",
        &state_b,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or(""),
        format!(
            "node beta: installed key {id}; it opens gossip now. Install it on every node, then `weft keys use {id}` everywhere"
        )
    );
    let keys = |state: &str| {
        let out = weft(&["keys", "list", "--json", "--state-dir", state]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["installed"].clone()
    };
    assert!(keys(&state_b).to_string().contains(&id));
    assert!(!keys(&state_a).to_string().contains(&id));

    // Over TCP the same changes are refused (403, naming the socket) and counted.
    for path in ["/v1/leave", "/v1/keys/reload"] {
        let answer = raw(
            &api_a,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert!(answer.contains("weft-node: alpha"), "{answer}");
        assert!(answer.contains(&format!("{state_a}/api.sock")), "{answer}");
    }
    let metrics = raw(
        &api_a,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("weft_api_refused_total{reason=\"tcp\"} 2\n"),
        "{metrics}"
    );
    assert!(a.log().contains("local API request refused"), "{}", a.log());

    // `weft leave` reaches beta only; it prints beta's confirmation, and beta exits and removes
    // its socket.
    let out = weft(&["leave", "--state-dir", &state_b]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.starts_with("node beta: left: subnet "), "{said}");
    assert!(
        wait_until(Duration::from_secs(10), || b
            .child
            .try_wait()
            .unwrap()
            .is_some()),
        "beta kept running after leave"
    );
    assert!(!dir_b.join("state/api.sock").exists());
    let out = weft(&["leave", "--state-dir", &state_b]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("cannot reach the weft agent at"),
        "{}",
        text(&out)
    );
    assert_eq!(status_of(&state_a).unwrap()["node_name"], "alpha");
    assert!(a.child.try_wait().unwrap().is_none(), "{}", a.log());
}
