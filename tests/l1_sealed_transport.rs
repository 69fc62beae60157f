//! Tests of the sealed gossip transport on loopback: chitchat instances over it converge when
//! they share a key, do not when they do not, and bad datagrams are dropped and counted.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{
    ChitchatConfig, ChitchatEnvelope, ChitchatHandle, ChitchatId, ChitchatMessage,
    FailureDetectorConfig, ProtocolVersion, spawn_chitchat,
};
use weft::cluster::transport::{GossipCounters, Keyring, SealedTransport, Sealing};
use weft_proto::envelope::{ANY_RECIPIENT, Sealer, key_id};

const KEY_1: [u8; 32] = [0x11; 32];
const KEY_2: [u8; 32] = [0x22; 32];
const GOSSIP: Duration = Duration::from_millis(50);

fn keyring(keys: &[[u8; 32]]) -> Sealing {
    let mut ring = Keyring::new(keys[0]).unwrap();
    for k in &keys[1..] {
        ring.add(*k).unwrap();
    }
    Sealing::keyring(ring)
}

fn loopback0() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// A transport handing chitchat a socket opened beforehand on port 0, so the test knows the
/// address without racing for a free port.
struct PreOpened(Mutex<Option<Box<dyn Socket>>>);

#[async_trait]
impl Transport for PreOpened {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        self.0
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| anyhow::anyhow!("already opened"))
    }
}

struct Node {
    handle: ChitchatHandle,
    id: ChitchatId,
    addr: SocketAddr,
    counters: Arc<GossipCounters>,
}

