//! L1 (in-process agent, fake data plane, paused time): the underlay is read through the data
//! plane. An agent given no underlay finds it there; when the interface's MTU changes, the VXLAN
//! device, the bridge and subnet.env follow; when the interface is re-created (a new index), the
//! VXLAN device is rebuilt on it; when it is gone and another interface holds the default route
//! and the announced address, the agent moves to that one.

#[path = "common/l1config.rs"]
mod l1config;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chitchat::transport::ChannelTransport;
use l1config::{node_config, wait_until};
use weft::agent::{Agent, AgentHandle, UnderlayInfo};
use weft::dataplane::fake::FakeDataplane;

fn eth(name: &str, ifindex: u32, mtu: u32) -> UnderlayInfo {
    UnderlayInfo {
        ifname: name.into(),
        ifindex,
        ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        mtu,
        ipv6: None,
    }
}

fn vxlan(dp: &FakeDataplane) -> Option<(u32, Option<u32>)> {
    dp.snapshot().vxlan.map(|d| (d.mtu, d.underlay_ifindex))
}

#[tokio::test(start_paused = true)]
async fn the_underlay_is_found_and_followed_through_the_data_plane() {
    let dir = tempfile::tempdir().unwrap();
    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 97, 0, 1)), 7947);
    let config = node_config(0, dir.path(), listen, &[], "l1u");
    let subnet_file = config.subnet_file.clone();
    let dp = FakeDataplane::new();
    // No interface yet: the agent cannot start, and says why.
    let err = Agent::new(config.clone())
        .dataplane(Box::new(dp.clone()))
        .transport(Box::new(ChannelTransport::default()))
        .serve_api(false)
        .start()
        .await
        .err()
        .expect("no underlay: the agent refuses to start");
    assert!(err.to_string().contains("no IPv4 default route"), "{err}");

    dp.set_interface(eth("eth0", 2, 1500));
    let h: AgentHandle = Agent::new(config)
        .dataplane(Box::new(dp.clone()))
        .transport(Box::new(ChannelTransport::default()))
        .serve_api(false)
        .start()
        .await
        .expect("agent starts");
    let env_mtu = |want: u32| {
        std::fs::read_to_string(&subnet_file)
            .is_ok_and(|t| t.contains(&format!("FLANNEL_MTU={want}\n")))
    };
    assert!(
        wait_until(Duration::from_secs(60), || h.is_ready()
            && vxlan(&dp) == Some((1450, Some(2)))
            && env_mtu(1450))
        .await,
        "device {:?}, status {:#?}",
        vxlan(&dp),
        h.status().borrow()
    );

    // Jumbo frames on the underlay: the overlay follows at the next reconcile.
    dp.set_interface(eth("eth0", 2, 9000));
    assert!(
        wait_until(Duration::from_secs(30), || vxlan(&dp)
            == Some((8950, Some(2)))
            && dp.snapshot().bridge.is_some_and(|b| b.mtu == 8950)
            && env_mtu(8950))
        .await,
        "device {:?}, bridge {:?}",
        vxlan(&dp),
        dp.snapshot().bridge
    );

    // The interface is re-created (a container's network reconnected): a new index.
    dp.set_interface(eth("eth0", 7, 9000));
    assert!(
        wait_until(Duration::from_secs(30), || vxlan(&dp)
            == Some((8950, Some(7))))
        .await,
        "device {:?}",
        vxlan(&dp)
    );

    // eth0 is gone; eth1 holds the default route and the announced address.
    dp.remove_interface("eth0");
    dp.set_interface(eth("eth1", 9, 1400));
    assert!(
        wait_until(Duration::from_secs(30), || vxlan(&dp)
            == Some((1350, Some(9)))
            && env_mtu(1350))
        .await,
        "device {:?}",
        vxlan(&dp)
    );
    h.shutdown().await.unwrap();
}
