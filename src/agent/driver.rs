//! The agent's driver: the event loop that moves inputs in (gossip key changes, live-node
//! changes, timers, leave requests, netlink and file answers) and carries actions out (publish
//! the record, reconcile the data plane, write subnet.env and the state file, the udp peer table,
//! the status watch, logs and metrics). Every decision is the [`Node`]'s (`node/core.rs`) or the
//! pacer's (`node/pacing.rs`); this file only does the I/O they ask for, in order.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::Transport;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::api::StatusReport;
use crate::cluster::{Cluster, ClusterConfig};
use crate::config::Config;
use crate::dataplane::{self, Dataplane, State};
use crate::lease::LeaseEvent;
use crate::metrics::Metrics;
use crate::node::core::probes::{ProbeFacts, ProbePlan};
use crate::node::core::{FileFacts, Node, Output, Times, UdpFacts};
use crate::node::pacing::{NEWS_FANOUT, Pacer};
use crate::probe::fleet;
use crate::probe::prober::Me;
use crate::udp::plane::UdpPlane;
use crate::{files, keys};

use super::probing::ProbeReport;
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

/// The agent loop: the node and the I/O it asks for.
pub(super) struct Driver {
    node: Node,
    dataplane: Box<dyn Dataplane>,
    metrics: Arc<Metrics>,
    status_tx: watch::Sender<StatusReport>,
    clock: Clock,
    started: Instant,
    /// subnet.env, kept holding the active subnet (retried until a write succeeds).
    subnet_env: files::KeptFile,
    /// `<state-dir>/state.json`, saved on changes and every 30 s (retried while it fails).
    state_file: files::KeptFile,
    /// The keyring, whose ids are announced under `weft/keys` (`None` with `--insecure`).
    keys: Option<Arc<keys::KeyStore>>,
    key_view_tx: watch::Sender<Vec<crate::api::NodeKeys>>,
    /// The udp backend's tunnel, when that is the backend.
    udp: Option<UdpPlane>,
    /// The wall clock at the start (Unix ms): path times count from it.
    start_unix_ms: u64,
    /// The plan handed to the prober (`agent/probing.rs`).
    probe_plan: watch::Sender<ProbePlan>,
    /// What the prober found.
    probe_report: watch::Receiver<ProbeReport>,
    /// Whether the prober runs (`--no-probes` and dry runs without a hub: not).
    probing: bool,
    /// The prober's ends, until `run` starts it.
    prober_ends: Option<(
        watch::Receiver<ProbePlan>,
        watch::Sender<ProbeReport>,
        Option<super::ProbeHub>,
    )>,
}

/// What the agent hands the driver at start.
pub(super) struct Start {
    pub config: Config,
    pub underlay: UnderlayInfo,
    pub announce_ip: IpAddr,
    /// The underlay was discovered here (re-read before every reconcile).
    pub rediscover_underlay: bool,
    pub dataplane: Box<dyn Dataplane>,
    pub metrics: Arc<Metrics>,
    pub status_tx: watch::Sender<StatusReport>,
    pub clock: Clock,
    pub keys: Option<Arc<keys::KeyStore>>,
    pub key_view_tx: watch::Sender<Vec<crate::api::NodeKeys>>,
    pub udp: Option<UdpPlane>,
    /// Probe over this in-memory hub instead of UDP.
    pub probe_hub: Option<super::ProbeHub>,
}

/// The kept files, as the node's status reads them.
struct Files<'a> {
    subnet_env: &'a files::KeptFile,
    state_file: &'a files::KeptFile,
    udp: Option<&'a UdpPlane>,
}

impl FileFacts for Files<'_> {
    fn subnet_env_holds(&self, text: &str) -> bool {
        self.subnet_env.holds(text)
    }
    fn subnet_env_failure(&self) -> Option<String> {
        self.subnet_env.failure().map(str::to_string)
    }
    fn subnet_env_path(&self) -> String {
        self.subnet_env.path().display().to_string()
    }
    fn state_failure(&self) -> Option<String> {
        self.state_file.failure().map(str::to_string)
    }
    fn udp_peers_failure(&self) -> Option<String> {
        self.udp
            .and_then(|u| u.peers_file_failure())
            .map(str::to_string)
    }
}

