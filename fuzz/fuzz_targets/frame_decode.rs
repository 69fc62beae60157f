//! The udp tunnel's frame: arbitrary datagrams through the header decoder, the inner-packet check
//! and a sealed-frame opener (wrong keys, replays, truncations). Nothing may panic; whatever opens
//! must lie inside the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proto::frame;

fuzz_target!(|data: &[u8]| {
    if let Ok(_header) = frame::decode(data) {
        let _ = frame::check_packet(data.get(4..).unwrap_or_default());
    }
    let _ = frame::check_packet(data);
    let mut opener = match frame::FrameOpener::new(&[7u8; 32], 0x0102_0304) {
        Ok(o) => o,
        Err(_) => return,
    };
    let mut buf = data.to_vec();
    if let Ok(range) = opener.open(&mut buf) {
        assert!(range.end <= buf.len() && range.start <= range.end);
    }
    // The same bytes again: a replay of whatever opened must not open twice.
    let mut again = data.to_vec();
    let _ = opener.open(&mut again);
});
