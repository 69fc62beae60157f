//! The node driven with explicit times, as the driver drives it, without root, sockets or timers.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use weft_proto::{Backend, ClaimState, Ipv4Cidr, NodeRecord, PersistedState};

use super::*;
use crate::lease::{Member, Phase};
use crate::node::notices::Notice;

const START_MS: u64 = 1_800_000_000_000;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn at(now: Duration) -> Times {
    let ms = START_MS + now.as_millis() as u64;
    Times {
        now,
        now_ms: ms,
        wall_ms: ms,
    }
}

fn underlay(mtu: u32) -> UnderlayInfo {
    UnderlayInfo {
        ifname: "eth0".into(),
        ifindex: 2,
        ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        mtu,
        ipv6: None,
    }
}

fn config(seeds: &[&str]) -> Config {
    let mut c = Config::with_defaults("a").unwrap();
    c.seeds = seeds.iter().map(|s| s.to_string()).collect();
    c
}

fn node_with(config: Config, restored: Result<Option<PersistedState>, String>) -> Node {
    Node::new(
        config,
        underlay(1500),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        restored,
        true,
        None,
        at(Duration::ZERO),
    )
    .0
}

fn node(seeds: &[&str]) -> Node {
    node_with(config(seeds), Ok(None))
}

/// Peers b (10.244.200.0/24) and c (10.244.201.0/24) on vxlan.
fn two_vxlan_peers() -> Vec<Member> {
    vec![
        peer("b", 2, Backend::Vxlan, Some("10.244.200.0/24")),
        peer("c", 3, Backend::Vxlan, Some("10.244.201.0/24")),
    ]
}

/// A node of the udp backend (TUN MTU 1440).
fn udp_node() -> Node {
    let mut c = config(&[]);
    c.backend = Backend::Udp;
    let (n, _) = Node::new(
        c,
        underlay(1500),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        Ok(None),
        true,
        Some(UdpFacts {
            mtu: 1440,
            public_key: [7; 32],
        }),
        at(Duration::ZERO),
    );
    n
}

/// A peer's record: `backend` and `subnet` as given, everything else as this node's.
fn peer(name: &str, last: u8, backend: Backend, subnet: Option<&str>) -> Member {
    NodeRecord {
        node_name: name.into(),
        underlay_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)),
        backend,
        network: Ipv4Cidr {
            addr: Ipv4Addr::new(10, 244, 0, 0),
            len: 16,
        },
        vni: if backend == Backend::Vxlan { 1 } else { 0 },
        subnet: subnet.map(|s| crate::lease::net_to_cidr(s.parse().unwrap())),
        claim_time_ms: START_MS - 60_000,
        state: ClaimState::Active,
        vtep_mac: [2, 0, 0, 0, 0, last],
        tunnel_port: 8472,
        public_key: None,
        families: weft_proto::FamiliesV1::default(),
    }
    .pipe(|r| Member {
        name: r.node_name.clone(),
        generation: 1,
        alive: true,
        dead_since_ms: None,
        record: Ok(r),
    })
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

/// Steps until the claim is active; returns the time then.
fn settle(n: &mut Node, members: &dyn Fn() -> Vec<Member>) -> Duration {
    let mut now = Duration::ZERO;
    while !matches!(n.lease().phase(), Phase::Active { .. }) {
        assert!(now < secs(120), "no active claim after 120 s");
        let alive = members().iter().filter(|m| m.alive).count();
        n.step(at(now), members(), alive);
        now += Duration::from_millis(500);
    }
    now
}

struct Files {
    holds: Option<String>,
}

impl FileFacts for Files {
    fn subnet_env_holds(&self, text: &str) -> bool {
        self.holds.as_deref() == Some(text)
    }
    fn subnet_env_failure(&self) -> Option<String> {
        None
    }
    fn subnet_env_path(&self) -> String {
        "/run/weft/subnet.env".into()
    }
    fn state_failure(&self) -> Option<String> {
        None
    }
    fn udp_peers_failure(&self) -> Option<String> {
        None
    }
}

fn lease_events(outputs: &[Output]) -> Vec<&LeaseEvent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Lease(e) => Some(e),
            _ => None,
        })
        .collect()
}

