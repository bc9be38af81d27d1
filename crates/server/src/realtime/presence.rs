//! Presence (who is online in a workspace) and typing indicators.
//!
//! A connection that enters a workspace room gets a presence entry that its
//! node refreshes; a user's first entry announces `presence_join`, the removal
//! or expiry of its last one `presence_leave`. Typing is state of a connection in
//! a workspace: `user_typing` on start, `user_stopped_typing` on stop, after the
//! typing timeout without a refresh, or when the connection leaves. These events
//! are not history: they skip the writer and carry no recovery offset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_core::{Error, PresenceEntry, User};
use switchboard_socketio::{encode_event_frame, Sid, Socket};

use super::fanout;
use crate::app::App;

/// Who is typing where, on this node: (workspace, connection) → user and deadline.
#[derive(Default)]
pub struct Typing {
    states: Mutex<HashMap<(String, Sid), (String, Instant)>>,
}

impl Typing {
    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Sid), (String, Instant)>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now() -> i64 {
    switchboard_core::time::now_millis()
}

/// Broadcasts a state event to a workspace on every node, leaving out `except`.
async fn announce(app: &App, workspace: &str, event: &str, user: &str, except: Option<Sid>) {
    let body = json!({ "workspaceId": workspace, "userId": user });
    let Ok(frame) = encode_event_frame("/", event, &body) else {
        return;
    };
    let channel = fanout::channel(workspace);
    if let Err(e) = app
        .broker
        .publish(
            &channel,
            fanout::envelope(
                &frame,
                except.map_or(fanout::Header::All, fanout::Header::Except),
            ),
        )
        .await
    {
        tracing::warn!(error = %e, event, "publishing a presence event failed");
    }
}

fn entry(socket_id: Sid, user: &User) -> PresenceEntry {
    PresenceEntry {
        connection: socket_id.to_string(),
        user_id: user.id.clone(),
        name: user.name.clone(),
    }
}

/// A connection entered a workspace.
pub async fn entered(app: &App, socket: &Socket, user: &User, workspace: &str) {
    let expires = now() + app.settings.presence_ttl.as_millis() as i64;
    match app
        .presence
        .join(workspace, &entry(socket.id(), user), expires, now())
        .await
    {
        Ok(true) => announce(app, workspace, "presence_join", &user.id, None).await,
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "recording presence failed"),
    }
}

/// A connection left a workspace (leave, disconnect): its typing ends, and its
/// user leaves if this was their last connection there.
pub async fn left(app: &App, socket_id: Sid, workspace: &str) {
    let typing = app
        .realtime
        .typing
        .states()
        .remove(&(workspace.to_owned(), socket_id));
    if let Some((user, _)) = typing {
        announce(
            app,
            workspace,
            "user_stopped_typing",
            &user,
            Some(socket_id),
        )
        .await;
    }
    match app
        .presence
        .leave(workspace, socket_id.as_str(), now())
        .await
    {
        Ok(Some(user)) => announce(app, workspace, "presence_leave", &user, None).await,
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "removing presence failed"),
    }
}

/// `typing_start` / `typing_stop` from a socket in the workspace room.
pub async fn typing(
    app: &App,
    socket: &Socket,
    user: &User,
    workspace: &str,
    started: bool,
) -> Result<(), Error> {
    super::check_write(socket, workspace)?;
    let key = (workspace.to_owned(), socket.id());
    let changed = {
        let mut states = app.realtime.typing.states();
        if started {
            let deadline = Instant::now() + app.settings.typing_timeout;
            states.insert(key, (user.id.clone(), deadline)).is_none()
        } else {
            states.remove(&key).is_some()
        }
    };
    if changed {
        let event = if started {
            "user_typing"
        } else {
            "user_stopped_typing"
        };
        announce(app, workspace, event, &user.id, Some(socket.id())).await;
    }
    Ok(())
}

/// `presence` and `GET /api/workspaces/{id}/presence`: `[{ userId, name? }]`.
pub async fn users(app: &App, workspace: &str) -> Result<serde_json::Value, Error> {
    let users = app.presence.users(workspace, now()).await?;
    Ok(users
        .into_iter()
        .map(|(id, name)| match name {
            Some(name) => json!({ "userId": id, "name": name }),
            None => json!({ "userId": id }),
        })
        .collect())
}

/// Refreshes this node's presence entries and expires stale ones (of any
/// node), every third of the TTL. Runs until the app is gone.
pub async fn housekeeping(app: Weak<App>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { return };
        if !crate::http::dev::DevHooks::presence_paused(&app) {
            refresh_local_entries(&app).await;
        }
        expire_entries(&app).await;
    }
}

/// How often typing states are checked for their timeout.
const TYPING_SWEEP: Duration = Duration::from_millis(250);

/// Ends typing states that were not refreshed in time.
pub async fn typing_housekeeping(app: Weak<App>) {
    let mut tick = tokio::time::interval(TYPING_SWEEP);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { return };
        expire_typing(&app).await;
    }
}

async fn refresh_local_entries(app: &Arc<App>) {
    let namespace = &app.realtime.namespace;
    for room in namespace.rooms() {
        let Some(workspace) = fanout::workspace_of_room(&room) else {
            continue;
        };
        for socket in namespace.room_sockets(&room) {
            if let Some(conn) = socket.data::<super::Conn>() {
                entered(app, &socket, &conn.user(), workspace).await;
            }
        }
    }
}

async fn expire_entries(app: &App) {
    match app.presence.expire(now()).await {
        Ok(gone) => {
            for (workspace, user) in gone {
                announce(app, &workspace, "presence_leave", &user, None).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "expiring presence failed"),
    }
}

async fn expire_typing(app: &App) {
    let now = Instant::now();
    let expired: Vec<((String, Sid), String)> = {
        let mut states = app.realtime.typing.states();
        let keys: Vec<(String, Sid)> = states
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| states.remove(&k).map(|(user, _)| (k, user)))
            .collect()
    };
    for ((workspace, socket_id), user) in expired {
        announce(
            app,
            &workspace,
            "user_stopped_typing",
            &user,
            Some(socket_id),
        )
        .await;
    }
}
