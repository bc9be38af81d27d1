//! Presence in Redis, shared by every node: one sorted set per workspace
//! (`<prefix>presence:<workspace>`), members `[connection, user, name]` scored by
//! their expiry, and a set of the workspaces that have entries. Every command
//! names its keys; nothing scans the keyspace. An expired entry is reported by
//! the one node whose `ZREM` removed it, so a leave is announced once.
//!
//! Every command touches exactly one key, so the same code runs on one Redis
//! and on a Redis Cluster: there each command goes to the master of its key's
//! slot ([`Cluster::query`]), and the workspaces' sets spread over the shards.

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

fn encode(entry: &PresenceEntry) -> String {
    serde_json::to_string(&(&entry.connection, &entry.user_id, &entry.name)).unwrap_or_default()
}

fn decode(member: &str) -> Option<Member> {
    serde_json::from_str(member).ok()
}

impl RedisPresence {
    pub(crate) fn new(connection: ConnectionManager, prefix: &str) -> Self {
        Self {
            backend: Backend::Single(connection),
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn cluster(cluster: Arc<Cluster>, prefix: &str) -> Self {
        Self {
            backend: Backend::Cluster(cluster),
            prefix: prefix.to_owned(),
        }
    }

    /// Runs `cmd`, whose one key is `key`.
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

    fn key(&self, workspace: &str) -> String {
        format!("{}presence:{workspace}", self.prefix)
    }

    fn index(&self) -> String {
        format!("{}presence-workspaces", self.prefix)
    }

    /// Live members (expiring after `now`).
    async fn live(&self, workspace: &str, now: i64) -> Result<Vec<Member>, BrokerError> {
        let key = self.key(workspace);
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(&key).arg(format!("({now}")).arg("+inf");
        let members: Vec<String> = self.query(&key, &cmd).await?;
        Ok(members.iter().filter_map(|m| decode(m)).collect())
    }

    async fn user_present(
        &self,
        workspace: &str,
        user: &str,
        now: i64,
    ) -> Result<bool, BrokerError> {
        Ok(self
            .live(workspace, now)
            .await?
            .iter()
            .any(|(_, u, _)| u == user))
    }

    async fn zrem(&self, key: &str, member: &str) -> Result<i64, BrokerError> {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(key).arg(member);
        self.query(key, &cmd).await
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn join(
        &self,
        workspace: &str,
        entry: &PresenceEntry,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, BrokerError> {
        let was_present = self.user_present(workspace, &entry.user_id, now).await?;
        let (key, index) = (self.key(workspace), self.index());
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(&key).arg(expires_at).arg(encode(entry));
        let mut sadd = redis::cmd("SADD");
        sadd.arg(&index).arg(workspace);
        // Two keys, maybe on two shards: two commands, sent together.
        tokio::try_join!(
            self.query::<i64>(&key, &zadd),
            self.query::<i64>(&index, &sadd)
        )?;
        Ok(!was_present)
    }

    async fn leave(
        &self,
        workspace: &str,
        connection: &str,
        now: i64,
    ) -> Result<Option<String>, BrokerError> {
        let key = self.key(workspace);
        let mut zrange = redis::cmd("ZRANGE");
        zrange.arg(&key).arg(0).arg(-1).arg("WITHSCORES");
        let members: Vec<(String, f64)> = self.query(&key, &zrange).await?;
        let mut gone_user = None;
        for (member, expires) in members {
            let Some((conn, user, _)) = decode(&member) else {
                continue;
            };
            if conn != connection {
                continue;
            }
            let removed = self.zrem(&key, &member).await?;
            if removed == 1 && expires as i64 > now {
                gone_user = Some(user);
            }
        }
        match gone_user {
            Some(user) if !self.user_present(workspace, &user, now).await? => Ok(Some(user)),
            _ => Ok(None),
        }
    }

    async fn users(
        &self,
        workspace: &str,
        now: i64,
    ) -> Result<Vec<(String, Option<String>)>, BrokerError> {
        let mut users: Vec<(String, Option<String>)> = self
            .live(workspace, now)
            .await?
            .into_iter()
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
            let key = self.key(&workspace);
            let mut expired_cmd = redis::cmd("ZRANGEBYSCORE");
            expired_cmd.arg(&key).arg("-inf").arg(now);
            let expired: Vec<String> = self.query(&key, &expired_cmd).await?;
            for member in expired {
                let removed = self.zrem(&key, &member).await?;
                let Some((_, user, _)) = decode(&member) else {
                    continue;
                };
                let reported = gone.iter().any(|(w, u)| w == &workspace && u == &user);
                if removed == 1 && !reported && !self.user_present(&workspace, &user, now).await? {
                    gone.push((workspace.clone(), user));
                }
            }
            let mut zcard = redis::cmd("ZCARD");
            zcard.arg(&key);
            let left: i64 = self.query(&key, &zcard).await?;
            if left == 0 {
                let mut srem = redis::cmd("SREM");
                srem.arg(&index).arg(&workspace);
                let _: i64 = self.query(&index, &srem).await?;
            }
        }
        Ok(gone)
    }
}
