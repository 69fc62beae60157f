//! L1: path probes between 20 in-process agents (fake data plane, in-memory gossip, paused
//! time), their probes carried by an in-memory hub (`weft::agent::ProbeHub`) that can cut a pair
//! or cap the size it carries. Every path is found `ok`; a cut pair is `down` at both ends
//! within 30 s while every other stays `ok`, every agent's fleet view lists it both ways, and it
//! comes back; a pair carrying 1400-byte packets is `mtu` with the route MTU in both agents'
//! data planes, removed once healed; each agent sends what the budget says (packets a second).

#[path = "common/l1config.rs"]
mod l1config;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chitchat::transport::ChannelTransport;
use l1config::{node_config, wait_until};
use weft::agent::{Agent, AgentHandle, ProbeHub};
use weft::dataplane::fake::FakeDataplane;

const N: usize = 20;

fn gossip_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 97, 0, i as u8 + 1)), 7947)
}

struct Mesh {
    handles: Vec<AgentHandle>,
    dps: Vec<FakeDataplane>,
    hub: ProbeHub,
    _dir: tempfile::TempDir,
}

impl Mesh {
    async fn start() -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let t = ChannelTransport::default();
        let hub = ProbeHub::new();
        let mut handles = Vec::new();
        let mut dps = Vec::new();
        for i in 0..N {
            let seeds = if i == 0 { vec![] } else { vec![gossip_addr(0)] };
            let config = weft::Config {
                probes: true,
                ..node_config(i, dir.path(), gossip_addr(i), &seeds, "l1paths")
            };
            let dp = FakeDataplane::new();
            let handle = Agent::new(config)
                .dataplane(Box::new(dp.clone()))
                .transport(Box::new(t.clone()))
                .underlay(l1config::underlay(i))
                .serve_api(false)
                .probe_hub(hub.clone())
                .start()
                .await
                .expect("agent starts");
            handles.push(handle);
            dps.push(dp);
        }
        Mesh {
            handles,
            dps,
            hub,
            _dir: dir,
        }
    }

    fn name(i: usize) -> String {
        format!("node-{i:02}")
    }

    /// Agent I's probe address (its subnet's network address, vxlan).
    fn addr(&self, i: usize) -> Option<IpAddr> {
        let s = self.handles[i].status();
        let subnet = s.borrow().subnet?;
        Some(IpAddr::V4(subnet.network()))
    }

    /// Agent I's path to agent J: (state, mtu).
    fn path(&self, i: usize, j: usize) -> (String, Option<u32>) {
        let s = self.handles[i].status();
        let s = s.borrow();
        s.nodes
            .iter()
            .find(|n| n.name == Self::name(j))
            .and_then(|n| n.path.as_ref())
            .map(|p| (p.state.clone(), p.mtu))
            .unwrap_or_else(|| ("-".into(), None))
    }

    fn all(&self, want: impl Fn(usize, usize, &str) -> bool) -> bool {
        (0..N).all(|i| {
            (0..N)
                .filter(|j| *j != i)
                .all(|j| want(i, j, &self.path(i, j).0))
        })
    }

    fn route_mtu(&self, i: usize, j: usize) -> Option<u32> {
        let s = self.handles[j].status();
        let subnet = s.borrow().subnet?;
        self.dps[i]
            .snapshot()
            .routes
            .iter()
            .find(|r| r.dst == ipnet::IpNet::V4(subnet))
            .and_then(|r| r.mtu)
    }
}

#[tokio::test(start_paused = true)]
async fn twenty_agents_find_every_path_then_a_cut_pair_and_a_smaller_one() {
    let mesh = Mesh::start().await;
    assert!(
        wait_until(Duration::from_secs(180), || mesh.all(|_, _, s| s == "ok")).await,
        "every path ok"
    );

    // The budget: over 60 s, each agent sends what `schedule::cost` says at N = 20 (2 rounds
    // a second, each a small and a full-size probe, and as many replies to its peers).
    let before: Vec<u64> = (0..N)
        .map(|i| mesh.hub.sent_from(mesh.addr(i).unwrap()))
        .collect();
    tokio::time::sleep(Duration::from_secs(60)).await;
    for (i, b) in before.iter().enumerate() {
        let per_s = (mesh.hub.sent_from(mesh.addr(i).unwrap()) - b) as f64 / 60.0;
        assert!(
            (6.0..=10.0).contains(&per_s),
            "agent {i} sent {per_s:.1} datagrams/s (model: 8)"
        );
    }

    // A cut pair is down at both ends, and only it.
    let (a, b) = (3, 7);
    mesh.hub.cut(mesh.addr(a).unwrap(), mesh.addr(b).unwrap());
    let start = tokio::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || {
            mesh.path(a, b).0 == "down" && mesh.path(b, a).0 == "down"
        })
        .await,
        "{a} ↔ {b} down within 30 s"
    );
    eprintln!("cut pair down after {:?}", start.elapsed());
    assert!(mesh.all(|i, j, s| {
        let cut = (i, j) == (a, b) || (i, j) == (b, a);
        (s == "down") == cut
    }));
    // Every agent's fleet view lists it, both ways, once the summaries spread.
    assert!(
        wait_until(Duration::from_secs(10), || {
            (0..N).all(|i| {
                let s = mesh.handles[i].status();
                let s = s.borrow();
                s.paths.as_ref().is_some_and(|p| {
                    p.pairs.len() == 2 && p.pairs.iter().all(|x| x.both_ways && x.state == "down")
                })
            })
        })
        .await,
        "every fleet view lists the cut pair"
    );
    mesh.hub.heal();
    assert!(
        wait_until(Duration::from_secs(30), || mesh.all(|_, _, s| s == "ok")).await,
        "back ok after healing"
    );

    // A pair carrying at most 1400-byte packets: mtu at both ends, the route MTU set in both
    // data planes, removed once healed.
    let (a, b) = (5, 11);
    mesh.hub
        .limit(mesh.addr(a).unwrap(), mesh.addr(b).unwrap(), 1400);
    assert!(
        wait_until(Duration::from_secs(30), || {
            mesh.path(a, b) == ("mtu".into(), Some(1400))
                && mesh.path(b, a) == ("mtu".into(), Some(1400))
        })
        .await,
        "{a} ↔ {b} mtu 1400 within 30 s: {:?} {:?}",
        mesh.path(a, b),
        mesh.path(b, a)
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            mesh.route_mtu(a, b) == Some(1400) && mesh.route_mtu(b, a) == Some(1400)
        })
        .await,
        "route MTUs {:?} {:?}",
        mesh.route_mtu(a, b),
        mesh.route_mtu(a, b)
    );
    assert_eq!(
        mesh.route_mtu(a, 0),
        None,
        "other routes keep the device's MTU"
    );
    mesh.hub.heal();
    assert!(
        wait_until(Duration::from_secs(40), || {
            mesh.all(|_, _, s| s == "ok")
                && mesh.route_mtu(a, b).is_none()
                && mesh.route_mtu(b, a).is_none()
        })
        .await,
        "back ok and route MTUs removed"
    );
}
