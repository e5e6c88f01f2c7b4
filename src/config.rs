//! Validated configuration and the one composition root.
//!
//! `cli` turns flags into a `Config` (for `serve`) or a `BackendConfig` (for the other
//! commands); nothing else builds runtime objects. `Config::build()` opens the backend and
//! returns the handlers' state and the serving certificate (`app` then binds and serves them);
//! `BackendConfig::open()` gives the operator commands and `peer` the same backend's ports.
//! Tests use both, so no test re-implements start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

// Named `kubernetes` here so that paths into the kube crate appear only inside
// src/adapter/kube: a grep for them is the check that Kubernetes stays in its adapter.
use crate::adapter::kube as kubernetes;
use crate::adapter::local::local_peers::Recovery;
use crate::adapter::local::{LocalCa, LocalProofLedger, LocalStore};
use crate::client::check::{CheckReport, CheckStep, StepStatus};
use crate::client::identity_store::LocalIdentityStore;
use crate::client::peer::PeerBackend;
use crate::discovery::{DiscoveryError, InterfaceSelection};
use crate::http::{AppState, Protection, ProtectionConfig};
use crate::identity::port::{ClusterState, JoinTokenStore, PeerIdentityStore, Signer, StoreError, TenantAdmin};
use crate::identity::{Authenticator, IssuePolicy, Issuer, RenewPolicy, Renewer};
use crate::server::tls::{ServingCertificate, ServingSource, TlsError};
use crate::server::ServerLimits;
use kubernetes::kube_cluster::IdentitySource;
use kubernetes::kube_identity::KubeIdentityStore;
use kubernetes::kube_kubeconfig;
use kubernetes::kube_preflight;
use kubernetes::kube_serving::{self, PemPair, ServingSecretError};
use kubernetes::{
    ApiServerSource, ClusterIdentityError, ConnectError, KubeCaches, KubeClusterState, KubeCsrSigner, KubeCtx,
    KubeJoinTokens, KubeProofLedger, KubeStore, KubeTenants, KubeTokenCache,
};

pub use kubernetes::{Connection, DEFAULT_REQUEST_TIMEOUT as DEFAULT_KUBE_REQUEST_TIMEOUT};

/// Default `apiServerUrl` of the local backend.
pub const LOCAL_API_SERVER_URL: &str = "https://127.0.0.1:6443";

