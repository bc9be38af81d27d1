//! The structs of a Yjs v1 update, read without integrating them: for each
//! client, where each struct starts, how long it is, what it builds on, and
//! which bytes encode it.
//!
//! The walk uses yrs's own decoder and content decoder, so it reads exactly
//! what `Update::decode_v1` reads. In v1 each struct is encoded on its own
//! (its clock follows from its position in its client's list), so a struct's
//! bytes can be copied into another update, which is how
//! [`crate::Document`] hands yrs only the structs it can integrate.

use std::ops::Range;

use yrs::block::ItemContent;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::updates::decoder::{Decode, Decoder, DecoderV1};
use yrs::{ClientID, IdSet, ID};

/// `info` of a skip struct: a hole in a client's clocks.
const SKIP: u8 = 10;
/// `info` of a GC struct: deleted content whose items are gone.
const GC: u8 = 0;
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;
/// Content kinds (the low 4 bits of `info`), as `ItemContent::decode` reads them.
const CONTENT_DELETED: u8 = 1;
const CONTENT_JSON: u8 = 2;
const CONTENT_STRING: u8 = 4;
const CONTENT_ANY: u8 = 8;
const CONTENT_DOC: u8 = 9;

/// Clocks end below this. yrs takes differences of clocks as `i32`, so past
/// 2^31 they wrap; no client makes two billion changes, a crafted update can
/// declare them with a few bytes of deleted content.
pub(crate) const CLOCK_LIMIT: u32 = i32::MAX as u32;

/// What a struct is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Content (possibly deleted).
    Item,
    /// Garbage-collected content: a clock range without dependencies.
    Gc,
    /// A hole: the update does not say what these clocks hold.
    Skip,
}

/// One struct of an update.
#[derive(Debug, Clone)]
pub(crate) struct Struct {
    pub clock: u32,
    pub len: u32,
    pub kind: Kind,
    /// The ids it needs in the document before it can be integrated: left
    /// origin, right origin and parent item (yrs's `missing_dependency`).
    pub deps: [Option<ID>; 3],
    /// Its encoding, within the update.
    pub bytes: Range<usize>,
}

impl Struct {
    pub fn end(&self) -> u32 {
        self.clock + self.len
    }
}

/// The structs of one client, in the order (and clocks) of the update.
#[derive(Debug)]
pub(crate) struct ClientStructs {
    pub client: ClientID,
    pub structs: Vec<Struct>,
}

/// An update, walked.
#[derive(Debug, Default)]
pub(crate) struct Walked {
    pub clients: Vec<ClientStructs>,
    /// The encoded delete set (to the end of what yrs reads).
    pub delete_set: Range<usize>,
    /// Some struct holds a subdocument.
    pub subdocuments: bool,
}

