//! Running weft inside another tokio program.
//!
//! Two agents start in this process, gossiping over loopback with an in-memory (fake) data
//! plane, so the example needs no root and touches no kernel state. Each gets its own subnet; the
//! program prints them, watches the peer list change, and shuts both down.
//!
//!     cargo run --example embed
//!
//! A real embedder leaves out `.dataplane(..)` and `.underlay(..)` (weft then programs the kernel
//! through netlink, which needs CAP_NET_ADMIN) and sets `cluster_key_file` instead of `insecure`.

use std::net::SocketAddr;
use std::time::Duration;

use weft::Config;
use weft::agent::{Agent, AgentHandle, UnderlayInfo};
use weft::dataplane::fake::FakeDataplane;

/// A configuration for node `name` gossiping on `listen` (loopback), seeded by `seeds`.
fn config(name: &str, listen: SocketAddr, seeds: &[SocketAddr], dir: &std::path::Path) -> Config {
    let mut config = Config::with_defaults(name).expect("default configuration");
    config.listen = listen;
    config.advertise = Some(listen);
    config.seeds = seeds.iter().map(|s| s.to_string()).collect();
    config.state_dir = dir.join(name).join("state");
    config.subnet_file = dir.join(name).join("subnet.env");
    config.gossip_interval = Duration::from_millis(200);
    config.settle = Duration::from_secs(1);
    config.insecure = true;
    config
}

async fn start(config: Config) -> AgentHandle {
    let underlay = UnderlayInfo {
        ifname: "lo".into(),
        ifindex: 1,
        ip: config.listen.ip(),
        mtu: 1500,
        ipv6: None,
    };
    Agent::new(config)
        .dataplane(Box::new(FakeDataplane::new()))
        .underlay(underlay)
        .serve_api(false)
        .start()
        .await
        .expect("agent starts")
}

/// A free UDP port on a loopback address (each agent its own: one underlay IP per node).
fn free_port(ip: &str) -> SocketAddr {
    let socket = std::net::UdpSocket::bind((ip, 0)).expect("bind loopback");
    socket.local_addr().expect("local address")
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("weft-embed-{}", std::process::id()));
    let (addr_a, addr_b) = (free_port("127.0.0.1"), free_port("127.0.0.2"));
    let a = start(config("embed-a", addr_a, &[], &dir)).await;
    let b = start(config("embed-b", addr_b, &[addr_a], &dir)).await;

    // Watch a's view of the mesh in the background: one line per change of its peer list.
    let mut watch = a.status();
    let watcher = tokio::spawn(async move {
        let mut last = Vec::new();
        while watch.changed().await.is_ok() {
            let peers: Vec<String> = watch
                .borrow()
                .nodes
                .iter()
                .filter(|n| !n.is_self)
                .map(|n| {
                    format!(
                        "{} {} {}",
                        n.name,
                        n.subnet.map_or("-".to_string(), |s| s.to_string()),
                        n.state
                    )
                })
                .collect();
            if peers != last {
                println!("embed-a sees: {peers:?}");
                last = peers;
            }
        }
    });

    let wait = Duration::from_secs(30);
    for (name, handle) in [("embed-a", &a), ("embed-b", &b)] {
        let status = tokio::time::timeout(wait, handle.ready())
            .await
            .expect("ready within 30 s")
            .expect("agent runs");
        println!(
            "{name} is ready: subnet {} ({} peer(s))",
            status.subnet.map_or("-".to_string(), |s| s.to_string()),
            handle.peers().len()
        );
    }
    let (sa, sb) = (a.subnet(), b.subnet());
    println!("subnets: embed-a {sa:?}, embed-b {sb:?}");

    // Shut down like SIGTERM (claims stay for a restart); `leave()` would release them.
    b.shutdown().await.expect("b stops");
    a.shutdown().await.expect("a stops");
    watcher.abort();
    let _ = std::fs::remove_dir_all(&dir);
    println!("both agents stopped");
}
