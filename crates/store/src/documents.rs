//! The [`DocumentStore`] port on every engine: each collaborative document is
//! an append-only log of updates plus at most one snapshot, replaced by
//! compaction. The SQL is the same in both dialects but for the list of
//! replaced ids and how a read sees one moment ([`Engine`]).

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, Type};
use switchboard_core::{DocumentId, DocumentLog, DocumentStore, StoreError};

use crate::error::store_error;
use crate::sql::{Engine, SqlStore};

#[async_trait]
impl<E> DocumentStore for SqlStore<E>
where
    E: Engine,
    for<'c> &'c mut <E::DB as Database>::Connection: Executor<'c, Database = E::DB>,
    <E::DB as Database>::Arguments: sqlx::IntoArguments<E::DB>,
    usize: ColumnIndex<<E::DB as Database>::Row>,
    for<'q> &'q str: Encode<'q, E::DB> + Type<E::DB>,
    for<'q> &'q [u8]: Encode<'q, E::DB> + Type<E::DB>,
    for<'q> i64: Encode<'q, E::DB> + Decode<'q, E::DB> + Type<E::DB>,
    for<'r> Vec<u8>: Decode<'r, E::DB> + Type<E::DB>,
{
    async fn append_document_updates(
        &self,
        document: &DocumentId,
        updates: &[Bytes],
    ) -> Result<(), StoreError> {
        let mut tx = self.engine.writer().begin().await.map_err(store_error)?;
        for update in updates {
            sqlx::query(
                "INSERT INTO document_updates (workspace_id, name, data) VALUES ($1, $2, $3)",
            )
            .bind(document.workspace.as_str())
            .bind(document.name.as_str())
            .bind(update.as_ref())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    async fn document_log(&self, document: &DocumentId) -> Result<DocumentLog, StoreError> {
        let mut tx = self.engine.reader().begin().await.map_err(store_error)?;
        if let Some(sql) = E::SNAPSHOT_READ {
            sqlx::query(sql)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        let snapshot: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT version, data FROM document_snapshots WHERE workspace_id = $1 AND name = $2",
        )
        .bind(document.workspace.as_str())
        .bind(document.name.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let updates: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT id, data FROM document_updates WHERE workspace_id = $1 AND name = $2 ORDER BY id",
        )
        .bind(document.workspace.as_str())
        .bind(document.name.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        let (version, snapshot) = match snapshot {
            Some((version, data)) => (version, Some(Bytes::from(data))),
            None => (0, None),
        };
        Ok(DocumentLog {
            snapshot,
            version,
            updates: updates
                .into_iter()
                .map(|(id, data)| (id, Bytes::from(data)))
                .collect(),
        })
    }

    async fn compact_document(
        &self,
        document: &DocumentId,
        log_version: i64,
        snapshot: &[u8],
        replaced: &[i64],
    ) -> Result<bool, StoreError> {
        let mut tx = self.engine.writer().begin().await.map_err(store_error)?;
        // The conditional upsert takes the snapshot row's lock: of two nodes
        // compacting at once, the second sees the new version and writes
        // nothing (and RETURNING returns nothing).
        let written: Option<i64> = sqlx::query_scalar(
            "INSERT INTO document_snapshots (workspace_id, name, version, data) VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id, name) DO UPDATE SET version = excluded.version, data = excluded.data
             WHERE document_snapshots.version = $5
             RETURNING version",
        )
        .bind(document.workspace.as_str())
        .bind(document.name.as_str())
        .bind(log_version + 1)
        .bind(snapshot)
        .bind(log_version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        if written.is_none() {
            return Ok(false);
        }
        if !replaced.is_empty() {
            let sql = format!("DELETE FROM document_updates WHERE {}", E::in_list("id", 1));
            E::bind_ids(sqlx::query(sqlx::AssertSqlSafe(sql)), replaced)?
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(true)
    }
}
