//! The conformance suite: what every Broker and Presence adapter must do,
//! written once as async functions over a [`Backend`] (a broker URL) and run
//! by `tests/memory.rs`, `tests/redis.rs` and `tests/redis_cluster.rs`.
//!
//! Each function connects its own nodes with [`switchboard_broker::connect`]
//! under a prefix of its own, so tests never see each other's traffic. When
//! the backend is shared (Redis), a second node checks that traffic and
//! presence cross between nodes; the in-process backend has one node only.

#![allow(dead_code)] // `all` is for the binaries that run the suite in one test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_core::{
    Broker, BrokerEvent, BrokerHandler, DocumentId, Presence, PresenceEntry, Topic,
};

/// What deliveries that must not come get to arrive anyway, after a later
/// one that must come did.
const SETTLE: Duration = Duration::from_millis(150);
/// How long a delivery may take.
const WAIT: Duration = Duration::from_secs(5);

/// A broker to test, by URL.
pub struct Backend {
    /// What [`switchboard_broker::connect`] gets.
    pub url: String,
    /// Whether nodes connected to the same URL (and prefix) see each other.
    pub shared: bool,
}

/// One node: its broker, its presence and what its handler got.
pub struct Node {
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn Presence>,
    pub events: Events,
}

/// Every event a node's handler got, in order.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<BrokerEvent>>>);

impl Events {
    fn handler(&self) -> BrokerHandler {
        let events = self.0.clone();
        Arc::new(move |event| events.lock().unwrap().push(event))
    }

    /// Everything so far.
    pub fn all(&self) -> Vec<BrokerEvent> {
        self.0.lock().unwrap().clone()
    }

    /// The payloads delivered on `topic`, in order.
    pub fn payloads(&self, topic: &Topic) -> Vec<Bytes> {
        self.all()
            .into_iter()
            .filter_map(|event| match event {
                BrokerEvent::Delivery { topic: t, payload } if t == *topic => Some(payload),
                _ => None,
            })
            .collect()
    }

    /// Waits until `topic` got `count` payloads; returns them.
    pub async fn wait_payloads(&self, topic: &Topic, count: usize) -> Vec<Bytes> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.payloads(topic);
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{topic}: {} of {count} payloads after {WAIT:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `event` arrived.
    pub async fn wait_event(&self, event: &BrokerEvent) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.all().contains(event) {
            assert!(
                Instant::now() < deadline,
                "no {event:?}: {:?}",
                self.others()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The events that are not deliveries.
    pub fn others(&self) -> Vec<BrokerEvent> {
        self.all()
            .into_iter()
            .filter(|e| !matches!(e, BrokerEvent::Delivery { .. }))
            .collect()
    }
}

impl Node {
    /// A healthy broker sends deliveries only.
    fn assert_quiet(&self) {
        assert_eq!(self.events.others(), vec![], "events besides deliveries");
    }
}

/// A prefix no other test uses.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("sbtest:{}:{nanos}:{test}:", std::process::id())
}

impl Backend {
    /// The in-process backend.
    pub fn memory() -> Self {
        Self {
            url: "memory".into(),
            shared: false,
        }
    }

    /// A node under `prefix`.
    pub async fn node(&self, prefix: &str) -> Node {
        let events = Events::default();
        let (broker, presence) = switchboard_broker::connect(&self.url, prefix, events.handler())
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url));
        Node {
            broker,
            presence,
            events,
        }
    }

    /// One node, and a second one that shares it when the backend allows.
    async fn nodes(&self, test: &str) -> (Node, Option<Node>) {
        let prefix = unique_prefix(test);
        let a = self.node(&prefix).await;
        let b = match self.shared {
            true => Some(self.node(&prefix).await),
            false => None,
        };
        (a, b)
    }
}

fn document(workspace: &str, name: &str) -> Topic {
    Topic::Document(DocumentId {
        workspace: workspace.into(),
        name: name.into(),
    })
}

fn bytes(text: &str) -> Bytes {
    Bytes::from(text.to_owned())
}

