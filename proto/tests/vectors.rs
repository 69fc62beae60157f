//! The test vectors of proto/README.md, asserted exactly, so the spec and the code cannot drift.
//! The expected values were computed by an independent implementation of the spec (Python:
//! hand-written postcard encoding, `cryptography`'s HKDF and ChaCha20-Poly1305; the probe's
//! HKDF and HMAC with the standard library's `hmac`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weft_proto::envelope::{self, Keyring, Opened, Opener, Sealer, Sealing};
use weft_proto::record::{FamiliesV1, Ipv6Cidr, Ipv6Overlay};
use weft_proto::{Backend, ClaimState, Ipv4Cidr, NodeRecord, PersistedState};

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn record_1() -> NodeRecord {
    NodeRecord {
        node_name: "node-1".into(),
        underlay_ip: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)),
        backend: Backend::Vxlan,
        network: Ipv4Cidr {
            addr: Ipv4Addr::new(10, 244, 0, 0),
            len: 16,
        },
        vni: 1,
        subnet: Some(Ipv4Cidr {
            addr: Ipv4Addr::new(10, 244, 3, 0),
            len: 24,
        }),
        claim_time_ms: 1_700_000_000_000,
        state: ClaimState::Active,
        vtep_mac: [0x0a, 0x58, 0x0a, 0xf4, 0x03, 0x00],
        tunnel_port: 8472,
        public_key: None,
        families: FamiliesV1::default(),
    }
}

fn record_2() -> NodeRecord {
    let mut pk = [0u8; 32];
    for (i, b) in pk.iter_mut().enumerate() {
        *b = i as u8;
    }
    NodeRecord {
        node_name: "edge-7.example".into(),
        underlay_ip: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 7)),
        backend: Backend::Udp,
        network: Ipv4Cidr {
            addr: Ipv4Addr::new(10, 244, 0, 0),
            len: 16,
        },
        vni: 0,
        subnet: None,
        claim_time_ms: 1_700_000_123_456,
        state: ClaimState::Claimed,
        vtep_mac: [0; 6],
        tunnel_port: 8285,
        public_key: Some(pk),
        families: FamiliesV1::default(),
    }
}

/// Record 1 with a dual-stack overlay: IPv6 network fd00:10:244::/56, subnet fd00:10:244:3::/64,
/// IPv6 underlay 2001:db8::a.
fn record_3() -> NodeRecord {
    let mut r = record_1();
    r.families = FamiliesV1 {
        ipv4: true,
        ipv6: Some(Ipv6Overlay {
            network: Ipv6Cidr {
                addr: "fd00:10:244::".parse().unwrap(),
                len: 56,
            },
            subnet: Some(Ipv6Cidr {
                addr: "fd00:10:244:3::".parse().unwrap(),
                len: 64,
            }),
            underlay_ip: Some("2001:db8::a".parse().unwrap()),
        }),
    };
    r
}

const RECORD_1: &str = "AQAGbm9kZS0xAMCoAQoACvQAABABAQr0AwAYgNCV/7wxAQpYCvQDAJhCAA";
const RECORD_1_BODY: &str =
    "066e6f64652d3100c0a8010a000af400001001010af403001880d095ffbc31010a580af40300984200";
const RECORD_2: &str = "AQAOZWRnZS03LmV4YW1wbGUB/QAAAAAAAAAAAAAAAAAABwIK9AAAEAAAwJSd/7wxAAAAAAAAAN1AAQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f";

/// The same records as written by this version (minor 1: the families appended).
const RECORD_1_V1: &str = "AQEGbm9kZS0xAMCoAQoACvQAABABAQr0AwAYgNCV/7wxAQpYCvQDAJhCAAEA";
const RECORD_2_V1: &str = "AQEOZWRnZS03LmV4YW1wbGUB/QAAAAAAAAAAAAAAAAAABwIK9AAAEAAAwJSd/7wxAAAAAAAAAN1AAQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fAQA";
/// Minor 1's appended fields of record 3, byte by byte as in the README table.
const RECORD_3_FAMILIES: &str = "0101fd0000100244000000000000000000003801fd000010024400030000000000000000400120010db800000000000000000000000a";
const RECORD_3: &str = "AQEGbm9kZS0xAMCoAQoACvQAABABAQr0AwAYgNCV/7wxAQpYCvQDAJhCAAEB/QAAEAJEAAAAAAAAAAAAADgB/QAAEAJEAAMAAAAAAAAAAEABIAENuAAAAAAAAAAAAAAACg";

