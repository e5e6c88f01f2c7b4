//! `ApiError`: the one place where HTTP statuses are chosen.
//!
//! 4xx are logged by the handler at info/debug; 5xx carry their detail in a response extension
//! and are logged exactly once by the request-logging layer. Source chains never reach clients.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::error_chain;
use crate::http::wire::ErrorBody;
use crate::identity::{IssueError, RenewError};

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECONDS: u64 = 5;
/// Seconds to wait after a 408 (slow body) or a 503 from a full listener.
const RETRY_SOON_SECONDS: u64 = 1;

/// The error a request body yields when it does not arrive within the listener's body read
/// timeout; the body extractor answers it with 408 [`ApiError::BodyTimeout`].
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {timeout:?}")]
pub struct BodyReadTimeout {
    pub timeout: std::time::Duration,
}

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    /// The body is not JSON of the expected shape.
    InvalidJson { detail: String },
    /// A field failed validation.
    InvalidRequest { code: &'static str, message: String },
    /// Missing, malformed, wrong or expired token.
    Unauthorized,
    /// A renewal proof or its certificate was refused (`code` says why).
    RenewalRefused { code: &'static str, message: String },
    /// The renewing cluster has no tenant (or no stored identity) on this provider any more.
    TenantRemoved { cluster: String },
    /// The cluster already holds an identity for another key.
    IdentityExists { cluster: String, namespace: String },
    /// The cluster's tenant namespace exists and is labelled for another cluster (or none).
    NamespaceTaken { cluster: String, namespace: String },
    /// Body over the limit.
    PayloadTooLarge,
    /// The request body did not arrive within `--body-read-timeout`.
    BodyTimeout,
    /// The request's header section is over the limit.
    HeadersTooLarge,
    /// The request line or a header is not valid HTTP/1.1 (found by hyper's parser).
    MalformedRequest,
    /// The request target is longer than the HTTP/1.1 parser accepts.
    UriTooLong,
    /// Every request slot of the listener is taken (`--max-requests-in-flight`).
    Overloaded,
    /// No such route.
    NotFound,
    /// Too many failed attempts from this source.
    TooManyRequests { retry_after_secs: u64 },
    /// Every issuance slot stayed busy for the whole queue wait (`--max-concurrent-issuances`).
    Busy,
    /// A dependency is down; retrying later may work.
    Unavailable { detail: String },
    /// Anything else.
    Internal { code: &'static str, message: &'static str, detail: String },
}

/// Every `code` an error body can carry (kept equal to the enum in `openapi/liqo-auth.yaml` by
/// the contract test).
#[cfg(any(test, feature = "test-support"))]
pub const ERROR_CODES: &[&str] = &[
    "invalid_json",
    "invalid_cluster",
    "invalid_csr",
    "csr_subject_mismatch",
    "unsupported_request_version",
    "invalid_token",
    "identity_exists",
    "invalid_proof",
    "proof_wrong_audience",
    "proof_expired",
    "proof_lifetime_too_long",
    "proof_replayed",
    "certificate_not_current",
    "certificate_expired",
    "tenant_removed",
    "tenant_namespace_taken",
    "payload_too_large",
    "request_timeout",
    "headers_too_large",
    "malformed_request",
    "uri_too_long",
    "not_found",
    "method_not_allowed",
    "rate_limited",
    "busy",
    "unavailable",
    "signer_refused",
    "internal",
];

/// Detail of a 5xx, attached to the response for the logging layer.
#[derive(Debug, Clone)]
pub struct ServerErrorDetail(pub String);

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson { .. } | Self::InvalidRequest { .. } | Self::MalformedRequest => StatusCode::BAD_REQUEST,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::Unauthorized | Self::RenewalRefused { .. } => StatusCode::UNAUTHORIZED,
            Self::TenantRemoved { .. } => StatusCode::FORBIDDEN,
            Self::IdentityExists { .. } | Self::NamespaceTaken { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Busy | Self::Overloaded | Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `code` of the error body (also the audit `reason`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson { .. } => "invalid_json",
            Self::InvalidRequest { code, .. } | Self::Internal { code, .. } | Self::RenewalRefused { code, .. } => code,
            Self::TenantRemoved { .. } => "tenant_removed",
            Self::Unauthorized => "invalid_token",
            Self::IdentityExists { .. } => "identity_exists",
            Self::NamespaceTaken { .. } => "tenant_namespace_taken",
            Self::PayloadTooLarge => "payload_too_large",
            Self::BodyTimeout => "request_timeout",
            Self::HeadersTooLarge => "headers_too_large",
            Self::MalformedRequest => "malformed_request",
            Self::UriTooLong => "uri_too_long",
            Self::NotFound => "not_found",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::Busy | Self::Overloaded => "busy",
            Self::Unavailable { .. } => "unavailable",
        }
    }

    fn body(&self) -> ErrorBody {
        let message = match self {
            Self::InvalidJson { detail } => format!("request body is not valid JSON of the expected shape: {detail}"),
            Self::InvalidRequest { message, .. } => message.clone(),
            Self::Unauthorized => "invalid or expired token".to_owned(),
            Self::RenewalRefused { message, .. } => message.clone(),
            Self::TenantRemoved { cluster } => format!(
                "cluster {cluster} is no longer a tenant of this provider (it was unpeered); peer again with a new token"
            ),
            Self::IdentityExists { cluster, namespace } => format!(
                    "cluster {cluster} already holds an identity issued for another key; send the same certificate signing request again to get it back, send a new one with the originClusterToken of the first request, or ask the provider's operator to reset it (liqo-auth tenant remove {cluster}, or delete Secret liqo-remote-certificate in namespace {namespace})"
            ),
            Self::NamespaceTaken { cluster, namespace } => format!(
                "the tenant namespace {namespace} for cluster {cluster} already exists and belongs to another cluster; ask the provider's operator to resolve it (see \"Tenant namespace collisions\" in the liqo-auth README)"
            ),
            Self::PayloadTooLarge => "request body is larger than 64 KiB".to_owned(),
            Self::BodyTimeout => "the request body did not arrive in time; retry".to_owned(),
            Self::HeadersTooLarge => "request header fields are larger than 16 KiB".to_owned(),
            Self::MalformedRequest => "the request line or a header is not valid HTTP/1.1".to_owned(),
            Self::UriTooLong => "the request target is too long".to_owned(),
            Self::NotFound => "no such route".to_owned(),
            Self::TooManyRequests { .. } => "too many failed attempts; retry later".to_owned(),
            Self::Busy => "too many identity requests in progress; retry later".to_owned(),
            Self::Overloaded => "too many requests in progress; retry later".to_owned(),
            Self::Unavailable { .. } => "temporarily unavailable; retry later".to_owned(),
            Self::Internal { message, .. } => (*message).to_owned(),
        };
        ErrorBody { code: self.code().to_owned(), message }
    }

    /// The error for a status hyper's HTTP/1.1 parser answers by itself (400, 414, 431), before
    /// any request reaches the router.
    pub fn for_parser_status(status: u16) -> Option<Self> {
        match status {
            400 => Some(Self::MalformedRequest),
            414 => Some(Self::UriTooLong),
            431 => Some(Self::HeadersTooLarge),
            _ => None,
        }
    }

    /// This error as a whole HTTP/1.1 response that closes the connection, for the listener to
    /// send in place of hyper's empty-bodied parse-error answer.
    pub fn http1_bytes(&self) -> Vec<u8> {
        let body = serde_json::to_vec(&self.body()).expect("plain struct serialises");
        let status = self.status();
        let mut bytes = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-content-type-options: nosniff\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }

    /// Builds the JSON error body for a status the router produced itself (405).
    pub fn envelope(status: StatusCode, code: &str, message: &str) -> Response {
        (status, Json(ErrorBody { code: code.to_owned(), message: message.to_owned() })).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        match &self {
            Self::Unavailable { detail } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
                response.extensions_mut().insert(ServerErrorDetail(detail.clone()));
            }
            Self::Internal { detail, .. } => {
                response.extensions_mut().insert(ServerErrorDetail(detail.clone()));
            }
            Self::Busy => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            Self::Overloaded | Self::BodyTimeout => {
                // A client that could not send its body in time may have met a congested link
                // or a server that read slowly under load: retrying soon is reasonable.
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_SOON_SECONDS));
            }
            Self::TooManyRequests { retry_after_secs } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

