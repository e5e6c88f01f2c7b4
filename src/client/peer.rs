//! `liqo-auth peer`: obtains an identity (a client certificate for the provider's API server)
//! from another cluster's liqo-auth service and stores it where Liqo looks for it.
//!
//! Steps (issue 4): verify the auth service per the trust flags, `GET /ids`, generate a key and
//! CSR once per attempt (persisted before it is sent, so a retry re-sends the same CSR and a lost
//! response is recovered by the server's idempotent repeat), `POST /identity/certificate` with
//! retries bounded by `--timeout`, check the certificate, store it, optionally write a
//! kubeconfig. The fixes over the reference consumer (spec 4): TLS is verified, the key is not
//! replaced on every attempt, and the deadline outlasts the server's signing wait.
//!
//! The transport lives in [`super::transport`], storage in [`super::identity_store`], the
//! kubeconfig in [`super::kubeconfig`]. Printing happens only in [`execute`].

use std::fmt;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use clap::ArgAction;
use rand::Rng as _;
use serde::Serialize;
use tokio::time::Instant;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::adapter::kube::KubeFailure;
use crate::adapter::local::LocalStore;
use crate::cli::{BackendArgs, BackendKind};
use crate::client::check::{parse_timeout, OutputFormat};
use crate::client::identity_store::{
    key_matches_certificate, IdentityStore, KubeIdentityStore, LocalIdentityStore, PeerIdentity, PendingKey,
};
use crate::client::kubeconfig::KubeconfigParts;
use crate::client::transport::{AuthClient, Response, TlsFailure, TransportError};
use crate::client::trust::{TrustArgs, TrustArgsError};
use crate::http::wire::{CertificateRequest, CertificateResponse, ClusterRef, ErrorBody, IdsResponse};
use crate::identity::port::{SharedTokenSource, StoreError};
use crate::identity::{ClusterId, ClusterIdentity, ClusterName, ClusterValueError, ParsedCsr, LIQO_ORGANIZATION};
use crate::pki::{self, CertificateSummary};

/// First retry delay ceiling; doubles per attempt up to [`MAX_BACKOFF`] (full jitter below it).
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// Largest retry delay ceiling.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest single request: the server may wait for its signer (20 s by default) before answering.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(35);

/// `liqo-auth peer` flags. Every flag can also be set with `LIQO_AUTH_<FLAG>`.
#[derive(Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("token-source").required(true).args(["token_file", "token_stdin", "token"])))]
pub struct PeerArgs {
    /// Base URL of the provider's liqo-auth service, e.g. https://auth.example.org:8443.
    #[arg(long, env = "LIQO_AUTH_AUTH_URL", value_name = "URL")]
    pub auth_url: String,

    /// File holding the provider's token.
    #[arg(long, env = "LIQO_AUTH_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Read the provider's token from standard input.
    #[arg(long, env = "LIQO_AUTH_TOKEN_STDIN", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub token_stdin: bool,

    /// The provider's token (leaks into shell history and process lists: prefer --token-file).
    #[arg(long, env = "LIQO_AUTH_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// How the auth service's certificate is trusted.
    #[command(flatten)]
    pub trust: TrustArgs,

    /// Type of the new private key.
    #[arg(long, env = "LIQO_AUTH_KEY_TYPE", value_enum, default_value_t = KeyType::P256)]
    pub key_type: KeyType,

    /// Longest time to keep trying, retries included (Go duration, e.g. 60s or 2m).
    #[arg(long, env = "LIQO_AUTH_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Request a new identity (with a new key) even when a valid one is stored. Bare flag or `=true|false`.
    #[arg(long, env = "LIQO_AUTH_FORCE", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub force: bool,

    /// Output format of the summary.
    #[arg(long, env = "LIQO_AUTH_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Also write a kubeconfig for the provider's API server to this file (mode 0600).
    #[arg(long, env = "LIQO_AUTH_KUBECONFIG_OUT", value_name = "FILE")]
    pub kubeconfig_out: Option<PathBuf>,

    /// Where this cluster's state lives.
    #[command(flatten)]
    pub backend: BackendArgs,

    /// This cluster's ID (default: the Liqo ConfigMap, or the local data dir's cluster.json).
    #[arg(long = "cluster-id", env = "LIQO_AUTH_CLUSTER_ID")]
    pub cluster_id: Option<String>,

    /// This cluster's name (default: as for --cluster-id).
    #[arg(long = "cluster-name", env = "LIQO_AUTH_CLUSTER_NAME")]
    pub cluster_name: Option<String>,

    /// File with this cluster's own token, sent as originClusterToken so the provider can peer
    /// back (default: the local data dir's token, or Secret auth-token on Kubernetes).
    #[arg(long, env = "LIQO_AUTH_ORIGIN_TOKEN_FILE", value_name = "FILE")]
    pub origin_token_file: Option<PathBuf>,
}