/// Why the service or a command could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("IAM mode is not supported: remove the --aws-* flags (liqo-auth issues certificate identities only)")]
    IamUnsupported,
    #[error("{0}")]
    Invalid(String),
    #[error("opening the {backend} backend")]
    Store {
        backend: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("setting up TLS")]
    Tls(#[source] TlsError),
    #[error("listening on {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to Kubernetes")]
    KubeConnect(#[source] ConnectError),
    #[error("determining this cluster's identity")]
    ClusterIdentity(#[source] ClusterIdentityError),
    #[error("getting the shared serving certificate")]
    ServingSecret(#[source] ServingSecretError),
    #[error("advertising the service over mDNS")]
    Mdns(#[source] DiscoveryError),
}

/// Where state lives.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    /// A data dir on this machine; no cluster needed.
    Local { data_dir: PathBuf },
    /// The Kubernetes objects Liqo uses, in `namespace`.
    Kubernetes {
        namespace: String,
        connection: Connection,
        /// Deadline of each API request.
        request_timeout: Duration,
    },
}

/// Who signs on the Kubernetes backend.
#[derive(Debug, Clone)]
pub enum SignerConfig {
    /// The `certificates.k8s.io/v1` API, waiting at most `timeout`.
    KubernetesCsr { timeout: Duration },
    /// A mounted CA.
    LocalCa { cert: PathBuf, key: PathBuf },
}

/// A validated `serve` configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub backend: BackendConfig,
    /// Who signs on the Kubernetes backend (the local backend signs with its own CA).
    pub signer: SignerConfig,
    pub address: String,
    pub listen: Vec<SocketAddr>,
    pub tls: Option<ServingSource>,
    pub cluster_id: Option<String>,
    pub cluster_name: Option<String>,
    pub authentication: bool,
    /// Accept the shared token (`--shared-token`); join tokens are always accepted.
    pub shared_token: bool,
    /// `--advertise-auth-address`, for the peer command logged at start.
    pub advertise_auth_address: Option<String>,
    pub api_server_url: Option<String>,
    pub advertise_ca: bool,
    pub certificate_ttl: Duration,
    /// `--renewal-grace-after-expiry`: how long an expired certificate may still renew.
    pub renewal_grace_after_expiry: Duration,
    pub limits: ServerLimits,
    /// LAN advertisement over mDNS (`--mdns-advertise`), off when `None`.
    pub mdns: Option<MdnsConfig>,
    /// `--metrics-address` as given (for messages).
    pub metrics_address: String,
    /// Where the admin listener binds; `None` when disabled.
    pub metrics_listen: Option<Vec<SocketAddr>>,
    /// `--metrics-address` was given (flag or environment): failing to bind it stops `serve`.
    /// The default address that cannot bind only gets a warning.
    pub metrics_required: bool,
    pub protection: ProtectionConfig,
    /// How often the serving pair files are checked for changes.
    pub tls_reload_interval: Duration,
    /// Compatibility-only flags given a non-default value (warned about at start).
    pub ignored_flags: Vec<String>,
}

/// What `--mdns-advertise` announces, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsConfig {
    /// The port announced; `None` means the port the listener is bound to.
    pub port: Option<u16>,
    /// The interfaces announced on.
    pub interfaces: InterfaceSelection,
}

/// What `build()` returns: everything `start()` needs (the state already protected as configured).
pub struct Runtime {
    pub state: AppState,
    pub serving: Option<ServingCertificate>,
    /// Where `serve` records its auth URL and pin for the operator commands.
    pub cluster_state: Arc<dyn ClusterState>,
}

/// How a command opens its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The state must exist; opening creates nothing (every command but `token create`).
    Existing,
    /// Create the data dir and shared token when missing (`token create`).
    Create,
}

/// A backend opened for the operator commands and `peer`: its ports, nothing serving.
pub struct Backend {
    pub cluster: Arc<dyn ClusterState>,
    pub join_tokens: Arc<dyn JoinTokenStore>,
    pub tenants: Arc<dyn TenantAdmin>,
    opened: Opened,
}

enum Opened {
    Local { data_dir: PathBuf },
    Kubernetes { ctx: KubeCtx, namespace: String },
}

impl BackendConfig {
    /// Opens the backend's ports for a command.
    pub async fn open(&self, access: Access) -> Result<Backend, ConfigError> {
        match self {
            Self::Local { data_dir } => {
                let store_err = |source| ConfigError::Store { backend: "local", source };
                let store = Arc::new(
                    match access {
                        Access::Create => LocalStore::open(data_dir, LOCAL_API_SERVER_URL.into(), true),
                        Access::Existing => LocalStore::open_existing(data_dir),
                    }
                    .map_err(store_err)?,
                );
                Ok(Backend {
                    cluster: store.clone(),
                    join_tokens: store.clone(),
                    tenants: store,
                    opened: Opened::Local { data_dir: data_dir.clone() },
                })
            }
            Self::Kubernetes { namespace, .. } => {
                let ctx = self.connect().await?;
                let tenants = KubeTenants::new(ctx.clone(), namespace.clone());
                Ok(Backend {
                    cluster: Arc::new(KubeClusterState::new(ctx.clone(), namespace.clone())),
                    join_tokens: Arc::new(KubeJoinTokens::new(ctx.clone(), namespace.clone())),
                    tenants: Arc::new(tenants),
                    opened: Opened::Kubernetes { ctx, namespace: namespace.clone() },
                })
            }
        }
    }

