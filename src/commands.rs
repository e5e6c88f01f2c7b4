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
                    let store = LocalStore::open(&backend.data_dir, crate::config::LOCAL_API_SERVER_URL.into(), true)?;
                    store.shared_token()
                }
                BackendKind::Kubernetes => {
                    let config = crate::kubernetes::load_config(backend.kubeconfig.as_deref()).await?;
                    let client = crate::kubernetes::client(config)?;
                    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                        kube::Api::namespaced(client, &backend.namespace);
                    let secret = crate::kubernetes::call_opt(
                        "reading Secret auth-token",
                        api.get(crate::kubernetes::TOKEN_SECRET),
                    )
                    .await?;
                    secret.as_ref().and_then(crate::store::kube_token::token_of)
                }
            };
            let token = token.ok_or("no usable shared token is stored")?;
            println!("{}", token.expose());
            Ok(())
        }
    }
}
