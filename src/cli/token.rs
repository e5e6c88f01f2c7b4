//! `token` flags: the shared token and join tokens.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args as ClapArgs, Subcommand};

use crate::app::operator::{TokenAction, TokenCreateOptions};
use crate::cli::{parse_duration, AdvertiseArgs, BackendArgs, OutputArgs};
use crate::config::BackendConfig;

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print the current shared token on the last line of stdout.
    Show(BackendOutputArgs),
    /// Create a join token (expiring, use-limited, optionally bound to one peer) and print it.
    #[command(
        after_help = "Examples:\n  liqo-auth token create --backend local --print-peer-command\n  liqo-auth token create -n liqo --cluster-id 0b6a4c8e-... --ttl 1h --print-peer-command"
    )]
    Create(Box<TokenCreateArgs>),
    /// List join tokens: ID, binding, expiry, uses left, status (never the tokens).
    List(BackendOutputArgs),
    /// Revoke one join token: it fails from now on.
    Revoke(TokenRevokeArgs),
    /// Replace the join-token signing key: every outstanding join token stops working.
    RotateKey(TokenRotateKeyArgs),
}

/// The backend flags and `-o`.
#[derive(Debug, Clone, ClapArgs)]
pub struct BackendOutputArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `token rotate-key` flags.
#[derive(Debug, Clone, ClapArgs)]
pub struct TokenRotateKeyArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Say which join tokens would stop working, and change nothing.
    #[arg(long = "dry-run", env = "LIQO_AUTH_DRY_RUN", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: OutputArgs,
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
    /// With --print-peer-command: write the token here (default `./liqo-auth-join-token-<id>`).
    #[arg(long = "token-out", env = "LIQO_AUTH_TOKEN_OUT")]
    pub token_out: Option<PathBuf>,
    /// What the printed peer command says: the auth URL and the pin.
    #[command(flatten)]
    pub advertise: AdvertiseArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `token revoke` arguments.
#[derive(Debug, Clone, ClapArgs)]
pub struct TokenRevokeArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The token ID, as shown by `token list`.
    pub id: String,
    /// Exit 0 when no token has this ID.
    #[arg(long = "ignore-not-found", env = "LIQO_AUTH_IGNORE_NOT_FOUND", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub ignore_not_found: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl TokenCommand {
    /// The output format asked for (for errors).
    pub fn output(&self) -> crate::output::Output {
        match self {
            Self::Show(args) | Self::List(args) => args.output.format(),
            Self::Create(args) => args.output.format(),
            Self::Revoke(args) => args.output.format(),
            Self::RotateKey(args) => args.output.format(),
        }
    }

    /// The backend to open and what to do there.
    pub fn into_options(self) -> (BackendConfig, TokenAction) {
        match self {
            Self::Show(args) => (args.backend.to_config(), TokenAction::Show { output: args.output.format() }),
            Self::List(args) => (args.backend.to_config(), TokenAction::List { output: args.output.format() }),
            Self::RotateKey(args) => (
                args.backend.to_config(),
                TokenAction::RotateKey { dry_run: args.dry_run, output: args.output.format() },
            ),
            Self::Revoke(args) => (
                args.backend.to_config(),
                TokenAction::Revoke {
                    id: args.id,
                    ignore_not_found: args.ignore_not_found,
                    output: args.output.format(),
                },
            ),
            Self::Create(args) => {
                let args = *args;
                let options = TokenCreateOptions {
                    ttl: args.ttl,
                    cluster_id: args.cluster_id,
                    max_uses: args.max_uses,
                    print_peer_command: args.print_peer_command,
                    advertise_auth_address: args.advertise.advertise_auth_address,
                    address: args.advertise.address,
                    cert_path: args.advertise.cert_path,
                    token_out: args.token_out,
                    local_cluster_id: args.advertise.local_cluster_id,
                    output: args.output.format(),
                };
                (args.backend.to_config(), TokenAction::Create(options))
            }
        }
    }
}
