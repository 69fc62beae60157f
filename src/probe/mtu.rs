//! The search for the largest packet a path carries, once full-size probes stop passing while
//! small ones still do: a binary search between a floor (1280 bytes, IPv6's minimum, by default)
//! and the size known to fail, judging each size by probes (one answer passes it; two losses in a
//! row fail it, so one lost packet does not halve the result). About log2(ceiling − floor) steps:
//! 8 for a 1450-byte VXLAN overlay. Pure: the path state machine ([`super::path`]) sends the
//! probes and reports what came back.

/// Smallest size the search considers: IPv6's minimum link MTU. A path that cannot carry it is
/// reported down, not given a smaller route MTU.
pub const MTU_FLOOR: u32 = 1280;
/// Losses in a row that fail a size.
pub const LOSSES_TO_FAIL: u32 = 2;

/// Where a search stands after a probe came back or was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Probe [`MtuSearch::next_size`] next.
    Continue,
    /// The largest size that passes (below the size known to fail).
    Found(u32),
    /// Not even the floor passes.
    BelowFloor,
}

/// A binary search for the largest passing size in `[floor, failed)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtuSearch {
    /// The largest size seen to pass (`floor − 1` until the floor passed).
    passed: u32,
    /// The smallest size known to fail.
    failed: u32,
    floor: u32,
    /// Losses in a row of the size under test.
    losses: u32,
}

impl MtuSearch {
    /// A search below `failed` (a size that was seen to fail), down to `floor`.
    pub fn new(floor: u32, failed: u32) -> MtuSearch {
        MtuSearch {
            passed: floor.saturating_sub(1),
            failed: failed.max(floor),
            floor,
            losses: 0,
        }
    }

    /// A search that already knows `passed` passes (a floor re-check that came back).
    pub fn above(floor: u32, passed: u32, failed: u32) -> MtuSearch {
        let mut s = MtuSearch::new(floor, failed);
        s.passed = passed.clamp(s.passed, s.failed.saturating_sub(1));
        s
    }

    /// The size to probe next: halfway between what passed and what failed (the floor first
    /// when nothing passed yet and the range is one step).
    pub fn next_size(&self) -> u32 {
        let mid = self.passed + (self.failed - self.passed).div_ceil(2);
        mid.clamp(self.floor, self.failed.saturating_sub(1).max(self.floor))
    }

    /// What is known: the largest size seen to pass, if any.
    pub fn passed(&self) -> Option<u32> {
        (self.passed >= self.floor).then_some(self.passed)
    }

    /// A probe of `size` was answered.
    pub fn on_answer(&mut self, size: u32) -> Step {
        if size < self.failed {
            self.passed = self.passed.max(size);
        }
        self.losses = 0;
        self.step()
    }

    /// A probe of `size` went unanswered.
    pub fn on_loss(&mut self, size: u32) -> Step {
        if size != self.next_size() {
            // A late verdict on a size no longer under test: nothing learnt.
            return self.step();
        }
        self.losses += 1;
        if self.losses >= LOSSES_TO_FAIL {
            self.losses = 0;
            self.failed = self.failed.min(size);
        }
        self.step()
    }

    fn step(&self) -> Step {
        if self.failed <= self.floor {
            Step::BelowFloor
        } else if self.failed - self.passed <= 1 {
            // `passed` ≥ floor here: the floor is below `failed`, and every size between was
            // judged.
            Step::Found(self.passed)
        } else {
            Step::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a path carrying `limit` bytes, losing the first probe of each
    /// size when `lossy`; returns the outcome and the probes sent.
    fn run(limit: u32, ceiling: u32, lossy: bool) -> (Step, u32) {
        let mut s = MtuSearch::new(MTU_FLOOR, ceiling);
        let mut probes = 0;
        let mut lost_once = std::collections::BTreeSet::new();
        loop {
            let size = s.next_size();
            probes += 1;
            assert!(probes < 64, "search does not end");
            let step = if size <= limit && !(lossy && lost_once.insert(size)) {
                s.on_answer(size)
            } else {
                s.on_loss(size)
            };
            if step != Step::Continue {
                return (step, probes);
            }
        }
    }

    #[test]
    fn finds_the_exact_limit_in_about_log2_steps() {
        for limit in [1280, 1281, 1300, 1400, 1420, 1448, 1449] {
            let (step, probes) = run(limit, 1450, false);
            assert_eq!(step, Step::Found(limit), "limit {limit}");
            // Each failed size costs two probes, each passed one one: 8 sizes at most.
            assert!(probes <= 16, "limit {limit}: {probes} probes");
        }
        let (step, probes) = run(8000, 8950, false);
        assert_eq!(step, Step::Found(8000));
        assert!(probes <= 2 * 13, "{probes}");
    }

    #[test]
    fn one_lost_probe_does_not_fail_a_size() {
        for limit in [1280, 1350, 1449] {
            assert_eq!(
                run(limit, 1450, true).0,
                Step::Found(limit),
                "limit {limit}"
            );
        }
    }

    #[test]
    fn below_the_floor_is_reported() {
        assert_eq!(run(1000, 1450, false).0, Step::BelowFloor);
        // A ceiling at the floor: nothing to search.
        let s = MtuSearch::new(MTU_FLOOR, MTU_FLOOR);
        assert_eq!(s.step(), Step::BelowFloor);
    }

    #[test]
    fn a_known_passing_size_narrows_the_start() {
        let s = MtuSearch::above(MTU_FLOOR, 1280, 1450);
        assert_eq!(s.passed(), Some(1280));
        assert_eq!(s.next_size(), 1365);
        let mut s = MtuSearch::new(MTU_FLOOR, 1450);
        assert_eq!(s.passed(), None);
        assert_eq!(s.on_loss(1300), Step::Continue, "a size not under test");
        assert_eq!(s.next_size(), 1365);
    }
}