/// Every topic kind, with names that need their encoding to be right.
fn topics() -> Vec<Topic> {
    vec![
        Topic::Workspace("w:1/ü".into()),
        Topic::User("user:7".into()),
        document("w:1", "notes 2\nü"),
    ]
}

/// A publish reaches every subscribed node, the publisher included, with its
/// topic and payload as published (empty and binary payloads too).
pub async fn publish_reaches_every_subscriber_including_self(backend: &Backend) {
    let (a, b) = backend.nodes("publish").await;
    let nodes: Vec<&Node> = [Some(&a), b.as_ref()].into_iter().flatten().collect();
    a.broker.ping().await.unwrap();
    for node in &nodes {
        for topic in topics() {
            node.broker.subscribe(&topic).await.unwrap();
        }
    }
    let payloads = [
        bytes("hello"),
        Bytes::new(),
        Bytes::from_static(b"\0\xff\n"),
    ];
    for (topic, payload) in topics().iter().zip(&payloads) {
        a.broker.publish(topic, payload.clone()).await.unwrap();
    }
    if let Some(b) = &b {
        b.broker
            .publish(&topics()[0], bytes("from b"))
            .await
            .unwrap();
    }
    for node in &nodes {
        for (i, (topic, payload)) in topics().iter().zip(&payloads).enumerate() {
            let mut expected = vec![payload.clone()];
            if i == 0 && b.is_some() {
                expected.push(bytes("from b"));
            }
            let got = node.events.wait_payloads(topic, expected.len()).await;
            assert_eq!(got, expected, "{topic}");
        }
    }
    tokio::time::sleep(SETTLE).await;
    for node in &nodes {
        let count = node.events.all().len();
        assert_eq!(count, if b.is_some() { 4 } else { 3 }, "nothing twice");
        node.assert_quiet();
        for topic in topics() {
            node.broker.unsubscribe(&topic).await.unwrap();
        }
    }
}

/// Topics a node did not subscribe to, or no longer does, bring it nothing.
pub async fn unsubscribed_topics_get_nothing(backend: &Backend) {
    let (a, b) = backend.nodes("unsubscribed").await;
    let on = Topic::Workspace("on".into());
    let off = Topic::Workspace("off".into());
    let same_id = Topic::User("on".into());
    a.broker.subscribe(&on).await.unwrap();
    if let Some(b) = &b {
        // Another node's subscription brings this one nothing.
        b.broker.subscribe(&off).await.unwrap();
    }
    a.broker.publish(&off, bytes("not for a")).await.unwrap();
    a.broker
        .publish(&same_id, bytes("not for a"))
        .await
        .unwrap();
    a.broker.publish(&on, bytes("first")).await.unwrap();
    a.events.wait_payloads(&on, 1).await;
    if let Some(b) = &b {
        assert_eq!(
            b.events.wait_payloads(&off, 1).await,
            vec![bytes("not for a")]
        );
        assert!(b.events.payloads(&on).is_empty());
    }

    a.broker.unsubscribe(&on).await.unwrap();
    a.broker.publish(&on, bytes("after")).await.unwrap();
    let sentinel = document("on", "sentinel");
    a.broker.subscribe(&sentinel).await.unwrap();
    a.broker
        .publish(&sentinel, bytes("sentinel"))
        .await
        .unwrap();
    a.events.wait_payloads(&sentinel, 1).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(a.events.payloads(&on), vec![bytes("first")]);
    assert!(a.events.payloads(&off).is_empty());
    assert!(a.events.payloads(&same_id).is_empty());
    a.assert_quiet();
    a.broker.unsubscribe(&sentinel).await.unwrap();
}

