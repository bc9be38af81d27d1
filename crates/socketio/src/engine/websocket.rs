//! The WebSocket transport: accepting the upgrade, the probe exchange that moves a
//! polling session onto a WebSocket, and the driver loop of a WebSocket session.
//!
//! One task per WebSocket connection. It writes everything queued for the session
//! in one flush, then waits for either a frame from the client or more frames to
//! send. Heartbeats come from the engine's shared timers, not from this task.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use super::packet::{decode_text, Frame, Message, Packet, Str};
use super::session::{CloseReason, Transport, Upgrade};
use super::{error_response, EngineHandler, EngineInner, EngineResponse, SessionRef};
use crate::timer::lock;

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
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            let close = CloseFrame {
                code: CloseCode::Policy,
                reason: "Session ID unknown".into(),
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ws.close(Some(close)))
                .await;
        }
    });
    switching_protocols(&key)
}

/// The 101 answer to a WebSocket upgrade request with this `Sec-WebSocket-Key`.
pub fn switching_protocols(key: &str) -> EngineResponse {
    let mut res = Response::new(Full::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = res.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(accept) = header::HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    res
}

/// The `Sec-WebSocket-Key` of a valid WebSocket upgrade request.
pub fn websocket_key(headers: &HeaderMap) -> Option<String> {
    let has = |name: header::HeaderName, value: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(value)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::SEC_WEBSOCKET_VERSION, "13") {
        return None;
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)?
        .to_str()
        .ok()
        .map(str::to_owned)
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

async fn run<H: EngineHandler>(
    engine: Arc<EngineInner<H>>,
    upgraded: hyper::upgrade::Upgraded,
    session: Option<SessionRef<H>>,
) {
    let config = WebSocketConfig::default()
        .read_buffer_size(engine.config.ws_read_buffer)
        .write_buffer_size(engine.config.ws_write_buffer)
        .max_message_size(Some(engine.config.max_payload))
        .max_frame_size(Some(engine.config.max_payload));
    // Unwrap hyper's boxed connection back into the plain TCP stream when we can
    // (served by hyper's HTTP/1 server; `axum::serve` wraps the stream in a type
    // of its own, and the fallback below is taken): it saves about 0.35 KiB and
    // an indirection per connection. The connection
    // then gets a task of its own, sized for the session alone, while this one
    // (and what the upgrade needed) ends.
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) if parts.read_buf.is_empty() => {
            let ws =
                WebSocketStream::from_raw_socket(parts.io.into_inner(), Role::Server, Some(config))
                    .await;
            tokio::spawn(start(engine, ws, session));
        }
        Ok(parts) => {
            let buffered = parts.read_buf.to_vec();
            let ws = WebSocketStream::from_partially_read(
                parts.io.into_inner(),
                buffered,
                Role::Server,
                Some(config),
            );
            tokio::spawn(start(engine, ws.await, session));
        }
        Err(upgraded) => {
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            tokio::spawn(start(engine, ws, session));
        }
    }
}

async fn start<H: EngineHandler, S: AsyncRead + AsyncWrite + Unpin + Send>(
    engine: Arc<EngineInner<H>>,
    mut ws: WebSocketStream<S>,
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
            if Box::pin(ws.send(WsMessage::Text(open.into())))
                .await
                .is_err()
            {
                engine.close(&session, CloseReason::TransportClose);
                return;
            }
            session
        }
    };
    drive(&engine, &mut ws, &session).await;
    let _ = Box::pin(tokio::time::timeout(
        std::time::Duration::from_secs(1),
        ws.close(None),
    ))
    .await;
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
    WebSocket(#[from] tungstenite::Error),
}

/// `2probe` → `3probe`, then `5`: the session moves to this WebSocket.
async fn probe<H: EngineHandler, S: AsyncRead + AsyncWrite + Unpin + Send>(
    engine: &EngineInner<H>,
    ws: &mut WebSocketStream<S>,
    session: &SessionRef<H>,
) -> Result<(), UpgradeError> {
    let exchange = async {
        loop {
            let text = match ws.next().await.ok_or(UpgradeError::Closed)?? {
                WsMessage::Text(text) => Str::from(text),
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                _ => return Err(UpgradeError::Unexpected),
            };
            match decode_text(text) {
                Ok(Packet::Ping(payload)) if payload.as_str() == "probe" => {
                    ws.send(WsMessage::text("3probe")).await?;
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

/// Runs a WebSocket session until it closes.
async fn drive<H: EngineHandler, S: AsyncRead + AsyncWrite + Unpin + Send>(
    engine: &EngineInner<H>,
    ws: &mut WebSocketStream<S>,
    session: &SessionRef<H>,
) {
    loop {
        let closing = session.closing.notified();
        tokio::pin!(closing);
        closing.as_mut().enable();
        if session.is_closed() {
            return;
        }
        let written = tokio::select! {
            written = write_queued(ws, session) => written,
            _ = closing => return,
        };
        if let Err(e) = written {
            tracing::debug!(sid = %session.sid(), error = %e, "websocket write failed");
            engine.close(session, CloseReason::TransportClose);
            return;
        }
        let notified = session.wake.notified();
        tokio::select! {
            incoming = ws.next() => {
                // Boxed: handling a frame needs far more room than waiting for one, and
                // an idle connection's task should only be as large as the waiting.
                if !Box::pin(on_frame(engine, session, incoming)).await {
                    return;
                }
            }
            _ = notified => {}
        }
    }
}

/// Writes every queued frame, then flushes once.
async fn write_queued<S: super::SessionState, T: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<T>,
    session: &super::Session<S>,
) -> Result<(), tungstenite::Error> {
    let mut any = false;
    while let Some(frame) = session.pop() {
        any = true;
        let message = match frame {
            Frame::Text(text) => WsMessage::Text(text),
            Frame::Binary(data) => WsMessage::Binary(data),
        };
        ws.feed(message).await?;
    }
    if any {
        ws.flush().await?;
    }
    Ok(())
}

/// Handles one frame from the client; false when the session is over.
async fn on_frame<H: EngineHandler>(
    engine: &EngineInner<H>,
    session: &SessionRef<H>,
    incoming: Option<Result<WsMessage, tungstenite::Error>>,
) -> bool {
    let packet = match incoming {
        Some(Ok(WsMessage::Text(text))) => match decode_text(Str::from(text)) {
            Ok(packet) => packet,
            Err(_) => {
                engine.close(session, CloseReason::InvalidPacket);
                return false;
            }
        },
        Some(Ok(WsMessage::Binary(data))) => Packet::Message(Message::Binary(data)),
        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => return true,
        Some(Ok(WsMessage::Close(_))) | None => {
            engine.close(session, CloseReason::TransportClose);
            return false;
        }
        Some(Err(e)) => {
            tracing::debug!(sid = %session.sid(), error = %e, "websocket read failed");
            engine.close(session, CloseReason::TransportError);
            return false;
        }
    };
    engine.on_packet(session, packet).await
}
