//! `GET /collab/{workspaceId}/{docName}?token=JWT`: the WebSocket upgrade of
//! collaborative editing. Everything is checked before the upgrade, so a
//! refused client gets an HTTP status and no WebSocket: 401 without a valid
//! token, 400 for a bad document name, 403 without access to the workspace,
//! 429 when the document has as many clients as it may on this node.
//! What happens on the WebSocket is `crate::collab`'s.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use switchboard_core::chat::check_id;
use switchboard_core::{DocumentId, Error, ErrorCode};
use switchboard_socketio::ws::{switching_protocols, websocket_key};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

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
    check_id("workspace id", &workspace)?;
    check_id("document name", &name)?;
    if !app.may_access(&user, &workspace).await? {
        return Err(Error::new(ErrorCode::Forbidden, "no access to this workspace").into());
    }
    let key = websocket_key(request.headers())
        .ok_or_else(|| Error::invalid("expected a WebSocket upgrade"))?;
    let document = DocumentId { workspace, name };
    let limits = app.collab.limits().clone();
    if app.collab.clients(&document) >= limits.max_clients {
        return Err(
            Error::new(ErrorCode::RateLimited, "this document has too many clients").into(),
        );
    }
    let on_upgrade = request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| Error::invalid("expected a WebSocket upgrade"))?;
    let collab = app.collab.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "collab upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(4096)
            .max_message_size(Some(limits.max_update_bytes + FRAMING_BYTES))
            .max_frame_size(Some(limits.max_update_bytes + FRAMING_BYTES));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        collab::serve(collab, document, ws).await;
    });
    Ok(switching_protocols(&key).map(Body::new).into_response())
}

/// `/collab/{workspaceId}` or `/collab/{workspaceId}/`: a document name is required.
pub async fn no_document() -> ApiError {
    Error::invalid("the document name is missing: /collab/{workspaceId}/{docName}").into()
}
