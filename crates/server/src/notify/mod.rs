//! Per-user notifications on this node: who is listening (SSE streams and held
//! long-polls), and handing each notification that the broker delivers to them.
//!
//! A notification is persisted, then published on the user's broker channel as
//! `<id>\n<json>`; every node with a listener for that user subscribes to the
//! channel and passes the same JSON text to its listeners. A listener whose
//! queue is full is dropped: its stream ends and the client resumes with
//! `Last-Event-ID`, missing nothing. When the broker had lost its
//! subscriptions for a while, every listener is told to catch up
//! ([`Signal::CatchUp`]): it reads the Store after the last notification it
//! sent, so its client misses nothing and does not reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use switchboard_core::{Broker, Error, ErrorCode, Notification, Topic};
use tokio::sync::mpsc;

mod publisher;
#[cfg(test)]
mod tests;
pub use publisher::Publisher;

/// The broker topic of a user's notifications.
pub fn channel(user: &str) -> Topic {
    Topic::User(user.to_owned())
}

/// A notification as listeners get it: its id and its JSON text.
#[derive(Debug)]
pub struct Item {
    pub id: i64,
    pub json: String,
}

/// The broker payload of a notification.
pub fn payload(notification: &Notification) -> Result<Bytes, Error> {
    let json = serde_json::to_string(notification).map_err(Error::internal)?;
    Ok(Bytes::from(format!("{}\n{json}", notification.id)))
}

/// What a listener is handed.
#[derive(Clone, Debug)]
pub enum Signal {
    /// A notification, as the broker delivered it.
    Item(Arc<Item>),
    /// Notifications may have been missed: read the Store after the last one sent.
    CatchUp,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stream,
    Poll,
}

struct Entry {
    id: u64,
    kind: Kind,
    sender: mpsc::Sender<Signal>,
}

/// The listeners of this node, by user.
pub struct Hub {
    users: Mutex<HashMap<String, Vec<Entry>>>,
    next_id: AtomicU64,
    broker: Arc<dyn Broker>,
    max_streams_per_user: usize,
}

/// Queue of one listener; past it the listener is dropped as a slow consumer.
const LISTENER_QUEUE: usize = 64;

impl Hub {
    pub fn new(broker: Arc<dyn Broker>, max_streams_per_user: usize) -> Self {
        Self {
            users: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            broker,
            max_streams_per_user,
        }
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Entry>>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts listening for a user's notifications; stops when the returned
    /// [`Listener`] is dropped. A user may hold at most `max_streams_per_user` streams.
    pub async fn listen(
        self: &Arc<Self>,
        user: &str,
        kind: Kind,
    ) -> Result<(Listener, mpsc::Receiver<Signal>), Error> {
        let (sender, receiver) = mpsc::channel(LISTENER_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut users = self.users();
            let entries = users.entry(user.to_owned()).or_default();
            let streams = entries.iter().filter(|e| e.kind == Kind::Stream).count();
            if kind == Kind::Stream && streams >= self.max_streams_per_user {
                return Err(Error::new(
                    ErrorCode::RateLimited,
                    format!(
                        "at most {} notification streams per user",
                        self.max_streams_per_user
                    ),
                ));
            }
            entries.push(Entry { id, kind, sender });
        }
        let listener = Listener {
            hub: self.clone(),
            user: user.to_owned(),
            id,
        };
        // Dropping `listener` on failure undoes the registration.
        self.broker.subscribe(&channel(user)).await?;
        Ok((listener, receiver))
    }

    /// Hands a payload delivered on a user's topic to that user's listeners on this node.
    pub fn deliver(&self, user: &str, payload: &[u8]) {
        let Some(item) = parse_payload(payload) else {
            tracing::warn!(%user, "malformed notification payload");
            return;
        };
        let item = Signal::Item(Arc::new(item));
        let mut users = self.users();
        if let Some(entries) = users.get_mut(user) {
            hand(entries, &item);
        }
    }

    /// A user's notifications may not have reached this node's listeners:
    /// they catch up from the Store.
    pub fn catch_up(&self, user: &str) {
        let mut users = self.users();
        if let Some(entries) = users.get_mut(user) {
            hand(entries, &Signal::CatchUp);
            if entries.is_empty() {
                users.remove(user);
            }
        }
    }

    /// The broker lost its subscriptions for a while: notifications published
    /// in between were missed. Every listener catches up from the Store.
    pub fn resubscribed(&self) {
        let mut users = self.users();
        for entries in users.values_mut() {
            hand(entries, &Signal::CatchUp);
        }
        users.retain(|_, entries| !entries.is_empty());
    }

    /// Listeners on this node, all users together.
    pub fn listener_count(&self) -> usize {
        self.users().values().map(Vec::len).sum()
    }

    fn remove(&self, user: &str, id: u64) {
        let mut users = self.users();
        if let Some(entries) = users.get_mut(user) {
            entries.retain(|e| e.id != id);
            if entries.is_empty() {
                users.remove(user);
            }
        }
    }
}

/// Hands a signal to listeners; drops those that are gone or too far behind
/// (their clients resume by id).
fn hand(entries: &mut Vec<Entry>, signal: &Signal) {
    entries.retain(|entry| match entry.sender.try_send(signal.clone()) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics::counter!("switchboard_slow_consumers_total", "kind" => "notifications")
                .increment(1);
            false
        }
    });
}

fn parse_payload(payload: &[u8]) -> Option<Item> {
    let text = std::str::from_utf8(payload).ok()?;
    let (id, json) = text.split_once('\n')?;
    Some(Item {
        id: id.parse().ok()?,
        json: json.to_owned(),
    })
}

/// A registration with the hub and the broker; both end when it is dropped.
pub struct Listener {
    hub: Arc<Hub>,
    user: String,
    id: u64,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.hub.remove(&self.user, self.id);
        let broker = self.hub.broker.clone();
        let channel = channel(&self.user);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = broker.unsubscribe(&channel).await;
            });
        }
    }
}
