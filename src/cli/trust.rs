//! The TLS trust flags shared by every client command that talks to another cluster's auth
//! service (`check`, `discover`, `peer`): `--ca-hash`, `--ca-file` and
//! `--insecure-skip-tls-verify`.
//!
//! This module only parses the flags and turns them into a [`ServerTrust`]; the verification
//! itself belongs to `client::transport`, and warning the user about insecure choices to the
//! command that prints.

use std::path::PathBuf;

use clap::ArgAction;

use crate::client::transport::ServerTrust;
use crate::pki;

/// How the auth service's certificate is verified. Every flag can also be set with
/// `LIQO_AUTH_<FLAG>`. Without any of them the system roots are used.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TrustArgs {
    /// Trust the auth service when a certificate of its chain has this SPKI hash (kubeadm
    /// style, as printed by `token create --print-peer-command`). Repeatable; comma-separated
    /// in the environment variable.
    #[arg(
        long,
        env = "LIQO_AUTH_CA_HASH",
        value_name = "sha256:HEX",
        value_parser = parse_ca_hash,
        value_delimiter = ',',
        conflicts_with_all = ["ca_file", "insecure_skip_tls_verify"],
    )]
    pub ca_hash: Vec<[u8; 32]>,

    /// PEM file with the CA certificates that sign the auth service's certificate.
    #[arg(long, env = "LIQO_AUTH_CA_FILE", value_name = "PEM", conflicts_with = "insecure_skip_tls_verify")]
    pub ca_file: Option<PathBuf>,

    /// Do not verify the auth service's certificate (handshake signatures are still checked).
    /// Bare flag or `=true|false`.
    #[arg(long, env = "LIQO_AUTH_INSECURE_SKIP_TLS_VERIFY", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub insecure_skip_tls_verify: bool,
}

/// Unusable trust flags.
#[derive(Debug, thiserror::Error)]
pub enum TrustArgsError {
    /// The `--ca-file` could not be read.
    #[error("reading --ca-file {path}")]
    ReadCaFile {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl TrustArgs {
    /// The trust setting the flags select, reading `--ca-file` if given.
    pub fn into_server_trust(self) -> Result<ServerTrust, TrustArgsError> {
        if self.insecure_skip_tls_verify {
            Ok(ServerTrust::InsecureSkipVerify)
        } else if !self.ca_hash.is_empty() {
            Ok(ServerTrust::Pin(self.ca_hash))
        } else if let Some(path) = self.ca_file {
            let pem = std::fs::read(&path).map_err(|source| TrustArgsError::ReadCaFile { path, source })?;
            Ok(ServerTrust::CaPem(pem))
        } else {
            Ok(ServerTrust::SystemRoots)
        }
    }
}

fn parse_ca_hash(text: &str) -> Result<[u8; 32], String> {
    pki::parse_pin(text.trim()).ok_or_else(|| format!("{text:?} is not a pin; expected sha256:<64 hex digits>"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        trust: TrustArgs,
    }

    #[test]
    fn no_flag_means_system_roots() {
        let cli = Cli::try_parse_from(["x"]).expect("parses");
        assert_eq!(cli.trust.into_server_trust().expect("trust"), ServerTrust::SystemRoots);
    }

    #[test]
    fn unreadable_ca_file_is_an_error_naming_the_path() {
        let cli = Cli::try_parse_from(["x", "--ca-file", "/nonexistent/ca.pem"]).expect("parses");
        let error = cli.trust.into_server_trust().expect_err("unreadable");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }
}
