//! `Issuer`: the issuance use case, idempotent and safe under concurrency.
//!
//! Order: authenticate, validate, tenant namespace, then under a per-cluster lock either return
//! the stored certificate (same key) or sign and store a new one, bind the peering permissions,
//! and only then store the caller's `originClusterToken`.
//!
//! The origin token is bound to the identity: its digest is stored in the same record as the
//! certificate (one atomic write), and the token itself (`save_origin_token`, the Secret Liqo
//! reads) is written only with a value that record names. So it is set by a first issuance (or
//! the replacement of an expired identity), by a rotation with a join token bound to the
//! cluster, and never changed by a repeat: a repeat only re-writes the token already bound to
//! the identity (completing an issuance interrupted before that write), since the CSR bytes
//! alone prove nothing.
//!
//! Lost-response recovery: Liqo's consumer makes a new key on every attempt, so a 202 lost on
//! the way back would leave it facing 409 forever. A request with a new key is therefore
//! accepted, and replaces the stored identity, when it carries the same non-empty origin token
//! as the one bound to that identity (compared in constant time): a secret that only that
//! consumer and this provider hold. The bound token stays as it is.
//!
//! Join tokens are authenticated first, but a use is consumed only right before a new
//! certificate is signed: an idempotent repeat (the same key gets its stored certificate back)
//! costs nothing. A join token bound to the requesting cluster may also rotate its identity: a
//! new key replaces the stored certificate instead of conflicting.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::OwnedMutexGuard;

use crate::identity::port::{ApiServerInfo, CredentialStore, StoreError, StoredIdentity};
use crate::identity::port::{SignRequest, Signer, SignerError};
use crate::identity::{
    AuthError, AuthenticateError, Authenticator, BearerToken, ClusterIdentity, ClusterValueError, CsrError, Grant,
    OriginTokenDigest, ParsedCsr, TenantNamespace, TokenKind,
};
use crate::pki::CertificateSummary;

/// Tunables of issuance.
#[derive(Debug, Clone)]
pub struct IssuePolicy {
    /// Lifetime requested for new certificates.
    pub certificate_ttl: Duration,
}

/// An identity request as it arrives from the wire, before any check.
#[derive(Clone)]
pub struct IssueRequest {
    pub unverified_cluster_id: String,
    pub unverified_cluster_name: String,
    pub token: BearerToken,
    pub origin_token: Option<BearerToken>,
    pub csr_base64: String,
}

impl fmt::Debug for IssueRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssueRequest")
            .field("unverified_cluster_id", &self.unverified_cluster_id)
            .field("unverified_cluster_name", &self.unverified_cluster_name)
            .field("token", &"<redacted>")
            .field("csr", &"<redacted>")
            .finish()
    }
}

/// Whether the certificate was signed now or returned from storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Issued,
    /// Signed now for a new key that proved the origin token bound to the stored identity (a
    /// consumer whose earlier 202 was lost); the new certificate replaced the stored one.
    Recovered,
    Repeated,
}

impl Outcome {
    /// Label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Recovered => "recovered",
            Self::Repeated => "repeated",
        }
    }
}

/// A successful issuance.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cluster: ClusterIdentity,
    pub namespace: TenantNamespace,
    pub certificate_pem: String,
    pub certificate: CertificateSummary,
    pub api_server: ApiServerInfo,
    pub outcome: Outcome,
    pub token_kind: TokenKind,
    /// How long the signer took, when this request signed (`None` for a repeat).
    pub signer_duration: Option<Duration>,
}

