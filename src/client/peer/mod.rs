//! `liqo-auth peer`: obtains an identity (a client certificate for the provider's API server)
//! from another cluster's liqo-auth service and stores it where Liqo looks for it.
//!
//! The steps: verify the auth service per the trust setting, `GET /ids`, generate a key and CSR
//! (persisted before it is sent, so a retry re-sends the same CSR and a lost response is
//! recovered by the server's idempotent repeat), `POST /identity/certificate` with retries
//! bounded by `--timeout`, check the certificate, store it, optionally write a kubeconfig.
//! Unlike the reference consumer, TLS is verified, the key is not replaced on every attempt,
//! and the deadline outlasts the server's signing wait.
//!
//! This cluster's state comes injected as a [`PeerBackend`] (the composition root opens it);
//! the transport is [`super::transport`], the checks [`super::verify`], keys [`super::key`],
//! retries [`attempt`], the result [`outcome`]. Printing happens only in [`execute`] (and the
//! warnings, on standard error, as they come).

use std::fmt;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::time::Instant;

use crate::client::key::{generate_key, pending_fits, KeyType};
use crate::client::renew;
use crate::client::transport::{AuthClient, Response, ServerTrust};
use crate::client::verify::{check_answer, still_valid};
use crate::client::Output;
use crate::http::wire::{CertificateRequest, CertificateResponse, ClusterRef, IdsResponse};
use crate::identity::port::{ClusterState, PeerIdentity, PeerIdentityStore, PendingKey, RenderKubeconfig};
use crate::identity::{ClusterId, ClusterIdentity, ClusterName};

pub(crate) mod attempt;
mod error;
mod outcome;

pub use error::{IdsError, LocalError, PeerError, Step, TokenError};
pub use outcome::{PeerOutcome, PeerStatus};

use attempt::Secrets;

/// Longest single request: the server may wait for its signer (20 s by default) before answering.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(35);

/// What `peer` should do, from its flags.
#[derive(Clone)]
pub struct PeerOptions {
    /// Base URL of the provider's liqo-auth service.
    pub auth_url: String,
    /// Where the provider's token comes from.
    pub token: TokenSource,
    /// How the auth service's certificate is trusted.
    pub trust: ServerTrust,
    /// Type of the new private key.
    pub key_type: KeyType,
    /// Longest time to keep trying, retries included.
    pub timeout: Duration,
    /// Request a new identity (with a new key) even when a valid one is stored.
    pub force: bool,
    /// How [`execute`] prints the outcome.
    pub output: Output,
    /// Also write a kubeconfig for the provider's API server to this file (mode 0600).
    pub kubeconfig_out: Option<PathBuf>,
    /// This cluster's ID, overriding the backend's record.
    pub cluster_id: Option<String>,
    /// This cluster's name, overriding the backend's record.
    pub cluster_name: Option<String>,
    /// File with this cluster's own token for `originClusterToken` (default: the backend's
    /// shared token).
    pub origin_token_file: Option<PathBuf>,
}

/// Where the provider's token comes from. It is read when the run starts.
#[derive(Clone)]
pub enum TokenSource {
    /// `--token-file`.
    File(PathBuf),
    /// `--token-stdin`.
    Stdin,
    /// `--token`, which leaks into shell history (the run warns).
    Value(String),
}

/// This cluster's side of the peering, opened by the composition root.
#[derive(Clone)]
pub struct PeerBackend {
    /// This cluster's identity and shared token (the default `originClusterToken`).
    pub cluster: Arc<dyn ClusterState>,
    /// Where identities obtained from providers are kept.
    pub identities: Arc<dyn PeerIdentityStore>,
    /// How `--kubeconfig-out` is rendered (the Kubernetes adapter, `adapter/kube/kube_kubeconfig.rs`).
    pub render_kubeconfig: RenderKubeconfig,
}

