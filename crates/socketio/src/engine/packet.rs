//! Engine.IO v4 packets: decoding what clients send and encoding what the
//! server sends, for both transports.
//!
//! Pure functions over bytes and strings, with no I/O, so they can be fuzzed on
//! their own (`fuzz/`). Sessions, timers and transports live elsewhere.

pub use crate::utf8::Utf8Bytes;
use base64::Engine as _;
use bytes::Bytes;

/// The record separator between packets of one HTTP long-polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// The former name of [`Utf8Bytes`] here, kept for the fuzz targets.
pub type Str = Utf8Bytes;

/// An application message carried by Engine.IO (packet type `4`, or a binary frame).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message: the packet's payload after the `4` type digit.
    Text(Utf8Bytes),
    /// A binary message: a WebSocket binary frame, or a polling item `b` + base64
    /// (decoded here).
    Binary(Bytes),
}

/// A packet received from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// `1`: the client ends the session.
    Close,
    /// `2`, with the optional payload (`probe` during an upgrade).
    Ping(Utf8Bytes),
    /// `3`, with its optional payload: the answer to a server ping.
    Pong(Utf8Bytes),
    /// `4` (text) or a binary frame: data for the layer above.
    Message(Message),
    /// `5`: the client completes the upgrade to WebSocket after the probe.
    Upgrade,
    /// `6`: no operation; ignored.
    Noop,
}

/// Why a client's packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet (or one item of a polling payload) has no bytes at all.
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet type a client may send (`1` to `6`).
    #[error("unknown packet type")]
    UnknownType,
    /// A text item of a polling payload is not valid UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A polling item `b…` does not hold valid (padded, standard) base64.
    #[error("invalid base64 in a binary packet")]
    InvalidBase64,
}

/// Decodes one text packet (a WebSocket text frame, or one item of a polling payload).
pub fn decode_text(text: Utf8Bytes) -> Result<Packet, DecodeError> {
    let kind = *text.as_bytes().first().ok_or(DecodeError::Empty)?;
    // Every packet type is one ASCII digit, so the rest starts on a boundary.
    let rest = text.tail(1).unwrap_or_default();
    Ok(match kind {
        b'1' => Packet::Close,
        b'2' => Packet::Ping(rest),
        b'3' => Packet::Pong(rest),
        b'4' => Packet::Message(Message::Text(rest)),
        b'5' => Packet::Upgrade,
        b'6' => Packet::Noop,
        _ => return Err(DecodeError::UnknownType),
    })
}

/// Decodes an HTTP long-polling request body: packets separated by `\x1e`,
/// binary ones as `b` + base64.
pub fn decode_payload(body: Bytes) -> Result<Vec<Packet>, DecodeError> {
    let mut packets = Vec::new();
    let mut start = 0;
    while start <= body.len() {
        let end = body[start..]
            .iter()
            .position(|&b| b == SEPARATOR)
            .map_or(body.len(), |i| start + i);
        let item = body.slice(start..end);
        packets.push(decode_payload_item(item)?);
        start = end + 1;
    }
    Ok(packets)
}

fn decode_payload_item(item: Bytes) -> Result<Packet, DecodeError> {
    match item.first() {
        None => Err(DecodeError::Empty),
        Some(b'b') => base64::engine::general_purpose::STANDARD
            .decode(&item[1..])
            .map(|data| Packet::Message(Message::Binary(Bytes::from(data))))
            .map_err(|_| DecodeError::InvalidBase64),
        Some(_) => decode_text(Utf8Bytes::from_utf8(item).map_err(|_| DecodeError::InvalidUtf8)?),
    }
}

/// A frame ready to go out: the text form already carries its packet type.
/// Cloning is cheap (reference-counted), so one broadcast frame is shared by every recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A text packet, its type digit included (`4…`, `2`, `3probe`).
    Text(Utf8Bytes),
    /// Raw binary data: a WebSocket binary frame, or `b` + base64 over polling.
    Binary(Bytes),
}

impl Frame {
    /// The text of a server ping packet.
    pub const PING: &'static str = "2";
    /// The text of a noop packet (answers a polling GET that must end, as during an upgrade).
    pub const NOOP: &'static str = "6";
    /// The text of a close packet (tells a polling client its session is over).
    pub const CLOSE: &'static str = "1";

    /// A text frame of static text, which must already start with its packet type.
    pub fn text_static(text: &'static str) -> Self {
        Frame::Text(Utf8Bytes::from_static(text))
    }

    /// A message packet (`4` + text).
    pub fn message(text: &str) -> Self {
        let mut s = String::with_capacity(text.len() + 1);
        s.push('4');
        s.push_str(text);
        Frame::Text(Utf8Bytes::from(s))
    }

    /// The size of this frame inside a polling payload.
    fn polling_len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => 1 + b.len().div_ceil(3) * 4,
        }
    }
}

/// Encodes queued frames as one long-polling response body.
pub fn encode_payload<'a>(frames: impl IntoIterator<Item = &'a Frame> + Clone) -> String {
    let len: usize = frames
        .clone()
        .into_iter()
        .map(|f| f.polling_len() + 1)
        .sum();
    let mut body = String::with_capacity(len);
    for (i, frame) in frames.into_iter().enumerate() {
        if i > 0 {
            body.push(SEPARATOR as char);
        }
        match frame {
            Frame::Text(t) => body.push_str(t.as_str()),
            Frame::Binary(b) => {
                body.push('b');
                base64::engine::general_purpose::STANDARD.encode_string(b, &mut body);
            }
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> Utf8Bytes {
        Utf8Bytes::from(s)
    }

    #[test]
    fn decodes_every_text_packet_type() {
        assert_eq!(decode_text(text("1")), Ok(Packet::Close));
        assert_eq!(decode_text(text("2probe")), Ok(Packet::Ping(text("probe"))));
        assert_eq!(decode_text(text("3")), Ok(Packet::Pong(text(""))));
        assert_eq!(
            decode_text(text("4hello")),
            Ok(Packet::Message(Message::Text(text("hello"))))
        );
        assert_eq!(decode_text(text("5")), Ok(Packet::Upgrade));
        assert_eq!(decode_text(text("6")), Ok(Packet::Noop));
        assert_eq!(decode_text(text("abc")), Err(DecodeError::UnknownType));
        assert_eq!(decode_text(text("0")), Err(DecodeError::UnknownType));
        assert_eq!(decode_text(text("")), Err(DecodeError::Empty));
    }

    #[test]
    fn decodes_a_mixed_polling_payload() {
        let packets = decode_payload(Bytes::from_static(b"4hello\x1ebAQIDBA==\x1e3")).unwrap();
        assert_eq!(
            packets,
            vec![
                Packet::Message(Message::Text(text("hello"))),
                Packet::Message(Message::Binary(Bytes::from_static(&[1, 2, 3, 4]))),
                Packet::Pong(text("")),
            ]
        );
    }

    #[test]
    fn refuses_bad_polling_payloads() {
        for bad in [&b""[..], b"abc", b"4a\x1e", b"bnot base64!", b"4\xff\xfe"] {
            assert!(
                decode_payload(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn encodes_frames_as_a_polling_payload() {
        let frames = [
            Frame::message("hello"),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            Frame::text_static(Frame::PING),
        ];
        assert_eq!(encode_payload(&frames), "4hello\x1ebAQIDBA==\x1e2");
    }
}
