//! The `liqo-auth` binary: parse the command line, start logging, dispatch. Invoked as
//! `auth-service` it behaves as `liqo-auth serve` with Go-style flags (`-namespace=liqo`, klog's
//! `--v=4`, ...), so it can replace the reference image in the reference Helm chart.

use std::process::ExitCode;

use clap::Parser;
use liqo_auth::{Access, Args, Command, CommandError, Output};

fn main() -> ExitCode {
    let argv = match argv() {
        Ok(argv) => argv,
        Err(error) => return usage(&error),
    };
    let args = match Args::try_parse_from(argv) {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(liqo_auth::EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    liqo_auth::init_logging(&args.log.level, args.log.format);
    // tokio reads TOKIO_WORKER_THREADS (default: the CPUs the process may use, cgroup quota
    // included) and panics on a value that is not a positive integer: refuse it here instead.
    if let Some(value) = std::env::var_os("TOKIO_WORKER_THREADS") {
        if value.to_str().and_then(|v| v.parse::<usize>().ok()).filter(|n| *n > 0).is_none() {
            let error = std::io::Error::other(format!("TOKIO_WORKER_THREADS={value:?} must be a positive integer"));
            return usage(&error);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(Output::Text, &error),
    };
    let output = args.command.output();
    let serving = matches!(args.command, Command::Serve(_));
    if serving {
        heap::return_freed_memory_periodically();
    }
    let mut out = std::io::stdout();
    let result: Result<ExitCode, CommandError> = runtime.block_on(async move {
        let done = |()| ExitCode::SUCCESS;
        match args.command {
            Command::Serve(serve) => serve.into_config()?.serve().await.map(done).map_err(Into::into),
            Command::Token(command) => {
                let (backend, action) = command.into_options();
                liqo_auth::token(&backend, action, &mut out).await.map(done)
            }
            Command::Tenant(command) => {
                let (backend, action) = command.into_options();
                liqo_auth::tenant(&backend, action, &mut out).await.map(done)
            }
            Command::Check(args) if args.pre => {
                let (preflight, output) = args.into_pre_options();
                Ok(liqo_auth::check_report(&preflight.run().await, output))
            }
            Command::Check(args) => match args.into_options() {
                Ok((options, output)) => Ok(liqo_auth::check(options, output).await),
                Err(error) => Ok(usage(&error)),
            },
            Command::Discover(args) => match args.into_options() {
                Ok(options) => Ok(liqo_auth::discover(options).await),
                Err(error) => Ok(usage(&error)),
            },
            Command::DnsRecords(args) => {
                let (backend, options) = args.into_options();
                liqo_auth::dns_records(&backend, options, &mut out).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Peer(args) => {
                let (backend, options) = match args.into_options() {
                    Ok(parts) => parts,
                    Err(error) => return Ok(usage(&error)),
                };
                let backend = backend.open(Access::Existing).await?.peer_backend();
                Ok(liqo_auth::peer(options, backend).await)
            }
            Command::Renew(args) => {
                let (backend, options) = args.into_options()?;
                let backend = backend.open(Access::Existing).await?.peer_backend();
                Ok(liqo_auth::renew(options, backend).await)
            }
            Command::Agent(args) => match args.into_options() {
                Ok((backend, options)) => {
                    let backend = backend.open(Access::Existing).await?.peer_backend();
                    Ok(liqo_auth::agent(options, backend).await)
                }
                Err(error) => Ok(usage(&error)),
            },
            Command::Identity(command) => {
                let (backend, action) = command.into_options();
                let backend = backend.open(Access::Existing).await?.peer_backend();
                liqo_auth::identity(action, backend.identities.as_ref(), &mut out)
                    .await
                    .map(|()| ExitCode::SUCCESS)
                    .map_err(Into::into)
            }
            Command::Info(args) => {
                liqo_auth::info(&args.backend.to_config(), args.output.format(), &mut out).await.map(done)
            }
            Command::Init(args) => {
                let (backend, options) = args.into_options();
                liqo_auth::init(&backend, options, &mut out).await.map(done)
            }
            Command::Version(args) => liqo_auth::version(args.output.format(), &mut out).map(done),
            Command::Completion(args) => args.write(&mut out).map(|()| ExitCode::SUCCESS).map_err(Into::into),
            Command::CaHash(args) => liqo_auth::ca_hash(args.into_options(), &mut out).await.map(done),
            Command::Help(args) => match args.render() {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(message) => {
                    eprintln!("error: {message}");
                    Ok(ExitCode::from(liqo_auth::EXIT_USAGE))
                }
            },
        }
    });
    result.unwrap_or_else(|error| {
        if serving {
            // The service's failures belong in its log (JSON in a pod), once.
            tracing::error!(error = %liqo_auth::error_chain(error.as_ref()), "liqo-auth failed");
            return ExitCode::from(liqo_auth::EXIT_FAILURE);
        }
        fail(output, error.as_ref())
    })
}

/// The arguments; invoked as `auth-service`, the reference's Go-style flags as `serve` flags.
fn argv() -> Result<Vec<std::ffi::OsString>, liqo_auth::GoFlagError> {
    let args: Vec<_> = std::env::args_os().collect();
    let invoked_as = args.first().and_then(|a| std::path::Path::new(a).file_name().map(|n| n.to_owned()));
    if invoked_as.as_deref() == Some(std::ffi::OsStr::new("auth-service")) {
        return liqo_auth::go_style_argv(args);
    }
    Ok(args)
}

/// A flag value that parsed but makes no sense (a bad pin, an unreadable CA file): exit 64.
fn usage(error: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("error: {}", liqo_auth::error_chain(error));
    ExitCode::from(liqo_auth::EXIT_USAGE)
}

/// A failed command's error, printed once: a `{"error":{...}}` document on stdout with
/// `-o json|yaml`, else one `error:` line on stderr.
fn fail(output: Output, error: &(dyn std::error::Error + 'static)) -> ExitCode {
    liqo_auth::fail_with(output, liqo_auth::error_code(error), &liqo_auth::error_chain(error))
}

/// Returning freed heap memory to the system, for `serve`.
///
/// glibc's allocator keeps what a burst of connections freed (thousands of TLS buffers spread
/// over its per-thread arenas) for reuse, so RSS stayed at its peak after a connection flood
/// (`benches/memory.sh`: 55 MB after 4,096 connections closed, 13 MB before). Like Go's
/// background scavenger, a thread hands free pages back every few seconds with `malloc_trim(0)`;
/// a call that finds nothing to return costs microseconds. Other allocators (musl) need nothing.
mod heap {
    use std::time::Duration;

    const PERIOD: Duration = Duration::from_secs(10);

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub fn return_freed_memory_periodically() {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        let spawned = std::thread::Builder::new().name("liqo-auth-heap-trim".into()).spawn(|| loop {
            std::thread::sleep(PERIOD);
            // SAFETY: glibc's malloc_trim takes no pointers, is thread-safe (it locks each arena
            // in turn) and only releases pages of free chunks.
            unsafe {
                malloc_trim(0);
            }
        });
        if let Err(error) = spawned {
            tracing::warn!(error = %error, "could not start the heap trim thread; freed memory stays with the process");
        }
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn return_freed_memory_periodically() {}
}
