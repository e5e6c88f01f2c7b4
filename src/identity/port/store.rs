//! Persistence ports: `CredentialStore` (peers' identities), `SharedTokenSource` (the shared
//! token, read from memory) and `JoinTokenStore` (join-token key and records), with `StoreError`.
//!
//! "Not found" is `Ok(None)`; creating something that exists is `StoreError::AlreadyExists`,
//! which the issuer resolves by reading it back.

use std::fmt;

use crate::identity::join_token::{ConsumeOutcome, JoinTokenKey, JoinTokenRecord};
use crate::identity::{BearerToken, ClusterId, ClusterIdentity, OriginTokenDigest, SharedToken, TenantNamespace};

/// What a provider stored for a peer: the request it signed, the certificate it issued, and the
/// digest of the `originClusterToken` the identity was issued with (stored in the same record, so
/// the identity and the token that may later recover it are written in one atomic step).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredIdentity {
    pub csr_pem: String,
    pub certificate_pem: String,
    /// `None` when the request carried no origin token, or the record predates this field.
    pub origin: Option<OriginTokenDigest>,
    /// The certificate a renewal replaced, kept for a bounded overlap so a peer whose renewal
    /// answer was lost can renew again with the certificate it still holds. `None` after a
    /// first issuance or a token-authorised re-issue.
    pub previous: Option<PreviousCertificate>,
}

/// The certificate a renewal replaced, and when.
#[derive(Clone, PartialEq, Eq)]
pub struct PreviousCertificate {
    pub certificate_pem: String,
    /// When it was replaced, Unix seconds.
    pub replaced_at: i64,
}

impl StoredIdentity {
    /// A freshly issued identity, bound to no origin token, with no previous certificate.
    pub fn new(csr_pem: String, certificate_pem: String) -> Self {
        Self { csr_pem, certificate_pem, origin: None, previous: None }
    }
}

impl fmt::Debug for StoredIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredIdentity(<redacted>)")
    }
}

/// Where peers reach this cluster's API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiServerInfo {
    pub url: String,
    /// PEM bundle trusted for the API server; `None` when peers should use their system roots.
    pub ca_pem: Option<String>,
}

/// A peer as listed by `tenant list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    pub cluster_id: String,
    pub cluster_name: Option<String>,
    pub namespace: String,
    pub identity: Option<StoredIdentity>,
}

/// Storage of peers' identities.
#[async_trait::async_trait]
pub trait CredentialStore: Send + Sync {
    /// Finds or creates the tenant namespace for `cluster` and returns its name.
    async fn ensure_tenant_namespace(&self, cluster: &ClusterIdentity) -> Result<TenantNamespace, StoreError>;

    /// The tenant namespace of `cluster` if it has one; creates nothing (renewal asks whether a
    /// tenant still exists, and must never bring a removed one back).
    async fn tenant_namespace(&self, cluster: &ClusterId) -> Result<Option<TenantNamespace>, StoreError>;

    /// The identity stored for `cluster` in `namespace`, if any.
    async fn stored_identity(
        &self,
        namespace: &TenantNamespace,
        cluster: &ClusterId,
    ) -> Result<Option<StoredIdentity>, StoreError>;

    /// Stores a new identity; `AlreadyExists` when one is already stored.
    async fn create_identity(
        &self,
        namespace: &TenantNamespace,
        cluster: &ClusterId,
        identity: &StoredIdentity,
    ) -> Result<(), StoreError>;

    /// Replaces `previous` with `identity` (an expired identity, or a rotation). Fails with
    /// `AlreadyExists` when the stored identity is no longer `previous` (a concurrent change).
    async fn replace_identity(
        &self,
        namespace: &TenantNamespace,
        cluster: &ClusterId,
        identity: &StoredIdentity,
        previous: &StoredIdentity,
    ) -> Result<(), StoreError>;

    /// Binds the peering permissions in `namespace` to the Kubernetes user `user`.
    async fn grant_peering_permissions(&self, namespace: &TenantNamespace, user: &ClusterId) -> Result<(), StoreError>;

    /// Stores the consumer's own token (`originClusterToken`) so this cluster can peer back. The
    /// issuer calls it only with the token bound to the identity it just stored or returned.
    async fn save_origin_token(&self, cluster: &ClusterId, token: &BearerToken) -> Result<(), StoreError>;

    /// Where peers reach this cluster's API server, read at request time.
    async fn api_server(&self) -> Result<ApiServerInfo, StoreError>;

    /// Whether the backend can serve requests now.
    async fn ready(&self) -> Result<(), StoreError>;
}

/// Access to the provider's shared token. Reads are synchronous: they come from memory (the
/// local file loaded at start, or the Kubernetes watch cache), never from a network call.
pub trait SharedTokenSource: Send + Sync {
    /// The current shared token, or `None` when there is no usable token.
    fn shared_token(&self) -> Option<SharedToken>;
}

/// The join-token signing key and the token records (never the tokens themselves).
///
/// "Not found" is `Ok(None)`. `consume` is the one operation that must be atomic across every
/// replica: two callers can never together take more uses than a record allows.
#[async_trait::async_trait]
pub trait JoinTokenStore: Send + Sync {
    /// The current signing key; `None` before the first `token create`.
    async fn key(&self) -> Result<Option<JoinTokenKey>, StoreError>;

    /// The current signing key, creating one when there is none.
    async fn ensure_key(&self) -> Result<JoinTokenKey, StoreError>;

    /// Replaces the key with a fresh one: every outstanding token stops verifying.
    async fn rotate_key(&self) -> Result<JoinTokenKey, StoreError>;

    /// Stores the record of a new token; `AlreadyExists` if its ID is taken.
    async fn create_record(&self, record: &JoinTokenRecord) -> Result<(), StoreError>;

    /// The record of token `id`.
    async fn record(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError>;

    /// Every record, sorted by creation time.
    async fn records(&self) -> Result<Vec<JoinTokenRecord>, StoreError>;

    /// Marks token `id` revoked; returns the updated record, `None` when unknown.
    async fn revoke(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError>;

    /// Atomically applies [`JoinTokenRecord::consume`] for the request `fingerprint`.
    async fn consume(&self, id: &str, fingerprint: &str) -> Result<ConsumeOutcome, StoreError>;
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("{operation}: the backend is unavailable")]
    Unavailable {
        operation: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{operation}: permission denied to the service's own account ({detail})")]
    Forbidden { operation: String, detail: String },
    #[error("{operation}")]
    Backend {
        operation: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("no {what}: {hint}")]
    Missing { what: String, hint: String },
    /// The tenant namespace a cluster would get exists and belongs to another cluster (its
    /// `discovery.liqo.io/cluster-id` label names another one, or none): it is never used.
    #[error("tenant namespace {namespace} exists but is labelled for {}", owner.as_deref().map_or("no cluster".to_owned(), |o| format!("cluster {o}")))]
    NamespaceTaken { namespace: String, owner: Option<String> },
}

impl StoreError {
    /// True when retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// Wraps an I/O error of the local backend.
    pub fn io(operation: impl Into<String>, source: std::io::Error) -> Self {
        Self::Backend { operation: operation.into(), source: Box::new(source) }
    }
}

impl From<crate::fs::FileError> for StoreError {
    fn from(error: crate::fs::FileError) -> Self {
        Self::Backend { operation: error.to_string(), source: Box::new(error.source) }
    }
}
