//! `serve` flags and their validation into a `Config`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args as ClapArgs, ValueEnum};

use crate::cli::{parse_cidr, parse_duration, BackendArgs, BackendKind};
use crate::config::{normalize_api_server_url, BackendConfig, Config, ConfigError, MdnsConfig, SignerConfig};
use crate::discovery::InterfaceSelection;
use crate::http::ProtectionConfig;
use crate::server::tls::ServingSource;
use crate::server::{self, ServerLimits};

/// The admin listener when `--metrics-address` is not given.
pub const DEFAULT_METRICS_ADDRESS: &str = ":9090";

/// Whether `serve` accepts the shared token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SharedTokenMode {
    Enabled,
    Disabled,
}

/// Signer selection (Kubernetes backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignerKind {
    Kubernetes,
    LocalCa,
}

/// Flags the reference chart passes that mean nothing here: accepted so the chart works
/// unchanged, hidden from `--help`, and warned about at start when given another value.
#[derive(Debug, Clone, ClapArgs)]
pub struct CompatArgs {
    /// Informer resync of the reference; a watch needs no resync.
    #[arg(long = "resync-period", env = "LIQO_AUTH_RESYNC_PERIOD", default_value = "30s", value_parser = parse_duration, hide = true)]
    pub resync_period: Duration,
    /// Client-side throttling of the reference; kube-rs does none.
    #[arg(long = "client-qps", env = "LIQO_AUTH_CLIENT_QPS", default_value_t = 100.0, hide = true)]
    pub client_qps: f32,
    /// Client-side throttling of the reference; kube-rs does none.
    #[arg(long = "client-max-burst", env = "LIQO_AUTH_CLIENT_MAX_BURST", default_value_t = 100, hide = true)]
    pub client_max_burst: u32,
    /// A klog flag given to `auth-service` (Go-style command line), as `--flag=value`: checked
    /// and warned about at start (see `cli/goflags.rs`).
    #[arg(long = "ignored-go-flag", value_name = "FLAG", hide = true, action = ArgAction::Append)]
    pub ignored_go_flags: Vec<String>,
}

impl CompatArgs {
    /// The compatibility flags given a value other than their default, as `--flag=value`.
    pub fn non_default(&self) -> Vec<String> {
        let mut given = Vec::new();
        if self.resync_period != Duration::from_secs(30) {
            given.push(format!("--resync-period={:?}", self.resync_period));
        }
        if self.client_qps != 100.0 {
            given.push(format!("--client-qps={}", self.client_qps));
        }
        if self.client_max_burst != 100 {
            given.push(format!("--client-max-burst={}", self.client_max_burst));
        }
        given.extend(self.ignored_go_flags.iter().cloned());
        given
    }
}

/// `serve` flags.
/// Where `serve` looks for the serving pair when `--cert-path`/`--key-path` are not given
/// (the reference's paths, filled by Liqo's `cert-creator` init container).
pub const DEFAULT_CERT_PATH: &str = "/certs/cert.pem";
/// See [`DEFAULT_CERT_PATH`].
pub const DEFAULT_KEY_PATH: &str = "/certs/key.pem";