#[test]
fn record_vectors() {
    for (record, encoded) in [
        (record_1(), RECORD_1_V1),
        (record_2(), RECORD_2_V1),
        (record_3(), RECORD_3),
    ] {
        assert_eq!(record.encode(), encoded);
        assert_eq!(NodeRecord::decode(encoded).unwrap(), record);
        assert_eq!(record.validate(), Ok(()));
    }
    // Minor-0 records (written by earlier versions) still read, as IPv4-only nodes.
    for (record, encoded) in [(record_1(), RECORD_1), (record_2(), RECORD_2)] {
        assert_eq!(NodeRecord::decode(encoded).unwrap(), record);
    }
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let r3 = b64.decode(RECORD_3).unwrap();
    let mut expected3 = vec![1u8, 1];
    expected3.extend(hex(RECORD_1_BODY));
    expected3.extend(hex(RECORD_3_FAMILIES));
    assert_eq!(r3, expected3);
    // The body, byte by byte as in the README table.
    let mut expected = vec![1u8, 0];
    expected.extend(hex(RECORD_1_BODY));
    let bytes = b64.decode(RECORD_1).unwrap();
    assert_eq!(bytes, expected);
}

const KEY_ID: u32 = 0x630d_cd29;
const DERIVED: &str = "7fda813371eeecf7d1eb0d2e3411e49f2e67f7e8a4205c2438c8fc62089673cd";
const PLAINTEXT: &[u8] = b"weft gossip test vector";
const SEALED: &str = "5746540201630dcd29a0a1a2a3a4a5a6a7a8a9aaabacadaeaf000000000000002ab0b1b2b3b4b5b6b7b8b9babbbcbdbebfefeb4c2f6fe1801cdda86355339333a4f652b8375f3f4b4e22433e52b2589fe654b4ffbdc7521a";
const PLAIN: &str = "574654020100000000a0a1a2a3a4a5a6a7a8a9aaabacadaeaf000000000000002ab0b1b2b3b4b5b6b7b8b9babbbcbdbebf7765667420676f73736970207465737420766563746f72";
const FRAGMENTS: [&str; 3] = [
    "5746540203630dcd29a0a1a2a3a4a5a6a7a8a9aaabacadaeaf000000000000002ab0b1b2b3b4b5b6b7b8b9babbbcbdbebfefeb4c2f6fe1801cdda8d597eeb8b4c62a8067b95e266b556cab",
    "5746540213630dcd29a0a1a2a3a4a5a6a7a8a9aaabacadaeaf000000000000002bb0b1b2b3b4b5b6b7b8b9babbbcbdbebf64272aa82df4f7a5fad7deeaaa2334b486217cbc90567c2ecdb7",
    "5746540223630dcd29a0a1a2a3a4a5a6a7a8a9aaabacadaeaf000000000000002cb0b1b2b3b4b5b6b7b8b9babbbcbdbebf8eb3fa0199976f0ba5153a10cd539a3c2521a2",
];

fn key() -> [u8; 32] {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = i as u8;
    }
    k
}

/// The recipient's salt of the envelope vectors: b0 b1 … bf.
fn recipient() -> [u8; 16] {
    std::array::from_fn(|i| 0xb0 + i as u8)
}

fn salt() -> [u8; 16] {
    let mut s = [0u8; 16];
    for (i, b) in s.iter_mut().enumerate() {
        *b = 0xa0 + i as u8;
    }
    s
}

#[test]
fn key_vectors() {
    assert_eq!(envelope::key_id(&key()), KEY_ID);
    // HKDF-SHA256(salt = sender salt, ikm = cluster key, info = "weft gossip v1", L = 32).
    struct Len32;
    impl ring::hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let mut derived = [0u8; 32];
    ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &salt())
        .extract(&key())
        .expand(&[envelope::HKDF_INFO], Len32)
        .unwrap()
        .fill(&mut derived)
        .unwrap();
    assert_eq!(to_hex(&derived), DERIVED);
    assert_eq!(
        envelope::encode_key(&key()),
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    );
}

