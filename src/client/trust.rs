//! `TrustArgs`: the flags that decide how a client command trusts the auth service's TLS
//! certificate (`--ca-hash`, `--ca-file`, `--insecure-skip-tls-verify`), shared by `check` and
//! `peer` so both accept exactly the same spellings and environment variables.
//!
//! Turning the flags into a [`ServerTrust`] reads `--ca-file`; warning about insecure choices is
//! left to the commands, which know where their output goes.

use std::path::PathBuf;

use clap::ArgAction;

use crate::client::transport::ServerTrust;
use crate::pki;

/// Trust flags. Every flag can also be set with `LIQO_AUTH_<FLAG>`.
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

    /// Do not verify the auth service's certificate. Bare flag or `=true|false`.
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
    /// The trust decision: insecure, else pins, else the CA file, else the system roots.
    pub fn server_trust(&self) -> Result<ServerTrust, TrustArgsError> {
        Ok(if self.insecure_skip_tls_verify {
            ServerTrust::InsecureSkipVerify
        } else if !self.ca_hash.is_empty() {
            ServerTrust::Pin(self.ca_hash.clone())
        } else if let Some(path) = &self.ca_file {
            let pem =
                std::fs::read(path).map_err(|source| TrustArgsError::ReadCaFile { path: path.clone(), source })?;
            ServerTrust::CaPem(pem)
        } else {
            ServerTrust::SystemRoots
        })
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
    fn a_missing_ca_file_is_reported_with_its_path() {
        let cli = Cli::try_parse_from(["x", "--ca-file", "/nonexistent/ca.pem"]).expect("parses");
        let error = cli.trust.server_trust().expect_err("the file does not exist");
        assert_eq!(error.to_string(), "reading --ca-file /nonexistent/ca.pem");
    }

    #[test]
    fn pins_win_over_system_roots_and_insecure_wins_over_nothing() {
        let pin = format!("sha256:{}", "cd".repeat(32));
        let cli = Cli::try_parse_from(["x", "--ca-hash", &pin]).expect("parses");
        assert_eq!(cli.trust.server_trust().expect("trust"), ServerTrust::Pin(vec![[0xcd; 32]]));
        let cli = Cli::try_parse_from(["x"]).expect("parses");
        assert_eq!(cli.trust.server_trust().expect("trust"), ServerTrust::SystemRoots);
    }
}
