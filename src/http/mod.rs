//! The public HTTP API: `router(state)` and its middleware.
//!
//! Routes: `GET /ids`, `POST /identity/certificate` (the wire contract of Liqo),
//! `POST /identity/certificate/renew` (renewal with a proof of possession), `GET /healthz` and
//! `GET /readyz`. Unknown paths get 404, wrong methods 405 with `Allow`, both in the JSON error
//! envelope; a path that cleans to a route (doubled slashes, `.`/`..`, trailing slash, letter
//! case) redirects to it like the reference router (301 for GET, 307 otherwise; `redirect`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::identity::{ClusterIdentity, Issuer, Renewer};
use crate::telemetry::Metrics;

pub mod admin;
pub mod audit;
pub mod certificate;
pub mod error;
pub mod extract;
pub mod health;
pub mod ids;
pub mod observe;
pub mod protect;
pub mod redirect;
pub mod renew;
pub mod wire;

pub use admin::admin_router;
pub use error::ApiError;
pub use protect::{Protection, ProtectionConfig};

/// Upper bound for one request, including a signer wait (`--signing-timeout` is shorter).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Shared state of the handlers: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub issuer: Issuer,
    pub renewer: Renewer,
    /// The `/ids` answer, built once.
    pub ids: ids::IdsAnswer,
    pub cluster: ClusterIdentity,
    pub metrics: Metrics,
    pub protection: Protection,
}

impl AppState {
    /// Builds the state for `cluster` with `issuer` and `renewer`, fresh metrics and default
    /// protection.
    pub fn new(cluster: ClusterIdentity, issuer: Issuer, renewer: Renewer) -> Self {
        let ids = wire::IdsResponse { cluster_id: cluster.id.to_string(), cluster_name: cluster.name.to_string() };
        let ids = ids::IdsAnswer::new(&ids);
        Self { issuer, renewer, ids, cluster, metrics: Metrics::new(), protection: Protection::default() }
    }

    /// Records into `metrics` (shared with the admin listener and the TLS reloader).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Protects the issuance route as `protection` says.
    pub fn with_protection(mut self, protection: Protection) -> Self {
        self.protection = protection;
        self
    }
}

/// The public router.
///
/// The body limit, the request timeout and `Cache-Control: no-store` (their answers carry
/// credentials) sit on the issuance and renewal routes only: `/ids` and the probes answer from
/// memory, and the benchmark against the reference (`benches/`) shows every layer.
pub fn router(state: AppState) -> Router {
    // One reference-counted state: axum clones it for every request and every layer.
    let state = Arc::new(state);
    let issue = post(certificate::issue_certificate).layer::<_, std::convert::Infallible>(
        tower::ServiceBuilder::new()
            .layer(middleware::map_response(no_store))
            .layer(middleware::from_fn(within_request_timeout))
            .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES)),
    );
    let renew = post(renew::renew_certificate).layer::<_, std::convert::Infallible>(
        tower::ServiceBuilder::new()
            .layer(middleware::map_response(no_store))
            .layer(middleware::from_fn(within_request_timeout))
            .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES)),
    );
    Router::new()
        .route("/ids", get(ids::ids))
        .route("/identity/certificate", issue)
        .route("/identity/certificate/renew", renew)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(fallback)
        .layer(observe::ObserveLayer::new(state.metrics.clone()))
        .with_state(state)
}

/// Marks a response as never to be stored by a cache or proxy: it may carry a certificate.
pub async fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Bounds an issuance or a renewal by `REQUEST_TIMEOUT`: past it, 503 `unavailable` with `Retry-After` in
/// the error envelope (tower-http's timeout layer answers with an empty body).
async fn within_request_timeout(request: Request<Body>, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable { detail: format!("the request did not finish within {REQUEST_TIMEOUT:?}") }
            .into_response(),
    }
}

/// The route templates, for the metrics labels and the redirects.
const ROUTES: [&str; 5] = ["/ids", "/identity/certificate", "/identity/certificate/renew", "/healthz", "/readyz"];

/// A redirect when the path cleans to a route, else 404.
async fn fallback(method: Method, uri: axum::http::Uri) -> Response {
    redirect::to_route(&method, &uri, &ROUTES).unwrap_or_else(|| ApiError::NotFound.into_response())
}
