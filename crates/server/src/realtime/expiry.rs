//! Token lifetime on Socket.IO connections: a connection lives until its
//! token's `exp`, unless `refresh_token` extends it. At `exp` the transport is
//! closed (an Engine.IO close, not a Socket.IO DISCONNECT), so the stock client
//! reconnects by itself with the auth its app provides and connection-state
//! recovery restores its rooms; an expired token then gets `connect_error`.
//!
//! One ordered map per node, swept by one task, rather than a timer per
//! connection: an entry costs a few tens of bytes in a B-tree node, where a
//! sleeping task per connection would cost hundreds (idle memory per
//! connection is a measured target).

use std::collections::BTreeMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use switchboard_socketio::Socket;

use crate::app::App;

/// How often due connections are looked for: a connection ends at most this
/// long after its token's `exp`.
const SWEEP: Duration = Duration::from_millis(250);

/// The key of one tracked connection: its token's `exp` (seconds since the
/// epoch), then a number unique on this node.
pub type ExpiryKey = (u64, u64);

/// The Socket.IO connections of this node by the time their token expires.
#[derive(Default)]
pub struct Expiries {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_time: BTreeMap<ExpiryKey, Socket>,
    next: u64,
}

impl Expiries {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tracks a connection until `exp`; returns the key to untrack it with.
    pub fn track(&self, socket: &Socket, exp: u64) -> ExpiryKey {
        let mut inner = self.inner();
        inner.next += 1;
        let key = (exp, inner.next);
        inner.by_time.insert(key, socket.clone());
        key
    }

    /// Stops tracking (the connection ended, or its token was replaced).
    pub fn untrack(&self, key: ExpiryKey) {
        self.inner().by_time.remove(&key);
    }

    /// Removes and returns the connections whose token expired by `now` (ms).
    fn due(&self, now_millis: i64) -> Vec<Socket> {
        let now_secs = u64::try_from(now_millis / 1000).unwrap_or(0);
        let mut inner = self.inner();
        let later = inner.by_time.split_off(&(now_secs, u64::MAX));
        std::mem::replace(&mut inner.by_time, later)
            .into_values()
            .collect()
    }
}

/// Closes the transports of connections whose token expired. Runs until the
/// app is gone.
pub async fn housekeeping(app: Weak<App>) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { return };
        let due = app
            .realtime
            .expiries
            .due(switchboard_core::time::now_millis());
        for socket in due {
            metrics::counter!("switchboard_tokens_expired_total").increment(1);
            socket.close_connection();
        }
    }
}
