//! Subnet claims as a sans-IO state machine. Inputs: the time, this node's configuration and
//! persisted claim, and the resolved peer [`View`]; outputs: this node's claim to announce and
//! [`LeaseEvent`]s for the agent to act on (write subnet.env, log, count). No sockets, no clock.
//!
//! The rules (DESIGN.md, "Subnet claims"; docs/design.md, "Claims and clocks"): candidates are
//! ordered by a rendezvous hash of (node name, subnet); a contested subnet goes to a settled claim
//! over one still settling, then to the smallest (stamp, node name), where a claim's stamp is a
//! hybrid logical clock, never below any claim its maker had seen; a claim
//! settles for a settle period, and until the view stopped changing (bounded), before it is
//! `active`; a dead node's subnet stays reserved for the
//! reservation period; a restart inside that period keeps its subnet and original claim time.

pub mod families;
pub mod view;

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use weft_proto::record::MAX_CLAIM_TIME_MS;
use weft_proto::{ClaimState, Ipv4Cidr};

pub use view::{
    ClaimKey, Families, Identity, Limits, Member, OwnClaim, Refusal, Rejection, Resolved, Standing,
    Subnets, Verdict, View, resolve,
};

pub(crate) fn cidr_to_net(c: Ipv4Cidr) -> Ipv4Net {
    // A prefix length above 32 cannot come out of a validated record; clamp rather than panic.
    Ipv4Net::new(c.addr, c.len.min(32))
        .unwrap_or_default()
        .trunc()
}

pub(crate) fn ipv6_net(c: weft_proto::Ipv6Cidr) -> ipnet::Ipv6Net {
    // A prefix length above 128 cannot come out of a validated record; clamp rather than panic.
    ipnet::Ipv6Net::new(c.addr, c.len.min(128))
        .unwrap_or_default()
        .trunc()
}

/// The subnets a peer's record announces, each family (the view only admits peers whose IPv6
/// subnet is paired with their IPv4 one).
pub(crate) fn record_subnets(record: &weft_proto::NodeRecord) -> Subnets {
    Subnets {
        v4: record.subnet.map(cidr_to_net),
        v6: record.families.ipv6.and_then(|o| o.subnet).map(ipv6_net),
    }
}

pub(crate) fn ipv6_cidr(n: ipnet::Ipv6Net) -> weft_proto::Ipv6Cidr {
    weft_proto::Ipv6Cidr {
        addr: n.network(),
        len: n.prefix_len(),
    }
}

pub(crate) fn net_to_cidr(n: Ipv4Net) -> Ipv4Cidr {
    Ipv4Cidr {
        addr: n.network(),
        len: n.prefix_len(),
    }
}

/// What the lease needs to know of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    pub node_name: String,
    /// The network claims are made in: the IPv4 overlay network, or for an IPv6-only overlay
    /// the IPv6 one (a dual-stack node's IPv6 subnet is the one paired with its IPv4 claim,
    /// [`families`]).
    pub network: IpNet,
    pub subnet_len: u8,
    pub subnet_min: IpAddr,
    pub subnet_max: IpAddr,
    pub static_subnet: Option<IpNet>,
    pub settle_ms: u64,
    pub reservation_ms: u64,
    /// How long to listen to the mesh before a first claim without persisted state (so a node
    /// whose state dir was wiped finds its old record). Zero for the first node (no seeds).
    pub warmup_ms: u64,
    /// A claim settles only once the view stopped changing (members known, claims seen) for
    /// this long, so a fleet starting at once hears every claim before any settles. Zero: the
    /// settle period alone.
    pub quiet_ms: u64,
    /// The longest a claim waits for a quiet view before it settles anyway.
    pub settle_max_ms: u64,
}

/// The claim a restart brings back from the state file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    pub subnet: IpNet,
    pub claim_time_ms: u64,
    pub last_alive_ms: u64,
    pub active: bool,
}

