//! Orchestration: joins the mesh, drives the lease from the peer view, turns the view into
//! desired data-plane state and reconciles it (on every change and every reconcile interval),
//! writes subnet.env and the state file, and serves the local API. [`Agent`] is the embedding
//! API; [`run`] is what `weft run` calls.

pub mod masq;

mod status;
mod udp;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::Transport;
use ipnet::Ipv4Net;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use weft_proto::{Backend, ClaimState, NodeRecord, PersistedState};

use crate::api::StatusReport;
use crate::cluster::transport::{GossipCounters, SealedTransport, Sealing};
use crate::cluster::{Cluster, ClusterConfig, ClusterError, MeshCounts};
use crate::config::Config;
use crate::dataplane::routing::{self, Onlink, Path, Selection};
use crate::dataplane::{self, Dataplane, DataplaneError, State};
use crate::lease::{self, Identity, Lease, LeaseConfig, LeaseEvent, Phase, Restored, View};
use crate::metrics::Metrics;
use crate::{files, keys};

pub use crate::dataplane::underlay::{UnderlayInfo, UnderlaySelect};

#[derive(Debug, thiserror::Error)]
/// Why an agent could not start or stopped with an error.
pub enum AgentError {
    #[error("{0}")]
    /// The configuration is unusable (exit code 2).
    Config(String),
    #[error("underlay: {0}")]
    /// The underlay interface or address could not be found.
    Underlay(String),
    #[error(transparent)]
    /// Gossip could not start.
    Cluster(#[from] ClusterError),
    #[error("data plane: {0}")]
    /// The data plane could not be opened.
    Dataplane(#[from] DataplaneError),
    #[error("local API on {addr}: {source}")]
    /// The local API could not listen.
    Api {
        /// The address it tried.
        addr: SocketAddr,
        #[source]
        /// Why it failed.
        source: std::io::Error,
    },
    #[error("agent task failed: {0}")]
    /// The agent task panicked or was cancelled.
    Join(String),
}

/// Builds an agent. Everything the kernel or the network provides can be replaced (a fake data
/// plane, an in-memory transport, a given underlay), which is how tests and embedders run it.
pub struct Agent {
    config: Config,
    dataplane: Option<Box<dyn Dataplane>>,
    transport: Option<Box<dyn Transport>>,
    underlay: Option<UnderlayInfo>,
    serve_api: bool,
    clock_offset_ms: i64,
    wall_step_ms: Arc<AtomicI64>,
}

impl Agent {
    /// A builder for `config`; by default it discovers the underlay, programs the kernel and serves the API.
    pub fn new(config: Config) -> Agent {
        Agent {
            config,
            dataplane: None,
            transport: None,
            underlay: None,
            serve_api: true,
            clock_offset_ms: 0,
            wall_step_ms: Arc::default(),
        }
    }

    /// Use this data plane instead of the kernel's.
    pub fn dataplane(mut self, dataplane: Box<dyn Dataplane>) -> Agent {
        self.dataplane = Some(dataplane);
        self
    }

    /// Gossip over this transport instead of UDP on `config.listen`.
    pub fn transport(mut self, transport: Box<dyn Transport>) -> Agent {
        self.transport = Some(transport);
        self
    }

    /// Use this underlay instead of discovering it.
    pub fn underlay(mut self, underlay: UnderlayInfo) -> Agent {
        self.underlay = Some(underlay);
        self
    }

    /// Whether to serve the local HTTP API on `config.api` and `<state_dir>/api.sock` (default true).
    pub fn serve_api(mut self, serve: bool) -> Agent {
        self.serve_api = serve;
        self
    }

    /// Shift this agent's clock (tests of clock skew).
    pub fn clock_offset_ms(mut self, offset: i64) -> Agent {
        self.clock_offset_ms = offset;
        self
    }

    /// A step of the wall clock that can change while the agent runs (tests of NTP stepping
    /// the clock by hours): it moves the stamps of new claims only, never durations.
    pub fn wall_clock_step(mut self, step_ms: Arc<AtomicI64>) -> Agent {
        self.wall_step_ms = step_ms;
        self
    }

    /// Starts the agent in the background.
    pub async fn start(self) -> Result<AgentHandle, AgentError> {
        let Agent {
            config,
            dataplane,
            transport,
            underlay,
            serve_api,
            clock_offset_ms,
            wall_step_ms,
        } = self;
        // The udp tunnel touches the kernel only when the data plane is the kernel's.
        let kernel = dataplane.is_none() && !config.dry_run;
        let given = dataplane.is_some();
        let mut dataplane = match dataplane {
            Some(d) => d,
            None if config.dry_run => {
                info!(node = %config.node_name, "dry run: nothing is programmed; `weft status` shows what would be");
                Box::new(dataplane::fake::FakeDataplane::new())
            }
            None => default_dataplane().await?,
        };
        // The underlay is read through the data plane (the kernel's, or the one given), and
        // re-read before every reconcile when it was discovered here.
        let discovered = underlay.is_none() && !config.dry_run;
        let underlay = match underlay {
            Some(u) => u,
            None if given => dataplane
                .underlay(&config.underlay, config.public_ip)
                .await
                .map_err(|e| AgentError::Underlay(e.to_string()))?,
            None => resolve_underlay(&config).await?,
        };
        let announce_ip = config.public_ip.unwrap_or(underlay.ip);
        crate::config::check_underlay_overlap(config.network, announce_ip)
            .and(crate::config::check_underlay_overlap(
                config.network,
                underlay.ip,
            ))
            .map_err(|e| AgentError::Config(e.to_string()))?;
        let gossip = GossipCounters::new();
        let key_store = load_key_store(&config)?;
        let sealing = key_store
            .as_ref()
            .map_or(Sealing::Insecure, |store| store.sealing());
        let transport = match transport {
            Some(t) => t,
            None => Box::new(SealedTransport::new(sealing.clone(), gossip.clone())),
        };
        let metrics = Arc::new(Metrics {
            gossip: gossip.clone(),
            ..Metrics::default()
        });
        let cancel = CancellationToken::new();
        let (status_tx, status_rx) = watch::channel(StatusReport::default());
        let (leave_tx, leave_rx) = mpsc::channel(4);
        let (key_view_tx, key_view_rx) = watch::channel(Vec::new());

        let api_task = if serve_api {
            let listeners =
                crate::api::Listeners::bind(config.api, &config.state_dir, &config.node_name)
                    .await
                    .map_err(|e| match e {
                        crate::api::BindError::Tcp { addr, source } => {
                            AgentError::Api { addr, source }
                        }
                        // A second agent on this state dir, or an unsafe one: configuration.
                        e @ crate::api::BindError::Control(_) => AgentError::Config(e.to_string()),
                    })?;
            let state = crate::api::ApiState {
                node: config.node_name.clone(),
                status: status_rx.clone(),
                metrics: metrics.clone(),
                leave: leave_tx.clone(),
                keys: key_store.clone(),
                key_view: key_view_rx,
            };
            Some(tokio::spawn(crate::api::serve(
                listeners,
                state,
                cancel.child_token(),
            )))
        } else {
            None
        };

        let udp = udp::UdpPlane::start(&config, &underlay, kernel, metrics.tunnel.clone()).await?;
        let mut worker = Worker::new(
            config,
            underlay,
            announce_ip,
            dataplane,
            metrics.clone(),
            status_tx,
            Clock::new(clock_offset_ms, wall_step_ms),
        );
        worker.keys = key_store.clone();
        worker.key_view_tx = Some(key_view_tx);
        worker.rediscover_underlay = discovered;
        worker.udp = udp;
        let loop_cancel = cancel.clone();
        let join = tokio::spawn(async move {
            let result = worker.run(transport, loop_cancel.clone(), leave_rx).await;
            // The API goes last, after the loop answered any leave request.
            loop_cancel.cancel();
            if let Some(api) = api_task {
                let _ = api.await;
            }
            result
        });
        Ok(AgentHandle {
            status: status_rx,
            metrics,
            cancel,
            leave: leave_tx,
            join,
            keys: key_store,
        })
    }
}

/// A running agent.
pub struct AgentHandle {
    status: watch::Receiver<StatusReport>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    leave: mpsc::Sender<oneshot::Sender<String>>,
    join: tokio::task::JoinHandle<Result<(), AgentError>>,
    keys: Option<Arc<keys::KeyStore>>,
}

impl AgentHandle {
    /// The latest status; changes whenever the agent's view does.
    pub fn status(&self) -> watch::Receiver<StatusReport> {
        self.status.clone()
    }

    /// The counters behind `/metrics`.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The keyring (`None` with `--insecure`).
    pub fn keys(&self) -> Option<Arc<keys::KeyStore>> {
        self.keys.clone()
    }

    /// What SIGHUP does: re-reads `--cluster-key-file`; on error the keys in use stay.
    pub fn reload_keys(&self) -> Result<bool, keys::KeyStoreError> {
        match &self.keys {
            Some(store) => keys::reload_logged(store, &self.metrics),
            None => {
                info!("SIGHUP: gossip is not sealed (--insecure), no keyring to reload");
                Ok(false)
            }
        }
    }

    /// This node's subnet once claimed (settling or active), `None` before.
    pub fn subnet(&self) -> Option<Ipv4Net> {
        self.status.borrow().subnet.as_deref()?.parse().ok()
    }

    /// Every other node this agent knows, as of now (watch [`AgentHandle::status`] for changes).
    pub fn peers(&self) -> Vec<crate::api::NodeStatus> {
        self.status
            .borrow()
            .nodes
            .iter()
            .filter(|n| !n.is_self)
            .cloned()
            .collect()
    }

    /// Whether the subnet is active and the data plane programmed.
    pub fn is_ready(&self) -> bool {
        self.status.borrow().ready
    }

    /// Waits until the agent is ready and returns its status then; fails if it stops first.
    pub async fn ready(&self) -> Result<StatusReport, AgentError> {
        let mut rx = self.status.clone();
        rx.wait_for(|s| s.ready)
            .await
            .map(|s| s.clone())
            .map_err(|_| AgentError::Join("the agent stopped before it was ready".into()))
    }

    /// Stops like SIGTERM: the claim, routes and devices stay for a restart.
    pub async fn shutdown(self) -> Result<(), AgentError> {
        self.cancel.cancel();
        self.wait().await
    }

    /// `weft leave`: releases the subnet, removes what weft programmed, leaves the mesh.
    pub async fn leave(self) -> Result<String, AgentError> {
        let (tx, rx) = oneshot::channel();
        let _ = self.leave.send(tx).await;
        let answer = rx
            .await
            .unwrap_or_else(|_| "agent stopped before leaving".into());
        self.wait().await?;
        Ok(answer)
    }

    /// Waits for the agent to stop by itself (leave through the API, or a fatal error).
    pub async fn wait(self) -> Result<(), AgentError> {
        self.join
            .await
            .map_err(|e| AgentError::Join(e.to_string()))?
    }
}

/// `weft run`: runs until `shutdown` completes (SIGTERM/SIGINT) or a leave request finishes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    run_agent(Agent::new(config), shutdown).await
}

/// Like [`run`] for a configured builder; SIGHUP reloads the keyring.
pub async fn run_agent(
    agent: Agent,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let handle = agent.start().await?;
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            let store = handle.keys.clone();
            let metrics = handle.metrics.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match &store {
                        Some(store) => {
                            let _ = keys::reload_logged(store, &metrics);
                        }
                        None => {
                            info!("SIGHUP: gossip is not sealed (--insecure), no keyring to reload")
                        }
                    }
                }
            });
        }
        Err(e) => {
            warn!(error = %e, "cannot handle SIGHUP; keyring reloads need `weft keys reload`")
        }
    }
    let cancel = handle.cancel.clone();
    tokio::spawn(async move {
        shutdown.await;
        cancel.cancel();
    });
    handle.wait().await
}

