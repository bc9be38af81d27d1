//! The node's writer: the one task that persists chat messages, publishes every
//! workspace broadcast, and admits sockets into workspace rooms.
//!
//! Everything that must not interleave goes through it, notifications too. A message is stored
//! before it is broadcast. Broadcasts leave this node in the order of message
//! ids, across all workspaces, so every socket receives them in id order, and a
//! socket that has received the broadcast carrying offset N has received every
//! message up to N of its workspaces. That is what makes Socket.IO's single
//! recovery offset exact. A message's offset is its id; any other broadcast's
//! is the highest message id published so far. A replay to one socket sends
//! older messages (each with its own id as offset), so a `joined` event follows
//! it, carrying the highest id published so far as its offset: by then the
//! socket has been sent everything up to that id in all its workspaces.
//!
//! Messages waiting together are stored in one transaction.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchboard_core::{Error, Message, NewMessage, NewNotification, Notification};
use switchboard_socketio::{encode_event_frame, Socket, Utf8Bytes};
use tokio::sync::{mpsc, oneshot};

use super::fanout;
use crate::app::App;

/// Most messages stored in one transaction.
const MAX_BATCH: usize = 64;
/// Messages fetched per page while replaying.
const REPLAY_PAGE: u32 = 500;
/// Commands that may wait for the writer.
const QUEUE: usize = 4096;

type Reply<T> = oneshot::Sender<Result<T, Error>>;

enum Command {
    Send(NewMessage, Reply<Message>),
    Notify(NewNotification, Reply<Notification>),
    Publish {
        workspace: String,
        event: String,
        data: Value,
        reply: Reply<()>,
    },
    Admit {
        socket: Socket,
        workspaces: Vec<String>,
        since: Option<i64>,
        /// Emit `joined` for the (single) workspace once admitted.
        announce: bool,
        reply: Reply<()>,
    },
}

/// A handle on the writer task.
pub struct Writer {
    commands: mpsc::Sender<Command>,
}

impl Writer {
    /// Starts the writer; it ends when the last handle is dropped.
    pub fn start(app: std::sync::Weak<App>, last_published: i64) -> Self {
        let (commands, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(app, receiver, last_published));
        Self { commands }
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| Error::internal("the writer has stopped"))?;
        answer
            .await
            .map_err(|_| Error::internal("the writer dropped a request"))?
    }

    /// Stores a message, then broadcasts it to its workspace.
    pub async fn send(&self, message: NewMessage) -> Result<Message, Error> {
        self.ask(|reply| Command::Send(message, reply)).await
    }

    /// Stores a notification, then publishes it to the user's streams and polls
    /// on every node. Through the writer so that, on this node, notifications
    /// are committed and published in id order: a client resuming after the
    /// last id it saw can then never miss an earlier one committed later.
    pub async fn notify(&self, notification: NewNotification) -> Result<Notification, Error> {
        self.ask(|reply| Command::Notify(notification, reply)).await
    }

    /// Broadcasts an event (not stored) to a workspace, on every node.
    pub async fn publish(
        &self,
        workspace: String,
        event: String,
        data: Value,
    ) -> Result<(), Error> {
        self.ask(|reply| Command::Publish {
            workspace,
            event,
            data,
            reply,
        })
        .await
    }

    /// Puts a socket in the rooms of these workspaces, first sending it every
    /// message of them after `since`, in id order.
    pub async fn admit(
        &self,
        socket: &Socket,
        workspaces: Vec<String>,
        since: Option<i64>,
    ) -> Result<(), Error> {
        let socket = socket.clone();
        self.ask(|reply| Command::Admit {
            socket,
            workspaces,
            since,
            announce: false,
            reply,
        })
        .await
    }

    /// `join_workspace`: as [`Writer::admit`] for one workspace, then `joined`.
    pub async fn join(
        &self,
        socket: &Socket,
        workspace: String,
        since: Option<i64>,
    ) -> Result<(), Error> {
        let socket = socket.clone();
        self.ask(|reply| Command::Admit {
            socket,
            workspaces: vec![workspace],
            since,
            announce: true,
            reply,
        })
        .await
    }
}

struct State {
    app: Arc<App>,
    /// The highest message id broadcast so far: the offset of every frame sent now.
    last_published: i64,
}

