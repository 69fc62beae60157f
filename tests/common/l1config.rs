//! The L1 harness (in-process agents, fake data plane, paused time): the `Config` of agent I
//! (vxlan on 10.244.0.0/16 with /24 subnets, 1 s gossip, its state under DIR) and waiting on
//! a condition in paused time, and starting agent I on a fake data plane and an in-memory mesh.
//!
//! Use from an integration test with `#[path = "common/l1config.rs"] mod l1config;`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chitchat::transport::ChannelTransport;
use weft::Config;
use weft::agent::{Agent, AgentHandle, UnderlayInfo};
use weft::config::{LogFormat, UnderlaySelect};
use weft::dataplane::fake::FakeDataplane;
use weft_proto::Backend;

/// Agent I gossiping on LISTEN, joining through SEEDS, in cluster CLUSTER_ID.
pub fn node_config(
    i: usize,
    dir: &Path,
    listen: SocketAddr,
    seeds: &[SocketAddr],
    cluster_id: &str,
) -> Config {
    Config {
        node_name: format!("node-{i:02}"),
        underlay: UnderlaySelect::DefaultRoute,
        public_ip: None,
        listen,
        advertise: Some(listen),
        seeds: seeds.iter().map(|s| s.to_string()).collect(),
        network: "10.244.0.0/16".parse().unwrap(),
        subnet_len: 24,
        subnet_min: "10.244.1.0".parse().unwrap(),
        subnet_max: "10.244.255.0".parse().unwrap(),
        static_subnet: None,
        ipv4: true,
        ipv6: None,
        public_ipv6: None,
        backend: Backend::Vxlan,
        vni: 1,
        vxlan_port: 8472,
        udp_port: 8285,
        udp_encryption: false,
        direct_routing: false,
        state_dir: dir.join(format!("node-{i}/state")),
        subnet_file: dir.join(format!("node-{i}/subnet.env")),
        bridge: Some("cni0".into()),
        api: "127.0.0.1:0".parse().unwrap(),
        gossip_interval: Duration::from_secs(1),
        gossip_fanout: 2,
        settle: Duration::from_secs(5),
        reservation: Duration::from_secs(3600),
        dead_node_grace: Duration::from_secs(7200),
        reconcile_interval: Duration::from_secs(10),
        ip_masq: false,
        // In-process meshes on loopback hold no overlay address to probe from.
        probes: false,
        log_format: LogFormat::Text,
        cluster_id: cluster_id.into(),
        insecure: true,
        cluster_key_file: None,
        dry_run: false,
    }
}

/// Polls `check` every 250 ms of (paused) time until it holds or `limit` passed; the last
/// answer.
pub async fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    check()
}

/// The underlay of in-process agent I: `eth0` (index 2, MTU 1500) holding 192.0.2.(I+1) and
/// 2001:db8::(I+1).
pub fn underlay(i: usize) -> UnderlayInfo {
    UnderlayInfo {
        ifname: "eth0".into(),
        ifindex: 2,
        ip: std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, i as u8 + 1)),
        mtu: 1500,
        ipv6: Some(std::net::Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            i as u16 + 1,
        )),
    }
}

/// Starts `config` as agent I on the fake data plane `dp` (a shared handle) gossiping over
/// `transport`, with [`underlay`]`(i)` and no API.
pub async fn start_agent(
    config: Config,
    i: usize,
    dp: &FakeDataplane,
    transport: &ChannelTransport,
) -> AgentHandle {
    Agent::new(config)
        .dataplane(Box::new(dp.clone()))
        .transport(Box::new(transport.clone()))
        .underlay(underlay(i))
        .serve_api(false)
        .start()
        .await
        .expect("agent starts")
}
