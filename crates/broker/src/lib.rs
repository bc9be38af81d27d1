//! Adapters for the core's [`Broker`] and [`Presence`] ports, and [`connect`],
//! which picks one from a broker URL.
//!
//! [`MemoryBroker`] is the embedded default (`memory`): one node, publishes
//! handed straight to the event handler for the topics this node subscribed
//! to, with [`MemoryPresence`]. [`RedisBroker`] (`redis://host:port[/db]`)
//! joins many nodes through Redis pub/sub, and [`RedisPresence`] keeps their
//! presence in Redis sorted sets. [`RedisClusterBroker`]
//! (`redis-cluster://host:port,host:port,...`) does the same over a Redis
//! Cluster with sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`), its presence sets
//! spread over the shards. Every adapter counts subscriptions with the same
//! structure and passes the same conformance suite (`tests/conformance`).

mod cluster;
mod memory;
mod presence;
mod redis;
mod redis_cluster;
mod redis_presence;
mod resp;
mod subscriptions;

use std::sync::Arc;

pub use memory::MemoryBroker;
pub use presence::MemoryPresence;
pub use redis::RedisBroker;
pub use redis_cluster::RedisClusterBroker;
pub use redis_presence::RedisPresence;
use switchboard_core::{Broker, BrokerError, BrokerHandler, Presence};

/// The kinds of broker a URL can name.
enum Kind {
    Memory,
    Redis,
    RedisCluster,
}

/// The kind of broker `url` names, without checking the rest of it.
fn kind(url: &str) -> Result<Kind, BrokerError> {
    if url == "memory" {
        Ok(Kind::Memory)
    } else if url.starts_with("redis://") {
        Ok(Kind::Redis)
    } else if url.starts_with("redis-cluster://") {
        Ok(Kind::RedisCluster)
    } else {
        Err(BrokerError::InvalidUrl {
            url: url.to_owned(),
            reason: "use `memory`, `redis://host:port[/db]` or \
                     `redis-cluster://host:port,host:port,...`"
                .to_owned(),
        })
    }
}

/// Checks a broker URL without connecting: that it names a supported broker
/// and is well formed.
pub fn validate_url(url: &str) -> Result<(), BrokerError> {
    let invalid = |reason: String| BrokerError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    match kind(url)? {
        Kind::Memory => Ok(()),
        Kind::Redis => ::redis::Client::open(url)
            .map(drop)
            .map_err(|e| invalid(e.to_string())),
        Kind::RedisCluster => cluster::parse_seeds(url).map(drop).map_err(Into::into),
    }
}

/// Opens the broker a URL names (`memory`, `redis://...` or
/// `redis-cluster://...`) with its presence, and hands every
/// [`BrokerEvent`](switchboard_core::BrokerEvent) to `handler`. In Redis,
/// every channel and key gets `prefix` (the in-process broker has no use for
/// it). Returns once the broker is up.
pub async fn connect(
    url: &str,
    prefix: &str,
    handler: BrokerHandler,
) -> Result<(Arc<dyn Broker>, Arc<dyn Presence>), BrokerError> {
    validate_url(url)?;
    match kind(url)? {
        Kind::Memory => Ok((
            Arc::new(MemoryBroker::new(handler)),
            Arc::new(MemoryPresence::default()),
        )),
        Kind::Redis => {
            let broker = RedisBroker::connect(url, prefix, handler).await?;
            let presence = Arc::new(broker.presence());
            Ok((Arc::new(broker), presence))
        }
        Kind::RedisCluster => {
            let broker = RedisClusterBroker::connect(url, prefix, handler).await?;
            let presence = Arc::new(broker.presence());
            Ok((Arc::new(broker), presence))
        }
    }
}

/// Whether a Redis error is one that may go away by itself: connection
/// trouble, cluster redirections and outages, a server still loading.
pub(crate) fn redis_transient(e: &::redis::RedisError) -> bool {
    use ::redis::{ErrorKind, ServerErrorKind};
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
}

/// A Redis error as a [`BrokerError`], transient as [`redis_transient`] says.
pub(crate) fn redis_error(context: &str, e: ::redis::RedisError) -> BrokerError {
    if redis_transient(&e) {
        BrokerError::unavailable(context, Some(Box::new(e)))
    } else {
        BrokerError::failed(context, Some(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_connecting() {
        assert!(validate_url("memory").is_ok());
        assert!(validate_url("redis://127.0.0.1:1/2").is_ok());
        assert!(validate_url("redis-cluster://127.0.0.1:1,127.0.0.1:2").is_ok());
        for bad in [
            "",
            "Memory",
            "memory://",
            "rediss://h",
            "redis-cluster://",
            "redis-cluster://h:1/3",
            "redis://h:notaport",
        ] {
            let e = validate_url(bad).expect_err(bad);
            assert!(matches!(e, BrokerError::InvalidUrl { .. }), "{bad}: {e}");
            assert!(!e.is_transient());
        }
    }

    #[tokio::test]
    async fn connect_picks_the_memory_broker() {
        let (broker, _presence) = connect("memory", "", Arc::new(|_| {})).await.unwrap();
        broker.ping().await.unwrap();
        assert!(connect("nope://", "", Arc::new(|_| {})).await.is_err());
    }
}
