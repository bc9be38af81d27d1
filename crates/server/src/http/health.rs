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

/// `GET /readyz`: 200 when the store and the broker answer, else 503. The body
/// names what is down (`"store": "down"`) but carries no error text, which may
/// hold hosts, paths or credentials: that goes to the log, at warn.
pub async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let store = match app.store.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the store does not answer");
            false
        }
    };
    let broker = match app.broker.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the broker does not answer");
            false
        }
    };
    let ready = store && broker;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let state = |up: bool| if up { "ok" } else { "down" };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "store": state(store),
        "broker": state(broker),
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
