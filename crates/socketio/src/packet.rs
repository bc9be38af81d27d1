//! Socket.IO v5 packets: parsing the text form a client sends and encoding the
//! packets the server sends.
//!
//! Text form: `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`. Binary
//! packets (`5`, `6`) announce how many binary frames follow; collecting those
//! frames is the connection's job (`client.rs`), not this module's.
//! Pure functions, fuzzed on their own (`fuzz/`).

use crate::Utf8Bytes;
use serde::Serialize;
use serde_json::Value;

/// Binary attachments a packet may announce. More is refused as invalid.
pub const MAX_ATTACHMENTS: usize = 64;

/// The Socket.IO packet type: the first digit of the text form (the discriminant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketType {
    /// `0`: joins a namespace (from a client, with optional auth), or accepts the
    /// join (from the server, with the socket's `sid`).
    Connect = 0,
    /// `1`: leaves a namespace; the connection stays open.
    Disconnect = 1,
    /// `2`: an event, `[name, ...args]`, with an ack id if an answer is wanted.
    Event = 2,
    /// `3`: the answer to an event, `[...args]`, with the event's ack id.
    Ack = 3,
    /// `4`: a refused CONNECT, `{"message": ...}`. Only the server sends it.
    ConnectError = 4,
    /// `5`: an event followed by as many binary frames as it announces.
    BinaryEvent = 5,
    /// `6`: an ack followed by as many binary frames as it announces.
    BinaryAck = 6,
}

impl PacketType {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// A parsed packet from a client. The payload is checked for the shape its type
/// requires (an array for events and acks, an object for CONNECT).
#[derive(Debug, PartialEq)]
pub struct Packet {
    /// The packet type.
    pub kind: PacketType,
    /// The namespace, `"/"` when the packet names none.
    pub namespace: String,
    /// Binary frames announced to follow (at most [`MAX_ATTACHMENTS`]); 0 unless
    /// the type is [`PacketType::BinaryEvent`] or [`PacketType::BinaryAck`].
    pub attachments: usize,
    /// The ack id: on an event, the client wants an answer with this id; on an
    /// ack (where it is required), the server event it answers.
    pub ack_id: Option<u64>,
    /// The decoded JSON payload.
    pub payload: Payload,
    /// The JSON had strings that are not valid Unicode (lone UTF-16 surrogate
    /// escapes); they were read as U+FFFD. The packet is well-formed, so the
    /// connection stays open, but the application should refuse its content.
    pub lossy_text: bool,
}

/// The JSON payload of a client's packet, by packet type.
#[derive(Debug, PartialEq)]
pub enum Payload {
    /// DISCONNECT: no payload.
    None,
    /// CONNECT: the auth object, if any.
    Connect(Option<serde_json::Map<String, Value>>),
    /// EVENT: the name and the arguments after it.
    Event(String, Vec<Value>),
    /// ACK: the arguments.
    Ack(Vec<Value>),
}

/// Why a client's Socket.IO packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first character is not a packet type digit `0` to `6`.
    #[error("unknown packet type")]
    UnknownType,
    /// A binary packet without a valid `<n>-` count, or announcing more than
    /// [`MAX_ATTACHMENTS`].
    #[error("bad attachment count")]
    BadAttachments,
    /// The ack id is too long (over 15 digits), or missing from an ack.
    #[error("bad ack id")]
    BadAckId,
    /// The payload is not JSON, or not the shape its packet type requires.
    #[error("payload is not valid JSON of the expected shape")]
    BadPayload,
    /// CONNECT_ERROR, which only the server sends.
    #[error("packet type not accepted from a client")]
    NotFromClient,
}

