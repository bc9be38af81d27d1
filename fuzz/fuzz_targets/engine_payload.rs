//! Engine.IO packet decoding on arbitrary client input.
//!
//! - `decode_payload` on arbitrary bytes (an HTTP long-polling request body);
//! - `decode_text` on the same bytes when they are valid UTF-8 (a WebSocket text frame).
//!
//! Beyond "does not panic", checks the documented contracts: every `Str` a
//! decoder hands out is valid UTF-8 (its `as_str` would otherwise silently
//! yield ""), a successful payload has one packet per `\x1e`-separated item,
//! and a one-item text payload decodes exactly like the same text frame.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_socketio::engine::packet::{
    decode_payload, decode_text, Message, Packet, Str, SEPARATOR,
};

fn check_str(s: &Str) {
    let bytes = s.clone().into_bytes();
    assert!(
        std::str::from_utf8(&bytes).is_ok(),
        "decoder produced a Str that is not UTF-8: {bytes:?}"
    );
    assert_eq!(s.as_str().as_bytes(), &bytes[..]);
}

fn check_packet(p: &Packet) {
    match p {
        Packet::Ping(s) | Packet::Pong(s) | Packet::Message(Message::Text(s)) => check_str(s),
        Packet::Message(Message::Binary(_))
        | Packet::Close
        | Packet::Upgrade
        | Packet::Noop => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);

    let payload = decode_payload(body.clone());
    if let Ok(packets) = &payload {
        let items = data.iter().filter(|&&b| b == SEPARATOR).count() + 1;
        assert_eq!(packets.len(), items, "one packet per payload item");
        packets.iter().for_each(check_packet);
    }

    if let Ok(text) = Str::from_utf8(body) {
        let frame = decode_text(text);
        if let Ok(packet) = &frame {
            check_packet(packet);
        }
        // A single text item (no separator, not a `b` binary item) is the same
        // packet whichever transport carried it.
        if !data.contains(&SEPARATOR) && data.first() != Some(&b'b') {
            assert_eq!(payload, frame.map(|p| vec![p]));
        }
    }
});
