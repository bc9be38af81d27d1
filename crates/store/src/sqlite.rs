//! The embedded store: one SQLite file in WAL mode, created on first start.
//!
//! Writes go through one connection (SQLite has one writer at a time anyway);
//! reads use a small pool, which WAL lets run beside the writer.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
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
];

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the file of a `sqlite://path` URL.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
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
        Ok(Self { writer, reader })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_messages(&self, batch: &[NewMessage]) -> Result<Vec<Message>, StoreError> {
        let mut tx = self.writer.begin().await.map_err(store_error)?;
        let mut stored = Vec::with_capacity(batch.len());
        for m in batch {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO messages (workspace_id, user_id, content, client_msg_id, created_at)
                 VALUES (?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(&m.workspace_id)
            .bind(&m.user_id)
            .bind(&m.content)
            .bind(&m.client_msg_id)
            .bind(m.created_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
            stored.push(crate::stored(id, m));
        }
        tx.commit().await.map_err(store_error)?;
        Ok(stored)
    }

    async fn messages(&self, workspace: &str, window: Window) -> Result<Vec<Message>, StoreError> {
        let before = window.before.unwrap_or(i64::MAX);
        let after = window.after.unwrap_or(0);
        let order = if window.from_newest() { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE workspace_id = ? AND id > ? AND id < ? ORDER BY id {order} LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace)
            .bind(after)
            .bind(before)
            .bind(i64::from(window.limit))
            .fetch_all(&self.reader)
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
            .fetch_one(&self.writer)
            .await
            .map_err(store_error)
    }

    async fn messages_since(
        &self,
        workspaces: &[String],
        after: i64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        if workspaces.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = vec!["?"; workspaces.len()].join(", ");
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE workspace_id IN ({placeholders}) AND id > ? ORDER BY id LIMIT ?"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for w in workspaces {
            query = query.bind(w);
        }
        let rows = query
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(store_error)?;
        messages(rows)
    }

    async fn is_member(&self, user: &str, workspace: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM memberships WHERE user_id = ? AND workspace_id = ?")
                .bind(user)
                .bind(workspace)
                .fetch_optional(&self.reader)
                .await
                .map_err(store_error)?;
        Ok(found.is_some())
    }

    async fn add_member(&self, user: &str, workspace: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO memberships (user_id, workspace_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(user)
        .bind(workspace)
        .execute(&self.writer)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn remove_member(&self, user: &str, workspace: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM memberships WHERE user_id = ? AND workspace_id = ?")
            .bind(user)
            .bind(workspace)
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn save_recovery(&self, pid: &str, session: &RecoverySession) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await.map_err(store_error)?;
        sqlx::query("DELETE FROM recovery_sessions WHERE expires_at < ?")
            .bind(switchboard_core::time::now_millis())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        sqlx::query(
            "INSERT INTO recovery_sessions (pid, user_id, workspaces, expires_at) VALUES (?, ?, ?, ?)
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
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "DELETE FROM recovery_sessions WHERE pid = ? RETURNING user_id, workspaces, expires_at",
        )
        .bind(pid)
        .fetch_optional(&self.writer)
        .await
        .map_err(store_error)?;
        Ok(crate::live_session(row, now))
    }

    async fn insert_notification(&self, n: &NewNotification) -> Result<Notification, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO notifications (user_id, kind, data, created_at) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(&n.user_id)
        .bind(&n.kind)
        .bind(n.data.to_string())
        .bind(n.created_at)
        .fetch_one(&self.writer)
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
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
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
        let unread = if unread_only { " AND read = 0" } else { "" };
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE user_id = ? AND id < ?{unread}
             ORDER BY id DESC LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(store_error)?;
        notifications(rows)
    }

    async fn mark_read(&self, user: &str, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE notifications SET read = 1 WHERE user_id = ? AND id = ?")
            .bind(user)
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_all_read(&self, user: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE notifications SET read = 1 WHERE user_id = ? AND read = 0")
            .bind(user)
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn append_document_updates(
        &self,
        document: &DocumentId,
        updates: &[Bytes],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await.map_err(store_error)?;
        for update in updates {
            sqlx::query("INSERT INTO document_updates (workspace_id, name, data) VALUES (?, ?, ?)")
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
        // One read transaction, so the snapshot and the log are of one moment.
        let mut tx = self.reader.begin().await.map_err(store_error)?;
        let snapshot: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT version, data FROM document_snapshots WHERE workspace_id = ? AND name = ?",
        )
        .bind(&document.workspace)
        .bind(&document.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let updates: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT id, data FROM document_updates WHERE workspace_id = ? AND name = ? ORDER BY id",
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
        let mut tx = self.writer.begin().await.map_err(store_error)?;
        let written = sqlx::query(
            "INSERT INTO document_snapshots (workspace_id, name, version, data) VALUES (?, ?, ?, ?)
             ON CONFLICT (workspace_id, name) DO UPDATE SET version = excluded.version, data = excluded.data
             WHERE document_snapshots.version = ?",
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
        let ids = serde_json::to_string(replaced).map_err(|e| StoreError(e.to_string()))?;
        sqlx::query("DELETE FROM document_updates WHERE id IN (SELECT value FROM json_each(?))")
            .bind(ids)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(true)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
