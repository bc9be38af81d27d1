//! Live catch-up: after the broker lost deliveries (an outage, a failed
//! publish), this node brings the members connected to it up to date from the
//! Store, exactly once and in id order per workspace, without a reconnect.
//!
//! What lives here: per workspace room of this node, the ids of the last
//! [`SEEN`] messages it delivered (so a message is never delivered twice, even
//! if the broker hands it over twice) and the point the room started from;
//! while the node is behind, the point each socket entering a room was
//! replayed to; the catch-up itself. What does not: the delivery of a frame to
//! a room (`fanout.rs`), replaying history to one socket (`admission.rs`).
//!
//! How a catch-up runs. The broker's `Down` marks the node behind until the
//! subscription is back; a failed publish of this node marks it behind and
//! starts a catch-up at once. On `Resubscribed`, live deliveries are held back (up to
//! [`HOLD`] of them) while, room by room, every stored message above the
//! room's low point that the room has not delivered is sent, page by page, to
//! each socket in the room that had not been replayed past it. Then the held
//! deliveries go out, less those the catch-up sent. Held deliveries past
//! [`HOLD`] are dropped (`switchboard_catchup_dropped_total`) and a further
//! round fetches what they carried from the Store; only unstored events
//! (typing, presence) can be lost that way.
//!
//! A room's low point is the oldest id it remembers when it has delivered
//! [`SEEN`] messages or more, otherwise the point its first socket on this
//! node entered from: its replay's end, or, without history, the newest id
//! the Store held when it asked to join. A room that empties and fills again
//! starts anew.
//!
//! The per-room window (at most [`SEEN`] ids) and the per-socket points (only
//! while behind, dropped once caught up) keep this bounded; rooms this node
//! no longer has are forgotten. Order across nodes between live deliveries is
//! still per node (see the contract's known limits).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use switchboard_core::Error;
use switchboard_socketio::{Namespace, Sid, Socket, Utf8Bytes};

use super::fanout;
use super::writer::message_frame;
use crate::app::App;

/// Message ids remembered per room, newest last.
pub const SEEN: usize = 128;
/// Live deliveries held back while a catch-up runs.
pub const HOLD: usize = 8192;
/// Messages fetched from the Store per page.
const PAGE: u32 = 500;
/// Catch-up rounds run back to back before the node gives up until the next
/// trigger (each round is asked for by an overflow or a new outage).
const MAX_ROUNDS: usize = 8;

/// The catch-up state of one node.
#[derive(Default)]
pub struct CatchUp {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    rooms: HashMap<String, Seen>,
    /// Deliveries lost or possibly lost since the last catch-up.
    behind: bool,
    /// The broker's subscription is down: whatever a catch-up finds now, it
    /// runs again once the subscription is back.
    down: bool,
    /// Where each socket entering a room while behind was replayed to.
    floors: HashMap<String, HashMap<Sid, i64>>,
    /// Some while a catch-up runs: the deliveries held back meanwhile.
    holding: Option<Vec<(String, Bytes)>>,
    /// Held deliveries were dropped: another round is needed.
    overflowed: bool,
    /// A catch-up task is running (it runs again if asked meanwhile).
    running: bool,
    /// Rooms this node no longer has are forgotten when `rooms` grows to this.
    prune_at: usize,
    again: bool,
}

/// What a room of this node delivered.
struct Seen {
    /// The point the room started from.
    base: i64,
    /// The latest message ids delivered, in delivery order.
    ids: VecDeque<i64>,
}

impl Seen {
    fn new(base: i64) -> Self {
        Self {
            base,
            ids: VecDeque::new(),
        }
    }

    fn contains(&self, id: i64) -> bool {
        self.ids.contains(&id)
    }

    fn record(&mut self, id: i64) {
        if self.ids.len() == SEEN {
            self.ids.pop_front();
        }
        self.ids.push_back(id);
    }

    /// Messages above this id may be missing.
    fn low(&self) -> i64 {
        if self.ids.len() == SEEN {
            self.ids.iter().copied().min().unwrap_or(self.base)
        } else {
            self.base
        }
    }
}

