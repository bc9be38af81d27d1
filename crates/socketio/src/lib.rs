//! A Socket.IO v5 server over Engine.IO v4, for Tokio and hyper/axum.
//!
//! The stock `socket.io-client` connects to it over WebSocket, HTTP long-polling,
//! or polling upgraded to WebSocket. This crate is only the protocol: sessions,
//! packets, namespaces, rooms, acks, and the hooks that connection-state recovery
//! needs. Authentication, persistence and cross-node fan-out are the
//! application's, through [`Handler`].
//!
//! ```no_run
//! use switchboard_socketio::{Event, Handler, Socket, SocketIo};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn event(&self, socket: &Socket, event: Event) {
//!         let _ = socket.emit("echo", event.args);
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let io = SocketIo::builder().namespace("/", Echo).build();
//! let app = axum::Router::new().route_service("/socket.io/", io.service());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! Layout: `engine/` is Engine.IO (transports, sessions, heartbeats) and knows
//! nothing of Socket.IO; `packet.rs` is the Socket.IO codec; `client.rs` turns
//! one connection's packets into calls on the namespace [`Handler`]s;
//! `socket.rs` and `namespace.rs` are what handlers use to answer and broadcast.
//! [`ws`] offers the WebSocket framing of the Engine.IO transport to any
//! application (Switchboard's collaborative editing uses it); [`Utf8Bytes`]
//! is the text type of every message and frame.
//!
//! Why this is not socketioxide: see the project's `protocol/WHY.md` notes —
//! event handlers must be in place before a CONNECT is answered, recovery hooks
//! are needed, and idle connections must stay small.

mod client;
pub mod engine;
mod handler;
mod io;
mod namespace;
pub mod packet;
mod socket;
mod timer;
mod utf8;
pub mod ws;

pub use client::Client;
pub use engine::{CloseReason, Engine, EngineConfig, Sid, Transport};
pub use handler::{
    AckReply, AckSender, BoxFuture, ConnectError, ConnectRequest, Connected, DisconnectReason,
    Event, Handler, RecoveryRequest,
};
pub use io::{IoConfig, IoHandler, SocketIo, SocketIoBuilder};
pub use namespace::{encode_event_frame, Broadcast, Namespace, Room};
pub use packet::Args;
pub use socket::{AckError, EmitError, Socket};
pub use utf8::Utf8Bytes;
