//! One test suite for every Store adapter: SQLite (a fresh file per test) and
//! PostgreSQL (a fresh database per test on the server named by
//! `SWITCHBOARD_TEST_POSTGRES`, default `postgres://root@127.0.0.1:5432/test`).
//!
//! With `CI=true` an unreachable PostgreSQL fails the run; elsewhere those tests
//! print that they were skipped. Last, how `connect` reports a database it
//! cannot reach (transient) or a URL it cannot use (permanent); how each
//! driver error is classified is tested in `src/error.rs`.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_core::{
    DocumentId, DocumentLog, DocumentSummary, NewMessage, NewNotification, RecoverySession, Role,
    Store, StoreError, Window,
};

fn new_message(workspace: &str, content: &str) -> NewMessage {
    NewMessage {
        workspace_id: workspace.into(),
        user_id: "alice".into(),
        content: content.into(),
        client_msg_id: Some(format!("c-{content}")),
        created_at: 1_795_882_445_123,
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}

async fn sqlite() -> Arc<dyn Store> {
    let path = std::env::temp_dir().join(format!("{}.db", unique("switchboard_store_test")));
    switchboard_store::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open sqlite store")
}

/// A store on a database of its own, or None (skipped) when PostgreSQL is
/// unreachable outside CI.
async fn postgres() -> Option<Arc<dyn Store>> {
    use sqlx::Connection;
    let admin_url = std::env::var("SWITCHBOARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(c) => c,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("PostgreSQL unreachable in CI: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: PostgreSQL unreachable at {admin_url}: {e}");
            return None;
        }
    };
    drop_stale_databases(&mut admin).await;
    let db = unique("sb_test");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(b, _)| b);
    Some(
        switchboard_store::connect(&format!("{base}/{db}"))
            .await
            .expect("open postgres store"),
    )
}

/// Drops the databases of earlier test processes (their names carry their pid).
async fn drop_stale_databases(admin: &mut sqlx::PgConnection) {
    let mine = format!("sb_test_{}_", std::process::id());
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'sb\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names.iter().filter(|n| !n.starts_with(&mine)) {
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *admin)
            .await;
    }
}

macro_rules! for_each_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite_store {
            $(#[tokio::test] async fn $name() { super::$name(super::sqlite().await).await })*
        }
        mod postgres_store {
            $(#[tokio::test] async fn $name() {
                if let Some(store) = super::postgres().await { super::$name(store).await }
            })*
        }
    };
}

for_each_store!(
    ids_increase_across_workspaces,
    windows_follow_the_contract,
    a_batch_comes_back_in_order_with_its_ids,
    replay_spans_workspaces_in_id_order,
    memberships_are_idempotent,
    recovery_sessions_are_taken_once_and_expire,
    notifications_are_per_user_and_marked_read,
    ping_answers,
    document_logs_append_and_compact,
    a_stale_compaction_changes_nothing,
    documents_are_listed_by_name_with_size_and_last_update,
    compaction_keeps_the_newest_versions,
    a_deleted_document_is_gone_with_its_versions,
);

async fn ids_increase_across_workspaces(store: Arc<dyn Store>) {
    assert_eq!(store.max_message_id().await.unwrap(), 0);
    let first = store
        .insert_messages(&[new_message("w1", "a"), new_message("w2", "b")])
        .await
        .unwrap();
    let second = store
        .insert_messages(&[new_message("w1", "c")])
        .await
        .unwrap();
    let ids: Vec<i64> = first.iter().chain(&second).map(|m| m.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids {ids:?} must increase"
    );
    assert_eq!(first[0].content, "a");
    assert_eq!(first[0].client_msg_id.as_deref(), Some("c-a"));
    assert_eq!(first[0].created_at, 1_795_882_445_123);
    let read = store
        .messages("w1", Window::new(None, None, None).unwrap())
        .await
        .unwrap();
    assert_eq!(read, vec![first[0].clone(), second[0].clone()]);
}