/// The underlay `config` selects (read from the kernel, nothing changed); see
/// [`dataplane::underlay::discover`].
pub async fn resolve_underlay(config: &Config) -> Result<UnderlayInfo, AgentError> {
    dataplane::underlay::discover(&config.underlay, config.public_ip, config.dry_run)
        .await
        .map_err(|e| match e {
            DataplaneError::Underlay(why) => AgentError::Underlay(why),
            other => AgentError::Underlay(other.to_string()),
        })
}

async fn default_dataplane() -> Result<Box<dyn Dataplane>, AgentError> {
    Ok(Box::new(dataplane::netlink::NetlinkDataplane::new().await?))
}

/// The keyring from `--cluster-key-file`, or none with `--insecure`.
fn load_key_store(config: &Config) -> Result<Option<Arc<keys::KeyStore>>, AgentError> {
    if config.insecure {
        return Ok(None);
    }
    let Some(path) = &config.cluster_key_file else {
        return Err(AgentError::Config(
            "no cluster key: give --cluster-key-file or --insecure".to_string(),
        ));
    };
    let store = keys::KeyStore::open(path)
        .map_err(|e| AgentError::Config(format!("invalid --cluster-key-file: {e}")))?;
    let ids = store.ids();
    info!(
        path = %path.display(),
        primary = %weft_proto::keyfile::format_id(ids.primary),
        keys = ids.installed.len(),
        "gossip sealed with the cluster keyring"
    );
    Ok(Some(Arc::new(store)))
}

