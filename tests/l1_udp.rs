//! L1 (in-process agents, fake data plane, paused time): the udp backend's kernel side goes
//! through the data plane. Its TUN device gets the tunnel MTU and the node's `<subnet>.0`,
//! the whole overlay is routed to it, the bridge and subnet.env carry the same MTU, and a
//! device reconfigured behind weft's back is put right by the next reconcile.

#[path = "common/l1config.rs"]
mod l1config;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chitchat::transport::ChannelTransport;
use l1config::{node_config, start_agent, wait_until};
use weft::Config;
use weft::agent::AgentHandle;
use weft::dataplane::fake::FakeDataplane;
use weft::dataplane::{State, TunLink};
use weft_proto::Backend;

fn gossip_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 95, 0, i as u8 + 1)), 7947)
}

async fn start(
    t: &ChannelTransport,
    i: usize,
    dir: &std::path::Path,
    dp: &FakeDataplane,
) -> (AgentHandle, Config) {
    let seeds = if i == 0 { vec![] } else { vec![gossip_addr(0)] };
    let config = Config {
        backend: Backend::Udp,
        ..node_config(i, dir, gossip_addr(i), &seeds, "l1udp")
    };
    let h = start_agent(config.clone(), i, dp, t).await;
    (h, config)
}

/// The TUN device as the agent of `h` must have configured it, when it has a subnet.
fn expected_tun(h: &AgentHandle, state: &State) -> Option<TunLink> {
    let subnet = h.subnet()?;
    let mtu = state.tun.as_ref()?.mtu;
    Some(TunLink {
        name: "weft0".into(),
        mtu,
        addr: Some(subnet.network()),
        addr6: None,
    })
}

#[tokio::test(start_paused = true)]
async fn the_tun_device_is_configured_through_the_data_plane() {
    let dir = tempfile::tempdir().unwrap();
    let t = ChannelTransport::default();
    let dps = [FakeDataplane::new(), FakeDataplane::new()];
    let (h0, c0) = start(&t, 0, dir.path(), &dps[0]).await;
    let (h1, _) = start(&t, 1, dir.path(), &dps[1]).await;
    let right = |h: &AgentHandle, dp: &FakeDataplane| {
        let s = dp.snapshot();
        let Some(tun) = s.tun.clone() else {
            return false;
        };
        h.is_ready()
            && Some(&tun) == expected_tun(h, &s).as_ref()
            && tun.mtu < 1500
            && s.bridge.as_ref().is_some_and(|b| b.mtu == tun.mtu)
            && s.routes.iter().any(|r| {
                r.dst == "10.244.0.0/16".parse().unwrap() && r.device.as_deref() == Some("weft0")
            })
    };
    assert!(
        wait_until(Duration::from_secs(60), || right(&h0, &dps[0])
            && right(&h1, &dps[1]))
        .await,
        "{:#?}\n{:#?}",
        dps[0].snapshot(),
        h0.status().borrow()
    );
    let mtu = dps[0].snapshot().tun.unwrap().mtu;
    let env = std::fs::read_to_string(&c0.subnet_file).unwrap();
    assert!(env.contains(&format!("FLANNEL_MTU={mtu}\n")), "{env}");

    // Someone changes the device's MTU and address: the next reconcile puts them back.
    let mut drifted = dps[0].snapshot();
    drifted.tun = Some(TunLink {
        name: "weft0".into(),
        mtu: 9000,
        addr: Some(Ipv4Addr::new(10, 9, 9, 9)),
        addr6: None,
    });
    dps[0].set_state(drifted);
    assert!(
        wait_until(Duration::from_secs(15), || right(&h0, &dps[0])).await,
        "{:?}",
        dps[0].snapshot().tun
    );
    h0.shutdown().await.unwrap();
    h1.shutdown().await.unwrap();
}
