//! L1: many complete agents in one process, gossiping over chitchat's in-memory transport (which
//! can cut links), each with the fake data plane; tokio's clock is paused so the runs are fast
//! and repeatable.

#[path = "common/l1config.rs"]
mod l1config;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chitchat::transport::ChannelTransport;
use ipnet::Ipv4Net;
use l1config::{node_config, wait_until};
use weft::Config;
use weft::agent::{Agent, AgentHandle, UnderlayInfo};
use weft::dataplane::fake::FakeDataplane;
use weft_proto::{Ipv4Cidr, PersistedState};

fn gossip_addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 99, (i / 250) as u8, (i % 250 + 1) as u8)),
        7947,
    )
}

fn underlay(i: usize) -> UnderlayInfo {
    UnderlayInfo {
        ifname: "eth0".into(),
        ifindex: 2,
        ip: IpAddr::V4(Ipv4Addr::new(
            192,
            0,
            (i / 250) as u8 + 2,
            (i % 250 + 1) as u8,
        )),
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

fn config(i: usize, dir: &Path, seeds: &[usize]) -> Config {
    let seeds: Vec<SocketAddr> = seeds.iter().map(|s| gossip_addr(*s)).collect();
    node_config(i, dir, gossip_addr(i), &seeds, "l1")
}

struct Node {
    handle: Option<AgentHandle>,
    dp: FakeDataplane,
    config: Config,
    i: usize,
}

async fn start(transport: &ChannelTransport, config: Config, i: usize, dp: FakeDataplane) -> Node {
    let handle = Agent::new(config.clone())
        .dataplane(Box::new(dp.clone()))
        .transport(Box::new(transport.clone()))
        .underlay(underlay(i))
        .serve_api(false)
        .start()
        .await
        .expect("agent starts");
    Node {
        handle: Some(handle),
        dp,
        config,
        i,
    }
}

/// Starts N agents with fake kernels: agent 0 has no seeds, every other one has SEEDS.
async fn start_mesh(
    transport: &ChannelTransport,
    dir: &Path,
    n: usize,
    seeds: &[usize],
) -> Vec<Node> {
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let seeds = if i == 0 { &[][..] } else { seeds };
        nodes.push(start(transport, config(i, dir, seeds), i, FakeDataplane::new()).await);
    }
    nodes
}

fn subnet_of(n: &Node) -> Option<String> {
    Some(n.handle.as_ref()?.status().borrow().subnet?.to_string())
}

fn ready(n: &Node) -> bool {
    n.handle.as_ref().is_some_and(|h| h.status().borrow().ready)
}

/// Routes each node's fake kernel holds: destination → gateway.
fn routes(n: &Node) -> BTreeSet<Ipv4Net> {
    n.dp.snapshot()
        .routes
        .iter()
        .filter_map(|r| match r.dst {
            ipnet::IpNet::V4(dst) => Some(dst),
            ipnet::IpNet::V6(_) => None,
        })
        .collect()
}

/// Waits (in paused time) until `check` holds, up to `limit`.
/// Every running node is ready with a distinct subnet and holds a route to each other's subnet.
fn converged(nodes: &[Node]) -> Result<(), String> {
    let running: Vec<&Node> = nodes.iter().filter(|n| n.handle.is_some()).collect();
    let mut subnets = BTreeMap::new();
    for n in &running {
        if !ready(n) {
            return Err(format!("node-{} not ready", n.i));
        }
        let s = subnet_of(n).ok_or(format!("node-{} has no subnet", n.i))?;
        if let Some(other) = subnets.insert(s.clone(), n.i) {
            return Err(format!("{s} held by node-{other} and node-{}", n.i));
        }
    }
    for n in &running {
        let want: BTreeSet<Ipv4Net> = running
            .iter()
            .filter(|m| m.i != n.i)
            .map(|m| subnet_of(m).unwrap().parse().unwrap())
            .collect();
        let have = routes(n);
        if have != want {
            return Err(format!("node-{} routes {have:?}, want {want:?}", n.i));
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
    for n in nodes.iter_mut() {
        if let Some(h) = n.handle.take() {
            h.shutdown().await.unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn twenty_agents_started_together_claim_distinct_subnets_and_program_all_peers() {
    let dir = tempfile::tempdir().unwrap();
    let transport = ChannelTransport::default();
    let mut nodes = start_mesh(&transport, dir.path(), 20, &[0, 1]).await;
    assert_converges(&nodes, Duration::from_secs(60)).await;
    // Each fake kernel holds the full VXLAN picture: device, 19 neighbours, 19 FDB entries.
    for n in &nodes {
        let s = n.dp.snapshot();
        assert_eq!(s.neighbours.len(), 19);
        assert_eq!(s.fdb.len(), 19);
        assert_eq!(s.vxlan.as_ref().unwrap().name, "weft.1");
        assert!(s.bridge.is_some(), "bridge configured once active");
        let env = std::fs::read_to_string(&n.config.subnet_file).unwrap();
        assert!(env.contains(&format!(
            "FLANNEL_SUBNET={}",
            first_host(&subnet_of(n).unwrap())
        )));
        assert!(env.contains("FLANNEL_MTU=1450"));
    }
    stop_all(&mut nodes).await;
}

fn first_host(subnet: &str) -> String {
    let net: Ipv4Net = subnet.parse().unwrap();
    format!(
        "{}/{}",
        Ipv4Addr::from(u32::from(net.network()) + 1),
        net.prefix_len()
    )
}

fn preload(config: &Config, subnet: &str, claim_time_ms: u64) {
    let net: Ipv4Net = subnet.parse().unwrap();
    let state = PersistedState {
        version: 1,
        node_name: config.node_name.clone(),
        network: Some(Ipv4Cidr {
            addr: config.network.network(),
            len: config.network.prefix_len(),
        }),
        subnet: Some(Ipv4Cidr {
            addr: net.network(),
            len: net.prefix_len(),
        }),
        claim_time_ms,
        last_alive_ms: now_ms(),
        active: true,
        ipv6_network: None,
        ipv6_subnet: None,
    };
    std::fs::create_dir_all(&config.state_dir).unwrap();
    std::fs::write(
        PathBuf::from(&config.state_dir).join("state.json"),
        state.to_json(),
    )
    .unwrap();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(start_paused = true)]
async fn two_agents_preloaded_with_the_same_subnet_end_with_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let transport = ChannelTransport::default();
    let c0 = config(0, dir.path(), &[]);
    let c1 = config(1, dir.path(), &[0]);
    // node-01's claim is older: it keeps 10.244.50.0/24, node-00 must move.
    preload(&c0, "10.244.50.0/24", now_ms() - 1_000);
    preload(&c1, "10.244.50.0/24", now_ms() - 5_000);
    let mut nodes = vec![
        start(&transport, c0, 0, FakeDataplane::new()).await,
        start(&transport, c1, 1, FakeDataplane::new()).await,
    ];
    assert_converges(&nodes, Duration::from_secs(60)).await;
    assert_eq!(subnet_of(&nodes[1]).as_deref(), Some("10.244.50.0/24"));
    assert_ne!(subnet_of(&nodes[0]).as_deref(), Some("10.244.50.0/24"));
    let lost = nodes[0].handle.as_ref().unwrap().metrics();
    assert_eq!(
        lost.active_claims_lost
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // node-00 rewrote its subnet.env for its new subnet.
    let env = std::fs::read_to_string(&nodes[0].config.subnet_file).unwrap();
    assert!(!env.contains("10.244.50.1/24"), "{env}");
    stop_all(&mut nodes).await;
}

#[tokio::test(start_paused = true)]
async fn restarted_agent_keeps_its_subnet_and_its_peers_routes() {
    let dir = tempfile::tempdir().unwrap();
    let transport = ChannelTransport::default();
    let mut nodes = start_mesh(&transport, dir.path(), 3, &[0]).await;
    assert_converges(&nodes, Duration::from_secs(60)).await;
    let before = subnet_of(&nodes[2]).unwrap();
    let kernel_before = nodes[2].dp.snapshot();
    nodes[2].handle.take().unwrap().shutdown().await.unwrap();
    // SIGTERM semantics: everything stays programmed.
    assert_eq!(nodes[2].dp.snapshot(), kernel_before);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n2 = start(&transport, nodes[2].config.clone(), 2, nodes[2].dp.clone()).await;
    nodes[2] = n2;
    // Straight back as active with the same subnet, before any gossip round.
    assert_eq!(subnet_of(&nodes[2]).as_deref(), Some(before.as_str()));
    assert_converges(&nodes, Duration::from_secs(60)).await;
    assert_eq!(subnet_of(&nodes[2]).as_deref(), Some(before.as_str()));
    stop_all(&mut nodes).await;
}

#[tokio::test(start_paused = true)]
async fn agent_with_wiped_state_dir_gets_its_subnet_back_from_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let transport = ChannelTransport::default();
    let mut nodes = start_mesh(&transport, dir.path(), 3, &[0]).await;
    assert_converges(&nodes, Duration::from_secs(60)).await;
    let before = subnet_of(&nodes[2]).unwrap();
    nodes[2].handle.take().unwrap().shutdown().await.unwrap();
    std::fs::remove_dir_all(&nodes[2].config.state_dir).unwrap();
    std::fs::remove_file(&nodes[2].config.subnet_file).unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    nodes[2] = start(&transport, nodes[2].config.clone(), 2, FakeDataplane::new()).await;
    assert_converges(&nodes, Duration::from_secs(60)).await;
    assert_eq!(subnet_of(&nodes[2]).as_deref(), Some(before.as_str()));
    stop_all(&mut nodes).await;
}

#[tokio::test(start_paused = true)]
async fn partition_during_joins_then_heal_ends_with_no_duplicate_subnet() {
    let dir = tempfile::tempdir().unwrap();
    let transport = ChannelTransport::default();
    // Few subnets, so the two sides are bound to pick some of the same ones.
    let narrow = |mut c: Config| {
        c.subnet_min = "10.244.1.0".parse().unwrap();
        c.subnet_max = "10.244.8.0".parse().unwrap();
        c
    };
    let side_a = [0usize, 1, 2];
    let side_b = [3usize, 4, 5];
    for a in side_a {
        for b in side_b {
            transport.remove_link(gossip_addr(a), gossip_addr(b)).await;
        }
    }
    let mut nodes = Vec::new();
    for i in 0..6 {
        // Each side seeds from its own first node, and from the other side's (unreachable now).
        let seeds = if i < 3 { vec![0, 3] } else { vec![3, 0] };
        let seeds: Vec<usize> = seeds.into_iter().filter(|s| *s != i).collect();
        nodes.push(
            start(
                &transport,
                narrow(config(i, dir.path(), &seeds)),
                i,
                FakeDataplane::new(),
            )
            .await,
        );
    }
    // Each side settles on its own.
    let sides_ready = wait_until(Duration::from_secs(60), || nodes.iter().all(ready)).await;
    assert!(sides_ready, "each side should settle during the partition");
    let during: BTreeSet<String> = nodes.iter().filter_map(subnet_of).collect();
    for a in side_a {
        for b in side_b {
            transport.add_link(gossip_addr(a), gossip_addr(b)).await;
        }
    }
    assert_converges(&nodes, Duration::from_secs(90)).await;
    let after: BTreeSet<String> = nodes.iter().filter_map(subnet_of).collect();
    assert_eq!(after.len(), 6);
    eprintln!(
        "distinct subnets during the partition: {}, after: {}",
        during.len(),
        after.len()
    );
    stop_all(&mut nodes).await;
}

#[tokio::test(start_paused = true)]
async fn leave_frees_the_subnet_and_peers_remove_its_routes() {
    let dir = tempfile::tempdir().unwrap();
    let transport = ChannelTransport::default();
    let mut nodes = start_mesh(&transport, dir.path(), 3, &[0]).await;
    assert_converges(&nodes, Duration::from_secs(60)).await;
    let gone: Ipv4Net = subnet_of(&nodes[2]).unwrap().parse().unwrap();
    let answer = nodes[2].handle.take().unwrap().leave().await.unwrap();
    assert!(answer.starts_with("left"), "{answer}");
    assert_eq!(
        nodes[2].dp.snapshot(),
        Default::default(),
        "leave removes everything weft programmed"
    );
    assert!(!nodes[2].config.subnet_file.exists());
    let removed = wait_until(Duration::from_secs(15), || {
        nodes[..2].iter().all(|n| !routes(n).contains(&gone))
    })
    .await;
    assert!(removed, "peers keep the leaver's route");
    assert_converges(&nodes, Duration::from_secs(30)).await;
    stop_all(&mut nodes).await;
}

#[tokio::test(start_paused = true)]
async fn killed_agent_stays_programmed_during_the_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let transport = ChannelTransport::default();
    let mut nodes = start_mesh(&transport, dir.path(), 3, &[0]).await;
    assert_converges(&nodes, Duration::from_secs(60)).await;
    let gone: Ipv4Net = subnet_of(&nodes[2]).unwrap().parse().unwrap();
    // Abrupt stop: the agent task ends without leaving (like kill -9 for its peers).
    nodes[2].handle.take().unwrap().shutdown().await.unwrap();
    let marked_dead = wait_until(Duration::from_secs(30), || {
        nodes[..2].iter().all(|n| {
            let st = n.handle.as_ref().unwrap().status().borrow().clone();
            st.nodes
                .iter()
                .any(|x| x.name == "node-02" && x.liveness == weft::api::Liveness::Dead)
        })
    })
    .await;
    assert!(marked_dead, "peers never marked the stopped agent dead");
    tokio::time::sleep(Duration::from_secs(60)).await;
    for n in &nodes[..2] {
        assert!(
            routes(n).contains(&gone),
            "route removed inside the reservation period"
        );
    }
    stop_all(&mut nodes).await;
}

/// Starts agent I with its wall clock shifted by OFFSET_MS (an RTC-less box, a VM before NTP).
async fn start_skewed(
    transport: &ChannelTransport,
    config: Config,
    i: usize,
    offset_ms: i64,
    step: std::sync::Arc<std::sync::atomic::AtomicI64>,
) -> Node {
    let dp = FakeDataplane::new();
    let handle = Agent::new(config.clone())
        .dataplane(Box::new(dp.clone()))
        .transport(Box::new(transport.clone()))
        .underlay(underlay(i))
        .serve_api(false)
        .clock_offset_ms(offset_ms)
        .wall_clock_step(step)
        .start()
        .await
        .expect("agent starts");
    Node {
        handle: Some(handle),
        dp,
        config,
        i,
    }
}

/// A pool of three /24s.
fn pool_of_three(mut c: Config) -> Config {
    c.subnet_min = "10.244.1.0".parse().unwrap();
    c.subnet_max = "10.244.3.0".parse().unwrap();
    c
}

/// (subnet, routes) of each node, to compare before and after.
fn settled(nodes: &[Node]) -> Vec<(Option<String>, BTreeSet<Ipv4Net>)> {
    nodes.iter().map(|n| (subnet_of(n), routes(n))).collect()
}

const HOUR_MS: i64 = 3_600_000;

#[tokio::test(start_paused = true)]
async fn a_node_whose_clock_is_behind_joins_a_full_pool_and_takes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let transport = ChannelTransport::default();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let seeds = if i == 0 { vec![] } else { vec![0] };
        let c = pool_of_three(config(i, dir.path(), &seeds));
        nodes.push(start(&transport, c, i, FakeDataplane::new()).await);
    }
    assert_converges(&nodes, Duration::from_secs(60)).await;
    let before = settled(&nodes);
    // Behind by an hour, a day, and 56 years (booted at 1970).
    for (k, behind) in [HOUR_MS, 24 * HOUR_MS, 56 * 365 * 24 * HOUR_MS]
        .into_iter()
        .enumerate()
    {
        let i = 3 + k;
        let c = pool_of_three(config(i, dir.path(), &[0]));
        let mut late = start_skewed(&transport, c, i, -behind, Default::default()).await;
        let full = wait_until(Duration::from_secs(60), || {
            let st = late.handle.as_ref().unwrap().status().borrow().clone();
            st.ready_reason
                .as_deref()
                .is_some_and(|r| r.contains("no free subnet"))
        })
        .await;
        let st = late.handle.as_ref().unwrap().status().borrow().clone();
        assert!(full, "behind by {behind} ms: {:?}", st.ready_reason);
        assert!(!st.ready);
        assert_eq!(st.subnet, None, "behind by {behind} ms");
        // Long enough for any contest to play out: nobody lost anything.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(settled(&nodes), before, "behind by {behind} ms");
        assert_eq!(late.handle.as_ref().unwrap().status().borrow().subnet, None);
        assert!(routes(&late).is_empty());
        late.handle.take().unwrap().shutdown().await.unwrap();
    }
    stop_all(&mut nodes).await;
}

#[tokio::test(start_paused = true)]
async fn clocks_off_by_any_amount_and_stepped_while_running_displace_nothing_settled() {
    let dir = tempfile::tempdir().unwrap();
    let transport = ChannelTransport::default();
    let step = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    // Clocks ahead and behind, one of them stepped by NTP while running.
    let offsets = [0, 5 * HOUR_MS, -56 * 365 * 24 * HOUR_MS, -3 * HOUR_MS];
    let mut nodes = Vec::new();
    for (i, off) in offsets.into_iter().enumerate() {
        let seeds = if i == 0 { vec![] } else { vec![0] };
        let c = config(i, dir.path(), &seeds);
        nodes.push(start_skewed(&transport, c, i, off, step.clone()).await);
    }
    assert_converges(&nodes, Duration::from_secs(60)).await;
    let before = settled(&nodes);
    for jump in [-30 * 24 * HOUR_MS, 10 * HOUR_MS, 0] {
        step.store(jump, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(settled(&nodes), before, "after a step of {jump} ms");
    }
    // A newcomer with a clock 56 years behind takes a free subnet and displaces nobody.
    let c = config(9, dir.path(), &[0]);
    nodes.push(
        start_skewed(
            &transport,
            c,
            9,
            -56 * 365 * 24 * HOUR_MS,
            Default::default(),
        )
        .await,
    );
    assert_converges(&nodes, Duration::from_secs(60)).await;
    for (n, (subnet, _)) in nodes.iter().zip(&before) {
        assert_eq!(&subnet_of(n), subnet);
    }
    stop_all(&mut nodes).await;
}

#[tokio::test(start_paused = true)]
async fn observers_restarted_during_and_after_a_reservation_agree_on_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let transport = ChannelTransport::default();
    let short = |mut c: Config| {
        c.reservation = Duration::from_secs(120);
        pool_of_three(c)
    };
    let mut nodes = Vec::new();
    for i in 0..3 {
        let seeds = if i == 0 { vec![] } else { vec![0, 1] };
        nodes.push(
            start(
                &transport,
                short(config(i, dir.path(), &seeds)),
                i,
                FakeDataplane::new(),
            )
            .await,
        );
    }
    assert_converges(&nodes, Duration::from_secs(60)).await;
    let gone: Ipv4Net = subnet_of(&nodes[2]).unwrap().parse().unwrap();
    // node-02 dies (no leave); the pool is full, so a newcomer waits for its reservation to end.
    nodes[2].handle.take().unwrap().shutdown().await.unwrap();
    let mut taker = start(
        &transport,
        short(config(3, dir.path(), &[0, 1])),
        3,
        FakeDataplane::new(),
    )
    .await;

    // An observer restarted during the reservation: it still routes the subnet to the dead node.
    tokio::time::sleep(Duration::from_secs(40)).await;
    nodes[1].handle.take().unwrap().shutdown().await.unwrap();
    nodes[1] = start(&transport, nodes[1].config.clone(), 1, nodes[1].dp.clone()).await;
    assert!(routes(&nodes[1]).contains(&gone));
    assert_eq!(subnet_of(&taker), None);

    // The reservation ends (counted from node-00's view of the death): the newcomer takes it over.
    let took = wait_until(Duration::from_secs(240), || {
        subnet_of(&taker) == Some(gone.to_string()) && ready(&taker)
    })
    .await;
    assert!(took, "the newcomer never took the expired subnet");
    let taker_vtep = taker.dp.snapshot().vxlan.expect("vxlan device").mac;

    // An observer restarted after the takeover routes the subnet to the new owner at once, though
    // it counts the old owner's death from its own start.
    nodes[0].handle.take().unwrap().shutdown().await.unwrap();
    nodes[0] = start(&transport, nodes[0].config.clone(), 0, FakeDataplane::new()).await;
    // Routed through the new owner's VTEP: the neighbour of `<subnet>.0` is its MAC.
    let to_new_owner = |n: &Node| {
        let s = n.dp.snapshot();
        s.routes.iter().any(|r| r.dst == ipnet::IpNet::V4(gone))
            && s.neighbours
                .iter()
                .any(|nb| nb.ip == gone.network() && nb.mac == taker_vtep)
    };
    let ok = wait_until(Duration::from_secs(20), || to_new_owner(&nodes[0])).await;
    assert!(
        ok,
        "restarted observer: {:?}",
        nodes[0].dp.snapshot().neighbours
    );
    assert!(to_new_owner(&nodes[1]));
    for n in &nodes[..2] {
        let st = n.handle.as_ref().unwrap().status().borrow().clone();
        let holder = st
            .nodes
            .iter()
            .find(|x| x.subnet.map(|s| s.to_string()) == Some(gone.to_string()) && x.programmed)
            .map(|x| x.name.clone());
        assert_eq!(holder.as_deref(), Some("node-03"), "node-0{}", n.i);
    }

    // The new owner restarts well inside its own reservation: it keeps the subnet.
    taker.handle.take().unwrap().shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    taker = start(&transport, taker.config.clone(), 3, taker.dp.clone()).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(subnet_of(&taker), Some(gone.to_string()));
    assert!(ready(&taker));
    nodes[2] = taker;
    assert_converges(&nodes, Duration::from_secs(60)).await;
    stop_all(&mut nodes).await;
}

#[tokio::test(start_paused = true)]
async fn a_saved_claim_stamped_far_in_the_future_is_still_routed_by_every_peer() {
    // The state file was written while this host's clock was ten years ahead. Peers used to refuse
    // the record forever ("claim time ahead of this node's clock") while it reported ready.
    let dir = tempfile::tempdir().unwrap();
    let transport = ChannelTransport::default();
    let c0 = config(0, dir.path(), &[]);
    let c1 = config(1, dir.path(), &[0]);
    preload(&c1, "10.244.60.0/24", now_ms() + 10 * 365 * 24 * 3_600_000);
    let mut nodes = vec![
        start(&transport, c0, 0, FakeDataplane::new()).await,
        start(&transport, c1, 1, FakeDataplane::new()).await,
    ];
    assert_converges(&nodes, Duration::from_secs(60)).await;
    assert_eq!(subnet_of(&nodes[1]).as_deref(), Some("10.244.60.0/24"));
    stop_all(&mut nodes).await;
}
