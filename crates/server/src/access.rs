//! Access that holds on live connections. A membership change made through
//! the API (added, removed, or its role changed) is published to every node on
//! [`Topic::Access`]; each node re-applies it to its own connections: a socket
//! that lost access leaves the workspace (no more of it reaches it, its
//! presence is left) and gets `workspace_removed`; one that keeps access
//! writes with its new role from its next event on; collab connections close
//! with 1008 or turn read-only (`crate::collab`). When the broker had lost its
//! subscriptions a change may have been missed, so every node then re-checks
//! all of its sockets. Token expiry and refresh are in `realtime/expiry.rs`.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_core::{Error, Topic};
use switchboard_socketio::Socket;

use crate::app::App;
use crate::realtime::{fanout, leave_workspace, Conn};

/// A membership change, as published to every node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Change {
    user_id: String,
    workspace_id: String,
}

/// Tells every node, this one included, that a user's access to a workspace
/// changed. If the broker cannot take it, this node applies it at once and
/// the others catch up when their subscriptions are back.
pub async fn changed(app: &Arc<App>, user: &str, workspace: &str) -> Result<(), Error> {
    let change = Change {
        user_id: user.to_owned(),
        workspace_id: workspace.to_owned(),
    };
    let payload = Bytes::from(serde_json::to_vec(&change).map_err(Error::internal)?);
    if let Err(e) = app.broker.publish(&Topic::Access, payload).await {
        tracing::warn!(error = %e, user, workspace, "publishing an access change failed; applying it on this node");
        reapply(app, user, workspace).await;
    }
    Ok(())
}

/// An access change arrived from the broker: re-applied in a task of its own.
pub fn delivered(app: &Weak<App>, payload: &[u8]) {
    let Ok(change) = serde_json::from_slice::<Change>(payload) else {
        tracing::warn!("malformed access change");
        return;
    };
    let Some(app) = app.upgrade() else { return };
    tokio::spawn(async move {
        reapply(&app, &change.user_id, &change.workspace_id).await;
    });
}

/// The broker lost its subscriptions for a while: re-checks every socket and
/// every collaborative-editing connection of this node in every workspace it
/// is in.
pub fn resubscribed(app: &Weak<App>) {
    let Some(app) = app.upgrade() else { return };
    tokio::spawn(async move {
        let mut pairs = BTreeSet::new();
        for socket in app.realtime.namespace.sockets() {
            for room in socket.rooms() {
                if let (Some(workspace), Some(conn)) =
                    (fanout::workspace_of_room(&room), socket.data::<Conn>())
                {
                    pairs.insert((conn.user().id.clone(), workspace.to_owned()));
                }
            }
        }
        pairs.extend(app.collab.connected_users().await);
        for (user, workspace) in pairs {
            reapply(&app, &user, &workspace).await;
        }
    });
}

/// Re-applies a user's access to a workspace to this node's connections.
pub async fn reapply(app: &Arc<App>, user_id: &str, workspace: &str) {
    let row = match app.store.member_role(user_id, workspace).await {
        Ok(row) => row,
        Err(e) => {
            tracing::warn!(error = %e, user_id, workspace, "reading a membership failed; access unchanged");
            return;
        }
    };
    let mut removed = 0u64;
    for socket in app
        .realtime
        .namespace
        .room_sockets(&fanout::room(workspace))
    {
        let Some(conn) = socket.data::<Conn>() else {
            continue;
        };
        let user = conn.user();
        if user.id != user_id {
            continue;
        }
        match row.or_else(|| user.token_role(workspace)) {
            Some(role) => conn.set_role(workspace, role),
            None => {
                remove(app, &socket, workspace).await;
                removed += 1;
            }
        }
    }
    metrics::counter!("switchboard_access_revoked_total").increment(removed);
    app.collab.access_changed(user_id, workspace, row);
}

/// Takes a socket out of a workspace it lost access to.
async fn remove(app: &App, socket: &Socket, workspace: &str) {
    if let Err(e) = leave_workspace(app, socket, workspace).await {
        tracing::warn!(error = %e, workspace, "releasing a revoked workspace failed");
    }
    let _ = socket.emit("workspace_removed", &json!({ "workspaceId": workspace }));
}