/// The longest an idle agent goes without a full step (reservations expire, state is saved).
const FULL_STEP_EVERY: Duration = Duration::from_secs(10);

/// Random live peers a node pushes news to at once (see `Cluster::spread`). With each newly
/// told node doing the same, about 94% of the mesh hears a change within a few round trips
/// (the fraction s with s = 1 - e^(-3s)); the regular gossip rounds reach the rest.
const NEWS_FANOUT: usize = 3;

/// Generations count milliseconds from this base, which lies above the start times in
/// nanoseconds that earlier versions used, so that an upgraded agent's generation is newer.
const GENERATION_BASE: u64 = 1 << 62;

/// Above this many live peers, steps space out in proportion to the mesh.
const STEP_GAP_NODES: usize = 200;

/// The shortest time between two steps with `alive` live peers: a fifth of the gossip interval up
/// to STEP_GAP_NODES, then growing with the mesh up to one interval (at 1,000 nodes). A step reads
/// every record, so its cost grows with N; spacing steps out keeps their CPU flat as N grows, and
/// costs at most one interval of latency in programming a change (gossip spreads it regardless).
fn min_step_gap(gossip_interval: Duration, alive: usize) -> Duration {
    (gossip_interval / 5 * mesh_scale(alive)).min(gossip_interval)
}

/// How many times STEP_GAP_NODES the mesh holds (at least 1): the factor both gaps grow by.
fn mesh_scale(alive: usize) -> u32 {
    (alive / STEP_GAP_NODES).max(1) as u32
}

/// The shortest time between two news pushes with `alive` live peers: one gossip interval up to
/// STEP_GAP_NODES, then growing with the mesh (5 intervals at 1,000). When a whole fleet starts,
/// every agent has news all the time, and the pushes (3 exchanges each) would more than double
/// the regular rounds' 2; in a large mesh they are budgeted so that the mesh as a whole pushes
/// about as often as 200 agents would.
fn min_news_gap(gossip_interval: Duration, alive: usize) -> Duration {
    gossip_interval * mesh_scale(alive)
}

/// This start's chitchat generation: the start time in ms, and after the last time the previous
/// run of this node saved its state (a clock stepped back must not make a restart look older).
/// Every digest names every node's generation; in whole milliseconds it compresses far better
/// than in nanoseconds (an idle mesh of 100 in one process: 9.0 → 6.0 KB/s of gossip per agent).
fn generation_at(now_ms: u64, last_alive_ms: Option<u64>) -> u64 {
    let after = last_alive_ms.map_or(0, |t| t.saturating_add(1));
    GENERATION_BASE.saturating_add(now_ms.max(after))
}

/// The agent's two readings of time. `now_ms`: the wall clock read once at start, then counted
/// forward by a monotonic clock (tokio's, so tests can pause time); it measures durations
/// (settle, reservations, warm-up) and never jumps. `wall_ms`: the same plus any step of the wall
/// clock since (tests inject one); new claims are stamped from it, and their hybrid-logical
/// stamps keep their order whatever it does.
#[derive(Clone, Debug)]
struct Clock {
    base_ms: u64,
    start: Instant,
    offset_ms: i64,
    step_ms: Arc<AtomicI64>,
}

impl Clock {
    fn new(offset_ms: i64, step_ms: Arc<AtomicI64>) -> Clock {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            base_ms,
            start: Instant::now(),
            offset_ms,
            step_ms,
        }
    }

    fn now_ms(&self) -> u64 {
        let elapsed = self.start.elapsed().as_millis() as u64;
        (self.base_ms + elapsed).saturating_add_signed(self.offset_ms)
    }

    fn wall_ms(&self) -> u64 {
        self.now_ms()
            .saturating_add_signed(self.step_ms.load(Ordering::Relaxed))
    }
}

/// The agent loop's state.
struct Worker {
    config: Config,
    underlay: UnderlayInfo,
    announce_ip: IpAddr,
    vtep_mac: dataplane::Mac,
    dataplane: Box<dyn Dataplane>,
    metrics: Arc<Metrics>,
    status_tx: watch::Sender<StatusReport>,
    clock: Clock,
    generation: u64,
    lease: Lease,
    identity: Identity,
    /// Last applied desired state and whether that apply fully succeeded.
    applied: Option<(State, bool)>,
    last_reconcile: Option<Instant>,
    programmed: BTreeMap<String, Ipv4Net>,
    first_live_peer: Option<Instant>,
    started: Instant,
    last_saved: Option<(PersistedState, Instant)>,
    /// subnet.env, kept holding the active subnet (retried until a write succeeds).
    subnet_env: files::KeptFile,
    /// `<state-dir>/state.json`, saved on changes and every 30 s (retried while it fails).
    state_file: files::KeptFile,
    warnings: Vec<String>,
    seed_warn: (Option<Instant>, Duration),
    joined_logged: bool,
    ready_since: Option<Instant>,
    view: View,
    counts: MeshCounts,
    /// Which peers' underlay IPs are on-link (host-gw, DirectRouting), refreshed every step.
    onlink: Onlink,
    /// Peers (by name) this node would program but cannot, with the reason (`weft status`).
    skipped: BTreeMap<String, String>,
    /// How each programmed peer is reached.
    paths: BTreeMap<String, Path>,
    /// The last reason logged per unprogrammed peer, so each is logged once, not every tick.
    told: BTreeMap<String, String>,
    /// The keyring, whose ids are announced under `weft/keys` (`None` with `--insecure`).
    keys: Option<Arc<keys::KeyStore>>,
    key_view_tx: Option<watch::Sender<Vec<crate::api::NodeKeys>>>,
    /// Re-read the underlay interface (its MTU) at every periodic reconcile: true when the
    /// agent discovered it itself rather than being handed one.
    rediscover_underlay: bool,
    /// The udp backend's tunnel, when that is the backend.
    udp: Option<udp::UdpPlane>,
    /// Live peers as last logged (one line per peer joining or leaving).
    alive_peers: BTreeSet<String>,
    masq: masq::IpMasq,
}

