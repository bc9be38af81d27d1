//! The Redis Cluster broker and presence against real 3-master Redis
//! Clusters that these tests start on free loopback ports
//! (`tests/support`; skipped without `redis-server` and `redis-cli`, unless
//! `CI=true`).
//!
//! The conformance suite runs on one cluster. A scenario runs in order on
//! another: topics spread over the shards and reach the other node;
//! listeners are counted; nothing uses classic `PUBLISH`; a slot moved to
//! another master (`CLUSTER SETSLOT ... NODE`) is followed by publishers
//! (`MOVED`) and subscribers (the server's `sunsubscribe`); presence works
//! with keys on several shards; a master killed and restarted makes `ping`
//! and its publishes fail fast with a transient error and the nodes hear
//! `Down`, then everything resumes by itself (`Up`, `Resubscribed`).

mod conformance;
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use conformance::{unique_prefix, Backend, Node};
use support::{admin, eventually, TestRedis};
use switchboard_core::{BrokerEvent, PresenceEntry, Topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_real_cluster() {
    let Some(cluster) = TestRedis::cluster().await else {
        return;
    };
    let backend = Backend {
        url: cluster.url(),
        shared: true,
    };
    conformance::all(&backend).await;
}

/// `(node id, port, slot ranges)` of every master, from `CLUSTER NODES`.
async fn masters(port: u16) -> Vec<(String, u16, Vec<(u16, u16)>)> {
    let text: String = admin(port, &["CLUSTER", "NODES"])
        .await
        .expect("CLUSTER NODES");
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 || !fields[2].contains("master") {
            continue;
        }
        let port = fields[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("node address");
        let ranges = fields[8..]
            .iter()
            .filter(|r| !r.starts_with('['))
            .map(|r| match r.split_once('-') {
                Some((a, b)) => (a.parse().expect("slot"), b.parse().expect("slot")),
                None => {
                    let s = r.parse().expect("slot");
                    (s, s)
                }
            })
            .collect();
        out.push((fields[0].to_owned(), port, ranges));
    }
    out
}

async fn owner_of(port: u16, slot: u16) -> (String, u16) {
    masters(port)
        .await
        .into_iter()
        .find(|(_, _, ranges)| ranges.iter().any(|&(a, b)| a <= slot && slot <= b))
        .map(|(id, port, _)| (id, port))
        .expect("a master serves the slot")
}

async fn slot_of(port: u16, key: &str) -> u16 {
    admin::<u16>(port, &["CLUSTER", "KEYSLOT", key])
        .await
        .expect("CLUSTER KEYSLOT")
}

/// `PUBSUB SHARDNUMSUB channel` on one master.
async fn shard_subscribers(port: u16, channel: &str) -> i64 {
    let reply: Vec<redis::Value> = admin(port, &["PUBSUB", "SHARDNUMSUB", channel])
        .await
        .expect("PUBSUB SHARDNUMSUB");
    match reply.get(1) {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("unexpected SHARDNUMSUB reply {other:?}"),
    }
}

fn got(node: &Node, topic: &Topic, payload: &str) -> bool {
    node.events
        .payloads(topic)
        .iter()
        .any(|p| p.as_ref() == payload.as_bytes())
}

/// Waits (at most 5 s) until `node` got `payload` on `topic`.
async fn delivered(node: &Node, topic: &Topic, payload: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got(node, topic, payload) {
        assert!(
            Instant::now() < deadline,
            "{payload:?} never arrived on {topic}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_pubsub_and_presence_on_a_real_cluster() {
    let Some(mut cluster) = TestRedis::cluster().await else {
        return;
    };
    let backend = Backend {
        url: cluster.url(),
        shared: true,
    };
    let first = cluster.ports[0];
    let prefix = unique_prefix("scenario");
    let a = backend.node(&prefix).await;
    let b = backend.node(&prefix).await;
    a.broker.ping().await.expect("ping with every master up");
    let full = |topic: &Topic| format!("{prefix}{}", topic.channel());

    // Topics spread over the shards, each on the master of its slot.
    let topics: Vec<Topic> = (0..24).map(|i| Topic::Workspace(format!("c{i}"))).collect();
    for topic in &topics {
        b.broker.subscribe(topic).await.unwrap();
    }
    let mut shards_used = std::collections::HashSet::new();
    for topic in &topics {
        let full = full(topic);
        let (_, owner) = owner_of(first, slot_of(first, &full).await).await;
        for &port in &cluster.ports {
            let n = shard_subscribers(port, &full).await;
            assert_eq!(
                n,
                i64::from(port == owner),
                "{full} on {port} (owner {owner})"
            );
        }
        shards_used.insert(owner);
    }
    assert_eq!(shards_used.len(), 3, "24 topics use all three shards");

    for topic in &topics {
        a.broker
            .publish(topic, Bytes::from(format!("hello {topic}")))
            .await
            .unwrap();
    }
    for topic in &topics {
        delivered(&b, topic, &format!("hello {topic}")).await;
    }
    for &port in &cluster.ports {
        let classic: Vec<String> = admin(port, &["PUBSUB", "CHANNELS"]).await.unwrap();
        assert!(
            classic.is_empty(),
            "no classic pub/sub on {port}: {classic:?}"
        );
        let stats: String = admin(port, &["INFO", "commandstats"]).await.unwrap();
        assert!(!stats.contains("cmdstat_publish:"), "no PUBLISH on {port}");
    }

    // Listeners are counted: the subscription stays until the last one goes.
    let counted = Topic::Workspace("counted".into());
    let counted_full = full(&counted);
    let (_, owner) = owner_of(first, slot_of(first, &counted_full).await).await;
    b.broker.subscribe(&counted).await.unwrap();
    b.broker.subscribe(&counted).await.unwrap();
    b.broker.unsubscribe(&counted).await.unwrap();
    a.broker
        .publish(&counted, Bytes::from_static(b"still"))
        .await
        .unwrap();
    delivered(&b, &counted, "still").await;
    assert_eq!(shard_subscribers(owner, &counted_full).await, 1);
    b.broker.unsubscribe(&counted).await.unwrap();
    eventually(
        "SUNSUBSCRIBE after the last listener",
        Duration::from_secs(5),
        || {
            let full = counted_full.clone();
            async move { (shard_subscribers(owner, &full).await == 0).then_some(()) }
        },
    )
    .await;

    // A slot moves to another master: the publisher follows MOVED, the
    // subscriber follows the server's sunsubscribe.
    let moved = &topics[0];
    let moved_full = full(moved);
    let slot = slot_of(first, &moved_full).await;
    let (source_id, source) = owner_of(first, slot).await;
    let (target_id, target) = masters(first)
        .await
        .into_iter()
        .find(|(_, port, _)| *port != source)
        .map(|(id, port, _)| (id, port))
        .unwrap();
    let s = slot.to_string();
    let _: () = admin(target, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &source_id])
        .await
        .unwrap();
    let _: () = admin(source, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &target_id])
        .await
        .unwrap();
    let _: () = admin(target, &["CLUSTER", "SETSLOT", &s, "NODE", &target_id])
        .await
        .unwrap();
    let _: () = admin(source, &["CLUSTER", "SETSLOT", &s, "NODE", &target_id])
        .await
        .unwrap();
    for &port in &cluster.ports {
        if port != source && port != target {
            let _: () = admin(port, &["CLUSTER", "SETSLOT", &s, "NODE", &target_id])
                .await
                .unwrap();
        }
    }
    eventually(
        "b subscribed on the slot's new master",
        Duration::from_secs(10),
        || {
            let full = moved_full.clone();
            async move { (shard_subscribers(target, &full).await == 1).then_some(()) }
        },
    )
    .await;
    assert_eq!(shard_subscribers(source, &moved_full).await, 0);
    for i in 0.. {
        let payload = format!("after the move #{i}");
        a.broker
            .publish(moved, Bytes::from(payload.clone()))
            .await
            .expect("publish follows MOVED");
        if got(&b, moved, &payload) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if got(&b, moved, &payload) {
            break;
        }
        assert!(i < 50, "no delivery after the slot moved");
    }

    // Presence: one sorted set per workspace, on the shards of their slots.
    let (presence, presence_b) = (&a.presence, &b.presence);
    let now = 1_000_000;
    let entry = |conn: &str, user: &str| PresenceEntry {
        connection: conn.into(),
        user_id: user.into(),
        name: Some(format!("{user}!")),
    };
    let workspaces: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    let mut presence_shards = std::collections::HashSet::new();
    for ws in &workspaces {
        let key = format!("{prefix}presence:{ws}");
        presence_shards.insert(owner_of(first, slot_of(first, &key).await).await.1);
        assert!(presence
            .join(ws, &entry("c1", "alice"), now + 1000, now)
            .await
            .unwrap());
        assert!(presence_b
            .join(ws, &entry("c3", "bob"), now + 500, now)
            .await
            .unwrap());
    }
    assert!(presence_shards.len() > 1, "presence sets on several shards");
    let mut expired = presence.expire(now + 600).await.unwrap();
    expired.sort();
    let mut expected: Vec<(String, String)> = workspaces
        .iter()
        .map(|w| (w.clone(), "bob".to_owned()))
        .collect();
    expected.sort();
    assert_eq!(expired, expected, "bob's entries expire once");
    assert!(presence_b.expire(now + 600).await.unwrap().is_empty());
    for ws in &workspaces {
        assert_eq!(
            presence.leave(ws, "c1", now + 600).await.unwrap(),
            Some("alice".into())
        );
        assert!(presence.users(ws, now + 600).await.unwrap().is_empty());
    }

    // A master dies: readiness and its publishes fail fast, the others go on.
    let victim = cluster.ports[1];
    let mut on_victim = None;
    let mut elsewhere = None;
    for topic in &topics[1..] {
        let (_, owner) = owner_of(first, slot_of(first, &full(topic)).await).await;
        if owner == victim && on_victim.is_none() {
            on_victim = Some(topic.clone());
        } else if owner != victim && elsewhere.is_none() {
            elsewhere = Some(topic.clone());
        }
    }
    let (on_victim, elsewhere) = (on_victim.unwrap(), elsewhere.unwrap());
    // The moved slot may have brought b a `Resubscribed`, nothing else.
    for node in [&a, &b] {
        let others = node.events.others();
        assert!(
            others.iter().all(|e| *e == BrokerEvent::Resubscribed),
            "{others:?}"
        );
    }
    let before = b.events.others().len();
    cluster.kill(victim);
    let (a, b) = (&a, &b);
    eventually(
        "ping fails with a master down",
        Duration::from_secs(5),
        || async move {
            (a.broker.ping().await.is_err() && b.broker.ping().await.is_err()).then_some(())
        },
    )
    .await;
    a.events.wait_event(&BrokerEvent::Down).await;
    b.events.wait_event(&BrokerEvent::Down).await;
    let started = Instant::now();
    let e = a
        .broker
        .publish(&on_victim, Bytes::from_static(b"lost"))
        .await
        .expect_err("its master is down");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a publish to a down shard fails fast ({:?})",
        started.elapsed()
    );
    assert!(e.is_transient(), "{e}");
    a.broker
        .publish(&elsewhere, Bytes::from_static(b"during"))
        .await
        .expect("other shards work");
    delivered(b, &elsewhere, "during").await;

    cluster.spawn(victim);
    eventually(
        "ping recovers after the restart",
        Duration::from_secs(15),
        || async move {
            (a.broker.ping().await.is_ok() && b.broker.ping().await.is_ok()).then_some(())
        },
    )
    .await;
    a.events.wait_event(&BrokerEvent::Up).await;
    b.events.wait_event(&BrokerEvent::Resubscribed).await;
    let others = b.events.others();
    assert_eq!(
        &others[before..before + 2],
        &[BrokerEvent::Down, BrokerEvent::Up],
        "{others:?}"
    );
    for i in 0.. {
        let payload = format!("after the restart #{i}");
        if a.broker
            .publish(&on_victim, Bytes::from(payload.clone()))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if got(b, &on_victim, &payload) {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(i < 100, "no delivery on the restarted shard");
    }
}