#[derive(Debug, Clone, ClapArgs)]
pub struct ServeArgs {
    #[command(flatten, next_help_heading = "Backend")]
    pub backend: BackendArgs,
    /// Listen address (`:5000` means every interface).
    #[arg(help_heading = "Server", long, env = "LIQO_AUTH_ADDRESS", default_value = ":5000")]
    pub address: String,
    /// Serve HTTPS (bare flag or `=true|false`).
    #[arg(help_heading = "TLS", long = "enable-tls", env = "LIQO_AUTH_ENABLE_TLS", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_tls: bool,
    /// TLS certificate (PEM) [default: /certs/cert.pem]. At the default paths a missing pair is
    /// generated (self-signed P-256); a path given here must exist unless `--generate-missing`.
    #[arg(help_heading = "TLS", long = "cert-path", env = "LIQO_AUTH_CERT_PATH")]
    pub cert_path: Option<PathBuf>,
    /// TLS private key (PEM) [default: /certs/key.pem].
    #[arg(help_heading = "TLS", long = "key-path", env = "LIQO_AUTH_KEY_PATH")]
    pub key_path: Option<PathBuf>,
    /// Serve a generated self-signed pair while an explicit `--cert-path`/`--key-path` is absent,
    /// and switch to the files when they appear (a Secret mounted `optional: true`, cert-manager).
    #[arg(help_heading = "TLS", long = "generate-missing", env = "LIQO_AUTH_GENERATE_MISSING", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub generate_missing: bool,
    /// Extra subject alternative name for a generated serving certificate (repeatable).
    #[arg(help_heading = "TLS", long = "tls-san", env = "LIQO_AUTH_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// This cluster's ID (DNS-1123 label; Liqo uses a UUID).
    #[arg(help_heading = "Server", long = "cluster-id", env = "LIQO_AUTH_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// This cluster's name (DNS-1123 label).
    #[arg(help_heading = "Server", long = "cluster-name", env = "LIQO_AUTH_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Check the token (`=false` accepts every caller; never do this outside a lab).
    #[arg(help_heading = "Server", long = "enable-authentication", env = "LIQO_AUTH_ENABLE_AUTHENTICATION", num_args = 0..=1, require_equals = true, default_value_t = true, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_authentication: bool,
    /// API server URL given to peers (NAT, load balancers, public names); `https://` is added when missing.
    #[arg(
        help_heading = "Kubernetes and signing",
        long = "advertise-api-server-address",
        env = "LIQO_AUTH_ADVERTISE_API_SERVER_ADDRESS"
    )]
    pub advertise_api_server_address: Option<String>,
    /// Do not send `apiServerCA`: peers trust the API server through their system roots.
    #[arg(help_heading = "Kubernetes and signing", long = "advertise-api-server-trusted-ca", env = "LIQO_AUTH_ADVERTISE_API_SERVER_TRUSTED_CA", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub advertise_api_server_trusted_ca: bool,
    /// Lifetime of issued certificates (Go duration, e.g. `8760h`).
    #[arg(help_heading = "Server", long = "certificate-ttl", env = "LIQO_AUTH_CERTIFICATE_TTL", default_value = "8760h", value_parser = parse_duration)]
    pub certificate_ttl: Duration,
    /// How long after its notAfter a certificate may still renew itself
    /// (`POST /identity/certificate/renew`); 0 means an expired certificate never renews.
    #[arg(help_heading = "Server", long = "renewal-grace-after-expiry", env = "LIQO_AUTH_RENEWAL_GRACE_AFTER_EXPIRY", default_value = "0s", value_parser = parse_duration)]
    pub renewal_grace_after_expiry: Duration,
    #[command(flatten)]
    pub compat: CompatArgs,
    /// Reference IAM mode (not supported: refused at start when set).
    #[arg(
        help_heading = "Compatibility (reference flags)",
        long = "aws-access-key-id",
        env = "LIQO_AUTH_AWS_ACCESS_KEY_ID",
        hide_env_values = true
    )]
    pub aws_access_key_id: Option<String>,
    /// Reference IAM mode (not supported: refused at start when set).
    #[arg(
        help_heading = "Compatibility (reference flags)",
        long = "aws-secret-access-key",
        env = "LIQO_AUTH_AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub aws_secret_access_key: Option<String>,
    /// Reference IAM mode (not supported: refused at start when set).
    #[arg(help_heading = "Compatibility (reference flags)", long = "aws-region", env = "LIQO_AUTH_AWS_REGION")]
    pub aws_region: Option<String>,
    /// Reference IAM mode (not supported: refused at start when set).
    #[arg(
        help_heading = "Compatibility (reference flags)",
        long = "aws-cluster-name",
        env = "LIQO_AUTH_AWS_CLUSTER_NAME"
    )]
    pub aws_cluster_name: Option<String>,
    /// Who signs peers' certificates on the Kubernetes backend: the cluster's CSR API, or a mounted CA.
    #[arg(help_heading = "Kubernetes and signing", long, env = "LIQO_AUTH_SIGNER", value_enum, default_value_t = SignerKind::Kubernetes)]
    pub signer: SignerKind,
    /// CA certificate (PEM) for `--signer local-ca` (e.g. the kubeadm CA).
    #[arg(help_heading = "Kubernetes and signing", long = "ca-cert", env = "LIQO_AUTH_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// CA private key (PEM) for `--signer local-ca`.
    #[arg(help_heading = "Kubernetes and signing", long = "ca-key", env = "LIQO_AUTH_CA_KEY")]
    pub ca_key: Option<PathBuf>,
    /// Longest wait for the cluster signer to issue a certificate.
    #[arg(help_heading = "Kubernetes and signing", long = "signing-timeout", env = "LIQO_AUTH_SIGNING_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub signing_timeout: Duration,
    /// Deadline of each Kubernetes API request.
    #[arg(help_heading = "Kubernetes and signing", long = "kube-request-timeout", env = "LIQO_AUTH_KUBE_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub kube_request_timeout: Duration,
    /// Accept the shared token (`disabled` once every peer uses join tokens).
    #[arg(help_heading = "Server", long = "shared-token", env = "LIQO_AUTH_SHARED_TOKEN", value_enum, default_value_t = SharedTokenMode::Enabled)]
    pub shared_token: SharedTokenMode,
    /// Where peers reach this service (HOST[:PORT]) behind NAT, an Ingress or a load balancer: a
    /// generated serving certificate names this host, and the `liqo-auth peer` command logged at
    /// start uses it.
    #[arg(help_heading = "Server", long = "advertise-auth-address", env = "LIQO_AUTH_ADVERTISE_AUTH_ADDRESS")]
    pub advertise_auth_address: Option<String>,
    /// Maximum open connections on the public listener; when all are taken, the one idle the
    /// longest is closed for a new peer. Each TLS connection costs about 50 KiB: 1024 of them fit
    /// the 128 MiB memory limit of deploy/ with room to spare.
    #[arg(
        help_heading = "Limits",
        long = "max-connections",
        env = "LIQO_AUTH_MAX_CONNECTIONS",
        default_value_t = 1024
    )]
    pub max_connections: usize,
    /// Maximum open connections from one source address (0: no cap). Behind an Ingress or a
    /// load balancer every peer shares its address: raise this or set 0 there.
    #[arg(
        help_heading = "Limits",
        long = "max-connections-per-source",
        env = "LIQO_AUTH_MAX_CONNECTIONS_PER_SOURCE",
        default_value_t = 64
    )]
    pub max_connections_per_source: usize,
    /// Requests in flight on the public listener, over all connections and HTTP/2 streams; more
    /// get 503 with Retry-After at once.
    #[arg(
        help_heading = "Limits",
        long = "max-requests-in-flight",
        env = "LIQO_AUTH_MAX_REQUESTS_IN_FLIGHT",
        default_value_t = 256
    )]
    pub max_requests_in_flight: usize,
    /// Longest TLS handshake, from accept.
    #[arg(help_heading = "Limits", long = "tls-handshake-timeout", env = "LIQO_AUTH_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// Longest time a connection may stay open with no request in flight (HTTP/1.1 keep-alive,
    /// HTTP/2 without streams). Longer than Go's 90 s client idle time, so a Go client never
    /// reuses a connection the server is closing.
    #[arg(help_heading = "Limits", long = "idle-timeout", env = "LIQO_AUTH_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Longest time a client may take to send a request body, from its first byte to its end;
    /// then 408 with Retry-After.
    #[arg(help_heading = "Limits", long = "body-read-timeout", env = "LIQO_AUTH_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// Announce this service on the LAN over mDNS as `<cluster-id>._liqo_auth._tcp.local.` (bare
    /// flag or `=true|false`).
    #[arg(help_heading = "Observability and discovery", long = "mdns-advertise", env = "LIQO_AUTH_MDNS_ADVERTISE", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub mdns_advertise: bool,
    /// Announce on this interface only (repeatable); by default on every non-loopback interface
    /// outside pod networks.
    #[arg(
        help_heading = "Observability and discovery",
        long = "mdns-interface",
        env = "LIQO_AUTH_MDNS_INTERFACE",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub mdns_interface: Vec<String>,
    /// Port announced over mDNS, the one peers reach (e.g. the NodePort); default: the listen port.
    #[arg(help_heading = "Observability and discovery", long = "mdns-port", env = "LIQO_AUTH_MDNS_PORT", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub mdns_port: Option<u16>,
    /// Admin listener for /metrics, /healthz and /readyz in plain HTTP (`""` or `off` disables
    /// it) [default: :9090]. When the default cannot bind, serve warns and goes on without it; an
    /// address given here (or in the environment) that cannot bind stops serve.
    #[arg(
        help_heading = "Observability and discovery",
        long = "metrics-address",
        env = "LIQO_AUTH_METRICS_ADDRESS",
        value_name = "ADDRESS"
    )]
    pub metrics_address: Option<String>,
    /// Believe `X-Forwarded-For` from peers in this CIDR, e.g. the Ingress controller's pods (repeatable).
    #[arg(help_heading = "Limits", long = "trusted-proxy", env = "LIQO_AUTH_TRUSTED_PROXY", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxy: Vec<ipnet::IpNet>,
    /// Failed authentications allowed per source address and minute; further failures get 429, a valid token is never refused (0 disables).
    #[arg(help_heading = "Limits", long = "auth-failure-limit", env = "LIQO_AUTH_AUTH_FAILURE_LIMIT", default_value_t = crate::http::protect::DEFAULT_AUTH_FAILURES_PER_MINUTE)]
    pub auth_failure_limit: u32,
    /// Identity requests processed at once; more wait for a slot (up to 30s, then 503 with Retry-After).
    #[arg(help_heading = "Limits", long = "max-concurrent-issuances", env = "LIQO_AUTH_MAX_CONCURRENT_ISSUANCES", default_value_t = crate::http::protect::DEFAULT_MAX_CONCURRENT_ISSUANCES)]
    pub max_concurrent_issuances: usize,
    /// Longest time a client may take to send a request head: the first one from the end of the
    /// TLS handshake (or from accept), later ones from their first byte.
    #[arg(help_heading = "Limits", long = "header-read-timeout", env = "LIQO_AUTH_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// How often --cert-path/--key-path are checked for a new pair.
    #[arg(help_heading = "TLS", long = "tls-reload-interval", env = "LIQO_AUTH_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
}