async fn windows_follow_the_contract(store: Arc<dyn Store>) {
    let batch: Vec<NewMessage> = (0..10).map(|i| new_message("w", &i.to_string())).collect();
    let ids: Vec<i64> = store
        .insert_messages(&batch)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    let get = |before, after, limit| {
        let store = store.clone();
        async move {
            let window = Window::new(before, after, limit).unwrap();
            store
                .messages("w", window)
                .await
                .unwrap()
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(get(None, None, Some(3)).await, ids[7..10]);
    assert_eq!(get(Some(ids[5]), None, Some(2)).await, ids[3..5]);
    assert_eq!(get(None, Some(ids[5]), Some(2)).await, ids[6..8]);
    assert_eq!(get(Some(ids[8]), Some(ids[2]), None).await, ids[3..8]);
    assert_eq!(get(None, None, None).await, ids);
    assert!(get(None, None, None).await.len() <= 50);
    assert!(store
        .messages("other", Window::new(None, None, None).unwrap())
        .await
        .unwrap()
        .is_empty());
}

/// One statement stores a whole batch on PostgreSQL: each message must come back
/// with the id it was stored under, in the batch's order.
async fn a_batch_comes_back_in_order_with_its_ids(store: Arc<dyn Store>) {
    let workspace = unique("batch");
    let batch: Vec<NewMessage> = (0..40)
        .map(|i| NewMessage {
            client_msg_id: (i % 3 != 0).then(|| format!("c{i}")),
            created_at: 1_795_882_445_000 + i,
            ..new_message(&workspace, &format!("m{i}"))
        })
        .collect();
    let stored = store.insert_messages(&batch).await.unwrap();
    assert_eq!(stored.len(), batch.len());
    for (new, got) in batch.iter().zip(&stored) {
        assert_eq!(
            (&got.content, &got.client_msg_id, got.created_at),
            (&new.content, &new.client_msg_id, new.created_at)
        );
    }
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id));
    let read = store
        .messages(&workspace, Window::new(None, None, Some(100)).unwrap())
        .await
        .unwrap();
    assert_eq!(read, stored, "what the store returned is what it holds");
    assert!(store.insert_messages(&[]).await.unwrap().is_empty());
}

async fn replay_spans_workspaces_in_id_order(store: Arc<dyn Store>) {
    let stored = store
        .insert_messages(&[
            new_message("a", "1"),
            new_message("b", "2"),
            new_message("c", "3"),
            new_message("a", "4"),
        ])
        .await
        .unwrap();
    let since = store
        .messages_since(&["a".into(), "b".into()], stored[0].id, 100)
        .await
        .unwrap();
    assert_eq!(
        since.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["2", "4"]
    );
    let limited = store
        .messages_since(&["a".into(), "b".into()], 0, 1)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert!(store.messages_since(&[], 0, 10).await.unwrap().is_empty());
}

async fn memberships_are_idempotent(store: Arc<dyn Store>) {
    assert_eq!(store.member_role("bob", "w").await.unwrap(), None);
    store.add_member("bob", "w", Role::Member).await.unwrap();
    store.add_member("bob", "w", Role::Member).await.unwrap();
    assert_eq!(
        store.member_role("bob", "w").await.unwrap(),
        Some(Role::Member)
    );
    assert_eq!(store.member_role("bob", "other").await.unwrap(), None);
    store.add_member("bob", "w", Role::Viewer).await.unwrap();
    assert_eq!(
        store.member_role("bob", "w").await.unwrap(),
        Some(Role::Viewer)
    );
    store.add_member("bob", "w", Role::Admin).await.unwrap();
    assert_eq!(
        store.member_role("bob", "w").await.unwrap(),
        Some(Role::Admin)
    );
    store.remove_member("bob", "w").await.unwrap();
    store.remove_member("bob", "w").await.unwrap();
    assert_eq!(store.member_role("bob", "w").await.unwrap(), None);
}

