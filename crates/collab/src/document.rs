//! One collaborative document in memory: the Yjs document and the awareness
//! states (cursors, names) of the clients editing it.
//!
//! A `Document` knows nothing of connections or storage. The caller decides
//! which connection speaks for which awareness clients, and persists updates
//! before it applies and relays them.

use yrs::sync::{Awareness, AwarenessUpdate};
use yrs::updates::decoder::Decode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, Update};

/// Why an update could not be decoded, applied or encoded.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The bytes do not decode as a Yjs v1 update.
    #[error("not a Yjs update: {0}")]
    NotAnUpdate(#[from] yrs::encoding::read::Error),
    /// The update decoded, but yrs refused to apply it.
    #[error("the update does not apply: {0}")]
    Rejected(#[from] yrs::error::UpdateError),
    /// yrs panicked while decoding or encoding (caught and turned into
    /// [`crate::ProtocolError::Rejected`]).
    #[error(transparent)]
    Protocol(#[from] crate::ProtocolError),
    /// yrs panicked while applying an update: the document may be
    /// inconsistent and must be replaced (see [`Document::apply`]).
    #[error("yrs failed while applying the update; the document must be rebuilt")]
    Broken,
}

/// What an awareness update changed: the clients it set a state for, and
/// those whose state it removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AwarenessChanges {
    /// Clients whose state was added or updated.
    pub set: Vec<ClientID>,
    /// Clients whose state was removed.
    pub removed: Vec<ClientID>,
}

impl AwarenessChanges {
    /// Whether the update changed no client's state.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.removed.is_empty()
    }
}

/// An awareness state not renewed for this long belongs to a client that is
/// gone: y-protocols clients renew theirs every 15 s and drop the others'
/// after 30 s.
pub const AWARENESS_TIMEOUT_MS: u64 = 30_000;

/// A Yjs document and the awareness states of the clients editing it.
pub struct Document {
    awareness: Awareness,
}

impl Default for Document {
    fn default() -> Self {
        Self::new()
    }
}

impl Document {
    /// An empty document with no awareness states.
    pub fn new() -> Self {
        Self {
            awareness: Awareness::new(Doc::new()),
        }
    }

