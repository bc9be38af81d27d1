//! One y-websocket client: a task that reads its binary messages, decodes
//! them and hands them to the document's room, and writes what the room
//! queues for it. It closes the WebSocket with a code that says why (see
//! [`CloseCode`]) and tells the room when it leaves.
//!
//! The WebSocket is the socketio crate's (`switchboard_socketio::ws`), the
//! framing Socket.IO uses too: one implementation, and an idle connection
//! holds no read or write buffer. Pings from the client are answered here.
//!
//! Liveness: a WebSocket ping every [`PING_INTERVAL`]; a client that answers
//! nothing (no pong, no message) for a whole interval is dropped, so a
//! vanished client's awareness state is removed.
//!
//! Lifetime: the connection closes with 1008 at its token's `exp`. One timer
//! serves both: it fires at the next ping or at `exp`, whichever is first.
//!
//! An idle connection spends its life in [`drive`]'s `select!`, so its task
//! is as large as that wait; the rarer, larger steps (joining, handing
//! messages to the room, writing, closing) are boxed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_collab::protocol;
use switchboard_core::time::now_millis;
use switchboard_core::DocumentId;
use switchboard_socketio::ws::{Incoming, ReadError, WebSocket, WsError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::room::Command;
use super::{CloseCode, Collab, Grant, Outgoing, RoomHandle};

/// Frames queued for one client; past it the client is too slow and is dropped.
const OUTBOX: usize = 256;
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Frames written with one `write`, at most.
const WRITE_BATCH: usize = 64;
/// How long a close may take (the close handshake, then reading away input).
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Serves one client of `document`, with what `grant` allows, until either
/// side closes or its token expires.
///
/// What only joining needs (the document's name, the grant) goes into the
/// boxed join future made here, so the connection's future does not carry it
/// for the rest of its life.
pub fn serve<S>(
    collab: Arc<Collab>,
    document: DocumentId,
    grant: Grant,
    mut ws: WebSocket<S>,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connection = collab.next_connection();
    let expires = deadline(grant.expires_at);
    let (outbox, mut queued) = mpsc::channel(OUTBOX);
    let joining = Box::pin(join(collab, document, connection, outbox, grant));
    async move {
        let room = match joining.await {
            Ok(room) => room,
            Err(code) => {
                let reason = match code {
                    CloseCode::Forbidden => "access revoked",
                    _ => "document unavailable",
                };
                Box::pin(close(&mut ws, code, reason)).await;
                return;
            }
        };
        metrics::gauge!("switchboard_collab_connections").increment(1.0);
        if let Some((code, reason)) = drive(&room, connection, expires, &mut ws, &mut queued).await
        {
            Box::pin(close(&mut ws, code, reason)).await;
        }
        let _ = room.commands.send(Command::Leave { connection }).await;
        metrics::gauge!("switchboard_collab_connections").decrement(1.0);
    }
}

/// The instant a token's `exp` (seconds since the Unix epoch) falls at; one
/// that cannot be represented is as good as never.
fn deadline(expires_at: u64) -> Instant {
    let now = Instant::now();
    let left = i128::from(expires_at) * 1000 - i128::from(now_millis());
    let left = Duration::from_millis(u64::try_from(left.max(0)).unwrap_or(u64::MAX));
    now.checked_add(left)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// Joins the document's room. A room that is unloading at that moment refuses
/// nothing but drops the request; the next attempt opens a fresh room.
async fn join(
    collab: Arc<Collab>,
    document: DocumentId,
    connection: u64,
    outbox: mpsc::Sender<Outgoing>,
    grant: Grant,
) -> Result<RoomHandle, CloseCode> {
    for _ in 0..3 {
        let room = collab.room(&document);
        let (joined, answer) = oneshot::channel();
        let join = Command::Join {
            connection,
            outbox: outbox.clone(),
            grant: grant.clone(),
            joined,
        };
        if room.commands.send(join).await.is_err() {
            continue;
        }
        match answer.await {
            Ok(Ok(())) => return Ok(room),
            Ok(Err(code)) => return Err(code),
            Err(_) => continue,
        }
    }
    Err(CloseCode::Unavailable)
}

/// What ends a connection: the close to send, or nothing to send (the
/// connection is gone or the client vanished).
type Ending = Option<(CloseCode, &'static str)>;

/// Runs the connection until it ends or `expires`; returns the close to
/// send, if any.
async fn drive<S>(
    room: &RoomHandle,
    connection: u64,
    expires: Instant,
    ws: &mut WebSocket<S>,
    queued: &mut mpsc::Receiver<Outgoing>,
) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // One timer for the next ping and the token's end, boxed as an
    // `Interval`'s is: the connection's future holds a pointer.
    let mut next_ping = Instant::now() + PING_INTERVAL;
    let mut timer = Box::pin(tokio::time::sleep_until(next_ping.min(expires)));
    let mut heard = true;
    loop {
        let step = tokio::select! {
            incoming = ws.recv() => {
                heard = true;
                Box::pin(on_incoming(room, connection, ws, incoming)).await
            }
            outgoing = queued.recv() => match outgoing {
                Some(Outgoing::Frame(frame)) => Box::pin(write(ws, frame, queued)).await,
                Some(Outgoing::Close(code, reason)) => Err(Some((code, reason))),
                None => Err(Some((CloseCode::TryAgainLater, "too far behind"))),
            },
            () = &mut timer => {
                let now = Instant::now();
                if now >= expires {
                    return Some((CloseCode::Expired, "token expired"));
                }
                next_ping = now + PING_INTERVAL;
                timer.as_mut().reset(next_ping.min(expires));
                if !heard {
                    tracing::debug!(connection, "collab client silent; dropped");
                    return None;
                }
                heard = false;
                Box::pin(ws.ping(b"")).await.map_err(|_| None)
            }
        };
        if let Err(ending) = step {
            return ending;
        }
    }
}

/// Handles what the client sent: a message for the room, a ping to answer.
async fn on_incoming<S>(
    room: &RoomHandle,
    connection: u64,
    ws: &mut WebSocket<S>,
    incoming: Option<Result<Incoming, ReadError>>,
) -> Result<(), Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match incoming {
        Some(Ok(Incoming::Binary(frame))) => {
            let messages = match protocol::decode(&frame) {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::debug!(error = %e, "malformed collab message");
                    return Err(Some((CloseCode::Malformed, "malformed message")));
                }
            };
            let command = Command::Messages {
                connection,
                messages,
            };
            if room.commands.send(command).await.is_err() {
                return Err(Some((CloseCode::Unavailable, "document unavailable")));
            }
            Ok(())
        }
        Some(Ok(Incoming::Text(_))) => Err(Some((CloseCode::Unsupported, "binary messages only"))),
        Some(Ok(Incoming::Ping(payload))) => ws.pong(&payload).await.map_err(|_| None),
        Some(Ok(Incoming::Pong)) => Ok(()),
        // The client closes: answer its close.
        Some(Ok(Incoming::Close)) => Err(Some((CloseCode::Normal, ""))),
        None => Err(None),
        Some(Err(ReadError::Ws(e))) => {
            tracing::debug!(error = %e, "collab client broke the WebSocket protocol");
            Err(Some(match e {
                WsError::TooBig => (CloseCode::TooLarge, "message too large"),
                WsError::InvalidUtf8 => (CloseCode::Malformed, "invalid UTF-8"),
                WsError::Protocol(_) => (CloseCode::ProtocolError, "protocol error"),
            }))
        }
        Some(Err(ReadError::Io(e))) => {
            tracing::debug!(error = %e, "collab connection failed");
            Err(None)
        }
    }
}

