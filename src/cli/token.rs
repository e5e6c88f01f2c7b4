//! `token` flags: the shared token and join tokens.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args as ClapArgs, Subcommand};

use crate::app::operator::{TokenAction, TokenCreateOptions};
use crate::cli::{parse_duration, BackendArgs};
use crate::config::BackendConfig;

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

impl TokenCommand {
    /// The backend to open and what to do there.
    pub fn into_options(self) -> (BackendConfig, TokenAction) {
        match self {
            Self::Show(backend) => (backend.to_config(), TokenAction::Show),
            Self::List(backend) => (backend.to_config(), TokenAction::List),
            Self::RotateKey(backend) => (backend.to_config(), TokenAction::RotateKey),
            Self::Revoke(args) => (args.backend.to_config(), TokenAction::Revoke { id: args.id }),
            Self::Create(args) => {
                let args = *args;
                let options = TokenCreateOptions {
                    ttl: args.ttl,
                    cluster_id: args.cluster_id,
                    max_uses: args.max_uses,
                    print_peer_command: args.print_peer_command,
                    advertise_auth_address: args.advertise_auth_address,
                    address: args.address,
                    cert_path: args.cert_path,
                    token_out: args.token_out,
                    local_cluster_id: args.local_cluster_id,
                };
                (args.backend.to_config(), TokenAction::Create(options))
            }
        }
    }
}
