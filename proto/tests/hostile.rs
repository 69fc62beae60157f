//! Every decoder of weft-proto on hostile input: arbitrary bytes give `Err` or `Ok`, never a
//! panic, and mutations of valid encodings are refused or decode to something that still
//! validates or is refused by validation (probes and path summaries: re-encodes to itself). The
//! same decoders run under libFuzzer in `fuzz/`.

use proptest::prelude::*;
use weft_proto::PersistedState;
use weft_proto::envelope::{Keyring, OpenError, Opened, Opener, Sealer, Sealing};
use weft_proto::keyfile::{KeyIds, KeyringFile};

const KEY: [u8; 32] = [0x42; 32];
const SALT: [u8; 16] = [7; 16];
/// The receiving process's salt.
const ME: [u8; 16] = [9; 16];

fn sealing() -> Sealing {
    Sealing::keyring(Keyring::new(KEY).unwrap())
}

fn sample_state() -> PersistedState {
    PersistedState::from_json(
        r#"{"version":1,"node_name":"h1","network":{"addr":"10.244.0.0","len":16},"subnet":{"addr":"10.244.3.0","len":24},"claim_time_ms":1700000000000,"last_alive_ms":1700000005000,"active":true}"#,
    )
    .expect("sample state decodes")
}

proptest! {
    /// A sealed datagram with any single byte changed, any prefix cut, or any bytes appended
    /// never opens (the AEAD covers the header and the payload).
    #[test]
    fn mutated_sealed_datagram_never_opens(
        msg in proptest::collection::vec(any::<u8>(), 0..600),
        pos in any::<usize>(), xor in 1u8..=255, cut in any::<usize>(),
        tail in proptest::collection::vec(any::<u8>(), 1..32),
    ) {
        let mut sealer = Sealer::new(sealing(), SALT);
        let mut d = Vec::new();
        sealer.seal(&msg, ME, &mut d).unwrap();
        let mut out = Vec::new();
        let mut flipped = d.clone();
        let i = pos % flipped.len();
        flipped[i] ^= xor;
        prop_assert!(Opener::new(sealing(), ME).open(&flipped, &mut out).is_err());
        let short = &d[..cut % d.len()];
        prop_assert!(Opener::new(sealing(), ME).open(short, &mut out).is_err());
        let mut long = d.clone();
        long.extend_from_slice(&tail);
        prop_assert!(Opener::new(sealing(), ME).open(&long, &mut out).is_err());
        // The original opens once, then is a replay.
        let mut opener = Opener::new(sealing(), ME);
        prop_assert_eq!(opener.open(&d, &mut out).unwrap(), Opened::Message { sender: SALT, message: &msg[..] });
        prop_assert_eq!(opener.open(&d, &mut out), Err(OpenError::Replay));
    }

    /// Sequences of arbitrary datagrams through one opener (fragment and replay state).
    #[test]
    fn arbitrary_datagram_sequences(datagrams in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
        let mut sealed = Opener::new(sealing(), ME);
        let mut insecure = Opener::new(Sealing::Insecure, ME);
        let mut out = Vec::new();
        for d in &datagrams {
            let opened = matches!(
                sealed.open(d, &mut out),
                Ok(Opened::Message { .. } | Opened::Unbound { .. })
            );
            prop_assert!(!opened, "a forged datagram opened");
            let _ = insecure.open(d, &mut out);
        }
    }

    #[test]
    fn state_arbitrary_text(s in ".{0,600}") {
        let _ = PersistedState::from_json(&s);
    }

    #[test]
    fn state_mutated(pos in any::<usize>(), val in any::<u8>()) {
        let mut bytes = sample_state().to_json().into_bytes();
        let i = pos % bytes.len();
        bytes[i] = val;
        if let Ok(text) = String::from_utf8(bytes)
            && let Ok(state) = PersistedState::from_json(&text)
        {
            prop_assert_eq!(PersistedState::from_json(&state.to_json()).ok(), Some(state));
        }
    }

    #[test]
    fn keyring_and_announcement_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(f) = KeyringFile::parse(&text) {
            prop_assert!(f.to_keyring().is_ok());
        }
        if let Ok(ids) = KeyIds::decode(&text) {
            prop_assert!(ids.installed.len() <= weft_proto::keyfile::MAX_KEYS);
        }
    }

    #[test]
    fn announcement_mutated(primary in any::<u32>(), ids in proptest::collection::vec(any::<u32>(), 0..8),
                            pos in any::<usize>(), val in 0x20u8..0x7f) {
        let mut bytes = KeyIds { primary, installed: ids }.encode().into_bytes();
        let i = pos % bytes.len();
        bytes[i] = val;
        let text = String::from_utf8(bytes).unwrap();
        if let Ok(decoded) = KeyIds::decode(&text) {
            prop_assert_eq!(KeyIds::decode(&decoded.encode()), Ok(decoded));
        }
    }

    /// An insecure probe with one byte changed decodes to a probe that re-encodes to the same
    /// fields, or is refused; a sealed one with one byte changed is always refused.
    #[test]
    fn probe_mutated(pos in any::<usize>(), val in any::<u8>(), pad in 0usize..200) {
        use weft_proto::probe::{self, Kind, Probe, ProbeKeys, Sender};
        let p = Probe {
            kind: Kind::Request,
            sender: Sender { node_name: "h1", generation: 5, vtep_mac: [2; 6] },
            seq: 1,
            timestamp: 2,
            reply_len: 3,
        };
        let sealed = ProbeKeys::from_keyring(&Keyring::new(KEY).unwrap());
        for keys in [ProbeKeys::insecure(), sealed] {
            let mut bytes = Vec::new();
            p.encode(p.min_len() + pad, &keys, &mut bytes).unwrap();
            let i = pos % bytes.len();
            let changed = bytes[i] != val;
            bytes[i] = val;
            match probe::decode(&bytes, &keys) {
                Ok(_) if !keys.is_insecure() => {
                    prop_assert!(!changed, "a changed sealed probe decoded")
                }
                Ok(d) => {
                    let mut again = Vec::new();
                    d.encode(bytes.len(), &keys, &mut again).unwrap();
                    prop_assert_eq!(probe::decode(&again, &keys), Ok(d));
                }
                Err(_) => {}
            }
        }
    }

    /// A path summary with one byte changed is refused or decodes within its bounds.
    #[test]
    fn path_summary_mutated(pos in any::<usize>(), val in any::<u8>(), n in 0usize..70) {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD_NO_PAD;
        use weft_proto::paths::{MAX_ENTRIES, PathEntry, PathState, PathSummary, Reason};
        let s = PathSummary::new((0..n).map(|i| PathEntry {
            peer: format!("node-{i}"),
            state: PathState::Down,
            mtu: 0,
            since_ms: 1_700_000_000_000 + i as u64,
            reason: Reason::NoAnswer,
        }));
        let mut bytes = STANDARD_NO_PAD.decode(s.encode()).unwrap();
        let i = pos % bytes.len();
        bytes[i] = val;
        if let Ok(d) = PathSummary::decode(&STANDARD_NO_PAD.encode(&bytes)) {
            prop_assert!(d.entries.len() <= MAX_ENTRIES);
            prop_assert_eq!(PathSummary::decode(&d.encode()), Ok(d));
        }
    }
}
