//! The operator-facing ports on Kubernetes: this cluster's own state (`ClusterState`) and the
//! tenants (`TenantAdmin`), for commands that run no watch and serve nothing.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{DeleteParams, ListParams};
use kube::Api;

use crate::adapter::kube::kube_secret::{deleted, identity_of};
use crate::adapter::kube::{
    kube_cluster, kube_serving, kube_token, KubeCtx, KubeFailure, LABEL_CLUSTER_ID, LABEL_PEERING_PERMISSIONS,
    LABEL_TENANT_NAMESPACE, REMOTE_CERTIFICATE_SECRET,
};
use crate::identity::port::{ClusterState, PeerRecord, ServingRecord, StoreError, TenantAdmin};
use crate::identity::{ClusterId, ClusterIdentity, SharedToken};

/// This cluster's identity (ConfigMap or flags), shared token (Secret `auth-token`) and
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
        let source = kube_cluster::IdentitySource::Existing;
        kube_cluster::cluster_identity(&self.ctx, &self.namespace, id_flag, name_flag, source)
            .await
            .map_err(identity_error)
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

    async fn secret_certificate(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(kube_serving::secret_certificate(&self.ctx, &self.namespace, name).await?)
    }

    async fn serving_record(&self) -> Result<Option<ServingRecord>, StoreError> {
        let Some(json) = kube_serving::serving_record(&self.ctx, &self.namespace).await? else {
            return Ok(None);
        };
        serde_json::from_str(&json).map(Some).map_err(|e| StoreError::Corrupt {
            what: format!("Secret {}/{}", self.namespace, kube_serving::SERVING_RECORD_SECRET),
            reason: e.to_string(),
        })
    }

    async fn record_serving(&self, record: &ServingRecord) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(record).map_err(|e| StoreError::io("encoding the serving record", e.into()))?;
        let same = |stored: &str| {
            serde_json::from_str::<ServingRecord>(stored)
                .is_ok_and(|old| ServingRecord { updated_at: record.updated_at, ..old } == *record)
        };
        Ok(kube_serving::record_serving(&self.ctx, &self.namespace, json, same).await?)
    }
}

/// Tenants as the operator sees them: tenant namespaces (found by label), their stored
/// certificates, RoleBindings and the origin tokens kept in `namespace`.
pub struct KubeTenants {
    ctx: KubeCtx,
    namespace: String,
}

impl KubeTenants {
    /// Tenants whose origin tokens live in `namespace`.
    pub fn new(ctx: KubeCtx, namespace: String) -> Self {
        Self { ctx, namespace }
    }