/// Key algorithm of the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// ECDSA P-256 (the default).
    P256,
    /// Ed25519 (the reference consumer's choice).
    Ed25519,
    /// RSA 2048 bits (slow to generate).
    Rsa2048,
}

/// What `peer` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerOutcome {
    /// `issued` or `existing`.
    pub status: PeerStatus,
    /// The provider's cluster ID.
    pub provider_id: String,
    /// The provider's cluster name.
    pub provider_name: String,
    /// The provider's tenant namespace for this cluster (the kubeconfig's namespace).
    pub namespace: String,
    /// The provider's API server URL.
    pub api_server_url: String,
    /// Serial number of the certificate, lower-case hex.
    pub certificate_serial: String,
    /// notAfter of the certificate, Unix seconds.
    pub certificate_not_after: i64,
    /// Where the identity is stored.
    pub stored_in: String,
    /// The kubeconfig written, if any.
    pub kubeconfig: Option<PathBuf>,
    /// Requests made to `/identity/certificate` (0 when an existing identity was reported).
    pub certificate_requests: u32,
    /// Warnings printed on the way.
    pub warnings: Vec<String>,
}

/// Whether a certificate was issued in this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerStatus {
    /// A new certificate was obtained and stored.
    Issued,
    /// A valid identity was already stored; nothing was requested.
    Existing,
}

