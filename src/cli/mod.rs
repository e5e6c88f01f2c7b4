//! Command line: every clap argument of every subcommand, each flag also settable as
//! `LIQO_AUTH_<FLAG>`.
//!
//! This module only parses and validates flags and turns them into plain option structs
//! (`Config`, `BackendConfig`, the client commands' options); it never opens a backend or a
//! connection. `serve` keeps the reference `auth-service` flag names, defaults and meanings so
//! the binary is a drop-in replacement in the reference Helm chart.

use clap::{Args as ClapArgs, Parser, Subcommand};

pub use crate::telemetry::LogFormat;

pub mod agent;
pub mod check;
pub mod discover;
mod dns_records;
mod goflags;
pub mod identity;
pub mod info;
pub mod peer;
pub mod renew;
mod serve;
mod shared;
mod tenant;
pub mod token;
pub mod trust;

pub use dns_records::DnsRecordsArgs;
pub use goflags::{go_style_argv, GoFlagError};
pub use serve::ServeArgs;
pub use shared::{
    parse_cidr, parse_duration, parse_timeout, AdvertiseArgs, BackendArgs, BackendKind, OutputArgs, OutputFormat,
};
pub use tenant::TenantCommand;
pub use token::TokenCommand;

/// liqo-auth: identity issuance for Liqo cluster peering.
#[derive(Debug, Parser)]
#[command(
    name = "liqo-auth",
    version,
    about,
    long_about = None,
    disable_help_subcommand = true,
    after_help = "Exit codes: 0 ok, 1 failure, 2 partial (check: the auth service passed, the API server did not), 64 usage.\n\nExamples:\n  liqo-auth serve --backend local --enable-tls --address 127.0.0.1:5000\n  liqo-auth token create --backend local --print-peer-command\n  liqo-auth info -n liqo -o yaml\n  liqo-auth help token create"
)]
pub struct Args {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Logging flags, accepted by every subcommand.
#[derive(Debug, Clone, ClapArgs)]
pub struct LogArgs {
    /// Log level: error, warn, info, debug, trace, or a klog verbosity number (0-1 info, 2-3 debug, 4+ trace).
    #[arg(short = 'v', long = "log-level", global = true, env = "LIQO_AUTH_LOG_LEVEL", default_value = "info")]
    pub level: String,
    /// Log format.
    #[arg(long = "log-format", global = true, env = "LIQO_AUTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub format: LogFormat,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the authentication service.
    #[command(after_help = "Examples:\n  \
        liqo-auth serve --backend local --enable-tls --address 127.0.0.1:5000\n  \
        liqo-auth serve --backend local --enable-tls --address :5000 --advertise-auth-address auth.example.com:5000\n  \
        liqo-auth serve -n liqo --enable-tls\n  \
        liqo-auth serve -n liqo --address :8080 --trusted-proxy 10.0.0.0/24   # plain HTTP behind an Ingress")]
    Serve(Box<ServeArgs>),
    /// Manage tokens: the shared token and per-peer join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List peers and remove them (unpeering).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Walk the path a peering takes (DNS, TCP, TLS, /ids, API server) and explain failures.
    Check(check::CheckArgs),
    /// Find liqo-auth services on the LAN (mDNS) or in DNS domains, read their /ids and print how to peer.
    Discover(discover::DiscoverArgs),
    /// Print the DNS records (PTR, SRV, TXT) that list this cluster in a discovery domain.
    DnsRecords(DnsRecordsArgs),
    /// Obtain an identity from another cluster's liqo-auth service and store it.
    Peer(Box<peer::PeerArgs>),
    /// Renew a stored identity once it is due (proof of possession, no token); exit 0 when
    /// renewed or not due, 2 when the provider refused (peer again), 3 when it is unreachable.
    Renew(Box<renew::RenewArgs>),
    /// Keep every stored identity renewed until SIGTERM (serves /healthz, /readyz, /metrics).
    Agent(Box<agent::AgentArgs>),
    /// The identities this cluster obtained from providers: list them, remove one.
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Show this cluster: ID and name, backend, auth URL, TLS and pin, certificate expiry, peers.
    Info(info::InfoArgs),
    /// Create a local data dir (cluster identity, shared token, CA) without serving, e.g. for a
    /// consumer that only runs `peer`.
    Init(info::InitArgs),
    /// Print the version, git commit and supported Liqo versions.
    Version(info::VersionArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  liqo-auth completion bash > /etc/bash_completion.d/liqo-auth\n  liqo-auth completion zsh > \"${fpath[1]}/_liqo-auth\"\n  liqo-auth completion fish > ~/.config/fish/completions/liqo-auth.fish"
    )]
    Completion(info::CompletionArgs),
    /// Print the `--ca-hash` pin of a certificate: a file, a Secret, or a running service.
    #[command(
        after_help = "Examples:\n  liqo-auth ca-hash --file /certs/cert.pem\n  liqo-auth ca-hash --secret liqo-auth-tls -n liqo\n  liqo-auth ca-hash --url https://auth.example.com"
    )]
    CaHash(info::CaHashArgs),
    /// Print the help of liqo-auth or of one of its commands (`liqo-auth help token create`).
    Help(HelpArgs),
}

