//! Engine.IO v4: the transport layer under Socket.IO.
//!
//! [`Engine`] answers the HTTP requests of one path (handshake, long-polling GET and
//! POST, WebSocket upgrade), keeps the sessions that long-polling needs to find again
//! by sid, and pings every session from two shared timers. It hands each message to
//! an [`EngineHandler`]; it knows nothing about Socket.IO packets or namespaces.
//!
//! Transports: `polling.rs` (HTTP long-polling) and `websocket.rs` (WebSocket,
//! including the upgrade from polling; its framing in `frames.rs`). Packet codec:
//! `packet.rs`.

pub mod frames;
pub mod packet;
mod polling;
pub mod session;
mod websocket;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;

pub use packet::{Frame, Message, Str, Utf8Bytes};
pub use session::{CloseReason, SendError, Session, SessionState, Sid, Transport};

use crate::timer::{lock, FifoTimer};
use packet::Packet;

/// Engine.IO settings. The defaults are those of the Node.js server.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Time between two pings.
    pub ping_interval: Duration,
    /// Time a client has to answer a ping.
    pub ping_timeout: Duration,
    /// Largest message (WebSocket) or request body (polling), in bytes.
    pub max_payload: usize,
    /// Frames a session may have queued before it is closed as a slow consumer.
    pub max_queued_frames: usize,
    /// Time a client has to complete an upgrade from polling to WebSocket.
    pub upgrade_timeout: Duration,
    /// A WebSocket under sustained load (more than one write per four of these
    /// intervals for a while) waits out the rest of this interval
    /// before its next write, so that the frames queued meanwhile go out in one
    /// write. Bursts and quieter connections never wait; zero turns it off.
    pub ws_write_coalesce: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            max_queued_frames: 1024,
            upgrade_timeout: Duration::from_secs(10),
            ws_write_coalesce: Duration::from_millis(2),
        }
    }
}

/// The layer above Engine.IO: per-session state, and what to do with each message.
pub trait EngineHandler: Send + Sync + 'static {
    /// The per-session state of the layer above, stored in each [`Session`].
    type State: SessionState;

    /// The state of a new session.
    fn new_state(&self) -> Self::State;

    /// A session was opened; its handshake is about to be sent.
    fn on_open(&self, _session: &Arc<Session<Self::State>>) {}

    /// A message arrived. Messages of one session are handed over one at a time, in order.
    fn on_message(
        &self,
        session: &Arc<Session<Self::State>>,
        message: Message,
    ) -> impl Future<Output = ()> + Send;
}

/// The HTTP response type of the engine.
pub type EngineResponse = Response<Full<Bytes>>;

type SessionRef<H> = Arc<Session<<H as EngineHandler>::State>>;
type TimerEntry<H> = (Weak<Session<<H as EngineHandler>::State>>, u32);

/// An Engine.IO server for one path. Cheap to clone; serve it as a tower/axum service.
pub struct Engine<H: EngineHandler> {
    inner: Arc<EngineInner<H>>,
}

impl<H: EngineHandler> Clone for Engine<H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) struct EngineInner<H: EngineHandler> {
    pub(crate) config: EngineConfig,
    pub(crate) handler: H,
    /// Sessions that long-polling requests look up by sid. WebSocket-only
    /// sessions are never listed: nothing needs to find them.
    sessions: Mutex<HashMap<Sid, SessionRef<H>>>,
    ping_timer: FifoTimer<TimerEntry<H>>,
    pong_timer: FifoTimer<TimerEntry<H>>,
}

impl<H: EngineHandler> Engine<H> {
    /// Creates an engine. Its timers start on the current Tokio runtime at first use.
    pub fn new(config: EngineConfig, handler: H) -> Self {
        let inner = Arc::new_cyclic(|weak: &Weak<EngineInner<H>>| {
            let on_ping = weak.clone();
            let on_pong = weak.clone();
            EngineInner {
                config,
                handler,
                sessions: Mutex::new(HashMap::new()),
                ping_timer: FifoTimer::new(move |(session, beat), at| {
                    if let Some(engine) = on_ping.upgrade() {
                        engine.ping_due(session, beat, at);
                    }
                }),
                pong_timer: FifoTimer::new(move |(session, beat), _| {
                    if let Some(engine) = on_pong.upgrade() {
                        engine.pong_due(session, beat);
                    }
                }),
            }
        });
        Self { inner }
    }

