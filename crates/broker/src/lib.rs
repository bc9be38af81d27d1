//! Adapters for the core's [`Broker`](switchboard_core::Broker) port.
//!
//! [`MemoryBroker`] is the embedded default: one node, publishes handed
//! straight to the delivery handler for the channels this node subscribed to.

mod memory;
mod presence;

pub use memory::MemoryBroker;
pub use presence::MemoryPresence;
