//! Adapters for the core's [`Store`] port: [`SqliteStore`] (the embedded
//! default: one file, WAL mode) and [`PostgresStore`] (for many nodes).
//! [`connect`] picks one from a database URL and applies its migrations.
//!
//! The SQL of each engine lives beside its adapter; the two are kept alike so
//! that one test suite (`tests/store.rs`) runs against both.

mod migrate;
mod postgres;
mod rows;
mod sqlite;

use std::sync::Arc;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
use switchboard_core::{Store, StoreError};

/// Opens the store a URL names: `sqlite://path` (created if missing) or
/// `postgres://...`, and brings its schema up to date.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError(format!(
            "unsupported database URL {url:?}: use sqlite://PATH or postgres://..."
        )))
    }
}

pub(crate) fn store_error(e: sqlx::Error) -> StoreError {
    StoreError(e.to_string())
}

/// A stored message: the new one with its id.
pub(crate) fn stored(id: i64, m: &switchboard_core::NewMessage) -> switchboard_core::Message {
    switchboard_core::Message {
        id,
        workspace_id: m.workspace_id.clone(),
        user_id: m.user_id.clone(),
        content: m.content.clone(),
        client_msg_id: m.client_msg_id.clone(),
        created_at: m.created_at,
    }
}

/// Workspaces of a recovery session, stored as one text column (a JSON array).
pub(crate) fn encode_workspaces(workspaces: &[String]) -> String {
    serde_json::to_string(workspaces).unwrap_or_else(|_| "[]".to_owned())
}

pub(crate) fn decode_workspaces(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// A taken recovery row, if it had not expired.
pub(crate) fn live_session(
    row: Option<(String, String, i64)>,
    now: i64,
) -> Option<switchboard_core::RecoverySession> {
    let (user_id, workspaces, expires_at) = row?;
    (expires_at > now).then(|| switchboard_core::RecoverySession {
        user_id,
        workspaces: decode_workspaces(&workspaces),
        expires_at,
    })
}
