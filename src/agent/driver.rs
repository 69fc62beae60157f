//! The agent's driver: the event loop that moves inputs in (gossip key changes, live-node
//! changes, timers, leave requests) and carries actions out (publish the record, reconcile the
//! data plane, write subnet.env and the state file, ip-masq, the status watch). Its decisions
//! come from pure code: the lease (claims), `node` (pacing, warm-up, notices, persistence) and
//! `dataplane::{desired, paths}` (what the kernel should hold, each peer's path).

use std::collections::BTreeMap;
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
use crate::cluster::{Cluster, ClusterConfig, MeshCounts};
use crate::config::Config;
use crate::dataplane::desired::PeerTarget;
use crate::dataplane::paths::{self, Onlink, Selection};
use crate::dataplane::{self, Dataplane, State};
use crate::lease::{self, Identity, Lease, LeaseConfig, LeaseEvent, Phase, Restored, View};
use crate::metrics::Metrics;
use crate::node::desired;
use crate::node::notices::Notices;
use crate::node::pacing::{self, NEWS_FANOUT, Pacer};
use crate::node::programming::{Change, Programming};
use crate::node::{generation::generation_at, persist};
use crate::{files, keys};

use super::{AgentError, UnderlayInfo, UnderlaySelect};

/// The agent's two readings of time. `now_ms`: the wall clock read once at start, then counted
/// forward by a monotonic clock (tokio's, so tests can pause time); it measures durations
/// (settle, reservations, warm-up) and never jumps. `wall_ms`: the same plus any step of the wall
/// clock since (tests inject one); new claims are stamped from it, and their hybrid-logical
/// stamps keep their order whatever it does.
#[derive(Clone, Debug)]
pub(super) struct Clock {
    base_ms: u64,
    start: Instant,
    offset_ms: i64,
    step_ms: Arc<AtomicI64>,
}

