//! What to tell the operator, once: which peers joined or left, why a peer is not programmed
//! (again only when the reason changes), that the mesh was joined, and — with a backoff — that
//! no seed answers yet; and the node's one-off notices (state file, underlay changes, ready).
//! Pure memory of what was said; the driver logs the [`Notice`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

/// One thing to tell the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A peer is alive in the view that was not before.
    PeerJoined {
        /// Its name.
        peer: String,
        /// The underlay address its record announces.
        underlay: Option<IpAddr>,
        /// Live peers now.
        peers: usize,
    },
    /// A peer stopped being alive (left or unreachable).
    PeerGone {
        /// Its name.
        peer: String,
        /// Live peers now.
        peers: usize,
    },
    /// A peer this node would program but cannot, and why (said once per reason).
    NotProgrammed {
        /// Its name.
        peer: String,
        /// Why (a refusal, or a path that cannot be built).
        reason: String,
    },
    /// The first live peer was heard.
    Joined {
        /// Live peers then.
        peers: usize,
    },
    /// A joining node has heard nobody yet; it says so again after `retry_in`.
    NoSeedYet {
        /// When the next warning comes, if nobody answers.
        retry_in: Duration,
    },
    /// The state file names another node: ignored.
    StateFileForeign {
        /// The name it holds.
        other: String,
    },
    /// The state file could not be read: the node claims anew.
    StateFileUnreadable {
        /// Why.
        error: String,
    },
    /// The underlay interface's address changed; the announced one stays until restart.
    UnderlayAddressChanged {
        /// The announced address.
        old: IpAddr,
        /// The interface's address now.
        new: IpAddr,
    },
    /// The underlay interface was re-created (another index or name): the data plane is
    /// rebuilt on it.
    UnderlayInterfaceChanged {
        /// Its name now.
        iface: String,
        /// Its index now.
        ifindex: u32,
    },
    /// The underlay MTU changed; the overlay MTU follows.
    UnderlayMtuChanged {
        /// Before.
        from: u32,
        /// Now.
        to: u32,
    },
    /// The node is ready (told once per start).
    Ready {
        /// Its active subnet.
        subnet: Option<ipnet::IpNet>,
    },
}

impl Notice {
    /// Logs it with the fixed field names (`node`, `peer`, ...).
    pub fn log(&self, node: &str) {
        match self {
            Notice::PeerJoined {
                peer,
                underlay,
                peers,
            } => {
                tracing::info!(node = %node, peer = %peer, underlay = ?underlay, peers, "peer joined")
            }
            Notice::PeerGone { peer, peers } => {
                tracing::info!(node = %node, peer = %peer, peers, "peer gone (left or unreachable)")
            }
            Notice::NotProgrammed { peer, reason } => {
                tracing::warn!(node = %node, peer = %peer, reason = %reason, "peer not programmed")
            }
            Notice::Joined { peers } => tracing::info!(node = %node, peers, "joined the mesh"),
            Notice::NoSeedYet { retry_in } => {
                tracing::warn!(node = %node, retry_in = ?retry_in, "no seed reachable yet; retrying")
            }
            Notice::StateFileForeign { other } => {
                tracing::warn!(node = %node, other = %other, "state file belongs to another node name; ignored")
            }
            Notice::StateFileUnreadable { error } => {
                tracing::warn!(node = %node, error = %error, "state file unreadable; claiming anew")
            }
            Notice::UnderlayAddressChanged { old, new } => {
                tracing::warn!(node = %node, old = %old, new = %new, "underlay address changed; weft keeps the announced one until restart")
            }
            Notice::UnderlayInterfaceChanged { iface, ifindex } => {
                tracing::info!(node = %node, iface = %iface, ifindex, "underlay interface changed; rebuilding the data plane on it")
            }
            Notice::UnderlayMtuChanged { from, to } => {
                tracing::info!(node = %node, from, to, "underlay MTU changed; overlay MTU follows")
            }
            Notice::Ready { subnet } => tracing::info!(node = %node, subnet = ?subnet, "ready"),
        }
    }
}

/// The seed warning's first backoff and its cap.
const SEED_WARN_FIRST: Duration = Duration::from_secs(1);
const SEED_WARN_MAX: Duration = Duration::from_secs(60);

/// What was already said.
#[derive(Clone, Debug)]
pub struct Notices {
    told: BTreeMap<String, String>,
    alive: BTreeSet<String>,
    joined: bool,
    /// When the seed warning was last given, and the wait it announced before the next one.
    seed_warn: (Option<Duration>, Duration),
}

impl Default for Notices {
    fn default() -> Self {
        Notices {
            told: BTreeMap::new(),
            alive: BTreeSet::new(),
            joined: false,
            seed_warn: (None, SEED_WARN_FIRST),
        }
    }
}

