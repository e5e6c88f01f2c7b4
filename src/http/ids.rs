//! `GET /ids`: the provider's cluster ID and name (what a consumer asks first, to learn whom it peers with).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::Response;

use crate::http::{wire, AppState};

/// The `/ids` answer, built once at start-up: every request clones two reference-counted
/// buffers instead of serialising, copying the content type and formatting the length again.
#[derive(Clone)]
pub struct IdsAnswer {
    body: Bytes,
    content_length: HeaderValue,
}

impl IdsAnswer {
    pub fn new(ids: &wire::IdsResponse) -> Self {
        let body = Bytes::from(serde_json::to_vec(ids).expect("plain struct serialises"));
        let content_length = HeaderValue::from(body.len());
        Self { body, content_length }
    }

    fn response(&self) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // Present, so axum does not format it again for every answer.
        headers.insert(header::CONTENT_LENGTH, self.content_length.clone());
        response
    }
}

/// Answers with the body serialised at start-up.
pub async fn ids(State(state): State<Arc<AppState>>) -> Response {
    state.ids.response()
}
