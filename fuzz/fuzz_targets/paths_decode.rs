//! The gossiped path summary: arbitrary text as the chitchat value, and arbitrary bytes behind
//! valid base64 (so the entry decoder sees everything). Whatever decodes stays within the bounds
//! and re-encodes to a value that decodes to the same summary.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use weft_proto::paths::{MAX_ENTRIES, MAX_PATHS_LEN, PathSummary};

fn check(value: &str) {
    if let Ok(summary) = PathSummary::decode(value) {
        assert!(summary.entries.len() <= MAX_ENTRIES);
        let again = summary.encode();
        assert!(again.len() <= MAX_PATHS_LEN);
        assert_eq!(PathSummary::decode(&again).ok(), Some(summary));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check(text);
    }
    check(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(data));
});
