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

    /// Reachable and answering.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A payload that arrived on a channel this node subscribed to.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub channel: String,
    pub payload: Bytes,
}

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
