//! Redis Cluster plumbing shared by [`RedisClusterBroker`](crate::RedisClusterBroker)
//! and the cluster mode of [`RedisPresence`](crate::RedisPresence): the hash slot
//! of a key, the slot map (which master serves which of the 16384 slots, read
//! with `CLUSTER SLOTS`), and one command connection per master.
//!
//! [`Cluster::query`] sends a single-key command to the master of its key's
//! slot. A `MOVED` reply sends it once more to the node named there and asks
//! for a slot-map refresh (done by the broker's coordinator task); an `ASK`
//! reply sends it to the named node behind `ASKING`. A master whose
//! subscription connection is down is taken as down: commands for its slots
//! fail at once instead of waiting on timeouts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue,
    RedisError, ServerErrorKind, Value,
};
use switchboard_core::BrokerError;
use tokio::sync::Notify;

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// `MOVED`/`ASK` hops one command may take before it gives up.
const MAX_REDIRECTS: usize = 3;

/// What went wrong talking to a Redis Cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid redis-cluster URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("no redis cluster node answered CLUSTER SLOTS (last error: {last})")]
    NoTopology { last: String },
    #[error("malformed CLUSTER SLOTS reply from {node}: {reason}")]
    BadSlots { node: String, reason: &'static str },
    #[error("hash slot {0} is not served by any redis cluster master")]
    SlotUncovered(u16),
    #[error("redis cluster node {0} is unreachable")]
    NodeDown(String),
    #[error("redis cluster node {node}: {source}")]
    Redis {
        node: String,
        #[source]
        source: RedisError,
    },
    #[error("redis cluster: slot {0} still redirected after {MAX_REDIRECTS} hops")]
    TooManyRedirects(u16),
    #[error("redis cluster node {node}: protocol error: {reason}")]
    Protocol { node: String, reason: String },
}

impl From<ClusterError> for BrokerError {
    fn from(e: ClusterError) -> Self {
        let transient = match &e {
            ClusterError::InvalidUrl { url, reason } => {
                return BrokerError::InvalidUrl {
                    url: url.clone(),
                    reason: reason.clone(),
                }
            }
            ClusterError::Redis { source, .. } => crate::redis_transient(source),
            ClusterError::NoTopology { .. }
            | ClusterError::SlotUncovered(_)
            | ClusterError::NodeDown(_)
            | ClusterError::TooManyRedirects(_) => true,
            ClusterError::BadSlots { .. } | ClusterError::Protocol { .. } => false,
        };
        if transient {
            BrokerError::unavailable("redis cluster", Some(Box::new(e)))
        } else {
            BrokerError::failed("redis cluster", Some(Box::new(e)))
        }
    }
}

/// The hash slot of a key (or a sharded channel): CRC16 (XMODEM) of the key,
/// or of its hash tag (the part between the first `{` and the next `}`, when
/// not empty), modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster uses it.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// `redis-cluster://[user:password@]host:port,host:port[,...]` → seed connection infos.
pub fn parse_seeds(url: &str) -> Result<Vec<ConnectionInfo>, ClusterError> {
    let invalid = |reason: &str| ClusterError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("redis-cluster://")
        .ok_or_else(|| invalid("it must start with redis-cluster://"))?;
    let (hosts, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !matches!(path, "" | "/" | "/0") {
        return Err(invalid("a cluster has database 0 only"));
    }
    let (userinfo, hosts) = match hosts.rfind('@') {
        Some(i) => (&hosts[..=i], &hosts[i + 1..]),
        None => ("", hosts),
    };
    let mut seeds = Vec::new();
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let host = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:6379")
        };
        let info = redis::Client::open(format!("redis://{userinfo}{host}"))
            .map_err(|e| invalid(&e.to_string()))?
            .get_connection_info()
            .clone();
        seeds.push(info);
    }
    if seeds.is_empty() {
        return Err(invalid("no seed node (host:port) given"));
    }
    Ok(seeds)
}

/// `host:port` of a connection info (seeds are TCP).
fn address_of(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        other => other.to_string(),
    }
}

/// `host:port` → (host, port); the port is after the last colon.
pub fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

