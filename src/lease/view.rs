//! Resolving the raw membership (every generation chitchat knows, alive or dead, with its decoded
//! record) into verdicts: which records count, which are superseded by a newer generation, which are
//! refused for an identity conflict, which claims still hold a subnet, and who wins each subnet.
//! Pure: time comes in as `now_ms`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use weft_proto::{Backend, ClaimState, Ipv4Cidr, NodeRecord};

use super::{cidr_to_net, claimed_net, ipv6_net};

/// One chitchat node (one generation of one node name) as the cluster layer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub generation: u64,
    pub alive: bool,
    /// This agent's (monotonic) time at which it first saw the member dead. Local: an agent
    /// started after the death counts from its own start; a takeover ends the reservation for
    /// every observer at once (see [`resolve`]).
    pub dead_since_ms: Option<u64>,
    /// The decoded record, or why it could not be used.
    pub record: Result<NodeRecord, Rejection>,
}

/// Why a member's record is not used (`weft status` shows it; `label` is the metric label of
/// `weft_records_rejected_total{reason}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The node gossips no record (yet).
    Missing,
    /// The record does not decode or fails validation.
    Record(weft_proto::RecordError),
    /// The record names another node than the one gossiping it.
    NameMismatch {
        /// The name in the record.
        record: String,
        /// The name the node gossips under.
        gossip: String,
    },
}

impl Rejection {
    /// Labels of the rejections that are counted, zeros included: every record error and a
    /// name mismatch (a missing record is not a rejection of anything received).
    pub fn labels() -> impl Iterator<Item = &'static str> {
        weft_proto::record::REJECT_REASONS
            .iter()
            .copied()
            .chain(["name_mismatch"])
    }

    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Record(e) => e.reason(),
            Rejection::NameMismatch { .. } => "name_mismatch",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Missing => f.write_str("no record yet"),
            Rejection::Record(e) => write!(f, "{e}"),
            Rejection::NameMismatch { record, gossip } => {
                write!(f, "record names {record:?} but gossips as {gossip:?}")
            }
        }
    }
}

/// What this agent is: the reference point for identity conflicts and mixed-cluster checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub generation: u64,
    pub underlay_ip: IpAddr,
    pub backend: Backend,
    pub network: Ipv4Net,
    pub subnet_len: u8,
    pub vni: u32,
    /// The address families this node runs: every peer must run the same.
    pub families: Families,
}

/// The address families of an overlay: IPv4 or not, and the IPv6 pool if any (a node's IPv6
/// subnet is the one paired with its IPv4 subnet, [`super::families`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Families {
    pub ipv4: bool,
    pub ipv6: Option<super::families::Ipv6Pool>,
}

impl Default for Families {
    /// IPv4 only.
    fn default() -> Self {
        Families {
            ipv4: true,
            ipv6: None,
        }
    }
}

/// A claim's subnet in each family the overlay runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Subnets {
    pub v4: Option<Ipv4Net>,
    pub v6: Option<ipnet::Ipv6Net>,
}

impl Identity {
    /// The subnets a claim of `net` gives this overlay: an IPv4 claim and, dual-stack, the IPv6
    /// subnet at its index; an IPv6-only claim alone.
    pub fn subnets(&self, net: IpNet) -> Subnets {
        match net {
            IpNet::V4(v4) => Subnets {
                v4: self.families.ipv4.then_some(v4),
                v6: self
                    .families
                    .ipv6
                    .and_then(|pool| pool.paired_with(self.network, v4)),
            },
            IpNet::V6(v6) => Subnets {
                v4: None,
                v6: (!self.families.ipv4).then_some(v6),
            },
        }
    }

    /// The network claims are made in and their prefix length: the IPv4 network, or for an
    /// IPv6-only overlay the IPv6 one.
    pub fn claim_space(&self) -> (IpNet, u8) {
        match (self.families.ipv4, self.families.ipv6) {
            (false, Some(pool)) => (IpNet::V6(pool.network), pool.subnet_len),
            _ => (IpNet::V4(self.network), self.subnet_len),
        }
    }
}

