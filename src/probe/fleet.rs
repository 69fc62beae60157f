//! The fleet's broken paths: this node's path states become its summary (published under
//! `weft/paths`, [`weft_proto::paths`]), and the summaries of every live node, this one's
//! included, become the view `weft status --paths` shows on any host: one row per broken pair
//! (from → to), worst first. Pairs towards a node that is dead in gossip are left out: a dead
//! node is not a broken path.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use weft_proto::paths::{PathEntry, PathState as Listed, PathSummary, Reason};

use super::path::{PathState, Verdict, unix_ms};

/// This node's summary: every path that is down or reduced, with wall-clock `since` (times
/// count from the start, whose Unix milliseconds are `start_unix_ms`). Empty when all is well,
/// whatever the number of peers.
pub fn summary<'a>(
    paths: impl IntoIterator<Item = (&'a str, &'a PathState)>,
    start_unix_ms: u64,
) -> PathSummary {
    PathSummary::new(paths.into_iter().filter_map(|(peer, state)| {
        let (listed, mtu, reason) = match &state.verdict {
            Verdict::Down(reason) => (Listed::Down, 0, reason.code()),
            Verdict::Mtu(mtu) => (Listed::Mtu, *mtu, Reason::FullSizeLost),
            Verdict::Ok | Verdict::Unknown => return None,
        };
        Some(PathEntry {
            peer: peer.to_owned(),
            state: listed,
            mtu,
            since_ms: unix_ms(start_unix_ms, state.since),
            reason,
        })
    }))
}

/// One broken path of the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenPair {
    /// The node that probes.
    pub from: String,
    /// The peer it cannot reach well.
    pub to: String,
    /// Down or reduced.
    pub state: Listed,
    /// `mtu`: the largest packet that passes.
    pub mtu: u32,
    /// Since when (Unix ms, the reporter's clock).
    pub since_ms: u64,
    /// What the reporter observed.
    pub reason: Reason,
    /// Whether the peer reports the path back to `from` broken too.
    pub both_ways: bool,
}

impl BrokenPair {
    /// The PATH words: `down (no answer)`, `mtu 1400`.
    pub fn column(&self) -> String {
        match self.state {
            Listed::Down => format!("down ({})", self.reason.describe()),
            Listed::Mtu => format!("mtu {}", self.mtu),
        }
    }
}

/// What `weft status --paths` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetView {
    /// Every listed broken pair, down before mtu, then by reporter and peer.
    pub pairs: Vec<BrokenPair>,
    /// Broken pairs reporters counted but did not list (their summaries were full).
    pub unlisted: u64,
    /// Live nodes whose summary was read.
    pub reporting: usize,
    /// Listed pairs left out because the peer is dead in gossip.
    pub to_dead: usize,
}

/// The fleet view from the summaries of the live nodes (`(node, summary)`, this node's
/// included); `alive` says whether a peer named in a summary is alive.
pub fn view<'a>(
    summaries: impl IntoIterator<Item = (&'a str, &'a PathSummary)>,
    alive: impl Fn(&str) -> bool,
) -> FleetView {
    let mut v = FleetView::default();
    for (from, summary) in summaries {
        v.reporting += 1;
        v.unlisted += u64::from(summary.more);
        for e in &summary.entries {
            if e.peer == from {
                continue; // a node has no path to itself
            }
            if !alive(&e.peer) {
                v.to_dead += 1;
                continue;
            }
            v.pairs.push(BrokenPair {
                from: from.to_owned(),
                to: e.peer.clone(),
                state: e.state,
                mtu: e.mtu,
                since_ms: e.since_ms,
                reason: e.reason,
                both_ways: false,
            });
        }
    }
    v.pairs
        .sort_by(|a, b| (a.state, &a.from, &a.to).cmp(&(b.state, &b.from, &b.to)));
    v.pairs.dedup_by(|b, a| a.from == b.from && a.to == b.to);
    let keys: std::collections::BTreeSet<(String, String)> = v
        .pairs
        .iter()
        .map(|p| (p.from.clone(), p.to.clone()))
        .collect();
    for p in &mut v.pairs {
        p.both_ways = keys.contains(&(p.to.clone(), p.from.clone()));
    }
    v
}