/// Which master serves each slot.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// Master addresses (`host:port`), in the order `CLUSTER SLOTS` listed them first.
    masters: Vec<String>,
    /// Slot → index into `masters`; `u16::MAX` where no master serves the slot.
    slots: Vec<u16>,
}

impl SlotMap {
    /// Parses a `CLUSTER SLOTS` reply given by `node` (whose host stands in for an empty one).
    pub fn from_cluster_slots(value: Value, node: &str) -> Result<Self, ClusterError> {
        let bad = |reason| ClusterError::BadSlots {
            node: node.to_owned(),
            reason,
        };
        let Value::Array(ranges) = value else {
            return Err(bad("not an array"));
        };
        let default_host = split_address(node).map_or("127.0.0.1", |(h, _)| h);
        let mut map = SlotMap {
            masters: Vec::new(),
            slots: vec![u16::MAX; usize::from(SLOTS)],
        };
        for range in ranges {
            let Value::Array(range) = range else {
                return Err(bad("a range is not an array"));
            };
            let (Some(start), Some(end), Some(Value::Array(master))) =
                (range.first(), range.get(1), range.get(2))
            else {
                return Err(bad("a range lacks start, end or master"));
            };
            let (start, end) = match (as_int(start), as_int(end)) {
                (Some(s), Some(e)) if s <= e && e < i64::from(SLOTS) && s >= 0 => {
                    (s as usize, e as usize)
                }
                _ => return Err(bad("a slot range is out of bounds")),
            };
            let host = match master.first() {
                Some(Value::BulkString(h)) if !h.is_empty() && h.as_slice() != b"?" => {
                    String::from_utf8_lossy(h).into_owned()
                }
                Some(Value::SimpleString(h)) if !h.is_empty() => h.clone(),
                _ => default_host.to_owned(),
            };
            let port = master
                .get(1)
                .and_then(as_int)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| bad("a master has no port"))?;
            let address = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let index = match map.masters.iter().position(|m| *m == address) {
                Some(i) => i,
                None => {
                    map.masters.push(address);
                    map.masters.len() - 1
                }
            };
            let index = u16::try_from(index).map_err(|_| bad("too many masters"))?;
            map.slots[start..=end].fill(index);
        }
        Ok(map)
    }

    /// The address of the master serving `slot`.
    pub fn master(&self, slot: u16) -> Option<&str> {
        let index = *self.slots.get(usize::from(slot))?;
        self.masters.get(usize::from(index)).map(String::as_str)
    }

    /// Every master that serves at least one slot.
    pub fn masters(&self) -> &[String] {
        &self.masters
    }

    /// Every slot is served.
    pub fn covers_all(&self) -> bool {
        !self.slots.is_empty() && self.slots.iter().all(|&s| s != u16::MAX)
    }
}

fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        Value::BulkString(s) => std::str::from_utf8(s).ok()?.parse().ok(),
        _ => None,
    }
}

/// A master's reachability, as its subscription connection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Not connected yet (a node just learnt of): commands are tried.
    Unknown = 0,
    Up = 1,
    /// Its subscription connection is down: commands for it fail at once.
    Down = 2,
}

/// One cluster node: its address, its command connection and its state.
pub struct Node {
    address: String,
    info: ConnectionInfo,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    state: AtomicU8,
}

impl Node {
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Connection settings of this node (address plus the seeds' credentials).
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    pub fn state(&self) -> NodeState {
        match self.state.load(Ordering::Acquire) {
            1 => NodeState::Up,
            2 => NodeState::Down,
            _ => NodeState::Unknown,
        }
    }

    pub fn set_state(&self, state: NodeState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// The command connection, opened if there is none. The bool is true when it was already open.
    async fn connection(&self) -> Result<(MultiplexedConnection, bool), ClusterError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok((connection.clone(), true));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connection = redis::Client::open(self.info.clone())
            .map_err(|e| self.error(e))?
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(e))?;
        *slot = Some(connection.clone());
        Ok((connection, false))
    }

    /// Forgets the command connection, so that the next command opens a new one.
    async fn reset(&self) {
        *self.connection.lock().await = None;
    }

    fn error(&self, source: RedisError) -> ClusterError {
        ClusterError::Redis {
            node: self.address.clone(),
            source,
        }
    }
}

