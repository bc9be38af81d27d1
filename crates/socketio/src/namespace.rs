//! Namespaces: their connected sockets, their rooms, and broadcasting.
//!
//! A broadcast encodes its packet once; every recipient's queue gets a clone of
//! the same reference-counted bytes. Rooms are local to this process: joining
//! rooms across nodes is the application's broker's job, not this crate's.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::Utf8Bytes;
use bytes::Bytes;

use crate::engine::{Frame, SendError, Sid};
use crate::handler::Handler;
use crate::packet::{encode_event, Args};
use crate::socket::{close_slow_consumer, EmitError, Socket};

/// A room name.
pub type Room = Arc<str>;

pub(crate) struct NamespaceInner {
    name: String,
    handler: Arc<dyn Handler>,
    sockets: RwLock<HashMap<u64, Socket>>,
    rooms: RwLock<HashMap<Room, HashMap<u64, Socket>>>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl NamespaceInner {
    pub(crate) fn new(name: String, handler: Arc<dyn Handler>) -> Self {
        Self {
            name,
            handler,
            sockets: RwLock::default(),
            rooms: RwLock::default(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn handler(&self) -> &dyn Handler {
        &*self.handler
    }

    pub(crate) fn insert_socket(&self, socket: &Socket) {
        write(&self.sockets).insert(socket.0.key, socket.clone());
    }

    pub(crate) fn remove_socket(&self, key: u64) {
        write(&self.sockets).remove(&key);
    }

    pub(crate) fn add_to_room(&self, room: &Room, socket: &Socket) {
        write(&self.rooms)
            .entry(room.clone())
            .or_default()
            .insert(socket.0.key, socket.clone());
    }

    pub(crate) fn remove_from_room(&self, room: &str, key: u64) {
        let mut rooms = write(&self.rooms);
        if let Some(members) = rooms.get_mut(room) {
            members.remove(&key);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }
}

/// A handle on a namespace, for broadcasting and counting.
#[derive(Clone)]
pub struct Namespace(pub(crate) Arc<NamespaceInner>);

impl Namespace {
    /// The namespace's name, as given to the builder (`"/"` for the main one).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Every socket in `room`.
    pub fn to<'a>(&'a self, room: &'a str) -> Broadcast<'a> {
        Broadcast::new(&self.0, Some(room))
    }

    /// Every socket of the namespace.
    pub fn all(&self) -> Broadcast<'_> {
        Broadcast::new(&self.0, None)
    }

    /// Number of sockets connected to the namespace on this node.
    pub fn socket_count(&self) -> usize {
        read(&self.0.sockets).len()
    }

    /// Number of sockets in a room on this node.
    pub fn room_size(&self, room: &str) -> usize {
        read(&self.0.rooms).get(room).map_or(0, HashMap::len)
    }

    /// Every socket connected to the namespace on this node.
    pub fn sockets(&self) -> Vec<Socket> {
        read(&self.0.sockets).values().cloned().collect()
    }

    /// The rooms with at least one socket on this node.
    pub fn rooms(&self) -> Vec<Room> {
        read(&self.0.rooms).keys().cloned().collect()
    }

    /// The sockets in a room on this node.
    pub fn room_sockets(&self, room: &str) -> Vec<Socket> {
        read(&self.0.rooms)
            .get(room)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// Encodes an event once, for [`Broadcast::emit_encoded`] or [`Socket::emit_encoded`]
/// (for example to relay the same frame to many rooms, or from another node).
pub fn encode_event_frame(
    namespace: &str,
    event: &str,
    args: impl Args,
) -> Result<Utf8Bytes, EmitError> {
    Ok(encode_event(namespace, event, &args, 0, None)?)
}

/// A broadcast being set up: a room (or the whole namespace), minus one socket.
pub struct Broadcast<'a> {
    namespace: &'a NamespaceInner,
    room: Option<&'a str>,
    except: Option<u64>,
    except_id: Option<Sid>,
}

impl<'a> Broadcast<'a> {
    pub(crate) fn new(namespace: &'a NamespaceInner, room: Option<&'a str>) -> Self {
        Self {
            namespace,
            room,
            except: None,
            except_id: None,
        }
    }

    /// Leaves `socket` out.
    pub fn except(mut self, socket: &Socket) -> Self {
        self.except = Some(socket.0.key);
        self
    }

    /// Leaves out the socket with this id (for example one named by another node).
    pub fn except_id(mut self, id: Sid) -> Self {
        self.except_id = Some(id);
        self
    }

    /// Sends an event; returns how many sockets it was queued for.
    pub fn emit(self, event: &str, args: impl Args) -> Result<usize, EmitError> {
        self.emit_binary(event, args, Vec::new())
    }

    /// Sends an event with binary attachments (placeholders in `args`).
    pub fn emit_binary(
        self,
        event: &str,
        args: impl Args,
        binary: Vec<Bytes>,
    ) -> Result<usize, EmitError> {
        let text = encode_event(&self.namespace.name, event, &args, binary.len(), None)?;
        Ok(self.send(text, &binary))
    }

    /// Sends a frame made by [`encode_event_frame`] for this namespace.
    pub fn emit_encoded(self, frame: &Utf8Bytes) -> usize {
        self.send(frame.clone(), &[])
    }

    fn send(self, text: Utf8Bytes, binary: &[Bytes]) -> usize {
        let count = 1 + binary.len();
        let frames = || {
            std::iter::once(Frame::Text(text.clone()))
                .chain(binary.iter().cloned().map(Frame::Binary))
        };
        let mut sent = 0;
        let mut overflowed = Vec::new();
        let mut deliver = |socket: &Socket| {
            if Some(socket.0.key) == self.except
                || self.except_id.is_some_and(|id| socket.id() == id)
            {
                return;
            }
            match socket.0.session.send_all(frames(), count) {
                Ok(()) => sent += 1,
                Err(SendError::Full) => overflowed.push(socket.0.session.clone()),
                Err(SendError::Closed) => {}
            }
        };
        match self.room {
            Some(room) => {
                if let Some(members) = read(&self.namespace.rooms).get(room) {
                    members.values().for_each(&mut deliver);
                }
            }
            None => read(&self.namespace.sockets)
                .values()
                .for_each(&mut deliver),
        }
        for session in overflowed {
            close_slow_consumer(&session);
        }
        sent
    }
}
