//! The state of this node's data path to one peer, judged from probes: unknown until the first
//! answer, then ok (with its round-trip time), down (with what was observed and since when), or
//! mtu (small probes pass, full-size ones do not; the largest size that passes). Pure: the
//! caller sends the probes a [`Round`] asks for, reports replies and the time, and logs the
//! [`Change`]s; every time is a `Duration` since the agent started.
//!
//! Hysteresis: one lost probe changes nothing; a lost probe is retried after [`RETRY_AFTER`], and
//! the path is down after [`DOWN_AFTER`] small probes in a row went unanswered (and, for a peer
//! never heard yet, not before [`UNKNOWN_GRACE`]: a joining peer programs its routes first). One
//! answer brings it back. A full-size probe rides every [`FULL_EVERY`]th round (every round)
//! while the path is ok; [`MTU_AFTER`] of them lost in a row while small ones pass start the MTU
//! search ([`super::mtu`]), whose steps follow each other at once and wait a few RTTs each
//! ([`SEARCH_TIMEOUT_RTTS`]), so a smaller path is found within seconds of being noticed; in the
//! mtu state the full size is retried every other round, and the first
//! full-size answer restores ok. An answer from another node, or from another VTEP MAC than the
//! peer's record announces, is a misprogrammed path: down at once. A peer whose generation or
//! VTEP MAC changed (a restart) starts over at unknown, so no pair stays down after it is back.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_proto::paths::Reason;
use weft_proto::probe::Sender;

use super::mtu::{MTU_FLOOR, MtuSearch, Step};

/// How long a probe is waited for.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How soon after a lost probe (or during the MTU search, after each verdict) the peer is
/// probed again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Small probes unanswered in a row that make a path down.
pub const DOWN_AFTER: u32 = 3;
/// Full-size probes unanswered in a row, while small ones pass, that start the MTU search.
pub const MTU_AFTER: u32 = 2;
/// While a path is ok, every this many rounds carries a full-size probe (the others only a
/// small one).
pub const FULL_EVERY: u32 = 1;
/// A peer never heard since the path (re)started is not called down before this long.
pub const UNKNOWN_GRACE: Duration = Duration::from_secs(30);

/// Who should answer on the path: the peer as its record announces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Node name.
    pub name: String,
    /// Gossip generation.
    pub generation: u64,
    /// VTEP MAC (vxlan); `None` when the backend has none.
    pub vtep_mac: Option<[u8; 6]>,
}

/// What made a path down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// Small probes go unanswered.
    NoAnswer,
    /// Small probes pass, but not even the MTU floor does.
    FullSizeLost,
    /// Another node answered (its name).
    UnexpectedNode(String),
    /// The peer answered from another VTEP MAC than its record announces (the MAC seen).
    UnexpectedMac([u8; 6]),
}

impl DownReason {
    /// The code the path summary carries.
    pub fn code(&self) -> Reason {
        match self {
            DownReason::NoAnswer => Reason::NoAnswer,
            DownReason::FullSizeLost => Reason::FullSizeLost,
            DownReason::UnexpectedNode(_) => Reason::UnexpectedNode,
            DownReason::UnexpectedMac(_) => Reason::UnexpectedMac,
        }
    }
}

/// The verdict on a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No answer yet (just started, or the peer restarted).
    Unknown,
    /// Small and full-size probes pass.
    Ok,
    /// Broken.
    Down(DownReason),
    /// Small probes pass, full-size ones do not: the largest size that passes.
    Mtu(u32),
}

impl Verdict {
    /// `unknown` | `ok` | `down` | `mtu`: the JSON word and the metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Unknown => "unknown",
            Verdict::Ok => "ok",
            Verdict::Down(_) => "down",
            Verdict::Mtu(_) => "mtu",
        }
    }
}

/// A snapshot of a path, for the route MTU, `weft status` and the path summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathState {
    /// The verdict.
    pub verdict: Verdict,
    /// Since when it holds (for a path down for lack of answers: since the first unanswered
    /// probe).
    pub since: Duration,
    /// The last round-trip time of a small probe.
    pub rtt: Option<Duration>,
    /// The largest size known to pass when it is below the overlay MTU, kept while the path is
    /// down so the route MTU does not flap with an outage.
    pub reduced_mtu: Option<u32>,
}

/// The verdict on a path changed: log it once (`from` → `to`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Before.
    pub from: Verdict,
    /// After.
    pub to: Verdict,
}

