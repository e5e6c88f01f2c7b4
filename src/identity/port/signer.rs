//! Certificate signing: the `Signer` port and its adapters.
//!
//! `local_ca` signs with a CA held in memory (the local backend's own CA, or a mounted one);
//! `kube_csr` goes through the Kubernetes CSR API. The issuer decides *what* may be signed; a
//! signer only turns a validated request into a certificate.

use std::time::Duration;

use crate::identity::{ClusterIdentity, ParsedCsr};

/// What the issuer asks a signer for.
#[derive(Debug, Clone, Copy)]
pub struct SignRequest<'a> {
    pub cluster: &'a ClusterIdentity,
    pub csr: &'a ParsedCsr,
    /// Requested lifetime of the certificate.
    pub ttl: Duration,
}

/// A signed certificate as PEM (possibly followed by intermediates).
#[derive(Debug, Clone)]
pub struct SignedCertificate {
    pub pem: String,
}

/// Signs validated requests.
#[async_trait::async_trait]
pub trait Signer: Send + Sync {
    /// Short name for logs and metrics (`local-ca`, `kubernetes`).
    fn kind(&self) -> &'static str;

    /// Signs `request`. Must be safe to call again with the same request after any failure.
    async fn sign(&self, request: SignRequest<'_>) -> Result<SignedCertificate, SignerError>;

    /// Called once the certificate is stored: release what signing left behind (best effort).
    async fn forget(&self, _request: SignRequest<'_>) {}
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("building the certificate")]
    Build {
        #[source]
        source: rcgen::Error,
    },
    #[error("the cluster signer denied CertificateSigningRequest {name}: {reason}")]
    Denied { name: String, reason: String },
    #[error("the cluster signer failed CertificateSigningRequest {name}: {reason}")]
    Failed { name: String, reason: String },
    #[error("no certificate issued for {name} within {waited:?}")]
    NotIssued { name: String, waited: Duration },
    #[error("{operation} (the API server is unavailable)")]
    Unavailable {
        operation: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{operation}")]
    Api {
        operation: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SignerError {
    /// True when retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::NotIssued { .. } | Self::Unavailable { .. })
    }
}