/// Whether the signer itself said no (a denied or failed CSR), rather than being unreachable.
fn signer_refused(error: &crate::identity::port::SignerError) -> bool {
    use crate::identity::port::SignerError;
    matches!(error, SignerError::Denied { .. } | SignerError::Failed { .. })
}

impl ApiError {
    /// The answer to a failure on this side (issuance or renewal alike): 503 when retrying may
    /// help, `signer_refused` when the signer said no, else `internal`; the chain goes to the log.
    fn server_side(error: &(dyn std::error::Error + 'static), transient: bool, signer_refused: bool) -> Self {
        let detail = error_chain(error);
        if transient {
            Self::Unavailable { detail }
        } else if signer_refused {
            Self::Internal {
                code: "signer_refused",
                message: "the cluster's certificate signer refused the request",
                detail,
            }
        } else {
            Self::Internal { code: "internal", message: "internal error", detail }
        }
    }
}

impl From<IssueError> for ApiError {
    fn from(error: IssueError) -> Self {
        let transient = error.is_transient();
        match error {
            IssueError::Unauthenticated(_) => Self::Unauthorized,
            IssueError::InvalidCluster(e) => Self::InvalidRequest { code: "invalid_cluster", message: e.to_string() },
            IssueError::InvalidCsr(e) => Self::InvalidRequest { code: "invalid_csr", message: e.to_string() },
            IssueError::CommonNameMismatch => Self::InvalidRequest {
                code: "csr_subject_mismatch",
                message: "the certificate signing request common name must equal cluster.clusterID".into(),
            },
            IssueError::IdentityExists { cluster, namespace } => {
                Self::IdentityExists { cluster: cluster.id.to_string(), namespace }
            }
            IssueError::Store {
                cluster,
                source: crate::identity::port::StoreError::NamespaceTaken { namespace, .. },
            } => Self::NamespaceTaken { cluster: cluster.id.to_string(), namespace },
            other => {
                let refused = matches!(&other, IssueError::Sign { source, .. } if signer_refused(source));
                Self::server_side(&other, transient, refused)
            }
        }
    }
}

impl From<RenewError> for ApiError {
    fn from(error: RenewError) -> Self {
        let refused = |code: &'static str, message: String| Self::RenewalRefused { code, message };
        let transient = error.is_transient();
        match error {
            RenewError::InvalidProof(proof) => refused(proof.code(), proof.to_string()),
            RenewError::Replayed => refused(
                "proof_replayed",
                "this renewal proof was used before; sign a new one (new jti) for every request".into(),
            ),
            RenewError::NotCurrent { .. } => refused(
                "certificate_not_current",
                "the certificate in the proof is not the one this provider holds for the cluster".into(),
            ),
            RenewError::CertificateExpired { .. } => refused(
                "certificate_expired",
                "the certificate in the proof has expired; peer again with a new token".into(),
            ),
            RenewError::TenantRemoved { cluster } => Self::TenantRemoved { cluster: cluster.to_string() },
            RenewError::InvalidCsr(e) => Self::InvalidRequest { code: "invalid_csr", message: e.to_string() },
            RenewError::CommonNameMismatch => Self::InvalidRequest {
                code: "csr_subject_mismatch",
                message: "the certificate signing request common name must equal the renewing cluster's ID".into(),
            },
            other => {
                let refused = matches!(&other, RenewError::Sign { source, .. } if signer_refused(source));
                Self::server_side(&other, transient, refused)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_answers_with_a_documented_code() {
        let errors = [
            ApiError::InvalidJson { detail: String::new() },
            ApiError::Unauthorized,
            ApiError::TenantRemoved { cluster: "c".into() },
            ApiError::from(RenewError::Replayed),
            ApiError::IdentityExists { cluster: "c".into(), namespace: "n".into() },
            ApiError::NamespaceTaken { cluster: "c".into(), namespace: "n".into() },
            ApiError::PayloadTooLarge,
            ApiError::BodyTimeout,
            ApiError::HeadersTooLarge,
            ApiError::MalformedRequest,
            ApiError::UriTooLong,
            ApiError::Overloaded,
            ApiError::NotFound,
            ApiError::TooManyRequests { retry_after_secs: 1 },
            ApiError::Busy,
            ApiError::Unavailable { detail: String::new() },
        ];
        for error in errors {
            assert!(ERROR_CODES.contains(&error.code()), "{error:?}");
        }
        let busy = ApiError::Busy.into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(busy.headers().contains_key(header::RETRY_AFTER));
        assert!(busy.extensions().get::<ServerErrorDetail>().is_none(), "a full queue is not a server error to log");
    }
}
