//! L3 (root): the local API's changes are for root only. Inside a host namespace of the testnet,
//! the user `nobody` tries `weft leave`, `weft keys install|use|remove|reload` and the raw HTTP
//! endpoints (over TCP, and over the control socket once its file is opened to everyone): every
//! attempt is refused, the refusals are counted in `/metrics` and logged, and nothing changes:
//! routes, device, subnet.env, state file, keyring. Then root's `weft leave` works and prints
//! the agent's confirmation. And root's `weft keys install` sends nothing to a socket that
//! `nobody` listens on.

#[path = "common/testnet.rs"]
mod testnet;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use testnet::{Testnet, l3_available_with};

const MUTATING: [&str; 5] = [
    "/v1/leave",
    "/v1/keys/install",
    "/v1/keys/use",
    "/v1/keys/remove",
    "/v1/keys/reload",
];

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `argv` as `nobody:nogroup` (no supplementary groups) in host 1's namespace.
fn as_nobody(net: &Testnet, argv: &[&str]) -> Output {
    let mut all = vec![
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
    ];
    all.extend_from_slice(argv);
    net.exec("h1", &all)
}

/// What nobody must not be able to change on h1.
#[derive(Debug, PartialEq)]
struct Snapshot {
    routes: Vec<String>,
    device: bool,
    subnet_env: String,
    state_file: String,
    key_file: String,
    keys: serde_json::Value,
    seen_by_h2: String,
}

fn snapshot(net: &Testnet, state_dir: &str) -> Snapshot {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| format!("{e}"));
    let out = net.exec(
        "h1",
        &[
            Testnet::bin(),
            "keys",
            "list",
            "--json",
            "--state-dir",
            state_dir,
        ],
    );
    assert!(out.status.success(), "keys list as root: {}", text(&out));
    let mut keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Peers' liveness may flicker; this node's keyring may not.
    keys["nodes"] = serde_json::Value::Null;
    let h2 = net.status_json(2);
    let seen_by_h2 = h2["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "h1"))
        .map(|n| format!("{} {}", n["subnet"], n["state"]))
        .unwrap_or_default();
    Snapshot {
        routes: net.weft_routes(1),
        device: net
            .exec("h1", &["ip", "link", "show", "weft.1"])
            .status
            .success(),
        subnet_env: read(&net.host_dir(1).join("subnet.env")),
        state_file: read(&Path::new(state_dir).join("state.json")),
        key_file: read(&net.state.join("cluster.key")),
        keys,
        seen_by_h2,
    }
}

