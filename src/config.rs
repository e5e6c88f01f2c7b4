//! Validated configuration and the wiring that turns it into a running service.
//!
//! `ServeArgs::into_config()` checks everything that can be checked without I/O;
//! `Config::build()` opens the backend and returns the runtime objects; `Config::serve()` runs.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::adapter::kube::kube_secret::ApiServerSource;
use crate::adapter::kube::KubeCsrSigner;
use crate::adapter::kube::{KubeJoinTokens, KubeStore, KubeTokenCache};
use crate::adapter::local::LocalCa;
use crate::adapter::local::LocalStore;
use crate::cli::{BackendKind, ServeArgs, SharedTokenMode, SignerKind};
use crate::discovery::{Advertisement, AdvertisementConfig, DiscoveryError, InterfaceSelection};
use crate::http::{AppState, Protection, ProtectionConfig};
use crate::identity::port::Signer;
use crate::identity::port::StoreError;
use crate::identity::{Authenticator, ClusterId, ClusterIdentity, ClusterName, IssuePolicy, Issuer};
use crate::server::tls::{ServingCertificate, ServingSource, TlsError};
use crate::server::{self, ServerLimits};
use crate::telemetry::Metrics;

/// Default `apiServerUrl` of the local backend.
pub const LOCAL_API_SERVER_URL: &str = "https://127.0.0.1:6443";

/// Why the service could not start.
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
    #[error("configuring the Kubernetes client")]
    KubeConfig(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{0}")]
    ClusterIdentity(String),
    #[error("advertising the service over mDNS")]
    Mdns(#[source] DiscoveryError),
}

/// Where state lives.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    Local { data_dir: PathBuf },
    Kubernetes { namespace: String, kubeconfig: Option<PathBuf>, signer: SignerConfig },
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
    pub kube_request_timeout: Duration,
    pub limits: ServerLimits,
    /// LAN advertisement over mDNS (`--mdns-advertise`), off when `None`.
    pub mdns: Option<MdnsConfig>,
    /// `--metrics-address` as given (for messages).
    pub metrics_address: String,
    /// Where the admin listener binds; `None` when disabled.
    pub metrics_listen: Option<Vec<SocketAddr>>,
    pub protection: ProtectionConfig,
    /// How often the serving pair files are checked for changes.
    pub tls_reload_interval: Duration,
}

/// What `--mdns-advertise` announces, and where (spec section 12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsConfig {
    /// The port announced; `None` means the port the listener is bound to.
    pub port: Option<u16>,
    /// The interfaces announced on.
    pub interfaces: InterfaceSelection,
}

/// What `build()` returns: everything `serve()` needs (the state already protected as configured).
pub struct Runtime {
    pub state: AppState,
    pub serving: Option<ServingCertificate>,
}

