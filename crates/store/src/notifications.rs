//! The [`NotificationStore`] port on every engine: users' notifications, their
//! data as JSON text, and their read state (`read` is a boolean on PostgreSQL
//! and 0/1 on SQLite, where `TRUE` and `FALSE` are 1 and 0). The SQL is the
//! same in both dialects.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, Row, Type};
use switchboard_core::{NewNotification, Notification, NotificationStore, StoreError};

use crate::error::store_error;
use crate::sql::{Engine, SqlStore};

/// The columns every notification query selects, in the order [`notification`] reads them.
const COLUMNS: &str = "id, user_id, kind, data, created_at, read";

#[async_trait]
impl<E> NotificationStore for SqlStore<E>
where
    E: Engine,
    for<'c> &'c mut <E::DB as Database>::Connection: Executor<'c, Database = E::DB>,
    <E::DB as Database>::Arguments: sqlx::IntoArguments<E::DB>,
    usize: ColumnIndex<<E::DB as Database>::Row>,
    for<'q> &'q str: Encode<'q, E::DB> + Type<E::DB>,
    for<'q> i64: Encode<'q, E::DB> + Decode<'q, E::DB> + Type<E::DB>,
    for<'r> String: Decode<'r, E::DB> + Type<E::DB>,
    for<'r> bool: Decode<'r, E::DB> + Type<E::DB>,
{
    async fn insert_notification(&self, n: &NewNotification) -> Result<Notification, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO notifications (user_id, kind, data, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(n.user_id.as_str())
        .bind(n.kind.as_str())
        .bind(n.data.to_string().as_str())
        .bind(n.created_at)
        .fetch_one(self.engine.writer())
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
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(self.engine.reader())
            .await
            .map_err(store_error)?;
        notifications(&rows)
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
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND id < $2{unread}
             ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(self.engine.reader())
            .await
            .map_err(store_error)?;
        notifications(&rows)
    }

    async fn mark_read(&self, user: &str, id: i64) -> Result<bool, StoreError> {
        let marked: Option<i64> = sqlx::query_scalar(
            "UPDATE notifications SET read = TRUE WHERE user_id = $1 AND id = $2 RETURNING id",
        )
        .bind(user)
        .bind(id)
        .fetch_optional(self.engine.writer())
        .await
        .map_err(store_error)?;
        Ok(marked.is_some())
    }

    async fn mark_all_read(&self, user: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE notifications SET read = TRUE WHERE user_id = $1 AND read = FALSE")
            .bind(user)
            .execute(self.engine.writer())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

/// Notifications from rows of [`COLUMNS`].
fn notifications<R>(rows: &[R]) -> Result<Vec<Notification>, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    rows.iter()
        .map(notification)
        .collect::<Result<_, _>>()
        .map_err(store_error)
}

/// A notification from a row of [`COLUMNS`]. Data that is not JSON (never
/// written so) reads as `null` rather than hiding the user's other
/// notifications.
fn notification<R>(row: &R) -> Result<Notification, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let id = row.try_get(0)?;
    let data: String = row.try_get(3)?;
    let data = serde_json::from_str(&data).unwrap_or_else(|e| {
        tracing::warn!(id, error = %e, "notification data is not JSON");
        serde_json::Value::Null
    });
    Ok(Notification {
        id,
        user_id: row.try_get(1)?,
        kind: row.try_get(2)?,
        data,
        created_at: row.try_get(4)?,
        read: row.try_get(5)?,
    })
}