/// `help` arguments.
#[derive(Debug, Clone, ClapArgs)]
pub struct HelpArgs {
    /// The command (and subcommand) to describe.
    pub command: Vec<String>,
}

impl HelpArgs {
    /// The help text of the named command; an unknown name is an error naming it.
    pub fn render(&self) -> Result<String, String> {
        use clap::CommandFactory;
        let mut command = Args::command();
        command.build();
        let mut current = &mut command;
        for name in &self.command {
            current = current
                .find_subcommand_mut(name)
                .ok_or_else(|| format!("unknown command {name:?}: see `liqo-auth --help`"))?;
        }
        Ok(current.render_long_help().to_string())
    }
}

impl Command {
    /// The output format the command was asked for, so that its errors follow it.
    pub fn output(&self) -> crate::output::Output {
        use crate::output::Output;
        match self {
            Self::Token(command) => command.output(),
            Self::Tenant(command) => command.output(),
            Self::Check(args) => args.output.into(),
            Self::Discover(args) => args.output.into(),
            Self::DnsRecords(args) if args.output == OutputFormat::Json => Output::Json,
            Self::DnsRecords(_) => Output::Text,
            Self::Peer(args) => args.output.into(),
            Self::Info(args) => args.output.format(),
            Self::Init(args) => args.output.format(),
            Self::Version(args) => args.output.format(),
            Self::CaHash(args) => args.output.format(),
            Self::Serve(_) | Self::Completion(_) | Self::Help(_) => Output::Text,
            Self::Renew(_) | Self::Agent(_) | Self::Identity(_) => Output::Text,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn serve_help_groups_every_flag_under_a_heading_and_shows_examples() {
        use clap::CommandFactory;
        let mut command = Args::command();
        let help = command.find_subcommand_mut("serve").expect("serve").render_help().to_string();
        let headings = [
            "Backend:",
            "Server:",
            "TLS:",
            "Kubernetes and signing:",
            "Limits:",
            "Observability and discovery:",
            "Compatibility (reference flags):",
        ];
        for heading in headings {
            assert!(help.contains(&format!("\n{heading}\n")), "no {heading} in:\n{help}");
        }
        let limits = help.split("\n\n").find(|section| section.starts_with("Limits:")).expect("a Limits section");
        for flag in ["--max-connections-per-source", "--idle-timeout", "--header-read-timeout", "--body-read-timeout"] {
            assert!(limits.contains(flag), "{flag} is not under Limits:\n{limits}");
        }
        assert!(help.contains("Examples:\n  liqo-auth serve --backend local"), "{help}");
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("8760h").unwrap(), Duration::from_secs(8760 * 3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "5", "5x", "h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn boolean_flags_take_bare_or_explicit_values() {
        let args =
            Args::try_parse_from(["liqo-auth", "serve", "--enable-tls", "--enable-authentication=false"]).unwrap();
        let Command::Serve(serve) = args.command else { panic!("serve") };
        assert!(serve.enable_tls);
        assert!(!serve.enable_authentication);
        let args = Args::try_parse_from(["liqo-auth", "serve", "--enable-tls=false", "--address", ":8443"]).unwrap();
        let Command::Serve(serve) = args.command else { panic!("serve") };
        assert!(!serve.enable_tls);
        assert_eq!(serve.address, ":8443");
    }

    #[test]
    fn reference_defaults_are_kept() {
        let args = Args::try_parse_from(["liqo-auth", "serve"]).unwrap();
        let Command::Serve(serve) = args.command else { panic!("serve") };
        assert_eq!(serve.address, ":5000");
        assert!(!serve.enable_tls && serve.enable_authentication);
        assert_eq!(serve.backend.namespace, None, "from the kubeconfig context or the pod, else liqo");
        assert_eq!(serve.cert_path, None, "the default /certs/cert.pem, which generates when absent");
        assert_eq!(serve.backend.backend, BackendKind::Kubernetes);
        assert_eq!(serve.certificate_ttl, Duration::from_secs(8760 * 3600));
        assert!(!serve.mdns_advertise && serve.mdns_interface.is_empty());
        assert_eq!(serve.mdns_port, None);
        assert_eq!(serve.shared_token, serve::SharedTokenMode::Enabled);
        assert_eq!(serve.metrics_address, None, "not given: the default :9090, not required to bind");
        assert_eq!((serve.auth_failure_limit, serve.max_concurrent_issuances), (10, 64));
        assert_eq!(serve.tls_reload_interval, Duration::from_secs(10));
    }

    #[test]
    fn mdns_flags_parse_repeated_interfaces_and_a_port() {
        let args = Args::try_parse_from([
            "liqo-auth",
            "serve",
            "--mdns-advertise",
            "--mdns-interface",
            "eth0",
            "--mdns-interface",
            "eth1",
            "--mdns-port",
            "30443",
        ])
        .unwrap();
        let Command::Serve(serve) = args.command else { panic!("serve") };
        assert!(serve.mdns_advertise);
        assert_eq!(serve.mdns_interface, ["eth0", "eth1"]);
        assert_eq!(serve.mdns_port, Some(30443));
        assert!(Args::try_parse_from(["liqo-auth", "serve", "--mdns-port", "0"]).is_err());
    }

    #[test]
    fn token_create_has_safe_defaults_and_refuses_zero_uses() {
        let args = Args::try_parse_from(["liqo-auth", "token", "create"]).unwrap();
        let Command::Token(TokenCommand::Create(create)) = args.command else { panic!("token create") };
        assert_eq!((create.ttl, create.max_uses), (Duration::from_secs(24 * 3600), 1));
        assert!(create.cluster_id.is_none() && !create.print_peer_command);
        assert!(Args::try_parse_from(["liqo-auth", "token", "create", "--max-uses", "0"]).is_err());
    }

    #[test]
    fn trusted_proxies_take_networks_and_single_addresses() {
        let args = Args::try_parse_from([
            "liqo-auth",
            "serve",
            "--trusted-proxy=10.0.0.0/8",
            "--trusted-proxy",
            "192.0.2.7,fd00::1/64",
        ])
        .unwrap();
        let Command::Serve(serve) = args.command else { panic!("serve") };
        let nets: Vec<String> = serve.trusted_proxy.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "fd00::/64"]);
        assert!(Args::try_parse_from(["liqo-auth", "serve", "--trusted-proxy=10.0.0.0/33"]).is_err());
    }
}
