//! Which peer to probe when. Every peer is probed once per period: [`ScheduleConfig::period`]
//! (10 s) while that stays within the budget, and longer beyond it, so that one agent never
//! starts more than [`ScheduleConfig::budget`] rounds a second (10), however many peers it has:
//! the period is `max(10 s, N / 10 per s)`, 100 s at N = 1,000. Rounds are spaced at least
//! `1 / budget` apart, served most overdue first (round-robin), and each is put back a jittered
//! period later (up to [`ScheduleConfig::jitter_pct`] early, while the budget leaves room; at the
//! budget the pacing spreads the rounds and each peer comes back exactly a period later), so
//! agents started together drift apart. New peers get a random first slot within a period; a
//! retry or a restarted peer is pulled forward ([`Schedule::expedite`]). [`cost`] gives what
//! this costs on the wire.
//!
//! The other side of the budget is [`ReplyLimiter`]: what an agent answers, whoever asks.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_proto::probe::{FIXED_LEN, IPV4_UDP_OVERHEAD, TAG_LEN};

use crate::hash::SplitMix64;

use super::path::FULL_EVERY;

/// How often and how much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Each peer is probed at least this often while the budget allows.
    pub period: Duration,
    /// Most rounds (a small probe and maybe a sized one) started per second.
    pub budget: u32,
    /// A peer's next round comes up to this percentage of the period early.
    pub jitter_pct: u32,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            period: Duration::from_secs(10),
            budget: 10,
            jitter_pct: 10,
        }
    }
}

impl ScheduleConfig {
    /// The period with `peers` peers: the configured one, or what the budget allows.
    pub fn period_for(&self, peers: usize) -> Duration {
        let budget = self.budget.max(1);
        let needed = Duration::from_secs_f64(peers as f64 / f64::from(budget));
        self.period.max(needed)
    }

    /// The least time between two rounds.
    pub fn gap(&self) -> Duration {
        Duration::from_secs(1) / self.budget.max(1)
    }
}

/// The probe schedule of one agent.
#[derive(Clone, Debug)]
pub struct Schedule {
    config: ScheduleConfig,
    rng: SplitMix64,
    /// Peer name → when its next round is due.
    due: BTreeMap<String, Duration>,
    last_round: Option<Duration>,
}

impl Schedule {
    /// An empty schedule; `seed` is the randomness (jitter, first slots).
    pub fn new(config: ScheduleConfig, seed: u64) -> Schedule {
        Schedule {
            config,
            rng: SplitMix64::new(seed),
            due: BTreeMap::new(),
            last_round: None,
        }
    }

    /// The period for the current number of peers.
    pub fn period(&self) -> Duration {
        self.config.period_for(self.due.len())
    }

    /// Peers scheduled.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Whether no peer is scheduled.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The peers to probe are exactly `peers` from now on: new ones get a random first slot
    /// within one period, gone ones are dropped.
    pub fn set_peers<I, S>(&mut self, peers: I, now: Duration)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut next: BTreeMap<String, Duration> = BTreeMap::new();
        let mut new = Vec::new();
        for peer in peers {
            let peer = peer.as_ref();
            match self.due.get(peer) {
                Some(due) => {
                    next.insert(peer.to_owned(), *due);
                }
                None => new.push(peer.to_owned()),
            }
        }
        self.due = next;
        let period = self.config.period_for(self.due.len() + new.len());
        for peer in new {
            let first = now + period.mul_f64(self.unit());
            self.due.insert(peer, first);
        }
    }

    /// Probe `peer` at `at` if that is sooner than planned (a retry, the next MTU search step,
    /// a restarted peer).
    pub fn expedite(&mut self, peer: &str, at: Duration) {
        if let Some(due) = self.due.get_mut(peer) {
            *due = (*due).min(at);
        }
    }

    /// The peer to probe now, if one is due and the budget allows a round; it is put back a
    /// jittered period later.
    pub fn poll(&mut self, now: Duration) -> Option<String> {
        if self
            .last_round
            .is_some_and(|last| now < last + self.config.gap())
        {
            return None;
        }
        let (peer, _) = self
            .due
            .iter()
            .filter(|(_, due)| **due <= now)
            .min_by_key(|(name, due)| (**due, *name))?;
        let peer = peer.clone();
        // Jitter spreads rounds while the budget leaves room; once rounds are paced by the
        // budget they are spread already, and an early slot would only push another peer late.
        let jitter = f64::from(self.config.jitter_pct.min(100)) / 100.0;
        let demand = self.due.len() as f64 / f64::from(self.config.budget.max(1));
        let saturated = demand >= self.config.period.as_secs_f64() * (1.0 - jitter);
        let early = if saturated { 0.0 } else { jitter * self.unit() };
        let next = now + self.period().mul_f64(1.0 - early);
        self.due.insert(peer.clone(), next);
        self.last_round = Some(now);
        Some(peer)
    }

    /// When [`Schedule::poll`] may next return a peer.
    pub fn next_wake(&self) -> Option<Duration> {
        let due = self.due.values().min()?;
        let paced = self.last_round.map(|last| last + self.config.gap());
        Some(paced.map_or(*due, |p| p.max(*due)))
    }
}

