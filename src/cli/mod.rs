//! Command line: clap arguments, every flag also settable as `LIQO_AUTH_<FLAG>`.
//!
//! `serve` keeps the reference `auth-service` flag names, defaults and meanings (spec section 6)
//! so the binary is a drop-in replacement in the reference Helm chart.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args as ClapArgs, Parser, Subcommand, ValueEnum};

pub use crate::telemetry::LogFormat;

/// liqo-auth: identity issuance for Liqo cluster peering.
#[derive(Debug, Parser)]
#[command(name = "liqo-auth", version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Logging flags, accepted by every subcommand.
#[derive(Debug, Clone, ClapArgs)]
pub struct LogArgs {
    /// Log level: error, warn, info, debug, trace, or a klog verbosity number (0-1 info, 2-3 debug, 4+ trace).
    #[arg(short = 'v', long = "log-level", global = true, env = "LIQO_AUTH_LOG_LEVEL", default_value = "info")]
    pub level: String,
    /// Log format.
    #[arg(long = "log-format", global = true, env = "LIQO_AUTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub format: LogFormat,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the authentication service.
    Serve(Box<ServeArgs>),
    /// Manage tokens: the shared token and per-peer join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List peers and remove them (unpeering).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Walk the path a peering takes (DNS, TCP, TLS, /ids, API server) and explain failures.
    Check(crate::client::check::CheckArgs),
    /// Find liqo-auth services on the LAN (mDNS), read their /ids and print how to peer.
    Discover(crate::client::discover::DiscoverArgs),
    /// Obtain an identity from another cluster's liqo-auth service and store it.
    Peer(Box<crate::client::peer::PeerArgs>),
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print the current shared token on the last line of stdout.
    Show(BackendArgs),
    /// Create a join token (expiring, use-limited, optionally bound to one peer) and print it.
    Create(Box<TokenCreateArgs>),
    /// List join tokens: ID, binding, expiry, uses left, status (never the tokens).
    List(BackendArgs),
    /// Revoke one join token: it fails from now on.
    Revoke(TokenRevokeArgs),
    /// Replace the join-token signing key: every outstanding join token stops working.
    RotateKey(BackendArgs),
}

/// `token create` flags.
#[derive(Debug, Clone, ClapArgs)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// How long the token is valid (Go duration).
    #[arg(long, env = "LIQO_AUTH_TTL", default_value = "24h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Bind the token to this remote cluster ID: only a request for that cluster may use it, and
    /// it may rotate that cluster's identity. (Env LIQO_AUTH_TOKEN_CLUSTER_ID, not
    /// LIQO_AUTH_CLUSTER_ID, which is `serve`'s own cluster ID.)
    #[arg(long = "cluster-id", env = "LIQO_AUTH_TOKEN_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// How many certificates the token may obtain.
    #[arg(long = "max-uses", env = "LIQO_AUTH_MAX_USES", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_uses: u32,
    /// Print the `liqo-auth peer` command for the remote operator instead of the bare token (the
    /// token goes to a 0600 file).
    #[arg(long = "print-peer-command", env = "LIQO_AUTH_PRINT_PEER_COMMAND", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub print_peer_command: bool,
    /// Where peers reach this service (HOST[:PORT], default port 443), for NAT, Ingress and load
    /// balancer names. Default: the host and port of --address.
    #[arg(long = "advertise-auth-address", env = "LIQO_AUTH_ADVERTISE_AUTH_ADDRESS")]
    pub advertise_auth_address: Option<String>,
    /// The serving address of `serve`, used when --advertise-auth-address is absent.
    #[arg(long, env = "LIQO_AUTH_ADDRESS", default_value = ":5000")]
    pub address: String,
    /// Serving certificate to pin (`--ca-hash`). Default: `<data-dir>/tls.crt` (local backend) or
    /// Secret `liqo-auth-serving-cert` (Kubernetes backend).
    #[arg(long = "cert-path", env = "LIQO_AUTH_CERT_PATH")]
    pub cert_path: Option<PathBuf>,
    /// With --print-peer-command: write the token here (default `./liqo-auth-join-token-<id>`).
    #[arg(long = "token-out", env = "LIQO_AUTH_TOKEN_OUT")]
    pub token_out: Option<PathBuf>,
    /// This cluster's ID (the tokens' issuer), when neither the data dir nor ConfigMap
    /// `liqo-clusterid-configmap` has it; must equal `serve --cluster-id`.
    #[arg(long = "local-cluster-id", env = "LIQO_AUTH_LOCAL_CLUSTER_ID")]
    pub local_cluster_id: Option<String>,
}

/// `token revoke` arguments.
#[derive(Debug, Clone, ClapArgs)]
pub struct TokenRevokeArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The token ID, as shown by `token list`.
    pub id: String,
}

