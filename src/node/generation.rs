//! This start's gossip generation (chitchat's `generation_id`): a newer generation of the same
//! name supersedes the old one at once, so it must grow across restarts whatever the clock does.

/// Generations count milliseconds from this base, which lies above the start times in
/// nanoseconds that earlier versions used, so that an upgraded agent's generation is newer.
pub const GENERATION_BASE: u64 = 1 << 62;

/// This start's chitchat generation: the start time in ms, and after the last time the previous
/// run of this node saved its state (a clock stepped back must not make a restart look older).
/// Every digest names every node's generation; in whole milliseconds it compresses far better
/// than in nanoseconds (an idle mesh of 100 in one process: 9.0 → 6.0 KB/s of gossip per agent).
pub fn generation_at(now_ms: u64, last_alive_ms: Option<u64>) -> u64 {
    let after = last_alive_ms.map_or(0, |t| t.saturating_add(1));
    GENERATION_BASE.saturating_add(now_ms.max(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_grow_across_restarts_and_versions() {
        let ns_generation_of_today = 1_764_000_000_000_000_000u64;
        let now = 1_764_000_000_000u64;
        assert!(generation_at(now, None) > ns_generation_of_today);
        assert_eq!(generation_at(now, None), GENERATION_BASE + now);
        // The previous run saved its state after this clock's now: the clock went back.
        assert_eq!(
            generation_at(now, Some(now + 5_000)),
            GENERATION_BASE + now + 5_001
        );
        assert_eq!(generation_at(now, Some(now - 5_000)), GENERATION_BASE + now);
        assert!(generation_at(u64::MAX, Some(u64::MAX)) >= GENERATION_BASE);
    }
}