/// A topic stays subscribed until as many unsubscribes as subscribes; an
/// unsubscribe too many changes nothing.
pub async fn subscriptions_are_counted(backend: &Backend) {
    let (a, _b) = backend.nodes("counted").await;
    let topic = Topic::User("counted".into());
    let sentinel = Topic::User("sentinel".into());
    a.broker.subscribe(&sentinel).await.unwrap();
    a.broker.unsubscribe(&topic).await.unwrap();
    a.broker.subscribe(&topic).await.unwrap();
    a.broker.subscribe(&topic).await.unwrap();
    a.broker.unsubscribe(&topic).await.unwrap();
    a.broker.publish(&topic, bytes("one")).await.unwrap();
    a.events.wait_payloads(&topic, 1).await;

    a.broker.unsubscribe(&topic).await.unwrap();
    a.broker.unsubscribe(&topic).await.unwrap();
    a.broker.publish(&topic, bytes("two")).await.unwrap();
    a.broker.publish(&sentinel, bytes("s")).await.unwrap();
    a.events.wait_payloads(&sentinel, 1).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(a.events.payloads(&topic), vec![bytes("one")]);

    a.broker.subscribe(&topic).await.unwrap();
    a.broker.publish(&topic, bytes("three")).await.unwrap();
    assert_eq!(
        a.events.wait_payloads(&topic, 2).await,
        vec![bytes("one"), bytes("three")]
    );
    a.assert_quiet();
    a.broker.unsubscribe(&topic).await.unwrap();
    a.broker.unsubscribe(&sentinel).await.unwrap();
}

/// Publishes on one topic arrive in publish order, on every node.
pub async fn order_is_kept_per_topic(backend: &Backend) {
    let (a, b) = backend.nodes("order").await;
    let nodes: Vec<&Node> = [Some(&a), b.as_ref()].into_iter().flatten().collect();
    let one = Topic::Workspace("one".into());
    let two = document("one", "two");
    for node in &nodes {
        node.broker.subscribe(&one).await.unwrap();
        node.broker.subscribe(&two).await.unwrap();
    }
    const COUNT: usize = 200;
    for i in 0..COUNT {
        a.broker.publish(&one, bytes(&i.to_string())).await.unwrap();
        a.broker.publish(&two, bytes(&i.to_string())).await.unwrap();
    }
    let expected: Vec<Bytes> = (0..COUNT).map(|i| bytes(&i.to_string())).collect();
    for node in &nodes {
        assert_eq!(node.events.wait_payloads(&one, COUNT).await, expected);
        assert_eq!(node.events.wait_payloads(&two, COUNT).await, expected);
        node.assert_quiet();
    }
}

fn entry(connection: &str, user: &str, name: Option<&str>) -> PresenceEntry {
    PresenceEntry {
        connection: connection.into(),
        user_id: user.into(),
        name: name.map(str::to_owned),
    }
}

fn user(id: &str, name: Option<&str>) -> (String, Option<String>) {
    (id.to_owned(), name.map(str::to_owned))
}

