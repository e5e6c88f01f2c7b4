//! `check` flags, turned into `client::check::CheckOptions`, or with `--pre` into a
//! `config::PreflightConfig`.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::trust::{TrustArgs, TrustArgsError};
use crate::cli::{parse_timeout, OutputFormat};
use crate::client::check::CheckOptions;
use crate::client::Output;
use crate::config::{Connection, PreflightConfig, DEFAULT_KUBE_REQUEST_TIMEOUT};

/// `liqo-auth check` flags. Every flag can also be set with `LIQO_AUTH_<FLAG>`.
#[derive(Clone, Debug, clap::Args)]
pub struct CheckArgs {
    /// Base URL of the liqo-auth service to check, e.g. https://auth.example.org:8443.
    #[arg(long, env = "LIQO_AUTH_AUTH_URL", value_name = "URL", required_unless_present = "pre")]
    pub auth_url: Option<String>,

    /// Preflight before installing, with your own kubeconfig: the API server, a real CSR round
    /// trip through signer kubernetes.io/kube-apiserver-client, every permission of the service
    /// account (SubjectAccessReview), the cluster-ID ConfigMap, the serving Secret and the basic
    /// peering ClusterRoles. Needs no --auth-url.
    #[arg(long, conflicts_with_all = ["auth_url", "api_server"])]
    pub pre: bool,

    /// Kubeconfig for --pre (default: KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, env = "LIQO_AUTH_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace the service will run in, for --pre.
    #[arg(short = 'n', long, env = "LIQO_AUTH_NAMESPACE", default_value = "liqo")]
    pub namespace: String,

    /// The service's ServiceAccount in that namespace, for --pre.
    #[arg(long, env = "LIQO_AUTH_SERVICE_ACCOUNT", default_value = "liqo-auth")]
    pub service_account: String,

    /// How long --pre waits for the test certificate (Go duration).
    #[arg(long, env = "LIQO_AUTH_SIGNING_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub signing_timeout: Duration,

    /// Kubernetes API server URL to check as well (TCP, TLS, anonymous GET /version).
    #[arg(long, env = "LIQO_AUTH_API_SERVER", value_name = "URL")]
    pub api_server: Option<String>,

    /// How the auth service's certificate is verified.
    #[command(flatten)]
    pub trust: TrustArgs,

    /// Time allowed for each step (Go duration, e.g. 5s or 500ms; `--timeout` is an old name of
    /// this flag).
    #[arg(long = "step-timeout", alias = "timeout", env = "LIQO_AUTH_STEP_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Output format.
    #[arg(short = 'o', long, env = "LIQO_AUTH_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

impl CheckArgs {
    /// Turns the flags into [`CheckOptions`] and the output format, reading `--ca-file`.
    pub fn into_options(self) -> Result<(CheckOptions, Output), TrustArgsError> {
        let trust = self.trust.into_server_trust()?;
        // clap requires --auth-url unless --pre, which takes `into_pre_options` instead.
        let auth_url = self.auth_url.unwrap_or_default();
        let options = CheckOptions { auth_url, api_server: self.api_server, trust, timeout: self.timeout };
        Ok((options, self.output.into()))
    }

    /// The `--pre` flags as a [`PreflightConfig`] and the output format.
    pub fn into_pre_options(self) -> (PreflightConfig, Output) {
        let timeout = self.timeout.max(DEFAULT_KUBE_REQUEST_TIMEOUT);
        let config = PreflightConfig {
            connection: Connection::from_flags(self.kubeconfig.as_deref(), None),
            request_timeout: timeout,
            namespace: self.namespace,
            service_account: self.service_account,
            signing_timeout: self.signing_timeout,
        };
        (config, self.output.into())
    }
}

// Shared by `check`, `discover` and `peer`: the client's own output switch.
impl From<OutputFormat> for Output {
    fn from(format: OutputFormat) -> Self {
        match format {
            OutputFormat::Table => Output::Text,
            OutputFormat::Json => Output::Json,
            OutputFormat::Yaml => Output::Yaml,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::client::transport::ServerTrust;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        check: CheckArgs,
    }

    #[test]
    fn check_args_parse_pins_timeout_and_output() {
        let pin = format!("sha256:{}", "ab".repeat(32));
        let cli = Cli::try_parse_from([
            "check",
            "--auth-url",
            "https://a:8443",
            "--ca-hash",
            &pin,
            "--ca-hash",
            &pin,
            "--timeout",
            "500ms",
            "--output",
            "json",
        ])
        .expect("parses");
        assert_eq!(cli.check.trust.ca_hash, vec![[0xab; 32], [0xab; 32]]);
        assert_eq!(cli.check.timeout, Duration::from_millis(500));
        assert_eq!(cli.check.output, OutputFormat::Json);
        let (options, output) = cli.check.into_options().expect("options");
        assert_eq!(options.trust, ServerTrust::Pin(vec![[0xab; 32], [0xab; 32]]));
        assert_eq!(output, Output::Json);
    }

    #[test]
    fn check_args_refuse_a_pin_together_with_insecure_and_bad_pins() {
        let pin = format!("sha256:{}", "ab".repeat(32));
        assert!(Cli::try_parse_from([
            "check",
            "--auth-url",
            "https://a",
            "--ca-hash",
            &pin,
            "--insecure-skip-tls-verify"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["check", "--auth-url", "https://a", "--ca-hash", "sha256:zz"]).is_err());
        assert!(Cli::try_parse_from(["check", "--auth-url", "https://a", "--timeout", "5"]).is_err());
        assert!(Cli::try_parse_from(["check", "--auth-url", "https://a", "--timeout", "0"]).is_err());
    }

    #[test]
    fn insecure_flag_takes_a_bare_or_explicit_value() {
        let bare =
            Cli::try_parse_from(["check", "--auth-url", "https://a", "--insecure-skip-tls-verify"]).expect("parses");
        assert_eq!(bare.check.into_options().expect("options").0.trust, ServerTrust::InsecureSkipVerify);
        let off = Cli::try_parse_from(["check", "--auth-url", "https://a", "--insecure-skip-tls-verify=false"])
            .expect("parses");
        assert_eq!(off.check.into_options().expect("options").0.trust, ServerTrust::SystemRoots);
    }

    #[test]
    fn check_args_default_to_system_roots_and_five_seconds() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["check", "--auth-url", "https://a"]).expect("parses");
        assert_eq!(cli.check.timeout, Duration::from_secs(5));
        assert_eq!(cli.check.into_options().expect("options").0.trust, ServerTrust::SystemRoots);
    }

    #[test]
    fn pre_needs_no_auth_url_and_takes_the_namespace_and_account() {
        let cli = Cli::try_parse_from(["check", "--pre", "-n", "edge", "--service-account", "auth"]).expect("parses");
        let (config, output) = cli.check.into_pre_options();
        assert_eq!((config.namespace.as_str(), config.service_account.as_str()), ("edge", "auth"));
        assert_eq!(config.signing_timeout, Duration::from_secs(30));
        assert_eq!(output, Output::Text);
        assert!(Cli::try_parse_from(["check"]).is_err(), "--auth-url or --pre");
        assert!(Cli::try_parse_from(["check", "--pre", "--auth-url", "https://a"]).is_err());
    }
}