impl Driver {
    pub(super) fn new(start: Start) -> Driver {
        let Start {
            config,
            underlay,
            announce_ip,
            rediscover_underlay,
            dataplane,
            metrics,
            status_tx,
            clock,
            keys,
            key_view_tx,
            udp,
            probe_hub,
        } = start;
        let restored = files::load_state(&config.state_dir).map_err(|e| e.to_string());
        let udp_facts = udp.as_ref().map(|u| UdpFacts {
            mtu: u.mtu(),
            public_key: u.public_key(),
        });
        let subnet_env = files::KeptFile::new(config.subnet_file.clone());
        let state_file = files::KeptFile::new(files::state_path(&config.state_dir));
        let started = Instant::now();
        let t = Times {
            now: Duration::ZERO,
            now_ms: clock.now_ms(),
            wall_ms: clock.wall_ms(),
        };
        let (node, outputs) = Node::new(
            config,
            underlay,
            announce_ip,
            restored,
            rediscover_underlay,
            udp_facts,
            t,
        );
        let (probe_plan, plan_rx) = watch::channel(ProbePlan::default());
        let (report_tx, probe_report) = watch::channel(ProbeReport::default());
        let mut driver = Driver {
            start_unix_ms: t.now_ms,
            probe_plan,
            probe_report,
            probing: false,
            prober_ends: Some((plan_rx, report_tx, probe_hub)),
            node,
            dataplane,
            metrics,
            status_tx,
            clock,
            started,
            subnet_env,
            state_file,
            keys,
            key_view_tx,
            udp,
        };
        driver.tell(outputs);
        driver.publish_status();
        driver
    }

    fn name(&self) -> &str {
        &self.node.config().node_name
    }

    fn times(&self) -> Times {
        Times {
            now: self.started.elapsed(),
            now_ms: self.clock.now_ms(),
            wall_ms: self.clock.wall_ms(),
        }
    }

