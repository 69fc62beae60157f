//! When the state file is written: at once when what a restart needs changed (the subnet, the
//! claim's stamp, whether it settled), every 30 s otherwise (its `last_alive_ms` is how long a
//! reservation outlives a stop), and on a clean stop.

use std::time::Duration;

use weft_proto::PersistedState;

/// A settled, unchanged claim is saved this often (the reservation counts from the last save).
pub const SAVE_EVERY: Duration = Duration::from_secs(30);

/// Whether `state` must be written now, given the last successful save (`prev`, at `saved_at`).
pub fn save_due(
    prev: Option<(&PersistedState, Duration)>,
    state: &PersistedState,
    now: Duration,
    force: bool,
) -> bool {
    match prev {
        None => true,
        Some((prev, saved_at)) => {
            force
                || prev.subnet != state.subnet
                || prev.ipv6_subnet != state.ipv6_subnet
                || prev.claim_time_ms != state.claim_time_ms
                || prev.active != state.active
                || now.saturating_sub(saved_at) >= SAVE_EVERY
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(subnet: &str, claim_time_ms: u64, active: bool) -> PersistedState {
        PersistedState {
            version: 1,
            node_name: "a".into(),
            network: "10.244.0.0/16".parse().ok(),
            subnet: subnet.parse().ok(),
            claim_time_ms,
            last_alive_ms: 0,
            active,
            ipv6_network: None,
            ipv6_subnet: None,
        }
    }

    #[test]
    fn saved_on_change_every_30_s_and_when_forced() {
        let s = Duration::from_secs;
        let old = state("10.244.3.0/24", 5, false);
        assert!(save_due(None, &old, s(0), false));
        assert!(!save_due(Some((&old, s(0))), &old, s(29), false));
        assert!(save_due(Some((&old, s(0))), &old, s(30), false));
        assert!(save_due(Some((&old, s(0))), &old, s(1), true));
        for changed in [
            state("10.244.4.0/24", 5, false),
            state("10.244.3.0/24", 6, false),
            state("10.244.3.0/24", 5, true),
        ] {
            assert!(
                save_due(Some((&old, s(0))), &changed, s(1), false),
                "{changed:?}"
            );
        }
    }
}