fn sample(metrics: &str, key: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn nobody_cannot_leave_or_change_keys() {
    let tools = [("curl", "curl"), ("setpriv", "util-linux")];
    if !l3_available_with("nobody_cannot_leave_or_change_keys", &tools) {
        return;
    }
    let net = Testnet::new("ap");
    net.ok(&["up", "2"]);
    net.ok(&["start"]);
    net.ok(&["wait-ready", "90"]);

    // A copy of weft that nobody can run, and a key file nobody can read (a new key: the
    // cluster's own never leaves root's files).
    let public = tempfile::tempdir().unwrap();
    std::fs::set_permissions(public.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = public.path().join("weft");
    std::fs::copy(Testnet::bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin.to_str().unwrap();
    let new_key = public.path().join("new.key");
    let out = std::process::Command::new(bin)
        .args(["keygen", "--out"])
        .arg(&new_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    std::fs::set_permissions(&new_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let new_key = new_key.to_str().unwrap();
    let key_text = std::fs::read_to_string(new_key).unwrap();

    let state_dir = net.agent_state_dir(1);
    let socket = format!("{state_dir}/api.sock");
    let before = snapshot(&net, &state_dir);
    assert!(before.device && !before.routes.is_empty(), "{before:?}");
    let primary = before.keys["primary"].as_str().unwrap().to_string();
    let s1 = net.subnet(1);

    // 1. The client commands, as nobody: the control socket is out of reach (0600, in root's
    //    directories); each fails with one line, exit 1.
    let commands: [Vec<&str>; 5] = [
        vec!["leave"],
        vec!["keys", "install", new_key],
        vec!["keys", "use", &primary],
        vec!["keys", "remove", &primary, "--force"],
        vec!["keys", "reload"],
    ];
    for args in &commands {
        let mut argv = vec![bin];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--state-dir", &state_dir]);
        let out = as_nobody(&net, &argv);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            err.starts_with(&format!("weft: cannot reach the weft agent at {socket}: "))
                && err.contains("Permission denied")
                && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }

    // 2. Raw HTTP over TCP, as nobody: 403 for every change.
    let body = format!(
        "{{\"key\":\"{}\",\"id\":\"{primary}\",\"force\":true}}",
        key_text.trim()
    );
    for path in MUTATING {
        let out = as_nobody(
            &net,
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code}",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data",
                &body,
                &format!("http://127.0.0.1:7948{path}"),
            ],
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{path}: {}", text(&out));
        assert!(said.ends_with("\n403"), "{path}: {said}");
        assert!(
            said.contains(&socket),
            "{path}: the refusal names the socket: {said}"
        );
    }
    // And over the control socket with curl: the kernel refuses the connection.
    let out = as_nobody(
        &net,
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--unix-socket",
            &socket,
            "-X",
            "POST",
            "http://weft/v1/leave",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));

    // 3. The second fence: with the socket's file opened to everyone (a careless chmod), the
    //    agent still refuses other users by their peer credentials.
    let private = net.state.parent().unwrap();
    std::fs::set_permissions(private, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [vec!["leave"], vec!["keys", "install", new_key]] {
        let mut argv = vec![bin];
        argv.extend_from_slice(&args);
        argv.extend_from_slice(&["--state-dir", &state_dir]);
        let out = as_nobody(&net, &argv);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            err.starts_with(&format!(
                "weft: the weft agent h1 at {socket} refused (403): "
            )) && err.contains("accepts only root and the user that runs the agent"),
            "{args:?}: {err}"
        );
    }
    let out = as_nobody(
        &net,
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
            &socket,
            "-X",
            "POST",
            "http://weft/v1/leave",
        ],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.ends_with("\n403"), "{}", text(&out));
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(private, std::fs::Permissions::from_mode(0o700)).unwrap();

    // 4. Nothing changed.
    let after = snapshot(&net, &state_dir);
    assert_eq!(after, before);

    // 5. Every refusal the agent saw is counted, and logged.
    let metrics = net.metrics(1);
    assert_eq!(
        sample(&metrics, "weft_api_refused_total{reason=\"tcp\"}"),
        Some(MUTATING.len() as u64),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "weft_api_refused_total{reason=\"peer_uid\"}"),
        Some(3),
        "{metrics}"
    );
    let log = std::fs::read_to_string(net.host_dir(1).join("weft.log")).unwrap();
    assert!(
        log.contains("local API request refused") && log.contains("over TCP"),
        "{log}"
    );

    // 6. Root: the change goes through, and the agent says what it did.
    let out = net.exec("h1", &[bin, "leave", "--state-dir", &state_dir]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("node h1: left: subnet {s1} released, routes and devices removed\n")
    );
    assert!(
        !Path::new(&socket).exists() || {
            // The agent removes its socket as it exits; give it a moment.
            std::thread::sleep(std::time::Duration::from_secs(2));
            !Path::new(&socket).exists()
        }
    );
}

/// Key material never goes to a socket another user could have bound. `nobody` listens on a
/// socket where an agent's would be (a Python listener that writes down every byte it gets);
/// root's `weft keys install --state-dir` there refuses before sending: first because the file
/// and directory are nobody's, then (with both handed to root, the listener unchanged) because
/// the process listening runs as nobody. The listener receives nothing.
#[test]
fn keys_are_not_sent_to_another_users_socket() {
    // The system python: a per-user one (pyenv) may not be runnable by nobody.
    let tools = [("setpriv", "util-linux"), ("/usr/bin/python3", "python3")];
    if !l3_available_with("keys_are_not_sent_to_another_users_socket", &tools) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake = tmp.path().join("state");
    std::fs::create_dir(&fake).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&fake, Some(65534), Some(65534)).unwrap();
    let socket = fake.join("api.sock");
    let got = fake.join("received");
    let script = format!(
        "import os, socket\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.bind({socket:?})\n\
         os.chmod({socket:?}, 0o600)\n\
         s.listen(8)\n\
         open({got:?}, 'wb').close()\n\
         while True:\n\
         \x20   c, _ = s.accept()\n\
         \x20   data = c.recv(65536)\n\
         \x20   if data:\n\
         \x20       open({got:?}, 'ab').write(data)\n\
         \x20       c.sendall(b'HTTP/1.1 200 OK\\r\\nweft-node: h1\\r\\ncontent-length: 18\\r\\n\\r\\n{{\"message\":\"done\"}}')\n\
         \x20   c.close()\n"
    );
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _listener = Kill(
        std::process::Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .args(["/usr/bin/python3", "-c", &script])
            .spawn()
            .unwrap(),
    );
    let start = std::time::Instant::now();
    while !got.exists() {
        assert!(start.elapsed().as_secs() < 10, "the listener did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let key = tmp.path().join("k.key");
    let out = std::process::Command::new(Testnet::bin())
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let install = || {
        std::process::Command::new(Testnet::bin())
            .args(["keys", "install"])
            .arg(&key)
            .arg("--state-dir")
            .arg(&fake)
            .output()
            .unwrap()
    };
    let out = install();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        err.contains("not trusted, nothing sent: it is owned by uid 65534"),
        "{err}"
    );
    // The file and the directory handed to root: the listener is still nobody's.
    std::os::unix::fs::lchown(&socket, Some(0), Some(0)).unwrap();
    std::os::unix::fs::chown(&fake, Some(0), Some(0)).unwrap();
    let out = install();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        err.contains("not trusted, nothing sent: the process listening on it runs as uid 65534"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&got).unwrap(),
        b"",
        "bytes reached nobody's socket"
    );
    // The listener works: the same request as nobody (who trusts its own socket) gets there.
    std::os::unix::fs::lchown(&socket, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(&fake, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let public_bin = tmp.path().join("weft");
    std::fs::copy(Testnet::bin(), &public_bin).unwrap();
    std::fs::set_permissions(&public_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&public_bin)
        .args(["keys", "install"])
        .arg(&key)
        .arg("--state-dir")
        .arg(&fake)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "node h1: done\n");
    let sent = String::from_utf8_lossy(&std::fs::read(&got).unwrap()).into_owned();
    assert!(
        sent.starts_with("POST /v1/keys/install HTTP/1.1\r\n"),
        "{sent}"
    );
}