impl ServeArgs {
    /// Validates the flags.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let aws = [&self.aws_access_key_id, &self.aws_secret_access_key, &self.aws_region, &self.aws_cluster_name];
        if aws.iter().any(|v| v.as_deref().is_some_and(|s| !s.is_empty())) {
            return Err(ConfigError::IamUnsupported);
        }
        let listen = server::parse_listen_address(&self.address).map_err(ConfigError::Invalid)?;
        let metrics_listen = match self.metrics_address.trim() {
            "" | "off" => None,
            address => Some(
                server::parse_listen_address(address)
                    .map_err(|e| ConfigError::Invalid(format!("--metrics-address: {e}")))?,
            ),
        };
        if self.tls_reload_interval.is_zero() || self.header_read_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "--tls-reload-interval and --header-read-timeout must be positive".into(),
            ));
        }
        for (value, field) in [(&self.cluster_id, "--cluster-id"), (&self.cluster_name, "--cluster-name")] {
            if let Some(value) = value {
                crate::identity::validate_dns1123_label(value, field)
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            }
        }
        if self.certificate_ttl < Duration::from_secs(600) {
            return Err(ConfigError::Invalid(
                "--certificate-ttl must be at least 10m (the Kubernetes signer's minimum)".into(),
            ));
        }
        let backend = match self.backend.backend {
            BackendKind::Local => BackendConfig::Local { data_dir: self.backend.data_dir.clone() },
            BackendKind::Kubernetes => BackendConfig::Kubernetes {
                namespace: self.backend.namespace.clone(),
                kubeconfig: self.backend.kubeconfig.clone(),
                signer: match (self.signer, &self.ca_cert, &self.ca_key) {
                    (SignerKind::Kubernetes, None, None) => {
                        SignerConfig::KubernetesCsr { timeout: self.signing_timeout }
                    }
                    (SignerKind::Kubernetes, _, _) => {
                        return Err(ConfigError::Invalid("--ca-cert and --ca-key need --signer local-ca".into()))
                    }
                    (SignerKind::LocalCa, Some(cert), Some(key)) => {
                        SignerConfig::LocalCa { cert: cert.clone(), key: key.clone() }
                    }
                    (SignerKind::LocalCa, _, _) => {
                        return Err(ConfigError::Invalid("--signer local-ca needs both --ca-cert and --ca-key".into()))
                    }
                },
            },
        };
        let persist_dir = match &backend {
            BackendConfig::Local { data_dir } => Some(data_dir.clone()),
            BackendConfig::Kubernetes { .. } => None,
        };
        let tls = self.enable_tls.then(|| ServingSource {
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
            persist_dir,
            extra_sans: self.tls_san.clone(),
        });
        let mdns = if self.mdns_advertise {
            Some(MdnsConfig { port: self.mdns_port, interfaces: InterfaceSelection::from_names(self.mdns_interface) })
        } else if self.mdns_port.is_some() || !self.mdns_interface.is_empty() {
            return Err(ConfigError::Invalid(
                "--mdns-port and --mdns-interface only apply with --mdns-advertise".into(),
            ));
        } else {
            None
        };
        let api_server_url = self
            .advertise_api_server_address
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(normalize_api_server_url)
            .transpose()?;
        Ok(Config {
            backend,
            address: self.address,
            listen,
            tls,
            cluster_id: self.cluster_id,
            cluster_name: self.cluster_name,
            authentication: self.enable_authentication,
            shared_token: self.shared_token == SharedTokenMode::Enabled,
            advertise_auth_address: self.advertise_auth_address.filter(|s| !s.trim().is_empty()),
            api_server_url,
            advertise_ca: !self.advertise_api_server_trusted_ca,
            certificate_ttl: self.certificate_ttl,
            kube_request_timeout: self.kube_request_timeout,
            limits: ServerLimits {
                max_connections: self.max_connections.max(1),
                header_read_timeout: self.header_read_timeout,
                ..ServerLimits::default()
            },
            mdns,
            metrics_address: self.metrics_address,
            metrics_listen,
            protection: ProtectionConfig {
                trusted_proxies: self.trusted_proxy,
                auth_failures_per_minute: self.auth_failure_limit,
                max_concurrent_issuances: self.max_concurrent_issuances.max(1),
                ..ProtectionConfig::default()
            },
            tls_reload_interval: self.tls_reload_interval,
        })
    }
}

impl Config {
    /// Opens the backend and builds the handlers' state and the serving certificate.
    pub async fn build(&self) -> Result<Runtime, ConfigError> {
        match &self.backend {
            BackendConfig::Local { data_dir } => {
                let state = self.build_local(data_dir)?;
                let serving = self
                    .tls
                    .as_ref()
                    .map(ServingCertificate::load_or_generate)
                    .transpose()
                    .map_err(ConfigError::Tls)?;
                Ok(Runtime { state, serving })
            }
            BackendConfig::Kubernetes { kubeconfig, .. } => {
                let kube_config =
                    crate::adapter::kube::load_config(kubeconfig.as_deref()).await.map_err(ConfigError::KubeConfig)?;
                self.build_with_kube(kube_config).await
            }
        }
    }

