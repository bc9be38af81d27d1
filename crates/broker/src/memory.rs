//! The in-process broker: one node, no network. A publish on a subscribed
//! channel is delivered at once, on the publisher's task.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use switchboard_core::ports::DeliveryHandler;
use switchboard_core::{Broker, BrokerError, Delivery};

pub struct MemoryBroker {
    /// Channel → number of subscriptions.
    channels: Mutex<HashMap<String, usize>>,
    deliver: DeliveryHandler,
}

impl MemoryBroker {
    pub fn new(deliver: DeliveryHandler) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            deliver,
        }
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Channels with at least one subscription (for tests and metrics).
    pub fn subscription_count(&self) -> usize {
        self.channels().len()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BrokerError> {
        if self.channels().contains_key(channel) {
            (self.deliver)(Delivery {
                channel: channel.to_owned(),
                payload,
            });
        }
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<(), BrokerError> {
        *self.channels().entry(channel.to_owned()).or_default() += 1;
        Ok(())
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), BrokerError> {
        let mut channels = self.channels();
        if let Some(count) = channels.get_mut(channel) {
            *count -= 1;
            if *count == 0 {
                channels.remove(channel);
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn delivers_only_subscribed_channels_until_the_last_unsubscribe() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let broker = MemoryBroker::new(Arc::new(move |d: Delivery| {
            sink.lock().unwrap().push(d.channel)
        }));
        broker.publish("a", Bytes::from_static(b"x")).await.unwrap();
        broker.subscribe("a").await.unwrap();
        broker.subscribe("a").await.unwrap();
        broker.publish("a", Bytes::from_static(b"x")).await.unwrap();
        broker.unsubscribe("a").await.unwrap();
        broker.publish("a", Bytes::from_static(b"x")).await.unwrap();
        broker.unsubscribe("a").await.unwrap();
        broker.publish("a", Bytes::from_static(b"x")).await.unwrap();
        broker.publish("b", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(*got.lock().unwrap(), vec!["a", "a"]);
        assert_eq!(broker.subscription_count(), 0);
    }
}
