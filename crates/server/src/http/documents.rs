//! The document API of the application's backend (API key): a workspace's
//! collaborative documents listed, read (as one Yjs update, or as plain JSON
//! of their top-level types) and deleted, and their versions (the snapshots
//! kept at compaction) listed, read and restored.
//!
//! Reads come from the Store, where every update is before any client sees
//! it. A restore and a deletion go through `crate::collab`, which reaches the
//! document's connections on every node: a restore is an ordinary update to
//! them, a deletion closes them with 4404 (a permanent close to y-websocket,
//! which then does not reconnect and bring the document back).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_collab::json;
use switchboard_core::chat::check_path_segment;
use switchboard_core::time::rfc3339_millis;
use switchboard_core::{DocumentId, Error, ErrorCode};

use super::{ApiError, ApiKeyAuth};
use crate::app::App;
use crate::collab::RestoreError;

/// Documents listed per page when the request names no `limit`.
const DEFAULT_LIMIT: u32 = 100;
/// The largest `limit` of a listing.
const MAX_LIMIT: u32 = 1000;

/// `?after=&limit=` of a listing.
#[derive(Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `?format=` of a read: `update` (default) or `json`.
#[derive(Deserialize)]
pub struct FormatQuery {
    format: Option<String>,
}

/// How a document or a version is answered.
enum Format {
    /// One Yjs (v1) update, `application/octet-stream`.
    Update,
    /// The top-level types as a JSON object.
    Json,
}

impl FormatQuery {
    fn format(&self) -> Result<Format, Error> {
        match self.format.as_deref() {
            None | Some("update") => Ok(Format::Update),
            Some("json") => Ok(Format::Json),
            Some(_) => Err(Error::invalid("format must be \"update\" or \"json\"")),
        }
    }
}

/// The document a path names, once its parts are checked as in `/collab/`.
fn document(workspace: String, name: String) -> Result<DocumentId, Error> {
    check_path_segment("workspace id", &workspace)?;
    check_path_segment("document name", &name)?;
    Ok(DocumentId { workspace, name })
}

/// A version number from the path: a positive integer.
fn version_number(version: &str) -> Result<i64, Error> {
    version
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| Error::invalid("the version must be a positive integer"))
}

fn no_document() -> ApiError {
    Error::not_found("no such document").into()
}

fn no_version() -> ApiError {
    Error::not_found("no such version of this document").into()
}

/// A whole document (or version) as the request asked for it.
fn answer(update: Bytes, format: Format) -> Result<Response, ApiError> {
    match format {
        Format::Update => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], update).into_response())
        }
        Format::Json => {
            let content = json::to_json(&update).map_err(Error::internal)?;
            Ok(Json(content).into_response())
        }
    }
}

/// `GET /api/workspaces/{id}/documents?after=&limit=`: `{ documents: [{ name,
/// size, updatedAt }] }` by name, at most `limit` (100, at most 1000) after
/// the name `after`.
pub async fn list(
    State(app): State<Arc<App>>,
    _: ApiKeyAuth,
    Path(workspace): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    check_path_segment("workspace id", &workspace)?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(limit) => limit
            .parse::<u32>()
            .ok()
            .filter(|l| *l > 0)
            .ok_or_else(|| Error::invalid("limit must be a positive integer"))?
            .min(MAX_LIMIT),
    };
    let documents = app
        .store
        .documents(&workspace, q.after.as_deref(), limit)
        .await
        .map_err(Error::from)?;
    let documents: Vec<Value> = documents
        .into_iter()
        .map(|d| json!({ "name": d.name, "size": d.bytes, "updatedAt": rfc3339_millis(d.updated_at) }))
        .collect();
    Ok(Json(json!({ "documents": documents })))
}

/// `GET /api/workspaces/{id}/documents/{name}?format=update|json`.
pub async fn read(
    State(app): State<Arc<App>>,
    _: ApiKeyAuth,
    Path((workspace, name)): Path<(String, String)>,
    Query(q): Query<FormatQuery>,
) -> Result<Response, ApiError> {
    let document = document(workspace, name)?;
    let format = q.format()?;
    let update = app
        .collab
        .document(&document)
        .await
        .map_err(Error::from)?
        .ok_or_else(no_document)?;
    answer(update, format)
}

/// `DELETE /api/workspaces/{id}/documents/{name}`: 204, and every connection
/// to it closes with 4404 on every node; 404 when there was nothing.
pub async fn delete(
    State(app): State<Arc<App>>,
    _: ApiKeyAuth,
    Path((workspace, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let document = document(workspace, name)?;
    if app.collab.delete(&document).await.map_err(Error::from)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_document())
    }
}

/// `GET /api/workspaces/{id}/documents/{name}/versions`: `{ versions: [{
/// version, size, createdAt }] }`, newest first.
pub async fn versions(
    State(app): State<Arc<App>>,
    _: ApiKeyAuth,
    Path((workspace, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let document = document(workspace, name)?;
    let versions = app
        .store
        .document_versions(&document)
        .await
        .map_err(Error::from)?;
    if versions.is_empty() {
        // No version yet, or no document: the log tells, without decoding it.
        let log = app
            .store
            .document_log(&document)
            .await
            .map_err(Error::from)?;
        if log.snapshot.is_none() && log.updates.is_empty() {
            return Err(no_document());
        }
    }
    let versions: Vec<Value> = versions
        .into_iter()
        .map(|v| json!({ "version": v.version, "size": v.bytes, "createdAt": rfc3339_millis(v.created_at) }))
        .collect();
    Ok(Json(json!({ "versions": versions })))
}

/// `GET /api/workspaces/{id}/documents/{name}/versions/{version}?format=update|json`.
pub async fn version(
    State(app): State<Arc<App>>,
    _: ApiKeyAuth,
    Path((workspace, name, version)): Path<(String, String, String)>,
    Query(q): Query<FormatQuery>,
) -> Result<Response, ApiError> {
    let document = document(workspace, name)?;
    let number = version_number(&version)?;
    let format = q.format()?;
    let update = app
        .store
        .document_version(&document, number)
        .await
        .map_err(Error::from)?
        .ok_or_else(no_version)?;
    answer(update, format)
}

/// `POST /api/workspaces/{id}/documents/{name}/versions/{version}/restore`:
/// 204 once the document's content is the version's, stored and on its way
/// to every connected client as an ordinary update.
pub async fn restore(
    State(app): State<Arc<App>>,
    _: ApiKeyAuth,
    Path((workspace, name, version)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let document = document(workspace, name)?;
    let number = version_number(&version)?;
    let snapshot = app
        .store
        .document_version(&document, number)
        .await
        .map_err(Error::from)?
        .ok_or_else(no_version)?;
    match app.collab.restore(&document, snapshot).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(RestoreError::TooLarge) => {
            Err(Error::new(ErrorCode::TooLarge, RestoreError::TooLarge.to_string()).into())
        }
        Err(e) => Err(Error::internal(e).into()),
    }
}