/// Why issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("authentication failed: {0}")]
    Unauthenticated(#[source] AuthError),
    #[error("checking the token")]
    TokenState(#[source] StoreError),
    #[error("invalid cluster identity: {0}")]
    InvalidCluster(#[source] ClusterValueError),
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(#[source] CsrError),
    #[error("the certificate signing request common name must equal cluster.clusterID")]
    CommonNameMismatch,
    #[error("cluster {} already holds an identity for another key", cluster.id)]
    IdentityExists { cluster: ClusterIdentity, namespace: String },
    #[error("signing the certificate for cluster {}", cluster.id)]
    Sign {
        cluster: ClusterIdentity,
        /// How long the signer took to fail (for the signer latency metric).
        elapsed: Duration,
        #[source]
        source: SignerError,
    },
    #[error("storing state for cluster {}", cluster.id)]
    Store {
        cluster: ClusterIdentity,
        #[source]
        source: StoreError,
    },
    #[error("the signer returned an unusable certificate for cluster {}", cluster.id)]
    BadCertificate { cluster: ClusterIdentity },
}

impl IssueError {
    /// The cluster identity, once the request passed validation (the variants after it carry
    /// it), so callers never re-parse what the issuer already checked.
    pub fn validated_cluster(&self) -> Option<&ClusterIdentity> {
        match self {
            Self::IdentityExists { cluster, .. }
            | Self::Sign { cluster, .. }
            | Self::Store { cluster, .. }
            | Self::BadCertificate { cluster } => Some(cluster),
            Self::Unauthenticated(_)
            | Self::TokenState(_)
            | Self::InvalidCluster(_)
            | Self::InvalidCsr(_)
            | Self::CommonNameMismatch => None,
        }
    }

    /// How long the signer took to fail, when signing is what failed.
    pub fn signer_elapsed(&self) -> Option<Duration> {
        match self {
            Self::Sign { elapsed, .. } => Some(*elapsed),
            _ => None,
        }
    }

    /// True when the same request may succeed later (503 with Retry-After).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Sign { source, .. } => source.is_transient(),
            Self::Store { source, .. } | Self::TokenState(source) => source.is_transient(),
            _ => false,
        }
    }
}

/// The issuance use case.
#[derive(Clone)]
pub struct Issuer {
    auth: Authenticator,
    signer: Arc<dyn Signer>,
    store: Arc<dyn CredentialStore>,
    policy: IssuePolicy,
    locks: Arc<ClusterLocks>,
}

impl Issuer {
    /// Builds an issuer over its ports.
    pub fn new(
        auth: Authenticator,
        signer: Arc<dyn Signer>,
        store: Arc<dyn CredentialStore>,
        policy: IssuePolicy,
    ) -> Self {
        Self { auth, signer, store, policy, locks: Arc::default() }
    }

    /// The signer kind, for logs and metrics.
    pub fn signer_kind(&self) -> &'static str {
        self.signer.kind()
    }

    /// The credential store (readiness checks use it).
    pub fn store(&self) -> &Arc<dyn CredentialStore> {
        &self.store
    }

    /// Runs one issuance.
    pub async fn issue(&self, request: IssueRequest) -> Result<Issued, IssueError> {
        let fingerprint = request.fingerprint();
        let grant = self
            .auth
            .authenticate(&request.token, &request.unverified_cluster_id, &fingerprint)
            .await
            .map_err(auth_error)?;
        let cluster = ClusterIdentity::parse_remote(&request.unverified_cluster_id, &request.unverified_cluster_name)
            .map_err(IssueError::InvalidCluster)?;
        let csr = ParsedCsr::from_base64_pem(&request.csr_base64).map_err(IssueError::InvalidCsr)?;
        if csr.common_name() != cluster.id.as_str() {
            return Err(IssueError::CommonNameMismatch);
        }
        let store_err = |source| IssueError::Store { cluster: cluster.clone(), source };

        // One issuance per cluster at a time in this process; across replicas the backends
        // rely on create-if-absent semantics (AlreadyExists is resolved below).
        let _guard = self.locks.lock(cluster.id.as_str()).await;
        let namespace = self.store.ensure_tenant_namespace(&cluster).await.map_err(store_err)?;
        let origin = request.origin_token.clone().unwrap_or_default();
        let Certified { certificate_pem, outcome, signer_duration, origin_to_save } =
            self.certificate_for(&cluster, &namespace, &csr, &grant, &fingerprint, &origin).await?;
        let certificate = CertificateSummary::from_pem(certificate_pem.as_bytes())
            .ok_or_else(|| IssueError::BadCertificate { cluster: cluster.clone() })?;
        // Binding runs on repeats too, so a request that failed after storing is completed by
        // its retry instead of being stuck half-way.
        self.store.grant_peering_permissions(&namespace, &cluster.id).await.map_err(store_err)?;
        let api_server = self.store.api_server().await.map_err(store_err)?;
        if let Some(origin) = origin_to_save {
            self.store.save_origin_token(&cluster.id, &origin).await.map_err(store_err)?;
        }
        Ok(Issued {
            cluster,
            namespace,
            certificate_pem,
            certificate,
            api_server,
            outcome,
            token_kind: grant.kind,
            signer_duration,
        })
    }

    async fn certificate_for(
        &self,
        cluster: &ClusterIdentity,
        namespace: &TenantNamespace,
        csr: &ParsedCsr,
        grant: &Grant,
        fingerprint: &str,
        origin: &BearerToken,
    ) -> Result<Certified, IssueError> {
        let store_err = |source| IssueError::Store { cluster: cluster.clone(), source };
        let stored = self.store.stored_identity(namespace, &cluster.id).await.map_err(store_err)?;
        let Some(stored) = stored else {
            self.auth.consume(grant, fingerprint).await.map_err(auth_error)?;
            let (fresh, took) = self.sign(cluster, csr, OriginTokenDigest::of(origin)).await?;
            return match self.store.create_identity(namespace, &cluster.id, &fresh).await {
                Ok(()) => {
                    self.signer.forget(SignRequest { cluster, csr, ttl: self.policy.certificate_ttl }).await;
                    Ok(Certified::signed(fresh, Outcome::Issued, took, origin))
                }
                // Another replica stored first: answer as if we had come second.
                Err(StoreError::AlreadyExists { .. }) => {
                    self.after_lost_race(cluster, namespace, csr, origin, took).await
                }
                Err(other) => Err(store_err(other)),
            };
        };
        let (origin_digest, outcome) = match self.decide(&stored, csr) {
            Decision::Return => return Ok(Certified::repeat(stored, origin, None)),
            // An expired or unreadable identity grants nothing: this is a first issuance again.
            Decision::Replace => (OriginTokenDigest::of(origin), Outcome::Issued),
            // A join token bound to this cluster rotates it; an empty origin token keeps the old one.
            Decision::Conflict if grant.may_rotate(&cluster.id) => {
                (OriginTokenDigest::of(origin).or(stored.origin), Outcome::Issued)
            }
            Decision::Conflict if stored.origin.is_some_and(|bound| bound.matches(origin)) => {
                (stored.origin, Outcome::Recovered)
            }
            Decision::Conflict => return Err(self.conflict(cluster, namespace)),
        };
        self.auth.consume(grant, fingerprint).await.map_err(auth_error)?;
        let (fresh, took) = self.sign(cluster, csr, origin_digest).await?;
        match self.store.replace_identity(namespace, &cluster.id, &fresh, &stored).await {
            Ok(()) => {
                self.signer.forget(SignRequest { cluster, csr, ttl: self.policy.certificate_ttl }).await;
                Ok(Certified::signed(fresh, outcome, took, origin))
            }
            // Another request replaced it meanwhile (another replica, or this cluster's next
            // attempt): the winner's record stands.
            Err(StoreError::AlreadyExists { .. }) => self.after_lost_race(cluster, namespace, csr, origin, took).await,
            Err(other) => Err(store_err(other)),
        }
    }

    /// After another request stored an identity first: the same key gets the winner's
    /// certificate (a repeat), any other key conflicts.
    async fn after_lost_race(
        &self,
        cluster: &ClusterIdentity,
        namespace: &TenantNamespace,
        csr: &ParsedCsr,
        origin: &BearerToken,
        took: Duration,
    ) -> Result<Certified, IssueError> {
        let winner = self
            .store
            .stored_identity(namespace, &cluster.id)
            .await
            .map_err(|source| IssueError::Store { cluster: cluster.clone(), source })?;
        match winner {
            Some(winner) if self.decide(&winner, csr) == Decision::Return => {
                Ok(Certified::repeat(winner, origin, Some(took)))
            }
            _ => Err(self.conflict(cluster, namespace)),
        }
    }

    /// Compares a stored identity with a new request. The stored certificate is the truth: the
    /// same key gets its certificate back (a retry after a lost response); an expired or
    /// unreadable stored certificate grants nothing and may be replaced; anything else conflicts.
    fn decide(&self, stored: &StoredIdentity, csr: &ParsedCsr) -> Decision {
        let Some(summary) = CertificateSummary::from_pem(stored.certificate_pem.as_bytes()) else {
            return Decision::Replace;
        };
        let now = crate::pki::unix_now();
        if summary.not_after <= now {
            return Decision::Replace;
        }
        if summary.spki_der == csr.spki_der() && summary.common_name.as_deref() == Some(csr.common_name()) {
            Decision::Return
        } else {
            Decision::Conflict
        }
    }

    /// Signs, returning how long the signer took.
    async fn sign(
        &self,
        cluster: &ClusterIdentity,
        csr: &ParsedCsr,
        origin: Option<OriginTokenDigest>,
    ) -> Result<(StoredIdentity, Duration), IssueError> {
        let request = SignRequest { cluster, csr, ttl: self.policy.certificate_ttl };
        let started = Instant::now();
        let signed = self.signer.sign(request).await.map_err(|source| IssueError::Sign {
            cluster: cluster.clone(),
            elapsed: started.elapsed(),
            source,
        })?;
        Ok((StoredIdentity { origin, ..StoredIdentity::new(csr.to_pem(), signed.pem) }, started.elapsed()))
    }

    fn conflict(&self, cluster: &ClusterIdentity, namespace: &TenantNamespace) -> IssueError {
        IssueError::IdentityExists { cluster: cluster.clone(), namespace: namespace.to_string() }
    }
}

