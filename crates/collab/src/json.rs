//! A stored document as the document API serves it, computed on scratch
//! documents (never on a live one): its top-level types as plain JSON
//! ([`to_json`]), and the update that brings it back to an earlier version
//! ([`restore_update`]).
//!
//! Top-level types arrive in an update without their kind (Yjs does not
//! encode it), so it is told from their content as yrs does: map entries make
//! a map, characters a text, XML nodes an XML fragment, anything else an
//! array. A top-level type with no content left says nothing of its kind and
//! is left out, as `Y.Doc#toJSON` leaves it out.
//!
//! Restoring is undoing: the version's state is a past state of the document
//! (each version is a snapshot the document's log was compacted into), so the
//! changes since are exactly what the current state has beyond it. Those are
//! undone, as `Y.UndoManager` undoes them, on a copy that holds both states:
//! what was inserted since is deleted, and what was deleted since is inserted
//! again (as new items of a client id of its own, since deleted items cannot
//! come back in a CRDT). The result is one ordinary update that every client
//! merges like any other; edits made concurrently with it are merged too.

use serde_json::{Map, Value};
use yrs::branch::BranchPtr;
use yrs::types::AsPrelim;
use yrs::undo::{Options as UndoOptions, StackItem, UndoManager};
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayRef, Doc, GetString, IdSet, In, Map as _, MapRef, Number, Options, Out,
    ReadTxn, StateVector, TextRef, Transact, Update, XmlFragmentRef, XmlTextRef, ID,
};

use crate::document::Scratch;
use crate::{DocumentError, ProtocolError};

/// The top-level types of the document an update describes (a whole stored
/// document, as [`crate::Document::snapshot`] encodes it), as one JSON object
/// by name: a text is a string, a map an object, an array an array, an XML
/// fragment its XML as a string. Within them, nested texts and XML are
/// strings too, binary values arrays of bytes, and subdocuments `{ guid }`.
pub fn to_json(update: &[u8]) -> Result<Value, DocumentError> {
    guarded(|| {
        let doc = Scratch(Doc::new());
        apply_update(&doc, decode_stored(update)?)?;
        let txn = doc.transact();
        let mut object = Map::new();
        for (name, root) in txn.root_refs() {
            let branch = match root {
                Out::UndefinedRef(branch) => branch,
                typed => {
                    object.insert(name.to_owned(), out_json(&txn, typed));
                    continue;
                }
            };
            if let Some(value) = root_json(&txn, branch) {
                object.insert(name.to_owned(), value);
            }
        }
        Ok(Value::Object(object))
    })
}

/// The update that, applied to the document `current` describes, makes its
/// content equal that of `version`, an earlier state of the same document
/// (both whole documents as stored). Applying it where `current` has been
/// edited further keeps those edits, merged as concurrent ones.
pub fn restore_update(current: &[u8], version: &[u8]) -> Result<Vec<u8>, DocumentError> {
    guarded(|| {
        let version = decode_stored(version)?;
        let current = decode_stored(current)?;
        let current_state = current.state_vector();
        let mut seen = version.state_vector();
        seen.merge(current_state.clone());
        // Deleted items must keep their content to be inserted again.
        let work = Scratch(Doc::with_options(Options {
            skip_gc: true,
            ..own_client(&seen)
        }));
        apply_update(&work, version)?;
        let before = work.transact().snapshot();
        apply_update(&work, current)?;
        let after = work.transact().snapshot();

        let mut inserted = IdSet::new();
        for (client, clock) in after.state_map.iter() {
            let from = before.state_map.get(client);
            if *clock > from {
                inserted.insert(ID::new(*client, from), clock - from);
            }
        }
        let deleted = after.delete_set.diff(&before.delete_set);
        let roots: Vec<BranchPtr> = work
            .transact()
            .root_refs()
            .filter_map(|(_, root)| root.try_branch().map(BranchPtr::from))
            .collect();
        let mut undo: UndoManager<()> = UndoManager::with_options(UndoOptions {
            init_undo_stack: vec![StackItem::new(work.guid(), deleted, inserted)],
            ..UndoOptions::default()
        });
        for root in &roots {
            undo.expand_scope(&work, root);
        }
        undo.undo_blocking();
        drop(undo);
        let restoring = work.transact().encode_state_as_update_v1(&current_state);
        Ok(restoring)
    })
}

