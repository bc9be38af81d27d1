//! The one SQL adapter shape: [`SqlStore`] implements every store port once,
//! generically over an [`Engine`] (SQLite, PostgreSQL), and each engine
//! supplies its pools and the little SQL that differs between dialects.
//!
//! Why generic code over sqlx's `Database` rather than a macro expanded per
//! engine: the SQL and the row handling are type-checked once, errors point at
//! real code, and the compiler lists (in each impl's `where` clause) exactly
//! what a port needs of an engine. The statements are written with `$n`
//! placeholders, which both PostgreSQL and sqlx's SQLite driver accept.
//!
//! The ports themselves live one per file (`messages.rs`, `memberships.rs`,
//! `recovery.rs`, `notifications.rs`, `documents.rs`); the readiness probe is
//! here. The engines (connection, migrations, dialect) are in `sqlite.rs` and
//! `postgres.rs`.

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::{Database, Executor, Pool};
use switchboard_core::{NewMessage, StoreError, StoreHealth};

use crate::error::store_error;

/// A statement being built for database `DB`, its parameters bound as it goes.
pub(crate) type Statement<DB> = Query<'static, DB, <DB as Database>::Arguments>;

/// What differs between database engines: pools, and the SQL that is not the
/// same in both dialects.
#[async_trait]
pub(crate) trait Engine: Send + Sync + 'static {
    /// The sqlx driver.
    type DB: Database;

    /// The pool for reads that may run beside writes.
    fn reader(&self) -> &Pool<Self::DB>;

    /// The pool for writes, and for reads that must see the latest write.
    fn writer(&self) -> &Pool<Self::DB>;

    /// Stores a non-empty batch of messages in order, in one transaction, and
    /// returns their ids in batch order.
    async fn insert_messages(&self, batch: &[NewMessage]) -> Result<Vec<i64>, StoreError>;

    /// A condition: `column` is one of the list bound as parameter `$n` by
    /// [`Engine::bind_texts`] or [`Engine::bind_ids`].
    fn in_list(column: &str, n: usize) -> String;

    /// Binds a list of texts for [`Engine::in_list`].
    fn bind_texts(
        statement: Statement<Self::DB>,
        list: &[String],
    ) -> Result<Statement<Self::DB>, StoreError>;

    /// Binds a list of ids for [`Engine::in_list`].
    fn bind_ids(
        statement: Statement<Self::DB>,
        list: &[i64],
    ) -> Result<Statement<Self::DB>, StoreError>;

    /// Run first in a read transaction that must see one moment (a snapshot
    /// and its log), if the engine's default isolation does not give that.
    const SNAPSHOT_READ: Option<&'static str>;
}

/// A store on an [`Engine`]: implements every port of the core's `Store`.
pub(crate) struct SqlStore<E> {
    pub(crate) engine: E,
}

#[async_trait]
impl<E> StoreHealth for SqlStore<E>
where
    E: Engine,
    for<'c> &'c mut <E::DB as Database>::Connection: Executor<'c, Database = E::DB>,
    <E::DB as Database>::Arguments: sqlx::IntoArguments<E::DB>,
{
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(self.engine.reader())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