async fn open(transport: &SealedTransport) -> (Box<dyn Socket>, SocketAddr) {
    let socket = transport.open(loopback0()).await.unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

async fn start(
    name: &str,
    transport: SealedTransport,
    seeds: &[SocketAddr],
    kv: &[(&str, String)],
) -> Node {
    let counters = Arc::clone(transport.counters());
    let (socket, addr) = open(&transport).await;
    let id = ChitchatId::new(name, 1, addr);
    let config = ChitchatConfig {
        chitchat_id: id.clone(),
        cluster_id: "weft-test".into(),
        gossip_interval: GOSSIP,
        listen_addr: addr,
        seed_nodes: seeds.iter().map(ToString::to_string).collect(),
        failure_detector_config: FailureDetectorConfig {
            initial_interval: GOSSIP,
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: ProtocolVersion::V1,
    };
    let kv = kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let handle = spawn_chitchat(config, kv, &PreOpened(Mutex::new(Some(socket))))
        .await
        .unwrap();
    Node {
        handle,
        id,
        addr,
        counters,
    }
}

/// The value `observer` holds for `key` of `subject`.
async fn seen(observer: &Node, subject: &Node, key: &str) -> Option<String> {
    let chitchat = observer.handle.chitchat();
    let guard = chitchat.lock().await;
    guard
        .node_state(&subject.id)
        .and_then(|s| s.get(key))
        .map(str::to_owned)
}

/// Polls until `a` and `b` see each other's `key` with the expected values.
async fn converged(a: &Node, b: &Node, key: &str, va: &str, vb: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if seen(a, b, key).await.as_deref() == Some(vb)
            && seen(b, a, key).await.as_deref() == Some(va)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn pair(sealing_a: Sealing, sealing_b: Sealing) -> (Node, Node) {
    let a = start(
        "node-a",
        SealedTransport::new(sealing_a, GossipCounters::new()),
        &[],
        &[("k", "from-a".into())],
    )
    .await;
    let b = start(
        "node-b",
        SealedTransport::new(sealing_b, GossipCounters::new()),
        &[a.addr],
        &[("k", "from-b".into())],
    )
    .await;
    (a, b)
}

async fn stop(nodes: [Node; 2]) {
    for n in nodes {
        n.handle.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn same_key_converges() {
    let (a, b) = pair(keyring(&[KEY_1]), keyring(&[KEY_1])).await;
    assert!(converged(&a, &b, "k", "from-a", "from-b", Duration::from_secs(10)).await);
    for n in [&a, &b] {
        let c = n.counters.snapshot();
        assert!(c.datagrams_in > 0 && c.datagrams_out > 0 && c.bytes_in > 0 && c.bytes_out > 0);
        assert_eq!(c.drops(), 0, "{c:?}");
    }
    stop([a, b]).await;
}

#[tokio::test]
async fn insecure_pair_converges() {
    let (a, b) = pair(Sealing::Insecure, Sealing::Insecure).await;
    assert!(converged(&a, &b, "k", "from-a", "from-b", Duration::from_secs(10)).await);
    assert_eq!(a.counters.snapshot().drops(), 0);
    stop([a, b]).await;
}

#[tokio::test]
async fn different_keys_do_not_converge() {
    let (a, b) = pair(keyring(&[KEY_1]), keyring(&[KEY_2])).await;
    assert!(!converged(&a, &b, "k", "from-a", "from-b", Duration::from_secs(1)).await);
    assert_eq!(seen(&a, &b, "k").await, None);
    assert_eq!(seen(&b, &a, "k").await, None);
    // B's syns reach A sealed with a key A does not have.
    let ca = a.counters.snapshot();
    assert!(ca.drop_unknown_key > 0, "{ca:?}");

    // A forged datagram carrying A's key id but not sealed with A's key fails authentication.
    let auth_before = a.counters.snapshot().drop_auth;
    let mut forged = Vec::new();
    Sealer::new(keyring(&[KEY_1]), [7; 16])
        .seal(b"genuine", ANY_RECIPIENT, &mut forged)
        .unwrap();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let sock = std::net::UdpSocket::bind(loopback0()).unwrap();
    sock.send_to(&forged, a.addr).unwrap();
    assert!(
        wait_for(|| a.counters.snapshot().drop_auth > auth_before).await,
        "auth counter did not move"
    );
    stop([a, b]).await;
}

#[tokio::test]
async fn plaintext_into_sealed_is_counted() {
    let (a, b) = pair(keyring(&[KEY_1]), Sealing::Insecure).await;
    assert!(!converged(&a, &b, "k", "from-a", "from-b", Duration::from_millis(600)).await);
    // B's plaintext syns reach A, which expects sealed envelopes (A never learns of B, so it
    // sends nothing back).
    assert!(a.counters.snapshot().drop_plaintext > 0);
    stop([a, b]).await;
}

#[tokio::test]
async fn key_rotation_at_runtime() {
    // A only knows key 1. B seals with key 2 and also opens key 1.
    let sealing_a = keyring(&[KEY_1]);
    let mut ring_b = Keyring::new(KEY_2).unwrap();
    ring_b.add(KEY_1).unwrap();
    let (a, b) = pair(sealing_a.clone(), Sealing::keyring(ring_b)).await;
    assert!(!converged(&a, &b, "k", "from-a", "from-b", Duration::from_millis(600)).await);
    assert!(a.counters.snapshot().drop_unknown_key > 0);
    // Install key 2 on A: the running transport picks it up.
    let Sealing::Keyring(lock) = &sealing_a else {
        unreachable!()
    };
    lock.write().unwrap().add(KEY_2).unwrap();
    assert!(converged(&a, &b, "k", "from-a", "from-b", Duration::from_secs(10)).await);
    // Switch A's primary to key 2 and remove key 1 from A: gossip keeps flowing.
    {
        let mut ring = lock.write().unwrap();
        ring.set_primary(key_id(&KEY_2)).unwrap();
        ring.remove(key_id(&KEY_1)).unwrap();
    }
    a.handle
        .with_chitchat(|c| c.self_node_state().set("k", "from-a-2"))
        .await;
    assert!(converged(&a, &b, "k", "from-a-2", "from-b", Duration::from_secs(10)).await);
    stop([a, b]).await;
}

async fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn garbage_is_counted_and_harmless() {
    let (a, b) = pair(keyring(&[KEY_1]), keyring(&[KEY_1])).await;
    let sock = std::net::UdpSocket::bind(loopback0()).unwrap();
    let garbage: [&[u8]; 5] = [
        b"",
        b"junk",
        &[0u8; 64],
        b"WFT\x01\x01 short header",
        &[0xffu8; 1500],
    ];
    for g in garbage {
        sock.send_to(g, a.addr).unwrap();
    }
    assert!(
        wait_for(|| a.counters.snapshot().drop_malformed == garbage.len() as u64).await,
        "{:?}",
        a.counters.snapshot()
    );
    assert!(converged(&a, &b, "k", "from-a", "from-b", Duration::from_secs(10)).await);
    // More garbage while gossip runs does not stop it.
    for g in garbage {
        sock.send_to(g, a.addr).unwrap();
    }
    a.handle
        .with_chitchat(|c| c.self_node_state().set("k", "again"))
        .await;
    assert!(converged(&a, &b, "k", "again", "from-b", Duration::from_secs(10)).await);
    let c = a.counters.snapshot();
    assert_eq!(c.drop_malformed, 2 * garbage.len() as u64, "{c:?}");
    assert_eq!(c.drops(), c.drop_malformed, "{c:?}");
    stop([a, b]).await;
}

#[tokio::test]
async fn large_values_travel_in_fragments() {
    // Hex of a pseudo-random sequence: chitchat's zstd cannot shrink it below ~6 KB, so the
    // delta needs several 1200-byte datagrams.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: String = (0..12_000)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(b"0123456789abcdef"[(x >> 60) as usize])
        })
        .collect();
    let t = |s| SealedTransport::new(s, GossipCounters::new()).with_max_datagram(1200);
    let a = start("node-a", t(keyring(&[KEY_1])), &[], &[("big", big.clone())]).await;
    let b = start(
        "node-b",
        t(keyring(&[KEY_1])),
        &[a.addr],
        &[("big", "small".into())],
    )
    .await;
    assert!(converged(&a, &b, "big", &big, "small", Duration::from_secs(10)).await);
    let ca = a.counters.snapshot();
    // A sent more bytes than fit in one datagram's payload; every datagram respected the limit.
    assert!(ca.bytes_out > 6000, "{ca:?}");
    assert_eq!(a.counters.snapshot().drops(), 0);
    assert_eq!(b.counters.snapshot().drops(), 0);
    stop([a, b]).await;
}

fn bad_cluster() -> ChitchatEnvelope {
    ChitchatEnvelope {
        version: ProtocolVersion::V1,
        message: ChitchatMessage::BadCluster,
    }
}

#[tokio::test]
async fn peer_addresses_map_exactly_both_ways() {
    let sealing = keyring(&[KEY_1]);
    let transport = SealedTransport::new(sealing, GossipCounters::new());
    let (mut s1, a1) = open(&transport).await;
    let (mut s2, a2) = open(&transport).await;
    let (mut s3, a3) = open(&transport).await;
    s1.send(a2, bad_cluster()).await.unwrap();
    let got = s2.recv().await.unwrap();
    assert_eq!(got.from_addr, a1);
    assert_eq!(got.envelope, bad_cluster());
    s3.send(a2, bad_cluster()).await.unwrap();
    assert_eq!(s2.recv().await.unwrap().from_addr, a3);
    // Reply to whoever sent.
    s2.send(a1, bad_cluster()).await.unwrap();
    s2.send(a3, bad_cluster()).await.unwrap();
    assert_eq!(s1.recv().await.unwrap().from_addr, a2);
    assert_eq!(s3.recv().await.unwrap().from_addr, a2);
}

#[tokio::test]
async fn relays_are_bounded() {
    let counters = GossipCounters::new();
    let transport =
        SealedTransport::new(Sealing::Insecure, Arc::clone(&counters)).with_max_relays(2);
    let mut sender = transport.open_sealed(loopback0()).await.unwrap();
    let mut peers = Vec::new();
    for _ in 0..4 {
        peers.push(
            SealedTransport::new(Sealing::Insecure, GossipCounters::new())
                .open_sealed(loopback0())
                .await
                .unwrap(),
        );
    }
    for p in &mut peers {
        let to = p.local_addr().unwrap();
        sender.send(to, bad_cluster()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), p.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.from_addr, sender.local_addr().unwrap());
    }
    assert_eq!(sender.relay_count(), 2);
    assert_eq!(counters.snapshot().relays_evicted, 2);
}

#[tokio::test]
async fn local_injection_into_relays_is_ignored() {
    let transport = SealedTransport::new(Sealing::Insecure, GossipCounters::new());
    let mut s1 = transport.open_sealed(loopback0()).await.unwrap();
    let (mut s2, a2) = open(&transport).await;
    // Bytes sent straight to the inner chitchat socket from an unknown local port are ignored.
    let sock = tokio::net::UdpSocket::bind(loopback0()).await.unwrap();
    let inner = s1.inner_addr();
    sock.send_to(b"\x00\x01anything", inner).await.unwrap();
    s2.send(s1.local_addr().unwrap(), bad_cluster())
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), s1.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.from_addr, a2);
}

