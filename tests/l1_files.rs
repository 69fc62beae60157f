//! L1: one in-process agent (fake data plane, paused time) whose subnet.env and state file cannot
//! be written at first (a regular file stands where their directory should be). The agent is not
//! ready while subnet.env does not hold its active subnet, says why, retries every step, and
//! becomes ready once the files can be written; a subnet.env changed behind its back is rewritten.

#[path = "common/l1config.rs"]
mod l1config;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chitchat::transport::ChannelTransport;
use weft::agent::AgentHandle;
use weft::api::StatusReport;
use weft::dataplane::fake::FakeDataplane;

/// Waits (in paused time) until the status satisfies `check`, up to `limit`; returns it.
async fn wait_status(
    h: &AgentHandle,
    limit: Duration,
    what: &str,
    check: impl Fn(&StatusReport) -> bool,
) -> StatusReport {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let status = h.status().borrow().clone();
        if check(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}; last status {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn sample(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .map(str::to_string)
}

#[tokio::test(start_paused = true)]
async fn unwritable_subnet_env_and_state_keep_the_agent_unready_until_written() {
    let dir = tempfile::tempdir().unwrap();
    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 98, 0, 1)), 7947);
    let mut config = l1config::node_config(1, dir.path(), listen, &[], "l1-files");
    // Regular files where the directories of subnet.env and the state file should be.
    let run = dir.path().join("run");
    std::fs::write(&run, "").unwrap();
    let lib = dir.path().join("lib");
    std::fs::write(&lib, "").unwrap();
    config.subnet_file = run.join("flannel/subnet.env");
    config.state_dir = lib.join("weft");
    let handle = l1config::start_agent(
        config.clone(),
        0,
        &FakeDataplane::new(),
        &ChannelTransport::default(),
    )
    .await;

    // Active, but subnet.env cannot be written: not ready, and the reason says so.
    wait_status(&handle, Duration::from_secs(60), "active", |s| {
        s.state == weft::api::ClaimStatus::Active
    })
    .await;
    // A few more steps: it stays that way (and is retried, not forgotten).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = handle.status().borrow().clone();
    assert!(!status.ready, "{status:?}");
    let reason = status.ready_reason.clone().unwrap_or_default();
    assert!(reason.contains("subnet.env"), "{reason}");
    assert!(
        reason.contains(&status.subnet.unwrap().to_string()),
        "{reason}"
    );
    assert!(
        status.warnings.iter().any(|w| w.contains("subnet.env")),
        "{status:?}"
    );
    let metrics = handle.metrics().render(&[]);
    assert_eq!(
        sample(&metrics, "weft_file_write_pending{file=\"subnet_env\"}").as_deref(),
        Some("1"),
        "{metrics}"
    );
    let failed: u64 = sample(
        &metrics,
        "weft_file_writes_total{file=\"subnet_env\",result=\"failed\"}",
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or(0);
    assert!(failed >= 2, "not retried: {metrics}");

    // subnet.env can be written now: it is, with the active subnet; the state file still fails.
    std::fs::remove_file(&run).unwrap();
    let status = wait_status(&handle, Duration::from_secs(10), "state reason", |s| {
        s.ready_reason
            .as_deref()
            .is_some_and(|r| r.contains("state file"))
    })
    .await;
    assert!(!status.ready);
    let subnet: ipnet::Ipv4Net = status.subnet.unwrap();
    let env = std::fs::read_to_string(&config.subnet_file).unwrap();
    let first = Ipv4Addr::from(u32::from(subnet.network()) + 1);
    assert!(
        env.contains(&format!("FLANNEL_SUBNET={first}/24\n")),
        "{env}"
    );

    // The state file can be written: ready, and the state names the subnet.
    std::fs::remove_file(&lib).unwrap();
    let status = wait_status(&handle, Duration::from_secs(10), "ready", |s| s.ready).await;
    assert!(
        !status.warnings.iter().any(|w| w.contains("retrying")),
        "{status:?}"
    );
    let state = std::fs::read_to_string(config.state_dir.join("state.json")).unwrap();
    assert!(state.contains(&subnet.network().to_string()), "{state}");
    let metrics = handle.metrics().render(&[]);
    for file in ["subnet_env", "state"] {
        assert_eq!(
            sample(
                &metrics,
                &format!("weft_file_write_pending{{file=\"{file}\"}}")
            )
            .as_deref(),
            Some("0"),
            "{metrics}"
        );
    }

    // Changed behind the agent's back: rewritten within a few steps.
    std::fs::write(&config.subnet_file, "FLANNEL_SUBNET=10.244.250.1/24\n").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&config.subnet_file).unwrap() != env {
        assert!(tokio::time::Instant::now() < deadline, "not rewritten");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    handle.shutdown().await.unwrap();
}
