//! Issuance, observed: `ObservedIssuer` wraps the domain's `Issuer` with the audit event and
//! the issuance metrics, so every attempt (refused before the issuer, or answered by it) is
//! recorded once, in one place, the way linkerd wraps its credentials with metrics.
//!
//! Audit events: one structured `tracing` event with target `audit` per issuance attempt.
//!
//! Operators route them with the target (`RUST_LOG=audit=info`, or a log pipeline matching
//! `target == "audit"`). Fields: `outcome` (issued, repeated, refused, error), `reason` (why it
//! was refused or failed; `lost_response_recovery` on an issuance whose new key replaced the
//! stored identity), `cluster.id`/`cluster.name` once the request passed validation, else
//! `cluster.claimed_id`/`cluster.claimed_name` as sent, `source.address` (the client),
//! `source.peer` (the TCP peer, which differs behind a trusted proxy), `cert.serial`,
//! `cert.not_after` (Unix seconds), `token.kind`, `token.id` and `signer.kind`. Never a token,
//! key, CSR or certificate PEM.

use crate::http::protect::{retry_after_secs, Protection, Source};
use crate::http::ApiError;
use crate::identity::{ClusterIdentity, IssueError, IssueRequest, Issued, Issuer, Outcome, TokenKind};
use crate::pki::CertificateSummary;
use crate::telemetry::Metrics;

/// Longest claimed cluster ID or name copied into an audit event (a DNS label is at most 63).
const MAX_CLAIMED_LEN: usize = 253;

/// What an unvalidated request claims to be, as recorded when it is refused.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub id: Option<String>,
    pub name: Option<String>,
}

impl Claimed {
    /// The claimed values, cut to a bounded length (they are untrusted input).
    pub fn new(id: &str, name: &str) -> Self {
        Self { id: Some(truncate(id).to_owned()), name: Some(truncate(name).to_owned()) }
    }
}

/// The issuer with its audit event, its metrics and the failed-authentication limit.
pub struct ObservedIssuer<'a> {
    issuer: &'a Issuer,
    metrics: &'a Metrics,
    protection: &'a Protection,
    source: &'a Source,
    claimed: Claimed,
}

impl<'a> ObservedIssuer<'a> {
    /// Observes issuance for one request from `source`.
    pub fn new(
        issuer: &'a Issuer,
        metrics: &'a Metrics,
        protection: &'a Protection,
        source: &'a Source,
        claimed: Claimed,
    ) -> Self {
        Self { issuer, metrics, protection, source, claimed }
    }

    /// Runs the issuer; records the outcome, the signer latency and the audit event. A refused
    /// token is counted against the source's failure budget and answered 429 (`rate_limited`)
    /// instead of 401 once that budget is spent.
    pub async fn issue(&self, request: IssueRequest) -> Result<Issued, ApiError> {
        let signer = self.issuer.signer_kind();
        match self.issuer.issue(request).await {
            Ok(issued) => {
                // A recovery signs like an issuance; its reason tells the two apart in the audit log.
                let (outcome, reason) = match issued.outcome {
                    Outcome::Issued => (AuditOutcome::Issued, None),
                    Outcome::Recovered => (AuditOutcome::Issued, Some(RECOVERED_REASON)),
                    Outcome::Repeated => (AuditOutcome::Repeated, None),
                };
                self.metrics.observe_issuance(signer, outcome.label());
                if let Some(took) = issued.signer_duration {
                    self.metrics.observe_signer(signer, took);
                }
                self.emit(outcome, reason, Some(&issued.cluster), Some(&issued.certificate), Some(&issued.token_kind));
                Ok(issued)
            }
            Err(error) => {
                if let Some(took) = error.signer_elapsed() {
                    self.metrics.observe_signer(signer, took);
                }
                let auth_reason = match &error {
                    IssueError::Unauthenticated(reason) => {
                        self.metrics.observe_token_failure(reason.reason());
                        Some(reason.reason())
                    }
                    _ => None,
                };
                let validated = error.validated_cluster().cloned();
                let mut error = ApiError::from(error);
                let mut reason = auth_reason.unwrap_or(error.code());
                if auth_reason.is_some() {
                    if let Err(wait) = self.protection.record_failure(self.source) {
                        error = ApiError::TooManyRequests { retry_after_secs: retry_after_secs(wait) };
                        reason = error.code();
                    }
                }
                let outcome = outcome_of(&error);
                self.metrics.observe_issuance(signer, outcome.label());
                self.emit(outcome, Some(reason), validated.as_ref(), None, None);
                Err(error)
            }
        }
    }

