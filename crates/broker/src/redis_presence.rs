//! Presence in Redis, shared by every node. Per workspace, three keys that
//! share one hash tag (so one Redis Cluster slot holds them all):
//!
//! - `<prefix>presence:{<workspace>}`: a sorted set of entries
//!   `[connection, user, name]` scored by their expiry;
//! - `<prefix>presence-conns:{<workspace>}`: a hash, connection → its entry;
//! - `<prefix>presence-users:{<workspace>}`: a hash, user → how many entries
//!   they have.
//!
//! Each change is one Lua script over those keys, so it is atomic: a user who
//! joins on two nodes at once is announced once (the counter goes from 0 to 1
//! once), a user's last entry is reported gone once, by whichever node's
//! `leave` or `expire` removed it. A user counts as present from their first
//! entry to the removal of their last one (by `leave`, or by `expire` once it
//! expired); `users` lists only entries that have not expired yet.
//!
//! `<prefix>presence-workspaces` is a set of the workspaces that have entries,
//! so that `expire` never scans the keyspace. It lives in another slot, so it
//! cannot be in the scripts; it stays right by ordering instead: `join` adds
//! the workspace after its entry, and `expire` removes an empty workspace
//! before it looks whether the workspace is still empty, and adds it back if
//! not. Whatever interleaves, a workspace with entries stays in the index.
//!
//! Scripts are sent with `EVAL`: Redis caches each script by its hash, and
//! the few hundred bytes per call cost less than a `NOSCRIPT` round trip
//! would on a restarted Redis.

use std::sync::Arc;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{Cmd, FromRedisValue};
use switchboard_core::{BrokerError, Presence, PresenceEntry};

use crate::cluster::Cluster;
use crate::redis_error;

/// Presence in one Redis or in a Redis Cluster, shared by every node;
/// made by [`RedisBroker::presence`](crate::RedisBroker::presence) or
/// [`RedisClusterBroker::presence`](crate::RedisClusterBroker::presence).
pub struct RedisPresence {
    backend: Backend,
    prefix: String,
}

enum Backend {
    Single(ConnectionManager),
    Cluster(Arc<Cluster>),
}

type Member = (String, String, Option<String>);

/// Adds or refreshes a connection's entry. KEYS: entries, conns, users.
/// ARGV: connection, entry, expiry, user. Returns 1 if the user had no entry.
const JOIN: &str = r"
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  redis.call('ZREM', KEYS[1], old)
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('HINCRBY', KEYS[3], ARGV[4], 1) == 1 then return 1 end
return 0
";

/// Removes a connection's entry. KEYS: entries, conns, users. ARGV: connection.
/// Returns the user if that was their last entry.
const LEAVE: &str = r"
local member = redis.call('HGET', KEYS[2], ARGV[1])
if not member then return false end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], member)
local user = cjson.decode(member)[2]
if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
  redis.call('HDEL', KEYS[3], user)
  return user
end
return false
";

/// Removes up to ARGV[2] entries that expired by ARGV[1]. KEYS: entries,
/// conns, users. Returns `[entries left, entries removed, users gone]`.
const EXPIRE: &str = r"
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local gone = {}
for _, member in ipairs(expired) do
  redis.call('ZREM', KEYS[1], member)
  local entry = cjson.decode(member)
  if redis.call('HGET', KEYS[2], entry[1]) == member then
    redis.call('HDEL', KEYS[2], entry[1])
  end
  if redis.call('HINCRBY', KEYS[3], entry[2], -1) <= 0 then
    redis.call('HDEL', KEYS[3], entry[2])
    table.insert(gone, entry[2])
  end