/// Writes a frame and whatever else is queued behind it (up to
/// [`WRITE_BATCH`]) with one `write`. A close found in the queue ends the
/// connection once the frames before it are written.
async fn write<S>(
    ws: &mut WebSocket<S>,
    first: Bytes,
    queued: &mut mpsc::Receiver<Outgoing>,
) -> Result<(), Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut frames = vec![first];
    let mut close = None;
    while frames.len() < WRITE_BATCH {
        match queued.try_recv() {
            Ok(Outgoing::Frame(frame)) => frames.push(frame),
            Ok(Outgoing::Close(code, reason)) => {
                close = Some((code, reason));
                break;
            }
            Err(_) => break,
        }
    }
    ws.send_binary(&frames).await.map_err(|_| None)?;
    match close {
        Some(close) => Err(Some(close)),
        None => Ok(()),
    }
}

async fn close<S>(ws: &mut WebSocket<S>, code: CloseCode, reason: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.close(code.code(), reason, CLOSE_LINGER).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size4<A, B, C, D, F>(_: impl Fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn size5<A, B, C, D, E, F>(_: impl Fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle connection keeps its task's future for its whole life: the
    /// steps that are not waiting are boxed, so that it holds little more
    /// than what waiting needs (608 and 264 bytes when this was written;
    /// 488 and 256 once joining was boxed before the task starts and one
    /// timer served both pings and the token's end).
    #[test]
    fn an_idle_connection_task_stays_small() {
        type S = tokio::net::TcpStream;
        let serve = size4(serve::<S>);
        let drive = size5(drive::<S>);
        assert!(serve <= 640, "serve future: {serve} bytes");
        assert!(drive <= 320, "drive future: {drive} bytes");
    }
}