/// Options of a scratch document whose client id is none of `seen`'s, so that
/// what it inserts is new to every client of the document.
fn own_client(seen: &StateVector) -> Options {
    loop {
        let options = Options::default();
        if !seen.contains_client(&options.client_id) {
            return options;
        }
    }
}

fn decode(bytes: &[u8]) -> Result<Update, DocumentError> {
    Ok(Update::decode_v1(bytes)?)
}

/// A whole stored document as yrs can take it: only what integrates at once
/// (see [`crate::document::integrable`]; handing yrs the rest is unsafe in 0.28.1).
fn decode_stored(bytes: &[u8]) -> Result<Update, DocumentError> {
    decode(&crate::document::integrable(bytes)?)
}

#[cfg(test)]
fn apply(doc: &Doc, bytes: &[u8]) -> Result<(), DocumentError> {
    apply_update(doc, decode(bytes)?)
}

fn apply_update(doc: &Doc, update: Update) -> Result<(), DocumentError> {
    Ok(doc.transact_mut().apply_update(update)?)
}

/// Runs `f`, turning a panic in yrs into [`ProtocolError::Rejected`].
fn guarded<T>(f: impl FnOnce() -> Result<T, DocumentError>) -> Result<T, DocumentError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or(Err(DocumentError::Protocol(ProtocolError::Rejected)))
}

/// A top-level type of unknown kind as JSON, the kind told from its content;
/// `None` when it has none left.
fn root_json<T: ReadTxn>(txn: &T, branch: BranchPtr) -> Option<Value> {
    let map = MapRef::from(branch);
    if branch.content_len == 0 && map.len(txn) == 0 {
        return None;
    }
    Some(match Out::UndefinedRef(branch).as_prelim(txn) {
        In::Text(_) => Value::String(TextRef::from(branch).get_string(txn)),
        In::XmlText(_) => Value::String(XmlTextRef::from(branch).get_string(txn)),
        In::Array(_) => {
            let array = ArrayRef::from(branch);
            let xml = array
                .iter(txn)
                .any(|v| matches!(v, Out::YXmlElement(_) | Out::YXmlText(_)));
            if xml {
                Value::String(XmlFragmentRef::from(branch).get_string(txn))
            } else {
                Value::Array(array.iter(txn).map(|v| out_json(txn, v)).collect())
            }
        }
        In::XmlElement(_) | In::XmlFragment(_) => {
            Value::String(XmlFragmentRef::from(branch).get_string(txn))
        }
        _ => out_json(txn, Out::YMap(map)),
    })
}

/// A value within a document as JSON.
fn out_json<T: ReadTxn>(txn: &T, value: Out) -> Value {
    match value {
        Out::Any(any) => any_json(&any),
        Out::YText(text) => Value::String(text.get_string(txn)),
        Out::YArray(array) => Value::Array(array.iter(txn).map(|v| out_json(txn, v)).collect()),
        Out::YMap(map) => Value::Object(
            map.iter(txn)
                .map(|(key, v)| (key.to_owned(), out_json(txn, v)))
                .collect(),
        ),
        Out::YXmlElement(xml) => Value::String(xml.get_string(txn)),
        Out::YXmlFragment(xml) => Value::String(xml.get_string(txn)),
        Out::YXmlText(xml) => Value::String(xml.get_string(txn)),
        Out::YDoc(doc) => serde_json::json!({ "guid": doc.guid().as_ref() }),
        // A nested type of no known kind (and weak links, when yrs has them).
        _ => Value::Null,
    }
}