impl Families {
    fn describe(ipv4: bool, ipv6: Option<ipnet::Ipv6Net>) -> String {
        match (ipv4, ipv6) {
            (true, None) => "IPv4 only".to_string(),
            (true, Some(net)) => format!("a dual-stack overlay (IPv6 {net})"),
            (false, Some(net)) => format!("an IPv6-only overlay ({net})"),
            (false, None) => "no address family".to_string(),
        }
    }
}

/// The fate of one member's record in this agent's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Its claim counts (it may still lose its subnet to an older claim).
    Usable,
    /// A newer generation of the same node name replaces it.
    Superseded { by_generation: u64 },
    /// Identity conflict or mixed cluster: ignored, never programmed.
    Refused(Refusal),
    /// The record is missing, undecodable or fails validation.
    Invalid(Rejection),
    /// Dead for longer than the reservation period, or its subnet was taken over by a newer
    /// settled claim: its subnet is free again.
    Expired,
    /// It announced `weft leave`: its subnet is free, its routes go.
    Leaving,
}

/// Why a member is refused (ignored, never programmed). `Display` is the sentence `weft status`
/// shows; [`Refusal::label`] names the kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A live member uses this node's name from another underlay address; this node is older.
    UsesOurName { ip: IpAddr },
    /// A younger live member announces this node's underlay address.
    UsesOurUnderlay { ip: IpAddr },
    /// An older live member holds the same name at another address.
    NameHeldByOlder { ip: IpAddr },
    /// An older live member (`other`) holds the same underlay address.
    UnderlayHeldByOlder { ip: IpAddr, other: String },
    /// Mixed cluster: another backend, network or VNI.
    MixedDataPlane {
        backend: Backend,
        network: Ipv4Cidr,
        vni: u32,
        ours: (Backend, Ipv4Net, u32),
    },
    /// Mixed cluster: the peer runs other address families, or another IPv6 network, or an
    /// IPv6 subnet that is not the one paired with its IPv4 subnet.
    MixedFamilies {
        ipv4: bool,
        ipv6: Option<ipnet::Ipv6Net>,
        ours: (bool, Option<ipnet::Ipv6Net>),
    },
    /// Mixed cluster: the peer's subnet is not a subnet of this node's length in the network.
    MixedSubnet {
        subnet: IpNet,
        subnet_len: u8,
        network: IpNet,
    },
}

impl Refusal {
    /// Whether the peer is refused for running a different overlay (rather than for an
    /// identity conflict): the operator is told once per peer.
    pub fn is_mixed_cluster(&self) -> bool {
        matches!(
            self,
            Refusal::MixedDataPlane { .. }
                | Refusal::MixedFamilies { .. }
                | Refusal::MixedSubnet { .. }
        )
    }

