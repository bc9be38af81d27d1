//! Rows to domain values, the same for every engine: both adapters select the
//! same columns in the same order (`MESSAGE_COLUMNS`, `NOTIFICATION_COLUMNS`).

use bytes::Bytes;
use sqlx::{ColumnIndex, Database, Decode, Row, Type};
use switchboard_core::{DocumentLog, Message, Notification, StoreError};

use crate::store_error;

pub(crate) const MESSAGE_COLUMNS: &str =
    "id, workspace_id, user_id, content, client_msg_id, created_at";
pub(crate) const NOTIFICATION_COLUMNS: &str = "id, user_id, kind, data, created_at, read";

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

fn notification<R>(row: &R) -> Result<Notification, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let data: String = row.try_get(3)?;
    Ok(Notification {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        kind: row.try_get(2)?,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
        created_at: row.try_get(4)?,
        read: row.try_get(5)?,
    })
}

pub(crate) fn messages<R, DB>(rows: Vec<R>) -> Result<Vec<Message>, StoreError>
where
    DB: Database,
    R: Row<Database = DB>,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
{
    rows.iter()
        .map(message)
        .collect::<Result<_, _>>()
        .map_err(store_error)
}

pub(crate) fn notifications<R, DB>(rows: Vec<R>) -> Result<Vec<Notification>, StoreError>
where
    DB: Database,
    R: Row<Database = DB>,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
{
    rows.iter()
        .map(notification)
        .collect::<Result<_, _>>()
        .map_err(store_error)
}

/// A document's log from its snapshot row `(version, data)` and its update rows `(id, data)`.
pub(crate) fn document_log(
    snapshot: Option<(i64, Vec<u8>)>,
    updates: Vec<(i64, Vec<u8>)>,
) -> DocumentLog {
    let (version, snapshot) = match snapshot {
        Some((version, data)) => (version, Some(Bytes::from(data))),
        None => (0, None),
    };
    DocumentLog {
        snapshot,
        version,
        updates: updates
            .into_iter()
            .map(|(id, data)| (id, Bytes::from(data)))
            .collect(),
    }
}
