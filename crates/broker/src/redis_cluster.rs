//! Redis Cluster sharded pub/sub: fan-out between nodes that scales past one
//! Redis. Selected by `SWITCHBOARD_BROKER=redis-cluster://host:port,host:port,...`
//! (seed nodes). A topic's channel lives on the master that serves its hash
//! slot: a publish is one `SPUBLISH` to that master, and a node `SSUBSCRIBE`s
//! there to the topics it has local listeners for (counted, as with
//! [`RedisBroker`](crate::RedisBroker)), so both the traffic and the
//! subscriptions spread over the shards instead of going through every Redis.
//!
//! # Layout
//!
//! - [`Cluster`](crate::cluster::Cluster): the slot map (`CLUSTER SLOTS`) and
//!   one command connection per master, used for `SPUBLISH`, `PING` and the
//!   presence commands, following `MOVED`/`ASK`.
//! - One subscription task per master: its own connection, on which it
//!   `SSUBSCRIBE`s to every channel with listeners whose slot that master
//!   serves. When the connection drops, the task marks the master down
//!   (publishes for its slots fail at once, `ping` fails), reconnects with
//!   bounded backoff (50 ms to 5 s) and subscribes again by itself. The node
//!   gets [`BrokerEvent::Down`] when the first master goes down (or a slot
//!   loses its master) and [`BrokerEvent::Up`] once all are back.
//! - A coordinator task that refreshes the slot map when a reply says it is
//!   stale (`MOVED`, a `sunsubscribe` the node did not ask for, which is what
//!   Redis sends when a slot moves away, a lost connection) and every 15 s,
//!   starts and stops subscription tasks for masters that come and go, and
//!   makes every task resubscribe by the new map.
//!
//! Messages published while a shard's subscription is down are not delivered;
//! clients catch up from the store (`since`, `Last-Event-ID`), as with Redis.
//! When topics that had listeners all along are subscribed again (after a
//! lost connection, or on the new master of a slot that moved) and the
//! master confirmed them all, the node gets [`BrokerEvent::Resubscribed`] so
//! that its listeners can catch up.
//!
//! # Why hand-written
//!
//! The `redis` crate (1.x) has sharded pub/sub in its `cluster-async` feature
//! (RESP3 `ssubscribe`, resubscribed after reconnects and slot refreshes), but
//! three of its behaviours fall short here: its subscription tracker takes the
//! `sunsubscribe` that Redis pushes when a slot moves as a removal, so such a
//! channel is never subscribed again on the slot's new master; an
//! `SSUBSCRIBE` that fails while a shard is down is not remembered; and push
//! messages reach the caller without the node they came from, so there is no
//! way to know which shard is down (to fail its publishes fast and to answer
//! readiness). Its plain `aio::PubSub` has no `SSUBSCRIBE`, and a RESP3
//! multiplexed connection takes an unsolicited `sunsubscribe` push as the
//! reply to whatever request is in flight. So the subscription side is a
//! small RESP2 connection per master ([`crate::resp`]), and commands use the
//! crate's multiplexed connections; no extra crate features are needed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use switchboard_core::{Broker, BrokerError, BrokerEvent, BrokerHandler, Topic};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::cluster::{key_slot, split_address, Cluster, ClusterError, Node, NodeState};
use crate::resp::{read_frame, Frame, Item};
use crate::subscriptions::Subscriptions;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// A subscription connection is checked with `PING` this often...
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// ...and taken as dead when no answer came for this long.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `subscribe` waits for the shard to confirm a new channel.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);
/// Slot-map refreshes are at least this far apart...
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// ...and happen at least this often.
const PERIODIC_REFRESH: Duration = Duration::from_secs(15);
/// Startup waits this long for every master's subscription connection.
const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// Fan-out through a Redis Cluster with sharded pub/sub.
pub struct RedisClusterBroker {
    shared: Arc<Shared>,
    coordinator: AbortHandle,
}

