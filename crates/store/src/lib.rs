//! Adapters for the core's store ports, on SQLite (the embedded default: one
//! file, WAL mode) and PostgreSQL (for many nodes). [`connect`] picks one from
//! a database URL and applies its migrations.
//!
//! One adapter shape serves both engines (see `sql.rs`): the ports are
//! implemented once, one module per concern (`messages`, `memberships`,
//! `recovery`, `notifications`, `documents`), and each engine module
//! (`sqlite`, `postgres`) holds only its connection, schema and the SQL that
//! differs. A new engine is a new engine module, a line in [`connect`] and one
//! in `error.rs`. One test suite (`tests/store.rs`) runs against both.

#![warn(missing_docs)]

mod documents;
mod error;
mod memberships;
mod messages;
mod migrate;
mod notifications;
mod postgres;
mod recovery;
mod sql;
mod sqlite;

use std::sync::Arc;

use switchboard_core::{Store, StoreError};

/// Opens the store a URL names: `sqlite://path` (created if missing) or
/// `postgres://...`, and brings its schema up to date.
///
/// Errors are [`StoreError::Invalid`] for a URL naming no supported engine
/// or malformed, and [`StoreError::Unavailable`] (transient) when the
/// database cannot be reached.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::Sqlite::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::Postgres::open(url).await?))
    } else {
        Err(StoreError::invalid(format!(
            "database URL {url:?}: use sqlite://PATH or postgres://..."
        )))
    }
}
