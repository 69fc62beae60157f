//! One agent's probing, still without I/O: the peers to probe (each with the overlay address it
//! answers on and who should answer), the [`Schedule`], each peer's [`Path`], the requests to
//! send (encoded, with their destination) and the answers to received datagrams. The socket
//! task (`agent/probing.rs`) only moves bytes and reads the clock; everything it does is asked
//! for here, so the whole exchange between agents is tested without sockets.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use weft_proto::probe::{self, Kind, Probe, ProbeKeys, Sender};

use super::path::{Change, Expected, PROBE_TIMEOUT, Path, PathState};
use super::schedule::{ReplyLimiter, Schedule, ScheduleConfig};
use super::{PathCounts, RTT_BUCKETS, rtt_bucket};

/// A peer to probe: who should answer, and where (its overlay address, port [`probe::PROBE_PORT`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Who should answer.
    pub expected: Expected,
    /// The peer's overlay address.
    pub addr: IpAddr,
}

/// This node, as it signs its probes and answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Me {
    /// Node name.
    pub name: String,
    /// Gossip generation.
    pub generation: u64,
    /// VTEP MAC (all zero off vxlan).
    pub vtep_mac: [u8; 6],
}

impl Me {
    fn sender(&self) -> Sender<'_> {
        Sender {
            node_name: &self.name,
            generation: self.generation,
            vtep_mac: self.vtep_mac,
        }
    }
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Where.
    pub to: SocketAddr,
    /// What.
    pub bytes: Vec<u8>,
}

/// What probing counted (`weft_probes_*`): every number grows only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// Requests sent.
    pub sent: u64,
    /// Replies that answered an outstanding request.
    pub answered: u64,
    /// Requests answered.
    pub replies: u64,
    /// Requests not answered: over the reply budget.
    pub limited: u64,
    /// Datagrams refused, by reason ([`weft_proto::probe::ProbeError::reason`], `unexpected` for a reply to
    /// nothing outstanding).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Small-probe RTT samples per bucket of [`RTT_BUCKETS`] (the last is +Inf), and their sum.
    pub rtt_buckets: [u64; RTT_BUCKETS.len() + 1],
    /// Sum of the RTT samples, in seconds.
    pub rtt_sum: f64,
}

/// Outstanding requests remembered for routing replies: at most this many (older ones have
/// long timed out: the budget starts at most a few hundred rounds per probe timeout).
const MAX_OUTSTANDING: usize = 4096;

/// The probing of one agent.
pub struct Prober {
    me: Me,
    keys: ProbeKeys,
    ipv6: bool,
    overlay_mtu: u32,
    schedule: Schedule,
    /// Peer name → (its overlay address, the path).
    paths: BTreeMap<String, (IpAddr, Path)>,
    /// Sequence → (peer, sent): which peer a reply belongs to, whoever it comes from (an answer
    /// from the wrong node is judged by the path it was meant for).
    outstanding: VecDeque<(u64, String, Duration)>,
    next_seq: u64,
    limiter: ReplyLimiter,
    counters: Counters,
    changes: Vec<(String, Change)>,
    buf: Vec<u8>,
}