struct Shared {
    cluster: Arc<Cluster>,
    prefix: String,
    handler: BrokerHandler,
    subscriptions: Subscriptions,
    /// Master address → its subscription task.
    shards: Mutex<HashMap<String, Shard>>,
    /// Topic → `subscribe` calls waiting for its confirmation.
    waiters: Mutex<HashMap<Topic, Vec<oneshot::Sender<()>>>>,
    /// What the node was last told: [`BrokerEvent::Down`] or [`BrokerEvent::Up`].
    health: Mutex<Health>,
}

struct Health {
    /// Set once `connect` returned: no `Down` for a cluster still starting.
    started: bool,
    /// Whether the node was last told (or, before that, assumes) it is up.
    up: bool,
}

struct Shard {
    node: Arc<Node>,
    tx: mpsc::Sender<ShardMsg>,
    /// A message did not fit in `tx`: the shard checks every channel instead.
    overflowed: Arc<AtomicBool>,
    task: AbortHandle,
}

/// Messages waiting for one shard's task. Past it, a shard that is far
/// behind (a master that stopped answering) gets a full resync once it
/// reads again, which covers every message it missed
/// (`switchboard_broker_shard_queue_overflows_total`).
const SHARD_QUEUE: usize = 1024;

#[derive(Clone)]
enum ShardMsg {
    /// A topic's listener count went from 0 to 1 or from 1 to 0.
    Topic(Topic),
    /// The slot map may have changed: check every channel.
    Resync,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl RedisClusterBroker {
    /// Connects to the cluster named by a `redis-cluster://host:port,...` URL;
    /// every channel name gets `prefix` in Redis.
    pub async fn connect(
        url: &str,
        prefix: &str,
        handler: BrokerHandler,
    ) -> Result<Self, BrokerError> {
        let cluster = Arc::new(Cluster::new(url)?);
        cluster.refresh().await?;
        let shared = Arc::new(Shared {
            cluster,
            prefix: prefix.to_owned(),
            handler,
            subscriptions: Subscriptions::default(),
            shards: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            health: Mutex::new(Health {
                started: false,
                up: true,
            }),
        });
        shared.sync_shards();
        let coordinator = tokio::spawn(coordinator(shared.clone())).abort_handle();
        let broker = Self {
            shared,
            coordinator,
        };
        // Start ready: wait (bounded) for every master's subscription connection.
        let deadline = Instant::now() + STARTUP_WAIT;
        while broker.shared.check_up().is_err() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        broker.shared.check_up()?;
        lock(&broker.shared.health).started = true;
        // A master lost since the check is reported now.
        broker.shared.report_health();
        Ok(broker)
    }

    /// Presence kept in the same cluster, under the same prefix: one sorted
    /// set per workspace, each on the master of its slot.
    pub fn presence(&self) -> crate::RedisPresence {
        crate::RedisPresence::cluster(self.shared.cluster.clone(), &self.shared.prefix)
    }
}

impl Drop for RedisClusterBroker {
    fn drop(&mut self) {
        self.coordinator.abort();
        for shard in lock(&self.shared.shards).values() {
            shard.task.abort();
        }
    }
}

impl Shared {
    fn prefixed(&self, topic: &Topic) -> String {
        format!("{}{}", self.prefix, topic.channel())
    }

    /// Every slot is served and every master's subscription connection is up.
    fn check_up(&self) -> Result<(), ClusterError> {
        let map = self.cluster.map();
        if !map.covers_all() {
            return Err(ClusterError::SlotUncovered(
                (0..crate::cluster::SLOTS)
                    .find(|&s| map.master(s).is_none())
                    .unwrap_or(0),
            ));
        }
        for address in map.masters() {
            let node = self.cluster.node(address);
            if node.state() != NodeState::Up {
                return Err(ClusterError::NodeDown(address.clone()));
            }
        }
        Ok(())
    }

    /// Tells the node [`BrokerEvent::Down`] or [`BrokerEvent::Up`] when
    /// [`Shared::check_up`] changed since it was last told. The lock is held
    /// while the handler runs, so that the node hears them in order.
    fn report_health(&self) {
        let mut health = lock(&self.health);
        let up = self.check_up().is_ok();
        if health.started && health.up != up {
            health.up = up;
            (self.handler)(if up {
                BrokerEvent::Up
            } else {
                BrokerEvent::Down
            });
        }
    }

