//! WebSocket frame parsing (the server's `frames::Reader`) on arbitrary client bytes.
//!
//! The first byte picks a chunk size; the rest is the byte stream. Beyond "does
//! not panic", checks that the messages (and the first error) do not depend on
//! how the stream was cut into reads: fed whole, or in chunks, or byte by byte,
//! the reader yields the same sequence. Text messages must be valid UTF-8 and no
//! message may exceed the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_socketio::engine::frames::{Incoming, Reader, WsError};

const MAX: usize = 4096;

/// Every message the reader yields for `data` cut into `chunk`-byte reads,
/// ending with the first error, if any.
fn read_all(data: &[u8], chunk: usize) -> Vec<Result<Incoming, WsError>> {
    let mut reader = Reader::new(MAX);
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        let mut next = reader.push(piece);
        loop {
            match next {
                Ok(Some(message)) => out.push(Ok(message)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
            next = reader.next_pending();
        }
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
    let whole = read_all(data, data.len());
    for message in whole.iter().flatten() {
        match message {
            Incoming::Text(text) => {
                let bytes = text.clone().into_bytes();
                assert!(std::str::from_utf8(&bytes).is_ok());
                assert!(bytes.len() <= MAX);
            }
            Incoming::Binary(data) => assert!(data.len() <= MAX),
            Incoming::Ping(data) => assert!(data.len() <= 125),
            Incoming::Pong | Incoming::Close => {}
        }
    }
    assert_eq!(read_all(data, usize::from(cut)), whole, "chunks of {cut}");
    assert_eq!(read_all(data, 1), whole, "byte by byte");
});
