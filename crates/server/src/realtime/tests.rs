//! In-process tests of the ordering task and of admission: a real node on a
//! loopback port, raw long-polling clients, the in-process broker and SQLite.

use serde_json::{json, Value};
use switchboard_core::NewMessage;

use crate::testing::{PollingClient, TestNode};

fn assert_ok(ack: &Value) {
    assert_eq!(ack["ok"], json!(true), "refused: {ack}");
}

async fn join(client: &mut PollingClient, workspace: &str) {
    assert_ok(
        &client
            .call("join_workspace", json!({ "workspaceId": workspace }))
            .await,
    );
}

/// Stores `count` messages of `workspace` directly, as earlier traffic would have.
async fn seed(node: &TestNode, workspace: &str, count: usize) {
    let batch: Vec<NewMessage> = (0..count)
        .map(|i| NewMessage {
            workspace_id: workspace.to_owned(),
            user_id: "seed".to_owned(),
            content: format!("{i}: {}", "x".repeat(200)),
            client_msg_id: None,
            created_at: switchboard_core::time::now_millis(),
        })
        .collect();
    for chunk in batch.chunks(500) {
        node.app.store.insert_messages(chunk).await.expect("seed");
    }
}

/// The ids of the `message` events read so far.
fn message_ids(client: &mut PollingClient) -> Vec<i64> {
    client
        .take_events("message")
        .iter()
        .map(|args| args[0]["id"].as_i64().expect("message id"))
        .collect()
}

/// Reads until `count` messages have arrived (those read already included);
/// fails after 30 s, when some are missing.
async fn read_messages(client: &mut PollingClient, count: usize) -> Vec<i64> {
    let mut ids = message_ids(client);
    let reading = async {
        while ids.len() < count {
            client.read().await;
            ids.extend(message_ids(client));
        }
    };
    let finished = tokio::time::timeout(std::time::Duration::from_secs(30), reading).await;
    assert!(
        finished.is_ok(),
        "only {} of {count} messages arrived",
        ids.len()
    );
    ids
}

