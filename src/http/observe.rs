//! What the public router records about every request: the request metrics (by route template,
//! never the raw URI), one log line (the single log line of a 5xx, with its error chain), and the
//! JSON envelope for axum's bare 405 (keeping `Allow`).
//!
//! A tower layer with its own future rather than `axum::middleware::from_fn`: that one clones
//! the inner service and boxes a future for every request, on `GET /ids` as on the rest.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use tower::{Layer, Service};

use crate::http::{error, ApiError, ROUTES};
use crate::telemetry::Metrics;

/// Wraps every route of the public router in [`Observe`].
#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Metrics,
}

impl ObserveLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, metrics: self.metrics.clone() }
    }
}

/// One route, observed.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let method = request.method().clone();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .and_then(|matched| ROUTES.iter().copied().find(|known| *known == matched.as_str()))
            .unwrap_or("unmatched");
        Observed { inner: self.inner.call(request), started, method, route, metrics: self.metrics.clone() }
    }
}

/// The route's answer, recorded when it is ready.
pub struct Observed<F> {
    inner: F,
    started: Instant,
    method: Method,
    route: &'static str,
    metrics: Metrics,
}

impl<F> Future for Observed<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Ok(response) = ready!(Pin::new(&mut this.inner).poll(cx));
        Poll::Ready(Ok(record(&this.metrics, &this.method, this.route, this.started, response)))
    }
}

fn record(
    metrics: &Metrics,
    method: &Method,
    route: &'static str,
    started: Instant,
    mut response: Response,
) -> Response {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        let allow = response.headers().get(header::ALLOW).cloned();
        response = ApiError::envelope(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        );
        if let Some(allow) = allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    metrics.observe_request(route, method, status, elapsed);
    if let Some(detail) = response.extensions_mut().remove::<error::ServerErrorDetail>() {
        tracing::error!(http.method = %method, http.route = route, http.status = status, duration_ms, error = %detail.0, "request failed: {}", detail.0);
    } else if route == "/ids" || route == "/healthz" || route == "/readyz" {
        // Probes and discovery are frequent and carry nothing to audit.
        tracing::debug!(http.method = %method, http.route = route, http.status = status, duration_ms, "request");
    } else {
        tracing::info!(http.method = %method, http.route = route, http.status = status, duration_ms, "request");
    }
    response
}
