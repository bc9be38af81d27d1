//! The WebSocket transport: accepting the upgrade, the probe exchange that moves a
//! polling session onto a WebSocket, and the driver loop of a WebSocket session.
//!
//! One task per WebSocket connection. It writes everything queued for the session
//! in one `write`, then waits for either a frame from the client or more frames to
//! send. Heartbeats come from the engine's shared timers, not from this task.
//! The framing itself is in `frames.rs`; the handshake checks and the `101`
//! answer are the crate's `ws` module's, shared with applications.

use std::sync::Arc;

use http::Request;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::frames::{close_code, Incoming, ReadError, Reader, WsConn};
use super::packet::{decode_text, Message, Packet};
use super::session::{CloseReason, Transport, Upgrade};
use super::{error_response, EngineHandler, EngineInner, EngineResponse, SessionRef};
use crate::timer::lock;
use crate::ws::{switching_protocols, websocket_key};

/// Checks the upgrade request and answers 101, or 400 before any upgrade.
pub(super) fn accept<H: EngineHandler, B>(
    engine: Arc<EngineInner<H>>,
    mut req: Request<B>,
    session: Option<SessionRef<H>>,
) -> EngineResponse {
    let Some(key) = websocket_key(req.headers()) else {
        return error_response(3, "Bad request");
    };
    if let Some(session) = &session {
        if !start_upgrade(session) {
            return refuse(req);
        }
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        if let Some(session) = &session {
            lock(&session.inner).upgrade = Upgrade::None;
        }
        return error_response(3, "Bad request");
    };
    let fut = async move {
        match on_upgrade.await {
            Ok(upgraded) => run(engine, upgraded, session).await,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                if let Some(session) = session {
                    lock(&session.inner).upgrade = Upgrade::None;
                }
            }
        }
    };
    tokio::spawn(fut);
    switching_protocols(&key)
}

/// Completes the WebSocket handshake, then closes the socket with a policy
/// violation: the sid it named cannot take a WebSocket.
pub(super) fn refuse<B>(mut req: Request<B>) -> EngineResponse {
    let (Some(key), Some(on_upgrade)) = (
        websocket_key(req.headers()),
        req.extensions_mut().remove::<OnUpgrade>(),
    ) else {
        return error_response(3, "Bad request");
    };
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let mut ws = WsConn::new(TokioIo::new(upgraded), Reader::new(125));
            ws.close(close_code::POLICY, "Session ID unknown", LINGER)
                .await;
        }
    });
    switching_protocols(&key)
}

/// Claims a polling session for an upgrade; a second WebSocket for it is refused.
fn start_upgrade<S: super::SessionState>(session: &super::Session<S>) -> bool {
    let mut inner = lock(&session.inner);
    let free = inner.closed.is_none()
        && inner.transport == Transport::Polling
        && inner.upgrade == Upgrade::None;
    if free {
        inner.upgrade = Upgrade::Started;
    }
    free
}

/// How long a closing connection waits for the client's close frame.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

async fn run<H: EngineHandler>(
    engine: Arc<EngineInner<H>>,
    upgraded: hyper::upgrade::Upgraded,
    session: Option<SessionRef<H>>,
) {
    let max = engine.config.max_payload;
    // Unwrap hyper's boxed connection back into the plain TCP stream when we can
    // (when served by hyper's HTTP/1 connection over a `TokioIo<TcpStream>`, as
    // Switchboard does; `axum::serve` wraps the stream in a type of its own, and
    // the fallback below is taken): it saves an allocation and an indirection per
    // read and write. The connection then gets a task of its own, sized for the
    // session alone, while this one (and what the upgrade needed) ends.
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let reader = Reader::with_pending(max, parts.read_buf.to_vec());
            let ws = WsConn::new(parts.io.into_inner(), reader);
            tokio::spawn(start(engine, ws, session));
        }
        Err(upgraded) => {
            let ws = WsConn::new(TokioIo::new(upgraded), Reader::new(max));
            tokio::spawn(start(engine, ws, session));
        }
    }
}

async fn start<H: EngineHandler, S: AsyncRead + AsyncWrite + Unpin + Send>(
    engine: Arc<EngineInner<H>>,
    mut ws: WsConn<S>,
    session: Option<SessionRef<H>>,
) {
    let session = match session {
        Some(session) => match Box::pin(probe(&engine, &mut ws, &session)).await {
            Ok(()) => session,
            Err(e) => {
                tracing::debug!(sid = %session.sid(), error = %e, "upgrade abandoned");
                lock(&session.inner).upgrade = Upgrade::None;
                session.wake.notify_one(); // a held GET may answer again
                return;
            }
        },
        None => {
            let session = engine.open(Transport::WebSocket);
            let open = engine.handshake(session.sid(), &[]);
            if Box::pin(ws.send_text(&open)).await.is_err() {
                engine.close(&session, CloseReason::TransportClose);
                return;
            }
            session
        }
    };
    let code = drive(&engine, &mut ws, &session).await;
    Box::pin(ws.close(code, "", LINGER)).await;
}

