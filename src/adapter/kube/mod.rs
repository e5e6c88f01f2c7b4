//! Shared Kubernetes plumbing for the adapters: client construction, error classification,
//! request deadlines and the label keys of spec section 3.
//!
//! Only adapters (`store::kube_*`, `signer::kube_csr`) and wiring use this module.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

pub mod kube_csr;
pub mod kube_join_token;
pub mod kube_secret;
pub mod kube_token;

pub use kube_csr::KubeCsrSigner;
pub use kube_join_token::KubeJoinTokens;
pub use kube_secret::KubeStore;
pub use kube_token::KubeTokenCache;

/// Default deadline of one API request (watches have their own bound).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

static REQUEST_TIMEOUT_MS: AtomicU64 = AtomicU64::new(10_000);

/// Sets the deadline of every API request of this process (`--kube-request-timeout`).
pub fn set_request_timeout(timeout: Duration) {
    REQUEST_TIMEOUT_MS.store(timeout.as_millis().clamp(1, u64::MAX as u128) as u64, Ordering::Relaxed);
}

/// The deadline of one API request.
pub fn request_timeout() -> Duration {
    Duration::from_millis(REQUEST_TIMEOUT_MS.load(Ordering::Relaxed))
}

pub const LABEL_CLUSTER_ID: &str = "discovery.liqo.io/cluster-id";
pub const LABEL_TENANT_NAMESPACE: &str = "discovery.liqo.io/tenant-namespace";
pub const LABEL_REMOTE_TENANT_CSR: &str = "discovery.liqo.io/remote-tenant-csr";
pub const LABEL_AUTH_TOKEN: &str = "discovery.liqo.io/auth-token";
pub const LABEL_PEERING_PERMISSIONS: &str = "auth.liqo.io/remote-peering-permissions";
pub const TOKEN_SECRET: &str = "auth-token";
pub const TOKEN_KEY: &str = "token";
pub const REMOTE_CERTIFICATE_SECRET: &str = "liqo-remote-certificate";
pub const CLUSTER_ID_CONFIGMAP: &str = "liqo-clusterid-configmap";

/// What a failed API call means to the caller.
#[derive(Debug, thiserror::Error)]
pub enum KubeFailure {
    #[error("{operation}: not found")]
    NotFound { operation: String },
    #[error("{operation}: already exists")]
    AlreadyExists { operation: String },
    #[error("{operation}: conflict (the object was modified)")]
    Conflict { operation: String },
    #[error("{operation}: forbidden: {message}")]
    Forbidden { operation: String, message: String },
    #[error("{operation}: the API server is unavailable")]
    Unavailable {
        operation: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{operation}")]
    Other {
        operation: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl KubeFailure {
    /// Classifies a `kube::Error`: transport failures, 429 and 5xx are "unavailable" (503 to
    /// the peer, spec 11 R5); 403 names the missing permission; 404/409 are explicit.
    pub fn classify(operation: impl Into<String>, error: kube::Error) -> Self {
        let operation = operation.into();
        match &error {
            kube::Error::Api(status) => match status.code {
                404 => Self::NotFound { operation },
                409 if status.reason == "AlreadyExists" => Self::AlreadyExists { operation },
                409 => Self::Conflict { operation },
                403 => Self::Forbidden { operation, message: status.message.clone() },
                429 | 500..=599 => Self::Unavailable { operation, source: Box::new(error) },
                _ => Self::Other { operation, source: Box::new(error) },
            },
            kube::Error::HyperError(_)
            | kube::Error::Service(_)
            | kube::Error::ReadEvents(_)
            | kube::Error::HttpError(_) => Self::Unavailable { operation, source: Box::new(error) },
            _ => Self::Other { operation, source: Box::new(error) },
        }
    }

    /// True for 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// True for 409 AlreadyExists.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::AlreadyExists { .. })
    }
}

impl From<KubeFailure> for crate::identity::port::StoreError {
    fn from(failure: KubeFailure) -> Self {
        use crate::identity::port::StoreError;
        match failure {
            KubeFailure::AlreadyExists { operation } => StoreError::AlreadyExists { what: operation },
            // A conflict the caller did not handle itself: a concurrent writer; retrying works.
            KubeFailure::Conflict { operation } => {
                StoreError::Unavailable { operation, source: "the object was modified concurrently".into() }
            }
            KubeFailure::Forbidden { operation, message } => StoreError::Forbidden { operation, detail: message },
            KubeFailure::Unavailable { operation, source } => StoreError::Unavailable { operation, source },
            other @ KubeFailure::NotFound { .. } => {
                StoreError::Backend { operation: other.to_string(), source: Box::new(other) }
            }
            KubeFailure::Other { operation, source } => StoreError::Backend { operation, source },
        }
    }
}

/// Runs one API call with the request deadline; a timeout counts as "unavailable".
pub async fn call<T>(operation: &str, future: impl Future<Output = Result<T, kube::Error>>) -> Result<T, KubeFailure> {
    match tokio::time::timeout(request_timeout(), future).await {
        Ok(result) => result.map_err(|e| KubeFailure::classify(operation, e)),
        Err(elapsed) => Err(KubeFailure::Unavailable { operation: operation.to_owned(), source: Box::new(elapsed) }),
    }
}

/// Like `call`, but 404 becomes `Ok(None)`.
pub async fn call_opt<T>(
    operation: &str,
    future: impl Future<Output = Result<T, kube::Error>>,
) -> Result<Option<T>, KubeFailure> {
    match call(operation, future).await {
        Ok(value) => Ok(Some(value)),
        Err(failure) if failure.is_not_found() => Ok(None),
        Err(failure) => Err(failure),
    }
}

/// Loads the client configuration: `--kubeconfig`, else `KUBECONFIG`/`~/.kube/config`, else the
/// in-cluster service account.
pub async fn load_config(kubeconfig: Option<&Path>) -> Result<kube::Config, Box<dyn std::error::Error + Send + Sync>> {
    match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)?;
            Ok(kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default()).await?)
        }
        None => Ok(kube::Config::infer().await?),
    }
}

/// Builds a client from a configuration (tests pass a loopback fake's).
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    kube::Client::try_from(config)
}
