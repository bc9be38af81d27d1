//! The scale-out store: PostgreSQL, shared by every node.
//!
//! Message ids come from one `BIGSERIAL` sequence, so they increase across all
//! workspaces. Migrations run under an advisory lock, so nodes starting
//! together do not race on them.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::{PgPool, PgPoolOptions};
use switchboard_core::{
    DocumentId, DocumentLog, Message, NewMessage, NewNotification, Notification, RecoverySession,
    Store, StoreError, Window,
};

use crate::migrate::{self, Migration};
use crate::rows::{messages, notifications, MESSAGE_COLUMNS, NOTIFICATION_COLUMNS};
use crate::store_error;

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
];

/// Key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x5357_4254_4348; // "SWBTCH"

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn open(url: &str) -> Result<Self, StoreError> {
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
        Ok(Self { pool })
    }
}

#[async_trait]
impl Store for PostgresStore {
    /// One statement, one round trip, one implicit transaction for the whole
    /// batch: a transaction with one `INSERT` per message took `n + 2` round
    /// trips, and most of the writer's CPU at 1,000 messages/s.
    async fn insert_messages(&self, batch: &[NewMessage]) -> Result<Vec<Message>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
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
        if ids.len() != batch.len() {
            return Err(StoreError(format!(
                "inserted {} messages, got {} ids",
                batch.len(),
                ids.len()
            )));
        }
        // Ids are drawn in the order the rows are inserted (`ORDER BY n`), so the
        // sorted ids pair with the batch in order whatever order RETURNING uses.
        ids.sort_unstable();
        Ok(ids
            .into_iter()
            .zip(batch)
            .map(|(id, m)| crate::stored(id, m))
            .collect())
    }

    async fn messages(&self, workspace: &str, window: Window) -> Result<Vec<Message>, StoreError> {
        let order = if window.from_newest() { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE workspace_id = $1 AND id > $2 AND id < $3 ORDER BY id {order} LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace)
            .bind(window.after.unwrap_or(0))
            .bind(window.before.unwrap_or(i64::MAX))
            .bind(i64::from(window.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let mut found = messages(rows)?;
        if window.from_newest() {
            found.reverse();
        }
        Ok(found)
    }

    async fn max_message_id(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM messages")
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)
    }

    async fn messages_since(
        &self,
        workspaces: &[String],
        after: i64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE workspace_id = ANY($1) AND id > $2 ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspaces)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        messages(rows)
    }

    async fn is_member(&self, user: &str, workspace: &str) -> Result<bool, StoreError> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM memberships WHERE user_id = $1 AND workspace_id = $2",
        )
        .bind(user)
        .bind(workspace)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(found.is_some())
    }

    async fn add_member(&self, user: &str, workspace: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO memberships (user_id, workspace_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(user)
            .bind(workspace)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn remove_member(&self, user: &str, workspace: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM memberships WHERE user_id = $1 AND workspace_id = $2")
            .bind(user)
            .bind(workspace)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn save_recovery(&self, pid: &str, session: &RecoverySession) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query("DELETE FROM recovery_sessions WHERE expires_at < $1")
            .bind(switchboard_core::time::now_millis())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        sqlx::query(
            "INSERT INTO recovery_sessions (pid, user_id, workspaces, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (pid) DO UPDATE SET user_id = excluded.user_id,
                workspaces = excluded.workspaces, expires_at = excluded.expires_at",
        )
        .bind(pid)
        .bind(&session.user_id)
        .bind(crate::encode_workspaces(&session.workspaces))
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }

    async fn take_recovery(
        &self,
        pid: &str,
        now: i64,
    ) -> Result<Option<RecoverySession>, StoreError> {
        let row: Option<(String, String, i64)> =
            sqlx::query_as("DELETE FROM recovery_sessions WHERE pid = $1 RETURNING user_id, workspaces, expires_at")
                .bind(pid)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(crate::live_session(row, now))
    }

    async fn insert_notification(&self, n: &NewNotification) -> Result<Notification, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO notifications (user_id, kind, data, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(&n.user_id)
        .bind(&n.kind)
        .bind(n.data.to_string())
        .bind(n.created_at)
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(Notification {
            id,
            user_id: n.user_id.clone(),
            kind: n.kind.clone(),
            data: n.data.clone(),
            created_at: n.created_at,
            read: false,
        })
    }

    async fn notifications_after(
        &self,
        user: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        notifications(rows)
    }

    async fn notifications(
        &self,
        user: &str,
        unread_only: bool,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let unread = if unread_only { " AND read = FALSE" } else { "" };
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE user_id = $1 AND id < $2{unread}
             ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        notifications(rows)
    }

    async fn mark_read(&self, user: &str, id: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE notifications SET read = TRUE WHERE user_id = $1 AND id = $2")
                .bind(user)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_all_read(&self, user: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE notifications SET read = TRUE WHERE user_id = $1 AND read = FALSE")
            .bind(user)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn append_document_updates(
        &self,
        document: &DocumentId,
        updates: &[Bytes],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        for update in updates {
            sqlx::query(
                "INSERT INTO document_updates (workspace_id, name, data) VALUES ($1, $2, $3)",
            )
            .bind(&document.workspace)
            .bind(&document.name)
            .bind(update.as_ref())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    async fn document_log(&self, document: &DocumentId) -> Result<DocumentLog, StoreError> {
        // REPEATABLE READ: the snapshot and the log are read from one moment.
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let snapshot: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT version, data FROM document_snapshots WHERE workspace_id = $1 AND name = $2",
        )
        .bind(&document.workspace)
        .bind(&document.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let updates: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT id, data FROM document_updates WHERE workspace_id = $1 AND name = $2 ORDER BY id",
        )
        .bind(&document.workspace)
        .bind(&document.name)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(crate::rows::document_log(snapshot, updates))
    }

    async fn compact_document(
        &self,
        document: &DocumentId,
        log_version: i64,
        snapshot: &[u8],
        replaced: &[i64],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // The conditional upsert takes the snapshot row's lock: of two nodes
        // compacting at once, the second sees the new version and writes nothing.
        let written = sqlx::query(
            "INSERT INTO document_snapshots (workspace_id, name, version, data) VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id, name) DO UPDATE SET version = excluded.version, data = excluded.data
             WHERE document_snapshots.version = $5",
        )
        .bind(&document.workspace)
        .bind(&document.name)
        .bind(log_version + 1)
        .bind(snapshot)
        .bind(log_version)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if written == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM document_updates WHERE id = ANY($1)")
            .bind(replaced)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(true)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
