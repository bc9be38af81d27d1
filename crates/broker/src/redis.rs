//! Redis pub/sub: fan-out between nodes. A node subscribes to a channel while
//! it has local listeners for it, so the traffic it receives follows its own
//! rooms and users, not the whole deployment. A room broadcast is one PUBLISH.
//!
//! Publishing goes through redis' `ConnectionManager`, which reconnects by
//! itself. The subscription connection is ours: when it drops, a task
//! reconnects with bounded backoff and subscribes again to every channel that
//! still has listeners. Messages published while it was down are not
//! delivered; clients catch up from the store (`since`, `Last-Event-ID`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use switchboard_core::ports::DeliveryHandler;
use switchboard_core::{Broker, BrokerError, Delivery, RESUBSCRIBED_CHANNEL};

const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct RedisBroker {
    publisher: ConnectionManager,
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

struct Shared {
    client: redis::Client,
    prefix: String,
    deliver: DeliveryHandler,
    /// Channel (without prefix) → local subscriptions.
    channels: Mutex<HashMap<String, usize>>,
    /// The live subscription connection; held while (re)subscribing, so a
    /// subscribe never slips between a reconnect's snapshot and its sink.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    connected: AtomicBool,
}

fn broker_error(e: redis::RedisError) -> BrokerError {
    BrokerError(e.to_string())
}

impl RedisBroker {
    /// Connects to `url`; every channel name gets `prefix` in Redis.
    pub async fn connect(
        url: &str,
        prefix: &str,
        deliver: DeliveryHandler,
    ) -> Result<Self, BrokerError> {
        let client = redis::Client::open(url).map_err(broker_error)?;
        // Short timeouts and one retry: while Redis is down a publish must fail
        // fast (the message is already stored) rather than hold up the node.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)));
        let publisher = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(broker_error)?;
        let shared = Arc::new(Shared {
            client,
            prefix: prefix.to_owned(),
            deliver,
            channels: Mutex::new(HashMap::new()),
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
            Err(BrokerError(
                "redis is unreachable (subscription connection down)".into(),
            ))
        }
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.shared
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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
    // Set while publishes may have been missed: from a lost or failed connection
    // until the next one is up and subscribed again.
    let mut missed = false;
    loop {
        match shared.client.get_async_pubsub().await {
            Ok(pubsub) => {
                let (mut sink, mut stream) = pubsub.split();
                let resubscribed = {
                    let mut current = shared.sink.lock().await;
                    let channels: Vec<String> = {
                        let channels = shared.channels.lock().unwrap_or_else(|e| e.into_inner());
                        channels
                            .keys()
                            .map(|c| format!("{}{c}", shared.prefix))
                            .collect()
                    };
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
                    if std::mem::take(&mut missed) {
                        (shared.deliver)(Delivery {
                            channel: RESUBSCRIBED_CHANNEL.to_owned(),
                            payload: Bytes::new(),
                        });
                    }
                    while let Some(message) = stream.next().await {
                        let Some(channel) = message.get_channel_name().strip_prefix(&shared.prefix)
                        else {
                            continue;
                        };
                        (shared.deliver)(Delivery {
                            channel: channel.to_owned(),
                            payload: Bytes::copy_from_slice(message.get_payload_bytes()),
                        });
                    }
                    shared.connected.store(false, Ordering::Release);
                    *shared.sink.lock().await = None;
                    missed = true;
                    tracing::warn!("redis subscription connection lost; reconnecting");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis subscription connection failed");
                missed = true;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BrokerError> {
        // While the subscription connection is down Redis is taken as down: fail
        // at once instead of waiting on the publisher's timeouts.
        self.check_connected()?;
        let mut publisher = self.publisher.clone();
        redis::cmd("PUBLISH")
            .arg(format!("{}{channel}", self.shared.prefix))
            .arg(payload.as_ref())
            .query_async::<i64>(&mut publisher)
            .await
            .map(drop)
            .map_err(broker_error)
    }

    async fn subscribe(&self, channel: &str) -> Result<(), BrokerError> {
        let mut sink = self.shared.sink.lock().await;
        let first = {
            let mut channels = self.channels();
            let count = channels.entry(channel.to_owned()).or_default();
            *count += 1;
            *count == 1
        };
        if let (true, Some(sink)) = (first, sink.as_mut()) {
            // On failure the reconnect subscribes again to every channel with listeners.
            if let Err(e) = sink
                .subscribe(format!("{}{channel}", self.shared.prefix))
                .await
            {
                tracing::warn!(error = %e, channel, "redis subscribe failed");
            }
        }
        Ok(())
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), BrokerError> {
        let mut sink = self.shared.sink.lock().await;
        let last = {
            let mut channels = self.channels();
            match channels.get_mut(channel) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    channels.remove(channel);
                    true
                }
                None => false,
            }
        };
        if let (true, Some(sink)) = (last, sink.as_mut()) {
            let _ = sink
                .unsubscribe(format!("{}{channel}", self.shared.prefix))
                .await;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        self.check_connected()?;
        let mut publisher = self.publisher.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut publisher)
            .await
            .map_err(broker_error)?;
        Ok(())
    }
}
