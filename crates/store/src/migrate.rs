//! Schema migrations: an ordered list of SQL scripts per engine, each applied
//! once, in a transaction, and recorded in `switchboard_migrations`. The
//! scripts themselves are in the engine modules.
//!
//! Written here rather than with `sqlx::migrate!` because that macro brings in
//! sqlx's proc-macro crate with every database driver, which costs more build
//! time than these few lines.

use sqlx::{Database, Executor, Pool};
use switchboard_core::StoreError;

use crate::error::store_error;

/// A migration: its version (strictly increasing) and its SQL.
pub(crate) type Migration = (i64, &'static str);

pub(crate) async fn apply<DB>(pool: &Pool<DB>, migrations: &[Migration]) -> Result<(), StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: sqlx::IntoArguments<DB>,
    i64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut conn = pool.acquire().await.map_err(store_error)?;
    conn.execute("CREATE TABLE IF NOT EXISTS switchboard_migrations (version BIGINT PRIMARY KEY)")
        .await
        .map_err(store_error)?;
    let applied: Vec<(i64,)> = sqlx::query_as("SELECT version FROM switchboard_migrations")
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    for (version, sql) in migrations {
        if applied.iter().any(|(v,)| v == version) {
            continue;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(store_error)?;
        sqlx::raw_sql(*sql)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let record = format!("INSERT INTO switchboard_migrations (version) VALUES ({version})");
        sqlx::raw_sql(sqlx::AssertSqlSafe(record))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}
