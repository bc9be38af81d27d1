//! [`Socket`]: one client connected to one namespace. Emitting to it, acks in
//! both directions, its rooms, its application data, and disconnecting it.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::Utf8Bytes;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::client::Client;
use crate::engine::{CloseReason, Frame, SendError, Session, Sid, Transport};
use crate::handler::{AckReply, DisconnectReason};
use crate::namespace::{Broadcast, NamespaceInner, Room};
use crate::packet::{encode_disconnect, encode_event, Args};
use crate::timer::lock;

const CONNECTING: u8 = 0;
const CONNECTED: u8 = 1;
const GONE: u8 = 2;

/// A client connected to a namespace. Cheap to clone.
#[derive(Clone)]
pub struct Socket(pub(crate) Arc<SocketInner>);

pub(crate) struct SocketInner {
    /// Key of this socket in its namespace's maps.
    pub(crate) key: u64,
    sid: Sid,
    pid: OnceLock<Sid>,
    pub(crate) namespace: Arc<NamespaceInner>,
    pub(crate) session: Arc<Session<Client>>,
    rooms: Mutex<Vec<Room>>,
    acks: Mutex<HashMap<u64, oneshot::Sender<AckReply>>>,
    next_ack: AtomicU64,
    /// `CONNECTING`, `CONNECTED` or `GONE`.
    state: AtomicU8,
    data: OnceLock<Box<dyn Any + Send + Sync>>,
}

/// A packet could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The arguments failed to serialise as JSON; nothing was sent.
    #[error("arguments could not be serialised: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The connection is closed.
    #[error("the socket is disconnected")]
    Closed,
    /// The connection's outgoing queue is full; the connection is being closed.
    #[error("the client does not read fast enough; it is being disconnected")]
    SlowConsumer,
}

/// A server-sent event's acknowledgement did not come.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// The event could not be sent.
    #[error(transparent)]
    Emit(#[from] EmitError),
    /// The timeout passed without an acknowledgement.
    #[error("no acknowledgement within the timeout")]
    Timeout,
    /// The socket left the namespace (or its connection closed) before acknowledging.
    #[error("the socket disconnected before acknowledging")]
    Disconnected,
}

impl Socket {
    pub(crate) fn new(
        key: u64,
        namespace: Arc<NamespaceInner>,
        session: Arc<Session<Client>>,
    ) -> Self {
        Socket(Arc::new(SocketInner {
            key,
            sid: Sid::random(),
            pid: OnceLock::new(),
            namespace,
            session,
            rooms: Mutex::new(Vec::new()),
            acks: Mutex::new(HashMap::new()),
            next_ack: AtomicU64::new(0),
            state: AtomicU8::new(CONNECTING),
            data: OnceLock::new(),
        }))
    }

    /// The public id of this socket (the client's `socket.id`).
    pub fn id(&self) -> Sid {
        self.0.sid
    }

    /// The private session id used for connection-state recovery, if recovery is on.
    pub fn pid(&self) -> Option<Sid> {
        self.0.pid.get().copied()
    }

    pub(crate) fn set_pid(&self, pid: Sid) {
        let _ = self.0.pid.set(pid);
    }

    /// The name of the namespace this socket is connected to.
    pub fn namespace_name(&self) -> &str {
        self.0.namespace.name()
    }

    /// The transport the connection uses right now.
    pub fn transport(&self) -> Transport {
        self.0.session.transport()
    }

    /// Whether the socket is in its namespace: its CONNECT was accepted and it has not left.
    pub fn is_connected(&self) -> bool {
        self.0.state.load(Ordering::Acquire) == CONNECTED
    }

    /// Attaches application data to the socket (once; later calls return false).
    pub fn set_data<T: Any + Send + Sync>(&self, data: T) -> bool {
        self.0.data.set(Box::new(data)).is_ok()
    }

