//! One writer per active workspace: it persists chat messages, then publishes
//! them, in id order, and it admits sockets into the workspace room.
//!
//! Everything that must not interleave within a workspace goes through its
//! sequencer: a message is stored before it is broadcast; messages are broadcast
//! in the order of their ids; a socket joining with `since` is sent the history
//! it missed and then put in the room with no message slipping between the two.
//! Messages waiting together are stored in one transaction. A sequencer ends
//! after a while without work and is started again on demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_core::{Error, Message, NewMessage};
use switchboard_socketio::{encode_event_frame, Socket};
use tokio::sync::{mpsc, oneshot};

use super::fanout;
use crate::app::App;

/// How long a sequencer waits for work before it ends.
const IDLE: Duration = Duration::from_secs(30);
/// Most messages stored in one transaction.
const MAX_BATCH: usize = 64;
/// Messages fetched per page while replaying.
const REPLAY_PAGE: u32 = 500;

pub enum Command {
    Send {
        message: NewMessage,
        reply: oneshot::Sender<Result<Message, Error>>,
    },
    Join {
        socket: Socket,
        since: Option<i64>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

#[derive(Default)]
pub struct Sequencers {
    running: Mutex<HashMap<String, mpsc::Sender<Command>>>,
}

impl Sequencers {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Command>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a message and broadcasts it to the workspace.
    pub async fn send(&self, app: &Arc<App>, message: NewMessage) -> Result<Message, Error> {
        let (reply, answer) = oneshot::channel();
        let workspace = message.workspace_id.clone();
        self.submit(app, &workspace, Command::Send { message, reply })
            .await?;
        answer.await.map_err(Error::internal)?
    }

    /// Puts a socket in the workspace room, first replaying what it missed after `since`.
    pub async fn join(
        &self,
        app: &Arc<App>,
        workspace: &str,
        socket: &Socket,
        since: Option<i64>,
    ) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Join {
            socket: socket.clone(),
            since,
            reply,
        };
        self.submit(app, workspace, command).await?;
        answer.await.map_err(Error::internal)?
    }

    async fn submit(
        &self,
        app: &Arc<App>,
        workspace: &str,
        mut command: Command,
    ) -> Result<(), Error> {
        // A sequencer that just ended closes its channel: start a new one and resend.
        for _ in 0..2 {
            let sender = self.sender(app, workspace);
            match sender.send(command).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => command = back,
            }
        }
        Err(Error::internal("workspace sequencer unavailable"))
    }

    fn sender(&self, app: &Arc<App>, workspace: &str) -> mpsc::Sender<Command> {
        let mut running = self.running();
        if let Some(sender) = running.get(workspace).filter(|s| !s.is_closed()) {
            return sender.clone();
        }
        let (sender, receiver) = mpsc::channel(256);
        running.insert(workspace.to_owned(), sender.clone());
        tokio::spawn(run(app.clone(), workspace.to_owned(), receiver));
        sender
    }

    /// Ends an idle sequencer, unless work arrived meanwhile.
    fn retire(&self, workspace: &str, receiver: &mut mpsc::Receiver<Command>) -> bool {
        let mut running = self.running();
        if !receiver.is_empty() {
            return false;
        }
        receiver.close();
        running.remove(workspace);
        true
    }

    /// Number of workspaces with a running sequencer.
    pub fn active(&self) -> usize {
        self.running().len()
    }
}

