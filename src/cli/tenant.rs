//! `tenant` flags: listing peers and unpeering.

use clap::{ArgAction, Args as ClapArgs, Subcommand};

use crate::app::operator::TenantAction;
use crate::cli::BackendArgs;
use crate::config::BackendConfig;

/// `tenant` subcommands.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// List peers: cluster ID and name, tenant namespace, certificate serial and expiry, issue time.
    List(BackendArgs),
    /// Unpeer: remove the peer's RoleBindings, stored certificate and origin token.
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
}

impl TenantCommand {
    /// The backend to open and what to do there.
    pub fn into_options(self) -> (BackendConfig, TenantAction) {
        match self {
            Self::List(backend) => (backend.to_config(), TenantAction::List),
            Self::Remove(args) => (
                args.backend.to_config(),
                TenantAction::Remove { cluster_id: args.cluster_id, delete_namespace: args.delete_namespace },
            ),
        }
    }
}