/// Why `peer` failed. Messages never contain tokens or keys.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// A token file could not be read.
    #[error("reading {flag} {path}")]
    ReadToken {
        /// `--token-file` or `--origin-token-file`.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Standard input could not be read.
    #[error("reading the token from standard input")]
    ReadTokenStdin(#[source] std::io::Error),
    /// The token given is empty.
    #[error("the token from {flag} is empty")]
    EmptyToken {
        /// Where it came from.
        flag: &'static str,
    },
    /// `--cluster-id` or `--cluster-name` is not a DNS-1123 label.
    #[error("invalid local cluster identity")]
    InvalidLocalIdentity(#[source] ClusterValueError),
    /// The trust flags are unusable.
    #[error(transparent)]
    Trust(#[from] TrustArgsError),
    /// The client could not be prepared (bad URL, unusable CA file).
    #[error("preparing the client for {url}")]
    Client {
        /// The auth URL.
        url: String,
        /// The transport's reason.
        #[source]
        source: TransportError,
    },
    /// A request failed in a way retrying cannot fix (TLS verification, plain HTTP...).
    #[error("{step} at {url} failed")]
    Request {
        /// `GET /ids` or `POST /identity/certificate`.
        step: Step,
        /// The auth URL.
        url: String,
        /// What went wrong.
        #[source]
        source: TransportError,
    },
    /// Retries did not succeed before `--timeout`.
    #[error("{step} at {url} did not succeed within {budget:?} ({attempts} attempts); last failure")]
    OutOfTime {
        /// The step.
        step: Step,
        /// The auth URL.
        url: String,
        /// `--timeout`.
        budget: Duration,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<AttemptFailure>,
    },
    /// `GET /ids` did not answer 200.
    #[error("GET /ids at {url} answered HTTP {status}: is this URL a liqo-auth service?")]
    IdsStatus {
        /// The auth URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// `GET /ids` answered something other than a cluster identity.
    #[error("GET /ids at {url} did not return a cluster identity")]
    IdsBody {
        /// The auth URL.
        url: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The provider's identity from `/ids` is unusable.
    #[error("GET /ids at {url} returned an unusable cluster identity")]
    IdsIdentity {
        /// The auth URL.
        url: String,
        /// What is wrong with it.
        #[source]
        source: ClusterValueError,
    },
    /// The auth URL leads back to this cluster.
    #[error("the provider's cluster ID {cluster_id} is this cluster's own ID: refusing to peer a cluster with itself")]
    PeeringWithSelf {
        /// The shared ID.
        cluster_id: String,
    },
    /// The provider refused the request (401, 403, 409 or another 4xx).
    #[error("the provider refused the request (HTTP {status}): {message}\nhint: {hint}")]
    Rejected {
        /// The status.
        status: u16,
        /// The server's message, with any token redacted.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// The success answer is not a certificate response.
    #[error("the provider's answer (HTTP {status}) is not a certificate response")]
    AnswerBody {
        /// The status.
        status: u16,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The certificate in the answer is unusable.
    #[error("the provider's certificate is unusable: {0}")]
    Certificate(CertificateProblem),
    /// The key could not be generated.
    #[error("generating the {key_type:?} key")]
    GenerateKey {
        /// The requested type.
        key_type: KeyType,
        /// The library's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// This cluster's identity could not be determined.
    #[error("determining this cluster's identity")]
    LocalIdentity(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The Kubernetes client could not be configured.
    #[error("configuring the Kubernetes client")]
    KubeConfig(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// This cluster's own token could not be read from Secret auth-token.
    #[error("reading this cluster's token for originClusterToken")]
    OriginToken(#[source] KubeFailure),
    /// Reading or writing the identity store failed.
    #[error("accessing the identity store")]
    Store(#[source] StoreError),
    /// The kubeconfig could not be written.
    #[error("writing the kubeconfig {path}")]
    WriteKubeconfig {
        /// `--kubeconfig-out`.
        path: PathBuf,
        /// The write error.
        #[source]
        source: StoreError,
    },
}

/// One failed attempt that was worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum AttemptFailure {
    /// The connection failed or timed out.
    #[error(transparent)]
    Transport(TransportError),
    /// The server answered 429 or 5xx.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The status.
        status: u16,
        /// The server's message, tokens redacted.
        message: String,
    },
    /// The overall deadline passed during the request.
    #[error("the request was still running at the deadline")]
    Deadline,
}

/// A step of the peering, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `GET /ids`.
    Ids,
    /// `POST /identity/certificate`.
    Certificate,
}

/// What is wrong with an issued certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateProblem {
    /// `certificate` is missing (e.g. an IAM-mode answer).
    Missing,
    /// Not base64 of PEM, or no CERTIFICATE block.
    NotPem,
    /// The DER does not parse.
    NotX509,
    /// The public key is not ours.
    KeyMismatch,
    /// No extended key usage clientAuth.
    NotClientAuth,
    /// Already expired (or not yet valid).
    OutsideValidity,
    /// `apiServerCA` is not base64 of PEM certificates.
    BadApiServerCa,
}

/// Exponential backoff with full jitter: the n-th delay is uniform in `[0, min(cap, base·2ⁿ)]`.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

/// Runs `peer`, building the Kubernetes client from `--kubeconfig` when the backend needs one.
pub async fn run(args: PeerArgs) -> Result<PeerOutcome, PeerError> {
    let kube = match args.backend.backend {
        BackendKind::Kubernetes => Some(
            crate::adapter::kube::load_config(args.backend.kubeconfig.as_deref())
                .await
                .map_err(PeerError::KubeConfig)?,
        ),
        BackendKind::Local => None,
    };
    run_inner(args, kube).await
}

/// Runs `peer` over an injected Kubernetes client configuration (tests pass the fake API
/// server's). The configuration is used only with `--backend kubernetes`.
pub async fn run_with_kube(args: PeerArgs, kube_config: kube::Config) -> Result<PeerOutcome, PeerError> {
    let kube = (args.backend.backend == BackendKind::Kubernetes).then_some(kube_config);
    run_inner(args, kube).await
}

/// Runs `peer` and prints the summary (stdout) or the error (stderr). Exit code 0 on success
/// (including "already peered"), 1 on failure.
pub async fn execute(args: PeerArgs) -> ExitCode {
    let output = args.output;
    match run(args).await {
        Ok(outcome) => {
            match output {
                OutputFormat::Text => print!("{}", outcome.render_text()),
                OutputFormat::Json => {
                    println!("{}", serde_json::to_string(&outcome).expect("a PeerOutcome always serialises"))
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            let chain = crate::error::error_chain(&error);
            tracing::debug!(error = %chain, "peer failed");
            eprintln!("error: {chain}");
            ExitCode::FAILURE
        }
    }
}

impl PeerOutcome {
    /// A short human summary.
    pub fn render_text(&self) -> String {
        let mut out = match self.status {
            PeerStatus::Issued => {
                format!("Obtained an identity from provider {} ({}).\n", self.provider_name, self.provider_id)
            }
            PeerStatus::Existing => format!(
                "A valid identity from provider {} ({}) is already stored; nothing requested (use --force for a new one).\n",
                self.provider_name, self.provider_id
            ),
        };
        out.push_str(&format!("  tenant namespace:  {}\n", self.namespace));
        out.push_str(&format!("  API server:        {}\n", self.api_server_url));
        out.push_str(&format!(
            "  certificate:       serial {}, expires {} (Unix {})\n",
            self.certificate_serial,
            crate::pki::format_unix(self.certificate_not_after),
            self.certificate_not_after
        ));
        out.push_str(&format!("  stored in:         {}\n", self.stored_in));
        if let Some(path) = &self.kubeconfig {
            out.push_str(&format!("  kubeconfig:        {}\n", path.display()));
        }
        out
    }
}

impl Backoff {
    /// A backoff starting at `base`, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap, attempt: 0 }
    }

    /// The ceiling of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.checked_mul(factor).unwrap_or(self.cap).min(self.cap)
    }

    /// The next delay, uniform in `[0, ceiling]`; advances the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Ids => "GET /ids",
            Step::Certificate => "POST /identity/certificate",
        })
    }
}

impl fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertificateProblem::Missing => "the answer holds no certificate",
            CertificateProblem::NotPem => "the certificate is not base64 of a PEM CERTIFICATE",
            CertificateProblem::NotX509 => "the certificate is not valid X.509",
            CertificateProblem::KeyMismatch => "the certificate was issued for another public key",
            CertificateProblem::NotClientAuth => "the certificate is not a client certificate (no EKU clientAuth)",
            CertificateProblem::OutsideValidity => "the certificate is expired or not valid yet (check the clocks)",
            CertificateProblem::BadApiServerCa => "apiServerCA is not base64 of PEM certificates",
        })
    }
}

impl KeyType {
    fn name(self) -> &'static str {
        match self {
            KeyType::P256 => "p256",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa2048",
        }
    }
}