    /// The Kubernetes client of this backend.
    async fn connect(&self) -> Result<KubeCtx, ConfigError> {
        match self {
            Self::Kubernetes { connection, request_timeout, .. } => {
                KubeCtx::connect(connection, *request_timeout).await.map_err(ConfigError::KubeConnect)
            }
            Self::Local { .. } => Err(ConfigError::Invalid("the local backend has no Kubernetes client".into())),
        }
    }
}

impl BackendConfig {
    /// Where this backend's objects live, for messages: `data dir D` or `namespace N`.
    pub fn describe(&self) -> String {
        match self {
            Self::Local { data_dir } => format!("data dir {}", data_dir.display()),
            Self::Kubernetes { namespace, .. } => format!("namespace {namespace}"),
        }
    }

    /// The flags that name this backend on another command's line (`token create`, `info`), so
    /// a command printed for the operator works as printed from the same directory.
    pub fn command_flags(&self) -> String {
        match self {
            Self::Local { data_dir } if data_dir == std::path::Path::new(DEFAULT_DATA_DIR) => " --backend local".into(),
            Self::Local { data_dir } => {
                format!(" --backend local --data-dir {}", shell_word(&data_dir.display().to_string()))
            }
            Self::Kubernetes { namespace, connection, .. } => {
                let mut flags = format!(" -n {}", shell_word(namespace));
                if let Connection::Kubeconfig { path, context } = connection {
                    if let Some(path) = path {
                        flags.push_str(&format!(" --kubeconfig {}", shell_word(&path.display().to_string())));
                    }
                    if let Some(context) = context {
                        flags.push_str(&format!(" --context {}", shell_word(context)));
                    }
                }
                flags
            }
        }
    }
}

/// `text` quoted for a POSIX shell when it needs to be.
pub fn shell_word(text: &str) -> String {
    let plain = !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,%".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// `--data-dir`'s default.
pub const DEFAULT_DATA_DIR: &str = "./liqo-auth-data";

impl Backend {
    /// What `peer` needs from this backend: this cluster's state, where to keep the identities
    /// it obtains (files under the data dir, or Secrets in the tenant namespaces), and how to
    /// render a kubeconfig.
    pub fn peer_backend(&self) -> PeerBackend {
        let identities: Arc<dyn PeerIdentityStore> = match &self.opened {
            Opened::Local { data_dir } => Arc::new(LocalIdentityStore::new(data_dir)),
            Opened::Kubernetes { ctx, .. } => Arc::new(KubeIdentityStore::new(ctx.clone())),
        };
        PeerBackend { cluster: self.cluster.clone(), identities, render_kubeconfig: kube_kubeconfig::render }
    }

    /// Where the shared token is kept, for messages.
    pub fn shared_token_location(&self) -> String {
        match &self.opened {
            Opened::Local { data_dir } => data_dir.join("token").display().to_string(),
            Opened::Kubernetes { namespace, .. } => format!("Secret {namespace}/{}", kubernetes::TOKEN_SECRET),
        }
    }

    /// `local` or `kubernetes`.
    pub fn kind(&self) -> &'static str {
        match &self.opened {
            Opened::Local { .. } => "local",
            Opened::Kubernetes { .. } => "kubernetes",
        }
    }

    /// The namespace of the Kubernetes backend.
    pub fn namespace(&self) -> Option<&str> {
        match &self.opened {
            Opened::Local { .. } => None,
            Opened::Kubernetes { namespace, .. } => Some(namespace),
        }
    }

    /// The data dir of the local backend.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        match &self.opened {
            Opened::Local { data_dir } => Some(data_dir),
            Opened::Kubernetes { .. } => None,
        }
    }
}