impl CatchUp {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The broker's subscription was lost: deliveries are missed until it is
    /// back ([`CatchUp::broker_back`]).
    pub fn broker_down(&self) {
        let mut inner = self.inner();
        inner.down = true;
        inner.behind = true;
    }

    /// The broker's subscription is back: the node catches up.
    pub fn broker_back(self: &Arc<Self>, app: std::sync::Weak<App>) {
        self.inner().down = false;
        self.start(app);
    }

    /// A publish of this node failed: its members catch up at once (and again
    /// when the subscription is back, if it is down).
    pub fn publish_failed(self: &Arc<Self>, app: std::sync::Weak<App>) {
        self.inner().behind = true;
        self.start(app);
    }

    /// A socket entered a workspace's room, having been sent every message up
    /// to `sent`. Called by the ordering task, before the socket is in the room.
    pub fn entered(&self, namespace: &Namespace, socket: Sid, workspace: &str, sent: i64) {
        let mut inner = self.inner();
        // The first socket of the room on this node: what the room delivered
        // before it emptied says nothing of the messages since (the node was
        // not subscribed meanwhile), so it starts anew from this socket.
        let first = namespace.room_size(&fanout::room(workspace)) == 0;
        if first || !inner.rooms.contains_key(workspace) {
            if inner.rooms.len() >= inner.prune_at {
                inner
                    .rooms
                    .retain(|w, _| namespace.room_size(&fanout::room(w)) > 0);
                // Doubling keeps the pruning amortised O(1) per room.
                inner.prune_at = (2 * inner.rooms.len()).max(64);
            }
            inner.rooms.insert(workspace.to_owned(), Seen::new(sent));
        }
        if inner.behind || inner.running {
            inner
                .floors
                .entry(workspace.to_owned())
                .or_default()
                .insert(socket, sent);
        }
    }

    /// Hands a broker delivery on a workspace's topic to the room, unless it
    /// carries a message the room has delivered already, or a catch-up holds
    /// it back.
    pub fn deliver(&self, namespace: &Namespace, workspace: &str, payload: Bytes) {
        let mut inner = self.inner();
        if let Some(holding) = inner.holding.as_mut() {
            if holding.len() < HOLD {
                holding.push((workspace.to_owned(), payload));
            } else {
                inner.overflowed = true;
                metrics::counter!("switchboard_catchup_dropped_total").increment(1);
            }
            return;
        }
        inner.deliver_now(namespace, workspace, &payload);
    }

