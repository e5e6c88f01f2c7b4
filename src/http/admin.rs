//! The admin router: `/metrics`, `/healthz` and `/readyz` in plain HTTP on the admin listener.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::http::AppState;
use crate::telemetry::METRICS_CONTENT_TYPE;

/// The admin router: `/metrics`, `/healthz` and `/readyz` in plain HTTP, for the kubelet and
/// Prometheus. It shares the public router's state (so readiness checks the same backend) but
/// has no request metrics of its own: probes and scrapes would drown the peers' traffic.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(super::health::healthz))
        .route("/readyz", get(super::health::readyz))
        .with_state(Arc::new(state))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], state.metrics.encode())
}