impl Config {
    /// Opens the backend and builds the handlers' state and the serving certificate.
    pub async fn build(&self) -> Result<Runtime, ConfigError> {
        match &self.backend {
            BackendConfig::Local { data_dir } => {
                let (state, store) = self.build_local(data_dir)?;
                let serving = self
                    .tls
                    .as_ref()
                    .map(ServingCertificate::load_or_generate)
                    .transpose()
                    .map_err(ConfigError::Tls)?;
                Ok(Runtime { state, serving, cluster_state: store })
            }
            BackendConfig::Kubernetes { namespace, .. } => {
                let ctx = self.backend.connect().await?;
                let state = self.build_kube(&ctx, namespace).await?;
                let serving = match &self.tls {
                    Some(source) if source.files_present().map_err(ConfigError::Tls)? => {
                        Some(ServingCertificate::load_or_generate(source).map_err(ConfigError::Tls)?)
                    }
                    Some(source) => {
                        Some(shared_serving_certificate(&ctx, namespace, &source.extra_sans).await?.watching(source))
                    }
                    None => None,
                };
                let cluster_state = Arc::new(KubeClusterState::new(ctx.clone(), namespace.clone()));
                Ok(Runtime { state, serving, cluster_state })
            }
        }
    }

    async fn build_kube(&self, ctx: &KubeCtx, namespace: &str) -> Result<AppState, ConfigError> {
        let store_err = |source| ConfigError::Store { backend: "kubernetes", source };
        let api_source = ApiServerSource::from_ctx(ctx, self.api_server_url.clone(), !self.advertise_ca);
        let (id_flag, name_flag) = (self.cluster_id.as_deref(), self.cluster_name.as_deref());
        let cluster = kubernetes::cluster_identity(ctx, namespace, id_flag, name_flag, IdentitySource::CreateMissing)
            .await
            .map_err(ConfigError::ClusterIdentity)?;
        let tokens = KubeTokenCache::start(ctx, namespace);
        if !tokens.wait_synced(Duration::from_secs(10)).await {
            tracing::warn!(
                secret.name = "auth-token",
                "the token Secret is not synced yet; /readyz reports not ready until it is"
            );
        }
        let caches = KubeCaches::start(ctx, namespace);
        if !caches.wait_synced(Duration::from_secs(10)).await {
            tracing::warn!("the caches of tenant namespaces, ClusterRoles, nodes and Secrets are not synced yet; /readyz reports not ready until they are");
        }
        let store = Arc::new(KubeStore::new(ctx.clone(), namespace.to_owned(), tokens.clone(), caches, api_source));
        let signer: Arc<dyn Signer> = match &self.signer {
            SignerConfig::KubernetesCsr { timeout } => Arc::new(KubeCsrSigner::new(ctx.clone(), *timeout)),
            SignerConfig::LocalCa { cert, key } => {
                let cert_pem = crate::fs::read_string(cert).map_err(|e| store_err(e.into()))?;
                let key_pem = crate::fs::read_string(key).map_err(|e| store_err(e.into()))?;
                Arc::new(
                    LocalCa::from_pem(&cert_pem, &key_pem)
                        .map_err(|e| ConfigError::Invalid(format!("--ca-cert/--ca-key: {e}")))?,
                )
            }
        };
        let auth = Authenticator::new(self.authentication, Arc::new(tokens))
            .with_shared_token(self.shared_token)
            .with_join_tokens(cluster.id.clone(), Arc::new(KubeJoinTokens::new(ctx.clone(), namespace.to_owned())));
        let ledger = Arc::new(KubeProofLedger::new(ctx.clone(), namespace.to_owned()));
        let renewer = Renewer::new(cluster.id.clone(), signer.clone(), store.clone(), ledger, self.renew_policy());
        let issuer = Issuer::new(auth, signer, store, IssuePolicy { certificate_ttl: self.certificate_ttl });
        Ok(AppState::new(cluster, issuer, renewer).with_protection(Protection::new(self.protection.clone())))
    }

