//! A deliberately cheap Socket.IO v5 / Engine.IO v4 client over
//! tokio-tungstenite (WebSocket transport only).
//!
//! The handshake is the one `socket.io-client` does: WebSocket upgrade at
//! `/socket.io/?EIO=4&transport=websocket`, wait for the Engine.IO OPEN `0{..}`,
//! send CONNECT `40{"token":..}`, wait for `40{..}` (or `44{..}`, refused), then
//! an acknowledged join `420["join_workspace","W"]` answered by `430[{"ok":true}]`.
//!
//! After that nothing is JSON-parsed: an incoming text frame is classified by
//! its first bytes (`2` Engine.IO ping, answered `3`; `42["message"` a delivery;
//! other `42` events counted apart; `43` acks), and on sampled clients the
//! publisher's timestamp is found with a byte search for `~t<digits>`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Interval};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{client_async_with_config, WebSocketStream};

use crate::stats::{find_stamp, now_us, stamp_now, Shared};

pub type Ws = WebSocketStream<TcpStream>;

/// Which event names and endpoints to use (the Node reference speaks both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// Switchboard's wire contract (DESIGN.md sections 2 to 4): `join_workspace`,
    /// `message {workspaceId, content}`, `POST /api/publish`.
    Contract,
    /// The Node reference's original protocol: `join`, `message {room, content}`, `POST /publish`.
    Legacy,
}

impl Dialect {
    pub fn join_event(self) -> &'static str {
        match self {
            Dialect::Contract => "join_workspace",
            Dialect::Legacy => "join",
        }
    }

    /// A chat message up to the opening quote of its content.
    pub fn message_head(self, room: &str) -> String {
        match self {
            Dialect::Contract => format!(r#"["message",{{"workspaceId":{},"content":""#, q(room)),
            Dialect::Legacy => format!(r#"["message",{{"room":{},"content":""#, q(room)),
        }
    }

    pub fn publish_path(self) -> &'static str {
        match self {
            Dialect::Contract => "/api/publish",
            Dialect::Legacy => "/publish",
        }
    }

    /// The JSON body that broadcasts `message {content}` to `room`.
    pub fn publish_body(self, room: &str, content: &str) -> String {
        match self {
            Dialect::Contract => format!(
                r#"{{"workspaceId":{},"event":"message","data":{{"content":"{content}"}}}}"#,
                q(room)
            ),
            Dialect::Legacy => format!(r#"{{"room":{},"content":"{content}"}}"#, q(room)),
        }
    }

    /// Bytes of the fixed part of a fan-out packet as receivers see it, so that
    /// `--msg-bytes` means the same thing for both dialects (as in bench.js).
    pub fn fanout_fixed_len(self) -> usize {
        match self {
            Dialect::Contract => r#"42["message",{"content":"~t1234567890123|"}]"#.len(),
            Dialect::Legacy => r#"42["message",{"room":"fan","content":"~t1234567890123|"}]"#.len(),
        }
    }
}

/// A JSON string literal.
pub fn q(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Why a client could not connect, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("tcp: {0}")]
    Io(#[from] std::io::Error),
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("connect_error: {0}")]
    Refused(String),
    #[error("join refused: {0}")]
    JoinRefused(String),
    #[error("closed by the server")]
    Closed,
    #[error("handshake timed out")]
    Timeout,
}

/// The WebSocket settings of every client: small read buffers (100,000 idle
/// clients must fit) and frames written at once.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
}

/// A TCP connection, from `source` (an address of 127.0.0.0/8, to get past the
/// ephemeral port limit of one source address) when given.
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The next text frame (pings and pongs of the WebSocket layer are handled
/// by tungstenite; binary frames are skipped).
async fn next_text(ws: &mut Ws) -> Result<tungstenite::Utf8Bytes, ClientError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(_))) | None => return Err(ClientError::Closed),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// What a client does once connected.
pub struct Plan {
    pub addr: SocketAddr,
    pub source: Option<IpAddr>,
    pub token: String,
    pub room: String,
    /// Index of the group (target port) it counts in.
    pub group: usize,
    /// Records latency of what it receives.
    pub sample: bool,
    /// Sends chat messages, first at `first_at`, then every `period`.
    pub chat: Option<ChatPlan>,
}

