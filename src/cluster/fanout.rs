//! Gossip fan-out: a chitchat [`Transport`] wrapper that lets each gossip round start exchanges
//! with at most `fanout` live peers (chitchat always picks 3).
//!
//! Every chitchat message carries the sender's full digest (a few bytes per known node), so the
//! gossip bytes of an idle mesh grow with N × exchanges per round. chitchat's round sends a SYN to
//! 3 random live peers, then maybe one to a dead node and one to a seed; the fan-out is a constant
//! there. This wrapper passes the first `fanout` SYNs of a round that go to live peers and skips
//! the others (counted). SYNs to nodes that are not live (the dead node and seed of a round, the
//! first contacts of a starting node) always pass: they are how partitions heal and newcomers
//! join. Replies (SYN-ACK, ACK) always pass. [`FanoutGate::grant`] lets a burst of SYNs through,
//! for `weft leave`, which asks every live peer at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::{Chitchat, ChitchatEnvelope, ChitchatMessage};
use tokio::time::Instant;

/// chitchat's own number of live peers per round.
pub const CHITCHAT_FANOUT: usize = 3;

/// Shared between the wrapper's socket and the cluster that owns it.
#[derive(Default)]
pub struct FanoutGate {
    /// chitchat's state, for the live set; attached once chitchat runs (all SYNs pass before).
    chitchat: OnceLock<Arc<tokio::sync::Mutex<Chitchat>>>,
    /// SYNs to live peers that may pass beyond the fan-out (see `grant`).
    credits: AtomicU64,
    /// SYNs not sent because the round had reached its fan-out.
    skipped: AtomicU64,
}

impl FanoutGate {
    /// Where the wrapper reads which peers are live.
    pub fn attach(&self, chitchat: Arc<tokio::sync::Mutex<Chitchat>>) {
        let _ = self.chitchat.set(chitchat);
    }

    /// Lets `n` more SYNs to live peers pass whatever the round's count.
    pub fn grant(&self, n: u64) {
        self.credits.fetch_add(n, Ordering::Relaxed);
    }

    /// SYNs skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    fn take_credit(&self) -> bool {
        self.credits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1))
            .is_ok()
    }

    async fn is_live(&self, addr: SocketAddr) -> bool {
        let Some(chitchat) = self.chitchat.get() else {
            return false;
        };
        let guard = chitchat.lock().await;
        let self_id = guard.self_chitchat_id();
        guard
            .live_nodes()
            .any(|id| id != self_id && id.gossip_advertise_addr == addr)
    }
}

/// Counts the SYNs of one round: those sent closer together than a quarter of the interval.
#[derive(Debug)]
struct Round {
    started: Option<Instant>,
    live_syns: usize,
}

/// Decides, SYN by SYN, which pass. Pure bookkeeping; the caller says whether the peer is live.
#[derive(Debug)]
struct Policy {
    fanout: usize,
    round_window: Duration,
    round: Round,
}

impl Policy {
    fn new(fanout: usize, gossip_interval: Duration) -> Policy {
        Policy {
            fanout,
            round_window: gossip_interval / 4,
            round: Round {
                started: None,
                live_syns: 0,
            },
        }
    }

    /// Whether a SYN sent `now` to a peer (`live` or not) is within the round's fan-out.
    fn admits(&mut self, now: Instant, live: bool) -> bool {
        let same_round = self
            .round
            .started
            .is_some_and(|s| now.duration_since(s) < self.round_window);
        if !same_round {
            self.round = Round {
                started: Some(now),
                live_syns: 0,
            };
        }
        if !live {
            return true;
        }
        self.round.live_syns += 1;
        self.round.live_syns <= self.fanout
    }
}

/// Wraps a socket so that it applies the fan-out (unless the fan-out is chitchat's own).
pub fn wrap(
    inner: Box<dyn Socket>,
    fanout: usize,
    gossip_interval: Duration,
    gate: Arc<FanoutGate>,
) -> Box<dyn Socket> {
    if fanout >= CHITCHAT_FANOUT {
        return inner;
    }
    Box::new(FanoutSocket {
        inner,
        gate,
        policy: Mutex::new(Policy::new(fanout, gossip_interval)),
    })
}

/// A transport that hands out one socket opened beforehand: `spawn_chitchat` wants a
/// `Transport`, and opens exactly one socket with it.
pub struct Opened(Mutex<Option<Box<dyn Socket>>>);

impl Opened {
    pub fn new(socket: Box<dyn Socket>) -> Opened {
        Opened(Mutex::new(Some(socket)))
    }
}

#[async_trait]
impl Transport for Opened {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| anyhow::anyhow!("the gossip socket was already opened"))
    }
}

struct FanoutSocket {
    inner: Box<dyn Socket>,
    gate: Arc<FanoutGate>,
    policy: Mutex<Policy>,
}

#[async_trait]
impl Socket for FanoutSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        // A granted SYN (news, leave) passes without counting against the round.
        if matches!(envelope.message, ChitchatMessage::Syn { .. }) && !self.gate.take_credit() {
            let live = self.gate.is_live(to).await;
            let admitted = self
                .policy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admits(Instant::now(), live);
            if !admitted {
                self.gate.skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
        }
        self.inner.send(to, envelope).await
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.inner.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_passes_fanout_live_syns_and_every_other_syn() {
        let mut p = Policy::new(1, Duration::from_secs(1));
        let t = Instant::now();
        assert!(p.admits(t, true));
        assert!(!p.admits(t + Duration::from_millis(1), true));
        assert!(!p.admits(t + Duration::from_millis(2), true));
        // the round's dead node and seed
        assert!(p.admits(t + Duration::from_millis(3), false));
        assert!(p.admits(t + Duration::from_millis(4), false));
        // next round
        assert!(p.admits(t + Duration::from_secs(1), true));
        assert!(!p.admits(t + Duration::from_millis(1001), true));
    }

    #[test]
    fn fanout_two_passes_two() {
        let mut p = Policy::new(2, Duration::from_millis(200));
        let t = Instant::now();
        assert!(p.admits(t, true));
        assert!(p.admits(t, true));
        assert!(!p.admits(t, true));
        // a lone SYN later (a command, or the next round) starts a new round
        assert!(p.admits(t + Duration::from_millis(60), true));
    }

    #[test]
    fn credits_are_taken_one_by_one() {
        let gate = FanoutGate::default();
        assert!(!gate.take_credit());
        gate.grant(2);
        assert!(gate.take_credit());
        assert!(gate.take_credit());
        assert!(!gate.take_credit());
    }
}