/// `tenant` subcommands.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// List peers: cluster ID and name, tenant namespace, certificate serial and expiry, issue time.
    List(BackendArgs),
    /// Unpeer: remove the peer's RoleBindings, stored certificate and origin token.
    Remove(TenantRemoveArgs),
}

/// `tenant remove` arguments.
#[derive(Debug, Clone, ClapArgs)]
pub struct TenantRemoveArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The peer's cluster ID.
    pub cluster_id: String,
    /// Delete the tenant namespace too (Kubernetes backend; it may hold objects Liqo made).
    #[arg(long = "delete-namespace", env = "LIQO_AUTH_DELETE_NAMESPACE", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub delete_namespace: bool,
}

/// Whether `serve` accepts the shared token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SharedTokenMode {
    Enabled,
    Disabled,
}

/// Which backend holds the state, shared by every subcommand that reads it.
#[derive(Debug, Clone, ClapArgs)]
pub struct BackendArgs {
    /// Where state lives: the Kubernetes cluster, or a local data dir (no cluster needed).
    #[arg(long, env = "LIQO_AUTH_BACKEND", value_enum, default_value_t = BackendKind::Kubernetes)]
    pub backend: BackendKind,
    /// Data dir of the local backend.
    #[arg(long = "data-dir", env = "LIQO_AUTH_DATA_DIR", default_value = "./liqo-auth-data")]
    pub data_dir: PathBuf,
    /// Namespace holding `auth-token` and `remote-token-*` (Kubernetes backend).
    #[arg(long, env = "LIQO_AUTH_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Out-of-cluster kubeconfig (default: KUBECONFIG, then the in-cluster service account).
    #[arg(long, env = "LIQO_AUTH_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// Backend selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Kubernetes,
    Local,
}

/// Signer selection (Kubernetes backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignerKind {
    Kubernetes,
    LocalCa,
}