impl Worker {
    fn new(
        config: Config,
        underlay: UnderlayInfo,
        announce_ip: IpAddr,
        dataplane: Box<dyn Dataplane>,
        metrics: Arc<Metrics>,
        status_tx: watch::Sender<StatusReport>,
        clock: Clock,
    ) -> Worker {
        let now_ms = clock.now_ms();
        let mut warnings = Vec::new();
        let restored = match files::load_state(&config.state_dir) {
            Ok(Some(s)) if s.node_name == config.node_name => Some(Restored {
                subnet: lease::cidr_to_net(s.subnet),
                claim_time_ms: s.claim_time_ms,
                last_alive_ms: s.last_alive_ms,
                active: s.active,
            }),
            Ok(Some(s)) => {
                warn!(node = %config.node_name, other = %s.node_name, "state file belongs to another node name; ignored");
                None
            }
            Ok(None) => None,
            Err(e) => {
                warn!(node = %config.node_name, error = %e, "state file unreadable; claiming anew");
                warnings.push(format!("state file unreadable: {e}"));
                None
            }
        };
        let generation = generation_at(now_ms, restored.as_ref().map(|r| r.last_alive_ms));
        let warmup = if config.seeds.is_empty() {
            Duration::ZERO
        } else {
            (config.gossip_interval * 3).max(Duration::from_secs(2))
        };
        let lease_cfg = LeaseConfig {
            node_name: config.node_name.clone(),
            network: config.network,
            subnet_len: config.subnet_len,
            subnet_min: config.subnet_min,
            subnet_max: config.subnet_max,
            static_subnet: config.static_subnet,
            settle_ms: config.settle.as_millis() as u64,
            reservation_ms: config.reservation.as_millis() as u64,
            warmup_ms: warmup.as_millis() as u64,
            // Settle once nothing new was heard for 3 gossip rounds (a fleet starting at once
            // keeps learning claims for longer than the settle period), at most 6 settle periods.
            quiet_ms: (config.gossip_interval * 3).as_millis() as u64,
            settle_max_ms: (config.settle * 6).as_millis() as u64,
        };
        let (lease, events) = Lease::new(lease_cfg, restored, now_ms);
        let identity = Identity {
            name: config.node_name.clone(),
            generation,
            underlay_ip: announce_ip,
            backend: config.backend,
            network: config.network,
            subnet_len: config.subnet_len,
            vni: config.vni,
        };
        let vtep_mac = dataplane::desired::vtep_mac(&config.node_name);
        let subnet_env = files::KeptFile::new(config.subnet_file.clone());
        let state_file = files::KeptFile::new(files::state_path(&config.state_dir));
        let mut worker = Worker {
            config,
            underlay,
            announce_ip,
            vtep_mac,
            dataplane,
            metrics,
            status_tx,
            clock,
            generation,
            lease,
            identity,
            applied: None,
            last_reconcile: None,
            programmed: BTreeMap::new(),
            first_live_peer: None,
            started: Instant::now(),
            last_saved: None,
            subnet_env,
            state_file,
            warnings,
            seed_warn: (None, Duration::from_secs(1)),
            joined_logged: false,
            ready_since: None,
            view: View::default(),
            counts: MeshCounts::default(),
            onlink: Onlink::Unknown,
            skipped: BTreeMap::new(),
            paths: BTreeMap::new(),
            told: BTreeMap::new(),
            keys: None,
            key_view_tx: None,
            rediscover_underlay: false,
            udp: None,
            alive_peers: BTreeSet::new(),
            masq: masq::IpMasq::default(),
        };
        worker.handle_events(events);
        worker.publish_status();
        worker
    }

    fn record(&self) -> NodeRecord {
        let (subnet, claim_time_ms, state) = match self.lease.announcement() {
            Some((s, t, st)) => (Some(lease::net_to_cidr(s)), t, st),
            None => (None, 0, ClaimState::Claimed),
        };
        NodeRecord {
            node_name: self.config.node_name.clone(),
            underlay_ip: self.announce_ip,
            backend: self.config.backend,
            network: lease::net_to_cidr(self.config.network),
            vni: if self.config.backend == Backend::Vxlan {
                self.config.vni
            } else {
                0
            },
            subnet,
            claim_time_ms,
            state,
            vtep_mac: if self.config.backend == Backend::Vxlan {
                self.vtep_mac
            } else {
                [0; 6]
            },
            tunnel_port: match &self.udp {
                Some(_) => self.config.udp_port,
                None => self.config.vxlan_port,
            },
            public_key: self.udp.as_ref().map(|u| u.public_key()),
            families: weft_proto::FamiliesV1::default(),
        }
    }