#[tokio::test]
async fn dropping_the_socket_releases_the_port() {
    let transport = SealedTransport::new(Sealing::Insecure, GossipCounters::new());
    let (socket, addr) = open(&transport).await;
    drop(socket);
    let mut rebound = false;
    for _ in 0..100 {
        if let Ok(s) = transport.open(addr).await {
            assert_eq!(s.local_addr().unwrap(), addr);
            rebound = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rebound, "underlay port still bound after drop");
}

/// Real chitchat messages through the digest codec: once four nodes know each other their
/// digests travel without node ids, a value set afterwards still reaches everyone, and a fifth
/// node joining (so every id list changes) is learnt through full frames and NACKs, with no
/// datagram dropped along the way.
#[tokio::test]
async fn settled_mesh_sends_compact_digests() {
    let first = start(
        "node-0",
        SealedTransport::new(keyring(&[KEY_1]), GossipCounters::new()),
        &[],
        &[("k", "0".into())],
    )
    .await;
    let mut nodes = vec![first];
    for i in 1..4 {
        let seed = nodes[0].addr;
        nodes.push(
            start(
                &format!("node-{i}"),
                SealedTransport::new(keyring(&[KEY_1]), GossipCounters::new()),
                &[seed],
                &[("k", i.to_string())],
            )
            .await,
        );
    }
    let compact = |nodes: &[Node]| -> u64 {
        nodes
            .iter()
            .map(|n| n.counters.snapshot().digests_compact)
            .sum()
    };
    async fn all_see(nodes: &[Node], subject: usize, value: &str) -> bool {
        for n in nodes {
            if seen(n, &nodes[subject], "k").await.as_deref() != Some(value) {
                return false;
            }
        }
        true
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while compact(&nodes) < 20 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(compact(&nodes) >= 20, "no compact digests after 20 s");

    // A change after the mesh settled travels through compact digests.
    nodes[2]
        .handle
        .with_chitchat(|c| c.self_node_state().set("k", "changed"))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !all_see(&nodes, 2, "changed").await && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(all_see(&nodes, 2, "changed").await);

    // A newcomer changes every id list.
    let seed = nodes[1].addr;
    nodes.push(
        start(
            "node-4",
            SealedTransport::new(keyring(&[KEY_1]), GossipCounters::new()),
            &[seed],
            &[("k", "4".into())],
        )
        .await,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !all_see(&nodes, 4, "4").await && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(all_see(&nodes, 4, "4").await);
    for n in &nodes {
        let c = n.counters.snapshot();
        assert_eq!(c.drops(), 0, "{c:?}");
    }
    for n in nodes {
        n.handle.shutdown().await.unwrap();
    }
}

/// A UDP relay between X (which talks to `front`) and A, keeping a copy of every datagram X
/// sends to A: an on-path observer.
async fn tap(
    a: SocketAddr,
) -> (
    SocketAddr,
    Arc<Mutex<Vec<Vec<u8>>>>,
    tokio::task::JoinHandle<()>,
) {
    let front = tokio::net::UdpSocket::bind(loopback0()).await.unwrap();
    let back = tokio::net::UdpSocket::bind(loopback0()).await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let captured = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&captured);
    let task = tokio::spawn(async move {
        let (mut b1, mut b2) = (vec![0u8; 65_536], vec![0u8; 65_536]);
        let mut x = None;
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut b1) => {
                    x = Some(from);
                    log.lock().unwrap().push(b1[..n].to_vec());
                    let _ = back.send_to(&b1[..n], a).await;
                }
                Ok((n, _)) = back.recv_from(&mut b2) => {
                    if let Some(x) = x {
                        let _ = front.send_to(&b2[..n], x).await;
                    }
                }
            }
        }
    });
    (front_addr, captured, task)
}