impl FleetView {
    /// The JSON form (`/v1/status` `paths`), which `weft status --paths` renders.
    pub fn report(&self) -> FleetReport {
        FleetReport {
            reporting: self.reporting,
            unlisted: self.unlisted,
            to_dead: self.to_dead,
            pairs: self
                .pairs
                .iter()
                .map(|p| PairReport {
                    from: p.from.clone(),
                    to: p.to.clone(),
                    state: p.state.as_str().into(),
                    mtu: (p.state == Listed::Mtu).then_some(p.mtu),
                    since: p.since_ms,
                    reason: p.reason.describe(),
                    both_ways: p.both_ways,
                    path: p.column(),
                })
                .collect(),
        }
    }

    /// The table `weft status --paths` prints, ages against `now_unix_ms`.
    pub fn render(&self, now_unix_ms: u64) -> String {
        self.report().render(now_unix_ms)
    }
}

/// The fleet's broken paths as `/v1/status` carries them (`paths`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetReport {
    /// Live nodes whose summary was read (this one included).
    pub reporting: usize,
    /// Broken pairs counted but not listed (full summaries).
    pub unlisted: u64,
    /// Listed pairs left out because the peer is dead in gossip.
    pub to_dead: usize,
    /// One row per broken pair, down before mtu.
    pub pairs: Vec<PairReport>,
}

/// One broken pair in `/v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairReport {
    /// The node that probes.
    pub from: String,
    /// The peer it cannot reach well.
    pub to: String,
    /// `down` | `mtu`.
    pub state: String,
    /// `mtu`: the largest packet that passes.
    pub mtu: Option<u32>,
    /// Since when (Unix ms, on the reporter's clock).
    pub since: u64,
    /// What the reporter observed.
    pub reason: String,
    /// Whether the peer reports the way back broken too.
    pub both_ways: bool,
    /// The PATH words (`down (no answer)`, `mtu 1400`).
    pub path: String,
}