/// Runs `peer` against `backend`.
pub async fn run(options: PeerOptions, backend: PeerBackend) -> Result<PeerOutcome, PeerError> {
    let mut warnings = Vec::new();
    let deadline = Instant::now() + options.timeout;
    let token = read_token(&options.token, &mut warnings)?;
    if options.trust == ServerTrust::InsecureSkipVerify {
        warn(&mut warnings, "--insecure-skip-tls-verify: the auth service's certificate is not verified; anyone on the path can impersonate it and obtain the token".into());
    }
    let url = options.auth_url.clone();
    let client = AuthClient::new(&url, options.trust.clone(), options.timeout.min(MAX_REQUEST_TIMEOUT))
        .map_err(|source| PeerError::Client { url: url.clone(), source })?;
    if client.is_plain_http() {
        warn(&mut warnings, format!("{url} is plain http: the token and the certificate travel unencrypted"));
    }
    let url = client.base_url();

    // Who is the provider?
    let secrets = Secrets { token, origin_token: None };
    let (ids, _) = attempt::send(&client, Step::Ids, None, deadline, options.timeout, &secrets).await?;
    let provider = provider_identity(&url, &ids)?;

    // Who are we?
    let local = local_identity(&options, backend.cluster.as_ref()).await?;
    if local.id == provider.id {
        return Err(PeerError::PeeringWithSelf { cluster_id: local.id.to_string() });
    }
    let store = backend.identities.as_ref();

    // An identity that is still valid is reported, not replaced (unless --force); one that is
    // due for renewal is renewed with a proof of possession (no token spent).
    if !options.force {
        if let Some(existing) = store.existing(&provider.id).await.map_err(PeerError::store)? {
            let due = still_valid(&existing)
                .is_some_and(|s| crate::pki::unix_now() >= renew::due_at(&s, renew::DEFAULT_RENEW_AFTER));
            // Refused for good (unpeered, say): a token issuance is what helps, so go on.
            let mut refused = false;
            if due {
                let renewed = renew::renew_identity(
                    &client,
                    &provider.id,
                    &existing,
                    None,
                    deadline,
                    options.timeout,
                    store,
                    backend.render_kubeconfig,
                    options.kubeconfig_out.as_deref(),
                )
                .await;
                match renewed {
                    Ok(renewal) => {
                        return Ok(PeerOutcome {
                            status: PeerStatus::Renewed,
                            provider_id: provider.id.to_string(),
                            provider_name: existing.provider_name.clone().unwrap_or_else(|| provider.name.to_string()),
                            namespace: renewal.identity.namespace.clone(),
                            api_server_url: renewal.identity.api_server_url.clone(),
                            certificate_serial: renewal.summary.serial,
                            certificate_not_after: renewal.summary.not_after,
                            stored_in: renewal.stored_in,
                            kubeconfig: renewal.kubeconfig,
                            certificate_requests: renewal.attempts,
                            warnings,
                        })
                    }
                    Err(error) => {
                        let chain = crate::error::error_chain(&error);
                        warn(&mut warnings, format!("renewing the identity that is due failed: {chain}"));
                        refused = error.is_refusal();
                    }
                }
            }
            if let (false, Some(summary)) = (refused, still_valid(&existing)) {
                let kubeconfig = write_kubeconfig(&options, &backend, &provider, &existing)?;
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

    // One key and CSR for every retry of this attempt, persisted before it is sent.
    let key = match store.pending(&provider.id).await.map_err(PeerError::store)? {
        Some(pending) if !options.force && pending_fits(&pending, options.key_type, &local.id) => {
            tracing::info!(cluster.id = %provider.id, "re-sending the certificate request of an unfinished attempt");
            pending
        }
        _ => {
            let key = generate_key(options.key_type, &local.id)?;
            store.save_pending(&provider, &key).await.map_err(PeerError::store)?;
            key
        }
    };
    let origin_token = origin_token(&options, backend.cluster.as_ref()).await?;
    let secrets = Secrets { origin_token, ..secrets };

    let answer = request_certificate(&client, &local, &key, deadline, options.timeout, &secrets).await?;
    let (answer, certificate_requests) = answer;
    let issued = check_answer(&answer, &key).map_err(PeerError::Certificate)?;
    for warning in issued.warnings {
        warn(&mut warnings, warning);
    }

    let identity = PeerIdentity {
        provider_name: Some(provider.name.to_string()),
        private_key_pem: key.private_key_pem.clone(),
        certificate_pem: issued.certificate_pem,
        api_server_url: answer.api_server_url.clone(),
        api_server_ca: issued.api_server_ca,
        namespace: answer.namespace.clone(),
        auth_url: Some(url.clone()),
        kubeconfig_path: options.kubeconfig_out.as_ref().map(|p| p.display().to_string()),
    };
    let stored_in = store.store(&provider, &identity).await.map_err(PeerError::store)?;
    tracing::info!(cluster.id = %provider.id, cert.serial = %issued.summary.serial, "obtained an identity from provider {}", provider.id);
    let kubeconfig = write_kubeconfig(&options, &backend, &provider, &identity)?;
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
        certificate_requests,
        warnings,
    })
}

/// Runs `peer` and prints the summary (stdout) or the error (stderr). Exit code 0 on success
/// (including "already peered"), 1 on failure.
pub async fn execute(options: PeerOptions, backend: PeerBackend) -> ExitCode {
    let output = options.output;
    let pinned = match &options.trust {
        ServerTrust::Pin(pins) => pins.iter().map(|p| format!("sha256:{}", hex::encode(p))).collect(),
        _ => Vec::new(),
    };
    match run(options, backend).await {
        Ok(outcome) => {
            match output {
                Output::Text => print!("{}", outcome.render_text()),
                Output::Json => println!("{}", outcome.render_json()),
                Output::Yaml => print!("{}", crate::output::document(output, &outcome).unwrap_or_default()),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            let mut chain = crate::error::error_chain(&error);
            tracing::debug!(error = %chain, "peer failed");
            if let Some(hint) = error.hint(&pinned) {
                chain.push_str(&format!("\nhint: {hint}"));
            }
            crate::output::fail(output, error.code(), &chain)
        }
    }
}

impl fmt::Debug for PeerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerOptions")
            .field("auth_url", &self.auth_url)
            .field("token", &self.token)
            .field("trust", &self.trust)
            .field("key_type", &self.key_type)
            .field("timeout", &self.timeout)
            .field("force", &self.force)
            .field("output", &self.output)
            .field("kubeconfig_out", &self.kubeconfig_out)
            .field("cluster_id", &self.cluster_id)
            .field("cluster_name", &self.cluster_name)
            .field("origin_token_file", &self.origin_token_file)
            .finish()
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
            TokenSource::Stdin => f.write_str("Stdin"),
            TokenSource::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

impl fmt::Debug for PeerBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerBackend").finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// The steps.

/// `POST /identity/certificate` with retries; a 2xx answer parsed, anything else refused.
async fn request_certificate(
    client: &AuthClient,
    local: &ClusterIdentity,
    key: &PendingKey,
    deadline: Instant,
    budget: Duration,
    secrets: &Secrets,
) -> Result<(CertificateResponse, u32), PeerError> {
    let request = CertificateRequest {
        cluster: Some(ClusterRef { cluster_id: local.id.to_string(), cluster_name: local.name.to_string() }),
        destination_cluster_token: Some(secrets.token.clone()),
        origin_cluster_token: secrets.origin_token.clone(),
        certificate_signing_request: base64::engine::general_purpose::STANDARD.encode(key.csr_pem.as_bytes()),
        legacy_cluster_id: None,
    };
    let body = serde_json::to_vec(&request).expect("a CertificateRequest always serialises");
    let (response, attempts) = attempt::send(client, Step::Certificate, Some(&body), deadline, budget, secrets).await?;
    match response.status {
        200..=299 => serde_json::from_slice::<CertificateResponse>(&response.body)
            .map(|answer| (answer, attempts))
            .map_err(|source| PeerError::AnswerBody { status: response.status, source }),
        status => Err(attempt::rejected(status, &response.body, secrets, &local.id)),
    }
}

fn warn(warnings: &mut Vec<String>, text: String) {
    eprintln!("warning: {text}");
    warnings.push(text);
}

fn read_token(source: &TokenSource, warnings: &mut Vec<String>) -> Result<String, TokenError> {
    let (text, flag) = match source {
        TokenSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                flag: "--token-file",
                path: path.clone(),
                source,
            })?;
            (text, "--token-file")
        }
        TokenSource::Stdin => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(TokenError::ReadStdin)?;
            (text, "--token-stdin")
        }
        TokenSource::Value(token) => {
            warn(
                warnings,
                "--token puts the token in shell history and process lists; prefer --token-file or --token-stdin"
                    .into(),
            );
            (token.clone(), "--token")
        }
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty { flag });
    }
    Ok(token.to_owned())
}