impl Change {
    /// Logs it with the fixed field names: a path going down or reduced is a warning, one
    /// coming back is info, a first verdict or a restart's reset is debug.
    pub fn log(&self, node: &str, peer: &str) {
        match (&self.from, &self.to) {
            (_, Verdict::Down(reason)) => {
                tracing::warn!(node = %node, peer = %peer, op = "probe", reason = %describe(reason), "path down")
            }
            (_, Verdict::Mtu(mtu)) => {
                tracing::warn!(node = %node, peer = %peer, op = "probe", mtu = *mtu, "path carries less than the overlay MTU")
            }
            (Verdict::Down(_), Verdict::Ok) => {
                tracing::info!(node = %node, peer = %peer, op = "probe", "path back up")
            }
            (Verdict::Mtu(_), Verdict::Ok) => {
                tracing::info!(node = %node, peer = %peer, op = "probe", "path carries the overlay MTU again")
            }
            (from, to) => {
                tracing::debug!(node = %node, peer = %peer, op = "probe", from = from.as_str(), to = to.as_str(), "path")
            }
        }
    }
}

/// The probes of one round: always a small one, sometimes a sized one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// Sequence number of the small probe (the shortest datagram, a short reply).
    pub small: u64,
    /// Sequence number and packet size (IP header included) of the sized probe, sent with DF
    /// and asking for a reply of the same size.
    pub sized: Option<(u64, u32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outstanding {
    seq: u64,
    sent: Duration,
    size: u32,
    /// How long it is waited for.
    timeout: Duration,
}

impl Outstanding {
    fn expires(&self) -> Duration {
        self.sent + self.timeout
    }
}

/// During the MTU search each size is waited for this many times the path's RTT (small probes
/// pass, so it is known), at least [`SEARCH_TIMEOUT_MIN`] and at most [`PROBE_TIMEOUT`]: the
/// search takes seconds, not minutes, on a LAN.
pub const SEARCH_TIMEOUT_RTTS: u32 = 8;
/// The least a search probe is waited for.
pub const SEARCH_TIMEOUT_MIN: Duration = Duration::from_millis(200);

/// This node's path to one peer.
#[derive(Clone, Debug)]
pub struct Path {
    expected: Expected,
    overlay_mtu: u32,
    floor: u32,
    verdict: Verdict,
    since: Duration,
    rtt: Option<Duration>,
    /// When the first probe since the last (re)start went out.
    first_sent: Option<Duration>,
    answered: bool,
    small_lost: u32,
    /// Send time of the first unanswered small probe of the current streak.
    silent_since: Option<Duration>,
    /// An answer from the wrong node or MAC, until a right one.
    wrong: Option<DownReason>,
    full_checked: bool,
    full_lost: u32,
    reduced_lost: u32,
    rounds_since_full: u32,
    rounds: u64,
    reduced: Option<u32>,
    below_floor: bool,
    search: Option<MtuSearch>,
    small: Option<Outstanding>,
    sized: Option<Outstanding>,
    retry_at: Option<Duration>,
    changes: Vec<Change>,
}

impl Path {
    /// A path to `expected`, whose overlay carries `overlay_mtu`-byte packets, unknown since
    /// `now`.
    pub fn new(expected: Expected, overlay_mtu: u32, now: Duration) -> Path {
        Path {
            expected,
            overlay_mtu,
            floor: MTU_FLOOR,
            verdict: Verdict::Unknown,
            since: now,
            rtt: None,
            first_sent: None,
            answered: false,
            small_lost: 0,
            silent_since: None,
            wrong: None,
            full_checked: false,
            full_lost: 0,
            reduced_lost: 0,
            rounds_since_full: 0,
            rounds: 0,
            reduced: None,
            below_floor: false,
            search: None,
            small: None,
            sized: None,
            retry_at: None,
            changes: Vec::new(),
        }
    }

    /// The snapshot.
    pub fn state(&self) -> PathState {
        PathState {
            verdict: self.verdict.clone(),
            since: self.since,
            rtt: self.rtt,
            reduced_mtu: self.reduced,
        }
    }

    /// The verdict.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Who should answer.
    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// When the peer should be probed again sooner than its period (a retry, the next MTU
    /// search step, a restart), if so: give it to [`super::schedule::Schedule::expedite`].
    pub fn retry_at(&self) -> Option<Duration> {
        self.retry_at
    }

    /// When the oldest outstanding probe times out ([`Path::tick`] then has news).
    pub fn next_timeout(&self) -> Option<Duration> {
        [self.small, self.sized]
            .into_iter()
            .flatten()
            .map(|o| o.expires())
            .min()
    }

    /// The verdict changes since the last call, oldest first.
    pub fn drain_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// The peer's record changed: a new generation or VTEP MAC is a restart, and the path starts
    /// over at unknown (probed again at once: [`Path::retry_at`] is `now`). Returns whether it
    /// did.
    pub fn update_expected(&mut self, expected: Expected, now: Duration) -> bool {
        let restarted = expected.generation != self.expected.generation
            || expected.vtep_mac != self.expected.vtep_mac
            || expected.name != self.expected.name;
        if !restarted {
            return false;
        }
        let overlay_mtu = self.overlay_mtu;
        let changes = std::mem::take(&mut self.changes);
        let old = std::mem::replace(self, Path::new(expected, overlay_mtu, now));
        self.changes = changes;
        self.retry_at = Some(now);
        if old.verdict != Verdict::Unknown {
            self.changes.push(Change {
                from: old.verdict,
                to: Verdict::Unknown,
            });
        }
        true
    }

    /// The overlay MTU changed (the underlay's did): the full size is checked again, and a
    /// reduced MTU at or above the new one no longer counts.
    pub fn set_overlay_mtu(&mut self, overlay_mtu: u32, now: Duration) {
        if overlay_mtu == self.overlay_mtu {
            return;
        }
        self.overlay_mtu = overlay_mtu;
        self.search = None;
        self.sized = None;
        self.full_checked = false;
        self.full_lost = 0;
        self.reduced_lost = 0;
        self.below_floor = false;
        self.reduced = self.reduced.filter(|m| *m < overlay_mtu);
        self.judge(now);
    }

    /// Times out what is due and re-judges the path (the unknown grace is a matter of time).
    pub fn tick(&mut self, now: Duration) {
        self.expire(now);
        self.judge(now);
    }

    /// The probes to send now, with sequence numbers taken from `next_seq`. Call when the
    /// schedule picks this peer.
    pub fn round(&mut self, now: Duration, next_seq: &mut u64) -> Round {
        self.tick(now);
        let mut take = || {
            let s = *next_seq;
            *next_seq = next_seq.wrapping_add(1);
            s
        };
        self.first_sent.get_or_insert(now);
        self.retry_at = None;
        self.rounds += 1;
        let small = take();
        self.small = Some(Outstanding {
            seq: small,
            sent: now,
            size: 0,
            timeout: PROBE_TIMEOUT,
        });
        let size = self.sized_size();
        let timeout = match (&self.search, self.rtt) {
            (Some(_), Some(rtt)) => {
                (rtt * SEARCH_TIMEOUT_RTTS).clamp(SEARCH_TIMEOUT_MIN, PROBE_TIMEOUT)
            }
            _ => PROBE_TIMEOUT,
        };
        self.sized = size.map(|size| Outstanding {
            seq: take(),
            sent: now,
            size,
            timeout,
        });
        if size.is_some_and(|s| s >= self.overlay_mtu) {
            self.rounds_since_full = 0;
        } else {
            self.rounds_since_full += 1;
        }
        Round {
            small,
            sized: self.sized.map(|o| (o.seq, o.size)),
        }
    }

    /// Which size the round's sized probe tests, if it has one.
    fn sized_size(&self) -> Option<u32> {
        if self.small_lost > 0 || self.wrong.is_some() {
            // Small probes do not come back: no point sending big ones after them.
            return None;
        }
        if let Some(search) = &self.search {
            return Some(search.next_size());
        }
        if self.below_floor {
            return Some(if self.rounds.is_multiple_of(2) {
                self.overlay_mtu
            } else {
                self.floor
            });
        }
        if let Some(mtu) = self.reduced {
            return Some(if self.rounds.is_multiple_of(2) {
                self.overlay_mtu
            } else {
                mtu
            });
        }
        let due =
            !self.full_checked || self.full_lost > 0 || self.rounds_since_full + 1 >= FULL_EVERY;
        due.then_some(self.overlay_mtu)
    }

    /// A reply arrived at `now`. Returns the round-trip time when it answered an outstanding
    /// small probe; replies to nothing outstanding (late, duplicated, forged) are ignored.
    pub fn on_reply(&mut self, now: Duration, seq: u64, from: &Sender<'_>) -> Option<Duration> {
        let wrong = self.check_sender(from);
        let mut rtt = None;
        if let Some(o) = self.small.filter(|o| o.seq == seq) {
            self.small = None;
            match wrong {
                Some(reason) => self.wrong = Some(reason),
                None => {
                    let sample = now.saturating_sub(o.sent);
                    rtt = Some(sample);
                    self.rtt = Some(sample);
                    self.answered = true;
                    self.small_lost = 0;
                    self.silent_since = None;
                    self.wrong = None;
                }
            }
        } else if let Some(o) = self.sized.filter(|o| o.seq == seq) {
            self.sized = None;
            match wrong {
                Some(reason) => self.wrong = Some(reason),
                None => self.size_passed(o.size, now),
            }
        } else {
            return None;
        }
        self.judge(now);
        rtt
    }

    fn check_sender(&self, from: &Sender<'_>) -> Option<DownReason> {
        if from.node_name != self.expected.name {
            return Some(DownReason::UnexpectedNode(from.node_name.to_owned()));
        }
        match self.expected.vtep_mac {
            Some(mac) if mac != from.vtep_mac => Some(DownReason::UnexpectedMac(from.vtep_mac)),
            _ => None,
        }
    }

    fn size_passed(&mut self, size: u32, now: Duration) {
        if let Some(search) = &mut self.search {
            match search.on_answer(size) {
                Step::Found(mtu) => self.found(mtu),
                Step::BelowFloor => self.below(),
                // The next size at once (the schedule's budget still spaces rounds).
                Step::Continue => self.retry_at = Some(now),
            }
            return;
        }
        if size >= self.overlay_mtu {
            self.full_checked = true;
            self.full_lost = 0;
            self.reduced = None;
            self.below_floor = false;
        } else if self.reduced == Some(size) {
            self.reduced_lost = 0;
        } else if self.below_floor && size == self.floor {
            // The floor passes again: search upward from it (still down until found).
            self.search = Some(MtuSearch::above(self.floor, size, self.overlay_mtu));
            self.retry_at = Some(now + RETRY_AFTER);
        }
    }

    fn size_lost(&mut self, size: u32, now: Duration) {
        if let Some(search) = &mut self.search {
            match search.on_loss(size) {
                Step::Found(mtu) => self.found(mtu),
                Step::BelowFloor => self.below(),
                Step::Continue => self.retry_at = Some(now),
            }
            return;
        }
        if size >= self.overlay_mtu {
            if self.reduced.is_some() || self.below_floor {
                return; // expected: the full size is only re-checked
            }
            self.full_lost += 1;
            if self.full_lost >= MTU_AFTER {
                self.search = Some(MtuSearch::new(self.floor, self.overlay_mtu));
            }
            self.retry_at = Some(now + RETRY_AFTER);
        } else if self.reduced == Some(size) {
            self.reduced_lost += 1;
            if self.reduced_lost >= MTU_AFTER {
                // Even the reduced size stopped passing: search below it.
                self.reduced_lost = 0;
                self.search = Some(MtuSearch::new(self.floor, size));
            }
            self.retry_at = Some(now + RETRY_AFTER);
        }
    }

    fn found(&mut self, mtu: u32) {
        self.search = None;
        self.full_lost = 0;
        self.reduced_lost = 0;
        self.below_floor = false;
        self.reduced = (mtu < self.overlay_mtu).then_some(mtu);
    }

    fn below(&mut self) {
        self.search = None;
        self.full_lost = 0;
        self.reduced = None;
        self.below_floor = true;
    }

    fn expire(&mut self, now: Duration) {
        if let Some(o) = self.small.filter(|o| o.expires() <= now) {
            self.small = None;
            self.small_lost += 1;
            self.silent_since.get_or_insert(o.sent);
            if self.small_lost < DOWN_AFTER {
                self.retry_at = Some(now + RETRY_AFTER);
            }
        }
        if let Some(o) = self.sized.filter(|o| o.expires() <= now) {
            self.sized = None;
            // Only a size lost while small probes pass (and the right node answers) says
            // anything about the size.
            if self.small.is_none() && self.small_lost == 0 && self.wrong.is_none() {
                self.size_lost(o.size, now);
            }
        }
    }

    /// The verdict the facts give; records a change.
    fn judge(&mut self, now: Duration) {
        let silent_long_enough = self.answered
            || self
                .first_sent
                .is_some_and(|t| now.saturating_sub(t) >= UNKNOWN_GRACE);
        let verdict = if let Some(reason) = &self.wrong {
            Verdict::Down(reason.clone())
        } else if self.small_lost >= DOWN_AFTER && silent_long_enough {
            Verdict::Down(DownReason::NoAnswer)
        } else if !self.answered {
            Verdict::Unknown
        } else if self.below_floor {
            Verdict::Down(DownReason::FullSizeLost)
        } else if let Some(mtu) = self.reduced {
            Verdict::Mtu(mtu)
        } else {
            Verdict::Ok
        };
        if verdict == self.verdict {
            return;
        }
        self.since = match (&verdict, self.silent_since) {
            (Verdict::Down(DownReason::NoAnswer), Some(t)) => t,
            _ => now,
        };
        let from = std::mem::replace(&mut self.verdict, verdict.clone());
        self.changes.push(Change { from, to: verdict });
    }
}

/// A short phrase for a down reason (status, logs).
pub fn describe(reason: &DownReason) -> String {
    match reason {
        DownReason::NoAnswer => "no answer".into(),
        DownReason::FullSizeLost => format!("small passes, not even {MTU_FLOOR} bytes"),
        DownReason::UnexpectedNode(name) => format!("answered by node {name}"),
        DownReason::UnexpectedMac(mac) => format!("answered from VTEP MAC {}", MacDisplay(mac)),
    }
}

struct MacDisplay<'a>(&'a [u8; 6]);

