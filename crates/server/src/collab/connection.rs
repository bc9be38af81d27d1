//! One y-websocket client: a task that reads its binary messages, decodes
//! them and hands them to the document's room, and writes what the room
//! queues for it. It closes the WebSocket with a code that says why (see
//! [`CloseCode`]) and tells the room when it leaves.
//!
//! Liveness: a WebSocket ping every [`PING_INTERVAL`]; a client that answers
//! nothing (no pong, no message) for a whole interval is dropped, so a
//! vanished client's awareness state is removed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_collab::protocol;
use switchboard_core::DocumentId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::room::Command;
use super::{CloseCode, Collab, Outgoing, RoomHandle};

/// Frames queued for one client; past it the client is too slow and is dropped.
const OUTBOX: usize = 256;
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Frames written before one flush.
const WRITE_BATCH: usize = 64;

/// Serves one client of `document` until either side closes.
pub async fn serve<S>(collab: Arc<Collab>, document: DocumentId, mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connection = collab.next_connection();
    let (outbox, mut queued) = mpsc::channel(OUTBOX);
    let room = match join(&collab, &document, connection, outbox).await {
        Ok(room) => room,
        Err(code) => {
            close(&mut ws, code, "document unavailable").await;
            return;
        }
    };
    metrics::gauge!("switchboard_collab_connections").increment(1.0);
    let ending = drive(&room, connection, &mut ws, &mut queued).await;
    if let Some((code, reason)) = ending {
        close(&mut ws, code, reason).await;
    }
    let _ = room.commands.send(Command::Leave { connection }).await;
    metrics::gauge!("switchboard_collab_connections").decrement(1.0);
}

/// Joins the document's room. A room that is unloading at that moment refuses
/// nothing but drops the request; the next attempt opens a fresh room.
async fn join(
    collab: &Arc<Collab>,
    document: &DocumentId,
    connection: u64,
    outbox: mpsc::Sender<Outgoing>,
) -> Result<RoomHandle, CloseCode> {
    for _ in 0..3 {
        let room = collab.room(document);
        let (joined, answer) = oneshot::channel();
        let join = Command::Join {
            connection,
            outbox: outbox.clone(),
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

/// Runs the connection; returns the close to send, if this side closes.
async fn drive<S>(
    room: &RoomHandle,
    connection: u64,
    ws: &mut WebSocketStream<S>,
    queued: &mut mpsc::Receiver<Outgoing>,
) -> Option<(CloseCode, &'static str)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    let mut heard = true;
    loop {
        tokio::select! {
            incoming = ws.next() => {
                heard = true;
                match incoming {
                    Some(Ok(Message::Binary(frame))) => {
                        let messages = match protocol::decode(&frame) {
                            Ok(messages) => messages,
                            Err(e) => {
                                tracing::debug!(error = %e, "malformed collab message");
                                return Some((CloseCode::Malformed, "malformed message"));
                            }
                        };
                        let command = Command::Messages { connection, messages };
                        if room.commands.send(command).await.is_err() {
                            return Some((CloseCode::Unavailable, "document unavailable"));
                        }
                    }
                    Some(Ok(Message::Text(_))) => {
                        return Some((CloseCode::Unsupported, "binary messages only"));
                    }
                    Some(Ok(Message::Close(_))) | None => return None,
                    Some(Ok(_)) => {} // ping (answered by tungstenite), pong, raw frame
                    Some(Err(WsError::Capacity(_))) => {
                        return Some((CloseCode::TooLarge, "message too large"));
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "collab connection failed");
                        return None;
                    }
                }
            }
            outgoing = queued.recv() => match outgoing {
                Some(Outgoing::Frame(frame)) => {
                    if write(ws, frame, queued).await.is_err() {
                        return None;
                    }
                }
                Some(Outgoing::Close(code, reason)) => return Some((code, reason)),
                None => return Some((CloseCode::TryAgainLater, "too far behind")),
            },
            _ = ping.tick() => {
                if !heard {
                    tracing::debug!(connection, "collab client silent; dropped");
                    return None;
                }
                heard = false;
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// Writes a frame and whatever else is queued, then flushes once. A close
/// found in the queue is put back for the caller by closing here.
async fn write<S>(
    ws: &mut WebSocketStream<S>,
    first: bytes::Bytes,
    queued: &mut mpsc::Receiver<Outgoing>,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.feed(Message::Binary(first)).await?;
    for _ in 1..WRITE_BATCH {
        match queued.try_recv() {
            Ok(Outgoing::Frame(frame)) => ws.feed(Message::Binary(frame)).await?,
            Ok(Outgoing::Close(code, reason)) => {
                ws.flush().await?;
                close(ws, code, reason).await;
                return Err(WsError::ConnectionClosed);
            }
            Err(_) => break,
        }
    }
    ws.flush().await
}

async fn close<S>(ws: &mut WebSocketStream<S>, code: CloseCode, reason: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: WsCloseCode::from(code.code()),
        reason: reason.into(),
    };
    let closing = async {
        let _ = ws.close(Some(frame)).await;
        // Wait for the client's close frame, so the close is clean on both sides.
        while let Some(Ok(_)) = ws.next().await {}
        // After a refused oversized message the stream has stopped parsing, and
        // the rest of that message may still be arriving: read it away, so the
        // socket is not closed with unread data, which would send a reset that
        // can destroy the close frame before the client reads it.
        discard_input(ws.get_mut()).await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
}

/// Reads and drops input until the peer closes or pauses for 200 ms.
async fn discard_input<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
    }
}
