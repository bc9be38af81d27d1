//! Sequences of updates from several clients applied to one `Document` the
//! way the server applies them: out of order, twice, late, mixed with hostile
//! bytes, with compactions (snapshot) and reloads (restore from the log) in
//! between.
//!
//! The input is a script. Three honest clients (yrs documents) edit a text, a
//! map and an array; each learns the others' edits only in the order they were
//! made (as y-websocket relays them), so every honest update is well formed.
//! Their updates reach the server in whatever order the script says. Hostile
//! updates are raw script bytes or honest updates with a byte changed, sent
//! through the y-websocket decoder as a client's would be.
//!
//! Checked: nothing panics; after every apply, the clocks the document keeps
//! beside yrs are yrs's own (a hole in yrs's block store would show here);
//! waiting structs stay within their limits; diffs decode. While no hostile
//! update was accepted: a snapshot restores to the same waiting structs, every honest update
//! is accepted, nothing breaks, and once all of them are delivered the server
//! holds exactly what the clients made, with nothing left waiting; a peer that
//! syncs from a partial log receives all of it in the diff.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use switchboard_collab::{protocol, ClientMessage, Document, DocumentError};
use yrs::updates::decoder::Decode;
use yrs::{
    Array, Doc, GetString, Map, OffsetKind, Options, ReadTxn, StateVector, Text, Transact, Update,
};

static QUIET_HOOK: Once = Once::new();

struct Script<'a> {
    bytes: &'a [u8],
}

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((first, rest)) => {
                self.bytes = rest;
                *first
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.bytes.len());
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        taken
    }
}

/// An honest client: its document and how far it has read the others' edits.
struct Client {
    doc: Doc,
    seen: usize,
}

/// The server's side of one document: the `Document` and its log (what the
/// Store holds), rebuilt from the log when yrs breaks, as the room does.
struct Server {
    document: Document,
    log: Vec<Vec<u8>>,
    tainted: bool,
}

impl Server {
    /// Checks and applies an update as the room does; stores it if accepted.
    fn receive(&mut self, update: &[u8], honest: bool) {
        let applied = Document::decode_client_update(update).and_then(|u| self.document.apply(u));
        // A broken document is replaced below; any other keeps yrs's clocks.
        if !matches!(applied, Err(DocumentError::Broken)) {
            assert!(self.document.clocks_match_yrs(), "clocks diverged from yrs");
        }
        let (structs, bytes) = self.document.waiting_size();
        assert!(structs <= switchboard_collab::waiting::MAX_WAITING_STRUCTS);
        assert!(bytes <= switchboard_collab::waiting::MAX_WAITING_BYTES);
        match applied {
            Ok(()) => {
                self.log.push(update.to_vec());
                if !honest {
                    self.tainted = true;
                }
            }
            Err(DocumentError::Broken) => {
                assert!(self.tainted || !honest, "an honest update broke yrs");
                self.reload();
            }
            Err(e) => assert!(self.tainted || !honest, "an honest update was refused: {e}"),
        }
    }

    fn reload(&mut self) {
        let (document, _) = Document::restore(self.log.iter().map(Vec::as_slice));
        assert!(document.clocks_match_yrs());
        self.document = document;
    }

    /// A compaction: the log becomes one snapshot, unless it cannot hold
    /// everything (the room keeps the log then).
    fn compact(&mut self) {
        if let Ok(snapshot) = self.document.snapshot() {
            let (restored, _) = Document::restore([&snapshot[..]]);
            assert!(restored.clocks_match_yrs());
            if !self.tainted {
                assert_eq!(restored.waiting_size(), self.document.waiting_size());
            }
            self.log = vec![snapshot];
        } else {
            assert!(
                self.tainted,
                "honest waiting structs could not be snapshotted"
            );
        }
    }
}