    fn build_local(&self, data_dir: &std::path::Path) -> Result<(AppState, Arc<LocalStore>), ConfigError> {
        let store_err = |source| ConfigError::Store { backend: "local", source };
        let url = self.api_server_url.clone().unwrap_or_else(|| LOCAL_API_SERVER_URL.to_owned());
        let (store, recovery) = LocalStore::open_for_serving(data_dir, url, self.advertise_ca).map_err(store_err)?;
        if recovery != Recovery::default() {
            tracing::info!(
                recovery.temp_files = recovery.temp_files_removed,
                recovery.migrated = recovery.legacy_peers_migrated,
                recovery.replayed = recovery.journal_changes_replayed,
                recovery.torn = recovery.torn_lines_dropped,
                "data dir recovered: {} temp files removed, {} peers migrated to peers/<id>.json, {} journal changes replayed, {} torn journal lines dropped",
                recovery.temp_files_removed,
                recovery.legacy_peers_migrated,
                recovery.journal_changes_replayed,
                recovery.torn_lines_dropped
            );
        }
        let store = Arc::new(store);
        let cluster =
            store.cluster_identity(self.cluster_id.as_deref(), self.cluster_name.as_deref()).map_err(store_err)?;
        let ca = Arc::new(store.load_or_create_ca(&cluster).map_err(store_err)?);
        let auth = Authenticator::new(self.authentication, store.clone())
            .with_shared_token(self.shared_token)
            .with_join_tokens(cluster.id.clone(), store.clone());
        let ledger = Arc::new(LocalProofLedger::new(data_dir));
        let renewer = Renewer::new(cluster.id.clone(), ca.clone(), store.clone(), ledger, self.renew_policy());
        let issuer = Issuer::new(auth, ca, store.clone(), IssuePolicy { certificate_ttl: self.certificate_ttl });
        let state = AppState::new(cluster, issuer, renewer).with_protection(Protection::new(self.protection.clone()));
        Ok((state, store))
    }

    fn renew_policy(&self) -> RenewPolicy {
        RenewPolicy { certificate_ttl: self.certificate_ttl, grace_after_expiry: self.renewal_grace_after_expiry }
    }
}

/// `check --pre`: the preflight of an install, with the operator's kubeconfig.
#[derive(Debug, Clone)]
pub struct PreflightConfig {
    pub connection: Connection,
    /// Deadline of each API request.
    pub request_timeout: Duration,
    /// The namespace the service will run in.
    pub namespace: String,
    /// Its ServiceAccount there.
    pub service_account: String,
    /// How long the test CSR may take to be signed.
    pub signing_timeout: Duration,
}

impl PreflightConfig {
    /// Connects and runs every preflight check; a failed connection is the one failed step.
    pub async fn run(&self) -> CheckReport {
        let started = std::time::Instant::now();
        let findings = match KubeCtx::connect(&self.connection, self.request_timeout).await {
            Ok(ctx) => {
                let options = kube_preflight::PreflightOptions {
                    namespace: self.namespace.clone(),
                    service_account: self.service_account.clone(),
                    signing_timeout: self.signing_timeout,
                };
                let findings = kube_preflight::preflight(&ctx, &options).await;
                return report(Some(ctx.server_url.clone()), findings);
            }
            Err(error) => vec![kube_preflight::Finding {
                name: "kubeconfig",
                target: format!("{:?}", self.connection),
                ok: false,
                detail: crate::error::error_chain(&error),
                cause: Some("no usable Kubernetes client configuration".into()),
                fix: Some("pass --kubeconfig, set KUBECONFIG, or select a context with a reachable cluster".into()),
                duration: started.elapsed(),
            }],
        };
        report(None, findings)
    }
}

