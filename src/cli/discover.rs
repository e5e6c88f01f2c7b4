//! `discover` flags, turned into `client::discover::DiscoverOptions`.

use std::time::Duration;

use crate::cli::trust::{TrustArgs, TrustArgsError};
use crate::cli::{parse_timeout, OutputFormat};
use crate::client::discover::DiscoverOptions;

/// `liqo-auth discover` flags. Every flag can also be set with `LIQO_AUTH_<FLAG>`.
#[derive(Clone, Debug, clap::Args)]
pub struct DiscoverArgs {
    /// How long to listen for mDNS answers (Go duration, e.g. 3s or 1500ms).
    #[arg(long, env = "LIQO_AUTH_TIMEOUT", value_name = "DURATION", default_value = "3s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Output format.
    #[arg(long, env = "LIQO_AUTH_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Browse on this interface only (repeatable); by default on every non-loopback interface
    /// outside pod networks.
    #[arg(long = "mdns-interface", env = "LIQO_AUTH_MDNS_INTERFACE", value_name = "NAME", value_delimiter = ',')]
    pub mdns_interface: Vec<String>,

    /// How the certificates of the services found are verified.
    #[command(flatten)]
    pub trust: TrustArgs,
}

impl DiscoverArgs {
    /// Turns the flags into [`DiscoverOptions`], reading `--ca-file`.
    pub fn into_options(self) -> Result<DiscoverOptions, TrustArgsError> {
        Ok(DiscoverOptions {
            timeout: self.timeout,
            output: self.output.into(),
            mdns_interface: self.mdns_interface,
            trust: self.trust.into_server_trust()?,
        })
    }
}
