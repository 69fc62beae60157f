//! L1 (in-process agent, fake data plane, paused time): `--ip-masq` through the data plane. The
//! masquerade table is part of the desired state once the subnet is active, is put back when
//! someone deletes it, is left alone without `--ip-masq`, and goes with `weft leave`.

#[path = "common/l1config.rs"]
mod l1config;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chitchat::transport::ChannelTransport;
use l1config::{node_config, start_agent, wait_until};
use weft::Config;
use weft::agent::AgentHandle;
use weft::dataplane::Masquerade;
use weft::dataplane::fake::FakeDataplane;

async fn start(config: Config, dp: &FakeDataplane) -> AgentHandle {
    start_agent(config, 0, dp, &ChannelTransport::default()).await
}

fn config(dir: &std::path::Path, ip_masq: bool) -> Config {
    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)), 7947);
    Config {
        ip_masq,
        ..node_config(0, dir, listen, &[], "l1m")
    }
}

#[tokio::test(start_paused = true)]
async fn masquerade_rules_follow_the_subnet_are_repaired_and_leave_with_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), true);
    let env_file = cfg.subnet_file.clone();
    let dp = FakeDataplane::new();
    let h = start(cfg, &dp).await;
    let want = |dp: &FakeDataplane| {
        let subnet = h.subnet()?;
        (dp.snapshot().masq
            == Some(Masquerade {
                network: "10.244.0.0/16".parse().unwrap(),
                subnet,
            }))
        .then_some(subnet)
    };
    assert!(
        wait_until(Duration::from_secs(60), || h.is_ready()
            && want(&dp).is_some())
        .await,
        "masq {:?}",
        dp.snapshot().masq
    );
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains("FLANNEL_IPMASQ=true"), "{env}");

    // Someone deletes the table: the next reconcile (at most the reconcile interval) restores it.
    assert!(dp.remove_masq());
    assert!(
        wait_until(Duration::from_secs(15), || want(&dp).is_some()).await,
        "not repaired: {:?}",
        dp.snapshot().masq
    );
    let ok = h.metrics().render(&[]).lines().any(|l| {
        l.starts_with("weft_reconcile_ops_by_kind_total{kind=\"ip_masq\",result=\"ok\"} ")
            && !l.ends_with(" 0")
    });
    assert!(ok, "ip_masq ops counted");

    let answer = h.leave().await.unwrap();
    assert!(answer.starts_with("left:"), "{answer}");
    assert_eq!(dp.snapshot().masq, None, "leave removes the table");
}

#[tokio::test(start_paused = true)]
async fn without_ip_masq_there_is_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let dp = FakeDataplane::new();
    let h = start(config(dir.path(), false), &dp).await;
    assert!(wait_until(Duration::from_secs(60), || h.is_ready()).await);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(dp.snapshot().masq, None);
    h.shutdown().await.unwrap();
}