impl fmt::Display for MacDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A round-trip time as `weft status` shows it: `0.42ms`, `3.1ms`, `120ms`.
pub fn format_rtt(rtt: Duration) -> String {
    let ms = rtt.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.2}ms")
    } else if ms < 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

/// One peer's path in `/v1/status` (`path: {state, rtt_ms, mtu, since, reason}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathReport {
    /// `unknown` | `ok` | `down` | `mtu`.
    pub state: String,
    /// Last small-probe round trip, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// `mtu`: the largest packet that passes.
    pub mtu: Option<u32>,
    /// Since when (Unix milliseconds).
    pub since: u64,
    /// What was observed (`down`, `mtu`).
    pub reason: Option<String>,
}

impl PathState {
    /// The PATH column of `weft status`: `ok 0.42ms`, `down (no answer for 32s)`, `mtu 1400`,
    /// `unknown`.
    pub fn column(&self, now: Duration) -> String {
        match &self.verdict {
            Verdict::Unknown => "unknown".into(),
            Verdict::Ok => match self.rtt {
                Some(rtt) => format!("ok {}", format_rtt(rtt)),
                None => "ok".into(),
            },
            Verdict::Down(reason) => format!("down ({})", self.reason_text(reason, now)),
            Verdict::Mtu(mtu) => format!("mtu {mtu}"),
        }
    }