    /// The handler the engine hands messages to.
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// The settings the engine was created with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Number of sessions reachable by long-polling (for metrics and tests).
    pub fn polling_sessions(&self) -> usize {
        lock(&self.inner.sessions).len()
    }

    /// Answers one HTTP request of this engine's path.
    pub async fn handle<B>(&self, req: Request<B>) -> EngineResponse
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let query = Query::parse(req.uri().query().unwrap_or(""));
        if query.eio != Some("4") {
            return error_response(5, "Unsupported protocol version");
        }
        let transport = match query.transport {
            Some("polling") => Transport::Polling,
            Some("websocket") => Transport::WebSocket,
            _ => return error_response(0, "Transport unknown"),
        };
        let session = match query.sid {
            None => None,
            Some(sid) => match self.inner.find(sid) {
                Some(session) => Some(session),
                // A WebSocket for a sid that is gone (or already upgraded) is
                // accepted and closed at once, as clients of the Node.js server expect.
                None if transport == Transport::WebSocket => return websocket::refuse(req),
                None => return error_response(1, "Session ID unknown"),
            },
        };
        match (transport, session) {
            (Transport::Polling, None) if req.method() == Method::GET => {
                self.inner.polling_handshake()
            }
            (Transport::Polling, None) => error_response(2, "Bad handshake method"),
            (Transport::Polling, Some(session)) => self.inner.clone().polling(req, session).await,
            (Transport::WebSocket, session) => websocket::accept(self.inner.clone(), req, session),
        }
    }
}

impl<H: EngineHandler> EngineInner<H> {
    fn find(&self, sid: &str) -> Option<SessionRef<H>> {
        let sid = Sid::parse(sid)?;
        lock(&self.sessions).get(&sid).cloned()
    }

    /// Creates a session, starts its heartbeat and tells the handler.
    fn open(self: &Arc<Self>, transport: Transport) -> SessionRef<H> {
        let state = self.handler.new_state();
        let session = Arc::new(Session::new(
            transport,
            self.config.max_queued_frames,
            state,
        ));
        if transport == Transport::Polling {
            lock(&self.sessions).insert(session.sid(), session.clone());
        }
        self.ping_timer.schedule(
            Instant::now() + self.config.ping_interval,
            (Arc::downgrade(&session), 0),
        );
        self.handler.on_open(&session);
        session
    }

    /// The open packet (`0{...}`).
    fn handshake(&self, sid: Sid, upgrades: &[&str]) -> String {
        let upgrades: Vec<String> = upgrades.iter().map(|u| format!("\"{u}\"")).collect();
        format!(
            "0{{\"sid\":\"{sid}\",\"upgrades\":[{}],\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{}}}",
            upgrades.join(","),
            self.config.ping_interval.as_millis(),
            self.config.ping_timeout.as_millis(),
            self.config.max_payload,
        )
    }

    /// Closes a session and forgets it.
    pub(crate) fn close(&self, session: &Session<H::State>, reason: CloseReason) {
        session.close(reason);
        self.forget(session);
    }

    fn forget(&self, session: &Session<H::State>) {
        let mut sessions = lock(&self.sessions);
        if sessions
            .get(&session.sid())
            .is_some_and(|s| std::ptr::eq(&**s, session))
        {
            sessions.remove(&session.sid());
        }
    }