/// Gossip sealed for A and captured on its way there is refused by B (same cluster key), and
/// B's chitchat never hears of the sender.
#[tokio::test]
async fn datagram_captured_on_its_way_to_a_does_not_open_at_b() {
    let transport = || SealedTransport::new(keyring(&[KEY_1]), GossipCounters::new());
    let a = start("node-a", transport(), &[], &[("k", "from-a".into())]).await;
    let b = start("node-b", transport(), &[], &[("k", "from-b".into())]).await;
    let (via_tap, captured, task) = tap(a.addr).await;
    let x = start("node-x", transport(), &[via_tap], &[("k", "from-x".into())]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen(&a, &x, "k").await.is_none() || seen(&x, &a, "k").await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "x and a never converged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let more rounds through, then replay the latest of X's datagrams to A at B.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while captured.lock().unwrap().len() < 12 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "x stopped talking to a"
        );
        tokio::time::sleep(GOSSIP).await;
    }
    let replay: Vec<Vec<u8>> = {
        let c = captured.lock().unwrap();
        c[c.len() - 5..].to_vec()
    };
    let before = b.counters.snapshot();
    let sock = tokio::net::UdpSocket::bind(loopback0()).await.unwrap();
    for d in &replay {
        sock.send_to(d, b.addr).await.unwrap();
    }
    let moved = wait_for(|| b.counters.snapshot().datagrams_in >= before.datagrams_in + 5).await;
    assert!(moved, "the replayed datagrams did not reach b");
    tokio::time::sleep(GOSSIP * 2).await;
    let after = b.counters.snapshot();
    assert_eq!(
        after.drops() - before.drops(),
        5,
        "every datagram captured on its way to a is dropped at b: {after:?}"
    );
    let b_knows_x = {
        let chitchat = b.handle.chitchat();
        let guard = chitchat.lock().await;
        guard
            .node_states()
            .keys()
            .any(|id| &*id.node_id == "node-x")
    };
    assert!(
        !b_knows_x,
        "b's chitchat heard of x from a captured datagram"
    );
    task.abort();
    for n in [a, b, x] {
        n.handle.shutdown().await.unwrap();
    }
}
