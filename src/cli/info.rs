//! Flags of the commands that describe rather than change: `info`, `init`, `version`,
//! `completion` and `ca-hash`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, CommandFactory};

use crate::app::info::{CaHashOptions, CaHashSource, InitOptions};
use crate::cli::{parse_timeout, Args, BackendArgs, OutputArgs};
use crate::config::BackendConfig;

/// `info` flags.
#[derive(Debug, Clone, ClapArgs)]
pub struct InfoArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `init` flags.
#[derive(Debug, Clone, ClapArgs)]
pub struct InitArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// This cluster's ID (DNS-1123 label) [default: a random UUID].
    #[arg(long = "cluster-id", env = "LIQO_AUTH_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// This cluster's name (DNS-1123 label) [default: `cluster-` and the ID's first 8 characters].
    #[arg(long = "cluster-name", env = "LIQO_AUTH_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `version` flags.
#[derive(Debug, Clone, ClapArgs)]
pub struct VersionArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `completion` arguments.
#[derive(Debug, Clone, ClapArgs)]
pub struct CompletionArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `ca-hash` flags: exactly one source.
#[derive(Debug, Clone, ClapArgs)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "secret", "url"])))]
pub struct CaHashArgs {
    /// A PEM certificate (chain) file; the pin of its first certificate.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A Secret holding `tls.crt` (e.g. `liqo-auth-tls`), in --namespace (Kubernetes backend).
    #[arg(long, value_name = "NAME")]
    pub secret: Option<String>,
    /// A running service: the pins of the chain it presents (not verified: compare the pin
    /// with the provider's operator over another channel).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// With --url: time allowed for the connection and handshake.
    #[arg(long = "connect-timeout", env = "LIQO_AUTH_CONNECT_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    pub connect_timeout: Duration,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl InitArgs {
    /// The backend to create and what to put in it.
    pub fn into_options(self) -> (BackendConfig, InitOptions) {
        let options =
            InitOptions { cluster_id: self.cluster_id, cluster_name: self.cluster_name, output: self.output.format() };
        (self.backend.to_config(), options)
    }
}

impl CaHashArgs {
    /// The source to read and how to print.
    pub fn into_options(self) -> CaHashOptions {
        let source = match (self.file, self.secret, self.url) {
            (Some(path), _, _) => CaHashSource::File(path),
            (None, Some(name), _) => CaHashSource::Secret { backend: self.backend.to_config(), name },
            // clap's required group makes sure one source is given.
            (None, None, url) => CaHashSource::Url(url.unwrap_or_default()),
        };
        CaHashOptions { source, connect_timeout: self.connect_timeout, output: self.output.format() }
    }
}

impl CompletionArgs {
    /// Writes the completion script for the chosen shell. (Rendered in memory first: clap's
    /// generator panics on a write error such as a closed pipe.)
    pub fn write(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut command = Args::command();
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut command, "liqo-auth", &mut script);
        out.write_all(&script)
    }
}
