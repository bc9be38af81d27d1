//! One open document on this node: a task that owns the Yjs document, the
//! connections editing it and the document's log in the Store.
//!
//! Everything about a document happens in this task, one command at a time,
//! so there are no locks on the document. An update from a client is checked,
//! applied, appended to the Store and only then relayed, to this node's other
//! clients directly and to other nodes through the broker. If the Store fails,
//! the room closes every connection and unloads, so that memory never serves
//! what the Store does not hold; clients reconnect and sync again.
//!
//! Each connection carries its user and whether it may write: a viewer's
//! updates (sync step 2 and update) are dropped and counted, everything else
//! it sends is handled as anyone's. An access change
//! ([`Remote::Access`]) closes the user's connections with 1008 or changes
//! what they may do.
//!
//! Past `compact_updates` logged updates, a separate task compacts the log
//! from what the Store holds (not from memory, which may lack an update that
//! another node is still relaying), so compaction never loses an update.
//!
//! The document API reaches a document through its room too: a restore
//! ([`Command::Restore`]) is an update the room makes itself and then handles
//! as a client's (stored, relayed, published), and a deletion
//! ([`Command::Delete`], or [`Remote::Deleted`] from the node that deleted
//! it) closes every connection with 4404 and empties the room's document, so
//! that it holds no more than the Store does.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use switchboard_collab::{
    json, protocol, AwarenessUpdate, ClientID, ClientMessage, Document, DocumentError, StateVector,
};
use switchboard_core::time::now_millis;
use switchboard_core::{DocumentId, DocumentLog, Role, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{CloseCode, Collab, Grant, Outgoing, RestoreError, RoomHandle};

/// Commands queued for a room; the queue bounds how far clients can run ahead.
const COMMAND_QUEUE: usize = 256;
/// Events from other nodes waiting for the room; past it the room resyncs
/// from the Store (`RoomHandle::remote`).
pub(super) const REMOTE_QUEUE: usize = 1024;
/// Updates kept for publishing while the broker is down; past it, the whole
/// document is published once the broker is back.
const MAX_UNPUBLISHED: usize = 1024;
/// How often awareness states that nobody renews are looked for.
const AWARENESS_EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// A Yjs v1 update that changes nothing: no structs, an empty delete set.
const EMPTY_UPDATE: &[u8] = &[0, 0];
/// How often kept updates are offered to the broker again.
const REPUBLISH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

pub(super) enum Command {
    Join {
        connection: u64,
        outbox: mpsc::Sender<Outgoing>,
        grant: Grant,
        joined: oneshot::Sender<Result<(), CloseCode>>,
    },
    Messages {
        connection: u64,
        messages: Vec<ClientMessage>,
    },
    Leave {
        connection: u64,
    },
    /// A compaction ended; `snapshot_bytes` is `None` if it wrote nothing.
    Compacted {
        snapshot_bytes: Option<usize>,
        appended_at_start: usize,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    /// Make the document's content that of `version` (a kept snapshot).
    Restore {
        version: Bytes,
        done: oneshot::Sender<Result<(), RestoreError>>,
    },
    /// Delete the document from the Store, here and on every node.
    Delete {
        done: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// The users of the room's connections (each once).
    Users {
        done: oneshot::Sender<Vec<String>>,
    },
}

/// Document traffic from another node, and access changes: what reaches a
/// room from outside its clients, without waiting.
pub(super) enum Remote {
    Update(Bytes),
    Awareness(AwarenessUpdate),
    Query,
    /// Updates from other nodes may have been missed: catch up from the Store.
    Resync,
    /// A user's membership role in the workspace changed (`None`: no membership).
    Access {
        user: Box<str>,
        role: Option<Role>,
    },
    /// Another node deleted the document.
    Deleted,
}

/// Starts the task of a document's room.
pub(super) fn open(collab: Arc<Collab>, id: DocumentId) -> RoomHandle {
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (remote, remote_rx) = mpsc::channel(REMOTE_QUEUE);
    let remote_overflowed = Arc::new(AtomicBool::new(false));
    let clients = Arc::new(AtomicUsize::new(0));
    let room = Room {
        channel: super::channel(&id),
        id,
        collab,
        document: Document::new(),
        connections: HashMap::new(),
        clients: clients.clone(),
        bytes: 0,
        appended: 0,
        logged: 0,
        compacting: false,
        unpublished: Vec::new(),
        unpublished_overflow: false,
        myself: commands.downgrade(),
    };
    tokio::spawn(room.run(command_rx, remote_rx, remote_overflowed.clone()));
    RoomHandle {
        commands,
        remote,
        remote_overflowed,
        clients,
    }
}

struct Connection {
    outbox: mpsc::Sender<Outgoing>,
    /// The awareness clients this connection speaks for, removed when it closes.
    awareness: HashSet<ClientID>,
    user: Box<str>,
    /// The role the token itself gives in the workspace, kept through
    /// membership changes.
    token_role: Option<Role>,
    /// Whether its updates are taken (not a viewer).
    writable: bool,
}

struct Room {
    id: DocumentId,
    channel: switchboard_core::Topic,
    collab: Arc<Collab>,
    document: Document,
    connections: HashMap<u64, Connection>,
    clients: Arc<AtomicUsize>,
    /// Size of the document's log in the Store, as far as this node knows.
    bytes: usize,
    /// Bytes this node appended since the room opened.
    appended: usize,
    /// Updates logged since the last compaction.
    logged: usize,
    compacting: bool,
    /// Stored updates the broker did not take yet, oldest first.
    unpublished: Vec<Bytes>,
    unpublished_overflow: bool,
    myself: mpsc::WeakSender<Command>,
}

/// What a command leaves the room to do next.
enum Next {
    Continue,
    Unload,
}

impl Room {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut remote: mpsc::Receiver<Remote>,
        remote_overflowed: Arc<AtomicBool>,
    ) {
        if let Err(e) = self.load().await {
            tracing::error!(error = %e, document = ?self.id, "loading a document failed");
            self.refuse_all(&mut commands).await;
            return;
        }
        let unload_after = self.collab.limits.unload_after;
        let mut idle_since = Some(Instant::now());
        let mut expiry = tokio::time::interval(AWARENESS_EXPIRY_INTERVAL);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = idle_since.map(|since| since + unload_after);
            let next = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => Next::Unload,
                },
                Some(event) = remote.recv() => {
                    if remote_overflowed.swap(false, Ordering::AcqRel) {
                        self.resync().await;
                    }
                    self.remote(event).await;
                    Next::Continue
                }
                _ = expiry.tick() => {
                    self.expire_awareness();
                    Next::Continue
                }
                _ = tokio::time::sleep(REPUBLISH_INTERVAL), if self.has_unpublished() => {
                    self.publish_pending().await;
                    Next::Continue
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    if !self.has_unpublished() && self.collab.forget(&self.id, &commands) {
                        break;
                    }
                    Next::Continue
                }
            };
            if let Next::Unload = next {
                self.close_all(CloseCode::Unavailable, "document unavailable");
                self.refuse_all(&mut commands).await;
                break;
            }
            idle_since = match (self.connections.is_empty(), idle_since) {
                (true, None) => Some(Instant::now()),
                (true, since) => since,
                (false, _) => None,
            };
        }
        self.unsubscribe().await;
    }

    /// Subscribes to the document's channel, then reads it from the Store: an
    /// update another node stores after the read reaches this node by the channel.
    async fn load(&mut self) -> Result<(), String> {
        self.collab
            .broker
            .subscribe(&self.channel)
            .await
            .map_err(|e| e.to_string())?;
        let log = self
            .collab
            .store
            .document_log(&self.id)
            .await
            .map_err(|e| e.to_string())?;
        let (document, skipped) = restore(&log);
        if skipped > 0 {
            tracing::warn!(skipped, document = ?self.id, "stored updates that do not apply were skipped");
        }
        self.document = document;
        self.bytes = log_bytes(&log);
        self.logged = log.updates.len();
        self.publish(b'Q', &[]).await;
        self.maybe_compact();
        Ok(())
    }

    /// Drops awareness states nobody renewed (the clients of a node that died)
    /// and tells this node's clients. Every node does the same, so nothing is
    /// published.
    fn expire_awareness(&mut self) {
        if let Some(removal) = self.document.expire_awareness(now_millis() as u64) {
            tracing::debug!(clients = removal.clients.len(), "expired awareness states");
            self.relay(None, protocol::awareness(removal));
        }
    }

    fn has_unpublished(&self) -> bool {
        !self.unpublished.is_empty() || self.unpublished_overflow
    }

    async fn command(&mut self, command: Command) -> Next {
        match command {
            Command::Join {
                connection,
                outbox,
                grant,
                joined,
            } => {
                let result = self.join(connection, outbox, grant);
                let _ = joined.send(result);
                Next::Continue
            }
            Command::Messages {
                connection,
                messages,
            } => self.messages(connection, messages).await,
            Command::Leave { connection } => {
                self.leave(connection).await;
                Next::Continue
            }
            Command::Users { done } => {
                let mut users: Vec<String> = self
                    .connections
                    .values()
                    .map(|c| c.user.to_string())
                    .collect();
                users.sort_unstable();
                users.dedup();
                let _ = done.send(users);
                Next::Continue
            }
            Command::Compacted {
                snapshot_bytes,
                appended_at_start,
            } => {
                self.compacting = false;
                if let Some(snapshot_bytes) = snapshot_bytes {
                    self.bytes = snapshot_bytes + (self.appended - appended_at_start);
                }
                Next::Continue
            }
            Command::Shutdown { done } => {
                self.close_all(CloseCode::GoingAway, "server shutting down");
                let _ = done.send(());
                Next::Unload
            }
            Command::Restore { version, done } => {
                let (result, next) = self.restore(&version).await;
                let _ = done.send(result);
                next
            }
            Command::Delete { done } => {
                let deleted = self.collab.store.delete_document(&self.id).await;
                if deleted.is_ok() {
                    self.publish(b'D', &[]).await;
                    self.deleted();
                }
                let _ = done.send(deleted);
                Next::Continue
            }
        }
    }

    /// Makes the document's content that of `version` with one update made
    /// here ([`json::restore_update`]: what was inserted since is deleted,
    /// what was deleted since inserted again), then stores, relays and
    /// publishes it as a client's update.
    async fn restore(&mut self, version: &[u8]) -> (Result<(), RestoreError>, Next) {
        let current = self.document.diff(&StateVector::default());
        let update = match json::restore_update(&current, version) {
            Ok(update) => Bytes::from(update),
            Err(e) => return (Err(RestoreError::Invalid(e.to_string())), Next::Continue),
        };
        if self.bytes + update.len() > self.collab.limits.max_document_bytes {
            return (Err(RestoreError::TooLarge), Next::Continue);
        }
        let applied = Document::decode_update(&update).and_then(|u| self.document.apply(u));
        if let Err(e) = applied {
            let next = match e {
                DocumentError::Broken => self.rebuild().await,
                _ => Next::Continue,
            };
            return (Err(RestoreError::Invalid(e.to_string())), next);
        }
        if let Err(e) = self.store(&update).await {
            tracing::error!(error = %e, document = ?self.id, "storing a restore failed");
            return (Err(RestoreError::Unavailable), Next::Unload);
        }
        metrics::counter!("switchboard_collab_restores_total").increment(1);
        self.relay(None, protocol::update(&update));
        self.publish_update(update).await;
        self.maybe_compact();
        (Ok(()), Next::Continue)
    }

    /// The document was deleted (here or on another node): its connections
    /// close with 4404 and the room holds an empty document, as the Store does.
    fn deleted(&mut self) {
        self.close_all(CloseCode::Deleted, "document deleted");
        self.document = Document::new();
        self.bytes = 0;
        self.logged = 0;
        self.unpublished.clear();
        self.unpublished_overflow = false;
    }

    /// Adds a connection and starts its sync: the server's state vector, then
    /// the awareness states, as the y-websocket server does. An access change
    /// made since the upgrade checked access applies first.
    fn join(
        &mut self,
        connection: u64,
        outbox: mpsc::Sender<Outgoing>,
        grant: Grant,
    ) -> Result<(), CloseCode> {
        let changed = self
            .collab
            .access_since(&grant.user, &self.id.workspace, grant.checked_at);
        let role = match changed {
            Some(membership) => membership.or(grant.token_role),
            None => Some(grant.role),
        };
        let Some(role) = role else {
            return Err(CloseCode::Forbidden);
        };
        if self.connections.len() >= self.collab.limits.max_clients {
            return Err(CloseCode::TryAgainLater);
        }
        let _ = outbox.try_send(Outgoing::Frame(protocol::sync_step1(
            &self.document.state_vector(),
        )));
        if let Some(states) = self.document.awareness_states() {
            let _ = outbox.try_send(Outgoing::Frame(protocol::awareness(states)));
        }
        self.connections.insert(
            connection,
            Connection {
                outbox,
                awareness: HashSet::new(),
                user: grant.user.into_boxed_str(),
                token_role: grant.token_role,
                writable: role.can_write(),
            },
        );
        self.count_clients();
        Ok(())
    }

    async fn messages(&mut self, connection: u64, messages: Vec<ClientMessage>) -> Next {
        for message in messages {
            let Some(conn) = self.connections.get(&connection) else {
                break; // closed by an earlier message of the batch
            };
            let writable = conn.writable;
            match message {
                ClientMessage::SyncStep1(state_vector) => {
                    let missing = self.document.diff(&state_vector);
                    self.send(connection, protocol::sync_step2(missing));
                }
                ClientMessage::Update(update) if !writable => {
                    // A viewer's client answers the server's step 1 with its
                    // own state, usually empty: only real changes count.
                    if update.as_ref() != EMPTY_UPDATE {
                        metrics::counter!("switchboard_collab_updates_dropped_total", "reason" => "viewer")
                            .increment(1);
                    }
                }
                ClientMessage::Update(update) => {
                    if let Next::Unload = self.update(connection, update).await {
                        return Next::Unload;
                    }
                }
                ClientMessage::Awareness(states) => self.awareness(connection, states).await,
                ClientMessage::QueryAwareness => {
                    if let Some(states) = self.document.awareness_states() {
                        self.send(connection, protocol::awareness(states));
                    }
                }
                ClientMessage::Auth => {}
            }
        }
        Next::Continue
    }

    /// Checks, applies, stores, then relays an update from a client.
    async fn update(&mut self, connection: u64, update: Bytes) -> Next {
        let limits = &self.collab.limits;
        if update.len() > limits.max_update_bytes {
            self.close(connection, CloseCode::TooLarge, "update too large");
            return Next::Continue;
        }
        if self.bytes + update.len() > limits.max_document_bytes {
            self.close(
                connection,
                CloseCode::DocumentTooLarge,
                "document too large",
            );
            return Next::Continue;
        }
        let applied = Document::decode_client_update(&update).and_then(|u| self.document.apply(u));
        if let Err(e) = applied {
            tracing::debug!(error = %e, "malformed update");
            self.close(connection, CloseCode::Malformed, "malformed update");
            if let DocumentError::Broken = e {
                return self.rebuild().await;
            }
            return Next::Continue;
        }
        if let Err(e) = self.store(&update).await {
            tracing::error!(error = %e, document = ?self.id, "storing a document update failed");
            return Next::Unload;
        }
        metrics::counter!("switchboard_collab_updates_total").increment(1);
        self.relay(Some(connection), protocol::update(&update));
        self.publish_update(update).await;
        self.maybe_compact();
        Next::Continue
    }

    async fn store(&mut self, update: &Bytes) -> Result<(), StoreError> {
        self.collab
            .store
            .append_document_updates(&self.id, std::slice::from_ref(update))
            .await?;
        self.bytes += update.len();
        self.appended += update.len();
        self.logged += 1;
        Ok(())
    }

    async fn awareness(&mut self, connection: u64, states: AwarenessUpdate) {
        let changes = self.document.apply_awareness(states.clone());
        if changes.is_empty() {
            return;
        }
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.awareness.extend(changes.set.iter().copied());
            for client in &changes.removed {
                conn.awareness.remove(client);
            }
        }
        self.publish(b'A', &protocol::encode_awareness_update(&states))
            .await;
        self.relay(Some(connection), protocol::awareness(states));
    }

    async fn leave(&mut self, connection: u64) {
        let Some(conn) = self.connections.remove(&connection) else {
            return;
        };
        self.count_clients();
        let clients: Vec<ClientID> = conn.awareness.into_iter().collect();
        if let Some(removal) = self.document.remove_awareness(&clients) {
            self.publish(b'A', &protocol::encode_awareness_update(&removal))
                .await;
            self.relay(None, protocol::awareness(removal));
        }
    }

    async fn remote(&mut self, event: Remote) {
        match event {
            Remote::Update(update) => {
                match Document::decode_update(&update).and_then(|u| self.document.apply(u)) {
                    Ok(()) => {
                        self.bytes += update.len();
                        self.relay(None, protocol::update(&update));
                    }
                    Err(DocumentError::Broken) => {
                        if let Next::Unload = self.rebuild().await {
                            self.close_all(CloseCode::Unavailable, "document unavailable");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "an update from another node does not apply")
                    }
                }
            }
            Remote::Awareness(states) => {
                if !self.document.apply_awareness(states.clone()).is_empty() {
                    self.relay(None, protocol::awareness(states));
                }
            }
            Remote::Resync => self.resync().await,
            Remote::Access { user, role } => self.access_changed(&user, role),
            Remote::Deleted => self.deleted(),
            Remote::Query => {
                let local = self
                    .connections
                    .values()
                    .flat_map(|c| c.awareness.iter().copied());
                if let Some(states) = self.document.awareness_of(local.collect::<Vec<_>>()) {
                    self.publish(b'A', &protocol::encode_awareness_update(&states))
                        .await;
                }
            }
        }
    }

    /// Re-applies a user's access to their connections: the membership role,
    /// else the token's; without either, closed with 1008.
    fn access_changed(&mut self, user: &str, membership: Option<Role>) {
        let affected: Vec<(u64, Option<Role>)> = self
            .connections
            .iter()
            .filter(|(_, conn)| &*conn.user == user)
            .map(|(id, conn)| (*id, membership.or(conn.token_role)))
            .collect();
        for (connection, role) in affected {
            match role {
                Some(role) => {
                    if let Some(conn) = self.connections.get_mut(&connection) {
                        conn.writable = role.can_write();
                    }
                }
                None => {
                    metrics::counter!("switchboard_collab_connections_revoked_total").increment(1);
                    self.close(connection, CloseCode::Forbidden, "access revoked");
                }
            }
        }
    }

    /// Replaces a document that yrs left inconsistent with one rebuilt from the
    /// Store, keeping the awareness states. The update that broke it was never
    /// stored or relayed, so the clients hold nothing the rebuilt one lacks.
    async fn rebuild(&mut self) -> Next {
        tracing::warn!(document = ?self.id, "an update broke the document; rebuilding it from the Store");
        match self.collab.store.document_log(&self.id).await {
            Ok(log) => {
                let (mut document, _) = restore(&log);
                document.adopt_awareness(&self.document);
                self.document = document;
                self.bytes = log_bytes(&log);
                Next::Continue
            }
            Err(e) => {
                tracing::error!(error = %e, document = ?self.id, "rebuilding a document failed");
                Next::Unload
            }
        }
    }

    /// Applies the document's log again (updates are idempotent) and sends the
    /// clients whatever that added. The diff against the state before always
    /// carries the whole delete set, so missed deletions arrive too.
    async fn resync(&mut self) {
        let before = self.document.state_vector();
        let log = match self.collab.store.document_log(&self.id).await {
            Ok(log) => log,
            Err(e) => {
                tracing::warn!(error = %e, document = ?self.id, "catching up a document failed");
                return;
            }
        };
        let parts = log
            .snapshot
            .iter()
            .chain(log.updates.iter().map(|(_, u)| u));
        for part in parts {
            if let Ok(update) = Document::decode_update(part) {
                let _ = self.document.apply(update);
            }
        }
        self.bytes = self.bytes.max(log_bytes(&log));
        let missed = self.document.diff(&before);
        self.relay(None, protocol::update(&missed));
    }

    /// Sends a frame to every connection but `except`.
    fn relay(&mut self, except: Option<u64>, frame: Bytes) {
        let targets: Vec<u64> = self
            .connections
            .keys()
            .copied()
            .filter(|c| Some(*c) != except)
            .collect();
        for connection in targets {
            self.send(connection, frame.clone());
        }
    }

    /// Queues a frame for a connection; one whose queue is full is dropped (its
    /// task then closes it with 1013 and the client reconnects and syncs again).
    fn send(&mut self, connection: u64, frame: Bytes) {
        let Some(conn) = self.connections.get(&connection) else {
            return;
        };
        if conn.outbox.try_send(Outgoing::Frame(frame)).is_err() {
            tracing::debug!(connection, "collab client too slow; dropped");
            self.drop_connection(connection);
        }
    }

    fn close(&mut self, connection: u64, code: CloseCode, reason: &'static str) {
        if let Some(conn) = self.connections.get(&connection) {
            let _ = conn.outbox.try_send(Outgoing::Close(code, reason));
        }
        self.drop_connection(connection);
    }

    /// Forgets a connection without waiting; its awareness removal follows when
    /// its task reports `Leave`, or at once here.
    fn drop_connection(&mut self, connection: u64) {
        if let Some(conn) = self.connections.remove(&connection) {
            let clients: Vec<ClientID> = conn.awareness.into_iter().collect();
            if let Some(removal) = self.document.remove_awareness(&clients) {
                let payload = protocol::encode_awareness_update(&removal);
                self.relay(None, protocol::awareness(removal));
                self.publish_later(b'A', payload);
            }
            self.count_clients();
        }
    }

    fn close_all(&mut self, code: CloseCode, reason: &'static str) {
        for (_, conn) in self.connections.drain() {
            let _ = conn.outbox.try_send(Outgoing::Close(code, reason));
        }
        self.count_clients();
    }

    /// Answers every queued join with a refusal (the room failed or is closing).
    async fn refuse_all(&mut self, commands: &mut mpsc::Receiver<Command>) {
        self.collab.forget_failed(&self.id);
        commands.close();
        while let Some(command) = commands.recv().await {
            match command {
                Command::Join { joined, .. } => {
                    let _ = joined.send(Err(CloseCode::Unavailable));
                }
                Command::Shutdown { done } => {
                    let _ = done.send(());
                }
                _ => {}
            }
        }
    }

    fn count_clients(&self) {
        self.clients
            .store(self.connections.len(), Ordering::Relaxed);
    }

    async fn publish(&self, kind: u8, data: &[u8]) -> bool {
        let payload = self.collab.payload(kind, data);
        match self.collab.broker.publish(&self.channel, payload).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "publishing document traffic failed");
                false
            }
        }
    }

    /// Publishes a stored update for the other nodes. One that cannot be
    /// published (the broker is down) is kept and published again later, in
    /// order, so the other nodes' clients get it without reconnecting.
    async fn publish_update(&mut self, update: Bytes) {
        if self.unpublished.is_empty() && self.publish(b'U', &update).await {
            return;
        }
        if self.unpublished.len() < MAX_UNPUBLISHED {
            self.unpublished.push(update);
        } else {
            self.unpublished_overflow = true;
        }
        self.publish_pending().await;
    }

    /// Publishes what could not be published before; past `MAX_UNPUBLISHED`
    /// updates, the whole document as one update instead.
    async fn publish_pending(&mut self) {
        if self.unpublished_overflow {
            let whole = self.document.diff(&Default::default());
            if !self.publish(b'U', &whole).await {
                return;
            }
            self.unpublished.clear();
            self.unpublished_overflow = false;
            return;
        }
        while let Some(update) = self.unpublished.first() {
            if !self.publish(b'U', update).await {
                return;
            }
            self.unpublished.remove(0);
        }
    }

    /// Publishes from a context that cannot wait.
    fn publish_later(&self, kind: u8, data: Vec<u8>) {
        let collab = self.collab.clone();
        let channel = self.channel.clone();
        tokio::spawn(async move {
            let payload = collab.payload(kind, &data);
            let _ = collab.broker.publish(&channel, payload).await;
        });
    }

    async fn unsubscribe(&self) {
        if let Err(e) = self.collab.broker.unsubscribe(&self.channel).await {
            tracing::warn!(error = %e, "unsubscribing a document channel failed");
        }
    }

    /// Starts a compaction when the log is long enough and none is running.
    fn maybe_compact(&mut self) {
        if self.compacting || self.logged < self.collab.limits.compact_updates {
            return;
        }
        self.compacting = true;
        self.logged = 0;
        let (collab, id, myself) = (self.collab.clone(), self.id.clone(), self.myself.clone());
        let appended_at_start = self.appended;
        tokio::spawn(async move {
            let snapshot_bytes = match compact(&collab, &id).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(error = %e, document = ?id, "compacting a document failed");
                    None
                }
            };
            if let Some(room) = myself.upgrade() {
                let _ = room
                    .send(Command::Compacted {
                        snapshot_bytes,
                        appended_at_start,
                    })
                    .await;
            }
        });
    }
}