/// Parses one Socket.IO packet from its text form.
pub fn parse(text: &str) -> Result<Packet, ParseError> {
    let bytes = text.as_bytes();
    let kind = bytes
        .first()
        .and_then(|b| PacketType::from_byte(*b))
        .ok_or(ParseError::UnknownType)?;
    let mut rest = &text[1..];

    let mut attachments = 0;
    if kind.is_binary() {
        let (count, after) = rest.split_once('-').ok_or(ParseError::BadAttachments)?;
        attachments = parse_number(count).ok_or(ParseError::BadAttachments)? as usize;
        if attachments > MAX_ATTACHMENTS {
            return Err(ParseError::BadAttachments);
        }
        rest = after;
    }

    let mut namespace = "/";
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        namespace = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
    }

    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack_id = if digits > 0 {
        Some(parse_number(&rest[..digits]).ok_or(ParseError::BadAckId)?)
    } else {
        None
    };
    rest = &rest[digits..];

    let (payload, lossy_text) = match parse_payload(kind, rest) {
        Ok(payload) => (payload, false),
        Err(e) => match replace_lone_surrogates(rest) {
            Some(repaired) => (parse_payload(kind, &repaired)?, true),
            None => return Err(e),
        },
    };
    if kind == PacketType::Ack || kind == PacketType::BinaryAck {
        ack_id.ok_or(ParseError::BadAckId)?;
    }
    Ok(Packet {
        kind,
        namespace: namespace.to_owned(),
        attachments,
        ack_id,
        payload,
        lossy_text,
    })
}

/// JSON with every unpaired surrogate escape (`\ud800` alone, say) replaced by
/// `\ufffd`, or None if there was none to replace. serde_json refuses such
/// strings, which JavaScript clients can produce.
fn replace_lone_surrogates(json: &str) -> Option<String> {
    let bytes = json.as_bytes();
    let hex_at = |i: usize| -> Option<u32> {
        let digits = bytes.get(i..i + 4)?;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let is_escape_u = |i: usize| bytes.get(i) == Some(&b'\\') && bytes.get(i + 1) == Some(&b'u');
    let mut out = String::with_capacity(json.len());
    let (mut i, mut last, mut replaced) = (0, 0, false);
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) != Some(&b'u') {
            i += 2; // any other escape, \\ included
            continue;
        }
        let unit = hex_at(i + 2)?;
        let paired = (0xD800..0xDC00).contains(&unit)
            && is_escape_u(i + 6)
            && hex_at(i + 8).is_some_and(|low| (0xDC00..0xE000).contains(&low));
        if paired {
            i += 12;
        } else if (0xD800..0xE000).contains(&unit) {
            out.push_str(&json[last..i]);
            out.push_str("\\ufffd");
            i += 6;
            last = i;
            replaced = true;
        } else {
            i += 6;
        }
    }
    replaced.then(|| {
        out.push_str(&json[last..]);
        out
    })
}

