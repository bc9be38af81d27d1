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
//! their awareness states, `D` the document was deleted. A node skips its
//! own payloads: its clients had them directly. When the broker had lost its
//! subscriptions for a while, every room reads its document from the Store
//! again and sends its clients what they missed.
//!
//! Access holds on live connections: a connection carries its user and
//! whether it may write, settled at the upgrade. A viewer's updates are
//! dropped (it still receives the document, and awareness works both ways).
//! [`Collab::access_changed`] re-applies a membership change to the user's
//! connections to the workspace's documents (closed with 1008 without access,
//! read-only or writable per the new role), and a connection closes with 1008
//! at its token's `exp`.
//!
//! The document API (`http::documents`) reads documents from the Store, and
//! restores and deletes them through [`Collab::restore`] and
//! [`Collab::delete`]. A restore is applied by the document's room on this
//! node, opened for it if no client has it open, like any client's update:
//! one path, whatever is open where, and no room can open on this node
//! between a check and a write and miss it. A deletion goes through the
//! room when it is open here (so no update of its clients is stored after
//! it), else straight to the Store; either way the other nodes hear of it
//! on the document's topic, and every connection to it closes with 4404.
//! Not 1000 or 1008: on those the stock y-websocket client (3.x) reconnects
//! within a fraction of a second and sends its whole copy, which would
//! store the deleted document again; a close code in 4400-4499 is permanent
//! to it, and it stops.
//!
//! The HTTP upgrade (auth, access, limits) lives in `http::collab`.

mod connection;
#[cfg(test)]
mod in_process_tests;
mod room;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use switchboard_core::{Broker, DocumentId, Role, Store, StoreError, Topic};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};

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
    /// 1008: the user no longer has access to the workspace.
    Forbidden,
    /// 1008: the token expired; reconnect with a fresh one.
    Expired,
    /// 4404: the document was deleted through the document API; do not
    /// reconnect (y-websocket stops on 4400-4499), or it comes back.
    Deleted,
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
            CloseCode::DocumentTooLarge | CloseCode::Forbidden | CloseCode::Expired => 1008,
            CloseCode::TooLarge => 1009,
            CloseCode::Unavailable => 1011,
            CloseCode::TryAgainLater => 1013,
            CloseCode::Deleted => 4404,
        }
    }
}

/// Why a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The restoring update would take the document past its size limit.
    #[error("restoring this version would take the document past its size limit")]
    TooLarge,
    /// The version or the document does not decode, or yrs failed on them.
    #[error("the version cannot be restored: {0}")]
    Invalid(String),
    /// The document could not be loaded or stored.
    #[error("the document is unavailable")]
    Unavailable,
}

/// Who a connection belongs to and what it may do, as the upgrade settled it.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The user (the token's `sub`).
    pub user: String,
    /// The user's role in the document's workspace when access was checked.
    pub role: Role,
    /// The role the token itself gives in the workspace, if any: it holds
    /// whatever happens to the membership, until the token expires.
    pub token_role: Option<Role>,
    /// When the token expires, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// When access was read (taken before reading it): a change of access
    /// recorded after it is applied when the connection joins its room.
    pub checked_at: Instant,
}

/// How long access changes are remembered for connections that were being
/// opened while they happened (checked before, joined after).
const RECENT_CHANGES: Duration = Duration::from_secs(60);

/// Recent access changes by (user, workspace): when, and the membership role
/// after it.
#[derive(Default)]
struct AccessChanges {
    recent: HashMap<(String, String), (Instant, Option<Role>)>,
    /// The size at which old entries are removed next (amortized O(1)).
    prune_at: usize,
}

/// The open rooms, by workspace, so that an access change reaches the rooms
/// of its workspace only.
#[derive(Default)]
struct Rooms {
    by_workspace: HashMap<String, HashMap<String, RoomHandle>>,
    len: usize,
}

impl Rooms {
    fn get(&self, document: &DocumentId) -> Option<&RoomHandle> {
        self.by_workspace
            .get(&document.workspace)?
            .get(&document.name)
    }

