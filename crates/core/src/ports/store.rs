//! The Store ports: durable state, one small trait per concern —
//! [`MessageStore`], [`MembershipStore`], [`RecoveryStore`],
//! [`NotificationStore`], [`DocumentStore`], [`DocumentVersions`] and
//! [`StoreHealth`] — and
//! [`Store`], every one of them at once, which is what the server holds
//! (`Arc<dyn Store>`). Also the values they exchange and [`StoreError`].
//!
//! No SQL and no database driver here: adapters are in `switchboard-store`.
//! Calling a port method on an `Arc<dyn Store>` needs that port's trait in
//! scope.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::auth::Role;
use crate::chat::{Message, NewMessage, Window};
use crate::notify::{NewNotification, Notification};

/// The boxed cause of a [`StoreError`] (the core does not know the driver's
/// error types).
type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store call failed, sorted by what the caller can do about it:
/// [`StoreError::is_transient`] errors may go away if the same call is made
/// again later; the others will not without a change (of data, schema or
/// configuration).
///
/// The message includes the cause's own message (the server logs errors by
/// their `Display`), and [`source`](std::error::Error::source) gives the cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or cannot answer right now: connection
    /// refused or lost, I/O error, pool timed out, server shutting down or out
    /// of resources. Transient.
    #[error("store unavailable: {source}")]
    Unavailable {
        /// The driver's error.
        #[source]
        source: Source,
    },
    /// A concurrent transaction got in the way: serialization failure,
    /// deadlock, lock not available, SQLite busy. Transient: the same call
    /// may succeed when made again.
    #[error("store contention: {source}")]
    Contention {
        /// The driver's error.
        #[source]
        source: Source,
    },
    /// The database refused the change: a uniqueness, foreign key, not-null
    /// or check constraint. Not transient.
    #[error("store constraint violated: {source}")]
    Constraint {
        /// The driver's error.
        #[source]
        source: Source,
    },
    /// Bad input, bad data or bad configuration: an unsupported or malformed
    /// database URL, a row that does not decode, a value that does not
    /// encode, a result that breaks the adapter's expectations. Not transient.
    #[error("store: invalid {reason}{}", Cause(.source))]
    Invalid {
        /// What is invalid.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Source>,
    },
    /// Any other failure (e.g. SQL the database rejects, a corrupt file).
    /// Not transient.
    #[error("store failed: {source}")]
    Other {
        /// The driver's error.
        #[source]
        source: Source,
    },
}

impl StoreError {
    /// A [`StoreError::Invalid`] error without an underlying error.
    pub fn invalid(reason: impl Into<String>) -> Self {
        Self::Invalid {
            reason: reason.into(),
            source: None,
        }
    }

    /// Whether the same call may succeed later without any change on this
    /// side: [`StoreError::Unavailable`] and [`StoreError::Contention`].
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Contention { .. })
    }
}

/// `: <cause>` when there is a cause.
struct Cause<'a>(&'a Option<Source>);

impl fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(source) => write!(f, ": {source}"),
            None => Ok(()),
        }
    }
}

/// Chat messages: ids, history windows and replay.
#[async_trait]
pub trait MessageStore: Send + Sync {
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
}

/// Who belongs to which workspace.
#[async_trait]
pub trait MembershipStore: Send + Sync {
    /// The role of `user`'s membership of `workspace`, if it has one.
    async fn member_role(&self, user: &str, workspace: &str) -> Result<Option<Role>, StoreError>;
    /// Makes `user` a member of `workspace` with `role` (the role changes if
    /// it is one already).
    async fn add_member(&self, user: &str, workspace: &str, role: Role) -> Result<(), StoreError>;
    /// Removes `user` from `workspace` (nothing if it is not a member).
    async fn remove_member(&self, user: &str, workspace: &str) -> Result<(), StoreError>;
}

/// What a disconnected socket left behind for connection-state recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoverySession {
    /// Whose socket it was.
    pub user_id: String,
    /// The workspaces it had joined.
    pub workspaces: Vec<String>,
    /// Milliseconds since the epoch after which the session can no longer be recovered.
    pub expires_at: i64,
}

/// Sessions kept for connection-state recovery, by Socket.IO private id.
#[async_trait]
pub trait RecoveryStore: Send + Sync {
    /// Saves (or replaces) the session of `pid`, dropping expired ones on the way.
    async fn save_recovery(&self, pid: &str, session: &RecoverySession) -> Result<(), StoreError>;
    /// Removes and returns a recovery session, if it exists and has not expired at `now`.
    async fn take_recovery(
        &self,
        pid: &str,
        now: i64,
    ) -> Result<Option<RecoverySession>, StoreError>;
}