/// The text, map and array of a document, as one comparable string.
fn contents(update: &[u8]) -> String {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    let map = doc.get_or_insert_map("m");
    let array = doc.get_or_insert_array("a");
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).expect("own encoding"))
        .expect("applies");
    let txn = doc.transact();
    let mut entries: Vec<String> = map
        .iter(&txn)
        .map(|(k, v)| format!("{k}={}", v.to_string(&txn)))
        .collect();
    entries.sort();
    format!(
        "{}|{}|{}",
        text.get_string(&txn),
        entries.join(","),
        array
            .iter(&txn)
            .map(|v| v.to_string(&txn))
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn edit(client: &Client, script: &mut Script) -> Vec<u8> {
    let doc = &client.doc;
    let before = doc.transact().state_vector();
    let text = doc.get_or_insert_text("t");
    let map = doc.get_or_insert_map("m");
    let array = doc.get_or_insert_array("a");
    let op = script.byte();
    let arg = script.byte() as u32;
    {
        let mut txn = doc.transact_mut();
        // Offsets in UTF-16 units, at character boundaries, as Yjs counts.
        let current = text.get_string(&txn);
        let mut bounds: Vec<u32> = vec![0];
        for c in current.chars() {
            bounds.push(bounds[bounds.len() - 1] + c.len_utf16() as u32);
        }
        let n = bounds.len() as u32;
        match op % 5 {
            0 | 1 => {
                let s = ["a", "bc", "é", "😀", "xyz"][(arg % 5) as usize];
                text.insert(&mut txn, bounds[(arg % n) as usize], s);
            }
            2 => {
                if n > 1 {
                    let from = arg % (n - 1);
                    let to = from + 1 + (op as u32 / 5) % (n - 1 - from);
                    let (a, b) = (bounds[from as usize], bounds[to as usize]);
                    text.remove_range(&mut txn, a, b - a);
                }
            }
            3 => {
                map.insert(&mut txn, ["k", "l", "m"][(arg % 3) as usize], arg as i64);
            }
            _ => {
                let len = array.len(&txn);
                if len > 0 && op & 0x80 != 0 {
                    array.remove(&mut txn, arg % len);
                } else {
                    array.insert(&mut txn, arg % (len + 1), arg as i64);
                }
            }
        }
    }
    doc.transact().encode_state_as_update_v1(&before)
}

fuzz_target!(|input: &[u8]| {
    // yrs panics that the document catches stay quiet; the target's own
    // assertions say what failed.
    QUIET_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            if info
                .location()
                .is_some_and(|l| l.file().ends_with("collab_sequence.rs"))
            {
                eprintln!("{info}");
            }
        }))
    });
    let mut script = Script { bytes: input };
    let mut clients: Vec<Client> = (1..=3)
        .map(|id| Client {
            doc: Doc::with_options(Options {
                offset_kind: OffsetKind::Utf16,
                ..Options::with_client_id(yrs::ClientID::new(id))
            }),
            seen: 0,
        })
        .collect();
    // Every honest update in the order it was made, and whether it reached the server.
    let mut made: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut delivered: Vec<bool> = Vec::new();
    let mut server = Server {
        document: Document::new(),
        log: Vec::new(),
        tainted: false,
    };

    let mut steps = 0;
    while !script.bytes.is_empty() && steps < 200 {
        steps += 1;
        let op = script.byte();
        match op % 10 {
            // A client catches up on the others' edits, in order, then edits.
            0..=2 => {
                let who = (op as usize / 10) % clients.len();
                let client = &mut clients[who];
                for (author, update) in &made[client.seen..] {
                    if *author != who {
                        client
                            .doc
                            .transact_mut()
                            .apply_update(Update::decode_v1(update).unwrap())
                            .unwrap();
                    }
                }
                client.seen = made.len();
                let update = edit(client, &mut script);
                made.push((who, update));
                delivered.push(false);
                client.seen = made.len();
            }
            // A client edits without catching up (concurrent edits).
            3 => {
                let who = (op as usize / 10) % clients.len();
                let update = edit(&clients[who], &mut script);
                made.push((who, update));
                delivered.push(false);
            }
            // An honest update reaches the server, in any order, maybe again.
            4 | 5 => {
                if !made.is_empty() {
                    let i = script.byte() as usize % made.len();
                    server.receive(&made[i].1.clone(), true);
                    delivered[i] = true;
                }
            }
            // A hostile update: raw bytes, framed as a client would send them.
            6 => {
                let len = script.byte() as usize;
                let mut frame = vec![0, 2];
                let raw = script.take(len).to_vec();
                yrs::encoding::write::Write::write_buf(&mut frame, &raw);
                if let Ok(messages) = protocol::decode(&frame) {
                    for message in messages {
                        if let ClientMessage::Update(update) = message {
                            server.receive(&update, false);
                        }
                    }
                }
            }
            // A hostile update: an honest one with one byte changed.
            7 => {
                if !made.is_empty() {
                    let i = script.byte() as usize % made.len();
                    let mut update = made[i].1.clone();
                    let at = script.byte() as usize % update.len();
                    update[at] ^= script.byte() | 1;
                    server.receive(&update, false);
                }
            }
            // A compaction, or a reload from the log.
            8 => {
                if op & 0x80 != 0 {
                    server.reload();
                } else {
                    server.compact();
                }
            }
            // A peer syncs (step 1 with a state vector): the diff must decode.
            _ => {
                let who = (op as usize / 10) % clients.len();
                let state = clients[who].doc.transact().state_vector();
                let diff = server.document.diff(&state);
                assert!(
                    Document::decode_update(&diff).is_ok(),
                    "diff does not decode"
                );
                let _ = server.document.diff(&StateVector::default());
            }
        }
    }

    if server.tainted {
        return;
    }
    // Whatever was not delivered arrives now, in the order it was made.
    for (i, (_, update)) in made.iter().enumerate() {
        if !delivered[i] {
            server.receive(update, true);
        }
    }
    assert_eq!(
        server.document.waiting_size(),
        (0, 0),
        "honest structs left waiting"
    );
    let reference = Doc::new();
    for (_, update) in &made {
        reference
            .transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }
    let expected = contents(
        &reference
            .transact()
            .encode_state_as_update_v1(&Default::default()),
    );
    let snapshot = server.document.snapshot().expect("honest snapshot");
    assert_eq!(contents(&snapshot), expected, "the server diverged");
    // A peer restored from the first half of the log gets the rest in a diff.
    let half = &made[..made.len() / 2];
    let (peer, _) = Document::restore(half.iter().map(|(_, u)| u.as_slice()));
    let diff = server.document.diff(&peer.state_vector());
    peer.apply(Document::decode_update(&diff).expect("diff decodes"))
        .expect("diff applies");
    assert_eq!(
        contents(&peer.snapshot().unwrap()),
        expected,
        "the peer diverged"
    );
});
