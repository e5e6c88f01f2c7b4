//! The operator-facing ports on Kubernetes: this cluster's own state (`ClusterState`) and the
//! tenants (`TenantAdmin`), for commands that run no watch and serve nothing.

use crate::adapter::kube::kube_secret::KubeStore;
use crate::adapter::kube::{kube_cluster, kube_serving, kube_token, KubeCtx};
use crate::identity::port::{ClusterState, PeerRecord, StoreError, TenantAdmin};
use crate::identity::{ClusterId, ClusterIdentity, SharedToken};

/// This cluster's identity (flags or ConfigMap), shared token (Secret `auth-token`) and
/// generated serving certificate (Secret `liqo-auth-serving-cert`), read on demand.
pub struct KubeClusterState {
    ctx: KubeCtx,
    namespace: String,
}

impl KubeClusterState {
    /// Reads from `namespace`, where `serve` keeps its Secrets.
    pub fn new(ctx: KubeCtx, namespace: String) -> Self {
        Self { ctx, namespace }
    }
}

#[async_trait::async_trait]
impl ClusterState for KubeClusterState {
    async fn cluster_identity(
        &self,
        id_flag: Option<&str>,
        name_flag: Option<&str>,
    ) -> Result<ClusterIdentity, StoreError> {
        kube_cluster::cluster_identity(&self.ctx, &self.namespace, id_flag, name_flag).await.map_err(identity_error)
    }

    async fn cluster_id(&self, id_flag: Option<&str>) -> Result<ClusterId, StoreError> {
        kube_cluster::cluster_id(&self.ctx, &self.namespace, id_flag).await.map_err(identity_error)
    }

    async fn shared_token(&self) -> Result<Option<SharedToken>, StoreError> {
        Ok(kube_token::read_shared_token(&self.ctx, &self.namespace).await?)
    }

    async fn serving_certificate(&self) -> Result<Option<String>, StoreError> {
        Ok(kube_serving::stored_serving_certificate(&self.ctx, &self.namespace).await?)
    }
}

#[async_trait::async_trait]
impl TenantAdmin for KubeStore {
    async fn tenants(&self) -> Result<Vec<PeerRecord>, StoreError> {
        self.peers().await
    }

    async fn remove_tenant(&self, cluster: &ClusterId, delete_namespace: bool) -> Result<Vec<String>, StoreError> {
        self.remove_peer(cluster, delete_namespace).await
    }
}

fn identity_error(error: kube_cluster::ClusterIdentityError) -> StoreError {
    match error {
        kube_cluster::ClusterIdentityError::Read(failure) => failure.into(),
        other @ kube_cluster::ClusterIdentityError::Missing { .. } => {
            StoreError::Missing { what: "cluster identity".into(), hint: other.to_string() }
        }
        other @ kube_cluster::ClusterIdentityError::Invalid(_) => {
            StoreError::Corrupt { what: "cluster identity".into(), reason: other.to_string() }
        }
    }
}