impl fmt::Debug for PeerArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerArgs")
            .field("auth_url", &self.auth_url)
            .field("token_file", &self.token_file)
            .field("token_stdin", &self.token_stdin)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("trust", &self.trust)
            .field("key_type", &self.key_type)
            .field("timeout", &self.timeout)
            .field("force", &self.force)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

/// The request the provider gets, and the secret values to keep out of messages.
struct Secrets {
    token: String,
    origin_token: Option<String>,
}

async fn run_inner(args: PeerArgs, kube: Option<kube::Config>) -> Result<PeerOutcome, PeerError> {
    let mut warnings = Vec::new();
    let deadline = Instant::now() + args.timeout;
    let token = read_token(&args, &mut warnings)?;
    let trust = args.trust.clone().into_server_trust()?;
    if args.trust.insecure_skip_tls_verify {
        warn(&mut warnings, "--insecure-skip-tls-verify: the auth service's certificate is not verified; anyone on the path can impersonate it and obtain the token".into());
    }
    let url = args.auth_url.clone();
    let client = AuthClient::new(&url, trust, args.timeout.min(MAX_REQUEST_TIMEOUT))
        .map_err(|source| PeerError::Client { url: url.clone(), source })?;
    if client.is_plain_http() {
        warn(&mut warnings, format!("{url} is plain http: the token and the certificate travel unencrypted"));
    }
    let url = client.base_url();

    // Step 2: who is the provider?
    let secrets = Secrets { token, origin_token: None };
    let ids = exchange(&client, Step::Ids, None, deadline, args.timeout, &secrets).await?;
    let provider = provider_identity(&url, &ids)?;

    // The local side: identity, store, own token.
    let backend = Backend::open(&args, kube).await?;
    let local = backend.local_identity(&args).await?;
    if local.id == provider.id {
        return Err(PeerError::PeeringWithSelf { cluster_id: local.id.to_string() });
    }
    let store = backend.identity_store();

    // Step 7: an identity that is still valid is reported, not replaced (unless --force).
    if !args.force {
        if let Some(existing) = store.existing(&provider.id).await.map_err(PeerError::Store)? {
            if let Some(summary) = still_valid(&existing) {
                let kubeconfig = write_kubeconfig(&args, &provider, &existing)?;
                return Ok(PeerOutcome {
                    status: PeerStatus::Existing,
                    provider_id: provider.id.to_string(),
                    provider_name: existing.provider_name.clone().unwrap_or_else(|| provider.name.to_string()),
                    namespace: existing.namespace.clone(),
                    api_server_url: existing.api_server_url.clone(),
                    certificate_serial: summary.serial,
                    certificate_not_after: summary.not_after,
                    stored_in: store.describe(&provider.id),
                    kubeconfig,
                    certificate_requests: 0,
                    warnings,
                });
            }
        }
    }

    // Step 3: one key and CSR for every retry of this attempt, persisted before it is sent.
    let key = match store.pending(&provider.id).await.map_err(PeerError::Store)? {
        Some(pending) if !args.force && pending_fits(&pending, args.key_type, &local.id) => {
            tracing::info!(cluster.id = %provider.id, "re-sending the certificate request of an unfinished attempt");
            pending
        }
        _ => {
            let key = generate_key(args.key_type, &local.id)?;
            store.save_pending(&provider, &key).await.map_err(PeerError::Store)?;
            key
        }
    };
    let origin_token = backend.origin_token(&args).await?;
    let secrets = Secrets { origin_token, ..secrets };

    // Step 4.
    let request = CertificateRequest {
        cluster: Some(ClusterRef { cluster_id: local.id.to_string(), cluster_name: local.name.to_string() }),
        destination_cluster_token: Some(secrets.token.clone()),
        origin_cluster_token: secrets.origin_token.clone(),
        certificate_signing_request: base64::engine::general_purpose::STANDARD.encode(key.csr_pem.as_bytes()),
        legacy_cluster_id: None,
    };
    let body = serde_json::to_vec(&request).expect("a CertificateRequest always serialises");
    let mut attempts = 0;
    let response =
        exchange_counted(&client, Step::Certificate, Some(body), deadline, args.timeout, &secrets, &mut attempts)
            .await?;
    let answer = match response.status {
        200..=299 => serde_json::from_slice::<CertificateResponse>(&response.body)
            .map_err(|source| PeerError::AnswerBody { status: response.status, source })?,
        status => return Err(rejected(status, &response.body, &secrets, &local.id)),
    };

    // Step 5.
    let issued = check_answer(&answer, &key, &mut warnings)?;

    // Step 6.
    let identity = PeerIdentity {
        provider_name: Some(provider.name.to_string()),
        private_key_pem: key.private_key_pem.clone(),
        certificate_pem: issued.certificate_pem,
        api_server_url: answer.api_server_url.clone(),
        api_server_ca: issued.api_server_ca,
        namespace: answer.namespace.clone(),
    };
    let stored_in = store.store(&provider, &identity).await.map_err(PeerError::Store)?;
    tracing::info!(cluster.id = %provider.id, cert.serial = %issued.summary.serial, "obtained an identity from provider {}", provider.id);
    let kubeconfig = write_kubeconfig(&args, &provider, &identity)?;
    Ok(PeerOutcome {
        status: PeerStatus::Issued,
        provider_id: provider.id.to_string(),
        provider_name: provider.name.to_string(),
        namespace: answer.namespace,
        api_server_url: answer.api_server_url,
        certificate_serial: issued.summary.serial,
        certificate_not_after: issued.summary.not_after,
        stored_in,
        kubeconfig,
        certificate_requests: attempts,
        warnings,
    })
}

