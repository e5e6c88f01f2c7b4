//! This cluster's identity on the Kubernetes backend: the flags, else ConfigMap
//! `liqo-clusterid-configmap` (keys `CLUSTER_ID`, `CLUSTER_NAME`) as Liqo installs it.

use k8s_openapi::api::core::v1::ConfigMap;

use crate::adapter::kube::{KubeCtx, KubeFailure, CLUSTER_ID_CONFIGMAP};
use crate::identity::{ClusterId, ClusterIdentity, ClusterName, ClusterValueError};

/// Why the cluster identity could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum ClusterIdentityError {
    #[error("reading ConfigMap {CLUSTER_ID_CONFIGMAP}")]
    Read(#[source] KubeFailure),
    #[error(
        "no cluster {what}: pass --cluster-id and --cluster-name, or create ConfigMap {CLUSTER_ID_CONFIGMAP} with keys CLUSTER_ID and CLUSTER_NAME in namespace {namespace}"
    )]
    Missing { what: &'static str, namespace: String },
    #[error(transparent)]
    Invalid(ClusterValueError),
}

/// The cluster ID and name: each flag when given, else the ConfigMap's value.
pub async fn cluster_identity(
    ctx: &KubeCtx,
    namespace: &str,
    id_flag: Option<&str>,
    name_flag: Option<&str>,
) -> Result<ClusterIdentity, ClusterIdentityError> {
    let (id, name) = identity_values(ctx, namespace, id_flag, name_flag, true).await?;
    Ok(ClusterIdentity {
        id: ClusterId::parse(&id).map_err(ClusterIdentityError::Invalid)?,
        name: ClusterName::parse(name.as_deref().unwrap_or_default()).map_err(ClusterIdentityError::Invalid)?,
    })
}

/// The cluster ID alone (join tokens name it as their issuer; the name does not matter there).
pub async fn cluster_id(
    ctx: &KubeCtx,
    namespace: &str,
    id_flag: Option<&str>,
) -> Result<ClusterId, ClusterIdentityError> {
    let (id, _) = identity_values(ctx, namespace, id_flag, None, false).await?;
    ClusterId::parse(&id).map_err(ClusterIdentityError::Invalid)
}

async fn identity_values(
    ctx: &KubeCtx,
    namespace: &str,
    id_flag: Option<&str>,
    name_flag: Option<&str>,
    need_name: bool,
) -> Result<(String, Option<String>), ClusterIdentityError> {
    let (mut id, mut name) = (id_flag.map(str::to_owned), name_flag.map(str::to_owned));
    if id.is_none() || (need_name && name.is_none()) {
        let api: kube::Api<ConfigMap> = ctx.namespaced(namespace);
        let configmap = ctx
            .call_opt("reading ConfigMap liqo-clusterid-configmap", api.get(CLUSTER_ID_CONFIGMAP))
            .await
            .map_err(ClusterIdentityError::Read)?;
        let data = configmap.and_then(|cm| cm.data).unwrap_or_default();
        id = id.or_else(|| data.get("CLUSTER_ID").cloned());
        name = name.or_else(|| data.get("CLUSTER_NAME").cloned());
    }
    let missing = |what| ClusterIdentityError::Missing { what, namespace: namespace.to_owned() };
    let id = id.filter(|v| !v.is_empty()).ok_or_else(|| missing("ID"))?;
    let name = name.filter(|v| !v.is_empty());
    if need_name && name.is_none() {
        return Err(missing("name"));
    }
    Ok((id, name))
}
