//! Flag groups and value parsers shared by several subcommands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, ValueEnum};

use crate::config::{BackendConfig, Connection, DEFAULT_KUBE_REQUEST_TIMEOUT};

/// Which backend holds the state, shared by every subcommand that reads it.
#[derive(Debug, Clone, ClapArgs)]
pub struct BackendArgs {
    /// Where state lives: the Kubernetes cluster, or a local data dir (no cluster needed).
    #[arg(long, env = "LIQO_AUTH_BACKEND", value_enum, default_value_t = BackendKind::Kubernetes)]
    pub backend: BackendKind,
    /// Data dir of the local backend.
    #[arg(long = "data-dir", env = "LIQO_AUTH_DATA_DIR", value_name = "DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Namespace of liqo-auth's objects (`auth-token`, `remote-token-*`, the Liqo cluster-ID
    /// ConfigMap) on the Kubernetes backend [default: the kubeconfig context's namespace, else
    /// the pod's own, else `liqo`].
    #[arg(short = 'n', long, env = "LIQO_AUTH_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Out-of-cluster kubeconfig (default: KUBECONFIG, then ~/.kube/config, then the in-cluster
    /// service account).
    #[arg(long, env = "LIQO_AUTH_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one.
    #[arg(long, env = "LIQO_AUTH_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
}

impl BackendArgs {
    /// The backend these flags name, with the default Kubernetes request deadline.
    pub fn to_config(&self) -> BackendConfig {
        self.to_config_with_timeout(DEFAULT_KUBE_REQUEST_TIMEOUT)
    }

    /// The backend these flags name, each Kubernetes request bounded by `request_timeout`.
    pub fn to_config_with_timeout(&self, request_timeout: Duration) -> BackendConfig {
        match self.backend {
            BackendKind::Local => BackendConfig::Local { data_dir: self.data_dir.clone() },
            BackendKind::Kubernetes => {
                let connection = Connection::from_flags(self.kubeconfig.as_deref(), self.context.as_deref());
                let namespace = self.namespace.clone().unwrap_or_else(|| connection.default_namespace());
                BackendConfig::Kubernetes { namespace, connection, request_timeout }
            }
        }
    }
}

/// Backend selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Kubernetes,
    Local,
}

/// How a command prints its result (`-o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned text for people.
    #[value(alias = "text")]
    Table,
    /// One JSON document, for scripts (errors too, as {"error":{"code","message"}}).
    Json,
    /// One YAML document.
    Yaml,
}

/// `-o/--output`, shared by every command that shows, lists or creates something.
#[derive(Debug, Clone, Copy, ClapArgs)]
pub struct OutputArgs {
    /// Output format: table, json or yaml (times in RFC 3339).
    #[arg(short = 'o', long = "output", env = "LIQO_AUTH_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

impl OutputArgs {
    /// The runtime output switch.
    pub fn format(self) -> crate::output::Output {
        self.output.into()
    }
}

/// How peers reach this service and which pin they get: the flags of the commands that print
/// something for a peer (`token create --print-peer-command`, `dns-records`). Each defaults to
/// what the running `serve` recorded in the data dir or Secret.
#[derive(Debug, Clone, ClapArgs)]
pub struct AdvertiseArgs {
    /// Where peers reach this service (HOST[:PORT], default port 443), for NAT, Ingress and load
    /// balancer names. Default: what the running `serve` recorded (its --advertise-auth-address
    /// or listen address).
    #[arg(long = "advertise-auth-address", env = "LIQO_AUTH_ADVERTISE_AUTH_ADDRESS")]
    pub advertise_auth_address: Option<String>,
    /// The serving address of `serve` (HOST:PORT), used instead of what `serve` recorded.
    #[arg(long, env = "LIQO_AUTH_ADDRESS")]
    pub address: Option<String>,
    /// Serving certificate to pin (`--ca-hash`, TXT `pin=`). Default: the pin the running
    /// `serve` recorded, else `<data-dir>/tls.crt` (local backend) or Secret `liqo-auth-tls`,
    /// then `liqo-auth-serving-cert` (Kubernetes backend).
    #[arg(long = "cert-path", env = "LIQO_AUTH_CERT_PATH")]
    pub cert_path: Option<PathBuf>,
    /// This cluster's ID, when neither the data dir nor ConfigMap `liqo-clusterid-configmap`
    /// has it; must equal `serve --cluster-id`.
    #[arg(long = "local-cluster-id", env = "LIQO_AUTH_LOCAL_CLUSTER_ID")]
    pub local_cluster_id: Option<String>,
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

/// Parses a Go duration that must be longer than zero (client timeouts).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("the timeout must be longer than zero".to_owned()),
        timeout => Ok(timeout),
    }
}
