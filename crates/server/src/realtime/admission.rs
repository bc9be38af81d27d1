//! Admitting a socket into workspace rooms: `join_workspace` (with or without
//! `since`) and connection-state recovery.
//!
//! The history a socket missed is replayed here, in the socket's own task, page
//! by page and at the client's pace, so a client that reads slowly (or not at
//! all) delays nobody but itself. Only the last step, the few messages stored
//! between the end of this replay and the room join, runs in the node's
//! ordering task ([`Writer::enter`]), which never waits for a client. What is
//! not here: storing and broadcasting messages (`writer.rs`), presence
//! (`presence.rs`).

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::Error;
use switchboard_socketio::Socket;

use super::fanout;
use super::writer::{message_frame, Entered, Entry};
use crate::app::App;

/// Messages fetched per page while replaying.
const REPLAY_PAGE: u32 = 500;
/// Rounds of "catch up, then ask the writer" before giving up: each round
/// leaves the socket at most the messages stored meanwhile behind.
const MAX_ROUNDS: usize = 16;
/// How long a replay waits for a socket to make room in its queue before the
/// client is deemed too slow to replay to.
const SLOW_READER: Duration = Duration::from_secs(10);

/// Puts a socket in the rooms of these workspaces, first sending it every
/// message of them after `since`, in id order; with `announce`, a `joined`
/// event follows for each. A workspace whose room the socket is already in has
/// been sent everything since it entered: it is neither replayed nor joined again.
pub async fn admit(
    app: &Arc<App>,
    socket: &Socket,
    workspaces: Vec<String>,
    since: Option<i64>,
    announce: bool,
) -> Result<(), Error> {
    let new: Vec<String> = workspaces
        .iter()
        .filter(|w| !socket.in_room(&fanout::room(w)))
        .cloned()
        .collect();
    let limit = app.settings.max_rooms_per_connection;
    let joined = socket
        .rooms()
        .iter()
        .filter(|r| fanout::workspace_of_room(r).is_some())
        .count();
    if joined + new.len() > limit {
        return Err(Error::invalid(format!(
            "a connection may be in at most {limit} workspaces"
        )));
    }
    let mut subscribed = Vec::with_capacity(new.len());
    let mut result = Ok(());
    for workspace in &new {
        match app.broker.subscribe(&fanout::channel(workspace)).await {
            Ok(()) => subscribed.push(workspace),
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
    }
    if result.is_ok() {
        // A room this socket is the first in on this node starts from the
        // Store's newest id (`catchup.rs`); read here, not in the writer.
        let opens_a_room = new
            .iter()
            .any(|w| app.realtime.namespace.room_size(&fanout::room(w)) == 0);
        let newest = match since {
            None if opens_a_room => app.store.max_message_id().await.ok(),
            _ => None,
        };
        let entry = Entry {
            workspaces: new.clone(),
            after: since,
            announce: if announce { workspaces } else { Vec::new() },
            newest,
        };
        result = enter(app, socket, entry).await;
    }
    if result.is_err() {
        for workspace in subscribed {
            let _ = app.broker.unsubscribe(&fanout::channel(workspace)).await;
        }
    }
    result
}

/// Replays outside the writer until the writer can finish the entry.
async fn enter(app: &Arc<App>, socket: &Socket, mut entry: Entry) -> Result<(), Error> {
    for _ in 0..MAX_ROUNDS {
        if let Some(after) = entry.after {
            entry.after = Some(replay(app, socket, &entry.workspaces, after).await?);
        }
        match app.realtime.writer.enter(socket, entry.clone()).await? {
            Entered::Done => return Ok(()),
            Entered::Behind(sent) => entry.after = Some(sent),
        }
    }
    Err(Error::internal(
        "the workspace moves faster than this client reads",
    ))
}

/// Sends every stored message of `workspaces` after `after`, in id order, at
/// the socket's pace; returns the id of the last one sent.
async fn replay(
    app: &Arc<App>,
    socket: &Socket,
    workspaces: &[String],
    after: i64,
) -> Result<i64, Error> {
    let mut cursor = after;
    loop {
        let page = app
            .store
            .messages_since(workspaces, cursor, REPLAY_PAGE)
            .await?;
        for message in &page {
            wait_for_room(socket).await?;
            socket
                .emit_encoded(&message_frame(message, message.id)?)
                .map_err(|e| Error::internal(e.to_string()))?;
            cursor = message.id;
        }
        if page.len() < REPLAY_PAGE as usize {
            return Ok(cursor);
        }
    }
}

/// Waits while the socket's queue is more than half full, so a long replay
/// follows the client's pace instead of overflowing its queue.
async fn wait_for_room(socket: &Socket) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + SLOW_READER;
    loop {
        let (queued, capacity) = socket.queued_frames();
        if queued <= capacity / 2 {
            return Ok(());
        }
        if !socket.is_connected() || tokio::time::Instant::now() >= deadline {
            return Err(Error::internal("client too slow to replay to"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