/// A user is present while any of their connections is, once per workspace,
/// in order of user id; joins and leaves say when a user arrives and goes.
pub async fn presence_counts_users_across_connections(backend: &Backend) {
    let (a, b) = backend.nodes("presence").await;
    let (pa, pb) = (&a.presence, &b.as_ref().unwrap_or(&a).presence);
    let now = 1_000_000;
    let until = now + 1000;
    let alice = Some("Alice");
    assert!(pa
        .join("w", &entry("c1", "alice", alice), until, now)
        .await
        .unwrap());
    assert!(!pb
        .join("w", &entry("c2", "alice", alice), until, now)
        .await
        .unwrap());
    assert!(!pa
        .join("w", &entry("c1", "alice", alice), until, now)
        .await
        .unwrap());
    assert!(pa
        .join("w", &entry("c3", "bob", None), until, now)
        .await
        .unwrap());
    assert!(pb
        .join("v", &entry("c4", "alice", alice), until, now)
        .await
        .unwrap());
    for p in [pa, pb] {
        assert_eq!(
            p.users("w", now).await.unwrap(),
            vec![user("alice", alice), user("bob", None)]
        );
        assert_eq!(p.users("v", now).await.unwrap(), vec![user("alice", alice)]);
        assert_eq!(p.users("nobody", now).await.unwrap(), vec![]);
    }

    assert_eq!(pa.leave("w", "c1", now).await.unwrap(), None, "c2 is left");
    assert_eq!(
        pa.leave("w", "c1", now).await.unwrap(),
        None,
        "already gone"
    );
    assert_eq!(pa.leave("w", "c9", now).await.unwrap(), None);
    assert_eq!(pa.leave("nowhere", "c2", now).await.unwrap(), None);
    assert_eq!(pa.users("w", now).await.unwrap().len(), 2);
    assert_eq!(
        pa.leave("w", "c2", now).await.unwrap(),
        Some("alice".into())
    );
    assert_eq!(pb.users("w", now).await.unwrap(), vec![user("bob", None)]);
    assert_eq!(
        pb.users("v", now).await.unwrap(),
        vec![user("alice", alice)]
    );

    assert_eq!(pb.leave("w", "c3", now).await.unwrap(), Some("bob".into()));
    assert_eq!(
        pa.leave("v", "c4", now).await.unwrap(),
        Some("alice".into())
    );
    assert_eq!(pa.users("w", now).await.unwrap(), vec![]);
    assert_eq!(pa.expire(now).await.unwrap(), vec![]);
}

/// An entry lives until its expiry (exclusive) unless refreshed; `expire`
/// drops the expired ones and reports each user left with no entry once, on
/// one node only.
pub async fn presence_entries_expire(backend: &Backend) {
    let (a, b) = backend.nodes("expiry").await;
    let (pa, pb) = (&a.presence, &b.as_ref().unwrap_or(&a).presence);
    let now = 1_000_000;
    assert!(pa
        .join("w", &entry("c1", "alice", None), now + 100, now)
        .await
        .unwrap());
    assert!(!pa
        .join("w", &entry("c2", "alice", None), now + 200, now)
        .await
        .unwrap());
    assert!(pa
        .join("w", &entry("c3", "bob", None), now + 100, now)
        .await
        .unwrap());
    assert!(pb
        .join("x", &entry("c4", "carol", None), now + 100, now)
        .await
        .unwrap());

    // Expired entries no longer count, even before `expire` drops them.
    assert_eq!(
        pa.users("w", now + 99).await.unwrap(),
        vec![user("alice", None), user("bob", None)]
    );
    assert_eq!(
        pa.users("w", now + 100).await.unwrap(),
        vec![user("alice", None)]
    );
    assert_eq!(pb.users("x", now + 100).await.unwrap(), vec![]);

    let mut gone = pb.expire(now + 150).await.unwrap();
    gone.sort();
    assert_eq!(
        gone,
        vec![
            ("w".to_owned(), "bob".to_owned()),
            ("x".to_owned(), "carol".to_owned())
        ],
        "alice still has c2"
    );
    assert_eq!(pa.expire(now + 150).await.unwrap(), vec![], "reported once");
    assert_eq!(
        pa.users("w", now + 150).await.unwrap(),
        vec![user("alice", None)]
    );

    // A refresh keeps an entry.
    assert!(!pa
        .join("w", &entry("c2", "alice", None), now + 400, now + 150)
        .await
        .unwrap());
    assert_eq!(pa.expire(now + 300).await.unwrap(), vec![]);
    assert_eq!(
        pb.expire(now + 400).await.unwrap(),
        vec![("w".to_owned(), "alice".to_owned())]
    );
    assert_eq!(pa.users("w", now + 400).await.unwrap(), vec![]);
    assert_eq!(
        pa.leave("w", "c2", now + 400).await.unwrap(),
        None,
        "gone already"
    );

    // A user whose entries all expired arrives anew.
    assert!(pa
        .join("w", &entry("c5", "alice", None), now + 900, now + 400)
        .await
        .unwrap());
    assert_eq!(
        pa.leave("w", "c5", now + 400).await.unwrap(),
        Some("alice".into())
    );
    assert_eq!(pa.expire(now + 1000).await.unwrap(), vec![]);
}

