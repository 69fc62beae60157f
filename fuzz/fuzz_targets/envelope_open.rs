//! The sealed gossip envelope: the input is split into datagrams (first byte of each chunk is
//! its length) fed to one opener per mode, so fragments, reassembly and the replay window see
//! sequences. Nothing forged may open in sealed mode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proto::envelope::{Keyring, Opened, Opener, Sealing};

const KEY: [u8; 32] = [0x5a; 32];

fuzz_target!(|data: &[u8]| {
    let Ok(ring) = Keyring::new(KEY) else { return };
    let mut sealed = Opener::new(Sealing::keyring(ring), [9; 16]);
    let mut insecure = Opener::new(Sealing::Insecure, [9; 16]);
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize * 8).min(tail.len());
        let (datagram, next) = tail.split_at(n);
        rest = next;
        // Without the key an attacker cannot produce an envelope that opens in sealed mode
        // (probability 2^-128 per try), so any success here is a bug.
        if let Ok(Opened::Message { .. } | Opened::Unbound { .. }) = sealed.open(datagram, &mut out)
        {
            panic!("forged datagram opened with the cluster key");
        }
        let _ = insecure.open(datagram, &mut out);
    }
});
