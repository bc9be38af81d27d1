//! Adapters for the core's [`Broker`](switchboard_core::Broker) port.
//!
//! [`MemoryBroker`] is the embedded default: one node, publishes handed
//! straight to the delivery handler for the channels this node subscribed to.
//! [`RedisBroker`] joins many nodes through Redis pub/sub.

mod memory;
mod presence;
mod redis;

pub use memory::MemoryBroker;
pub use presence::MemoryPresence;
pub use redis::RedisBroker;
