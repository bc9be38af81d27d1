//! The [`MessageStore`] port on every engine: history windows, replay and the
//! highest id. Storing a batch is the engine's (one `UNNEST` statement on
//! PostgreSQL, one `INSERT` per message on SQLite); pairing the ids with the
//! batch is here. Schema: the engines' migrations.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, Row, Type};
use switchboard_core::{Message, MessageStore, NewMessage, StoreError, Window};

use crate::error::store_error;
use crate::sql::{Engine, SqlStore};

/// The columns every message query selects, in the order [`message`] reads them.
const COLUMNS: &str = "id, workspace_id, user_id, content, client_msg_id, created_at";

#[async_trait]
impl<E> MessageStore for SqlStore<E>
where
    E: Engine,
    for<'c> &'c mut <E::DB as Database>::Connection: Executor<'c, Database = E::DB>,
    <E::DB as Database>::Arguments: sqlx::IntoArguments<E::DB>,
    usize: ColumnIndex<<E::DB as Database>::Row>,
    for<'q> &'q str: Encode<'q, E::DB> + Type<E::DB>,
    for<'q> i64: Encode<'q, E::DB> + Decode<'q, E::DB> + Type<E::DB>,
    for<'r> String: Decode<'r, E::DB> + Type<E::DB>,
{
    async fn insert_messages(&self, batch: &[NewMessage]) -> Result<Vec<Message>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.engine.insert_messages(batch).await?;
        if ids.len() != batch.len() {
            return Err(StoreError::invalid(format!(
                "result: inserted {} messages, got {} ids",
                batch.len(),
                ids.len()
            )));
        }
        Ok(ids
            .into_iter()
            .zip(batch)
            .map(|(id, m)| stored(id, m))
            .collect())
    }

    async fn messages(&self, workspace: &str, window: Window) -> Result<Vec<Message>, StoreError> {
        let order = if window.from_newest() { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {COLUMNS} FROM messages
             WHERE workspace_id = $1 AND id > $2 AND id < $3 ORDER BY id {order} LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace)
            .bind(window.after.unwrap_or(0))
            .bind(window.before.unwrap_or(i64::MAX))
            .bind(i64::from(window.limit))
            .fetch_all(self.engine.reader())
            .await
            .map_err(store_error)?;
        let mut found = messages(&rows)?;
        if window.from_newest() {
            found.reverse();
        }
        Ok(found)
    }

    async fn max_message_id(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM messages")
            .fetch_one(self.engine.writer())
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
        let sql = format!(
            "SELECT {COLUMNS} FROM messages
             WHERE {} AND id > $2 ORDER BY id LIMIT $3",
            E::in_list("workspace_id", 1)
        );
        let rows = E::bind_texts(sqlx::query(sqlx::AssertSqlSafe(sql)), workspaces)?
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(self.engine.reader())
            .await
            .map_err(store_error)?;
        messages(&rows)
    }
}

/// A stored message: the new one with its id.
fn stored(id: i64, m: &NewMessage) -> Message {
    Message {
        id,
        workspace_id: m.workspace_id.clone(),
        user_id: m.user_id.clone(),
        content: m.content.clone(),
        client_msg_id: m.client_msg_id.clone(),
        created_at: m.created_at,
    }
}

/// Messages from rows of [`COLUMNS`].
fn messages<R>(rows: &[R]) -> Result<Vec<Message>, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    rows.iter()
        .map(message)
        .collect::<Result<_, _>>()
        .map_err(store_error)
}

/// A message from a row of [`COLUMNS`].
fn message<R>(row: &R) -> Result<Message, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Message {
        id: row.try_get(0)?,
        workspace_id: row.try_get(1)?,
        user_id: row.try_get(2)?,
        content: row.try_get(3)?,
        client_msg_id: row.try_get(4)?,
        created_at: row.try_get(5)?,
    })
}
