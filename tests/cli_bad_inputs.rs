//! Every operator mistake refused before anything happens, in one line: a table of bad inputs
//! from every source (flags, `WEFT_*` variables, net-conf.json, key files, state and subnet
//! paths, the API address), each run through the real `weft` binary twice, as
//! `weft run --check-config` and as `weft run`, which must agree: exit status 2 and exactly the
//! expected line on standard error, nothing on standard output.
//!
//! The base command line is one on which `weft run` starts (a `--dry-run` agent on loopback;
//! `base_config_starts` proves it), so a refusal shows the check comes before anything else.
//! Cases without `--dry-run` run inside a fresh network namespace when root (`unshare --net`),
//! so that even a regression cannot touch this host's kernel. Add a row whenever an input
//! appears.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A 32-byte key, base64 (what `weft keygen` writes).
const KEY: &str = "3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";

/// One bad input.
struct Case {
    name: &'static str,
    /// Flags replacing (or, with `None`, removing) the base flag of the same name, or added.
    flags: Vec<(&'static str, Option<String>)>,
    env: Vec<(&'static str, String)>,
    /// Files created in the case's directory first: (name, contents, mode).
    files: Vec<(&'static str, String, u32)>,
    dirs: Vec<&'static str>,
    /// Arguments appended as they are, after the flags.
    extra: Vec<&'static str>,
    /// The one line expected on standard error, `{dir}` standing for the case's directory.
    line: String,
    status: i32,
}

fn case(name: &'static str, line: &str) -> Case {
    Case {
        name,
        flags: Vec::new(),
        env: Vec::new(),
        files: Vec::new(),
        dirs: Vec::new(),
        extra: Vec::new(),
        line: format!("weft: {line}"),
        status: 2,
    }
}

impl Case {
    fn set(mut self, flag: &'static str, value: &str) -> Self {
        self.flags.push((flag, Some(value.to_string())));
        self
    }
    fn unset(mut self, flag: &'static str) -> Self {
        self.flags.push((flag, None));
        self
    }
    fn env(mut self, key: &'static str, value: &str) -> Self {
        self.env.push((key, value.to_string()));
        self
    }
    fn file(mut self, name: &'static str, contents: &str, mode: u32) -> Self {
        self.files.push((name, contents.to_string(), mode));
        self
    }
    fn extra(mut self, arg: &'static str) -> Self {
        self.extra.push(arg);
        self
    }
    fn dir(mut self, name: &'static str) -> Self {
        self.dirs.push(name);
        self
    }
    /// Gossip sealed with the key file `name` instead of `--insecure`.
    fn key(self, name: &'static str) -> Self {
        self.unset("--insecure")
            .set("--cluster-key-file", &format!("{{dir}}/{name}"))
    }
    /// Without `--dry-run`: `run` would program the kernel if the refusal failed.
    fn live(self) -> Self {
        self.unset("--dry-run")
    }
    /// A net-conf.json with these contents (and no `--network`, which would override it).
    fn net_conf(self, text: &str) -> Self {
        self.unset("--network")
            .file("net-conf.json", text, 0o600)
            .set("--net-conf", "{dir}/net-conf.json")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The flags on which `weft run` starts: a dry-run agent on loopback, in `dir`.
fn base(dir: &Path) -> Vec<(&'static str, Option<String>)> {
    let d = dir.display();
    vec![
        ("--node-name", Some("t1".into())),
        ("--dry-run", None),
        ("--insecure", None),
        ("--iface", Some("lo".into())),
        ("--public-ip", Some("127.0.0.1".into())),
        ("--listen", Some(format!("127.0.0.1:{}", free_port()))),
        ("--api", Some(format!("127.0.0.1:{}", free_port()))),
        ("--state-dir", Some(format!("{d}/state"))),
        ("--subnet-file", Some(format!("{d}/run/subnet.env"))),
        ("--network", Some("10.99.0.0/16".into())),
    ]
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `weft run ARGS` with exactly the `WEFT_*` variables given.
fn command(args: &[String], env: &[(&str, String)], netns: bool) -> Command {
    let mut cmd = if netns {
        let mut c = Command::new("unshare");
        c.args(["--net", "--", env!("CARGO_BIN_EXE_weft")]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_weft"))
    };
    cmd.arg("run").args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("WEFT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child` at most `limit`; kills it (and says so) if it is still running.
fn wait(mut child: Child, limit: Duration) -> Result<Output, String> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(|e| e.to_string()),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                return Err(format!(
                    "still running after {limit:?} (not refused); stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e.to_string());
            }
        }
    }
}

/// Runs one case both ways; returns what went wrong, if anything.
fn check(case: &Case) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path().display().to_string();
    let fill = |s: &str| s.replace("{dir}", &d);
    for name in &case.dirs {
        std::fs::create_dir_all(dir.path().join(name)).map_err(|e| e.to_string())?;
    }
    for (name, contents, mode) in &case.files {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| e.to_string())?;
    }
    let mut flags = base(dir.path());
    for (flag, value) in &case.flags {
        flags.retain(|(f, _)| f != flag);
        if value.is_some() {
            flags.push((flag, value.as_deref().map(fill)));
        }
    }
    let mut args: Vec<String> = Vec::new();
    for (flag, value) in flags {
        args.push(flag.to_string());
        if let Some(v) = value {
            args.push(v);
        }
    }
    args.extend(case.extra.iter().map(|a| a.to_string()));
    let env: Vec<(&str, String)> = case.env.iter().map(|(k, v)| (*k, fill(v))).collect();
    let live =
        !args.iter().any(|a| a == "--dry-run") && !env.iter().any(|(k, _)| *k == "WEFT_DRY_RUN");
    let netns = live && is_root();
    let expected = format!("{}\n", fill(&case.line));
    for check_config in [true, false] {
        let mut args = args.clone();
        if check_config {
            args.push("--check-config".into());
        }
        let what = if check_config {
            "run --check-config"
        } else {
            "run"
        };
        let child = command(&args, &env, netns)
            .spawn()
            .map_err(|e| format!("{what}: cannot start: {e}"))?;
        let out = wait(child, Duration::from_secs(10)).map_err(|e| format!("{what}: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(case.status) || stderr != expected || !out.stdout.is_empty() {
            return Err(format!(
                "{what} {args:?} env {env:?}: exit {:?} (want {}), stderr {stderr:?} (want \
                 {expected:?}), stdout {:?}",
                out.status.code(),
                case.status,
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    if dir.path().join("state/state.json").exists() {
        return Err("a refused run saved state".into());
    }
    Ok(())
}

fn cases() -> Vec<Case> {
    let bool_line = |var: &str, v: &str| {
        format!("invalid {var} \"{v}\": expected true or false (or yes/no, on/off, 1/0)")
    };
    vec![
        // --- Flags: empty values never mean the default.
        case("empty network", "invalid --network \"\": empty value (omit it to use the default, 10.244.0.0/16)")
            .set("--network", ""),
        case("empty node name", "invalid --node-name \"\": empty value (omit it to use the default, the hostname)")
            .set("--node-name", ""),
        case("empty backend", "invalid --backend \"\": empty value (omit it to use the default, vxlan)")
            .set("--backend", ""),
        case("empty listen", "invalid --listen \"\": empty value (omit it to use the default, 0.0.0.0:7947)")
            .set("--listen", ""),
        case("empty state dir", "invalid --state-dir \"\": empty value (give a value, or omit the flag)")
            .set("--state-dir", ""),
        case("empty subnet file", "invalid --subnet-file \"\": empty value (give a value, or omit the flag)")
            .set("--subnet-file", ""),
        case("empty key file", "invalid --cluster-key-file \"\": empty value (give a value, or omit the flag)")
            .unset("--insecure").set("--cluster-key-file", ""),
        // --- Overlay networks that cannot work.
        case("loopback network", "invalid --network \"127.0.0.0/16\": cannot be an overlay network: 127.0.0.0/8 is loopback: packets never leave the host")
            .set("--network", "127.0.0.0/16"),
        case("multicast network", "invalid --network \"224.0.0.0/8\": cannot be an overlay network: 224.0.0.0/4 is multicast, not addresses of hosts")
            .set("--network", "224.0.0.0/8"),
        case("link-local network", "invalid --network \"169.254.0.0/16\": cannot be an overlay network: 169.254.0.0/16 is link-local: routers do not forward it")
            .set("--network", "169.254.0.0/16"),
        case("this-network", "invalid --network \"0.0.0.0/8\": cannot be an overlay network: 0.0.0.0/8 means \"this host\" and is never routed")
            .set("--network", "0.0.0.0/8"),
        case("everything", "invalid --network \"0.0.0.0/0\": cannot be an overlay network: 0.0.0.0/8 means \"this host\" and is never routed")
            .set("--network", "0.0.0.0/0"),
        case("network too small", "invalid --network \"10.0.0.0/30\": too small: a /30 network holds no /24 node subnet (use a /23 or larger network, or set --subnet-len)")
            .set("--network", "10.0.0.0/30"),
        case("subnet does not fit", "invalid --subnet-len \"16\": a /16 node subnet does not fit in the network 10.99.0.0/16: use a length from 17 to 30")
            .set("--subnet-len", "16"),
        case("prefix over 32", "invalid --network \"10.0.0.0/33\": prefix length 33 is larger than 32")
            .set("--network", "10.0.0.0/33"),
        case("host bits", "invalid --network \"10.99.1.0/16\": host bits are set (did you mean 10.99.0.0/16?)")
            .set("--network", "10.99.1.0/16"),
        case("ipv6 network", "invalid --network \"fd00::/64\": IPv6: the IPv6 overlay has its own flags (--ipv6-network, --ipv6-subnet-min/max)")
            .set("--network", "fd00::/64"),
        case("ipv4 in ipv6 network", "invalid --ipv6-network \"10.0.0.0/16\": an IPv4 network goes in --network")
            .set("--ipv6-network", "10.0.0.0/16"),
        case("ipv6 link-local network", "invalid --ipv6-network \"fe80::/56\": cannot be an overlay network: fe80::/10 is link-local: routers do not forward it")
            .set("--ipv6-network", "fe80::/56"),
        case("ipv6 subnet len out of range", "invalid --ipv6-subnet-len \"127\": must be a whole number from 1 to 126")
            .set("--ipv6-network", "fd00:99::/56").set("--ipv6-subnet-len", "127"),
        case("ipv6 pool smaller than the ipv4 one", "invalid --ipv6-network: its claimable subnets fd00:99:0:1:: to fd00:99:0:f:: (indices 1..=15) do not pair every IPv4 subnet 10.99.1.0 to 10.99.255.0 (indices 1..=255): a node's IPv6 subnet has its IPv4 subnet's index (use a larger IPv6 network, or a smaller IPv4 range)")
            .set("--ipv6-network", "fd00:99::/60"),
        case("no family left", "invalid --no-ipv4: no address family left: an IPv6-only overlay needs --ipv6-network (or EnableIPv6 with IPv6Network)")
            .extra("--no-ipv4"),
        case("ipv6-only pool too wide", "invalid --ipv6-network: an IPv6-only overlay claims among at most 1048576 subnets, and fd00:99:0:1:: to fd00:99:ffff:ffff:: holds 4294967295: narrow it with --ipv6-subnet-min/--ipv6-subnet-max (IPv6SubnetMin/IPv6SubnetMax) or a longer prefix")
            .set("--ipv6-network", "fd00:99::/32").extra("--no-ipv4"),
        case("ipv6-only with a static ipv4 subnet", "invalid --subnet: 10.99.3.0/24 is an IPv4 subnet, and the overlay is IPv6-only")
            .set("--ipv6-network", "fd00:99::/56").set("--subnet", "10.99.3.0/24").extra("--no-ipv4"),
        case("subnet len 31", "invalid --subnet-len \"31\": must be a whole number from 1 to 30")
            .set("--subnet-len", "31"),
        case("static subnet outside", "invalid --subnet \"10.98.0.0/24\": outside the network 10.99.0.0/16")
            .set("--subnet", "10.98.0.0/24"),
        case("subnet min misaligned", "invalid --subnet-min \"10.99.0.5\": not the start of a /24 subnet (did you mean 10.99.0.0?)")
            .set("--subnet-min", "10.99.0.5"),
        // --- Backend.
        case("negative vni", "invalid --vni \"-5\": must be a whole number from 1 to 16777215")
            .set("--vni", "-5"),
        case("vni 0", "invalid --vni \"0\": must be a whole number from 1 to 16777215")
            .set("--vni", "0"),
        case("vxlan port too big", "invalid --vxlan-port \"70000\": must be a whole number from 1 to 65535")
            .set("--vxlan-port", "70000"),
        case("unknown backend", "invalid --backend \"ipsec\": unknown backend (expected vxlan, host-gw or udp)")
            .set("--backend", "ipsec"),
        case("encryption without a key", "invalid --udp-encryption \"on\": conflicts with --insecure: without a cluster key the tunnel's key exchange is unauthenticated, so encryption would be a false promise (give --cluster-key-file instead)")
            .set("--backend", "udp").set("--udp-encryption", "on"),
        case("udp encryption maybe", "invalid --udp-encryption \"maybe\": expected on or off")
            .set("--udp-encryption", "maybe"),
        // --- Seeds, listen, addresses.
        case("seeds empty after parsing", "invalid --seeds \",\": no seed left after parsing (omit it to start a new mesh)")
            .set("--seeds", ","),
        case("duplicate seeds", "invalid --seeds \"192.0.2.1:7947\": listed twice")
            .set("--seeds", "192.0.2.1:7947,192.0.2.1:7947"),
        case("unspecified seed", "invalid --seeds \"0.0.0.0:7947\": an unspecified address (0.0.0.0) names no host; give a seed's own address")
            .set("--seeds", "0.0.0.0:7947"),
        case("seed without port", "invalid --seeds \"seedhost\": expected HOST:PORT")
            .set("--seeds", "seedhost"),
        case("listen port 0", "invalid --listen \"127.0.0.1:0\": port 0 would gossip on a random port that no peer knows (give a port; the default is 7947)")
            .set("--listen", "127.0.0.1:0"),
        case("listen not an address", "invalid --listen \"everywhere\": invalid socket address syntax")
            .set("--listen", "everywhere"),
        case("api port 0", "invalid --api \"127.0.0.1:0\": port 0 would listen on a random port that `weft status` cannot find (the default is 7948)")
            .set("--api", "127.0.0.1:0"),
        case("api by name", "invalid --api \"localhost:7948\": invalid socket address syntax")
            .set("--api", "localhost:7948"),
        case("broadcast public ip", "invalid --public-ip \"255.255.255.255\": the broadcast address is not a host's address")
            .set("--public-ip", "255.255.255.255"),
        case("loopback public ip", "invalid --public-ip \"127.0.0.1\": a loopback address cannot be reached by other hosts (only a --dry-run mesh on one machine may use it)")
            .live(),
        case("public ip inside the overlay", "invalid --network \"10.99.0.0/16\": the overlay network contains the underlay address 10.99.0.5; choose a network that does not overlap the hosts' network")
            .set("--public-ip", "10.99.0.5"),
        case("unspecified advertise", "invalid --advertise \"0.0.0.0:7947\": must be a unicast address with a non-zero port")
            .set("--advertise", "0.0.0.0:7947"),
        case("missing interface", "invalid --iface \"nosuch0\": no interface named nosuch0")
            .set("--iface", "nosuch0").unset("--public-ip"),
        case("loopback interface address", "invalid --iface \"127.0.0.1\": a loopback address cannot be reached by other hosts (only a --dry-run mesh on one machine may use it)")
            .set("--iface", "127.0.0.1").unset("--public-ip").live(),
        case("interface name with slash", "invalid --iface \"eth/0\": an interface name has no '/', ':' or whitespace")
            .set("--iface", "eth/0"),
        case("bad node name", "invalid --node-name \"bad name\": character ' ' is not allowed (use A-Z, a-z, 0-9, '.', '_', '-')")
            .set("--node-name", "bad name"),
        case("bad bridge", "invalid --bridge \"br/0\": an interface name has no '/', ':' or whitespace")
            .set("--bridge", "br/0"),
        case("bad cluster id", "invalid --cluster-id \"a b\": character ' ' is not allowed (use A-Z, a-z, 0-9, '.', '_', '-')")
            .set("--cluster-id", "a b"),
        case("log format", "invalid --log-format \"xml\": expected text or json")
            .set("--log-format", "xml"),
        // --- Durations.
        case("settle 0s", "invalid --settle \"0s\": must be at least 1s")
            .set("--settle", "0s"),
        case("settle 2 days", "invalid --settle \"2d\": must be at most 1d")
            .set("--settle", "2d"),
        case("reservation 0s", "invalid --reservation \"0s\": must be at least the settle period (10s): a dead node's subnet must stay reserved longer than a claim takes to settle")
            .set("--reservation", "0s"),
        case("reservation below an explicit settle", "invalid --reservation \"1h\": must be at least the settle period (2h, --settle): a dead node's subnet must stay reserved longer than a claim takes to settle")
            .set("--settle", "2h"),
        case("gossip interval of hours", "invalid --gossip-interval \"3h\": must be at most 1m")
            .set("--gossip-interval", "3h"),
        case("gossip interval 5ms", "invalid --gossip-interval \"5ms\": must be at least 10ms")
            .set("--gossip-interval", "5ms"),
        case("gossip interval overflow", "invalid --gossip-interval \"99999999999999999999d\": duration too large")
            .set("--gossip-interval", "99999999999999999999d"),
        case("duration without unit", "invalid --gossip-interval \"1\": missing unit after 1 (use ns, us, ms, s, m, h or d, e.g. 200ms, 1s)")
            .set("--gossip-interval", "1"),
        case("grace of months", "invalid --dead-node-grace \"100d\": must be at most 7d")
            .set("--dead-node-grace", "100d"),
        case("reconcile 0s", "invalid --reconcile-interval \"0s\": must be at least 10ms")
            .set("--reconcile-interval", "0s"),
        case("fanout 4", "invalid --gossip-fanout \"4\": must be a whole number from 1 to 3")
            .set("--gossip-fanout", "4"),
        // --- clap's own errors, in one line.
        case("unknown flag", "unknown flag --seed (did you mean --seeds?)")
            .set("--seed", "192.0.2.1:7947"),
        case("flag without value", "invalid --vni \"\": empty value (give a value, or omit the flag)")
            .extra("--vni"),
        case("flag twice", "the argument '--network <CIDR>' cannot be used multiple times")
            .extra("--network").extra("10.98.0.0/16"),
        // --- Cluster key.
        case("no key, not insecure", "invalid --cluster-key-file \"\": no cluster key: give --cluster-key-file (make one with `weft keygen`), or --insecure to gossip unauthenticated")
            .unset("--insecure"),
        case("missing key file", "invalid --cluster-key-file: {dir}/nope.key: No such file or directory (os error 2)")
            .key("nope.key"),
        case("empty key file", "invalid --cluster-key-file: {dir}/k: keyring holds no key")
            .file("k", "", 0o600).key("k"),
        case("malformed key", "invalid --cluster-key-file: {dir}/k: line 1: key is not valid base64")
            .file("k", "not a key!\n", 0o600).key("k"),
        case("short key", "invalid --cluster-key-file: {dir}/k: line 1: key has 16 bytes, expected 32")
            .file("k", "AAAAAAAAAAAAAAAAAAAAAA==\n", 0o600).key("k"),
        case("key readable by others", "invalid --cluster-key-file: {dir}/k is accessible by group or others (mode 0644): a cluster key must be private; run `chmod 600 {dir}/k` (or pass --allow-open-key-perms)")
            .file("k", KEY, 0o644).key("k"),
        case("key readable by group", "invalid --cluster-key-file: {dir}/k is accessible by group or others (mode 0640): a cluster key must be private; run `chmod 600 {dir}/k` (or pass --allow-open-key-perms)")
            .file("k", KEY, 0o640).key("k"),
        case("keyring dir without keys", "invalid --cluster-key-file: {dir}/ring: no *.key file in the keyring directory")
            .dir("ring").key("ring"),
        case("key and insecure", "invalid --insecure \"true\": conflicts with --cluster-key-file {dir}/k")
            .file("k", KEY, 0o600).set("--cluster-key-file", "{dir}/k"),
        // --- State directory and subnet file.
        case("state dir is a file", "unusable --state-dir \"{dir}/f\": not a directory")
            .file("f", "x", 0o600).set("--state-dir", "{dir}/f"),
        case("state dir under a file", "unusable --state-dir \"{dir}/f/state\": cannot use it: Not a directory (os error 20)")
            .file("f", "x", 0o600).set("--state-dir", "{dir}/f/state"),
        case("subnet file is a directory", "unusable --subnet-file \"{dir}/d\": a directory, not a file")
            .dir("d").set("--subnet-file", "{dir}/d"),
        case("subnet file is a device", "unusable --subnet-file \"/dev/null\": not a regular file")
            .set("--subnet-file", "/dev/null"),
        case("subnet file under a file", "unusable --subnet-file \"{dir}/f/subnet.env\": cannot use it: Not a directory (os error 20)")
            .file("f", "x", 0o600).set("--subnet-file", "{dir}/f/subnet.env"),
        case("subnet file ends in a slash", "invalid --subnet-file \"{dir}/x/\": not a file path")
            .set("--subnet-file", "{dir}/x/"),
        // --- net-conf.json: the flannel user's typos.
        case("net-conf SubnetLength", "invalid SubnetLength in net-conf \"{dir}/net-conf.json\": unknown key (did you mean SubnetLen?)")
            .net_conf(r#"{"Network": "10.99.0.0/16", "SubnetLength": 26}"#),
        case("net-conf VNII", "invalid Backend.VNII in net-conf \"{dir}/net-conf.json\": unknown key (did you mean VNI?)")
            .net_conf(r#"{"Network": "10.99.0.0/16", "Backend": {"Type": "vxlan", "VNII": 4}}"#),
        case("net-conf duplicate key", "invalid Network in net-conf \"{dir}/net-conf.json\": duplicate key (JSON would silently keep only one of them)")
            .net_conf(r#"{"Network": "10.99.0.0/16", "Network": "10.98.0.0/16"}"#),
        case("net-conf duplicate in another case", "invalid network in net-conf \"{dir}/net-conf.json\": duplicate key: \"Network\" and \"network\" are the same key (keys match case-insensitively, as in flannel)")
            .net_conf(r#"{"Network": "10.99.0.0/16", "network": "10.98.0.0/16"}"#),
        case("net-conf without Network", "invalid Network in net-conf \"{dir}/net-conf.json\": missing: net-conf.json must set Network (or give --network)")
            .net_conf(r#"{"SubnetLen": 24}"#),
        case("net-conf IPv6 without a network", "invalid EnableIPv6 in net-conf \"{dir}/net-conf.json\": true, but no IPv6Network is set (set it, or give --ipv6-network)")
            .net_conf(r#"{"Network": "10.99.0.0/16", "EnableIPv6": true}"#),
        case("net-conf IPv6 network not enabled", "invalid IPv6Network in net-conf \"{dir}/net-conf.json\": set, but EnableIPv6 is not true: flannel would ignore it (set \"EnableIPv6\": true, or remove it)")
            .net_conf(r#"{"Network": "10.99.0.0/16", "IPv6Network": "fd00:99::/56"}"#),
        case("net-conf loopback network", "invalid Network in net-conf \"{dir}/net-conf.json\" \"127.0.0.0/16\": cannot be an overlay network: 127.0.0.0/8 is loopback: packets never leave the host")
            .net_conf(r#"{"Network": "127.0.0.0/16"}"#),
        case("net-conf wrong type", "invalid SubnetLen in net-conf \"{dir}/net-conf.json\" \"\\\"24\\\"\": expected a number")
            .net_conf(r#"{"Network": "10.99.0.0/16", "SubnetLen": "24"}"#),
        case("net-conf unknown backend", "invalid Backend.Type in net-conf \"{dir}/net-conf.json\" \"ipsec\": unknown backend (expected vxlan, host-gw or udp)")
            .net_conf(r#"{"Network": "10.99.0.0/16", "Backend": {"Type": "ipsec"}}"#),
        case("net-conf syntax", "invalid --net-conf \"{dir}/net-conf.json\": EOF while parsing a value at line 1 column 11")
            .net_conf(r#"{"Network":"#),
        case("net-conf is a directory", "invalid --net-conf: \"{dir}/nc\" is not a regular file")
            .unset("--network").dir("nc").set("--net-conf", "{dir}/nc"),
        case("net-conf too large", "invalid --net-conf: \"{dir}/net-conf.json\" is larger than 65536 bytes (a net-conf.json is a few hundred)")
            .net_conf(&" ".repeat(70_000)),
        case("net-conf missing", "cannot read --net-conf \"{dir}/none.json\": No such file or directory (os error 2)")
            .unset("--network").set("--net-conf", "{dir}/none.json"),
        // --- WEFT_* variables: named as set; empty, misspelt and unparsable ones refused.
        case("empty variable", "invalid WEFT_NETWORK \"\": empty value (unset WEFT_NETWORK to use the default)")
            .unset("--network").env("WEFT_NETWORK", ""),
        case("empty boolean variable", "invalid WEFT_IP_MASQ \"\": empty value (unset WEFT_IP_MASQ to use the default)")
            .env("WEFT_IP_MASQ", ""),
        case("variable named in errors", "invalid WEFT_NETWORK \"10.0.0.0/33\": prefix length 33 is larger than 32")
            .unset("--network").env("WEFT_NETWORK", "10.0.0.0/33"),
        case("boolean variable", &bool_line("WEFT_INSECURE", "maybe"))
            .unset("--insecure").env("WEFT_INSECURE", "maybe"),
        case("dry-run variable", &bool_line("WEFT_DRY_RUN", "perhaps"))
            .unset("--dry-run").env("WEFT_DRY_RUN", "perhaps"),
        case("misspelt variable", "unknown variable WEFT_SEED (did you mean WEFT_SEEDS?): a misspelt setting would silently not apply")
            .env("WEFT_SEED", "192.0.2.1:7947"),
        case("transposed variable", "unknown variable WEFT_NETWROK (did you mean WEFT_NETWORK?): a misspelt setting would silently not apply")
            .env("WEFT_NETWROK", "10.1.0.0/16"),
        case("truncated variable", "unknown variable WEFT_CLUSTER_KEY (did you mean WEFT_CLUSTER_KEY_FILE?): a misspelt setting would silently not apply")
            .env("WEFT_CLUSTER_KEY", "/etc/weft/cluster.key"),
        case("negative vni variable", "invalid WEFT_VNI \"-5\": must be a whole number from 1 to 16777215")
            .env("WEFT_VNI", "-5"),
        case("listen port 0 variable", "invalid WEFT_LISTEN \"127.0.0.1:0\": port 0 would gossip on a random port that no peer knows (give a port; the default is 7947)")
            .unset("--listen").env("WEFT_LISTEN", "127.0.0.1:0"),
        case("interval variable", "invalid WEFT_GOSSIP_INTERVAL \"3h\": must be at most 1m")
            .env("WEFT_GOSSIP_INTERVAL", "3h"),
        case("seeds variable", "invalid WEFT_SEEDS \",\": no seed left after parsing (omit it to start a new mesh)")
            .env("WEFT_SEEDS", ","),
        case("state dir variable", "unusable WEFT_STATE_DIR \"{dir}/f\": not a directory")
            .file("f", "x", 0o600).unset("--state-dir").env("WEFT_STATE_DIR", "{dir}/f"),
        case("key file variable", "invalid WEFT_CLUSTER_KEY_FILE: {dir}/k is accessible by group or others (mode 0604): a cluster key must be private; run `chmod 600 {dir}/k` (or pass --allow-open-key-perms)")
            .file("k", KEY, 0o604).unset("--insecure").env("WEFT_CLUSTER_KEY_FILE", "{dir}/k"),
        case("net-conf variable", "cannot read WEFT_NET_CONF \"{dir}/none.json\": No such file or directory (os error 2)")
            .unset("--network").env("WEFT_NET_CONF", "{dir}/none.json"),
        case("api variable", "invalid WEFT_API \"127.0.0.1:0\": port 0 would listen on a random port that `weft status` cannot find (the default is 7948)")
            .unset("--api").env("WEFT_API", "127.0.0.1:0"),
        case("public ip variable, live", "invalid WEFT_PUBLIC_IP \"127.0.0.1\": a loopback address cannot be reached by other hosts (only a --dry-run mesh on one machine may use it)")
            .unset("--public-ip").env("WEFT_PUBLIC_IP", "127.0.0.1").live(),
        case("missing interface variable, live", "invalid WEFT_IFACE \"nosuch0\": no interface named nosuch0")
            .unset("--iface").env("WEFT_IFACE", "nosuch0").unset("--public-ip").live(),
    ]
}

#[test]
fn bad_inputs_are_refused_in_one_line_by_check_and_run_alike() {
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = check(case) {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The base command line really starts (so the refusals above come before anything else),
/// and the opt-outs and warnings that are not refusals stay so.
#[test]
fn base_config_starts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k"), KEY).unwrap();
    std::fs::set_permissions(dir.path().join("k"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = Vec::new();
        for (flag, value) in base(dir.path()) {
            v.push(flag.to_string());
            v.extend(value);
        }
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // --check-config passes, a variable that is not weft's is only warned about.
    let out = command(
        &args(&["--check-config"]),
        &[("WEFT_BIN", "/usr/bin/weft".to_string())],
        false,
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("ignoring WEFT_BIN: not a weft variable"),
        "{stderr}"
    );
    // An open key file is accepted with --allow-open-key-perms.
    let mut with_key = args(&["--check-config", "--allow-open-key-perms"]);
    let i = with_key.iter().position(|a| a == "--insecure").unwrap();
    with_key.remove(i);
    with_key.extend([
        "--cluster-key-file".into(),
        format!("{}/k", dir.path().display()),
    ]);
    let out = command(&with_key, &[], false).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And `run` starts: its API answers, then SIGTERM stops it cleanly.
    let run_args = args(&[]);
    let api = run_args[run_args.iter().position(|a| a == "--api").unwrap() + 1].clone();
    let mut child = command(&run_args, &[], false)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut answered = false;
    while start.elapsed() < Duration::from_secs(15) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("weft run exited early: {status}");
        }
        if let Ok(mut s) = std::net::TcpStream::connect(&api) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n");
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            if text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200") {
                answered = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill with a pid this test spawned and has not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = wait(child, Duration::from_secs(10)).map(|o| o.status);
    assert!(answered, "weft run never answered /healthz on {api}");
    assert!(status.as_ref().is_ok_and(|s| s.success()), "{status:?}");
    assert!(dir.path().join("state").is_dir());
}