    /// A short label for the kind of refusal (logs, metrics).
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::UsesOurName { .. } | Refusal::NameHeldByOlder { .. } => "name_conflict",
            Refusal::UsesOurUnderlay { .. } | Refusal::UnderlayHeldByOlder { .. } => {
                "underlay_conflict"
            }
            Refusal::MixedDataPlane { .. } => "mixed_data_plane",
            Refusal::MixedFamilies { .. } => "mixed_families",
            Refusal::MixedSubnet { .. } => "mixed_subnet",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UsesOurName { ip } => {
                write!(f, "uses this node's name from {ip}, and this node is older")
            }
            Refusal::UsesOurUnderlay { ip } => {
                write!(f, "shares underlay IP {ip} with this node, which is older")
            }
            Refusal::NameHeldByOlder { ip } => {
                write!(f, "node name also used by older node at {ip}")
            }
            Refusal::UnderlayHeldByOlder { ip, other } => {
                write!(f, "underlay IP {ip} also used by older node {other:?}")
            }
            Refusal::MixedDataPlane {
                backend,
                network,
                vni,
                ours,
            } => write!(
                f,
                "mixed cluster: peer runs {backend:?} on {network} vni {vni}, this node {:?} on {} vni {}",
                ours.0, ours.1, ours.2
            ),
            Refusal::MixedFamilies { ipv4, ipv6, ours } if (ipv4, ipv6) == (&ours.0, &ours.1) => {
                write!(
                    f,
                    "mixed cluster: peer's IPv6 subnet is not the one paired with its IPv4 subnet \
                     in {}",
                    Families::describe(*ipv4, *ipv6)
                )
            }
            Refusal::MixedFamilies { ipv4, ipv6, ours } => write!(
                f,
                "mixed cluster: peer runs {}, this node {}",
                Families::describe(*ipv4, *ipv6),
                Families::describe(ours.0, ours.1)
            ),
            Refusal::MixedSubnet {
                subnet,
                subnet_len,
                network,
            } => write!(
                f,
                "mixed cluster: subnet {subnet} is not a /{subnet_len} of {network}"
            ),
        }
    }
}

/// A member with its verdict and, if its claim counts, the subnet it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub member: Member,
    pub verdict: Verdict,
    /// `Some` when the verdict is `Usable` and the record claims a subnet (its IPv4 subnet, or
    /// an IPv6-only node's IPv6 one: [`super::claimed_net`]).
    pub holds: Option<IpNet>,
}

/// Where a counting claim stands in a contest for its subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Standing {
    /// Settled (`active`): it beats every claim still settling, whatever their stamps.
    Settled,
    /// Announced, inside its settle period.
    Settling,
}

/// How a contested subnet is decided, the smallest key winning: a settled claim beats one still
/// settling; between claims of equal standing the smaller stamp (hybrid logical clock, see
/// docs/design.md) wins; then the smaller node name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClaimKey<'a> {
    pub standing: Standing,
    pub time_ms: u64,
    pub name: &'a str,
}

/// This agent's own counting claim, as contests compare it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnClaim {
    pub subnet: IpNet,
    pub time_ms: u64,
    pub standing: Standing,
}

impl OwnClaim {
    pub fn key<'a>(&self, name: &'a str) -> ClaimKey<'a> {
        ClaimKey {
            standing: self.standing,
            time_ms: self.time_ms,
            name,
        }
    }
}

impl Resolved {
    pub fn record(&self) -> Option<&NodeRecord> {
        self.member.record.as_ref().ok()
    }

    /// The key this member's claim contests its subnet with, if it holds one.
    pub fn claim_key(&self) -> Option<ClaimKey<'_>> {
        let record = self.record()?;
        self.holds.map(|_| ClaimKey {
            standing: standing(record.state),
            time_ms: record.claim_time_ms,
            name: self.member.name.as_str(),
        })
    }
}

fn standing(state: ClaimState) -> Standing {
    match state {
        ClaimState::Active => Standing::Settled,
        ClaimState::Claimed | ClaimState::Leaving => Standing::Settling,
    }
}

/// The resolved membership, as the lease and the data plane consume it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Every other member (never this agent's own generation), sorted by (name, generation).
    pub members: Vec<Resolved>,
    /// Set when this agent itself must stand down (younger side of an identity conflict).
    pub self_refused: Option<String>,
    /// A record of an older generation with this agent's own name that held a subnet:
    /// `(subnet, claim time)`, for recovery after a wiped state dir.
    pub previous_self: Option<(IpNet, u64)>,
    /// The largest claim stamp of any record of this cluster in the view (0: none). A new claim
    /// is stamped above it, so it can never look older than a claim its maker could see.
    pub latest_claim_ms: u64,
}

/// Reservation parameters the resolution needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub reservation_ms: u64,
}

