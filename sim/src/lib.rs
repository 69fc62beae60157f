//! The mesh simulator behind `weft-sim`: runs N complete agents (cluster, lease, reconcile; the
//! fake data plane records what would be programmed) and measures scenarios from the agents' own
//! status reports: cold start, a join, a kill, a leave, idle cost, a partition and its heal.
//!
//! Three links:
//! - [`LinkKind::Channel`]: chitchat's in-memory `ChannelTransport`, all agents in this process;
//! - [`LinkKind::Udp`]: weft's sealed UDP transport on 127.77.x.y, all agents in this process
//!   (real codec and crypto; one socket per peer talked to, so N is bounded by the fd limit);
//! - [`LinkKind::Process`]: N `weft run --dry-run` processes on 127.77.x.y, polled over their
//!   local API, like one process per host.
//!
//! Loss and partitions are injected by [`link::FaultyTransport`] (in-process links only). Time is
//! tokio's, so tests can run the channel link with paused time.

pub mod link;
mod process;
mod serf;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chitchat::transport::{ChannelTransport, Transport};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use weft::agent::{Agent, AgentHandle, UnderlayInfo};
use weft::api::{Liveness, StatusReport};
use weft::cluster::transport::{GossipCounters, Keyring, SealedTransport, Sealing};
use weft::config::Config;
use weft::dataplane::fake::FakeDataplane;

use link::{Faults, FaultyTransport, LinkCounters};
use process::Proc;
use serf::Serf;

/// How the simulated agents talk to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Channel,
    Udp,
    Process,
    /// HashiCorp Serf agents (one process each), for comparison.
    Serf,
}

impl LinkKind {
    pub fn from_name(name: &str) -> Option<LinkKind> {
        match name {
            "channel" => Some(LinkKind::Channel),
            "udp" => Some(LinkKind::Udp),
            "process" => Some(LinkKind::Process),
            "serf" => Some(LinkKind::Serf),
            _ => None,
        }
    }
}

/// What to measure after the cold start (which is always measured: it builds the mesh).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Cold,
    Join,
    Kill,
    Leave,
    Idle,
    Partition,
    All,
}

impl Scenario {
    pub fn from_name(name: &str) -> Option<Scenario> {
        Some(match name {
            "cold" => Scenario::Cold,
            "join" => Scenario::Join,
            "kill" => Scenario::Kill,
            "leave" => Scenario::Leave,
            "idle" => Scenario::Idle,
            "partition" => Scenario::Partition,
            "all" => Scenario::All,
            _ => return None,
        })
    }

    fn runs(self, s: Scenario) -> bool {
        self == Scenario::All || self == s
    }
}

/// One simulation run.
#[derive(Clone, Debug, Serialize)]
pub struct SimConfig {
    pub nodes: usize,
    /// Probability that a received gossip message is dropped (in-process links).
    pub loss: f64,
    /// Delay added to every received gossip message (in-process links).
    pub delay: Duration,
    pub link: LinkKind,
    pub scenario: Scenario,
    pub gossip_interval: Duration,
    /// Live peers per gossip round; `None`: weft's default.
    pub gossip_fanout: Option<usize>,
    /// Settle period of claims; `None`: weft's default (10 gossip intervals, at least 5 s).
    pub settle: Option<Duration>,
    pub dead_node_grace: Duration,
    /// Idle window over which bytes, CPU and false deaths are measured.
    pub idle: Duration,
    /// How long the halves stay apart.
    pub partition: Duration,
    /// Give up on a scenario after this long.
    pub timeout: Duration,
    /// Number of seed nodes every other node is given.
    pub seeds: usize,
    /// Node names are padded to this length (at least `n00000`).
    pub name_len: usize,
    /// The `weft` binary (process link); default: next to this executable.
    pub weft_bin: Option<PathBuf>,
    /// Where state files, subnet.env files and process logs go; default: a temp dir.
    pub work_dir: Option<PathBuf>,
    /// Status poll period; `None`: from N.
    pub poll: Option<Duration>,
}

impl SimConfig {
    pub fn new(nodes: usize, link: LinkKind, scenario: Scenario) -> SimConfig {
        SimConfig {
            nodes,
            loss: 0.0,
            delay: Duration::ZERO,
            link,
            scenario,
            gossip_interval: Duration::from_secs(1),
            gossip_fanout: None,
            settle: None,
            dead_node_grace: Duration::from_secs(7200),
            idle: Duration::from_secs(60),
            partition: Duration::from_secs(60),
            timeout: Duration::from_secs(300),
            seeds: 3,
            name_len: 6,
            weft_bin: None,
            work_dir: None,
            poll: None,
        }
    }

    fn poll_period(&self) -> Duration {
        self.poll.unwrap_or(match (self.link, self.nodes) {
            (LinkKind::Process, n) if n > 100 => Duration::from_millis(500),
            (LinkKind::Process, _) => Duration::from_millis(200),
            (LinkKind::Serf, n) if n > 10 => Duration::from_millis(500),
            (LinkKind::Serf, _) => Duration::from_millis(200),
            (_, n) if n > 300 => Duration::from_millis(500),
            (_, n) if n > 100 => Duration::from_millis(250),
            _ => Duration::from_millis(100),
        })
    }
}