/// Rounds of [`presence_is_atomic_across_nodes`]: each is a race that an
/// adapter reading then writing loses now and then.
const RACES: usize = 120;

/// Presence changes are atomic across nodes: a user joining on two nodes at
/// once arrives once and, leaving on both at once, goes once; a workspace
/// being joined while another node finds it empty stays in the index that
/// `expire` walks.
pub async fn presence_is_atomic_across_nodes(backend: &Backend) {
    let (a, b) = backend.nodes("atomic").await;
    let (pa, pb) = (&a.presence, &b.as_ref().unwrap_or(&a).presence);
    let now = 1_000_000;
    let until = now + 1000;
    for round in 0..RACES {
        let user = format!("u{round}");
        let (on_a, on_b) = (format!("a{round}"), format!("b{round}"));
        let (entry_a, entry_b) = (entry(&on_a, &user, None), entry(&on_b, &user, None));
        let (first, second) = tokio::join!(
            pa.join("w", &entry_a, until, now),
            pb.join("w", &entry_b, until, now),
        );
        let arrivals = [first.unwrap(), second.unwrap()];
        assert_eq!(
            arrivals.iter().filter(|&&a| a).count(),
            1,
            "round {round}: {user} arrived {arrivals:?}"
        );
        let (first, second) = tokio::join!(pa.leave("w", &on_a, now), pb.leave("w", &on_b, now),);
        let departures = [first.unwrap(), second.unwrap()];
        assert_eq!(
            departures.iter().flatten().count(),
            1,
            "round {round}: {user} went {departures:?}"
        );
    }

    for round in 0..RACES {
        let workspace = format!("x{round}");
        assert!(pa
            .join(&workspace, &entry("old", "ann", None), now + 10, now)
            .await
            .unwrap());
        // `expire` finds the workspace empty while `join` fills it again,
        // started a little later each round so that it lands everywhere in
        // `expire`'s commands.
        let bea = entry("new", "bea", None);
        let offset = Duration::from_micros((round as u64 * 97) % 3000);
        let (expired, joined) = tokio::join!(pb.expire(now + 20), async {
            let start = Instant::now();
            while start.elapsed() < offset {
                tokio::task::yield_now().await;
            }
            pa.join(&workspace, &bea, now + 500, now + 20).await
        });
        expired.unwrap();
        assert!(joined.unwrap());
        let gone = pa.expire(now + 600).await.unwrap();
        assert!(
            gone.contains(&(workspace.clone(), "bea".to_owned())),
            "round {round}: {workspace} fell out of the index; expire saw {gone:?}"
        );
    }
    assert_eq!(pa.expire(now + 2000).await.unwrap(), vec![]);
}

/// Runs the whole suite, one function after the other.
pub async fn all(backend: &Backend) {
    publish_reaches_every_subscriber_including_self(backend).await;
    unsubscribed_topics_get_nothing(backend).await;
    subscriptions_are_counted(backend).await;
    order_is_kept_per_topic(backend).await;
    presence_counts_users_across_connections(backend).await;
    presence_entries_expire(backend).await;
    presence_is_atomic_across_nodes(backend).await;
}

#[allow(unused_macros)] // `tests/redis_cluster.rs` runs `all` instead.
/// One `#[tokio::test]` per conformance function, against the backend that
/// `$backend` (an `async fn() -> Option<Backend>`; `None` skips) gives.
macro_rules! conformance_tests {
    ($backend:path) => {
        conformance_tests!(@each $backend;
            publish_reaches_every_subscriber_including_self,
            unsubscribed_topics_get_nothing,
            subscriptions_are_counted,
            order_is_kept_per_topic,
            presence_counts_users_across_connections,
            presence_entries_expire,
            presence_is_atomic_across_nodes,
        );
    };
    (@each $backend:path; $($name:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(backend) = $backend().await {
                    conformance::$name(&backend).await;
                }
            }
        )*
    };
}