    /// Starts a subscription task for every master of the map, stops those of
    /// nodes that no longer serve slots.
    fn sync_shards(self: &Arc<Self>) {
        let map = self.cluster.map();
        let mut shards = lock(&self.shards);
        shards.retain(|address, shard| {
            let keep = map.masters().contains(address);
            if !keep {
                tracing::info!(node = %address, "redis cluster node serves no slots any more");
                shard.task.abort();
                shard.node.set_state(NodeState::Unknown);
            }
            keep
        });
        for address in map.masters() {
            if !shards.contains_key(address) {
                let node = self.cluster.node(address);
                let (tx, rx) = mpsc::channel(SHARD_QUEUE);
                let overflowed = Arc::new(AtomicBool::new(false));
                let inbox = Inbox {
                    rx,
                    overflowed: overflowed.clone(),
                };
                let task =
                    tokio::spawn(shard_task(self.clone(), node.clone(), inbox)).abort_handle();
                shards.insert(
                    address.clone(),
                    Shard {
                        node,
                        tx,
                        overflowed,
                        task,
                    },
                );
            }
        }
    }

    fn broadcast(&self, msg: ShardMsg) {
        for shard in lock(&self.shards).values() {
            if let Err(mpsc::error::TrySendError::Full(_)) = shard.tx.try_send(msg.clone()) {
                shard.overflowed.store(true, Ordering::Release);
                metrics::counter!("switchboard_broker_shard_queue_overflows_total").increment(1);
            }
        }
    }

    /// Wakes the `subscribe` calls waiting for `topic`.
    fn confirmed(&self, topic: &Topic) {
        if let Some(waiters) = lock(&self.waiters).remove(topic) {
            for waiter in waiters {
                let _ = waiter.send(());
            }
        }
    }

    /// Lets go of the `subscribe` calls waiting for `topic` (without a confirmation).
    fn release(&self, topic: &Topic) {
        lock(&self.waiters).remove(topic);
    }
}

/// Refreshes the slot map when asked to (and periodically), then makes the
/// subscription tasks follow it.
async fn coordinator(shared: Arc<Shared>) {
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = shared.cluster.refresh_wanted() => {}
            _ = tokio::time::sleep(PERIODIC_REFRESH) => {}
        }
        let since = last.elapsed();
        if since < MIN_REFRESH_INTERVAL {
            tokio::time::sleep(MIN_REFRESH_INTERVAL - since).await;
        }
        let mut backoff = MIN_BACKOFF;
        loop {
            match shared.cluster.refresh().await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "redis cluster slot map refresh failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        last = Instant::now();
        shared.sync_shards();
        shared.report_health();
        shared.broadcast(ShardMsg::Resync);
    }
}

/// What a shard's task reads: its queue, and whether it overflowed.
struct Inbox {
    rx: mpsc::Receiver<ShardMsg>,
    overflowed: Arc<AtomicBool>,
}

/// Keeps one master's subscription connection up.
async fn shard_task(shared: Arc<Shared>, node: Arc<Node>, mut rx: Inbox) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match open(&node).await {
            Ok((reader, writer)) => {
                backoff = MIN_BACKOFF;
                let reason = Subscriber::new(&shared, &node, writer)
                    .run(reader, &mut rx)
                    .await;
                node.set_state(NodeState::Down);
                shared.report_health();
                tracing::warn!(node = %node.address(), %reason, "redis cluster subscription connection lost; reconnecting");
                // A failover or a resharding may be why: look at the slot map again.
                shared.cluster.want_refresh();
                if rx.rx.is_closed() {
                    return;
                }
            }
            Err(e) => {
                node.set_state(NodeState::Down);
                shared.report_health();
                tracing::warn!(node = %node.address(), error = %e, "redis cluster subscription connection failed");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Opens a subscription connection (authenticated when the URL had credentials).
async fn open(node: &Node) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf), ClusterError> {
    let address = node.address();
    let protocol = |reason: String| ClusterError::Protocol {
        node: address.to_owned(),
        reason,
    };
    let io = |e: std::io::Error| ClusterError::Redis {
        node: address.to_owned(),
        source: e.into(),
    };
    let (host, port) =
        split_address(address).ok_or_else(|| protocol("not a host:port address".into()))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
        .map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let settings = node.info().redis_settings();
    if let Some(password) = settings.password() {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = settings.username() {
            auth.arg(user);
        }
        auth.arg(password);
        tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&auth.get_packed_command()))
            .await
            .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
            .map_err(io)?;
        match tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut reader)).await {
            Ok(Ok(Frame::Item(Item::Simple(_)))) => {}
            Ok(Ok(Frame::Item(Item::Error(e)))) => return Err(protocol(format!("AUTH: {e}"))),
            Ok(Ok(other)) => return Err(protocol(format!("AUTH answered {other:?}"))),
            Ok(Err(e)) => return Err(protocol(format!("AUTH: {e}"))),
            Err(_) => return Err(io(std::io::ErrorKind::TimedOut.into())),
        }
    }
    Ok((reader, write))
}