    fn insert(&mut self, document: &DocumentId, room: RoomHandle) {
        let rooms = self
            .by_workspace
            .entry(document.workspace.clone())
            .or_default();
        if rooms.insert(document.name.clone(), room).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, document: &DocumentId) {
        let Some(rooms) = self.by_workspace.get_mut(&document.workspace) else {
            return;
        };
        if rooms.remove(&document.name).is_some() {
            self.len -= 1;
        }
        if rooms.is_empty() {
            self.by_workspace.remove(&document.workspace);
        }
    }

    fn of_workspace<'a>(&'a self, workspace: &str) -> impl Iterator<Item = &'a RoomHandle> {
        self.by_workspace
            .get(workspace)
            .into_iter()
            .flat_map(HashMap::values)
    }

    fn all(&self) -> impl Iterator<Item = &RoomHandle> {
        self.by_workspace.values().flat_map(HashMap::values)
    }
}

/// A room as others reach it.
#[derive(Clone)]
struct RoomHandle {
    commands: mpsc::Sender<Command>,
    remote: mpsc::Sender<Remote>,
    /// A remote event did not fit in `remote`: the room resyncs from the Store.
    remote_overflowed: Arc<AtomicBool>,
    clients: Arc<AtomicUsize>,
}

impl RoomHandle {
    /// Hands the room an event from another node (or an access change). When
    /// its queue is full, updates and awareness are dropped and the room reads
    /// its document from the Store again instead, which brings its clients
    /// what they carried; an access change is never dropped: it waits for room.
    fn remote(&self, event: Remote) {
        match self.remote.try_send(event) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(event @ Remote::Access { .. })) => {
                let remote = self.remote.clone();
                tokio::spawn(async move { remote.send(event).await });
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.remote_overflowed.store(true, Ordering::Release);
                metrics::counter!("switchboard_collab_remote_overflows_total").increment(1);
            }
        }
    }
}

/// Collaborative editing on this node.
pub struct Collab {
    rooms: Mutex<Rooms>,
    changes: Mutex<AccessChanges>,
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
            changes: Mutex::default(),
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

    fn rooms(&self) -> MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changes(&self) -> MutexGuard<'_, AccessChanges> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A user's access to a workspace changed: `role` is their membership
    /// role now (`None`: no membership). Every live connection of that user
    /// to a document of the workspace on this node takes the role the
    /// membership gives, else the one its token gives: without either it
    /// closes with 1008, a viewer's turns read-only, others writable. Reaches
    /// only the workspace's rooms; a connection being opened meanwhile gets
    /// the change when it joins.
    pub fn access_changed(&self, user: &str, workspace: &str, role: Option<Role>) {
        let at = Instant::now();
        {
            let mut changes = self.changes();
            if changes.recent.len() >= changes.prune_at {
                changes
                    .recent
                    .retain(|_, (when, _)| at.saturating_duration_since(*when) < RECENT_CHANGES);
                changes.prune_at = (changes.recent.len() * 2).max(64);
            }
            changes
                .recent
                .insert((user.to_owned(), workspace.to_owned()), (at, role));
        }
        for room in self.rooms().of_workspace(workspace) {
            room.remote(Remote::Access {
                user: user.into(),
                role,
            });
        }
    }

    /// The membership role after the latest access change of a user to a
    /// workspace, if one was recorded after `checked_at`.
    fn access_since(
        &self,
        user: &str,
        workspace: &str,
        checked_at: Instant,
    ) -> Option<Option<Role>> {
        let changes = self.changes();
        let key = (user.to_owned(), workspace.to_owned());
        match changes.recent.get(&key) {
            Some((at, role)) if *at >= checked_at => Some(*role),
            _ => None,
        }
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
        rooms.insert(document, handle.clone());
        metrics::gauge!("switchboard_collab_documents").set(rooms.len as f64);
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
        metrics::gauge!("switchboard_collab_documents").set(rooms.len as f64);
        true
    }

