//! The conformance suite against one Redis (`SWITCHBOARD_TEST_REDIS`, by
//! default `redis://127.0.0.1:6379`; skipped when unreachable, unless
//! `CI=true`), then what only a networked broker does, on a `redis-server` of
//! the test's own: errors that say whether to retry, and `Down`, `Up` and
//! `Resubscribed` around a lost connection.

#[macro_use]
mod conformance;
mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conformance::{unique_prefix, Backend};
use support::{eventually, TestRedis};
use switchboard_core::{BrokerError, BrokerEvent, Topic};

async fn backend() -> Option<Backend> {
    let url = std::env::var("SWITCHBOARD_TEST_REDIS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let ping = async {
        let client = redis::Client::open(url.as_str()).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .ok()
    };
    if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), ping).await {
        return Some(Backend { url, shared: true });
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "no Redis at {url} (CI=true)"
    );
    eprintln!("skipped: no Redis at {url}");
    None
}

conformance_tests!(backend);

#[tokio::test]
async fn errors_say_whether_to_retry() {
    // Nothing listens on port 1.
    let unreachable = switchboard_broker::connect("redis://127.0.0.1:1", "p:", Arc::new(|_| {}))
        .await
        .err()
        .expect("no Redis there");
    assert!(unreachable.is_transient(), "{unreachable}");
    assert!(std::error::Error::source(&unreachable).is_some());
    let invalid = switchboard_broker::connect("redis://127.0.0.1:notaport", "p:", Arc::new(|_| {}))
        .await
        .err()
        .expect("not a URL");
    assert!(
        matches!(invalid, BrokerError::InvalidUrl { .. }),
        "{invalid}"
    );
    assert!(!invalid.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_reported_and_subscriptions_come_back() {
    let Some(mut redis) = TestRedis::standalone().await else {
        return;
    };
    let port = redis.ports[0];
    let backend = Backend {
        url: redis.url(),
        shared: true,
    };
    let prefix = unique_prefix("lost");
    let (a, b) = (backend.node(&prefix).await, backend.node(&prefix).await);
    let topic = Topic::Workspace("w".into());
    b.broker.subscribe(&topic).await.unwrap();

    redis.kill(port);
    a.events.wait_event(&BrokerEvent::Down).await;
    b.events.wait_event(&BrokerEvent::Down).await;
    let e = a
        .broker
        .publish(&topic, Bytes::from_static(b"lost"))
        .await
        .expect_err("Redis is down");
    assert!(e.is_transient(), "{e}");
    assert!(a.broker.ping().await.is_err());

    redis.spawn(port);
    a.events.wait_event(&BrokerEvent::Resubscribed).await;
    b.events.wait_event(&BrokerEvent::Resubscribed).await;
    for node in [&a, &b] {
        assert_eq!(
            node.events.others(),
            vec![
                BrokerEvent::Down,
                BrokerEvent::Up,
                BrokerEvent::Resubscribed
            ]
        );
    }
    // b subscribed again by itself.
    let (a, b) = (&a, &b);
    eventually(
        "a delivery after the restart",
        Duration::from_secs(10),
        || {
            let topic = topic.clone();
            async move {
                let _ = a.broker.publish(&topic, Bytes::from_static(b"back")).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                b.events
                    .payloads(&topic)
                    .contains(&Bytes::from_static(b"back"))
                    .then_some(())
            }
        },
    )
    .await;
    a.broker.ping().await.unwrap();
}
