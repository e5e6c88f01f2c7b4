//! `renew` flags, turned into the backend to open (`config::BackendConfig`) and
//! `client::renew::RenewOptions`.

use std::path::PathBuf;
use std::time::Duration;

use clap::ArgAction;

use crate::cli::peer::KeyType;
use crate::cli::trust::{TrustArgs, TrustArgsError};
use crate::cli::{parse_timeout, BackendArgs, OutputFormat};
use crate::client::renew::{RenewOptions, DEFAULT_RENEW_AFTER};
use crate::config::BackendConfig;

/// `liqo-auth renew` flags: renew a stored identity once it is due, with a proof of possession
/// of the current certificate (no token). Exit 0 when renewed or not due yet (the output says
/// which), 2 when the provider refused (tenant removed, certificate not current or expired:
/// peer again), 3 when the provider stayed unreachable, 1 on other errors. Every flag can also
/// be set with `LIQO_AUTH_<FLAG>`.
#[derive(Clone, Debug, clap::Args)]
pub struct RenewArgs {
    /// The provider's cluster ID (default: the only identity stored; see `identity list`).
    #[arg(long, env = "LIQO_AUTH_PROVIDER", value_name = "CLUSTER_ID")]
    pub provider: Option<String>,

    /// The provider's liqo-auth URL (default: the one `peer` recorded with the identity).
    #[arg(long, env = "LIQO_AUTH_AUTH_URL", value_name = "URL")]
    pub auth_url: Option<String>,

    /// How the auth service's certificate is trusted.
    #[command(flatten)]
    pub trust: TrustArgs,

    /// Renew once this fraction of the certificate's lifetime (notBefore to notAfter) has passed.
    #[arg(long, env = "LIQO_AUTH_RENEW_AFTER", value_name = "FRACTION", default_value_t = DEFAULT_RENEW_AFTER, value_parser = parse_fraction)]
    pub renew_after: f64,

    /// Renew now, even when not due. Bare flag or `=true|false`.
    #[arg(long, env = "LIQO_AUTH_FORCE", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub force: bool,

    /// Ask for a certificate for a new key of this type (a rekey) instead of the current key.
    #[arg(long, env = "LIQO_AUTH_REKEY", value_enum, value_name = "KEY_TYPE")]
    pub rekey: Option<KeyType>,

    /// Longest time to keep trying, retries included (Go duration).
    #[arg(long, env = "LIQO_AUTH_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Output format of the summary.
    #[arg(short = 'o', long, env = "LIQO_AUTH_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Also write a kubeconfig for the renewed identity to this file (mode 0600); the one
    /// `peer --kubeconfig-out` wrote is rewritten anyway.
    #[arg(long, env = "LIQO_AUTH_KUBECONFIG_OUT", value_name = "FILE")]
    pub kubeconfig_out: Option<PathBuf>,

    /// Where this cluster's state lives.
    #[command(flatten)]
    pub backend: BackendArgs,
}

impl RenewArgs {
    /// The backend to open and what to do with it; reads `--ca-file`.
    pub fn into_options(self) -> Result<(BackendConfig, RenewOptions), TrustArgsError> {
        let backend = self.backend.to_config();
        let options = RenewOptions {
            provider: self.provider,
            auth_url: self.auth_url,
            trust: self.trust.into_server_trust()?,
            renew_after: self.renew_after,
            force: self.force,
            rekey: self.rekey.map(Into::into),
            timeout: self.timeout,
            output: self.output.into(),
            kubeconfig_out: self.kubeconfig_out,
        };
        Ok((backend, options))
    }
}

/// A fraction of a lifetime: `2/3`, `0.66` or `66%`, strictly between 0 and 1.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let value = if let Some((num, den)) = text.split_once('/') {
        let (num, den): (f64, f64) =
            (num.trim().parse().map_err(|_| bad(text))?, den.trim().parse().map_err(|_| bad(text))?);
        num / den
    } else if let Some(percent) = text.strip_suffix('%') {
        percent.trim().parse::<f64>().map_err(|_| bad(text))? / 100.0
    } else {
        text.parse::<f64>().map_err(|_| bad(text))?
    };
    if value.is_finite() && value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(bad(text))
    }
}

fn bad(text: &str) -> String {
    format!("{text:?} is not a fraction between 0 and 1 (e.g. 2/3, 0.7 or 70%)")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        renew: RenewArgs,
    }

    #[test]
    fn renew_after_defaults_to_two_thirds_and_takes_fractions_in_three_spellings() {
        let cli = Cli::try_parse_from(["renew"]).expect("parses");
        assert!((cli.renew.renew_after - 2.0 / 3.0).abs() < 1e-9);
        assert!(!cli.renew.force);
        for (text, value) in [("1/2", 0.5), ("0.7", 0.7), ("70%", 0.7)] {
            assert!((parse_fraction(text).unwrap() - value).abs() < 1e-9, "{text}");
        }
        for bad in ["0", "1", "3/2", "-0.1", "x", "1/0"] {
            assert!(parse_fraction(bad).is_err(), "{bad}");
        }
    }
}
