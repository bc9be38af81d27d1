//! The Presence port: who is online, per workspace, with expiring entries.
//! Adapters: `switchboard-broker` (in-process; Redis sorted sets).
//!
//! Presence shares [`BrokerError`] with the Broker port: every adapter keeps
//! presence in the broker it fans out through (same connections, same
//! failures), so one error type, with the same `is_transient`, serves both.

use async_trait::async_trait;

use super::broker::BrokerError;

/// One connection's presence in a workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The connection (socket id): a user with several tabs has several entries.
    pub connection: String,
    /// The user the connection belongs to.
    pub user_id: String,
    /// The user's display name, if known.
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
