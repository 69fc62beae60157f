//! L1 (in-process agents, fake data plane, paused time): host-gw and DirectRouting path choice
//! follows the on-link view (and changes when the underlay does), and mixed clusters are refused
//! with the reason in the status.

#[path = "common/l1config.rs"]
mod l1config;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use chitchat::transport::ChannelTransport;
use ipnet::Ipv4Net;
use l1config::{node_config, start_agent, wait_until};
use weft::Config;
use weft::agent::AgentHandle;
use weft::api::NodeStatus;
use weft::dataplane::fake::FakeDataplane;
use weft_proto::Backend;

fn gossip_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 98, 0, i as u8 + 1)), 7947)
}

fn underlay_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8 + 1))
}

fn config(i: usize, dir: &Path, backend: Backend) -> Config {
    let seeds = if i == 0 { vec![] } else { vec![gossip_addr(0)] };
    Config {
        backend,
        ..node_config(i, dir, gossip_addr(i), &seeds, "l1b")
    }
}

async fn start(t: &ChannelTransport, config: Config, i: usize, dp: &FakeDataplane) -> AgentHandle {
    start_agent(config, i, dp, t).await
}

fn peer(h: &AgentHandle, name: &str) -> Option<NodeStatus> {
    h.status()
        .borrow()
        .nodes
        .iter()
        .find(|n| n.name == name)
        .cloned()
}

fn subnet(h: &AgentHandle) -> Option<Ipv4Net> {
    h.status().borrow().subnet
}

