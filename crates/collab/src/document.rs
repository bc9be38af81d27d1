//! One collaborative document in memory: the Yjs document and the awareness
//! states (cursors, names) of the clients editing it.
//!
//! A `Document` knows nothing of connections or storage. The caller decides
//! which connection speaks for which awareness clients, and persists updates
//! before it applies and relays them.
//!
//! yrs only ever receives structs it can integrate at once; those that build
//! on changes the document lacks wait beside it ([`crate::waiting`]), since
//! yrs 0.28 frees memory it then reads when it keeps them itself.

use std::sync::{Mutex, MutexGuard, PoisonError};

use yrs::sync::{Awareness, AwarenessUpdate};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, Update, WriteTxn};

use crate::structs::{self, ListWriter, WalkError, Walked};
use crate::waiting::{Clocks, Plan, Waiting, MAX_WAITING_BYTES, MAX_WAITING_STRUCTS};

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
    /// yrs would decode the update, but it is outside what Yjs writes and
    /// what the document integrates safely: a client listed twice, a clock
    /// past 2^31, a count larger than the update, values nested deeper than
    /// 128 (yrs decodes them recursively and overflows the stack).
    #[error("unsupported update: {0}")]
    Unsupported(&'static str),
    /// Applying the update would leave more structs waiting for changes the
    /// document lacks than [`MAX_WAITING_STRUCTS`] or [`MAX_WAITING_BYTES`]
    /// allow. Nothing of it was applied (unless yrs had refused a waiting
    /// struct handed to it with the update first).
    #[error(
        "too many changes wait for changes the document lacks \
         (at most {MAX_WAITING_STRUCTS} structs, {MAX_WAITING_BYTES} bytes)"
    )]
    TooMuchWaiting,
    /// Some waiting structs overlap the document's own and cannot be written
    /// into one update with it: a snapshot would lose them.
    #[error("waiting changes overlap the document; they cannot be encoded with it")]
    Incomplete,
}

/// An update from a client, another node or the Store, decoded and checked by
/// [`Document::decode_update`], for [`Document::apply`].
pub struct DecodedUpdate {
    bytes: Vec<u8>,
    update: Update,
    walked: Walked,
}

impl std::fmt::Debug for DecodedUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedUpdate")
            .field("bytes", &self.bytes.len())
            .field("clients", &self.walked.clients.len())
            .finish()
    }
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
    local: Mutex<Local>,
}

impl Drop for Document {
    fn drop(&mut self) {
        free_subdocuments(self.awareness.doc());
    }
}

/// Lets a yrs document with subdocuments be freed. In yrs 0.28.1 an item
/// holding a subdocument keeps a strong reference to the document it is in
/// (`ItemContent::Doc`'s parent), so such a document is never freed: every
/// unload, rebuild or compaction of it would leak all its memory (found by
/// `collab_message` under LeakSanitizer). Deleting everything, then
/// collecting garbage, drops those references. Call it last; documents
/// without subdocuments return at once.
pub(crate) fn free_subdocuments(doc: &Doc) {
    if doc.transact().subdocs().next().is_none() {
        return;
    }
    let _ = crate::protocol::without_panics(|| {
        let everything = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let inserted = Update::decode_v1(&everything).ok()?.insertions(true);
        let mut wipe = vec![0]; // no structs, then the delete set
        wipe.extend(inserted.encode_v1());
        let wipe = Update::decode_v1(&wipe).ok()?;
        let mut txn = doc.transact_mut();
        txn.apply_update(wipe).ok()?;
        txn.gc(None); // also where the document skips garbage collection
        Some(())
    });
}

/// A scratch yrs document that [`free_subdocuments`] when dropped.
pub(crate) struct Scratch(pub Doc);

impl std::ops::Deref for Scratch {
    type Target = Doc;
    fn deref(&self) -> &Doc {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        free_subdocuments(&self.0);
    }
}

