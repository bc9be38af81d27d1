//! The collaborative-editing decoder and document on arbitrary bytes, as a
//! client could send them in one WebSocket message.
//!
//! Whatever `protocol::decode` accepts is then fed to a document the way the
//! server does: a state vector is answered with a diff, an update is decoded
//! and applied, awareness states are applied and then removed. None of it may
//! panic; a malformed input must come back as an error.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use switchboard_collab::{protocol, ClientID, ClientMessage, Document, DocumentError};

static QUIET_HOOK: Once = Once::new();

fuzz_target!(|frame: &[u8]| {
    QUIET_HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
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
                if let Ok(update) = Document::decode_client_update(&update) {
                    if let Err(DocumentError::Broken) = document.apply(update) {
                        document = Document::new(); // as the server rebuilds it
                    }
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