#[derive(Debug, thiserror::Error)]
enum UpgradeError {
    #[error("unexpected packet during upgrade")]
    Unexpected,
    #[error("timed out")]
    Timeout,
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    WebSocket(#[from] ReadError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `2probe` → `3probe`, then `5`: the session moves to this WebSocket.
async fn probe<H: EngineHandler, S: AsyncRead + AsyncWrite + Unpin + Send>(
    engine: &EngineInner<H>,
    ws: &mut WsConn<S>,
    session: &SessionRef<H>,
) -> Result<(), UpgradeError> {
    let exchange = async {
        loop {
            let text = match ws.next().await.ok_or(UpgradeError::Closed)?? {
                Incoming::Text(text) => text,
                Incoming::Ping(payload) => {
                    ws.send_pong(&payload).await?;
                    continue;
                }
                Incoming::Pong => continue,
                _ => return Err(UpgradeError::Unexpected),
            };
            match decode_text(text) {
                Ok(Packet::Ping(payload)) if payload.as_str() == "probe" => {
                    ws.send_text("3probe").await?;
                    lock(&session.inner).upgrade = Upgrade::Probed;
                    session.wake.notify_one(); // a held GET now answers with a noop
                }
                Ok(Packet::Upgrade) if lock(&session.inner).upgrade == Upgrade::Probed => {
                    return Ok(())
                }
                _ => return Err(UpgradeError::Unexpected),
            }
        }
    };
    tokio::time::timeout(engine.config.upgrade_timeout, exchange)
        .await
        .map_err(|_| UpgradeError::Timeout)??;
    {
        let mut inner = lock(&session.inner);
        if inner.closed.is_some() {
            return Err(UpgradeError::Closed);
        }
        inner.transport = Transport::WebSocket;
        inner.upgrade = Upgrade::None;
    }
    // Polling is over for this session: nothing needs to find it by sid any more.
    engine.forget(session);
    Ok(())
}

/// Runs a WebSocket session until it closes; returns the close code to send.
async fn drive<H: EngineHandler, S: AsyncRead + AsyncWrite + Unpin + Send>(
    engine: &EngineInner<H>,
    ws: &mut WsConn<S>,
    session: &SessionRef<H>,
) -> u16 {
    let mut pace = WritePace::default();
    loop {
        if session.is_closed() {
            return close_code::NORMAL;
        }
        // Boxed, like `on_frame` below: the task of an idle connection holds only
        // what waiting needs (about 0.4 KiB less per connection).
        let coalesce = engine.config.ws_write_coalesce;
        match Box::pin(write_queued(ws, session, coalesce, &mut pace)).await {
            Ok(true) => {}
            Ok(false) => return close_code::NORMAL,
            Err(e) => {
                tracing::debug!(sid = %session.sid(), error = %e, "websocket write failed");
                engine.close(session, CloseReason::TransportClose);
                return close_code::NORMAL;
            }
        }
        let notified = session.wake.notified();
        tokio::select! {
            incoming = ws.next() => {
                // Boxed: handling a frame needs far more room than waiting for one, and
                // an idle connection's task should only be as large as the waiting.
                if let Some(code) = Box::pin(on_frame(engine, ws, session, incoming)).await {
                    return code;
                }
            }
            _ = notified => {}
        }
    }
}

/// When a connection's writes wait to be coalesced: only under sustained load.
/// Each write adds one to a heat that leaks one unit per four `coalesce`
/// intervals; a connection at `HOT` or more waits out the rest of `coalesce`
/// after its last write. A burst (ten chat messages arriving a millisecond
/// apart, a replay) stays below it and goes out at once: when every connection
/// that had written within 2 ms waited, the chat benchmark's median latency went
/// from 0.7 to 3.5 ms. A plain streak of close writes was too strict: at
/// saturation scheduling jitter now and then leaves 4 ms between two writes.
#[derive(Default)]
struct WritePace {
    last: Option<tokio::time::Instant>,
    heat: f32,
}

const HOT: f32 = 16.0;

impl WritePace {
    /// Called with frames queued; how long to wait before writing them.
    fn before_write(
        &mut self,
        now: tokio::time::Instant,
        coalesce: std::time::Duration,
    ) -> Option<std::time::Duration> {
        if coalesce.is_zero() {
            return None;
        }
        let since = self.last.map_or(std::time::Duration::MAX, |at| {
            now.saturating_duration_since(at)
        });
        let leak = since.as_secs_f32() / (4.0 * coalesce.as_secs_f32());
        self.heat = ((self.heat - leak).max(0.0) + 1.0).min(2.0 * HOT);
        let wait = if self.heat >= HOT {
            coalesce.checked_sub(since).filter(|wait| !wait.is_zero())
        } else {
            None
        };
        self.last = Some(now + wait.unwrap_or_default());
        wait
    }
}

/// Writes every queued frame with one `write`; false if the session closed
/// meanwhile (a write blocked on a client that does not read is abandoned).
async fn write_queued<S: super::SessionState, T: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WsConn<T>,
    session: &super::Session<S>,
    coalesce: std::time::Duration,
    pace: &mut WritePace,
) -> std::io::Result<bool> {
    if session.queued().0 == 0 {
        return Ok(true);
    }
    // Under load, more frames (the next broadcasts) join this write: every write
    // first gives the scheduler one turn, and a connection under sustained load
    // (see `WritePace`) waits out the rest of `coalesce` after its last write.
    // At saturation of the fan-out benchmark (1,000 members) the turn cut server
    // CPU per delivery from 0.85 to 0.71 µs and the wait (2 ms) to 0.48 µs, with
    // 2.1 million deliveries/s instead of 1.2. A second turn, or a 4 ms wait,
    // gained nothing more.
    if let Some(wait) = pace.before_write(tokio::time::Instant::now(), coalesce) {
        tokio::time::sleep(wait).await;
    }
    tokio::task::yield_now().await;
    let frames = session.take_all();
    if frames.is_empty() {
        return Ok(true);
    }
    let closing = session.closing.notified();
    tokio::pin!(closing);
    closing.as_mut().enable();
    if session.is_closed() {
        return Ok(false);
    }
    tokio::select! {
        written = ws.send_all(&frames) => written.map(|()| true),
        _ = closing => Ok(false),
    }
}

/// Handles one frame from the client; the close code once the session is over.
async fn on_frame<H: EngineHandler, S: AsyncRead + AsyncWrite + Unpin + Send>(
    engine: &EngineInner<H>,
    ws: &mut WsConn<S>,
    session: &SessionRef<H>,
    incoming: Option<Result<Incoming, ReadError>>,
) -> Option<u16> {
    let packet = match incoming {
        Some(Ok(Incoming::Text(text))) => match decode_text(text) {
            Ok(packet) => packet,
            Err(_) => {
                engine.close(session, CloseReason::InvalidPacket);
                return Some(close_code::NORMAL);
            }
        },
        Some(Ok(Incoming::Binary(data))) => Packet::Message(Message::Binary(data)),
        Some(Ok(Incoming::Ping(payload))) => {
            if ws.send_pong(&payload).await.is_err() {
                engine.close(session, CloseReason::TransportClose);
                return Some(close_code::NORMAL);
            }
            return None;
        }
        Some(Ok(Incoming::Pong)) => return None,
        Some(Ok(Incoming::Close)) | None => {
            engine.close(session, CloseReason::TransportClose);
            return Some(close_code::NORMAL);
        }
        Some(Err(e)) => {
            tracing::debug!(sid = %session.sid(), error = %e, "websocket read failed");
            engine.close(session, CloseReason::TransportError);
            return Some(match e {
                ReadError::Ws(e) => e.close_code(),
                ReadError::Io(_) => close_code::NORMAL,
            });
        }
    };
    if engine.on_packet(session, packet).await {
        None
    } else {
        Some(close_code::NORMAL)
    }
}

#[cfg(test)]
mod tests {
    /// The size of the future an async fn returns.
    fn future_size<A, B, C, F>(_: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle connection keeps its task's future for its whole life: the
    /// write and frame-handling paths are boxed so that it only holds what
    /// waiting needs (it was 1.2 KiB before; 0.4 KiB now).
    #[test]
    fn an_idle_connection_task_stays_small() {
        type H = crate::io::IoHandler;
        type S = tokio::net::TcpStream;
        let start = future_size(super::start::<H, S>);
        let drive = future_size(super::drive::<H, S>);
        assert!(start <= 512, "start future: {start} bytes");
        assert!(drive <= 256, "drive future: {drive} bytes");
    }

    #[test]
    fn only_sustained_writing_waits() {
        use std::time::Duration;
        let coalesce = Duration::from_millis(2);
        let ms = Duration::from_millis;
        // A burst of eleven writes a millisecond apart goes out at once.
        let mut pace = super::WritePace::default();
        let mut now = tokio::time::Instant::now();
        for _ in 0..11 {
            assert_eq!(pace.before_write(now, coalesce), None);
            now += ms(1);
        }
        // Sustained writing every 2-5 ms (jitter included) heats up, then waits.
        let mut pace = super::WritePace::default();
        let mut waited = 0;
        for i in 0..200u64 {
            now += ms(if i % 10 == 9 { 5 } else { 1 });
            if let Some(wait) = pace.before_write(now, coalesce) {
                assert!(wait <= coalesce);
                now += wait;
                waited += 1;
            }
        }
        assert!(waited > 100, "waited {waited} times of 200");
        // A pause cools it down.
        now += Duration::from_secs(1);
        assert_eq!(pace.before_write(now, coalesce), None);
        assert_eq!(pace.before_write(now + ms(1), coalesce), None);
        // Zero turns it off.
        let mut off = super::WritePace::default();
        for _ in 0..100 {
            assert_eq!(off.before_write(now, Duration::ZERO), None);
        }
    }
}
