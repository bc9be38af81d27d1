//! One Socket.IO client connection (one Engine.IO session): the sockets it has
//! in each namespace, the binary packet it may be assembling, and the dispatch
//! of each packet it sends (CONNECT, DISCONNECT, EVENT, ACK).
//!
//! Any packet that does not parse, or binary data nobody announced, closes the
//! connection, as the Socket.IO protocol requires.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::engine::{CloseReason, Frame, Message, Session, SessionState, Sid};
use crate::handler::{
    AckReply, AckSender, ConnectRequest, Connected, DisconnectReason, Event, RecoveryRequest,
};
use crate::io::IoInner;
use crate::packet::{encode_connect, encode_connect_error, parse, Packet, PacketType, Payload};
use crate::socket::Socket;
use crate::timer::lock;

/// The Socket.IO state of one Engine.IO session.
pub struct Client {
    io: Arc<IoInner>,
    sockets: Mutex<Vec<Socket>>,
    /// Boxed: rare, and larger than everything else an idle session holds.
    partial: Mutex<Option<Box<Partial>>>,
    /// A namespace was joined at least once, so the connect timeout no longer applies.
    joined: AtomicBool,
}

/// A binary packet waiting for its attachments.
struct Partial {
    packet: Packet,
    binary: Vec<Bytes>,
}

impl SessionState for Client {
    fn on_close(&self, _session: &Session<Self>, reason: CloseReason) {
        let sockets = std::mem::take(&mut *lock(&self.sockets));
        for socket in sockets {
            socket.detach(DisconnectReason::Transport(reason));
        }
        lock(&self.partial).take();
    }
}

impl Client {
    pub(crate) fn new(io: Arc<IoInner>) -> Self {
        Self {
            io,
            sockets: Mutex::new(Vec::new()),
            partial: Mutex::new(None),
            joined: AtomicBool::new(false),
        }
    }

    pub(crate) fn has_joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    fn socket(&self, namespace: &str) -> Option<Socket> {
        lock(&self.sockets)
            .iter()
            .find(|s| s.namespace_name() == namespace)
            .cloned()
    }

    pub(crate) fn remove_socket(&self, key: u64) {
        lock(&self.sockets).retain(|s| s.0.key != key);
    }
}

/// Handles one Engine.IO message of a client.
pub(crate) async fn on_message(session: &Arc<Session<Client>>, message: Message) {
    let client = session.state();
    let complete = match message {
        Message::Text(text) => {
            if lock(&client.partial).is_some() {
                return invalid(
                    session,
                    "text packet while binary attachments were expected",
                );
            }
            match parse(text.as_str()) {
                Ok(packet) if packet.attachments > 0 => {
                    *lock(&client.partial) = Some(Box::new(Partial {
                        binary: Vec::with_capacity(packet.attachments),
                        packet,
                    }));
                    return;
                }
                Ok(packet) => (packet, Vec::new()),
                Err(e) => return invalid(session, &e.to_string()),
            }
        }
        Message::Binary(data) => {
            let mut partial = lock(&client.partial);
            let Some(p) = partial.as_mut() else {
                drop(partial);
                return invalid(session, "binary data nobody announced");
            };
            p.binary.push(data);
            if p.binary.len() < p.packet.attachments {
                return;
            }
            match partial.take() {
                Some(p) => (p.packet, p.binary),
                None => return,
            }
        }
    };
    dispatch(session, complete.0, complete.1).await;
}

fn invalid(session: &Session<Client>, why: &str) {
    tracing::debug!(sid = %session.sid(), why, "invalid Socket.IO packet; closing");
    session.close(CloseReason::InvalidPacket);
}