/// Times over agents, in seconds from the scenario's start.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Timing {
    /// Agents measured.
    pub agents: usize,
    /// Agents that reached the condition before the timeout.
    pub done: usize,
    pub median_s: Option<f64>,
    pub p99_s: Option<f64>,
    /// The slowest agent ("all").
    pub max_s: Option<f64>,
}

impl Timing {
    fn from_times(agents: usize, mut times: Vec<f64>) -> Timing {
        times.sort_by(f64::total_cmp);
        Timing {
            agents,
            done: times.len(),
            median_s: quantile(&times, 0.5),
            p99_s: quantile(&times, 0.99),
            max_s: times.last().copied(),
        }
    }

    /// Every agent reached the condition.
    pub fn complete(&self) -> bool {
        self.agents > 0 && self.done == self.agents
    }

    fn cell(&self) -> String {
        match (self.median_s, self.p99_s) {
            (Some(m), Some(p)) if self.complete() => format!("{m:.2} / {p:.2}"),
            (Some(m), Some(p)) => format!("{m:.2} / {p:.2} ({}/{} done)", self.done, self.agents),
            _ => format!("timeout (0/{})", self.agents),
        }
    }
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted.get(idx).copied()
}

/// Median and p99 of a per-agent quantity.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub p99: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(f64::total_cmp);
        Spread {
            median: quantile(&v, 0.5).unwrap_or(0.0),
            p99: quantile(&v, 0.99).unwrap_or(0.0),
        }
    }
}

/// Cost of an idle, settled mesh.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Idle {
    pub window_s: f64,
    /// Gossip bytes per second per agent, in + out (sealed bytes on the UDP and process links,
    /// chitchat's serialized bytes on the channel link).
    /// `None` when the link has no byte counters (serf).
    pub bytes_per_s: Option<Spread>,
    /// CPU seconds per agent per minute (process CPU / N in one process).
    pub cpu_s_per_min: Spread,
    /// Resident memory per agent in MB (process RSS / N in one process).
    pub rss_mb: Spread,
    /// Largest gossip message seen (bytes), when the link counts it.
    pub max_message_bytes: Option<u64>,
    /// Agents that saw a running peer as dead at some poll of the window.
    pub false_deaths: usize,
}

/// Everything one run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub nodes: usize,
    pub link: String,
    pub loss: f64,
    pub gossip_interval_s: f64,
    pub poll_s: f64,
    /// Seconds to start every agent (cold start is timed from the last start).
    pub start_spread_s: f64,
    /// Every agent sees every other running agent alive (membership only, Serf's "all see all").
    pub members: Option<Timing>,
    pub cold: Option<Timing>,
    /// Newcomer's routes on every other agent, from its start.
    pub join: Option<Timing>,
    /// Same, from the first poll in which any peer saw the newcomer's claim of the subnet it
    /// settled on: the record's spread (Serf's counterpart: a tag change seen by all).
    pub join_after_announce: Option<Timing>,
    /// Serf link: a tag change on one agent seen by every other.
    pub tag: Option<Timing>,
    pub kill: Option<Timing>,
    pub leave: Option<Timing>,
    pub partition_heal: Option<Timing>,
    /// Subnets with two owners right before the heal was declared complete (0 when healed).
    pub duplicate_subnets: usize,
    pub idle: Option<Idle>,
    pub notes: Vec<String>,
}

impl Report {
    fn for_config(cfg: &SimConfig) -> Report {
        Report {
            nodes: cfg.nodes,
            link: format!("{:?}", cfg.link).to_lowercase(),
            loss: cfg.loss,
            gossip_interval_s: cfg.gossip_interval.as_secs_f64(),
            poll_s: cfg.poll_period().as_secs_f64(),
            ..Report::default()
        }
    }

    /// The markdown table header matching [`Report::markdown_row`].
    pub fn markdown_header() -> &'static str {
        "| N | link | loss | gossip | all see all alive (median / p99 s) | cold start | join | record/tag to all | kill seen dead | leave seen | partition heal | bytes/s/agent (median) | CPU-s/min/agent | RSS MB/agent | max msg B | false deaths |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    }

    pub fn markdown_row(&self) -> String {
        let t = |t: &Option<Timing>| t.as_ref().map(Timing::cell).unwrap_or_else(|| "-".into());
        let (bytes, cpu, rss, max_msg, false_deaths) = match &self.idle {
            Some(i) => (
                i.bytes_per_s
                    .as_ref()
                    .map(|b| format!("{:.0}", b.median))
                    .unwrap_or_else(|| "n/a".into()),
                format!("{:.3}", i.cpu_s_per_min.median),
                format!("{:.1}", i.rss_mb.median),
                i.max_message_bytes
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "-".into()),
                i.false_deaths.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        format!(
            "| {} | {} | {:.0}% | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.nodes,
            self.link,
            self.loss * 100.0,
            if self.link == "serf" {
                "lan".to_string()
            } else {
                format!("{}s", self.gossip_interval_s)
            },
            t(&self.members),
            t(&self.cold),
            t(&self.join),
            t(if self.tag.is_some() {
                &self.tag
            } else {
                &self.join_after_announce
            }),
            t(&self.kill),
            t(&self.leave),
            t(&self.partition_heal),
            bytes,
            cpu,
            rss,
            max_msg,
            false_deaths
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Setup(String),
    #[error("agent {name}: {error}")]
    Agent { name: String, error: String },
}

/// How often a long measurement prints where it is (stderr).
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// The gossip address of agent `i` (127.77.0.0/16 is only used by the simulator).
pub fn gossip_addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 77, (i / 250) as u8, (i % 250 + 1) as u8)),
        7947,
    )
}

