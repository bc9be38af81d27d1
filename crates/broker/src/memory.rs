//! The in-process broker: one node, no network. A publish on a subscribed
//! topic is delivered at once, on the publisher's task. It is never down, so
//! it sends deliveries only.

use async_trait::async_trait;
use bytes::Bytes;
use switchboard_core::{Broker, BrokerError, BrokerEvent, BrokerHandler, Topic};

use crate::subscriptions::Subscriptions;

/// The embedded default broker, for a single node.
pub struct MemoryBroker {
    subscriptions: Subscriptions,
    handler: BrokerHandler,
}

impl MemoryBroker {
    /// A broker that hands deliveries to `handler`.
    pub fn new(handler: BrokerHandler) -> Self {
        Self {
            subscriptions: Subscriptions::default(),
            handler,
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, topic: &Topic, payload: Bytes) -> Result<(), BrokerError> {
        if self.subscriptions.contains(topic) {
            (self.handler)(BrokerEvent::Delivery {
                topic: topic.clone(),
                payload,
            });
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        self.subscriptions.add(topic);
        Ok(())
    }

    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        self.subscriptions.remove(topic);
        Ok(())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}
