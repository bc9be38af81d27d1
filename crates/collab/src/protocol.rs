//! The y-websocket wire format, as the stock `y-websocket` client speaks it:
//! each binary WebSocket message holds one or more y-protocols messages.
//!
//! | type | payload                                  |
//! |------|------------------------------------------|
//! | 0    | sync: 0 step 1 (state vector), 1 step 2 (update), 2 update |
//! | 1    | awareness update (client id, clock, JSON state) per client |
//! | 2    | auth (permission denied + reason)        |
//! | 3    | query awareness (no payload)             |
//!
//! Decoding goes through `yrs::sync`, then checks what yrs leaves to the
//! application: unknown types are refused, and every awareness state must be
//! JSON, so that one client cannot hand the others a state they fail to parse.
//! Updates are checked when they are applied ([`crate::Document::decode_update`]).

use bytes::Bytes;
use yrs::encoding::read::Cursor;
use yrs::sync::{AwarenessUpdate, Message, SyncMessage};
use yrs::updates::decoder::{Decode, Decoder, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::StateVector;

/// A message from a client, decoded.
#[derive(Debug)]
pub enum ClientMessage {
    /// Sync step 1: the client's state vector. Answered with step 2.
    SyncStep1(StateVector),
    /// Sync step 2 or an update: changes for the document, as a Yjs v1 update.
    Update(Bytes),
    /// Awareness states of the clients this connection speaks for.
    Awareness(AwarenessUpdate),
    /// A request for every current awareness state.
    QueryAwareness,
    /// An auth message. Access is settled at the upgrade, so it is ignored.
    Auth,
}

/// Why client bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A WebSocket message with no bytes.
    #[error("empty message")]
    Empty,
    /// yrs could not decode the bytes (truncated, bad varint, bad tag, ...).
    #[error("malformed message: {0}")]
    Malformed(#[from] yrs::encoding::read::Error),
    /// A y-protocols message type Switchboard does not know (the tag).
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// An awareness state that is not JSON (the client id it belongs to).
    #[error("the awareness state of client {0} is not JSON")]
    AwarenessNotJson(u64),
    /// yrs panicked on the bytes; the panic was caught.
    #[error("the decoder refused the message")]
    Rejected,
    /// A state vector, update or awareness update declaring more entries than
    /// it has bytes left.
    #[error("a count larger than the message")]
    CountTooLarge,
}

/// Decodes every y-protocols message in one WebSocket message.
pub fn decode(frame: &[u8]) -> Result<Vec<ClientMessage>, ProtocolError> {
    without_panics(|| decode_frame(frame))?
}

/// Runs a yrs decoder on client bytes, turning a panic into an error. yrs
/// debug-asserts that client ids fit in 53 bits, and a client picks its ids:
/// release builds mask them, debug builds would panic on them.
pub(crate) fn without_panics<T>(decode: impl FnOnce() -> T) -> Result<T, ProtocolError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
        .map_err(|_| ProtocolError::Rejected)
}

fn decode_frame(frame: &[u8]) -> Result<Vec<ClientMessage>, ProtocolError> {
    if frame.is_empty() {
        return Err(ProtocolError::Empty);
    }
    check_declared_counts(frame)?;
    let mut messages = Vec::with_capacity(1);
    let mut rest = frame;
    while !rest.is_empty() {
        let mut decoder = DecoderV1::new(Cursor::new(rest));
        messages.push(client_message(Message::decode(&mut decoder)?)?);
        let left = decoder.read_to_end()?.len();
        rest = &rest[rest.len() - left..];
    }
    Ok(messages)
}

fn client_message(message: Message) -> Result<ClientMessage, ProtocolError> {
    Ok(match message {
        Message::Sync(SyncMessage::SyncStep1(sv)) => ClientMessage::SyncStep1(sv),
        Message::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
            ClientMessage::Update(Bytes::from(update))
        }
        Message::Awareness(update) => {
            check_awareness(&update)?;
            ClientMessage::Awareness(update)
        }
        Message::AwarenessQuery => ClientMessage::QueryAwareness,
        Message::Auth(_) => ClientMessage::Auth,
        Message::Custom(tag, _) => return Err(ProtocolError::UnknownType(tag)),
    })
}

fn check_awareness(update: &AwarenessUpdate) -> Result<(), ProtocolError> {
    for (client, entry) in &update.clients {
        if serde_json::from_str::<serde::de::IgnoredAny>(&entry.json).is_err() {
            return Err(ProtocolError::AwarenessNotJson(client.get()));
        }
    }
    Ok(())
}

/// Refuses a frame whose state vector, update or awareness update declares
/// more entries than it has bytes left.
///
/// Written by hand because of what fuzzing found: yrs reserves a hash map for
/// the declared count before reading a single entry, so a dozen bytes claiming
/// billions of clients make it allocate (and clear) gigabytes. Every entry
/// takes at least one byte, so such a count is never honest. Only the
/// envelopes are walked here; anything malformed is left to yrs to report.
fn check_declared_counts(frame: &[u8]) -> Result<(), ProtocolError> {
    let mut rest = frame;
    while let Some((kind, used)) = read_varuint(rest) {
        rest = &rest[used..];
        let payload = match kind {
            0 => match read_varuint(rest) {
                Some((_, used)) => {
                    rest = &rest[used..];
                    read_buf(&mut rest)
                }
                None => None,
            },
            1 => read_buf(&mut rest),
            3 => continue,
            _ => None, // auth or unknown: yrs reads it or refuses it
        };
        let Some(payload) = payload else {
            return Ok(());
        };
        if !count_fits(payload) {
            return Err(ProtocolError::CountTooLarge);
        }
    }
    Ok(())
}

