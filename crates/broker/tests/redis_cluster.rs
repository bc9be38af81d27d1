//! The Redis Cluster broker and presence against a real 3-master Redis Cluster
//! that this test starts on free loopback ports (`redis-server` 7 and
//! `redis-cli` on the PATH; without them the test is skipped, unless
//! `CI=true`, where it fails).
//!
//! One scenario in order, on one cluster: channels spread over the shards and
//! reach the other node; listeners are counted; nothing uses classic
//! `PUBLISH`; a slot moved to another master (`CLUSTER SETSLOT ... NODE`)
//! is followed by publishers (`MOVED`) and subscribers (the server's
//! `sunsubscribe`); presence works with keys on several shards; a master
//! killed and restarted makes `ping` and its publishes fail fast, then
//! everything resumes by itself.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::FromRedisValue;
use switchboard_broker::RedisClusterBroker;
use switchboard_core::{Broker, Delivery, Presence, PresenceEntry};

/// A 3-master cluster on loopback; its processes are killed on drop.
struct TestCluster {
    dir: PathBuf,
    ports: Vec<u16>,
    procs: HashMap<u16, Child>,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in self.procs.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn have(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Free ports P (with P + 10000, the cluster bus, free too).
fn free_ports(count: usize) -> Vec<u16> {
    let mut seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut ports = Vec::new();
    while ports.len() < count {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 20000 + (seed >> 33) as u16 % 20000;
        if ports.contains(&port) {
            continue;
        }
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10000) {
            ports.push(port);
        }
    }
    ports
}

impl TestCluster {
    fn spawn(&mut self, port: u16) {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(self.dir.join(format!("nodes-{port}.conf")))
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.procs.insert(port, child);
    }

    fn kill(&mut self, port: u16) {
        if let Some(mut child) = self.procs.remove(&port) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis-cluster://{}", seeds.join(","))
    }

    async fn start() -> Option<Self> {
        if !have("redis-server") || !have("redis-cli") {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis-server and redis-cli are required (CI=true)"
            );
            eprintln!("skipped: redis-server or redis-cli is not on the PATH");
            return None;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "switchboard-cluster-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut cluster = TestCluster {
            dir,
            ports: free_ports(3),
            procs: HashMap::new(),
        };
        for port in cluster.ports.clone() {
            cluster.spawn(port);
        }
        for &port in &cluster.ports {
            eventually(
                "redis-server answers PING",
                Duration::from_secs(10),
                || async move {
                    admin::<String>(port, &["PING"])
                        .await
                        .ok()
                        .filter(|p| p == "PONG")
                },
            )
            .await;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let status = run_bounded(create, Duration::from_secs(30));
        assert!(status, "redis-cli --cluster create failed");
        for &port in &cluster.ports {
            eventually(
                "CLUSTER INFO says cluster_state:ok",
                Duration::from_secs(20),
                || async move {
                    admin::<String>(port, &["CLUSTER", "INFO"])
                        .await
                        .ok()
                        .filter(|info| info.contains("cluster_state:ok"))
                },
            )
            .await;
        }
        Some(cluster)
    }
}

/// Runs a command to its end, killing it after `limit`; true if it succeeded.
fn run_bounded(mut command: Command, limit: Duration) -> bool {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("command starts");
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One command on a fresh connection to 127.0.0.1:`port`, bounded by 2 s.
async fn admin<T: FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut connection).await
}

/// Polls `check` until it gives `Some`, at most `limit`; panics naming `what` otherwise.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
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

type Seen = Arc<Mutex<Vec<(String, Bytes)>>>;

async fn broker(url: &str, prefix: &str) -> (RedisClusterBroker, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let broker = RedisClusterBroker::connect(
        url,
        prefix,
        Arc::new(move |d: Delivery| {
            sink.lock().unwrap().push((d.channel, d.payload));
        }),
    )
    .await
    .expect("the broker connects to the cluster");
    (broker, seen)
}

fn got(seen: &Seen, channel: &str, payload: &str) -> bool {
    seen.lock()
        .unwrap()
        .iter()
        .any(|(c, p)| c == channel && p.as_ref() == payload.as_bytes())
}

