//! Liveness, readiness (store and broker reachable) and Prometheus metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::app::App;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the store and the broker answer, else 503.
pub async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let store = app.store.ping().await.map_err(|e| e.to_string());
    let broker = app.broker.ping().await.map_err(|e| e.to_string());
    let ready = store.is_ok() && broker.is_ok();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "store": store.err().unwrap_or_else(|| "ok".into()),
        "broker": broker.err().unwrap_or_else(|| "ok".into()),
    });
    (status, Json(body))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    metrics::gauge!("switchboard_notification_listeners").set(app.hub.listener_count() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
