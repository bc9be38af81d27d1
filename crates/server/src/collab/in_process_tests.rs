//! In-process tests of collaborative editing: the room of a document (one
//! task per open document, `room.rs`) driven through its commands, and a
//! connection (`connection.rs`) driven through a WebSocket over an in-memory
//! pipe, both on the in-process broker and a SQLite store in a temporary
//! folder.
//!
//! Why here and not only in `tests/e2e`: these reach the room's API, so they
//! can look at the Store at the instant an update is relayed (it must be
//! stored by then), and they run in a second without a server process.
//! Yjs updates are hand-encoded (as the load generator does): the server
//! does not depend on yrs itself, and a state vector is enough to tell which
//! insertions a document holds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_collab::{protocol, ClientID, ClientMessage, Document, StateVector};
use switchboard_core::{DocumentId, Role, Store};
use switchboard_socketio::ws::WebSocket;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};

use super::room::Command;
use super::{CloseCode, Collab, Grant, Outgoing, RoomHandle};
use crate::config::CollabLimits;

const WAIT: Duration = Duration::from_secs(5);

fn limits() -> CollabLimits {
    CollabLimits {
        max_update_bytes: 1 << 20,
        max_document_bytes: 16 << 20,
        max_clients: 256,
        unload_after: Duration::from_secs(30),
        compact_updates: 500,
        versions_kept: 10,
    }
}

/// A node's collaborative editing on a fresh SQLite file, removed when dropped.
struct Fixture {
    collab: Arc<Collab>,
    store: Arc<dyn Store>,
    folder: std::path::PathBuf,
}

impl Fixture {
    async fn new(limits: CollabLimits) -> Self {
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).expect("random bytes");
        let folder = std::env::temp_dir().join(format!(
            "switchboard-collab-test-{}-{:x}",
            std::process::id(),
            u64::from_le_bytes(raw)
        ));
        std::fs::create_dir_all(&folder).expect("temp folder");
        let url = format!("sqlite://{}", folder.join("collab.db").display());
        let store = switchboard_store::connect(&url).await.expect("store");
        let broker = Arc::new(switchboard_broker::MemoryBroker::new(Arc::new(|_| {})));
        let collab = Arc::new(Collab::new(store.clone(), broker, limits));
        Self {
            collab,
            store,
            folder,
        }
    }

    async fn join(&self, doc: &DocumentId) -> Client {
        join(&self.collab, doc).await
    }

    async fn stored(&self, doc: &DocumentId) -> switchboard_core::DocumentLog {
        self.store.document_log(doc).await.expect("document log")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// What a member's token gives, for an hour.
fn member(user: &str) -> Grant {
    Grant {
        user: user.to_owned(),
        role: Role::Member,
        token_role: Some(Role::Member),
        expires_at: now_secs() + 3600,
        checked_at: tokio::time::Instant::now(),
    }
}

/// A viewer by membership only (the token lists no workspace).
fn viewer(user: &str) -> Grant {
    Grant {
        role: Role::Viewer,
        token_role: None,
        ..member(user)
    }
}

fn now_secs() -> u64 {
    (switchboard_core::time::now_millis() / 1000) as u64
}

/// A client joined to `doc`'s room, as a connection task joins it.
async fn join(collab: &Arc<Collab>, doc: &DocumentId) -> Client {
    join_as(collab, doc, member("alice")).await
}

async fn join_as(collab: &Arc<Collab>, doc: &DocumentId, grant: Grant) -> Client {
    let (client, answer) = try_join(collab, doc, grant).await;
    assert_eq!(answer, Ok(()));
    client
}

/// Asks to join; the room's answer.
async fn try_join(
    collab: &Arc<Collab>,
    doc: &DocumentId,
    grant: Grant,
) -> (Client, Result<(), CloseCode>) {
    let connection = collab.next_connection();
    let (outbox, frames) = mpsc::channel(256);
    let room = collab.room(doc);
    let (joined, answer) = oneshot::channel();
    let join = Command::Join {
        connection,
        outbox,
        grant,
        joined,
    };
    assert!(room.commands.send(join).await.is_ok(), "room is open");
    let answer = tokio::time::timeout(WAIT, answer).await.expect("joined");
    let client = Client {
        connection,
        room,
        frames,
    };
    (client, answer.expect("room answered"))
}

/// One connection as the room sees it: its commands in, its queue out.
struct Client {
    connection: u64,
    room: RoomHandle,
    frames: mpsc::Receiver<Outgoing>,
}

impl Client {
    /// Hands the room what a y-websocket message carries.
    async fn send(&self, message: &[u8]) {
        let messages = protocol::decode(message).expect("a valid message");
        let command = Command::Messages {
            connection: self.connection,
            messages,
        };
        assert!(self.room.commands.send(command).await.is_ok());
    }

    /// Hands the room an update as it came, without decoding it first.
    async fn send_update(&self, update: &[u8]) {
        let command = Command::Messages {
            connection: self.connection,
            messages: vec![ClientMessage::Update(Bytes::copy_from_slice(update))],
        };
        assert!(self.room.commands.send(command).await.is_ok());
    }

    async fn leave(&self) {
        let leave = Command::Leave {
            connection: self.connection,
        };
        let _ = self.room.commands.send(leave).await;
    }

    async fn next(&mut self) -> Outgoing {
        tokio::time::timeout(WAIT, self.frames.recv())
            .await
            .expect("a frame in time")
            .expect("the room still holds this connection")
    }

    /// The next frame, decoded as the y-websocket messages it holds.
    async fn next_messages(&mut self) -> Vec<ClientMessage> {
        match self.next().await {
            Outgoing::Frame(frame) => protocol::decode(&frame).expect("a valid frame"),
            Outgoing::Close(code, reason) => panic!("closed: {code:?} {reason}"),
        }
    }

    /// Nothing is queued for this client (after letting the room run).
    async fn assert_quiet(&mut self) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(self.frames.try_recv().is_err(), "nothing for this client");
    }
}

