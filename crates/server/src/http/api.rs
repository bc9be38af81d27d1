//! The REST endpoints of chat: message history for users, memberships and
//! room publishing for the application's backend (API key).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_core::chat::check_id;
use switchboard_core::{Error, ErrorCode, Role, Window};

use super::{ApiError, ApiJson, ApiKeyAuth, UserAuth};
use crate::app::App;

#[derive(Deserialize)]
pub struct WindowQuery {
    before: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

fn query_int(name: &str, value: Option<&str>) -> Result<Option<i64>, Error> {
    value
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| Error::invalid(format!("{name} must be an integer")))
        })
        .transpose()
}

/// `GET /api/workspaces/{id}/messages?before=&after=&limit=`
pub async fn messages(
    State(app): State<Arc<App>>,
    UserAuth(user): UserAuth,
    Path(workspace): Path<String>,
    Query(q): Query<WindowQuery>,
) -> Result<Json<Value>, ApiError> {
    check_id("workspace id", &workspace)?;
    let window = Window::new(
        query_int("before", q.before.as_deref())?,
        query_int("after", q.after.as_deref())?,
        query_int("limit", q.limit.as_deref())?,
    )?;
    if !app.may_access(&user, &workspace).await? {
        return Err(Error::forbidden().into());
    }
    let messages = app
        .store
        .messages(&workspace, window)
        .await
        .map_err(Error::from)?;
    Ok(Json(json!({ "messages": messages })))
}

/// `PUT /api/workspaces/{id}/members/{userId}`, with an optional body
/// `{ role }` (`member` by default, `viewer`, `admin`).
pub async fn add_member(
    State(app): State<Arc<App>>,
    _: ApiKeyAuth,
    Path(ids): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Error::new(ErrorCode::TooLarge, "request body too large"),
        _ => Error::invalid(rejection.body_text()),
    })?;
    let role = if body.iter().all(u8::is_ascii_whitespace) {
        Role::Member
    } else {
        let fields: Membership = serde_json::from_slice(&body)
            .map_err(|e| Error::invalid(format!("expected {{ \"role\": ... }}: {e}")))?;
        match fields.role.as_deref() {
            None => Role::Member,
            Some(name) => Role::parse(name).ok_or_else(|| {
                Error::invalid("role must be \"member\", \"viewer\" or \"admin\"")
            })?,
        }
    };
    change_membership(&app, ids, Some(role)).await
}

/// The optional body of `PUT .../members/{userId}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    role: Option<String>,
}

/// `DELETE /api/workspaces/{id}/members/{userId}`
pub async fn remove_member(
    State(app): State<Arc<App>>,
    _: ApiKeyAuth,
    Path(ids): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    change_membership(&app, ids, None).await
}

/// Writes the membership, then has every node re-apply it to its live
/// connections (`crate::access`).
async fn change_membership(
    app: &Arc<App>,
    (workspace, user): (String, String),
    role: Option<Role>,
) -> Result<StatusCode, ApiError> {
    check_id("workspace id", &workspace)?;
    check_id("user id", &user)?;
    let changed = match role {
        Some(role) => app.store.add_member(&user, &workspace, role).await,
        None => app.store.remove_member(&user, &workspace).await,
    };
    changed.map_err(Error::from)?;
    crate::access::changed(app, &user, &workspace).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Publish {
    workspace_id: String,
    event: String,
    #[serde(default)]
    data: Value,
}

/// Event names the Socket.IO client keeps for itself.
const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// `POST /api/publish` `{ workspaceId, event, data }`: every socket in the room, on every node.
pub async fn publish(
    State(app): State<Arc<App>>,
    _: ApiKeyAuth,
    ApiJson(body): ApiJson<Publish>,
) -> Result<StatusCode, ApiError> {
    check_id("workspaceId", &body.workspace_id)?;
    if body.event.is_empty()
        || body.event.chars().count() > 64
        || RESERVED_EVENTS.contains(&body.event.as_str())
    {
        return Err(
            Error::invalid("event must be 1 to 64 characters and not a reserved name").into(),
        );
    }
    app.realtime
        .writer
        .publish(body.workspace_id, body.event, body.data)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// `GET /api/workspaces/{id}/presence`: `{ users: [{ userId, name? }] }`.
pub async fn presence(
    State(app): State<Arc<App>>,
    UserAuth(user): UserAuth,
    Path(workspace): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_id("workspace id", &workspace)?;
    if !app.may_access(&user, &workspace).await? {
        return Err(Error::forbidden().into());
    }
    let users = crate::realtime::presence::users(&app, &workspace).await?;
    Ok(Json(json!({ "users": users })))
}