    /// Rebuilds a document from stored updates (a snapshot is one too), in any
    /// order. Returns it with the number of stored updates that did not decode
    /// or apply, which were skipped.
    pub fn restore<'a>(stored: impl IntoIterator<Item = &'a [u8]>) -> (Self, usize) {
        let document = Self::new();
        let mut skipped = 0;
        for bytes in stored {
            let applied = Self::decode_update(bytes).and_then(|u| document.apply(u));
            if applied.is_err() {
                skipped += 1;
            }
        }
        (document, skipped)
    }

    /// Checks that bytes are a Yjs v1 update, before they are stored or applied.
    pub fn decode_update(bytes: &[u8]) -> Result<Update, DocumentError> {
        Ok(crate::protocol::without_panics(|| {
            Update::decode_v1(bytes)
        })??)
    }

    /// Applies an update. [`DocumentError::Broken`] means yrs panicked while
    /// applying it (fuzzing found updates that make it index out of bounds):
    /// this document may be inconsistent and must be replaced, for instance
    /// rebuilt from storage with [`Document::restore`].
    pub fn apply(&self, update: Update) -> Result<(), DocumentError> {
        let applied = crate::protocol::without_panics(|| {
            let mut txn = self.awareness.doc().transact_mut();
            txn.apply_update(update)
        });
        match applied {
            Ok(result) => Ok(result?),
            Err(_) => Err(DocumentError::Broken),
        }
    }

    /// Takes over the awareness states of `other` (a document being replaced).
    pub fn adopt_awareness(&mut self, other: &Document) {
        if let Some(states) = other.awareness_states() {
            self.apply_awareness(states);
        }
    }

    /// The document's state vector: the latest clock it holds of each client.
    pub fn state_vector(&self) -> StateVector {
        self.awareness.doc().transact().state_vector()
    }

    /// What a peer with `remote` state lacks, as one update, with the pending
    /// updates (those still waiting for what they build on) when yrs can encode
    /// them, and without them when it cannot.
    pub fn diff(&self, remote: &StateVector) -> Vec<u8> {
        self.with_pending(remote)
            .unwrap_or_else(|_| self.awareness.doc().transact().encode_diff_v1(remote))
    }

    /// The whole document as one update, pending updates included: what a
    /// compaction stores. An error when yrs cannot encode the pending updates;
    /// the log must then stay as it is, since a snapshot would lose them.
    pub fn snapshot(&self) -> Result<Vec<u8>, DocumentError> {
        self.with_pending(&StateVector::default())
    }

    /// yrs merges the pending updates into the encoding and unwraps the merge,
    /// which panics on some pending updates that a client can craft (found by
    /// fuzzing): the panic becomes an error here.
    fn with_pending(&self, remote: &StateVector) -> Result<Vec<u8>, DocumentError> {
        Ok(crate::protocol::without_panics(|| {
            self.awareness
                .doc()
                .transact()
                .encode_state_as_update_v1(remote)
        })?)
    }

    /// Applies awareness states from a client or another node.
    pub fn apply_awareness(&mut self, update: AwarenessUpdate) -> AwarenessChanges {
        match self.awareness.apply_update_summary(update) {
            Ok(Some(summary)) => {
                let mut set = summary.added;
                set.extend(summary.updated);
                AwarenessChanges {
                    set,
                    removed: summary.removed,
                }
            }
            // Applying an update only fails to encode a summary, which is not asked for.
            Ok(None) | Err(_) => AwarenessChanges::default(),
        }
    }

    /// Removes the states of `clients` (a connection that closed) and returns
    /// the update that tells the others, if any of them had a state.
    pub fn remove_awareness(&mut self, clients: &[ClientID]) -> Option<AwarenessUpdate> {
        let live: Vec<ClientID> = clients
            .iter()
            .copied()
            .filter(|c| self.has_state(*c))
            .collect();
        for client in &live {
            self.awareness.remove_state(*client);
        }
        if live.is_empty() {
            return None;
        }
        self.awareness.update_with_clients(live).ok()
    }

    fn has_state(&self, client: ClientID) -> bool {
        self.awareness
            .state::<serde::de::IgnoredAny>(client)
            .is_some()
    }

    /// The current states of those of `clients` that have one, or `None`.
    pub fn awareness_of(
        &self,
        clients: impl IntoIterator<Item = ClientID>,
    ) -> Option<AwarenessUpdate> {
        let live: Vec<ClientID> = clients.into_iter().filter(|c| self.has_state(*c)).collect();
        if live.is_empty() {
            return None;
        }
        self.awareness.update_with_clients(live).ok()
    }

    /// Removes the awareness states not renewed for [`AWARENESS_TIMEOUT_MS`]
    /// by `now` (milliseconds since the epoch) and returns the update that
    /// tells the clients. Those are states of clients that left without a
    /// word reaching this node, such as the clients of a node that died.
    pub fn expire_awareness(&mut self, now: u64) -> Option<AwarenessUpdate> {
        let stale: Vec<ClientID> = self
            .awareness
            .iter()
            .filter(|(_, state)| {
                state.data.is_some()
                    && now.saturating_sub(state.last_updated) > AWARENESS_TIMEOUT_MS
            })
            .map(|(client, _)| client)
            .collect();
        self.remove_awareness(&stale)
    }

    /// Every current awareness state, or `None` when there is none.
    pub fn awareness_states(&self) -> Option<AwarenessUpdate> {
        let update = self.awareness.update().ok()?;
        (!update.clients.is_empty()).then_some(update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    fn edit(doc: &Doc, text: &str) -> Vec<u8> {
        let before = doc.transact().state_vector();
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        let len = t.len(&txn);
        t.insert(&mut txn, len, text);
        drop(txn);
        doc.transact().encode_state_as_update_v1(&before)
    }

    fn text_of(update: &[u8]) -> String {
        let doc = Doc::new();
        let t = doc.get_or_insert_text("t");
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
        let txn = doc.transact();
        t.get_string(&txn)
    }

    #[test]
    fn restore_applies_updates_in_any_order_and_skips_garbage() {
        let client = Doc::new();
        let first = edit(&client, "hello ");
        let second = edit(&client, "world");
        let (doc, skipped) = Document::restore([&second[..], &[0xff, 0xfe][..], &first[..]]);
        assert_eq!(skipped, 1);
        assert_eq!(text_of(&doc.snapshot().unwrap()), "hello world");
    }

    #[test]
    fn diff_brings_a_peer_up_to_date() {
        let client = Doc::new();
        let doc = Document::new();
        let first = edit(&client, "ab");
        doc.apply(Document::decode_update(&first).unwrap()).unwrap();
        let peer = Document::new();
        peer.apply(Document::decode_update(&first).unwrap())
            .unwrap();
        doc.apply(Document::decode_update(&edit(&client, "cd")).unwrap())
            .unwrap();

        let missing = doc.diff(&peer.state_vector());
        assert_eq!(
            text_of(&missing),
            "",
            "the diff holds only the new insert, whose left neighbour the peer has"
        );
        peer.apply(Document::decode_update(&missing).unwrap())
            .unwrap();
        assert_eq!(text_of(&peer.snapshot().unwrap()), "abcd");
    }

    #[test]
    fn a_crafted_pending_update_does_not_break_sync() {
        // Found by fuzzing: a step 2 whose update stays pending, and which yrs
        // then fails to merge back when it encodes the document.
        let frame = [
            0x00, 0x01, 0x38, 0x01, 0x03, 0xf1, 0x8a, 0x77, 0x6f, 0x72, 0x6c, 0x64, 0x01, 0x01,
            0x68, 0x0b, 0x74, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x77, 0x6f, 0x72, 0x6c, 0x64, 0x28,
            0x01, 0x01, 0x6d, 0x01, 0x6b, 0x01, 0x75, 0x03, 0x7d, 0x01, 0x7d, 0x02, 0x76, 0x01,
            0x01, 0x61, 0x77, 0x01, 0x62, 0x08, 0x01, 0x01, 0x61, 0x03, 0x77, 0x01, 0x78, 0x7d,
            0x03, 0x78, 0x00,
        ];
        let another = [
            0x00, 0x01, 0x38, 0x01, 0x03, 0xf1, 0x8a, 0x87, 0x92, 0x09, 0x00, 0x07, 0x01, 0x01,
            0x74, 0x00, 0x02, 0x0a, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x75, 0x03, 0x7d, 0x01, 0x7d, 0x02, 0x76, 0x01,
            0x01, 0x61, 0x77, 0x01, 0x62, 0x08, 0x01, 0x01, 0x61, 0x77, 0x01, 0x62, 0x08, 0x7d,
            0x03, 0x78, 0x00,
        ];
        for frame in [&frame[..], &another[..]] {
            let doc = Document::new();
            for message in crate::protocol::decode(frame).unwrap() {
                if let crate::ClientMessage::Update(update) = message {
                    if let Ok(update) = Document::decode_update(&update) {
                        let _ = doc.apply(update);
                    }
                }
            }
            let _ = doc.diff(&StateVector::default());
            assert!(
                doc.snapshot().is_err(),
                "yrs cannot encode this pending update"
            );
        }
    }

    /// Found by fuzzing: a client message whose updates make yrs index out of
    /// bounds while applying one of them.
    pub(crate) const BREAKING_FRAME: [u8; 117] = [
        0x00, 0x01, 0x37, 0x01, 0x03, 0xf1, 0x88, 0x92, 0x09, 0x01, 0x04, 0x01, 0x11, 0x74, 0x0b,
        0x77, 0x6c, 0x65, 0x68, 0x6f, 0x20, 0x6c, 0x6f, 0x72, 0x6c, 0x60, 0x28, 0x03, 0x00, 0x00,
        0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x02, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x65, 0x6c,
        0x6c, 0x74, 0x0b, 0x00, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x77, 0x6f, 0x01, 0x00, 0x01,
        0x38, 0x01, 0x03, 0xf1, 0x8a, 0x87, 0x92, 0xff, 0x04, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x03, 0x00, 0x32, 0x00, 0x01, 0x01, 0xe0, 0xff, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00,
        0x05, 0x01, 0x00, 0x00, 0x00, 0x01, 0x7d, 0x02, 0x76, 0x01, 0x01, 0x61, 0x77, 0x01, 0x62,
        0x08, 0x01, 0x01, 0x61, 0x03, 0x77, 0x01, 0x78, 0x7d, 0x03, 0x78, 0x00,
    ];

    #[test]
    fn an_update_that_breaks_yrs_is_an_error() {
        let mut broken = 0;
        let doc = Document::new();
        for message in crate::protocol::decode(&BREAKING_FRAME).unwrap() {
            if let crate::ClientMessage::Update(update) = message {
                if let Ok(update) = Document::decode_update(&update) {
                    if let Err(DocumentError::Broken) = doc.apply(update) {
                        broken += 1;
                    }
                }
            }
        }
        assert_eq!(broken, 1);
    }

    #[test]
    fn awareness_states_not_renewed_expire() {
        let mut doc = Document::new();
        let mut remote = Awareness::new(Doc::with_client_id(7));
        remote.set_local_state_raw(r#"{"user":"gone"}"#);
        doc.apply_awareness(remote.update().unwrap());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;

        assert!(
            doc.expire_awareness(now + 1_000).is_none(),
            "a fresh state stays"
        );
        let removal = doc
            .expire_awareness(now + AWARENESS_TIMEOUT_MS + 1_000)
            .unwrap();
        assert_eq!(&*removal.clients[&ClientID::new(7)].json, "null");
        assert!(doc.awareness_states().is_none());
    }

    #[test]
    fn awareness_of_a_closed_connection_is_removed() {
        let mut doc = Document::new();
        let mut remote = Awareness::new(Doc::with_client_id(42));
        remote.set_local_state_raw(r#"{"user":"ann"}"#);
        let changes = doc.apply_awareness(remote.update().unwrap());
        assert_eq!(changes.set, [ClientID::new(42)]);
        assert!(doc.awareness_states().is_some());

        let removal = doc.remove_awareness(&[ClientID::new(42)]).unwrap();
        assert_eq!(&*removal.clients[&ClientID::new(42)].json, "null");
        assert!(doc.awareness_states().is_none());
        assert!(doc.remove_awareness(&[ClientID::new(42)]).is_none());
    }
}