/// `serve` flags.
#[derive(Debug, Clone, ClapArgs)]
pub struct ServeArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Listen address (`:5000` means every interface).
    #[arg(long, env = "LIQO_AUTH_ADDRESS", default_value = ":5000")]
    pub address: String,
    /// Serve HTTPS (bare flag or `=true|false`).
    #[arg(long = "enable-tls", env = "LIQO_AUTH_ENABLE_TLS", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_tls: bool,
    /// TLS certificate (PEM). Generated (self-signed P-256) when absent.
    #[arg(long = "cert-path", env = "LIQO_AUTH_CERT_PATH", default_value = "/certs/cert.pem")]
    pub cert_path: PathBuf,
    /// TLS private key (PEM).
    #[arg(long = "key-path", env = "LIQO_AUTH_KEY_PATH", default_value = "/certs/key.pem")]
    pub key_path: PathBuf,
    /// Extra subject alternative name for a generated serving certificate (repeatable).
    #[arg(long = "tls-san", env = "LIQO_AUTH_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// This cluster's ID (DNS-1123 label; Liqo uses a UUID).
    #[arg(long = "cluster-id", env = "LIQO_AUTH_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// This cluster's name (DNS-1123 label).
    #[arg(long = "cluster-name", env = "LIQO_AUTH_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Check the token (`=false` accepts every caller; never do this outside a lab).
    #[arg(long = "enable-authentication", env = "LIQO_AUTH_ENABLE_AUTHENTICATION", num_args = 0..=1, require_equals = true, default_value_t = true, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_authentication: bool,
    /// API server URL given to peers (NAT, load balancers, public names); `https://` is added when missing.
    #[arg(long = "advertise-api-server-address", env = "LIQO_AUTH_ADVERTISE_API_SERVER_ADDRESS")]
    pub advertise_api_server_address: Option<String>,
    /// Do not send `apiServerCA`: peers trust the API server through their system roots.
    #[arg(long = "advertise-api-server-trusted-ca", env = "LIQO_AUTH_ADVERTISE_API_SERVER_TRUSTED_CA", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub advertise_api_server_trusted_ca: bool,
    /// Lifetime of issued certificates (Go duration, e.g. `8760h`).
    #[arg(long = "certificate-ttl", env = "LIQO_AUTH_CERTIFICATE_TTL", default_value = "8760h", value_parser = parse_duration)]
    pub certificate_ttl: Duration,
    /// Accepted for compatibility with the reference (informer resync); watches need no resync.
    #[arg(long = "resync-period", env = "LIQO_AUTH_RESYNC_PERIOD", default_value = "30s", value_parser = parse_duration)]
    pub resync_period: Duration,
    /// Accepted for compatibility with the reference; kube-rs does no client-side throttling.
    #[arg(long = "client-qps", env = "LIQO_AUTH_CLIENT_QPS", default_value_t = 100.0)]
    pub client_qps: f32,
    /// Accepted for compatibility with the reference; kube-rs does no client-side throttling.
    #[arg(long = "client-max-burst", env = "LIQO_AUTH_CLIENT_MAX_BURST", default_value_t = 100)]
    pub client_max_burst: u32,
    /// Reference IAM mode (not supported: refused at start when set).
    #[arg(long = "aws-access-key-id", env = "LIQO_AUTH_AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub aws_access_key_id: Option<String>,
    /// Reference IAM mode (not supported: refused at start when set).
    #[arg(long = "aws-secret-access-key", env = "LIQO_AUTH_AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,
    /// Reference IAM mode (not supported: refused at start when set).
    #[arg(long = "aws-region", env = "LIQO_AUTH_AWS_REGION")]
    pub aws_region: Option<String>,
    /// Reference IAM mode (not supported: refused at start when set).
    #[arg(long = "aws-cluster-name", env = "LIQO_AUTH_AWS_CLUSTER_NAME")]
    pub aws_cluster_name: Option<String>,
    /// Who signs peers' certificates on the Kubernetes backend: the cluster's CSR API, or a mounted CA.
    #[arg(long, env = "LIQO_AUTH_SIGNER", value_enum, default_value_t = SignerKind::Kubernetes)]
    pub signer: SignerKind,
    /// CA certificate (PEM) for `--signer local-ca` (e.g. the kubeadm CA).
    #[arg(long = "ca-cert", env = "LIQO_AUTH_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// CA private key (PEM) for `--signer local-ca`.
    #[arg(long = "ca-key", env = "LIQO_AUTH_CA_KEY")]
    pub ca_key: Option<PathBuf>,
    /// Longest wait for the cluster signer to issue a certificate.
    #[arg(long = "signing-timeout", env = "LIQO_AUTH_SIGNING_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub signing_timeout: Duration,
    /// Deadline of each Kubernetes API request.
    #[arg(long = "kube-request-timeout", env = "LIQO_AUTH_KUBE_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub kube_request_timeout: Duration,
    /// Accept the shared token (`disabled` once every peer uses join tokens).
    #[arg(long = "shared-token", env = "LIQO_AUTH_SHARED_TOKEN", value_enum, default_value_t = SharedTokenMode::Enabled)]
    pub shared_token: SharedTokenMode,
    /// Where peers reach this service (HOST[:PORT]) behind NAT, an Ingress or a load balancer;
    /// only used to log the `liqo-auth peer` command template at start.
    #[arg(long = "advertise-auth-address", env = "LIQO_AUTH_ADVERTISE_AUTH_ADDRESS")]
    pub advertise_auth_address: Option<String>,
    /// Maximum open connections on the public listener.
    #[arg(long = "max-connections", env = "LIQO_AUTH_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Announce this service on the LAN over mDNS as `<cluster-id>._liqo_auth._tcp.local.` (bare
    /// flag or `=true|false`).
    #[arg(long = "mdns-advertise", env = "LIQO_AUTH_MDNS_ADVERTISE", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub mdns_advertise: bool,
    /// Announce on this interface only (repeatable); by default on every non-loopback interface
    /// outside pod networks.
    #[arg(long = "mdns-interface", env = "LIQO_AUTH_MDNS_INTERFACE", value_name = "NAME", value_delimiter = ',')]
    pub mdns_interface: Vec<String>,
    /// Port announced over mDNS, the one peers reach (e.g. the NodePort); default: the listen port.
    #[arg(long = "mdns-port", env = "LIQO_AUTH_MDNS_PORT", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub mdns_port: Option<u16>,
    /// Admin listener for /metrics, /healthz and /readyz in plain HTTP (`""` or `off` disables it).
    #[arg(long = "metrics-address", env = "LIQO_AUTH_METRICS_ADDRESS", default_value = ":9090")]
    pub metrics_address: String,
    /// Believe `X-Forwarded-For` from peers in this CIDR, e.g. the Ingress controller's pods (repeatable).
    #[arg(long = "trusted-proxy", env = "LIQO_AUTH_TRUSTED_PROXY", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxy: Vec<ipnet::IpNet>,
    /// Failed authentications allowed per source address and minute before 429 (0 disables the limit).
    #[arg(long = "auth-failure-limit", env = "LIQO_AUTH_AUTH_FAILURE_LIMIT", default_value_t = crate::http::protect::DEFAULT_AUTH_FAILURES_PER_MINUTE)]
    pub auth_failure_limit: u32,
    /// Identity requests processed at once; more wait for a slot (up to 30s, then 503 with Retry-After).
    #[arg(long = "max-concurrent-issuances", env = "LIQO_AUTH_MAX_CONCURRENT_ISSUANCES", default_value_t = crate::http::protect::DEFAULT_MAX_CONCURRENT_ISSUANCES)]
    pub max_concurrent_issuances: usize,
    /// Longest time a client may take to send its request headers.
    #[arg(long = "header-read-timeout", env = "LIQO_AUTH_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// How often --cert-path/--key-path are checked for a new pair.
    #[arg(long = "tls-reload-interval", env = "LIQO_AUTH_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
}

