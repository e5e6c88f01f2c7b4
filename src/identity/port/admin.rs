//! Ports the operator commands and the consumer side need from a backend, beside issuance:
//! listing and removing tenants, and this cluster's own state.

use crate::identity::port::{PeerRecord, StoreError};
use crate::identity::{ClusterId, ClusterIdentity, SharedToken};

/// Tenants as `tenant list` and `tenant remove` see them.
#[async_trait::async_trait]
pub trait TenantAdmin: Send + Sync {
    /// Every peer with a tenant, sorted by cluster ID.
    async fn tenants(&self) -> Result<Vec<PeerRecord>, StoreError>;

    /// Unpeers `cluster`: removes its bindings, stored certificate and origin token (and its
    /// tenant namespace when `delete_namespace` and the backend has one). Returns what was
    /// removed, one description each; empty when nothing was stored ("not found" is no error).
    async fn remove_tenant(&self, cluster: &ClusterId, delete_namespace: bool) -> Result<Vec<String>, StoreError>;
}

/// This cluster's own state, read by commands (which run no watch): its identity, its shared
/// token and its serving certificate.
#[async_trait::async_trait]
pub trait ClusterState: Send + Sync {
    /// This cluster's ID and name: each flag when given, else the backend's record.
    async fn cluster_identity(
        &self,
        id_flag: Option<&str>,
        name_flag: Option<&str>,
    ) -> Result<ClusterIdentity, StoreError>;

    /// This cluster's ID alone: the flag, else the backend's record (join tokens name it).
    async fn cluster_id(&self, id_flag: Option<&str>) -> Result<ClusterId, StoreError>;

    /// The current shared token; `None` when none is stored or it is unusable.
    async fn shared_token(&self) -> Result<Option<SharedToken>, StoreError>;

    /// The generated serving certificate (PEM) peers pin, if one was generated.
    async fn serving_certificate(&self) -> Result<Option<String>, StoreError>;
}