/// The name of agent `i`, padded to `len` characters.
pub fn node_name(i: usize, len: usize) -> String {
    let mut name = format!("n{i:05}");
    while name.len() < len {
        name.push('x');
    }
    name
}

enum Runner {
    InProc {
        handle: Option<AgentHandle>,
        status: watch::Receiver<StatusReport>,
        dp: FakeDataplane,
        link: Arc<LinkCounters>,
        gossip: Arc<GossipCounters>,
    },
    Proc(Proc),
    Serf(Serf),
}

struct Member {
    name: String,
    runner: Runner,
    /// Running and not leaving: expected in everyone's view.
    running: bool,
}

/// A set of agents on one link.
struct Fleet {
    cfg: SimConfig,
    dir: PathBuf,
    /// Removed at shutdown (a directory the fleet made itself).
    remove_dir: bool,
    transport: Option<FaultyTransport>,
    faults: Arc<Faults>,
    sealing: Sealing,
    key_file: PathBuf,
    members: Vec<Member>,
    background: Vec<tokio::task::JoinHandle<()>>,
    notes: Vec<String>,
    /// Serf link: agents already done in the current measurement are not polled again (each
    /// poll is a process).
    frozen: HashSet<usize>,
}

impl Fleet {
    fn new(cfg: SimConfig) -> Result<Fleet, SimError> {
        let (dir, remove_dir) = match &cfg.work_dir {
            Some(d) => (d.clone(), false),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                let name = format!("weft-sim-{}-{nanos}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| SimError::Setup(format!("{}: {e}", dir.display())))?;
        let rng = ring::rand::SystemRandom::new();
        let key = weft_proto::envelope::generate_key(&rng)
            .map_err(|e| SimError::Setup(format!("cluster key: {e}")))?;
        let key_file = dir.join("cluster.key");
        // Private (0600): `weft run` refuses a key file others can read.
        weft::files::write_atomic_mode(
            &key_file,
            weft_proto::envelope::encode_key(&key).as_bytes(),
            0o600,
        )
        .map_err(|e| SimError::Setup(e.to_string()))?;
        let ring = Keyring::new(key).map_err(|e| SimError::Setup(format!("keyring: {e}")))?;
        let faults = Arc::new(Faults::default());
        faults.set_loss(cfg.loss);
        faults.set_delay(cfg.delay);
        let transport = match cfg.link {
            LinkKind::Channel => Some(
                FaultyTransport::new(Arc::new(ChannelTransport::default()), faults.clone())
                    .bound_queues(),
            ),
            _ => None,
        };
        let mut notes = Vec::new();
        if matches!(cfg.link, LinkKind::Process | LinkKind::Serf)
            && (cfg.loss > 0.0 || !cfg.delay.is_zero())
        {
            notes.push("loss/delay are not injected on the process and serf links".to_string());
        }
        Ok(Fleet {
            cfg,
            dir,
            remove_dir,
            transport,
            faults,
            sealing: Sealing::keyring(ring),
            key_file,
            members: Vec::new(),
            background: Vec::new(),
            notes,
            frozen: HashSet::new(),
        })
    }

    fn config(&self, i: usize) -> Result<Config, SimError> {
        let name = node_name(i, self.cfg.name_len);
        let mut c = Config::with_defaults(&name).map_err(|e| SimError::Setup(e.to_string()))?;
        let addr = gossip_addr(i);
        c.public_ip = Some(addr.ip());
        c.listen = addr;
        c.advertise = Some(addr);
        c.seeds = self.seeds_for(i);
        c.network = "10.0.0.0/8"
            .parse()
            .map_err(|_| SimError::Setup("network".into()))?;
        c.subnet_len = 24;
        c.subnet_min = Ipv4Addr::new(10, 0, 1, 0);
        c.subnet_max = Ipv4Addr::new(10, 255, 255, 0);
        c.state_dir = self.dir.join(&name);
        c.subnet_file = self.dir.join(&name).join("subnet.env");
        c.bridge = None;
        // The simulator measures the control plane; in-process agents hold no overlay address
        // to probe from (probing's own cost: weft's `prober::tests::measured_cost_*`).
        c.probes = false;
        c.gossip_interval = self.cfg.gossip_interval;
        if let Some(f) = self.cfg.gossip_fanout {
            c.gossip_fanout = f;
        }
        if let Some(s) = self.cfg.settle {
            c.settle = s;
        } else {
            c.settle = weft::config::default_settle(self.cfg.gossip_interval);
        }
        c.dead_node_grace = self.cfg.dead_node_grace;
        c.reservation = (self.cfg.dead_node_grace / 2).min(c.reservation);
        c.cluster_id = "weft-sim".into();
        c.dry_run = true;
        c.insecure = self.cfg.link == LinkKind::Channel;
        if !c.insecure {
            c.cluster_key_file = Some(self.key_file.clone());
        }
        Ok(c)
    }

    fn seeds_for(&self, i: usize) -> Vec<String> {
        (0..self.cfg.seeds.max(1))
            .filter(|s| *s != i && *s < i.max(1))
            .map(|s| gossip_addr(s).to_string())
            .collect()
    }

    async fn start(&mut self, i: usize) -> Result<(), SimError> {
        let config = self.config(i)?;
        let name = config.node_name.clone();
        let agent_err = |error: String| SimError::Agent {
            name: name.clone(),
            error,
        };
        let runner = match self.cfg.link {
            LinkKind::Serf => {
                let joins: Vec<usize> = (0..self.cfg.seeds.max(1)).filter(|s| *s < i).collect();
                let tag = format!("10.{}.{}.0/24", i / 250, i % 250);
                let mut serf = Serf::spawn(&name, i, &tag, &joins, &self.dir)
                    .await
                    .map_err(agent_err)?;
                // Seeds answer before anyone joins them.
                if i < self.cfg.seeds.max(1) && !serf.wait_rpc(Duration::from_secs(10)).await {
                    return Err(agent_err("serf agent does not answer RPC".into()));
                }
                Runner::Serf(serf)
            }
            LinkKind::Process => {
                let bin = match &self.cfg.weft_bin {
                    Some(b) => b.clone(),
                    None => default_weft_bin().map_err(SimError::Setup)?,
                };
                Runner::Proc(
                    Proc::spawn(&bin, &config, &self.dir, self.cfg.settle.is_some())
                        .await
                        .map_err(agent_err)?,
                )
            }
            LinkKind::Channel | LinkKind::Udp => {
                let gossip = GossipCounters::new();
                let transport = match &self.transport {
                    Some(t) => t.clone(),
                    None => FaultyTransport::new(
                        Arc::new(SealedTransport::new(self.sealing.clone(), gossip.clone())),
                        self.faults.clone(),
                    ),
                };
                let link = transport.counters(config.listen);
                let dp = FakeDataplane::new();
                let underlay = UnderlayInfo {
                    ifname: "lo".into(),
                    ifindex: 1,
                    ip: config.listen.ip(),
                    mtu: 1500,
                    ipv6: None,
                };
                let handle = Agent::new(config)
                    .dataplane(Box::new(dp.clone()))
                    .transport(Box::new(transport) as Box<dyn Transport>)
                    .underlay(underlay)
                    .serve_api(false)
                    .start()
                    .await
                    .map_err(|e| agent_err(e.to_string()))?;
                Runner::InProc {
                    status: handle.status(),
                    handle: Some(handle),
                    dp,
                    link,
                    gossip,
                }
            }
        };
        let member = Member {
            name,
            runner,
            running: true,
        };
        if i < self.members.len() {
            self.members[i] = member;
        } else {
            self.members.push(member);
        }
        Ok(())
    }

    /// Stops agent `i` without a leave (in process: the agent stops gossiping at once; process
    /// link: SIGKILL).
    async fn kill(&mut self, i: usize) {
        let Some(m) = self.members.get_mut(i) else {
            return;
        };
        m.running = false;
        match &mut m.runner {
            Runner::InProc { handle, .. } => {
                if let Some(h) = handle.take() {
                    let _ = h.shutdown().await;
                }
            }
            Runner::Proc(p) => p.kill().await,
            Runner::Serf(s) => s.kill().await,
        }
    }

    /// `weft leave` on agent `i` (returns at once; the leave completes in the background).
    async fn leave(&mut self, i: usize) {
        let Some(m) = self.members.get_mut(i) else {
            return;
        };
        m.running = false;
        match &mut m.runner {
            Runner::InProc { handle, .. } => {
                if let Some(h) = handle.take() {
                    self.background.push(tokio::spawn(async move {
                        let _ = h.leave().await;
                    }));
                }
            }
            Runner::Proc(p) => {
                let task = p.leave();
                let name = m.name.clone();
                self.background.push(tokio::spawn(async move {
                    match task.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(node = %name, error = %e, "leave failed"),
                        Err(e) => tracing::warn!(node = %name, error = %e, "leave task failed"),
                    }
                }));
            }
            Runner::Serf(s) => self.background.push(s.leave()),
        }
    }

    /// Refreshes the process link's cached statuses (no-op in process).
    async fn refresh(&mut self) {
        let procs: Vec<&mut Proc> = self
            .members
            .iter_mut()
            .filter(|m| m.running)
            .filter_map(|m| match &mut m.runner {
                Runner::Proc(p) => Some(p),
                _ => None,
            })
            .collect();
        process::refresh_all(procs).await;
        let frozen = &self.frozen;
        let serfs: Vec<&mut Serf> = self
            .members
            .iter_mut()
            .enumerate()
            .filter(|(i, m)| m.running && !frozen.contains(i))
            .filter_map(|(_, m)| match &mut m.runner {
                Runner::Serf(s) => Some(s),
                _ => None,
            })
            .collect();
        serf::refresh_all(serfs).await;
    }

    /// Calls `f` with each running agent's index and latest status.
    fn each_status(&self, mut f: impl FnMut(usize, &StatusReport)) {
        for (i, m) in self.members.iter().enumerate() {
            if !m.running {
                continue;
            }
            match &m.runner {
                Runner::InProc { status, .. } => f(i, &status.borrow()),
                Runner::Proc(p) => {
                    if let Some(s) = &p.status {
                        f(i, s);
                    }
                }
                Runner::Serf(p) => {
                    if let Some(s) = &p.status {
                        f(i, s);
                    }
                }
            }
        }
    }

    fn status_subnet(&self, i: usize) -> Option<String> {
        match &self.members.get(i)?.runner {
            Runner::InProc { status, .. } => status.borrow().subnet.map(|s| s.to_string()),
            Runner::Proc(p) => p.status.as_ref()?.subnet.map(|s| s.to_string()),
            Runner::Serf(p) => p.status.as_ref()?.subnet.map(|s| s.to_string()),
        }
    }

    fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].running)
            .collect()
    }

    /// Own subnets of the running agents (name → subnet) and the number of subnets claimed by
    /// more than one of them.
    fn subnets(&self) -> (HashMap<String, String>, usize) {
        let mut by_name = HashMap::new();
        let mut owners: HashMap<String, usize> = HashMap::new();
        self.each_status(|_, s| {
            if let Some(sub) = s.subnet.map(|s| s.to_string()) {
                by_name.insert(s.node_name.clone(), sub.clone());
                *owners.entry(sub).or_default() += 1;
            }
        });
        let dup = owners.values().filter(|n| **n > 1).count();
        (by_name, dup)
    }

    /// Polls until `done(i, status, ctx)` holds for every agent of `agents` (each must hold it
    /// until the end), or the timeout. Times are from `t0`.
    async fn measure(
        &mut self,
        what: &str,
        t0: Instant,
        agents: &[usize],
        mut done: impl FnMut(&StatusReport, &Ctx) -> bool,
    ) -> Timing {
        let poll = self.cfg.poll_period();
        // A line on stderr every PROGRESS_EVERY, so that a long run (N = 1,000) shows where it is.
        let mut progress_at = Instant::now() + PROGRESS_EVERY;
        // Counted from t0: the membership and route measures of a cold start share one timeout.
        let deadline = t0 + self.cfg.timeout;
        let mut since: HashMap<usize, Instant> = HashMap::new();
        let wanted: HashSet<usize> = agents.iter().copied().collect();
        let mut all_polls = 0;
        let freeze = self.cfg.link == LinkKind::Serf;
        self.frozen.clear();
        loop {
            if freeze {
                self.frozen = since.keys().copied().collect();
            }
            self.refresh().await;
            let (subnets, duplicates) = self.subnets();
            let ctx = Ctx {
                running: self.members.iter().filter(|m| m.running).count(),
                running_names: self
                    .members
                    .iter()
                    .filter(|m| m.running)
                    .map(|m| m.name.clone())
                    .collect(),
                subnets,
                duplicates,
            };
            let now = Instant::now();
            let mut seen = HashSet::new();
            self.each_status(|i, s| {
                if !wanted.contains(&i) {
                    return;
                }
                seen.insert(i);
                if done(s, &ctx) {
                    since.entry(i).or_insert(now);
                } else {
                    since.remove(&i);
                }
            });
            since.retain(|i, _| seen.contains(i));
            if since.len() == wanted.len() {
                all_polls += 1;
                // Two polls in a row: one lucky poll is not convergence.
                if all_polls >= 2 {
                    break;
                }
            } else {
                all_polls = 0;
            }
            if now >= deadline {
                break;
            }
            if now >= progress_at {
                progress_at = now + PROGRESS_EVERY;
                let mut alive = Vec::new();
                let mut active = 0;
                self.each_status(|_, s| {
                    alive.push(
                        s.nodes
                            .iter()
                            .filter(|n| n.liveness == Liveness::Alive)
                            .count(),
                    );
                    active += usize::from(s.ready);
                });
                alive.sort_unstable();
                eprintln!(
                    "weft-sim: {what}: {}/{} agents after {:.0} s ({active} ready; alive peers seen: min {}, median {})",
                    since.len(),
                    wanted.len(),
                    now.duration_since(t0).as_secs_f64(),
                    alive.first().copied().unwrap_or(0),
                    alive.get(alive.len() / 2).copied().unwrap_or(0),
                );
            }
            tokio::time::sleep(poll).await;
        }
        self.frozen.clear();
        let times = since
            .values()
            .map(|t| t.saturating_duration_since(t0).as_secs_f64())
            .collect();
        Timing::from_times(wanted.len(), times)
    }

    /// Messages dropped on full receive queues, all agents (in-process links).
    fn overflowed(&self) -> u64 {
        self.members
            .iter()
            .map(|m| match &m.runner {
                Runner::InProc { link, .. } => link.overflowed(),
                _ => 0,
            })
            .sum()
    }

    /// Per-agent (bytes in + out, max message) counters of running agents.
    async fn traffic(&mut self) -> Vec<(usize, u64, u64)> {
        let mut out = Vec::new();
        for (i, m) in self.members.iter_mut().enumerate() {
            if !m.running {
                continue;
            }
            match &mut m.runner {
                Runner::InProc { link, gossip, .. } => {
                    let max = link.max_message.load(std::sync::atomic::Ordering::Relaxed);
                    let bytes = if self.cfg.link == LinkKind::Udp {
                        let s = gossip.snapshot();
                        s.bytes_in + s.bytes_out
                    } else {
                        link.bytes()
                    };
                    out.push((i, bytes, max));
                }
                Runner::Proc(p) => {
                    if let Some(b) = p.gossip_bytes().await {
                        out.push((i, b, 0));
                    }
                }
                Runner::Serf(_) => {}
            }
        }
        out
    }

    fn cpu_and_rss(&self) -> Vec<(usize, f64, f64)> {
        let mut out = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            let pid = match (&m.runner, m.running) {
                (Runner::Proc(p), true) => p.pid,
                (Runner::Serf(s), true) => s.pid,
                _ => None,
            };
            if let Some((cpu, rss)) = pid.and_then(process::cpu_and_rss) {
                out.push((i, cpu, rss));
            }
        }
        out
    }

    /// Routes held by agent `i`'s fake kernel (in-process links), for tests.
    fn fake_routes(&self, i: usize) -> Option<usize> {
        match &self.members.get(i)?.runner {
            Runner::InProc { dp, .. } => Some(dp.snapshot().routes.len()),
            Runner::Proc(_) | Runner::Serf(_) => None,
        }
    }

    async fn shutdown(mut self) {
        // In-process agents stop together: one by one, the rest of 1,000 agents kept gossiping
        // on the same 2 cores while each stopped, and stopping them all took minutes.
        let mut stopping = Vec::new();
        for m in &mut self.members {
            m.running = false;
            match &mut m.runner {
                Runner::InProc { handle, .. } => {
                    stopping.extend(handle.take().map(|h| h.shutdown()))
                }
                Runner::Proc(p) => p.kill().await,
                Runner::Serf(s) => s.kill().await,
            }
        }
        futures::future::join_all(stopping).await;
        for b in self.background.drain(..) {
            let _ = b.await;
        }
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What a condition may look at besides an agent's own status.
pub struct Ctx {
    /// Number of running agents.
    pub running: usize,
    pub running_names: HashSet<String>,
    /// Own subnet of each running agent.
    pub subnets: HashMap<String, String>,
    /// Subnets held by two running agents.
    pub duplicates: usize,
}

/// Ready, and every other running agent is alive and programmed with its current subnet.
pub fn complete(s: &StatusReport, ctx: &Ctx) -> bool {
    if !s.ready || ctx.duplicates > 0 {
        return false;
    }
    let ok = s
        .nodes
        .iter()
        .filter(|n| {
            !n.is_self
                && n.liveness == Liveness::Alive
                && n.programmed
                && ctx.running_names.contains(&n.name)
                && n.subnet.is_some()
                && ctx.subnets.get(&n.name) == n.subnet.map(|s| s.to_string()).as_ref()
        })
        .count();
    ok + 1 == ctx.running
}

/// Every other running agent is alive in this agent's view.
pub fn sees_all_alive(s: &StatusReport, ctx: &Ctx) -> bool {
    let alive = s
        .nodes
        .iter()
        .filter(|n| {
            !n.is_self && n.liveness == Liveness::Alive && ctx.running_names.contains(&n.name)
        })
        .count();
    alive + 1 == ctx.running
}

fn node<'a>(s: &'a StatusReport, name: &str) -> Option<&'a weft::api::NodeStatus> {
    match s.nodes.binary_search_by(|n| n.name.as_str().cmp(name)) {
        Ok(i) => s.nodes.get(i),
        Err(_) => s.nodes.iter().find(|n| n.name == name),
    }
}

