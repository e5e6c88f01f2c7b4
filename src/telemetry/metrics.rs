//! `Metrics`: the `prometheus-client` registry and the service's metric families.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Content type of the OpenMetrics text exposition `prometheus-client` writes.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The service's metrics: cheap to clone (one `Arc`), safe to record from any task.
#[derive(Clone)]
pub struct Metrics(Arc<MetricsInner>);

struct MetricsInner {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    certificates: Family<CertificateLabels, Counter>,
    token_failures: Family<ReasonLabels, Counter>,
    renewals: Family<RenewalLabels, Counter>,
    signer_duration: Family<SignerLabels, Histogram, fn() -> Histogram>,
    serving_expiry: Gauge<i64, AtomicI64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    signer: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewalLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignerLabels {
    signer: &'static str,
}

impl Metrics {
    /// A fresh registry with every metric registered (and no samples yet).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register("auth_http_requests", "HTTP requests on the public listener", http_requests.clone());
        let http_duration: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.5, 12)));
        registry.register(
            "auth_http_request_duration_seconds",
            "Time to answer a request on the public listener, by route",
            http_duration.clone(),
        );
        let certificates = Family::<CertificateLabels, Counter>::default();
        registry.register(
            "auth_certificates_issued",
            "Issuance attempts by signer and result (issued, repeated, refused, error)",
            certificates.clone(),
        );
        let token_failures = Family::<ReasonLabels, Counter>::default();
        registry.register("auth_token_failures", "Refused tokens by reason", token_failures.clone());
        let renewals = Family::<RenewalLabels, Counter>::default();
        registry.register(
            "auth_certificate_renewals",
            "Renewal attempts by kind (renew: same key, rekey: new key, unknown: refused before the request was understood) and result (ok, error)",
            renewals.clone(),
        );
        let signer_duration: Family<SignerLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 14)));
        registry.register(
            "auth_signer_duration_seconds",
            "Time the signer took to sign one certificate, failures included",
            signer_duration.clone(),
        );
        let serving_expiry = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "auth_serving_certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate in service, Unix seconds (0 when serving plain HTTP)",
            serving_expiry.clone(),
        );
        Self(Arc::new(MetricsInner {
            registry,
            http_requests,
            http_duration,
            certificates,
            token_failures,
            renewals,
            signer_duration,
            serving_expiry,
        }))
    }

    /// Records one answered request. `route` is the route template or `unmatched` (a fixed set:
    /// the labels cost no allocation per request).
    pub fn observe_request(&self, route: &'static str, method: &Method, status: u16, elapsed: Duration) {
        let labels = HttpLabels { route, method: method_label(method), status };
        self.0.http_requests.get_or_create(&labels).inc();
        self.0.http_duration.get_or_create(&RouteLabels { route }).observe(elapsed.as_secs_f64());
    }

    /// Records one issuance attempt; `result` is `issued`, `repeated`, `refused` or `error`.
    pub fn observe_issuance(&self, signer: &'static str, result: &'static str) {
        self.0.certificates.get_or_create(&CertificateLabels { signer, result }).inc();
    }

    /// Records a refused token; `reason` is `AuthError::reason()`.
    pub fn observe_token_failure(&self, reason: &'static str) {
        self.0.token_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Records one renewal attempt: `kind` is `renew`, `rekey` or `unknown`, `result` `ok` or `error`.
    pub fn observe_renewal(&self, kind: &'static str, result: &'static str) {
        self.0.renewals.get_or_create(&RenewalLabels { kind, result }).inc();
    }

    /// Records how long one signer call took.
    pub fn observe_signer(&self, signer: &'static str, elapsed: Duration) {
        self.0.signer_duration.get_or_create(&SignerLabels { signer }).observe(elapsed.as_secs_f64());
    }

    /// Sets the notAfter (Unix seconds) of the serving certificate in service.
    pub fn set_serving_certificate_expiry(&self, not_after: i64) {
        self.0.serving_expiry.set(not_after);
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.0.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A bounded label for a method: unknown methods share `other`, so a client cannot create
/// label values at will.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
