//! Renewal, consumer side: `liqo-auth renew` (one shot), and the renewal step `peer` and
//! `agent` share.
//!
//! An identity is due once it has lived `renew_after` (a fraction, 2/3 by default) of its
//! lifetime, notBefore to notAfter. Renewing signs a one-use proof with the current key (format
//! in `identity::renew`), sends it with a CSR for the same key (or a new one with `rekey`) to
//! `POST /identity/certificate/renew`, checks the answer as `peer` does, and replaces the stored
//! identity in one atomic write; the kubeconfig recorded with it is rewritten too (temp file and
//! rename). Every attempt signs a new proof (a `jti` is good for one use); connection failures,
//! 429 and 5xx are retried with the crate's backoff, honouring `Retry-After`, until the deadline.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use tokio::time::Instant;

use crate::client::key::{csr_for_key, generate_key, KeyType};
use crate::client::peer::attempt::{is_transient, retry_after, PEER_RETRY};
use crate::client::peer::MAX_REQUEST_TIMEOUT;
use crate::client::transport::{AuthClient, ServerTrust, TransportError};
use crate::client::verify::{check_answer, CertificateProblem};
use crate::client::Output;
use crate::http::wire::{CertificateResponse, ErrorBody, RenewalRequest};
use crate::identity::port::{PeerIdentity, PeerIdentityStore, RenderKubeconfig, StoreError, StoredPeerIdentity};
use crate::identity::renew::{csr_digest_hex, sign_proof, ProofClaims, SignProofError};
use crate::identity::{ClusterId, ClusterIdentity, ClusterName, ParsedCsr};
use crate::pki::CertificateSummary;
use crate::retry::retry;

/// Default `--renew-after`: renew once two thirds of the lifetime have passed (as Liqo v1.x and
/// `step ca renew --daemon` do).
pub const DEFAULT_RENEW_AFTER: f64 = 2.0 / 3.0;
/// Lifetime of a proof this client signs (the provider accepts at most 5 minutes).
const PROOF_LIFETIME_SECS: i64 = 120;
/// Exit code when the provider refused the renewal (tenant removed, certificate not current or
/// expired): only peering again helps.
pub const EXIT_REFUSED: u8 = 2;
/// Exit code when the provider could not be reached or stayed unavailable: retry later.
pub const EXIT_UNREACHABLE: u8 = 3;

/// What `renew` should do, from its flags.
#[derive(Clone, Debug)]
pub struct RenewOptions {
    /// The provider's cluster ID; `None` means the only identity stored.
    pub provider: Option<String>,
    /// The provider's liqo-auth URL, overriding the one recorded with the identity.
    pub auth_url: Option<String>,
    /// How the auth service's certificate is trusted.
    pub trust: ServerTrust,
    /// Fraction of the lifetime after which the identity is due.
    pub renew_after: f64,
    /// Renew even when not due.
    pub force: bool,
    /// Ask for a certificate for a new key (of this type) instead of the current one.
    pub rekey: Option<KeyType>,
    /// Longest time to keep trying.
    pub timeout: Duration,
    /// How [`execute`] prints the outcome.
    pub output: Output,
    /// Also (re)write a kubeconfig to this file, beside the one recorded with the identity.
    pub kubeconfig_out: Option<PathBuf>,
}

/// What a renewal run did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RenewOutcome {
    pub status: RenewStatus,
    pub provider_id: String,
    pub certificate_serial: String,
    pub certificate_not_before: i64,
    pub certificate_not_after: i64,
    /// When the (new) certificate is due for renewal, Unix seconds.
    pub renew_at: i64,
    pub stored_in: String,
    pub kubeconfig: Option<PathBuf>,
}

/// Renewed now, or not due yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RenewStatus {
    Renewed,
    NotDue,
}