fn report(api_server: Option<String>, findings: Vec<kube_preflight::Finding>) -> CheckReport {
    let steps = findings
        .into_iter()
        .map(|f| CheckStep {
            name: format!("pre: {}", f.name),
            target: f.target,
            status: if f.ok { StepStatus::Pass } else { StepStatus::Fail },
            ok: f.ok,
            duration_ms: u64::try_from(f.duration.as_millis()).unwrap_or(u64::MAX),
            detail: f.detail,
            cause: f.cause,
            fix: f.fix,
        })
        .collect();
    CheckReport { auth_url: String::new(), api_server, steps }
}

/// The generated serving pair every replica shares (Secret `liqo-auth-serving-cert`): reused
/// while fresh and covering `sans`, else generated and stored.
async fn shared_serving_certificate(
    ctx: &KubeCtx,
    namespace: &str,
    sans: &[String],
) -> Result<ServingCertificate, ConfigError> {
    let pair = kube_serving::shared_serving_pair(
        ctx,
        namespace,
        |cert| ServingCertificate::reusable(cert, sans),
        |key| crate::server::tls::generate_self_signed_with_key(sans, key).map(|(cert, key)| PemPair { cert, key }),
    )
    .await
    .map_err(ConfigError::ServingSecret)?;
    ServingCertificate::from_pem_pair(&pair.cert, &pair.key).map_err(ConfigError::Tls)
}

/// The `https://` URL peers use to reach this service: `--advertise-auth-address` (HOST[:PORT];
/// a bare IPv6 address is bracketed; no port means 443), else the host and port of `--address`.
/// `None` when neither names a host peers could use (`:5000`, `0.0.0.0:5000`).
pub fn auth_url(advertised: Option<&str>, address: &str) -> Option<String> {
    if let Some(text) = advertised.map(str::trim).filter(|s| !s.is_empty()) {
        let text = text.trim_start_matches("https://").trim_end_matches('/');
        if let Ok(v6) = text.parse::<std::net::Ipv6Addr>() {
            return Some(format!("https://[{v6}]"));
        }
        return Some(format!("https://{text}"));
    }
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let unspecified = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    if host.is_empty() || unspecified {
        return None;
    }
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
    Some(format!("https://{host}:{port}"))
}

/// The URL peers use, as `serve` records it: `--advertise-auth-address`, else the bound address
/// when it names a host, else (listening on every interface) this machine's first LAN address,
/// marked as guessed so `token create` says how to override it. `None` when there is no guess.
pub fn served_auth_url(advertised: Option<&str>, bound: SocketAddr) -> (Option<String>, bool) {
    if let Some(url) = auth_url(advertised, &bound.to_string()) {
        return (Some(url), false);
    }
    let lan = if_addrs::get_if_addrs().ok().and_then(|interfaces| {
        let usable = |ip: &std::net::IpAddr| match ip {
            std::net::IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
            std::net::IpAddr::V6(_) => false,
        };
        interfaces.into_iter().map(|i| i.ip()).find(usable)
    });
    match lan {
        Some(ip) => (Some(format!("https://{}", SocketAddr::new(ip, bound.port()))), true),
        None => (None, false),
    }
}