async fn dispatch(session: &Arc<Session<Client>>, packet: Packet, binary: Vec<Bytes>) {
    let client = session.state();
    match packet.kind {
        // Boxed: the CONNECT future is large and rare; inline it would sit in every
        // connection's task for the connection's whole life.
        PacketType::Connect => Box::pin(connect(session, packet)).await,
        PacketType::Disconnect => {
            if let Some(socket) = client.socket(&packet.namespace) {
                client.remove_socket(socket.0.key);
                socket.detach(DisconnectReason::ClientDisconnect);
            }
        }
        PacketType::Event | PacketType::BinaryEvent => {
            let lossy_text = packet.lossy_text;
            let (Some(socket), Payload::Event(name, args)) =
                (client.socket(&packet.namespace), packet.payload)
            else {
                return; // an event for a namespace this client is not in: ignored, as by Node.js
            };
            let ack = packet.ack_id.map(|id| AckSender {
                socket: socket.clone(),
                id,
            });
            let event = Event {
                name,
                args,
                binary,
                ack,
                lossy_text,
            };
            socket.0.namespace.handler().event(&socket, event);
        }
        PacketType::Ack | PacketType::BinaryAck => {
            if let (Some(socket), Payload::Ack(args), Some(id)) = (
                client.socket(&packet.namespace),
                packet.payload,
                packet.ack_id,
            ) {
                socket.resolve_ack(id, AckReply { args, binary });
            }
        }
        PacketType::ConnectError => invalid(session, "CONNECT_ERROR from a client"),
    }
}

async fn connect(session: &Arc<Session<Client>>, packet: Packet) {
    let client = session.state();
    let io = &client.io;
    let Some(namespace) = io.namespaces.get(&packet.namespace) else {
        let _ = session.send(Frame::Text(encode_connect_error(
            &packet.namespace,
            "Invalid namespace",
        )));
        return;
    };
    if client.socket(&packet.namespace).is_some() {
        return; // already connected to this namespace
    }
    let mut auth = match packet.payload {
        Payload::Connect(auth) => auth.unwrap_or_default(),
        _ => Map::new(),
    };
    let recovery = if io.config.recovery {
        take_recovery(&mut auth)
    } else {
        None
    };
    let requested_pid = recovery.as_ref().and_then(|r| Sid::parse(&r.pid));

    let socket = Socket::new(io.next_key(), namespace.clone(), session.clone());
    let outcome = namespace
        .handler()
        .connect(&socket, ConnectRequest { auth, recovery })
        .await;
    let recovered = match outcome {
        Ok(Connected::Recovered) if requested_pid.is_some() => true,
        Ok(_) => false,
        Err(refusal) => {
            socket.detach(DisconnectReason::ServerDisconnect);
            let _ = session.send(Frame::Text(encode_connect_error(
                &packet.namespace,
                &refusal.message,
            )));
            return;
        }
    };
    if session.is_closed() {
        socket.detach(DisconnectReason::Transport(CloseReason::TransportClose));
        return;
    }
    if io.config.recovery {
        socket.set_pid(
            requested_pid
                .filter(|_| recovered)
                .unwrap_or_else(Sid::random),
        );
    }
    socket.mark_connected();
    namespace.insert_socket(&socket);
    lock(&client.sockets).push(socket.clone());
    client.joined.store(true, Ordering::Release);

    let answer = match socket.pid() {
        Some(pid) => serde_json::json!({ "sid": socket.id().as_str(), "pid": pid.as_str() }),
        None => serde_json::json!({ "sid": socket.id().as_str() }),
    };
    match encode_connect(&packet.namespace, &answer) {
        Ok(text) => {
            let _ = socket.send_packet(text, Vec::new());
        }
        Err(e) => tracing::error!(error = %e, "could not encode a CONNECT answer"),
    }
    namespace.handler().connected(&socket, recovered);
}

/// Takes the `pid` and `offset` the client adds to its auth object when it
/// tries to recover a session.
fn take_recovery(auth: &mut Map<String, Value>) -> Option<RecoveryRequest> {
    let pid = auth.shift_remove("pid");
    let offset = auth.shift_remove("offset");
    match (pid, offset) {
        (Some(Value::String(pid)), Some(Value::String(offset))) => {
            Some(RecoveryRequest { pid, offset })
        }
        _ => None,
    }
}
