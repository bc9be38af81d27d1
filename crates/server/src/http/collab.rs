//! `GET /collab/{workspaceId}/{docName}?token=JWT`: the WebSocket upgrade of
//! collaborative editing. Everything is checked before the upgrade, so a
//! refused client gets an HTTP status and no WebSocket: 401 without a valid
//! token, 400 for a bad document name, 403 without access to the workspace,
//! 429 when the document has as many clients as it may on this node.
//! The user's role settles what the connection may do (a viewer's is
//! read-only), and the token's `exp` when it ends.
//! What happens on the WebSocket is `crate::collab`'s; the WebSocket itself
//! is the socketio crate's (`switchboard_socketio::ws`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use switchboard_core::chat::check_path_segment;
use switchboard_core::{DocumentId, Error, ErrorCode};
use switchboard_socketio::ws::{websocket_key, Upgrade};

use super::{ApiError, StreamAuth};
use crate::app::App;
use crate::collab;

/// y-protocols framing around an update: message type, sync type, length.
const FRAMING_BYTES: usize = 16;

pub async fn upgrade(
    State(app): State<Arc<App>>,
    Path((workspace, name)): Path<(String, String)>,
    StreamAuth(user): StreamAuth,
    mut request: Request,
) -> Result<Response, ApiError> {
    check_path_segment("workspace id", &workspace)?;
    check_path_segment("document name", &name)?;
    // Taken before access is read: a change of access after it reaches the
    // connection when it joins its document, so none slips in between.
    let checked_at = tokio::time::Instant::now();
    let Some(role) = app.role_in(&user, &workspace).await? else {
        return Err(Error::new(ErrorCode::Forbidden, "no access to this workspace").into());
    };
    if websocket_key(request.headers()).is_none() {
        return Err(Error::invalid("expected a WebSocket upgrade").into());
    }
    let grant = collab::Grant {
        token_role: user.token_role(&workspace),
        user: user.id,
        role,
        expires_at: user.expires_at,
        checked_at,
    };
    let document = DocumentId { workspace, name };
    let limits = app.collab.limits().clone();
    if app.collab.clients(&document) >= limits.max_clients {
        return Err(
            Error::new(ErrorCode::RateLimited, "this document has too many clients").into(),
        );
    }
    let upgrade = Upgrade::from_request(&mut request)
        .ok_or_else(|| Error::invalid("expected a WebSocket upgrade"))?;
    let response = upgrade.response();
    let collab = app.collab.clone();
    let max_message = limits.max_update_bytes + FRAMING_BYTES;
    tokio::spawn(async move {
        match upgrade.accept(max_message).await {
            Ok(ws) => collab::serve(collab, document, grant, ws).await,
            Err(e) => tracing::debug!(error = %e, "collab upgrade failed"),
        }
    });
    Ok(response.map(Body::new).into_response())
}

/// `/collab/{workspaceId}` or `/collab/{workspaceId}/`: a document name is required.
pub async fn no_document() -> ApiError {
    Error::invalid("the document name is missing: /collab/{workspaceId}/{docName}").into()
}
