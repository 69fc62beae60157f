//! L3 chaos: real `weft` processes in network namespaces (testnet/netns.sh) with sealed gossip,
//! under partitions, kill -9, wiped state, clock skew, a keyless attacker on the underlay and a
//! live key rotation. Needs root; skips with a reason otherwise, fails instead of skipping when
//! `WEFT_REQUIRE_NETNS=1`. The three tests run in parallel (about a minute each).

#[path = "common/testnet.rs"]
mod testnet;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testnet::{Testnet, l3_available};

const API: &str = "127.0.0.1:7948";

fn nodes(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status["nodes"].as_array().cloned().unwrap_or_default()
}

/// `(name → (liveness, subnet))` of every node host I reports (itself included).
fn view(net: &Testnet, i: usize) -> BTreeMap<String, (String, Option<String>)> {
    let status = net.status_json(i);
    nodes(&status)
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or("?").to_string(),
                (
                    n["liveness"].as_str().unwrap_or("?").to_string(),
                    n["subnet"].as_str().map(str::to_string),
                ),
            )
        })
        .collect()
}

fn own_subnet(net: &Testnet, i: usize) -> Option<String> {
    net.status_json(i)["subnet"].as_str().map(str::to_string)
}

fn ready(net: &Testnet, i: usize) -> bool {
    let out = net.exec(
        &format!("h{i}"),
        &[Testnet::bin(), "status", "--json", "--api", API],
    );
    out.status.success()
        && serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|v| v["ready"] == serde_json::Value::Bool(true))
}

fn wait_ready(net: &Testnet, hosts: &[usize], within: Duration) {
    let ok = net.wait_for(within, || hosts.iter().all(|i| ready(net, *i)));
    if ok.is_none() {
        net.dump_logs();
        panic!("hosts {hosts:?} not ready within {within:?}");
    }
}

