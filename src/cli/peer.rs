//! `peer` flags, turned into the backend to open (`config::BackendConfig`) and
//! `client::peer::PeerOptions`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgAction;

use crate::cli::trust::{TrustArgs, TrustArgsError};
use crate::cli::{parse_timeout, BackendArgs, OutputFormat};
use crate::client::key;
use crate::client::peer::{PeerOptions, TokenSource};
use crate::config::BackendConfig;

/// `liqo-auth peer` flags. Every flag can also be set with `LIQO_AUTH_<FLAG>`.
#[derive(Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("token-source").required(true).args(["token_file", "token_stdin", "token"])))]
pub struct PeerArgs {
    /// Base URL of the provider's liqo-auth service, e.g. https://auth.example.org:8443.
    #[arg(long, env = "LIQO_AUTH_AUTH_URL", value_name = "URL")]
    pub auth_url: String,

    /// File holding the provider's token.
    #[arg(long, env = "LIQO_AUTH_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Read the provider's token from standard input.
    #[arg(long, env = "LIQO_AUTH_TOKEN_STDIN", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub token_stdin: bool,

    /// The provider's token (leaks into shell history and process lists: prefer --token-file).
    #[arg(long, env = "LIQO_AUTH_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// How the auth service's certificate is trusted.
    #[command(flatten)]
    pub trust: TrustArgs,

    /// Type of the new private key.
    #[arg(long, env = "LIQO_AUTH_KEY_TYPE", value_enum, default_value_t = KeyType::P256)]
    pub key_type: KeyType,

    /// Longest time for the whole run, retries included (Go duration, e.g. 60s or 2m).
    #[arg(long, env = "LIQO_AUTH_PEER_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Request a new identity (with a new key) even when a valid one is stored. Bare flag or `=true|false`.
    #[arg(long, env = "LIQO_AUTH_FORCE", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub force: bool,

    /// Output format of the summary.
    #[arg(short = 'o', long, env = "LIQO_AUTH_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Also write a kubeconfig for the provider's API server to this file (mode 0600).
    #[arg(long, env = "LIQO_AUTH_KUBECONFIG_OUT", value_name = "FILE")]
    pub kubeconfig_out: Option<PathBuf>,

    /// Where this cluster's state lives.
    #[command(flatten)]
    pub backend: BackendArgs,

    /// This cluster's ID (default: the Liqo ConfigMap, or the local data dir's cluster.json).
    #[arg(long = "cluster-id", env = "LIQO_AUTH_CLUSTER_ID")]
    pub cluster_id: Option<String>,

    /// This cluster's name (default: as for --cluster-id).
    #[arg(long = "cluster-name", env = "LIQO_AUTH_CLUSTER_NAME")]
    pub cluster_name: Option<String>,

    /// File with this cluster's own token, sent as originClusterToken so the provider can peer
    /// back (default: the local data dir's token, or Secret auth-token on Kubernetes).
    #[arg(long, env = "LIQO_AUTH_ORIGIN_TOKEN_FILE", value_name = "FILE")]
    pub origin_token_file: Option<PathBuf>,
}

/// `--key-type`: the key algorithm of the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA P-256 (the default).
    P256,
    /// Ed25519 (the reference consumer's choice).
    Ed25519,
    /// RSA 2048 bits (slow to generate).
    Rsa2048,
}

/// Unusable `peer` flags.
#[derive(Debug, thiserror::Error)]
pub enum PeerArgsError {
    /// The trust flags are unusable (e.g. an unreadable `--ca-file`).
    #[error(transparent)]
    Trust(#[from] TrustArgsError),
}

impl PeerArgs {
    /// The backend to open and what to do with it; reads `--ca-file`. The tokens are read when
    /// the run starts, so their errors and warnings belong to the run.
    pub fn into_options(self) -> Result<(BackendConfig, PeerOptions), PeerArgsError> {
        let backend = self.backend.to_config();
        let token = match (self.token_file, self.token_stdin, self.token) {
            (Some(path), _, _) => TokenSource::File(path),
            (None, true, _) => TokenSource::Stdin,
            // clap's required group makes sure one source is given.
            (None, false, token) => TokenSource::Value(token.unwrap_or_default()),
        };
        let options = PeerOptions {
            auth_url: self.auth_url,
            token,
            trust: self.trust.into_server_trust()?,
            key_type: self.key_type.into(),
            timeout: self.timeout,
            force: self.force,
            output: self.output.into(),
            kubeconfig_out: self.kubeconfig_out,
            cluster_id: self.cluster_id,
            cluster_name: self.cluster_name,
            origin_token_file: self.origin_token_file,
        };
        Ok((backend, options))
    }
}

impl From<KeyType> for key::KeyType {
    fn from(flag: KeyType) -> Self {
        match flag {
            KeyType::P256 => key::KeyType::P256,
            KeyType::Ed25519 => key::KeyType::Ed25519,
            KeyType::Rsa2048 => key::KeyType::Rsa2048,
        }
    }
}

impl fmt::Debug for PeerArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerArgs")
            .field("auth_url", &self.auth_url)
            .field("token_file", &self.token_file)
            .field("token_stdin", &self.token_stdin)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("trust", &self.trust)
            .field("key_type", &self.key_type)
            .field("timeout", &self.timeout)
            .field("force", &self.force)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        peer: PeerArgs,
    }

    #[test]
    fn peer_args_debug_redacts_the_token() {
        let cli = Cli::try_parse_from(["peer", "--auth-url", "https://a", "--token", "secret-tok"]).expect("parses");
        let printed = format!("{:?}", cli.peer);
        assert!(!printed.contains("secret-tok"), "{printed}");
        assert_eq!(cli.peer.timeout, Duration::from_secs(60));
        assert_eq!(cli.peer.key_type, KeyType::P256);
        assert!(Cli::try_parse_from(["peer", "--auth-url", "https://a"]).is_err(), "a token source is required");
    }

    #[test]
    fn peer_options_keep_the_token_source_and_redact_it() {
        let cli =
            Cli::try_parse_from(["peer", "--auth-url", "https://a", "--token", "secret-tok", "--key-type", "rsa2048"])
                .expect("parses");
        let (_, options) = cli.peer.into_options().expect("options");
        assert!(matches!(&options.token, TokenSource::Value(token) if token == "secret-tok"));
        assert_eq!(options.key_type, key::KeyType::Rsa2048);
        let printed = format!("{options:?}");
        assert!(!printed.contains("secret-tok"), "{printed}");
        let cli = Cli::try_parse_from(["peer", "--auth-url", "https://a", "--token-file", "/t"]).expect("parses");
        assert!(matches!(cli.peer.into_options().expect("options").1.token, TokenSource::File(_)));
    }
}