/// What yrs can integrate of a stored document (an update, such as a
/// snapshot): what a [`Document`] holds after applying it, without the structs
/// that would wait. For code that hands stored documents to yrs itself
/// ([`crate::json`]): an update with holes, applied to a yrs document that then
/// receives another, is how yrs came to read freed memory.
/// Deleted content is kept, as stored.
pub(crate) fn integrable(stored: &[u8]) -> Result<Vec<u8>, DocumentError> {
    let document = Document {
        awareness: Awareness::new(Doc::with_options(yrs::Options {
            skip_gc: true,
            ..yrs::Options::default()
        })),
        local: Mutex::new(Local::default()),
    };
    document.apply(Document::decode_update(stored)?)?;
    document.with_pending(&StateVector::default())
}

/// What the document keeps beside yrs.
#[derive(Default)]
struct Local {
    /// Structs that wait for what they build on.
    waiting: Waiting,
    /// Each client's clock in yrs (yrs only builds its whole state vector),
    /// moved on by every update yrs integrates whole.
    clocks: Clocks,
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
            local: Mutex::new(Local::default()),
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

    /// Checks that bytes are a Yjs v1 update, before they are stored or
    /// applied: its structs are read (client, clock, length, dependencies)
    /// for [`Document::apply`], with the counts and nesting that yrs would
    /// trust checked first, and then yrs decodes it.
    pub fn decode_update(bytes: &[u8]) -> Result<DecodedUpdate, DocumentError> {
        Self::decode(bytes, true)
    }

    /// [`Document::decode_update`] for an update a client sent: one that
    /// holds a subdocument is refused ([`DocumentError::Unsupported`]) before
    /// yrs reads it. yrs 0.28.1 keeps a document that holds a subdocument
    /// alive through it, and fuzzing (`collab_message`) found client input
    /// that makes such a document leak whole twice over; y-websocket does not
    /// sync a subdocument's content anyway. Documents stored with
    /// subdocuments before still load ([`Document::decode_update`]).
    pub fn decode_client_update(bytes: &[u8]) -> Result<DecodedUpdate, DocumentError> {
        Self::decode(bytes, false)
    }

    fn decode(bytes: &[u8], subdocuments: bool) -> Result<DecodedUpdate, DocumentError> {
        let (update, walked) = crate::protocol::without_panics(|| {
            let walked = structs::walk(bytes).map_err(|e| match e {
                WalkError::Decode(e) => DocumentError::NotAnUpdate(e),
                WalkError::Unsupported(why) => DocumentError::Unsupported(why),
            })?;
            if walked.subdocuments && !subdocuments {
                return Err(DocumentError::Unsupported("subdocuments"));
            }
            let update = Update::decode_v1(bytes)?;
            Ok::<_, DocumentError>((update, walked))
        })??;
        Ok(DecodedUpdate {
            bytes: bytes.to_vec(),
            update,
            walked,
        })
    }

    /// Applies an update: what the document can integrate now goes to yrs,
    /// the structs that build on changes it lacks wait and are applied with
    /// the update that brings those (see [`crate::waiting`]).
    ///
    /// [`DocumentError::TooMuchWaiting`]: nothing was applied. [`DocumentError::Broken`]
    /// means yrs panicked while applying it (fuzzing found updates that make it index
    /// out of bounds): this document may be inconsistent and must be replaced, for
    /// instance rebuilt from storage with [`Document::restore`].
    pub fn apply(&self, update: DecodedUpdate) -> Result<(), DocumentError> {
        let mut local = self.local();
        let DecodedUpdate {
            bytes,
            update,
            walked,
        } = update;
        self.integrate(&mut local, &walked, &bytes, Some(update))?;
        // Waiting structs that became whole only now (one that overlapped the
        // end of a run), each round integrating or dropping one at least.
        let nothing = Walked::default();
        let mut rounds = local.waiting.size().0;
        while local.waiting.has_ready() && rounds > 0 {
            self.integrate(&mut local, &nothing, &[], None)?;
            rounds -= 1;
        }
        Ok(())
    }

