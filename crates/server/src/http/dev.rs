//! Routes that exist only in `serve --dev`: the demo page at `/` (built from
//! `web/` and embedded in the binary, so running the server needs no Node.js),
//! the demo users' tokens it signs in with, and test hooks. Nothing here is
//! mounted without `--dev`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::{ApiError, ApiKeyAuth};
use crate::app::App;

/// The demo users, as `(id, display name)`; `serve --dev` prints their tokens.
pub const DEMO_USERS: [(&str, &str); 3] = [("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")];

/// The workspaces every demo user's token grants.
pub const DEMO_WORKSPACES: [&str; 2] = ["demo", "design"];

/// How long a demo token lives.
pub const DEMO_TOKEN_TTL_SECS: u64 = 24 * 3600;

const INDEX_HTML: &[u8] = include_bytes!("../../../../web/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../../../../web/dist/assets/app.js");
const APP_CSS: &[u8] = include_bytes!("../../../../web/dist/assets/app.css");

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route(
            "/assets/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/assets/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route("/api/dev/demo", get(demo_session))
        .route("/api/dev/presence/pause", post(pause_presence_refresh))
}

async fn asset(content_type: &'static str, body: &'static [u8]) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// A demo user's token, minted for the demo workspaces.
pub fn demo_token(app: &App, user: &str, name: &str) -> Result<String, ApiError> {
    let workspaces: Vec<String> = DEMO_WORKSPACES.iter().map(|w| (*w).to_owned()).collect();
    app.auth
        .mint(user, Some(name), &workspaces, DEMO_TOKEN_TTL_SECS)
        .map_err(|e| ApiError(switchboard_core::Error::internal(e)))
}

/// `GET /api/dev/demo`: everything the demo page needs to sign in as any demo
/// user, including the API key it sends test notifications with. Dev mode
/// hands these out to anyone who asks, which is why it is dev mode.
async fn demo_session(State(app): State<Arc<App>>) -> Result<impl IntoResponse, ApiError> {
    let mut users = Vec::with_capacity(DEMO_USERS.len());
    for (id, name) in DEMO_USERS {
        let token = demo_token(&app, id, name)?;
        users.push(json!({ "id": id, "name": name, "token": token }));
    }
    Ok(Json(json!({
        "apiKey": app.settings.api_keys().next(),
        "workspaces": DEMO_WORKSPACES,
        "users": users,
    })))
}

/// `POST /api/dev/presence/pause` (API key): this node stops refreshing its
/// presence entries, as a hung node would.
async fn pause_presence_refresh(State(app): State<Arc<App>>, _: ApiKeyAuth) -> StatusCode {
    if let Some(hooks) = &app.dev {
        hooks
            .presence_refresh_paused
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    StatusCode::NO_CONTENT
}

/// What only `serve --dev` has: test hooks that change how the node behaves.
#[derive(Debug, Default)]
pub struct DevHooks {
    /// This node stops refreshing its presence entries, as a node that hangs
    /// would, so their expiry can be observed.
    pub presence_refresh_paused: std::sync::atomic::AtomicBool,
}

impl DevHooks {
    /// Whether presence refresh was paused by the test hook.
    pub fn presence_paused(app: &App) -> bool {
        app.dev.as_ref().is_some_and(|hooks| {
            hooks
                .presence_refresh_paused
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }
}
