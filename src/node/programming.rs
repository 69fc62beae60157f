//! What the data plane was last asked to hold and whether it took: when the next reconcile is
//! due (the desired state changed, the last one failed, or the reconcile interval passed), which
//! peers are programmed and how, and what changed for the operator ("peer routes programmed",
//! "peer routes removed").

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;

use crate::dataplane::State;
use crate::dataplane::paths::Path;

/// A change in which peers are programmed, told once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The peer's routes are programmed now, or by another path than before.
    Programmed {
        /// Its name.
        peer: String,
        /// Its subnet.
        subnet: IpNet,
        /// How it is reached.
        via: Option<Path>,
    },
    /// The peer's routes are gone.
    Removed {
        /// Its name.
        peer: String,
        /// The subnet it had.
        subnet: IpNet,
    },
}

impl Change {
    /// Logs it with the fixed field names.
    pub fn log(&self, node: &str) {
        match self {
            Change::Programmed { peer, subnet, via } => {
                tracing::info!(node = %node, peer = %peer, subnet = %subnet, via = via.map(Path::as_str).unwrap_or("-"), "peer routes programmed")
            }
            Change::Removed { peer, subnet } => {
                tracing::info!(node = %node, peer = %peer, subnet = %subnet, "peer routes removed")
            }
        }
    }
}

/// The memory of reconciles.
#[derive(Clone, Debug, Default)]
pub struct Programming {
    /// The last desired state applied, and whether every operation succeeded.
    applied: Option<(State, bool)>,
    /// When (since start).
    last: Option<Duration>,
    programmed: BTreeMap<String, IpNet>,
    paths: BTreeMap<String, Path>,
}

impl Programming {
    /// Whether to reconcile `desired` now.
    pub fn due(&self, desired: &State, now: Duration, interval: Duration) -> bool {
        match (&self.applied, self.last) {
            (Some((prev, ok)), Some(at)) => {
                prev != desired || !ok || now.saturating_sub(at) >= interval
            }
            _ => true,
        }
    }

    /// Whether the reconcile interval has passed since the last reconcile (a step is owed then,
    /// whenever the last step ran: other steps must not push the periodic reconcile back).
    pub fn interval_passed(&self, now: Duration, interval: Duration) -> bool {
        self.last
            .is_some_and(|at| now.saturating_sub(at) >= interval)
    }

    /// Whether the last reconcile fully succeeded.
    pub fn applied_ok(&self) -> bool {
        self.applied.as_ref().is_some_and(|(_, ok)| *ok)
    }

    /// The last desired state applied.
    pub fn last_applied(&self) -> Option<&State> {
        self.applied.as_ref().map(|(s, _)| s)
    }

    /// The subnet `peer` is programmed with, if it is.
    pub fn programmed(&self, peer: &str) -> Option<IpNet> {
        self.programmed.get(peer).copied()
    }

    /// How many peers are programmed.
    pub fn count(&self) -> usize {
        self.programmed.len()
    }

    /// A reconcile of `desired` ran at `now` (`ok`: every operation succeeded). `targets` are
    /// the peers it programs (name → subnet) and `paths` how; when it failed, the peers
    /// programmed before stay as they were. Returns what changed.
    pub fn record(
        &mut self,
        desired: State,
        ok: bool,
        now: Duration,
        targets: BTreeMap<String, IpNet>,
        paths: BTreeMap<String, Path>,
    ) -> Vec<Change> {
        let now_programmed = if ok { targets } else { self.programmed.clone() };
        let mut changes = Vec::new();
        for (name, subnet) in &now_programmed {
            let via = paths.get(name).copied();
            if self.programmed.get(name) != Some(subnet)
                || (ok && self.paths.get(name) != via.as_ref())
            {
                changes.push(Change::Programmed {
                    peer: name.clone(),
                    subnet: *subnet,
                    via,
                });
            }
        }
        for (name, subnet) in &self.programmed {
            if !now_programmed.contains_key(name) {
                changes.push(Change::Removed {
                    peer: name.clone(),
                    subnet: *subnet,
                });
            }
        }
        if ok {
            self.paths = paths;
        }
        self.programmed = now_programmed;
        self.applied = Some((desired, ok));
        self.last = Some(now);
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn due_on_change_failure_and_interval() {
        let s = Duration::from_secs;
        let mut p = Programming::default();
        let a = State::default();
        assert!(p.due(&a, s(0), s(10)), "never reconciled");
        p.record(a.clone(), true, s(0), BTreeMap::new(), BTreeMap::new());
        assert!(!p.due(&a, s(9), s(10)));
        assert!(p.due(&a, s(10), s(10)), "the interval passed");
        let mut b = a.clone();
        b.masq = Some(crate::dataplane::Masquerade {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet: "10.244.3.0/24".parse().unwrap(),
        });
        assert!(p.due(&b, s(1), s(10)), "desired changed");
        p.record(b.clone(), false, s(1), BTreeMap::new(), BTreeMap::new());
        assert!(p.due(&b, s(2), s(10)), "the last one failed");
        assert!(!p.applied_ok());
    }

    #[test]
    fn programmed_and_removed_are_told_once_and_a_failure_keeps_the_old_view() {
        let s = Duration::from_secs;
        let mut p = Programming::default();
        let targets = BTreeMap::from([("b".to_string(), net("10.244.4.0/24"))]);
        let paths = BTreeMap::from([("b".to_string(), Path::Vxlan)]);
        let changes = p.record(State::default(), true, s(0), targets.clone(), paths.clone());
        assert_eq!(
            changes,
            vec![Change::Programmed {
                peer: "b".into(),
                subnet: net("10.244.4.0/24"),
                via: Some(Path::Vxlan)
            }]
        );
        assert!(
            p.record(State::default(), true, s(1), targets.clone(), paths)
                .is_empty()
        );
        // A failed reconcile: nothing is told removed.
        assert!(
            p.record(
                State::default(),
                false,
                s(2),
                BTreeMap::new(),
                BTreeMap::new()
            )
            .is_empty()
        );
        assert_eq!(p.programmed("b"), Some(net("10.244.4.0/24")));
        // The path changes: told again.
        let direct = BTreeMap::from([("b".to_string(), Path::Direct)]);
        assert_eq!(
            p.record(State::default(), true, s(3), targets, direct)
                .len(),
            1
        );
        assert_eq!(
            p.record(
                State::default(),
                true,
                s(4),
                BTreeMap::new(),
                BTreeMap::new()
            ),
            vec![Change::Removed {
                peer: "b".into(),
                subnet: net("10.244.4.0/24")
            }]
        );
        assert_eq!(p.count(), 0);
    }
}