/// A primitive value as JSON: `undefined` is null, binary an array of bytes,
/// a number that is not finite null.
fn any_json(any: &Any) -> Value {
    match any {
        Any::Null | Any::Undefined => Value::Null,
        Any::Bool(b) => Value::Bool(*b),
        Any::Number(Number::Int(i)) => Value::from(*i),
        Any::Number(Number::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        Any::String(s) => Value::String(s.to_string()),
        Any::Buffer(bytes) => Value::Array(bytes.iter().map(|b| Value::from(*b)).collect()),
        Any::Array(items) => Value::Array(items.iter().map(any_json).collect()),
        Any::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(key, v)| (key.clone(), any_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;
    use yrs::{MapPrelim, Text, WriteTxn, XmlElementPrelim, XmlFragment, XmlTextPrelim};

    fn whole(doc: &Doc) -> Vec<u8> {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    fn applied(doc: &Doc, update: &[u8]) {
        apply(doc, update).unwrap();
    }

    #[test]
    fn top_level_types_render_by_their_content() {
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            let text = txn.get_or_insert_text("text");
            text.insert(&mut txn, 0, "hello");
            let map = txn.get_or_insert_map("map");
            map.insert(&mut txn, "n", 1);
            map.insert(&mut txn, "f", 1.5);
            map.insert(&mut txn, "s", "x");
            let nested = map.insert(&mut txn, "nested", MapPrelim::default());
            nested.insert(&mut txn, "list", yrs::ArrayPrelim::from([true, false]));
            let array = txn.get_or_insert_array("array");
            array.insert_range(&mut txn, 0, ["a", "b"]);
            let xml = txn.get_or_insert_xml_fragment("xml");
            let p = xml.insert(&mut txn, 0, XmlElementPrelim::empty("p"));
            p.insert(&mut txn, 0, XmlTextPrelim::new("hi"));
            let gone = txn.get_or_insert_text("gone");
            gone.insert(&mut txn, 0, "bye");
            gone.remove_range(&mut txn, 0, 3);
        }
        assert_eq!(
            to_json(&whole(&doc)).unwrap(),
            json!({
                "text": "hello",
                "map": { "n": 1, "f": 1.5, "s": "x", "nested": { "list": [true, false] } },
                "array": ["a", "b"],
                "xml": "<p>hi</p>",
            })
        );
        assert_eq!(to_json(&[0, 0]).unwrap(), json!({}));
        assert!(to_json(&[0xff, 0xfe]).is_err());
    }

    /// A document edited past a version, every kind of change: inserts,
    /// deletions, overwritten and removed map keys, a removed nested map, and
    /// a top-level type created after the version.
    #[test]
    fn restoring_a_version_brings_its_content_back() {
        let doc = Doc::new();
        let (text, map, array) = {
            let mut txn = doc.transact_mut();
            (
                txn.get_or_insert_text("text"),
                txn.get_or_insert_map("map"),
                txn.get_or_insert_array("array"),
            )
        };
        {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "hello world");
            map.insert(&mut txn, "kept", "v1");
            map.insert(&mut txn, "overwritten", "old");
            map.insert(&mut txn, "removed", 7);
            let nested = map.insert(&mut txn, "nested", MapPrelim::default());
            nested.insert(&mut txn, "deep", "value");
            array.insert_range(&mut txn, 0, [1, 2, 3]);
        }
        let version = whole(&doc);
        {
            let mut txn = doc.transact_mut();
            text.remove_range(&mut txn, 0, 6);
            text.insert(&mut txn, 5, ", again");
            map.insert(&mut txn, "overwritten", "new");
            map.remove(&mut txn, "removed");
            map.remove(&mut txn, "nested");
            map.insert(&mut txn, "added", true);
            array.remove(&mut txn, 1);
            array.push_back(&mut txn, 4);
            let later = txn.get_or_insert_text("later");
            later.insert(&mut txn, 0, "new root");
        }
        let current = whole(&doc);
        assert_ne!(to_json(&current).unwrap(), to_json(&version).unwrap());

        let restoring = restore_update(&current, &version).unwrap();
        applied(&doc, &restoring);
        assert_eq!(to_json(&whole(&doc)).unwrap(), to_json(&version).unwrap());

        // A client that edited meanwhile keeps its edit and converges.
        let client = Doc::new();
        applied(&client, &current);
        {
            let mut txn = client.transact_mut();
            let text = txn.get_or_insert_text("text");
            text.insert(&mut txn, 0, ">");
        }
        let edit = whole(&client);
        applied(&client, &restoring);
        applied(&doc, &edit);
        assert_eq!(
            to_json(&whole(&client)).unwrap(),
            to_json(&whole(&doc)).unwrap()
        );
        let text = to_json(&whole(&doc)).unwrap()["text"].clone();
        let text = text.as_str().unwrap();
        assert_eq!(text.replace('>', ""), "hello world", "{text}");
    }

    /// XML, formatted text and nested arrays, over two versions: the older
    /// one restored after the newer.
    #[test]
    fn restoring_an_older_version_past_a_newer_one() {
        let doc = Doc::new();
        let (xml, text, list) = {
            let mut txn = doc.transact_mut();
            (
                txn.get_or_insert_xml_fragment("xml"),
                txn.get_or_insert_text("text"),
                txn.get_or_insert_array("list"),
            )
        };
        {
            let mut txn = doc.transact_mut();
            let p = xml.insert(&mut txn, 0, XmlElementPrelim::empty("p"));
            p.insert(&mut txn, 0, XmlTextPrelim::new("first"));
            let bold = HashMap::from([("bold".into(), Any::Bool(true))]);
            text.insert_with_attributes(&mut txn, 0, "bold", bold);
            list.push_back(&mut txn, yrs::ArrayPrelim::from([1, 2]));
        }
        let older = whole(&doc);
        {
            let mut txn = doc.transact_mut();
            xml.remove_range(&mut txn, 0, 1);
            xml.insert(&mut txn, 0, XmlElementPrelim::empty("h1"));
            text.insert(&mut txn, 4, " plain");
            list.remove(&mut txn, 0);
        }
        let newer = whole(&doc);
        {
            let mut txn = doc.transact_mut();
            text.remove_range(&mut txn, 0, 2);
            list.push_back(&mut txn, "x");
        }
        let current = whole(&doc);
        for (version, expected) in [
            (&newer, json!({ "xml": "<h1></h1>", "text": "bold plain" })),
            (
                &older,
                json!({ "xml": "<p>first</p>", "text": "bold", "list": [[1, 2]] }),
            ),
        ] {
            let restoring = restore_update(&whole(&doc), version).unwrap();
            applied(&doc, &restoring);
            assert_eq!(to_json(&whole(&doc)).unwrap(), expected);
        }
        assert_ne!(whole(&doc), current);
    }

    #[test]
    fn restoring_the_current_state_changes_nothing() {
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            let text = txn.get_or_insert_text("text");
            text.insert(&mut txn, 0, "same");
        }
        let state = whole(&doc);
        let restoring = restore_update(&state, &state).unwrap();
        applied(&doc, &restoring);
        assert_eq!(whole(&doc), state);
        assert!(restore_update(&state, &[0xff]).is_err());
    }

    /// A stored document whose snapshot holds a struct that waits (client 1
    /// from clock 16, after a skip): yrs only gets what integrates, so neither
    /// reading it nor restoring over it hands yrs a hole.
    #[test]
    fn stored_documents_with_waiting_structs_read_and_restore() {
        let mut ahead = vec![1, 1, 1, 16, 0x04, 1, 1, b't', 11];
        ahead.extend_from_slice(b"hello world");
        ahead.push(0);
        let document = crate::Document::new();
        document
            .apply(crate::Document::decode_update(&ahead).unwrap())
            .unwrap();
        let author = Doc::with_client_id(2);
        author
            .get_or_insert_text("text")
            .insert(&mut author.transact_mut(), 0, "shown");
        let edit = whole(&author);
        document
            .apply(crate::Document::decode_update(&edit).unwrap())
            .unwrap();
        let stored = document.snapshot().unwrap();
        assert_eq!(to_json(&stored).unwrap(), json!({ "text": "shown" }));
        let restoring = restore_update(&stored, &edit).unwrap();
        assert!(Update::decode_v1(&restoring).is_ok());
    }
}