/// Users' notifications and their read state.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Stores a notification, unread, and returns it with its id.
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
    /// Marks all of the user's notifications read.
    async fn mark_all_read(&self, user: &str) -> Result<(), StoreError>;
}

/// A collaborative document: a name within a workspace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DocumentId {
    /// The workspace it belongs to.
    pub workspace: String,
    /// Its name within the workspace.
    pub name: String,
}

/// A document as stored: an optional snapshot plus the updates logged since.
/// Applying the snapshot and then every update, in any order, gives the
/// document (Yjs updates commute).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocumentLog {
    /// The last compaction's result, if there was one.
    pub snapshot: Option<Bytes>,
    /// Bumped by every compaction; 0 before the first.
    pub version: i64,
    /// `(id, update)`, oldest first.
    pub updates: Vec<(i64, Bytes)>,
}

/// A document as its workspace's listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentSummary {
    /// Its name within the workspace.
    pub name: String,
    /// Bytes stored: the snapshot plus the updates logged since (what counts
    /// against the document size limit; kept versions do not).
    pub bytes: i64,
    /// When an update to it was last logged, in milliseconds since the epoch.
    pub updated_at: i64,
}

/// A version of a document kept at a compaction: the snapshot it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentVersion {
    /// The compaction's number ([`DocumentLog::version`] after it): 1, 2, ...
    pub version: i64,
    /// Size of the snapshot, in bytes.
    pub bytes: i64,
    /// When the compaction wrote it, in milliseconds since the epoch.
    pub created_at: i64,
}

/// Collaborative documents: an append-only log of updates, compacted now and
/// then into a snapshot.
#[async_trait]
pub trait DocumentStore: Send + Sync {
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
    /// the snapshot is still at `log_version` and every replaced update is
    /// still there. The snapshot is kept as version `log_version + 1` too, with
    /// at most `keep_versions` of the newest versions (0 keeps none). False
    /// when another writer compacted first or the document was deleted
    /// meanwhile, in which case nothing changed.
    async fn compact_document(
        &self,
        document: &DocumentId,
        log_version: i64,
        snapshot: &[u8],
        replaced: &[i64],
        keep_versions: u32,
    ) -> Result<bool, StoreError>;
    /// The documents of a workspace whose names sort after `after` (all when
    /// `None`), by name, at most `limit`.
    async fn documents(
        &self,
        workspace: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DocumentSummary>, StoreError>;
    /// Deletes a document: its log, snapshot and kept versions, in one
    /// transaction. False when it had none of them.
    async fn delete_document(&self, document: &DocumentId) -> Result<bool, StoreError>;
}

/// The versions of documents kept at compaction (see
/// [`DocumentStore::compact_document`]).
#[async_trait]
pub trait DocumentVersions: Send + Sync {
    /// A document's kept versions, newest first.
    async fn document_versions(
        &self,
        document: &DocumentId,
    ) -> Result<Vec<DocumentVersion>, StoreError>;
    /// One kept version's snapshot (a Yjs update), if it is kept.
    async fn document_version(
        &self,
        document: &DocumentId,
        version: i64,
    ) -> Result<Option<Bytes>, StoreError>;
}

/// Whether the store is up, for readiness checks.
#[async_trait]
pub trait StoreHealth: Send + Sync {
    /// Reachable and answering.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Durable state: every store port at once. Implemented for any type that
/// implements them all; what the server holds as `Arc<dyn Store>`.
pub trait Store:
    MessageStore
    + MembershipStore
    + RecoveryStore
    + NotificationStore
    + DocumentStore
    + DocumentVersions
    + StoreHealth
    + 'static
{
}

impl<T> Store for T where
    T: MessageStore
        + MembershipStore
        + RecoveryStore
        + NotificationStore
        + DocumentStore
        + DocumentVersions
        + StoreHealth
        + 'static
{
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailability_and_contention_are_transient() {
        let io = || Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let unavailable = StoreError::Unavailable { source: io() };
        assert!(unavailable.is_transient());
        assert!(std::error::Error::source(&unavailable).is_some());
        assert!(unavailable.to_string().starts_with("store unavailable: "));
        assert!(StoreError::Contention { source: io() }.is_transient());
        assert!(!StoreError::Constraint { source: io() }.is_transient());
        assert!(!StoreError::Other { source: io() }.is_transient());
        let invalid = StoreError::invalid("database URL \"x\"");
        assert!(!invalid.is_transient());
        assert_eq!(invalid.to_string(), "store: invalid database URL \"x\"");
    }
}
