//! Adapters for the core's [`Broker`](switchboard_core::Broker) port.
//!
//! [`MemoryBroker`] is the embedded default: one node, publishes handed
//! straight to the delivery handler for the channels this node subscribed to.
//! [`RedisBroker`] joins many nodes through Redis pub/sub, and
//! [`RedisPresence`] keeps their presence in Redis sorted sets.
//! [`RedisClusterBroker`] does the same over a Redis Cluster with sharded
//! pub/sub (`SPUBLISH`/`SSUBSCRIBE`), its presence sets spread over the shards.

mod cluster;
mod memory;
mod presence;
mod redis;
mod redis_cluster;
mod redis_presence;
mod resp;

pub use memory::MemoryBroker;
pub use presence::MemoryPresence;
pub use redis::RedisBroker;
pub use redis_cluster::RedisClusterBroker;
pub use redis_presence::RedisPresence;
