//! `GET /healthz` (the process answers) and `GET /readyz` (the backend is usable).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::http::wire::HealthResponse;
use crate::http::{ApiError, AppState};

/// Liveness: answering is the whole check.
pub async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok".into() })
}

/// Readiness: the backend answers and holds a usable token.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<(StatusCode, Json<HealthResponse>), ApiError> {
    state
        .issuer
        .store()
        .ready()
        .await
        .map_err(|e| ApiError::Unavailable { detail: format!("readiness check: {}", crate::error::error_chain(&e)) })?;
    Ok((StatusCode::OK, Json(HealthResponse { status: "ready".into() })))
}