/// Turns raw members into a [`View`]. `own` is this agent's counting claim, if any: like every
/// other settled claim, it ends the reservation of a dead node whose subnet it took over.
pub fn resolve(
    me: &Identity,
    members: Vec<Member>,
    now_ms: u64,
    limits: Limits,
    own: Option<OwnClaim>,
) -> View {
    let mut members: Vec<Member> = members
        .into_iter()
        .filter(|m| !(m.name == me.name && m.generation == me.generation))
        .collect();
    members.sort_by(|a, b| (&a.name, a.generation).cmp(&(&b.name, b.generation)));

    // Newest generation per name: everything older with the same name is superseded, and the
    // newest generation counts as "alive" for conflict purposes only if it is alive.
    let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
    newest.insert(me.name.as_str(), me.generation);
    for m in &members {
        let e = newest.entry(m.name.as_str()).or_insert(m.generation);
        *e = (*e).max(m.generation);
    }
    let newest: BTreeMap<String, u64> = newest
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();

    let mut view = View::default();
    let live = LiveIndex::new(&members);
    let mut verdicts: Vec<Verdict> = (0..members.len())
        .map(|i| judge(me, i, &members, &live, &newest, now_ms, limits))
        .collect();
    end_taken_over_reservations(&members, &mut verdicts, own);
    view.self_refused = self_refusal(me, &members);
    view.latest_claim_ms = members
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| !matches!(v, Verdict::Refused(_) | Verdict::Invalid(_)))
        .filter_map(|(m, _)| m.record.as_ref().ok())
        .filter(|r| claimed_net(r).is_some())
        .map(|r| r.claim_time_ms)
        .max()
        .unwrap_or(0);

    let mut out = Vec::with_capacity(members.len());
    for (m, verdict) in members.into_iter().zip(verdicts) {
        let holds = match (&verdict, &m.record) {
            (Verdict::Usable, Ok(r)) => claimed_net(r),
            _ => None,
        };
        if m.name == me.name
            && m.generation < me.generation
            && let Ok(r) = &m.record
            && let (Some(s), true) = (claimed_net(r), r.state != ClaimState::Leaving)
        {
            let candidate = (s, r.claim_time_ms);
            // Keep the newest previous generation's claim.
            view.previous_self = Some(candidate);
        }
        out.push(Resolved {
            member: m,
            verdict,
            holds,
        });
    }
    view.members = out;
    view
}

/// A dead node's reservation ends, for every observer alike, once a newer settled claim holds its
/// subnet: whoever made that claim had seen the reservation end (a claimant never picks a
/// reserved subnet, and its stamp is above every claim it had seen). So an observer that started
/// after the death, and counts the reservation from its own start, still routes the subnet to the
/// node that took it over, and that node keeps it across its own restart. Live members are never
/// ended this way: a live older claim wins its subnet back (a healed partition).
fn end_taken_over_reservations(
    members: &[Member],
    verdicts: &mut [Verdict],
    own: Option<OwnClaim>,
) {
    let mut newest_settled: HashMap<IpNet, u64> = HashMap::new();
    if let Some(own) = own.filter(|o| o.standing == Standing::Settled) {
        newest_settled.insert(own.subnet, own.time_ms);
    }
    for (m, v) in members.iter().zip(verdicts.iter()) {
        if !matches!(
            v,
            Verdict::Usable | Verdict::Superseded { .. } | Verdict::Expired
        ) {
            continue;
        }
        if let Ok(r) = &m.record
            && r.state == ClaimState::Active
            && let Some(s) = claimed_net(r)
        {
            let newest = newest_settled.entry(s).or_insert(0);
            *newest = (*newest).max(r.claim_time_ms);
        }
    }
    if newest_settled.is_empty() {
        return;
    }
    for (m, v) in members.iter().zip(verdicts.iter_mut()) {
        if *v == Verdict::Usable
            && !m.alive
            && let Ok(r) = &m.record
            && let Some(s) = claimed_net(r)
            && newest_settled.get(&s).is_some_and(|&t| t > r.claim_time_ms)
        {
            *v = Verdict::Expired;
        }
    }
}

