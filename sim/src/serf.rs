//! The serf link: one HashiCorp Serf agent (`serf agent`, lan profile) per node on a loopback
//! address, for comparing weft with Serf on the same machine by the same method. Each agent's
//! `serf members` is turned into a [`StatusReport`] (its `subnet` tag stands in for the subnet;
//! alive members count as "programmed", failed ones as dead), so the simulator's conditions
//! apply unchanged.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;

use futures::StreamExt;
use serde::Deserialize;

use weft::api::{ClaimStatus, Liveness, NodeStatus, StatusReport};

pub(super) const SERF_PORT: u16 = 7946;
const RPC_PORT: u16 = 7373;

/// The bind address of serf agent `i` (127.78.0.0/16, beside the weft agents' 127.77/16).
pub(super) fn serf_addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 78, (i / 250) as u8, (i % 250 + 1) as u8)),
        SERF_PORT,
    )
}

pub(super) struct Serf {
    child: Option<tokio::process::Child>,
    pub pid: Option<u32>,
    name: String,
    rpc: String,
    pub status: Option<StatusReport>,
}

#[derive(Deserialize)]
struct Members {
    members: Vec<MemberJson>,
}

#[derive(Deserialize)]
struct MemberJson {
    name: String,
    addr: String,
    #[serde(default)]
    tags: std::collections::HashMap<String, String>,
    status: String,
}

impl Serf {
    pub async fn spawn(
        name: &str,
        i: usize,
        subnet_tag: &str,
        joins: &[usize],
        dir: &Path,
    ) -> Result<Serf, String> {
        let bind = serf_addr(i);
        let rpc = SocketAddr::new(bind.ip(), RPC_PORT).to_string();
        let node_dir = dir.join(name);
        std::fs::create_dir_all(&node_dir).map_err(|e| format!("{}: {e}", node_dir.display()))?;
        let log = std::fs::File::create(node_dir.join("serf.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new("serf");
        cmd.arg("agent")
            .arg(format!("-node={name}"))
            .arg(format!("-bind={bind}"))
            .arg(format!("-rpc-addr={rpc}"))
            .arg("-profile=lan")
            .arg("-log-level=warn")
            .arg("-tag")
            .arg(format!("subnet={subnet_tag}"));
        for j in joins {
            cmd.arg(format!("-retry-join={}", serf_addr(*j)));
        }
        if !joins.is_empty() {
            cmd.arg("-retry-interval=1s");
        }
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("serf: {e}"))?;
        Ok(Serf {
            pid: child.id(),
            child: Some(child),
            name: name.to_string(),
            rpc,
            status: None,
        })
    }

    /// Waits until the agent answers RPC (so that later agents can join it).
    pub async fn wait_rpc(&mut self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            self.refresh().await;
            if self.status.is_some() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
        self.status = None;
    }

    /// `serf leave` (in the background: it blocks until the leave is broadcast).
    pub fn leave(&mut self) -> tokio::task::JoinHandle<()> {
        let rpc = self.rpc.clone();
        tokio::spawn(async move {
            let _ = tokio::process::Command::new("serf")
                .arg("leave")
                .arg(format!("-rpc-addr={rpc}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        })
    }

    /// `serf tags -set subnet=VALUE`.
    pub async fn set_tag(&self, value: &str) -> Result<(), String> {
        let st = tokio::process::Command::new("serf")
            .arg("tags")
            .arg(format!("-rpc-addr={}", self.rpc))
            .arg("-set")
            .arg(format!("subnet={value}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(|e| e.to_string())?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("serf tags: {st}"))
        }
    }

    pub async fn refresh(&mut self) {
        let out = tokio::process::Command::new("serf")
            .arg("members")
            .arg(format!("-rpc-addr={}", self.rpc))
            .arg("-format=json")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .await;
        self.status = match out {
            Ok(o) if o.status.success() => serde_json::from_slice::<Members>(&o.stdout)
                .ok()
                .map(|m| self.report(m)),
            _ => None,
        };
    }

    fn report(&self, m: Members) -> StatusReport {
        let mut nodes: Vec<NodeStatus> = m
            .members
            .into_iter()
            .map(|m| NodeStatus {
                is_self: m.name == self.name,
                // Serf's "left" and "failed" both mean not alive; the state tells them apart.
                liveness: if m.status == "alive" {
                    Liveness::Alive
                } else {
                    Liveness::Dead
                },
                programmed: m.status == "alive",
                subnet: m.tags.get("subnet").and_then(|s| s.parse().ok()),
                state: match m.status.as_str() {
                    "alive" | "failed" => ClaimStatus::Active,
                    _ => ClaimStatus::Leaving,
                },
                underlay_ip: m.addr,
                name: m.name,
                ..NodeStatus::default()
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let own = nodes.iter().find(|n| n.is_self).and_then(|n| n.subnet);
        StatusReport {
            node_name: self.name.clone(),
            subnet: own,
            state: ClaimStatus::Active,
            ready: true,
            nodes,
            ..StatusReport::default()
        }
    }
}

/// Polls every agent's members, 16 at a time (each poll is a `serf` process).
pub(super) async fn refresh_all(agents: Vec<&mut Serf>) {
    futures::stream::iter(agents)
        .for_each_concurrent(16, |s| s.refresh())
        .await;
}
