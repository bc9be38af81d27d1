//! The node's ordering task: the one task that stores chat messages and
//! publishes every workspace broadcast of this node, in id order, and the last,
//! bounded step of admitting a socket into workspace rooms.
//!
//! Only what must not interleave goes through it. A message is stored before it
//! is broadcast. Broadcasts leave this node in the order of message ids, across
//! all workspaces, so every socket receives them in id order, and a socket that
//! has received the broadcast carrying offset N has received every message up
//! to N of its workspaces. That is what makes Socket.IO's single recovery offset
//! exact. A message's offset is its id; any other broadcast's is the highest
//! message id published so far.
//!
//! Admission (`admission.rs`) replays a socket's history outside this task, at
//! the client's pace; only the last few messages between the end of that replay
//! and the room join are sent from here ([`Writer::enter`]), at most
//! [`ENTER_TAIL`] of them, without waiting for the client. A `joined` event
//! follows, carrying the highest id published so far as its offset: by then the
//! socket has been sent everything up to that id in all its workspaces.
//! Notifications have their own ordering (`notify/publisher.rs`).
//!
//! Messages waiting together are stored in one transaction.

use std::sync::Arc;

use serde_json::Value;
use switchboard_core::{Error, Message, NewMessage};
use switchboard_socketio::{encode_event_frame, Socket, Utf8Bytes};
use tokio::sync::{mpsc, oneshot};

use super::fanout;
use crate::app::App;

/// Most messages stored in one transaction.
const MAX_BATCH: usize = 64;
/// Most messages [`Writer::enter`] sends from inside the task; a socket further
/// behind is told so and catches up outside it first.
pub const ENTER_TAIL: u32 = 64;
/// Commands that may wait for the writer.
const QUEUE: usize = 4096;

type Reply<T> = oneshot::Sender<Result<T, Error>>;

enum Command {
    Send(NewMessage, Reply<Message>),
    Publish {
        workspace: String,
        event: String,
        data: Value,
        reply: Reply<()>,
    },
    Enter {
        socket: Socket,
        entry: Entry,
        reply: Reply<Entered>,
    },
}

/// What [`Writer::enter`] is asked to do for one socket.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Workspaces whose rooms the socket enters (it is subscribed to them).
    pub workspaces: Vec<String>,
    /// The socket has been sent every message of `workspaces` up to this id;
    /// `None`: it wants no history.
    pub after: Option<i64>,
    /// Workspaces to confirm with a `joined` event once entered.
    pub announce: Vec<String>,
    /// Without history: the newest message id in the Store when the join was
    /// asked, if read (where a room this socket opens on this node starts).
    pub newest: Option<i64>,
}

/// The outcome of [`Writer::enter`].
#[derive(Debug, PartialEq, Eq)]
pub enum Entered {
    /// In the rooms, every missed message sent, `joined` emitted.
    Done,
    /// Not entered: more than [`ENTER_TAIL`] messages are missing, or the
    /// socket's queue has no room for them. It has been sent every message up
    /// to this id; catch up outside the writer, then ask again.
    Behind(i64),
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

    /// The last step of admission: sends the socket the few messages it is
    /// still missing, puts it in the rooms and emits `joined`, between two
    /// broadcasts, so that it misses none and gets none twice. Bounded work:
    /// answers [`Entered::Behind`] rather than wait for a slow socket.
    pub async fn enter(&self, socket: &Socket, entry: Entry) -> Result<Entered, Error> {
        let socket = socket.clone();
        self.ask(|reply| Command::Enter {
            socket,
            entry,
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
            Command::Publish {
                workspace,
                event,
                data,
                reply,
            } => {
                let _ = reply.send(state.publish_event(&workspace, &event, &data).await);
            }
            Command::Enter {
                socket,
                entry,
                reply,
            } => {
                let _ = reply.send(state.enter(&socket, entry).await);
            }
        }
        last_published = state.last_published;
    }
}

/// A frame of the `message` event with its recovery offset.
pub fn message_frame(message: &Message, offset: i64) -> Result<Utf8Bytes, Error> {
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
                Ok(frame) => {
                    let header = fanout::Header::Message(message.id);
                    self.broadcast(&message.workspace_id, &frame, header).await;
                }
                Err(e) => tracing::error!(error = %e, "encoding a message failed"),
            }
            let _ = reply.send(Ok(message));
        }
    }

    async fn publish_event(
        &mut self,
        workspace: &str,
        event: &str,
        data: &Value,
    ) -> Result<(), Error> {
        let frame = encode_event_frame("/", event, (data, self.last_published.to_string()))
            .map_err(Error::internal)?;
        self.broadcast(workspace, &frame, fanout::Header::All).await;
        Ok(())
    }

    async fn broadcast(&self, workspace: &str, frame: &Utf8Bytes, header: fanout::Header) {
        metrics::counter!("switchboard_broadcasts_total").increment(1);
        // A stored message whose fan-out fails still reaches clients by `since` or recovery.
        if let Err(e) = self
            .app
            .broker
            .publish(&fanout::channel(workspace), fanout::envelope(frame, header))
            .await
        {
            tracing::error!(error = %e, workspace, "publishing a broadcast failed");
            // This node's members get it from the Store now; other nodes'
            // when their subscription is back (`catchup.rs`).
            let catch_up = &self.app.realtime.catch_up;
            catch_up.publish_failed(Arc::downgrade(&self.app));
        }
    }

    async fn enter(&self, socket: &Socket, entry: Entry) -> Result<Entered, Error> {
        // Where the socket's history now ends; without history, here (or
        // later, by what the Store held: this node may publish little).
        let mut replayed = self.last_published.max(entry.newest.unwrap_or(0));
        if let Some(after) = entry.after.filter(|_| !entry.workspaces.is_empty()) {
            let missing = self
                .app
                .store
                .messages_since(&entry.workspaces, after, ENTER_TAIL)
                .await?;
            let (queued, capacity) = socket.queued_frames();
            if queued + missing.len() > capacity / 2 {
                return Ok(Entered::Behind(after));
            }
            let mut sent = after;
            for message in &missing {
                socket
                    .emit_encoded(&message_frame(message, message.id)?)
                    .map_err(|e| Error::internal(e.to_string()))?;
                sent = message.id;
            }
            if missing.len() == ENTER_TAIL as usize {
                return Ok(Entered::Behind(sent));
            }
            replayed = sent;
        }
        for workspace in &entry.workspaces {
            let catch_up = &self.app.realtime.catch_up;
            catch_up.entered(
                &self.app.realtime.namespace,
                socket.id(),
                workspace,
                replayed,
            );
            socket.join(&fanout::room(workspace));
        }
        for workspace in &entry.announce {
            let body = serde_json::json!({ "workspaceId": workspace });
            socket
                .emit("joined", (&body, self.last_published.to_string()))
                .map_err(|e| Error::internal(e.to_string()))?;
        }
        Ok(Entered::Done)
    }
}