    /// Builds the Kubernetes backend over an injected client configuration (tests pass the
    /// fake API server's).
    pub async fn build_with_kube(&self, kube_config: kube::Config) -> Result<Runtime, ConfigError> {
        let BackendConfig::Kubernetes { namespace, signer, .. } = &self.backend else {
            return Err(ConfigError::Invalid("build_with_kube needs the Kubernetes backend".into()));
        };
        let store_err = |source| ConfigError::Store { backend: "kubernetes", source };
        crate::adapter::kube::set_request_timeout(self.kube_request_timeout);
        let api_source = ApiServerSource::from_config(&kube_config, self.api_server_url.clone(), !self.advertise_ca);
        let client = crate::adapter::kube::client(kube_config).map_err(|e| ConfigError::KubeConfig(Box::new(e)))?;
        let cluster =
            kube_cluster_identity(&client, namespace, self.cluster_id.as_deref(), self.cluster_name.as_deref()).await?;
        let tokens = KubeTokenCache::start(client.clone(), namespace);
        if !tokens.wait_synced(Duration::from_secs(10)).await {
            tracing::warn!(
                secret.name = "auth-token",
                "the token Secret is not synced yet; /readyz reports not ready until it is"
            );
        }
        let store = Arc::new(KubeStore::new(client.clone(), namespace.clone(), tokens.clone(), api_source));
        let signer: Arc<dyn Signer> = match signer {
            SignerConfig::KubernetesCsr { timeout } => Arc::new(KubeCsrSigner::new(client.clone(), *timeout)),
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
            .with_join_tokens(cluster.id.clone(), Arc::new(KubeJoinTokens::new(client.clone(), namespace.clone())));
        let issuer = Issuer::new(auth, signer, store, IssuePolicy { certificate_ttl: self.certificate_ttl });
        let serving = match &self.tls {
            Some(source) if source.cert_path.exists() && source.key_path.exists() => {
                Some(ServingCertificate::load_or_generate(source).map_err(ConfigError::Tls)?)
            }
            Some(source) => Some(shared_serving_certificate(&client, namespace, &source.extra_sans).await?),
            None => None,
        };
        let state = AppState::new(cluster, issuer).with_protection(Protection::new(self.protection.clone()));
        Ok(Runtime { state, serving })
    }

    fn build_local(&self, data_dir: &std::path::Path) -> Result<AppState, ConfigError> {
        let store_err = |source| ConfigError::Store { backend: "local", source };
        let url = self.api_server_url.clone().unwrap_or_else(|| LOCAL_API_SERVER_URL.to_owned());
        let store = Arc::new(LocalStore::open(data_dir, url, self.advertise_ca).map_err(store_err)?);
        let cluster =
            store.cluster_identity(self.cluster_id.as_deref(), self.cluster_name.as_deref()).map_err(store_err)?;
        let ca = Arc::new(store.load_or_create_ca(&cluster).map_err(store_err)?);
        let auth = Authenticator::new(self.authentication, store.clone())
            .with_shared_token(self.shared_token)
            .with_join_tokens(cluster.id.clone(), store.clone());
        let issuer = Issuer::new(auth, ca, store, IssuePolicy { certificate_ttl: self.certificate_ttl });
        Ok(AppState::new(cluster, issuer).with_protection(Protection::new(self.protection.clone())))
    }

    /// Runs the service until SIGTERM/SIGINT.
    pub async fn serve(self) -> Result<(), ConfigError> {
        self.start(server::shutdown_signal()).await?.run().await;
        Ok(())
    }

    /// Builds the runtime and binds the public and admin listeners; the returned `Started`
    /// serves both once `run()` is awaited, until `shutdown` resolves, then drains them.
    pub async fn start(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<Started, ConfigError> {
        let runtime = self.build().await?;
        let metrics = Metrics::new();
        let state = runtime.state.with_metrics(metrics.clone());
        let listener = server::bind(&self.listen)
            .await
            .map_err(|source| ConfigError::Bind { address: self.address.clone(), source })?;
        let address =
            listener.local_addr().map_err(|source| ConfigError::Bind { address: self.address.clone(), source })?;
        let admin_bind_err = |source| ConfigError::Bind { address: self.metrics_address.clone(), source };
        let admin = match &self.metrics_listen {
            Some(candidates) => {
                let listener = server::bind(candidates).await.map_err(admin_bind_err)?;
                let address = listener.local_addr().map_err(admin_bind_err)?;
                Some((listener, address))
            }
            None => None,
        };
        let admin_address = admin.as_ref().map(|(_, address)| *address);
        self.announce(&state.cluster, address, admin_address, runtime.serving.as_ref());
        let acceptor = match &runtime.serving {
            Some(serving) => {
                metrics.set_serving_certificate_expiry(serving.not_after);
                if let Some((cert, key)) = &serving.watched {
                    let metrics = metrics.clone();
                    crate::server::tls::spawn_reloader(
                        serving.resolver.clone(),
                        cert.clone(),
                        key.clone(),
                        self.tls_reload_interval,
                        move |not_after| metrics.set_serving_certificate_expiry(not_after),
                    );
                }
                Some(tokio_rustls::TlsAcceptor::from(serving.server_config().map_err(ConfigError::Tls)?))
            }
            None => None,
        };
        let advertisement = match &self.mdns {
            Some(mdns) => Some(
                Advertisement::start(&AdvertisementConfig {
                    cluster_id: state.cluster.id.to_string(),
                    cluster_name: state.cluster.name.to_string(),
                    port: mdns.port.unwrap_or(address.port()),
                    tls: runtime.serving.is_some(),
                    interfaces: mdns.interfaces.clone(),
                })
                .map_err(ConfigError::Mdns)?,
            ),
            None => None,
        };

        // One shutdown signal, observed by both listeners.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let public = server::serve(
            listener,
            crate::http::router(state.clone()),
            acceptor,
            self.limits.clone(),
            until_stopped(stopped.clone()),
        );
        let admin = admin.map(|(listener, _)| {
            let limits = ServerLimits {
                max_connections: ADMIN_MAX_CONNECTIONS,
                header_read_timeout: self.limits.header_read_timeout,
                shutdown_grace: Duration::from_secs(5),
                ..ServerLimits::default()
            };
            server::serve(listener, crate::http::admin_router(state), None, limits, until_stopped(stopped))
        });
        let run = async move {
            match admin {
                Some(admin) => {
                    tokio::join!(public, admin);
                }
                None => public.await,
            }
            if let Some(advertisement) = advertisement {
                advertisement.stop().await;
            }
        };
        Ok(Started { address, admin_address, metrics, run: Box::pin(run) })
    }

    fn announce(
        &self,
        cluster: &ClusterIdentity,
        addr: SocketAddr,
        admin: Option<SocketAddr>,
        serving: Option<&ServingCertificate>,
    ) {
        match admin {
            Some(admin) => tracing::info!(
                admin.listen = %admin,
                "serving /metrics, /healthz and /readyz on http://{admin} (keep this port private)"
            ),
            None => tracing::info!("the admin listener is disabled (--metrics-address off)"),
        }
        if !self.shared_token {
            tracing::info!("the shared token is disabled (--shared-token=disabled): only join tokens authenticate");
        }
        if !self.authentication {
            tracing::warn!("AUTHENTICATION IS DISABLED (--enable-authentication=false): anyone who reaches this port gets a client certificate for the API server");
        }
        match serving {
            Some(serving) => {
                tracing::info!(
                    listen = %addr,
                    cluster.id = %cluster.id,
                    cluster.name = %cluster.name,
                    tls.pin = %serving.pin,
                    "serving HTTPS on {addr}; peers can pin this certificate with --ca-hash {}", serving.pin
                );
                let url = auth_url(self.advertise_auth_address.as_deref(), &self.address)
                    .unwrap_or_else(|| format!("https://<this-host>:{}", addr.port()));
                tracing::info!(
                    auth.url = %url,
                    tls.pin = %serving.pin,
                    "peers join with: liqo-auth peer --auth-url {url} --token-file <file> --ca-hash {} (make the token with: liqo-auth token create --print-peer-command)",
                    serving.pin
                );
            }
            None => {
                tracing::info!(listen = %addr, cluster.id = %cluster.id, cluster.name = %cluster.name, "serving plain HTTP on {addr}");
                if !addr.ip().is_loopback() {
                    tracing::warn!(listen = %addr, "serving plain HTTP on a non-loopback address: only do this behind an Ingress that terminates TLS");
                }
            }
        }
    }
}

/// Open connections allowed on the admin listener (the kubelet and one or two scrapers).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// A service with its listeners bound, ready to `run()`.
pub struct Started {
    /// The public listener's address (the real port when `--address` asked for port 0).
    pub address: SocketAddr,
    /// The admin listener's address, when enabled.
    pub admin_address: Option<SocketAddr>,
    /// The metrics both listeners record into.
    pub metrics: Metrics,
    run: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Started {
    /// Serves until the shutdown future given to `Config::start` resolves and both listeners
    /// have drained.
    pub async fn run(self) {
        self.run.await;
    }
}

/// Secret holding the generated serving pair shared by every replica (so peers see one pin).
pub const SERVING_CERT_SECRET: &str = "liqo-auth-serving-cert";

/// The cluster identity on the Kubernetes backend: the flags, else ConfigMap
/// `liqo-clusterid-configmap` (keys `CLUSTER_ID`, `CLUSTER_NAME`) as Liqo installs it.
pub async fn kube_cluster_identity(
    client: &kube::Client,
    namespace: &str,
    id_flag: Option<&str>,
    name_flag: Option<&str>,
) -> Result<ClusterIdentity, ConfigError> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (mut id, mut name) = (id_flag.map(str::to_owned), name_flag.map(str::to_owned));
    if id.is_none() || name.is_none() {
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), namespace);
        let configmap = crate::adapter::kube::call_opt(
            "reading ConfigMap liqo-clusterid-configmap",
            api.get(crate::adapter::kube::CLUSTER_ID_CONFIGMAP),
        )
        .await
        .map_err(|e| ConfigError::ClusterIdentity(crate::error::error_chain(&e)))?;
        let data = configmap.and_then(|cm| cm.data).unwrap_or_default();
        id = id.or_else(|| data.get("CLUSTER_ID").cloned());
        name = name.or_else(|| data.get("CLUSTER_NAME").cloned());
    }
    let missing = |what: &str| {
        ConfigError::ClusterIdentity(format!(
            "no cluster {what}: pass --cluster-id and --cluster-name, or create ConfigMap liqo-clusterid-configmap with keys CLUSTER_ID and CLUSTER_NAME in namespace {namespace}"
        ))
    };
    let id = id.filter(|v| !v.is_empty()).ok_or_else(|| missing("ID"))?;
    let name = name.filter(|v| !v.is_empty()).ok_or_else(|| missing("name"))?;
    let invalid = |e: crate::identity::ClusterValueError| ConfigError::ClusterIdentity(e.to_string());
    Ok(ClusterIdentity {
        id: ClusterId::parse(&id).map_err(invalid)?,
        name: ClusterName::parse(&name).map_err(invalid)?,
    })
}