fn doc(name: &str) -> DocumentId {
    DocumentId {
        workspace: "w1".into(),
        name: name.into(),
    }
}

fn write_var_uint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn write_var_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_var_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A Yjs v1 update: `client` inserts ASCII `text` into the root text `t`
/// after its own previous insertion (ending at `clock - 1`), or at the start.
fn insert(client: u64, clock: u64, text: &str) -> Vec<u8> {
    let mut u = Vec::new();
    write_var_uint(&mut u, 1); // clients
    write_var_uint(&mut u, 1); // structs of this client
    write_var_uint(&mut u, client);
    write_var_uint(&mut u, clock);
    if clock == 0 {
        u.push(4); // string content, parent by root name
        write_var_uint(&mut u, 1);
        write_var_bytes(&mut u, b"t");
    } else {
        u.push(4 | 0x80); // string content after a left origin
        write_var_uint(&mut u, client);
        write_var_uint(&mut u, clock - 1);
    }
    write_var_bytes(&mut u, text.as_bytes());
    write_var_uint(&mut u, 0); // delete set
    u
}

/// A sync update message (`[0, 2, update]`).
fn update_message(update: &[u8]) -> Vec<u8> {
    let mut m = vec![0, 2];
    write_var_bytes(&mut m, update);
    m
}

/// A sync step 1 with an empty state vector: "send me everything".
const STEP1_EMPTY: [u8; 4] = [0, 0, 1, 0];

/// The clock of `client` in a state vector: how many characters it inserted.
fn clock(state: &StateVector, client: u64) -> u32 {
    state.get(&ClientID::new(client))
}

/// The state of the document a stored log restores.
fn restored(log: &switchboard_core::DocumentLog) -> StateVector {
    let parts = log
        .snapshot
        .iter()
        .map(|s| s.as_ref())
        .chain(log.updates.iter().map(|(_, u)| u.as_ref()));
    Document::restore(parts).0.state_vector()
}

#[tokio::test]
async fn an_update_is_stored_before_it_reaches_the_other_clients() {
    let f = Fixture::new(limits()).await;
    let d = doc("stored-first");
    let mut alice = f.join(&d).await;
    let mut bob = f.join(&d).await;
    // Each joiner gets the server's step 1 first.
    for client in [&mut alice, &mut bob] {
        let first = client.next_messages().await;
        assert!(matches!(first.as_slice(), [ClientMessage::SyncStep1(_)]));
    }

    let update = insert(7, 0, "hello");
    alice.send(&update_message(&update)).await;
    let relayed = bob.next_messages().await;
    // The instant bob has it, the Store has it.
    let log = f.stored(&d).await;
    assert_eq!(log.updates.len(), 1);
    assert_eq!(log.updates[0].1, Bytes::from(update.clone()));
    let [ClientMessage::Update(got)] = relayed.as_slice() else {
        panic!("expected one update, got {relayed:?}");
    };
    assert_eq!(got, &Bytes::from(update));
    // Not echoed to its sender.
    alice.assert_quiet().await;
}

