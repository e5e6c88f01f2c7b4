//! `KubeCsrSigner`: signs through the `certificates.k8s.io/v1` CertificateSigningRequest API
//! with the `kubernetes.io/kube-apiserver-client` signer, approving its own requests.
//!
//! - One CSR object per (cluster, CSR) under a deterministic name, so retries and replicas never
//!   create two: a second request for the same pair continues from the object that exists.
//! - `expirationSeconds` comes from `--certificate-ttl`, so the cluster signer issues the
//!   lifetime asked for instead of its default of a year.
//! - The wait is a watch bounded by `--signing-timeout`; `Denied`/`Failed` end it at once, and a
//!   refused object is removed so a retry starts clean.
//! - The object is deleted once the certificate is stored (`forget`); what is left behind (a
//!   timed-out wait) is picked up by the next identical request, or garbage-collected by
//!   Kubernetes within an hour.
//!
//! Storing the certificate is the caller's; this adapter only turns a CSR into a certificate.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{wait, watcher};
use kube::Api;
use sha2::{Digest, Sha256};

use crate::adapter::kube::{KubeCtx, KubeFailure, LABEL_CLUSTER_ID, LABEL_REMOTE_TENANT_CSR};
use crate::identity::port::{SignRequest, SignedCertificate, Signer, SignerError};
use crate::retry::{retry, RetryPolicy};

/// The signer Kubernetes uses for client certificates of the API server.
pub const KUBE_APISERVER_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The approval reason and message Liqo's own auth service writes, so operators and tools that
/// look for them see the same approval whichever implementation approved.
pub const APPROVAL_REASON: &str = "IdentityManagerApproval";
pub const APPROVAL_MESSAGE: &str = "This CSR was approved by Liqo Identity Manager";

/// Restarts of the wait after its watch broke (410 Gone after a compaction, a dropped stream).
/// Each restart lists the object again, so nothing is missed; the number of restarts is not
/// bounded here because the whole wait is bounded by the signing timeout.
const WATCH_RESTART: RetryPolicy = RetryPolicy {
    min_delay: Duration::from_millis(50),
    max_delay: Duration::from_secs(1),
    max_retries: usize::MAX,
    total: None,
};

/// Signs with the cluster's CSR API.
#[derive(Clone)]
pub struct KubeCsrSigner {
    ctx: KubeCtx,
    timeout: Duration,
}

impl KubeCsrSigner {
    /// A signer waiting at most `timeout` for each certificate.
    pub fn new(ctx: KubeCtx, timeout: Duration) -> Self {
        Self { ctx, timeout }
    }

    fn api(&self) -> Api<CertificateSigningRequest> {
        Api::all(self.ctx.client.clone())
    }

    /// Approves `csr` unless it is approved, issued or refused already. The approval is a
    /// replace carrying the `resourceVersion` that was read, so it fails with 409 Conflict when
    /// the signer or another replica changed the object meanwhile; the next attempt reads it
    /// again, and usually finds it approved by the other replica.
    async fn approve(&self, csr: CertificateSigningRequest) -> Result<CertificateSigningRequest, KubeFailure> {
        let name = csr.metadata.name.clone().unwrap_or_default();
        // The first attempt uses the object the caller just created or read; later ones re-read.
        let fresh = Mutex::new(Some(csr));
        let (this, name, fresh) = (self, name.as_str(), &fresh);
        retry(
            &RetryPolicy::CONFLICT,
            move || async move {
                let given = fresh.lock().unwrap_or_else(PoisonError::into_inner).take();
                let csr = match given {
                    Some(csr) => csr,
                    None => {
                        this.ctx
                            .call(&format!("reading CertificateSigningRequest {name}"), this.api().get(name))
                            .await?
                    }
                };
                if is_approved(&csr) || is_settled(&csr) {
                    return Ok(csr);
                }
                let mut conditions = csr.status.and_then(|status| status.conditions).unwrap_or_default();
                conditions.push(CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    reason: Some(APPROVAL_REASON.into()),
                    message: Some(APPROVAL_MESSAGE.into()),
                    last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                    last_transition_time: None,
                });
                // A merge patch replaces the whole conditions list, so it carries the
                // resourceVersion it was computed from: if the signer wrote a condition
                // meanwhile, the API server answers 409 and the next try re-reads, instead of
                // the approval erasing a Denied or Failed.
                let patch = serde_json::json!({
                    "metadata": { "resourceVersion": csr.metadata.resource_version },
                    "status": { "conditions": conditions },
                });
                this.ctx
                    .call(
                        &format!("approving CertificateSigningRequest {name}"),
                        this.api().patch_approval(name, &PatchParams::default(), &Patch::Merge(&patch)),
                    )
                    .await
            },
            |failure| matches!(failure, KubeFailure::Conflict { .. }),
            |_| None,
        )
        .await
    }

    /// Waits until the object holds a certificate or is refused; `None` when it was deleted
    /// meanwhile. Not bounded here: the caller wraps it in the signing timeout.
    async fn await_settled(&self, name: &str) -> Result<Option<CertificateSigningRequest>, SignerError> {
        let settled = |csr: Option<&CertificateSigningRequest>| csr.is_none_or(is_settled);
        retry(
            &WATCH_RESTART,
            || wait::await_condition(self.api(), name, settled),
            // A watch that broke after it started: a fresh list and watch continue the wait.
            // Failing to list or to start watching is an answer of the API server: give up.
            |error| {
                matches!(
                    error,
                    wait::Error::ProbeFailed(watcher::Error::WatchError(_) | watcher::Error::WatchFailed(_))
                )
            },
            |_| None,
        )
        .await
        .map_err(|error| wait_failure(name, error))
    }

    /// Removes a refused object so a later identical request gets a fresh one.
    async fn refused(&self, name: &str, refusal: Refusal) -> SignerError {
        if let Err(failure) = self
            .ctx
            .call(
                &format!("deleting refused CertificateSigningRequest {name}"),
                self.api().delete(name, &DeleteParams::default()),
            )
            .await
        {
            tracing::warn!(csr.name = name, error = %failure, "could not delete a refused CertificateSigningRequest");
        }
        match refusal {
            Refusal::Denied(reason) => SignerError::Denied { name: name.into(), reason },
            Refusal::Failed(reason) => SignerError::Failed { name: name.into(), reason },
        }
    }
}

