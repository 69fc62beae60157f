//! Knowing the overlay works (issue 18), the pure half: each agent probes every peer through the
//! data path it programmed and judges each path ok, down or reduced (mtu). Nothing here sends,
//! receives or reads a clock: the driver feeds times, replies and the peers, sends what a
//! [`path::Round`] asks for (datagrams in [`weft_proto::probe`]'s format, to port
//! [`PROBE_PORT`]) and logs [`path::Change`]s.
//!
//! - [`path`]: one peer's path state machine, with hysteresis and the restart reset;
//! - [`mtu`]: the search for the largest size that passes;
//! - here: the per-peer route MTU decision and the metric shapes (counts per state, RTT buckets).

pub mod mtu;
pub mod path;

use std::time::Duration;

pub use path::{Change, DownReason, Expected, Path, PathReport, PathState, Round, Verdict};
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
}