/// The live members with a usable record, by name and by underlay IP: the only members an
/// identity conflict can involve. Judging each member against every other was O(N²) per step
/// (a million comparisons at N = 1,000); through the index it is a lookup or two.
struct LiveIndex {
    by_name: HashMap<String, Vec<usize>>,
    by_ip: HashMap<IpAddr, Vec<usize>>,
}

impl LiveIndex {
    fn new(all: &[Member]) -> LiveIndex {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_ip: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        for (i, m) in all.iter().enumerate().filter(|(_, m)| m.alive) {
            let Some(ip) = record_ip(m) else { continue };
            by_name.entry(m.name.clone()).or_default().push(i);
            by_ip.entry(ip).or_default().push(i);
        }
        LiveIndex { by_name, by_ip }
    }

    /// The live members other than `all[index]` that share its `name` or its underlay `ip`, in
    /// the order of `all` (so the first conflict reported is the one a full scan would find).
    fn around<'a>(
        &self,
        index: usize,
        name: &str,
        ip: IpAddr,
        all: &'a [Member],
    ) -> impl Iterator<Item = &'a Member> + use<'a> {
        let mut near: Vec<usize> = self
            .by_name
            .get(name)
            .into_iter()
            .chain(self.by_ip.get(&ip))
            .flatten()
            .copied()
            .filter(|i| *i != index)
            .collect();
        near.sort_unstable();
        near.dedup();
        near.into_iter().map(move |i| &all[i])
    }
}

fn record_ip(m: &Member) -> Option<IpAddr> {
    m.record.as_ref().ok().map(|r| r.underlay_ip)
}

/// Why this agent must stand down, if another live member is older and shares its name (from
/// another underlay IP) or its underlay IP (under another name), or is a newer generation of it.
fn self_refusal(me: &Identity, members: &[Member]) -> Option<String> {
    for m in members.iter().filter(|m| m.alive) {
        let Some(ip) = record_ip(m) else { continue };
        if m.name == me.name && ip == me.underlay_ip && m.generation > me.generation {
            return Some(format!(
                "a newer process of this node (generation {}) runs at {ip}",
                m.generation
            ));
        }
        if m.name == me.name && ip != me.underlay_ip && m.generation < me.generation {
            return Some(format!(
                "node name {:?} is already used by {ip} (cloned host or copied config?)",
                me.name
            ));
        }
        if m.name != me.name && ip == me.underlay_ip && m.generation < me.generation {
            return Some(format!(
                "underlay IP {ip} is already used by node {:?} (NAT'd hosts need --public-ip)",
                m.name
            ));
        }
    }
    None
}