/// Waits (at most 5 s) until `seen` has `payload` on `channel`.
async fn delivered(seen: &Seen, channel: &str, payload: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got(seen, channel, payload) {
        assert!(
            Instant::now() < deadline,
            "{payload:?} never arrived on {channel}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_pubsub_and_presence_on_a_real_cluster() {
    let Some(mut cluster) = TestCluster::start().await else {
        return;
    };
    let url = cluster.url();
    let first = cluster.ports[0];
    let prefix = format!("t{}:", std::process::id());
    let (a, _seen_a) = broker(&url, &prefix).await;
    let (b, seen_b) = broker(&url, &prefix).await;
    a.ping().await.expect("ping with every master up");

    // Channels spread over the shards, each on the master of its slot.
    let channels: Vec<String> = (0..24).map(|i| format!("ws:c{i}")).collect();
    for channel in &channels {
        b.subscribe(channel).await.unwrap();
    }
    let mut shards_used = std::collections::HashSet::new();
    for channel in &channels {
        let full = format!("{prefix}{channel}");
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
    assert_eq!(shards_used.len(), 3, "24 channels use all three shards");

    for channel in &channels {
        a.publish(channel, Bytes::from(format!("hello {channel}")))
            .await
            .unwrap();
    }
    for channel in &channels {
        delivered(&seen_b, channel, &format!("hello {channel}")).await;
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
    let counted = "ws:counted";
    let full = format!("{prefix}{counted}");
    let (_, owner) = owner_of(first, slot_of(first, &full).await).await;
    b.subscribe(counted).await.unwrap();
    b.subscribe(counted).await.unwrap();
    b.unsubscribe(counted).await.unwrap();
    a.publish(counted, Bytes::from_static(b"still"))
        .await
        .unwrap();
    delivered(&seen_b, counted, "still").await;
    assert_eq!(shard_subscribers(owner, &full).await, 1);
    b.unsubscribe(counted).await.unwrap();
    let counted_full = full.clone();
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
    let moved = &channels[0];
    let full = format!("{prefix}{moved}");
    let slot = slot_of(first, &full).await;
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
    let moved_full = full.clone();
    eventually(
        "b subscribed on the slot's new master",
        Duration::from_secs(10),
        || {
            let full = moved_full.clone();
            async move { (shard_subscribers(target, &full).await == 1).then_some(()) }
        },
    )
    .await;
    assert_eq!(shard_subscribers(source, &full).await, 0);
    for i in 0.. {
        let payload = format!("after the move #{i}");
        a.publish(moved, Bytes::from(payload.clone()))
            .await
            .expect("publish follows MOVED");
        if got(&seen_b, moved, &payload) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if got(&seen_b, moved, &payload) {
            break;
        }
        assert!(i < 50, "no delivery after the slot moved");
    }

    // Presence: one sorted set per workspace, on the shards of their slots.
    let presence = a.presence();
    let presence_b = b.presence();
    let now = 1_000_000;
    let entry = |conn: &str, user: &str| PresenceEntry {
        connection: conn.into(),
        user_id: user.into(),
        name: Some(format!("{user}!")),
    };
    let workspaces: Vec<String> = (0..8).map(|i| format!("{prefix}p{i}")).collect();
    for ws in &workspaces {
        assert!(presence
            .join(ws, &entry("c1", "alice"), now + 1000, now)
            .await
            .unwrap());
        assert!(!presence
            .join(ws, &entry("c2", "alice"), now + 1000, now)
            .await
            .unwrap());
        assert!(presence_b
            .join(ws, &entry("c3", "bob"), now + 500, now)
            .await
            .unwrap());
    }
    for ws in &workspaces {
        let users = presence_b.users(ws, now).await.unwrap();
        assert_eq!(
            users,
            vec![
                ("alice".to_owned(), Some("alice!".to_owned())),
                ("bob".to_owned(), Some("bob!".to_owned()))
            ]
        );
        assert_eq!(presence.leave(ws, "c1", now).await.unwrap(), None);
        assert_eq!(
            presence.leave(ws, "c2", now).await.unwrap(),
            Some("alice".into())
        );
    }
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
        assert!(presence.users(ws, now + 600).await.unwrap().is_empty());
    }

    // A master dies: readiness and its publishes fail fast, the others go on.
    let victim = cluster.ports[1];
    let mut on_victim = None;
    let mut elsewhere = None;
    for channel in &channels[1..] {
        let full = format!("{prefix}{channel}");
        let (_, owner) = owner_of(first, slot_of(first, &full).await).await;
        if owner == victim && on_victim.is_none() {
            on_victim = Some(channel.clone());
        } else if owner != victim && elsewhere.is_none() {
            elsewhere = Some(channel.clone());
        }
    }
    let (on_victim, elsewhere) = (on_victim.unwrap(), elsewhere.unwrap());
    cluster.kill(victim);
    let (a, b) = (&a, &b);
    eventually(
        "ping fails with a master down",
        Duration::from_secs(5),
        || async move { (a.ping().await.is_err() && b.ping().await.is_err()).then_some(()) },
    )
    .await;
    let started = Instant::now();
    assert!(a
        .publish(&on_victim, Bytes::from_static(b"lost"))
        .await
        .is_err());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a publish to a down shard fails fast ({:?})",
        started.elapsed()
    );
    a.publish(&elsewhere, Bytes::from_static(b"during"))
        .await
        .expect("other shards work");
    delivered(&seen_b, &elsewhere, "during").await;

    cluster.spawn(victim);
    eventually(
        "ping recovers after the restart",
        Duration::from_secs(15),
        || async move { (a.ping().await.is_ok() && b.ping().await.is_ok()).then_some(()) },
    )
    .await;
    for i in 0.. {
        let payload = format!("after the restart #{i}");
        if a.publish(&on_victim, Bytes::from(payload.clone()))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if got(&seen_b, &on_victim, &payload) {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(i < 100, "no delivery on the restarted shard");
    }
}