async fn recovery_sessions_are_taken_once_and_expire(store: Arc<dyn Store>) {
    let now = switchboard_core::time::now_millis();
    let session = RecoverySession {
        user_id: "alice".into(),
        workspaces: vec!["w1".into(), "w \"2\"".into()],
        expires_at: now + 60_000,
    };
    store.save_recovery("pid-1", &session).await.unwrap();
    assert_eq!(
        store.take_recovery("pid-1", now).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(store.take_recovery("pid-1", now).await.unwrap(), None);
    store.save_recovery("pid-2", &session).await.unwrap();
    assert_eq!(
        store.take_recovery("pid-2", now + 120_000).await.unwrap(),
        None
    );
    assert_eq!(store.take_recovery("unknown", now).await.unwrap(), None);
}

async fn notifications_are_per_user_and_marked_read(store: Arc<dyn Store>) {
    let new = |user: &str, n: i64| NewNotification {
        user_id: user.into(),
        kind: "mention".into(),
        data: serde_json::json!({ "n": n, "nested": { "ok": true } }),
        created_at: 1_795_882_445_123 + n,
    };
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            store
                .insert_notification(&new("alice", n))
                .await
                .unwrap()
                .id,
        );
        store.insert_notification(&new("bob", n)).await.unwrap();
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let after = store
        .notifications_after("alice", ids[1], 100)
        .await
        .unwrap();
    assert_eq!(after.iter().map(|n| n.id).collect::<Vec<_>>(), ids[2..]);
    assert_eq!(
        after[0].data,
        serde_json::json!({ "n": 2, "nested": { "ok": true } })
    );
    assert!(after
        .iter()
        .all(|n| n.user_id == "alice" && !n.read && n.kind == "mention"));

    let newest = store.notifications("alice", false, None, 2).await.unwrap();
    assert_eq!(
        newest.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]]
    );
    let older = store
        .notifications("alice", false, Some(ids[3]), 10)
        .await
        .unwrap();
    assert_eq!(
        older.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1], ids[0]]
    );

    assert!(store.mark_read("alice", ids[0]).await.unwrap());
    assert!(
        !store.mark_read("bob", ids[1]).await.unwrap(),
        "someone else's notification"
    );
    assert!(!store.mark_read("alice", i64::MAX).await.unwrap());
    let unread = store.notifications("alice", true, None, 10).await.unwrap();
    assert_eq!(unread.len(), 4);
    store.mark_all_read("alice").await.unwrap();
    assert!(store
        .notifications("alice", true, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .notifications("bob", true, None, 10)
            .await
            .unwrap()
            .len(),
        5
    );
}

async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

fn document(workspace: &str, name: &str) -> DocumentId {
    DocumentId {
        workspace: workspace.to_owned(),
        name: name.to_owned(),
    }
}

fn updates_of(log: &DocumentLog) -> Vec<&[u8]> {
    log.updates.iter().map(|(_, u)| u.as_ref()).collect()
}

async fn document_logs_append_and_compact(store: Arc<dyn Store>) {
    let notes = document("w1", "notes");
    let other = document("w2", "notes");
    assert_eq!(
        store.document_log(&notes).await.unwrap(),
        DocumentLog::default()
    );

    store
        .append_document_updates(
            &notes,
            &[Bytes::from_static(b"u1"), Bytes::from_static(b"u2")],
        )
        .await
        .unwrap();
    store
        .append_document_updates(&other, &[Bytes::from_static(b"x1")])
        .await
        .unwrap();
    store
        .append_document_updates(&notes, &[Bytes::from_static(b"u3")])
        .await
        .unwrap();
    let log = store.document_log(&notes).await.unwrap();
    assert_eq!(log.snapshot, None);
    assert_eq!(log.version, 0);
    assert_eq!(updates_of(&log), [&b"u1"[..], b"u2", b"u3"]);

    // Compact the first two; the third stays in the log.
    let replaced: Vec<i64> = log.updates[..2].iter().map(|(id, _)| *id).collect();
    assert!(store
        .compact_document(&notes, 0, b"s12", &replaced, 5)
        .await
        .unwrap());
    let log = store.document_log(&notes).await.unwrap();
    assert_eq!(log.snapshot.as_deref(), Some(&b"s12"[..]));
    assert_eq!(log.version, 1);
    assert_eq!(updates_of(&log), [&b"u3"[..]]);

    let replaced: Vec<i64> = log.updates.iter().map(|(id, _)| *id).collect();
    assert!(store
        .compact_document(&notes, 1, b"s123", &replaced, 5)
        .await
        .unwrap());
    let log = store.document_log(&notes).await.unwrap();
    assert_eq!(log.snapshot.as_deref(), Some(&b"s123"[..]));
    assert_eq!(log.version, 2);
    assert!(log.updates.is_empty());

    let untouched = store.document_log(&other).await.unwrap();
    assert_eq!(untouched.snapshot, None);
    assert_eq!(updates_of(&untouched), [&b"x1"[..]]);
}

