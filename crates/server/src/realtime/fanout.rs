//! From the broker to local sockets: workspace topics, the payload envelope,
//! and delivering a payload to the sockets of this node.
//!
//! A room broadcast is encoded once into a Socket.IO frame by the node that
//! publishes it; the payload is `<header>\n<frame>`, and every node hands the
//! same frame bytes to its local members. The header is `#<id>` for a stored
//! message (so that nodes can tell which messages they delivered, whatever
//! an event published through the API is called), the id of a socket to leave
//! out, or nothing.

use bytes::{BufMut, Bytes, BytesMut};
use switchboard_core::Topic;
use switchboard_socketio::{Namespace, Sid, Utf8Bytes};

const WORKSPACE_ROOM: &str = "workspace:";

/// The broker topic of a workspace.
pub fn channel(workspace: &str) -> Topic {
    Topic::Workspace(workspace.to_owned())
}

/// The Socket.IO room of a workspace.
pub fn room(workspace: &str) -> String {
    format!("{WORKSPACE_ROOM}{workspace}")
}

/// The workspace of a Socket.IO room, if it is a workspace room.
pub fn workspace_of_room(room: &str) -> Option<&str> {
    room.strip_prefix(WORKSPACE_ROOM)
}

/// Who a broadcast is for, beyond its room.
#[derive(Clone, Copy, Debug)]
pub enum Header {
    /// Everyone in the room.
    All,
    /// Everyone but this socket.
    Except(Sid),
    /// Everyone: the stored message with this id.
    Message(i64),
}

/// Wraps an encoded frame for the broker.
pub fn envelope(frame: &Utf8Bytes, header: Header) -> Bytes {
    let mut out = BytesMut::with_capacity(frame.len() + 21);
    match header {
        Header::All => {}
        Header::Except(sid) => out.put_slice(sid.as_str().as_bytes()),
        Header::Message(id) => out.put_slice(format!("#{id}").as_bytes()),
    }
    out.put_u8(b'\n');
    out.put_slice(frame.as_bytes());
    out.freeze()
}

/// Splits a broker payload into its header and frame; `None` if malformed.
pub fn open(payload: &Bytes) -> Option<(Header, Utf8Bytes)> {
    let split = payload.iter().position(|b| *b == b'\n')?;
    let head = std::str::from_utf8(&payload[..split]).ok()?;
    let header = match head.strip_prefix('#') {
        Some(id) => Header::Message(id.parse().ok()?),
        None => Sid::parse(head).map_or(Header::All, Header::Except),
    };
    let frame = Utf8Bytes::try_from(payload.slice(split + 1..)).ok()?;
    Some((header, frame))
}

/// Hands a broadcast delivered on a workspace's topic to the local members of its room.
pub fn deliver(namespace: &Namespace, workspace: &str, header: Header, frame: &Utf8Bytes) {
    let room = room(workspace);
    let broadcast = namespace.to(&room);
    let broadcast = match header {
        Header::Except(sid) => broadcast.except_id(sid),
        Header::All | Header::Message(_) => broadcast,
    };
    let sent = broadcast.emit_encoded(frame);
    metrics::counter!("switchboard_broadcast_deliveries_total").increment(sent as u64);
}

/// The broker lost its subscriptions for a while: room broadcasts published
/// in between never reached this node's sockets. This records it (a warning
/// and `switchboard_broker_resubscriptions_total{consumer="chat"}`); the
/// messages among them are sent from the Store by `catchup.rs`.
pub fn resubscribed() {
    tracing::warn!("broker resubscribed: room broadcasts may have been missed");
    metrics::counter!("switchboard_broker_resubscriptions_total", "consumer" => "chat")
        .increment(1);
}