impl FleetReport {
    /// The table `weft status --paths` prints, ages against `now_unix_ms` (a reporter's clock
    /// ahead of this one shows as 0 s ago).
    pub fn render(&self, now_unix_ms: u64) -> String {
        let mut out = String::new();
        if self.pairs.is_empty() && self.unlisted == 0 {
            let _ = writeln!(out, "all paths ok ({} nodes reporting)", self.reporting);
            return out;
        }
        let from_w = self
            .pairs
            .iter()
            .map(|p| p.from.len())
            .max()
            .unwrap_or(0)
            .max(4);
        let to_w = self
            .pairs
            .iter()
            .map(|p| p.to.len())
            .max()
            .unwrap_or(0)
            .max(2);
        let _ = writeln!(
            out,
            "{:from_w$}  {:to_w$}  {:40}  SINCE",
            "FROM", "TO", "PATH"
        );
        for p in &self.pairs {
            let mut path = p.path.clone();
            if p.both_ways {
                path.push_str(", both ways");
            }
            let age = now_unix_ms.saturating_sub(p.since) / 1000;
            let _ = writeln!(
                out,
                "{:from_w$}  {:to_w$}  {path:40}  {age}s ago",
                p.from, p.to
            );
        }
        if self.unlisted > 0 {
            let _ = writeln!(out, "… and {} more broken paths not listed", self.unlisted);
        }
        let _ = writeln!(
            out,
            "{} broken paths from {} nodes reporting",
            self.pairs.len() as u64 + self.unlisted,
            self.reporting
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::path::DownReason;
    use std::time::Duration;

    const START: u64 = 1_700_000_000_000;

    fn state(verdict: Verdict, since_s: u64) -> PathState {
        PathState {
            verdict,
            since: Duration::from_secs(since_s),
            rtt: Some(Duration::from_micros(400)),
            reduced_mtu: None,
        }
    }

    #[test]
    fn the_summary_lists_only_broken_paths_and_is_constant_when_all_is_well() {
        let ok = state(Verdict::Ok, 0);
        for n in [1usize, 20, 1000] {
            let names: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let s = summary(names.iter().map(|p| (p.as_str(), &ok)), START);
            assert!(s.is_empty());
            assert_eq!(s.encode(), "AQAAAA", "N = {n}");
        }
        let unknown = state(Verdict::Unknown, 0);
        let down = state(Verdict::Down(DownReason::NoAnswer), 5);
        let mtu = state(Verdict::Mtu(1400), 9);
        let s = summary(
            [("a", &ok), ("b", &down), ("c", &mtu), ("d", &unknown)],
            START,
        );
        assert_eq!(
            s.entries,
            [
                PathEntry {
                    peer: "b".into(),
                    state: Listed::Down,
                    mtu: 0,
                    since_ms: START + 5000,
                    reason: Reason::NoAnswer,
                },
                PathEntry {
                    peer: "c".into(),
                    state: Listed::Mtu,
                    mtu: 1400,
                    since_ms: START + 9000,
                    reason: Reason::FullSizeLost,
                },
            ]
        );
    }

    #[test]
    fn the_view_merges_every_reporter_and_leaves_out_dead_peers() {
        let down = state(Verdict::Down(DownReason::NoAnswer), 5);
        let mtu = state(Verdict::Mtu(1400), 9);
        let a = summary([("b", &down), ("c", &mtu), ("dead", &down)], START);
        let b = summary([("a", &down)], START);
        let c = PathSummary {
            entries: vec![],
            more: 2,
        };
        let ok = summary(std::iter::empty(), START);
        let v = view([("a", &a), ("b", &b), ("c", &c), ("d", &ok)], |n| {
            n != "dead"
        });
        assert_eq!(v.reporting, 4);
        assert_eq!(v.to_dead, 1);
        assert_eq!(v.unlisted, 2);
        let rows: Vec<(&str, &str, String, bool)> = v
            .pairs
            .iter()
            .map(|p| (p.from.as_str(), p.to.as_str(), p.column(), p.both_ways))
            .collect();
        assert_eq!(
            rows,
            [
                ("a", "b", "down (no answer)".into(), true),
                ("b", "a", "down (no answer)".into(), true),
                ("a", "c", "mtu 1400".into(), false),
            ]
        );
        let table = v.render(START + 65_000);
        assert!(
            table.contains("a     b   down (no answer), both ways"),
            "{table}"
        );
        assert!(table.contains("60s ago"), "{table}");
        assert!(
            table.contains("… and 2 more broken paths not listed"),
            "{table}"
        );
        assert!(
            table.contains("5 broken paths from 4 nodes reporting"),
            "{table}"
        );
        let calm = view([("a", &ok), ("b", &ok)], |_| true);
        assert_eq!(calm.render(START), "all paths ok (2 nodes reporting)\n");
    }

    /// `since` is on the reporter's clock and only displayed: a reporter decades ahead shows
    /// 0 s ago, one decades behind a long age, nothing overflows, and the pairs are the same.
    #[test]
    fn reporters_with_clocks_decades_off_change_only_the_shown_age() {
        let down = state(Verdict::Down(DownReason::NoAnswer), 5);
        const DECADES_MS: u64 = 40 * 365 * 24 * 3600 * 1000;
        let ahead = summary([("b", &down)], START + DECADES_MS);
        let behind = summary([("a", &down)], 0);
        let far = summary([("c", &down)], u64::MAX);
        let v = view([("a", &ahead), ("b", &behind), ("d", &far)], |_| true);
        let rows: Vec<(&str, &str, bool)> = v
            .pairs
            .iter()
            .map(|p| (p.from.as_str(), p.to.as_str(), p.both_ways))
            .collect();
        assert_eq!(
            rows,
            [("a", "b", true), ("b", "a", true), ("d", "c", false)]
        );
        let table = v.render(START);
        assert!(table.contains("0s ago"), "{table}");
        assert!(
            table.contains(&format!("{}s ago", (START - 5000) / 1000)),
            "{table}"
        );
        // Through the wire format too.
        let decoded = PathSummary::decode(&far.encode()).unwrap();
        assert_eq!(decoded, far);
    }
}