fn parse_number(digits: &str) -> Option<u64> {
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn parse_payload(kind: PacketType, json: &str) -> Result<Payload, ParseError> {
    let bad = |_| ParseError::BadPayload;
    match kind {
        PacketType::Connect if json.is_empty() => Ok(Payload::Connect(None)),
        PacketType::Connect => match serde_json::from_str(json).map_err(bad)? {
            Value::Object(auth) => Ok(Payload::Connect(Some(auth))),
            _ => Err(ParseError::BadPayload),
        },
        PacketType::Disconnect if json.is_empty() => Ok(Payload::None),
        PacketType::Disconnect => Err(ParseError::BadPayload),
        PacketType::Event | PacketType::BinaryEvent => {
            let mut args: Vec<Value> = serde_json::from_str(json).map_err(bad)?;
            if args.is_empty() {
                return Err(ParseError::BadPayload);
            }
            match args.remove(0) {
                Value::String(name) => Ok(Payload::Event(name, args)),
                _ => Err(ParseError::BadPayload),
            }
        }
        PacketType::Ack | PacketType::BinaryAck => {
            Ok(Payload::Ack(serde_json::from_str(json).map_err(bad)?))
        }
        PacketType::ConnectError => Err(ParseError::NotFromClient),
    }
}

/// The arguments of an outgoing event or ack, serialised into the packet's JSON array.
///
/// `&T` (any `Serialize`) is one argument; a tuple `(A, B)` is two; a `Vec<Value>`
/// is as many as it holds; `()` is none. To give an event a recovery offset,
/// pass it as the last element of a tuple: `(&message, offset)`.
pub trait Args {
    /// Writes `,arg` for each argument.
    fn write_args(&self, out: &mut Vec<u8>) -> serde_json::Result<()>;
}

fn write_arg(out: &mut Vec<u8>, arg: &(impl Serialize + ?Sized)) -> serde_json::Result<()> {
    out.push(b',');
    serde_json::to_writer(out, arg)
}

impl<T: Serialize + ?Sized> Args for &T {
    fn write_args(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        write_arg(out, *self)
    }
}

impl Args for () {
    fn write_args(&self, _out: &mut Vec<u8>) -> serde_json::Result<()> {
        Ok(())
    }
}

impl Args for Vec<Value> {
    fn write_args(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        self.iter().try_for_each(|arg| write_arg(out, arg))
    }
}

macro_rules! tuple_args {
    ($($name:ident),+) => {
        impl<$($name: Serialize),+> Args for ($($name,)+) {
            #[allow(non_snake_case)]
            fn write_args(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
                let ($($name,)+) = self;
                $(write_arg(out, $name)?;)+
                Ok(())
            }
        }
    };
}
tuple_args!(A);
tuple_args!(A, B);
tuple_args!(A, B, C);
tuple_args!(A, B, C, D);

/// Starts a packet: Engine.IO message type `4`, then `<type>[<n>-][<nsp>,][<id>]`.
fn header(kind: PacketType, attachments: usize, namespace: &str, ack_id: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(b'4');
    out.push(b'0' + kind as u8);
    if attachments > 0 {
        out.extend_from_slice(attachments.to_string().as_bytes());
        out.push(b'-');
    }
    if namespace != "/" {
        out.extend_from_slice(namespace.as_bytes());
        out.push(b',');
    }
    if let Some(id) = ack_id {
        out.extend_from_slice(id.to_string().as_bytes());
    }
    out
}

fn finish(out: Vec<u8>) -> Utf8Bytes {
    // serde_json writes valid UTF-8 and the header is ASCII, so this is text;
    // the check costs one pass and is done once per packet, not per recipient.
    Utf8Bytes::try_from(bytes::Bytes::from(out)).unwrap_or_else(|_| Utf8Bytes::from_static("4"))
}

/// `42[...]`/`45n-[...]` with an optional ack id: the full Engine.IO frame text.
pub fn encode_event(
    namespace: &str,
    event: &str,
    args: &impl Args,
    attachments: usize,
    ack_id: Option<u64>,
) -> serde_json::Result<Utf8Bytes> {
    let kind = if attachments > 0 {
        PacketType::BinaryEvent
    } else {
        PacketType::Event
    };
    let mut out = header(kind, attachments, namespace, ack_id);
    out.push(b'[');
    serde_json::to_writer(&mut out, event)?;
    args.write_args(&mut out)?;
    out.push(b']');
    Ok(finish(out))
}

/// `43id[...]`/`46n-id[...]`.
pub fn encode_ack(
    namespace: &str,
    ack_id: u64,
    args: &impl Args,
    attachments: usize,
) -> serde_json::Result<Utf8Bytes> {
    let kind = if attachments > 0 {
        PacketType::BinaryAck
    } else {
        PacketType::Ack
    };
    let mut out = header(kind, attachments, namespace, Some(ack_id));
    out.push(b'[');
    let start = out.len();
    args.write_args(&mut out)?;
    if out.len() > start {
        out.remove(start); // the leading comma of the first argument
    }
    out.push(b']');
    Ok(finish(out))
}

/// `40{...}`: the CONNECT answer.
pub fn encode_connect(namespace: &str, data: &impl Serialize) -> serde_json::Result<Utf8Bytes> {
    let mut out = header(PacketType::Connect, 0, namespace, None);
    serde_json::to_writer(&mut out, data)?;
    Ok(finish(out))
}

/// `44{"message":...}`: a refused CONNECT.
pub fn encode_connect_error(namespace: &str, message: &str) -> Utf8Bytes {
    let mut out = header(PacketType::ConnectError, 0, namespace, None);
    // A struct with one string field cannot fail to serialise.
    let _ = serde_json::to_writer(&mut out, &serde_json::json!({ "message": message }));
    finish(out)
}

/// `41`: the server ends a namespace connection.
pub fn encode_disconnect(namespace: &str) -> Utf8Bytes {
    finish(header(PacketType::Disconnect, 0, namespace, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_connect_to_namespaces() {
        let p = parse("0").unwrap();
        assert_eq!(
            (p.kind, p.namespace.as_str(), p.payload),
            (PacketType::Connect, "/", Payload::Connect(None))
        );
        let p = parse(r#"0/custom,{"token":"abc"}"#).unwrap();
        assert_eq!(p.namespace, "/custom");
        assert_eq!(
            p.payload,
            Payload::Connect(json!({"token": "abc"}).as_object().cloned())
        );
        assert_eq!(parse("0/random").unwrap().namespace, "/random");
        assert!(parse("0[1]").is_err());
    }

    #[test]
    fn parses_events_acks_and_binary_headers() {
        let p = parse(r#"2456["message-with-ack",1,"2",{"3":[false]}]"#).unwrap();
        assert_eq!(p.ack_id, Some(456));
        assert_eq!(
            p.payload,
            Payload::Event(
                "message-with-ack".into(),
                vec![json!(1), json!("2"), json!({"3": [false]})]
            )
        );
        let p = parse(r#"52-789["m",{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.ack_id),
            (PacketType::BinaryEvent, 2, Some(789))
        );
        let p = parse(r#"3/admin,12["ok"]"#).unwrap();
        assert_eq!((p.namespace.as_str(), p.ack_id), ("/admin", Some(12)));
    }

    #[test]
    fn refuses_malformed_packets() {
        for bad in [
            "",
            "abc",
            "9",
            "2{}",
            "2abc[\"x\"]",
            "2[]",
            "2[1]",
            "3[]",
            "5[\"x\"]",
            "5x-[\"x\"]",
            "5999-[\"x\"]",
            "4{}",
            "1{}",
            "299999999999999999999[\"x\"]",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn encodes_compact_packets() {
        let args = vec![json!(1), json!("2"), json!({"3": [true]})];
        assert_eq!(
            encode_event("/", "message-back", &args, 0, None)
                .unwrap()
                .as_str(),
            r#"42["message-back",1,"2",{"3":[true]}]"#
        );
        assert_eq!(
            encode_ack("/", 456, &args, 0).unwrap().as_str(),
            r#"43456[1,"2",{"3":[true]}]"#
        );
        assert_eq!(encode_ack("/x", 1, &(), 0).unwrap().as_str(), "43/x,1[]");
        assert_eq!(
            encode_event("/", "e", &(&json!({"a": 1}), "12"), 0, None)
                .unwrap()
                .as_str(),
            r#"42["e",{"a":1},"12"]"#
        );
        assert_eq!(
            encode_event("/c", "e", &(), 2, Some(7)).unwrap().as_str(),
            r#"452-/c,7["e"]"#
        );
        assert_eq!(
            encode_connect_error("/random", "Invalid namespace").as_str(),
            r#"44/random,{"message":"Invalid namespace"}"#
        );
        assert_eq!(encode_disconnect("/").as_str(), "41");
    }

    #[test]
    fn reads_lone_surrogates_as_replacement_characters() {
        let p = parse(r#"2["m",{"content":"a\ud800b","ok":"\ud83d\ude00"}]"#).unwrap();
        assert!(p.lossy_text);
        assert_eq!(
            p.payload,
            Payload::Event(
                "m".into(),
                vec![json!({"content": "a\u{fffd}b", "ok": "😀"})]
            )
        );
        let p = parse(r#"2["m","\udc00","\\ud800"]"#).unwrap();
        assert!(p.lossy_text);
        assert_eq!(
            p.payload,
            Payload::Event("m".into(), vec![json!("\u{fffd}"), json!("\\ud800")])
        );
        assert!(!parse(r#"2["m","\ud83d\ude00"]"#).unwrap().lossy_text);
        assert!(parse(r#"2["m","\ud800"#).is_err());
    }

    #[test]
    fn keeps_object_keys_in_arrival_order() {
        let p = parse(r#"2["e",{"z":1,"a":2}]"#).unwrap();
        let Payload::Event(_, args) = p.payload else {
            panic!("not an event")
        };
        assert_eq!(
            encode_event("/", "e", &args, 0, None).unwrap().as_str(),
            r#"42["e",{"z":1,"a":2}]"#
        );
    }
}