/// Whether `s` programmed `name`'s routes for `subnet`.
pub fn has_routes_of(s: &StatusReport, name: &str, subnet: &str) -> bool {
    node(s, name).is_some_and(|n| n.programmed && n.subnet.is_some_and(|s| s.to_string() == subnet))
}

/// Whether `s` marks `name` dead.
pub fn sees_dead(s: &StatusReport, name: &str) -> bool {
    node(s, name).is_some_and(|n| n.liveness == Liveness::Dead)
}

/// Whether `s` holds no routes of `name`.
pub fn removed_routes_of(s: &StatusReport, name: &str) -> bool {
    node(s, name).is_none_or(|n| !n.programmed)
}

/// Whether `s` marks a running peer dead.
fn sees_false_death(s: &StatusReport, ctx: &Ctx) -> bool {
    s.nodes
        .iter()
        .any(|n| !n.is_self && n.liveness == Liveness::Dead && ctx.running_names.contains(&n.name))
}

fn default_weft_bin() -> Result<PathBuf, String> {
    if let Some(b) = std::env::var_os("WEFT_BIN") {
        return Ok(PathBuf::from(b));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let dir = exe.parent().ok_or("no exe dir")?;
    for cand in [dir.join("weft"), dir.join("../weft")] {
        if cand.exists() {
            return Ok(cand);
        }
    }
    Err(format!(
        "no weft binary next to {} (set WEFT_BIN)",
        exe.display()
    ))
}

/// Process CPU time (user + system) in seconds.
fn self_cpu_s() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => 0.0,
    }
}