    async fn run(
        mut self,
        transport: Box<dyn Transport>,
        cancel: CancellationToken,
        mut leave_rx: mpsc::Receiver<oneshot::Sender<String>>,
    ) -> Result<(), AgentError> {
        let advertise = self
            .config
            .advertise
            .unwrap_or_else(|| SocketAddr::new(self.announce_ip, self.config.listen.port()));
        let cluster_cfg = ClusterConfig {
            node_name: self.config.node_name.clone(),
            generation: self.generation,
            listen: self.config.listen,
            advertise,
            seeds: self.config.seeds.clone(),
            cluster_id: self.config.cluster_id.clone(),
            gossip_interval: self.config.gossip_interval,
            gossip_fanout: self.config.gossip_fanout,
            dead_node_grace: self.config.dead_node_grace,
        };
        let mut cluster = Cluster::start(&cluster_cfg, transport.as_ref(), &self.record()).await?;
        cluster.set_reject_counters(self.metrics.records_rejected.clone());
        info!(
            node = %self.config.node_name,
            underlay = %self.announce_ip,
            gossip = %advertise,
            seeds = ?self.config.seeds,
            network = %self.config.network,
            "weft started"
        );
        if self.config.insecure {
            warn!(node = %self.config.node_name, "gossip is NOT sealed (--insecure): anyone who can reach the gossip port can join or forge records");
        }
        let mut watcher = cluster.watcher().await;
        let changed = Arc::new(tokio::sync::Notify::new());
        cluster.notify_on_change(changed.clone()).await;
        let mut tick =
            tokio::time::interval(self.config.gossip_interval.min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A full step reads and resolves every record and rebuilds the status: it runs when the
        // mesh changed (a key changed, a node came or went), while something waits on time, and
        // at least every FULL_STEP_EVERY; an idle settled mesh costs almost nothing per tick.
        let mut dirty = true;
        let mut last_step = Instant::now();
        // Steps are at least min_step_gap() apart (a fifth of a gossip interval up to 200 nodes, more
        // in larger meshes), and at least ten times as long as the last step took, so that a mesh
        // where something changes all the time (a thousand agents starting) does not make every
        // agent re-read it per message, and a slow step never takes more than a tenth of the time.
        let mut step_gap = min_step_gap(self.config.gossip_interval, 0);
        // News (a key changed here, or arrived here) is pushed to NEWS_FANOUT random live peers
        // at once, at most once per min_news_gap() (a gossip interval up to 200 live peers); the
        // regular rounds carry the rest.
        let mut news = false;
        let mut last_spread: Option<Instant> = None;
        let mut spread_seed =
            self.generation ^ crate::hash::fnv1a(self.config.node_name.as_bytes());
        let leave_reply = loop {
            let step_at = last_step + step_gap;
            let spread_at = last_spread
                .map(|t| t + min_news_gap(self.config.gossip_interval, self.counts.alive))
                .unwrap_or(last_step);
            tokio::select! {
                _ = cancel.cancelled() => break None,
                reply = leave_rx.recv() => if let Some(reply) = reply { break Some(reply) },
                res = watcher.changed() => {
                    if res.is_err() {
                        error!(node = %self.config.node_name, "gossip stopped");
                        break None;
                    }
                    dirty = true;
                },
                _ = changed.notified() => {
                    dirty = true;
                    news = true;
                },
                _ = tick.tick() => {},
                _ = tokio::time::sleep_until(step_at), if dirty => {},
                _ = tokio::time::sleep_until(spread_at), if news => {},
            }
            let now = Instant::now();
            if news && now >= spread_at {
                news = false;
                last_spread = Some(now);
                spread_seed = spread_seed.wrapping_add(1);
                cluster.spread(NEWS_FANOUT, spread_seed).await;
            }
            if now >= step_at && (dirty || self.step_due(last_step)) {
                dirty = false;
                self.step(&mut cluster).await;
                last_step = Instant::now();
                step_gap = min_step_gap(self.config.gossip_interval, self.counts.alive)
                    .max(last_step.duration_since(now) * 10);
            } else {
                // A reloaded keyring is announced at once (its change makes the next step full).
                if let Some(ids) = self.keys.as_ref().map(|k| k.ids()) {
                    cluster.publish_keys(&ids).await;
                }
            }
        };
        match leave_reply {
            Some(reply) => {
                let answer = self.leave(&mut cluster).await;
                let _ = reply.send(answer);
            }
            None => {
                self.save_state(true);
                info!(node = %self.config.node_name, "stopping; claim, routes and devices stay in place for a restart");
            }
        }
        cluster.shutdown().await;
        Ok(())
    }

    /// Whether a tick must run a full step although the mesh did not change: something waits
    /// on time (warm-up, settle, a failed apply, the view warming up, on-link routes that only a
    /// netlink read can tell), or the periodic pass is due.
    fn step_due(&self, last_step: Instant) -> bool {
        !matches!(self.lease.phase(), Phase::Active { .. })
            || !self.applied.as_ref().is_some_and(|(_, ok)| *ok)
            || !self.view_is_warm()
            || routing::needs_onlink(self.config.backend, self.config.direct_routing)
            || last_step.elapsed() >= self.config.reconcile_interval.min(FULL_STEP_EVERY)
            || self.files_pending()
    }

    /// Whether a file's last write failed (each step retries it).
    fn files_pending(&self) -> bool {
        self.subnet_env.failure().is_some()
            || self.state_file.failure().is_some()
            || self
                .udp
                .as_ref()
                .is_some_and(|u| u.peers_file_failure().is_some())
    }

    /// One pass: read the mesh, advance the lease, publish, reconcile, report.
    async fn step(&mut self, cluster: &mut Cluster) {
        let now_ms = self.clock.now_ms();
        let (members, counts) = cluster.members(now_ms).await;
        self.counts = counts;
        Metrics::set(&self.metrics.nodes_alive, counts.alive as u64 + 1);
        Metrics::set(&self.metrics.nodes_dead, counts.dead as u64);
        Metrics::set(&self.metrics.bad_records, counts.bad_records as u64);
        Metrics::set(&self.metrics.gossip_syns_skipped, cluster.syns_skipped());
        self.note_liveness(counts);
        let limits = lease::Limits {
            reservation_ms: self.config.reservation.as_millis() as u64,
        };
        self.view = lease::resolve(
            &self.identity,
            members,
            now_ms,
            limits,
            self.lease.own_claim(),
        );
        self.log_peer_changes();
        let events = self.lease.step_at(now_ms, self.clock.wall_ms(), &self.view);
        self.handle_events(events);
        self.sync_subnet_env();
        cluster.publish(&self.record()).await;
        self.note_refusals();
        self.refresh_onlink().await;
        self.publish_keys(cluster).await;
        self.reconcile_if_needed().await;
        self.udp_step().await;
        self.save_state(false);
        self.publish_status();
    }

    /// Announces this node's key ids and refreshes the view of who holds which keys.
    async fn publish_keys(&mut self, cluster: &mut Cluster) {
        let Some(tx) = &self.key_view_tx else {
            return;
        };
        let own = self.keys.as_ref().map(|k| k.ids());
        if let Some(ids) = &own {
            cluster.publish_keys(ids).await;
        }
        let hex = |ids: &weft_proto::keyfile::KeyIds| {
            (
                Some(weft_proto::keyfile::format_id(ids.primary)),
                ids.installed
                    .iter()
                    .map(|i| weft_proto::keyfile::format_id(*i))
                    .collect::<Vec<_>>(),
            )
        };
        let (primary, keys) = own.as_ref().map(hex).unwrap_or_default();
        let mut nodes = vec![crate::api::NodeKeys {
            name: self.config.node_name.clone(),
            generation: self.generation,
            alive: true,
            is_self: true,
            primary,
            keys,
        }];
        for holder in cluster.key_holders().await {
            let (primary, keys) = holder.ids.as_ref().map(hex).unwrap_or_default();
            nodes.push(crate::api::NodeKeys {
                name: holder.name,
                generation: holder.generation,
                alive: holder.alive,
                is_self: false,
                primary,
                keys,
            });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        tx.send_if_modified(|old| {
            if *old == nodes {
                false
            } else {
                *old = nodes;
                true
            }
        });
    }

    /// One line per peer that comes alive in the view or stops being alive.
    fn log_peer_changes(&mut self) {
        let alive: BTreeSet<String> = self
            .view
            .members
            .iter()
            .filter(|r| r.member.alive && r.member.name != self.config.node_name)
            .map(|r| r.member.name.clone())
            .collect();
        let node = &self.config.node_name;
        for name in alive.difference(&self.alive_peers) {
            let record = self
                .view
                .members
                .iter()
                .find(|r| &r.member.name == name)
                .and_then(|r| r.record());
            info!(node = %node, peer = %name, underlay = ?record.map(|r| r.underlay_ip), peers = alive.len(), "peer joined");
        }
        for name in self.alive_peers.difference(&alive) {
            info!(node = %node, peer = %name, peers = alive.len(), "peer gone (left or unreachable)");
        }
        self.alive_peers = alive;
    }

    fn note_liveness(&mut self, counts: MeshCounts) {
        let node = &self.config.node_name;
        if counts.alive > 0 {
            if self.first_live_peer.is_none() {
                self.first_live_peer = Some(Instant::now());
            }
            if !self.joined_logged {
                info!(node = %node, peers = counts.alive, "joined the mesh");
                self.joined_logged = true;
            }
        } else if !self.config.seeds.is_empty() && self.first_live_peer.is_none() {
            let (last, backoff) = self.seed_warn;
            let due = last.is_none_or(|t| t.elapsed() >= backoff);
            if due && self.started.elapsed() >= self.config.gossip_interval * 3 {
                warn!(node = %node, seeds = ?self.config.seeds, retry_in = ?backoff, "no seed reachable yet; retrying");
                self.seed_warn = (
                    Some(Instant::now()),
                    (backoff * 2).min(Duration::from_secs(60)),
                );
            }
        }
    }

    fn handle_events(&mut self, events: Vec<LeaseEvent>) {
        let node = self.config.node_name.clone();
        for event in events {
            match event {
                LeaseEvent::Claimed { subnet, why } => {
                    Metrics::add(&self.metrics.claims, 1);
                    info!(node = %node, subnet = %subnet, why, "claimed subnet");
                }
                LeaseEvent::Activated { subnet } => {
                    info!(node = %node, subnet = %subnet, "claim settled; subnet active");
                }
                LeaseEvent::Lost {
                    subnet,
                    winner,
                    was_active,
                } => {
                    if was_active {
                        Metrics::add(&self.metrics.active_claims_lost, 1);
                        error!(node = %node, subnet = %subnet, peer = %winner, "active subnet taken by an older claim (partition healed?); re-claiming; containers on the old subnet must be restarted");
                        self.warnings
                            .push(format!("lost active subnet {subnet} to {winner}"));
                    } else {
                        Metrics::add(&self.metrics.claims_lost, 1);
                        info!(node = %node, subnet = %subnet, peer = %winner, "subnet claimed earlier by a peer; picking another");
                    }
                }
                LeaseEvent::Exhausted { reason } => {
                    error!(node = %node, reason = %reason, "cannot claim a subnet");
                }
                LeaseEvent::Refused { reason } => {
                    Metrics::add(&self.metrics.identity_conflicts, 1);
                    error!(node = %node, reason = %reason, "identity conflict: this node claims and programs nothing");
                }
                LeaseEvent::Unrefused => info!(node = %node, "identity conflict cleared"),
            }
        }
    }

    fn vxlan_mtu(&self) -> u32 {
        let overhead = if self.underlay.ip.is_ipv6() { 70 } else { 50 };
        self.underlay.mtu.saturating_sub(overhead)
    }

    /// The MTU containers get (FLANNEL_MTU, the bridge): host-gw adds no encapsulation; vxlan
    /// (also with DirectRouting, where a peer may move off-link) pays its overhead; udp the
    /// tunnel's frame overhead.
    fn overlay_mtu(&self) -> u32 {
        if let Some(udp) = &self.udp {
            return udp.mtu;
        }
        match self.config.backend {
            Backend::HostGw => self.underlay.mtu,
            _ => self.vxlan_mtu(),
        }
    }

    /// What subnet.env must say for `subnet`.
    fn subnet_env_text(&self, subnet: Ipv4Net) -> String {
        files::subnet_env(
            self.config.network,
            subnet,
            self.overlay_mtu(),
            self.config.ip_masq,
        )
    }

    /// Makes subnet.env hold the active subnet (every step: a failed write is retried, a file
    /// changed or removed behind the agent's back is rewritten). Until it does, `/readyz` says why.
    fn sync_subnet_env(&mut self) {
        let Some(active) = self.lease.active_subnet() else {
            return;
        };
        let env = self.subnet_env_text(active);
        let kept = self.subnet_env.keep(&env);
        note_kept(&self.config.node_name, "subnet_env", &self.metrics, kept);
    }

    fn save_state(&mut self, force: bool) {
        let Some((subnet, claim_time_ms)) = self.lease.claim() else {
            return;
        };
        let state = PersistedState {
            version: 1,
            node_name: self.config.node_name.clone(),
            network: lease::net_to_cidr(self.config.network),
            subnet: lease::net_to_cidr(subnet),
            claim_time_ms,
            last_alive_ms: self.clock.now_ms(),
            active: self.lease.active_subnet().is_some(),
            ipv6_network: None,
            ipv6_subnet: None,
        };
        let due = match &self.last_saved {
            None => true,
            Some((prev, at)) => {
                force
                    || prev.subnet != state.subnet
                    || prev.claim_time_ms != state.claim_time_ms
                    || prev.active != state.active
                    || at.elapsed() >= Duration::from_secs(30)
            }
        };
        if !due {
            return;
        }
        let kept = self.state_file.keep(&state.to_json());
        if !matches!(kept, files::Kept::Failed { .. }) {
            self.last_saved = Some((state, Instant::now()));
        }
        note_kept(&self.config.node_name, "state", &self.metrics, kept);
    }

    /// Peers whose routes this node programs: the winner of each subnet.
    fn targets(&self) -> Vec<(String, Ipv4Net, NodeRecord)> {
        if self.lease.claim().is_none() {
            return Vec::new();
        }
        self.view
            .winners(self.lease.own_claim(), &self.config.node_name)
            .into_iter()
            .filter_map(|r| Some((r.member.name.clone(), r.holds?, r.record()?.clone())))
            .collect()
    }

    fn desired(&self) -> State {
        self.selection().state
    }

    /// The desired state and each peer's fate (programmed, and how; or skipped, and why).
    fn selection(&self) -> Selection {
        if let Some(udp) = &self.udp {
            return Selection {
                state: self.udp_desired(udp),
                ..Selection::default()
            };
        }
        let Some((subnet, _)) = self.lease.claim() else {
            return Selection::default();
        };
        let bridge = match (&self.config.bridge, self.lease.active_subnet()) {
            (Some(bridge), Some(active)) => Some(dataplane::Bridge {
                name: bridge.clone(),
                addr: Ipv4Net::new(files::first_host(active), active.prefix_len())
                    .unwrap_or(active),
                mtu: self.overlay_mtu(),
            }),
            _ => None,
        };
        let device = match self.config.backend {
            Backend::Vxlan => Some(dataplane::VxlanDevice {
                name: dataplane::desired::vxlan_device_name(self.config.vni),
                vni: self.config.vni,
                port: self.config.vxlan_port,
                local_ip: self.underlay.ip,
                underlay_ifindex: Some(self.underlay.ifindex),
                mac: self.vtep_mac,
                mtu: self.vxlan_mtu(),
                addr: subnet.network(),
            }),
            Backend::HostGw | Backend::Udp => None,
        };
        let peers: Vec<dataplane::desired::PeerTarget> = self
            .targets()
            .into_iter()
            .map(|(name, subnet, record)| dataplane::desired::PeerTarget {
                name,
                subnet,
                underlay_ip: record.underlay_ip,
                vtep_mac: record.vtep_mac,
            })
            .collect();
        routing::select(
            self.config.backend,
            self.config.direct_routing,
            device,
            bridge,
            &peers,
            &self.onlink,
        )
    }

    /// Re-reads which peers are on-link (host-gw and DirectRouting only): a changed underlay
    /// route moves a peer between a direct route, VXLAN, or unprogrammed on the next reconcile.
    async fn refresh_onlink(&mut self) {
        if !routing::needs_onlink(self.config.backend, self.config.direct_routing) {
            return;
        }
        let ips: Vec<IpAddr> = self
            .targets()
            .into_iter()
            .map(|(_, _, r)| r.underlay_ip)
            .collect();
        match self.dataplane.onlink(&ips).await {
            Ok(onlink) => self.onlink = onlink,
            Err(e) => {
                debug!(node = %self.config.node_name, error = %e, "cannot read underlay routes; keeping the last on-link view")
            }
        }
    }

    /// Logs once per peer (and again only if the reason changes) why it is not programmed.
    fn tell_once(&mut self, peer: &str, reason: &str) {
        if self.told.get(peer).map(String::as_str) != Some(reason) {
            warn!(node = %self.config.node_name, peer = %peer, reason = %reason, "peer not programmed");
            self.told.insert(peer.to_string(), reason.to_string());
        }
    }

    /// Peers refused for a mixed cluster (another backend, network, VNI or subnet length) are
    /// never programmed: say so once.
    fn note_refusals(&mut self) {
        let refused: Vec<(String, String)> = self
            .view
            .members
            .iter()
            .filter(|r| r.member.alive)
            .filter_map(|r| match &r.verdict {
                lease::Verdict::Refused(why) if why.is_mixed_cluster() => {
                    Some((r.member.name.clone(), why.to_string()))
                }
                _ => None,
            })
            .collect();
        for (name, why) in refused {
            self.tell_once(&name, &why);
        }
    }

    /// Re-reads the underlay interface before each reconcile: when it was re-created (a new
    /// index, e.g. a container's network reconnected) the VXLAN device is rebuilt on it; when
    /// its MTU changed, the overlay MTU follows (device, bridge and subnet.env). Returns whether
    /// anything changed.
    async fn refresh_underlay(&mut self) -> bool {
        if !self.rediscover_underlay {
            return false;
        }
        let fresh = match self
            .dataplane
            .underlay(&self.config.underlay, self.config.public_ip)
            .await
        {
            Ok(u) => u,
            // The configured interface is gone (renamed, or re-created under another name, as a
            // container's network reconnected as eth1): follow the announced address.
            Err(e) => {
                let by_address = match self.config.underlay {
                    UnderlaySelect::Addr(_) => None,
                    _ => self
                        .dataplane
                        .underlay(&UnderlaySelect::Addr(self.underlay.ip), None)
                        .await
                        .ok(),
                };
                match by_address {
                    Some(u) => u,
                    None => {
                        debug!(node = %self.config.node_name, error = %e, "underlay not found");
                        return false;
                    }
                }
            }
        };
        if fresh == self.underlay {
            return false;
        }
        let node = &self.config.node_name;
        if fresh.ip != self.underlay.ip {
            // The announced address is in every peer's FDB: keep sourcing from it.
            warn!(node = %node, old = %self.underlay.ip, new = %fresh.ip, "underlay address changed; weft keeps the announced one until restart");
        }
        if fresh.ifindex != self.underlay.ifindex || fresh.ifname != self.underlay.ifname {
            info!(node = %node, iface = %fresh.ifname, ifindex = fresh.ifindex, "underlay interface changed; rebuilding the data plane on it");
        }
        let mtu_changed = fresh.mtu != self.underlay.mtu;
        if mtu_changed {
            info!(node = %node, from = self.underlay.mtu, to = fresh.mtu, "underlay MTU changed; overlay MTU follows");
        }
        self.underlay = UnderlayInfo {
            ip: self.underlay.ip,
            ..fresh
        };
        if mtu_changed {
            self.sync_subnet_env();
        }
        true
    }

    /// Deletions wait until the view is warm, so a restart never drops routes it has not yet
    /// re-learned (and an isolated node never drops any).
    fn view_is_warm(&self) -> bool {
        let settle = (self.config.gossip_interval * 3).max(Duration::from_secs(1));
        self.config.seeds.is_empty() || self.first_live_peer.is_some_and(|t| t.elapsed() >= settle)
    }

    async fn reconcile_if_needed(&mut self) {
        let selection = self.selection();
        for (peer, reason) in &selection.skipped {
            self.tell_once(peer, reason);
        }
        self.skipped = selection.skipped;
        let desired = selection.state;
        let due = match (&self.applied, self.last_reconcile) {
            (Some((prev, ok)), Some(at)) => {
                *prev != desired || !ok || at.elapsed() >= self.config.reconcile_interval
            }
            _ => true,
        };
        if !due {
            return;
        }
        let desired = if self.refresh_underlay().await {
            self.desired()
        } else {
            desired
        };
        let allow_delete = self.view_is_warm();
        Metrics::add(&self.metrics.reconciles, 1);
        let ok = match dataplane::reconcile(self.dataplane.as_mut(), &desired, allow_delete).await {
            Ok(report) => {
                Metrics::add(&self.metrics.reconcile_ops, report.applied.len() as u64);
                Metrics::add(&self.metrics.reconcile_failures, report.failed.len() as u64);
                for kind in &report.applied {
                    self.metrics.op(kind, true);
                }
                for (kind, _) in &report.failed {
                    self.metrics.op(kind, false);
                }
                if !report.applied.is_empty() {
                    debug!(node = %self.config.node_name, ops = ?report.applied, "reconciled");
                }
                report.failed.is_empty()
            }
            Err(e) => {
                Metrics::add(&self.metrics.reconcile_failures, 1);
                warn!(node = %self.config.node_name, error = %e, "cannot read the data plane");
                false
            }
        };
        let now_programmed: BTreeMap<String, Ipv4Net> = if ok {
            self.targets()
                .into_iter()
                .filter(|(n, _, _)| !self.skipped.contains_key(n))
                .map(|(n, s, _)| (n, s))
                .collect()
        } else {
            self.programmed.clone()
        };
        for (name, subnet) in &now_programmed {
            let path = selection.paths.get(name).copied();
            if self.programmed.get(name) != Some(subnet)
                || (ok && self.paths.get(name) != path.as_ref())
            {
                info!(node = %self.config.node_name, peer = %name, subnet = %subnet, via = path.map(Path::as_str).unwrap_or("-"), "peer routes programmed");
            }
            self.told.remove(name);
        }
        for (name, subnet) in &self.programmed {
            if !now_programmed.contains_key(name) {
                info!(node = %self.config.node_name, peer = %name, subnet = %subnet, "peer routes removed");
            }
        }
        Metrics::set(&self.metrics.peers_programmed, now_programmed.len() as u64);
        if ok {
            self.paths = selection.paths;
        }
        self.ensure_masq().await;
        self.programmed = now_programmed;
        self.applied = Some((desired, ok));
        self.last_reconcile = Some(Instant::now());
    }

    /// `--ip-masq`: the masquerade rules follow the active subnet.
    async fn ensure_masq(&mut self) {
        if !self.config.ip_masq || self.config.dry_run {
            return;
        }
        let Some(active) = self.lease.active_subnet() else {
            return;
        };
        match self.masq.ensure(self.config.network, active).await {
            Ok(true) => {
                self.metrics.op("ip_masq", true);
                info!(node = %self.config.node_name, subnet = %active, op = "ip_masq", "masquerade rules installed (nftables table ip weft)");
            }
            Ok(false) => {}
            Err(e) => {
                self.metrics.op("ip_masq", false);
                Metrics::add(&self.metrics.reconcile_failures, 1);
                warn!(node = %self.config.node_name, error = %e, op = "ip_masq", "cannot install masquerade rules");
            }
        }
    }

    async fn leave(&mut self, cluster: &mut Cluster) -> String {
        let node = self.config.node_name.clone();
        let released = self.lease.claim().map(|(s, _)| s);
        self.lease.leave();
        cluster.publish(&self.record()).await;
        // Every live peer hears it in one round trip rather than after a few gossip rounds.
        let asked = cluster.push_to_live_peers().await;
        info!(node = %node, subnet = ?released, peers = asked, "leaving: subnet released, telling the mesh");
        self.publish_status();
        // Let the leaving record spread before going quiet.
        let spread = (self.config.gossip_interval * 5)
            .clamp(Duration::from_secs(1), Duration::from_secs(10));
        tokio::time::sleep(spread).await;
        let look_at = self
            .applied
            .as_ref()
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| self.desired());
        let mut failures = Vec::new();
        match self.dataplane.observe(&look_at).await {
            Ok(observed) => {
                for op in dataplane::plan(&State::default(), &observed) {
                    if let Err(e) = self.dataplane.apply(&op).await {
                        failures.push(format!("{}: {e}", op.kind()));
                    }
                }
            }
            Err(e) => failures.push(format!("observe: {e}")),
        }
        if let Some(udp) = &mut self.udp {
            udp.stop();
        }
        if self.config.ip_masq
            && !self.config.dry_run
            && let Err(e) = self.masq.remove().await
        {
            failures.push(format!("ip-masq: {e}"));
        }
        for path in [
            self.config.subnet_file.clone(),
            files::state_path(&self.config.state_dir),
        ] {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                failures.push(format!("{}: {e}", path.display()));
            }
        }
        if failures.is_empty() {
            info!(node = %node, "left the mesh; everything weft programmed is removed");
            format!(
                "left: subnet {} released, routes and devices removed\n",
                released
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into())
            )
        } else {
            warn!(node = %node, failures = ?failures, "left the mesh, with failures");
            format!("left, with failures: {}\n", failures.join("; "))
        }
    }

    fn publish_status(&mut self) {
        let report = status::build(self);
        let ready = report.ready;
        if ready && self.ready_since.is_none() {
            self.ready_since = Some(Instant::now());
            Metrics::set(
                &self.metrics.time_to_ready_ms,
                self.started.elapsed().as_millis() as u64,
            );
            info!(node = %self.config.node_name, subnet = ?report.subnet, "ready");
        }
        Metrics::set(&self.metrics.ready, u64::from(ready));
        self.metrics.set_nodes(
            report
                .nodes
                .iter()
                .map(|n| (n.liveness.as_str(), n.state.as_str())),
        );
        self.status_tx.send_replace(report);
    }
}