    /// A ping is due: send it and start waiting for the pong.
    fn ping_due(&self, session: Weak<Session<H::State>>, beat: u32, at: Instant) {
        let Some(session) = session.upgrade() else {
            return;
        };
        let deadline = at + self.config.ping_timeout;
        {
            let mut inner = lock(&session.inner);
            if inner.closed.is_some() {
                drop(inner);
                self.forget(&session);
                return;
            }
            if inner.heartbeat != beat {
                return;
            }
            inner.pong_deadline = Some(deadline);
        }
        if session.send(Frame::text_static(Frame::PING)) == Err(SendError::Full) {
            self.close(&session, CloseReason::SlowConsumer);
            return;
        }
        self.pong_timer
            .schedule(deadline, (Arc::downgrade(&session), beat));
    }

    /// A pong deadline passed: close the session unless the pong came.
    fn pong_due(&self, session: Weak<Session<H::State>>, beat: u32) {
        let Some(session) = session.upgrade() else {
            return;
        };
        let timed_out = {
            let inner = lock(&session.inner);
            inner.closed.is_some() || (inner.heartbeat == beat && inner.pong_deadline.is_some())
        };
        if timed_out {
            self.close(&session, CloseReason::PingTimeout);
        }
    }

    fn on_pong(&self, session: &SessionRef<H>) {
        let beat = {
            let mut inner = lock(&session.inner);
            if inner.pong_deadline.take().is_none() {
                return; // a pong nobody asked for
            }
            inner.heartbeat = inner.heartbeat.wrapping_add(1);
            inner.heartbeat
        };
        self.ping_timer.schedule(
            Instant::now() + self.config.ping_interval,
            (Arc::downgrade(session), beat),
        );
    }

    /// Acts on one packet from the client, whatever the transport. Returns false
    /// when the session is over.
    async fn on_packet(&self, session: &SessionRef<H>, packet: Packet) -> bool {
        match packet {
            Packet::Message(message) => self.handler.on_message(session, message).await,
            Packet::Pong(_) => self.on_pong(session),
            Packet::Ping(payload) => {
                let reply = Frame::Text(format!("3{}", payload.as_str()).into());
                if session.send(reply) == Err(SendError::Full) {
                    self.close(session, CloseReason::SlowConsumer);
                }
            }
            Packet::Close => {
                // Over polling the sid stays known until the next GET has been told.
                session.close(CloseReason::ClientClose);
                if session.transport() == Transport::WebSocket {
                    self.forget(session);
                }
                return false;
            }
            Packet::Upgrade | Packet::Noop => {}
        }
        !session.is_closed()
    }

    /// True once the pong deadline has passed, even if the timer has not fired yet:
    /// a request at that instant must already see the session as gone.
    fn heartbeat_expired(&self, session: &SessionRef<H>) -> bool {
        let expired = lock(&session.inner)
            .pong_deadline
            .is_some_and(|d| d <= Instant::now());
        if expired {
            self.close(session, CloseReason::PingTimeout);
        }
        expired
    }
}

/// The query parameters Engine.IO reads.
struct Query<'a> {
    eio: Option<&'a str>,
    transport: Option<&'a str>,
    sid: Option<&'a str>,
}

impl<'a> Query<'a> {
    fn parse(query: &'a str) -> Self {
        let mut q = Query {
            eio: None,
            transport: None,
            sid: None,
        };
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "EIO" => q.eio = Some(value),
                "transport" => q.transport = Some(value),
                "sid" => q.sid = Some(value),
                _ => {}
            }
        }
        q
    }
}

/// A 400 with the JSON error body of the Node.js server.
pub(crate) fn error_response(code: u8, message: &str) -> EngineResponse {
    let body = format!("{{\"code\":{code},\"message\":\"{message}\"}}");
    respond(StatusCode::BAD_REQUEST, "application/json", body)
}

pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> EngineResponse {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    res
}

/// The engine as a tower service, so `axum::Router::route_service` can mount it.
impl<H, B> tower_service::Service<Request<B>> for Engine<H>
where
    H: EngineHandler,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = EngineResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<EngineResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let engine = self.clone();
        Box::pin(async move { Ok(engine.handle(req).await) })
    }
}