    /// Records a request refused before it reached the issuer (bad body, busy).
    pub fn refuse(&self, error: ApiError, reason: &str) -> ApiError {
        let outcome = outcome_of(&error);
        self.metrics.observe_issuance(self.issuer.signer_kind(), outcome.label());
        self.emit(outcome, Some(reason), None, None, None);
        error
    }

    fn emit(
        &self,
        outcome: AuditOutcome,
        reason: Option<&str>,
        cluster: Option<&ClusterIdentity>,
        certificate: Option<&CertificateSummary>,
        token: Option<&TokenKind>,
    ) {
        // Past validation the claimed values are the cluster's: the event names them so.
        let unvalidated = cluster.is_none();
        AuditEvent {
            outcome,
            reason,
            cluster,
            claimed_id: self.claimed.id.as_deref().filter(|_| unvalidated),
            claimed_name: self.claimed.name.as_deref().filter(|_| unvalidated),
            source: self.source,
            certificate,
            token,
            signer: self.issuer.signer_kind(),
        }
        .emit();
    }
}

fn outcome_of(error: &ApiError) -> AuditOutcome {
    if error.status().is_server_error() {
        AuditOutcome::Error
    } else {
        AuditOutcome::Refused
    }
}

/// At most `MAX_CLAIMED_LEN` bytes of an untrusted value, cut on a character boundary.
fn truncate(text: &str) -> &str {
    if text.len() <= MAX_CLAIMED_LEN {
        return text;
    }
    let mut end = MAX_CLAIMED_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `reason` of an `issued` event whose new key replaced the stored identity because the request
/// proved the origin token bound to it (a consumer whose earlier 202 was lost).
pub const RECOVERED_REASON: &str = "lost_response_recovery";

/// The tracing target of audit events.
pub const TARGET: &str = "audit";

/// What one issuance attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Issued,
    Repeated,
    Refused,
    Error,
}

impl AuditOutcome {
    /// Label for logs and the `result` of `auth_certificates_issued_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Repeated => "repeated",
            Self::Refused => "refused",
            Self::Error => "error",
        }
    }
}

/// One issuance attempt, as the audit log records it.
#[derive(Debug)]
pub struct AuditEvent<'a> {
    pub outcome: AuditOutcome,
    pub reason: Option<&'a str>,
    /// The validated cluster, when validation passed.
    pub cluster: Option<&'a ClusterIdentity>,
    /// What the caller claimed, when validation did not pass.
    pub claimed_id: Option<&'a str>,
    pub claimed_name: Option<&'a str>,
    pub source: &'a Source,
    pub certificate: Option<&'a CertificateSummary>,
    pub token: Option<&'a TokenKind>,
    pub signer: &'static str,
}

impl AuditEvent<'_> {
    /// Emits the event.
    pub fn emit(&self) {
        let source = self.source.display();
        let cluster_id = self.cluster.map(|c| c.id.as_str());
        // Claimed values stay in fields (escaped by the formatter), never in the message.
        let who = cluster_id.map_or_else(|| "an unvalidated cluster".to_owned(), |id| format!("cluster {id}"));
        let reason = self.reason.map(|r| format!(" ({r})")).unwrap_or_default();
        tracing::info!(
            target: TARGET,
            outcome = self.outcome.label(),
            reason = self.reason,
            cluster.id = cluster_id,
            cluster.name = self.cluster.map(|c| c.name.as_str()),
            cluster.claimed_id = self.claimed_id,
            cluster.claimed_name = self.claimed_name,
            source.address = %source,
            source.peer = self.source.peer.map(display),
            cert.serial = self.certificate.map(|c| c.serial.as_str()),
            cert.not_after = self.certificate.map(|c| c.not_after),
            token.kind = self.token.map(TokenKind::label),
            token.id = self.token.and_then(TokenKind::id),
            signer.kind = self.signer,
            "identity request for {who} from {source}: {}{reason}",
            self.outcome.label()
        );
    }
}