impl Prober {
    /// A prober for `me` on an IPv4 (`ipv6` false) or IPv6 overlay of `overlay_mtu`; `seed`
    /// is the randomness (first sequence number, schedule jitter).
    pub fn new(
        me: Me,
        keys: ProbeKeys,
        ipv6: bool,
        overlay_mtu: u32,
        config: ScheduleConfig,
        seed: u64,
    ) -> Prober {
        let next_seq = crate::hash::splitmix64(seed ^ 0x7072_6f62_6573);
        Prober {
            me,
            keys,
            ipv6,
            overlay_mtu,
            schedule: Schedule::new(config, seed),
            paths: BTreeMap::new(),
            outstanding: VecDeque::new(),
            next_seq,
            limiter: ReplyLimiter::default(),
            counters: Counters::default(),
            changes: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Follows the keyring behind `sealing` (rebuilt only when it was reloaded).
    pub fn refresh_keys(&mut self, sealing: &weft_proto::envelope::Sealing) {
        self.keys.refresh(sealing);
    }

    /// The overlay MTU changed (the underlay's did).
    pub fn set_overlay_mtu(&mut self, overlay_mtu: u32, now: Duration) {
        self.overlay_mtu = overlay_mtu;
        for (_, path) in self.paths.values_mut() {
            path.set_overlay_mtu(overlay_mtu, now);
        }
    }

    /// The peers to probe are exactly `targets` from now on. A peer whose generation or MAC
    /// changed starts over and is probed at once; a gone one is forgotten.
    pub fn set_targets(&mut self, targets: &[Target], now: Duration) {
        let mut next = BTreeMap::new();
        for t in targets {
            let name = t.expected.name.clone();
            let entry = match self.paths.remove(&name) {
                Some((_, mut path)) => {
                    if path.update_expected(t.expected.clone(), now) {
                        self.schedule.expedite(&name, now);
                    }
                    (t.addr, path)
                }
                None => (t.addr, Path::new(t.expected.clone(), self.overlay_mtu, now)),
            };
            next.insert(name, entry);
        }
        self.paths = next;
        self.schedule.set_peers(self.paths.keys(), now);
        // A restarted peer was expedited before set_peers knew it only if it was known already.
        for (name, (_, path)) in &self.paths {
            if let Some(at) = path.retry_at() {
                self.schedule.expedite(name, at);
            }
        }
        self.collect_changes();
    }

    /// Times out what is due and returns the requests to send now (at most one round: the
    /// budget spaces them, [`Prober::next_wake`] says when to call again).
    pub fn poll(&mut self, now: Duration) -> Vec<Outgoing> {
        for (name, (_, path)) in &mut self.paths {
            path.tick(now);
            if let Some(at) = path.retry_at() {
                self.schedule.expedite(name, at);
            }
        }
        while self
            .outstanding
            .front()
            .is_some_and(|(_, _, sent)| now.saturating_sub(*sent) > 2 * PROBE_TIMEOUT)
        {
            self.outstanding.pop_front();
        }
        let mut out = Vec::new();
        if let Some(peer) = self.schedule.poll(now)
            && let Some((addr, path)) = self.paths.get_mut(&peer)
        {
            let round = path.round(now, &mut self.next_seq);
            let to = SocketAddr::new(*addr, probe::PROBE_PORT);
            let timestamp = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
            let small = Probe {
                kind: Kind::Request,
                sender: self.me.sender(),
                seq: round.small,
                timestamp,
                reply_len: 0,
            };
            let mut sends = vec![(small, small.min_len())];
            if let Some((seq, size)) = round.sized
                && let Some(len) = probe::datagram_len(size, self.ipv6)
            {
                let reply_len = u16::try_from(len).unwrap_or(u16::MAX);
                sends.push((
                    Probe {
                        seq,
                        reply_len,
                        ..small
                    },
                    len,
                ));
            }
            for (p, len) in sends {
                if p.encode(len, &self.keys, &mut self.buf).is_ok() {
                    self.counters.sent += 1;
                    self.outstanding.push_back((p.seq, peer.clone(), now));
                    out.push(Outgoing {
                        to,
                        bytes: self.buf.clone(),
                    });
                }
            }
            if let Some(at) = path.retry_at() {
                self.schedule.expedite(&peer, at);
            }
            while self.outstanding.len() > MAX_OUTSTANDING {
                self.outstanding.pop_front();
            }
        }
        self.collect_changes();
        out
    }

    /// When to call [`Prober::poll`] next: a round due or a probe timing out.
    pub fn next_wake(&self) -> Option<Duration> {
        let timeout = self
            .paths
            .values()
            .filter_map(|(_, p)| p.next_timeout())
            .min();
        [self.schedule.next_wake(), timeout]
            .into_iter()
            .flatten()
            .min()
    }

    /// A datagram arrived at `now` from `from`: a request is answered (the reply to send, within
    /// the reply budget), a reply is judged by the path it answers. Anything else is counted and
    /// dropped.
    pub fn on_datagram(
        &mut self,
        now: Duration,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Option<Outgoing> {
        let p = match probe::decode(datagram, &self.keys) {
            Ok(p) => p,
            Err(e) => {
                self.drop_counted(e.reason());
                return None;
            }
        };
        match p.kind {
            Kind::Request => {
                if !self.limiter.allow(now) {
                    self.counters.limited += 1;
                    return None;
                }
                let name_len = self.me.name.len();
                let len = probe::reply_len(datagram.len(), p.reply_len, name_len);
                let reply = p.answer(self.me.sender());
                reply.encode(len, &self.keys, &mut self.buf).ok()?;
                self.counters.replies += 1;
                Some(Outgoing {
                    to: from,
                    bytes: self.buf.clone(),
                })
            }
            Kind::Reply => {
                let Some(i) = self
                    .outstanding
                    .iter()
                    .position(|(seq, _, _)| *seq == p.seq)
                else {
                    self.drop_counted("unexpected");
                    return None;
                };
                let (_, peer, _) = self.outstanding.remove(i)?;
                let (_, path) = self.paths.get_mut(&peer)?;
                if let Some(rtt) = path.on_reply(now, p.seq, &p.sender) {
                    self.counters.rtt_buckets[rtt_bucket(rtt)] += 1;
                    self.counters.rtt_sum += rtt.as_secs_f64();
                }
                self.counters.answered += 1;
                if let Some(at) = path.retry_at() {
                    self.schedule.expedite(&peer, at);
                }
                // Only this path can have changed.
                for change in path.drain_changes() {
                    self.changes.push((peer.clone(), change));
                }
                None
            }
        }
    }

    fn drop_counted(&mut self, reason: &'static str) {
        *self.counters.dropped.entry(reason).or_insert(0) += 1;
    }

    fn collect_changes(&mut self) {
        for (name, (_, path)) in &mut self.paths {
            for change in path.drain_changes() {
                self.changes.push((name.clone(), change));
            }
        }
    }

    /// The verdict changes since the last call, per peer, oldest first.
    pub fn drain_changes(&mut self) -> Vec<(String, Change)> {
        std::mem::take(&mut self.changes)
    }

    /// Every peer's path.
    pub fn states(&self) -> BTreeMap<String, PathState> {
        self.paths
            .iter()
            .map(|(name, (_, path))| (name.clone(), path.state()))
            .collect()
    }

    /// Paths by verdict.
    pub fn counts(&self) -> PathCounts {
        PathCounts::of(self.paths.values().map(|(_, p)| p.verdict()))
    }

    /// What was counted.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The period each peer is probed at now.
    pub fn period(&self) -> Duration {
        self.schedule.period()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Verdict;
    use crate::probe::path::DownReason;

    const S: Duration = Duration::from_secs(1);
    const MTU: u32 = 1450;

    fn me(i: u8) -> Me {
        Me {
            name: format!("node-{i}"),
            generation: 10 + u64::from(i),
            vtep_mac: [2, 0, 0, 0, 0, i],
        }
    }

    fn addr(i: u8) -> IpAddr {
        IpAddr::from([10, 244, i, 0])
    }

    fn target(m: &Me, i: u8) -> Target {
        Target {
            expected: Expected {
                name: m.name.clone(),
                generation: m.generation,
                vtep_mac: Some(m.vtep_mac),
            },
            addr: addr(i),
        }
    }

    /// A wire between probers: which sizes pass each way, and whether it is cut.
    struct Net {
        nodes: Vec<Prober>,
        /// Largest packet (IP header included) passing between any two nodes.
        mtu: u32,
        /// Pairs (a, b) whose datagrams are lost both ways.
        cut: Vec<(usize, usize)>,
    }

    impl Net {
        fn new(n: u8, keys: ProbeKeys) -> Net {
            let mut nodes: Vec<Prober> = (0..n)
                .map(|i| {
                    Prober::new(
                        me(i),
                        keys.clone(),
                        false,
                        MTU,
                        ScheduleConfig::default(),
                        u64::from(i),
                    )
                })
                .collect();
            for (i, p) in nodes.iter_mut().enumerate() {
                let targets: Vec<Target> = (0..n)
                    .filter(|j| usize::from(*j) != i)
                    .map(|j| target(&me(j), j))
                    .collect();
                p.set_targets(&targets, Duration::ZERO);
            }
            Net {
                nodes,
                mtu: MTU,
                cut: Vec::new(),
            }
        }

        fn passes(&self, a: usize, b: usize, len: usize) -> bool {
            let cut = self.cut.contains(&(a, b)) || self.cut.contains(&(b, a));
            !cut && len + probe::IPV4_UDP_OVERHEAD <= self.mtu as usize
        }

        fn index(to: SocketAddr) -> usize {
            match to.ip() {
                IpAddr::V4(v4) => usize::from(v4.octets()[2]),
                IpAddr::V6(_) => unreachable!(),
            }
        }

        /// Runs every node until `until`, delivering datagrams after 1 ms.
        fn run(&mut self, from: Duration, until: Duration) {
            let mut now = from;
            while now < until {
                let mut wire = Vec::new();
                for (i, p) in self.nodes.iter_mut().enumerate() {
                    for o in p.poll(now) {
                        wire.push((i, o));
                    }
                }
                // Requests, then the replies they cause, all within this instant + 1 ms.
                let at = now + Duration::from_millis(1);
                while let Some((i, o)) = wire.pop() {
                    let j = Self::index(o.to);
                    if !self.passes(i, j, o.bytes.len()) {
                        continue;
                    }
                    let src = SocketAddr::new(addr(i as u8), probe::PROBE_PORT);
                    if let Some(reply) = self.nodes[j].on_datagram(at, src, &o.bytes) {
                        wire.push((j, reply));
                    }
                }
                now += Duration::from_millis(50);
            }
        }

        fn verdict(&self, a: usize, b: usize) -> Verdict {
            self.nodes[a].states()[&format!("node-{b}")].verdict.clone()
        }
    }

    #[test]
    fn a_mesh_of_twenty_is_all_ok_then_a_cut_pair_is_down_both_ways_and_heals() {
        let keys = ProbeKeys::from_keyring(&weft_proto::envelope::Keyring::new([7; 32]).unwrap());
        let mut net = Net::new(20, keys);
        net.run(Duration::ZERO, 12 * S);
        for a in 0..20 {
            for b in (0..20).filter(|b| *b != a) {
                assert_eq!(net.verdict(a, b), Verdict::Ok, "{a}→{b}");
            }
            assert!(net.nodes[a].counters().answered >= 19);
            assert_eq!(net.nodes[a].counters().dropped, BTreeMap::new());
        }
        net.cut.push((3, 7));
        net.run(12 * S, 42 * S);
        assert_eq!(net.verdict(3, 7), Verdict::Down(DownReason::NoAnswer));
        assert_eq!(net.verdict(7, 3), Verdict::Down(DownReason::NoAnswer));
        let down: usize = net.nodes.iter().map(|n| n.counts().down as usize).sum();
        assert_eq!(down, 2, "only the cut pair");
        let changes = net.nodes[3].drain_changes();
        assert!(
            changes
                .iter()
                .any(|(peer, c)| peer == "node-7" && matches!(c.to, Verdict::Down(_)))
        );
        net.cut.clear();
        net.run(42 * S, 55 * S);
        assert_eq!(net.verdict(3, 7), Verdict::Ok);
        assert_eq!(net.verdict(7, 3), Verdict::Ok);
    }

    #[test]
    fn a_smaller_path_is_mtu_with_the_size_that_passes_and_recovers() {
        let mut net = Net::new(3, ProbeKeys::insecure());
        net.run(Duration::ZERO, 12 * S);
        assert_eq!(net.verdict(0, 1), Verdict::Ok);
        net.mtu = 1400;
        net.run(12 * S, 60 * S);
        let Verdict::Mtu(m) = net.verdict(0, 1) else {
            panic!("{:?}", net.verdict(0, 1));
        };
        assert!((1380..=1400).contains(&m), "{m}");
        net.mtu = MTU;
        net.run(60 * S, 90 * S);
        assert_eq!(net.verdict(0, 1), Verdict::Ok);
    }

    #[test]
    fn hostile_datagrams_are_counted_and_never_answered() {
        let keys = ProbeKeys::from_keyring(&weft_proto::envelope::Keyring::new([7; 32]).unwrap());
        let mut p = Prober::new(me(0), keys, false, MTU, ScheduleConfig::default(), 1);
        let from: SocketAddr = "10.244.9.0:7949".parse().unwrap();
        assert!(p.on_datagram(S, from, b"short").is_none());
        assert!(p.on_datagram(S, from, &[0u8; 200]).is_none());
        // A request under another key.
        let other = ProbeKeys::from_keyring(&weft_proto::envelope::Keyring::new([8; 32]).unwrap());
        let m = me(5);
        let req = Probe {
            kind: Kind::Request,
            sender: m.sender(),
            seq: 1,
            timestamp: 0,
            reply_len: 0,
        };
        let mut buf = Vec::new();
        req.encode(req.min_len(), &other, &mut buf).unwrap();
        assert!(p.on_datagram(S, from, &buf).is_none());
        // A well-tagged reply to nothing outstanding.
        let keys = ProbeKeys::from_keyring(&weft_proto::envelope::Keyring::new([7; 32]).unwrap());
        let reply = Probe {
            kind: Kind::Reply,
            ..req
        };
        reply.encode(reply.min_len(), &keys, &mut buf).unwrap();
        assert!(p.on_datagram(S, from, &buf).is_none());
        let dropped: u64 = p.counters().dropped.values().sum();
        assert_eq!(dropped, 4, "{:?}", p.counters().dropped);
        assert_eq!(p.counters().dropped.get("unexpected"), Some(&1));
        // A good request is answered, no longer than it, until the reply budget is spent.
        req.encode(req.min_len(), &keys, &mut buf).unwrap();
        let mut answered = 0;
        for _ in 0..1000 {
            if let Some(o) = p.on_datagram(S, from, &buf) {
                assert!(o.bytes.len() <= buf.len() + 2);
                assert_eq!(o.to, from);
                answered += 1;
            }
        }
        assert!((1..=100).contains(&answered), "{answered}");
        assert_eq!(p.counters().limited, 1000 - answered);
    }

    #[test]
    fn a_restarted_peer_starts_over_and_is_probed_at_once() {
        let mut net = Net::new(2, ProbeKeys::insecure());
        net.run(Duration::ZERO, 12 * S);
        net.cut.push((0, 1));
        net.run(12 * S, 40 * S);
        assert!(matches!(net.verdict(0, 1), Verdict::Down(_)));
        // Node 1 comes back with a new generation and MAC.
        let mut m = me(1);
        m.generation += 100;
        m.vtep_mac[0] = 6;
        net.nodes[1] = Prober::new(
            m.clone(),
            ProbeKeys::insecure(),
            false,
            MTU,
            ScheduleConfig::default(),
            9,
        );
        net.nodes[1].set_targets(&[target(&me(0), 0)], 40 * S);
        net.nodes[0].set_targets(&[target(&m, 1)], 40 * S);
        assert_eq!(net.verdict(0, 1), Verdict::Unknown);
        net.cut.clear();
        net.run(40 * S, 41 * S);
        assert_eq!(
            net.verdict(0, 1),
            Verdict::Ok,
            "within a second, not a period"
        );
    }

    /// What one agent sends, measured: a prober with `n` peers, each answered by a prober of
    /// its own, over `secs` simulated seconds after the first period; requests it sends and
    /// replies it gets, in datagrams and in underlay bytes (VXLAN over IPv4: 28 + 50 bytes a
    /// datagram).
    fn measured(n: usize, secs: u64) -> (f64, f64, Duration) {
        let mut agent = Prober::new(
            me(0),
            ProbeKeys::insecure(),
            false,
            MTU,
            ScheduleConfig::default(),
            7,
        );
        let peer = |i: usize| Me {
            name: format!("node-{i:04}"),
            generation: 1,
            vtep_mac: [2, 0, 0, 0, (i >> 8) as u8, i as u8],
        };
        let mut peers: Vec<Prober> = (1..=n)
            .map(|i| {
                Prober::new(
                    peer(i),
                    ProbeKeys::insecure(),
                    false,
                    MTU,
                    ScheduleConfig::default(),
                    i as u64,
                )
            })
            .collect();
        let targets: Vec<Target> = (1..=n)
            .map(|i| {
                let m = peer(i);
                Target {
                    expected: Expected {
                        name: m.name.clone(),
                        generation: 1,
                        vtep_mac: Some(m.vtep_mac),
                    },
                    addr: IpAddr::from([10, (i >> 8) as u8, i as u8, 0]),
                }
            })
            .collect();
        agent.set_targets(&targets, Duration::ZERO);
        let period = agent.period();
        let (from, until) = (period, period + Duration::from_secs(secs));
        let (mut packets, mut bytes) = (0u64, 0u64);
        let mut now = Duration::ZERO;
        let src: SocketAddr = "10.0.0.0:7949".parse().unwrap();
        while now < until {
            for o in agent.poll(now) {
                let IpAddr::V4(a) = o.to.ip() else {
                    unreachable!()
                };
                let i = usize::from(a.octets()[1]) << 8 | usize::from(a.octets()[2]);
                let reply = peers[i - 1].on_datagram(now, src, &o.bytes);
                let mut count = |len: usize| {
                    if now >= from {
                        packets += 1;
                        bytes += (len + 28 + 50) as u64;
                    }
                };
                count(o.bytes.len());
                if let Some(r) = reply {
                    count(r.bytes.len());
                    agent.on_datagram(now + Duration::from_micros(300), o.to, &r.bytes);
                }
            }
            now = agent
                .next_wake()
                .unwrap_or(now + Duration::from_millis(100))
                .max(now + Duration::from_millis(1));
        }
        assert_eq!(agent.counts().ok as usize, n, "every path ok");
        (
            packets as f64 / secs as f64,
            bytes as f64 / secs as f64,
            period,
        )
    }

    /// The cost `schedule::cost` gives (docs/design.md, README "Figures"), measured by running
    /// the prober: one agent's own rounds (its requests and the replies they bring back) are as
    /// many datagrams and bytes as it sends in steady state (its requests and its answers to its
    /// peers' rounds, which are as many).
    #[test]
    fn measured_cost_at_100_and_1000_peers_matches_the_budget() {
        for (n, secs) in [(100usize, 200u64), (1000, 400)] {
            let (pps, bps, period) = measured(n, secs);
            let c = crate::probe::schedule::cost(&ScheduleConfig::default(), n, 9, MTU, 50);
            assert_eq!(period, c.period);
            eprintln!(
                "N = {n}: period {period:?}, measured {pps:.1} packets/s, {bps:.0} B/s (model {:.1}, {:.0})",
                c.packets_per_s, c.bytes_per_s
            );
            assert!(
                (pps / c.packets_per_s - 1.0).abs() < 0.05,
                "{pps} vs {}",
                c.packets_per_s
            );
            assert!(
                (bps / c.bytes_per_s - 1.0).abs() < 0.05,
                "{bps} vs {}",
                c.bytes_per_s
            );
        }
    }
}
