//! `POST /identity/certificate`: issue (or return) a peer's client certificate (spec 1.4).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;

use crate::http::extract::ApiJson;
use crate::http::wire::{AwsIdentity, CertificateRequest, CertificateResponse};
use crate::http::{ApiError, AppState};
use crate::identity::{BearerToken, IssueError, IssueRequest};

/// Runs the issuer and shapes its answer as the reference does: 202 with base64 PEM fields.
pub async fn issue_certificate(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CertificateRequest>,
) -> Result<(StatusCode, Json<CertificateResponse>), ApiError> {
    if body.cluster.is_none() && body.legacy_cluster_id.is_some() {
        return Err(ApiError::InvalidRequest {
            code: "unsupported_request_version",
            message: "this looks like a Liqo v0.3 request (top-level clusterID); send cluster.clusterID and cluster.clusterName".into(),
        });
    }
    let cluster = body.cluster.unwrap_or_default();
    let request = IssueRequest {
        unverified_cluster_id: cluster.cluster_id,
        unverified_cluster_name: cluster.cluster_name,
        token: BearerToken::new(body.destination_cluster_token.unwrap_or_default()),
        origin_token: body.origin_cluster_token.map(BearerToken::new),
        csr_base64: body.certificate_signing_request,
    };
    let claimed = request.unverified_cluster_id.clone();
    match state.issuer.issue(request).await {
        Ok(issued) => {
            tracing::info!(
                cluster.id = %issued.cluster.id,
                cluster.name = %issued.cluster.name,
                namespace = %issued.namespace,
                cert.serial = %issued.certificate.serial,
                cert.not_after = issued.certificate.not_after,
                outcome = issued.outcome.label(),
                token.kind = issued.token_kind.label(),
                signer.kind = state.issuer.signer_kind(),
                "{} certificate for cluster {}", issued.outcome.label(), issued.cluster.id
            );
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
            match &error {
                IssueError::Unauthenticated(reason) => {
                    tracing::info!(cluster.claimed_id = %claimed, reason = reason.reason(), "refused identity request: {reason}")
                }
                e if !e.is_transient()
                    && !matches!(
                        e,
                        IssueError::Sign { .. }
                            | IssueError::Store { .. }
                            | IssueError::BadCertificate { .. }
                            | IssueError::TokenState(_)
                    ) =>
                {
                    tracing::info!(cluster.claimed_id = %claimed, "refused identity request: {e}")
                }
                _ => {}
            }
            Err(error.into())
        }
    }
}
