//! The simulator at small N, so that it cannot rot: five agents on chitchat's in-memory transport
//! with tokio's clock paused go through every scenario (cold start, join, idle, kill, leave,
//! partition and heal), and three agents on sealed loopback UDP go through a cold start in real
//! time. The outcomes are asserted from the agents' reports and from their fake kernels.

use std::time::Duration;

use weft_sim::{LinkKind, Scenario, SimConfig, Timing};

fn assert_all(what: &str, t: &Option<Timing>) {
    let t = t.as_ref().unwrap_or_else(|| panic!("{what} not measured"));
    assert!(t.complete(), "{what}: only {}/{} agents", t.done, t.agents);
    assert!(t.max_s.is_some());
}

#[tokio::test(start_paused = true)]
async fn five_agents_on_the_channel_link_go_through_every_scenario() {
    let mut cfg = SimConfig::new(5, LinkKind::Channel, Scenario::All);
    cfg.idle = Duration::from_secs(10);
    cfg.partition = Duration::from_secs(20);
    cfg.timeout = Duration::from_secs(120);
    cfg.loss = 0.1;
    let (report, routes) = weft_sim::smoke(cfg).await.expect("simulation runs");

    // Cold start: every agent active with a distinct subnet and every other's routes.
    assert_all("all see all alive", &report.members);
    assert_all("cold start", &report.cold);
    assert_eq!(report.cold.as_ref().unwrap().agents, 5);
    // The newcomer's routes reached all five others.
    assert_all("join", &report.join);
    assert_eq!(report.join.as_ref().unwrap().agents, 5);
    // The killed agent is marked dead by the five survivors; the leaver's routes are gone
    // from the remaining four.
    assert_all("kill", &report.kill);
    assert_eq!(report.kill.as_ref().unwrap().agents, 5);
    assert_all("leave", &report.leave);
    assert_eq!(report.leave.as_ref().unwrap().agents, 4);
    // The halves heal into one view with no subnet owned twice.
    assert_all("partition heal", &report.partition_heal);
    assert_eq!(report.duplicate_subnets, 0);
    let idle = report.idle.as_ref().expect("idle measured");
    assert_eq!(idle.false_deaths, 0, "no false deaths while idle");
    assert!(idle.bytes_per_s.as_ref().is_some_and(|b| b.median > 0.0));

    // Each of the four survivors' fake kernels routes the three other survivors plus the
    // killed node (its subnet stays reserved and routed), but not the node that left.
    assert_eq!(routes, vec![4, 4, 4, 4], "routes per survivor");
    assert!(report.markdown_row().starts_with("| 5 | channel | 10% |"));
}

#[tokio::test]
async fn three_agents_on_sealed_loopback_udp_converge() {
    let mut cfg = SimConfig::new(3, LinkKind::Udp, Scenario::Cold);
    cfg.gossip_interval = Duration::from_millis(200);
    cfg.settle = Some(Duration::from_secs(1));
    cfg.timeout = Duration::from_secs(60);
    let (report, routes) = weft_sim::smoke_scenario(cfg)
        .await
        .expect("simulation runs");
    assert_all("cold start", &report.cold);
    assert_eq!(routes, vec![2, 2, 2], "routes per agent");
}