/// Compacts a document's log as the Store holds it. Returns the snapshot's
/// size, or `None` if another node compacted first.
async fn compact(collab: &Collab, id: &DocumentId) -> Result<Option<usize>, StoreError> {
    let log = collab.store.document_log(id).await?;
    let Ok(snapshot) = restore(&log).0.snapshot() else {
        tracing::warn!(document = ?id, "pending updates cannot be encoded; the log is kept as it is");
        return Ok(None);
    };
    let replaced: Vec<i64> = log.updates.iter().map(|(id, _)| *id).collect();
    let compacted = collab
        .store
        .compact_document(
            id,
            log.version,
            &snapshot,
            &replaced,
            collab.limits.versions_kept,
        )
        .await?;
    Ok(compacted.then_some(snapshot.len()))
}

/// The document a stored log describes, and how many stored updates did not apply.
pub(super) fn restore(log: &DocumentLog) -> (Document, usize) {
    let parts = log
        .snapshot
        .iter()
        .map(|s| s.as_ref())
        .chain(log.updates.iter().map(|(_, u)| u.as_ref()));
    Document::restore(parts)
}

fn log_bytes(log: &DocumentLog) -> usize {
    log.snapshot.as_ref().map_or(0, Bytes::len)
        + log.updates.iter().map(|(_, u)| u.len()).sum::<usize>()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
