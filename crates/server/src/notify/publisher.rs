//! Storing and publishing notifications, in id order on this node.
//!
//! A client resuming after the last id it saw (`Last-Event-ID`, or a poll's
//! `after`) must never miss an earlier notification committed later. So, on
//! this node, a notification is committed and published before the next one is
//! committed: one lock held across both. It is a lock of its own, not the chat
//! writer's: a slow notification commit never delays a chat message. Listening
//! and delivery are in `mod.rs`.

use std::sync::Arc;

use switchboard_core::{Broker, Error, NewNotification, Notification, Store};
use tokio::sync::Mutex;

use super::Hub;

/// Stores notifications, then publishes each on its user's broker channel.
pub struct Publisher {
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    /// This node's listeners, told to catch up when a publish fails.
    hub: Arc<Hub>,
    /// Held from commit to publish, so this node publishes in id order.
    in_order: Mutex<()>,
}

impl Publisher {
    pub fn new(store: Arc<dyn Store>, broker: Arc<dyn Broker>, hub: Arc<Hub>) -> Self {
        Self {
            store,
            broker,
            hub,
            in_order: Mutex::new(()),
        }
    }

    /// Stores a notification, then publishes it to the user's streams and polls
    /// on every node. A failed publish loses nothing: the notification is
    /// stored; this node's streams and polls of the user read it from the
    /// Store at once, other nodes' when their subscription is back.
    pub async fn notify(&self, notification: NewNotification) -> Result<Notification, Error> {
        let _in_order = self.in_order.lock().await;
        let stored = self.store.insert_notification(&notification).await?;
        metrics::counter!("switchboard_notifications_persisted_total").increment(1);
        let payload = super::payload(&stored)?;
        let channel = super::channel(&stored.user_id);
        if let Err(e) = self.broker.publish(&channel, payload).await {
            tracing::error!(error = %e, id = stored.id, "publishing a stored notification failed");
            self.hub.catch_up(&stored.user_id);
        }
        Ok(stored)
    }
}