async fn run(
    app: std::sync::Weak<App>,
    mut receiver: mpsc::Receiver<Command>,
    mut last_published: i64,
) {
    let mut carried = None;
    loop {
        let command = match carried.take() {
            Some(command) => command,
            None => match receiver.recv().await {
                Some(command) => command,
                None => return,
            },
        };
        let Some(app) = app.upgrade() else { return };
        let mut state = State {
            app,
            last_published,
        };
        match command {
            Command::Send(message, reply) => {
                let mut batch = vec![(message, reply)];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(Command::Send(message, reply)) => batch.push((message, reply)),
                        Ok(other) => {
                            carried = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                state.store_and_publish(batch).await;
            }
            Command::Notify(notification, reply) => {
                let _ = reply.send(state.notify(&notification).await);
            }
            Command::Publish {
                workspace,
                event,
                data,
                reply,
            } => {
                let _ = reply.send(state.publish_event(&workspace, &event, &data).await);
            }
            Command::Admit {
                socket,
                workspaces,
                since,
                announce,
                reply,
            } => {
                let mut admitted = state.admit(&socket, &workspaces, since).await;
                if admitted.is_ok() && announce {
                    admitted = state.announce(&socket, &workspaces);
                }
                let _ = reply.send(admitted);
            }
        }
        last_published = state.last_published;
    }
}

/// A frame of the `message` event with its recovery offset.
fn message_frame(message: &Message, offset: i64) -> Result<Utf8Bytes, Error> {
    encode_event_frame("/", "message", (message, offset.to_string())).map_err(Error::internal)
}

impl State {
    async fn store_and_publish(&mut self, batch: Vec<(NewMessage, Reply<Message>)>) {
        let (messages, replies): (Vec<NewMessage>, Vec<_>) = batch.into_iter().unzip();
        let stored = match self.app.store.insert_messages(&messages).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, "storing messages failed");
                for reply in replies {
                    let _ = reply.send(Err(Error::internal("storing the message failed")));
                }
                return;
            }
        };
        metrics::counter!("switchboard_messages_persisted_total").increment(stored.len() as u64);
        for (message, reply) in stored.into_iter().zip(replies) {
            self.last_published = self.last_published.max(message.id);
            match message_frame(&message, message.id) {
                Ok(frame) => self.broadcast(&message.workspace_id, &frame).await,
                Err(e) => tracing::error!(error = %e, "encoding a message failed"),
            }
            let _ = reply.send(Ok(message));
        }
    }

    async fn notify(&self, notification: &NewNotification) -> Result<Notification, Error> {
        let stored = self.app.store.insert_notification(notification).await?;
        metrics::counter!("switchboard_notifications_persisted_total").increment(1);
        // Stored: a failed publish is caught up by Last-Event-ID or the next poll.
        let payload = crate::notify::payload(&stored)?;
        let channel = crate::notify::channel(&stored.user_id);
        if let Err(e) = self.app.broker.publish(&channel, payload).await {
            tracing::error!(error = %e, id = stored.id, "publishing a stored notification failed");
        }
        Ok(stored)
    }

    async fn publish_event(
        &mut self,
        workspace: &str,
        event: &str,
        data: &Value,
    ) -> Result<(), Error> {
        let frame = encode_event_frame("/", event, (data, self.last_published.to_string()))
            .map_err(Error::internal)?;
        self.broadcast(workspace, &frame).await;
        Ok(())
    }

    async fn broadcast(&self, workspace: &str, frame: &Utf8Bytes) {
        metrics::counter!("switchboard_broadcasts_total").increment(1);
        // A stored message whose fan-out fails still reaches clients by `since` or recovery.
        if let Err(e) = self
            .app
            .broker
            .publish(&fanout::channel(workspace), fanout::envelope(frame, None))
            .await
        {
            tracing::error!(error = %e, workspace, "publishing a broadcast failed");
        }
    }

    /// Replays, then joins. A socket already in a room has been sent everything
    /// since it entered, so that workspace is neither replayed nor joined again.
    async fn admit(
        &mut self,
        socket: &Socket,
        workspaces: &[String],
        since: Option<i64>,
    ) -> Result<(), Error> {
        let new: Vec<String> = workspaces
            .iter()
            .filter(|w| !socket.in_room(&fanout::room(w)))
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let limit = self.app.settings.max_rooms_per_connection;
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
        for workspace in &new {
            self.app
                .broker
                .subscribe(&fanout::channel(workspace))
                .await?;
        }
        if let Some(since) = since {
            if let Err(e) = self.replay(socket, &new, since).await {
                for workspace in &new {
                    let _ = self
                        .app
                        .broker
                        .unsubscribe(&fanout::channel(workspace))
                        .await;
                }
                return Err(e);
            }
        }
        for workspace in &new {
            socket.join(&fanout::room(workspace));
        }
        Ok(())
    }

    /// `joined` `{ workspaceId }`, with the highest id published so far as offset.
    fn announce(&self, socket: &Socket, workspaces: &[String]) -> Result<(), Error> {
        for workspace in workspaces {
            let body = serde_json::json!({ "workspaceId": workspace });
            socket
                .emit("joined", (&body, self.last_published.to_string()))
                .map_err(|e| Error::internal(e.to_string()))?;
        }
        Ok(())
    }

    async fn replay(
        &self,
        socket: &Socket,
        workspaces: &[String],
        since: i64,
    ) -> Result<(), Error> {
        let mut cursor = since;
        loop {
            let page = self
                .app
                .store
                .messages_since(workspaces, cursor, REPLAY_PAGE)
                .await?;
            for message in &page {
                wait_for_room(socket).await?;
                let frame = message_frame(message, message.id)?;
                socket
                    .emit_encoded(&frame)
                    .map_err(|e| Error::internal(e.to_string()))?;
                cursor = message.id;
            }
            if page.len() < REPLAY_PAGE as usize {
                return Ok(());
            }
        }
    }
}

/// Waits while the socket's queue is more than half full, so a long replay
/// follows the client's pace instead of overflowing its queue. Bounded: the
/// writer serves every workspace of the node.
async fn wait_for_room(socket: &Socket) -> Result<(), Error> {
    for _ in 0..400 {
        let (queued, capacity) = socket.queued_frames();
        if queued <= capacity / 2 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(Error::internal("client too slow to replay to"))
}