    /// Starts a catch-up if the node is behind (or one is running: it goes
    /// round once more).
    fn start(self: &Arc<Self>, app: std::sync::Weak<App>) {
        {
            let mut inner = self.inner();
            if inner.running {
                inner.again = true;
                return;
            }
            if !inner.behind {
                return;
            }
            inner.running = true;
            inner.holding = Some(Vec::new());
        }
        let this = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut sent = 0;
            for round in 1..=MAX_ROUNDS {
                let Some(app) = app.upgrade() else { return };
                this.inner().behind = false;
                let outcome = this.round(&app).await;
                let mut inner = this.inner();
                match outcome {
                    Ok(n) => sent += n,
                    Err(e) => {
                        tracing::error!(error = %e, "catching up from the store failed");
                        inner.behind = true;
                    }
                }
                // While the subscription is down, a failed publish starts
                // the next round, and the subscription's return the last.
                let again = std::mem::take(&mut inner.again)
                    | std::mem::take(&mut inner.overflowed)
                    | (inner.behind && !inner.down);
                if !again || round == MAX_ROUNDS {
                    inner.finish(&app.realtime.namespace);
                    inner.behind |= again | inner.down;
                    break;
                }
                if inner.holding.as_ref().is_some_and(|h| h.len() >= HOLD) {
                    // What the full hold dropped is in the Store: the next
                    // round fetches it.
                    inner.holding = Some(Vec::new());
                }
            }
            metrics::counter!("switchboard_catchup_messages_total").increment(sent);
            metrics::histogram!("switchboard_catchup_seconds")
                .record(started.elapsed().as_secs_f64());
            tracing::info!(
                messages = sent,
                ms = started.elapsed().as_millis() as u64,
                "caught up from the store after missed deliveries"
            );
        });
    }

    /// One pass over this node's rooms; returns the messages sent.
    async fn round(&self, app: &Arc<App>) -> Result<u64, Error> {
        let namespace = &app.realtime.namespace;
        let workspaces: Vec<String> = namespace
            .rooms()
            .iter()
            .filter_map(|room| fanout::workspace_of_room(room).map(str::to_owned))
            .collect();
        let mut sent = 0;
        for workspace in workspaces {
            let Some(mut cursor) = self.inner().rooms.get(&workspace).map(Seen::low) else {
                continue;
            };
            loop {
                let page = app
                    .store
                    .messages_since(std::slice::from_ref(&workspace), cursor, PAGE)
                    .await?;
                let sockets = namespace.room_sockets(&fanout::room(&workspace));
                for message in &page {
                    cursor = message.id;
                    let frame = message_frame(message, message.id)?;
                    if self.send_missing(&workspace, message.id, &frame, &sockets) {
                        sent += 1;
                    }
                }
                if page.len() < PAGE as usize {
                    break;
                }
            }
        }
        Ok(sent)
    }

    /// Sends a stored message to the sockets of its room that lack it; false
    /// if the room had delivered it already.
    fn send_missing(
        &self,
        workspace: &str,
        id: i64,
        frame: &Utf8Bytes,
        sockets: &[Socket],
    ) -> bool {
        let mut inner = self.inner();
        let Inner { rooms, floors, .. } = &mut *inner;
        let Some(seen) = rooms.get_mut(workspace) else {
            return false;
        };
        if seen.contains(id) {
            return false;
        }
        seen.record(id);
        let floors = floors.get(workspace);
        for socket in sockets {
            let floor = floors.and_then(|floors| floors.get(&socket.id()));
            if floor.is_some_and(|floor| *floor >= id) {
                continue;
            }
            // A full queue closes the socket; it recovers on reconnect.
            let _ = socket.emit_encoded(frame);
        }
        true
    }
}

impl Inner {
    fn deliver_now(&mut self, namespace: &Namespace, workspace: &str, payload: &Bytes) {
        let Some((header, frame)) = fanout::open(payload) else {
            tracing::warn!(%workspace, "malformed broker payload");
            return;
        };
        if let fanout::Header::Message(id) = header {
            if let Some(seen) = self.rooms.get_mut(workspace) {
                if seen.contains(id) {
                    metrics::counter!("switchboard_broadcast_duplicates_total").increment(1);
                    return;
                }
                seen.record(id);
            }
        }
        fanout::deliver(namespace, workspace, header, &frame);
    }

    /// Ends a catch-up: the held deliveries go out, less what it sent.
    fn finish(&mut self, namespace: &Namespace) {
        for (workspace, payload) in self.holding.take().unwrap_or_default() {
            self.deliver_now(namespace, &workspace, &payload);
        }
        self.floors.clear();
        self.running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_say_which_broadcasts_are_stored_messages() {
        let frame = Utf8Bytes::from_static(r#"42["message",{"id":7},"7"]"#);
        let opened = |header| fanout::open(&fanout::envelope(&frame, header));
        assert!(matches!(
            opened(fanout::Header::Message(7)),
            Some((fanout::Header::Message(7), f)) if f == frame
        ));
        // An event published through the API may be called `message` too.
        assert!(matches!(
            opened(fanout::Header::All),
            Some((fanout::Header::All, _))
        ));
        assert!(fanout::open(&Bytes::from_static(b"no header")).is_none());
        assert!(fanout::open(&Bytes::from_static(b"#x\nframe")).is_none());
    }

    #[test]
    fn a_room_remembers_its_latest_ids_and_where_it_may_lack_some() {
        let mut seen = Seen::new(10);
        assert_eq!(seen.low(), 10);
        for id in 11..11 + SEEN as i64 + 5 {
            seen.record(id);
        }
        assert!(!seen.contains(11));
        assert!(seen.contains(11 + SEEN as i64 + 4));
        assert_eq!(seen.low(), 16);
    }
}
