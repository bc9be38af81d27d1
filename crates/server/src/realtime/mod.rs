//! The Socket.IO side of Switchboard: authenticating a CONNECT, recovering a
//! session, and running each socket's events one at a time, in order.
//!
//! Event handlers are in `chat.rs`; the node's ordering task in `writer.rs`;
//! replaying history to a socket and putting it in rooms in `admission.rs`;
//! presence and typing in `presence.rs`; broker channels and the delivery to
//! local rooms in `fanout.rs`; the catch-up from the Store after missed
//! deliveries in `catchup.rs`. Per-user connection counts and rate limits are here.

mod admission;
pub mod catchup;
mod chat;
pub mod expiry;
pub mod fanout;
pub mod presence;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use serde_json::{json, Map, Value};
use switchboard_core::{Error, ErrorCode, MessageLimits, RecoverySession, Role, User};
use switchboard_socketio::{
    AckSender, BoxFuture, ConnectError, ConnectRequest, Connected, DisconnectReason, Event,
    Handler, Namespace, RecoveryRequest, Socket,
};

pub use presence::Typing;
pub use writer::Writer;

use crate::app::App;

/// What the Socket.IO side keeps per node.
pub struct Node {
    /// The main namespace.
    pub namespace: Namespace,
    /// The ordering task: stores and broadcasts chat in id order.
    pub writer: Writer,
    /// Message size limits.
    pub limits: MessageLimits,
    /// Who is typing where.
    pub typing: Typing,
    /// Connected sockets per user, for the per-user limit.
    pub connections: ConnectionCounts,
    /// Socket.IO connections by the time their token expires.
    pub expiries: expiry::Expiries,
    /// What rooms delivered, and the catch-up after missed deliveries.
    pub catch_up: Arc<catchup::CatchUp>,
}

/// The handler of the main namespace. It holds the app weakly: the app holds
/// the namespace, which holds this handler.
pub struct Realtime {
    app: Weak<App>,
}

impl Realtime {
    pub fn new(app: Weak<App>) -> Self {
        Self { app }
    }
}

/// Connected sockets per user on this node, for the per-user limit.
#[derive(Default)]
pub struct ConnectionCounts(Mutex<std::collections::HashMap<String, usize>>);

impl ConnectionCounts {
    pub fn count(&self, user: &str) -> usize {
        lock(&self.0).get(user).copied().unwrap_or(0)
    }

    fn add(&self, user: &str) {
        *lock(&self.0).entry(user.to_owned()).or_default() += 1;
    }

    fn remove(&self, user: &str) {
        let mut counts = lock(&self.0);
        if let Some(n) = counts.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                counts.remove(user);
            }
        }
    }
}

/// What Switchboard keeps per socket.
pub struct Conn {
    /// Who it is; replaced (same id) by `refresh_token`.
    user: Mutex<Arc<User>>,
    /// The role it holds in each workspace whose room it is in, when that is
    /// not `member`: checked at every write, kept current by access changes
    /// (`crate::access`).
    roles: Mutex<Vec<(String, Role)>>,
    /// Its entry in the node's token expiries, once connected.
    expiry: Mutex<Option<expiry::ExpiryKey>>,
    transport: &'static str,
    queue: Mutex<EventQueue>,
    bucket: Mutex<TokenBucket>,
    /// Typing events past this rate are dropped without an answer.
    typing_bucket: Mutex<TokenBucket>,
}

impl Conn {
    /// Who the socket belongs to, as of its latest token.
    pub fn user(&self) -> Arc<User> {
        lock(&self.user).clone()
    }

    /// Replaces the socket's token (same user id); returns the previous one.
    pub fn set_user(&self, user: User) -> Arc<User> {
        std::mem::replace(&mut *lock(&self.user), Arc::new(user))
    }

