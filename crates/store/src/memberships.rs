//! The [`MembershipStore`] port on every engine: who belongs to which
//! workspace, one row per pair. The SQL is the same in both dialects.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, Type};
use switchboard_core::{MembershipStore, StoreError};

use crate::error::store_error;
use crate::sql::{Engine, SqlStore};

#[async_trait]
impl<E> MembershipStore for SqlStore<E>
where
    E: Engine,
    for<'c> &'c mut <E::DB as Database>::Connection: Executor<'c, Database = E::DB>,
    <E::DB as Database>::Arguments: sqlx::IntoArguments<E::DB>,
    usize: ColumnIndex<<E::DB as Database>::Row>,
    for<'q> &'q str: Encode<'q, E::DB> + Type<E::DB>,
    for<'r> i64: Decode<'r, E::DB> + Type<E::DB>,
{
    async fn is_member(&self, user: &str, workspace: &str) -> Result<bool, StoreError> {
        let found: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM memberships WHERE user_id = $1 AND workspace_id = $2",
        )
        .bind(user)
        .bind(workspace)
        .fetch_one(self.engine.reader())
        .await
        .map_err(store_error)?;
        Ok(found > 0)
    }

    async fn add_member(&self, user: &str, workspace: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO memberships (user_id, workspace_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(user)
        .bind(workspace)
        .execute(self.engine.writer())
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn remove_member(&self, user: &str, workspace: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM memberships WHERE user_id = $1 AND workspace_id = $2")
            .bind(user)
            .bind(workspace)
            .execute(self.engine.writer())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