/// Where this node's claim stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Listening to the mesh before the first claim.
    Warmup {
        until_ms: u64,
        preferred: Option<IpNet>,
    },
    /// No free subnet (or the static one is held by an older claim): retried every step.
    Searching { reason: String },
    /// Announced, settling.
    Claimed {
        subnet: IpNet,
        claim_time_ms: u64,
        since_ms: u64,
    },
    /// Settled.
    Active { subnet: IpNet, claim_time_ms: u64 },
    /// Identity conflict, this node is the younger side: it claims and programs nothing.
    Refused { reason: String },
    /// `weft leave`: the subnet is released.
    Leaving {
        subnet: Option<IpNet>,
        claim_time_ms: u64,
    },
}

/// Something the agent must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A new claim was announced (`why`: restored, recovered, preferred, candidate, static).
    Claimed { subnet: IpNet, why: &'static str },
    /// The claim settled: write subnet.env, configure the bridge.
    Activated { subnet: IpNet },
    /// An older claim took this node's subnet. `was_active`: it had settled (a partition healed).
    Lost {
        subnet: IpNet,
        winner: String,
        was_active: bool,
    },
    /// No subnet could be claimed.
    Exhausted { reason: String },
    /// This node stands down (identity conflict).
    Refused { reason: String },
    /// The identity conflict cleared.
    Unrefused,
}

/// The subnet-claim state machine.
#[derive(Clone, Debug)]
pub struct Lease {
    cfg: LeaseConfig,
    phase: Phase,
    last_exhausted: Option<String>,
    /// (members known, claims seen) at the last step, and when that last changed.
    view_size: (usize, usize),
    view_changed_ms: u64,
    /// This node's wall clock at the current step (claim stamps start from it).
    wall_ms: u64,
    /// The last stamp this node issued or restored: stamps only grow.
    last_stamp_ms: u64,
}