    /// The role held in a workspace the socket is in (its room membership is
    /// the caller's to check).
    pub fn role(&self, workspace: &str) -> Role {
        lock(&self.roles)
            .iter()
            .find(|(w, _)| w == workspace)
            .map_or(Role::Member, |(_, role)| *role)
    }

    /// Records the role held in a workspace. Only roles other than `member`
    /// are kept, so the usual socket, a member, holds no allocation for it
    /// (idle memory per connection is a measured target).
    pub fn set_role(&self, workspace: &str, role: Role) {
        let mut roles = lock(&self.roles);
        let held = roles.iter().position(|(w, _)| w == workspace);
        match (held, role) {
            (Some(at), Role::Member) => {
                roles.swap_remove(at);
            }
            (Some(at), role) => roles[at].1 = role,
            (None, Role::Member) => {}
            (None, role) => {
                roles.reserve_exact(1);
                roles.push((workspace.to_owned(), role));
            }
        }
    }

    /// Takes a refreshed token (same user id): the connection now lives until
    /// its `exp`, with the workspaces it grants.
    pub fn refresh(&self, app: &App, socket: &Socket, user: User) {
        let expires_at = user.expires_at;
        self.set_user(user);
        let mut expiry = lock(&self.expiry);
        if let Some(key) = expiry.take() {
            app.realtime.expiries.untrack(key);
        }
        *expiry = Some(app.realtime.expiries.track(socket, expires_at));
    }

    /// Forgets a workspace the socket left.
    pub fn forget(&self, workspace: &str) {
        lock(&self.roles).retain(|(w, _)| w != workspace);
    }
}

/// Events of one socket waiting to run. The rate limit bounds how fast they
/// come; this bounds how many wait while the node is slow to answer (a
/// stalled Store, say): past it an event is refused with `rate_limited`.
const MAX_QUEUED_EVENTS: usize = 256;

#[derive(Default)]
struct EventQueue {
    events: VecDeque<Event>,
    /// A task is working through the queue.
    running: bool,
}

