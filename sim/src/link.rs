//! Fault injection for the simulator: a chitchat [`Transport`] wrapper that drops received
//! messages at random (loss), drops messages between the two sides of a partition, optionally
//! delays delivery, and counts each socket's traffic. It wraps any transport, so the same faults
//! apply to chitchat's in-memory `ChannelTransport` and to weft's sealed UDP transport.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};

use weft::hash::SplitMix64;

/// Traffic of one socket, as chitchat counts it (serialized envelope bytes).
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Received messages dropped by the injected loss or partition.
    pub dropped: AtomicU64,
    /// Largest message sent.
    pub max_message: AtomicU64,
    /// Messages sent to this socket and not yet received (see `RECV_QUEUE`).
    queued: AtomicU64,
    /// Whether a socket is open on this address (messages to a closed one are lost anyway and
    /// do not count against a queue).
    open: std::sync::atomic::AtomicBool,
    /// Messages to this socket dropped because its queue was full.
    pub overflow: AtomicU64,
}

/// How many messages may wait for one socket, like a UDP socket's receive buffer (212,992 bytes
/// by default on Linux: a few dozen gossip messages of a few KB): an agent that falls behind
/// loses messages (counted in `overflow`) instead of queueing without bound. (chitchat's
/// in-memory transport queues 100 decoded messages per socket; at N = 1,000 each holds a
/// 1,000-entry digest, and agents that fell behind held gigabytes. A bound of 8 dropped bursts
/// of news at N = 300 that a kernel buffer would have held.)
pub const RECV_QUEUE: u64 = 32;

impl LinkCounters {
    /// Messages dropped because this socket's queue was full.
    pub fn overflowed(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Bytes in plus bytes out.
    pub fn bytes(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed) + self.bytes_out.load(Ordering::Relaxed)
    }
}

/// Faults shared by every socket of a [`FaultyTransport`]; change them while the mesh runs.
#[derive(Debug, Default)]
pub struct Faults {
    /// Probability in [0, 1] that a received message is dropped, in millionths.
    loss_ppm: AtomicU64,
    /// Delay added before a received message is handed to chitchat, in microseconds.
    delay_us: AtomicU64,
    /// Partition side of each address; messages between different sides are dropped.
    sides: RwLock<HashMap<SocketAddr, u8>>,
}

impl Faults {
    pub fn set_loss(&self, loss: f64) {
        let ppm = (loss.clamp(0.0, 1.0) * 1_000_000.0) as u64;
        self.loss_ppm.store(ppm, Ordering::Relaxed);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Puts each address on a side; addresses not named are on side 0.
    pub fn partition(&self, sides: HashMap<SocketAddr, u8>) {
        *self.sides.write().unwrap_or_else(|e| e.into_inner()) = sides;
    }

    /// Removes the partition.
    pub fn heal(&self) {
        self.sides
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn cut(&self, a: SocketAddr, b: SocketAddr) -> bool {
        let sides = self.sides.read().unwrap_or_else(|e| e.into_inner());
        if sides.is_empty() {
            return false;
        }
        sides.get(&a).copied().unwrap_or(0) != sides.get(&b).copied().unwrap_or(0)
    }
}

/// A transport that applies [`Faults`] to every socket it opens and counts their traffic.
#[derive(Clone)]
pub struct FaultyTransport {
    inner: Arc<dyn Transport>,
    faults: Arc<Faults>,
    counters: Arc<Mutex<HashMap<SocketAddr, Arc<LinkCounters>>>>,
    /// Bound each socket's queue to `RECV_QUEUE` (see `bound_queues`).
    bounded: bool,
}

impl FaultyTransport {
    pub fn new(inner: Arc<dyn Transport>, faults: Arc<Faults>) -> FaultyTransport {
        FaultyTransport {
            inner,
            faults,
            counters: Arc::default(),
            bounded: false,
        }
    }

    /// Lets at most `RECV_QUEUE` messages wait for each socket. Only for an in-memory inner
    /// transport whose sockets all come from this one `FaultyTransport` (a kernel socket bounds
    /// its own buffer, and drops there would never be seen leaving the queue).
    pub fn bound_queues(mut self) -> FaultyTransport {
        self.bounded = true;
        self
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// The counters of the socket bound on `addr` (created on first use).
    pub fn counters(&self, addr: SocketAddr) -> Arc<LinkCounters> {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr)
            .or_default()
            .clone()
    }
}

#[async_trait]
impl Transport for FaultyTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inner = self.inner.open(listen_addr).await?;
        let addr = inner.local_addr()?;
        // A socket re-opened on the address starts with an empty queue.
        let counters = self.counters(addr);
        counters.queued.store(0, Ordering::Relaxed);
        counters.open.store(true, Ordering::Relaxed);
        Ok(Box::new(FaultySocket {
            inner,
            addr,
            faults: self.faults.clone(),
            counters: self.counters(addr),
            peers: self.clone(),
            rng: Rng::new(addr),
        }))
    }
}

