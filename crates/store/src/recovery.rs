//! The [`RecoveryStore`] port on every engine: sessions of disconnected
//! sockets, kept until taken or expired. The workspaces are one text column
//! (a JSON array). The SQL is the same in both dialects.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, Type};
use switchboard_core::{RecoverySession, RecoveryStore, StoreError};

use crate::error::store_error;
use crate::sql::{Engine, SqlStore};

#[async_trait]
impl<E> RecoveryStore for SqlStore<E>
where
    E: Engine,
    for<'c> &'c mut <E::DB as Database>::Connection: Executor<'c, Database = E::DB>,
    <E::DB as Database>::Arguments: sqlx::IntoArguments<E::DB>,
    usize: ColumnIndex<<E::DB as Database>::Row>,
    for<'q> &'q str: Encode<'q, E::DB> + Type<E::DB>,
    for<'q> i64: Encode<'q, E::DB> + Decode<'q, E::DB> + Type<E::DB>,
    for<'r> String: Decode<'r, E::DB> + Type<E::DB>,
{
    async fn save_recovery(&self, pid: &str, session: &RecoverySession) -> Result<(), StoreError> {
        let workspaces =
            serde_json::to_string(&session.workspaces).map_err(|e| StoreError::Invalid {
                reason: "recovery session workspaces".into(),
                source: Some(Box::new(e)),
            })?;
        let mut tx = self.engine.writer().begin().await.map_err(store_error)?;
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
        .bind(session.user_id.as_str())
        .bind(workspaces.as_str())
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
            "DELETE FROM recovery_sessions WHERE pid = $1 RETURNING user_id, workspaces, expires_at",
        )
        .bind(pid)
        .fetch_optional(self.engine.writer())
        .await
        .map_err(store_error)?;
        let Some((user_id, workspaces, expires_at)) = row else {
            return Ok(None);
        };
        if expires_at <= now {
            return Ok(None);
        }
        let workspaces = serde_json::from_str(&workspaces).map_err(|e| StoreError::Invalid {
            reason: format!("workspaces of recovery session {pid:?}"),
            source: Some(Box::new(e)),
        })?;
        Ok(Some(RecoverySession {
            user_id,
            workspaces,
            expires_at,
        }))
    }
}