/// Parses a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address (a /32 or /128).
pub fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| format!("invalid CIDR {text:?}: use an address or a network such as 10.0.0.0/8 or fd00::/8"))
}

/// Parses a Go duration: a sequence of `<number><unit>` with units ns, us, µs, ms, s, m, h.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: use Go syntax such as 30s, 20m, 8760h or 1h30m");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let value: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("8760h").unwrap(), Duration::from_secs(8760 * 3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "5", "5x", "h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn boolean_flags_take_bare_or_explicit_values() {
        let args =
            Args::try_parse_from(["liqo-auth", "serve", "--enable-tls", "--enable-authentication=false"]).unwrap();
        let Command::Serve(serve) = args.command else { panic!("serve") };
        assert!(serve.enable_tls);
        assert!(!serve.enable_authentication);
        let args = Args::try_parse_from(["liqo-auth", "serve", "--enable-tls=false", "--address", ":8443"]).unwrap();
        let Command::Serve(serve) = args.command else { panic!("serve") };
        assert!(!serve.enable_tls);
        assert_eq!(serve.address, ":8443");
    }

    #[test]
    fn reference_defaults_are_kept() {
        let args = Args::try_parse_from(["liqo-auth", "serve"]).unwrap();
        let Command::Serve(serve) = args.command else { panic!("serve") };
        assert_eq!(serve.address, ":5000");
        assert!(!serve.enable_tls && serve.enable_authentication);
        assert_eq!(serve.backend.namespace, "default");
        assert_eq!(serve.cert_path, PathBuf::from("/certs/cert.pem"));
        assert_eq!(serve.backend.backend, BackendKind::Kubernetes);
        assert_eq!(serve.certificate_ttl, Duration::from_secs(8760 * 3600));
        assert!(!serve.mdns_advertise && serve.mdns_interface.is_empty());
        assert_eq!(serve.mdns_port, None);
        assert_eq!(serve.shared_token, SharedTokenMode::Enabled);
        assert_eq!(serve.metrics_address, ":9090");
        assert_eq!((serve.auth_failure_limit, serve.max_concurrent_issuances), (10, 64));
        assert_eq!(serve.tls_reload_interval, Duration::from_secs(10));
    }

    #[test]
    fn mdns_flags_parse_repeated_interfaces_and_a_port() {
        let args = Args::try_parse_from([
            "liqo-auth",
            "serve",
            "--mdns-advertise",
            "--mdns-interface",
            "eth0",
            "--mdns-interface",
            "eth1",
            "--mdns-port",
            "30443",
        ])
        .unwrap();
        let Command::Serve(serve) = args.command else { panic!("serve") };
        assert!(serve.mdns_advertise);
        assert_eq!(serve.mdns_interface, ["eth0", "eth1"]);
        assert_eq!(serve.mdns_port, Some(30443));
        assert!(Args::try_parse_from(["liqo-auth", "serve", "--mdns-port", "0"]).is_err());
    }

    #[test]
    fn token_create_has_safe_defaults_and_refuses_zero_uses() {
        let args = Args::try_parse_from(["liqo-auth", "token", "create"]).unwrap();
        let Command::Token(TokenCommand::Create(create)) = args.command else { panic!("token create") };
        assert_eq!((create.ttl, create.max_uses), (Duration::from_secs(24 * 3600), 1));
        assert!(create.cluster_id.is_none() && !create.print_peer_command);
        assert!(Args::try_parse_from(["liqo-auth", "token", "create", "--max-uses", "0"]).is_err());
    }

    #[test]
    fn trusted_proxies_take_networks_and_single_addresses() {
        let args = Args::try_parse_from([
            "liqo-auth",
            "serve",
            "--trusted-proxy=10.0.0.0/8",
            "--trusted-proxy",
            "192.0.2.7,fd00::1/64",
        ])
        .unwrap();
        let Command::Serve(serve) = args.command else { panic!("serve") };
        let nets: Vec<String> = serve.trusted_proxy.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "fd00::/64"]);
        assert!(Args::try_parse_from(["liqo-auth", "serve", "--trusted-proxy=10.0.0.0/33"]).is_err());
    }
}