end
return {redis.call('ZCARD', KEYS[1]), #expired, gone}
";

/// Most entries one `EXPIRE` call removes, so that one script never holds
/// Redis for long; `expire` calls it again while it removes that many.
const EXPIRE_BATCH: usize = 512;

fn encode(entry: &PresenceEntry) -> String {
    serde_json::to_string(&(&entry.connection, &entry.user_id, &entry.name)).unwrap_or_default()
}

fn decode(member: &str) -> Option<Member> {
    serde_json::from_str(member).ok()
}

/// The three keys of a workspace, entries first.
struct Keys([String; 3]);

impl RedisPresence {
    pub(crate) fn new(connection: ConnectionManager, prefix: &str) -> Self {
        Self::with(Backend::Single(connection), prefix)
    }

    pub(crate) fn cluster(cluster: Arc<Cluster>, prefix: &str) -> Self {
        Self::with(Backend::Cluster(cluster), prefix)
    }

    fn with(backend: Backend, prefix: &str) -> Self {
        // A brace in the prefix would make it, not the workspace, the hash tag
        // of some keys and not of others.
        Self {
            backend,
            prefix: prefix.replace(['{', '}'], "_"),
        }
    }

    /// Runs `cmd`, whose keys are all in the slot of `key`.
    async fn query<T: FromRedisValue>(&self, key: &str, cmd: &Cmd) -> Result<T, BrokerError> {
        match &self.backend {
            Backend::Single(connection) => {
                let mut c = connection.clone();
                cmd.query_async(&mut c)
                    .await
                    .map_err(|e| redis_error("presence", e))
            }
            Backend::Cluster(cluster) => Ok(cluster.query(key.as_bytes(), cmd).await?),
        }
    }

    /// Runs one of the scripts on a workspace's keys.
    async fn script<T: FromRedisValue>(
        &self,
        script: &str,
        keys: &Keys,
        args: &[&str],
    ) -> Result<T, BrokerError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.0.len());
        for key in &keys.0 {
            cmd.arg(key);
        }
        for arg in args {
            cmd.arg(*arg);
        }
        self.query(&keys.0[0], &cmd).await
    }

    fn keys(&self, workspace: &str) -> Keys {
        let p = &self.prefix;
        Keys([
            format!("{p}presence:{{{workspace}}}"),
            format!("{p}presence-conns:{{{workspace}}}"),
            format!("{p}presence-users:{{{workspace}}}"),
        ])
    }

    fn index(&self) -> String {
        format!("{}presence-workspaces", self.prefix)
    }

    async fn index_command(&self, command: &str, workspace: &str) -> Result<(), BrokerError> {
        let index = self.index();
        let mut cmd = redis::cmd(command);
        cmd.arg(&index).arg(workspace);
        self.query::<i64>(&index, &cmd).await.map(drop)
    }

    /// Drops a workspace's expired entries; returns the users gone and
    /// whether entries are left.
    async fn expire_workspace(
        &self,
        workspace: &str,
        now: i64,
    ) -> Result<(Vec<String>, bool), BrokerError> {
        let keys = self.keys(workspace);
        let (now, batch) = (now.to_string(), EXPIRE_BATCH.to_string());
        let mut gone = Vec::new();
        loop {
            let (left, removed, users): (i64, usize, Vec<String>) =
                self.script(EXPIRE, &keys, &[&now, &batch]).await?;
            gone.extend(users);
            if removed < EXPIRE_BATCH {
                return Ok((gone, left > 0));
            }
        }
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn join(
        &self,
        workspace: &str,
        entry: &PresenceEntry,
        expires_at: i64,
        _now: i64,
    ) -> Result<bool, BrokerError> {
        let keys = self.keys(workspace);
        let args = [
            entry.connection.as_str(),
            &encode(entry),
            &expires_at.to_string(),
            entry.user_id.as_str(),
        ];
        let first: i64 = self.script(JOIN, &keys, &args).await?;
        // After the entry, never before: see the module doc.
        self.index_command("SADD", workspace).await?;
        Ok(first == 1)
    }

    async fn leave(
        &self,
        workspace: &str,
        connection: &str,
        _now: i64,
    ) -> Result<Option<String>, BrokerError> {
        self.script(LEAVE, &self.keys(workspace), &[connection])
            .await
    }

    async fn users(
        &self,
        workspace: &str,
        now: i64,
    ) -> Result<Vec<(String, Option<String>)>, BrokerError> {
        let keys = self.keys(workspace);
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(&keys.0[0]).arg(format!("({now}")).arg("+inf");
        let members: Vec<String> = self.query(&keys.0[0], &cmd).await?;
        let mut users: Vec<(String, Option<String>)> = members
            .iter()
            .filter_map(|m| decode(m))
            .map(|(_, u, n)| (u, n))
            .collect();
        users.sort();
        users.dedup_by(|a, b| a.0 == b.0);
        Ok(users)
    }

    async fn expire(&self, now: i64) -> Result<Vec<(String, String)>, BrokerError> {
        let index = self.index();
        let mut smembers = redis::cmd("SMEMBERS");
        smembers.arg(&index);
        let workspaces: Vec<String> = self.query(&index, &smembers).await?;
        let mut gone = Vec::new();
        for workspace in workspaces {
            let (users, left) = self.expire_workspace(&workspace, now).await?;
            gone.extend(users.into_iter().map(|user| (workspace.clone(), user)));
            if !left {
                // Out of the index first, then look again: a join in between
                // has added its entry before its SADD, so it is seen here.
                self.index_command("SREM", &workspace).await?;
                let (more, left) = self.expire_workspace(&workspace, now).await?;
                gone.extend(more.into_iter().map(|user| (workspace.clone(), user)));
                if left {
                    self.index_command("SADD", &workspace).await?;
                }
            }
        }
        Ok(gone)
    }
}