fn judge(
    me: &Identity,
    index: usize,
    all: &[Member],
    live: &LiveIndex,
    newest: &BTreeMap<String, u64>,
    now_ms: u64,
    limits: Limits,
) -> Verdict {
    let m = &all[index];
    let record = match &m.record {
        Ok(r) => r,
        Err(why) => return Verdict::Invalid(why.clone()),
    };
    if record.node_name != m.name {
        return Verdict::Invalid(Rejection::NameMismatch {
            record: record.node_name.clone(),
            gossip: m.name.clone(),
        });
    }
    if let Some(&gen_newest) = newest.get(&m.name)
        && gen_newest > m.generation
    {
        return Verdict::Superseded {
            by_generation: gen_newest,
        };
    }
    // Identity conflicts among live members (and with this agent): the older generation keeps
    // the identity, the younger is refused.
    if m.alive {
        if m.name == me.name && record.underlay_ip != me.underlay_ip {
            return Verdict::Refused(Refusal::UsesOurName {
                ip: record.underlay_ip,
            });
        }
        if m.name != me.name && record.underlay_ip == me.underlay_ip && m.generation > me.generation
        {
            return Verdict::Refused(Refusal::UsesOurUnderlay {
                ip: record.underlay_ip,
            });
        }
        for other in live.around(index, &m.name, record.underlay_ip, all) {
            let Some(ip) = record_ip(other) else { continue };
            let older = other.generation < m.generation;
            if older && other.name == m.name && ip != record.underlay_ip {
                return Verdict::Refused(Refusal::NameHeldByOlder { ip });
            }
            if older && other.name != m.name && ip == record.underlay_ip {
                return Verdict::Refused(Refusal::UnderlayHeldByOlder {
                    ip,
                    other: other.name.clone(),
                });
            }
        }
    }
    // An IPv6-only overlay has no IPv4 network to agree on (the families check below compares
    // the IPv6 one).
    if record.backend != me.backend
        || (me.families.ipv4 && cidr_to_net(record.network) != me.network)
        || (record.backend == Backend::Vxlan && record.vni != me.vni)
    {
        return Verdict::Refused(Refusal::MixedDataPlane {
            backend: record.backend,
            network: record.network,
            vni: record.vni,
            ours: (me.backend, me.network, me.vni),
        });
    }
    // Every node runs the same families on the same networks; a dual-stack peer's IPv6 subnet
    // is the one paired with its IPv4 subnet (else two claims could disagree on IPv6).
    let theirs = (
        record.families.ipv4,
        record.families.ipv6.map(|o| ipv6_net(o.network)),
    );
    let ours = (me.families.ipv4, me.families.ipv6.map(|p| p.network));
    let paired = match (&me.families.ipv6, record.families.ipv6, record.subnet) {
        (Some(pool), Some(o), Some(v4)) if me.families.ipv4 => {
            o.subnet.map(ipv6_net) == pool.paired_with(me.network, cidr_to_net(v4))
        }
        _ => true,
    };
    if theirs != ours || !paired {
        return Verdict::Refused(Refusal::MixedFamilies {
            ipv4: theirs.0,
            ipv6: theirs.1,
            ours,
        });
    }
    if record.state == ClaimState::Leaving {
        return Verdict::Leaving;
    }
    if let Some(since) = m.dead_since_ms
        && !m.alive
        && now_ms.saturating_sub(since) >= limits.reservation_ms
    {
        return Verdict::Expired;
    }
    if let Some(net) = claimed_net(record) {
        let (network, subnet_len) = me.claim_space();
        if net.prefix_len() != subnet_len || !network.contains(&net) {
            return Verdict::Refused(Refusal::MixedSubnet {
                subnet: net,
                subnet_len,
                network,
            });
        }
    }
    Verdict::Usable
}

impl View {
    /// Subnets held by other members' counting claims, with the winning key for each.
    pub fn held(&self) -> BTreeMap<IpNet, ClaimKey<'_>> {
        let mut held: BTreeMap<IpNet, ClaimKey<'_>> = BTreeMap::new();
        for r in &self.members {
            if let (Some(net), Some(key)) = (r.holds, r.claim_key()) {
                held.entry(net)
                    .and_modify(|best| {
                        if key < *best {
                            *best = key;
                        }
                    })
                    .or_insert(key);
            }
        }
        held
    }

    /// The members whose claim wins its subnet, given this agent's own claim: the peers to
    /// program.
    pub fn winners(&self, own: Option<OwnClaim>, own_name: &str) -> Vec<&Resolved> {
        let held = self.held();
        self.members
            .iter()
            .filter(|r| {
                let (Some(net), Some(key)) = (r.holds, r.claim_key()) else {
                    return false;
                };
                if held.get(&net) != Some(&key) {
                    return false;
                }
                match own {
                    Some(own) if own.subnet == net => key < own.key(own_name),
                    _ => true,
                }
            })
            .collect()
    }

    pub fn find(&self, name: &str) -> impl Iterator<Item = &Resolved> {
        self.members.iter().filter(move |r| r.member.name == name)
    }
}