#[test]
fn envelope_vectors() {
    let sealing = Sealing::keyring(Keyring::new(key()).unwrap());
    let delivered = Opened::Message {
        sender: salt(),
        message: PLAINTEXT,
    };
    let mut out = Vec::new();
    Sealer::with_counter(sealing.clone(), salt(), 42)
        .seal(PLAINTEXT, recipient(), &mut out)
        .unwrap();
    assert_eq!(to_hex(&out), SEALED);
    let mut opened = Vec::new();
    let mut opener = Opener::new(sealing.clone(), recipient());
    assert_eq!(opener.open(&hex(SEALED), &mut opened).unwrap(), delivered);

    Sealer::with_counter(Sealing::Insecure, salt(), 42)
        .seal(PLAINTEXT, recipient(), &mut out)
        .unwrap();
    assert_eq!(to_hex(&out), PLAIN);
    assert_eq!(
        Opener::new(Sealing::Insecure, recipient())
            .open(&hex(PLAIN), &mut opened)
            .unwrap(),
        delivered
    );

    // 75-byte datagrams leave 10 bytes of payload each: three fragments, counters 42..=44.
    let mut frags = Vec::new();
    Sealer::with_counter(sealing.clone(), salt(), 42)
        .seal_fragments(PLAINTEXT, recipient(), 75, &mut frags)
        .unwrap();
    let got: Vec<String> = frags.iter().map(|f| to_hex(f)).collect();
    assert_eq!(got, FRAGMENTS);
    let mut opener = Opener::new(sealing, recipient());
    assert_eq!(
        opener.open(&hex(FRAGMENTS[2]), &mut opened),
        Ok(Opened::Fragment)
    );
    assert_eq!(
        opener.open(&hex(FRAGMENTS[0]), &mut opened),
        Ok(Opened::Fragment)
    );
    assert_eq!(
        opener.open(&hex(FRAGMENTS[1]), &mut opened).unwrap(),
        delivered
    );
}

#[test]
fn state_vector() {
    let json = r#"{
  "version": 1,
  "node_name": "node-1",
  "network": {
    "addr": "10.244.0.0",
    "len": 16
  },
  "subnet": {
    "addr": "10.244.3.0",
    "len": 24
  },
  "claim_time_ms": 1700000000000,
  "last_alive_ms": 1700000360000,
  "active": true
}
"#;
    let state = PersistedState::from_json(json).unwrap();
    assert_eq!(state.to_json(), json);
    assert_eq!(state.subnet, record_1().subnet);
}

#[test]
fn tunnel_frame_vectors() {
    use weft_proto::frame::{self, FrameOpener, FrameSealer, Header};
    let a: [u8; 32] = std::array::from_fn(|i| i as u8);
    let b: [u8; 32] = std::array::from_fn(|i| 32 + i as u8);
    let (pa, pb) = (frame::public_key(&a), frame::public_key(&b));
    assert_eq!(
        to_hex(&pa),
        "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f"
    );
    assert_eq!(
        to_hex(&pb),
        "358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254"
    );
    let (a_send, a_recv) = frame::derive_keys(&a, &pb).unwrap();
    assert_eq!(
        to_hex(&a_send),
        "a0d8cdf96c336a492f3f017699da0bbf3caf152f87c16bd27987cccae6a259e7"
    );
    assert_eq!(
        to_hex(&a_recv),
        "54dd25b00c0df6d6832064702a048756ebcc620ad0ab052a788f5cdda9860bc1"
    );
    let packet = hex("4500001800004000401100000af401020af4020377656674");
    let plain = hex("575501004500001800004000401100000af401020af4020377656674");
    assert_eq!(frame::decode(&plain), Ok(Header::Plain));
    assert_eq!(&plain[frame::PLAIN_HEADER_LEN..], &packet[..]);
    let sealed = hex(concat!(
        "575501018f40c5ad000000000000002a87501850b9832d474a346e3018d4530d17043397a97ff5560360bb",
        "03513cd9675c69e28cf29505e7"
    ));
    let counters = frame::CounterSource::starting_at(42);
    let mut sealer = FrameSealer::new(&a_send, frame::key_id(&pa), counters).unwrap();
    let mut buf = vec![0u8; packet.len() + frame::SEALED_OVERHEAD];
    buf[frame::SEALED_HEADER_LEN..frame::SEALED_HEADER_LEN + packet.len()].copy_from_slice(&packet);
    let n = sealer.seal(&mut buf, packet.len()).unwrap();
    assert_eq!(to_hex(&buf[..n]), to_hex(&sealed));
    let (_, b_recv) = frame::derive_keys(&b, &pa).unwrap();
    let mut opener = FrameOpener::new(&b_recv, frame::key_id(&pa)).unwrap();
    let mut incoming = sealed.clone();
    let range = opener.open(&mut incoming).unwrap();
    assert_eq!(&incoming[range], &packet[..]);
}

