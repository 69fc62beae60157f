//! The node: one I/O-free type holding every decision of a running agent. The driver feeds it
//! times, the mesh's members, and what the data plane and the files answered; it answers with
//! what to do: the record to publish, the text subnet.env must hold, which underlay addresses to
//! look up, whether and what to reconcile, the udp peer table, the state to save, the status,
//! and what to tell the operator ([`Output`]). No sockets, no netlink, no clock: every method
//! takes the time it needs, so tests drive it with explicit times (`node/tests.rs`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use weft_proto::{Backend, ClaimState, NodeRecord, PersistedState};

use crate::config::Config;
use crate::dataplane::desired::{PeerTarget, vtep_mac};
use crate::dataplane::paths::{self, Onlink, Selection};
use crate::dataplane::underlay::UnderlayInfo;
use crate::dataplane::{Mac, State};
use crate::lease::{
    self, Identity, Lease, LeaseConfig, LeaseEvent, Member, Phase, Restored, Subnets, View,
};
use crate::node::notices::{Notice, Notices};
use crate::node::programming::{Change, Programming};
use crate::node::{desired, generation::generation_at, pacing, persist};
use crate::udp::PeerSpec;

/// The times of one input: `now` since the agent started (monotonic), `now_ms` the wall clock
/// read at start counted forward by it (durations: settle, reservations), `wall_ms` the same plus
/// any step of the wall clock since (new claims' stamps start from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Times {
    /// Since the agent started.
    pub now: Duration,
    /// Unix milliseconds for durations (never jumps).
    pub now_ms: u64,
    /// Unix milliseconds for new stamps (follows wall-clock steps).
    pub wall_ms: u64,
}

/// What the udp plane tells the node about itself (the node announces the key and sizes the
/// TUN device from the MTU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpFacts {
    /// The TUN device's MTU.
    pub mtu: u32,
    /// This start's X25519 public key.
    pub public_key: [u8; 32],
}

/// Something to tell the operator (log, count); the driver carries it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A claim event: logged and counted (`weft_claims_total`, lost claims, conflicts).
    Lease(LeaseEvent),
    /// Told once ([`Notices`]).
    Notice(Notice),
    /// Which peers are programmed changed.
    Programming(Change),
}

/// What one step of the mesh asks of the driver, in order.
#[derive(Clone, Debug)]
pub struct Step {
    /// Tell these.
    pub outputs: Vec<Output>,
    /// subnet.env must hold this text (when the claim is active).
    pub subnet_env: Option<String>,
    /// Announce this record.
    pub publish: NodeRecord,
    /// Look up which of these underlay addresses are on-link, then call
    /// [`Node::onlink_observed`] (host-gw and DirectRouting only).
    pub onlink_query: Option<Vec<IpAddr>>,
}

/// A reconcile to run: program `desired`; removals only with `allow_delete`.
#[derive(Clone, Debug)]
pub struct Reconcile {
    /// What the kernel should hold.
    pub desired: State,
    /// Whether removals may be applied (the view is warm).
    pub allow_delete: bool,
}

/// What an underlay re-read changed.
#[derive(Clone, Debug, Default)]
pub struct UnderlayChange {
    /// Tell these.
    pub outputs: Vec<Output>,
    /// Anything changed: the desired state must be recomputed.
    pub changed: bool,
    /// The overlay MTU followed the underlay's: subnet.env must hold this now.
    pub subnet_env: Option<String>,
}

/// What the files answered, for the status: whether subnet.env holds a text, and the last
/// failure of each kept file.
pub trait FileFacts {
    /// subnet.env holds exactly `text`.
    fn subnet_env_holds(&self, text: &str) -> bool;
    /// Why the last subnet.env write failed, while it does.
    fn subnet_env_failure(&self) -> Option<String>;
    /// Where subnet.env is.
    fn subnet_env_path(&self) -> String;
    /// Why the last state-file write failed, while it does.
    fn state_failure(&self) -> Option<String>;
    /// Why the last udp-peers write failed, while it does.
    fn udp_peers_failure(&self) -> Option<String>;
}

