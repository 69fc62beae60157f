//! L1: dual-stack and IPv6-only meshes of in-process agents (fake data plane, in-memory gossip,
//! paused time): every node gets an IPv4 and an IPv6 subnet from one claim (or, IPv6-only, an
//! IPv6 subnet and no IPv4 one), distinct in each family, with full routes in each; a restart
//! and a wiped state directory keep them; a partition during the joins heals with no duplicate
//! in either family; an IPv4-only node is refused as a mixed cluster.

#[path = "common/l1config.rs"]
mod l1config;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use chitchat::transport::ChannelTransport;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use l1config::{node_config, start_agent, wait_until};
use weft::Config;
use weft::agent::AgentHandle;
use weft::config::Ipv6Pool;
use weft::dataplane::fake::FakeDataplane;

fn gossip_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 98, 0, i as u8 + 1)), 7947)
}

fn pool() -> Ipv6Pool {
    Ipv6Pool {
        network: "fd00:10:244::/56".parse().unwrap(),
        subnet_len: 64,
        subnet_min: "fd00:10:244:1::".parse().unwrap(),
        subnet_max: "fd00:10:244:ff::".parse().unwrap(),
    }
}

fn dual(i: usize, dir: &Path, seeds: &[usize]) -> Config {
    let seeds: Vec<SocketAddr> = seeds.iter().map(|s| gossip_addr(*s)).collect();
    Config {
        ipv6: Some(pool()),
        ..node_config(i, dir, gossip_addr(i), &seeds, "l1dual")
    }
}

/// A dual-stack node's configuration, or with `v6_only` an IPv6-only one.
fn families(v6_only: bool) -> impl Fn(usize, &Path, &[usize]) -> Config {
    move |i, dir, seeds| Config {
        ipv4: !v6_only,
        ..dual(i, dir, seeds)
    }
}

struct Node {
    handle: Option<AgentHandle>,
    dp: FakeDataplane,
    config: Config,
    i: usize,
}

async fn start(t: &ChannelTransport, config: Config, i: usize, dp: FakeDataplane) -> Node {
    let handle = start_agent(config.clone(), i, &dp, t).await;
    Node {
        handle: Some(handle),
        dp,
        config,
        i,
    }
}

fn subnets(n: &Node) -> Option<(Option<Ipv4Net>, Option<Ipv6Net>)> {
    let status = n.handle.as_ref()?.status();
    let s = status.borrow();
    (s.subnet.is_some() || s.ipv6_subnet.is_some()).then_some((s.subnet, s.ipv6_subnet))
}

/// Every running node is ready with distinct subnets in each family it runs (dual-stack: the
/// IPv6 one at the IPv4 one's index; IPv6-only: no IPv4 subnet at all), routes to every other
/// node's subnets in each family, subnet.env with each (and without IPv4 when IPv6-only), and
/// one FDB entry per peer.
fn converged(nodes: &[Node]) -> Result<(), String> {
    let running: Vec<&Node> = nodes.iter().filter(|n| n.handle.is_some()).collect();
    let mut held4 = BTreeMap::new();
    let mut held6 = BTreeMap::new();
    for n in &running {
        let h = n.handle.as_ref().unwrap();
        if !h.status().borrow().ready {
            return Err(format!("node-{} not ready", n.i));
        }
        let (v4, v6) = subnets(n).ok_or(format!("node-{} has no subnet", n.i))?;
        let v6 = v6.ok_or(format!("node-{} has no IPv6 subnet", n.i))?;
        match v4 {
            Some(v4) if !n.config.ipv4 => {
                return Err(format!("node-{} is IPv6-only and holds {v4}", n.i));
            }
            None if n.config.ipv4 => return Err(format!("node-{} has no IPv4 subnet", n.i)),
            None => {}
            Some(v4) => {
                if v6.network().segments()[3] != u16::from(v4.network().octets()[2]) {
                    return Err(format!("node-{}: {v6} is not paired with {v4}", n.i));
                }
                if let Some(other) = held4.insert(v4, n.i) {
                    return Err(format!("{v4} held by node-{other} and node-{}", n.i));
                }
            }
        }
        if let Some(other) = held6.insert(v6, n.i) {
            return Err(format!("{v6} held by node-{other} and node-{}", n.i));
        }
    }
    for n in &running {
        let mut want: BTreeSet<IpNet> = BTreeSet::new();
        for m in running.iter().filter(|m| m.i != n.i) {
            let (v4, v6) = subnets(m).unwrap();
            want.extend(v4.map(IpNet::V4));
            want.insert(IpNet::V6(v6.unwrap()));
        }
        let s = n.dp.snapshot();
        let have: BTreeSet<IpNet> = s.routes.iter().map(|r| r.dst).collect();
        if have != want {
            return Err(format!("node-{} routes {have:?}, want {want:?}", n.i));
        }
        if s.fdb.len() != running.len() - 1 {
            return Err(format!("node-{}: {} FDB entries", n.i, s.fdb.len()));
        }
        let (v4, v6) = subnets(n).unwrap();
        let env = std::fs::read_to_string(&n.config.subnet_file).unwrap_or_default();
        let first6 = format!("{}1/64", v6.unwrap().network());
        let ipv4_ok = match v4 {
            Some(v4) => env.contains(&format!(
                "FLANNEL_SUBNET={}/24",
                Ipv4Addr::from(u32::from(v4.network()) + 1)
            )),
            None => !env.contains("FLANNEL_SUBNET=") && !env.contains("FLANNEL_NETWORK="),
        };
        if !env.contains(&format!("FLANNEL_IPV6_SUBNET={first6}"))
            || !env.contains("FLANNEL_IPV6_NETWORK=fd00:10:244::/56")
            || !ipv4_ok
        {
            return Err(format!("node-{} subnet.env: {env}", n.i));
        }
    }
    Ok(())
}