fn gateways(dp: &FakeDataplane) -> Vec<(Ipv4Net, Ipv4Addr, Option<String>)> {
    dp.snapshot()
        .routes
        .iter()
        .filter_map(|r| match (r.dst, r.gateway) {
            (ipnet::IpNet::V4(dst), std::net::IpAddr::V4(gw)) => Some((dst, gw, r.device.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn host_gw_programs_onlink_peers_and_follows_underlay_changes() {
    let dir = tempfile::tempdir().unwrap();
    let t = ChannelTransport::default();
    let dps: Vec<FakeDataplane> = (0..3).map(|_| FakeDataplane::new()).collect();
    // Node 0 does not reach node 2 on-link.
    dps[0].set_off_link(underlay_ip(2), true);
    let mut hs = Vec::new();
    for (i, dp) in dps.iter().enumerate() {
        hs.push(start(&t, config(i, dir.path(), Backend::HostGw), i, dp).await);
    }
    let ok = wait_until(Duration::from_secs(60), || {
        hs.iter().all(|h| h.status().borrow().ready)
            && peer(&hs[0], "node-02").is_some_and(|p| !p.programmed && p.reason.is_some())
            && peer(&hs[0], "node-01").is_some_and(|p| p.programmed)
    })
    .await;
    assert!(ok, "{:#?}", hs[0].status().borrow());
    let why = peer(&hs[0], "node-02").unwrap().reason.unwrap();
    assert!(
        why.contains("not on-link") && why.contains("192.0.2.3"),
        "{why}"
    );
    let s1 = subnet(&hs[1]).unwrap();
    let s2 = subnet(&hs[2]).unwrap();
    assert_eq!(
        gateways(&dps[0]),
        vec![(s1, Ipv4Addr::new(192, 0, 2, 2), None)],
        "host-gw: a plain route via the on-link peer only"
    );
    let snap = dps[0].snapshot();
    assert!(snap.vxlan.is_none() && snap.fdb.is_empty() && snap.neighbours.is_empty());
    let env = std::fs::read_to_string(dir.path().join("node-0/subnet.env")).unwrap();
    assert!(env.contains("FLANNEL_MTU=1500"), "{env}");

    // The underlay changes: node 2 becomes on-link and is programmed on the next pass.
    dps[0].set_off_link(underlay_ip(2), false);
    let ok = wait_until(Duration::from_secs(15), || {
        gateways(&dps[0]).contains(&(s2, Ipv4Addr::new(192, 0, 2, 3), None))
    })
    .await;
    assert!(ok, "{:?}", gateways(&dps[0]));
    assert!(
        wait_until(Duration::from_secs(5), || peer(&hs[0], "node-02")
            .is_some_and(|p| p.programmed && p.reason.is_none()))
        .await
    );
    for h in hs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn direct_routing_moves_a_peer_between_direct_and_vxlan() {
    let dir = tempfile::tempdir().unwrap();
    let t = ChannelTransport::default();
    let dps: Vec<FakeDataplane> = (0..2).map(|_| FakeDataplane::new()).collect();
    let mut hs = Vec::new();
    for (i, dp) in dps.iter().enumerate() {
        let mut c = config(i, dir.path(), Backend::Vxlan);
        c.direct_routing = true;
        hs.push(start(&t, c, i, dp).await);
    }
    let ok = wait_until(Duration::from_secs(60), || {
        hs.iter().all(|h| h.status().borrow().ready) && !dps[0].snapshot().routes.is_empty()
    })
    .await;
    assert!(ok, "{:#?}", hs[0].status().borrow());
    let s1 = subnet(&hs[1]).unwrap();
    assert_eq!(
        gateways(&dps[0]),
        vec![(s1, Ipv4Addr::new(192, 0, 2, 2), None)],
        "on-link peer: direct route"
    );
    assert!(dps[0].snapshot().fdb.is_empty());
    assert!(
        dps[0].snapshot().vxlan.is_some(),
        "the device stays for off-link peers"
    );
    assert_eq!(hs[0].status().borrow().backend, "vxlan (DirectRouting)");

    dps[0].set_off_link(underlay_ip(1), true);
    let ok = wait_until(Duration::from_secs(15), || {
        gateways(&dps[0]) == vec![(s1, s1.network(), Some("weft.1".to_string()))]
    })
    .await;
    assert!(
        ok,
        "off-link peer goes through VXLAN: {:?}",
        gateways(&dps[0])
    );
    let snap = dps[0].snapshot();
    assert_eq!(snap.fdb.len(), 1);
    assert_eq!(snap.neighbours.len(), 1);
    assert!(peer(&hs[0], "node-01").unwrap().programmed);
    for h in hs {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn mixed_cluster_peers_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let t = ChannelTransport::default();
    let dps: Vec<FakeDataplane> = (0..4).map(|_| FakeDataplane::new()).collect();
    let mut configs = vec![
        config(0, dir.path(), Backend::Vxlan),
        config(1, dir.path(), Backend::HostGw),
        config(2, dir.path(), Backend::Vxlan),
        config(3, dir.path(), Backend::Vxlan),
    ];
    configs[2].vni = 7;
    configs[3].subnet_len = 25;
    let mut hs = Vec::new();
    for (i, c) in configs.into_iter().enumerate() {
        hs.push(start(&t, c, i, &dps[i]).await);
    }
    let reasons = |h: &AgentHandle| -> Vec<Option<String>> {
        (1..4)
            .map(|i| peer(h, &format!("node-{i:02}")).and_then(|p| p.reason))
            .collect()
    };
    let ok = wait_until(Duration::from_secs(60), || {
        hs[0].status().borrow().ready
            && reasons(&hs[0])
                .iter()
                .all(|r| r.as_ref().is_some_and(|r| r.contains("mixed cluster")))
    })
    .await;
    assert!(ok, "{:#?}", hs[0].status().borrow());
    let r = reasons(&hs[0]);
    assert!(r[0].as_ref().unwrap().contains("HostGw"), "{r:?}");
    assert!(r[1].as_ref().unwrap().contains("vni 7"), "{r:?}");
    assert!(r[2].as_ref().unwrap().contains("/24"), "{r:?}");
    for i in 1..4 {
        assert!(!peer(&hs[0], &format!("node-{i:02}")).unwrap().programmed);
    }
    assert!(
        dps[0].snapshot().routes.is_empty(),
        "nothing programmed for refused peers: {:?}",
        dps[0].snapshot().routes
    );
    for h in hs {
        h.shutdown().await.unwrap();
    }
}
