//! The keyring file and the `weft/keys` announcement (peers' key ids, read from gossip).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proto::keyfile::{KeyIds, KeyringFile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(ids) = KeyIds::decode(text) {
        assert_eq!(KeyIds::decode(&ids.encode()), Ok(ids));
    }
    if let Ok(file) = KeyringFile::parse(text) {
        assert!(file.to_keyring().is_ok());
        assert_eq!(KeyringFile::parse(&file.render()), Ok(file));
    }
});