impl Lease {
    /// Starts from the persisted claim, if any. Inside the reservation period the old claim is
    /// re-announced at once with its original claim time (an active one stays active).
    pub fn new(
        cfg: LeaseConfig,
        restored: Option<Restored>,
        now_ms: u64,
    ) -> (Lease, Vec<LeaseEvent>) {
        let mut events = Vec::new();
        let usable = restored.filter(|r| {
            cfg.network.contains(&r.subnet)
                && r.subnet.prefix_len() == cfg.subnet_len
                && cfg.static_subnet.is_none_or(|s| s == r.subnet)
        });
        let phase = match usable {
            // A stamp beyond the bound (a corrupt file) could never be announced: claim anew.
            Some(r)
                if now_ms.saturating_sub(r.last_alive_ms) < cfg.reservation_ms
                    && r.claim_time_ms <= MAX_CLAIM_TIME_MS =>
            {
                events.push(LeaseEvent::Claimed {
                    subnet: r.subnet,
                    why: "restored",
                });
                if r.active {
                    Phase::Active {
                        subnet: r.subnet,
                        claim_time_ms: r.claim_time_ms,
                    }
                } else {
                    Phase::Claimed {
                        subnet: r.subnet,
                        claim_time_ms: r.claim_time_ms,
                        since_ms: now_ms,
                    }
                }
            }
            other => Phase::Warmup {
                until_ms: now_ms.saturating_add(cfg.warmup_ms),
                preferred: other.map(|r| r.subnet),
            },
        };
        let last_stamp_ms = usable
            .map(|r| r.claim_time_ms)
            .filter(|&t| t <= MAX_CLAIM_TIME_MS)
            .unwrap_or(0);
        (
            Lease {
                cfg,
                phase,
                last_exhausted: None,
                view_size: (0, 0),
                view_changed_ms: now_ms,
                wall_ms: now_ms,
                last_stamp_ms,
            },
            events,
        )
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// The claim to announce: `(subnet, claim time, state)`; `None` while there is none.
    pub fn announcement(&self) -> Option<(IpNet, u64, ClaimState)> {
        match &self.phase {
            Phase::Claimed {
                subnet,
                claim_time_ms,
                ..
            } => Some((*subnet, *claim_time_ms, ClaimState::Claimed)),
            Phase::Active {
                subnet,
                claim_time_ms,
            } => Some((*subnet, *claim_time_ms, ClaimState::Active)),
            Phase::Leaving {
                subnet: Some(s),
                claim_time_ms,
            } => Some((*s, *claim_time_ms, ClaimState::Leaving)),
            _ => None,
        }
    }

    /// The claim that counts for winner computations (not while leaving).
    pub fn claim(&self) -> Option<(IpNet, u64)> {
        match self.announcement() {
            Some((s, t, ClaimState::Claimed | ClaimState::Active)) => Some((s, t)),
            _ => None,
        }
    }

    /// The counting claim with its standing, as contests compare it.
    pub fn own_claim(&self) -> Option<OwnClaim> {
        match &self.phase {
            Phase::Claimed {
                subnet,
                claim_time_ms,
                ..
            } => Some(OwnClaim {
                subnet: *subnet,
                time_ms: *claim_time_ms,
                standing: Standing::Settling,
            }),
            Phase::Active {
                subnet,
                claim_time_ms,
            } => Some(OwnClaim {
                subnet: *subnet,
                time_ms: *claim_time_ms,
                standing: Standing::Settled,
            }),
            _ => None,
        }
    }

    /// The settled subnet, if any.
    pub fn active_subnet(&self) -> Option<IpNet> {
        match &self.phase {
            Phase::Active { subnet, .. } => Some(*subnet),
            _ => None,
        }
    }

    /// `weft leave`: release the subnet.
    pub fn leave(&mut self) {
        let (subnet, claim_time_ms) = match self.claim() {
            Some((s, t)) => (Some(s), t),
            None => (None, 0),
        };
        self.phase = Phase::Leaving {
            subnet,
            claim_time_ms,
        };
    }

    /// Advances the claim against the current view, with one clock for durations and stamps.
    pub fn step(&mut self, now_ms: u64, view: &View) -> Vec<LeaseEvent> {
        self.step_at(now_ms, now_ms, view)
    }

    /// Advances the claim against the current view. `now_ms` measures durations (settle,
    /// warm-up, quiet view) and must not jump; `wall_ms` is this node's wall clock, which a new
    /// claim's stamp starts from (a step of it changes no claim already made).
    pub fn step_at(&mut self, now_ms: u64, wall_ms: u64, view: &View) -> Vec<LeaseEvent> {
        self.wall_ms = wall_ms;
        let mut events = Vec::new();
        if matches!(self.phase, Phase::Leaving { .. }) {
            return events;
        }
        let size = (
            view.members.len(),
            view.members.iter().filter(|r| r.holds.is_some()).count(),
        );
        if size != self.view_size {
            self.view_size = size;
            self.view_changed_ms = now_ms;
        }
        if let Some(reason) = &view.self_refused {
            if !matches!(&self.phase, Phase::Refused { reason: r } if r == reason) {
                events.push(LeaseEvent::Refused {
                    reason: reason.clone(),
                });
                self.phase = Phase::Refused {
                    reason: reason.clone(),
                };
            }
            return events;
        }
        if matches!(self.phase, Phase::Refused { .. }) {
            events.push(LeaseEvent::Unrefused);
            self.phase = Phase::Warmup {
                until_ms: now_ms,
                preferred: None,
            };
        }

        // Defend the current claim: the smallest key wins (settled first, then stamp, name).
        if let Some(own) = self.own_claim()
            && let Some(best) = view.held().get(&own.subnet).copied()
            && best < own.key(&self.cfg.node_name)
        {
            let was_active = matches!(self.phase, Phase::Active { .. });
            let subnet = own.subnet;
            events.push(LeaseEvent::Lost {
                subnet,
                winner: best.name.to_string(),
                was_active,
            });
            self.phase = Phase::Searching {
                reason: format!("lost {subnet} to {}", best.name),
            };
        }

        match self.phase.clone() {
            Phase::Warmup {
                until_ms,
                preferred,
            } => {
                if now_ms >= until_ms {
                    self.first_claim(now_ms, view, preferred, &mut events);
                }
            }
            Phase::Searching { .. } => self.claim_candidate(now_ms, view, None, &mut events),
            Phase::Claimed {
                subnet,
                claim_time_ms,
                since_ms,
            } => {
                let waited = now_ms.saturating_sub(since_ms);
                let quiet = now_ms.saturating_sub(self.view_changed_ms) >= self.cfg.quiet_ms;
                if waited >= self.cfg.settle_ms
                    && (quiet || waited >= self.cfg.settle_max_ms.max(self.cfg.settle_ms))
                {
                    self.phase = Phase::Active {
                        subnet,
                        claim_time_ms,
                    };
                    events.push(LeaseEvent::Activated { subnet });
                }
            }
            Phase::Active { .. } | Phase::Refused { .. } | Phase::Leaving { .. } => {}
        }
        events
    }

    fn first_claim(
        &mut self,
        now_ms: u64,
        view: &View,
        preferred: Option<IpNet>,
        events: &mut Vec<LeaseEvent>,
    ) {
        // A wiped state dir: the mesh remembers this name's old claim, with its claim time.
        if let Some((subnet, claim_time_ms)) = view.previous_self {
            let fits = self.cfg.static_subnet.is_none_or(|s| s == subnet) && self.in_range(subnet);
            let recovered = OwnClaim {
                subnet,
                time_ms: claim_time_ms,
                standing: Standing::Settling,
            };
            let beaten = view
                .held()
                .get(&subnet)
                .is_some_and(|&best| best < recovered.key(&self.cfg.node_name));
            if fits && !beaten {
                self.phase = Phase::Claimed {
                    subnet,
                    claim_time_ms,
                    since_ms: now_ms,
                };
                events.push(LeaseEvent::Claimed {
                    subnet,
                    why: "recovered from the mesh",
                });
                return;
            }
        }
        self.claim_candidate(now_ms, view, preferred, events);
    }

    fn claim_candidate(
        &mut self,
        now_ms: u64,
        view: &View,
        preferred: Option<IpNet>,
        events: &mut Vec<LeaseEvent>,
    ) {
        let held = view.held();
        let choice = if let Some(s) = self.cfg.static_subnet {
            match held.get(&s) {
                Some(best) => Err(format!("static subnet {s} is held by {}", best.name)),
                None => Ok((s, "static")),
            }
        } else if let Some(p) = preferred.filter(|p| !held.contains_key(p) && self.in_range(*p)) {
            Ok((p, "previous"))
        } else {
            best_candidate(&self.cfg, |s| held.contains_key(&s))
                .map(|s| (s, "candidate"))
                .ok_or_else(|| {
                    format!(
                        "no free subnet in {} between {} and {}",
                        self.cfg.network, self.cfg.subnet_min, self.cfg.subnet_max
                    )
                })
        };
        match choice {
            Ok((subnet, why)) => {
                self.last_exhausted = None;
                let claim_time_ms = self.stamp(view);
                self.phase = Phase::Claimed {
                    subnet,
                    claim_time_ms,
                    since_ms: now_ms,
                };
                events.push(LeaseEvent::Claimed { subnet, why });
            }
            Err(reason) => {
                if self.last_exhausted.as_deref() != Some(reason.as_str()) {
                    events.push(LeaseEvent::Exhausted {
                        reason: reason.clone(),
                    });
                    self.last_exhausted = Some(reason.clone());
                }
                self.phase = Phase::Searching { reason };
            }
        }
    }

    /// A new claim's stamp: this node's wall clock, but never at or below a claim it has seen
    /// in the mesh nor a stamp it issued before (a hybrid logical clock). A node whose clock is
    /// behind by hours or decades therefore never makes a claim that looks older than one it
    /// could see; only claims made apart (a partition) compete by their clocks.
    fn stamp(&mut self, view: &View) -> u64 {
        let stamp = self
            .wall_ms
            .max(view.latest_claim_ms.saturating_add(1))
            .max(self.last_stamp_ms.saturating_add(1))
            .min(MAX_CLAIM_TIME_MS);
        self.last_stamp_ms = stamp;
        stamp
    }

    fn in_range(&self, s: IpNet) -> bool {
        s.prefix_len() == self.cfg.subnet_len
            && self.cfg.network.contains(&s)
            && (self.cfg.subnet_min..=self.cfg.subnet_max).contains(&s.network())
    }
}

/// The subnet a record claims, as claims are contested: its IPv4 subnet, or for an IPv6-only
/// node its IPv6 subnet (a dual-stack node's IPv6 subnet follows its IPv4 claim).
pub fn claimed_net(record: &weft_proto::NodeRecord) -> Option<IpNet> {
    if record.families.ipv4 {
        record.subnet.map(|s| IpNet::V4(cidr_to_net(s)))
    } else {
        let v6 = record.families.ipv6?.subnet?;
        Some(IpNet::V6(ipv6_net(v6)))
    }
}

/// An address as a number (IPv4 in the low 32 bits), with the family's width in bits.
fn addr_bits(a: IpAddr) -> (u128, u32) {
    match a {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn addr_of(n: u128, bits: u32) -> Option<IpAddr> {
    if bits == 32 {
        Some(IpAddr::V4(u32::try_from(n).ok()?.into()))
    } else {
        Some(IpAddr::V6(n.into()))
    }
}

/// Every claimable subnet between `subnet_min` and `subnet_max`, in address order.
pub fn subnets(cfg: &LeaseConfig) -> impl Iterator<Item = IpNet> + '_ {
    let (min, bits) = addr_bits(cfg.subnet_min);
    let (max, max_bits) = addr_bits(cfg.subnet_max);
    let len = u32::from(cfg.subnet_len).min(bits);
    // One subnet per step; a /0 subnet (never validated) would be the whole space.
    let step: u128 = 1u128.checked_shl(bits - len).unwrap_or(0).max(1);
    let first = min & !(step - 1);
    let last = if max_bits == bits { max } else { 0 };
    std::iter::successors(Some(first), move |a| a.checked_add(step))
        .take_while(move |a| *a <= last)
        .filter_map(move |a| {
            let net = IpNet::new(addr_of(a, bits)?, cfg.subnet_len).ok()?;
            cfg.network.contains(&net).then_some(net)
        })
}

/// The free subnet with the highest rendezvous score for this node name.
pub fn best_candidate(cfg: &LeaseConfig, taken: impl Fn(IpNet) -> bool) -> Option<IpNet> {
    subnets(cfg)
        .filter(|s| !taken(*s))
        .max_by_key(|s| (rendezvous(&cfg.node_name, *s), std::cmp::Reverse(*s)))
}

/// Rendezvous (highest random weight) score of (node name, subnet): FNV-1a then a 64-bit mix.
pub fn rendezvous(node_name: &str, subnet: IpNet) -> u64 {
    let mut h = crate::hash::Fnv1a::default();
    h.bytes(node_name.as_bytes());
    h.byte(0xff);
    match subnet.network() {
        IpAddr::V4(a) => h.bytes(&a.octets()),
        IpAddr::V6(a) => h.bytes(&a.octets()),
    }
    h.byte(subnet.prefix_len());
    // splitmix64's mixer spreads FNV's weak low bits.
    crate::hash::splitmix64(h.finish())
}

#[cfg(test)]
mod tests;
