//! `POST /identity/certificate`: issue (or return) a peer's client certificate (spec 1.4).
//!
//! Around the issuer: the failed-authentication limit (checked before any token work), the
//! concurrency bound, one audit event per attempt and the issuance metrics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;

use crate::http::audit::{AuditEvent, AuditOutcome};
use crate::http::extract::ApiJson;
use crate::http::protect::{retry_after_secs, Source};
use crate::http::wire::{AwsIdentity, CertificateRequest, CertificateResponse};
use crate::http::{ApiError, AppState};
use crate::identity::{BearerToken, IssueError, IssueRequest, Outcome};

/// Longest claimed cluster ID or name copied into an audit event (a DNS label is at most 63).
const MAX_CLAIMED_LEN: usize = 253;

/// Runs the issuer and shapes its answer as the reference does: 202 with base64 PEM fields.
pub async fn issue_certificate(
    State(state): State<AppState>,
    source: Source,
    body: Result<ApiJson<CertificateRequest>, ApiError>,
) -> Result<(StatusCode, Json<CertificateResponse>), ApiError> {
    let signer = state.issuer.signer_kind();
    let claimed = body.as_ref().ok().and_then(|ApiJson(b)| b.cluster.as_ref());
    let claimed_id = claimed.map(|c| truncate(&c.cluster_id).to_owned());
    let claimed_name = claimed.map(|c| truncate(&c.cluster_name).to_owned());
    let refuse = |error: ApiError, reason: &str| {
        let outcome = if error.status().is_server_error() { AuditOutcome::Error } else { AuditOutcome::Refused };
        state.metrics.observe_issuance(signer, outcome.label());
        AuditEvent {
            outcome,
            reason: Some(reason),
            cluster: None,
            claimed_id: claimed_id.as_deref(),
            claimed_name: claimed_name.as_deref(),
            source: &source,
            certificate: None,
            token: None,
            signer,
        }
        .emit();
        error
    };

    // Before any token work: a source that used up its failed attempts waits.
    if let Err(wait) = state.protection.check_failures(&source) {
        return Err(refuse(ApiError::TooManyRequests { retry_after_secs: retry_after_secs(wait) }, "rate_limited"));
    }
    let body = match body {
        Ok(ApiJson(body)) => body,
        Err(error) => {
            let reason = error.code();
            return Err(refuse(error, reason));
        }
    };
    if body.cluster.is_none() && body.legacy_cluster_id.is_some() {
        return Err(refuse(ApiError::InvalidRequest {
            code: "unsupported_request_version",
            message: "this looks like a Liqo v0.3 request (top-level clusterID); send cluster.clusterID and cluster.clusterName".into(),
        }, "unsupported_request_version"));
    }
    let Some(_slot) = state.protection.issuance_slot().await else {
        tracing::warn!(source.address = %source.display(), "every issuance slot stayed busy; answering 503");
        return Err(refuse(ApiError::Busy, "busy"));
    };

    let cluster = body.cluster.unwrap_or_default();
    let request = IssueRequest {
        unverified_cluster_id: cluster.cluster_id,
        unverified_cluster_name: cluster.cluster_name,
        token: BearerToken::new(body.destination_cluster_token.unwrap_or_default()),
        origin_token: body.origin_cluster_token.map(BearerToken::new),
        csr_base64: body.certificate_signing_request,
    };
    match state.issuer.issue(request).await {
        Ok(issued) => {
            let outcome = match issued.outcome {
                Outcome::Issued => AuditOutcome::Issued,
                Outcome::Repeated => AuditOutcome::Repeated,
            };
            state.metrics.observe_issuance(signer, outcome.label());
            if let Some(took) = issued.signer_duration {
                state.metrics.observe_signer(signer, took);
            }
            AuditEvent {
                outcome,
                reason: None,
                cluster: Some(&issued.cluster),
                claimed_id: None,
                claimed_name: None,
                source: &source,
                certificate: Some(&issued.certificate),
                token: Some(&issued.token_kind),
                signer,
            }
            .emit();
            let b64 = base64::engine::general_purpose::STANDARD;
            Ok((
                StatusCode::ACCEPTED,
                Json(CertificateResponse {
                    namespace: issued.namespace.to_string(),
                    certificate: b64.encode(issued.certificate_pem.as_bytes()),
                    api_server_url: issued.api_server.url,
                    api_server_ca: issued.api_server.ca_pem.map(|pem| b64.encode(pem.as_bytes())),
                    aws: AwsIdentity::default(),
                }),
            ))
        }
        Err(error) => {
            if let IssueError::Sign { elapsed, .. } = &error {
                state.metrics.observe_signer(signer, *elapsed);
            }
            let auth_reason = match &error {
                IssueError::Unauthenticated(reason) => {
                    state.metrics.observe_token_failure(reason.reason());
                    state.protection.record_failure(&source);
                    Some(reason.reason())
                }
                _ => None,
            };
            // Past validation the claimed values are the cluster's: the audit names them so.
            let validated = !matches!(
                error,
                IssueError::Unauthenticated(_)
                    | IssueError::TokenState(_)
                    | IssueError::InvalidCluster(_)
                    | IssueError::InvalidCsr(_)
                    | IssueError::CommonNameMismatch
            );
            let error = ApiError::from(error);
            let outcome = if error.status().is_server_error() { AuditOutcome::Error } else { AuditOutcome::Refused };
            state.metrics.observe_issuance(signer, outcome.label());
            let validated_cluster = validated
                .then(|| {
                    crate::identity::ClusterIdentity::parse_remote(
                        claimed_id.as_deref().unwrap_or_default(),
                        claimed_name.as_deref().unwrap_or_default(),
                    )
                    .ok()
                })
                .flatten();
            AuditEvent {
                outcome,
                reason: Some(auth_reason.unwrap_or(error.code())),
                cluster: validated_cluster.as_ref(),
                claimed_id: validated_cluster.is_none().then_some(claimed_id.as_deref()).flatten(),
                claimed_name: validated_cluster.is_none().then_some(claimed_name.as_deref()).flatten(),
                source: &source,
                certificate: None,
                token: None,
                signer,
            }
            .emit();
            Err(error)
        }
    }
}

/// At most `MAX_CLAIMED_LEN` bytes of an untrusted value, cut on a character boundary.
fn truncate(text: &str) -> &str {
    if text.len() <= MAX_CLAIMED_LEN {
        return text;
    }
    let mut end = MAX_CLAIMED_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