#[test]
fn a_first_node_claims_settles_then_asks_for_subnet_env_and_a_reconcile() {
    let mut n = node(&[]);
    let first = n.step(at(Duration::ZERO), Vec::new(), 0);
    assert!(
        matches!(
            lease_events(&first.outputs)[..],
            [LeaseEvent::Claimed { .. }]
        ),
        "{:?}",
        first.outputs
    );
    assert_eq!(
        first.subnet_env, None,
        "nothing to hand out before it settles"
    );
    assert_eq!(first.publish.state, ClaimState::Claimed);
    assert!(first.publish.subnet.is_some());
    assert!(
        first.onlink_query.is_none(),
        "vxlan needs no on-link lookup"
    );
    let settled = settle(&mut n, &Vec::new);
    let step = n.step(at(settled), Vec::new(), 0);
    let env = step.subnet_env.expect("subnet.env once active");
    assert!(env.contains("FLANNEL_SUBNET=10.244.") && env.contains("FLANNEL_MTU=1450"));
    assert_eq!(step.publish.state, ClaimState::Active);
    let (_, due) = n.reconcile_due(settled);
    assert!(due, "never reconciled yet");
    let plan = n.reconcile(settled);
    assert!(plan.desired.vxlan.is_some());
    assert!(plan.allow_delete, "a first node has no view to wait for");
    // Not ready until subnet.env holds the active subnet; then told once.
    let status = n.status(&Files { holds: None });
    assert!(!status.ready);
    assert!(
        status
            .ready_reason
            .as_deref()
            .is_some_and(|r| r.contains("not written yet")),
        "{:?}",
        status.ready_reason
    );
    n.reconciled(plan.desired, true, settled);
    let status = n.status(&Files { holds: Some(env) });
    assert!(status.ready, "{:?}", status.ready_reason);
    assert!(n.became_ready(true, settled).is_some());
    assert!(n.became_ready(true, settled + secs(1)).is_none());
}

#[test]
fn a_joining_node_holds_deletions_until_its_view_is_warm() {
    let mut n = node(&["192.0.2.9:7947"]);
    let peers = || vec![peer("b", 2, Backend::Vxlan, Some("10.244.200.0/24"))];
    let t0 = secs(1);
    n.step(at(t0), peers(), 1);
    assert!(
        !n.reconcile(t0).allow_delete,
        "the first live peer was just heard"
    );
    assert!(
        n.step_due(t0, false, false),
        "waiting on time: a step is due"
    );
    let warm = t0 + pacing::warmup(n.config().gossip_interval, true);
    assert!(!n.reconcile(warm - Duration::from_millis(1)).allow_delete);
    assert!(n.reconcile(warm).allow_delete);
}

#[test]
fn a_failed_reconcile_is_retried_and_a_good_one_is_not_repeated() {
    let mut n = node(&[]);
    let t = settle(&mut n, &Vec::new);
    let plan = n.reconcile(t);
    n.reconciled(plan.desired.clone(), false, t);
    assert!(n.reconcile_due(t).1, "a failed apply is due again at once");
    assert!(n.step_due(t, false, false), "and keeps the steps coming");
    n.reconciled(plan.desired, true, t);
    assert!(!n.reconcile_due(t + secs(1)).1, "nothing changed");
    assert!(
        !n.step_due(t + secs(1), false, false),
        "an idle settled node rests"
    );
    let interval = n.config().reconcile_interval;
    assert!(n.reconcile_due(t + interval).1, "the periodic pass");
    // A step is owed when the interval has passed, however recently another step ran (a step
    // for a probe's news must not push the periodic reconcile back by a whole interval).
    assert!(
        !n.step_due(t + interval - Duration::from_millis(1), false, false),
        "not before"
    );
    assert!(
        n.step_due(t + interval, false, false),
        "the periodic reconcile needs a step"
    );
}

#[test]
fn the_claim_is_saved_when_it_changes_and_every_30_s_not_otherwise() {
    let mut n = node(&[]);
    assert_eq!(
        n.state_to_save(at(Duration::ZERO), false),
        None,
        "no claim yet"
    );
    n.step(at(Duration::ZERO), Vec::new(), 0);
    let first = n
        .state_to_save(at(Duration::ZERO), false)
        .expect("a new claim");
    assert!(!first.active);
    n.state_saved(first, Duration::ZERO);
    assert_eq!(n.state_to_save(at(secs(1)), false), None);
    let t = settle(&mut n, &Vec::new);
    let active = n.state_to_save(at(t), false).expect("it settled");
    assert!(active.active);
    n.state_saved(active, t);
    assert_eq!(n.state_to_save(at(t + secs(29)), false), None);
    assert!(n.state_to_save(at(t + secs(30)), false).is_some());
    assert!(
        n.state_to_save(at(t + secs(1)), true).is_some(),
        "a clean stop"
    );
}

#[test]
fn leaving_releases_the_claim_and_keeps_nothing_to_save() {
    let mut n = node(&[]);
    let t = settle(&mut n, &Vec::new);
    let plan = n.reconcile(t);
    n.reconciled(plan.desired.clone(), true, t);
    let held = n.lease().active_subnet();
    let (released, record) = n.leave();
    assert_eq!(released, held);
    assert_eq!(record.state, ClaimState::Leaving);
    assert_eq!(
        n.state_to_save(at(t + secs(60)), true),
        None,
        "nothing to keep"
    );
}

