//! Presence in Redis, shared by every node: one sorted set per workspace
//! (`<prefix>presence:<workspace>`), members `[connection, user, name]` scored by
//! their expiry, and a set of the workspaces that have entries. Every command
//! names its keys; nothing scans the keyspace. An expired entry is reported by
//! the one node whose `ZREM` removed it, so a leave is announced once.

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use switchboard_core::{BrokerError, Presence, PresenceEntry};

pub struct RedisPresence {
    connection: ConnectionManager,
    prefix: String,
}

fn redis_error(e: redis::RedisError) -> BrokerError {
    BrokerError(e.to_string())
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
            connection,
            prefix: prefix.to_owned(),
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
        let mut c = self.connection.clone();
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key(workspace))
            .arg(format!("({now}"))
            .arg("+inf")
            .query_async(&mut c)
            .await
            .map_err(redis_error)?;
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
        let mut c = self.connection.clone();
        redis::pipe()
            .cmd("ZADD")
            .arg(self.key(workspace))
            .arg(expires_at)
            .arg(encode(entry))
            .ignore()
            .cmd("SADD")
            .arg(self.index())
            .arg(workspace)
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(redis_error)?;
        Ok(!was_present)
    }

    async fn leave(
        &self,
        workspace: &str,
        connection: &str,
        now: i64,
    ) -> Result<Option<String>, BrokerError> {
        let mut c = self.connection.clone();
        let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.key(workspace))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut c)
            .await
            .map_err(redis_error)?;
        let mut gone_user = None;
        for (member, expires) in members {
            let Some((conn, user, _)) = decode(&member) else {
                continue;
            };
            if conn != connection {
                continue;
            }
            let removed: i64 = redis::cmd("ZREM")
                .arg(self.key(workspace))
                .arg(&member)
                .query_async(&mut c)
                .await
                .map_err(redis_error)?;
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
        let mut c = self.connection.clone();
        let workspaces: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.index())
            .query_async(&mut c)
            .await
            .map_err(redis_error)?;
        let mut gone = Vec::new();
        for workspace in workspaces {
            let key = self.key(&workspace);
            let expired: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(now)
                .query_async(&mut c)
                .await
                .map_err(redis_error)?;
            for member in expired {
                let removed: i64 = redis::cmd("ZREM")
                    .arg(&key)
                    .arg(&member)
                    .query_async(&mut c)
                    .await
                    .map_err(redis_error)?;
                let Some((_, user, _)) = decode(&member) else {
                    continue;
                };
                let reported = gone.iter().any(|(w, u)| w == &workspace && u == &user);
                if removed == 1 && !reported && !self.user_present(&workspace, &user, now).await? {
                    gone.push((workspace.clone(), user));
                }
            }
            let left: i64 = redis::cmd("ZCARD")
                .arg(&key)
                .query_async(&mut c)
                .await
                .map_err(redis_error)?;
            if left == 0 {
                let _: i64 = redis::cmd("SREM")
                    .arg(self.index())
                    .arg(&workspace)
                    .query_async(&mut c)
                    .await
                    .map_err(redis_error)?;
            }
        }
        Ok(gone)
    }
}
