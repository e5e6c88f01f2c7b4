//! `identity` subcommands (consumer side): what this cluster holds from providers, and removing
//! it. Turned into the backend to open and an [`IdentityAction`] for `client::identity`.

use crate::cli::{BackendArgs, OutputFormat};
use crate::client::identity::IdentityAction;
use crate::config::BackendConfig;

/// `liqo-auth identity ...`
#[derive(Clone, Debug, clap::Subcommand)]
pub enum IdentityCommand {
    /// List the identities this cluster obtained from providers, with their expiry and when
    /// they are due for renewal.
    List(IdentityListArgs),
    /// Delete the identity (and pending key) stored for a provider, and the kubeconfig recorded
    /// with it. The provider is not told: unpeer there with `liqo-auth tenant remove`.
    Remove(IdentityRemoveArgs),
}

/// `identity list` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct IdentityListArgs {
    /// Output format.
    #[arg(short = 'o', long, env = "LIQO_AUTH_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Where this cluster's state lives.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `identity remove` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct IdentityRemoveArgs {
    /// The provider's cluster ID.
    pub provider: String,
    /// Where this cluster's state lives.
    #[command(flatten)]
    pub backend: BackendArgs,
}

impl IdentityCommand {
    /// The backend to open and the action to run.
    pub fn into_options(self) -> (BackendConfig, IdentityAction) {
        match self {
            Self::List(args) => (args.backend.to_config(), IdentityAction::List { output: args.output.into() }),
            Self::Remove(args) => (args.backend.to_config(), IdentityAction::Remove { provider: args.provider }),
        }
    }
}
