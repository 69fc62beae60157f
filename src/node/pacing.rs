//! When the agent acts, as pure arithmetic on times the driver passes in: the warm-up rule, the
//! spacing of full steps and of news pushes, and when a quiet mesh still needs a step. Times
//! are `Duration`s since the agent started (monotonic), so tests drive it without timers.

use std::time::Duration;

/// Full steps run at least this often although nothing changed.
pub const FULL_STEP_EVERY: Duration = Duration::from_secs(10);
/// Live peers up to which the step and news gaps stay at their base; they grow in proportion
/// above.
pub const STEP_GAP_NODES: usize = 200;
/// The most gossip intervals a slow step spaces the next one out by (above min_step_gap).
pub const SLOW_STEP_GAP_MAX: u32 = 2;
/// Random live peers a news push starts exchanges with (see `Cluster::spread`). With each newly
/// told node doing the same, about 94% of the mesh hears a change within a few round trips
/// (the fraction s with s = 1 - e^(-3s)); the regular gossip rounds reach the rest.
pub const NEWS_FANOUT: usize = 3;

/// The one warm-up rule: a joining node (one with seeds) listens this long before it picks a
/// candidate subnet, and deletes nothing from the data plane until it has heard a live peer for
/// this long, so a restart never drops routes it has not re-learned: three gossip rounds, at
/// least 2 s. A node without seeds (the first of a mesh) has nobody to hear: no warm-up.
pub fn warmup(gossip_interval: Duration, joining: bool) -> Duration {
    if joining {
        (gossip_interval * 3).max(Duration::from_secs(2))
    } else {
        Duration::ZERO
    }
}

/// How many times STEP_GAP_NODES the mesh holds (at least 1): the factor both gaps grow by.
fn mesh_scale(alive: usize) -> u32 {
    (alive / STEP_GAP_NODES).max(1) as u32
}

/// The shortest time between two steps with `alive` live peers: a fifth of the gossip interval up
/// to STEP_GAP_NODES, then growing with the mesh up to one interval (at 1,000 nodes). A step reads
/// every record, so its cost grows with N; spacing steps out keeps their CPU flat as N grows, and
/// costs at most one interval of latency in programming a change (gossip spreads it regardless).
pub fn min_step_gap(gossip_interval: Duration, alive: usize) -> Duration {
    (gossip_interval / 5 * mesh_scale(alive)).min(gossip_interval)
}

/// The shortest time between two news pushes with `alive` live peers: one gossip interval up to
/// STEP_GAP_NODES, then growing with the mesh (5 intervals at 1,000). When a whole fleet starts,
/// every agent has news all the time, and the pushes (3 exchanges each) would more than double
/// the regular rounds' 2; in a large mesh they are budgeted so that the mesh as a whole pushes
/// about as often as 200 agents would.
pub fn min_news_gap(gossip_interval: Duration, alive: usize) -> Duration {
    gossip_interval * mesh_scale(alive)
}

/// The step and news pacing of one agent. The driver tells it what happened (`mesh_changed`,
/// `news`, `stepped`) and asks when to act (`step_now`, `spread_now`, `next_wake`).
#[derive(Clone, Debug)]
pub struct Pacer {
    gossip_interval: Duration,
    /// The mesh changed since the last step.
    dirty: bool,
    /// A key changed here or arrived here since the last push.
    news: bool,
    last_step: Duration,
    /// At least min_step_gap, and ten times as long as the last step took (so that slow steps
    /// take at most a tenth of the time), but never more than [`SLOW_STEP_GAP_MAX`] intervals:
    /// one slow step (a device created on a loaded host) must not leave the node deaf to the
    /// mesh for ten times its length.
    step_gap: Duration,
    last_spread: Option<Duration>,
}

impl Pacer {
    /// A pacer for an agent that starts at time zero and owes a first step.
    pub fn new(gossip_interval: Duration) -> Pacer {
        Pacer {
            gossip_interval,
            dirty: true,
            news: false,
            last_step: Duration::ZERO,
            step_gap: min_step_gap(gossip_interval, 0),
            last_spread: None,
        }
    }

    /// A node came or went, or a key changed somewhere: the next step is owed.
    pub fn mesh_changed(&mut self) {
        self.dirty = true;
    }

    /// A key changed here or arrived here: a step is owed, and a news push.
    pub fn news(&mut self) {
        self.dirty = true;
        self.news = true;
    }

    fn step_at(&self) -> Duration {
        self.last_step + self.step_gap
    }

    fn spread_at(&self, alive: usize) -> Duration {
        self.last_spread
            .map(|t| t + min_news_gap(self.gossip_interval, alive))
            .unwrap_or(self.last_step)
    }

    /// When the driver must wake for pacing alone (besides events and its tick).
    pub fn next_wake(&self, alive: usize) -> Option<Duration> {
        let step = self.dirty.then(|| self.step_at());
        let spread = self.news.then(|| self.spread_at(alive));
        step.into_iter().chain(spread).min()
    }