    /// Forgets a room that failed or shut down.
    fn forget_failed(&self, document: &DocumentId) {
        let mut rooms = self.rooms();
        rooms.remove(document);
        metrics::gauge!("switchboard_collab_documents").set(rooms.len as f64);
    }

    fn next_connection(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Every `(user, workspace)` with a connection to a document on this node,
    /// for re-checking access after missed access changes.
    pub async fn connected_users(&self) -> Vec<(String, String)> {
        let rooms: Vec<(String, RoomHandle)> = self
            .rooms()
            .by_workspace
            .iter()
            .flat_map(|(workspace, rooms)| {
                rooms
                    .values()
                    .map(move |room| (workspace.clone(), room.clone()))
            })
            .collect();
        let mut pairs = Vec::new();
        for (workspace, room) in rooms {
            let (done, users) = oneshot::channel();
            if room.commands.send(Command::Users { done }).await.is_ok() {
                if let Ok(users) = users.await {
                    pairs.extend(users.into_iter().map(|user| (user, workspace.clone())));
                }
            }
        }
        pairs
    }

    /// Hands a payload delivered on a document's topic to that document's room.
    pub fn deliver(&self, document: &DocumentId, payload: &Bytes) {
        let Some(remote) = self.parse_payload(payload) else {
            return;
        };
        if let Some(room) = self.rooms().get(document) {
            room.remote(remote);
        }
    }

    /// The broker lost its subscriptions for a while: every room reads its
    /// document from the Store again and sends its clients what they missed.
    pub fn resubscribed(&self) {
        for room in self.rooms().all() {
            room.remote(Remote::Resync);
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
            b'D' => Some(Remote::Deleted),
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

    /// A document as the Store holds it, as one Yjs update (`None` when the
    /// Store has nothing of it). Updates reach the Store before any client,
    /// so this is all that clients have seen.
    pub async fn document(&self, document: &DocumentId) -> Result<Option<Bytes>, StoreError> {
        let log = self.store.document_log(document).await?;
        if log.snapshot.is_none() && log.updates.is_empty() {
            return Ok(None);
        }
        let (state, _) = room::restore(&log);
        Ok(Some(Bytes::from(state.diff(&Default::default()))))
    }

    /// Makes a document's content that of `version` (a kept snapshot of it)
    /// with one update that reaches its clients on every node as any
    /// client's update does. Applied by the document's room on this node,
    /// opened for it if needed.
    pub async fn restore(
        self: &Arc<Self>,
        document: &DocumentId,
        version: Bytes,
    ) -> Result<(), RestoreError> {
        let (done, restored) = oneshot::channel();
        let command = Command::Restore { version, done };
        if self.room(document).commands.send(command).await.is_err() {
            return Err(RestoreError::Unavailable);
        }
        // A room that failed to load drops the command unanswered.
        restored.await.unwrap_or(Err(RestoreError::Unavailable))
    }

    /// Deletes a document (its log, snapshot and versions) and closes every
    /// connection to it, on every node, with 4404. False when the Store had
    /// nothing of it.
    pub async fn delete(&self, document: &DocumentId) -> Result<bool, StoreError> {
        let room = self.rooms().get(document).cloned();
        if let Some(room) = room {
            let (done, deleted) = oneshot::channel();
            if room.commands.send(Command::Delete { done }).await.is_ok() {
                if let Ok(deleted) = deleted.await {
                    return deleted;
                }
            }
        }
        let deleted = self.store.delete_document(document).await?;
        let payload = self.payload(b'D', &[]);
        if let Err(e) = self.broker.publish(&channel(document), payload).await {
            tracing::warn!(error = %e, document = ?document, "telling other nodes of a deletion failed");
        }
        Ok(deleted)
    }

    /// Closes every connection (1001) so its client reconnects elsewhere, and
    /// waits for each room to finish the write it is doing.
    pub async fn shutdown(&self) {
        let rooms: Vec<RoomHandle> = self.rooms().all().cloned().collect();
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
