//! The chat events of the wire contract: `join_workspace`, `leave_workspace`,
//! `message` and `history`. Each checks its payload and access, does its work,
//! and returns the fields of its acknowledgement (or the error to report).

use std::sync::Arc;

use serde_json::{json, Map, Value};
use switchboard_core::chat::check_id;
use switchboard_core::{Error, ErrorCode, NewMessage, User, Window};
use switchboard_socketio::Socket;

use super::{fanout, presence};
use crate::app::App;

type Reply = Result<Map<String, Value>, Error>;

pub async fn handle(
    app: &Arc<App>,
    socket: &Socket,
    user: &User,
    event: &str,
    args: Vec<Value>,
) -> Reply {
    match event {
        "join_workspace" => join(app, socket, user, args).await,
        "leave_workspace" => leave(app, socket, args).await,
        "message" => send(app, socket, user, args).await,
        "history" => history(app, user, args).await,
        "refresh_token" => refresh_token(app, socket, user, args).await,
        "typing_start" | "typing_stop" => {
            let workspace = workspace_arg(args)?;
            presence::typing(app, socket, user, &workspace, event == "typing_start").await?;
            Ok(Map::new())
        }
        "presence" => {
            let workspace = workspace_arg(args)?;
            if !app.may_access(user, &workspace).await? {
                return Err(Error::forbidden());
            }
            let mut ack = Map::new();
            ack.insert("users".into(), presence::users(app, &workspace).await?);
            Ok(ack)
        }
        _ => Err(Error::invalid(format!("unknown event {event:?}"))),
    }
}

async fn join(app: &Arc<App>, socket: &Socket, user: &User, args: Vec<Value>) -> Reply {
    let (workspace, since) = match args.into_iter().next() {
        Some(Value::String(workspace)) => (workspace, None),
        Some(Value::Object(fields)) => (
            string(&fields, "workspaceId")?.to_owned(),
            integer(&fields, "since")?,
        ),
        _ => {
            return Err(Error::invalid(
                "expected a workspace id or { workspaceId, since? }",
            ))
        }
    };
    check_id("workspaceId", &workspace)?;
    let Some(role) = app.role_in(user, &workspace).await? else {
        return Err(Error::forbidden());
    };
    if let Some(conn) = socket.data::<super::Conn>() {
        conn.set_role(&workspace, role);
    }
    super::admission::admit(app, socket, vec![workspace.clone()], since, true).await?;
    presence::entered(app, socket, user, &workspace).await;
    Ok(Map::new())
}

async fn leave(app: &Arc<App>, socket: &Socket, args: Vec<Value>) -> Reply {
    let workspace = match args.into_iter().next() {
        Some(Value::String(workspace)) => workspace,
        Some(Value::Object(fields)) => string(&fields, "workspaceId")?.to_owned(),
        _ => return Err(Error::invalid("expected a workspace id or { workspaceId }")),
    };
    super::leave_workspace(app, socket, &workspace).await?;
    Ok(Map::new())
}

async fn send(app: &Arc<App>, socket: &Socket, user: &User, args: Vec<Value>) -> Reply {
    let fields = object(args)?;
    let workspace = string(&fields, "workspaceId")?;
    let content = match fields.get("content") {
        Some(Value::String(content)) => content,
        _ => return Err(Error::invalid("content must be a non-empty string")),
    };
    let client_msg_id = match fields.get("clientMsgId") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            check_id("clientMsgId", id)?;
            Some(id.clone())
        }
        Some(_) => return Err(Error::invalid("clientMsgId must be a string")),
    };
    super::check_write(socket, workspace)?;
    app.realtime.limits.check_content(content)?;
    let message = NewMessage {
        workspace_id: workspace.to_owned(),
        user_id: user.id.clone(),
        content: content.clone(),
        client_msg_id,
        created_at: switchboard_core::time::now_millis(),
    };
    let stored = app.realtime.writer.send(message).await?;
    let mut ack = Map::new();
    ack.insert("id".into(), json!(stored.id));
    ack.insert(
        "createdAt".into(),
        json!(switchboard_core::time::rfc3339_millis(stored.created_at)),
    );
    Ok(ack)
}

/// `refresh_token` `{ token }`: a fresh token of the same user extends the
/// connection to its `exp`, and its workspace claims apply from now on.
async fn refresh_token(app: &Arc<App>, socket: &Socket, user: &User, args: Vec<Value>) -> Reply {
    let fields = object(args)?;
    let Some(Value::String(token)) = fields.get("token") else {
        return Err(Error::invalid("expected { token }"));
    };
    let fresh = app
        .auth
        .verify(token)
        .map_err(|_| Error::new(ErrorCode::Unauthorized, "invalid or expired token"))?;
    if fresh.id != user.id {
        return Err(Error::new(
            ErrorCode::Forbidden,
            "the token is another user's",
        ));
    }
    let expires_at = fresh.expires_at;
    if let Some(conn) = socket.data::<super::Conn>() {
        conn.refresh(app, socket, fresh);
    }
    for room in socket.rooms() {
        if let Some(workspace) = fanout::workspace_of_room(&room) {
            crate::access::reapply(app, &user.id, workspace).await;
        }
    }
    let mut ack = Map::new();
    ack.insert(
        "expiresAt".into(),
        json!(switchboard_core::time::rfc3339_millis(
            i64::try_from(expires_at).unwrap_or(i64::MAX / 1000) * 1000
        )),
    );
    Ok(ack)
}

async fn history(app: &Arc<App>, user: &User, args: Vec<Value>) -> Reply {
    let fields = object(args)?;
    let workspace = string(&fields, "workspaceId")?;
    let window = Window::new(
        integer(&fields, "before")?,
        integer(&fields, "after")?,
        integer(&fields, "limit")?,
    )?;
    if !app.may_access(user, workspace).await? {
        return Err(Error::forbidden());
    }
    let messages = app.store.messages(workspace, window).await?;
    let mut ack = Map::new();
    ack.insert("messages".into(), json!(messages));
    Ok(ack)
}

/// `{ workspaceId }` (or the id alone) of the typing and presence events.
fn workspace_arg(args: Vec<Value>) -> Result<String, Error> {
    let workspace = match args.into_iter().next() {
        Some(Value::String(workspace)) => workspace,
        Some(Value::Object(fields)) => string(&fields, "workspaceId")?.to_owned(),
        _ => return Err(Error::invalid("expected { workspaceId }")),
    };
    check_id("workspaceId", &workspace)?;
    Ok(workspace)
}

/// The first argument, which must be an object.
fn object(args: Vec<Value>) -> Result<Map<String, Value>, Error> {
    match args.into_iter().next() {
        Some(Value::Object(fields)) => Ok(fields),
        _ => Err(Error::invalid("expected an object")),
    }
}

fn string<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, Error> {
    match fields.get(name) {
        Some(Value::String(s)) => {
            check_id(name, s)?;
            Ok(s)
        }
        _ => Err(Error::invalid(format!("{name} must be a string"))),
    }
}

/// An optional integer field; anything but an integer (or null) is invalid.
fn integer(fields: &Map<String, Value>, name: &str) -> Result<Option<i64>, Error> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| Error::invalid(format!("{name} must be an integer"))),
        Some(_) => Err(Error::invalid(format!("{name} must be an integer"))),
    }
}