    /// Plans what yrs can integrate of `walked` and the waiting structs, and
    /// hands it to yrs (`decoded`, the update as yrs decoded it, when it can
    /// go whole). When yrs refuses a struct partway, the waiting structs of
    /// the plan are dropped (which one it was is not known) and the rest is
    /// planned again; a refusal with none of them refuses the update.
    fn integrate(
        &self,
        local: &mut Local,
        walked: &Walked,
        bytes: &[u8],
        mut decoded: Option<Update>,
    ) -> Result<(), DocumentError> {
        loop {
            let plan = local.waiting.plan(walked, &local.clocks);
            let changes = local
                .waiting
                .changes(&plan, walked, bytes, &local.clocks)
                .ok_or(DocumentError::TooMuchWaiting)?;
            let integrable = match decoded.take() {
                Some(update) if plan.whole => update,
                _ => self.runs_update(&local.waiting, &plan, walked, bytes)?,
            };
            let result = if integrable.is_empty() {
                Ok(())
            } else {
                self.integrate_whole(integrable)
            };
            match result {
                Ok(()) => {
                    for (client, end) in &plan.ends {
                        let clock = local.clocks.entry(*client).or_default();
                        *clock = (*clock).max(*end);
                    }
                    local.waiting.commit(&plan, changes, &local.clocks);
                    return Ok(());
                }
                Err(DocumentError::Rejected(e)) => {
                    local.clocks = self.yrs_clocks();
                    if plan.taken().is_empty() {
                        local.waiting.resync(&local.clocks);
                        return Err(e.into());
                    }
                    local.waiting.drop_taken(&plan, &local.clocks);
                    local.waiting.resync(&local.clocks);
                }
                Err(e) => {
                    // The caller replaces the document; until then (and in
                    // `restore`, which goes on with it) the clocks are yrs's.
                    local.clocks = self.yrs_clocks();
                    local.waiting.resync(&local.clocks);
                    return Err(e);
                }
            }
        }
    }

    /// The planned runs as one update.
    fn runs_update(
        &self,
        waiting: &Waiting,
        plan: &Plan,
        walked: &Walked,
        bytes: &[u8],
    ) -> Result<Update, DocumentError> {
        let lists = waiting.lists(plan, walked, bytes);
        let delete_set = match &bytes[walked.delete_set.clone()] {
            [] => &[0][..],
            encoded => encoded,
        };
        let update = structs::write_update(&lists, delete_set);
        Ok(crate::protocol::without_panics(|| {
            Update::decode_v1(&update)
        })??)
    }

    /// Hands yrs an update it can integrate whole.
    fn integrate_whole(&self, update: Update) -> Result<(), DocumentError> {
        let applied = crate::protocol::without_panics(|| {
            let mut txn = self.awareness.doc().transact_mut();
            let result = txn.apply_update(update);
            (result, Self::drop_pending(&mut txn))
        });
        match applied {
            Ok((result, false)) => Ok(result?),
            // yrs panicked, or kept structs pending although every
            // dependency was there: not to be trusted.
            Err(_) | Ok((_, true)) => Err(DocumentError::Broken),
        }
    }

    fn yrs_clocks(&self) -> Clocks {
        let state = self.state_vector();
        state
            .iter()
            .map(|(client, clock)| (*client, *clock))
            .collect()
    }

    /// Empties the update yrs keeps pending, if any, and says whether it held
    /// structs. It never should (yrs only receives structs it can integrate);
    /// if it did, yrs would integrate them later behind a hole, the state in
    /// which it frees memory that it then reads.
    fn drop_pending(txn: &mut yrs::TransactionMut<'_>) -> bool {
        match txn.store_mut().pending_update_mut() {
            Some(pending) if !pending.update.is_empty() => {
                pending.update = Update::new();
                pending.missing = StateVector::default();
                true
            }
            _ => false,
        }
    }