/// Makes a client that never reads join `w` with all its history: the replay
/// fills the client's queue (to half, then waits for it). Returns the join's
/// ack id and the server's socket.
async fn stall_in_replay(
    node: &TestNode,
    stalled: &mut PollingClient,
) -> (u64, switchboard_socketio::Socket) {
    let join_ack = stalled
        .emit("join_workspace", json!({ "workspaceId": "w", "since": 0 }))
        .await;
    let socket = node.socket(stalled);
    for _ in 0..500 {
        let (queued, capacity) = socket.queued_frames();
        if queued >= capacity / 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    (join_ack, socket)
}

fn assert_exactly_once_in_order(ids: &[i64], expected: impl IntoIterator<Item = i64>) {
    let expected: Vec<i64> = expected.into_iter().collect();
    assert_eq!(ids.len(), expected.len(), "messages lost or repeated");
    assert_eq!(ids, expected.as_slice(), "messages out of order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_reach_every_member_in_id_order() {
    let node = TestNode::start(|s| s.events_per_second = 10_000).await;
    let mut alice = node.client("alice", &["w"]).await;
    let mut bob = node.client("bob", &["w"]).await;
    let mut carol = node.client("carol", &["w"]).await;
    for client in [&mut alice, &mut bob, &mut carol] {
        join(client, "w").await;
    }
    const EACH: usize = 40;
    async fn burst(client: &mut PollingClient, who: &str) -> Vec<i64> {
        let mut pending = Vec::new();
        for i in 0..EACH {
            let content = format!("{who} {i}");
            pending.push(
                client
                    .emit("message", json!({ "workspaceId": "w", "content": content }))
                    .await,
            );
        }
        let mut ids = Vec::new();
        for ack in pending {
            let ack = client.ack(ack).await;
            assert_ok(&ack);
            ids.push(ack["id"].as_i64().expect("id"));
        }
        ids
    }
    let (from_alice, from_bob) = tokio::join!(burst(&mut alice, "alice"), burst(&mut bob, "bob"));
    let mut acked: Vec<i64> = from_alice.into_iter().chain(from_bob).collect();
    acked.sort_unstable();
    let seen = read_messages(&mut carol, 2 * EACH).await;
    assert_exactly_once_in_order(&seen, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_replaying_history_delays_no_one() {
    let node = TestNode::start(|_| {}).await;
    const HISTORY: usize = 3000;
    seed(&node, "w", HISTORY).await;
    let mut sender = node.client("tom", &["w"]).await;
    join(&mut sender, "w").await;
    let mut stalled = node.client("sam", &["w"]).await;
    let (join_ack, socket) = stall_in_replay(&node, &mut stalled).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let ack = sender
            .call(
                "message",
                json!({ "workspaceId": "w", "content": format!("live {i}") }),
            )
            .await;
        assert_ok(&ack);
        sent.push(ack["id"].as_i64().expect("id"));
    }
    assert!(
        crate::realtime::is_handling_events(&socket) && !socket.in_room("workspace:w"),
        "others' messages were acked only after the stalled reader's join had ended"
    );
    // Once it reads, it gets the whole history and the live messages, once each, in order.
    assert_ok(&stalled.ack(join_ack).await);
    let ids = message_ids(&mut stalled);
    assert_exactly_once_in_order(&ids, (1..=HISTORY as i64).chain(sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_during_a_burst_misses_nothing_and_gets_nothing_twice() {
    let node = TestNode::start(|s| s.events_per_second = 10_000).await;
    const HISTORY: usize = 1000;
    const BURST: usize = 300;
    seed(&node, "w", HISTORY).await;
    let mut sender = node.client("tom", &["w"]).await;
    join(&mut sender, "w").await;
    let mut joiner = node.client("sam", &["w"]).await;
    let sending = async {
        let mut pending = Vec::new();
        for i in 0..BURST {
            pending.push(
                sender
                    .emit(
                        "message",
                        json!({ "workspaceId": "w", "content": format!("{i}") }),
                    )
                    .await,
            );
        }
        for ack in pending {
            assert_ok(&sender.ack(ack).await);
        }
    };
    let joining = async {
        let ack = joiner
            .call("join_workspace", json!({ "workspaceId": "w", "since": 0 }))
            .await;
        assert_ok(&ack);
    };
    tokio::join!(sending, joining);
    let ids = read_messages(&mut joiner, HISTORY + BURST).await;
    assert_exactly_once_in_order(&ids, 1..=(HISTORY + BURST) as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_waiting_behind_a_stalled_one_are_bounded_and_refused_past_the_bound() {
    let node = TestNode::start(|s| s.events_per_second = 10_000).await;
    seed(&node, "w", 3000).await;
    let mut stalled = node.client("sam", &["w"]).await;
    let (join_ack, _socket) = stall_in_replay(&node, &mut stalled).await;
    // The join waits for the client to read; what it sends meanwhile waits too.
    const SENT: usize = super::MAX_QUEUED_EVENTS + 20;
    let mut acks = Vec::new();
    for i in 0..SENT {
        let event = json!({ "workspaceId": "w", "content": format!("{i}") });
        acks.push(stalled.emit("message", event).await);
    }
    assert_ok(&stalled.ack(join_ack).await);
    let mut refused = 0;
    for (i, ack) in acks.into_iter().enumerate() {
        let answer = stalled.ack(ack).await;
        if answer["error"] == json!("rate_limited") {
            refused += 1;
        } else {
            assert_ok(&answer);
            assert!(
                i < super::MAX_QUEUED_EVENTS,
                "event {i} was queued past the bound"
            );
        }
    }
    // The join itself was running, not waiting: one more than the bound fits.
    assert!(
        (19..=20).contains(&refused),
        "{refused} of {SENT} events refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_called_message_all_arrive() {
    // Published events carry the last message id as their offset, like
    // stored messages do: only stored messages may be told apart and deduped.
    let node = TestNode::start(|_| {}).await;
    let mut member = node.client("mia", &["w"]).await;
    join(&mut member, "w").await;
    for i in 0..3 {
        node.app
            .realtime
            .writer
            .publish("w".into(), "message".into(), json!({ "n": i }))
            .await
            .expect("published");
    }
    let mut got = Vec::new();
    let reading = async {
        while got.len() < 3 {
            member.read().await;
            got.extend(member.take_events("message"));
        }
    };
    let done = tokio::time::timeout(std::time::Duration::from_secs(10), reading).await;
    assert!(
        done.is_ok(),
        "only {} of 3 published events arrived",
        got.len()
    );
    let ns: Vec<Value> = got.iter().map(|args| args[0]["n"].clone()).collect();
    assert_eq!(ns, [json!(0), json!(1), json!(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_sends_what_a_room_missed_and_nothing_from_before_it_opened() {
    let node = TestNode::start(|_| {}).await;
    let mut early = node.client("eve", &["w"]).await;
    join(&mut early, "w").await;
    assert_ok(
        &early
            .call("leave_workspace", json!({ "workspaceId": "w" }))
            .await,
    );
    // Stored elsewhere while nobody here was in the room.
    seed(&node, "w", 5).await;
    let mut member = node.client("mia", &["w"]).await;
    join(&mut member, "w").await;
    // Lost on the way, as in a broker outage: stored, never delivered here.
    seed(&node, "w", 2).await;
    let catch_up = &node.app.realtime.catch_up;
    catch_up.broker_down();
    catch_up.broker_back(std::sync::Arc::downgrade(&node.app));
    let ids = read_messages(&mut member, 2).await;
    // In id order, so any of the five would have come first.
    assert_eq!(
        ids,
        [6, 7],
        "the two missed messages, not the five from before"
    );
}
