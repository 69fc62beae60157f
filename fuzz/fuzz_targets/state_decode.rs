//! The persisted state file (read at start; a corrupted disk must not crash the agent).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proto::PersistedState;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(state) = PersistedState::from_json(text)
    {
        assert_eq!(PersistedState::from_json(&state.to_json()).ok(), Some(state));
    }
});