    pub(super) async fn run(
        mut self,
        transport: Box<dyn Transport>,
        cancel: CancellationToken,
        mut leave_rx: mpsc::Receiver<oneshot::Sender<String>>,
    ) -> Result<(), AgentError> {
        let config = self.node.config().clone();
        let advertise = config
            .advertise
            .unwrap_or_else(|| SocketAddr::new(self.node.announce_ip(), config.listen.port()));
        let cluster_cfg = ClusterConfig {
            node_name: config.node_name.clone(),
            generation: self.node.generation(),
            listen: config.listen,
            advertise,
            seeds: config.seeds.clone(),
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            gossip_fanout: config.gossip_fanout,
            dead_node_grace: config.dead_node_grace,
        };
        let mut cluster =
            Cluster::start(&cluster_cfg, transport.as_ref(), &self.node.record()).await?;
        cluster.set_reject_counters(self.metrics.records_rejected.clone());
        info!(
            node = %config.node_name,
            underlay = %self.node.announce_ip(),
            gossip = %advertise,
            seeds = ?config.seeds,
            network = %config.network,
            "weft started"
        );
        if config.insecure {
            warn!(node = %config.node_name, "gossip is NOT sealed (--insecure): anyone who can reach the gossip port can join or forge records");
        }
        let mut watcher = cluster.watcher().await;
        let probes_changed = Arc::new(tokio::sync::Notify::new());
        let prober_cancel = cancel.child_token();
        // A dry run programs nothing, so there is no overlay address to probe from (unless the
        // probes travel an in-memory hub).
        let ends = self
            .prober_ends
            .take()
            .filter(|(_, _, hub)| config.probes && (!config.dry_run || hub.is_some()));
        if let Some((plan_rx, report_tx, hub)) = ends {
            self.probing = true;
            let me = Me {
                name: config.node_name.clone(),
                generation: self.node.generation(),
                vtep_mac: match config.backend {
                    weft_proto::Backend::Vxlan => {
                        crate::dataplane::desired::vtep_mac(&config.node_name)
                    }
                    _ => [0; 6],
                },
            };
            let sealing = self
                .keys
                .as_ref()
                .map_or(weft_proto::envelope::Sealing::Insecure, |k| k.sealing());
            tokio::spawn(super::probing::run(
                me,
                !config.ipv4,
                hub,
                sealing,
                self.started,
                plan_rx,
                report_tx,
                probes_changed.clone(),
                self.metrics.clone(),
                prober_cancel.clone(),
            ));
        }
        let changed = Arc::new(tokio::sync::Notify::new());
        cluster.notify_on_change(changed.clone()).await;
        let mut tick = tokio::time::interval(config.gossip_interval.min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A full step reads and resolves every record and rebuilds the status: it runs when the
        // mesh changed (a key changed, a node came or went), while something waits on time, and
        // at least every FULL_STEP_EVERY; an idle settled mesh costs almost nothing per tick.
        // News (a key changed here, or arrived here) is pushed to NEWS_FANOUT random live peers.
        // When both happen is the pacer's decision (`node::pacing`); this loop only waits.
        let mut pacer = Pacer::new(config.gossip_interval);
        let mut alive = 0;
        let mut spread_seed =
            self.node.generation() ^ crate::hash::fnv1a(config.node_name.as_bytes());
        let leave_reply = loop {
            let wake = pacer.next_wake(alive).map(|at| self.started + at);
            tokio::select! {
                _ = cancel.cancelled() => break None,
                reply = leave_rx.recv() => if let Some(reply) = reply { break Some(reply) },
                res = watcher.changed() => {
                    if res.is_err() {
                        error!(node = %config.node_name, "gossip stopped");
                        break None;
                    }
                    pacer.mesh_changed();
                },
                _ = changed.notified() => pacer.news(),
                _ = probes_changed.notified() => pacer.mesh_changed(),
                _ = tick.tick() => {},
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {},
            }
            let now = self.started.elapsed();
            if pacer.spread_now(now, alive) {
                spread_seed = spread_seed.wrapping_add(1);
                cluster.spread(NEWS_FANOUT, spread_seed).await;
            }
            let due = self.node.step_due(
                now,
                pacer.periodic_due(now, config.reconcile_interval),
                self.files_pending(),
            );
            if pacer.step_now(now, due) {
                alive = self.step(&mut cluster).await;
                pacer.stepped(now, self.started.elapsed(), alive);
            } else if let Some(ids) = self.keys.as_ref().map(|k| k.ids()) {
                // A reloaded keyring is announced at once (its change makes the next step full).
                cluster.publish_keys(&ids).await;
            }
        };
        match leave_reply {
            Some(reply) => {
                let answer = self.leave(&mut cluster).await;
                let _ = reply.send(answer);
            }
            None => {
                self.save_state(true);
                info!(node = %config.node_name, "stopping; claim, routes and devices stay in place for a restart");
            }
        }
        prober_cancel.cancel();
        cluster.shutdown().await;
        Ok(())
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

    /// One pass: read the mesh, step the node, and carry out what it asks, in order. Returns
    /// the live peers.
    async fn step(&mut self, cluster: &mut Cluster) -> usize {
        let t = self.times();
        let (members, counts) = cluster.members(t.now_ms).await;
        Metrics::set(&self.metrics.nodes_alive, counts.alive as u64 + 1);
        Metrics::set(&self.metrics.nodes_dead, counts.dead as u64);
        Metrics::set(&self.metrics.bad_records, counts.bad_records as u64);
        Metrics::set(&self.metrics.gossip_syns_skipped, cluster.syns_skipped());
        let step = self.node.step(t, members, counts.alive);
        self.tell(step.outputs);
        if let Some(text) = step.subnet_env {
            self.keep_subnet_env(&text);
        }
        cluster.publish(&step.publish).await;
        if let Some(ips) = step.onlink_query {
            match self.dataplane.onlink(&ips).await {
                Ok(onlink) => self.node.onlink_observed(onlink),
                Err(e) => {
                    debug!(node = %self.name(), error = %e, "cannot read underlay routes; keeping the last on-link view")
                }
            }
        }
        self.publish_keys(cluster).await;
        self.follow_probes(cluster).await;
        self.reconcile_if_due().await;
        if let (Some(udp), Some(peers)) = (&mut self.udp, self.node.udp_peers()) {
            let update = udp.update_peers(peers);
            let node = &self.node.config().node_name;
            for peer in update.unkeyed {
                warn!(node = %node, peer = %peer, "peer publishes no tunnel key; its traffic is dropped");
            }
            if let Some(kept) = update.kept {
                note_kept(node, "udp_peers", &self.metrics, kept);
            }
        }
        self.save_state(false);
        self.publish_status();
        counts.alive
    }

    /// Takes what the prober found (route MTUs, PATH column), announces this node's broken
    /// paths (once it answers probes), builds the fleet view from every live node's summary, and
    /// hands the prober its next plan.
    async fn follow_probes(&mut self, cluster: &mut Cluster) {
        if !self.probing {
            return;
        }
        let report = self.probe_report.borrow().clone();
        let own = fleet::summary(
            report.states.iter().map(|(n, s)| (n.as_str(), s)),
            self.start_unix_ms,
        );
        if report.answering {
            cluster.publish_paths(&own).await;
        }
        let (mut summaries, _undecodable) = cluster.path_summaries().await;
        let answering: BTreeSet<String> = summaries.iter().map(|(n, _)| n.clone()).collect();
        let me = self.node.config().node_name.clone();
        if report.answering {
            summaries.push((me.clone(), own));
        }
        let alive: BTreeSet<&str> = self
            .node
            .view()
            .members
            .iter()
            .filter(|r| r.member.alive)
            .map(|r| r.member.name.as_str())
            .chain([me.as_str()])
            .collect();
        let view = fleet::view(summaries.iter().map(|(n, s)| (n.as_str(), s)), |n| {
            alive.contains(n)
        });
        let fleet = view.report();
        self.node.probes_observed(ProbeFacts {
            states: report.states,
            at: report.at,
            start_unix_ms: self.start_unix_ms,
            fleet: Some(fleet),
        });
        let plan = self.node.probe_plan(&answering);
        self.probe_plan.send_if_modified(|old| {
            if *old == plan {
                false
            } else {
                *old = plan;
                true
            }
        });
    }

    /// Logs and counts what the node says.
    fn tell(&self, outputs: Vec<Output>) {
        let node = self.name();
        for output in outputs {
            match output {
                Output::Notice(notice) => notice.log(node),
                Output::Programming(change) => change.log(node),
                Output::Lease(event) => self.tell_lease(event),
            }
        }
    }

    fn tell_lease(&self, event: LeaseEvent) {
        let node = self.name();
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
                was_active: true,
            } => {
                Metrics::add(&self.metrics.active_claims_lost, 1);
                error!(node = %node, subnet = %subnet, peer = %winner, "active subnet taken by an older claim (partition healed?); re-claiming; containers on the old subnet must be restarted");
            }
            LeaseEvent::Lost { subnet, winner, .. } => {
                Metrics::add(&self.metrics.claims_lost, 1);
                info!(node = %node, subnet = %subnet, peer = %winner, "subnet claimed earlier by a peer; picking another");
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

    /// Makes subnet.env hold `text` (a failed write is retried every step, a file changed or
    /// removed behind the agent's back is rewritten; until it holds, `/readyz` says why).
    fn keep_subnet_env(&mut self, text: &str) {
        let kept = self.subnet_env.keep(text);
        note_kept(
            &self.node.config().node_name,
            "subnet_env",
            &self.metrics,
            kept,
        );
    }

    fn save_state(&mut self, force: bool) {
        let t = self.times();
        let Some(state) = self.node.state_to_save(t, force) else {
            return;
        };
        let kept = self.state_file.keep(&state.to_json());
        if !matches!(kept, files::Kept::Failed { .. }) {
            self.node.state_saved(state, t.now);
        }
        note_kept(&self.node.config().node_name, "state", &self.metrics, kept);
    }

    /// Announces this node's key ids and refreshes the view of who holds which keys.
    async fn publish_keys(&mut self, cluster: &mut Cluster) {
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
            name: self.node.config().node_name.clone(),
            generation: self.node.generation(),
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
        self.key_view_tx.send_if_modified(|old| {
            if *old == nodes {
                false
            } else {
                *old = nodes;
                true
            }
        });
    }

    /// Re-reads the underlay (when the agent discovered it) and reconciles, when the node says
    /// a reconcile is due.
    async fn reconcile_if_due(&mut self) {
        let now = self.started.elapsed();
        let (outputs, due) = self.node.reconcile_due(now);
        self.tell(outputs);
        if !due {
            return;
        }
        if self.node.rediscovers_underlay()
            && let Some(fresh) = self.read_underlay().await
        {
            let change = self.node.underlay_observed(fresh);
            self.tell(change.outputs);
            if let Some(text) = change.subnet_env {
                self.keep_subnet_env(&text);
            }
        }
        let plan = self.node.reconcile(now);
        Metrics::add(&self.metrics.reconciles, 1);
        let ok = match dataplane::reconcile(
            self.dataplane.as_mut(),
            &plan.desired,
            plan.allow_delete,
        )
        .await
        {
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
                    debug!(node = %self.name(), ops = ?report.applied, "reconciled");
                }
                if report.applied.contains(&"ip_masq") {
                    info!(node = %self.name(), subnet = ?plan.desired.masq.map(|m| m.subnet), op = "ip_masq", "masquerade rules installed (nftables table ip weft)");
                }
                if report.applied.contains(&"ip_masq6") {
                    info!(node = %self.name(), subnet = ?plan.desired.masq6.map(|m| m.subnet), op = "ip_masq6", "IPv6 masquerade rules installed (nftables table ip6 weft)");
                }
                report.failed.is_empty()
            }
            Err(e) => {
                Metrics::add(&self.metrics.reconcile_failures, 1);
                warn!(node = %self.name(), error = %e, "cannot read the data plane");
                false
            }
        };
        let outputs = self
            .node
            .reconciled(plan.desired, ok, self.started.elapsed());
        self.tell(outputs);
        Metrics::set(
            &self.metrics.peers_programmed,
            self.node.programmed_count() as u64,
        );
    }

    /// The underlay as the host holds it now. When the configured interface is gone (renamed,
    /// or re-created under another name, as a container's network reconnected as eth1), the
    /// announced address is followed; `None` when neither is found.
    async fn read_underlay(&mut self) -> Option<UnderlayInfo> {
        let config = self.node.config();
        let (select, public_ip, announced) = (
            config.underlay.clone(),
            config.public_ip,
            self.node.underlay().ip,
        );
        match self.dataplane.underlay(&select, public_ip).await {
            Ok(u) => Some(u),
            Err(e) => {
                let by_address = match select {
                    UnderlaySelect::Addr(_) => None,
                    _ => self
                        .dataplane
                        .underlay(&UnderlaySelect::Addr(announced), None)
                        .await
                        .ok(),
                };
                if by_address.is_none() {
                    debug!(node = %self.name(), error = %e, "underlay not found");
                }
                by_address
            }
        }
    }

    async fn leave(&mut self, cluster: &mut Cluster) -> String {
        let node = self.name().to_string();
        let (released, record) = self.node.leave();
        cluster.publish(&record).await;
        // Every live peer hears it in one round trip rather than after a few gossip rounds.
        let asked = cluster.push_to_live_peers().await;
        info!(node = %node, subnet = ?released, peers = asked, "leaving: subnet released, telling the mesh");
        self.publish_status();
        // Let the leaving record spread before going quiet.
        let spread = (self.node.config().gossip_interval * 5)
            .clamp(Duration::from_secs(1), Duration::from_secs(10));
        tokio::time::sleep(spread).await;
        let mut failures = Vec::new();
        match self.dataplane.observe().await {
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
            self.node.config().subnet_file.clone(),
            files::state_path(&self.node.config().state_dir),
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
        let files = Files {
            subnet_env: &self.subnet_env,
            state_file: &self.state_file,
            udp: self.udp.as_ref(),
        };
        let report = self.node.status(&files);
        let now = self.started.elapsed();
        if let Some((after, notice)) = self.node.became_ready(report.ready, now) {
            Metrics::set(&self.metrics.time_to_ready_ms, after.as_millis() as u64);
            notice.log(&self.node.config().node_name);
        }
        Metrics::set(&self.metrics.ready, u64::from(report.ready));
        self.metrics.set_subnets(report.subnet, report.ipv6_subnet);
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