/// Why a walk failed.
#[derive(Debug)]
pub(crate) enum WalkError {
    Decode(yrs::encoding::read::Error),
    /// yrs would read it, but it is outside what Yjs writes and what the
    /// server integrates safely.
    Unsupported(&'static str),
}

impl From<yrs::encoding::read::Error> for WalkError {
    fn from(e: yrs::encoding::read::Error) -> Self {
        WalkError::Decode(e)
    }
}

/// Bytes a decoder has consumed.
fn position(decoder: &mut DecoderV1<'_>, total: usize) -> usize {
    // `read_to_end` of the v1 decoder returns the rest without consuming it.
    total - decoder.read_to_end().map_or(0, <[u8]>::len)
}

/// Reads every struct of a v1 update, as `Update::decode_v1` does, and refuses
/// what yrs would read but Yjs never writes: a client listed twice (yrs would
/// append its second list to the first, out of clock order), clocks past
/// [`CLOCK_LIMIT`], a count of entries larger than the bytes left (yrs
/// reserves memory by it) and values nested deeper than [`NESTING_LIMIT`]
/// (yrs decodes them recursively: a few tens of kilobytes of nesting overflow
/// a 2 MiB thread stack, which aborts the process). Meant to run before yrs
/// decodes the same bytes.
pub(crate) fn walk(bytes: &[u8]) -> Result<Walked, WalkError> {
    let total = bytes.len();
    let mut decoder = DecoderV1::from(bytes);
    let client_count: u32 = decoder.read_var()?;
    check_count(client_count as usize, &mut decoder, total)?;
    let mut clients: Vec<ClientStructs> = Vec::with_capacity(client_count as usize);
    let mut subdocuments = false;
    for _ in 0..client_count {
        let struct_count: u32 = decoder.read_var()?;
        let client = decoder.read_client()?;
        let mut clock: u32 = decoder.read_var()?;
        check_count(struct_count as usize, &mut decoder, total)?;
        if clients.iter().any(|c| c.client == client) {
            return Err(WalkError::Unsupported(
                "a client's structs are listed twice",
            ));
        }
        let mut structs = Vec::with_capacity(struct_count as usize);
        for _ in 0..struct_count {
            let start = position(&mut decoder, total);
            let Some((kind, len, deps)) = read_struct(&mut decoder, bytes, &mut subdocuments)?
            else {
                continue; // empty content: yrs drops it without a clock
            };
            let end = clock
                .checked_add(len)
                .filter(|end| *end <= CLOCK_LIMIT)
                .ok_or(WalkError::Unsupported("a clock past 2^31"))?;
            structs.push(Struct {
                clock,
                len,
                kind,
                deps,
                bytes: start..position(&mut decoder, total),
            });
            clock = end;
        }
        clients.push(ClientStructs { client, structs });
    }
    let start = position(&mut decoder, total);
    IdSet::decode(&mut decoder)?;
    let delete_set = start..position(&mut decoder, total);
    Ok(Walked {
        clients,
        delete_set,
        subdocuments,
    })
}

type StructHead = (Kind, u32, [Option<ID>; 3]);

/// Refuses a count of entries larger than the bytes left (each takes one at least).
fn check_count(count: usize, decoder: &mut DecoderV1<'_>, total: usize) -> Result<(), WalkError> {
    if count > total - position(decoder, total) {
        return Err(WalkError::Unsupported("a count larger than the update"));
    }
    Ok(())
}

/// How deep arrays and maps may nest in a value (`serde_json`'s own limit,
/// which yrs's JSON contents already meet).
pub(crate) const NESTING_LIMIT: usize = 128;

/// Checks what yrs's `ItemContent::decode` will read at the decoder's
/// position, without moving it: counts within the bytes left and values
/// nested at most [`NESTING_LIMIT`] deep. What it does not understand it
/// leaves to yrs to refuse.
fn check_content(decoder: &mut DecoderV1<'_>, bytes: &[u8], info: u8) -> Result<(), WalkError> {
    let total = bytes.len();
    let mut ahead = DecoderV1::new(Cursor {
        buf: bytes,
        next: position(decoder, total),
    });
    match info & 0b1111 {
        CONTENT_JSON => {
            // `len + 1` strings; yrs reserves `len`, read as an i32
            let len: u32 = ahead.read_var()?;
            if len > i32::MAX as u32 {
                return Err(WalkError::Unsupported("a count larger than the update"));
            }
            check_count(len as usize, &mut ahead, total)?;
        }
        CONTENT_ANY => {
            let len: u32 = ahead.read_var()?;
            check_count(len as usize, &mut ahead, total)?;
            for _ in 0..len {
                check_any(&mut ahead, total, 0)?;
            }
        }
        CONTENT_DOC => {
            ahead.read_string()?;
            check_any(&mut ahead, total, 0)?;
        }
        _ => {}
    }
    Ok(())
}

/// Walks one lib0 `Any` value as `Any::decode` reads it.
fn check_any(decoder: &mut DecoderV1<'_>, total: usize, depth: usize) -> Result<(), WalkError> {
    match decoder.read_u8()? {
        125 => {
            decoder.read_var::<i64>()?;
        }
        124 => {
            decoder.read_exact(4)?;
        }
        122 | 123 => {
            decoder.read_exact(8)?;
        }
        119 => {
            decoder.read_string()?;
        }
        116 => {
            decoder.read_buf()?;
        }
        tag @ (117 | 118) => {
            if depth >= NESTING_LIMIT {
                return Err(WalkError::Unsupported("values nested too deep"));
            }
            let len: usize = decoder.read_var()?;
            check_count(len, decoder, total)?;
            for _ in 0..len {
                if tag == 118 {
                    decoder.read_string()?;
                }
                check_any(decoder, total, depth + 1)?;
            }
        }
        _ => {} // undefined, null, booleans; anything else yrs refuses
    }
    Ok(())
}

/// One struct (yrs's `Update::decode_block`): its kind, length and
/// dependencies, or `None` for an item without content.
fn read_struct(
    decoder: &mut DecoderV1<'_>,
    bytes: &[u8],
    subdocuments: &mut bool,
) -> Result<Option<StructHead>, WalkError> {
    let info = decoder.read_info()?;
    match info {
        SKIP | GC => {
            let len: u32 = decoder.read_var()?;
            if len == 0 {
                return Err(WalkError::Decode(yrs::encoding::read::Error::Malformed(
                    yrs::encoding::read::MalformedKind::EmptyBlock,
                )));
            }
            let kind = if info == SKIP { Kind::Skip } else { Kind::Gc };
            Ok(Some((kind, len, [None; 3])))
        }
        _ => {
            let origin = if info & HAS_ORIGIN != 0 {
                Some(decoder.read_left_id()?)
            } else {
                None
            };
            let right_origin = if info & HAS_RIGHT_ORIGIN != 0 {
                Some(decoder.read_right_id()?)
            } else {
                None
            };
            let mut parent = None;
            if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                if decoder.read_parent_info()? {
                    decoder.read_string()?; // a root type, by name
                } else {
                    parent = Some(decoder.read_left_id()?);
                }
                if info & HAS_PARENT_SUB != 0 {
                    decoder.read_string()?;
                }
            }
            check_content(decoder, bytes, info)?;
            *subdocuments |= info & 0b1111 == CONTENT_DOC;
            let len = match info & 0b1111 {
                // Strings and deleted content, the most common, without
                // copying them; everything else as yrs decodes it.
                CONTENT_DELETED => decoder.read_len()?,
                CONTENT_STRING => utf16_len(decoder.read_string()?),
                _ => ItemContent::decode(decoder, info)?.len_utf16(),
            };
            Ok((len > 0).then_some((Kind::Item, len, [origin, right_origin, parent])))
        }
    }
}