#[test]
fn underlay_changes_rebuild_and_the_overlay_mtu_follows() {
    let mut n = node(&[]);
    let t = settle(&mut n, &Vec::new);
    assert!(!n.underlay_observed(underlay(1500)).changed);
    let change = n.underlay_observed(underlay(1400));
    assert!(change.changed);
    assert!(
        change
            .subnet_env
            .as_deref()
            .is_some_and(|e| e.contains("FLANNEL_MTU=1350")),
        "{:?}",
        change.subnet_env
    );
    assert_eq!(
        change.outputs,
        vec![Output::Notice(Notice::UnderlayMtuChanged {
            from: 1500,
            to: 1400
        })]
    );
    assert_eq!(n.reconcile(t).desired.vxlan.map(|d| d.mtu), Some(1350));
    // A new address is told; the announced one stays in the record and on the device.
    let moved = UnderlayInfo {
        ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)),
        ifindex: 9,
        ..underlay(1400)
    };
    let change = n.underlay_observed(moved);
    assert!(change.subnet_env.is_none(), "the MTU did not change");
    assert!(
        change
            .outputs
            .contains(&Output::Notice(Notice::UnderlayAddressChanged {
                old: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                new: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)),
            }))
    );
    assert_eq!(
        n.record().underlay_ip,
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    );
    assert_eq!(
        n.reconcile(t)
            .desired
            .vxlan
            .map(|d| (d.local_ip, d.underlay_ifindex)),
        Some((IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), Some(9)))
    );
}

#[test]
fn a_mixed_cluster_peer_is_refused_and_told_once() {
    let mut n = node(&[]);
    let peers = || vec![peer("hg", 3, Backend::HostGw, Some("10.244.7.0/24"))];
    let told = |outputs: &[Output]| {
        outputs
            .iter()
            .filter(
                |o| matches!(o, Output::Notice(Notice::NotProgrammed { peer, .. }) if peer == "hg"),
            )
            .count()
    };
    let first = n.step(at(Duration::ZERO), peers(), 1);
    assert_eq!(told(&first.outputs), 1, "{:?}", first.outputs);
    let again = n.step(at(secs(1)), peers(), 1);
    assert_eq!(told(&again.outputs), 0);
    let t = settle(&mut n, &peers);
    let plan = n.reconcile(t);
    assert!(
        plan.desired.fdb.is_empty(),
        "a refused peer is never programmed"
    );
}

#[test]
fn a_peer_is_programmed_once_and_its_removal_told() {
    let mut n = node(&[]);
    let with_b = || vec![peer("b", 2, Backend::Vxlan, Some("10.244.200.0/24"))];
    let t = settle(&mut n, &with_b);
    n.step(at(t), with_b(), 1);
    let plan = n.reconcile(t);
    assert_eq!(plan.desired.fdb.len(), 1);
    let out = n.reconciled(plan.desired, true, t);
    assert!(
        matches!(&out[..], [Output::Programming(Change::Programmed { peer, .. })] if peer == "b"),
        "{out:?}"
    );
    n.step(at(t + secs(1)), Vec::new(), 0);
    let plan = n.reconcile(t + secs(1));
    assert!(plan.desired.fdb.is_empty());
    let out = n.reconciled(plan.desired, true, t + secs(1));
    assert!(
        matches!(&out[..], [Output::Programming(Change::Removed { peer, .. })] if peer == "b"),
        "{out:?}"
    );
}

#[test]
fn the_state_file_restores_an_active_claim_and_a_foreign_or_broken_one_is_told() {
    let state = |name: &str, subnet: &str| PersistedState {
        version: 1,
        node_name: name.into(),
        network: "10.244.0.0/16".parse().ok(),
        subnet: subnet.parse().ok(),
        claim_time_ms: START_MS - 3_600_000,
        last_alive_ms: START_MS - 5_000,
        active: true,
        ipv6_network: None,
        ipv6_subnet: None,
    };
    let mut n = node_with(config(&[]), Ok(Some(state("a", "10.244.42.0/24"))));
    let step = n.step(at(Duration::ZERO), Vec::new(), 0);
    assert!(
        step.subnet_env
            .as_deref()
            .is_some_and(|e| e.contains("FLANNEL_SUBNET=10.244.42.1/24")),
        "a restart inside the reservation is active at once: {:?}",
        step.subnet_env
    );
    let (_, outputs) = Node::new(
        config(&[]),
        underlay(1500),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        Ok(Some(state("b", "10.244.42.0/24"))),
        true,
        None,
        at(Duration::ZERO),
    );
    assert_eq!(
        outputs,
        vec![Output::Notice(Notice::StateFileForeign {
            other: "b".into()
        })]
    );
    let broken = node_with(config(&[]), Err("expected value at line 1".into()));
    let status = broken.status(&Files { holds: None });
    assert!(
        status
            .warnings
            .iter()
            .any(|w| w.contains("state file unreadable")),
        "{:?}",
        status.warnings
    );
}