#[test]
fn probe_vectors() {
    use weft_proto::probe::{self, Kind, Probe, ProbeKeys, Sender};
    assert_eq!(
        to_hex(&probe::probe_key(&key())),
        "0e9bf9f6b4d733d47e353aad0de765e545b4ac3e715470b04f9d2b2cf0aa98ad"
    );
    let sealed = ProbeKeys::from_keyring(&Keyring::new(key()).unwrap());
    let insecure = ProbeKeys::insecure();
    let generation = (1u64 << 62) + 1_700_000_000_000;
    let request = Probe {
        kind: Kind::Request,
        sender: Sender {
            node_name: "node-1",
            generation,
            vtep_mac: [0x0a, 0x58, 0x0a, 0xf4, 0x03, 0x00],
        },
        seq: 42,
        timestamp: 1_000_000,
        reply_len: 1422,
    };
    let reply = request.answer(Sender {
        node_name: "node-2",
        generation: generation + 5,
        vtep_mac: [0x0a, 0x58, 0x0a, 0xf4, 0x04, 0x00],
    });
    let p1 = hex(concat!(
        "57505201630dcd29004000018bcfe56800000000000000002a00000000000f4240058e0a580af40300",
        "066e6f64652d31d9f8c18f7cf2d0b3696d6c3521c1f174"
    ));
    let p2 = hex(concat!(
        "57505201630dcd29014000018bcfe56805000000000000002a00000000000f4240058e0a580af40400",
        "066e6f64652d32000000000000000000000000000000000000000000000000000000000000000008",
        "0ac6841d38be015d62186c39c60059"
    ));
    let p3 = hex(concat!(
        "5750520100000000004000018bcfe56800000000000000002a00000000000f4240058e0a580af40300",
        "066e6f64652d3100000000000000000000000000000000"
    ));
    let mut out = Vec::new();
    for (probe, len, keys, expected) in [
        (request, 64, &sealed, &p1),
        (reply, 96, &sealed, &p2),
        (request, 64, &insecure, &p3),
    ] {
        probe.encode(len, keys, &mut out).unwrap();
        assert_eq!(to_hex(&out), to_hex(expected));
        assert_eq!(probe::decode(expected, keys), Ok(probe));
    }
}

#[test]
fn path_summary_vectors() {
    use weft_proto::paths::{PathEntry, PathState, PathSummary, Reason};
    assert_eq!(PathSummary::default().encode(), "AQAAAA");
    let summary = PathSummary::new([
        PathEntry {
            peer: "node-3".into(),
            state: PathState::Mtu,
            mtu: 1400,
            since_ms: 1_700_000_100_000,
            reason: Reason::FullSizeLost,
        },
        PathEntry {
            peer: "node-2".into(),
            state: PathState::Down,
            mtu: 0,
            since_ms: 1_700_000_000_000,
            reason: Reason::NoAnswer,
        },
    ]);
    let value = "AQAAAgZub2RlLTIAAIDQlf+8MQEGbm9kZS0zAfgKoN2b/7wxAg";
    assert_eq!(summary.encode(), value);
    assert_eq!(PathSummary::decode(value), Ok(summary));
}
