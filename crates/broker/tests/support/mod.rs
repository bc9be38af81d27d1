//! Redis servers for the tests: a standalone `redis-server` or a 3-master
//! Redis Cluster, started on free loopback ports (`redis-server` 7 and
//! `redis-cli` on the PATH; without them the caller skips the test, unless
//! `CI=true`, where it fails), plus small helpers to poll and to send admin
//! commands.

#![allow(dead_code)] // Each test binary uses part of it.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::FromRedisValue;

/// Redis processes on loopback; killed on drop.
pub struct TestRedis {
    dir: PathBuf,
    /// The ports of the servers, in start order.
    pub ports: Vec<u16>,
    procs: HashMap<u16, Child>,
    cluster: bool,
}

impl Drop for TestRedis {
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

/// Whether `redis-server` and `redis-cli` are there; panics without them under `CI=true`.
fn redis_binaries() -> bool {
    if have("redis-server") && have("redis-cli") {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "redis-server and redis-cli are required (CI=true)"
    );
    eprintln!("skipped: redis-server or redis-cli is not on the PATH");
    false
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

impl TestRedis {
    fn new(count: usize, cluster: bool) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("switchboard-redis-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut redis = TestRedis {
            dir,
            ports: free_ports(count),
            procs: HashMap::new(),
            cluster,
        };
        for port in redis.ports.clone() {
            redis.spawn(port);
        }
        redis
    }

    /// Starts (again) the server on `port`.
    pub fn spawn(&mut self, port: u16) {
        let mut command = Command::new("redis-server");
        command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
        if self.cluster {
            command
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(self.dir.join(format!("nodes-{port}.conf")));
        }
        let child = command
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.procs.insert(port, child);
    }

    /// Kills the server on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(mut child) = self.procs.remove(&port) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The broker URL: `redis://` for a standalone server, `redis-cluster://` with every seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        if self.cluster {
            format!("redis-cluster://{}", seeds.join(","))
        } else {
            format!("redis://{}", seeds[0])
        }
    }

    /// Waits until the server on `port` answers `PING`.
    pub async fn answering(port: u16) {
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

    /// A standalone server of our own, or `None` when Redis is not installed.
    pub async fn standalone() -> Option<Self> {
        if !redis_binaries() {
            return None;
        }
        let redis = Self::new(1, false);
        Self::answering(redis.ports[0]).await;
        Some(redis)
    }

    /// A 3-master cluster, or `None` when Redis is not installed.
    pub async fn cluster() -> Option<Self> {
        if !redis_binaries() {
            return None;
        }
        let cluster = Self::new(3, true);
        for &port in &cluster.ports {
            Self::answering(port).await;
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
pub async fn admin<T: FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
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
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
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