/// Why a renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewClientError {
    #[error("no identity is stored for provider {provider}; run `liqo-auth peer` first")]
    NoIdentity { provider: String },
    #[error("{count} identities are stored; name one with --provider (see `liqo-auth identity list`)")]
    Ambiguous { count: usize },
    #[error("no identity is stored; run `liqo-auth peer` first")]
    NothingStored,
    #[error("invalid --provider")]
    InvalidProvider(#[source] crate::identity::ClusterValueError),
    #[error("the identity for provider {provider} records no auth URL (it predates renewal); pass --auth-url")]
    NoAuthUrl { provider: String },
    #[error("reading or writing the stored identity")]
    Store(#[source] StoreError),
    #[error("the stored certificate for provider {provider} cannot be read")]
    StoredCertificate { provider: String },
    #[error("preparing the renewal request")]
    Key(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("signing the renewal proof")]
    Proof(#[source] SignProofError),
    #[error("preparing the client for {url}")]
    Client {
        url: String,
        #[source]
        source: TransportError,
    },
    #[error("the renewal request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: TransportError,
    },
    #[error("the provider at {url} stayed unreachable or unavailable for {budget:?} ({attempts} attempts): {last}")]
    Unreachable { url: String, budget: Duration, attempts: u32, last: String },
    #[error("the provider refused the renewal ({status} {code}): {message}; {hint}")]
    Refused { status: u16, code: String, message: String, hint: &'static str },
    #[error("the provider's answer (status {status}) is not a certificate answer")]
    AnswerBody {
        status: u16,
        #[source]
        source: serde_json::Error,
    },
    #[error("the renewed certificate is unusable: {0}")]
    Certificate(CertificateProblem),
    #[error("writing the kubeconfig {}", path.display())]
    WriteKubeconfig {
        path: PathBuf,
        #[source]
        source: crate::fs::FileError,
    },
}

impl RenewClientError {
    /// The process exit code: [`EXIT_REFUSED`] when only peering again helps,
    /// [`EXIT_UNREACHABLE`] when retrying later may, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Refused { .. } => EXIT_REFUSED,
            Self::Unreachable { .. } | Self::Request { .. } => EXIT_UNREACHABLE,
            _ => 1,
        }
    }

    /// True when the provider said no for good (the tenant was removed, say).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

/// When `summary` is due for renewal at `fraction` of its lifetime, Unix seconds.
pub fn due_at(summary: &CertificateSummary, fraction: f64) -> i64 {
    let lifetime = (summary.not_after - summary.not_before).max(0) as f64;
    summary.not_before + (lifetime * fraction.clamp(0.0, 1.0)) as i64
}

/// Runs `renew` against `store`.
pub async fn run(
    options: &RenewOptions,
    store: &dyn PeerIdentityStore,
    render: RenderKubeconfig,
) -> Result<RenewOutcome, RenewClientError> {
    let stored = select(options.provider.as_deref(), store).await?;
    let summary = summary_of(&stored)?;
    let due = due_at(&summary, options.renew_after);
    if !options.force && crate::pki::unix_now() < due {
        return Ok(RenewOutcome {
            status: RenewStatus::NotDue,
            provider_id: stored.provider.to_string(),
            certificate_serial: summary.serial,
            certificate_not_before: summary.not_before,
            certificate_not_after: summary.not_after,
            renew_at: due,
            stored_in: stored.location,
            kubeconfig: None,
        });
    }
    let url = options
        .auth_url
        .clone()
        .or_else(|| stored.identity.auth_url.clone())
        .ok_or_else(|| RenewClientError::NoAuthUrl { provider: stored.provider.to_string() })?;
    let client = AuthClient::new(&url, options.trust.clone(), options.timeout.min(MAX_REQUEST_TIMEOUT))
        .map_err(|source| RenewClientError::Client { url: url.clone(), source })?;
    let deadline = Instant::now() + options.timeout;
    let renewed = renew_identity(
        &client,
        &stored.provider,
        &stored.identity,
        options.rekey,
        deadline,
        options.timeout,
        store,
        render,
        options.kubeconfig_out.as_deref(),
    )
    .await?;
    Ok(RenewOutcome {
        status: RenewStatus::Renewed,
        provider_id: stored.provider.to_string(),
        certificate_serial: renewed.summary.serial.clone(),
        certificate_not_before: renewed.summary.not_before,
        certificate_not_after: renewed.summary.not_after,
        renew_at: due_at(&renewed.summary, options.renew_after),
        stored_in: renewed.stored_in,
        kubeconfig: renewed.kubeconfig,
    })
}

/// Runs `renew` and prints the result (stdout) or the error (stderr). Exit 0 when renewed or not
/// due, [`EXIT_REFUSED`] when the provider refused, [`EXIT_UNREACHABLE`] when it could not be
/// reached, 1 otherwise.
pub async fn execute(options: RenewOptions, store: &dyn PeerIdentityStore, render: RenderKubeconfig) -> ExitCode {
    match run(&options, store, render).await {
        Ok(outcome) => {
            match options.output {
                Output::Text => print!("{}", outcome.render_text()),
                Output::Json => println!("{}", serde_json::to_string(&outcome).expect("an outcome serialises")),
                Output::Yaml => print!("{}", crate::output::document(Output::Yaml, &outcome).unwrap_or_default()),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {}", crate::error::error_chain(&error));
            ExitCode::from(error.exit_code())
        }
    }
}

/// [`execute`] against the identity store of `backend` (what the binary runs).
pub async fn execute_with(options: RenewOptions, backend: crate::client::peer::PeerBackend) -> ExitCode {
    execute(options, backend.identities.as_ref(), backend.render_kubeconfig).await
}

/// A renewal that succeeded.
#[derive(Debug, Clone)]
pub struct Renewal {
    pub identity: PeerIdentity,
    pub summary: CertificateSummary,
    pub stored_in: String,
    pub kubeconfig: Option<PathBuf>,
    pub attempts: u32,
}

/// Renews `identity` (held for `provider`) through `client` and replaces it in `store`.
#[allow(clippy::too_many_arguments)]
pub async fn renew_identity(
    client: &AuthClient,
    provider: &ClusterId,
    identity: &PeerIdentity,
    rekey: Option<KeyType>,
    deadline: Instant,
    budget: Duration,
    store: &dyn PeerIdentityStore,
    render: RenderKubeconfig,
    extra_kubeconfig: Option<&std::path::Path>,
) -> Result<Renewal, RenewClientError> {
    let current = CertificateSummary::from_pem(identity.certificate_pem.as_bytes())
        .ok_or_else(|| RenewClientError::StoredCertificate { provider: provider.to_string() })?;
    let local = current
        .common_name
        .as_deref()
        .and_then(|cn| ClusterId::parse(cn).ok())
        .ok_or_else(|| RenewClientError::StoredCertificate { provider: provider.to_string() })?;
    let key = match rekey {
        Some(key_type) => generate_key(key_type, &local).map_err(|e| RenewClientError::Key(Box::new(e)))?,
        None => csr_for_key(&identity.private_key_pem, &local).map_err(|e| RenewClientError::Key(e.into()))?,
    };
    let csr = ParsedCsr::from_pem(key.csr_pem.as_bytes()).map_err(|e| RenewClientError::Key(Box::new(e)))?;
    let csr_sha256 = csr_digest_hex(csr.der());
    let csr_base64 = base64::engine::general_purpose::STANDARD.encode(key.csr_pem.as_bytes());

    let url = client.base_url();
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let last: Mutex<String> = Mutex::new(String::new());
    let (attempts_ref, last_ref) = (&attempts, &last);
    let note = move |text: String| *last_ref.lock().unwrap_or_else(PoisonError::into_inner) = text;
    let operation = || async {
        attempts_ref.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A fresh proof for every attempt: the provider takes each jti once.
        let now = crate::pki::unix_now();
        let claims = ProofClaims {
            sub: local.to_string(),
            aud: provider.to_string(),
            iat: now,
            exp: now + PROOF_LIFETIME_SECS,
            jti: uuid::Uuid::new_v4().to_string(),
            csr_sha256: csr_sha256.clone(),
        };
        let proof = sign_proof(&identity.private_key_pem, &identity.certificate_pem, &claims)
            .map_err(|e| Attempt::Fatal(RenewClientError::Proof(e)))?;
        let body = serde_json::to_vec(&RenewalRequest { proof, certificate_signing_request: csr_base64.clone() })
            .expect("a renewal request serialises");
        let post = client.post("/identity/certificate/renew", body, "application/json");
        match tokio::time::timeout_at(deadline, post).await {
            Err(_) => {
                note("the deadline passed during the request".into());
                Err(Attempt::OutOfTime)
            }
            Ok(Ok(response)) if response.status == 429 || response.status >= 500 => {
                note(format!("status {}: {}", response.status, envelope(&response.body).1));
                Err(Attempt::Retry { retry_after: retry_after(&response) })
            }
            Ok(Ok(response)) if (200..300).contains(&response.status) => {
                serde_json::from_slice::<CertificateResponse>(&response.body)
                    .map_err(|source| Attempt::Fatal(RenewClientError::AnswerBody { status: response.status, source }))
            }
            Ok(Ok(response)) => {
                let (code, message) = envelope(&response.body);
                Err(Attempt::Fatal(RenewClientError::Refused {
                    status: response.status,
                    hint: hint(&code),
                    code,
                    message,
                }))
            }
            Ok(Err(error)) if is_transient(&error) => {
                note(error.to_string());
                Err(Attempt::Retry { retry_after: None })
            }
            Ok(Err(source)) => Err(Attempt::Fatal(RenewClientError::Request { url: url.clone(), source })),
        }
    };
    let retryable = |attempt: &Attempt| match attempt {
        Attempt::Retry { retry_after } => Instant::now() + retry_after.unwrap_or_default() < deadline,
        _ => false,
    };
    let server_wait = |attempt: &Attempt| match attempt {
        Attempt::Retry { retry_after } => *retry_after,
        _ => None,
    };
    let outcome = tokio::time::timeout_at(deadline, retry(&PEER_RETRY, operation, retryable, server_wait)).await;
    let answer = match outcome {
        Ok(Ok(answer)) => answer,
        Ok(Err(Attempt::Fatal(error))) => return Err(error),
        Ok(Err(_)) | Err(_) => {
            return Err(RenewClientError::Unreachable {
                url,
                budget,
                attempts: attempts.load(std::sync::atomic::Ordering::Relaxed),
                last: last.into_inner().unwrap_or_else(PoisonError::into_inner),
            })
        }
    };
    let issued = check_answer(&answer, &key).map_err(RenewClientError::Certificate)?;
    let renewed = PeerIdentity {
        provider_name: identity.provider_name.clone(),
        private_key_pem: key.private_key_pem.clone(),
        certificate_pem: issued.certificate_pem,
        api_server_url: answer.api_server_url.clone(),
        api_server_ca: issued.api_server_ca,
        namespace: answer.namespace.clone(),
        auth_url: identity.auth_url.clone().or_else(|| Some(client.base_url())),
        kubeconfig_path: identity.kubeconfig_path.clone(),
    };
    let name = identity.provider_name.as_deref().and_then(|n| ClusterName::parse(n).ok());
    let provider_identity = ClusterIdentity {
        id: provider.clone(),
        name: name.unwrap_or_else(|| ClusterName::parse(provider.as_str()).expect("a cluster ID is a valid name")),
    };
    let stored_in = store.replace(&provider_identity, identity, &renewed).await.map_err(RenewClientError::Store)?;
    tracing::info!(
        cluster.id = %provider,
        cert.serial = %issued.summary.serial,
        cert.previous_serial = %current.serial,
        "renewed the identity for provider {provider}"
    );
    let mut kubeconfig = None;
    let paths =
        renewed.kubeconfig_path.as_deref().map(PathBuf::from).into_iter().chain(extra_kubeconfig.map(PathBuf::from));
    for path in paths {
        let text = render(&renewed.kubeconfig_parts(&format!("liqo-{}", provider_identity.name)));
        crate::fs::write_private_file(&path, text.as_bytes())
            .map_err(|source| RenewClientError::WriteKubeconfig { path: path.clone(), source })?;
        kubeconfig = Some(path);
    }
    Ok(Renewal {
        identity: renewed,
        summary: issued.summary,
        stored_in,
        kubeconfig,
        attempts: attempts.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// How one attempt ended.
enum Attempt {
    Retry { retry_after: Option<Duration> },
    OutOfTime,
    Fatal(RenewClientError),
}

/// The identity `renew` works on: the named provider's, or the only one stored.
async fn select(provider: Option<&str>, store: &dyn PeerIdentityStore) -> Result<StoredPeerIdentity, RenewClientError> {
    match provider {
        Some(id) => {
            let id = ClusterId::parse(id).map_err(RenewClientError::InvalidProvider)?;
            let identity = store
                .existing(&id)
                .await
                .map_err(RenewClientError::Store)?
                .ok_or_else(|| RenewClientError::NoIdentity { provider: id.to_string() })?;
            Ok(StoredPeerIdentity { location: store.describe(&id), provider: id, identity })
        }
        None => {
            let mut all = store.list().await.map_err(RenewClientError::Store)?;
            match all.len() {
                0 => Err(RenewClientError::NothingStored),
                1 => Ok(all.remove(0)),
                count => Err(RenewClientError::Ambiguous { count }),
            }
        }
    }
}

fn summary_of(stored: &StoredPeerIdentity) -> Result<CertificateSummary, RenewClientError> {
    CertificateSummary::from_pem(stored.identity.certificate_pem.as_bytes())
        .ok_or_else(|| RenewClientError::StoredCertificate { provider: stored.provider.to_string() })
}

/// The code and message of an error envelope (bounded; never PEM, which the server never sends).
fn envelope(body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => (error.code, error.message.chars().take(300).collect()),
        Err(_) => (String::new(), String::from_utf8_lossy(body).chars().take(300).collect()),
    }
}

fn hint(code: &str) -> &'static str {
    match code {
        "tenant_removed" => "this cluster was unpeered by the provider; peer again with a new token (`liqo-auth peer`)",
        "certificate_not_current" | "certificate_expired" => {
            "the provider no longer accepts this certificate for renewal; peer again with a new token (`liqo-auth peer --force`)"
        }
        "not_found" => "the provider does not support renewal (an older liqo-auth or the reference service); peer again with a token before the certificate expires",
        "rate_limited" => "too many failed attempts from this address; wait and retry",
        _ => "check the clocks of both clusters and the versions of both sides",
    }
}

impl RenewOutcome {
    /// A short human summary.
    pub fn render_text(&self) -> String {
        let mut out = match self.status {
            RenewStatus::Renewed => format!("Renewed the identity for provider {}.\n", self.provider_id),
            RenewStatus::NotDue => format!(
                "The identity for provider {} is not due for renewal yet; nothing requested (use --force to renew now).\n",
                self.provider_id
            ),
        };
        out.push_str(&format!(
            "  certificate:  serial {}, valid {} to {}\n",
            self.certificate_serial,
            crate::pki::format_unix(self.certificate_not_before),
            crate::pki::format_unix(self.certificate_not_after)
        ));
        out.push_str(&format!("  renew at:     {}\n", crate::pki::format_unix(self.renew_at)));
        out.push_str(&format!("  stored in:    {}\n", self.stored_in));
        if let Some(path) = &self.kubeconfig {
            out.push_str(&format!("  kubeconfig:   {}\n", path.display()));
        }
        out
    }
}

impl fmt::Display for RenewStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Renewed => "renewed",
            Self::NotDue => "not_due",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(not_before: i64, not_after: i64) -> CertificateSummary {
        CertificateSummary { serial: "1".into(), not_before, not_after, common_name: None, spki_der: vec![] }
    }

    #[test]
    fn an_identity_is_due_at_the_fraction_of_its_lifetime() {
        assert_eq!(due_at(&summary(1000, 1300), DEFAULT_RENEW_AFTER), 1200);
        assert_eq!(due_at(&summary(1000, 1300), 0.5), 1150);
        assert_eq!(due_at(&summary(1000, 1300), 7.0), 1300, "clamped to the lifetime");
    }

    #[test]
    fn refusals_and_unreachable_providers_have_their_own_exit_codes() {
        let refused = RenewClientError::Refused {
            status: 403,
            code: "tenant_removed".into(),
            message: "m".into(),
            hint: hint("tenant_removed"),
        };
        assert_eq!(refused.exit_code(), EXIT_REFUSED);
        assert!(refused.to_string().contains("peer again"), "{refused}");
        let unreachable =
            RenewClientError::Unreachable { url: "u".into(), budget: Duration::ZERO, attempts: 1, last: "x".into() };
        assert_eq!(unreachable.exit_code(), EXIT_UNREACHABLE);
        assert_eq!(RenewClientError::NothingStored.exit_code(), 1);
    }
}
