//! The gossip mesh: a thin wrapper over chitchat that publishes this node's record under one
//! atomic key and reads every known generation back as lease [`Member`]s, tracking when each was
//! first seen dead (chitchat has no leave message and does not say when a node died).

pub mod digest_codec;
pub mod fanout;
pub mod transport;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitchat::transport::Transport;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
    spawn_chitchat,
};
use weft_proto::NodeRecord;
use weft_proto::keyfile::{KEYS_KEY, KeyIds};
use weft_proto::paths::{PATHS_KEY, PathSummary};
use weft_proto::record::RECORD_KEY;

use crate::lease::{Member, Rejection};
use fanout::FanoutGate;

/// How this node joins the mesh.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_name: String,
    /// Increases at every start (2^62 + start time in ms): peers drop the previous generation.
    pub generation: u64,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub seeds: Vec<String>,
    pub cluster_id: String,
    pub gossip_interval: Duration,
    /// Live peers each gossip round starts an exchange with (chitchat's own is 3).
    pub gossip_fanout: usize,
    pub dead_node_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("gossip could not start on {listen}: {source}")]
    Start {
        listen: SocketAddr,
        #[source]
        source: anyhow::Error,
    },
}

/// Counts of the mesh as this node sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshCounts {
    pub alive: usize,
    pub dead: usize,
    /// Nodes that chitchat knows but whose record did not decode.
    pub bad_records: usize,
}

/// Records rejected before anything acted on them, by reason. Each distinct bad value of a
/// node's record counts once (chitchat hands the same value back at every read).
#[derive(Debug)]
pub struct RecordRejects {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for RecordRejects {
    fn default() -> Self {
        RecordRejects {
            counts: Mutex::new(crate::lease::Rejection::labels().map(|r| (r, 0)).collect()),
        }
    }
}

impl RecordRejects {
    pub fn count(&self, reason: &'static str) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry(reason).or_insert(0) += 1;
    }

    /// `(reason, count)` for every reason, zeros included.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.iter().map(|(r, n)| (*r, *n)).collect()
    }
}

/// The key ids a node announced under `weft/keys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyHolder {
    pub name: String,
    pub generation: u64,
    pub alive: bool,
    /// `None` when the node announced nothing decodable.
    pub ids: Option<KeyIds>,
}

/// A running chitchat instance with this node's record.
pub struct Cluster {
    handle: ChitchatHandle,
    gate: Arc<FanoutGate>,
    self_id: ChitchatId,
    dead_since: HashMap<ChitchatId, u64>,
    published: Option<String>,
    published_keys: Option<String>,
    published_paths: Option<String>,
    rejects: Arc<RecordRejects>,
    /// The last rejected record value of each node, so each bad value counts once.
    rejected: HashMap<ChitchatId, String>,
    /// Keeps the change listener subscribed.
    _listener: Option<chitchat::ListenerHandle>,
}

