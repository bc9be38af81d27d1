//! The notification endpoints: the SSE stream with `Last-Event-ID` resume, the
//! long-poll, listing and marking read for users, and creation for the
//! application's backend (API key).
//!
//! A stream or a held poll lives no longer than its token: the stream finishes
//! at the token's `exp` (EventSource reconnects, with a fresh token), and a
//! poll answers by then.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Json;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_core::time::now_millis;
use switchboard_core::{Error, NewNotification, Notification};
use tokio::sync::mpsc;

use super::{ApiError, ApiJson, ApiKeyAuth, StreamAuth, UserAuth};
use crate::app::App;
use crate::notify::{Item, Kind, Signal};

/// Notifications read from the Store per query while catching up (so a
/// stream holds at most this many in memory, whatever `Last-Event-ID` says).
const PAGE: u32 = 500;

fn parse_id(name: &str, value: Option<&str>) -> Result<Option<i64>, Error> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|id| *id >= 0)
            .map(Some)
            .ok_or_else(|| Error::invalid(format!("{name} must be a notification id"))),
    }
}

/// How long until a token's `exp` (seconds since the Unix epoch); zero once past.
fn until_expiry(expires_at: u64) -> Duration {
    let left = i128::from(expires_at) * 1000 - i128::from(now_millis());
    Duration::from_millis(u64::try_from(left.max(0)).unwrap_or(u64::MAX))
}

fn item(notification: &Notification) -> Result<Item, Error> {
    Ok(Item {
        id: notification.id,
        json: serde_json::to_string(notification).map_err(Error::internal)?,
    })
}

// SSE frames are written here rather than with axum's `Sse`: the contract's
// keep-alive is the comment `:ping`, and axum writes every comment as `: text`.
const CONNECTED: &str = "data: {\"type\":\"connected\"}\n\n";
const PING: &str = ":ping\n\n";

/// `id: <id>` and `data: <json>` (serde_json never writes a raw newline).
fn sse_event(item: &Item) -> Bytes {
    Bytes::from(format!("id: {}\ndata: {}\n\n", item.id, item.json))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamQuery {
    last_event_id: Option<String>,
}

/// `GET /api/notifications/stream`: `{"type":"connected"}` first, then what was
/// missed after `Last-Event-ID` (header or `?lastEventId=`), then live
/// notifications, with `:ping` comments in between, until the token's `exp`.
pub async fn stream(
    State(app): State<Arc<App>>,
    StreamAuth(user): StreamAuth,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let header = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let last_event_id = parse_id("Last-Event-ID", header.or(query.last_event_id.as_deref()))?;
    // Listen first, then read what was missed: a notification stored meanwhile is
    // in both, and the feed sends only its first copy.
    let (listener, live) = app.hub.listen(&user.id, Kind::Stream).await?;
    let feed = match last_event_id {
        Some(after) => Feed::new(app.clone(), user.id.clone(), after, true, live),
        None => {
            // Nothing is replayed, but a catch-up needs to know where the
            // stream started.
            let newest = app.store.notifications(&user.id, false, None, 1).await;
            let after = newest.map_err(Error::from)?.first().map_or(0, |n| n.id);
            Feed::new(app.clone(), user.id.clone(), after, false, live)
        }
    };
    let connected = stream::once(async { Bytes::from_static(CONNECTED.as_bytes()) });
    let events = connected.chain(stream::unfold(feed, Feed::next));
    let pings = stream::unfold(app.settings.sse_ping_interval, |every| async move {
        tokio::time::sleep(every).await;
        Some((Bytes::from_static(PING.as_bytes()), every))
    });
    // Ends when the events end (the listener was dropped as a slow consumer);
    // the listener lives as long as the response body, so a closed stream frees it.
    let events = events.map(Some).chain(stream::once(async { None }));
    let expired = tokio::time::sleep(until_expiry(user.expires_at));
    let body = stream::select(events, pings.map(Some))
        .take_until(expired)
        .take_while(|chunk| std::future::ready(chunk.is_some()))
        .filter_map(std::future::ready)
        .map(move |chunk| {
            let _ = &listener;
            Ok::<_, Infallible>(chunk)
        });
    metrics::counter!("switchboard_sse_streams_opened_total").increment(1);
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The events of one stream after `connected`: the Store after the last id
/// sent, a page at a time (on resume and after a [`Signal::CatchUp`]), and the
/// live notifications, each id once, in increasing order.
struct Feed {
    app: Arc<App>,
    user: String,
    /// The newest id sent (or the resume point).
    newest: i64,
    /// The Store is read after `newest` before live notifications go on.
    replaying: bool,
    live: mpsc::Receiver<Signal>,
    /// Frames of the page read last, not yet sent.
    page: VecDeque<Bytes>,
}

impl Feed {
    fn new(
        app: Arc<App>,
        user: String,
        newest: i64,
        replaying: bool,
        live: mpsc::Receiver<Signal>,
    ) -> Self {
        Self {
            app,
            user,
            newest,
            replaying,
            live,
            page: VecDeque::new(),
        }
    }

    /// The next frame; `None` ends the stream (the listener was dropped as a
    /// slow consumer, or the Store failed: the client resumes by id).
    async fn next(mut self) -> Option<(Bytes, Self)> {
        loop {
            if let Some(frame) = self.page.pop_front() {
                return Some((frame, self));
            }
            if self.replaying {
                let page = self
                    .app
                    .store
                    .notifications_after(&self.user, self.newest, PAGE)
                    .await;
                let page = match page {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading missed notifications failed");
                        return None;
                    }
                };
                self.replaying = page.len() == PAGE as usize;
                for notification in &page {
                    let item = item(notification).ok()?;
                    self.newest = self.newest.max(item.id);
                    self.page.push_back(sse_event(&item));
                }
                continue;
            }
            match self.live.recv().await? {
                Signal::Item(item) if item.id > self.newest => {
                    self.newest = item.id;
                    return Some((sse_event(&item), self));
                }
                Signal::Item(_) => {}
                Signal::CatchUp => self.replaying = true,
            }
        }
    }
}

#[derive(Deserialize)]
pub struct PollQuery {
    after: Option<String>,
    timeout: Option<String>,
}

/// `GET /api/notifications/poll?after=ID&timeout=S`, held at most until the
/// token's `exp`.
pub async fn poll(
    State(app): State<Arc<App>>,
    StreamAuth(user): StreamAuth,
    Query(query): Query<PollQuery>,
) -> Result<Json<Value>, ApiError> {
    let after = parse_id("after", query.after.as_deref())?.unwrap_or(0);
    let max = app.settings.max_poll_secs;
    let timeout = match query.timeout.as_deref() {
        None => max,
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| Error::invalid("timeout must be a whole number of seconds"))?
            .min(max),
    };
    let (_listener, mut live) = app.hub.listen(&user.id, Kind::Poll).await?;
    let mut found = app
        .store
        .notifications_after(&user.id, after, PAGE)
        .await
        .map_err(Error::from)?;
    if found.is_empty() {
        let hold = Duration::from_secs(timeout).min(until_expiry(user.expires_at));
        let woke = tokio::time::timeout(hold, live.recv()).await;
        if matches!(woke, Ok(Some(_))) {
            found = app
                .store
                .notifications_after(&user.id, after, PAGE)
                .await
                .map_err(Error::from)?;
        }
    }
    let last_id = found.last().map_or(after, |n| n.id);
    Ok(Json(json!({ "notifications": found, "lastId": last_id })))
}