#[tokio::test]
async fn updates_apply_in_order_and_a_late_joiner_syncs_everything() {
    let f = Fixture::new(limits()).await;
    let d = doc("late-joiner");
    let mut alice = f.join(&d).await;
    alice.next_messages().await; // step 1
    let mut clock_at = 0;
    for word in ["one ", "two ", "three"] {
        alice
            .send(&update_message(&insert(11, clock_at, word)))
            .await;
        clock_at += word.len() as u64;
    }
    let mut bob = f.join(&d).await;
    let step1 = bob.next_messages().await;
    let [ClientMessage::SyncStep1(server)] = step1.as_slice() else {
        panic!("expected the server's step 1, got {step1:?}");
    };
    assert_eq!(
        clock(server, 11),
        clock_at as u32,
        "the room applied all three"
    );

    bob.send(&STEP1_EMPTY).await;
    let step2 = bob.next_messages().await;
    let [ClientMessage::Update(everything)] = step2.as_slice() else {
        panic!("expected step 2, got {step2:?}");
    };
    let replica = Document::new();
    replica
        .apply(Document::decode_update(everything).expect("an update"))
        .expect("applies");
    assert_eq!(clock(&replica.state_vector(), 11), clock_at as u32);
    assert_eq!(clock(&restored(&f.stored(&d).await), 11), clock_at as u32);
}

