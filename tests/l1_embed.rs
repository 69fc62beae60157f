//! The embedding API: two agents inside one tokio program, gossiping over loopback UDP (insecure
//! and sealed with a generated key), each with the fake data plane. Both get distinct subnets and
//! program routes to each other; the handle gives subnet, peers, readiness and shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use weft::Config;
use weft::agent::{Agent, AgentHandle, UnderlayInfo};
use weft::dataplane::fake::FakeDataplane;

fn free_port(ip: &str) -> SocketAddr {
    let socket = std::net::UdpSocket::bind((ip, 0)).unwrap();
    socket.local_addr().unwrap()
}

fn config(
    name: &str,
    listen: SocketAddr,
    seeds: &[SocketAddr],
    dir: &std::path::Path,
    key: Option<&std::path::Path>,
) -> Config {
    let mut config = Config::with_defaults(name).unwrap();
    config.listen = listen;
    config.advertise = Some(listen);
    config.seeds = seeds.iter().map(|s| s.to_string()).collect();
    config.state_dir = dir.join(name).join("state");
    config.subnet_file = dir.join(name).join("subnet.env");
    config.gossip_interval = Duration::from_millis(100);
    config.settle = Duration::from_millis(500);
    config.insecure = key.is_none();
    config.cluster_key_file = key.map(|k| k.to_path_buf());
    config
}

async fn start(config: Config, dp: &FakeDataplane) -> AgentHandle {
    let underlay = UnderlayInfo {
        ifname: "lo".into(),
        ifindex: 1,
        ip: config.listen.ip(),
        mtu: 1500,
        ipv6: None,
    };
    Agent::new(config)
        .dataplane(Box::new(dp.clone()))
        .underlay(underlay)
        .serve_api(false)
        .start()
        .await
        .unwrap()
}

async fn two_agents_see_each_other(key: bool) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("cluster.key");
    if key {
        let rng = ring::rand::SystemRandom::new();
        let k = weft_proto::envelope::generate_key(&rng).unwrap();
        std::fs::write(&key_file, weft_proto::envelope::encode_key(&k)).unwrap();
    }
    let key = key.then_some(key_file.as_path());
    let (addr_a, addr_b) = (free_port("127.0.0.1"), free_port("127.0.0.2"));
    let (dp_a, dp_b) = (FakeDataplane::new(), FakeDataplane::new());
    let a = start(config("emb-a", addr_a, &[], dir.path(), key), &dp_a).await;
    let b = start(config("emb-b", addr_b, &[addr_a], dir.path(), key), &dp_b).await;

    let limit = Duration::from_secs(30);
    for (name, h) in [("a", &a), ("b", &b)] {
        let ready = tokio::time::timeout(limit, h.ready()).await;
        assert!(
            matches!(ready, Ok(Ok(_))),
            "{name} not ready: {:#?}",
            *h.status().borrow()
        );
    }
    let sa: Ipv4Net = a.subnet().expect("a has a subnet");
    let sb: Ipv4Net = b.subnet().expect("b has a subnet");
    assert_ne!(sa, sb);
    assert!(a.is_ready() && b.is_ready());

    // Each fake kernel ends up with a route to the other's subnet, and each handle lists the
    // other as an active, programmed peer.
    let deadline = Instant::now() + limit;
    loop {
        let ra = dp_a
            .snapshot()
            .routes
            .iter()
            .any(|r| r.dst == ipnet::IpNet::V4(sb));
        let rb = dp_b
            .snapshot()
            .routes
            .iter()
            .any(|r| r.dst == ipnet::IpNet::V4(sa));
        let pa = a.peers().iter().any(|p| {
            p.name == "emb-b" && p.programmed && p.state == weft::api::ClaimStatus::Active
        });
        let pb = b.peers().iter().any(|p| {
            p.name == "emb-a" && p.programmed && p.state == weft::api::ClaimStatus::Active
        });
        if ra && rb && pa && pb {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence: a routes {:?} peers {:?}; b routes {:?} peers {:?}",
            dp_a.snapshot().routes,
            a.peers(),
            dp_b.snapshot().routes,
            b.peers()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.peers().len(), 1);
    // Gossip went over the sealed transport: its counters moved and nothing was rejected.
    let g = a.metrics().gossip.snapshot();
    assert!(g.datagrams_in > 0 && g.datagrams_out > 0);
    assert_eq!(g.drop_auth + g.drop_plaintext + g.drop_unknown_key, 0);

    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_embedded_agents_insecure() {
    two_agents_see_each_other(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_embedded_agents_with_a_cluster_key() {
    two_agents_see_each_other(true).await;
}