/// Logs what a [`files::KeptFile`] write did: a failure once (again only when the error
/// changes), the recovery once; counts every write in `weft_file_writes_total`.
fn note_kept(node: &str, file: &'static str, metrics: &Metrics, kept: files::Kept) {
    match kept {
        files::Kept::Unchanged => {}
        files::Kept::Written { after_failures } => {
            metrics.file_write(file, true);
            if after_failures > 0 {
                info!(node = %node, file, after_failures, "file written after failed attempts");
            } else {
                debug!(node = %node, file, "file written");
            }
        }
        files::Kept::Failed { error, new } => {
            metrics.file_write(file, false);
            if new {
                error!(node = %node, file, error = %error, "cannot write file; retrying every step");
            }
        }
    }
}

#[cfg(test)]
mod generation_tests {
    use super::*;

    #[test]
    fn generations_grow_across_restarts_and_versions() {
        let ns_generation_of_today = 1_764_000_000_000_000_000u64;
        let now = 1_764_000_000_000u64;
        assert!(generation_at(now, None) > ns_generation_of_today);
        assert_eq!(generation_at(now, None), GENERATION_BASE + now);
        // The previous run saved its state after this clock's now: the clock went back.
        assert_eq!(
            generation_at(now, Some(now + 5_000)),
            GENERATION_BASE + now + 5_001
        );
        assert_eq!(generation_at(now, Some(now - 5_000)), GENERATION_BASE + now);
        assert!(generation_at(u64::MAX, Some(u64::MAX)) >= GENERATION_BASE);
    }
}

#[cfg(test)]
mod step_gap_tests {
    use super::*;

    #[test]
    fn steps_space_out_with_the_mesh_up_to_one_interval() {
        let second = Duration::from_secs(1);
        assert_eq!(min_step_gap(second, 0), Duration::from_millis(200));
        assert_eq!(min_step_gap(second, 199), Duration::from_millis(200));
        assert_eq!(min_step_gap(second, 400), Duration::from_millis(400));
        assert_eq!(min_step_gap(second, 1_000), second);
        assert_eq!(min_step_gap(second, 50_000), second);
        assert_eq!(min_news_gap(second, 100), second);
        assert_eq!(min_news_gap(second, 1_000), second * 5);
        assert_eq!(
            min_step_gap(Duration::from_secs(10), 100),
            Duration::from_secs(2)
        );
    }
}