impl IssueRequest {
    /// Names this request for join-token use counting: the claimed cluster and the exact CSR,
    /// which a client's retries send unchanged.
    pub fn fingerprint(&self) -> String {
        let mut digest = Sha256::new();
        digest.update(self.unverified_cluster_id.as_bytes());
        digest.update(b"\n");
        digest.update(self.csr_base64.trim().as_bytes());
        hex::encode(digest.finalize())
    }
}

fn auth_error(error: AuthenticateError) -> IssueError {
    match error {
        AuthenticateError::Refused(reason) => IssueError::Unauthenticated(reason),
        AuthenticateError::Store(source) => IssueError::TokenState(source),
    }
}

/// What `certificate_for` settled on.
struct Certified {
    certificate_pem: String,
    outcome: Outcome,
    signer_duration: Option<Duration>,
    /// The origin token to write to the store: only ever the one bound to the stored identity.
    origin_to_save: Option<BearerToken>,
}

impl Certified {
    /// A certificate signed now and stored with the digest of `origin` (or, for a recovery, the
    /// digest it already carried, which `origin` matches).
    fn signed(fresh: StoredIdentity, outcome: Outcome, took: Duration, origin: &BearerToken) -> Self {
        let origin_to_save = fresh.origin.filter(|bound| bound.matches(origin)).map(|_| origin.clone());
        Self { certificate_pem: fresh.certificate_pem, outcome, signer_duration: Some(took), origin_to_save }
    }

    /// The stored certificate returned to the same key. The origin token is re-written only when
    /// it is the one bound to the identity, which completes an issuance interrupted before that
    /// write; any other token is ignored, so a replayed CSR changes nothing.
    fn repeat(stored: StoredIdentity, origin: &BearerToken, took: Option<Duration>) -> Self {
        let origin_to_save = stored.origin.filter(|bound| bound.matches(origin)).map(|_| origin.clone());
        Self {
            certificate_pem: stored.certificate_pem,
            outcome: Outcome::Repeated,
            signer_duration: took,
            origin_to_save,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Return,
    Replace,
    Conflict,
}

/// Per-cluster async locks; entries are dropped when nobody holds or waits for them.
#[derive(Default)]
struct ClusterLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl ClusterLocks {
    async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            map.retain(|_, lock| Arc::strong_count(lock) > 1);
            map.entry(key.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}
