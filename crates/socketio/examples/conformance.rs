//! The server the official Engine.IO and Socket.IO protocol suites expect, on
//! `localhost:3000`: `/engine.io/` is a raw Engine.IO echo server, `/socket.io/`
//! the suites' Socket.IO test server (namespaces `/` and `/custom`).
//!
//! `cargo run --release --example conformance`, then run the suites against it.
//! Timings are the suites': ping every 300 ms, 200 ms to answer, 1 MB payloads.

use std::sync::Arc;
use std::time::Duration;

use switchboard_socketio::engine::{Engine, EngineConfig, EngineHandler, Frame, Message, Session};
use switchboard_socketio::{Event, Handler, IoConfig, Socket, SocketIo};

/// Sends every message back unchanged.
struct Echo;

impl EngineHandler for Echo {
    type State = ();

    fn new_state(&self) {}

    async fn on_message(&self, session: &Arc<Session<()>>, message: Message) {
        let frame = match message {
            Message::Text(text) => Frame::message(text.as_str()),
            Message::Binary(data) => Frame::Binary(data),
        };
        let _ = session.send(frame);
    }
}

/// Emits `auth` on connect, `message-back` for `message`, and acks `message-with-ack`.
struct SuiteHandler;

impl Handler for SuiteHandler {
    fn connected(&self, socket: &Socket, _recovered: bool) {
        let auth = socket
            .data::<serde_json::Value>()
            .cloned()
            .unwrap_or_default();
        let _ = socket.emit("auth", &auth);
    }

    fn connect<'a>(
        &'a self,
        socket: &'a Socket,
        request: switchboard_socketio::ConnectRequest,
    ) -> switchboard_socketio::BoxFuture<
        'a,
        Result<switchboard_socketio::Connected, switchboard_socketio::ConnectError>,
    > {
        socket.set_data(serde_json::Value::Object(request.auth));
        Box::pin(async { Ok(switchboard_socketio::Connected::Fresh) })
    }

    fn event(&self, socket: &Socket, event: Event) {
        match (event.name.as_str(), event.ack) {
            ("message", _) => {
                let _ = socket.emit_binary("message-back", event.args, event.binary);
            }
            ("message-with-ack", Some(ack)) => {
                let _ = ack.send_binary(event.args, event.binary);
            }
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let engine_config = EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..EngineConfig::default()
    };
    let io = SocketIo::builder()
        .engine_config(engine_config.clone())
        .io_config(IoConfig {
            connect_timeout: Duration::from_millis(1000),
            recovery: false,
        })
        .namespace("/", SuiteHandler)
        .namespace("/custom", SuiteHandler)
        .build();
    let echo = Engine::new(engine_config, Echo);
    let app = axum::Router::new()
        .route_service("/engine.io/", echo)
        .route_service("/socket.io/", io.service());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("localhost:{port}")).await?;
    tracing::info!("conformance server on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