impl ServeArgs {
    /// Validates the flags.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let aws = [&self.aws_access_key_id, &self.aws_secret_access_key, &self.aws_region, &self.aws_cluster_name];
        if aws.iter().any(|v| v.as_deref().is_some_and(|s| !s.is_empty())) {
            return Err(ConfigError::IamUnsupported);
        }
        let listen = server::parse_listen_address(&self.address).map_err(ConfigError::Invalid)?;
        let metrics_required = self.metrics_address.is_some();
        let metrics_address = self.metrics_address.unwrap_or_else(|| DEFAULT_METRICS_ADDRESS.to_owned());
        let metrics_listen = match metrics_address.trim() {
            "" | "off" => None,
            address => Some(
                server::parse_listen_address(address)
                    .map_err(|e| ConfigError::Invalid(format!("--metrics-address: {e}")))?,
            ),
        };
        let durations = [
            (self.tls_reload_interval, "--tls-reload-interval"),
            (self.header_read_timeout, "--header-read-timeout"),
            (self.tls_handshake_timeout, "--tls-handshake-timeout"),
            (self.idle_timeout, "--idle-timeout"),
            (self.body_read_timeout, "--body-read-timeout"),
        ];
        if let Some((_, flag)) = durations.iter().find(|(value, _)| value.is_zero()) {
            return Err(ConfigError::Invalid(format!("{flag} must be positive")));
        }
        for (value, field) in [(&self.cluster_id, "--cluster-id"), (&self.cluster_name, "--cluster-name")] {
            if let Some(value) = value {
                crate::identity::validate_dns1123_label(value, field)
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            }
        }
        // The Kubernetes CSR API refuses expirationSeconds below 600; a CA of our own signs
        // shorter lifetimes, which short-lived identities renewed by `agent` use.
        let kube_signer = self.backend.backend == BackendKind::Kubernetes && self.signer == SignerKind::Kubernetes;
        if kube_signer && self.certificate_ttl < Duration::from_secs(600) {
            return Err(ConfigError::Invalid(
                "--certificate-ttl must be at least 10m with the Kubernetes CSR signer (its minimum)".into(),
            ));
        }
        if self.certificate_ttl < Duration::from_secs(10) {
            return Err(ConfigError::Invalid("--certificate-ttl must be at least 10s".into()));
        }
        let backend = self.backend.to_config_with_timeout(self.kube_request_timeout);
        let signer = match (self.signer, &self.ca_cert, &self.ca_key) {
            (SignerKind::Kubernetes, None, None) => SignerConfig::KubernetesCsr { timeout: self.signing_timeout },
            (SignerKind::Kubernetes, _, _) => {
                return Err(ConfigError::Invalid("--ca-cert and --ca-key need --signer local-ca".into()))
            }
            (SignerKind::LocalCa, Some(cert), Some(key)) => {
                SignerConfig::LocalCa { cert: cert.clone(), key: key.clone() }
            }
            (SignerKind::LocalCa, _, _) => {
                return Err(ConfigError::Invalid("--signer local-ca needs both --ca-cert and --ca-key".into()))
            }
        };
        if self.backend.backend == BackendKind::Local && self.signer == SignerKind::LocalCa {
            return Err(ConfigError::Invalid(
                "--signer local-ca is for the Kubernetes backend; the local backend signs with its own CA".into(),
            ));
        }
        let persist_dir = match &backend {
            BackendConfig::Local { data_dir } => Some(data_dir.clone()),
            BackendConfig::Kubernetes { .. } => None,
        };
        // Only the default paths generate a missing pair unasked: a path the operator named that
        // does not exist is a mistake (a typo, a Secret not mounted) unless `--generate-missing`.
        let explicit_paths = self.cert_path.is_some() || self.key_path.is_some();
        let tls = self.enable_tls.then(|| ServingSource {
            cert_path: self.cert_path.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CERT_PATH)),
            key_path: self.key_path.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_KEY_PATH)),
            generate_missing: self.generate_missing || !explicit_paths,
            persist_dir,
            extra_sans: sans_with_advertised_host(&self.tls_san, self.advertise_auth_address.as_deref()),
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
            signer,
            ignored_flags: self.compat.non_default(),
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
            renewal_grace_after_expiry: self.renewal_grace_after_expiry,
            limits: ServerLimits {
                max_connections: self.max_connections.max(1),
                max_connections_per_source: self.max_connections_per_source,
                max_requests_in_flight: self.max_requests_in_flight.max(1),
                tls_handshake_timeout: self.tls_handshake_timeout,
                header_read_timeout: self.header_read_timeout,
                idle_timeout: self.idle_timeout,
                body_read_timeout: self.body_read_timeout,
                ..ServerLimits::default()
            },
            mdns,
            metrics_address,
            metrics_listen,
            metrics_required,
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

