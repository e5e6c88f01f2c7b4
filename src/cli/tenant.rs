//! `tenant` flags: listing peers and unpeering.

use clap::{ArgAction, Args as ClapArgs, Subcommand};

use crate::app::operator::TenantAction;
use crate::cli::{BackendArgs, OutputArgs};
use crate::config::BackendConfig;

/// `tenant` subcommands.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// List peers: cluster ID and name, tenant namespace, certificate serial, expiry and notBefore.
    List(crate::cli::token::BackendOutputArgs),
    /// Unpeer: remove the peer's RoleBindings, stored certificate and origin token.
    #[command(
        after_help = "Examples:\n  liqo-auth tenant remove 0b6a4c8e-... --dry-run\n  liqo-auth tenant remove 0b6a4c8e-... --delete-namespace"
    )]
    Remove(TenantRemoveArgs),
}

/// `tenant remove` arguments.
#[derive(Debug, Clone, ClapArgs)]
pub struct TenantRemoveArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The peer's cluster ID.
    pub cluster_id: String,
    /// Delete the tenant namespace too (Kubernetes backend; it may hold objects Liqo made).
    #[arg(long = "delete-namespace", env = "LIQO_AUTH_DELETE_NAMESPACE", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub delete_namespace: bool,
    /// Exit 0 when nothing is stored for this cluster.
    #[arg(long = "ignore-not-found", env = "LIQO_AUTH_IGNORE_NOT_FOUND", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub ignore_not_found: bool,
    /// List what would be removed, and remove nothing.
    #[arg(long = "dry-run", env = "LIQO_AUTH_DRY_RUN", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl TenantCommand {
    /// The output format asked for (for errors).
    pub fn output(&self) -> crate::output::Output {
        match self {
            Self::List(args) => args.output.format(),
            Self::Remove(args) => args.output.format(),
        }
    }

    /// The backend to open and what to do there.
    pub fn into_options(self) -> (BackendConfig, TenantAction) {
        match self {
            Self::List(args) => (args.backend.to_config(), TenantAction::List { output: args.output.format() }),
            Self::Remove(args) => (
                args.backend.to_config(),
                TenantAction::Remove {
                    cluster_id: args.cluster_id,
                    delete_namespace: args.delete_namespace,
                    ignore_not_found: args.ignore_not_found,
                    dry_run: args.dry_run,
                    output: args.output.format(),
                },
            ),
        }
    }
}