    /// The application data, if it was set with this type.
    pub fn data<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0.data.get()?.downcast_ref()
    }

    /// Sends an event to this client.
    pub fn emit(&self, event: &str, args: impl Args) -> Result<(), EmitError> {
        self.emit_binary(event, args, Vec::new())
    }

    /// Sends an event with binary attachments (placeholders in `args`).
    pub fn emit_binary(
        &self,
        event: &str,
        args: impl Args,
        binary: Vec<Bytes>,
    ) -> Result<(), EmitError> {
        let text = encode_event(self.namespace_name(), event, &args, binary.len(), None)?;
        self.send_packet(text, binary)
    }

    /// Sends an already encoded event frame (from [`crate::encode_event_frame`]).
    pub fn emit_encoded(&self, frame: &Utf8Bytes) -> Result<(), EmitError> {
        self.send_packet(frame.clone(), Vec::new())
    }

    /// Frames queued for this connection and not yet written, and how many it may hold
    /// before it is closed as a slow consumer: a sender of much data (a replay) can
    /// wait for room instead of overflowing the queue.
    pub fn queued_frames(&self) -> (usize, usize) {
        self.0.session.queued()
    }

    /// Sends an event and waits for the client's acknowledgement.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        args: impl Args,
        timeout: Duration,
    ) -> Result<AckReply, AckError> {
        let id = self.0.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.0.acks).insert(id, tx);
        let sent = encode_event(self.namespace_name(), event, &args, 0, Some(id))
            .map_err(EmitError::from)
            .and_then(|text| self.send_packet(text, Vec::new()));
        if let Err(e) = sent {
            lock(&self.0.acks).remove(&id);
            return Err(e.into());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => {
                lock(&self.0.acks).remove(&id);
                Err(AckError::Timeout)
            }
        }
    }

    pub(crate) fn resolve_ack(&self, id: u64, reply: AckReply) {
        let waiter = lock(&self.0.acks).remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(reply);
        }
    }

    /// Queues a packet and its attachments on the connection.
    pub(crate) fn send_packet(&self, text: Utf8Bytes, binary: Vec<Bytes>) -> Result<(), EmitError> {
        let count = 1 + binary.len();
        let frames =
            std::iter::once(Frame::Text(text)).chain(binary.into_iter().map(Frame::Binary));
        match self.0.session.send_all(frames, count) {
            Ok(()) => Ok(()),
            Err(SendError::Closed) => Err(EmitError::Closed),
            Err(SendError::Full) => {
                close_slow_consumer(&self.0.session);
                Err(EmitError::SlowConsumer)
            }
        }
    }

    /// Joins a room of this socket's namespace.
    pub fn join(&self, room: &str) {
        let mut rooms = lock(&self.0.rooms);
        // Checked under the rooms lock: `detach` marks the socket gone before it empties them.
        if self.0.state.load(Ordering::Acquire) == GONE || rooms.iter().any(|r| &**r == room) {
            return;
        }
        let room: Room = Arc::from(room);
        self.0.namespace.add_to_room(&room, self);
        rooms.push(room);
    }

    /// Leaves a room.
    pub fn leave(&self, room: &str) {
        let mut rooms = lock(&self.0.rooms);
        if let Some(i) = rooms.iter().position(|r| &**r == room) {
            let room = rooms.swap_remove(i);
            self.0.namespace.remove_from_room(&room, self.0.key);
        }
    }

    /// The rooms this socket is in.
    pub fn rooms(&self) -> Vec<Room> {
        lock(&self.0.rooms).clone()
    }

    /// Whether this socket is in `room`.
    pub fn in_room(&self, room: &str) -> bool {
        lock(&self.0.rooms).iter().any(|r| &**r == room)
    }

    /// Everyone in `room` but this socket.
    pub fn to<'a>(&'a self, room: &'a str) -> Broadcast<'a> {
        Broadcast::new(&self.0.namespace, Some(room)).except(self)
    }

    /// Ends this socket's membership of the namespace; the connection stays open.
    pub fn disconnect(&self) {
        let _ = self
            .0
            .session
            .send(Frame::Text(encode_disconnect(self.namespace_name())));
        self.0.session.state().remove_socket(self.0.key);
        self.detach(DisconnectReason::ServerDisconnect);
    }

    /// Closes the whole connection, every namespace on it included.
    pub fn close_connection(&self) {
        self.0.session.close(CloseReason::ServerClose);
    }

    pub(crate) fn mark_connected(&self) {
        self.0.state.store(CONNECTED, Ordering::Release);
    }

    /// Leaves the namespace, fails pending acks, tells the handler, leaves every room.
    pub(crate) fn detach(&self, reason: DisconnectReason) {
        let was = self.0.state.swap(GONE, Ordering::AcqRel);
        if was == CONNECTED {
            self.0.namespace.remove_socket(self.0.key);
            lock(&self.0.acks).clear();
            // Before leaving the rooms: the handler may keep them for recovery.
            self.0.namespace.handler().disconnect(self, reason);
        }
        self.leave_all();
    }

    fn leave_all(&self) {
        let rooms = std::mem::take(&mut *lock(&self.0.rooms));
        for room in rooms {
            self.0.namespace.remove_from_room(&room, self.0.key);
        }
    }
}

/// Closes a session whose queue overflowed. Done from a task of its own so the
/// close (and the disconnect handlers it runs) never runs under the caller's locks.
pub(crate) fn close_slow_consumer(session: &Arc<Session<Client>>) {
    let session = session.clone();
    tracing::debug!(sid = %session.sid(), "closing a slow consumer");
    tokio::spawn(async move {
        session.close(CloseReason::SlowConsumer);
    });
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.0.sid)
            .field("namespace", &self.namespace_name())
            .finish()
    }
}
