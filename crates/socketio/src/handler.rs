//! What an application implements to serve a namespace ([`Handler`]), and the
//! values it is handed: connect requests, events, acks, disconnect reasons.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::engine::CloseReason;
use crate::packet::{encode_ack, Args};
use crate::socket::Socket;

/// A boxed, `Send` future borrowing for `'a`, as [`Handler::connect`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The application side of one namespace.
///
/// Every method is called for one socket at a time and in the order its packets
/// arrived. `event` is synchronous on purpose: it must not hold up the
/// connection (a handler awaiting the client's ack would wait forever), so work
/// that awaits belongs in a task the handler spawns.
pub trait Handler: Send + Sync + 'static {
    /// Decides on a CONNECT. The socket exists (its data can be set, rooms
    /// joined) but is not yet announced to the client; nothing is answered until
    /// this returns. `Err` refuses with a CONNECT_ERROR carrying the message.
    fn connect<'a>(
        &'a self,
        _socket: &'a Socket,
        _request: ConnectRequest,
    ) -> BoxFuture<'a, Result<Connected, ConnectError>> {
        Box::pin(async { Ok(Connected::Fresh) })
    }

    /// The CONNECT answer is queued: what is emitted now reaches the client after it.
    fn connected(&self, _socket: &Socket, _recovered: bool) {}

    /// An event from the client.
    fn event(&self, socket: &Socket, event: Event);

    /// The socket left the namespace. Called once per connected socket.
    fn disconnect(&self, _socket: &Socket, _reason: DisconnectReason) {}
}

/// A CONNECT from a client.
#[derive(Debug, Default)]
pub struct ConnectRequest {
    /// The `auth` object of the client, without the recovery fields.
    pub auth: Map<String, Value>,
    /// Present when recovery is on and the client sent its `pid` and `offset`.
    pub recovery: Option<RecoveryRequest>,
}

/// A client asking to resume an earlier session (connection-state recovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryRequest {
    /// The private id of the earlier session, from its CONNECT answer.
    pub pid: String,
    /// The last offset the client received.
    pub offset: String,
}

/// How a CONNECT was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connected {
    /// A new session, with a new `pid`.
    Fresh,
    /// The session of the request's `pid` was restored: the answer repeats that
    /// `pid`, so the client's `socket.recovered` is true.
    Recovered,
}

/// A refused CONNECT; the client's `connect_error` gets `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    /// The text sent in the CONNECT_ERROR packet's `message` field.
    pub message: String,
}

impl ConnectError {
    /// A refusal with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// An event sent by a client.
#[derive(Debug)]
pub struct Event {
    /// The event name (the first element of the packet's array).
    pub name: String,
    /// The arguments after the name. Binary ones are `{"_placeholder":true,"num":N}`
    /// objects that stand for `binary[N]`.
    pub args: Vec<Value>,
    /// The binary attachments, in the order the placeholders number them.
    pub binary: Vec<Bytes>,
    /// Present when the client asked for an acknowledgement.
    pub ack: Option<AckSender>,
    /// Some string was not valid Unicode (a lone surrogate) and was read as U+FFFD.
    pub lossy_text: bool,
}

/// Answers a client's event that asked for an acknowledgement.
#[derive(Debug)]
pub struct AckSender {
    pub(crate) socket: Socket,
    pub(crate) id: u64,
}

impl AckSender {
    /// Sends the acknowledgement with these arguments.
    pub fn send(self, args: impl Args) -> Result<(), crate::EmitError> {
        self.send_binary(args, Vec::new())
    }

    /// Sends the acknowledgement with binary attachments (placeholders in `args`).
    pub fn send_binary(self, args: impl Args, binary: Vec<Bytes>) -> Result<(), crate::EmitError> {
        let text = encode_ack(self.socket.namespace_name(), self.id, &args, binary.len())?;
        self.socket.send_packet(text, binary)
    }
}

/// A reply to a server-sent event with an acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub struct AckReply {
    /// The arguments of the client's ack (binary ones as placeholders).
    pub args: Vec<Value>,
    /// The binary attachments of the ack; empty unless it was a BINARY_ACK.
    pub binary: Vec<Bytes>,
}

/// Why a socket left its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT for this namespace.
    ClientDisconnect,
    /// The server called [`Socket::disconnect`].
    ServerDisconnect,
    /// The underlying connection ended.
    Transport(CloseReason),
}