/// Gets or creates the generated serving pair in a Secret, so every replica serves the same
/// certificate and keeps it across restarts.
async fn shared_serving_certificate(
    client: &kube::Client,
    namespace: &str,
    sans: &[String],
) -> Result<ServingCertificate, ConfigError> {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::ByteString;
    let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
    let store_err =
        |e: crate::adapter::kube::KubeFailure| ConfigError::Store { backend: "kubernetes", source: e.into() };
    let pair_of = |secret: &Secret| {
        let data = secret.data.as_ref()?;
        let text = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok());
        Some((text("tls.crt")?, text("tls.key")?))
    };
    let existing =
        crate::adapter::kube::call_opt("reading the serving certificate Secret", api.get(SERVING_CERT_SECRET))
            .await
            .map_err(store_err)?;
    if let Some((cert, key)) = existing.as_ref().and_then(pair_of) {
        if ServingCertificate::reusable(&cert, sans) {
            return ServingCertificate::from_pem_pair(&cert, &key).map_err(ConfigError::Tls);
        }
    }
    let (cert, key) = crate::server::tls::generate_self_signed(sans).map_err(ConfigError::Tls)?;
    let mut secret = existing.unwrap_or_default();
    secret.metadata.name = Some(SERVING_CERT_SECRET.into());
    secret.type_ = Some("kubernetes.io/tls".into());
    secret.data = Some(std::collections::BTreeMap::from([
        ("tls.crt".to_owned(), ByteString(cert.clone().into_bytes())),
        ("tls.key".to_owned(), ByteString(key.clone().into_bytes())),
    ]));
    let pp = kube::api::PostParams::default();
    let written = if secret.metadata.resource_version.is_some() {
        crate::adapter::kube::call(
            "replacing the serving certificate Secret",
            api.replace(SERVING_CERT_SECRET, &pp, &secret),
        )
        .await
    } else {
        crate::adapter::kube::call("creating the serving certificate Secret", api.create(&pp, &secret)).await
    };
    match written {
        Ok(_) => {
            tracing::info!(
                secret.name = SERVING_CERT_SECRET,
                "generated a self-signed serving certificate shared by all replicas"
            );
            ServingCertificate::from_pem_pair(&cert, &key).map_err(ConfigError::Tls)
        }
        // Another replica wrote first: serve what it wrote.
        Err(failure)
            if failure.is_already_exists() || matches!(failure, crate::adapter::kube::KubeFailure::Conflict { .. }) =>
        {
            let secret =
                crate::adapter::kube::call("reading the serving certificate Secret", api.get(SERVING_CERT_SECRET))
                    .await
                    .map_err(store_err)?;
            let (cert, key) = pair_of(&secret)
                .ok_or_else(|| ConfigError::Invalid(format!("Secret {SERVING_CERT_SECRET} has no tls.crt/tls.key")))?;
            ServingCertificate::from_pem_pair(&cert, &key).map_err(ConfigError::Tls)
        }
        Err(failure) => Err(store_err(failure)),
    }
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