/// The backend of this run.
enum Backend {
    Local { data_dir: PathBuf },
    Kubernetes { client: kube::Client, namespace: String },
}

impl Backend {
    async fn open(args: &PeerArgs, kube: Option<kube::Config>) -> Result<Self, PeerError> {
        match (args.backend.backend, kube) {
            (BackendKind::Local, _) => Ok(Backend::Local { data_dir: args.backend.data_dir.clone() }),
            (BackendKind::Kubernetes, config) => {
                let config = match config {
                    Some(config) => config,
                    None => crate::adapter::kube::load_config(args.backend.kubeconfig.as_deref())
                        .await
                        .map_err(PeerError::KubeConfig)?,
                };
                let client = crate::adapter::kube::client(config).map_err(|e| PeerError::KubeConfig(Box::new(e)))?;
                Ok(Backend::Kubernetes { client, namespace: args.backend.namespace.clone() })
            }
        }
    }

    fn local_store(data_dir: &std::path::Path) -> Result<LocalStore, PeerError> {
        LocalStore::open(data_dir, crate::config::LOCAL_API_SERVER_URL.into(), true)
            .map_err(|e| PeerError::LocalIdentity(Box::new(e)))
    }

    /// Flags when both are given; else the backend's record (Liqo ConfigMap, or cluster.json).
    async fn local_identity(&self, args: &PeerArgs) -> Result<ClusterIdentity, PeerError> {
        if let (Some(id), Some(name)) = (&args.cluster_id, &args.cluster_name) {
            return Ok(ClusterIdentity {
                id: ClusterId::parse(id).map_err(PeerError::InvalidLocalIdentity)?,
                name: ClusterName::parse(name).map_err(PeerError::InvalidLocalIdentity)?,
            });
        }
        match self {
            Backend::Local { data_dir } => Self::local_store(data_dir)?
                .cluster_identity(args.cluster_id.as_deref(), args.cluster_name.as_deref())
                .map_err(|e| PeerError::LocalIdentity(Box::new(e))),
            Backend::Kubernetes { client, namespace } => crate::config::kube_cluster_identity(
                client,
                namespace,
                args.cluster_id.as_deref(),
                args.cluster_name.as_deref(),
            )
            .await
            .map_err(|e| PeerError::LocalIdentity(Box::new(e))),
        }
    }

    fn identity_store(&self) -> IdentityStore {
        match self {
            Backend::Local { data_dir } => IdentityStore::Local(LocalIdentityStore::new(data_dir)),
            Backend::Kubernetes { client, .. } => IdentityStore::Kubernetes(KubeIdentityStore::new(client.clone())),
        }
    }

    /// `--origin-token-file`, else this cluster's own shared token when it has one.
    async fn origin_token(&self, args: &PeerArgs) -> Result<Option<String>, PeerError> {
        if let Some(path) = &args.origin_token_file {
            let text = std::fs::read_to_string(path).map_err(|source| PeerError::ReadToken {
                flag: "--origin-token-file",
                path: path.clone(),
                source,
            })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(PeerError::EmptyToken { flag: "--origin-token-file" });
            }
            return Ok(Some(token.to_owned()));
        }
        match self {
            Backend::Local { data_dir } => {
                Ok(Self::local_store(data_dir)?.shared_token().map(|t| t.expose().to_owned()))
            }
            Backend::Kubernetes { client, namespace } => {
                let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                    kube::Api::namespaced(client.clone(), namespace);
                let secret = crate::adapter::kube::call_opt(
                    "reading Secret auth-token",
                    api.get(crate::adapter::kube::TOKEN_SECRET),
                )
                .await
                .map_err(PeerError::OriginToken)?;
                Ok(secret.as_ref().and_then(crate::adapter::kube::kube_token::token_of).map(|t| t.expose().to_owned()))
            }
        }
    }
}

