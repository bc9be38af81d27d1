//! A small Socket.IO server that exercises every feature of the crate, for the
//! end-to-end tests with the stock `socket.io-client` (`tests/node/`).
//!
//! `cargo run --example testbed -- 3100` (port; default 3100).
//!
//! Namespace `/` (recovery on) and `/admin`. CONNECT needs `auth.token`; the
//! token `refuse` (or none) is refused with `Authentication failed`. Events:
//!
//! | event | effect |
//! |---|---|
//! | `echo` ...args | ack with the args, or emit `echo` with them |
//! | `join` room / `leave` room | joins/leaves; ack `{ok:true}` |
//! | `say` {room,text} | `said` {room,text,from} to the room, sender included, with an offset; ack `{ok,offset}` |
//! | `say_others` {room,text} | `said` to the room, sender excluded |
//! | `binary` ...args (with attachments) | `binary-back` with the same args and attachments; ack too |
//! | `ask` | server emits `question` with an ack; the reply comes back as `answer` |
//! | `disconnect_me` / `close_me` | server-side namespace disconnect / whole connection close |
//!
//! Recovery: a socket that reconnects with a known `pid` gets its rooms back and
//! the `said` messages it missed, in order, and `socket.recovered` is true.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_socketio::{
    BoxFuture, ConnectError, ConnectRequest, Connected, DisconnectReason, EngineConfig, Event,
    Handler, IoConfig, Socket, SocketIo,
};

/// One `said` message, kept for recovery.
#[derive(Clone)]
struct Said {
    offset: u64,
    room: String,
    body: Value,
}

#[derive(Default)]
struct Memory {
    next_offset: u64,
    history: Vec<Said>,
    /// pid → rooms of sessions that disconnected.
    sessions: HashMap<String, Vec<String>>,
}

#[derive(Clone, Default)]
struct Testbed {
    memory: Arc<Mutex<Memory>>,
    io: Arc<std::sync::OnceLock<SocketIo>>,
}

/// What a socket carries: its user, and the offset it recovered from.
struct User {
    name: String,
    recovered_from: Mutex<Option<u64>>,
}

impl Testbed {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn say(&self, socket: &Socket, args: &[Value], include_sender: bool) -> Option<u64> {
        let room = args.first()?.get("room")?.as_str()?.to_owned();
        let text = args.first()?.get("text")?.clone();
        let from = socket
            .data::<User>()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        let body = json!({ "room": room, "text": text, "from": from });
        let namespace = self.io.get()?.namespace(socket.namespace_name())?;
        // Offsets are assigned and sent under one lock so every socket sees them in order.
        let mut memory = self.memory();
        memory.next_offset += 1;
        let offset = memory.next_offset;
        memory.history.push(Said {
            offset,
            room: room.clone(),
            body: body.clone(),
        });
        let args = (&body, offset.to_string());
        let _ = if include_sender {
            namespace.to(&room).emit("said", args)
        } else {
            socket.to(&room).emit("said", args)
        };
        Some(offset)
    }
}

impl Handler for Testbed {
    fn connect<'a>(
        &'a self,
        socket: &'a Socket,
        request: ConnectRequest,
    ) -> BoxFuture<'a, Result<Connected, ConnectError>> {
        Box::pin(async move {
            let token = request
                .auth
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or("refuse");
            if token == "refuse" {
                return Err(ConnectError::new("Authentication failed"));
            }
            let user = User {
                name: token.to_owned(),
                recovered_from: Mutex::new(None),
            };
            let Some(recovery) = request.recovery else {
                socket.set_data(user);
                return Ok(Connected::Fresh);
            };
            let rooms = self.memory().sessions.remove(&recovery.pid);
            let (Some(rooms), Ok(offset)) = (rooms, recovery.offset.parse::<u64>()) else {
                socket.set_data(user);
                return Ok(Connected::Fresh);
            };
            for room in &rooms {
                socket.join(room);
            }
            *user
                .recovered_from
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(offset);
            socket.set_data(user);
            Ok(Connected::Recovered)
        })
    }

    fn connected(&self, socket: &Socket, recovered: bool) {
        let Some(from) = socket
            .data::<User>()
            .and_then(|u| *u.recovered_from.lock().unwrap_or_else(|e| e.into_inner()))
        else {
            return;
        };
        if !recovered {
            return;
        }
        let memory = self.memory();
        for said in memory
            .history
            .iter()
            .filter(|s| s.offset > from && socket.in_room(&s.room))
        {
            let _ = socket.emit("said", (&said.body, said.offset.to_string()));
        }
    }

    fn event(&self, socket: &Socket, event: Event) {
        let room = || {
            event
                .args
                .first()
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match event.name.as_str() {
            "echo" => match event.ack {
                Some(ack) => drop(ack.send(event.args)),
                None => drop(socket.emit("echo", event.args)),
            },
            "join" | "leave" => {
                if let Some(room) = room() {
                    if event.name == "join" {
                        socket.join(&room);
                    } else {
                        socket.leave(&room);
                    }
                }
                if let Some(ack) = event.ack {
                    let _ = ack.send(&json!({ "ok": true, "rooms": socket.rooms().iter().map(|r| r.to_string()).collect::<Vec<_>>() }));
                }
            }
            "say" | "say_others" => {
                let offset = self.say(socket, &event.args, event.name == "say");
                if let Some(ack) = event.ack {
                    let _ = ack.send(&json!({ "ok": offset.is_some(), "offset": offset }));
                }
            }
            "binary" => {
                let _ = socket.emit_binary("binary-back", event.args.clone(), event.binary.clone());
                if let Some(ack) = event.ack {
                    let _ = ack.send_binary(event.args, event.binary);
                }
            }
            "ask" => {
                let socket = socket.clone();
                tokio::spawn(async move {
                    let reply = socket
                        .emit_with_ack("question", &json!({ "q": "ping?" }), Duration::from_secs(2))
                        .await;
                    let answer = match reply {
                        Ok(reply) => json!({ "ok": true, "args": reply.args }),
                        Err(e) => json!({ "ok": false, "error": e.to_string() }),
                    };
                    let _ = socket.emit("answer", &answer);
                });
            }
            "disconnect_me" => socket.disconnect(),
            "close_me" => socket.close_connection(),
            _ => {
                if let Some(ack) = event.ack {
                    let _ = ack.send(&json!({ "ok": false, "error": "unknown event" }));
                }
            }
        }
    }

    fn disconnect(&self, socket: &Socket, reason: DisconnectReason) {
        // Sessions that did not end on purpose can be recovered.
        if let (Some(pid), DisconnectReason::Transport(_)) = (socket.pid(), reason) {
            let rooms = socket.rooms().iter().map(|r| r.to_string()).collect();
            self.memory().sessions.insert(pid.to_string(), rooms);
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(3100);
    let ms = |var: &str, default: u64| {
        Duration::from_millis(
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default),
        )
    };
    let testbed = Testbed::default();
    let io = SocketIo::builder()
        .engine_config(EngineConfig {
            ping_interval: ms("PING_INTERVAL_MS", 25_000),
            ping_timeout: ms("PING_TIMEOUT_MS", 20_000),
            max_payload: 100_000,
            max_queued_frames: 256,
            ..EngineConfig::default()
        })
        .io_config(IoConfig {
            connect_timeout: ms("CONNECT_TIMEOUT_MS", 45_000),
            recovery: true,
        })
        .namespace("/", testbed.clone())
        .namespace("/admin", testbed.clone())
        .build();
    let _ = testbed.io.set(io.clone());
    let app = axum::Router::new().route_service("/socket.io/", io.service());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
