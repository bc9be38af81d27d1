//! The HTTP side: the REST API for users and for the application's backend,
//! health and metrics, CORS, and the mapping of errors to the contract's JSON
//! (`{ error, message }` with the status of its code). Socket.IO is mounted here
//! too, at `/socket.io/`.

mod api;
mod collab;
pub mod dev;
mod documents;
mod health;
pub mod listen;
mod notifications;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use switchboard_core::{Error, ErrorCode, User};
use switchboard_socketio::SocketIo;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::App;
use crate::config::Settings;

/// Largest JSON body of an API request.
const MAX_BODY: usize = 64 * 1024;

pub fn router(app: Arc<App>, io: &SocketIo) -> Router {
    Router::new()
        .route("/api/workspaces/{id}/messages", get(api::messages))
        .route(
            "/api/workspaces/{id}/members/{user}",
            put(api::add_member).delete(api::remove_member),
        )
        .route("/api/workspaces/{id}/presence", get(api::presence))
        .route("/api/workspaces/{id}/documents", get(documents::list))
        .route(
            "/api/workspaces/{id}/documents/{name}",
            get(documents::read).delete(documents::delete),
        )
        .route(
            "/api/workspaces/{id}/documents/{name}/versions",
            get(documents::versions),
        )
        .route(
            "/api/workspaces/{id}/documents/{name}/versions/{version}",
            get(documents::version),
        )
        .route(
            "/api/workspaces/{id}/documents/{name}/versions/{version}/restore",
            post(documents::restore),
        )
        .route("/api/publish", post(api::publish))
        .route(
            "/api/notifications",
            get(notifications::list).post(notifications::create),
        )
        .route("/api/notifications/stream", get(notifications::stream))
        .route("/api/notifications/poll", get(notifications::poll))
        .route(
            "/api/notifications/read-all",
            post(notifications::mark_all_read),
        )
        .route(
            "/api/notifications/{id}/read",
            post(notifications::mark_read),
        )
        .route("/collab/{workspace}/{name}", get(collab::upgrade))
        .route("/collab/{workspace}", get(collab::no_document))
        .route("/collab/{workspace}/", get(collab::no_document))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(dev_routes(&app))
        .route_service("/socket.io/", io.service())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .layer(cors(&app.settings))
        .with_state(app)
}

/// The routes of `serve --dev` (demo page and test hooks), or none.
fn dev_routes(app: &App) -> Router<Arc<App>> {
    if app.dev.is_some() {
        dev::routes()
    } else {
        Router::new()
    }
}

/// `*` lets any origin in without credentials (`Access-Control-Allow-Origin: *`);
/// a list lets those origins in with credentials. A wildcard never goes with
/// credentials.
fn cors(settings: &Settings) -> CorsLayer {
    let origins = &settings.cors_origins;
    let any = origins.iter().any(|o| o == "*");
    let allow = if any {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_credentials(!any)
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::PUT,
            axum::http::Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
        ])
}

/// Answers 413 `too_large` to an API request that announces a body over
/// [`MAX_BODY`], whether or not its endpoint reads one (Socket.IO's polling
/// bodies have their own limit, `SWITCHBOARD_MAX_PAYLOAD`).
async fn refuse_large_bodies(request: Request, next: axum::middleware::Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if request.uri().path().starts_with("/api/")
        && announced.is_some_and(|length| length > MAX_BODY as u64)
    {
        return ApiError(Error::new(ErrorCode::TooLarge, "request body too large")).into_response();
    }
    next.run(request).await
}

/// An error as the HTTP API reports it.
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Invalid => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("switchboard_errors_total", "code" => self.0.code.as_str()).increment(1);
        let body = json!({ "error": self.0.code.as_str(), "message": self.0.message });
        (status_of(self.0.code), Json(body)).into_response()
    }
}

/// The bearer token of a request.
fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// A user authenticated by the JWT in `Authorization: Bearer`.
pub struct UserAuth(pub User);

impl FromRequestParts<Arc<App>> for UserAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(Error::unauthorized)?;
        app.auth
            .verify(token)
            .map(UserAuth)
            .map_err(|_| Error::unauthorized().into())
    }
}

/// A user authenticated by `Authorization: Bearer` or, for `EventSource`,
/// which cannot set headers, by `?token=`.
pub struct StreamAuth(pub User);

impl FromRequestParts<Arc<App>> for StreamAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let from_query = parts.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| *k == "token")
                .map(|(_, v)| v.to_owned())
        });
        let token = bearer(parts)
            .map(str::to_owned)
            .or(from_query)
            .ok_or_else(Error::unauthorized)?;
        app.auth
            .verify(&token)
            .map(StreamAuth)
            .map_err(|_| Error::unauthorized().into())
    }
}

/// A server-to-server call carrying one of the API keys (several are
/// configured while a key is rotated).
pub struct ApiKeyAuth;

impl FromRequestParts<Arc<App>> for ApiKeyAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let given = bearer(parts).unwrap_or("").as_bytes();
        // Every key is compared, whichever matches: the time taken does not
        // tell which one did. An empty key or an empty bearer never matches.
        let matched = app.settings.api_keys().fold(false, |matched, key| {
            matched | (!key.is_empty() & constant_time_eq(key.as_bytes(), given))
        });
        if matched && !given.is_empty() {
            Ok(ApiKeyAuth)
        } else {
            Err(Error::new(ErrorCode::Unauthorized, "invalid API key").into())
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A JSON body whose rejections are reported in the contract's shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<serde_json::Value>::from_request(req, state).await {
            // serde would also read a struct from an array; the API takes objects only.
            Ok(Json(value @ serde_json::Value::Object(_))) => serde_json::from_value(value)
                .map(ApiJson)
                .map_err(|e| Error::invalid(e.to_string()).into()),
            Ok(Json(_)) => Err(Error::invalid("the body must be a JSON object").into()),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Error::new(ErrorCode::TooLarge, "request body too large").into())
            }
            Err(rejection) => Err(Error::invalid(rejection.body_text()).into()),
        }
    }
}