async fn a_stale_compaction_changes_nothing(store: Arc<dyn Store>) {
    let notes = document("w1", "notes");
    store
        .append_document_updates(&notes, &[Bytes::from_static(b"u1")])
        .await
        .unwrap();
    let seen = store.document_log(&notes).await.unwrap();
    let ids: Vec<i64> = seen.updates.iter().map(|(id, _)| *id).collect();
    assert!(store
        .compact_document(&notes, 0, b"first", &ids, 5)
        .await
        .unwrap());

    // A second node that read the log before that compaction tries its own.
    store
        .append_document_updates(&notes, &[Bytes::from_static(b"u2")])
        .await
        .unwrap();
    let later = store.document_log(&notes).await.unwrap();
    let later_ids: Vec<i64> = later.updates.iter().map(|(id, _)| *id).collect();
    assert!(!store
        .compact_document(&notes, 0, b"stale", &later_ids, 5)
        .await
        .unwrap());
    let log = store.document_log(&notes).await.unwrap();
    assert_eq!(log.snapshot.as_deref(), Some(&b"first"[..]));
    assert_eq!(
        updates_of(&log),
        [&b"u2"[..]],
        "a refused compaction deletes nothing"
    );
    let versions = store.document_versions(&notes).await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1],
        "a refused compaction keeps no version"
    );
}

/// The ids of a document's logged updates.
async fn logged_ids(store: &Arc<dyn Store>, document: &DocumentId) -> (i64, Vec<i64>) {
    let log = store.document_log(document).await.unwrap();
    (log.version, log.updates.iter().map(|(id, _)| *id).collect())
}

async fn documents_are_listed_by_name_with_size_and_last_update(store: Arc<dyn Store>) {
    let started = switchboard_core::time::now_millis();
    assert!(store.documents("w1", None, 10).await.unwrap().is_empty());
    for (workspace, name, update) in [
        ("w1", "b", &b"bb"[..]),
        ("w1", "a", b"a"),
        ("w2", "a", b"other workspace"),
        ("w1", "c", b"ccc"),
        ("w1", "b", b"bbbb"),
    ] {
        store
            .append_document_updates(
                &document(workspace, name),
                &[Bytes::copy_from_slice(update)],
            )
            .await
            .unwrap();
    }
    let listed = store.documents("w1", None, 10).await.unwrap();
    let shape: Vec<(&str, i64)> = listed.iter().map(|d| (d.name.as_str(), d.bytes)).collect();
    assert_eq!(shape, [("a", 1), ("b", 6), ("c", 3)]);
    let now = switchboard_core::time::now_millis();
    for d in &listed {
        assert!(
            (started..=now).contains(&d.updated_at),
            "{d:?} within {started}..={now}"
        );
    }
    let page: Vec<String> = store
        .documents("w1", Some("a"), 1)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(page, ["b"], "after a cursor, at most the limit");

    // Compaction: the size is the snapshot's plus what was logged since, the
    // last update stays that of the updates it replaced.
    let b = document("w1", "b");
    let before = listed[1].clone();
    let (version, ids) = logged_ids(&store, &b).await;
    assert!(store
        .compact_document(&b, version, b"snap", &ids, 2)
        .await
        .unwrap());
    let after = store.documents("w1", Some("a"), 1).await.unwrap();
    assert_eq!(
        after,
        [DocumentSummary {
            name: "b".into(),
            bytes: 4,
            updated_at: before.updated_at
        }]
    );
    store
        .append_document_updates(&b, &[Bytes::from_static(b"x")])
        .await
        .unwrap();
    let after = store.documents("w1", Some("a"), 1).await.unwrap();
    assert_eq!(after[0].bytes, 5);
    assert!(after[0].updated_at >= before.updated_at);
}