#[async_trait::async_trait]
impl Signer for KubeCsrSigner {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn sign(&self, request: SignRequest<'_>) -> Result<SignedCertificate, SignerError> {
        let name = object_name(request);
        let desired = CertificateSigningRequest {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (LABEL_REMOTE_TENANT_CSR.to_owned(), "true".to_owned()),
                    (LABEL_CLUSTER_ID.to_owned(), request.cluster.id.to_string()),
                ])),
                ..ObjectMeta::default()
            },
            spec: CertificateSigningRequestSpec {
                request: ByteString(request.csr.to_pem().into_bytes()),
                signer_name: KUBE_APISERVER_CLIENT_SIGNER.into(),
                usages: Some(vec!["digital signature".into(), "key encipherment".into(), "client auth".into()]),
                // The API server refuses durations under ten minutes.
                expiration_seconds: Some(i32::try_from(request.ttl.as_secs()).unwrap_or(i32::MAX).max(600)),
                ..CertificateSigningRequestSpec::default()
            },
            status: None,
        };
        let current = match self
            .ctx
            .call(
                &format!("creating CertificateSigningRequest {name}"),
                self.api().create(&PostParams::default(), &desired),
            )
            .await
        {
            Ok(created) => created,
            // A previous attempt (or another replica) created it: continue from where it is.
            Err(failure) if failure.is_already_exists() => self
                .ctx
                .call(&format!("reading CertificateSigningRequest {name}"), self.api().get(&name))
                .await
                .map_err(signer_error)?,
            Err(failure) => return Err(signer_error(failure)),
        };
        let approved = self.approve(current).await.map_err(signer_error)?;
        let settled = if is_settled(&approved) {
            Some(approved)
        } else {
            match tokio::time::timeout(self.timeout, self.await_settled(&name)).await {
                Ok(result) => result?,
                // The approved object stays: the next identical request picks its certificate up.
                Err(_) => return Err(SignerError::NotIssued { name, waited: self.timeout }),
            }
        };
        let Some(csr) = settled else {
            return Err(SignerError::Failed {
                name,
                reason: "the CertificateSigningRequest was deleted while waiting".into(),
            });
        };
        let pem = match (certificate_of(&csr), refusal_of(&csr)) {
            (Some(pem), _) => pem,
            (None, Some(refusal)) => return Err(self.refused(&name, refusal).await),
            (None, None) => {
                return Err(SignerError::Failed {
                    name,
                    reason: "the wait ended with neither a certificate nor a refusal".into(),
                })
            }
        };
        Ok(SignedCertificate { pem })
    }

    async fn forget(&self, request: SignRequest<'_>) {
        let name = object_name(request);
        match self
            .ctx
            .call(
                &format!("deleting CertificateSigningRequest {name}"),
                self.api().delete(&name, &DeleteParams::default()),
            )
            .await
        {
            Ok(_) => {}
            Err(failure) if failure.is_not_found() => {}
            Err(failure) => {
                tracing::warn!(csr.name = %name, error = %failure, "could not delete a used CertificateSigningRequest; Kubernetes garbage-collects it within an hour")
            }
        }
    }
}

/// `liqo-identity-<16 hex of sha256(cluster ID, CSR DER)>`: the same request always maps to
/// the same object.
pub fn object_name(request: SignRequest<'_>) -> String {
    let mut digest = Sha256::new();
    digest.update(request.cluster.id.as_str().as_bytes());
    digest.update([0]);
    digest.update(request.csr.der());
    format!("liqo-identity-{}", hex::encode(&digest.finalize()[..8]))
}

enum Refusal {
    Denied(String),
    Failed(String),
}

/// True once the object holds a certificate or is refused: nothing more will happen to it.
fn is_settled(csr: &CertificateSigningRequest) -> bool {
    certificate_of(csr).is_some() || refusal_of(csr).is_some()
}

