//! The gossiped node record: arbitrary text as the chitchat value, and arbitrary bytes behind
//! valid base64 (so the postcard body decoder sees everything). Whatever decodes must validate
//! without panicking and re-encode to a value that decodes to the same record.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use weft_proto::NodeRecord;

fn check(value: &str) {
    if let Ok(record) = NodeRecord::decode(value) {
        let _ = record.validate();
        let _ = record.validate_in(weft_proto::record::Scope::Network);
        let again = record.encode();
        assert_eq!(NodeRecord::decode(&again).ok(), Some(record));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check(text);
    }
    check(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(data));
});