/// A Redis Cluster as this node sees it: its seeds, its slot map and its nodes.
pub struct Cluster {
    /// Never empty.
    seeds: Vec<ConnectionInfo>,
    map: RwLock<Arc<SlotMap>>,
    nodes: Mutex<HashMap<String, Arc<Node>>>,
    /// Signalled when a reply showed the slot map to be stale.
    refresh_wanted: Notify,
}

impl Cluster {
    /// The cluster of a `redis-cluster://` URL; its slot map is empty until [`Cluster::refresh`].
    pub fn new(url: &str) -> Result<Self, ClusterError> {
        Ok(Self {
            seeds: parse_seeds(url)?,
            map: RwLock::new(Arc::new(SlotMap::default())),
            nodes: Mutex::new(HashMap::new()),
            refresh_wanted: Notify::new(),
        })
    }

    /// The current slot map.
    pub fn map(&self) -> Arc<SlotMap> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The node at `address`, known from now on.
    pub fn node(&self, address: &str) -> Arc<Node> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(node) = nodes.get(address) {
            return node.clone();
        }
        // Every node takes the seeds' credentials; `parse_seeds` never gives none.
        let base = self.seeds[0].clone();
        let info = match split_address(address) {
            Some((host, port)) => base.set_addr(ConnectionAddr::Tcp(host.to_owned(), port)),
            None => base,
        };
        let node = Arc::new(Node {
            address: address.to_owned(),
            info,
            connection: tokio::sync::Mutex::new(None),
            state: AtomicU8::new(NodeState::Unknown as u8),
        });
        nodes.insert(address.to_owned(), node.clone());
        node
    }

    /// The master serving `slot`, by the current map.
    pub fn owner(&self, slot: u16) -> Option<Arc<Node>> {
        let map = self.map();
        map.master(slot).map(|address| self.node(address))
    }

    /// Asks the coordinator for a slot-map refresh (coalesced).
    pub fn want_refresh(&self) {
        self.refresh_wanted.notify_one();
    }

    /// Resolves when a refresh was asked for.
    pub async fn refresh_wanted(&self) {
        self.refresh_wanted.notified().await;
    }

    /// Reads the slot map from the first node that answers `CLUSTER SLOTS`: the
    /// known masters first, then the seeds. True if the map changed.
    pub async fn refresh(&self) -> Result<bool, ClusterError> {
        let mut candidates: Vec<String> = self.map().masters().to_vec();
        for seed in &self.seeds {
            let address = address_of(seed);
            if !candidates.contains(&address) {
                candidates.push(address);
            }
        }
        let mut last = String::from("no node to ask");
        for address in candidates {
            let node = self.node(&address);
            let reply = async {
                let (mut connection, _) = node.connection().await?;
                let reply = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async::<Value>(&mut connection)
                    .await;
                if reply.as_ref().is_err_and(is_connection_error) {
                    node.reset().await;
                }
                let reply = reply.map_err(|e| node.error(e))?;
                SlotMap::from_cluster_slots(reply, &address)
            }
            .await;
            match reply {
                Ok(map) if !map.masters().is_empty() => {
                    let mut current = self.map.write().unwrap_or_else(|e| e.into_inner());
                    let changed = **current != map;
                    if changed {
                        tracing::info!(masters = ?map.masters(), "redis cluster slot map loaded");
                        *current = Arc::new(map);
                    }
                    return Ok(changed);
                }
                Ok(_) => last = format!("{address} serves no slots (cluster not set up?)"),
                Err(e) => last = e.to_string(),
            }
        }
        Err(ClusterError::NoTopology { last })
    }

    /// Runs a single-key command on the master of `key`'s slot, following
    /// `MOVED`/`ASK` redirections. Fails at once if that master is down.
    pub async fn query<T: FromRedisValue>(&self, key: &[u8], cmd: &Cmd) -> Result<T, ClusterError> {
        let slot = key_slot(key);
        let mut node = self.owner(slot).ok_or(ClusterError::SlotUncovered(slot))?;
        let mut asking = false;
        let mut retried = false;
        let mut hops = 0;
        loop {
            if node.state() == NodeState::Down {
                return Err(ClusterError::NodeDown(node.address.clone()));
            }
            let (mut connection, reused) = node.connection().await?;
            let reply = if asking {
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING").ignore().add_command(cmd.clone());
                connection
                    .req_packed_commands(&pipe, 1, 1)
                    .await
                    .and_then(|mut values| {
                        values.pop().ok_or_else(|| {
                            RedisError::from((ErrorKind::Client, "no reply after ASKING"))
                        })
                    })
            } else {
                connection.req_packed_command(cmd).await
            };
            let error = match reply.and_then(|value| value.extract_error()) {
                Ok(value) => {
                    return redis::from_redis_value(value)
                        .map_err(|e| node.error(RedisError::from(e)));
                }
                Err(e) => e,
            };
            match error.kind() {
                ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask) => {
                    hops += 1;
                    if hops > MAX_REDIRECTS {
                        return Err(ClusterError::TooManyRedirects(slot));
                    }
                    asking = error.kind() == ErrorKind::Server(ServerErrorKind::Ask);
                    if !asking {
                        self.want_refresh();
                    }
                    let Some((address, _)) = error.redirect_node() else {
                        return Err(node.error(error));
                    };
                    node = self.node(address);
                }
                _ if is_connection_error(&error) => {
                    node.reset().await;
                    // A connection that was open may have died quietly (a restarted
                    // node): one more try on a fresh one.
                    if reused && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(node.error(error));
                }
                _ => return Err(node.error(error)),
            }
        }
    }

    /// `PING` on one node's command connection.
    pub async fn ping(&self, node: &Node) -> Result<(), ClusterError> {
        let (mut connection, _) = node.connection().await?;
        let reply = redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await;
        if reply.as_ref().is_err_and(is_connection_error) {
            node.reset().await;
        }
        reply.map(drop).map_err(|e| node.error(e))
    }
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values given by `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b""), 0);
        // Hash tags: the first {...} that is not empty decides.
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar"), key_slot(b"foo{bar"));
    }

    #[test]
    fn seeds_are_parsed() {
        let seeds =
            parse_seeds("redis-cluster://127.0.0.1:7000,127.0.0.1:7001, localhost").unwrap();
        let addresses: Vec<String> = seeds.iter().map(address_of).collect();
        assert_eq!(
            addresses,
            ["127.0.0.1:7000", "127.0.0.1:7001", "localhost:6379"]
        );
        let seeds = parse_seeds("redis-cluster://u:p%40ss@h1:1,h2:2/").unwrap();
        assert_eq!(seeds.len(), 2);
        assert_eq!(seeds[1].redis_settings().username(), Some("u"));
        assert_eq!(seeds[1].redis_settings().password(), Some("p@ss"));
        assert!(parse_seeds("redis://h:1").is_err());
        assert!(parse_seeds("redis-cluster://").is_err());
        assert!(parse_seeds("redis-cluster://h:1/2").is_err());
        assert!(parse_seeds("redis-cluster://h:notaport").is_err());
    }

    fn range(start: i64, end: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ]),
        ])
    }

    #[test]
    fn cluster_slots_reply_is_parsed() {
        let reply = Value::Array(vec![
            range(0, 5460, "127.0.0.1", 7000),
            range(5461, 10922, "", 7001),
            range(10923, 16383, "127.0.0.1", 7002),
        ]);
        let map = SlotMap::from_cluster_slots(reply, "10.0.0.9:7001").unwrap();
        assert!(map.covers_all());
        assert_eq!(map.master(0), Some("127.0.0.1:7000"));
        assert_eq!(map.master(5461), Some("10.0.0.9:7001"));
        assert_eq!(map.master(16383), Some("127.0.0.1:7002"));
        assert_eq!(map.masters().len(), 3);

        let partial = Value::Array(vec![range(0, 100, "h", 1)]);
        let map = SlotMap::from_cluster_slots(partial, "h:1").unwrap();
        assert!(!map.covers_all());
        assert_eq!(map.master(101), None);

        let bad = Value::Array(vec![range(0, 16384, "h", 1)]);
        assert!(SlotMap::from_cluster_slots(bad, "h:1").is_err());
        assert!(SlotMap::from_cluster_slots(Value::Nil, "h:1").is_err());
    }
}
