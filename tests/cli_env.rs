//! The `weft` binary end to end without root: every `weft run` flag read from its `WEFT_*`
//! variable (checked with `--check-config`), exit codes and one-line errors.

use std::process::{Command, Output};

fn weft(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("WEFT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("run weft")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_run_flag_is_read_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let net_conf = dir.path().join("net-conf.json");
    std::fs::write(
        &net_conf,
        r#"{"Backend": {"DirectRouting": false, "VNI": 3}}"#,
    )
    .unwrap();
    let net_conf = net_conf.to_str().unwrap();
    // Paths the check can verify (it creates nothing).
    let state_dir = dir.path().join("weft-env-state").display().to_string();
    let subnet_file = dir
        .path()
        .join("weft-env-state/subnet.env")
        .display()
        .to_string();
    let env = [
        ("WEFT_NODE_NAME", "env-node"),
        ("WEFT_IFACE", "eth9"),
        ("WEFT_PUBLIC_IP", "192.0.2.77"),
        ("WEFT_LISTEN", "192.0.2.77:17000"),
        ("WEFT_ADVERTISE", "198.51.100.7:17001"),
        ("WEFT_SEEDS", "192.0.2.1:7947,seed.example:7947"),
        ("WEFT_NETWORK", "10.77.0.0/16"),
        ("WEFT_SUBNET_LEN", "25"),
        ("WEFT_SUBNET_MIN", "10.77.2.0"),
        ("WEFT_SUBNET_MAX", "10.77.3.128"),
        ("WEFT_SUBNET", "10.77.3.0/25"),
        ("WEFT_NET_CONF", net_conf),
        ("WEFT_BACKEND", "vxlan"),
        ("WEFT_VNI", "4242"),
        ("WEFT_VXLAN_PORT", "4789"),
        ("WEFT_DIRECT_ROUTING", "true"),
        ("WEFT_STATE_DIR", &state_dir),
        ("WEFT_SUBNET_FILE", &subnet_file),
        ("WEFT_BRIDGE", "br-env"),
        ("WEFT_API", "127.0.0.1:17948"),
        ("WEFT_GOSSIP_INTERVAL", "250ms"),
        ("WEFT_SETTLE", "3s"),
        ("WEFT_RESERVATION", "7m"),
        ("WEFT_DEAD_NODE_GRACE", "15m"),
        ("WEFT_RECONCILE_INTERVAL", "4s"),
        ("WEFT_IP_MASQ", "1"),
        ("WEFT_LOG_FORMAT", "json"),
        ("WEFT_CLUSTER_ID", "env-cluster"),
        ("WEFT_INSECURE", "yes"),
        ("WEFT_CHECK_CONFIG", "on"),
        // No interface eth9 here: a dry run announcing --public-ip needs none.
        ("WEFT_DRY_RUN", "1"),
    ];
    let out = weft(&["run"], &env);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "stdout: {text}\nstderr: {}",
        stderr(&out)
    );
    for expected in [
        "node_name: \"env-node\"",
        "Iface(\n        \"eth9\",",
        "192.0.2.77,",
        "listen: 192.0.2.77:17000,",
        "198.51.100.7:17001,",
        "\"192.0.2.1:7947\",\n        \"seed.example:7947\",",
        "network: 10.77.0.0/16,",
        "subnet_len: 25,",
        "subnet_min: 10.77.2.0,",
        "subnet_max: 10.77.3.128,",
        "10.77.3.0/25,",
        "backend: Vxlan,",
        "vni: 4242,",
        "vxlan_port: 4789,",
        "direct_routing: true,",
        &format!("state_dir: {state_dir:?},"),
        &format!("subnet_file: {subnet_file:?},"),
        "\"br-env\",",
        "api: 127.0.0.1:17948,",
        "gossip_interval: 250ms,",
        "settle: 3s,",
        "reservation: 420s,",
        "dead_node_grace: 900s,",
        "reconcile_interval: 4s,",
        "ip_masq: true,",
        "log_format: Json,",
        "cluster_id: \"env-cluster\",",
        "insecure: true,",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn flags_override_environment() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().display().to_string();
    let subnet_file = dir.path().join("subnet.env").display().to_string();
    let out = weft(
        &[
            "run",
            "--check-config",
            "--vni",
            "6",
            "--node-name",
            "flag-node",
        ],
        &[
            ("WEFT_VNI", "5"),
            ("WEFT_NODE_NAME", "env-node"),
            ("WEFT_INSECURE", "1"),
            ("WEFT_DRY_RUN", "1"),
            ("WEFT_PUBLIC_IP", "192.0.2.99"),
            ("WEFT_STATE_DIR", &state),
            ("WEFT_SUBNET_FILE", &subnet_file),
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("vni: 6,"), "{text}");
    assert!(text.contains("node_name: \"flag-node\""), "{text}");
}

#[test]
fn config_errors_exit_2_with_one_line() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("WEFT_NETWORK", "10.0.0.0/33")],
            "weft: invalid WEFT_NETWORK \"10.0.0.0/33\": prefix length 33 is larger than 32\n",
        ),
        (
            &[("WEFT_BACKEND", "udp"), ("WEFT_UDP_ENCRYPTION", "maybe")],
            "weft: invalid WEFT_UDP_ENCRYPTION \"maybe\": expected on or off\n",
        ),
        (
            &[("WEFT_RESERVATION", "2h")],
            "weft: invalid WEFT_RESERVATION \"2h\": must be at most half of --dead-node-grace (2h): \
             dead nodes' records are only gossiped that long\n",
        ),
        (
            &[("WEFT_NET_CONF", "/nonexistent/weft/net-conf.json")],
            "weft: cannot read WEFT_NET_CONF \"/nonexistent/weft/net-conf.json\": No such file or \
             directory (os error 2)\n",
        ),
    ];
    for (env, expected) in cases {
        let mut env = env.to_vec();
        env.push(("WEFT_NODE_NAME", "n1"));
        let out = weft(&["run"], &env);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), expected);
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn status_and_leave_unreachable_exit_1() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = listener.local_addr().unwrap().to_string();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().to_str().unwrap();
    let socket = format!("{state_dir}/api.sock");
    for (sub, env, target) in [
        ("status", ("WEFT_API", api.as_str()), api.as_str()),
        ("leave", ("WEFT_STATE_DIR", state_dir), socket.as_str()),
    ] {
        let out = weft(&[sub], &[env]);
        assert_eq!(out.status.code(), Some(1), "{sub}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("weft: cannot reach the weft agent at {target}: ")),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn version_and_usage() {
    let out = weft(&["version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        format!("weft {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = weft(&["run", "--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

/// `version`, `keygen`, `docker-opts` and `run --check-config` whose output cannot be written
/// (`> /dev/full`, a pipe nobody reads): one line and exit status 1, never a panic.
#[test]
fn unwritable_output_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let subnet_env = dir.path().join("subnet.env");
    std::fs::write(
        &subnet_env,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
    )
    .unwrap();
    let state = dir.path().join("state").display().to_string();
    let subnet_file = subnet_env.display().to_string();
    let commands: [Vec<&str>; 4] = [
        vec!["version"],
        vec!["keygen"],
        vec!["docker-opts", "--subnet-file", &subnet_file],
        vec![
            "run",
            "--check-config",
            "--insecure",
            "--dry-run",
            "--node-name",
            "n1",
            "--public-ip",
            "192.0.2.99",
            "--state-dir",
            &state,
            "--subnet-file",
            &subnet_file,
        ],
    ];
    for args in &commands {
        for closed_pipe in [false, true] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
            cmd.args(args);
            for (key, _) in std::env::vars() {
                if key.starts_with("WEFT_") {
                    cmd.env_remove(key);
                }
            }
            if closed_pipe {
                let (reader, writer) = std::io::pipe().unwrap();
                drop(reader);
                cmd.stdout(writer);
            } else {
                cmd.stdout(std::fs::File::create("/dev/full").unwrap());
            }
            let out = cmd.output().unwrap();
            let err = stderr(&out);
            let want = if closed_pipe {
                "weft: cannot write to standard output: Broken pipe (os error 32)\n"
            } else {
                "weft: cannot write to standard output: No space left on device (os error 28)\n"
            };
            assert_eq!(
                out.status.code(),
                Some(1),
                "{args:?} closed {closed_pipe}: {err}"
            );
            assert!(err.ends_with(want), "{args:?}: {err}");
            assert_eq!(err.matches("weft: ").count(), 1, "{args:?}: {err}");
        }
    }
}
