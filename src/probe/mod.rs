//! Knowing the overlay works: each agent probes every peer through the data path it programmed
//! and judges each path ok, down or reduced (mtu). Nothing here sends, receives or reads a
//! clock: the probe task (`agent/probing.rs`) feeds times and datagrams to a [`prober::Prober`]
//! and sends what it asks for (datagrams in [`weft_proto::probe`]'s format, to port
//! [`PROBE_PORT`]); the driver hands it the peers and takes back each path's state (route MTUs,
//! the PATH column, the [`fleet::summary`] it gossips).
//!
//! - [`prober`]: one agent's probing: the peers, their paths, the requests and the answers;
//! - [`schedule`]: which peer when, within a fixed budget of rounds per second, and the cost;
//! - [`path`]: one peer's path state machine, with hysteresis and the restart reset;
//! - [`mtu`]: the search for the largest size that passes;
//! - [`fleet`]: this node's summary (`weft/paths`) and the fleet view of every broken pair;
//! - here: the per-peer route MTU decision and the metric shapes (counts per state, RTT buckets).

pub mod fleet;
pub mod mtu;
pub mod path;
pub mod prober;
pub mod schedule;

use std::time::Duration;

pub use path::{Change, DownReason, Expected, Path, PathReport, PathState, Round, Verdict};
pub use schedule::{Cost, ReplyLimiter, Schedule, ScheduleConfig};
pub use weft_proto::probe::PROBE_PORT;

/// The MTU to set on the route to a peer, when the path carries less than the overlay MTU:
/// the largest size that passes; `None` (the device's MTU) otherwise. A reduced MTU is kept
/// while the path is down, so an outage does not make the route MTU flap; when the full size
/// passes again the path is ok and the route goes back to the device's MTU.
pub fn route_mtu(state: &PathState, overlay_mtu: u32) -> Option<u32> {
    let mtu = match state.verdict {
        Verdict::Mtu(mtu) => Some(mtu),
        Verdict::Down(_) => state.reduced_mtu,
        Verdict::Ok | Verdict::Unknown => None,
    };
    mtu.filter(|m| *m < overlay_mtu)
}

/// Put the per-peer route MTUs ([`route_mtu`], keyed by the peer's subnet, either family) on
/// the desired routes to those subnets. Only per-peer routes match: the udp backend's single
/// route for the whole overlay is left alone (its tunnel frames every packet itself). Returns
/// how many routes were given an MTU.
pub fn apply_route_mtus(
    state: &mut crate::dataplane::State,
    mtus: &std::collections::BTreeMap<ipnet::IpNet, u32>,
) -> usize {
    if mtus.is_empty() {
        return 0;
    }
    let routes = std::mem::take(&mut state.routes);
    let mut set = 0;
    state.routes = routes
        .into_iter()
        .map(|mut r| {
            if let Some(mtu) = mtus.get(&r.dst) {
                r.mtu = Some(*mtu);
                set += 1;
            }
            r
        })
        .collect();
    set
}

/// Paths by verdict (`weft_paths{state}`): four series, whatever the number of peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathCounts {
    /// Not judged yet.
    pub unknown: u64,
    /// Ok.
    pub ok: u64,
    /// Down.
    pub down: u64,
    /// Reduced MTU.
    pub mtu: u64,
}

impl PathCounts {
    /// Counts `verdicts`.
    pub fn of<'a>(verdicts: impl IntoIterator<Item = &'a Verdict>) -> PathCounts {
        let mut c = PathCounts::default();
        for v in verdicts {
            match v {
                Verdict::Unknown => c.unknown += 1,
                Verdict::Ok => c.ok += 1,
                Verdict::Down(_) => c.down += 1,
                Verdict::Mtu(_) => c.mtu += 1,
            }
        }
        c
    }

    /// `(state label, count)` for each state, zeros included.
    pub fn labelled(&self) -> [(&'static str, u64); 4] {
        [
            ("unknown", self.unknown),
            ("ok", self.ok),
            ("down", self.down),
            ("mtu", self.mtu),
        ]
    }
}

/// Upper bounds, in seconds, of the path RTT histogram (`weft_path_rtt_seconds`): 100 µs (one
/// rack) to 2 s (the probe timeout); a last, unbounded bucket follows.
pub const RTT_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
];