async fn assert_converges(nodes: &[Node], limit: Duration) {
    let ok = wait_until(limit, || converged(nodes).is_ok()).await;
    assert!(
        ok,
        "not converged after {limit:?}: {}",
        converged(nodes).unwrap_err()
    );
}

async fn stop_all(nodes: &mut [Node]) {
    for n in nodes {
        if let Some(h) = n.handle.take() {
            h.shutdown().await.unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn twenty_dual_stack_agents_get_distinct_subnets_and_full_routes_in_both_families() {
    twenty_agents(false).await;
}

#[tokio::test(start_paused = true)]
async fn twenty_ipv6_only_agents_get_distinct_ipv6_subnets_full_routes_and_no_ipv4() {
    twenty_agents(true).await;
}

async fn twenty_agents(v6_only: bool) {
    let config = families(v6_only);
    let dir = tempfile::tempdir().unwrap();
    let t = ChannelTransport::default();
    let mut nodes = Vec::new();
    for i in 0..20 {
        let seeds = if i == 0 { vec![] } else { vec![0, 1] };
        let seeds: Vec<usize> = seeds.into_iter().filter(|s| *s != i).collect();
        nodes.push(start(&t, config(i, dir.path(), &seeds), i, FakeDataplane::new()).await);
    }
    assert_converges(&nodes, Duration::from_secs(60)).await;
    let family_count = if v6_only { 1 } else { 2 };
    for n in &nodes {
        let s = n.dp.snapshot();
        let dev = s.vxlan.as_ref().unwrap();
        let (v4, v6) = subnets(n).unwrap();
        assert_eq!(dev.addr, v4.map(|s| s.network()), "the device's IPv4 /32");
        assert_eq!(dev.addr6, v6.map(|s| s.network()), "the device's IPv6 /128");
        assert_eq!(
            s.neighbours.len(),
            family_count * 19,
            "a neighbour per peer and family"
        );
        assert_eq!(
            s.bridge
                .as_ref()
                .and_then(|b| b.addr)
                .map(|a| a.to_string()),
            v4.map(|s| format!("{}/24", Ipv4Addr::from(u32::from(s.network()) + 1)))
        );
        assert_eq!(
            s.bridge
                .as_ref()
                .and_then(|b| b.addr6)
                .map(|a| a.to_string()),
            v6.map(|s| format!("{}1/64", s.network()))
        );
    }

    // A restart keeps both subnets; a wiped state directory gets both back from the mesh.
    let before: Vec<_> = nodes.iter().map(subnets).collect();
    nodes[3].handle.take().unwrap().shutdown().await.unwrap();
    nodes[4].handle.take().unwrap().shutdown().await.unwrap();
    std::fs::remove_dir_all(&nodes[4].config.state_dir).unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (c3, d3) = (nodes[3].config.clone(), nodes[3].dp.clone());
    nodes[3] = start(&t, c3, 3, d3).await;
    let c4 = nodes[4].config.clone();
    nodes[4] = start(&t, c4, 4, FakeDataplane::new()).await;
    assert_converges(&nodes, Duration::from_secs(60)).await;
    let after: Vec<_> = nodes.iter().map(subnets).collect();
    assert_eq!(
        after, before,
        "restart and wiped state keep both families' subnets"
    );
    stop_all(&mut nodes).await;
}

#[tokio::test(start_paused = true)]
async fn a_partition_during_joins_heals_with_no_duplicate_in_either_family() {
    partition_heals(false).await;
}

#[tokio::test(start_paused = true)]
async fn an_ipv6_only_partition_during_joins_heals_with_no_duplicate() {
    partition_heals(true).await;
}

async fn partition_heals(v6_only: bool) {
    let config = families(v6_only);
    let dir = tempfile::tempdir().unwrap();
    let t = ChannelTransport::default();
    // Few subnets, so the two sides are bound to pick some of the same ones.
    let narrow = |mut c: Config| {
        c.subnet_max = "10.244.8.0".parse().unwrap();
        if let Some(p) = c.ipv6.as_mut() {
            p.subnet_max = "fd00:10:244:8::".parse().unwrap();
        }
        c
    };
    let (side_a, side_b) = ([0usize, 1, 2], [3usize, 4, 5]);
    for a in side_a {
        for b in side_b {
            t.remove_link(gossip_addr(a), gossip_addr(b)).await;
        }
    }
    let mut nodes = Vec::new();
    for i in 0..6 {
        let seeds = if i < 3 { vec![0, 3] } else { vec![3, 0] };
        let seeds: Vec<usize> = seeds.into_iter().filter(|s| *s != i).collect();
        let c = narrow(config(i, dir.path(), &seeds));
        nodes.push(start(&t, c, i, FakeDataplane::new()).await);
    }
    let settled = wait_until(Duration::from_secs(60), || {
        nodes
            .iter()
            .all(|n| n.handle.as_ref().unwrap().status().borrow().ready)
    })
    .await;
    assert!(settled, "each side settles during the partition");
    for a in side_a {
        for b in side_b {
            t.add_link(gossip_addr(a), gossip_addr(b)).await;
        }
    }
    assert_converges(&nodes, Duration::from_secs(90)).await;
    stop_all(&mut nodes).await;
}

#[tokio::test(start_paused = true)]
async fn an_ipv4_only_node_in_a_dual_stack_mesh_is_refused_as_a_mixed_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let t = ChannelTransport::default();
    let mut nodes = vec![
        start(&t, dual(0, dir.path(), &[]), 0, FakeDataplane::new()).await,
        start(&t, dual(1, dir.path(), &[0]), 1, FakeDataplane::new()).await,
    ];
    let v4_only = node_config(2, dir.path(), gossip_addr(2), &[gossip_addr(0)], "l1dual");
    nodes.push(start(&t, v4_only, 2, FakeDataplane::new()).await);
    let refused = wait_until(Duration::from_secs(60), || {
        let status = nodes[0].handle.as_ref().unwrap().status();
        let s = status.borrow();
        s.nodes.iter().any(|n| {
            n.name == "node-02"
                && n.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("mixed cluster") && r.contains("IPv4 only"))
        })
    })
    .await;
    assert!(
        refused,
        "{:?}",
        nodes[0].handle.as_ref().unwrap().status().borrow().nodes
    );
    // The dual-stack pair still routes each other in both families, and never the refused node.
    assert_converges(&nodes[..2], Duration::from_secs(30)).await;
    stop_all(&mut nodes).await;
}

#[tokio::test(start_paused = true)]
async fn ip_masq_on_a_dual_stack_node_owns_both_tables_and_leave_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let t = ChannelTransport::default();
    let config = Config {
        ip_masq: true,
        ..dual(0, dir.path(), &[])
    };
    let mut nodes = vec![start(&t, config, 0, FakeDataplane::new()).await];
    assert_converges(&nodes, Duration::from_secs(30)).await;
    let (v4, v6) = subnets(&nodes[0]).unwrap();
    let s = nodes[0].dp.snapshot();
    assert_eq!(s.masq.map(|m| m.subnet), v4);
    assert_eq!(
        s.masq6.map(|m| (m.network, m.subnet)),
        Some((pool().network, v6.unwrap()))
    );
    // Deleted behind weft's back: repaired.
    let mut drifted = s.clone();
    drifted.masq6 = None;
    nodes[0].dp.set_state(drifted);
    let repaired = wait_until(Duration::from_secs(15), || {
        nodes[0].dp.snapshot().masq6.is_some()
    })
    .await;
    assert!(repaired, "the IPv6 masquerade table is put back");
    let answer = nodes[0].handle.take().unwrap().leave().await.unwrap();
    assert!(answer.starts_with("left"), "{answer}");
    let s = nodes[0].dp.snapshot();
    assert!(s.masq.is_none() && s.masq6.is_none(), "{s:?}");
    stop_all(&mut nodes).await;
}