fn warn(warnings: &mut Vec<String>, text: String) {
    eprintln!("warning: {text}");
    warnings.push(text);
}

fn read_token(args: &PeerArgs, warnings: &mut Vec<String>) -> Result<String, PeerError> {
    let (text, flag) = if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path).map_err(|source| PeerError::ReadToken {
            flag: "--token-file",
            path: path.clone(),
            source,
        })?;
        (text, "--token-file")
    } else if args.token_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(PeerError::ReadTokenStdin)?;
        (text, "--token-stdin")
    } else {
        warn(
            warnings,
            "--token puts the token in shell history and process lists; prefer --token-file or --token-stdin".into(),
        );
        (args.token.clone().unwrap_or_default(), "--token")
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(PeerError::EmptyToken { flag });
    }
    Ok(token.to_owned())
}

fn provider_identity(url: &str, response: &Response) -> Result<ClusterIdentity, PeerError> {
    if response.status != 200 {
        return Err(PeerError::IdsStatus { url: url.to_owned(), status: response.status });
    }
    let ids: IdsResponse =
        serde_json::from_slice(&response.body).map_err(|source| PeerError::IdsBody { url: url.to_owned(), source })?;
    // The tenant namespace name needs a cluster name; the reference omits an empty one.
    let name = if ids.cluster_name.is_empty() { ids.cluster_id.as_str() } else { ids.cluster_name.as_str() };
    ClusterIdentity::parse_remote(&ids.cluster_id, name)
        .map_err(|source| PeerError::IdsIdentity { url: url.to_owned(), source })
}

async fn exchange(
    client: &AuthClient,
    step: Step,
    body: Option<Vec<u8>>,
    deadline: Instant,
    budget: Duration,
    secrets: &Secrets,
) -> Result<Response, PeerError> {
    let mut attempts = 0;
    exchange_counted(client, step, body, deadline, budget, secrets, &mut attempts).await
}

/// Sends the request until it gets an answer that is not worth retrying (anything but 429 and
/// 5xx), retrying connection failures, timeouts, 429 and 5xx with backoff, until `deadline`.
async fn exchange_counted(
    client: &AuthClient,
    step: Step,
    body: Option<Vec<u8>>,
    deadline: Instant,
    budget: Duration,
    secrets: &Secrets,
    attempts: &mut u32,
) -> Result<Response, PeerError> {
    let url = client.base_url();
    let mut backoff = Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF);
    loop {
        *attempts += 1;
        let sent = match &body {
            Some(body) => {
                tokio::time::timeout_at(
                    deadline,
                    client.post("/identity/certificate", body.clone(), "application/json"),
                )
                .await
            }
            None => tokio::time::timeout_at(deadline, client.get("/ids")).await,
        };
        let (failure, retry_after) = match sent {
            Err(_) => (AttemptFailure::Deadline, None),
            Ok(Ok(response)) if response.status == 429 || response.status >= 500 => {
                let retry_after = retry_after(&response);
                let message = server_message(&response.body, secrets);
                (AttemptFailure::Status { status: response.status, message }, retry_after)
            }
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(error)) if is_transient(&error) => (AttemptFailure::Transport(error), None),
            Ok(Err(source)) => return Err(PeerError::Request { step, url, source }),
        };
        let delay = backoff.next_delay().max(retry_after.unwrap_or_default());
        if matches!(failure, AttemptFailure::Deadline) || Instant::now() + delay >= deadline {
            return Err(PeerError::OutOfTime { step, url, budget, attempts: *attempts, last: Box::new(failure) });
        }
        tracing::warn!(
            attempt = *attempts,
            delay_ms = delay.as_millis() as u64,
            "{step} failed ({failure}); retrying in {delay:?}"
        );
        tokio::time::sleep(delay).await;
    }
}