    fn reason_text(&self, reason: &DownReason, now: Duration) -> String {
        match reason {
            DownReason::NoAnswer => {
                format!(
                    "no answer for {}s",
                    now.saturating_sub(self.since).as_secs()
                )
            }
            other => describe(other),
        }
    }

    /// The JSON of this path; `start_unix_ms` is the wall clock at the agent's start (times
    /// here count from it).
    pub fn report(&self, start_unix_ms: u64) -> PathReport {
        PathReport {
            state: self.verdict.as_str().into(),
            rtt_ms: self.rtt.map(|r| r.as_secs_f64() * 1000.0),
            mtu: match self.verdict {
                Verdict::Mtu(mtu) => Some(mtu),
                _ => None,
            },
            since: unix_ms(start_unix_ms, self.since),
            // The age of "no answer" is the reader's to add (from `since`): a report read
            // later than it was made would show a stale one.
            reason: match &self.verdict {
                Verdict::Down(reason) => Some(describe(reason)),
                Verdict::Mtu(_) => Some("small passes, full-size does not".into()),
                _ => None,
            },
        }
    }
}

/// Wall-clock Unix milliseconds of `at` (a time since the start), given the start's.
pub fn unix_ms(start_unix_ms: u64, at: Duration) -> u64 {
    start_unix_ms.saturating_add(u64::try_from(at.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);
    const MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x04, 0x00];
    const OVERLAY: u32 = 1450;

    fn expected(generation: u64) -> Expected {
        Expected {
            name: "node-2".into(),
            generation,
            vtep_mac: Some(MAC),
        }
    }

    fn peer(generation: u64) -> Sender<'static> {
        Sender {
            node_name: "node-2",
            generation,
            vtep_mac: MAC,
        }
    }

    /// A path between two nodes with a simulated network: `limit` is the largest packet that
    /// passes (0: nothing passes).
    struct Net {
        path: Path,
        seq: u64,
        limit: u32,
        /// Packet size of the small probe.
        small_size: u32,
        log: Vec<Change>,
    }

    impl Net {
        fn new() -> Net {
            Net {
                path: Path::new(expected(1), OVERLAY, Duration::ZERO),
                seq: 100,
                limit: OVERLAY,
                small_size: 100,
                log: Vec::new(),
            }
        }

        /// One round at `now`: the answers that pass come back after 1 ms; then time runs to
        /// the timeout. Returns the round.
        fn round(&mut self, now: Duration) -> Round {
            let r = self.path.round(now, &mut self.seq);
            if self.small_size <= self.limit {
                self.path.on_reply(now + MS, r.small, &peer(1));
            }
            if let Some((seq, size)) = r.sized
                && size <= self.limit
            {
                self.path.on_reply(now + MS, seq, &peer(1));
            }
            self.path.tick(now + PROBE_TIMEOUT);
            self.log.extend(self.path.drain_changes());
            r
        }

        /// Rounds every `every` from `from` until `until`, taking retries when asked sooner.
        /// As the schedule does it: every round puts the next regular one `every` later.
        fn run(&mut self, from: Duration, until: Duration, every: Duration) -> Duration {
            let mut now = from;
            while now < until {
                self.round(now);
                now = self.path.retry_at().unwrap_or(now + every).min(now + every);
            }
            now
        }

        fn verdicts(&self) -> Vec<Verdict> {
            self.log.iter().map(|c| c.to.clone()).collect()
        }
    }

    #[test]
    fn ok_then_down_then_ok_with_explicit_times() {
        let mut net = Net::new();
        net.round(Duration::ZERO);
        assert_eq!(net.path.verdict(), &Verdict::Ok);
        assert_eq!(net.path.state().rtt, Some(MS));
        assert_eq!(net.path.state().column(S), "ok 1.0ms");
        // The path breaks at 10 s: the first loss is retried, the third in a row is down.
        net.limit = 0;
        net.round(10 * S);
        assert_eq!(
            net.path.verdict(),
            &Verdict::Ok,
            "one lost probe changes nothing"
        );
        assert_eq!(net.path.retry_at(), Some(12 * S + RETRY_AFTER));
        net.round(13 * S);
        assert_eq!(
            net.path.verdict(),
            &Verdict::Ok,
            "two lost probes change nothing"
        );
        assert_eq!(net.path.retry_at(), Some(15 * S + RETRY_AFTER));
        net.round(16 * S);
        assert_eq!(
            net.path.verdict(),
            &Verdict::Down(DownReason::NoAnswer),
            "down 8 s after the first loss"
        );
        let state = net.path.state();
        assert_eq!(state.since, 10 * S, "since the first unanswered probe");
        assert_eq!(state.column(42 * S), "down (no answer for 32s)");
        assert_eq!(net.path.retry_at(), None, "down: back to the normal period");
        // Further losses change nothing; the first answer brings it back.
        net.round(26 * S);
        net.limit = OVERLAY;
        net.round(36 * S);
        assert_eq!(net.path.verdict(), &Verdict::Ok);
        assert_eq!(net.path.state().since, 36 * S + MS);
        assert_eq!(
            net.verdicts(),
            [
                Verdict::Ok,
                Verdict::Down(DownReason::NoAnswer),
                Verdict::Ok
            ],
            "each change told once"
        );
    }

    #[test]
    fn ok_then_mtu_then_ok_with_explicit_times() {
        let mut net = Net::new();
        net.run(Duration::ZERO, 40 * S, 10 * S);
        assert_eq!(net.path.verdict(), &Verdict::Ok);
        // At 40 s something on the way starts dropping packets over 1400 bytes.
        net.limit = 1400;
        let end = net.run(40 * S, 200 * S, 10 * S);
        assert_eq!(net.path.verdict(), &Verdict::Mtu(1400));
        let state = net.path.state();
        // Noticed at the next round (every round is full-size: 40 s, lost at 42 s), confirmed by
        // a retry (lost at 45 s), then found by the search, each step right after the last (this
        // harness waits the whole timeout every round; search probes really wait a few RTTs).
        assert_eq!(FULL_EVERY, 1);
        assert_eq!(state.since, Duration::from_millis(58_004));
        assert!(state.since <= 40 * S + 20 * S);
        assert_eq!(state.column(end), "mtu 1400");
        assert_eq!(super::super::route_mtu(&state, OVERLAY), Some(1400));
        // The full size keeps being re-checked; when it passes again the path is ok.
        net.limit = OVERLAY;
        net.run(end, end + 30 * S, 10 * S);
        assert_eq!(net.path.verdict(), &Verdict::Ok);
        assert!(net.path.state().since <= end + 20 * S + MS);
        assert_eq!(super::super::route_mtu(&net.path.state(), OVERLAY), None);
        assert_eq!(
            net.verdicts(),
            [Verdict::Ok, Verdict::Mtu(1400), Verdict::Ok],
            "each change told once"
        );
    }

    #[test]
    fn one_lost_full_size_probe_changes_nothing() {
        let mut net = Net::new();
        net.round(Duration::ZERO);
        let mut seq = 1000;
        // A full-size round where only the big probe is lost, then a retry that passes.
        let t = 10 * S;
        let r = net.path.round(t, &mut seq);
        assert_eq!(r.sized.map(|(_, size)| size), Some(OVERLAY));
        net.path.on_reply(t + MS, r.small, &peer(1));
        net.path.tick(t + PROBE_TIMEOUT);
        assert_eq!(net.path.retry_at(), Some(t + PROBE_TIMEOUT + RETRY_AFTER));
        net.round(t + PROBE_TIMEOUT + RETRY_AFTER);
        assert_eq!(net.path.verdict(), &Verdict::Ok);
        assert_eq!(net.verdicts(), [Verdict::Ok]);
    }

    #[test]
    fn a_restarted_peer_starts_over_at_once() {
        let mut net = Net::new();
        net.round(Duration::ZERO);
        net.limit = 0;
        net.run(10 * S, 30 * S, 10 * S);
        assert!(matches!(net.path.verdict(), Verdict::Down(_)));
        // The peer restarts at 60 s (a new generation in its record): the old evidence goes.
        assert!(
            !net.path.update_expected(expected(1), 60 * S),
            "same record"
        );
        assert!(net.path.update_expected(expected(2), 60 * S));
        assert_eq!(net.path.verdict(), &Verdict::Unknown);
        assert_eq!(net.path.retry_at(), Some(60 * S), "probed at once");
        // It answers: ok within the round, not a period later.
        net.limit = OVERLAY;
        net.round(60 * S);
        assert_eq!(net.path.verdict(), &Verdict::Ok);
        assert_eq!(
            net.verdicts(),
            [
                Verdict::Ok,
                Verdict::Down(DownReason::NoAnswer),
                Verdict::Unknown,
                Verdict::Ok
            ]
        );
        // A new VTEP MAC is a restart too.
        let mut e = expected(2);
        e.vtep_mac = Some([0x0a, 0, 0, 0, 0, 1]);
        assert!(net.path.update_expected(e, 70 * S));
    }

    #[test]
    fn a_new_peer_gets_a_grace_before_down() {
        let mut net = Net::new();
        net.limit = 0;
        let end = net.run(Duration::ZERO, 20 * S, 10 * S);
        assert_eq!(net.path.verdict(), &Verdict::Unknown, "still in its grace");
        net.run(end, 40 * S, 10 * S);
        assert_eq!(net.path.verdict(), &Verdict::Down(DownReason::NoAnswer));
        assert_eq!(net.path.state().since, Duration::ZERO);
    }

    #[test]
    fn answers_from_the_wrong_node_or_mac_are_down_at_once() {
        let mut path = Path::new(expected(1), OVERLAY, Duration::ZERO);
        let mut seq = 0;
        let r = path.round(Duration::ZERO, &mut seq);
        let stranger = Sender {
            node_name: "node-9",
            generation: 1,
            vtep_mac: [2; 6],
        };
        assert_eq!(path.on_reply(MS, r.small, &stranger), None);
        assert_eq!(
            path.verdict(),
            &Verdict::Down(DownReason::UnexpectedNode("node-9".into()))
        );
        assert_eq!(path.state().column(S), "down (answered by node node-9)");
        let r = path.round(10 * S, &mut seq);
        assert!(r.sized.is_none());
        let mut wrong_mac = peer(1);
        wrong_mac.vtep_mac = [0x0a, 0, 0, 0, 0, 9];
        path.on_reply(10 * S + MS, r.small, &wrong_mac);
        assert_eq!(
            path.verdict(),
            &Verdict::Down(DownReason::UnexpectedMac([0x0a, 0, 0, 0, 0, 9]))
        );
        assert_eq!(
            path.state().column(11 * S),
            "down (answered from VTEP MAC 0a:00:00:00:00:09)"
        );
        // The right answer heals it; unknown sequences are ignored.
        let r = path.round(20 * S, &mut seq);
        assert_eq!(path.on_reply(20 * S + MS, 424_242, &peer(1)), None);
        assert_eq!(path.on_reply(20 * S + MS, r.small, &peer(1)), Some(MS));
        assert_eq!(path.verdict(), &Verdict::Ok);
        // Without a VTEP MAC (host-gw, udp) the MAC is not judged.
        let mut e = expected(1);
        e.vtep_mac = None;
        let mut path = Path::new(e, OVERLAY, Duration::ZERO);
        let r = path.round(Duration::ZERO, &mut seq);
        path.on_reply(MS, r.small, &wrong_mac);
        assert_eq!(path.verdict(), &Verdict::Ok);
    }

    #[test]
    fn a_path_below_the_floor_is_down_and_recovers() {
        let mut net = Net::new();
        net.round(Duration::ZERO);
        net.limit = 1000;
        let end = net.run(10 * S, 200 * S, 10 * S);
        assert_eq!(net.path.verdict(), &Verdict::Down(DownReason::FullSizeLost));
        assert_eq!(
            net.path.state().column(end),
            "down (small passes, not even 1280 bytes)"
        );
        assert_eq!(super::super::route_mtu(&net.path.state(), OVERLAY), None);
        // The floor passes again: searched upward, found.
        net.limit = 1300;
        net.run(end, end + 120 * S, 10 * S);
        assert_eq!(net.path.verdict(), &Verdict::Mtu(1300));
    }

    #[test]
    fn a_reduced_mtu_outlives_an_outage_and_follows_a_smaller_path() {
        let mut net = Net::new();
        net.limit = 1400;
        let end = net.run(Duration::ZERO, 120 * S, 10 * S);
        assert_eq!(net.path.verdict(), &Verdict::Mtu(1400));
        net.limit = 0;
        let end = net.run(end, end + 40 * S, 10 * S);
        assert!(matches!(net.path.verdict(), Verdict::Down(_)));
        assert_eq!(
            super::super::route_mtu(&net.path.state(), OVERLAY),
            Some(1400),
            "the route MTU does not flap with an outage"
        );
        // Back, but now only 1350 passes: the reduced size fails twice and is searched again.
        net.limit = 1350;
        net.run(end, end + 150 * S, 10 * S);
        assert_eq!(net.path.verdict(), &Verdict::Mtu(1350));
    }

    #[test]
    fn an_overlay_mtu_change_rechecks_the_full_size() {
        let mut net = Net::new();
        net.limit = 1400;
        let end = net.run(Duration::ZERO, 120 * S, 10 * S);
        assert_eq!(net.path.verdict(), &Verdict::Mtu(1400));
        // The underlay shrank: the overlay MTU is now 1400, which passes.
        net.path.set_overlay_mtu(1400, end);
        assert_eq!(net.path.verdict(), &Verdict::Ok);
        let r = net.round(end + 10 * S);
        assert_eq!(r.sized.map(|(_, s)| s), Some(1400));
        assert_eq!(net.path.verdict(), &Verdict::Ok);
    }

    #[test]
    fn reports_carry_the_json_words() {
        let mut net = Net::new();
        net.round(Duration::ZERO);
        let start = 1_700_000_000_000;
        let r = net.path.state().report(start);
        assert_eq!(r.state, "ok");
        assert_eq!(r.rtt_ms, Some(1.0));
        assert_eq!(r.since, start + 1);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({
                "state": "ok", "rtt_ms": 1.0, "mtu": null, "since": start + 1, "reason": null
            })
        );
        net.limit = 1400;
        net.run(10 * S, 150 * S, 10 * S);
        let r = net.path.state().report(start);
        assert_eq!((r.state.as_str(), r.mtu), ("mtu", Some(1400)));
        assert_eq!(
            r.reason.as_deref(),
            Some("small passes, full-size does not")
        );
        assert_eq!(format_rtt(Duration::from_micros(420)), "0.42ms");
        assert_eq!(format_rtt(Duration::from_micros(3140)), "3.1ms");
        assert_eq!(format_rtt(Duration::from_millis(120)), "120ms");
    }
}
