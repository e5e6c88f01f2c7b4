//! `agent` flags, turned into the backend to open and `client::agent::AgentOptions`.

use std::time::Duration;

use crate::cli::renew::parse_fraction;
use crate::cli::trust::{TrustArgs, TrustArgsError};
use crate::cli::{parse_timeout, BackendArgs};
use crate::client::agent::AgentOptions;
use crate::client::renew::DEFAULT_RENEW_AFTER;
use crate::config::BackendConfig;

/// `liqo-auth agent` flags: keep every stored identity renewed (at `--renew-after` of its
/// lifetime, ±10 %), until SIGTERM. Every flag can also be set with `LIQO_AUTH_<FLAG>`.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// How the auth services' certificates are trusted (one setting for every provider; a
    /// repeated --ca-hash trusts each pin).
    #[command(flatten)]
    pub trust: TrustArgs,

    /// Renew once this fraction of a certificate's lifetime (notBefore to notAfter) has passed.
    #[arg(long, env = "LIQO_AUTH_RENEW_AFTER", value_name = "FRACTION", default_value_t = DEFAULT_RENEW_AFTER, value_parser = parse_fraction)]
    pub renew_after: f64,

    /// Address of /healthz, /readyz and /metrics (`off` disables them).
    #[arg(long, env = "LIQO_AUTH_METRICS_ADDRESS", default_value = ":9091")]
    pub metrics_address: String,

    /// Longest time one renewal keeps retrying (backoff, Retry-After) before it is rescheduled.
    #[arg(long, env = "LIQO_AUTH_ATTEMPT_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub attempt_timeout: Duration,

    /// Longest sleep between two passes over the stored identities (new peerings are picked up
    /// at the next pass).
    #[arg(long, env = "LIQO_AUTH_RESCAN_INTERVAL", value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub rescan_interval: Duration,

    /// Where this cluster's state lives.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Unusable `agent` flags.
#[derive(Debug, thiserror::Error)]
pub enum AgentArgsError {
    #[error(transparent)]
    Trust(#[from] TrustArgsError),
    #[error("--metrics-address: {0}")]
    MetricsAddress(String),
}

impl AgentArgs {
    /// The backend to open and the agent's options; reads `--ca-file`.
    pub fn into_options(self) -> Result<(BackendConfig, AgentOptions), AgentArgsError> {
        let metrics_listen = match self.metrics_address.trim() {
            "off" | "0" | "" => None,
            address => Some(crate::server::parse_listen_address(address).map_err(AgentArgsError::MetricsAddress)?),
        };
        let options = AgentOptions {
            trust: self.trust.into_server_trust()?,
            renew_after: self.renew_after,
            metrics_listen,
            attempt_timeout: self.attempt_timeout,
            rescan_interval: self.rescan_interval,
        };
        Ok((self.backend.to_config(), options))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    #[test]
    fn the_metrics_address_can_be_turned_off() {
        let (_, options) =
            Cli::try_parse_from(["agent", "--metrics-address", "off"]).unwrap().agent.into_options().unwrap();
        assert!(options.metrics_listen.is_none());
        let (_, options) = Cli::try_parse_from(["agent"]).unwrap().agent.into_options().unwrap();
        assert!(options.metrics_listen.is_some_and(|a| a.iter().all(|a| a.port() == 9091)));
        assert!((options.renew_after - 2.0 / 3.0).abs() < 1e-9);
    }
}