async fn compaction_keeps_the_newest_versions(store: Arc<dyn Store>) {
    let notes = document("w1", "notes");
    assert!(store.document_versions(&notes).await.unwrap().is_empty());
    let started = switchboard_core::time::now_millis();
    for (i, snapshot) in [&b"v1"[..], b"v22", b"v333"].into_iter().enumerate() {
        store
            .append_document_updates(&notes, &[Bytes::from(format!("u{i}"))])
            .await
            .unwrap();
        let (version, ids) = logged_ids(&store, &notes).await;
        assert!(store
            .compact_document(&notes, version, snapshot, &ids, 2)
            .await
            .unwrap());
    }
    let versions = store.document_versions(&notes).await.unwrap();
    let shape: Vec<(i64, i64)> = versions.iter().map(|v| (v.version, v.bytes)).collect();
    assert_eq!(shape, [(3, 4), (2, 3)], "the newest two, newest first");
    let now = switchboard_core::time::now_millis();
    assert!(versions
        .iter()
        .all(|v| (started..=now).contains(&v.created_at)));
    assert_eq!(
        store.document_version(&notes, 2).await.unwrap().as_deref(),
        Some(&b"v22"[..])
    );
    assert_eq!(store.document_version(&notes, 1).await.unwrap(), None);
    assert_eq!(
        store
            .document_version(&document("w2", "notes"), 3)
            .await
            .unwrap(),
        None
    );

    // Keeping none drops those there are.
    store
        .append_document_updates(&notes, &[Bytes::from_static(b"u4")])
        .await
        .unwrap();
    let (version, ids) = logged_ids(&store, &notes).await;
    assert!(store
        .compact_document(&notes, version, b"v4", &ids, 0)
        .await
        .unwrap());
    assert!(store.document_versions(&notes).await.unwrap().is_empty());
    assert_eq!(
        store
            .document_log(&notes)
            .await
            .unwrap()
            .snapshot
            .as_deref(),
        Some(&b"v4"[..])
    );
}

async fn a_deleted_document_is_gone_with_its_versions(store: Arc<dyn Store>) {
    let notes = document("w1", "notes");
    let kept = document("w1", "kept");
    for d in [&notes, &kept] {
        store
            .append_document_updates(d, &[Bytes::from_static(b"u1")])
            .await
            .unwrap();
        let (version, ids) = logged_ids(&store, d).await;
        assert!(store
            .compact_document(d, version, b"s1", &ids, 3)
            .await
            .unwrap());
    }
    store
        .append_document_updates(&notes, &[Bytes::from_static(b"u2")])
        .await
        .unwrap();
    let (version, stale_ids) = logged_ids(&store, &notes).await;

    assert!(store.delete_document(&notes).await.unwrap());
    assert_eq!(
        store.document_log(&notes).await.unwrap(),
        DocumentLog::default()
    );
    assert!(store.document_versions(&notes).await.unwrap().is_empty());
    let names: Vec<String> = store
        .documents("w1", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["kept"]);
    assert!(
        !store.delete_document(&notes).await.unwrap(),
        "already gone"
    );

    // A compaction that read the log before the deletion brings nothing back.
    assert!(!store
        .compact_document(&notes, version, b"s12", &stale_ids, 3)
        .await
        .unwrap());
    assert_eq!(
        store.document_log(&notes).await.unwrap(),
        DocumentLog::default()
    );
    assert!(store.document_versions(&notes).await.unwrap().is_empty());
    assert_eq!(store.document_versions(&kept).await.unwrap().len(), 1);
}

/// Nothing listens on port 1: the database is unreachable, which may change.
#[tokio::test]
async fn an_unreachable_database_is_a_transient_error() {
    let Err(e) = switchboard_store::connect("postgres://root@127.0.0.1:1/test").await else {
        panic!("connected to a closed port");
    };
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    assert!(e.is_transient());
    assert!(std::error::Error::source(&e).is_some());
}

/// A URL that names no engine, or that the engine rejects, will not get better.
#[tokio::test]
async fn a_bad_url_is_a_permanent_error() {
    for url in [
        "mysql://root@127.0.0.1/test",
        "postgres://root@127.0.0.1:5432/test?sslmode=sometimes",
        "sqlite:///nonexistent/switchboard/store.db",
    ] {
        let Err(e) = switchboard_store::connect(url).await else {
            panic!("{url} connected");
        };
        assert!(!e.is_transient(), "{url}: {e:?}");
    }
}