/// The histogram bucket of an RTT sample: the index of the first bound at or above it, or
/// `RTT_BUCKETS.len()` (+Inf).
pub fn rtt_bucket(rtt: Duration) -> usize {
    let secs = rtt.as_secs_f64();
    RTT_BUCKETS
        .iter()
        .position(|bound| secs <= *bound)
        .unwrap_or(RTT_BUCKETS.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_mtus_go_on_the_peer_routes_only() {
        use std::collections::BTreeMap;
        use std::net::{IpAddr, Ipv4Addr};

        use crate::dataplane::{Route, State};
        let route = |dst: &str, gw: [u8; 4], device: Option<&str>| Route {
            dst: dst.parse().unwrap(),
            gateway: IpAddr::V4(Ipv4Addr::from(gw)),
            device: device.map(Into::into),
            onlink: device.is_some(),
            mtu: None,
        };
        let mut s = State::default();
        s.routes
            .insert(route("10.244.1.0/24", [10, 244, 1, 0], Some("weft.1")));
        s.routes
            .insert(route("10.244.2.0/24", [10, 244, 2, 0], Some("weft.1")));
        s.routes
            .insert(route("10.244.0.0/16", [0, 0, 0, 0], Some("weft0")));
        let mtus: BTreeMap<ipnet::IpNet, u32> = [
            ("10.244.2.0/24".parse().unwrap(), 1350),
            // A peer without a route (not programmed) changes nothing.
            ("10.244.9.0/24".parse().unwrap(), 1300),
        ]
        .into();
        assert_eq!(apply_route_mtus(&mut s, &mtus), 1);
        let got: Vec<(String, Option<u32>)> = s
            .routes
            .iter()
            .map(|r| (r.dst.to_string(), r.mtu))
            .collect();
        assert_eq!(
            got,
            [
                ("10.244.0.0/16".to_string(), None),
                ("10.244.1.0/24".to_string(), None),
                ("10.244.2.0/24".to_string(), Some(1350)),
            ]
        );
        assert_eq!(apply_route_mtus(&mut s, &BTreeMap::new()), 0);
    }

    fn state(verdict: Verdict, reduced_mtu: Option<u32>) -> PathState {
        PathState {
            verdict,
            since: Duration::ZERO,
            rtt: None,
            reduced_mtu,
        }
    }

    #[test]
    fn route_mtu_follows_the_verdict() {
        assert_eq!(route_mtu(&state(Verdict::Ok, None), 1450), None);
        assert_eq!(route_mtu(&state(Verdict::Unknown, None), 1450), None);
        assert_eq!(
            route_mtu(&state(Verdict::Mtu(1400), Some(1400)), 1450),
            Some(1400)
        );
        // Kept through an outage, dropped when the overlay MTU itself went down to it.
        assert_eq!(
            route_mtu(
                &state(Verdict::Down(DownReason::NoAnswer), Some(1400)),
                1450
            ),
            Some(1400)
        );
        assert_eq!(
            route_mtu(&state(Verdict::Mtu(1400), Some(1400)), 1400),
            None
        );
        assert_eq!(
            route_mtu(&state(Verdict::Down(DownReason::FullSizeLost), None), 1450),
            None
        );
    }

    #[test]
    fn counts_and_buckets() {
        let verdicts = [
            Verdict::Ok,
            Verdict::Ok,
            Verdict::Mtu(1400),
            Verdict::Down(DownReason::NoAnswer),
            Verdict::Unknown,
        ];
        let c = PathCounts::of(&verdicts);
        assert_eq!(
            c.labelled(),
            [("unknown", 1), ("ok", 2), ("down", 1), ("mtu", 1)]
        );
        assert_eq!(rtt_bucket(Duration::from_micros(50)), 0);
        assert_eq!(rtt_bucket(Duration::from_micros(100)), 0);
        assert_eq!(rtt_bucket(Duration::from_micros(101)), 1);
        assert_eq!(rtt_bucket(Duration::from_millis(30)), 8);
        assert_eq!(rtt_bucket(Duration::from_secs(2)), 13);
        assert_eq!(rtt_bucket(Duration::from_secs(3)), RTT_BUCKETS.len());
    }

    /// The schedule and the paths together, as the driver will run them: `n` peers, a few of
    /// which stop answering at 100 s and come back restarted (new generation) at `back`.
    /// Returns when each dead peer was called down and when it was ok again, the period, and
    /// the most rounds in any second.
    fn fleet_run(
        n: usize,
        dead: &[usize],
        back: Duration,
    ) -> (Vec<(Duration, Duration)>, Duration, usize) {
        use std::collections::BTreeMap;
        use weft_proto::probe::Sender;
        const S: Duration = Duration::from_secs(1);
        let names: Vec<String> = (0..n).map(|i| format!("node-{i:04}")).collect();
        let expected = |i: usize, generation: u64| Expected {
            name: names[i].clone(),
            generation,
            vtep_mac: Some([2, 0, 0, 0, (i >> 8) as u8, i as u8]),
        };
        let mut paths: BTreeMap<String, (usize, Path)> = (0..n)
            .map(|i| {
                (
                    names[i].clone(),
                    (i, Path::new(expected(i, 1), 1450, Duration::ZERO)),
                )
            })
            .collect();
        let mut schedule = Schedule::new(ScheduleConfig::default(), 99);
        schedule.set_peers(&names, Duration::ZERO);
        let mut seq = 0;
        let mut rounds: Vec<Duration> = Vec::new();
        let mut down_at = vec![Duration::MAX; dead.len()];
        let mut up_at = vec![Duration::MAX; dead.len()];
        let mut restarted = false;
        let mut now = Duration::ZERO;
        let until = back + schedule.period() + 10 * S;
        while now < until {
            let timeout = paths.values().filter_map(|(_, p)| p.next_timeout()).min();
            let wake = [schedule.next_wake(), timeout, (!restarted).then_some(back)]
                .into_iter()
                .flatten()
                .min()
                .expect("something to do");
            now = now.max(wake);
            if !restarted && now >= back {
                restarted = true;
                for &i in dead {
                    let (_, path) = paths.get_mut(&names[i]).unwrap();
                    assert!(path.update_expected(expected(i, 2), now));
                    schedule.expedite(&names[i], now);
                }
            }
            for (name, (i, path)) in &mut paths {
                path.tick(now);
                if let Some(k) = dead.iter().position(|d| d == i)
                    && matches!(path.verdict(), Verdict::Down(_))
                {
                    down_at[k] = down_at[k].min(now);
                }
                if let Some(at) = path.retry_at() {
                    schedule.expedite(name, at);
                }
            }
            let Some(peer) = schedule.poll(now) else {
                continue;
            };
            rounds.push(now);
            let (i, path) = paths.get_mut(&peer).unwrap();
            let round = path.round(now, &mut seq);
            let answers = !(dead.contains(i) && now >= 100 * S && !restarted);
            if answers {
                let generation = if dead.contains(i) && restarted { 2 } else { 1 };
                let name = peer.clone();
                let e = expected(*i, generation);
                let from = Sender {
                    node_name: &name,
                    generation,
                    vtep_mac: e.vtep_mac.unwrap(),
                };
                for seq in std::iter::once(round.small).chain(round.sized.map(|(s, _)| s)) {
                    path.on_reply(now + Duration::from_millis(1), seq, &from);
                }
            }
            if let Some(k) = dead.iter().position(|d| d == i)
                && restarted
                && path.verdict() == &Verdict::Ok
            {
                up_at[k] = up_at[k].min(now);
            }
            if let Some(at) = path.retry_at() {
                schedule.expedite(&peer, at);
            }
        }
        // Everything is ok at the end: the restarted peers came back within their first round.
        for (_, path) in paths.values() {
            assert_eq!(path.verdict(), &Verdict::Ok, "{:?}", path.expected().name);
        }
        let per_second = (0..rounds.len())
            .map(|i| {
                rounds[i..]
                    .iter()
                    .take_while(|t| **t < rounds[i] + S)
                    .count()
            })
            .max()
            .unwrap_or(0);
        let times = down_at.into_iter().zip(up_at).collect();
        (times, schedule.period(), per_second)
    }

    #[test]
    fn n20_dead_peers_are_down_within_a_period_and_back_at_once() {
        let (down_at, period, per_second) = fleet_run(20, &[3, 11], Duration::from_secs(200));
        assert_eq!(period, Duration::from_secs(10));
        for (down, up) in down_at {
            // Next round within a period, then two retries 3 s apart and the last timeout.
            let bound = Duration::from_secs(100) + period + Duration::from_secs(9);
            assert!(down <= bound, "{down:?}");
            // Restarted at 200 s: probed at once, ok within the round.
            assert!(up <= Duration::from_millis(200_300), "{up:?}");
        }
        assert!(per_second <= 10);
    }

    #[test]
    fn n1000_dead_peers_are_down_within_a_period_and_the_budget_holds_with_retries() {
        let (down_at, period, per_second) =
            fleet_run(1000, &[0, 500, 999], Duration::from_secs(300));
        assert_eq!(period, Duration::from_secs(100));
        for (down, up) in down_at {
            let bound = Duration::from_secs(100) + period + Duration::from_secs(10);
            assert!(down <= bound, "{down:?}");
            assert!(up <= Duration::from_millis(300_300), "{up:?}");
        }
        assert!(per_second <= 10, "{per_second}");
    }
}
