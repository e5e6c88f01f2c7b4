//! Everything that talks to Kubernetes: the adapters of the domain's ports over the API server,
//! and the few Kubernetes reads the wiring needs (cluster identity, the shared serving Secret).
//!
//! No other module of the crate imports `kube` or `k8s_openapi`. Adapters get a [`KubeCtx`]
//! (the client and the per-request deadline) from the composition root; there is no
//! process-wide state, so two services in one process (as in tests) never share settings.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod kube_admin;
pub mod kube_cache;
pub mod kube_cluster;
pub mod kube_csr;
pub mod kube_identity;
pub mod kube_join_token;
pub mod kube_kubeconfig;
pub mod kube_preflight;
pub mod kube_proof;
pub mod kube_secret;
pub mod kube_serving;
pub mod kube_token;

pub use kube_admin::{KubeClusterState, KubeTenants};
pub use kube_cache::KubeCaches;
pub use kube_cluster::{cluster_identity, ClusterIdentityError};
pub use kube_csr::KubeCsrSigner;
pub use kube_join_token::KubeJoinTokens;
pub use kube_proof::KubeProofLedger;
pub use kube_secret::{ApiServerSource, KubeStore};
pub use kube_token::KubeTokenCache;

/// Default deadline of one API request (watches have their own bound).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the client configuration comes from.
#[derive(Clone)]
pub enum Connection {
    /// `--kubeconfig` when given, else `KUBECONFIG`/`~/.kube/config`, else the in-cluster
    /// service account; `context` (`--context`) picks a kubeconfig context other than the current one.
    Kubeconfig { path: Option<PathBuf>, context: Option<String> },
    /// A ready configuration (tests point it at a loopback fake API server).
    Config(Box<kube::Config>),
}

/// The namespace of the pod's service account, when running in a pod.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Where `deploy/` installs liqo-auth (and Liqo installs itself): the namespace when neither a
/// flag nor the kubeconfig context names one.
pub const FALLBACK_NAMESPACE: &str = "liqo";

impl Connection {
    /// `--kubeconfig` and `--context` as given.
    pub fn from_flags(kubeconfig: Option<&Path>, context: Option<&str>) -> Self {
        Self::Kubeconfig { path: kubeconfig.map(Path::to_path_buf), context: context.map(str::to_owned) }
    }

    /// The namespace to use when `--namespace` is absent: the kubeconfig context's (as kubectl
    /// does), else the pod's own (in a cluster), else [`FALLBACK_NAMESPACE`].
    pub fn default_namespace(&self) -> String {
        match self {
            Self::Config(config) => config.default_namespace.clone(),
            Self::Kubeconfig { path, context } => {
                let file = match path {
                    Some(path) => kube::config::Kubeconfig::read_from(path).ok(),
                    None if kubeconfig_present() => kube::config::Kubeconfig::read().ok(),
                    None => None,
                };
                let from_context = file.and_then(|file| {
                    let name = context.clone().or(file.current_context)?;
                    file.contexts.into_iter().find(|c| c.name == name)?.context?.namespace
                });
                from_context
                    .or_else(|| {
                        let ns = std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok()?;
                        Some(ns.trim().to_owned()).filter(|ns| !ns.is_empty())
                    })
                    .unwrap_or_else(|| FALLBACK_NAMESPACE.to_owned())
            }
        }
    }
}

/// True when `KUBECONFIG` names a file or `~/.kube/config` exists.
fn kubeconfig_present() -> bool {
    std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) || default_kubeconfig().is_some_and(|p| p.exists())
}

fn default_kubeconfig() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".kube").join("config"))
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kubeconfig { path, context } => {
                f.debug_struct("Kubeconfig").field("path", path).field("context", context).finish()
            }
            Self::Config(config) => f.debug_tuple("Config").field(&config.cluster_url.to_string()).finish(),
        }
    }
}

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "no Kubernetes cluster configured: KUBECONFIG is unset, {} does not exist and this is not a pod (KUBERNETES_SERVICE_HOST is unset); pass --kubeconfig FILE, or --backend local to keep the state in a data dir instead of a cluster",
        kubeconfig.display()
    )]
    NoConfiguration { kubeconfig: PathBuf },
    #[error("reading kubeconfig {} (or pass --backend local to keep the state in a data dir)", path.display())]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("loading the Kubernetes client configuration (or pass --backend local to keep the state in a data dir)")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("loading the Kubernetes client configuration from the kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// A connected client and the deadline of each of its requests: what every adapter gets.