/// What the reading task reports to the subscription task.
enum Control {
    Subscribed(Topic),
    Unsubscribed(Topic),
    Pong,
    /// An error reply (`MOVED` for a channel whose slot moved, `CLUSTERDOWN`, ...).
    Error(String),
    Lost(String),
}

/// Aborts a task when dropped.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One live subscription connection of a master and what was sent on it.
struct Subscriber<'a> {
    shared: &'a Arc<Shared>,
    node: &'a Node,
    writer: OwnedWriteHalf,
    /// Topics `SSUBSCRIBE`d on this connection.
    subscribed: HashSet<Topic>,
    /// Our `SUNSUBSCRIBE`s not confirmed yet, per topic: any other
    /// `sunsubscribe` comes from the server (the topic's slot moved).
    unsubscribing: HashMap<Topic, usize>,
    /// Topics that had listeners before and were `SSUBSCRIBE`d again by a
    /// resync, not confirmed yet: publishes to them may have been missed.
    resubscribing: HashSet<Topic>,
    /// Set when a resync subscribed such topics: once they are all
    /// confirmed, the node gets [`BrokerEvent::Resubscribed`].
    missed: bool,
    /// Commands to write.
    out: Vec<u8>,
}

impl<'a> Subscriber<'a> {
    fn new(shared: &'a Arc<Shared>, node: &'a Node, writer: OwnedWriteHalf) -> Self {
        Self {
            shared,
            node,
            writer,
            subscribed: HashSet::new(),
            unsubscribing: HashMap::new(),
            resubscribing: HashSet::new(),
            missed: false,
            out: Vec::new(),
        }
    }

    /// Runs until the connection is lost; returns why.
    async fn run(mut self, reader: BufReader<OwnedReadHalf>, inbox: &mut Inbox) -> String {
        let (control_tx, mut control) = mpsc::unbounded_channel();
        let _reader = AbortOnDrop(
            tokio::spawn(read_loop(self.shared.clone(), reader, control_tx)).abort_handle(),
        );
        // Everything queued while disconnected is covered by a full resync.
        while inbox.rx.try_recv().is_ok() {}
        inbox.overflowed.store(false, Ordering::Release);
        self.resync();
        if let Err(reason) = self.flush().await {
            return reason;
        }
        self.node.set_state(NodeState::Up);
        self.shared.report_health();
        tracing::info!(node = %self.node.address(), topics = self.subscribed.len(), "redis cluster subscription connection up");
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_pong = Instant::now();
        let reason = loop {
            tokio::select! {
                report = control.recv() => match report {
                    None => break "reader stopped".to_owned(),
                    Some(Control::Lost(reason)) => break reason,
                    Some(Control::Pong) => last_pong = Instant::now(),
                    Some(Control::Subscribed(topic)) => self.confirmed(&topic),
                    Some(Control::Unsubscribed(topic)) => self.unsubscribed(topic),
                    Some(Control::Error(error)) => self.error_reply(&error),
                },
                msg = inbox.rx.recv() => match msg {
                    None => break "broker dropped".to_owned(),
                    Some(_) if inbox.overflowed.swap(false, Ordering::AcqRel) => self.resync(),
                    Some(ShardMsg::Topic(topic)) => {
                        let map = self.shared.cluster.map();
                        self.reconcile(&topic, &map, false);
                    }
                    Some(ShardMsg::Resync) => self.resync(),
                },
                _ = ping.tick() => {
                    if last_pong.elapsed() > PING_TIMEOUT {
                        break format!("no answer to PING within {PING_TIMEOUT:?}");
                    }
                    self.out.extend_from_slice(&redis::cmd("PING").get_packed_command());
                }
            }
            if let Err(reason) = self.flush().await {
                break reason;
            }
        };
        for topic in &self.subscribed {
            self.shared.release(topic);
        }
        reason
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        match tokio::time::timeout(WRITE_TIMEOUT, self.writer.write_all(&out)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write failed: {e}")),
            Err(_) => Err(format!("write not done within {WRITE_TIMEOUT:?}")),
        }
    }

