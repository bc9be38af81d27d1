//! The ports: the traits through which the core reaches storage and other
//! nodes. Adapters: `switchboard-store` (SQLite, PostgreSQL) and
//! `switchboard-broker` (in-process; Redis pub/sub for many nodes).

use async_trait::async_trait;
use bytes::Bytes;

use crate::chat::{Message, NewMessage, Window};
use crate::notify::{NewNotification, Notification};

#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

#[derive(Debug, thiserror::Error)]
#[error("broker: {0}")]
pub struct BrokerError(pub String);

/// What a disconnected socket left behind for connection-state recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoverySession {
    pub user_id: String,
    pub workspaces: Vec<String>,
    /// Milliseconds since the epoch after which the session can no longer be recovered.
    pub expires_at: i64,
}

/// Durable state: messages, memberships, recovery sessions.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores messages in order, in one transaction, and returns them with their ids.
    async fn insert_messages(&self, batch: &[NewMessage]) -> Result<Vec<Message>, StoreError>;

    /// Messages of a workspace within a window, oldest first.
    async fn messages(&self, workspace: &str, window: Window) -> Result<Vec<Message>, StoreError>;

    /// The highest message id stored so far (0 when there is none).
    async fn max_message_id(&self) -> Result<i64, StoreError>;

    /// Messages of any of `workspaces` with an id above `after`, oldest first, at most `limit`.
    async fn messages_since(
        &self,
        workspaces: &[String],
        after: i64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError>;

    async fn is_member(&self, user: &str, workspace: &str) -> Result<bool, StoreError>;
    async fn add_member(&self, user: &str, workspace: &str) -> Result<(), StoreError>;
    async fn remove_member(&self, user: &str, workspace: &str) -> Result<(), StoreError>;

    async fn save_recovery(&self, pid: &str, session: &RecoverySession) -> Result<(), StoreError>;
    /// Removes and returns a recovery session, if it exists and has not expired at `now`.
    async fn take_recovery(
        &self,
        pid: &str,
        now: i64,
    ) -> Result<Option<RecoverySession>, StoreError>;

    async fn insert_notification(
        &self,
        notification: &NewNotification,
    ) -> Result<Notification, StoreError>;
    /// A user's notifications with an id above `after`, oldest first, at most `limit`.
    async fn notifications_after(
        &self,
        user: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError>;
    /// A user's notifications, newest first: only unread ones if asked, only ids below `before` if given.
    async fn notifications(
        &self,
        user: &str,
        unread_only: bool,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError>;
    /// Marks one of the user's notifications read; false if the user has no such notification.
    async fn mark_read(&self, user: &str, id: i64) -> Result<bool, StoreError>;
    async fn mark_all_read(&self, user: &str) -> Result<(), StoreError>;

    /// Appends updates to a document's log, in order, in one transaction.
    async fn append_document_updates(
        &self,
        document: &DocumentId,
        updates: &[Bytes],
    ) -> Result<(), StoreError>;
    /// A document's last snapshot and the updates logged since, oldest first.
    async fn document_log(&self, document: &DocumentId) -> Result<DocumentLog, StoreError>;
    /// Replaces a document's snapshot with `snapshot` and deletes the logged
    /// updates `replaced` (which the snapshot includes), in one transaction, if
    /// the snapshot is still at `log_version`. False when another writer
    /// compacted first, in which case nothing changed.
    async fn compact_document(
        &self,
        document: &DocumentId,
        log_version: i64,
        snapshot: &[u8],
        replaced: &[i64],
    ) -> Result<bool, StoreError>;

    /// Reachable and answering.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A collaborative document: a name within a workspace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DocumentId {
    pub workspace: String,
    pub name: String,
}

/// A document as stored: an optional snapshot plus the updates logged since.
/// Applying the snapshot and then every update, in any order, gives the
/// document (Yjs updates commute).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocumentLog {
    pub snapshot: Option<Bytes>,
    /// Bumped by every compaction; 0 before the first.
    pub version: i64,
    /// `(id, update)`, oldest first.
    pub updates: Vec<(i64, Bytes)>,
}

/// A payload that arrived on a channel this node subscribed to.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub channel: String,
    pub payload: Bytes,
}

/// The channel of a delivery that says the broker lost its subscriptions and
/// has them again: whatever was published in between was missed. Listeners
/// that must not miss anything catch up from the Store when they see it.
/// No payload. (Channel names of the application never start with a NUL.)
pub const RESUBSCRIBED_CHANNEL: &str = "\0resubscribed";

/// Called for every delivery; must not block.
pub type DeliveryHandler = std::sync::Arc<dyn Fn(Delivery) + Send + Sync>;

/// Fan-out between nodes. A node subscribes to the channels it has local
/// listeners for; a publish reaches every subscribed node, this one included.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BrokerError>;
    async fn subscribe(&self, channel: &str) -> Result<(), BrokerError>;
    async fn unsubscribe(&self, channel: &str) -> Result<(), BrokerError>;
    /// Reachable and answering.
    async fn ping(&self) -> Result<(), BrokerError>;
}

/// One connection's presence in a workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The connection (socket id): a user with several tabs has several entries.
    pub connection: String,
    pub user_id: String,
    pub name: Option<String>,
}

/// Who is online, per workspace, with entries that expire unless refreshed.
/// Shaped so that a Redis adapter can keep one sorted set per workspace scored
/// by expiry: every call names its workspace, none scans the keyspace.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Adds or refreshes an entry until `expires_at` (ms since the epoch).
    /// True if the entry's user had no live entry in the workspace before.
    async fn join(
        &self,
        workspace: &str,
        entry: &PresenceEntry,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, BrokerError>;
    /// Removes a connection's entry. Returns its user if that user has no entry left.
    async fn leave(
        &self,
        workspace: &str,
        connection: &str,
        now: i64,
    ) -> Result<Option<String>, BrokerError>;
    /// The users with a live entry, one per user, in order of user id.
    async fn users(
        &self,
        workspace: &str,
        now: i64,
    ) -> Result<Vec<(String, Option<String>)>, BrokerError>;
    /// Drops the entries that expired by `now`; returns `(workspace, user)` for
    /// every user left with no entry.
    async fn expire(&self, now: i64) -> Result<Vec<(String, String)>, BrokerError>;
}