fn provider_identity(url: &str, response: &Response) -> Result<ClusterIdentity, IdsError> {
    if response.status != 200 {
        return Err(IdsError::Status { url: url.to_owned(), status: response.status });
    }
    let ids: IdsResponse =
        serde_json::from_slice(&response.body).map_err(|source| IdsError::Body { url: url.to_owned(), source })?;
    // The tenant namespace name needs a cluster name; the reference omits an empty one.
    let name = if ids.cluster_name.is_empty() { ids.cluster_id.as_str() } else { ids.cluster_name.as_str() };
    ClusterIdentity::parse_remote(&ids.cluster_id, name)
        .map_err(|source| IdsError::Identity { url: url.to_owned(), source })
}

/// The flags when both are given (the backend is then not asked); else the backend's record.
async fn local_identity(options: &PeerOptions, cluster: &dyn ClusterState) -> Result<ClusterIdentity, PeerError> {
    if let (Some(id), Some(name)) = (&options.cluster_id, &options.cluster_name) {
        return Ok(ClusterIdentity {
            id: ClusterId::parse(id).map_err(PeerError::InvalidLocalIdentity)?,
            name: ClusterName::parse(name).map_err(PeerError::InvalidLocalIdentity)?,
        });
    }
    cluster
        .cluster_identity(options.cluster_id.as_deref(), options.cluster_name.as_deref())
        .await
        .map_err(|source| LocalError::Identity(source).into())
}

/// `--origin-token-file`, else this cluster's own shared token when it has one.
async fn origin_token(options: &PeerOptions, cluster: &dyn ClusterState) -> Result<Option<String>, PeerError> {
    if let Some(path) = &options.origin_token_file {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            flag: "--origin-token-file",
            path: path.clone(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty { flag: "--origin-token-file" }.into());
        }
        return Ok(Some(token.to_owned()));
    }
    let token = cluster.shared_token().await.map_err(LocalError::OriginToken)?;
    Ok(token.map(|t| t.expose().to_owned()))
}

fn write_kubeconfig(
    options: &PeerOptions,
    backend: &PeerBackend,
    provider: &ClusterIdentity,
    identity: &PeerIdentity,
) -> Result<Option<PathBuf>, PeerError> {
    let Some(path) = &options.kubeconfig_out else {
        return Ok(None);
    };
    let name = format!("liqo-{}", provider.name);
    let text = (backend.render_kubeconfig)(&identity.kubeconfig_parts(&name));
    crate::fs::write_private_file(path, text.as_bytes())
        .map_err(|source| LocalError::WriteKubeconfig { path: path.clone(), source: source.into() })?;
    Ok(Some(path.clone()))
}
