//! The y-websocket protocol, hand-encoded: lib0 variable-length integers, the
//! sync messages (step 1, step 2, update) and a Yjs v1 update that inserts
//! ASCII text into a root `Y.Text`, which is all an editor of the `collab`
//! scenario sends. Nothing received is decoded beyond its first bytes, except
//! the client id of an update, to tell another editor's update from an echo.
//!
//! Yjs v1 update layout (`writeClientsStructs` + delete set), for one item:
//! `numClients=1, numStructs=1, client, clock, info, [origin | parent], content, deleteSet=0`
//! where `info` is the content ref (4 = string) with bit 8 set when a left origin
//! (`client, clock`) follows; without origins the parent is a root type by name
//! (`1, name`).

/// y-websocket message types.
pub const MSG_SYNC: u8 = 0;
pub const MSG_AWARENESS: u8 = 1;
/// Sync message subtypes.
pub const SYNC_STEP1: u8 = 0;
pub const SYNC_STEP2: u8 = 1;
pub const SYNC_UPDATE: u8 = 2;

const CONTENT_STRING: u8 = 4;
const HAS_ORIGIN: u8 = 0x80;

pub fn write_var_uint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn read_var_uint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b < 0x80 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

fn write_var_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_var_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A Yjs v1 update: `client` inserts `text` (ASCII, so its length in UTF-16
/// units is its byte length) into the root text `root`, right after its own
/// previous insertion (which ended at `clock - 1`), or at the start of the text
/// when `clock` is 0.
pub fn text_insert_update(client: u64, clock: u64, root: &str, text: &str) -> Vec<u8> {
    let mut u = Vec::with_capacity(16 + root.len() + text.len());
    write_var_uint(&mut u, 1);
    write_var_uint(&mut u, 1);
    write_var_uint(&mut u, client);
    write_var_uint(&mut u, clock);
    if clock == 0 {
        u.push(CONTENT_STRING);
        write_var_uint(&mut u, 1);
        write_var_bytes(&mut u, root.as_bytes());
    } else {
        u.push(CONTENT_STRING | HAS_ORIGIN);
        write_var_uint(&mut u, client);
        write_var_uint(&mut u, clock - 1);
    }
    write_var_bytes(&mut u, text.as_bytes());
    write_var_uint(&mut u, 0);
    u
}

/// Sync step 1 with an empty state vector: "send me everything".
pub fn sync_step1_empty() -> Vec<u8> {
    vec![MSG_SYNC, SYNC_STEP1, 1, 0]
}

/// Sync step 2 carrying an update (the answer to the server's step 1).
pub fn sync_step2(update: &[u8]) -> Vec<u8> {
    let mut m = vec![MSG_SYNC, SYNC_STEP2];
    write_var_bytes(&mut m, update);
    m
}

/// An empty update (no structs, no deletions).
pub fn empty_update() -> Vec<u8> {
    vec![0, 0]
}

/// A sync update message.
pub fn sync_update(update: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(update.len() + 4);
    m.push(MSG_SYNC);
    m.push(SYNC_UPDATE);
    write_var_bytes(&mut m, update);
    m
}

/// The client id of the first struct of a sync update or step 2 message.
pub fn first_client(frame: &[u8]) -> Option<u64> {
    let mut pos = 2;
    let _len = read_var_uint(frame, &mut pos)?;
    let clients = read_var_uint(frame, &mut pos)?;
    if clients == 0 {
        return None;
    }
    let _structs = read_var_uint(frame, &mut pos)?;
    read_var_uint(frame, &mut pos)
}

/// What an incoming y-websocket message is.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Step1,
    Step2,
    Update,
    Awareness,
    Other,
}

pub fn kind(frame: &[u8]) -> Kind {
    match frame {
        [MSG_SYNC, SYNC_STEP1, ..] => Kind::Step1,
        [MSG_SYNC, SYNC_STEP2, ..] => Kind::Step2,
        [MSG_SYNC, SYNC_UPDATE, ..] => Kind::Update,
        [MSG_AWARENESS, ..] => Kind::Awareness,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_uints() {
        for v in [0u64, 1, 127, 128, 300, 1 << 31, u64::from(u32::MAX)] {
            let mut b = Vec::new();
            write_var_uint(&mut b, v);
            let mut p = 0;
            assert_eq!(read_var_uint(&b, &mut p), Some(v));
            assert_eq!(p, b.len());
        }
        assert_eq!(read_var_uint(&[0x80], &mut 0), None);
    }

    #[test]
    fn first_insert_matches_yjs() {
        // Y.Doc with clientID 1: doc.getText('t').insert(0, 'ab'), Y.encodeStateAsUpdate(doc)
        // = [1, 1, 1, 0, 4, 1, 1, 116, 2, 97, 98, 0]
        assert_eq!(
            text_insert_update(1, 0, "t", "ab"),
            vec![1, 1, 1, 0, 4, 1, 1, b't', 2, b'a', b'b', 0]
        );
        // then insert(2, 'c'): the update of that transaction
        // = [1, 1, 1, 2, 132, 1, 1, 1, 99, 0]
        assert_eq!(
            text_insert_update(1, 2, "t", "c"),
            vec![1, 1, 1, 2, 0x84, 1, 1, 1, b'c', 0]
        );
    }

    #[test]
    fn frames() {
        let u = text_insert_update(300, 5, "t", "~t0000000000042|");
        let m = sync_update(&u);
        assert_eq!(kind(&m), Kind::Update);
        assert_eq!(first_client(&m), Some(300));
        assert_eq!(crate::stats::find_stamp(&m), Some(42));
        assert_eq!(kind(&sync_step1_empty()), Kind::Step1);
        let s2 = sync_step2(&empty_update());
        assert_eq!(kind(&s2), Kind::Step2);
        assert_eq!(first_client(&s2), None);
        assert_eq!(kind(&[1, 0]), Kind::Awareness);
        assert_eq!(kind(&[]), Kind::Other);
    }
}