#[derive(Clone)]
pub struct KubeCtx {
    pub client: kube::Client,
    /// Deadline of one API request (`--kube-request-timeout`).
    pub request_timeout: Duration,
    /// The client configuration's server URL (the last fallback for `apiServerUrl`).
    pub server_url: String,
    /// The client configuration's CA as PEM, if it names one.
    pub server_ca_pem: Option<String>,
}

impl KubeCtx {
    /// Loads the client configuration and builds a client.
    pub async fn connect(connection: &Connection, request_timeout: Duration) -> Result<Self, ConnectError> {
        let config = match connection {
            Connection::Kubeconfig { path: None, context: None } => {
                if !kubeconfig_present() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
                    let kubeconfig = default_kubeconfig().unwrap_or_else(|| PathBuf::from("~/.kube/config"));
                    return Err(ConnectError::NoConfiguration { kubeconfig });
                }
                kube::Config::infer().await.map_err(ConnectError::Infer)?
            }
            Connection::Kubeconfig { path, context } => {
                let file = match path {
                    Some(path) => kube::config::Kubeconfig::read_from(path)
                        .map_err(|source| ConnectError::ReadKubeconfig { path: path.clone(), source })?,
                    None => kube::config::Kubeconfig::read().map_err(|source| ConnectError::ReadKubeconfig {
                        path: default_kubeconfig().unwrap_or_default(),
                        source,
                    })?,
                };
                let options = kube::config::KubeConfigOptions { context: context.clone(), ..Default::default() };
                kube::Config::from_custom_kubeconfig(file, &options).await.map_err(ConnectError::Kubeconfig)?
            }
            Connection::Config(config) => (**config).clone(),
        };
        let server_url = config.cluster_url.to_string().trim_end_matches('/').to_owned();
        let server_ca_pem = config
            .root_cert
            .as_ref()
            .map(|certs| certs.iter().map(|der| crate::identity::pem_encode("CERTIFICATE", der)).collect::<String>());
        let client = kube::Client::try_from(config).map_err(ConnectError::Client)?;
        Ok(Self { client, request_timeout, server_url, server_ca_pem })
    }

    /// Runs one API call with the request deadline; a timeout counts as "unavailable".
    pub async fn call<T>(
        &self,
        operation: &str,
        future: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, KubeFailure> {
        match tokio::time::timeout(self.request_timeout, future).await {
            Ok(result) => result.map_err(|e| KubeFailure::classify(operation, e)),
            Err(elapsed) => {
                Err(KubeFailure::Unavailable { operation: operation.to_owned(), source: Box::new(elapsed) })
            }
        }
    }

    /// Like `call`, but 404 becomes `Ok(None)`.
    pub async fn call_opt<T>(
        &self,
        operation: &str,
        future: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Option<T>, KubeFailure> {
        match self.call(operation, future).await {
            Ok(value) => Ok(Some(value)),
            Err(failure) if failure.is_not_found() => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    /// A namespaced API of this client.
    pub fn namespaced<K>(&self, namespace: &str) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        kube::Api::namespaced(self.client.clone(), namespace)
    }
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
    /// the peer, who retries, instead of a 500 that reads as final); 403 names the missing
    /// permission; 404/409 are explicit.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(dir: &Path, context_namespace: Option<&str>) -> PathBuf {
        let namespace = context_namespace.map(|ns| format!("\n    namespace: {ns}")).unwrap_or_default();
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: main\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: main\n  context:\n    cluster: c\n    user: u{namespace}\n- name: other\n  context:\n    cluster: c\n    user: u\n    namespace: elsewhere\n"
        );
        let path = dir.join(format!("config-{}", context_namespace.unwrap_or("none")));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_namespace_comes_from_the_kubeconfig_context_else_liqo() {
        let tmp = tempfile::tempdir().unwrap();
        let with = kubeconfig(tmp.path(), Some("team-a"));
        assert_eq!(Connection::from_flags(Some(&with), None).default_namespace(), "team-a");
        assert_eq!(Connection::from_flags(Some(&with), Some("other")).default_namespace(), "elsewhere");
        let without = kubeconfig(tmp.path(), None);
        let fallback = if Path::new(SERVICE_ACCOUNT_NAMESPACE).exists() { None } else { Some(FALLBACK_NAMESPACE) };
        if let Some(expected) = fallback {
            assert_eq!(Connection::from_flags(Some(&without), None).default_namespace(), expected);
        }
    }
}