/// `--tls-san` plus the host of `--advertise-auth-address`: a generated certificate then names
/// the host peers actually dial, so a peer that verifies by name (not by pin) accepts it.
fn sans_with_advertised_host(sans: &[String], advertised: Option<&str>) -> Vec<String> {
    let mut sans = sans.to_vec();
    let host = advertised.and_then(|text| crate::config::auth_url(Some(text), "")).and_then(|url| {
        let authority = url.trim_start_matches("https://");
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
        };
        (!host.is_empty()).then(|| host.to_owned())
    });
    if let Some(host) = host {
        if !sans.contains(&host) {
            sans.push(host);
        }
    }
    sans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MdnsConfig;

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
    fn the_advertised_host_is_added_to_the_generated_certificate_names() {
        let config = serve_args(&["--enable-tls", "--advertise-auth-address", "auth.example.com:30443"])
            .into_config()
            .expect("config");
        assert_eq!(config.tls.expect("tls").extra_sans, ["auth.example.com"]);
        let sans = sans_with_advertised_host(&["10.0.0.1".into()], Some("fd00::1"));
        assert_eq!(sans, ["10.0.0.1", "fd00::1"]);
        let sans = sans_with_advertised_host(&["auth.example.com".into()], Some("https://auth.example.com/"));
        assert_eq!(sans, ["auth.example.com"], "no duplicate");
    }

    #[test]
    fn only_the_default_certificate_paths_generate_a_missing_pair_unasked() {
        let tls = |extra: &[&str]| {
            let args = [&["--enable-tls"], extra].concat();
            serve_args(&args).into_config().expect("config").tls.expect("tls")
        };
        let default = tls(&[]);
        assert_eq!(
            (default.cert_path.to_str(), default.key_path.to_str()),
            (Some(DEFAULT_CERT_PATH), Some(DEFAULT_KEY_PATH))
        );
        assert!(default.generate_missing, "the reference's paths: generate when absent");
        assert!(!tls(&["--cert-path=/x/tls.crt"]).generate_missing, "an explicit path must exist");
        assert!(!tls(&["--key-path", "/x/tls.key"]).generate_missing);
        let asked = tls(&["--cert-path=/x/tls.crt", "--key-path=/x/tls.key", "--generate-missing"]);
        assert!(asked.generate_missing && asked.cert_path.ends_with("tls.crt"));
        assert!(!tls(&["--cert-path=/x/tls.crt", "--generate-missing=false"]).generate_missing);
    }

    #[test]
    fn only_a_given_metrics_address_is_required_to_bind() {
        let default = serve_args(&[]).into_config().expect("config");
        assert_eq!((default.metrics_address.as_str(), default.metrics_required), (":9090", false));
        let given = serve_args(&["--metrics-address", ":9090"]).into_config().expect("config");
        assert_eq!((given.metrics_address.as_str(), given.metrics_required), (":9090", true));
        let off = serve_args(&["--metrics-address=off"]).into_config().expect("config");
        assert!(off.metrics_listen.is_none());
    }

    #[test]
    fn compatibility_flags_are_hidden_and_reported_only_when_changed() {
        use clap::CommandFactory;
        let mut command = crate::cli::Args::command();
        let help = command.find_subcommand_mut("serve").expect("serve").render_long_help().to_string();
        for flag in ["--resync-period", "--client-qps", "--client-max-burst"] {
            assert!(!help.contains(flag), "{flag} is hidden from serve --help");
        }
        assert!(help.contains("--certificate-ttl"), "real flags are still shown");
        assert!(serve_args(&[]).into_config().expect("config").ignored_flags.is_empty());
        let config = serve_args(&["--resync-period=30s", "--client-qps", "50", "--client-max-burst=7"])
            .into_config()
            .expect("the reference chart's flags are accepted");
        assert_eq!(config.ignored_flags, ["--client-qps=50", "--client-max-burst=7"]);
    }
}