/// The node's state and decisions.
pub struct Node {
    config: Config,
    identity: Identity,
    lease: Lease,
    generation: u64,
    announce_ip: IpAddr,
    vtep_mac: Mac,
    underlay: UnderlayInfo,
    /// The underlay was discovered here, so it is re-read before reconciles.
    rediscover_underlay: bool,
    udp: Option<UdpFacts>,
    /// The last reconcile: what it applied, whether it took, which peers are programmed.
    programming: Programming,
    /// When the first live peer was heard (since start).
    first_live_peer: Option<Duration>,
    /// The state last saved, and when (since start).
    last_saved: Option<(PersistedState, Duration)>,
    warnings: Vec<String>,
    ready_since: Option<Duration>,
    view: View,
    /// Which peers' underlay IPs are on-link (host-gw, DirectRouting), refreshed every step.
    onlink: Onlink,
    /// Peers (by name) this node would program but cannot, with the reason (`weft status`).
    skipped: BTreeMap<String, String>,
    notices: Notices,
    /// What the path probes found (`None` until the prober reported).
    probes: Option<probes::ProbeFacts>,
}

impl Node {
    /// A node starting at `t` from what the state file held (`restored`: its contents, or why
    /// it could not be read). `rediscover_underlay`: the underlay was found here (not handed in),
    /// so it is re-read before every reconcile.
    pub fn new(
        config: Config,
        underlay: UnderlayInfo,
        announce_ip: IpAddr,
        restored: Result<Option<PersistedState>, String>,
        rediscover_underlay: bool,
        udp: Option<UdpFacts>,
        t: Times,
    ) -> (Node, Vec<Output>) {
        let mut outputs = Vec::new();
        let mut warnings = Vec::new();
        let restored = match restored {
            Ok(Some(s)) if s.node_name == config.node_name => {
                // The claim is the IPv4 subnet, or an IPv6-only overlay's IPv6 one.
                let claim = if config.ipv4 {
                    s.subnet.map(|c| IpNet::V4(lease::cidr_to_net(c)))
                } else {
                    s.ipv6_subnet.map(|c| IpNet::V6(lease::ipv6_net(c)))
                };
                claim.map(|subnet| Restored {
                    subnet,
                    claim_time_ms: s.claim_time_ms,
                    last_alive_ms: s.last_alive_ms,
                    active: s.active,
                })
            }
            Ok(Some(s)) => {
                outputs.push(Output::Notice(Notice::StateFileForeign {
                    other: s.node_name,
                }));
                None
            }
            Ok(None) => None,
            Err(error) => {
                warnings.push(format!("state file unreadable: {error}"));
                outputs.push(Output::Notice(Notice::StateFileUnreadable { error }));
                None
            }
        };
        let generation = generation_at(t.now_ms, restored.as_ref().map(|r| r.last_alive_ms));
        let warmup = pacing::warmup(config.gossip_interval, !config.seeds.is_empty());
        // Claims are made in the IPv4 network, or in the IPv6 one for an IPv6-only overlay.
        let (network, subnet_len, subnet_min, subnet_max) = match (config.ipv4, config.ipv6) {
            (false, Some(pool)) => (
                IpNet::V6(pool.network),
                pool.subnet_len,
                IpAddr::V6(pool.subnet_min),
                IpAddr::V6(pool.subnet_max),
            ),
            _ => (
                IpNet::V4(config.network),
                config.subnet_len,
                IpAddr::V4(config.subnet_min),
                IpAddr::V4(config.subnet_max),
            ),
        };
        let lease_cfg = LeaseConfig {
            node_name: config.node_name.clone(),
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            static_subnet: config.static_subnet.map(IpNet::V4),
            settle_ms: config.settle.as_millis() as u64,
            reservation_ms: config.reservation.as_millis() as u64,
            warmup_ms: warmup.as_millis() as u64,
            // Settle once nothing new was heard for 3 gossip rounds (a fleet starting at once
            // keeps learning claims for longer than the settle period), at most 6 settle periods.
            quiet_ms: (config.gossip_interval * 3).as_millis() as u64,
            settle_max_ms: (config.settle * 6).as_millis() as u64,
        };
        let (lease, events) = Lease::new(lease_cfg, restored, t.now_ms);
        outputs.extend(events.into_iter().map(Output::Lease));
        let identity = Identity {
            name: config.node_name.clone(),
            generation,
            underlay_ip: announce_ip,
            backend: config.backend,
            network: config.network,
            subnet_len: config.subnet_len,
            vni: config.vni,
            families: lease::Families {
                ipv4: config.ipv4,
                ipv6: config.ipv6,
            },
        };
        let node = Node {
            vtep_mac: vtep_mac(&config.node_name),
            config,
            identity,
            lease,
            generation,
            announce_ip,
            underlay,
            rediscover_underlay,
            udp,
            programming: Programming::default(),
            first_live_peer: None,
            last_saved: None,
            warnings,
            ready_since: None,
            view: View::default(),
            onlink: Onlink::Unknown,
            skipped: BTreeMap::new(),
            notices: Notices::default(),
            probes: None,
        };
        (node, outputs)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This start's gossip generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The underlay address announced to peers.
    pub fn announce_ip(&self) -> IpAddr {
        self.announce_ip
    }

    /// The underlay as last read.
    pub fn underlay(&self) -> &UnderlayInfo {
        &self.underlay
    }

    /// The claim state machine.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The resolved view of the mesh at the last step.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// Peers programmed now (`weft_peers_programmed`).
    pub fn programmed_count(&self) -> usize {
        self.programming.count()
    }

    /// The record this node announces.
    pub fn record(&self) -> NodeRecord {
        let (subnets, claim_time_ms, state) = match self.lease.announcement() {
            Some((s, t, st)) => (self.identity.subnets(s), t, st),
            None => (Subnets::default(), 0, ClaimState::Claimed),
        };
        let vxlan = self.config.backend == Backend::Vxlan;
        NodeRecord {
            node_name: self.config.node_name.clone(),
            underlay_ip: self.announce_ip,
            backend: self.config.backend,
            network: lease::net_to_cidr(self.config.network),
            vni: if vxlan { self.config.vni } else { 0 },
            subnet: subnets.v4.map(lease::net_to_cidr),
            claim_time_ms,
            state,
            vtep_mac: if vxlan { self.vtep_mac } else { [0; 6] },
            tunnel_port: match &self.udp {
                Some(_) => self.config.udp_port,
                None => self.config.vxlan_port,
            },
            public_key: self.udp.map(|u| u.public_key),
            families: weft_proto::FamiliesV1 {
                ipv4: self.config.ipv4,
                ipv6: self.config.ipv6.map(|pool| weft_proto::Ipv6Overlay {
                    network: lease::ipv6_cidr(pool.network),
                    subnet: subnets.v6.map(lease::ipv6_cidr),
                    underlay_ip: self.config.public_ipv6.or(self.underlay.ipv6),
                }),
            },
        }
    }

    /// Whether a tick must run a full step although the mesh did not change: something waits
    /// on time (warm-up, settle, a failed apply, the view warming up, on-link routes that only a
    /// netlink read can tell), the periodic pass is due, or a file write failed.
    pub fn step_due(&self, now: Duration, periodic_due: bool, files_pending: bool) -> bool {
        !matches!(self.lease.phase(), Phase::Active { .. })
            || !self.programming.applied_ok()
            || !self.view_is_warm(now)
            || paths::needs_onlink(self.config.backend, self.config.direct_routing)
            || periodic_due
            || self
                .programming
                .interval_passed(now, self.config.reconcile_interval)
            || files_pending
    }

    /// One pass over the mesh's members (`alive`: live peers now): liveness, the view, the
    /// claim; what to announce and write.
    pub fn step(&mut self, t: Times, members: Vec<Member>, alive: usize) -> Step {
        let mut outputs = Vec::new();
        let heard_before = self.first_live_peer.is_some();
        if alive > 0 && self.first_live_peer.is_none() {
            self.first_live_peer = Some(t.now);
        }
        if let Some(notice) = self.notices.liveness(
            alive,
            heard_before,
            !self.config.seeds.is_empty(),
            t.now,
            self.config.gossip_interval * 3,
        ) {
            outputs.push(Output::Notice(notice));
        }
        let limits = lease::Limits {
            reservation_ms: self.config.reservation.as_millis() as u64,
        };
        self.view = lease::resolve(
            &self.identity,
            members,
            t.now_ms,
            limits,
            self.lease.own_claim(),
        );
        let alive_peers: BTreeMap<String, Option<IpAddr>> = self
            .view
            .members
            .iter()
            .filter(|r| r.member.alive && r.member.name != self.config.node_name)
            .map(|r| (r.member.name.clone(), r.record().map(|rec| rec.underlay_ip)))
            .collect();
        outputs.extend(
            self.notices
                .alive_peers(&alive_peers)
                .into_iter()
                .map(Output::Notice),
        );
        let events = self.lease.step_at(t.now_ms, t.wall_ms, &self.view);
        outputs.extend(events.into_iter().map(|e| self.lease_event(e)));
        // Peers refused for a mixed cluster (another backend, network, VNI or subnet length)
        // are never programmed: say so once.
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
        for (peer, why) in refused {
            outputs.extend(self.tell_once(&peer, &why));
        }
        let onlink_query = paths::needs_onlink(self.config.backend, self.config.direct_routing)
            .then(|| {
                self.targets()
                    .into_iter()
                    .map(|(_, _, r)| r.underlay_ip)
                    .collect()
            });
        Step {
            outputs,
            subnet_env: self.subnet_env_now(),
            publish: self.record(),
            onlink_query,
        }
    }

    /// A claim event, remembering what an operator must be warned about.
    fn lease_event(&mut self, event: LeaseEvent) -> Output {
        if let LeaseEvent::Lost {
            subnet,
            winner,
            was_active: true,
        } = &event
        {
            self.warnings
                .push(format!("lost active subnet {subnet} to {winner}"));
        }
        Output::Lease(event)
    }

    /// What subnet.env must hold: the active subnet, or nothing yet.
    pub fn subnet_env_now(&self) -> Option<String> {
        self.lease
            .active_subnet()
            .map(|active| self.subnet_env_text(active))
    }

    /// subnet.env's text for the claim `subnet`.
    pub fn subnet_env_text(&self, subnet: IpNet) -> String {
        let subnets = self.identity.subnets(subnet);
        crate::files::subnet_env_families(
            subnets.v4.map(|s| (self.config.network, s)),
            self.config
                .ipv6
                .zip(subnets.v6)
                .map(|(pool, s)| (pool.network, s)),
            desired::overlay_mtu(&self.desired_inputs(&[])),
            self.config.ip_masq,
        )
    }

    /// The on-link answer for the last query (an error keeps the last answer).
    pub fn onlink_observed(&mut self, onlink: Onlink) {
        self.onlink = onlink;
    }

    /// Whether the data plane must be reconciled now (the desired state changed, the last pass
    /// failed, or the reconcile interval passed), after telling once why peers are skipped.
    pub fn reconcile_due(&mut self, now: Duration) -> (Vec<Output>, bool) {
        let selection = self.selection();
        let mut outputs = Vec::new();
        for (peer, reason) in &selection.skipped {
            outputs.extend(self.tell_once(peer, reason));
        }
        self.skipped = selection.skipped;
        let due = self
            .programming
            .due(&selection.state, now, self.config.reconcile_interval);
        (outputs, due)
    }

    /// Whether the underlay is re-read before a reconcile (it was discovered here).
    pub fn rediscovers_underlay(&self) -> bool {
        self.rediscover_underlay
    }

    /// The underlay as the host holds it now: a re-created interface (new index or name) or a
    /// changed MTU changes the desired state; the announced address stays (it is in every peer's
    /// FDB), and a change of it is told.
    pub fn underlay_observed(&mut self, fresh: UnderlayInfo) -> UnderlayChange {
        if fresh == self.underlay {
            return UnderlayChange::default();
        }
        let mut outputs = Vec::new();
        if fresh.ip != self.underlay.ip {
            outputs.push(Output::Notice(Notice::UnderlayAddressChanged {
                old: self.underlay.ip,
                new: fresh.ip,
            }));
        }
        if fresh.ifindex != self.underlay.ifindex || fresh.ifname != self.underlay.ifname {
            outputs.push(Output::Notice(Notice::UnderlayInterfaceChanged {
                iface: fresh.ifname.clone(),
                ifindex: fresh.ifindex,
            }));
        }
        let mtu_changed = fresh.mtu != self.underlay.mtu;
        if mtu_changed {
            outputs.push(Output::Notice(Notice::UnderlayMtuChanged {
                from: self.underlay.mtu,
                to: fresh.mtu,
            }));
        }
        self.underlay = UnderlayInfo {
            ip: self.underlay.ip,
            ..fresh
        };
        UnderlayChange {
            outputs,
            changed: true,
            subnet_env: if mtu_changed {
                self.subnet_env_now()
            } else {
                None
            },
        }
    }

    /// The reconcile to run now: the desired state, with removals held back until the view is
    /// warm (a restart never drops routes it has not yet re-learned).
    pub fn reconcile(&self, now: Duration) -> Reconcile {
        Reconcile {
            desired: self.selection().state,
            allow_delete: self.view_is_warm(now),
        }
    }

    /// A reconcile of `desired` ran at `now` (`ok`: every operation took): which peers are
    /// programmed, and what changed for the operator.
    pub fn reconciled(&mut self, desired: State, ok: bool, now: Duration) -> Vec<Output> {
        let selection = self.selection();
        let targets: BTreeMap<String, IpNet> = self
            .targets()
            .into_iter()
            .filter(|(n, _, _)| !self.skipped.contains_key(n))
            .map(|(n, s, _)| (n, s))
            .collect();
        let changes = self
            .programming
            .record(desired, ok, now, targets, selection.paths);
        for change in &changes {
            if let Change::Programmed { peer, .. } = change {
                self.notices.programmed(peer);
            }
        }
        changes.into_iter().map(Output::Programming).collect()
    }

    /// The udp tunnel's peer table (the winners of each subnet); `None` for other backends.
    pub fn udp_peers(&self) -> Option<Vec<PeerSpec>> {
        self.udp?;
        let claim = self.lease.own_claim();
        let mut peers: Vec<PeerSpec> = if claim.is_some() {
            self.view
                .winners(claim, &self.config.node_name)
                .into_iter()
                .filter_map(|r| {
                    let record = r.record()?;
                    let subnets = lease::record_subnets(record);
                    Some(PeerSpec {
                        name: r.member.name.clone(),
                        subnet: subnets.v4,
                        ipv6_subnet: subnets.v6,
                        addr: SocketAddr::new(record.underlay_ip, record.tunnel_port),
                        public_key: record.public_key,
                        live: r.member.alive,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        peers.sort_by(|a, b| (a.subnet, &a.name).cmp(&(b.subnet, &b.name)));
        Some(peers)
    }

    /// The state file's contents when a save is due at `t` (`force`: on a clean stop).
    pub fn state_to_save(&self, t: Times, force: bool) -> Option<PersistedState> {
        let (subnet, claim_time_ms) = self.lease.claim()?;
        let subnets = self.identity.subnets(subnet);
        let state = PersistedState {
            version: 1,
            node_name: self.config.node_name.clone(),
            network: subnets.v4.map(|_| lease::net_to_cidr(self.config.network)),
            subnet: subnets.v4.map(lease::net_to_cidr),
            claim_time_ms,
            last_alive_ms: t.now_ms,
            active: self.lease.active_subnet().is_some(),
            ipv6_network: self.config.ipv6.map(|p| lease::ipv6_cidr(p.network)),
            ipv6_subnet: subnets.v6.map(lease::ipv6_cidr),
        };
        let prev = self.last_saved.as_ref().map(|(state, at)| (state, *at));
        persist::save_due(prev, &state, t.now, force).then_some(state)
    }

    /// `state` was written at `now`.
    pub fn state_saved(&mut self, state: PersistedState, now: Duration) {
        self.last_saved = Some((state, now));
    }

    /// `weft leave`: releases the claim; returns the subnet released and the record to
    /// announce (state `leaving`).
    pub fn leave(&mut self) -> (Option<IpNet>, NodeRecord) {
        let released = self.lease.claim().map(|(s, _)| s);
        self.lease.leave();
        (released, self.record())
    }

    /// The status is `ready` at `now`: returns the time to ready and the notice the first time.
    pub fn became_ready(&mut self, ready: bool, now: Duration) -> Option<(Duration, Notice)> {
        if !ready || self.ready_since.is_some() {
            return None;
        }
        self.ready_since = Some(now);
        Some((
            now,
            Notice::Ready {
                subnet: self.lease.active_subnet(),
            },
        ))
    }

    /// The subnets of each family a claim of `subnet` gives this node.
    pub fn subnets_of(&self, subnet: IpNet) -> Subnets {
        self.identity.subnets(subnet)
    }

    /// Peers whose routes this node programs: the winner of each subnet.
    fn targets(&self) -> Vec<(String, IpNet, NodeRecord)> {
        if self.lease.claim().is_none() {
            return Vec::new();
        }
        self.view
            .winners(self.lease.own_claim(), &self.config.node_name)
            .into_iter()
            .filter_map(|r| Some((r.member.name.clone(), r.holds?, r.record()?.clone())))
            .collect()
    }

    /// The desired state and each peer's fate ([`desired::selection`]).
    fn selection(&self) -> Selection {
        let peers: Vec<PeerTarget> = self
            .targets()
            .into_iter()
            .map(|(name, _, record)| {
                let subnets = lease::record_subnets(&record);
                PeerTarget {
                    name,
                    subnet: subnets.v4,
                    underlay_ip: record.underlay_ip,
                    vtep_mac: record.vtep_mac,
                    ipv6_subnet: subnets.v6,
                    ipv6_underlay: record.families.ipv6.and_then(|o| o.underlay_ip),
                }
            })
            .collect();
        let mut selection = desired::selection(&self.desired_inputs(&peers));
        self.apply_route_mtus(&mut selection.state);
        selection
    }

    fn desired_inputs<'a>(&'a self, peers: &'a [PeerTarget]) -> desired::Inputs<'a> {
        let claim = self.lease.claim().map(|(s, _)| self.identity.subnets(s));
        let active = self.lease.active_subnet().map(|s| self.identity.subnets(s));
        let (claim, active) = (claim.unwrap_or_default(), active.unwrap_or_default());
        desired::Inputs {
            backend: self.config.backend,
            direct_routing: self.config.direct_routing,
            vni: self.config.vni,
            vxlan_port: self.config.vxlan_port,
            network: self.config.network,
            network6: self.config.ipv6.map(|p| p.network),
            ip_masq: self.config.ip_masq,
            bridge: self.config.bridge.as_deref(),
            claim: claim.v4,
            active: active.v4,
            claim6: claim.v6,
            active6: active.v6,
            underlay: &self.underlay,
            vtep_mac: self.vtep_mac,
            udp_mtu: self.udp.map(|u| u.mtu),
            peers,
            onlink: &self.onlink,
        }
    }

    /// `peer` is not programmed for `reason`: told once per reason.
    fn tell_once(&mut self, peer: &str, reason: &str) -> Option<Output> {
        self.notices
            .not_programmed(peer, reason)
            .map(Output::Notice)
    }

    /// Deletions wait until the view is warm, so a restart never drops routes it has not yet
    /// re-learned (and an isolated node never drops any).
    fn view_is_warm(&self, now: Duration) -> bool {
        let warmup = pacing::warmup(self.config.gossip_interval, true);
        self.config.seeds.is_empty()
            || self
                .first_live_peer
                .is_some_and(|t| now.saturating_sub(t) >= warmup)
    }
}

pub mod probes;
mod status;
#[cfg(test)]
mod tests;