    /// The structs waiting for changes the document lacks, and their encoded
    /// bytes.
    pub fn waiting_size(&self) -> (usize, usize) {
        self.local().waiting.size()
    }

    /// Whether the clocks kept beside yrs are yrs's own, for tests and
    /// fuzzing: every update yrs accepted was integrated whole.
    #[doc(hidden)]
    pub fn clocks_match_yrs(&self) -> bool {
        let kept: Clocks = self
            .local()
            .clocks
            .iter()
            .filter(|(_, clock)| **clock > 0)
            .map(|(c, k)| (*c, *k))
            .collect();
        kept == self.yrs_clocks()
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// What a peer with `remote` state lacks, as one update, with the
    /// changes that wait for what they build on (those the update can hold:
    /// after a skip when there is a gap), and with the deletions yrs keeps
    /// pending when it can encode them.
    pub fn diff(&self, remote: &StateVector) -> Vec<u8> {
        let present = self
            .with_pending(remote)
            .unwrap_or_else(|_| self.awareness.doc().transact().encode_diff_v1(remote));
        self.with_waiting(present, remote).0
    }

    /// The whole document as one update, waiting changes and pending
    /// deletions included: what a compaction stores. An error when it cannot
    /// hold them all; the log must then stay as it is, since a snapshot would
    /// lose them.
    pub fn snapshot(&self) -> Result<Vec<u8>, DocumentError> {
        let remote = StateVector::default();
        let (update, complete) = self.with_waiting(self.with_pending(&remote)?, &remote);
        if complete {
            Ok(update)
        } else {
            Err(DocumentError::Incomplete)
        }
    }

    /// yrs merges what it keeps pending (only deletions here) into the
    /// encoding and unwraps the merge, which panicked on pending updates that a
    /// client could craft (found by fuzzing): a panic becomes an error here.
    fn with_pending(&self, remote: &StateVector) -> Result<Vec<u8>, DocumentError> {
        Ok(crate::protocol::without_panics(|| {
            self.awareness
                .doc()
                .transact()
                .encode_state_as_update_v1(remote)
        })?)
    }

    /// Adds the waiting structs to an update of the document, and says whether
    /// all those the peer lacks are in it.
    fn with_waiting(&self, present: Vec<u8>, remote: &StateVector) -> (Vec<u8>, bool) {
        let local = self.local();
        let waiting = &local.waiting;
        if waiting.is_empty() {
            return (present, true);
        }
        let Ok(walked) = structs::walk(&present) else {
            return (present, false);
        };
        let mut lists: Vec<ListWriter<'_>> = walked
            .clients
            .iter()
            .map(|c| ListWriter {
                client: c.client,
                first_clock: c.structs.first().map_or(0, |s| s.clock),
                structs: c
                    .structs
                    .iter()
                    .map(|s| Ok(&present[s.bytes.clone()]))
                    .collect(),
            })
            .collect();
        let ends = walked
            .clients
            .iter()
            .filter_map(|c| c.structs.last().map(|s| (c.client, s.end())))
            .collect();
        let complete = waiting.append_to(&mut lists, &ends, remote);
        let update = structs::write_update(&lists, &present[walked.delete_set.clone()]);
        (update, complete)
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
        // Found by fuzzing: a step 2 whose update stayed pending in yrs, which
        // then failed to merge it back when it encoded the document. Its
        // structs now wait outside yrs, and the snapshot carries them.
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
            assert!(doc.waiting_size().0 > 0, "it waits for what it builds on");
            let snapshot = doc.snapshot().expect("the snapshot holds what waits");
            let (restored, skipped) = Document::restore([&snapshot[..]]);
            assert_eq!(skipped, 0);
            assert_eq!(restored.waiting_size(), doc.waiting_size());
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
    fn updates_that_broke_yrs_wait_or_are_refused() {
        // The first update starts past its client's clock: it waits. The
        // second declares a clock past 2^31: refused before yrs sees it (a
        // debug build of yrs already panics on it while decoding).
        let doc = Document::new();
        let mut outcomes = Vec::new();
        for message in crate::protocol::decode(&BREAKING_FRAME).unwrap() {
            if let crate::ClientMessage::Update(update) = message {
                outcomes.push(Document::decode_update(&update).and_then(|u| doc.apply(u)));
            }
        }
        assert!(matches!(
            &outcomes[..],
            [
                Ok(()),
                Err(DocumentError::Unsupported(_) | DocumentError::Protocol(_))
            ]
        ));
        assert!(doc.waiting_size().0 > 0);
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

    /// The input kept in `fuzz/known-issues/`: a delete set, then two updates
    /// of one client, the first from clock 16 (yrs integrated it behind a hole
    /// at [0, 16)), the second from clock 8, over the hole (yrs split a struct
    /// at 16, freed the right half and read it). Now the first waits, since
    /// the document has nothing of that client, and the second, which
    /// declares a clock past 2^31, is refused. Nothing reaches yrs with a
    /// hole; a unit test cannot see a use after free, `collab_message` under
    /// AddressSanitizer does (`fuzz/known-issues/README.md`).
    const KEPT_USE_AFTER_FREE: &[u8] =
        include_bytes!("../../../fuzz/known-issues/yrs-0.28.1-use-after-free-integrate-item");

    #[test]
    fn the_kept_use_after_free_input_waits_or_is_refused() {
        let doc = Document::new();
        let mut outcomes = Vec::new();
        for message in crate::protocol::decode(KEPT_USE_AFTER_FREE).unwrap() {
            if let crate::ClientMessage::Update(update) = message {
                outcomes.push(Document::decode_update(&update).and_then(|u| doc.apply(u)));
            }
        }
        assert!(
            matches!(
                &outcomes[..],
                [Ok(()), Ok(()), Err(DocumentError::Unsupported(_))]
            ),
            "{outcomes:?}"
        );
        assert_eq!(
            doc.state_vector(),
            StateVector::default(),
            "yrs got no struct"
        );
        assert_eq!(
            doc.waiting_size().0,
            1,
            "\"hello world\" from clock 16 waits"
        );
        assert!(doc.snapshot().is_ok());
    }

    /// One struct of client 1 at `clock`: "hello world" at the root of the
    /// text "t", without origins (the minimal reproducer in
    /// `fuzz/known-issues/yrs-0.28.1-use-after-free-integrate-item.md`).
    fn hello_at(clock: u8) -> Vec<u8> {
        let mut update = vec![1, 1, 1, clock, 0x04, 1, 1, b't', 11];
        update.extend_from_slice(b"hello world");
        update.push(0);
        update
    }

    fn apply_bytes(doc: &Document, bytes: &[u8]) -> Result<(), DocumentError> {
        let applied = Document::decode_update(bytes).and_then(|u| doc.apply(u));
        assert!(doc.clocks_match_yrs());
        applied
    }

    #[test]
    fn structs_ahead_of_their_clients_clock_wait_until_it_reaches_them() {
        let doc = Document::new();
        apply_bytes(&doc, &hello_at(16)).unwrap();
        apply_bytes(&doc, &hello_at(8)).unwrap();
        assert_eq!(doc.state_vector(), StateVector::default());
        assert_eq!(doc.waiting_size().0, 2);

        // Clocks 0..8 arrive: [8, 19) follows; [16, 27) overlaps it, so it
        // goes to yrs next, on its own, which trims it to [19, 27).
        let mut prefix = vec![1, 1, 1, 0, 0x04, 1, 1, b't', 8];
        prefix.extend_from_slice(b"01234567");
        prefix.push(0);
        apply_bytes(&doc, &prefix).unwrap();
        assert_eq!(doc.state_vector().get(&ClientID::new(1)), 27);
        assert_eq!(doc.waiting_size(), (0, 0));
        assert_eq!(text_of(&doc.snapshot().unwrap()).len(), 27);
    }

    /// `count` edits by one client, each an update of its own.
    fn edits(doc: &Doc, count: usize) -> Vec<Vec<u8>> {
        (0..count).map(|i| edit(doc, &format!("{i},"))).collect()
    }

    #[test]
    fn updates_out_of_order_wait_and_converge() {
        let alice = Doc::with_client_id(1);
        let mut updates = edits(&alice, 3);
        // Bob edits after Alice's edits reached him: his update builds on hers.
        let bob = Doc::with_client_id(2);
        for u in &updates {
            bob.transact_mut()
                .apply_update(Update::decode_v1(u).unwrap())
                .unwrap();
        }
        updates.push(edit(&bob, "bob"));
        let expected = text_of(
            &bob.transact()
                .encode_state_as_update_v1(&Default::default()),
        );

        let doc = Document::new();
        for i in [3, 2, 0, 1] {
            apply_bytes(&doc, &updates[i]).unwrap();
            if i != 1 {
                assert!(doc.waiting_size().0 > 0 || i == 0);
            }
        }
        assert_eq!(doc.waiting_size(), (0, 0));
        assert_eq!(text_of(&doc.snapshot().unwrap()), expected);
        assert_eq!(doc.state_vector(), bob.transact().state_vector());
    }

    #[test]
    fn a_peer_gets_waiting_structs_in_the_diff() {
        let alice = Doc::with_client_id(1);
        let updates = edits(&alice, 2);
        let doc = Document::new();
        apply_bytes(&doc, &updates[1]).unwrap();
        assert_eq!(doc.waiting_size().0, 1);

        // A peer that syncs now receives the waiting edit, and holds it until
        // the first one arrives, as Yjs does.
        let peer = Doc::new();
        let text = peer.get_or_insert_text("t");
        let diff = doc.diff(&peer.transact().state_vector());
        peer.transact_mut()
            .apply_update(Update::decode_v1(&diff).unwrap())
            .unwrap();
        peer.transact_mut()
            .apply_update(Update::decode_v1(&updates[0]).unwrap())
            .unwrap();
        assert_eq!(text.get_string(&peer.transact()), "0,1,");

        // And the snapshot keeps it: restored, it waits again.
        let (restored, _) = Document::restore([&doc.snapshot().unwrap()[..]]);
        assert_eq!(restored.waiting_size(), doc.waiting_size());
        apply_bytes(&restored, &updates[0]).unwrap();
        assert_eq!(text_of(&restored.snapshot().unwrap()), "0,1,");
    }

    #[test]
    fn waiting_is_bounded_and_a_refused_update_leaves_nothing() {
        let doc = Document::new();
        let mut refused = None;
        // Single-struct updates of distinct clients, each from clock 1: none
        // can be integrated while those clients' clock 0 is missing.
        for client in 1..=(crate::waiting::MAX_WAITING_STRUCTS as u64 + 1) {
            let mut update = vec![1, 1];
            yrs::encoding::write::Write::write_var(&mut update, client);
            update.extend_from_slice(&[1, 0x04, 1, 1, b't', 1, b'x', 0]);
            match apply_bytes(&doc, &update) {
                Ok(()) => {}
                Err(e) => {
                    refused = Some((client, e));
                    break;
                }
            }
        }
        let (client, error) = refused.expect("refused at the limit");
        assert!(matches!(error, DocumentError::TooMuchWaiting));
        assert_eq!(client, crate::waiting::MAX_WAITING_STRUCTS as u64 + 1);
        assert_eq!(doc.waiting_size().0, crate::waiting::MAX_WAITING_STRUCTS);
        // Ordinary edits still apply.
        let alice = Doc::with_client_id(1_000_000);
        apply_bytes(&doc, &edit(&alice, "still here")).unwrap();
        assert_eq!(doc.state_vector().get(&ClientID::new(1_000_000)), 10);
    }

    /// A small deterministic generator for the shuffles below.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, below: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % below as u64) as usize
        }
    }

    #[test]
    fn concurrent_edits_delivered_in_any_order_converge() {
        for seed in 0..40 {
            let mut rng = Lcg(seed);
            let clients: Vec<Doc> = (1..=3).map(Doc::with_client_id).collect();
            let mut log: Vec<Vec<u8>> = Vec::new();
            for _ in 0..30 {
                let who = &clients[rng.next(3)];
                // Sometimes a client first catches up on part of the log.
                if !log.is_empty() && rng.next(2) == 0 {
                    let upto = rng.next(log.len()) + 1;
                    for u in &log[..upto] {
                        who.transact_mut()
                            .apply_update(Update::decode_v1(u).unwrap())
                            .unwrap();
                    }
                }
                let before = who.transact().state_vector();
                let t = who.get_or_insert_text("t");
                {
                    let mut txn = who.transact_mut();
                    let len = t.len(&txn);
                    if len > 2 && rng.next(3) == 0 {
                        t.remove_range(&mut txn, rng.next(len as usize) as u32 / 2, 1);
                    } else {
                        let at = rng.next(len as usize + 1) as u32;
                        t.insert(&mut txn, at, "ab");
                    }
                }
                log.push(who.transact().encode_state_as_update_v1(&before));
            }
            let reference = Doc::new();
            for u in &log {
                reference
                    .transact_mut()
                    .apply_update(Update::decode_v1(u).unwrap())
                    .unwrap();
            }
            let expected = text_of(
                &reference
                    .transact()
                    .encode_state_as_update_v1(&Default::default()),
            );

            let mut order: Vec<usize> = (0..log.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.next(i + 1));
            }
            let doc = Document::new();
            for (n, &i) in order.iter().enumerate() {
                apply_bytes(&doc, &log[i]).unwrap();
                if n == order.len() / 2 {
                    // A snapshot half-way, restored, goes on just as well.
                    let (restored, skipped) = Document::restore([&doc.snapshot().unwrap()[..]]);
                    assert_eq!(skipped, 0);
                    assert_eq!(restored.waiting_size(), doc.waiting_size(), "seed {seed}");
                }
            }
            assert_eq!(doc.waiting_size(), (0, 0), "seed {seed}");
            assert_eq!(text_of(&doc.snapshot().unwrap()), expected, "seed {seed}");
        }
    }

