//! `POST /identity/certificate`: issue (or return) a peer's client certificate.
//!
//! Around the issuer: the concurrency bound. Audit, metrics and the failed-authentication limit
//! come from `ObservedIssuer`, which sees every attempt (the limit applies to refused tokens
//! only, after the token was checked: a valid token is never refused because of others' failures).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;

use crate::http::audit::{Claimed, ObservedIssuer};
use crate::http::extract::ApiJson;
use crate::http::protect::Source;
use crate::http::wire::{AwsIdentity, CertificateRequest, CertificateResponse};
use crate::http::{ApiError, AppState};
use crate::identity::{BearerToken, IssueRequest};

/// Runs the issuer and shapes its answer as the reference does: 202 with base64 PEM fields.
pub async fn issue_certificate(
    State(state): State<Arc<AppState>>,
    source: Source,
    body: Result<ApiJson<CertificateRequest>, ApiError>,
) -> Result<(StatusCode, Json<CertificateResponse>), ApiError> {
    let claimed = body
        .as_ref()
        .ok()
        .and_then(|ApiJson(b)| b.cluster.as_ref())
        .map(|c| Claimed::new(&c.cluster_id, &c.cluster_name))
        .unwrap_or_default();
    let issuer = ObservedIssuer::new(&state.issuer, &state.metrics, &state.protection, &source, claimed);
    let body = match body {
        Ok(ApiJson(body)) => body,
        Err(error) => {
            let reason = error.code();
            return Err(issuer.refuse(error, reason));
        }
    };
    if body.cluster.is_none() && body.legacy_cluster_id.is_some() {
        let error = ApiError::InvalidRequest {
            code: "unsupported_request_version",
            message: "this looks like a Liqo v0.3 request (top-level clusterID); send cluster.clusterID and cluster.clusterName".into(),
        };
        return Err(issuer.refuse(error, "unsupported_request_version"));
    }
    let Some(_slot) = state.protection.issuance_slot().await else {
        tracing::warn!(source.address = %source.display(), "every issuance slot stayed busy; answering 503");
        return Err(issuer.refuse(ApiError::Busy, "busy"));
    };

    let cluster = body.cluster.unwrap_or_default();
    let request = IssueRequest {
        unverified_cluster_id: cluster.cluster_id,
        unverified_cluster_name: cluster.cluster_name,
        token: BearerToken::new(body.destination_cluster_token.unwrap_or_default()),
        origin_token: body.origin_cluster_token.map(BearerToken::new),
        csr_base64: body.certificate_signing_request,
    };
    let issued = issuer.issue(request).await?;
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
