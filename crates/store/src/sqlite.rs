//! The embedded engine: one SQLite file in WAL mode, created on first start.
//! Here: opening it, its schema (migrations), its dialect (lists as JSON
//! arrays, one `INSERT` per message) and what its error codes mean. The
//! ports' SQL is in the concern modules, shared with PostgreSQL.
//!
//! Writes go through one connection (SQLite has one writer at a time anyway);
//! reads use a small pool, which WAL lets run beside the writer.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Pool;
use switchboard_core::{NewMessage, StoreError};

use crate::error::{store_error, Kind};
use crate::migrate::{self, Migration};
use crate::sql::{Engine, SqlStore, Statement};

const MIGRATIONS: &[Migration] = &[
    (
        1,
        "CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        content TEXT NOT NULL,
        client_msg_id TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX messages_by_workspace ON messages (workspace_id, id);
    CREATE TABLE memberships (
        user_id TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        PRIMARY KEY (user_id, workspace_id)
    );
    CREATE TABLE recovery_sessions (
        pid TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        workspaces TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX recovery_sessions_by_expiry ON recovery_sessions (expires_at);",
    ),
    (
        2,
        "CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        read INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX notifications_by_user ON notifications (user_id, id);",
    ),
    (
        3,
        "CREATE TABLE document_updates (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace_id TEXT NOT NULL,
        name TEXT NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX document_updates_by_document ON document_updates (workspace_id, name, id);
    CREATE TABLE document_snapshots (
        workspace_id TEXT NOT NULL,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (workspace_id, name)
    );",
    ),
    (
        4,
        "ALTER TABLE memberships ADD COLUMN role TEXT NOT NULL DEFAULT 'member';",
    ),
    (
        5,
        "ALTER TABLE document_updates ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE document_snapshots ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
    UPDATE document_updates SET created_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
    UPDATE document_snapshots SET updated_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
    CREATE TABLE document_versions (
        workspace_id TEXT NOT NULL,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        data BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (workspace_id, name, version)
    );",
    ),
];

/// The SQLite engine: a single-connection writer pool and a read-only pool.
pub(crate) struct Sqlite {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl Sqlite {
    /// Opens (creating if needed) the file of a `sqlite://path` URL and
    /// brings its schema up to date.
    pub(crate) async fn open(url: &str) -> Result<SqlStore<Self>, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(store_error)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(store_error)?;
        migrate::apply(&writer, MIGRATIONS).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(store_error)?;
        Ok(SqlStore {
            engine: Self { writer, reader },
        })
    }
}

#[async_trait]
impl Engine for Sqlite {
    type DB = sqlx::Sqlite;

    fn reader(&self) -> &Pool<sqlx::Sqlite> {
        &self.reader
    }

    fn writer(&self) -> &Pool<sqlx::Sqlite> {
        &self.writer
    }

    async fn insert_messages(&self, batch: &[NewMessage]) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.writer.begin().await.map_err(store_error)?;
        let mut ids = Vec::with_capacity(batch.len());
        for m in batch {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO messages (workspace_id, user_id, content, client_msg_id, created_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(&m.workspace_id)
            .bind(&m.user_id)
            .bind(&m.content)
            .bind(&m.client_msg_id)
            .bind(m.created_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
            ids.push(id);
        }
        tx.commit().await.map_err(store_error)?;
        Ok(ids)
    }

    fn in_list(column: &str, n: usize) -> String {
        format!("{column} IN (SELECT value FROM json_each(${n}))")
    }

    fn bind_texts(
        statement: Statement<sqlx::Sqlite>,
        list: &[String],
    ) -> Result<Statement<sqlx::Sqlite>, StoreError> {
        Ok(statement.bind(json_array(serde_json::to_string(list))?))
    }

    fn bind_ids(
        statement: Statement<sqlx::Sqlite>,
        list: &[i64],
    ) -> Result<Statement<sqlx::Sqlite>, StoreError> {
        Ok(statement.bind(json_array(serde_json::to_string(list))?))
    }

    /// A transaction reads one snapshot of a WAL database from its first read on.
    const SNAPSHOT_READ: Option<&'static str> = None;
}

/// A list serialized as a JSON array, for `json_each`.
fn json_array(serialized: serde_json::Result<String>) -> Result<String, StoreError> {
    serialized.map_err(|e| StoreError::Invalid {
        reason: "list parameter".into(),
        source: Some(Box::new(e)),
    })
}

/// What an SQLite (extended) result code means for the caller.
pub(crate) fn error_kind(code: i32) -> Kind {
    // https://www.sqlite.org/rescode.html: the primary code is the low byte.
    match code & 0xff {
        5 | 6 => Kind::Contention,             // SQLITE_BUSY, SQLITE_LOCKED
        7 | 10 | 13 | 15 => Kind::Unavailable, // NOMEM, IOERR, FULL, PROTOCOL
        19 => Kind::Constraint,                // SQLITE_CONSTRAINT
        20 | 25 => Kind::Invalid,              // SQLITE_MISMATCH, SQLITE_RANGE
        _ => Kind::Other,
    }
}
