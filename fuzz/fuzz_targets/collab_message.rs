//! The collaborative-editing decoder and document on arbitrary bytes, as a
//! client could send them in one WebSocket message.
//!
//! Whatever `protocol::decode` accepts is then fed to a document the way the
//! server does: a state vector is answered with a diff, an update is decoded
//! and applied, awareness states are applied and then removed. None of it may
//! panic; a malformed input must come back as an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_collab::{protocol, ClientID, ClientMessage, Document};

fuzz_target!(|frame: &[u8]| {
    let Ok(messages) = protocol::decode(frame) else {
        return;
    };
    let mut document = Document::new();
    let mut clients: Vec<ClientID> = Vec::new();
    for message in messages {
        match message {
            ClientMessage::SyncStep1(state_vector) => {
                let _ = protocol::sync_step2(document.diff(&state_vector));
            }
            ClientMessage::Update(update) => {
                if let Ok(update) = Document::decode_update(&update) {
                    let _ = document.apply(update);
                }
                let _ = document.snapshot();
                let _ = document.diff(&Default::default());
            }
            ClientMessage::Awareness(states) => {
                let changes = document.apply_awareness(states);
                clients.extend(changes.set);
            }
            ClientMessage::QueryAwareness | ClientMessage::Auth => {
                let _ = document.awareness_states();
            }
        }
    }
    if let Some(removal) = document.remove_awareness(&clients) {
        let _ = protocol::awareness(removal);
    }
});