fn is_approved(csr: &CertificateSigningRequest) -> bool {
    conditions(csr).any(|c| c.type_ == "Approved" && c.status == "True")
}

fn refusal_of(csr: &CertificateSigningRequest) -> Option<Refusal> {
    conditions(csr).find_map(|c| {
        let reason = [c.reason.clone(), c.message.clone()].into_iter().flatten().collect::<Vec<_>>().join(": ");
        match c.type_.as_str() {
            "Denied" if c.status == "True" => Some(Refusal::Denied(reason)),
            "Failed" if c.status == "True" => Some(Refusal::Failed(reason)),
            _ => None,
        }
    })
}

fn conditions(csr: &CertificateSigningRequest) -> impl Iterator<Item = &CertificateSigningRequestCondition> {
    csr.status.iter().flat_map(|s| s.conditions.iter().flatten())
}

fn certificate_of(csr: &CertificateSigningRequest) -> Option<String> {
    let bytes = csr.status.as_ref()?.certificate.as_ref()?;
    let pem = String::from_utf8(bytes.0.clone()).ok()?;
    (!pem.is_empty()).then_some(pem)
}

fn signer_error(failure: KubeFailure) -> SignerError {
    match failure {
        KubeFailure::Unavailable { operation, source } => SignerError::Unavailable { operation, source },
        KubeFailure::Conflict { operation } => {
            SignerError::Unavailable { operation, source: "the object was modified concurrently".into() }
        }
        other => SignerError::Api { operation: other.to_string(), source: Box::new(other) },
    }
}

/// A wait that ended without an answer: an API failure, classified like every other call.
fn wait_failure(name: &str, error: wait::Error) -> SignerError {
    let wait::Error::ProbeFailed(error) = error;
    let (operation, source) = match error {
        watcher::Error::InitialListFailed(source) => (format!("listing CertificateSigningRequest {name}"), source),
        watcher::Error::WatchStartFailed(source) | watcher::Error::WatchFailed(source) => {
            (format!("watching CertificateSigningRequest {name}"), source)
        }
        watcher::Error::WatchError(status) => {
            (format!("watching CertificateSigningRequest {name}"), kube::Error::Api(status))
        }
        other @ watcher::Error::NoResourceVersion => {
            return SignerError::Api {
                operation: format!("watching CertificateSigningRequest {name}"),
                source: Box::new(other),
            }
        }
    };
    signer_error(KubeFailure::classify(operation, source))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus;

    use super::*;

    fn csr_with(conditions: &[(&str, &str)], certificate: Option<&str>) -> CertificateSigningRequest {
        CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                certificate: certificate.map(|pem| ByteString(pem.as_bytes().to_vec())),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(type_, status)| CertificateSigningRequestCondition {
                            type_: (*type_).into(),
                            status: (*status).into(),
                            reason: Some("Because".into()),
                            ..CertificateSigningRequestCondition::default()
                        })
                        .collect(),
                ),
            }),
            ..CertificateSigningRequest::default()
        }
    }

    #[test]
    fn the_wait_ends_on_a_certificate_or_a_refusal_and_not_on_approval_alone() {
        assert!(!is_settled(&CertificateSigningRequest::default()));
        assert!(!is_settled(&csr_with(&[("Approved", "True")], None)));
        assert!(!is_settled(&csr_with(&[("Approved", "True")], Some(""))), "an empty certificate is none");
        assert!(is_settled(&csr_with(&[("Approved", "True")], Some("-----BEGIN CERTIFICATE-----"))));
        assert!(is_settled(&csr_with(&[("Denied", "True")], None)));
        assert!(is_settled(&csr_with(&[("Approved", "True"), ("Failed", "True")], None)));
        assert!(!is_settled(&csr_with(&[("Failed", "False")], None)));
    }

    #[test]
    fn a_refusal_names_its_kind_and_reason() {
        assert!(
            matches!(refusal_of(&csr_with(&[("Denied", "True")], None)), Some(Refusal::Denied(r)) if r == "Because")
        );
        assert!(
            matches!(refusal_of(&csr_with(&[("Failed", "True")], None)), Some(Refusal::Failed(r)) if r == "Because")
        );
    }

    #[test]
    fn a_broken_watch_is_unavailable_and_a_refused_list_names_the_operation() {
        let reset = kube::Error::ReadEvents(std::io::Error::other("connection reset"));
        let broken = wait::Error::ProbeFailed(watcher::Error::WatchFailed(reset));
        match wait_failure("csr-1", broken) {
            SignerError::Unavailable { operation, .. } => {
                assert_eq!(operation, "watching CertificateSigningRequest csr-1")
            }
            other => panic!("{other:?}"),
        }
        let status = kube::core::Status::failure("forbidden", "Forbidden").with_code(403);
        let forbidden = wait::Error::ProbeFailed(watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status))));
        match wait_failure("csr-1", forbidden) {
            SignerError::Api { operation, .. } => {
                assert!(operation.contains("listing CertificateSigningRequest csr-1"))
            }
            other => panic!("{other:?}"),
        }
    }
}