async fn run(app: Arc<App>, workspace: String, mut receiver: mpsc::Receiver<Command>) {
    let mut carried = None;
    loop {
        let command = match carried.take() {
            Some(command) => command,
            None => match tokio::time::timeout(IDLE, receiver.recv()).await {
                Ok(Some(command)) => command,
                Ok(None) => return,
                Err(_) if app.sequencers.retire(&workspace, &mut receiver) => return,
                Err(_) => continue,
            },
        };
        match command {
            Command::Send { message, reply } => {
                let mut batch = vec![(message, reply)];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(Command::Send { message, reply }) => batch.push((message, reply)),
                        Ok(join) => {
                            carried = Some(join);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                store_and_publish(&app, batch).await;
            }
            Command::Join {
                socket,
                since,
                reply,
            } => {
                let _ = reply.send(admit(&app, &workspace, &socket, since).await);
            }
        }
    }
}

type Pending = (NewMessage, oneshot::Sender<Result<Message, Error>>);

async fn store_and_publish(app: &App, batch: Vec<Pending>) {
    let (messages, replies): (Vec<NewMessage>, Vec<_>) = batch.into_iter().unzip();
    match app.store.insert_messages(&messages).await {
        Ok(stored) => {
            metrics::counter!("switchboard_messages_persisted_total")
                .increment(stored.len() as u64);
            for (message, reply) in stored.into_iter().zip(replies) {
                publish(app, &message).await;
                let _ = reply.send(Ok(message));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "storing messages failed");
            for reply in replies {
                let _ = reply.send(Err(Error::internal("storing the message failed")));
            }
        }
    }
}

/// The `message` event of a stored message, its id as the recovery offset.
fn message_frame(message: &Message) -> Option<switchboard_socketio::Utf8Bytes> {
    encode_event_frame("/", "message", (message, message.id.to_string()))
        .map_err(|e| tracing::error!(error = %e, "encoding a message failed"))
        .ok()
}

async fn publish(app: &App, message: &Message) {
    let Some(frame) = message_frame(message) else {
        return;
    };
    let payload = fanout::envelope(&frame, None);
    metrics::counter!("switchboard_broadcasts_total").increment(1);
    // The message is stored: if fan-out fails, clients still get it by `since` or recovery.
    if let Err(e) = app
        .broker
        .publish(&fanout::channel(&message.workspace_id), payload)
        .await
    {
        tracing::error!(error = %e, id = message.id, "publishing a stored message failed");
    }
}

/// Replays what the socket missed, then puts it in the room. A socket already
/// in the room has been sent everything since it entered: nothing is replayed.
async fn admit(
    app: &App,
    workspace: &str,
    socket: &Socket,
    since: Option<i64>,
) -> Result<(), Error> {
    let room = fanout::room(workspace);
    if socket.in_room(&room) {
        return Ok(());
    }
    let workspaces = socket
        .rooms()
        .iter()
        .filter(|r| fanout::workspace_of_room(r).is_some())
        .count();
    if workspaces >= app.settings.max_rooms_per_connection {
        return Err(Error::invalid(format!(
            "a connection may be in at most {} workspaces",
            app.settings.max_rooms_per_connection
        )));
    }
    app.broker.subscribe(&fanout::channel(workspace)).await?;
    if let Some(since) = since {
        if let Err(e) = replay(app, workspace, socket, since).await {
            let _ = app.broker.unsubscribe(&fanout::channel(workspace)).await;
            return Err(e);
        }
    }
    socket.join(&room);
    Ok(())
}

async fn replay(app: &App, workspace: &str, socket: &Socket, since: i64) -> Result<(), Error> {
    let workspaces = [workspace.to_owned()];
    let mut cursor = since;
    loop {
        let page = app
            .store
            .messages_since(&workspaces, cursor, REPLAY_PAGE)
            .await?;
        for message in &page {
            wait_for_room(socket).await?;
            if let Some(frame) = message_frame(message) {
                socket
                    .emit_encoded(&frame)
                    .map_err(|e| Error::internal(e.to_string()))?;
            }
            cursor = message.id;
        }
        if page.len() < REPLAY_PAGE as usize {
            return Ok(());
        }
    }
}

/// Waits while the socket's queue is more than half full, so a long replay
/// follows the client's pace instead of overflowing its queue.
async fn wait_for_room(socket: &Socket) -> Result<(), Error> {
    for _ in 0..2000 {
        let (queued, capacity) = socket.queued_frames();
        if queued <= capacity / 2 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(Error::internal("client too slow to replay to"))
}