/// Allows `rate` events per second, in bursts of up to `rate`.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handler for Realtime {
    fn connect<'a>(
        &'a self,
        socket: &'a Socket,
        request: ConnectRequest,
    ) -> BoxFuture<'a, Result<Connected, ConnectError>> {
        Box::pin(async move {
            let Some(app) = self.app.upgrade() else {
                return Err(ConnectError::new("shutting down"));
            };
            let token = request
                .auth
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or("");
            let user = match app.auth.verify(token) {
                Ok(user) => user,
                Err(e) => {
                    tracing::debug!(error = %e, "connection refused");
                    count_error(ErrorCode::Unauthorized);
                    return Err(ConnectError::new("Authentication failed"));
                }
            };
            if app.realtime.connections.count(&user.id) >= app.settings.max_connections_per_user {
                count_error(ErrorCode::RateLimited);
                return Err(ConnectError::new("Too many connections"));
            }
            socket.set_data(Conn {
                user: Mutex::new(Arc::new(user.clone())),
                roles: Mutex::default(),
                expiry: Mutex::default(),
                transport: socket.transport().as_str(),
                queue: Mutex::default(),
                bucket: Mutex::new(TokenBucket::new(app.settings.events_per_second)),
                typing_bucket: Mutex::new(TokenBucket::new(app.settings.typing_events_per_second)),
            });
            match request.recovery {
                Some(recovery) if recover(&app, socket, &user, &recovery).await => {
                    Ok(Connected::Recovered)
                }
                _ => Ok(Connected::Fresh),
            }
        })
    }

    fn connected(&self, socket: &Socket, recovered: bool) {
        let Some(app) = self.app.upgrade() else {
            return;
        };
        let transport = socket.data::<Conn>().map_or("unknown", |c| c.transport);
        metrics::gauge!("switchboard_connections", "transport" => transport).increment(1.0);
        if let Some(conn) = socket.data::<Conn>() {
            let user = conn.user();
            app.realtime.connections.add(&user.id);
            *lock(&conn.expiry) = Some(app.realtime.expiries.track(socket, user.expires_at));
        }
        if recovered {
            metrics::counter!("switchboard_recoveries_total").increment(1);
        }
    }

    fn event(&self, socket: &Socket, event: Event) {
        let (Some(app), Some(conn)) = (self.app.upgrade(), socket.data::<Conn>()) else {
            return;
        };
        metrics::counter!("switchboard_events_in_total").increment(1);
        if !lock(&conn.bucket).allow() {
            metrics::counter!("switchboard_events_dropped_total", "reason" => "rate_limited")
                .increment(1);
            reply(
                socket,
                event.ack,
                Err(Error::new(ErrorCode::RateLimited, "too many events")),
            );
            return;
        }
        let start = {
            let mut queue = lock(&conn.queue);
            if queue.events.len() >= MAX_QUEUED_EVENTS {
                drop(queue);
                metrics::counter!("switchboard_events_dropped_total", "reason" => "queue_full")
                    .increment(1);
                reply(
                    socket,
                    event.ack,
                    Err(Error::new(
                        ErrorCode::RateLimited,
                        "too many events waiting for an answer",
                    )),
                );
                return;
            }
            queue.events.push_back(event);
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            tokio::spawn(work_through_events(app, socket.clone()));
        }
    }

    fn disconnect(&self, socket: &Socket, reason: DisconnectReason) {
        let Some(app) = self.app.upgrade() else {
            return;
        };
        let transport = socket.data::<Conn>().map_or("unknown", |c| c.transport);
        metrics::gauge!("switchboard_connections", "transport" => transport).decrement(1.0);
        if let Some(conn) = socket.data::<Conn>() {
            app.realtime.connections.remove(&conn.user().id);
            if let Some(key) = lock(&conn.expiry).take() {
                app.realtime.expiries.untrack(key);
            }
        }
        let workspaces: Vec<String> = socket
            .rooms()
            .iter()
            .filter_map(|r| fanout::workspace_of_room(r).map(str::to_owned))
            .collect();
        let pid = socket
            .pid()
            .filter(|_| matches!(reason, DisconnectReason::Transport(_)));
        let user = socket.data::<Conn>().map(|c| c.user().id.clone());
        let socket_id = socket.id();
        tokio::spawn(async move {
            for workspace in &workspaces {
                presence::left(&app, socket_id, workspace).await;
                let _ = app.broker.unsubscribe(&fanout::channel(workspace)).await;
            }
            if let (Some(pid), Some(user_id)) = (pid, user) {
                let session = RecoverySession {
                    user_id,
                    workspaces,
                    expires_at: switchboard_core::time::now_millis()
                        + app.settings.recovery_window.as_millis() as i64,
                };
                if let Err(e) = app.store.save_recovery(pid.as_str(), &session).await {
                    tracing::warn!(error = %e, "saving a session for recovery failed");
                }
            }
        });
    }
}

/// Whether the socket's events are being handled right now (tests look at a
/// join that is still replaying).
#[cfg(test)]
pub(crate) fn is_handling_events(socket: &Socket) -> bool {
    socket
        .data::<Conn>()
        .is_some_and(|conn| lock(&conn.queue).running)
}

/// A write to a workspace (message, typing) needs the socket in its room with
/// a role that may write; anything else is `forbidden`.
pub(crate) fn check_write(socket: &Socket, workspace: &str) -> Result<(), Error> {
    let role = socket
        .data::<Conn>()
        .filter(|_| socket.in_room(&fanout::room(workspace)))
        .map(|conn| conn.role(workspace));
    match role {
        Some(role) if role.can_write() => Ok(()),
        _ => Err(Error::forbidden()),
    }
}

