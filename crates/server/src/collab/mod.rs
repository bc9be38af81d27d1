//! Collaborative editing on this node: the open documents ("rooms"), and how
//! document traffic crosses between nodes.
//!
//! Each open document is a task of its own ([`room`]) that owns the in-memory
//! Yjs document and the connections editing it; each WebSocket client is a
//! task of its own ([`connection`]). A room is opened by its first client,
//! loads the document from the Store, and unloads a while after its last
//! client left.
//!
//! Between nodes, a room publishes on its document's broker topic
//! ([`Topic::Document`]) and every node with that document open subscribes
//! to it. A payload is `<node id>\n<kind><data>`: `U` an update
//! (already stored), `A` awareness states, `Q` a node asking the others for
//! their awareness states. A node skips its own payloads: its clients had
//! them directly. When the broker had lost its subscriptions for a while,
//! every room reads its document from the Store again and sends its clients
//! what they missed.
//!
//! The HTTP upgrade (auth, access, limits) lives in `http::collab`.

mod connection;
#[cfg(test)]
mod in_process_tests;
mod room;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use switchboard_core::{Broker, DocumentId, Store, Topic};
use tokio::sync::{mpsc, oneshot};

pub use connection::serve;

use crate::config::CollabLimits;
use room::{Command, Remote};

/// What a room sends to one connection.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Bytes),
    Close(CloseCode, &'static str),
}

/// WebSocket close codes of the collaborative-editing endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: the answer to the client's own close.
    Normal,
    /// 1001: the server is shutting down; reconnect (to another node).
    GoingAway,
    /// 1002: the client broke the WebSocket protocol.
    ProtocolError,
    /// 1003: a text message; the protocol is binary.
    Unsupported,
    /// 1007: a malformed message.
    Malformed,
    /// 1008: the document would grow past its limit.
    DocumentTooLarge,
    /// 1009: a message larger than the update limit.
    TooLarge,
    /// 1011: the document could not be loaded or stored.
    Unavailable,
    /// 1013: the document is full, or this client fell too far behind.
    TryAgainLater,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::Malformed => 1007,
            CloseCode::DocumentTooLarge => 1008,
            CloseCode::TooLarge => 1009,
            CloseCode::Unavailable => 1011,
            CloseCode::TryAgainLater => 1013,
        }
    }
}

/// A room as others reach it.
#[derive(Clone)]
struct RoomHandle {
    commands: mpsc::Sender<Command>,
    remote: mpsc::UnboundedSender<Remote>,
    clients: Arc<AtomicUsize>,
}

/// Collaborative editing on this node.
pub struct Collab {
    rooms: Mutex<HashMap<DocumentId, RoomHandle>>,
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    limits: CollabLimits,
    /// Tells this node's broker payloads from other nodes'.
    node: String,
    next_connection: AtomicU64,
}

impl Collab {
    pub fn new(store: Arc<dyn Store>, broker: Arc<dyn Broker>, limits: CollabLimits) -> Self {
        Self {
            rooms: Mutex::default(),
            store,
            broker,
            limits,
            node: node_id(),
            next_connection: AtomicU64::new(1),
        }
    }

    pub fn limits(&self) -> &CollabLimits {
        &self.limits
    }

    /// Clients of a document on this node.
    pub fn clients(&self, document: &DocumentId) -> usize {
        self.rooms()
            .get(document)
            .map_or(0, |room| room.clients.load(Ordering::Relaxed))
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<DocumentId, RoomHandle>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room of a document, opened if needed.
    fn room(self: &Arc<Self>, document: &DocumentId) -> RoomHandle {
        let mut rooms = self.rooms();
        if let Some(room) = rooms.get(document) {
            if !room.commands.is_closed() {
                return room.clone();
            }
        }
        let handle = room::open(self.clone(), document.clone());
        rooms.insert(document.clone(), handle.clone());
        metrics::gauge!("switchboard_collab_documents").set(rooms.len() as f64);
        handle
    }

    /// Forgets a room that is closing, unless it has work queued, in which
    /// case it must stay. Called by the room itself.
    fn forget(&self, document: &DocumentId, commands: &mpsc::Receiver<Command>) -> bool {
        let mut rooms = self.rooms();
        if !commands.is_empty() {
            return false;
        }
        rooms.remove(document);
        metrics::gauge!("switchboard_collab_documents").set(rooms.len() as f64);
        true
    }

    /// Forgets a room that failed or shut down.
    fn forget_failed(&self, document: &DocumentId) {
        let mut rooms = self.rooms();
        rooms.remove(document);
        metrics::gauge!("switchboard_collab_documents").set(rooms.len() as f64);
    }

    fn next_connection(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands a payload delivered on a document's topic to that document's room.
    pub fn deliver(&self, document: &DocumentId, payload: &Bytes) {
        let Some(remote) = self.parse_payload(payload) else {
            return;
        };
        if let Some(room) = self.rooms().get(document) {
            let _ = room.remote.send(remote);
        }
    }

    /// The broker lost its subscriptions for a while: every room reads its
    /// document from the Store again and sends its clients what they missed.
    pub fn resubscribed(&self) {
        for room in self.rooms().values() {
            let _ = room.remote.send(Remote::Resync);
        }
    }

    fn parse_payload(&self, payload: &Bytes) -> Option<Remote> {
        let split = payload.iter().position(|b| *b == b'\n')?;
        if &payload[..split] == self.node.as_bytes() {
            return None;
        }
        let (&kind, data) = payload[split + 1..].split_first()?;
        match kind {
            b'U' => Some(Remote::Update(payload.slice(split + 2..))),
            b'A' => match switchboard_collab::protocol::decode_awareness_update(data) {
                Ok(update) => Some(Remote::Awareness(update)),
                Err(e) => {
                    tracing::warn!(error = %e, "malformed awareness from another node");
                    None
                }
            },
            b'Q' => Some(Remote::Query),
            _ => None,
        }
    }

    /// A payload for the other nodes.
    fn payload(&self, kind: u8, data: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(self.node.len() + 2 + data.len());
        out.put_slice(self.node.as_bytes());
        out.put_u8(b'\n');
        out.put_u8(kind);
        out.put_slice(data);
        out.freeze()
    }

    /// Closes every connection (1001) so its client reconnects elsewhere, and
    /// waits for each room to finish the write it is doing.
    pub async fn shutdown(&self) {
        let rooms: Vec<RoomHandle> = self.rooms().values().cloned().collect();
        let mut waits = Vec::with_capacity(rooms.len());
        for room in rooms {
            let (done, finished) = oneshot::channel();
            if room.commands.send(Command::Shutdown { done }).await.is_ok() {
                waits.push(finished);
            }
        }
        for finished in waits {
            let _ = finished.await;
        }
    }
}

/// The broker topic of a document.
fn channel(document: &DocumentId) -> Topic {
    Topic::Document(document.clone())
}

fn node_id() -> String {
    let mut raw = [0u8; 8];
    let _ = getrandom::fill(&mut raw);
    format!(
        "{:016x}",
        u64::from_le_bytes(raw) ^ u64::from(std::process::id())
    )
}
