//! Operator subcommands other than `serve` (`token show`, ...): thin wrappers over the backends.

use crate::cli::{BackendKind, TokenCommand};
use crate::store::{LocalStore, TokenStore};

/// Boxed error for command results.
pub type CommandError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a `token` subcommand.
pub async fn token(command: TokenCommand) -> Result<(), CommandError> {
    match command {
        TokenCommand::Show(backend) => {
            let token = match backend.backend {
                BackendKind::Local => {
                    let store = LocalStore::open(
                        &backend.data_dir,
                        crate::config::LOCAL_API_SERVER_URL.into(),
                        true,
                    )?;
                    store.shared_token()
                }
                BackendKind::Kubernetes => {
                    return Err(crate::config::ConfigError::KubernetesUnavailable.into())
                }
            };
            let token = token.ok_or("no usable shared token is stored")?;
            println!("{}", token.expose());
            Ok(())
        }
    }
}