/// Takes a socket out of a workspace (`leave_workspace`, or its access
/// ended): out of the room, its typing ended, its presence left, this node's
/// subscription released. Nothing if it was not in the room.
pub(crate) async fn leave_workspace(
    app: &App,
    socket: &Socket,
    workspace: &str,
) -> Result<(), Error> {
    let room = fanout::room(workspace);
    if let Some(conn) = socket.data::<Conn>() {
        conn.forget(workspace);
    }
    if socket.in_room(&room) {
        socket.leave(&room);
        presence::left(app, socket.id(), workspace).await;
        app.broker.unsubscribe(&fanout::channel(workspace)).await?;
    }
    Ok(())
}

/// Runs a socket's queued events one after another, then ends.
async fn work_through_events(app: Arc<App>, socket: Socket) {
    let Some(conn) = socket.data::<Conn>() else {
        return;
    };
    loop {
        let event = {
            let mut queue = lock(&conn.queue);
            match queue.events.pop_front() {
                Some(event) => event,
                None => {
                    queue.running = false;
                    // Idle sockets keep no queue allocation (384 B each at 10k sockets).
                    queue.events = VecDeque::new();
                    return;
                }
            }
        };
        let Event {
            name,
            args,
            ack,
            lossy_text,
            ..
        } = event;
        let typing = name == "typing_start" || name == "typing_stop";
        if typing && !lock(&conn.typing_bucket).allow() {
            metrics::counter!("switchboard_events_dropped_total", "reason" => "typing_rate")
                .increment(1);
            continue;
        }
        let result = if lossy_text {
            Err(Error::invalid(
                "text must be valid Unicode (no lone surrogates)",
            ))
        } else {
            chat::handle(&app, &socket, &conn.user(), &name, args).await
        };
        reply(&socket, ack, result);
    }
}

/// Answers an event: through its ack when it asked for one, otherwise failures
/// only, as an `error` event. Never closes the connection.
fn reply(socket: &Socket, ack: Option<AckSender>, result: Result<Map<String, Value>, Error>) {
    if let Err(e) = &result {
        count_error(e.code);
    }
    match (ack, result) {
        (Some(ack), Ok(fields)) => {
            let mut body = Map::new();
            body.insert("ok".into(), Value::Bool(true));
            body.extend(fields);
            let _ = ack.send(&body);
        }
        (Some(ack), Err(e)) => {
            let _ =
                ack.send(&json!({ "ok": false, "error": e.code.as_str(), "message": e.message }));
        }
        (None, Ok(_)) => {}
        (None, Err(e)) => {
            let _ = socket.emit(
                "error",
                &json!({ "message": e.message, "code": e.code.as_str() }),
            );
        }
    }
}

fn count_error(code: ErrorCode) {
    metrics::counter!("switchboard_errors_total", "code" => code.as_str()).increment(1);
}

/// Restores a session the client asks for by its pid: the same user, within the
/// window; every workspace it was in is joined again, replaying what was missed.
async fn recover(app: &Arc<App>, socket: &Socket, user: &User, request: &RecoveryRequest) -> bool {
    let Ok(offset) = request.offset.parse::<i64>() else {
        return false;
    };
    let now = switchboard_core::time::now_millis();
    let session = match app.store.take_recovery(&request.pid, now).await {
        Ok(Some(session)) if session.user_id == user.id => session,
        Ok(_) => return false,
        Err(e) => {
            tracing::warn!(error = %e, "reading a recovery session failed");
            return false;
        }
    };
    let Some(conn) = socket.data::<Conn>() else {
        return false;
    };
    let mut accessible = Vec::new();
    for workspace in session.workspaces {
        if let Ok(Some(role)) = app.role_in(user, &workspace).await {
            conn.set_role(&workspace, role);
            accessible.push(workspace);
        }
    }
    if let Err(e) = admission::admit(app, socket, accessible.clone(), Some(offset), false).await {
        tracing::warn!(error = %e, "rejoining workspaces during recovery failed");
        return false;
    }
    for workspace in &accessible {
        presence::entered(app, socket, user, workspace).await;
    }
    true
}