    fn owns(&self, topic: &Topic, map: &crate::cluster::SlotMap) -> bool {
        let slot = key_slot(self.shared.prefixed(topic).as_bytes());
        map.master(slot) == Some(self.node.address())
    }

    /// Subscribes to or unsubscribes from one topic, as its listeners and
    /// the slot map say. `resync`: not for a topic that just got its first
    /// listener, so one whose publishes may have been missed.
    fn reconcile(&mut self, topic: &Topic, map: &crate::cluster::SlotMap, resync: bool) {
        let owned = self.owns(topic, map);
        let wanted = owned && self.shared.subscriptions.contains(topic);
        let has = self.subscribed.contains(topic);
        if wanted && !has {
            self.command("SSUBSCRIBE", topic);
            self.subscribed.insert(topic.clone());
            if resync {
                self.resubscribing.insert(topic.clone());
                self.missed = true;
            }
        } else if !wanted && has {
            self.subscribed.remove(topic);
            // A topic whose slot moved away was dropped by the server already.
            if owned {
                self.command("SUNSUBSCRIBE", topic);
                *self.unsubscribing.entry(topic.clone()).or_default() += 1;
            }
        }
    }

    /// Reconciles every topic with listeners and every topic subscribed here.
    fn resync(&mut self) {
        let map = self.shared.cluster.map();
        let mut topics: HashSet<Topic> = self.shared.subscriptions.topics().into_iter().collect();
        topics.extend(self.subscribed.iter().cloned());
        for topic in topics {
            self.reconcile(&topic, &map, true);
        }
    }

    fn confirmed(&mut self, topic: &Topic) {
        self.shared.confirmed(topic);
        self.resubscribing.remove(topic);
        if self.missed && self.resubscribing.is_empty() {
            self.missed = false;
            (self.shared.handler)(BrokerEvent::Resubscribed);
        }
    }

    fn command(&mut self, name: &str, topic: &Topic) {
        // One channel per command: the channels of one SSUBSCRIBE must share a slot.
        self.out.extend_from_slice(
            &redis::cmd(name)
                .arg(self.shared.prefixed(topic))
                .get_packed_command(),
        );
    }

    fn unsubscribed(&mut self, topic: Topic) {
        if let Some(pending) = self.unsubscribing.get_mut(&topic) {
            *pending -= 1;
            if *pending == 0 {
                self.unsubscribing.remove(&topic);
            }
            return;
        }
        // The server dropped the subscription: its slot moved to another master.
        self.subscribed.remove(&topic);
        if self.shared.subscriptions.contains(&topic) {
            tracing::info!(node = %self.node.address(), %topic, "redis cluster dropped a subscription (slot moved); refreshing the slot map");
            self.shared.cluster.want_refresh();
        }
    }

    fn error_reply(&mut self, error: &str) {
        // Not tied to one channel: forget what was sent, so that the resync after
        // the refresh subscribes again to everything this master serves.
        tracing::info!(node = %self.node.address(), %error, "redis cluster subscription command refused; refreshing the slot map");
        for topic in std::mem::take(&mut self.subscribed) {
            self.shared.release(&topic);
        }
        self.unsubscribing.clear();
        self.resubscribing.clear();
        self.shared.cluster.want_refresh();
    }
}

