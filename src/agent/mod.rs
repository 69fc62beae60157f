//! Orchestration: joins the mesh, drives the lease from the peer view, turns the view into
//! desired data-plane state and reconciles it (on every change and every reconcile interval),
//! writes subnet.env and the state file, and serves the local API. [`Agent`] is the embedding
//! API; [`run`] is what `weft run` calls.

mod driver;
mod probe_net;
mod probing;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use chitchat::transport::Transport;
use ipnet::Ipv4Net;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::api::StatusReport;
use crate::cluster::ClusterError;
use crate::cluster::transport::{GossipCounters, SealedTransport, Sealing};
use crate::config::Config;
use crate::dataplane::{self, Dataplane, DataplaneError};
use crate::keys;
use crate::metrics::Metrics;
use driver::{Clock, Driver, Start};

pub use crate::dataplane::underlay::{UnderlayInfo, UnderlaySelect};
pub use probe_net::ProbeHub;

#[derive(Debug, thiserror::Error)]
/// Why an agent could not start or stopped with an error.
pub enum AgentError {
    #[error(transparent)]
    /// The configuration does not fit this host (exit code 2): the overlay overlaps the
    /// underlay address.
    Config(#[from] crate::config::ConfigError),
    #[error("no cluster key: give --cluster-key-file or --insecure")]
    /// Neither a key file nor `--insecure` (exit code 2).
    NoClusterKey,
    #[error("invalid --cluster-key-file: {0}")]
    /// The key file is unusable (exit code 2).
    KeyFile(#[source] keys::KeyStoreError),
    #[error("{0}")]
    /// The control socket's place is taken or unsafe (exit code 2).
    ControlSocket(#[source] crate::api::BindError),
    #[error("{}", dataplane::underlay::failure_text(.0))]
    /// The underlay interface or address could not be found (exit code 2).
    Underlay(#[source] DataplaneError),
    #[error(transparent)]
    /// The udp backend could not start (its MTU is a configuration problem, exit code 2).
    Udp(#[from] crate::udp::plane::PlaneError),
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
    #[error("the agent stopped before it was ready")]
    /// The agent stopped before it was ready.
    StoppedBeforeReady,
    #[error("agent task failed: {0}")]
    /// The agent task panicked or was cancelled.
    Join(#[source] tokio::task::JoinError),
}

impl AgentError {
    /// Whether the operator must change the configuration or the host (`weft run` exits 2).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            AgentError::Config(_)
                | AgentError::NoClusterKey
                | AgentError::KeyFile(_)
                | AgentError::ControlSocket(_)
                | AgentError::Underlay(_)
                | AgentError::Udp(
                    crate::udp::plane::PlaneError::Mtu { .. }
                        | crate::udp::plane::PlaneError::Tunnel(_)
                )
        )
    }
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
    probe_hub: Option<ProbeHub>,
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
            probe_hub: None,
        }
    }

    /// Send and answer path probes over this in-memory hub instead of UDP on the overlay
    /// address (agents sharing one process on a fake data plane).
    pub fn probe_hub(mut self, hub: ProbeHub) -> Agent {
        self.probe_hub = Some(hub);
        self
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
            probe_hub,
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
                .map_err(AgentError::Underlay)?,
            None => resolve_underlay(&config).await?,
        };
        let announce_ip = config.public_ip.unwrap_or(underlay.ip);
        crate::config::check_underlay_overlap(config.network, announce_ip).and(
            crate::config::check_underlay_overlap(config.network, underlay.ip),
        )?;
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
                        e @ crate::api::BindError::Control(_) => AgentError::ControlSocket(e),
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

        let udp =
            crate::udp::plane::UdpPlane::start(&config, &underlay, kernel, metrics.tunnel.clone())
                .await?;
        let worker = Driver::new(Start {
            config,
            underlay,
            announce_ip,
            rediscover_underlay: discovered,
            dataplane,
            metrics: metrics.clone(),
            status_tx,
            clock: Clock::new(clock_offset_ms, wall_step_ms),
            keys: key_store.clone(),
            key_view_tx,
            udp,
            probe_hub,
        });
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

    /// Stops the agent (as [`AgentHandle::shutdown`]) when `shutdown` completes.
    pub fn stop_on(&self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            shutdown.await;
            cancel.cancel();
        });
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
            Some(store) => crate::metrics::reload_keys(store, &self.metrics),
            None => {
                info!("SIGHUP: gossip is not sealed (--insecure), no keyring to reload");
                Ok(false)
            }
        }
    }

    /// This node's subnet once claimed (settling or active), `None` before.
    pub fn subnet(&self) -> Option<Ipv4Net> {
        self.status.borrow().subnet
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
            .map_err(|_| AgentError::StoppedBeforeReady)
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
        self.join.await.map_err(AgentError::Join)?
    }
}

/// `weft run`: runs until `shutdown` completes (SIGTERM/SIGINT) or a leave request finishes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    run_agent(Agent::new(config), shutdown).await
}

/// Like [`run`] for a configured builder: starts it, stops it when `shutdown` completes, and
/// waits for it. Signals are the binary's business (`weft run`: SIGINT/SIGTERM stop, SIGHUP
/// reloads the keyring through [`AgentHandle::reload_keys`]).
pub async fn run_agent(
    agent: Agent,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let handle = agent.start().await?;
    handle.stop_on(shutdown);
    handle.wait().await
}

/// The underlay `config` selects (read from the kernel, nothing changed); see
/// [`dataplane::netlink::discover`].
pub async fn resolve_underlay(config: &Config) -> Result<UnderlayInfo, AgentError> {
    dataplane::netlink::discover(&config.underlay, config.public_ip, config.dry_run)
        .await
        .map_err(AgentError::Underlay)
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
        return Err(AgentError::NoClusterKey);
    };
    let store = keys::KeyStore::open(path).map_err(AgentError::KeyFile)?;
    let ids = store.ids();
    info!(
        path = %path.display(),
        primary = %weft_proto::keyfile::format_id(ids.primary),
        keys = ids.installed.len(),
        "gossip sealed with the cluster keyring"
    );
    Ok(Some(Arc::new(store)))
}