/// Host I's Prometheus text, fetched inside its namespace.
fn metrics(net: &Testnet, i: usize) -> String {
    let out = net.exec(
        &format!("h{i}"),
        &[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/7948; printf 'GET /metrics HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; cat <&3",
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of one metric line (`name{labels}`), 0 when absent.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Does host I hold a weft route to `subnet`?
fn has_route(net: &Testnet, i: usize, subnet: &str) -> bool {
    net.weft_routes(i).iter().any(|r| r.starts_with(subnet))
}

fn weft(net: &Testnet, i: usize, args: &[&str]) -> (bool, String) {
    let mut argv = vec![Testnet::bin()];
    argv.extend_from_slice(args);
    let out = net.exec(&format!("h{i}"), &argv);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn partition_heals_without_double_owners() {
    if !l3_available("partition_heals_without_double_owners") {
        return;
    }
    let net = Testnet::new("cp");
    // Simultaneous start of 4 hosts with no state: distinct subnets.
    net.up_and_ready(4);
    let subnets: Vec<String> = (1..=4).map(|i| net.subnet(i).to_string()).collect();
    let mut distinct = subnets.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "simultaneous start gave {subnets:?}");

    net.ok(&["partition", "1,2", "3,4"]);
    let split = net.wait_for(Duration::from_secs(30), || {
        let v1 = view(&net, 1);
        let v3 = view(&net, 3);
        v1.get("h3").is_some_and(|n| n.0 == "dead") && v3.get("h1").is_some_and(|n| n.0 == "dead")
    });
    assert!(split.is_some(), "the sides never saw each other dead");
    // Each side keeps working: pings inside each side, routes to the other side kept.
    assert_eq!(net.ping(1, 2, 3, "0.2").received, 3);
    assert_eq!(net.ping(3, 4, 3, "0.2").received, 3);
    assert!(
        has_route(&net, 1, &subnets[2]),
        "h1 dropped h3's route in the partition"
    );

    net.ok(&["heal"]);
    let healed = net.wait_for(Duration::from_secs(30), || {
        (1..=4).all(|i| {
            let v = view(&net, i);
            let alive: Vec<_> = v.iter().filter(|(_, n)| n.0 == "alive").collect();
            // Every host sees every other alive and has a route to each of them.
            alive.len() == 4
                && (1..=4)
                    .filter(|j| *j != i)
                    .all(|j| has_route(&net, i, &subnets[j - 1]))
        })
    });
    if healed.is_none() {
        net.dump_logs();
        panic!("not healed within 30 s");
    }
    // No subnet has two owners: every host reports the same owner per subnet.
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for i in 1..=4 {
        for (name, (_, subnet)) in view(&net, i) {
            if let Some(s) = subnet
                && let Some(prev) = owners.insert(s.clone(), name.clone())
            {
                assert_eq!(prev, name, "subnet {s} has two owners");
            }
        }
    }
    for (i, j) in [(1, 3), (4, 2), (2, 4), (3, 1)] {
        assert!(
            net.ping_eventually(i, j, Duration::from_secs(10)).is_some(),
            "c{i} -> c{j} after heal"
        );
    }
}

#[test]
fn kill_wipe_skew_and_leave() {
    if !l3_available("kill_wipe_skew_and_leave") {
        return;
    }
    let net = Testnet::new("ck");
    net.ok(&["up", "4"]);
    net.ok(&["start", "3"]);
    wait_ready(&net, &[1, 2, 3], Duration::from_secs(60));
    let s1 = net.subnet(1).to_string();
    let s3 = net.subnet(3).to_string();

    // kill -9: peers mark it dead within 15 s and keep its routes.
    net.ok(&["kill", "3"]);
    let dead = net.wait_for(Duration::from_secs(15), || {
        [1, 2]
            .iter()
            .all(|i| view(&net, *i).get("h3").is_some_and(|n| n.0 == "dead"))
    });
    assert!(dead.is_some(), "h3 not marked dead within 15 s");
    assert!(
        has_route(&net, 1, &s3) && has_route(&net, 2, &s3),
        "dead h3's routes dropped"
    );
    // Restart keeps the subnet.
    net.ok(&["start", "3"]);
    wait_ready(&net, &[3], Duration::from_secs(40));
    assert_eq!(own_subnet(&net, 3).as_deref(), Some(s3.as_str()));

    // State dir wiped while down: the same subnet comes back (from its dead record).
    net.ok(&["stop", "3"]);
    std::fs::remove_dir_all(net.host_dir(3).join("state")).unwrap();
    let _ = std::fs::remove_file(net.host_dir(3).join("subnet.env"));
    net.ok(&["start", "3"]);
    wait_ready(&net, &[3], Duration::from_secs(40));
    assert_eq!(
        own_subnet(&net, 3).as_deref(),
        Some(s3.as_str()),
        "wiped state"
    );

    // A node whose clock is 30 s ahead cannot take a settled subnet.
    std::fs::write(
        net.host_dir(4).join("extra-args"),
        format!("--clock-offset-ms 30000 --subnet {s1}\n"),
    )
    .unwrap();
    net.ok(&["start", "4"]);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(own_subnet(&net, 1).as_deref(), Some(s1.as_str()));
    assert!(ready(&net, 1), "h1 lost readiness to a skewed claimant");
    let m1 = metrics(&net, 1);
    assert_eq!(
        metric(&m1, "weft_claims_lost_total{was_active=\"true\"}"),
        0
    );
    let s4 = own_subnet(&net, 4);
    assert!(
        !ready(&net, 4) || s4.as_deref() != Some(s1.as_str()),
        "h4 took {s1}"
    );
    let h2_routes = net.weft_routes(2);
    assert!(
        h2_routes
            .iter()
            .any(|r| r.starts_with(&s1) && r.contains(&format!("via {}", net.subnet(1).network()))),
        "h2 must still route {s1} to h1: {h2_routes:?}"
    );
    net.ok(&["kill", "4"]);

    // `weft leave`: its subnet is free and peers remove its routes within 15 s.
    let (ok, text) = weft(&net, 3, &["leave", "--state-dir", &net.agent_state_dir(3)]);
    assert!(ok, "weft leave: {text}");
    let gone = net.wait_for(Duration::from_secs(15), || {
        !has_route(&net, 1, &s3) && !has_route(&net, 2, &s3)
    });
    assert!(gone.is_some(), "peers kept h3's routes after leave");
    for i in [1, 2] {
        let v = view(&net, i);
        assert!(
            v.iter()
                .all(|(name, (_, s))| name == "h3" || s.as_deref() != Some(s3.as_str())),
            "{s3} held after leave: {v:?}"
        );
    }
}

/// Gossip datagrams seen arriving at host I's underlay interface (AF_PACKET capture inside
/// its namespace), as (source, UDP payload).
fn capture_gossip(net: &Testnet, i: usize, count: usize) -> Vec<([u8; 4], Vec<u8>)> {
    let ns = format!("/run/netns/{}", net.ns(&format!("h{i}")));
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).expect("open netns");
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                (libc::ETH_P_IP as u16).to_be() as i32,
            )
        };
        assert!(fd >= 0, "AF_PACKET socket");
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: fd is a valid socket and tv a valid timeval of the given size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        let mut got = Vec::new();
        let mut buf = vec![0u8; 70_000];
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < count && Instant::now() < deadline {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else { continue };
            let pkt = &buf[..n];
            if pkt.len() < 28 || pkt[9] != 17 {
                continue;
            }
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let Some(udp) = pkt.get(ihl..) else { continue };
            if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != 7947 {
                continue;
            }
            let src = [pkt[12], pkt[13], pkt[14], pkt[15]];
            got.push((src, udp[8..].to_vec()));
        }
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        got
    })
    .join()
    .expect("capture thread")
}