/// Resident set size of a process from /proc (MB).
pub fn rss_mb(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Raises the open-file limit to its hard limit (every agent holds sockets).
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) => {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            hard
        }
        Err(_) => 0,
    }
}

/// Runs one simulation and returns what it measured.
pub async fn run(cfg: SimConfig) -> Result<Report, SimError> {
    let mut report = Report::for_config(&cfg);
    if cfg.nodes < 2 {
        return Err(SimError::Setup("at least 2 nodes".into()));
    }
    if cfg.link == LinkKind::Udp {
        let hard = raise_fd_limit();
        let need = (cfg.nodes as u64 + 4) * (cfg.nodes as u64 + 4) + 64;
        if hard < need {
            report.notes.push(format!(
                "udp link needs about {need} descriptors (one socket per peer per agent); the limit is {hard}"
            ));
        }
    }
    let scenario = cfg.scenario;
    let rss_before = rss_mb(None).unwrap_or(0.0);
    let mut fleet = Fleet::new(cfg.clone())?;
    let result = run_scenarios(&mut fleet, &mut report, scenario, rss_before).await;
    report.notes.append(&mut fleet.notes);
    let overflow = fleet.overflowed();
    if overflow > 0 {
        report.notes.push(format!(
            "{overflow} gossip messages dropped on full receive queues ({} per socket): agents fell behind",
            link::RECV_QUEUE
        ));
    }
    fleet.shutdown().await;
    result.map(|()| report)
}

