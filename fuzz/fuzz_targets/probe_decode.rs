//! The path probe: arbitrary datagrams through the decoder with keys and without. Nothing may
//! panic; a sealed decode of bytes not tagged with the key must fail, and whatever decodes must
//! encode back to the same bytes' fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proto::Keyring;
use weft_proto::probe::{self, ProbeKeys};

fuzz_target!(|data: &[u8]| {
    let sealed = ProbeKeys::from_keyring(&Keyring::new([7u8; 32]).expect("key id is not 0"));
    for keys in [sealed, ProbeKeys::insecure()] {
        if let Ok(p) = probe::decode(data, &keys) {
            let mut again = Vec::new();
            p.encode(data.len(), &keys, &mut again)
                .expect("a decoded probe re-encodes at its own length");
            assert_eq!(probe::decode(&again, &keys), Ok(p));
        }
    }
});