#[test]
fn the_udp_peer_table_lists_the_winners_for_the_udp_backend_only() {
    let mut n = udp_node();
    let peers = || vec![peer("b", 2, Backend::Udp, Some("10.244.200.0/24"))];
    let t = settle(&mut n, &peers);
    n.step(at(t), peers(), 1);
    let table = n.udp_peers().expect("the udp backend");
    assert_eq!(table.len(), 1);
    assert_eq!(table[0].subnet, "10.244.200.0/24".parse().ok());
    assert_eq!(n.record().public_key, Some([7; 32]));
    assert_eq!(node(&[]).udp_peers(), None);
}

#[test]
fn a_reduced_path_lowers_the_routes_to_that_peer_only_and_goes_back() {
    use crate::node::core::probes::ProbeFacts;
    use crate::probe::path::{PathState, Verdict};
    let facts = |verdict: Verdict| ProbeFacts {
        states: [(
            "b".to_string(),
            PathState {
                verdict,
                since: Duration::ZERO,
                rtt: None,
                reduced_mtu: None,
            },
        )]
        .into(),
        ..ProbeFacts::default()
    };
    let mtus = |n: &Node, t: Duration| -> Vec<(String, Option<u32>, Option<String>)> {
        n.reconcile(t)
            .desired
            .routes
            .iter()
            .map(|r| (r.dst.to_string(), r.mtu, r.device.clone()))
            .collect()
    };
    // vxlan: the route to b's subnet gets the MTU; c's does not.
    let mut n = node(&[]);
    let t = settle(&mut n, &two_vxlan_peers);
    n.step(at(t), two_vxlan_peers(), 2);
    n.probes_observed(facts(Verdict::Mtu(1354)));
    let routes = mtus(&n, t);
    assert!(
        routes.contains(&("10.244.200.0/24".into(), Some(1354), Some("weft.1".into()))),
        "{routes:?}"
    );
    assert!(
        routes.contains(&("10.244.201.0/24".into(), None, Some("weft.1".into()))),
        "{routes:?}"
    );
    assert!(n.reconcile_due(t).1, "a new route MTU is a change to apply");
    n.probes_observed(facts(Verdict::Ok));
    assert!(mtus(&n, t).iter().all(|(_, mtu, _)| mtu.is_none()));

    // udp: one route carries the overlay into the TUN device; b gets a longer one of its own.
    let mut n = udp_node();
    let peers = || vec![peer("b", 2, Backend::Udp, Some("10.244.200.0/24"))];
    let t = settle(&mut n, &peers);
    n.step(at(t), peers(), 1);
    let before = mtus(&n, t);
    n.probes_observed(facts(Verdict::Mtu(1300)));
    let after = mtus(&n, t);
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert!(
        after.contains(&(
            "10.244.200.0/24".into(),
            Some(1300),
            Some(crate::dataplane::TUN_DEVICE.into())
        )),
        "{after:?}"
    );
    n.probes_observed(facts(Verdict::Ok));
    assert_eq!(mtus(&n, t), before);
}

#[test]
fn the_probe_plan_lists_the_programmed_peers_that_answer_probes() {
    let mut n = node(&[]);
    let answering: std::collections::BTreeSet<String> = ["b".to_string()].into();
    let empty = n.probe_plan(&answering);
    assert_eq!(empty.local, None, "no active subnet, no probe address");
    assert!(empty.targets.is_empty());
    let t = settle(&mut n, &two_vxlan_peers);
    n.step(at(t), two_vxlan_peers(), 2);
    let plan = n.reconcile(t);
    n.reconciled(plan.desired, true, t);
    let plan = n.probe_plan(&answering);
    let own = n.lease().active_subnet().expect("active");
    assert_eq!(
        plan.local,
        Some(own.network()),
        "vxlan: the subnet's network address"
    );
    assert_eq!(plan.overlay_mtu, 1450);
    // c does not announce a path summary (it does not answer probes): not probed.
    let targets: Vec<(String, String, u64, Option<[u8; 6]>)> = plan
        .targets
        .iter()
        .map(|t| {
            (
                t.expected.name.clone(),
                t.addr.to_string(),
                t.expected.generation,
                t.expected.vtep_mac,
            )
        })
        .collect();
    assert_eq!(
        targets,
        [(
            "b".to_string(),
            "10.244.200.0".to_string(),
            1,
            Some([2, 0, 0, 0, 0, 2])
        )]
    );
    // A peer dead in gossip is not probed.
    let mut dead = two_vxlan_peers();
    dead[0].alive = false;
    n.step(at(t + secs(1)), dead, 1);
    assert!(n.probe_plan(&answering).targets.is_empty());
}