pub struct ChatPlan {
    pub first_at: Instant,
    pub period: Duration,
}

/// What every client shares.
pub struct Env {
    pub shared: Arc<Shared>,
    pub dialect: Dialect,
    /// Bounds the handshakes in progress.
    pub gate: Arc<Semaphore>,
    pub handshake_timeout: Duration,
    /// Padding after the timestamp of chat messages.
    pub pad: String,
    /// Chat messages ask for an ack.
    pub msg_ack: bool,
}

/// Connects, joins, then serves the connection until it ends.
pub async fn run(plan: Plan, env: Arc<Env>) {
    let shared = &env.shared;
    let ws = {
        let Ok(_permit) = env.gate.acquire().await else {
            return;
        };
        match tokio::time::timeout(env.handshake_timeout, handshake(&plan, &env)).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                shared.note_error(&e.to_string());
                shared.connect_failed.fetch_add(1, Relaxed);
                return;
            }
            Err(_) => {
                shared.note_error(&ClientError::Timeout.to_string());
                shared.connect_failed.fetch_add(1, Relaxed);
                return;
            }
        }
    };
    shared.connected.fetch_add(1, Relaxed);
    if let Some(g) = shared.groups.get(plan.group) {
        g.clients.fetch_add(1, Relaxed);
    }
    let reason = serve(ws, &plan, &env).await;
    shared.closed.fetch_add(1, Relaxed);
    if let Some(g) = shared.groups.get(plan.group) {
        g.clients.fetch_sub(1, Relaxed);
    }
    shared.note_error(&reason.to_string());
}

async fn handshake(plan: &Plan, env: &Env) -> Result<Ws, ClientError> {
    let stream = tcp_connect(plan.addr, plan.source).await?;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", plan.addr);
    let (mut ws, _) = client_async_with_config(url, stream, Some(ws_config())).await?;
    // Engine.IO OPEN
    loop {
        let t = next_text(&mut ws).await?;
        match t.as_bytes().first() {
            Some(b'0') => break,
            Some(b'1') => return Err(ClientError::Closed),
            _ => {}
        }
    }
    ws.send(Message::text(format!(
        "40{}",
        serde_json::json!({ "token": plan.token })
    )))
    .await?;
    loop {
        let t = next_text(&mut ws).await?;
        let b = t.as_bytes();
        if b.starts_with(b"40") {
            break;
        } else if b.starts_with(b"44") {
            return Err(ClientError::Refused(t.as_str()[2..].to_owned()));
        } else if b.starts_with(b"41") || b.first() == Some(&b'1') {
            return Err(ClientError::Closed);
        } else if b == b"2" {
            ws.send(Message::text("3")).await?;
        }
    }
    ws.send(Message::text(format!(
        "420[{},{}]",
        q(env.dialect.join_event()),
        q(&plan.room)
    )))
    .await?;
    loop {
        let t = next_text(&mut ws).await?;
        let b = t.as_bytes();
        if b.starts_with(b"430") {
            if memchr::memmem::find(b, br#""ok":false"#).is_some() {
                return Err(ClientError::JoinRefused(t.as_str().to_owned()));
            }
            return Ok(ws);
        } else if b.starts_with(b"42") {
            env.shared.other_events.fetch_add(1, Relaxed);
        } else if b == b"2" {
            ws.send(Message::text("3")).await?;
        } else if b.starts_with(b"41") || b.first() == Some(&b'1') {
            return Err(ClientError::Closed);
        }
    }
}

/// What to do about an incoming frame.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    None,
    Pong,
    Close,
}

const MESSAGE_EVENT: &[u8] = br#"42["message""#;
const ERROR_EVENT: &[u8] = br#"42["error""#;

