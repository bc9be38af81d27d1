//! From the broker to local sockets: workspace topics, the payload envelope,
//! and delivering a payload to the sockets of this node.
//!
//! A room broadcast is encoded once into a Socket.IO frame by the node that
//! publishes it; the payload is `<socket id to leave out, or nothing>\n<frame>`,
//! and every node hands the same frame bytes to its local members.

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

/// Wraps an encoded frame for the broker.
pub fn envelope(frame: &Utf8Bytes, except: Option<Sid>) -> Bytes {
    let mut out = BytesMut::with_capacity(frame.len() + 21);
    if let Some(sid) = except {
        out.put_slice(sid.as_str().as_bytes());
    }
    out.put_u8(b'\n');
    out.put_slice(frame.as_bytes());
    out.freeze()
}

/// Hands a payload delivered on a workspace's topic to the local members of its room.
pub fn deliver(namespace: &Namespace, workspace: &str, payload: &Bytes) {
    let Some(split) = payload.iter().position(|b| *b == b'\n') else {
        tracing::warn!(%workspace, "broker payload without an envelope");
        return;
    };
    let except = std::str::from_utf8(&payload[..split])
        .ok()
        .and_then(Sid::parse);
    let Ok(frame) = Utf8Bytes::try_from(payload.slice(split + 1..)) else {
        tracing::warn!(%workspace, "broker payload is not text");
        return;
    };
    let room = room(workspace);
    let broadcast = namespace.to(&room);
    let broadcast = match except {
        Some(sid) => broadcast.except_id(sid),
        None => broadcast,
    };
    let sent = broadcast.emit_encoded(&frame);
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