/// Reads a subscription connection: deliveries go to the node, the rest to the subscription task.
async fn read_loop(
    shared: Arc<Shared>,
    mut reader: BufReader<OwnedReadHalf>,
    control: mpsc::UnboundedSender<Control>,
) {
    loop {
        let frame = match read_frame(&mut reader).await {
            Ok(frame) => frame,
            Err(e) => {
                let _ = control.send(Control::Lost(e.to_string()));
                return;
            }
        };
        let report = match frame {
            Frame::Array(items) => match items.as_slice() {
                [Item::Bulk(Some(kind)), Item::Bulk(Some(channel)), Item::Bulk(Some(payload))]
                    if kind == b"smessage" =>
                {
                    // A shard applies an `SUNSUBSCRIBE` when its task gets to
                    // it, after `unsubscribe` has returned: what arrives for a
                    // topic this node no longer listens to is dropped here.
                    let topic = unprefixed(&shared.prefix, channel)
                        .filter(|topic| shared.subscriptions.contains(topic));
                    if let Some(topic) = topic {
                        (shared.handler)(BrokerEvent::Delivery {
                            topic,
                            payload: Bytes::copy_from_slice(payload),
                        });
                    }
                    None
                }
                [Item::Bulk(Some(kind)), Item::Bulk(Some(channel)), Item::Int(_)]
                    if kind == b"ssubscribe" =>
                {
                    unprefixed(&shared.prefix, channel).map(Control::Subscribed)
                }
                [Item::Bulk(Some(kind)), Item::Bulk(Some(channel)), Item::Int(_)]
                    if kind == b"sunsubscribe" =>
                {
                    unprefixed(&shared.prefix, channel).map(Control::Unsubscribed)
                }
                [Item::Bulk(Some(kind)), ..] if kind.eq_ignore_ascii_case(b"pong") => {
                    Some(Control::Pong)
                }
                _ => None,
            },
            Frame::Item(Item::Simple(s)) if s.eq_ignore_ascii_case("pong") => Some(Control::Pong),
            Frame::Item(Item::Error(e)) => Some(Control::Error(e)),
            Frame::Item(_) => None,
        };
        if let Some(report) = report {
            if control.send(report).is_err() {
                return;
            }
        }
    }
}

/// The topic of a channel name as Redis gives it; `None` for a name that is not ours.
fn unprefixed(prefix: &str, channel: &[u8]) -> Option<Topic> {
    Topic::from_channel(std::str::from_utf8(channel).ok()?.strip_prefix(prefix)?)
}

#[async_trait]
impl Broker for RedisClusterBroker {
    async fn publish(&self, topic: &Topic, payload: Bytes) -> Result<(), BrokerError> {
        let key = self.shared.prefixed(topic);
        let mut cmd = redis::cmd("SPUBLISH");
        cmd.arg(&key).arg(payload.as_ref());
        self.shared
            .cluster
            .query::<i64>(key.as_bytes(), &cmd)
            .await
            .map(drop)
            .map_err(Into::into)
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        if !self.shared.subscriptions.add(topic) {
            return Ok(());
        }
        let slot = key_slot(self.shared.prefixed(topic).as_bytes());
        let waiter = match self.shared.cluster.owner(slot) {
            Some(node) if node.state() == NodeState::Up => {
                let (tx, rx) = oneshot::channel();
                lock(&self.shared.waiters)
                    .entry(topic.clone())
                    .or_default()
                    .push(tx);
                Some(rx)
            }
            // Down: its task subscribes when it reconnects. Unserved: after a refresh.
            Some(_) => None,
            None => {
                self.shared.cluster.want_refresh();
                None
            }
        };
        self.shared.broadcast(ShardMsg::Topic(topic.clone()));
        if let Some(waiter) = waiter {
            // Without a confirmation in time, the shard's task keeps at it.
            let _ = tokio::time::timeout(SUBSCRIBE_WAIT, waiter).await;
        }
        Ok(())
    }

    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        if self.shared.subscriptions.remove(topic) {
            self.shared.broadcast(ShardMsg::Topic(topic.clone()));
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        self.shared.check_up()?;
        let cluster = &self.shared.cluster;
        let nodes: Vec<Arc<Node>> = cluster
            .map()
            .masters()
            .iter()
            .map(|address| cluster.node(address))
            .collect();
        futures_util::future::try_join_all(nodes.iter().map(|node| cluster.ping(node))).await?;
        Ok(())
    }
}
