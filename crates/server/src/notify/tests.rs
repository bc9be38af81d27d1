//! In-process tests of the notification hub (listeners, slow consumers,
//! resubscription, the stream limit) and of the publisher's id order.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::json;
use switchboard_core::{Broker, BrokerError, BrokerEvent, ErrorCode, NewNotification, Topic};
use tokio::sync::mpsc;

use super::{Hub, Kind, Publisher, Signal};

/// A hub on the in-process broker, whose deliveries go nowhere: the tests
/// hand payloads to the hub themselves.
async fn hub(max_streams_per_user: usize) -> Arc<Hub> {
    let (broker, _presence) = switchboard_broker::connect("memory", "test:", Arc::new(|_| {}))
        .await
        .expect("memory broker");
    Arc::new(Hub::new(broker, max_streams_per_user))
}

fn payload(id: i64) -> Vec<u8> {
    format!("{id}\n{{\"id\":{id}}}").into_bytes()
}

/// What is queued for a listener now, without waiting: notification ids, and
/// `-1` for a catch-up.
fn drain(receiver: &mut mpsc::Receiver<Signal>) -> Vec<i64> {
    let mut ids = Vec::new();
    while let Ok(signal) = receiver.try_recv() {
        ids.push(match signal {
            Signal::Item(item) => item.id,
            Signal::CatchUp => -1,
        });
    }
    ids
}

#[tokio::test]
async fn a_notification_reaches_every_listener_of_its_user_and_no_one_else() {
    let hub = hub(10).await;
    let (_stream, mut stream) = hub.listen("alice", Kind::Stream).await.expect("stream");
    let (_poll, mut poll) = hub.listen("alice", Kind::Poll).await.expect("poll");
    let (_other, mut other) = hub.listen("bob", Kind::Stream).await.expect("bob");
    hub.deliver("alice", &payload(7));
    assert_eq!(drain(&mut stream), [7]);
    assert_eq!(drain(&mut poll), [7]);
    assert_eq!(drain(&mut other), Vec::<i64>::new());
}

#[tokio::test]
async fn a_listener_that_falls_behind_is_dropped_and_the_others_keep_theirs() {
    let hub = hub(10).await;
    let (_slow, mut slow) = hub.listen("alice", Kind::Stream).await.expect("slow");
    let (_fast, mut fast) = hub.listen("alice", Kind::Stream).await.expect("fast");
    let mut fast_ids = Vec::new();
    for id in 1..=100 {
        hub.deliver("alice", &payload(id));
        fast_ids.extend(drain(&mut fast));
    }
    assert_eq!(fast_ids, (1..=100).collect::<Vec<_>>());
    // The slow one got what fitted in its queue, then its stream ended: the
    // client resumes from its last id and misses nothing.
    let slow_ids = drain(&mut slow);
    assert_eq!(slow_ids, (1..=slow_ids.len() as i64).collect::<Vec<_>>());
    assert!(slow_ids.len() < 100);
    assert!(
        slow.recv().await.is_none(),
        "the slow listener was not dropped"
    );
    assert_eq!(hub.listener_count(), 1);
}

#[tokio::test]
async fn a_resubscription_tells_every_listener_to_catch_up_in_line() {
    let hub = hub(10).await;
    let (_a, mut a) = hub.listen("alice", Kind::Stream).await.expect("a");
    let (_b, mut b) = hub.listen("bob", Kind::Poll).await.expect("b");
    hub.deliver("alice", &payload(3));
    hub.resubscribed();
    hub.deliver("alice", &payload(9));
    assert_eq!(drain(&mut a), [3, -1, 9]);
    assert_eq!(drain(&mut b), [-1]);
    assert_eq!(hub.listener_count(), 2);
}

#[tokio::test]
async fn streams_per_user_are_limited_and_polls_are_not_counted() {
    let hub = hub(2).await;
    let _one = hub.listen("alice", Kind::Stream).await.expect("one");
    let _two = hub.listen("alice", Kind::Stream).await.expect("two");
    let _poll = hub.listen("alice", Kind::Poll).await.expect("a poll");
    let refused = hub
        .listen("alice", Kind::Stream)
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.code, ErrorCode::RateLimited);
    let _bob = hub.listen("bob", Kind::Stream).await.expect("another user");
    drop(_one);
    let _three = hub.listen("alice", Kind::Stream).await.expect("room again");
}

/// The in-process broker with a random delay of up to 2 ms before each
/// publish: the latency a real broker adds, which lets a later commit overtake
/// an earlier one unless the publisher keeps them in order.
struct SlowBroker(Arc<dyn Broker>);

#[async_trait::async_trait]
impl Broker for SlowBroker {
    async fn publish(&self, topic: &Topic, payload: Bytes) -> Result<(), BrokerError> {
        let mut raw = [0u8; 1];
        getrandom::fill(&mut raw).expect("random");
        tokio::time::sleep(std::time::Duration::from_micros(u64::from(raw[0]) * 8)).await;
        self.0.publish(topic, payload).await
    }
    async fn subscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        self.0.subscribe(topic).await
    }
    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        self.0.unsubscribe(topic).await
    }
    async fn ping(&self) -> Result<(), BrokerError> {
        self.0.ping().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_notifications_reach_a_listener_in_id_order() {
    let folder = std::env::temp_dir().join(format!("switchboard-notify-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("folder");
    let store =
        switchboard_store::connect(&format!("sqlite://{}", folder.join("order.db").display()))
            .await
            .expect("store");
    let target: Arc<OnceLock<Arc<Hub>>> = Arc::default();
    let to_hub = target.clone();
    let (broker, _presence) = switchboard_broker::connect(
        "memory",
        "test:",
        Arc::new(move |event| {
            if let (
                BrokerEvent::Delivery {
                    topic: Topic::User(user),
                    payload,
                },
                Some(hub),
            ) = (event, to_hub.get())
            {
                hub.deliver(&user, &payload);
            }
        }),
    )
    .await
    .expect("broker");
    let hub = Arc::new(Hub::new(broker.clone(), 10));
    let _ = target.set(hub.clone());
    let publisher = Arc::new(Publisher::new(
        store,
        Arc::new(SlowBroker(broker)),
        hub.clone(),
    ));
    let (_listener, mut receiver) = hub.listen("alice", Kind::Stream).await.expect("listen");
    const COUNT: usize = 60;
    let sends: Vec<_> = (0..COUNT)
        .map(|i| {
            let publisher = publisher.clone();
            tokio::spawn(async move {
                publisher
                    .notify(NewNotification {
                        user_id: "alice".to_owned(),
                        kind: "test".to_owned(),
                        data: json!({ "i": i }),
                        created_at: switchboard_core::time::now_millis(),
                    })
                    .await
                    .expect("stored")
                    .id
            })
        })
        .collect();
    let mut stored = Vec::new();
    for send in sends {
        stored.push(send.await.expect("task"));
    }
    stored.sort_unstable();
    let mut received = Vec::new();
    while received.len() < COUNT {
        let item = tokio::time::timeout(std::time::Duration::from_secs(10), receiver.recv())
            .await
            .expect("a notification within 10 s")
            .expect("the listener is open");
        let Signal::Item(item) = item else {
            panic!("a catch-up without a resubscription")
        };
        received.push(item.id);
    }
    let _ = std::fs::remove_dir_all(&folder);
    assert_eq!(received, stored, "published out of id order");
}