/// Normalises `--advertise-api-server-address`: adds `https://` when no scheme is given and
/// brackets a bare IPv6 address (spec 11, R12).
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

    fn serve_args(extra: &[&str]) -> ServeArgs {
        use clap::Parser;
        let args =
            crate::cli::Args::try_parse_from(["liqo-auth", "serve"].iter().chain(extra).copied()).expect("valid flags");
        match args.command {
            crate::cli::Command::Serve(serve) => *serve,
            _ => unreachable!("serve was parsed"),
        }
    }

    #[test]
    fn mdns_advertisement_is_configured_only_when_asked_for() {
        assert_eq!(serve_args(&[]).into_config().expect("config").mdns, None);
        let config = serve_args(&["--mdns-advertise", "--mdns-interface", "eth1"]).into_config().expect("config");
        assert_eq!(
            config.mdns,
            Some(MdnsConfig { port: None, interfaces: InterfaceSelection::Named(vec!["eth1".into()]) })
        );
    }

    #[test]
    fn mdns_port_without_mdns_advertise_is_refused() {
        let result = serve_args(&["--mdns-port", "30443"]).into_config();
        assert!(matches!(result, Err(ConfigError::Invalid(ref m)) if m.contains("--mdns-advertise")), "{result:?}");
    }

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
}