/// Normalises `--advertise-api-server-address`: adds `https://` when no scheme is given and
/// brackets a bare IPv6 address, so a value that works for kubectl works here too.
pub fn normalize_api_server_url(text: &str) -> Result<String, ConfigError> {
    let text = text.trim().trim_end_matches('/');
    if text.contains("://") {
        return Ok(text.to_owned());
    }
    if let Ok(v6) = text.parse::<std::net::Ipv6Addr>() {
        return Ok(format!("https://[{v6}]"));
    }
    if text.is_empty() || text.contains(char::is_whitespace) {
        return Err(ConfigError::Invalid(format!("invalid --advertise-api-server-address {text:?}")));
    }
    Ok(format!("https://{text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_server_address_gets_a_scheme_and_brackets() {
        assert_eq!(normalize_api_server_url("10.0.0.5:6443").unwrap(), "https://10.0.0.5:6443");
        assert_eq!(normalize_api_server_url("https://api.example.com/").unwrap(), "https://api.example.com");
        assert_eq!(normalize_api_server_url("fd00::1").unwrap(), "https://[fd00::1]");
        assert_eq!(normalize_api_server_url("[fd00::1]:6443").unwrap(), "https://[fd00::1]:6443");
    }

    #[test]
    fn the_auth_url_prefers_the_advertised_address_and_needs_a_host() {
        assert_eq!(auth_url(Some("203.0.113.10:30443"), ":8443").unwrap(), "https://203.0.113.10:30443");
        assert_eq!(auth_url(Some("https://auth.example.com/"), ":8443").unwrap(), "https://auth.example.com");
        assert_eq!(auth_url(Some("fd00::1"), ":8443").unwrap(), "https://[fd00::1]");
        assert_eq!(auth_url(None, "auth.example.com:8443").unwrap(), "https://auth.example.com:8443");
        assert_eq!(auth_url(None, "[fd00::2]:8443").unwrap(), "https://[fd00::2]:8443");
        assert_eq!(auth_url(None, ":8443"), None);
        assert_eq!(auth_url(None, "0.0.0.0:8443"), None);
    }

    #[test]
    fn printed_backend_flags_name_the_backend_and_quote_what_the_shell_would_split() {
        let local = |dir: &str| BackendConfig::Local { data_dir: PathBuf::from(dir) };
        assert_eq!(local(DEFAULT_DATA_DIR).command_flags(), " --backend local");
        assert_eq!(local("my data").command_flags(), " --backend local --data-dir 'my data'");
        assert_eq!(local("it's").command_flags(), r" --backend local --data-dir 'it'\''s'");
        let kube = BackendConfig::Kubernetes {
            namespace: "liqo".into(),
            connection: Connection::from_flags(Some(std::path::Path::new("/k/config")), Some("prod")),
            request_timeout: Duration::from_secs(1),
        };
        assert_eq!(kube.command_flags(), " -n liqo --kubeconfig /k/config --context prod");
    }

    #[test]
    fn the_recorded_url_is_the_bound_address_or_a_guess_marked_as_such() {
        let bound: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(served_auth_url(None, bound), (Some("https://127.0.0.1:5000".into()), false));
        assert_eq!(served_auth_url(Some("auth.example.com"), bound), (Some("https://auth.example.com".into()), false));
        let every: SocketAddr = "[::]:5000".parse().unwrap();
        let (url, guessed) = served_auth_url(None, every);
        assert_eq!(guessed, url.is_some(), "a URL for every interface is always a guess");
        assert!(url.is_none_or(|u| u.ends_with(":5000") && !u.contains("127.0.0.1")));
    }

    #[tokio::test]
    async fn commands_open_existing_state_and_create_none() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let backend = BackendConfig::Local { data_dir: data_dir.clone() };
        let missing = backend.open(Access::Existing).await.err().expect("a missing data dir is an error");
        assert!(crate::error::error_chain(&missing).contains("no data dir"), "{missing}");
        assert!(!data_dir.exists(), "opening for a read created nothing");

        let created = backend.open(Access::Create).await.expect("token create may create the data dir");
        assert!(data_dir.join("token").exists());
        assert!(created.cluster.shared_token().await.unwrap().is_some());
        std::fs::remove_file(data_dir.join("token")).unwrap();
        let existing = backend.open(Access::Existing).await.expect("an existing data dir opens");
        assert_eq!(existing.cluster.shared_token().await.unwrap(), None, "no token is invented");
        assert!(!data_dir.join("token").exists());
        assert!(existing.cluster.cluster_identity(None, None).await.is_err(), "no cluster identity is invented");
        assert!(!data_dir.join("cluster.json").exists());
        assert!(existing.tenants.tenants().await.unwrap().is_empty());
    }
}
