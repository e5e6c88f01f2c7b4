//! `GET /ids`: the provider's cluster ID and name (what a consumer asks first, to learn whom it peers with).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::http::AppState;

/// Answers with the body serialised at start-up.
pub async fn ids(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], axum::body::Bytes::from_owner(state.ids_body.clone()))
}