    /// Whether to push news now; if so it counts as pushed.
    pub fn spread_now(&mut self, now: Duration, alive: usize) -> bool {
        if self.news && now >= self.spread_at(alive) {
            self.news = false;
            self.last_spread = Some(now);
            true
        } else {
            false
        }
    }

    /// Whether to run a full step now: the gap since the last one has passed, and the mesh
    /// changed or something waits on time (`waiting`).
    pub fn step_now(&self, now: Duration, waiting: bool) -> bool {
        now >= self.step_at() && (self.dirty || waiting)
    }

    /// Whether the periodic full step is due (nothing changed, nothing waits).
    pub fn periodic_due(&self, now: Duration, reconcile_interval: Duration) -> bool {
        now.saturating_sub(self.last_step) >= reconcile_interval.min(FULL_STEP_EVERY)
    }

    /// A step ran from `started` to `finished`, with `alive` live peers.
    pub fn stepped(&mut self, started: Duration, finished: Duration, alive: usize) {
        self.dirty = false;
        self.last_step = finished;
        let slow =
            (finished.saturating_sub(started) * 10).min(self.gossip_interval * SLOW_STEP_GAP_MAX);
        self.step_gap = min_step_gap(self.gossip_interval, alive).max(slow);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_warmup_rule_for_claims_and_deletions() {
        assert_eq!(warmup(S, false), Duration::ZERO);
        assert_eq!(warmup(S, true), 3 * S);
        // Fast gossip: the floor.
        assert_eq!(warmup(200 * MS, true), 2 * S);
        assert_eq!(warmup(5 * S, true), 15 * S);
    }

    #[test]
    fn steps_space_out_with_the_mesh_up_to_one_interval() {
        assert_eq!(min_step_gap(S, 0), 200 * MS);
        assert_eq!(min_step_gap(S, 199), 200 * MS);
        assert_eq!(min_step_gap(S, 400), 400 * MS);
        assert_eq!(min_step_gap(S, 1000), S);
        assert_eq!(min_step_gap(S, 5000), S);
        assert_eq!(min_news_gap(S, 100), S);
        assert_eq!(min_news_gap(S, 1000), 5 * S);
    }

    #[test]
    fn a_change_is_stepped_once_per_gap_and_news_pushed_once_per_interval() {
        let mut p = Pacer::new(S);
        // The first step is owed one gap after the start.
        assert_eq!(p.next_wake(0), Some(200 * MS));
        assert!(!p.step_now(Duration::ZERO, false));
        assert!(p.step_now(200 * MS, false));
        p.stepped(200 * MS, 205 * MS, 10);
        assert!(!p.step_now(450 * MS, false), "nothing changed");
        assert_eq!(p.next_wake(10), None);
        // A change waits for the gap (200 ms after the last step).
        p.mesh_changed();
        assert_eq!(p.next_wake(10), Some(405 * MS));
        assert!(!p.step_now(300 * MS, false));
        assert!(p.step_now(405 * MS, false));
        p.stepped(405 * MS, 406 * MS, 10);
        // News: pushed at once the first time, then at most once per interval.
        p.news();
        assert!(p.spread_now(500 * MS, 10));
        p.news();
        assert!(!p.spread_now(1000 * MS, 10));
        assert_eq!(p.next_wake(10), Some(606 * MS), "the step comes first");
        assert!(p.spread_now(1500 * MS, 10));
        // 1,000 live peers: pushes 5 intervals apart.
        p.news();
        assert!(!p.spread_now(5 * S, 1000));
        assert!(p.spread_now(6500 * MS, 1000));
    }

    #[test]
    fn a_slow_step_buys_ten_times_its_length_and_waiting_work_steps_without_change() {
        let mut p = Pacer::new(S);
        p.stepped(Duration::ZERO, 100 * MS, 10);
        assert!(!p.step_now(500 * MS, true));
        assert!(
            p.step_now(1100 * MS, true),
            "waiting work runs after the gap"
        );
        assert!(
            !p.step_now(1100 * MS, false),
            "nothing changed, nothing waits"
        );
        assert!(!p.periodic_due(9 * S, Duration::from_secs(60)));
        assert!(p.periodic_due(10100 * MS, Duration::from_secs(60)));
        assert!(p.periodic_due(5100 * MS, 5 * S));
    }

    #[test]
    fn one_very_slow_step_delays_the_next_by_two_intervals_at_most() {
        // A step of a loaded host that took a whole second (200 ms gossip): a change that comes
        // right after is stepped 400 ms later, not 10 s.
        let mut p = Pacer::new(200 * MS);
        p.stepped(S, 2 * S, 3);
        p.mesh_changed();
        assert!(!p.step_now(2 * S + 399 * MS, false));
        assert!(p.step_now(2 * S + 400 * MS, false));
        assert_eq!(p.next_wake(3), Some(2 * S + 400 * MS));
    }
}
