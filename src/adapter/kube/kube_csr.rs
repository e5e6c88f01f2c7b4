//! `KubeCsrSigner`: signs through the `certificates.k8s.io/v1` CSR API (spec 3.4, 3.5).
//!
//! Fixes of spec 11: one CSR object per (cluster, CSR) with a deterministic name, so retries and
//! replicas never create two (R7); `expirationSeconds` set from `--certificate-ttl` (S11);
//! `Denied`/`Failed` end the wait at once and the object is removed so a retry starts clean; the
//! wait is a watch bounded by `--signing-timeout` (R8); the object is deleted once the
//! certificate is stored.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ObjectMeta, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use crate::adapter::kube::{call, KubeFailure, LABEL_CLUSTER_ID, LABEL_REMOTE_TENANT_CSR};
use crate::identity::port::{SignRequest, SignedCertificate, Signer, SignerError};

/// The signer Kubernetes uses for client certificates of the API server.
pub const KUBE_APISERVER_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The reference's approval reason and message (spec 3.5).
pub const APPROVAL_REASON: &str = "IdentityManagerApproval";
pub const APPROVAL_MESSAGE: &str = "This CSR was approved by Liqo Identity Manager";

/// Signs with the cluster's CSR API.
#[derive(Clone)]
pub struct KubeCsrSigner {
    client: Client,
    timeout: Duration,
}

impl KubeCsrSigner {
    /// A signer waiting at most `timeout` for each certificate.
    pub fn new(client: Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }

    fn api(&self) -> Api<CertificateSigningRequest> {
        Api::all(self.client.clone())
    }

    async fn approve(&self, mut csr: CertificateSigningRequest) -> Result<CertificateSigningRequest, KubeFailure> {
        let name = csr.metadata.name.clone().unwrap_or_default();
        for _ in 0..3 {
            if is_approved(&csr) || certificate_of(&csr).is_some() || refusal_of(&csr).is_some() {
                return Ok(csr);
            }
            let status = csr.status.get_or_insert_with(Default::default);
            status.conditions.get_or_insert_with(Vec::new).push(CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some(APPROVAL_REASON.into()),
                message: Some(APPROVAL_MESSAGE.into()),
                last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                last_transition_time: None,
            });
            match call(
                &format!("approving CertificateSigningRequest {name}"),
                self.api().replace_subresource("approval", &name, &PostParams::default(), &csr),
            )
            .await
            {
                Ok(approved) => return Ok(approved),
                // Modified meanwhile (the signer or another replica): read it again.
                Err(KubeFailure::Conflict { .. }) => {
                    csr = call(&format!("reading CertificateSigningRequest {name}"), self.api().get(&name)).await?
                }
                Err(failure) => return Err(failure),
            }
        }
        Ok(csr)
    }

    /// Watches the object until it holds a certificate or is refused.
    async fn await_certificate(
        &self,
        name: &str,
        mut current: CertificateSigningRequest,
    ) -> Result<String, SignerError> {
        loop {
            if let Some(pem) = certificate_of(&current) {
                return Ok(pem);
            }
            if let Some(refusal) = refusal_of(&current) {
                return Err(self.refused(name, refusal).await);
            }
            let version = current.metadata.resource_version.clone().unwrap_or_else(|| "0".into());
            let params = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(290);
            let mut events = match self.api().watch(&params, &version).await {
                Ok(events) => events.boxed(),
                Err(error) => {
                    return Err(signer_error(KubeFailure::classify(
                        format!("watching CertificateSigningRequest {name}"),
                        error,
                    )))
                }
            };
            let mut next = None;
            while let Some(event) = events.next().await {
                match event {
                    Ok(WatchEvent::Added(csr) | WatchEvent::Modified(csr)) => {
                        if certificate_of(&csr).is_some() || refusal_of(&csr).is_some() {
                            next = Some(csr);
                            break;
                        }
                    }
                    Ok(WatchEvent::Deleted(_)) => {
                        return Err(SignerError::Failed {
                            name: name.into(),
                            reason: "the CertificateSigningRequest was deleted while waiting".into(),
                        })
                    }
                    Ok(WatchEvent::Bookmark(_)) => {}
                    // 410 Gone or a broken stream: fall through to a fresh read.
                    Ok(WatchEvent::Error(_)) | Err(_) => break,
                }
            }
            current = match next {
                Some(csr) => csr,
                None => call(&format!("reading CertificateSigningRequest {name}"), self.api().get(name))
                    .await
                    .map_err(signer_error)?,
            };
        }
    }

    /// Removes a refused object so a later identical request gets a fresh one.
    async fn refused(&self, name: &str, refusal: Refusal) -> SignerError {
        if let Err(failure) = call(
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
                expiration_seconds: Some(i32::try_from(request.ttl.as_secs()).unwrap_or(i32::MAX).max(600)),
                ..CertificateSigningRequestSpec::default()
            },
            status: None,
        };
        let current = match call(
            &format!("creating CertificateSigningRequest {name}"),
            self.api().create(&PostParams::default(), &desired),
        )
        .await
        {
            Ok(created) => created,
            // A previous attempt (or another replica) created it: continue from where it is.
            Err(failure) if failure.is_already_exists() => {
                call(&format!("reading CertificateSigningRequest {name}"), self.api().get(&name))
                    .await
                    .map_err(signer_error)?
            }
            Err(failure) => return Err(signer_error(failure)),
        };
        let approved = self.approve(current).await.map_err(signer_error)?;
        let pem = match tokio::time::timeout(self.timeout, self.await_certificate(&name, approved)).await {
            Ok(result) => result?,
            // The approved object stays: the next identical request picks its certificate up.
            Err(_) => return Err(SignerError::NotIssued { name, waited: self.timeout }),
        };
        Ok(SignedCertificate { pem })
    }

    async fn forget(&self, request: SignRequest<'_>) {
        let name = object_name(request);
        match call(
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