/// Connection failures and timeouts may pass; TLS verification failures and bad URLs do not.
fn is_transient(error: &TransportError) -> bool {
    match error {
        // Refused too: the service may be restarting behind its Service.
        TransportError::Connect { .. } => true,
        TransportError::Timeout { .. } | TransportError::Http { .. } => true,
        TransportError::TlsHandshake { failure: TlsFailure::PeerClosed, .. } => true,
        _ => false,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by liqo-auth and is ignored).
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The server's message: the JSON envelope's `message`, else the text (the reference answers
/// text and echoes the token on 401), with every token we sent redacted and the length bounded.
fn server_message(body: &[u8], secrets: &Secrets) -> String {
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(envelope) => envelope.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let mut text = text.replace(&secrets.token, "<redacted>");
    if let Some(origin) = secrets.origin_token.as_deref().filter(|t| !t.is_empty()) {
        text = text.replace(origin, "<redacted>");
    }
    if text.chars().count() > 300 {
        text = text.chars().take(300).collect::<String>() + "…";
    }
    if text.is_empty() {
        "(no message)".to_owned()
    } else {
        text
    }
}

fn rejected(status: u16, body: &[u8], secrets: &Secrets, local: &ClusterId) -> PeerError {
    let hint = match status {
        401 => "the token is wrong or has expired: ask the provider's operator for the current one (`liqo-auth token show`) or a new one (`liqo-auth token create`), then retry".to_owned(),
        403 => format!("cluster {local} is not authorised by the provider: ask the provider's operator to allow it"),
        409 => format!(
            "the provider already issued an identity to cluster {local} for another key: re-run with the original key (keep its stored identity or pending request), or ask the provider's operator to reset it with `liqo-auth tenant remove {local}` and retry"
        ),
        _ => "the provider could not accept the request as sent; check the auth URL and the versions of both sides".to_owned(),
    };
    PeerError::Rejected { status, message: server_message(body, secrets), hint }
}

/// What step 5 accepted.
struct IssuedCertificate {
    certificate_pem: String,
    api_server_ca: Option<String>,
    summary: CertificateSummary,
}

/// Step 5: parses, matches our key, is a client certificate, is valid now, and (a warning when
/// not) is signed by a CA of `apiServerCA`.
fn check_answer(
    answer: &CertificateResponse,
    key: &PendingKey,
    warnings: &mut Vec<String>,
) -> Result<IssuedCertificate, PeerError> {
    let fail = PeerError::Certificate;
    if answer.certificate.is_empty() {
        return Err(fail(CertificateProblem::Missing));
    }
    let certificate_pem = decode_b64_text(&answer.certificate).ok_or(fail(CertificateProblem::NotPem))?;
    let der = pki::first_certificate_der(certificate_pem.as_bytes()).ok_or(fail(CertificateProblem::NotPem))?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|_| fail(CertificateProblem::NotX509))?;
    let csr = ParsedCsr::from_pem(key.csr_pem.as_bytes()).map_err(|_| fail(CertificateProblem::KeyMismatch))?;
    if cert.public_key().raw != csr.spki_der() || !key_matches_certificate(&key.private_key_pem, &certificate_pem) {
        return Err(fail(CertificateProblem::KeyMismatch));
    }
    let client_auth = cert.extensions().iter().any(|ext| match ext.parsed_extension() {
        ParsedExtension::ExtendedKeyUsage(eku) => eku.client_auth || eku.any,
        _ => false,
    });
    if !client_auth {
        return Err(fail(CertificateProblem::NotClientAuth));
    }
    if !cert.validity().is_valid() {
        return Err(fail(CertificateProblem::OutsideValidity));
    }
    let api_server_ca = match answer.api_server_ca.as_deref().filter(|ca| !ca.is_empty()) {
        Some(encoded) => {
            let pem = decode_b64_text(encoded).ok_or(fail(CertificateProblem::BadApiServerCa))?;
            let cas = pki::certificates_der(pem.as_bytes());
            if cas.is_empty() {
                return Err(fail(CertificateProblem::BadApiServerCa));
            }
            let chains = cas.iter().any(|ca_der| {
                X509Certificate::from_der(ca_der)
                    .is_ok_and(|(_, ca)| cert.verify_signature(Some(ca.public_key())).is_ok())
            });
            if !chains {
                // Not fatal: clusters with a separate client CA (k3s, some managed services)
                // sign client certificates with a CA that apiServerCA does not contain.
                warn(warnings, "the certificate is not signed by a CA in apiServerCA; this is expected only when the provider's API server uses a separate client CA".into());
            }
            Some(pem)
        }
        None => None,
    };
    let summary = CertificateSummary::from_pem(certificate_pem.as_bytes()).ok_or(fail(CertificateProblem::NotX509))?;
    Ok(IssuedCertificate { certificate_pem, api_server_ca, summary })
}

fn decode_b64_text(encoded: &str) -> Option<String> {
    let compact: String = encoded.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(compact).ok()?;
    String::from_utf8(bytes).ok()
}

/// The summary of a stored identity whose certificate is valid now and matches its key.
fn still_valid(identity: &PeerIdentity) -> Option<CertificateSummary> {
    let summary = CertificateSummary::from_pem(identity.certificate_pem.as_bytes())?;
    let now = crate::pki::unix_now();
    let valid = summary.not_before <= now && now < summary.not_after;
    (valid && key_matches_certificate(&identity.private_key_pem, &identity.certificate_pem)).then_some(summary)
}

fn pending_fits(pending: &PendingKey, key_type: KeyType, local: &ClusterId) -> bool {
    pending.key_type == key_type.name()
        && ParsedCsr::from_pem(pending.csr_pem.as_bytes()).is_ok_and(|csr| csr.common_name() == local.as_str())
}

/// A new key of `key_type` and a CSR with CN = this cluster's ID and O = liqo.io, no extensions.
fn generate_key(key_type: KeyType, local: &ClusterId) -> Result<PendingKey, PeerError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| PeerError::GenerateKey { key_type, source };
    let key = match key_type {
        KeyType::P256 => {
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| failed(Box::new(e)))?
        }
        KeyType::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| failed(Box::new(e)))?,
        KeyType::Rsa2048 => {
            use rsa::pkcs8::EncodePrivateKey as _;
            // ring signs with RSA but cannot generate RSA keys.
            let rsa_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(|e| failed(Box::new(e)))?;
            let pem = rsa_key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).map_err(|e| failed(Box::new(e)))?;
            rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).map_err(|e| failed(Box::new(e)))?
        }
    };
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, local.as_str());
    params.distinguished_name.push(rcgen::DnType::OrganizationName, LIQO_ORGANIZATION);
    let csr = params.serialize_request(&key).map_err(|e| failed(Box::new(e)))?;
    let csr_pem = csr.pem().map_err(|e| failed(Box::new(e)))?;
    Ok(PendingKey { key_type: key_type.name().to_owned(), private_key_pem: key.serialize_pem(), csr_pem })
}