/// Whether the count a state vector, update or awareness update starts with
/// fits in the bytes after it.
pub(crate) fn count_fits(encoded: &[u8]) -> bool {
    match read_varuint(encoded) {
        Some((count, used)) => count <= (encoded.len() - used) as u64,
        None => true,
    }
}

/// A lib0 variable-length unsigned integer and the bytes it took.
fn read_varuint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A length-prefixed buffer, advancing `rest` past it.
fn read_buf<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, used) = read_varuint(rest)?;
    let end = used.checked_add(usize::try_from(len).ok()?)?;
    let buf = rest.get(used..end)?;
    *rest = &rest[end..];
    Some(buf)
}

/// Sync step 1 from the server: its state vector, so the client sends what the server lacks.
pub fn sync_step1(state_vector: &StateVector) -> Bytes {
    encode(Message::Sync(SyncMessage::SyncStep1(state_vector.clone())))
}

/// Sync step 2 from the server: what the client lacks.
pub fn sync_step2(update: Vec<u8>) -> Bytes {
    encode(Message::Sync(SyncMessage::SyncStep2(update)))
}

/// An update to relay.
pub fn update(update: &[u8]) -> Bytes {
    encode(Message::Sync(SyncMessage::Update(update.to_vec())))
}

/// Awareness states to relay.
pub fn awareness(update: AwarenessUpdate) -> Bytes {
    encode(Message::Awareness(update))
}

/// Awareness states as carried between nodes: the payload of an awareness message.
pub fn encode_awareness_update(update: &AwarenessUpdate) -> Vec<u8> {
    update.encode_v1()
}

/// Decodes awareness states carried between nodes, the inverse of
/// [`encode_awareness_update`]. Unlike [`decode`], it checks neither declared
/// counts nor that the states are JSON: the bytes come from a node, which
/// checked them when its client sent them.
pub fn decode_awareness_update(data: &[u8]) -> Result<AwarenessUpdate, ProtocolError> {
    Ok(without_panics(|| AwarenessUpdate::decode_v1(data))??)
}

fn encode(message: Message) -> Bytes {
    Bytes::from(message.encode_v1())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for frame in [&[][..], &[0xff, 0xff, 0xff], &[9], &[0, 7], &[1, 5, 1]] {
            assert!(decode(frame).is_err(), "{frame:?}");
        }
    }

    #[test]
    fn an_update_round_trips() {
        let frame = update(&[0, 0]);
        let decoded = decode(&frame).unwrap();
        assert!(matches!(&decoded[..], [ClientMessage::Update(u)] if u.as_ref() == [0, 0]));
    }

    #[test]
    fn several_messages_in_one_frame() {
        let mut frame = sync_step1(&StateVector::default()).to_vec();
        frame.push(3); // query awareness
        let decoded = decode(&frame).unwrap();
        assert!(matches!(
            &decoded[..],
            [ClientMessage::SyncStep1(_), ClientMessage::QueryAwareness]
        ));
    }

    #[test]
    fn a_count_larger_than_the_message_is_refused_before_decoding() {
        // An update (sync type 2) that claims 2^40 clients in 11 bytes.
        let frame = [0, 2, 10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 0, 0];
        assert!(matches!(decode(&frame), Err(ProtocolError::CountTooLarge)));
        // The same for an awareness update.
        let frame = [1, 3, 0xff, 0xff, 0x7f];
        assert!(matches!(decode(&frame), Err(ProtocolError::CountTooLarge)));
        assert!(count_fits(&[2, 1, 1]));
        assert!(!count_fits(&[3, 1, 1]));
    }

    #[test]
    fn a_client_id_past_53_bits_is_no_panic() {
        // type 1, then a buffer: 1 client, id 2^60 (varuint), clock 1, state "{}"
        let mut inner = vec![1];
        let mut id: u64 = 1 << 60;
        while id >= 0x80 {
            inner.push((id as u8) | 0x80);
            id >>= 7;
        }
        inner.extend_from_slice(&[id as u8, 1, 2, b'{', b'}']);
        let mut frame = vec![1, inner.len() as u8];
        frame.extend_from_slice(&inner);
        let decoded = decode(&frame);
        if cfg!(debug_assertions) {
            assert!(matches!(decoded, Err(ProtocolError::Rejected)));
        }
    }

    #[test]
    fn awareness_states_must_be_json() {
        // type 1, then a buffer: 1 client, id 7, clock 1, state "{oops"
        let state = b"{oops";
        let mut inner = vec![1, 7, 1, state.len() as u8];
        inner.extend_from_slice(state);
        let mut frame = vec![1, inner.len() as u8];
        frame.extend_from_slice(&inner);
        assert!(matches!(
            decode(&frame),
            Err(ProtocolError::AwarenessNotJson(7))
        ));
    }
}
