//! The `liqo-auth` binary: parse the command line, start logging, dispatch. Invoked as
//! `auth-service` it behaves as `liqo-auth serve`, so it can replace the reference image in the
//! reference Helm chart.

use std::process::ExitCode;

use clap::Parser;
use liqo_auth::app::operator::{self, CommandError};
use liqo_auth::cli::{Args, Command};

fn main() -> ExitCode {
    let args = match Args::try_parse_from(argv()) {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(64) } else { ExitCode::SUCCESS };
        }
    };
    liqo_auth::telemetry::init(&args.log.level, args.log.format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    let mut out = std::io::stdout();
    let result: Result<ExitCode, CommandError> = runtime.block_on(async move {
        match args.command {
            Command::Serve(serve) => serve.into_config()?.serve().await.map(|()| ExitCode::SUCCESS).map_err(Into::into),
            Command::Token(command) => {
                let (backend, action) = command.into_options();
                operator::token(&backend, action, &mut out).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Tenant(command) => {
                let (backend, action) = command.into_options();
                operator::tenant(&backend, action, &mut out).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Check(args) => match args.into_options() {
                Ok((options, output)) => Ok(liqo_auth::client::check::execute(options, output).await),
                Err(error) => {
                    eprintln!("error: {}", liqo_auth::error::error_chain(&error));
                    Ok(ExitCode::from(64))
                }
            },
            Command::Discover(args) => match args.into_options() {
                Ok(options) => Ok(liqo_auth::client::discover::execute(options).await),
                Err(error) => {
                    eprintln!("error: {}", liqo_auth::error::error_chain(&error));
                    Ok(ExitCode::from(64))
                }
            },
            Command::Peer(args) => {
                // TODO(client split): `backend.open(Access::ReadOnly).await?.peer_backend()` once
                // config.rs has them; until then the same wiring, spelled out.
                let (config, options) = args.into_options()?;
                let opened = config.open(liqo_auth::config::Access::Existing).await?;
                let identities: std::sync::Arc<dyn liqo_auth::identity::port::PeerIdentityStore> = match &config {
                    liqo_auth::config::BackendConfig::Local { data_dir } => {
                        std::sync::Arc::new(liqo_auth::client::identity_store::LocalIdentityStore::new(data_dir))
                    }
                    liqo_auth::config::BackendConfig::Kubernetes { connection, request_timeout, .. } => {
                        let ctx = liqo_auth::adapter::kube::KubeCtx::connect(connection, *request_timeout).await?;
                        std::sync::Arc::new(liqo_auth::adapter::kube::kube_identity::KubeIdentityStore::new(ctx))
                    }
                };
                let backend = liqo_auth::client::peer::PeerBackend {
                    cluster: opened.cluster,
                    identities,
                    render_kubeconfig: liqo_auth::adapter::kube::kube_kubeconfig::render,
                };
                Ok(liqo_auth::client::peer::execute(options, backend).await)
            }
        }
    });
    result.unwrap_or_else(|error| fail(error.as_ref()))
}

/// The arguments, with `serve` inserted when invoked as `auth-service`.
fn argv() -> Vec<std::ffi::OsString> {
    let mut args: Vec<_> = std::env::args_os().collect();
    let invoked_as = args.first().and_then(|a| std::path::Path::new(a).file_name().map(|n| n.to_owned()));
    if invoked_as.as_deref() == Some(std::ffi::OsStr::new("auth-service")) {
        args.insert(1, "serve".into());
    }
    args
}

fn fail(error: &(dyn std::error::Error + 'static)) -> ExitCode {
    let chain = liqo_auth::error::error_chain(error);
    tracing::error!(error = %chain, "liqo-auth failed");
    eprintln!("error: {chain}");
    ExitCode::FAILURE
}