struct FaultySocket {
    inner: Box<dyn Socket>,
    addr: SocketAddr,
    faults: Arc<Faults>,
    counters: Arc<LinkCounters>,
    /// The transport, for the counters of the socket a message goes to.
    peers: FaultyTransport,
    rng: Rng,
}

#[async_trait]
impl Socket for FaultySocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let theirs = self.peers.bounded.then(|| self.peers.counters(to));
        if let Some(theirs) = theirs.filter(|t| t.open.load(Ordering::Relaxed))
            && theirs.queued.fetch_add(1, Ordering::Relaxed) >= RECV_QUEUE
        {
            theirs.queued.fetch_sub(1, Ordering::Relaxed);
            theirs.overflow.fetch_add(1, Ordering::Relaxed);
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        let outcome = self.inner.send(to, envelope).await?;
        let n = outcome.num_bytes_sent as u64;
        self.counters.messages_out.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_out.fetch_add(n, Ordering::Relaxed);
        self.counters.max_message.fetch_max(n, Ordering::Relaxed);
        Ok(outcome)
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let outcome = self.inner.recv().await?;
            let _ = self
                .counters
                .queued
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| q.checked_sub(1));
            let loss = self.faults.loss_ppm.load(Ordering::Relaxed);
            let lost = loss > 0 && self.rng.below(1_000_000) < loss;
            if lost || self.faults.cut(outcome.from_addr, self.addr) {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.counters.messages_in.fetch_add(1, Ordering::Relaxed);
            self.counters
                .bytes_in
                .fetch_add(outcome.num_bytes_received as u64, Ordering::Relaxed);
            let delay = self.faults.delay_us.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_micros(delay)).await;
            }
            return Ok(outcome);
        }
    }
}

impl Drop for FaultySocket {
    fn drop(&mut self) {
        self.counters.open.store(false, Ordering::Relaxed);
        self.counters.queued.store(0, Ordering::Relaxed);
    }
}

/// splitmix64: enough randomness for dropping messages, seeded per socket.
struct Rng(SplitMix64);

impl Rng {
    fn new(addr: SocketAddr) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut h = nanos;
        for b in addr.to_string().bytes() {
            h = h.rotate_left(5) ^ u64::from(b);
        }
        Rng(SplitMix64::new(h))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n
    }
}

#[cfg(test)]
mod tests {
    use chitchat::transport::ChannelTransport;
    use chitchat::{ChitchatMessage, ProtocolVersion};

    use super::*;

    fn msg() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V1,
            message: ChitchatMessage::BadCluster,
        }
    }

    #[tokio::test]
    async fn a_full_receive_queue_drops_and_counts() {
        let t = FaultyTransport::new(Arc::new(ChannelTransport::default()), Arc::default())
            .bound_queues();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut sa = t.open(a).await.unwrap();
        let mut sb = t.open(b).await.unwrap();
        for _ in 0..RECV_QUEUE + 3 {
            sa.send(b, msg()).await.unwrap();
        }
        assert_eq!(t.counters(b).overflowed(), 3);
        for _ in 0..RECV_QUEUE {
            sb.recv().await.unwrap();
        }
        // Drained: room again.
        sa.send(b, msg()).await.unwrap();
        sb.recv().await.unwrap();
        assert_eq!(t.counters(b).overflowed(), 3);
        assert_eq!(
            t.counters(b).messages_in.load(Ordering::Relaxed),
            RECV_QUEUE + 1
        );
        // Messages to a closed socket are lost, not counted as overflow.
        drop(sb);
        for _ in 0..RECV_QUEUE + 3 {
            sa.send(b, msg()).await.unwrap();
        }
        assert_eq!(t.counters(b).overflowed(), 3);
    }
}