/// Sends datagrams from the attacker namespace.
fn attacker_send(net: &Testnet, datagrams: Vec<(String, Vec<u8>)>) {
    let ns = format!("/run/netns/{}", net.ns("a"));
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).expect("open netns");
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let s = UdpSocket::bind("172.31.250.250:0").expect("bind in attacker ns");
        for (to, d) in datagrams {
            let _ = s.send_to(&d, &to);
            std::thread::sleep(Duration::from_micros(300));
        }
    })
    .join()
    .expect("attacker thread");
}

/// A deterministic pseudo-random byte stream (xorshift), so a failure can be replayed.
fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 24) as u8
        })
        .collect()
}

/// A `weft run` in the attacker namespace; killed on drop.
struct Rogue(Child);

impl Drop for Rogue {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rogue(
    net: &Testnet,
    dir: &std::path::Path,
    name: &str,
    subnet: &str,
    key: Option<&str>,
) -> Rogue {
    let mut args = vec![
        "netns".to_string(),
        "exec".into(),
        net.ns("a"),
        Testnet::bin().into(),
        "run".into(),
        "--node-name".into(),
        name.into(),
        "--iface".into(),
        "veth-ul".into(),
        "--listen".into(),
        "172.31.250.250:7947".into(),
        "--seeds".into(),
        "172.31.250.11:7947,172.31.250.12:7947".into(),
        "--subnet".into(),
        subnet.into(),
        "--state-dir".into(),
        dir.join(format!("{name}-state")).display().to_string(),
        "--subnet-file".into(),
        dir.join(format!("{name}-subnet.env")).display().to_string(),
        "--api".into(),
        "127.0.0.1:7948".into(),
        "--gossip-interval".into(),
        "200ms".into(),
        "--dry-run".into(),
    ];
    match key {
        Some(k) => args.extend(["--cluster-key-file".to_string(), k.to_string()]),
        None => args.push("--insecure".into()),
    }
    let child = Command::new("ip")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rogue weft");
    Rogue(child)
}

fn drops(text: &str, reason: &str) -> u64 {
    metric(
        text,
        &format!("weft_gossip_dropped_total{{reason=\"{reason}\"}}"),
    )
}

#[test]
fn keyless_attacker_changes_nothing_and_keys_rotate_live() {
    if !l3_available("keyless_attacker_changes_nothing_and_keys_rotate_live") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::new("ca");
    net.ok(&["up", "3"]);
    // Each host its own keyring file (rotation edits it), all starting with key K1.
    let k1 = dir.path().join("k1.key");
    let out = Command::new(Testnet::bin())
        .args(["keygen", "--out"])
        .arg(&k1)
        .output()
        .unwrap();
    assert!(out.status.success());
    for i in 1..=3 {
        std::fs::copy(&k1, net.host_dir(i).join("cluster.key")).unwrap();
    }
    net.ok(&["start"]);
    wait_ready(&net, &[1, 2, 3], Duration::from_secs(60));
    net.ok(&["wire-containers"]);
    net.ok(&["attacker"]);

    let before: Vec<_> = (1..=3).map(|i| view(&net, i)).collect();
    let routes_before: Vec<_> = (1..=3).map(|i| net.weft_routes(i)).collect();
    let m_before: Vec<_> = (1..=3).map(|i| metrics(&net, i)).collect();

    // 1. Random bytes, and random bytes behind a valid-looking header, to every host.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut junk = Vec::new();
    for i in 1..=3 {
        for n in 0..300usize {
            let len = (n * 37) % 1500;
            let mut d = noise(&mut seed, len);
            if n % 2 == 0 && d.len() >= 33 {
                d[..4].copy_from_slice(b"WFT\x01");
                d[4] = 0x01;
            }
            junk.push((format!("172.31.250.{}:7947", 10 + i), d));
        }
    }
    attacker_send(&net, junk);

    // 2. Replay: datagrams captured on their way to h2, re-sent to h2.
    let captured = capture_gossip(&net, 2, 20);
    assert!(
        captured.len() >= 5,
        "captured only {} gossip datagrams",
        captured.len()
    );
    std::thread::sleep(Duration::from_millis(500));
    attacker_send(
        &net,
        captured
            .iter()
            .map(|(_, d)| ("172.31.250.12:7947".to_string(), d.clone()))
            .collect(),
    );

    // 3. Crafted records: a keyless agent and a wrong-key agent impersonating h1 and claiming
    //    h2's subnet.
    let s2 = net.subnet(2).to_string();
    let wrong = dir.path().join("wrong.key");
    let out = Command::new(Testnet::bin())
        .args(["keygen", "--out"])
        .arg(&wrong)
        .output()
        .unwrap();
    assert!(out.status.success());
    {
        let _insecure = rogue(&net, dir.path(), "h1", &s2, None);
        std::thread::sleep(Duration::from_secs(4));
    }
    {
        let _wrong_key = rogue(
            &net,
            dir.path(),
            "h9",
            &s2,
            Some(&wrong.display().to_string()),
        );
        std::thread::sleep(Duration::from_secs(4));
    }

    // Nothing changed anywhere: same nodes, subnets, liveness and routes.
    for i in 1..=3 {
        assert_eq!(view(&net, i), before[i - 1], "h{i}'s view changed");
        assert_eq!(
            net.weft_routes(i),
            routes_before[i - 1],
            "h{i}'s routes changed"
        );
        assert!(ready(&net, i));
    }
    let m_after: Vec<_> = (1..=3).map(|i| metrics(&net, i)).collect();
    for i in 0..3 {
        assert!(
            drops(&m_after[i], "malformed") > drops(&m_before[i], "malformed"),
            "h{}: malformed drops did not move",
            i + 1
        );
    }
    assert!(
        drops(&m_after[1], "replay") > drops(&m_before[1], "replay"),
        "h2: no replay drops"
    );
    let plaintext: u64 = m_after.iter().map(|m| drops(m, "plaintext")).sum();
    let unknown: u64 = m_after.iter().map(|m| drops(m, "unknown_key")).sum();
    assert!(plaintext > 0, "keyless agent's datagrams not counted");
    assert!(unknown > 0, "wrong-key agent's datagrams not counted");
    assert_eq!(drops(&m_after[0], "auth"), drops(&m_before[0], "auth"));

    // Live rotation K1 → K2 through `weft keys`, with traffic checks at every step.
    let k2 = dir.path().join("k2.key");
    let out = Command::new(Testnet::bin())
        .args(["keygen", "--out"])
        .arg(&k2)
        .output()
        .unwrap();
    assert!(out.status.success());
    let k2_id = String::from_utf8_lossy(&out.stdout)
        .split("id ")
        .nth(1)
        .and_then(|s| s.get(..8))
        .expect("keygen prints the key id")
        .to_string();
    let k1_id = {
        let (_, text) = weft(&net, 1, &["keys", "list", "--json", "--api", API]);
        let v: serde_json::Value = serde_json::from_str(&text).expect("keys JSON");
        v["primary"].as_str().unwrap().to_string()
    };
    let k2_path = k2.display().to_string();
    for i in [1, 2] {
        let sd = net.agent_state_dir(i);
        let (ok, text) = weft(&net, i, &["keys", "install", &k2_path, "--state-dir", &sd]);
        assert!(ok, "install on h{i}: {text}");
    }
    // h3 lacks K2: switching to it must be refused, naming h3.
    let sd = net.agent_state_dir(1);
    let (ok, text) = weft(&net, 1, &["keys", "use", &k2_id, "--state-dir", &sd]);
    assert!(
        !ok && text.contains("h3"),
        "use before h3 has the key: {text}"
    );
    let sd = net.agent_state_dir(3);
    let (ok, text) = weft(&net, 3, &["keys", "install", &k2_path, "--state-dir", &sd]);
    assert!(ok, "install on h3: {text}");
    let all_hold = net.wait_for(Duration::from_secs(10), || {
        let (_, text) = weft(&net, 1, &["keys", "list", "--json", "--api", API]);
        serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| {
            nodes(&v)
                .iter()
                .filter(|n| n["alive"] == serde_json::Value::Bool(true))
                .count()
                == 3
                && nodes(&v).iter().all(|n| {
                    n["keys"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|x| x.as_str() == Some(k2_id.as_str())))
                })
        })
    });
    assert!(all_hold.is_some(), "not every node announced key {k2_id}");
    for i in 1..=3 {
        // h1 saw every node announce the key; h{i}'s own view may be a gossip round behind,
        // and `use` is refused until it sees that too.
        let mut last = String::new();
        let used = net.wait_for(Duration::from_secs(10), || {
            let sd = net.agent_state_dir(i);
            let (ok, text) = weft(&net, i, &["keys", "use", &k2_id, "--state-dir", &sd]);
            last = text;
            ok
        });
        assert!(used.is_some(), "use on h{i}: {last}");
    }
    assert_eq!(net.ping(1, 3, 3, "0.2").received, 3);
    let switched = net.wait_for(Duration::from_secs(10), || {
        let (_, text) = weft(&net, 2, &["keys", "list", "--api", API]);
        text.contains(&format!(
            "key {k2_id}: installed on 3/3 live nodes, primary on 3"
        ))
    });
    assert!(switched.is_some(), "not every node seals with {k2_id}");
    for i in 1..=3 {
        let sd = net.agent_state_dir(i);
        let (ok, text) = weft(&net, i, &["keys", "remove", &k1_id, "--state-dir", &sd]);
        assert!(ok, "remove on h{i}: {text}");
    }
    // The change persisted: h2 restarts with only K2 in its file and rejoins.
    let file = std::fs::read_to_string(net.host_dir(2).join("cluster.key")).unwrap();
    let k2_text = std::fs::read_to_string(&k2).unwrap();
    assert!(
        file.contains(&format!("primary {}", k2_text.trim())),
        "{file}"
    );
    assert_eq!(
        file.lines().filter(|l| !l.starts_with('#')).count(),
        1,
        "{file}"
    );
    net.ok(&["restart", "2"]);
    wait_ready(&net, &[1, 2, 3], Duration::from_secs(40));
    for (i, j) in [(1, 2), (2, 3), (3, 1)] {
        assert!(
            net.ping_eventually(i, j, Duration::from_secs(10)).is_some(),
            "c{i} -> c{j} after rotation"
        );
    }
}