    #[test]
    fn deeply_nested_values_are_refused_before_yrs_recurses_into_them() {
        // 20,000 nested arrays (40 kB): yrs's decoder recursed once per level
        // and overflowed the 2 MiB stack of a tokio worker, aborting the server.
        let mut update = vec![1, 1, 1, 0, 0x08, 1, 1, b't', 1];
        for _ in 0..20_000 {
            update.extend_from_slice(&[117, 1]);
        }
        update.extend_from_slice(&[126, 0]);
        let decoded = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || Document::decode_update(&update).map(|_| ()))
            .unwrap()
            .join()
            .unwrap();
        assert!(matches!(decoded, Err(DocumentError::Unsupported(_))));
    }

    #[test]
    fn a_subdocument_is_refused_from_clients_and_a_stored_one_wiped_when_dropped() {
        // yrs keeps such a document alive through the subdocument's item; the
        // leak itself shows under LeakSanitizer (`collab_message`), here only
        // that dropping goes through the wipe.
        let author = Doc::with_client_id(3);
        let map = author.get_or_insert_map("m");
        yrs::Map::insert(&map, &mut author.transact_mut(), "sub", Doc::new());
        let update = author
            .transact()
            .encode_state_as_update_v1(&Default::default());
        let doc = Document::new();
        assert!(matches!(
            Document::decode_client_update(&update),
            Err(DocumentError::Unsupported("subdocuments"))
        ));
        apply_bytes(&doc, &update).unwrap();
        assert_eq!(doc.awareness.doc().transact().subdocs().count(), 1);
        drop(doc);
    }
}