impl Notices {
    /// `peer` cannot be programmed for `reason`: told when it was not told this reason last.
    pub fn not_programmed(&mut self, peer: &str, reason: &str) -> Option<Notice> {
        if self.told.get(peer).map(String::as_str) == Some(reason) {
            return None;
        }
        self.told.insert(peer.to_string(), reason.to_string());
        Some(Notice::NotProgrammed {
            peer: peer.to_string(),
            reason: reason.to_string(),
        })
    }

    /// `peer` is programmed now: a later refusal is told again.
    pub fn programmed(&mut self, peer: &str) {
        self.told.remove(peer);
    }

    /// The live peers now (name → underlay address): who joined, who is gone.
    pub fn alive_peers(&mut self, alive: &BTreeMap<String, Option<IpAddr>>) -> Vec<Notice> {
        let now: BTreeSet<String> = alive.keys().cloned().collect();
        let peers = now.len();
        let mut out: Vec<Notice> = now
            .difference(&self.alive)
            .map(|peer| Notice::PeerJoined {
                peer: peer.clone(),
                underlay: alive.get(peer).copied().flatten(),
                peers,
            })
            .collect();
        out.extend(self.alive.difference(&now).map(|peer| Notice::PeerGone {
            peer: peer.clone(),
            peers,
        }));
        self.alive = now;
        out
    }

    /// Liveness at `now` (since start): the first live peer is told once; a joining node that
    /// has heard nobody for `quiet` (three gossip rounds) warns, then again after 1 s, 2 s, 4 s …
    /// up to once a minute; each warning says when the next comes.
    pub fn liveness(
        &mut self,
        alive: usize,
        heard_before: bool,
        joining: bool,
        now: Duration,
        quiet: Duration,
    ) -> Option<Notice> {
        if alive > 0 {
            if self.joined {
                return None;
            }
            self.joined = true;
            return Some(Notice::Joined { peers: alive });
        }
        if !joining || heard_before || now < quiet {
            return None;
        }
        let (last, backoff) = self.seed_warn;
        if last.is_some_and(|t| now.saturating_sub(t) < backoff) {
            return None;
        }
        let next = if last.is_none() {
            backoff
        } else {
            (backoff * 2).min(SEED_WARN_MAX)
        };
        self.seed_warn = (Some(now), next);
        Some(Notice::NoSeedYet { retry_in: next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_told_once_and_again_when_it_changes_or_after_programming() {
        let mut n = Notices::default();
        assert!(n.not_programmed("b", "not on-link").is_some());
        assert!(n.not_programmed("b", "not on-link").is_none());
        assert!(n.not_programmed("b", "mixed cluster").is_some());
        assert!(n.not_programmed("c", "mixed cluster").is_some());
        n.programmed("b");
        assert!(n.not_programmed("b", "mixed cluster").is_some());
    }

    #[test]
    fn peers_joining_and_leaving_are_told_once() {
        let mut n = Notices::default();
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        let mut alive = BTreeMap::from([("b".to_string(), Some(ip))]);
        assert_eq!(
            n.alive_peers(&alive),
            vec![Notice::PeerJoined {
                peer: "b".into(),
                underlay: Some(ip),
                peers: 1
            }]
        );
        assert!(n.alive_peers(&alive).is_empty());
        alive.clear();
        assert_eq!(
            n.alive_peers(&alive),
            vec![Notice::PeerGone {
                peer: "b".into(),
                peers: 0
            }]
        );
    }

    #[test]
    fn the_seed_warning_backs_off_to_a_minute_and_joining_is_told_once() {
        let mut n = Notices::default();
        let s = Duration::from_secs;
        let quiet = s(3);
        assert_eq!(n.liveness(0, false, true, s(1), quiet), None, "still quiet");
        let mut told = Vec::new();
        for t in 3..200 {
            if let Some(Notice::NoSeedYet { retry_in }) = n.liveness(0, false, true, s(t), quiet) {
                told.push((t, retry_in.as_secs()));
            }
        }
        assert_eq!(
            &told[..7],
            &[
                (3, 1),
                (4, 2),
                (6, 4),
                (10, 8),
                (18, 16),
                (34, 32),
                (66, 60)
            ]
        );
        assert_eq!(told[7], (126, 60));
        // Nobody to wait for without seeds, or once a peer was heard.
        assert_eq!(
            Notices::default().liveness(0, false, false, s(100), quiet),
            None
        );
        assert_eq!(
            Notices::default().liveness(0, true, true, s(100), quiet),
            None
        );
        assert_eq!(
            n.liveness(4, false, true, s(300), quiet),
            Some(Notice::Joined { peers: 4 })
        );
        assert_eq!(n.liveness(5, true, true, s(301), quiet), None);
    }
}
