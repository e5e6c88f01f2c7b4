//! `POST /identity/certificate/renew`: a peer renews its certificate with a proof of possession
//! of the current one (see `identity::renew`), no token needed.
//!
//! Around the renewer: the failed-authentication limit shared with issuance (a refused proof
//! counts as a failed authentication and, once the source's budget is spent, gets 429 instead
//! of 401; a valid proof is never refused because of others' failures), the
//! concurrency bound, the audit event (target `audit`, `event = "renewal"`) and the
//! `auth_certificate_renewals_total{kind,result}` metric. The answer is the issuance answer's
//! shape with status 200.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;

use crate::http::audit::TARGET;
use crate::http::extract::ApiJson;
use crate::http::protect::{retry_after_secs, Source};
use crate::http::wire::{AwsIdentity, CertificateResponse, RenewalRequest};
use crate::http::{ApiError, AppState};
use crate::identity::{ClusterId, RenewKind, RenewRequest, Renewed};

/// Runs the renewer and shapes its answer.
pub async fn renew_certificate(
    State(state): State<Arc<AppState>>,
    source: Source,
    body: Result<ApiJson<RenewalRequest>, ApiError>,
) -> Result<(StatusCode, Json<CertificateResponse>), ApiError> {
    let observe = Observe { state: &state, source: &source };
    let body = match body {
        Ok(ApiJson(body)) => body,
        Err(error) => return Err(observe.refused(error, None, None)),
    };
    let Some(_slot) = state.protection.issuance_slot().await else {
        tracing::warn!(source.address = %source.display(), "every issuance slot stayed busy; answering 503");
        return Err(observe.refused(ApiError::Busy, None, None));
    };
    let request = RenewRequest { proof: body.proof, csr_base64: body.certificate_signing_request };
    match state.renewer.renew(request).await {
        Ok(renewed) => {
            observe.renewed(&renewed);
            let b64 = base64::engine::general_purpose::STANDARD;
            Ok((
                StatusCode::OK,
                Json(CertificateResponse {
                    namespace: renewed.namespace.to_string(),
                    certificate: b64.encode(renewed.certificate_pem.as_bytes()),
                    api_server_url: renewed.api_server.url,
                    api_server_ca: renewed.api_server.ca_pem.map(|pem| b64.encode(pem.as_bytes())),
                    aws: AwsIdentity::default(),
                }),
            ))
        }
        Err(failure) => {
            if let Some(took) = failure.error.signer_elapsed() {
                state.metrics.observe_signer(state.renewer.signer_kind(), took);
            }
            let mut error = ApiError::from(failure.error);
            if error.status() == StatusCode::UNAUTHORIZED {
                if let Err(wait) = state.protection.record_failure(&source) {
                    error = ApiError::TooManyRequests { retry_after_secs: retry_after_secs(wait) };
                }
            }
            Err(observe.refused(error, failure.kind, failure.cluster.as_ref()))
        }
    }
}

/// Audit and metrics of one renewal request.
struct Observe<'a> {
    state: &'a AppState,
    source: &'a Source,
}

impl Observe<'_> {
    fn renewed(&self, renewed: &Renewed) {
        let signer = self.state.renewer.signer_kind();
        self.state.metrics.observe_renewal(renewed.kind.label(), "ok");
        self.state.metrics.observe_signer(signer, renewed.signer_duration);
        let source = self.source.display();
        let id = &renewed.cluster.id;
        tracing::info!(
            target: TARGET,
            event = "renewal",
            outcome = "renewed",
            kind = renewed.kind.label(),
            cluster.id = %id,
            namespace = %renewed.namespace,
            source.address = %source,
            source.peer = self.source.peer.map(|p| p.to_string()),
            cert.serial = %renewed.certificate.serial,
            cert.previous_serial = %renewed.previous_serial,
            cert.not_after = renewed.certificate.not_after,
            signer.kind = signer,
            "renewal for cluster {id} from {source}: renewed ({})",
            renewed.kind.label()
        );
    }

    fn refused(&self, error: ApiError, kind: Option<RenewKind>, cluster: Option<&ClusterId>) -> ApiError {
        let kind = kind.map_or("unknown", RenewKind::label);
        self.state.metrics.observe_renewal(kind, "error");
        let outcome = if error.status().is_server_error() { "error" } else { "refused" };
        let source = self.source.display();
        let who = cluster.map_or_else(|| "an unverified cluster".to_owned(), |id| format!("cluster {id}"));
        tracing::info!(
            target: TARGET,
            event = "renewal",
            outcome,
            reason = error.code(),
            kind,
            cluster.id = cluster.map(ClusterId::as_str),
            source.address = %source,
            source.peer = self.source.peer.map(|p| p.to_string()),
            signer.kind = self.state.renewer.signer_kind(),
            "renewal for {who} from {source}: {outcome} ({})",
            error.code()
        );
        error
    }
}