#[tokio::test]
async fn compaction_keeps_every_insertion() {
    let f = Fixture::new(CollabLimits {
        compact_updates: 5,
        ..limits()
    })
    .await;
    let d = doc("compacted");
    let mut alice = f.join(&d).await;
    alice.next_messages().await;
    let mut clock_at = 0;
    for i in 0..12 {
        let text = format!("<{i}>");
        alice
            .send(&update_message(&insert(21, clock_at, &text)))
            .await;
        clock_at += text.len() as u64;
    }
    // Compaction runs on a task of its own: wait for its snapshot.
    let deadline = tokio::time::Instant::now() + WAIT;
    let log = loop {
        let log = f.stored(&d).await;
        if log.snapshot.is_some() && log.updates.len() < 12 {
            break log;
        }
        assert!(tokio::time::Instant::now() < deadline, "no compaction");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(clock(&restored(&log), 21), clock_at as u32);

    // And a room opened from that log (by another node) has it all.
    alice.leave().await;
    drop(alice);
    let broker = Arc::new(switchboard_broker::MemoryBroker::new(Arc::new(|_| {})));
    let another_node = Arc::new(Collab::new(f.store.clone(), broker, limits()));
    let mut bob = join(&another_node, &d).await;
    let step1 = bob.next_messages().await;
    let [ClientMessage::SyncStep1(server)] = step1.as_slice() else {
        panic!("expected the server's step 1, got {step1:?}");
    };
    assert_eq!(clock(server, 21), clock_at as u32);
}

#[tokio::test]
async fn an_idle_room_unloads_and_opens_again_from_the_store() {
    let f = Fixture::new(CollabLimits {
        unload_after: Duration::from_millis(50),
        ..limits()
    })
    .await;
    let d = doc("unload");
    let mut alice = f.join(&d).await;
    alice.next_messages().await;
    alice.send(&update_message(&insert(31, 0, "kept"))).await;
    alice.leave().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while f.collab.rooms().get(&d).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the room stays open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut bob = f.join(&d).await;
    let step1 = bob.next_messages().await;
    let [ClientMessage::SyncStep1(server)] = step1.as_slice() else {
        panic!("expected the server's step 1, got {step1:?}");
    };
    assert_eq!(clock(server, 31), 4);
}

#[tokio::test]
async fn refused_updates_close_only_their_connection() {
    let f = Fixture::new(CollabLimits {
        max_update_bytes: 64,
        max_document_bytes: 100,
        ..limits()
    })
    .await;
    let d = doc("refusals");
    let mut alice = f.join(&d).await;
    let mut bob = f.join(&d).await;
    alice.next_messages().await;
    bob.next_messages().await;

    alice
        .send(&update_message(&insert(41, 0, &"x".repeat(80))))
        .await;
    assert!(matches!(
        alice.next().await,
        Outgoing::Close(CloseCode::TooLarge, _)
    ));
    bob.send(&update_message(&insert(42, 0, &"y".repeat(50))))
        .await;
    bob.send(&update_message(&insert(42, 50, &"z".repeat(50))))
        .await;
    assert!(matches!(
        bob.next().await,
        Outgoing::Close(CloseCode::DocumentTooLarge, _)
    ));
    // Only the first of bob's updates was stored.
    let log = f.stored(&d).await;
    assert_eq!(log.updates.len(), 1);
    assert_eq!(clock(&restored(&log), 42), 50);

    let mut carol = f.join(&d).await;
    carol.next_messages().await;
    carol.send_update(&[0xff, 0xff, 0xff]).await;
    assert!(matches!(
        carol.next().await,
        Outgoing::Close(CloseCode::Malformed, _)
    ));
}

/// The client end of a WebSocket over an in-memory pipe: masked frames out
/// (with a zero mask, which leaves the payload as it is), frames in.
struct WsClient {
    io: DuplexStream,
}

impl WsClient {
    /// A connection task serving `doc` on the other end of a new pipe.
    fn connect(collab: &Arc<Collab>, doc: &DocumentId) -> Self {
        Self::connect_as(collab, doc, member("alice"))
    }

    fn connect_as(collab: &Arc<Collab>, doc: &DocumentId, grant: Grant) -> Self {
        let (client, server) = tokio::io::duplex(1 << 16);
        let max = collab.limits().max_update_bytes + 16;
        tokio::spawn(super::serve(
            collab.clone(),
            doc.clone(),
            grant,
            WebSocket::new(server, max),
        ));
        Self { io: client }
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(payload);
        self.io.write_all(&frame).await.expect("write");
    }

    /// The next frame from the server: its opcode and payload.
    async fn recv(&mut self) -> (u8, Vec<u8>) {
        let read = async {
            let mut head = [0u8; 2];
            self.io.read_exact(&mut head).await?;
            let len = match head[1] & 0x7f {
                126 => usize::from(self.io.read_u16().await?),
                127 => self.io.read_u64().await? as usize,
                n => usize::from(n),
            };
            let mut payload = vec![0u8; len];
            self.io.read_exact(&mut payload).await?;
            Ok::<_, std::io::Error>((head[0] & 0x0f, payload))
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("a frame in time")
            .expect("a frame")
    }

    /// Reads until a close frame; its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let (opcode, payload) = self.recv().await;
            if opcode == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }
}

#[tokio::test]
async fn a_connection_answers_pings_and_closes_with_the_right_code() {
    let f = Fixture::new(CollabLimits {
        max_update_bytes: 100,
        ..limits()
    })
    .await;
    let d = doc("over-websocket");

    let mut alice = WsClient::connect(&f.collab, &d);
    assert_eq!(alice.recv().await.0, 0x2, "the server's step 1, binary");
    alice.send(0x9, b"are you there").await;
    assert_eq!(alice.recv().await, (0xA, b"are you there".to_vec()));
    let mut bob = WsClient::connect(&f.collab, &d);
    bob.recv().await;
    alice.send(0x2, &update_message(&insert(51, 0, "hi"))).await;
    let (opcode, relayed) = bob.recv().await;
    assert_eq!(
        (opcode, relayed),
        (0x2, update_message(&insert(51, 0, "hi")))
    );

    alice.send(0x1, b"text").await;
    assert_eq!(alice.close_code().await, 1003);
    bob.send(0x2, &[9]).await;
    assert_eq!(bob.close_code().await, 1007);

    let mut carol = WsClient::connect(&f.collab, &d);
    carol.recv().await;
    carol.send(0x2, &[0; 200]).await;
    assert_eq!(carol.close_code().await, 1009);

    let mut dave = WsClient::connect(&f.collab, &d);
    dave.recv().await;
    dave.send(0x8, &1000u16.to_be_bytes()).await;
    assert_eq!(
        dave.close_code().await,
        1000,
        "the client's close is answered"
    );

    // Shutdown: 1001 to whoever is still connected.
    let mut erin = WsClient::connect(&f.collab, &d);
    erin.recv().await;
    f.collab.shutdown().await;
    assert_eq!(erin.close_code().await, 1001);
}

/// Lets a room take an access change: it comes by another queue than the
/// clients' messages, so it is not ordered with them.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// An awareness message: `client` at `clock` with the JSON `state`.
fn awareness_message(client: u64, clock: u64, state: &str) -> Vec<u8> {
    let mut update = Vec::new();
    write_var_uint(&mut update, 1);
    write_var_uint(&mut update, client);
    write_var_uint(&mut update, clock);
    write_var_bytes(&mut update, state.as_bytes());
    let mut m = vec![1];
    write_var_bytes(&mut m, &update);
    m
}

#[tokio::test]
async fn a_viewer_receives_the_document_and_awareness_but_its_updates_are_dropped() {
    let f = Fixture::new(limits()).await;
    let d = doc("viewer");
    let mut alice = f.join(&d).await;
    let mut vera = join_as(&f.collab, &d, viewer("vera")).await;
    alice.next_messages().await;
    vera.next_messages().await;

    alice.send(&update_message(&insert(61, 0, "hello"))).await;
    let relayed = vera.next_messages().await;
    assert!(matches!(relayed.as_slice(), [ClientMessage::Update(_)]));

    // Its update and its answer to step 1 are dropped; the connection stays.
    vera.send(&update_message(&insert(62, 0, "nope"))).await;
    let mut step2 = vec![0, 1];
    write_var_bytes(&mut step2, &insert(62, 0, "nope"));
    vera.send(&step2).await;
    alice.assert_quiet().await;
    vera.assert_quiet().await;
    let log = f.stored(&d).await;
    assert_eq!(log.updates.len(), 1, "only alice's update is stored");
    assert_eq!(clock(&restored(&log), 62), 0);

    // It still reads the document and takes part in awareness.
    vera.send(&STEP1_EMPTY).await;
    let answer = vera.next_messages().await;
    let [ClientMessage::Update(state)] = answer.as_slice() else {
        panic!("expected step 2, got {answer:?}");
    };
    assert!(state.len() > 2, "step 2 carries alice's text");
    vera.send(&awareness_message(62, 1, r#"{"user":"vera"}"#))
        .await;
    let seen = alice.next_messages().await;
    assert!(matches!(seen.as_slice(), [ClientMessage::Awareness(_)]));
    alice
        .send(&awareness_message(61, 1, r#"{"user":"alice"}"#))
        .await;
    let seen = vera.next_messages().await;
    assert!(matches!(seen.as_slice(), [ClientMessage::Awareness(_)]));
}

#[tokio::test]
async fn an_access_change_reaches_only_that_users_connections_to_that_workspace() {
    let f = Fixture::new(limits()).await;
    let d = doc("access");
    let d2 = doc("access-2");
    let elsewhere = DocumentId {
        workspace: "w2".into(),
        name: "access".into(),
    };
    let mut bob = f.join(&d).await;
    let mut vera = join_as(&f.collab, &d, viewer("vera")).await;
    let mut vera2 = join_as(&f.collab, &d2, viewer("vera")).await;
    let mut vera_w2 = join_as(&f.collab, &elsewhere, viewer("vera")).await;
    // Member by token, viewer by membership: losing the membership leaves the token's role.
    let mut tina = join_as(
        &f.collab,
        &d,
        Grant {
            role: Role::Viewer,
            ..member("tina")
        },
    )
    .await;
    for client in [&mut bob, &mut vera, &mut vera2, &mut vera_w2, &mut tina] {
        client.next_messages().await;
    }

    f.collab.access_changed("vera", "w1", Some(Role::Member));
    settle().await;
    vera.send(&update_message(&insert(71, 0, "now I write")))
        .await;
    assert!(matches!(
        bob.next_messages().await.as_slice(),
        [ClientMessage::Update(_)]
    ));
    tina.next_messages().await;

    f.collab.access_changed("vera", "w1", Some(Role::Viewer));
    settle().await;
    vera.send(&update_message(&insert(71, 11, "!"))).await;
    bob.assert_quiet().await;

    f.collab.access_changed("tina", "w1", None);
    settle().await;
    tina.send(&update_message(&insert(72, 0, "token"))).await;
    assert!(matches!(
        bob.next_messages().await.as_slice(),
        [ClientMessage::Update(_)]
    ));
    vera.next_messages().await;

    f.collab.access_changed("vera", "w1", None);
    for client in [&mut vera, &mut vera2] {
        assert!(matches!(
            client.next().await,
            Outgoing::Close(CloseCode::Forbidden, _)
        ));
    }
    vera_w2.assert_quiet().await;
    bob.assert_quiet().await;
    tina.assert_quiet().await;
    assert_eq!(f.collab.clients(&d), 2, "bob and tina stay");
}

#[tokio::test]
async fn a_change_made_while_a_connection_was_being_opened_applies_when_it_joins() {
    let f = Fixture::new(limits()).await;
    let d = doc("racing");
    let checked_before = viewer("vera");
    f.collab.access_changed("vera", "w1", None);
    let (_, answer) = try_join(&f.collab, &d, checked_before).await;
    assert_eq!(answer, Err(CloseCode::Forbidden));
    // Checked after the change: as checked.
    let (_, answer) = try_join(&f.collab, &d, viewer("vera")).await;
    assert_eq!(answer, Ok(()));

    let promoted_meanwhile = viewer("vera");
    f.collab.access_changed("vera", "w1", Some(Role::Member));
    let mut bob = f.join(&d).await;
    bob.next_messages().await;
    let vera = join_as(&f.collab, &d, promoted_meanwhile).await;
    vera.send(&update_message(&insert(81, 0, "member now")))
        .await;
    assert!(matches!(
        bob.next_messages().await.as_slice(),
        [ClientMessage::Update(_)]
    ));
}

#[tokio::test]
async fn a_connection_closes_with_1008_at_its_token_expiry_or_when_access_ends() {
    let f = Fixture::new(limits()).await;
    let d = doc("lifetime");
    let expires_at = now_secs() + 1;
    let mut brief = WsClient::connect_as(
        &f.collab,
        &d,
        Grant {
            expires_at,
            ..member("brief")
        },
    );
    let mut revoked = WsClient::connect_as(&f.collab, &d, viewer("vera"));
    assert_eq!(brief.recv().await.0, 0x2);
    assert_eq!(revoked.recv().await.0, 0x2);

    f.collab.access_changed("vera", "w1", None);
    assert_eq!(revoked.close_code().await, 1008);

    assert_eq!(brief.close_code().await, 1008);
    let closed_at = switchboard_core::time::now_millis();
    let exp_millis = (expires_at * 1000) as i64;
    assert!(
        (exp_millis..exp_millis + 500).contains(&closed_at),
        "closed at {closed_at}, token expired at {exp_millis}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn remote_updates_past_the_queue_are_dropped_and_read_back_from_the_store() {
    let f = Fixture::new(limits()).await;
    let d = doc("remote-overflow");
    let opener = f.join(&d).await; // loads the room
    opener.leave().await;
    // Another node applied and stored these, then published them. On one
    // thread the room cannot run while they are handed over, so more arrive
    // than its queue holds.
    const SENT: u64 = super::room::REMOTE_QUEUE as u64 + 300;
    let updates: Vec<Bytes> = (0..SENT).map(|i| Bytes::from(insert(99, i, "x"))).collect();
    f.store
        .append_document_updates(&d, &updates)
        .await
        .expect("stored by the other node");
    for update in &updates {
        let mut payload = b"another-node\nU".to_vec();
        payload.extend_from_slice(update);
        f.collab.deliver(&d, &Bytes::from(payload));
    }
    assert_eq!(opener.room.remote.capacity(), 0, "the queue is full");
    assert!(opener
        .room
        .remote_overflowed
        .load(std::sync::atomic::Ordering::Acquire));
    settle().await;
    let mut bob = f.join(&d).await;
    let step1 = bob.next_messages().await;
    let [ClientMessage::SyncStep1(server)] = step1.as_slice() else {
        panic!("expected the server's step 1, got {step1:?}");
    };
    assert_eq!(
        clock(server, 99),
        SENT as u32,
        "the room holds every update: those it dropped came back from the Store"
    );
}