impl Clock {
    pub(super) fn new(offset_ms: i64, step_ms: Arc<AtomicI64>) -> Clock {
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
pub(super) struct Driver {
    pub(super) config: Config,
    pub(super) underlay: UnderlayInfo,
    pub(super) announce_ip: IpAddr,
    pub(super) vtep_mac: dataplane::Mac,
    pub(super) dataplane: Box<dyn Dataplane>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) status_tx: watch::Sender<StatusReport>,
    pub(super) clock: Clock,
    pub(super) generation: u64,
    pub(super) lease: Lease,
    pub(super) identity: Identity,
    /// The last reconcile: what it applied, whether it took, which peers are programmed.
    pub(super) programming: Programming,
    pub(super) first_live_peer: Option<Instant>,
    pub(super) started: Instant,
    /// The state last saved, and when (since start).
    pub(super) last_saved: Option<(PersistedState, Duration)>,
    /// subnet.env, kept holding the active subnet (retried until a write succeeds).
    pub(super) subnet_env: files::KeptFile,
    /// `<state-dir>/state.json`, saved on changes and every 30 s (retried while it fails).
    pub(super) state_file: files::KeptFile,
    pub(super) warnings: Vec<String>,
    pub(super) ready_since: Option<Instant>,
    pub(super) view: View,
    pub(super) counts: MeshCounts,
    /// Which peers' underlay IPs are on-link (host-gw, DirectRouting), refreshed every step.
    pub(super) onlink: Onlink,
    /// Peers (by name) this node would program but cannot, with the reason (`weft status`).
    pub(super) skipped: BTreeMap<String, String>,
    /// What the operator was told (peers joining and leaving, why a peer is not programmed,
    /// seeds not answering), so that each is told once.
    pub(super) notices: Notices,
    /// The keyring, whose ids are announced under `weft/keys` (`None` with `--insecure`).
    pub(super) keys: Option<Arc<keys::KeyStore>>,
    pub(super) key_view_tx: Option<watch::Sender<Vec<crate::api::NodeKeys>>>,
    /// Re-read the underlay interface (its MTU) at every periodic reconcile: true when the
    /// agent discovered it itself rather than being handed one.
    pub(super) rediscover_underlay: bool,
    /// The udp backend's tunnel, when that is the backend.
    pub(super) udp: Option<crate::udp::plane::UdpPlane>,
}

impl Driver {
    pub(super) fn new(
        config: Config,
        underlay: UnderlayInfo,
        announce_ip: IpAddr,
        dataplane: Box<dyn Dataplane>,
        metrics: Arc<Metrics>,
        status_tx: watch::Sender<StatusReport>,
        clock: Clock,
    ) -> Driver {
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
        let warmup = pacing::warmup(config.gossip_interval, !config.seeds.is_empty());
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
        let mut worker = Driver {
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
            programming: Programming::default(),
            first_live_peer: None,
            started: Instant::now(),
            last_saved: None,
            subnet_env,
            state_file,
            warnings,
            ready_since: None,
            view: View::default(),
            counts: MeshCounts::default(),
            onlink: Onlink::Unknown,
            skipped: BTreeMap::new(),
            notices: Notices::default(),
            keys: None,
            key_view_tx: None,
            rediscover_underlay: false,
            udp: None,
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

    pub(super) async fn run(
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
        // News (a key changed here, or arrived here) is pushed to NEWS_FANOUT random live peers.
        // When both happen is the pacer's decision (`node::pacing`); this loop only waits.
        let mut pacer = Pacer::new(self.config.gossip_interval);
        let mut spread_seed =
            self.generation ^ crate::hash::fnv1a(self.config.node_name.as_bytes());
        let leave_reply = loop {
            let wake = pacer
                .next_wake(self.counts.alive)
                .map(|at| self.started + at);
            tokio::select! {
                _ = cancel.cancelled() => break None,
                reply = leave_rx.recv() => if let Some(reply) = reply { break Some(reply) },
                res = watcher.changed() => {
                    if res.is_err() {
                        error!(node = %self.config.node_name, "gossip stopped");
                        break None;
                    }
                    pacer.mesh_changed();
                },
                _ = changed.notified() => pacer.news(),
                _ = tick.tick() => {},
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {},
            }
            let now = self.started.elapsed();
            if pacer.spread_now(now, self.counts.alive) {
                spread_seed = spread_seed.wrapping_add(1);
                cluster.spread(NEWS_FANOUT, spread_seed).await;
            }
            if pacer.step_now(now, self.step_due(&pacer, now)) {
                self.step(&mut cluster).await;
                pacer.stepped(now, self.started.elapsed(), self.counts.alive);
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
    fn step_due(&self, pacer: &Pacer, now: Duration) -> bool {
        !matches!(self.lease.phase(), Phase::Active { .. })
            || !self.programming.applied_ok()
            || !self.view_is_warm()
            || paths::needs_onlink(self.config.backend, self.config.direct_routing)
            || pacer.periodic_due(now, self.config.reconcile_interval)
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
        let alive: BTreeMap<String, Option<IpAddr>> = self
            .view
            .members
            .iter()
            .filter(|r| r.member.alive && r.member.name != self.config.node_name)
            .map(|r| (r.member.name.clone(), r.record().map(|rec| rec.underlay_ip)))
            .collect();
        for notice in self.notices.alive_peers(&alive) {
            notice.log(&self.config.node_name);
        }
    }

    fn note_liveness(&mut self, counts: MeshCounts) {
        let heard_before = self.first_live_peer.is_some();
        if counts.alive > 0 && self.first_live_peer.is_none() {
            self.first_live_peer = Some(Instant::now());
        }
        if let Some(notice) = self.notices.liveness(
            counts.alive,
            heard_before,
            !self.config.seeds.is_empty(),
            self.started.elapsed(),
            self.config.gossip_interval * 3,
        ) {
            notice.log(&self.config.node_name);
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

    /// The MTU containers get (FLANNEL_MTU, the bridge).
    fn overlay_mtu(&self) -> u32 {
        desired::overlay_mtu(&self.desired_inputs(&[]))
    }

    /// What subnet.env must say for `subnet`.
    pub(super) fn subnet_env_text(&self, subnet: Ipv4Net) -> String {
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
        let now = self.started.elapsed();
        let prev = self.last_saved.as_ref().map(|(state, at)| (state, *at));
        let due = persist::save_due(prev, &state, now, force);
        if !due {
            return;
        }
        let kept = self.state_file.keep(&state.to_json());
        if !matches!(kept, files::Kept::Failed { .. }) {
            self.last_saved = Some((state, now));
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

    /// The desired state and each peer's fate ([`crate::node::desired`]).
    fn selection(&self) -> Selection {
        let peers: Vec<PeerTarget> = self
            .targets()
            .into_iter()
            .map(|(name, subnet, record)| PeerTarget {
                name,
                subnet,
                underlay_ip: record.underlay_ip,
                vtep_mac: record.vtep_mac,
            })
            .collect();
        desired::selection(&self.desired_inputs(&peers))
    }

    /// What [`crate::node::desired`] builds from.
    fn desired_inputs<'a>(&'a self, peers: &'a [PeerTarget]) -> desired::Inputs<'a> {
        desired::Inputs {
            backend: self.config.backend,
            direct_routing: self.config.direct_routing,
            vni: self.config.vni,
            vxlan_port: self.config.vxlan_port,
            network: self.config.network,
            ip_masq: self.config.ip_masq,
            bridge: self.config.bridge.as_deref(),
            claim: self.lease.claim().map(|(subnet, _)| subnet),
            active: self.lease.active_subnet(),
            underlay: &self.underlay,
            vtep_mac: self.vtep_mac,
            udp_mtu: self.udp.as_ref().map(|u| u.mtu()),
            peers,
            onlink: &self.onlink,
        }
    }

    /// Re-reads which peers are on-link (host-gw and DirectRouting only): a changed underlay
    /// route moves a peer between a direct route, VXLAN, or unprogrammed on the next reconcile.
    async fn refresh_onlink(&mut self) {
        if !paths::needs_onlink(self.config.backend, self.config.direct_routing) {
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
        if let Some(notice) = self.notices.not_programmed(peer, reason) {
            notice.log(&self.config.node_name);
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
        let warmup = pacing::warmup(self.config.gossip_interval, true);
        self.config.seeds.is_empty() || self.first_live_peer.is_some_and(|t| t.elapsed() >= warmup)
    }

    async fn reconcile_if_needed(&mut self) {
        let selection = self.selection();
        for (peer, reason) in &selection.skipped {
            self.tell_once(peer, reason);
        }
        self.skipped = selection.skipped;
        let desired = selection.state;
        let due = self.programming.due(
            &desired,
            self.started.elapsed(),
            self.config.reconcile_interval,
        );
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
                if report.applied.contains(&"ip_masq") {
                    info!(node = %self.config.node_name, subnet = ?desired.masq.map(|m| m.subnet), op = "ip_masq", "masquerade rules installed (nftables table ip weft)");
                }
                report.failed.is_empty()
            }
            Err(e) => {
                Metrics::add(&self.metrics.reconcile_failures, 1);
                warn!(node = %self.config.node_name, error = %e, "cannot read the data plane");
                false
            }
        };
        let targets: BTreeMap<String, Ipv4Net> = self
            .targets()
            .into_iter()
            .filter(|(n, _, _)| !self.skipped.contains_key(n))
            .map(|(n, s, _)| (n, s))
            .collect();
        let changes = self.programming.record(
            desired,
            ok,
            self.started.elapsed(),
            targets,
            selection.paths,
        );
        for change in changes {
            if let Change::Programmed { peer, .. } = &change {
                self.notices.programmed(peer);
            }
            change.log(&self.config.node_name);
        }
        Metrics::set(
            &self.metrics.peers_programmed,
            self.programming.count() as u64,
        );
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
            .programming
            .last_applied()
            .cloned()
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
        let report = self.status_report();
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
pub(super) fn note_kept(node: &str, file: &'static str, metrics: &Metrics, kept: files::Kept) {
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