/// Replies an agent sends, whoever asks: a token bucket (requests over it go unanswered and are
/// counted), so a member of the cluster cannot make an agent send without bound.
#[derive(Clone, Debug)]
pub struct ReplyLimiter {
    per_second: u32,
    burst: u32,
    tokens: f64,
    at: Duration,
}

/// Replies per second an agent sends at most by default: at N = 1,000 peers each probing at
/// the default budget, an agent is asked about 12.5 times a second on average.
pub const REPLIES_PER_SECOND: u32 = 100;

impl ReplyLimiter {
    /// At most `per_second` replies a second on average, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> ReplyLimiter {
        ReplyLimiter {
            per_second,
            burst,
            tokens: f64::from(burst),
            at: Duration::ZERO,
        }
    }

    /// Whether to answer a request that arrived at `now`.
    pub fn allow(&mut self, now: Duration) -> bool {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens =
            (self.tokens + elapsed * f64::from(self.per_second)).min(f64::from(self.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for ReplyLimiter {
    fn default() -> Self {
        ReplyLimiter::new(REPLIES_PER_SECOND, REPLIES_PER_SECOND / 2)
    }
}

/// What probing costs one agent in steady state, sent (received is the same: every agent
/// probes and answers alike). Counts requests and the replies to peers' requests, on the
/// underlay (encapsulation included); retries and MTU searches, which only broken paths cause,
/// are not included.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    /// Peers.
    pub peers: usize,
    /// How often each peer is probed.
    pub period: Duration,
    /// Rounds started per second.
    pub rounds_per_s: f64,
    /// Datagrams sent per second.
    pub packets_per_s: f64,
    /// Bytes sent per second (underlay IP packets).
    pub bytes_per_s: f64,
}

/// The cost at `peers` peers, for node names of `name_len` bytes, an overlay MTU of
/// `overlay_mtu` and `encap` bytes of encapsulation per packet (50 for VXLAN over IPv4, 0 for
/// host-gw).
pub fn cost(
    config: &ScheduleConfig,
    peers: usize,
    name_len: usize,
    overlay_mtu: u32,
    encap: u32,
) -> Cost {
    let period = config.period_for(peers);
    let rounds_per_s = peers as f64 / period.as_secs_f64();
    let small = (FIXED_LEN + name_len + TAG_LEN + IPV4_UDP_OVERHEAD) as f64 + f64::from(encap);
    let full = f64::from(overlay_mtu + encap);
    let full_share = 1.0 / f64::from(FULL_EVERY);
    // Requests of our own rounds, and as many replies to the peers' rounds.
    let packets_per_s = 2.0 * rounds_per_s * (1.0 + full_share);
    let bytes_per_s = 2.0 * rounds_per_s * (small + full * full_share);
    Cost {
        peers,
        period,
        rounds_per_s,
        packets_per_s,
        bytes_per_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i:04}")).collect()
    }

    /// Runs the schedule from `from` to `until`, event by event; returns every round.
    fn simulate(s: &mut Schedule, from: Duration, until: Duration) -> Vec<(Duration, String)> {
        let mut rounds = Vec::new();
        let mut now = from;
        while let Some(wake) = s.next_wake() {
            now = now.max(wake);
            if now >= until {
                break;
            }
            if let Some(peer) = s.poll(now) {
                rounds.push((now, peer));
            }
        }
        rounds
    }

    /// Most rounds in any one-second window.
    fn max_per_second(rounds: &[(Duration, String)]) -> usize {
        let times: Vec<Duration> = rounds.iter().map(|(t, _)| *t).collect();
        (0..times.len())
            .map(|i| times[i..].iter().take_while(|t| **t < times[i] + S).count())
            .max()
            .unwrap_or(0)
    }

    /// The longest time any peer went without a round in `[from, until)` (counting from
    /// `from` for the first one).
    fn max_gap(rounds: &[(Duration, String)], peers: &[String], from: Duration) -> Duration {
        let mut last: BTreeMap<&str, Duration> = peers.iter().map(|p| (p.as_str(), from)).collect();
        let mut worst = Duration::ZERO;
        for (t, p) in rounds {
            let l = last.get_mut(p.as_str()).expect("only scheduled peers");
            worst = worst.max(*t - *l);
            *l = *t;
        }
        worst
    }

    fn check(n: usize, minutes: u64) -> (usize, usize, Duration, Duration) {
        let config = ScheduleConfig::default();
        let peers = names(n);
        let mut s = Schedule::new(config, 42);
        s.set_peers(&peers, Duration::ZERO);
        let until = S * (minutes as u32 * 60);
        let rounds = simulate(&mut s, Duration::ZERO, until);
        // Every peer was probed, none more often than the budget allows.
        let per_second = max_per_second(&rounds);
        assert!(
            per_second <= config.budget as usize,
            "N = {n}: {per_second} rounds in one second"
        );
        assert!(rounds.len() as u64 <= u64::from(config.budget) * minutes * 60);
        let gap = max_gap(&rounds, &peers, Duration::ZERO);
        // Every peer once a period, give or take the pacing of peers due at the same moment
        // (measured: N = 20: 10.1 s, N = 100: 10.6 s, N = 1,000: 100.8 s).
        let period = s.period();
        assert!(
            gap <= period.mul_f64(1.02) + S,
            "N = {n}: a peer waited {gap:?}"
        );
        (rounds.len(), per_second, gap, period)
    }

    #[test]
    fn n20_every_peer_every_period_well_under_budget() {
        let (rounds, per_second, gap, period) = check(20, 1);
        assert_eq!(period, 10 * S);
        // 20 peers every ≤ 10 s: 120 to 135 rounds a minute (jitter makes some early).
        assert!((120..=135).contains(&rounds), "{rounds}");
        assert!(per_second < 10, "{per_second}");
        assert!(gap <= period + S, "a peer waited {gap:?}");
    }

    #[test]
    fn n1000_period_grows_and_the_budget_holds() {
        let (rounds, per_second, gap, period) = check(1000, 5);
        assert_eq!(period, 100 * S);
        assert_eq!(per_second, 10);
        // Saturated: one round every 100 ms for five minutes.
        assert!((2990..=3000).contains(&rounds), "{rounds}");
        // At the budget every peer comes back after exactly a period, once the random first
        // slots have been served.
        assert!(gap <= period + 2 * S, "a peer waited {gap:?}");
        // Over the first minute alone: 600 rounds, each a different peer.
        let mut s = Schedule::new(ScheduleConfig::default(), 7);
        s.set_peers(names(1000), Duration::ZERO);
        let minute = simulate(&mut s, Duration::ZERO, 60 * S);
        assert!(minute.len() <= 600);
        let distinct: std::collections::BTreeSet<&str> =
            minute.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(
            distinct.len(),
            minute.len(),
            "no peer twice before all had a turn"
        );
    }

    #[test]
    fn n100_sits_at_the_budget_with_the_base_period() {
        let (_, per_second, gap, period) = check(100, 2);
        assert_eq!(period, 10 * S);
        assert!(per_second <= 10);
        assert!(gap <= period + S, "a peer waited {gap:?}");
    }

    #[test]
    fn expedite_pulls_a_peer_forward_and_new_peers_come_within_a_period() {
        let mut s = Schedule::new(ScheduleConfig::default(), 1);
        s.set_peers(["a", "b", "c"], Duration::ZERO);
        let first = simulate(&mut s, Duration::ZERO, 10 * S);
        let seen: std::collections::BTreeSet<&str> =
            first.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(seen.len(), 3, "{first:?}");
        s.expedite("b", 12 * S);
        let next = simulate(&mut s, 12 * S, 12 * S + S);
        assert_eq!(next.first(), Some(&(12 * S, "b".to_string())));
        // A joiner gets its first round within a period; a leaver none.
        s.set_peers(["a", "b", "d"], 13 * S);
        let later = simulate(&mut s, 13 * S, 23 * S);
        assert!(later.iter().any(|(_, p)| p == "d"));
        assert!(later.iter().all(|(_, p)| p != "c"));
        s.expedite("c", Duration::ZERO);
        assert_eq!(s.len(), 3);
        assert!(
            Schedule::new(ScheduleConfig::default(), 0)
                .next_wake()
                .is_none()
        );
    }

    #[test]
    fn replies_are_limited() {
        let mut l = ReplyLimiter::new(10, 5);
        let burst = (0..20).filter(|_| l.allow(Duration::ZERO)).count();
        assert_eq!(burst, 5);
        let mut answered = 0;
        for ms in 0..10_000u64 {
            if l.allow(Duration::from_millis(ms)) {
                answered += 1;
            }
        }
        assert!((95..=105).contains(&answered), "{answered} in 10 s");
    }

    /// The figures docs/design.md gives ("Path probes"): node names of 16 bytes, VXLAN over
    /// IPv4 with a 1500-byte underlay.
    #[test]
    fn cost_at_20_100_1000_peers() {
        let config = ScheduleConfig::default();
        let at = |n| cost(&config, n, 16, 1450, 50);
        let c20 = at(20);
        assert_eq!(c20.period, 10 * S);
        assert_eq!(c20.rounds_per_s, 2.0);
        assert_eq!(c20.packets_per_s, 8.0);
        // Small probe: 42 + 16 + 16 + 28 + 50 = 152 bytes; full size 1500, every round.
        assert_eq!(c20.bytes_per_s, 2.0 * 2.0 * (152.0 + 1500.0));
        let c100 = at(100);
        assert_eq!(
            (c100.period, c100.rounds_per_s, c100.packets_per_s),
            (10 * S, 10.0, 40.0)
        );
        assert_eq!(c100.bytes_per_s, 33_040.0);
        let c1000 = at(1000);
        assert_eq!(
            (c1000.period, c1000.rounds_per_s, c1000.packets_per_s),
            (100 * S, 10.0, 40.0)
        );
        assert_eq!(c1000.bytes_per_s, 33_040.0);
    }
}