fn write_kubeconfig(
    args: &PeerArgs,
    provider: &ClusterIdentity,
    identity: &PeerIdentity,
) -> Result<Option<PathBuf>, PeerError> {
    let Some(path) = &args.kubeconfig_out else {
        return Ok(None);
    };
    let name = format!("liqo-{}", provider.name);
    let text = KubeconfigParts {
        name: &name,
        server: &identity.api_server_url,
        ca_pem: identity.api_server_ca.as_deref(),
        certificate_pem: &identity.certificate_pem,
        private_key_pem: &identity.private_key_pem,
        namespace: &identity.namespace,
    }
    .render();
    crate::fs::write_private_file(path, text.as_bytes())
        .map_err(|source| PeerError::WriteKubeconfig { path: path.clone(), source: source.into() })?;
    Ok(Some(path.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_ceiling_doubles_from_250ms_and_stops_at_5s() {
        let mut backoff = Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF);
        let mut ceilings = Vec::new();
        for _ in 0..40 {
            ceilings.push(backoff.ceiling().as_millis());
            let delay = backoff.next_delay();
            assert!(delay <= MAX_BACKOFF, "{delay:?}");
        }
        assert_eq!(&ceilings[..6], &[250, 500, 1000, 2000, 4000, 5000]);
        assert!(ceilings[6..].iter().all(|c| *c == 5000));
    }

    #[test]
    fn backoff_delays_are_jittered_within_the_ceiling() {
        let delays: Vec<_> = (0..200).map(|_| Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF).next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= INITIAL_BACKOFF));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 10, "full jitter spreads the delays: {distinct:?}");
    }

    #[test]
    fn generated_keys_make_csrs_the_server_accepts() {
        let local = ClusterId::parse("consumer-1").unwrap();
        for key_type in [KeyType::P256, KeyType::Ed25519, KeyType::Rsa2048] {
            let key = generate_key(key_type, &local).expect("key");
            let csr = ParsedCsr::from_pem(key.csr_pem.as_bytes()).expect("the server's CSR parser accepts it");
            assert_eq!((csr.common_name(), csr.organization()), ("consumer-1", Some("liqo.io")));
            assert!(key.private_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
            assert!(pending_fits(&key, key_type, &local));
            assert!(!pending_fits(&key, key_type, &ClusterId::parse("someone-else").unwrap()));
        }
    }

    #[test]
    fn server_messages_never_show_the_tokens() {
        let secrets = Secrets { token: "tok-123".into(), origin_token: Some("mine-456".into()) };
        let text = server_message(b"invalid token \"tok-123\" and mine-456\n", &secrets);
        assert_eq!(text, "invalid token \"<redacted>\" and <redacted>");
        let json = server_message(br#"{"code":"invalid_token","message":"invalid or expired token"}"#, &secrets);
        assert_eq!(json, "invalid or expired token");
        assert_eq!(server_message(b"\n", &secrets), "(no message)");
    }

    #[test]
    fn conflict_hint_names_the_reset_command() {
        let secrets = Secrets { token: "t".into(), origin_token: None };
        let error = rejected(409, b"{}", &secrets, &ClusterId::parse("c1").unwrap());
        assert!(error.to_string().contains("liqo-auth tenant remove c1"), "{error}");
    }

    #[test]
    fn peer_args_debug_redacts_the_token() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            peer: PeerArgs,
        }
        let cli = Cli::try_parse_from(["peer", "--auth-url", "https://a", "--token", "secret-tok"]).expect("parses");
        let printed = format!("{:?}", cli.peer);
        assert!(!printed.contains("secret-tok"), "{printed}");
        assert_eq!(cli.peer.timeout, Duration::from_secs(60));
        assert_eq!(cli.peer.key_type, KeyType::P256);
        assert!(Cli::try_parse_from(["peer", "--auth-url", "https://a"]).is_err(), "a token source is required");
    }
}