fn on_text(b: &[u8], shared: &Shared, group: usize, sample: bool) -> Action {
    match b {
        [b'4', b'2', ..] => {
            if b.starts_with(MESSAGE_EVENT) {
                if let Some(g) = shared.groups.get(group) {
                    g.delivered.fetch_add(1, Relaxed);
                    if sample {
                        if let Some(t) = find_stamp(b) {
                            g.hist.record(now_us().saturating_sub(t));
                        }
                    }
                }
            } else {
                shared.other_events.fetch_add(1, Relaxed);
                if b.starts_with(ERROR_EVENT) {
                    shared.error_events.fetch_add(1, Relaxed);
                }
            }
            Action::None
        }
        [b'4', b'3', ..] => {
            shared.acks.fetch_add(1, Relaxed);
            if memchr::memmem::find(b, br#""ok":false"#).is_some() {
                shared.ack_failures.fetch_add(1, Relaxed);
            }
            Action::None
        }
        [b'2'] => Action::Pong,
        [b'4', b'1', ..] | [b'1', ..] => Action::Close,
        _ => Action::None,
    }
}

async fn next_tick(tick: &mut Option<Interval>) {
    match tick {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Receives until the connection ends; sends chat messages on its plan.
async fn serve(mut ws: Ws, plan: &Plan, env: &Env) -> ClientError {
    let shared = &env.shared;
    let mut tick = plan.chat.as_ref().map(|c| {
        let mut t = tokio::time::interval_at(c.first_at, c.period);
        // a late start keeps the phase spread instead of bursting to catch up
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        t
    });
    let head = env.dialect.message_head(&plan.room);
    let mut ack_id: u64 = 1;
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    match on_text(t.as_bytes(), shared, plan.group, plan.sample) {
                        Action::None => {}
                        Action::Pong => {
                            if let Err(e) = ws.send(Message::text("3")).await {
                                return e.into();
                            }
                        }
                        Action::Close => return ClientError::Closed,
                    }
                }
                Some(Ok(Message::Close(_))) | None => return ClientError::Closed,
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.into(),
            },
            () = next_tick(&mut tick) => {
                if !shared.sending.load(Relaxed) {
                    continue;
                }
                let frame = if env.msg_ack {
                    ack_id += 1;
                    format!("42{}{head}{}{}\"}}]", ack_id - 1, stamp_now(), env.pad)
                } else {
                    format!("42{head}{}{}\"}}]", stamp_now(), env.pad)
                };
                match ws.send(Message::text(frame)).await {
                    Ok(()) => {
                        shared.sent.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        shared.send_errors.fetch_add(1, Relaxed);
                        return e.into();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_both_dialects() {
        assert_eq!(
            format!("42{}~t1|\"}}]", Dialect::Contract.message_head("r1")),
            r#"42["message",{"workspaceId":"r1","content":"~t1|"}]"#
        );
        assert_eq!(
            Dialect::Contract.publish_body("fan", "~t1|x"),
            r#"{"workspaceId":"fan","event":"message","data":{"content":"~t1|x"}}"#
        );
        assert_eq!(
            Dialect::Legacy.publish_body("fan", "c"),
            r#"{"room":"fan","content":"c"}"#
        );
        let body = Dialect::Contract.publish_body("fan", "~t0000000000001|");
        let seen = format!(
            r#"42["message",{}]"#,
            &body[body.find(r#"{"content"#).unwrap_or(0)..body.len() - 1]
        );
        assert_eq!(seen.len(), Dialect::Contract.fanout_fixed_len());
    }

    #[test]
    fn classifies_without_parsing() {
        let s = Shared::new(vec!["a".into()]);
        let m = br#"42["message",{"content":"~t0000000000001|xx"},"12"]"#;
        assert_eq!(on_text(m, &s, 0, true), Action::None);
        assert_eq!(s.delivered(), 1);
        assert_eq!(s.groups[0].hist.snapshot().summary().samples, 1);
        on_text(br#"42["joined",{"workspaceId":"w"}]"#, &s, 0, true);
        on_text(
            br#"42["error",{"message":"x","code":"forbidden"}]"#,
            &s,
            0,
            true,
        );
        assert_eq!(s.other_events.load(Relaxed), 2);
        assert_eq!(s.error_events.load(Relaxed), 1);
        on_text(br#"431[{"ok":false,"error":"rate_limited"}]"#, &s, 0, true);
        assert_eq!(s.ack_failures.load(Relaxed), 1);
        assert_eq!(on_text(b"2", &s, 0, false), Action::Pong);
        assert_eq!(on_text(b"1", &s, 0, false), Action::Close);
        assert_eq!(on_text(b"41", &s, 0, false), Action::Close);
        // out-of-group index never panics
        on_text(m, &s, 9, true);
    }
}
