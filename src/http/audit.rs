//! Audit events: one structured `tracing` event with target `audit` per issuance attempt.
//!
//! Operators route them with the target (`RUST_LOG=audit=info`, or a log pipeline matching
//! `target == "audit"`). Fields: `outcome` (issued, repeated, refused, error), `reason` (why it
//! was refused or failed), `cluster.id`/`cluster.name` once the request passed validation, else
//! `cluster.claimed_id`/`cluster.claimed_name` as sent, `source.address` (the client),
//! `source.peer` (the TCP peer, which differs behind a trusted proxy), `cert.serial`,
//! `cert.not_after` (Unix seconds), `token.kind`, `token.id` and `signer.kind`. Never a token,
//! key, CSR or certificate PEM.

use crate::http::protect::Source;
use crate::identity::{ClusterIdentity, TokenKind};
use crate::pki::CertificateSummary;

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