    /// Every peer with a tenant namespace, and its stored certificate if any.
    async fn peers(&self) -> Result<Vec<PeerRecord>, StoreError> {
        let namespaces: Api<Namespace> = Api::all(self.ctx.client.clone());
        let list = self
            .ctx
            .call("listing tenant namespaces", namespaces.list(&ListParams::default().labels(LABEL_TENANT_NAMESPACE)))
            .await?;
        let mut peers = Vec::new();
        for ns in list.items {
            let Some(name) = ns.metadata.name.clone() else {
                continue;
            };
            let Some(cluster_id) = ns.metadata.labels.as_ref().and_then(|l| l.get(LABEL_CLUSTER_ID)).cloned() else {
                continue;
            };
            let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &name);
            let identity = self
                .ctx
                .call_opt("reading the stored certificate", secrets.get(REMOTE_CERTIFICATE_SECRET))
                .await?
                .and_then(|s| identity_of(&s));
            peers.push(PeerRecord { cluster_id, cluster_name: None, namespace: name, identity });
        }
        peers.sort_by(|a, b| a.cluster_id.cmp(&b.cluster_id));
        Ok(peers)
    }

    /// Unpeers `cluster`: deletes the RoleBindings `liqo-binding-*` in its tenant namespace
    /// (found by label), its stored certificate, its origin token `remote-token-<id>` and, with
    /// `delete_namespace`, the namespace. Returns what was removed; absent objects are skipped,
    /// so a partly failed removal can simply be run again.
    /// With `dry_run` nothing is deleted: each object is read instead, and the ones that exist
    /// are returned.
    async fn remove_peer(
        &self,
        cluster: &ClusterId,
        delete_namespace: bool,
        dry_run: bool,
    ) -> Result<Vec<String>, StoreError> {
        let mut removed = Vec::new();
        let namespaces: Api<Namespace> = Api::all(self.ctx.client.clone());
        let selector = format!("{LABEL_CLUSTER_ID}={cluster},{LABEL_TENANT_NAMESPACE}");
        let found = self
            .ctx
            .call("listing tenant namespaces", namespaces.list(&ListParams::default().labels(&selector)))
            .await?;
        for namespace in found.items.iter().filter_map(|ns| ns.metadata.name.clone()) {
            let bindings: Api<RoleBinding> = Api::namespaced(self.ctx.client.clone(), &namespace);
            for name in self.binding_names(&bindings).await? {
                let what = format!("RoleBinding {namespace}/{name}");
                if self.remove(&bindings, &name, &what, dry_run).await? {
                    removed.push(what);
                }
            }
            let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &namespace);
            let what = format!("Secret {namespace}/{REMOTE_CERTIFICATE_SECRET}");
            if self.remove(&secrets, REMOTE_CERTIFICATE_SECRET, &what, dry_run).await? {
                removed.push(what);
            }
            let what = format!("Namespace {namespace}");
            if delete_namespace && self.remove(&namespaces, &namespace, &what, dry_run).await? {
                removed.push(what);
            }
        }
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let origin = format!("remote-token-{cluster}");
        let what = format!("Secret {}/{origin}", self.namespace);
        if self.remove(&secrets, &origin, &what, dry_run).await? {
            removed.push(what);
        }
        Ok(removed)
    }

    /// Deletes one object (true when it existed), or with `dry_run` only reads it (true when
    /// it exists).
    async fn remove<K>(&self, api: &Api<K>, name: &str, what: &str, dry_run: bool) -> Result<bool, KubeFailure>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if dry_run {
            return Ok(self.ctx.call_opt(&format!("reading {what}"), api.get(name)).await?.is_some());
        }
        deleted(&self.ctx, &format!("deleting {what}"), api.delete(name, &DeleteParams::default())).await
    }

    /// Names of the `liqo-binding-*` RoleBindings in a tenant namespace: listed when allowed,
    /// else derived from the peering ClusterRoles (the deployed RBAC grants no list on
    /// RoleBindings; `list` on ClusterRoles and `delete` on RoleBindings suffice).
    async fn binding_names(&self, bindings: &Api<RoleBinding>) -> Result<Vec<String>, KubeFailure> {
        match self.ctx.call("listing RoleBindings", bindings.list(&ListParams::default())).await {
            Ok(list) => Ok(list
                .items
                .into_iter()
                .filter_map(|b| b.metadata.name)
                .filter(|name| name.starts_with("liqo-binding-"))
                .collect()),
            Err(KubeFailure::Forbidden { .. }) => {
                let roles: Api<ClusterRole> = Api::all(self.ctx.client.clone());
                let list = self
                    .ctx
                    .call(
                        "listing the peering ClusterRoles",
                        roles.list(&ListParams::default().labels(LABEL_PEERING_PERMISSIONS)),
                    )
                    .await?;
                Ok(list
                    .items
                    .into_iter()
                    .filter_map(|r| r.metadata.name)
                    .map(|n| format!("liqo-binding-{n}"))
                    .collect())
            }
            Err(failure) => Err(failure),
        }
    }
}

#[async_trait::async_trait]
impl TenantAdmin for KubeTenants {
    async fn tenants(&self) -> Result<Vec<PeerRecord>, StoreError> {
        self.peers().await
    }

    async fn remove_tenant(
        &self,
        cluster: &ClusterId,
        delete_namespace: bool,
        dry_run: bool,
    ) -> Result<Vec<String>, StoreError> {
        self.remove_peer(cluster, delete_namespace, dry_run).await
    }
}

fn identity_error(error: kube_cluster::ClusterIdentityError) -> StoreError {
    match error {
        kube_cluster::ClusterIdentityError::Read(failure) | kube_cluster::ClusterIdentityError::Create(failure) => {
            failure.into()
        }
        other @ kube_cluster::ClusterIdentityError::Missing { .. } => {
            StoreError::Missing { what: "cluster identity".into(), hint: other.to_string() }
        }
        other @ (kube_cluster::ClusterIdentityError::Invalid(_)
        | kube_cluster::ClusterIdentityError::Incomplete { .. }) => {
            StoreError::Corrupt { what: "cluster identity".into(), reason: other.to_string() }
        }
    }
}
