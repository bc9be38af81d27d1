//! The [`MembershipStore`] port on every engine: who belongs to which
//! workspace, with which role, one row per pair. The SQL is the same in both
//! dialects. A role name the server does not know (a row written by a newer
//! version) reads as `viewer`, the least it can do.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, Type};
use switchboard_core::{MembershipStore, Role, StoreError};

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
    for<'r> String: Decode<'r, E::DB> + Type<E::DB>,
{
    async fn member_role(&self, user: &str, workspace: &str) -> Result<Option<Role>, StoreError> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM memberships WHERE user_id = $1 AND workspace_id = $2",
        )
        .bind(user)
        .bind(workspace)
        .fetch_optional(self.engine.reader())
        .await
        .map_err(store_error)?;
        Ok(role.map(|name| Role::parse(&name).unwrap_or(Role::Viewer)))
    }

    async fn add_member(&self, user: &str, workspace: &str, role: Role) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO memberships (user_id, workspace_id, role) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, workspace_id) DO UPDATE SET role = excluded.role",
        )
        .bind(user)
        .bind(workspace)
        .bind(role.as_str())
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