/// The length of a string in UTF-16 units, as Yjs counts it: one per
/// character, two for those past U+FFFF (4 bytes in UTF-8). Counted on the
/// bytes, which is several times faster than decoding the characters.
fn utf16_len(s: &str) -> u32 {
    let units = s.as_bytes().iter().fold(0usize, |n, &b| {
        n + usize::from((b & 0xC0) != 0x80) + usize::from(b >= 0xF0)
    });
    units as u32
}

/// One client's list in an update being written.
pub(crate) struct ListWriter<'a> {
    pub client: ClientID,
    pub first_clock: u32,
    /// Encoded structs, or `Err(len)` for a skip of `len` clocks.
    pub structs: Vec<Result<&'a [u8], u32>>,
}

/// Writes a v1 update from client lists and an encoded delete set.
pub(crate) fn write_update(lists: &[ListWriter<'_>], delete_set: &[u8]) -> Vec<u8> {
    let size: usize = lists
        .iter()
        .flat_map(|l| &l.structs)
        .map(|s| s.map_or(6, <[u8]>::len))
        .sum();
    let mut out = Vec::with_capacity(size + 16 * lists.len() + delete_set.len() + 5);
    let lists: Vec<&ListWriter<'_>> = lists.iter().filter(|l| !l.structs.is_empty()).collect();
    out.write_var(lists.len() as u32);
    for list in lists {
        out.write_var(list.structs.len() as u32);
        out.write_var(list.client.get());
        out.write_var(list.first_clock);
        for s in &list.structs {
            match s {
                Ok(bytes) => out.extend_from_slice(bytes),
                Err(len) => {
                    out.write_u8(SKIP);
                    out.write_var(*len);
                }
            }
        }
    }
    out.extend_from_slice(delete_set);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

    #[test]
    fn walks_what_yrs_writes_and_writes_it_back() {
        let doc = Doc::with_client_id(5);
        let text = doc.get_or_insert_text("t");
        let map = doc.get_or_insert_map("m");
        {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "hello");
            text.insert(&mut txn, 5, " world");
            text.remove_range(&mut txn, 0, 1);
            yrs::Map::insert(&map, &mut txn, "k", 1);
        }
        let bytes = doc
            .transact()
            .encode_state_as_update_v1(&Default::default());
        let walked = walk(&bytes).unwrap();
        assert_eq!(walked.clients.len(), 1);
        let structs = &walked.clients[0].structs;
        assert_eq!(structs[0].clock, 0);
        let end = structs.last().unwrap().end();
        assert_eq!(end, doc.transact().state_vector().get(&ClientID::new(5)));
        // The same structs, copied, make the same document.
        let list = ListWriter {
            client: walked.clients[0].client,
            first_clock: 0,
            structs: structs
                .iter()
                .map(|s| Ok(&bytes[s.bytes.clone()]))
                .collect(),
        };
        let copy = write_update(&[list], &bytes[walked.delete_set.clone()]);
        assert_eq!(copy, bytes);
        let other = Doc::new();
        let t = other.get_or_insert_text("t");
        other
            .transact_mut()
            .apply_update(Update::decode_v1(&copy).unwrap())
            .unwrap();
        assert_eq!(t.get_string(&other.transact()), "ello world");
    }

    #[test]
    fn refuses_a_client_listed_twice_and_clocks_past_the_limit() {
        // Two lists of client 1, one GC struct each.
        let twice = [2, 1, 1, 0, 0, 1, 1, 1, 5, 0, 1, 0];
        assert!(Update::decode_v1(&twice).is_ok(), "yrs reads it");
        assert!(matches!(walk(&twice), Err(WalkError::Unsupported(_))));
        // Client 1 at clock 2^31 - 1, a GC struct of 2 clocks.
        let far = [1, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x07, 0, 2, 0];
        assert!(matches!(walk(&far), Err(WalkError::Unsupported(_))));
    }

    /// An update of client 1 whose one struct is an `Any` value: arrays
    /// nested `depth` deep around a null.
    fn nested(depth: usize) -> Vec<u8> {
        let mut update = vec![1, 1, 1, 0, CONTENT_ANY, 1, 1, b't', 1];
        for _ in 0..depth {
            update.extend_from_slice(&[117, 1]);
        }
        update.extend_from_slice(&[126, 0]);
        update
    }

    #[test]
    fn refuses_values_nested_deeper_than_yrs_can_decode_on_a_small_stack() {
        // 20,000 levels (40 kB) overflow a 2 MiB stack in yrs's decoder (the
        // stack of a tokio worker thread): the process aborts.
        assert!(matches!(
            walk(&nested(20_000)),
            Err(WalkError::Unsupported(_))
        ));
        assert!(matches!(
            walk(&nested(NESTING_LIMIT + 1)),
            Err(WalkError::Unsupported(_))
        ));
        let walked = walk(&nested(NESTING_LIMIT)).unwrap();
        assert_eq!(walked.clients[0].structs.len(), 1);
        assert!(Update::decode_v1(&nested(NESTING_LIMIT)).is_ok());
    }

    #[test]
    fn refuses_counts_larger_than_the_update() {
        // 2^31 - 1 structs declared for client 1.
        let structs = [1, 0xff, 0xff, 0xff, 0xff, 0x07, 1, 0, 0, 1, 0];
        assert!(matches!(walk(&structs), Err(WalkError::Unsupported(_))));
        // An `Any` content declaring 2^31 - 1 values.
        let values = [
            1,
            1,
            1,
            0,
            CONTENT_ANY,
            1,
            1,
            b't',
            0xff,
            0xff,
            0xff,
            0xff,
            0x07,
            126,
            0,
        ];
        assert!(matches!(walk(&values), Err(WalkError::Unsupported(_))));
    }

    #[test]
    fn counts_utf16_units_as_yrs_does() {
        for s in ["", "abc", "é", "😀", "a😀é€\u{10FFFF}x", "日本語"] {
            assert_eq!(utf16_len(s), s.encode_utf16().count() as u32, "{s:?}");
        }
    }
}
