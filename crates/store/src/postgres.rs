//! The scale-out engine: PostgreSQL, shared by every node. Here: opening it,
//! its schema (migrations, run under an advisory lock so that nodes starting
//! together do not race on them), its dialect (arrays for lists, one `UNNEST`
//! statement per message batch) and what its SQLSTATEs mean. The ports' SQL
//! is in the concern modules, shared with SQLite.
//!
//! Message ids come from one `BIGSERIAL` sequence, so they increase across all
//! workspaces.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Pool;
use switchboard_core::{NewMessage, StoreError};

use crate::error::{store_error, Kind};
use crate::migrate::{self, Migration};
use crate::sql::{Engine, SqlStore, Statement};

const MIGRATIONS: &[Migration] = &[
    (
        1,
        "CREATE TABLE messages (
        id BIGSERIAL PRIMARY KEY,
        workspace_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        content TEXT NOT NULL,
        client_msg_id TEXT,
        created_at BIGINT NOT NULL
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
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX recovery_sessions_by_expiry ON recovery_sessions (expires_at);",
    ),
    (
        2,
        "CREATE TABLE notifications (
        id BIGSERIAL PRIMARY KEY,
        user_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        read BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX notifications_by_user ON notifications (user_id, id);",
    ),
    (
        3,
        "CREATE TABLE document_updates (
        id BIGSERIAL PRIMARY KEY,
        workspace_id TEXT NOT NULL,
        name TEXT NOT NULL,
        data BYTEA NOT NULL
    );
    CREATE INDEX document_updates_by_document ON document_updates (workspace_id, name, id);
    CREATE TABLE document_snapshots (
        workspace_id TEXT NOT NULL,
        name TEXT NOT NULL,
        version BIGINT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (workspace_id, name)
    );",
    ),
    (
        4,
        "ALTER TABLE memberships ADD COLUMN role TEXT NOT NULL DEFAULT 'member';",
    ),
    (
        5,
        "ALTER TABLE document_updates ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE document_snapshots ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
    UPDATE document_updates SET created_at = CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT);
    UPDATE document_snapshots SET updated_at = CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT);
    CREATE TABLE document_versions (
        workspace_id TEXT NOT NULL,
        name TEXT NOT NULL,
        version BIGINT NOT NULL,
        data BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (workspace_id, name, version)
    );",
    ),
];

/// Key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x5357_4254_4348; // "SWBTCH"

/// The PostgreSQL engine: one pool for reads and writes.
pub(crate) struct Postgres {
    pool: PgPool,
}

impl Postgres {
    /// Connects to a `postgres://` URL and brings the schema up to date.
    pub(crate) async fn open(url: &str) -> Result<SqlStore<Self>, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(store_error)?;
        let mut lock = pool.acquire().await.map_err(store_error)?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *lock)
            .await
            .map_err(store_error)?;
        let migrated = migrate::apply(&pool, MIGRATIONS).await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *lock)
            .await
            .map_err(store_error)?;
        migrated?;
        Ok(SqlStore {
            engine: Self { pool },
        })
    }
}

#[async_trait]
impl Engine for Postgres {
    type DB = sqlx::Postgres;

    fn reader(&self) -> &Pool<sqlx::Postgres> {
        &self.pool
    }

    fn writer(&self) -> &Pool<sqlx::Postgres> {
        &self.pool
    }

    /// One statement, one round trip, one implicit transaction for the whole
    /// batch: a transaction with one `INSERT` per message took `n + 2` round
    /// trips, and most of the writer's CPU at 1,000 messages/s.
    async fn insert_messages(&self, batch: &[NewMessage]) -> Result<Vec<i64>, StoreError> {
        let column = |f: fn(&NewMessage) -> &str| batch.iter().map(f).collect::<Vec<_>>();
        let client_ids: Vec<Option<&str>> =
            batch.iter().map(|m| m.client_msg_id.as_deref()).collect();
        let created: Vec<i64> = batch.iter().map(|m| m.created_at).collect();
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO messages (workspace_id, user_id, content, client_msg_id, created_at)
             SELECT w, u, c, k, t
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
                  WITH ORDINALITY AS batch(w, u, c, k, t, n)
             ORDER BY n
             RETURNING id",
        )
        .bind(column(|m| &m.workspace_id))
        .bind(column(|m| &m.user_id))
        .bind(column(|m| &m.content))
        .bind(client_ids)
        .bind(created)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        // Ids are drawn in the order the rows are inserted (`ORDER BY n`), so the
        // sorted ids pair with the batch in order whatever order RETURNING uses.
        ids.sort_unstable();
        Ok(ids)
    }

    fn in_list(column: &str, n: usize) -> String {
        format!("{column} = ANY(${n})")
    }

    fn bind_texts(
        statement: Statement<sqlx::Postgres>,
        list: &[String],
    ) -> Result<Statement<sqlx::Postgres>, StoreError> {
        Ok(statement.bind(list))
    }

    fn bind_ids(
        statement: Statement<sqlx::Postgres>,
        list: &[i64],
    ) -> Result<Statement<sqlx::Postgres>, StoreError> {
        Ok(statement.bind(list))
    }

    /// READ COMMITTED would let each statement see a different moment.
    const SNAPSHOT_READ: Option<&'static str> =
        Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY");
}

/// What a SQLSTATE means for the caller
/// (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
pub(crate) fn error_kind(sqlstate: &str) -> Kind {
    match sqlstate {
        // serialization_failure, deadlock_detected, lock_not_available
        "40001" | "40P01" | "55P03" => Kind::Contention,
        // admin_shutdown, crash_shutdown, cannot_connect_now, query_canceled
        // (statement timeout), system_error, io_error
        "57P01" | "57P02" | "57P03" | "57014" | "58000" | "58030" => Kind::Unavailable,
        // connection_exception, insufficient_resources (too many connections,
        // disk full, out of memory)
        s if s.starts_with("08") || s.starts_with("53") => Kind::Unavailable,
        s if s.starts_with("23") => Kind::Constraint,
        s if s.starts_with("22") => Kind::Invalid,
        _ => Kind::Other,
    }
}