async fn run_scenarios(
    fleet: &mut Fleet,
    report: &mut Report,
    scenario: Scenario,
    rss_before: f64,
) -> Result<(), SimError> {
    let n = fleet.cfg.nodes;
    // Cold start: all N, timed from the last start.
    let first = Instant::now();
    for i in 0..n {
        fleet.start(i).await?;
    }
    let t0 = Instant::now();
    report.start_spread_s = t0.duration_since(first).as_secs_f64();
    let all: Vec<usize> = (0..n).collect();
    // Membership first: it always converges before the routes (which need it).
    report.members = Some(
        fleet
            .measure("all see all alive", t0, &all, sees_all_alive)
            .await,
    );
    let cold = fleet.measure("cold start", t0, &all, complete).await;
    let settled = cold.complete();
    report.cold = Some(cold);
    if !settled {
        report
            .notes
            .push("cold start did not converge; later scenarios skipped".into());
        return Ok(());
    }

    if scenario.runs(Scenario::Idle) {
        report.idle = Some(measure_idle(fleet, rss_before).await);
    }

    if scenario.runs(Scenario::Join) {
        let new = fleet.members.len();
        let t0 = Instant::now();
        fleet.start(new).await?;
        let name = fleet.members[new].name.clone();
        let others: Vec<usize> = fleet.running().into_iter().filter(|i| *i != new).collect();
        // The newcomer's subnet is whatever it settles on; routes must match it. The record's
        // spread is timed from the first poll in which any peer saw the newcomer claim that
        // subnet (its own status shows it only once the claim settled, long after its peers
        // programmed it, which made the spread read 0 s).
        let mut first_seen: HashMap<String, Instant> = HashMap::new();
        let mut per_agent: HashMap<usize, Instant> = HashMap::new();
        let deadline = Instant::now() + fleet.cfg.timeout;
        let poll = fleet.cfg.poll_period();
        loop {
            fleet.refresh().await;
            let now = Instant::now();
            fleet.each_status(|i, s| {
                if i != new
                    && let Some(claimed) =
                        node(s, &name).and_then(|n| n.subnet.map(|s| s.to_string()))
                {
                    first_seen.entry(claimed).or_insert(now);
                }
            });
            let sub = fleet.status_subnet(new);
            if let Some(sub) = &sub {
                let mut seen = HashSet::new();
                fleet.each_status(|i, s| {
                    if i == new {
                        return;
                    }
                    seen.insert(i);
                    if has_routes_of(s, &name, sub) {
                        per_agent.entry(i).or_insert(now);
                    } else {
                        per_agent.remove(&i);
                    }
                });
            }
            if per_agent.len() == others.len() || now >= deadline {
                break;
            }
            tokio::time::sleep(poll).await;
        }
        let from = |base: Instant| {
            per_agent
                .values()
                .map(|t| t.saturating_duration_since(base).as_secs_f64())
                .collect::<Vec<_>>()
        };
        report.join = Some(Timing::from_times(others.len(), from(t0)));
        let announced = fleet
            .status_subnet(new)
            .and_then(|sub| first_seen.get(&sub).copied());
        report.join_after_announce = announced.map(|a| Timing::from_times(others.len(), from(a)));
        // Let the newcomer settle before the next scenario.
        let running = fleet.running();
        let _ = fleet
            .measure("settling", Instant::now(), &running, complete)
            .await;
        if fleet.cfg.link == LinkKind::Serf {
            report.tag = Some(serf_tag_change(fleet).await);
        }
    }

    if scenario.runs(Scenario::Kill) {
        let victim = n - 1;
        let name = fleet.members[victim].name.clone();
        let t0 = Instant::now();
        fleet.kill(victim).await;
        let others = fleet.running();
        report.kill = Some(
            fleet
                .measure("kill seen dead", t0, &others, |s, _| sees_dead(s, &name))
                .await,
        );
    }

    if scenario.runs(Scenario::Leave) {
        let victim = n - 2;
        let name = fleet.members[victim].name.clone();
        let t0 = Instant::now();
        fleet.leave(victim).await;
        let others = fleet.running();
        report.leave = Some(
            fleet
                .measure("leave seen", t0, &others, |s, _| {
                    removed_routes_of(s, &name)
                })
                .await,
        );
    }

    if scenario.runs(Scenario::Partition) {
        if matches!(fleet.cfg.link, LinkKind::Process | LinkKind::Serf) {
            report
                .notes
                .push("partition is not simulated on the process and serf links".into());
        } else {
            let running = fleet.running();
            let half = running.len() / 2;
            let sides = running
                .iter()
                .enumerate()
                .map(|(k, i)| (gossip_addr(*i), u8::from(k >= half)))
                .collect();
            fleet.faults.partition(sides);
            tokio::time::sleep(fleet.cfg.partition).await;
            fleet.faults.heal();
            let t0 = Instant::now();
            let timing = fleet
                .measure("partition heal", t0, &running, complete)
                .await;
            report.duplicate_subnets = fleet.subnets().1;
            report.partition_heal = Some(timing);
        }
    }
    Ok(())
}

