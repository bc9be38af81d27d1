//! From sqlx's errors to the core's [`StoreError`]: which failures are
//! transient (the database unreachable or busy with someone else) and which
//! are not (constraints, bad data, bad configuration). What an engine's own
//! error codes mean is in that engine's module (`error_kind`).

use sqlx::error::DatabaseError;
use switchboard_core::StoreError;

/// What kind of failure an error is; see the [`StoreError`] variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Unavailable,
    Contention,
    Constraint,
    Invalid,
    Other,
}

/// The [`StoreError`] for a sqlx error, which it keeps as its source.
pub(crate) fn store_error(e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    let (kind, reason) = match &e {
        E::Io(_) | E::PoolTimedOut | E::WorkerCrashed => (Kind::Unavailable, ""),
        E::Database(db) => (database_kind(db.as_ref()), "data"),
        E::Configuration(_) | E::InvalidArgument(_) => (Kind::Invalid, "configuration"),
        E::RowNotFound
        | E::TypeNotFound { .. }
        | E::ColumnIndexOutOfBounds { .. }
        | E::ColumnNotFound(_)
        | E::ColumnDecode { .. }
        | E::Encode(_)
        | E::Decode(_) => (Kind::Invalid, "data"),
        _ => (Kind::Other, ""),
    };
    let source = Box::new(e);
    match kind {
        Kind::Unavailable => StoreError::Unavailable { source },
        Kind::Contention => StoreError::Contention { source },
        Kind::Constraint => StoreError::Constraint { source },
        Kind::Invalid => StoreError::Invalid {
            reason: reason.into(),
            source: Some(source),
        },
        Kind::Other => StoreError::Other { source },
    }
}

/// What an error the database returned means, by the engine's own codes.
fn database_kind(db: &dyn DatabaseError) -> Kind {
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        crate::postgres::error_kind(pg.code())
    } else if let Some(code) = db
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .and_then(|e| e.code())
        .and_then(|code| code.parse().ok())
    {
        crate::sqlite::error_kind(code)
    } else if db.is_unique_violation() || db.is_foreign_key_violation() || db.is_check_violation() {
        Kind::Constraint
    } else {
        Kind::Other
    }
}

#[cfg(test)]
mod tests {
    //! The mapping of real driver errors: SQLite on a temporary file, and
    //! PostgreSQL where `SWITCHBOARD_TEST_POSTGRES` (default
    //! `postgres://root@127.0.0.1:5432/test`) answers (with `CI=true` it must).

    use sqlx::{Connection, SqliteConnection};

    use super::*;

    fn temp_sqlite_url() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "switchboard_store_error_{}_{nanos}.db",
            std::process::id()
        ));
        format!("sqlite://{}?mode=rwc", path.display())
    }

    #[test]
    fn lost_connections_and_timeouts_are_transient() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(store_error(sqlx::Error::Io(refused)).is_transient());
        let timed_out = store_error(sqlx::Error::PoolTimedOut);
        assert!(matches!(timed_out, StoreError::Unavailable { .. }));
        assert!(std::error::Error::source(&timed_out).is_some());
        let bad = store_error(sqlx::Error::Configuration("bad URL".into()));
        assert!(matches!(bad, StoreError::Invalid { .. }) && !bad.is_transient());
        assert!(!store_error(sqlx::Error::RowNotFound).is_transient());
    }

    #[tokio::test]
    async fn sqlite_busy_is_transient_and_a_constraint_is_not() {
        let url = temp_sqlite_url();
        let mut first = SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1)")
            .execute(&mut first)
            .await
            .unwrap();
        let duplicate = sqlx::raw_sql("INSERT INTO t VALUES (1)")
            .execute(&mut first)
            .await
            .unwrap_err();
        let duplicate = store_error(duplicate);
        assert!(
            matches!(duplicate, StoreError::Constraint { .. }),
            "{duplicate:?}"
        );
        assert!(!duplicate.is_transient());

        // A second writer while the first holds the write lock, without waiting.
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut first)
            .await
            .unwrap();
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let mut second = SqliteConnection::connect_with(&options.busy_timeout(Default::default()))
            .await
            .unwrap();
        let busy = sqlx::raw_sql("INSERT INTO t VALUES (2)")
            .execute(&mut second)
            .await
            .unwrap_err();
        let busy = store_error(busy);
        assert!(matches!(busy, StoreError::Contention { .. }), "{busy:?}");
        assert!(busy.is_transient());
    }

    #[tokio::test]
    async fn a_terminated_postgres_backend_is_transient() {
        let url = std::env::var("SWITCHBOARD_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
        let mut victim = match sqlx::PgConnection::connect(&url).await {
            Ok(c) => c,
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("PostgreSQL unreachable in CI: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: PostgreSQL unreachable at {url}: {e}");
                return;
            }
        };
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut victim)
            .await
            .unwrap();
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(terminated);
        let lost = sqlx::query("SELECT 1")
            .execute(&mut victim)
            .await
            .unwrap_err();
        let lost = store_error(lost);
        assert!(lost.is_transient(), "{lost:?}");

        let duplicate = sqlx::raw_sql(
            "CREATE TEMPORARY TABLE t (id BIGINT PRIMARY KEY); INSERT INTO t VALUES (1), (1)",
        )
        .execute(&mut admin)
        .await
        .unwrap_err();
        let duplicate = store_error(duplicate);
        assert!(
            matches!(duplicate, StoreError::Constraint { .. }),
            "{duplicate:?}"
        );
    }
}
