//! The [`DocumentStore`] and [`DocumentVersions`] ports on every engine:
//! each collaborative document is an append-only log of updates plus at most
//! one snapshot, replaced by compaction, which also keeps its snapshot as a
//! numbered version (the newest few). The SQL is the same in both dialects
//! but for the list of replaced ids and how a read sees one moment
//! ([`Engine`]).
//!
//! Times: each logged update carries when it was appended, and a snapshot
//! the latest of those it replaced, so a document's last update survives
//! compaction. The newest version's bytes are also the current snapshot's:
//! stored twice, so that compaction and versions stay independent rows.

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, Type};
use switchboard_core::time::now_millis;
use switchboard_core::{
    DocumentId, DocumentLog, DocumentStore, DocumentSummary, DocumentVersion, DocumentVersions,
    StoreError,
};

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
    for<'r> String: Decode<'r, E::DB> + Type<E::DB>,
{
    async fn append_document_updates(
        &self,
        document: &DocumentId,
        updates: &[Bytes],
    ) -> Result<(), StoreError> {
        let now = now_millis();
        let mut tx = self.engine.writer().begin().await.map_err(store_error)?;
        for update in updates {
            sqlx::query(
                "INSERT INTO document_updates (workspace_id, name, data, created_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(document.workspace.as_str())
            .bind(document.name.as_str())
            .bind(update.as_ref())
            .bind(now)
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
        keep_versions: u32,
    ) -> Result<bool, StoreError> {
        let now = now_millis();
        let version = log_version + 1;
        let mut tx = self.engine.writer().begin().await.map_err(store_error)?;
        // The snapshot's time is the latest of the old snapshot's and the
        // replaced updates' (read before they are deleted).
        let sql = format!(
            "SELECT MAX(t) FROM (
                 SELECT updated_at AS t FROM document_snapshots WHERE workspace_id = $1 AND name = $2
                 UNION ALL
                 SELECT created_at FROM document_updates WHERE {}
             ) AS times",
            E::in_list("id", 3)
        );
        let updated_at: Option<i64> = E::bind_ids(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(document.workspace.as_str())
                .bind(document.name.as_str()),
            replaced,
        )?
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| sqlx::Row::try_get(&row, 0))
        .map_err(store_error)?;
        // The conditional upsert takes the snapshot row's lock: of two nodes
        // compacting at once, the second sees the new version and writes
        // nothing (and RETURNING returns nothing).
        let written: Option<i64> = sqlx::query_scalar(
            "INSERT INTO document_snapshots (workspace_id, name, version, data, updated_at)
             VALUES ($1, $2, $3, $4, $6)
             ON CONFLICT (workspace_id, name) DO UPDATE SET version = excluded.version,
                data = excluded.data, updated_at = excluded.updated_at
             WHERE document_snapshots.version = $5
             RETURNING version",
        )
        .bind(document.workspace.as_str())
        .bind(document.name.as_str())
        .bind(version)
        .bind(snapshot)
        .bind(log_version)
        .bind(updated_at.unwrap_or(now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        if written.is_none() {
            return Ok(false);
        }
        if !replaced.is_empty() {
            let sql = format!(
                "DELETE FROM document_updates WHERE {} RETURNING id",
                E::in_list("id", 1)
            );
            let deleted = E::bind_ids(sqlx::query(sqlx::AssertSqlSafe(sql)), replaced)?
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
            if deleted.len() != replaced.len() {
                // The document was deleted while the snapshot was made: writing
                // it would bring the document back. The transaction rolls back.
                return Ok(false);
            }
        }
        if keep_versions > 0 {
            sqlx::query(
                "INSERT INTO document_versions (workspace_id, name, version, data, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (workspace_id, name, version)
                 DO UPDATE SET data = excluded.data, created_at = excluded.created_at",
            )
            .bind(document.workspace.as_str())
            .bind(document.name.as_str())
            .bind(version)
            .bind(snapshot)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        sqlx::query(
            "DELETE FROM document_versions WHERE workspace_id = $1 AND name = $2 AND version <= $3",
        )
        .bind(document.workspace.as_str())
        .bind(document.name.as_str())
        .bind(version - i64::from(keep_versions))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(true)
    }

    async fn documents(
        &self,
        workspace: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DocumentSummary>, StoreError> {
        // The sum of `length` is BIGINT on PostgreSQL (SUM of INTEGER).
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT name, SUM(size), MAX(changed) FROM (
                 SELECT name, length(data) AS size, updated_at AS changed
                 FROM document_snapshots WHERE workspace_id = $1 AND name > $2
                 UNION ALL
                 SELECT name, length(data), created_at
                 FROM document_updates WHERE workspace_id = $1 AND name > $2
             ) AS parts GROUP BY name ORDER BY name LIMIT $3",
        )
        .bind(workspace)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(self.engine.reader())
        .await
        .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|(name, bytes, updated_at)| DocumentSummary {
                name,
                bytes,
                updated_at,
            })
            .collect())
    }

    async fn delete_document(&self, document: &DocumentId) -> Result<bool, StoreError> {
        let mut tx = self.engine.writer().begin().await.map_err(store_error)?;
        let mut deleted = 0;
        for table in [
            "document_updates",
            "document_snapshots",
            "document_versions",
        ] {
            let sql =
                format!("DELETE FROM {table} WHERE workspace_id = $1 AND name = $2 RETURNING 1");
            deleted += sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(document.workspace.as_str())
                .bind(document.name.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?
                .len();
        }
        tx.commit().await.map_err(store_error)?;
        Ok(deleted > 0)
    }
}

#[async_trait]
impl<E> DocumentVersions for SqlStore<E>
where
    E: Engine,
    for<'c> &'c mut <E::DB as Database>::Connection: Executor<'c, Database = E::DB>,
    <E::DB as Database>::Arguments: sqlx::IntoArguments<E::DB>,
    usize: ColumnIndex<<E::DB as Database>::Row>,
    for<'q> &'q str: Encode<'q, E::DB> + Type<E::DB>,
    for<'q> i64: Encode<'q, E::DB> + Decode<'q, E::DB> + Type<E::DB>,
    for<'r> Vec<u8>: Decode<'r, E::DB> + Type<E::DB>,
{
    async fn document_versions(
        &self,
        document: &DocumentId,
    ) -> Result<Vec<DocumentVersion>, StoreError> {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT version, CAST(length(data) AS BIGINT), created_at FROM document_versions
             WHERE workspace_id = $1 AND name = $2 ORDER BY version DESC",
        )
        .bind(document.workspace.as_str())
        .bind(document.name.as_str())
        .fetch_all(self.engine.reader())
        .await
        .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|(version, bytes, created_at)| DocumentVersion {
                version,
                bytes,
                created_at,
            })
            .collect())
    }

    async fn document_version(
        &self,
        document: &DocumentId,
        version: i64,
    ) -> Result<Option<Bytes>, StoreError> {
        let data: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM document_versions
             WHERE workspace_id = $1 AND name = $2 AND version = $3",
        )
        .bind(document.workspace.as_str())
        .bind(document.name.as_str())
        .bind(version)
        .fetch_optional(self.engine.reader())
        .await
        .map_err(store_error)?;
        Ok(data.map(Bytes::from))
    }
}