/// Serf: agent 0 changes its tag; time until every other agent sees the new value.
async fn serf_tag_change(fleet: &mut Fleet) -> Timing {
    let name = fleet.members[0].name.clone();
    let value = "changed".to_string();
    let t0 = Instant::now();
    if let Runner::Serf(s) = &fleet.members[0].runner
        && let Err(e) = s.set_tag(&value).await
    {
        fleet.notes.push(e);
    }
    let others: Vec<usize> = fleet.running().into_iter().filter(|i| *i != 0).collect();
    fleet
        .measure("tag to all", t0, &others, |s, _| {
            has_routes_of(s, &name, &value)
        })
        .await
}

async fn measure_idle(fleet: &mut Fleet, rss_before: f64) -> Idle {
    let window = fleet.cfg.idle;
    let n_running = fleet.running().len().max(1);
    let bytes0: HashMap<usize, u64> = fleet
        .traffic()
        .await
        .into_iter()
        .map(|(i, b, _)| (i, b))
        .collect();
    let procs0: HashMap<usize, (f64, f64)> = fleet
        .cpu_and_rss()
        .into_iter()
        .map(|(i, c, r)| (i, (c, r)))
        .collect();
    let cpu0 = self_cpu_s();
    let t0 = Instant::now();
    let mut false_deaths: HashSet<usize> = HashSet::new();
    let check = Duration::from_secs(2).max(fleet.cfg.poll_period());
    while t0.elapsed() < window {
        tokio::time::sleep(check.min(window.saturating_sub(t0.elapsed()))).await;
        fleet.refresh().await;
        let (subnets, duplicates) = fleet.subnets();
        let ctx = Ctx {
            running: n_running,
            running_names: fleet
                .members
                .iter()
                .filter(|m| m.running)
                .map(|m| m.name.clone())
                .collect(),
            subnets,
            duplicates,
        };
        fleet.each_status(|i, s| {
            if sees_false_death(s, &ctx) {
                false_deaths.insert(i);
            }
        });
    }
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    let traffic = fleet.traffic().await;
    let max_message = traffic.iter().map(|(_, _, m)| *m).max().filter(|m| *m > 0);
    let bytes: Vec<f64> = traffic
        .iter()
        .filter_map(|(i, b, _)| Some(b.saturating_sub(*bytes0.get(i)?) as f64 / secs))
        .collect();
    let (cpu, rss) = if matches!(fleet.cfg.link, LinkKind::Process | LinkKind::Serf) {
        let now = fleet.cpu_and_rss();
        let cpu = now
            .iter()
            .filter_map(|(i, c, _)| Some((c - procs0.get(i)?.0) / secs * 60.0))
            .collect();
        let rss = now.iter().map(|(_, _, r)| *r).collect();
        (cpu, rss)
    } else {
        let per = (self_cpu_s() - cpu0) / secs * 60.0 / n_running as f64;
        let rss = (rss_mb(None).unwrap_or(0.0) - rss_before).max(0.0) / n_running as f64;
        (vec![per], vec![rss])
    };
    Idle {
        window_s: secs,
        bytes_per_s: (!bytes.is_empty()).then(|| Spread::of(bytes)),
        cpu_s_per_min: Spread::of(cpu),
        rss_mb: Spread::of(rss),
        max_message_bytes: max_message,
        false_deaths: false_deaths.len(),
    }
}

/// A small in-process run for tests: starts the agents, runs every scenario, and returns the report plus the route count of each survivor's
/// fake kernel (so a test can assert what was programmed, not just what was reported).
pub async fn smoke(mut cfg: SimConfig) -> Result<(Report, Vec<usize>), SimError> {
    cfg.scenario = Scenario::All;
    smoke_scenario(cfg).await
}

/// Like [`smoke`], for the scenario `cfg` names.
pub async fn smoke_scenario(cfg: SimConfig) -> Result<(Report, Vec<usize>), SimError> {
    let scenario = cfg.scenario;
    let mut report = Report::for_config(&cfg);
    let mut fleet = Fleet::new(cfg)?;
    let result = run_scenarios(&mut fleet, &mut report, scenario, 0.0).await;
    let routes = fleet
        .running()
        .into_iter()
        .filter_map(|i| fleet.fake_routes(i))
        .collect();
    report.notes.append(&mut fleet.notes);
    fleet.shutdown().await;
    result.map(|()| (report, routes))
}