#[derive(Deserialize)]
pub struct ListQuery {
    unread: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

/// `GET /api/notifications?unread=true&before=ID&limit=N`, newest first.
pub async fn list(
    State(app): State<Arc<App>>,
    UserAuth(user): UserAuth,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let unread = match query.unread.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return Err(Error::invalid("unread must be true or false").into()),
    };
    let before = parse_id("before", query.before.as_deref())?;
    let limit = match query.limit.as_deref() {
        None => 50,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| *l >= 1)
            .ok_or_else(|| Error::invalid("limit must be a positive integer"))?
            .min(200) as u32,
    };
    let found = app
        .store
        .notifications(&user.id, unread, before, limit)
        .await
        .map_err(Error::from)?;
    Ok(Json(json!({ "notifications": found })))
}

/// `POST /api/notifications/{id}/read`: 204, or 404 for an id that is not the user's.
pub async fn mark_read(
    State(app): State<Arc<App>>,
    UserAuth(user): UserAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let Ok(id) = id.parse::<i64>() else {
        return Err(Error::not_found("no such notification").into());
    };
    if app
        .store
        .mark_read(&user.id, id)
        .await
        .map_err(Error::from)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::not_found("no such notification").into())
    }
}

/// `POST /api/notifications/read-all`
pub async fn mark_all_read(
    State(app): State<Arc<App>>,
    UserAuth(user): UserAuth,
) -> Result<StatusCode, ApiError> {
    app.store
        .mark_all_read(&user.id)
        .await
        .map_err(Error::from)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Create {
    user_id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

/// `POST /api/notifications` `{ userId, type, data }` → 201 `{ id, createdAt }`:
/// persisted, then delivered to every stream and poll of the user on any node.
pub async fn create(
    State(app): State<Arc<App>>,
    _: ApiKeyAuth,
    ApiJson(body): ApiJson<Create>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let new = NewNotification {
        user_id: body.user_id,
        kind: body.kind,
        data: body.data,
        created_at: switchboard_core::time::now_millis(),
    };
    new.check(app.settings.max_notification_bytes)?;
    let stored = app.notifier.notify(new).await?;
    let body = json!({ "id": stored.id, "createdAt": switchboard_core::time::rfc3339_millis(stored.created_at) });
    Ok((StatusCode::CREATED, Json(body)))
}
