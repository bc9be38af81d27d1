//! Redis pub/sub: fan-out between nodes. A node subscribes to a topic's
//! channel while it has local listeners for it, so the traffic it receives
//! follows its own rooms and users, not the whole deployment. A room
//! broadcast is one PUBLISH.
//!
//! Publishing goes through redis' `ConnectionManager`, which reconnects by
//! itself. The subscription connection is ours: when it drops, the node gets
//! [`BrokerEvent::Down`], and a task reconnects with bounded backoff and
//! subscribes again to every topic that still has listeners; then the node
//! gets [`BrokerEvent::Up`] and [`BrokerEvent::Resubscribed`]. Messages
//! published while it was down are not delivered; clients catch up from the
//! store (`since`, `Last-Event-ID`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use switchboard_core::{Broker, BrokerError, BrokerEvent, BrokerHandler, Topic};

use crate::redis_error;
use crate::subscriptions::Subscriptions;

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Fan-out through one Redis (`redis://host:port[/db]`).
pub struct RedisBroker {
    publisher: ConnectionManager,
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

struct Shared {
    client: redis::Client,
    prefix: String,
    handler: BrokerHandler,
    subscriptions: Subscriptions,
    /// The live subscription connection; held while (re)subscribing, so a
    /// subscribe never slips between a reconnect's snapshot and its sink.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    connected: AtomicBool,
}

impl Shared {
    fn channel(&self, topic: &Topic) -> String {
        format!("{}{}", self.prefix, topic.channel())
    }
}

impl RedisBroker {
    /// Connects to `url`; every channel name gets `prefix` in Redis. Returns
    /// once the subscription connection is up.
    pub async fn connect(
        url: &str,
        prefix: &str,
        handler: BrokerHandler,
    ) -> Result<Self, BrokerError> {
        let client = redis::Client::open(url).map_err(|e| BrokerError::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        // Short timeouts and one retry: while Redis is down a publish must fail
        // fast (the message is already stored) rather than hold up the node.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)));
        let publisher = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| redis_error("connecting to redis", e))?;
        let shared = Arc::new(Shared {
            client,
            prefix: prefix.to_owned(),
            handler,
            subscriptions: Subscriptions::default(),
            sink: tokio::sync::Mutex::new(None),
            connected: AtomicBool::new(false),
        });
        let task = tokio::spawn(subscriber(shared.clone())).abort_handle();
        let broker = Self {
            publisher,
            shared,
            task,
        };
        // Start ready: wait (bounded) for the subscription connection.
        for _ in 0..500 {
            if broker.check_connected().is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        broker.check_connected()?;
        Ok(broker)
    }

    /// Presence kept in the same Redis, under the same prefix.
    pub fn presence(&self) -> crate::RedisPresence {
        crate::RedisPresence::new(self.publisher.clone(), &self.shared.prefix)
    }

    fn check_connected(&self) -> Result<(), BrokerError> {
        if self.shared.connected.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(BrokerError::unavailable(
                "redis subscription connection down",
                None,
            ))
        }
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps a subscription connection up and hands its messages to the node.
async fn subscriber(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(50);
    // Set from the loss of a connection that was up until the next one is up
    // and subscribed again: publishes may have been missed.
    let mut down = false;
    loop {
        match shared.client.get_async_pubsub().await {
            Ok(pubsub) => {
                let (mut sink, mut stream) = pubsub.split();
                let resubscribed = {
                    let mut current = shared.sink.lock().await;
                    let channels: Vec<String> = shared
                        .subscriptions
                        .topics()
                        .iter()
                        .map(|topic| shared.channel(topic))
                        .collect();
                    let ok = channels.is_empty() || sink.subscribe(&channels).await.is_ok();
                    if ok {
                        *current = Some(sink);
                    }
                    ok
                };
                if resubscribed {
                    shared.connected.store(true, Ordering::Release);
                    backoff = Duration::from_millis(50);
                    tracing::info!("redis subscription connection up");
                    if std::mem::take(&mut down) {
                        (shared.handler)(BrokerEvent::Up);
                        (shared.handler)(BrokerEvent::Resubscribed);
                    }
                    while let Some(message) = stream.next().await {
                        let topic = message
                            .get_channel_name()
                            .strip_prefix(&shared.prefix)
                            .and_then(Topic::from_channel);
                        let Some(topic) = topic else {
                            continue;
                        };
                        (shared.handler)(BrokerEvent::Delivery {
                            topic,
                            payload: Bytes::copy_from_slice(message.get_payload_bytes()),
                        });
                    }
                    shared.connected.store(false, Ordering::Release);
                    *shared.sink.lock().await = None;
                    down = true;
                    (shared.handler)(BrokerEvent::Down);
                    tracing::warn!("redis subscription connection lost; reconnecting");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis subscription connection failed");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, topic: &Topic, payload: Bytes) -> Result<(), BrokerError> {
        // While the subscription connection is down Redis is taken as down: fail
        // at once instead of waiting on the publisher's timeouts.
        self.check_connected()?;
        let mut publisher = self.publisher.clone();
        redis::cmd("PUBLISH")
            .arg(self.shared.channel(topic))
            .arg(payload.as_ref())
            .query_async::<i64>(&mut publisher)
            .await
            .map(drop)
            .map_err(|e| redis_error("PUBLISH", e))
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        let mut sink = self.shared.sink.lock().await;
        if let (true, Some(sink)) = (self.shared.subscriptions.add(topic), sink.as_mut()) {
            // On failure the reconnect subscribes again to every topic with listeners.
            if let Err(e) = sink.subscribe(self.shared.channel(topic)).await {
                tracing::warn!(error = %e, %topic, "redis subscribe failed");
            }
        }
        Ok(())
    }

    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BrokerError> {
        let mut sink = self.shared.sink.lock().await;
        if let (true, Some(sink)) = (self.shared.subscriptions.remove(topic), sink.as_mut()) {
            let _ = sink.unsubscribe(self.shared.channel(topic)).await;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        self.check_connected()?;
        let mut publisher = self.publisher.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut publisher)
            .await
            .map_err(|e| redis_error("PING", e))?;
        Ok(())
    }
}