impl Cluster {
    /// Joins the mesh over `transport`, announcing `record`.
    pub async fn start(
        cfg: &ClusterConfig,
        transport: &dyn Transport,
        record: &NodeRecord,
    ) -> Result<Cluster, ClusterError> {
        let self_id = ChitchatId::new(cfg.node_name.clone(), cfg.generation, cfg.advertise);
        let chitchat_config = ChitchatConfig {
            chitchat_id: self_id.clone(),
            cluster_id: cfg.cluster_id.clone(),
            gossip_interval: cfg.gossip_interval,
            listen_addr: cfg.listen,
            seed_nodes: cfg.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: 8.0,
                // 100 heartbeat intervals are plenty for phi; chitchat preallocates the window per peer
                // (1,000 samples = 8 KB per peer per agent).
                sampling_window_size: 100,
                max_interval: Duration::from_secs(10).max(cfg.gossip_interval * 10),
                initial_interval: cfg.gossip_interval,
                dead_node_grace_period: cfg.dead_node_grace,
            },
            marked_for_deletion_grace_period: cfg.dead_node_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V1,
        };
        let encoded = record.encode();
        let start_error = |source| ClusterError::Start {
            listen: cfg.listen,
            source,
        };
        let socket = transport.open(cfg.listen).await.map_err(start_error)?;
        let gate = Arc::new(FanoutGate::default());
        let socket = fanout::wrap(socket, cfg.gossip_fanout, cfg.gossip_interval, gate.clone());
        let handle = spawn_chitchat(
            chitchat_config,
            vec![(RECORD_KEY.to_string(), encoded.clone())],
            &fanout::Opened::new(socket),
        )
        .await
        .map_err(start_error)?;
        gate.attach(handle.chitchat());
        Ok(Cluster {
            handle,
            gate,
            self_id,
            dead_since: HashMap::new(),
            published: Some(encoded),
            published_keys: None,
            published_paths: None,
            rejects: Arc::default(),
            rejected: HashMap::new(),
            _listener: None,
        })
    }

    /// Count rejected records into `rejects` (shared with the metrics).
    pub fn set_reject_counters(&mut self, rejects: Arc<RecordRejects>) {
        self.rejects = rejects;
    }

    /// Announces this node's key ids under `weft/keys` if they changed.
    pub async fn publish_keys(&mut self, ids: &KeyIds) {
        let encoded = ids.encode();
        if self.published_keys.as_ref() == Some(&encoded) {
            return;
        }
        let value = encoded.clone();
        self.handle
            .with_chitchat(|c| c.self_node_state().set(KEYS_KEY, value.clone()))
            .await;
        self.published_keys = Some(encoded);
    }

    /// Announces this node's broken paths under `weft/paths` if they changed (a node that
    /// announces a summary answers probes).
    pub async fn publish_paths(&mut self, summary: &PathSummary) {
        let encoded = summary.encode();
        if self.published_paths.as_ref() == Some(&encoded) {
            return;
        }
        let value = encoded.clone();
        self.handle
            .with_chitchat(|c| c.self_node_state().set(PATHS_KEY, value.clone()))
            .await;
        self.published_paths = Some(encoded);
    }

    /// The path summary of every live node that announces one (newest generation per name),
    /// and how many announced one that does not decode.
    pub async fn path_summaries(&self) -> (Vec<(String, PathSummary)>, usize) {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let mut newest: BTreeMap<String, (u64, Option<PathSummary>)> = BTreeMap::new();
        for id in guard.live_nodes() {
            if *id == self.self_id {
                continue;
            }
            let Some(value) = guard.node_state(id).and_then(|s| s.get(PATHS_KEY)) else {
                continue;
            };
            let name = id.node_id.to_string();
            if newest
                .get(&name)
                .is_some_and(|(g, _)| *g > id.generation_id)
            {
                continue;
            }
            newest.insert(name, (id.generation_id, PathSummary::decode(value).ok()));
        }
        let bad = newest.values().filter(|(_, s)| s.is_none()).count();
        let good = newest
            .into_iter()
            .filter_map(|(name, (_, s))| Some((name, s?)))
            .collect();
        (good, bad)
    }

    /// The key ids every other known node announced (newest generation per name only).
    pub async fn key_holders(&self) -> Vec<KeyHolder> {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let live: HashSet<&ChitchatId> = guard.live_nodes().collect();
        let mut newest: BTreeMap<String, KeyHolder> = BTreeMap::new();
        for (id, state) in guard.node_states() {
            if *id == self.self_id {
                continue;
            }
            let holder = KeyHolder {
                name: id.node_id.to_string(),
                generation: id.generation_id,
                alive: live.contains(id),
                ids: state.get(KEYS_KEY).and_then(|v| KeyIds::decode(v).ok()),
            };
            match newest.get(&holder.name) {
                Some(h) if h.generation > holder.generation => {}
                _ => {
                    newest.insert(holder.name.clone(), holder);
                }
            }
        }
        newest.into_values().collect()
    }

    /// This node's chitchat identity.
    pub fn self_id(&self) -> &ChitchatId {
        &self.self_id
    }

    /// Publishes `record` if it differs from what is announced.
    pub async fn publish(&mut self, record: &NodeRecord) {
        let encoded = record.encode();
        if self.published.as_ref() == Some(&encoded) {
            return;
        }
        let value = encoded.clone();
        self.handle
            .with_chitchat(|c| c.self_node_state().set(RECORD_KEY, value.clone()))
            .await;
        self.published = Some(encoded);
    }

    /// A receiver that changes whenever the set of live nodes or their state changes.
    pub async fn watcher(
        &self,
    ) -> tokio::sync::watch::Receiver<std::collections::BTreeMap<ChitchatId, chitchat::NodeState>>
    {
        self.handle.with_chitchat(|c| c.live_nodes_watcher()).await
    }

    /// Calls `notify` whenever a key of any node changes (a delta applied, or this node's own
    /// record): the agent steps at once instead of at its next tick. The listener lives as long
    /// as the cluster.
    pub async fn notify_on_change(&mut self, notify: Arc<tokio::sync::Notify>) {
        let handle = self
            .handle
            .with_chitchat(|c| {
                let notify = notify.clone();
                c.subscribe_event("", move |_| notify.notify_one())
            })
            .await;
        self._listener = Some(handle);
    }

    /// Starts a gossip exchange with up to `k` random live peers now: how news (a key that
    /// changed here or arrived here) spreads at network speed rather than one gossip round per
    /// hop, while an idle mesh only pays for the regular rounds. Returns how many were asked.
    pub async fn spread(&self, k: usize, seed: u64) -> usize {
        let mut addrs = self.live_peer_addrs().await;
        // A partial Fisher-Yates shuffle: the first k are a uniform sample.
        let mut x = seed;
        let k = k.min(addrs.len());
        for i in 0..k {
            x = crate::hash::splitmix64(x);
            let j = i + (x % (addrs.len() - i) as u64) as usize;
            addrs.swap(i, j);
        }
        addrs.truncate(k);
        self.start_exchanges(addrs)
    }

    /// Gossip SYNs the fan-out held back (chitchat wanted to send them).
    pub fn syns_skipped(&self) -> u64 {
        self.gate.skipped()
    }

    /// Starts a gossip exchange with every live peer now (a SYN each; the SYN-ACK's digest
    /// tells what they lack and our ACK carries it): how a leaving record reaches everyone in
    /// one round trip instead of several gossip rounds. Returns how many were asked.
    pub async fn push_to_live_peers(&self) -> usize {
        let addrs = self.live_peer_addrs().await;
        self.start_exchanges(addrs)
    }

    /// The gossip addresses of every live peer.
    async fn live_peer_addrs(&self) -> Vec<SocketAddr> {
        self.handle
            .with_chitchat(|c| {
                c.live_nodes()
                    .filter(|id| **id != self.self_id)
                    .map(|id| id.gossip_advertise_addr)
                    .collect()
            })
            .await
    }

    /// Asks chitchat to send a SYN to each of `addrs` (past the fan-out). Returns how many were
    /// asked.
    fn start_exchanges(&self, addrs: Vec<SocketAddr>) -> usize {
        self.gate.grant(addrs.len() as u64);
        let mut asked = 0;
        for addr in addrs {
            match self.handle.gossip(addr) {
                Ok(()) => asked += 1,
                Err(e) => tracing::debug!(%addr, error = %e, "cannot start a gossip exchange"),
            }
        }
        asked
    }

    /// Every other known generation with its liveness and decoded record.
    pub async fn members(&mut self, now_ms: u64) -> (Vec<Member>, MeshCounts) {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let live: HashSet<&ChitchatId> = guard.live_nodes().collect();
        let mut members = Vec::with_capacity(guard.node_states().len());
        let mut counts = MeshCounts::default();
        let mut known = HashSet::with_capacity(guard.node_states().len());
        // Peers on loopback make sense only to an agent that is itself on loopback.
        let scope = if self.self_id.gossip_advertise_addr.ip().is_loopback() {
            weft_proto::record::Scope::Loopback
        } else {
            weft_proto::record::Scope::Network
        };
        for (id, state) in guard.node_states() {
            if *id == self.self_id {
                continue;
            }
            known.insert(id.clone());
            let alive = live.contains(id);
            let dead_since_ms = if alive {
                self.dead_since.remove(id);
                None
            } else {
                Some(*self.dead_since.entry(id.clone()).or_insert(now_ms))
            };
            let record = match state.get(RECORD_KEY) {
                Some(value) => {
                    let checked = NodeRecord::decode(value)
                        .and_then(|r| r.validate_in(scope).map(|()| r))
                        .map_err(Rejection::Record)
                        .and_then(|r| {
                            if *r.node_name == *id.node_id {
                                Ok(r)
                            } else {
                                Err(Rejection::NameMismatch {
                                    record: r.node_name,
                                    gossip: id.node_id.to_string(),
                                })
                            }
                        });
                    match checked {
                        Ok(r) => {
                            self.rejected.remove(id);
                            Ok(r)
                        }
                        Err(why) => {
                            if self.rejected.get(id).map(String::as_str) != Some(value) {
                                self.rejects.count(why.label());
                                self.rejected.insert(id.clone(), value.to_string());
                                tracing::warn!(peer = %id.node_id, reason = why.label(), error = %why, op = "record", "peer record rejected");
                            }
                            Err(why)
                        }
                    }
                }
                None => Err(Rejection::Missing),
            };
            if record.is_err() {
                counts.bad_records += 1;
            }
            if alive {
                counts.alive += 1;
            } else {
                counts.dead += 1;
            }
            members.push(Member {
                name: id.node_id.to_string(),
                generation: id.generation_id,
                alive,
                dead_since_ms,
                record,
            });
        }
        drop(guard);
        self.dead_since.retain(|id, _| known.contains(id));
        self.rejected.retain(|id, _| known.contains(id));
        (members, counts)
    }

    /// The gossip addresses of every known generation (for persisting as future seeds).
    pub async fn known_addrs(&self) -> Vec<SocketAddr> {
        self.handle
            .with_chitchat(|c| {
                c.node_states()
                    .keys()
                    .map(|id| id.gossip_advertise_addr)
                    .collect::<Vec<_>>()
            })
            .await
    }

    /// Stops gossiping.
    pub async fn shutdown(self) {
        if let Err(err) = self.handle.shutdown().await {
            tracing::debug!(error = %err, "gossip loop ended with an error");
        }
    }
}
