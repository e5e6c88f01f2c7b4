//! This cluster's identity on the Kubernetes backend, kept in ConfigMap
//! `liqo-clusterid-configmap` (keys `CLUSTER_ID`, `CLUSTER_NAME`) as Liqo keeps it.
//!
//! Order: the ConfigMap when it exists (Liqo's identity wins, so the service and Liqo never
//! disagree), else the flags, else, for `serve` only, a new identity created once and stored in
//! that ConfigMap with Liqo's keys, so a standalone install keeps its ID across restarts and
//! every replica uses the same one. Operator commands never invent an identity.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;

use crate::adapter::kube::{KubeCtx, KubeFailure, CLUSTER_ID_CONFIGMAP};
use crate::identity::{ClusterId, ClusterIdentity, ClusterName, ClusterValueError};

/// Key of the cluster ID in the ConfigMap (Liqo's name).
pub const CLUSTER_ID_KEY: &str = "CLUSTER_ID";
/// Key of the cluster name in the ConfigMap (Liqo's name).
pub const CLUSTER_NAME_KEY: &str = "CLUSTER_NAME";

/// Whether a missing identity may be created (only `serve` creates one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// Read the ConfigMap or the flags; fail when neither has an identity.
    Existing,
    /// Like `Existing`, but create the ConfigMap with a new identity when both are missing.
    CreateMissing,
}

/// Why the cluster identity could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum ClusterIdentityError {
    #[error("reading ConfigMap {CLUSTER_ID_CONFIGMAP}")]
    Read(#[source] KubeFailure),
    #[error("creating ConfigMap {CLUSTER_ID_CONFIGMAP} with a new cluster identity")]
    Create(#[source] KubeFailure),
    #[error(
        "no cluster identity: ConfigMap {CLUSTER_ID_CONFIGMAP} does not exist in namespace {namespace} and no --cluster-id was given (start `liqo-auth serve` once to create it, or pass --cluster-id)"
    )]
    Missing { namespace: String },
    #[error("ConfigMap {CLUSTER_ID_CONFIGMAP} in namespace {namespace} has no {CLUSTER_ID_KEY} key: fix or delete it")]
    Incomplete { namespace: String },
    #[error(transparent)]
    Invalid(ClusterValueError),
}

/// The cluster ID and name, in the order the module documents.
pub async fn cluster_identity(
    ctx: &KubeCtx,
    namespace: &str,
    id_flag: Option<&str>,
    name_flag: Option<&str>,
    source: IdentitySource,
) -> Result<ClusterIdentity, ClusterIdentityError> {
    let api: kube::Api<ConfigMap> = ctx.namespaced(namespace);
    let stored = read(ctx, &api).await?;
    let (id, name) = match stored {
        Some(data) => {
            let id = data.get(CLUSTER_ID_KEY).filter(|v| !v.is_empty()).cloned();
            let id = id.ok_or_else(|| ClusterIdentityError::Incomplete { namespace: namespace.to_owned() })?;
            if id_flag.is_some_and(|flag| flag != id) {
                tracing::warn!(
                    cluster.id = %id,
                    "--cluster-id differs from ConfigMap {CLUSTER_ID_CONFIGMAP}; using the ConfigMap's {id}, as Liqo does"
                );
            }
            let name = data.get(CLUSTER_NAME_KEY).filter(|v| !v.is_empty()).cloned();
            (id.clone(), name.or_else(|| name_flag.map(str::to_owned)).unwrap_or_else(|| default_name(&id)))
        }
        None => match (id_flag, source) {
            (Some(id), _) => (id.to_owned(), name_flag.map_or_else(|| default_name(id), str::to_owned)),
            (None, IdentitySource::Existing) => {
                return Err(ClusterIdentityError::Missing { namespace: namespace.to_owned() })
            }
            (None, IdentitySource::CreateMissing) => create(ctx, &api, namespace, name_flag).await?,
        },
    };
    Ok(ClusterIdentity {
        id: ClusterId::parse(&id).map_err(ClusterIdentityError::Invalid)?,
        name: ClusterName::parse(&name).map_err(ClusterIdentityError::Invalid)?,
    })
}

/// The cluster ID alone (join tokens name it as their issuer).
pub async fn cluster_id(
    ctx: &KubeCtx,
    namespace: &str,
    id_flag: Option<&str>,
) -> Result<ClusterId, ClusterIdentityError> {
    Ok(cluster_identity(ctx, namespace, id_flag, None, IdentitySource::Existing).await?.id)
}

async fn read(
    ctx: &KubeCtx,
    api: &kube::Api<ConfigMap>,
) -> Result<Option<BTreeMap<String, String>>, ClusterIdentityError> {
    let configmap = ctx
        .call_opt("reading ConfigMap liqo-clusterid-configmap", api.get(CLUSTER_ID_CONFIGMAP))
        .await
        .map_err(ClusterIdentityError::Read)?;
    Ok(configmap.map(|cm| cm.data.unwrap_or_default()))
}

/// Creates the ConfigMap with a new ID; when another replica created it first, uses theirs.
async fn create(
    ctx: &KubeCtx,
    api: &kube::Api<ConfigMap>,
    namespace: &str,
    name_flag: Option<&str>,
) -> Result<(String, String), ClusterIdentityError> {
    let id = uuid::Uuid::new_v4().to_string();
    let name = name_flag.map_or_else(|| default_name(&id), str::to_owned);
    // Validated before anything is stored, so a bad --cluster-name leaves no ConfigMap behind.
    ClusterName::parse(&name).map_err(ClusterIdentityError::Invalid)?;
    let configmap = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(CLUSTER_ID_CONFIGMAP.to_owned()),
            labels: Some([("app.kubernetes.io/managed-by".to_owned(), "liqo-auth".to_owned())].into()),
            ..Default::default()
        },
        data: Some([(CLUSTER_ID_KEY.to_owned(), id.clone()), (CLUSTER_NAME_KEY.to_owned(), name.clone())].into()),
        ..Default::default()
    };
    match ctx.call("creating ConfigMap liqo-clusterid-configmap", api.create(&PostParams::default(), &configmap)).await
    {
        Ok(_) => {
            tracing::info!(
                cluster.id = %id,
                "created cluster identity {id} ({name}) in ConfigMap {CLUSTER_ID_CONFIGMAP} of namespace {namespace}"
            );
            Ok((id, name))
        }
        Err(failure) if failure.is_already_exists() => {
            let data = read(ctx, api).await?.unwrap_or_default();
            let id = data.get(CLUSTER_ID_KEY).filter(|v| !v.is_empty()).cloned();
            let id = id.ok_or_else(|| ClusterIdentityError::Incomplete { namespace: namespace.to_owned() })?;
            let name = data.get(CLUSTER_NAME_KEY).filter(|v| !v.is_empty()).cloned();
            let name = name.unwrap_or_else(|| default_name(&id));
            Ok((id, name))
        }
        Err(failure) => Err(ClusterIdentityError::Create(failure)),
    }
}

/// `cluster-<first 8 alphanumerics of the ID>`, as the local backend names a new cluster.
fn default_name(id: &str) -> String {
    let short: String = id.chars().filter(char::is_ascii_alphanumeric).take(8).collect::<String>().to_ascii_lowercase();
    format!("cluster-{short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_name_is_a_dns_label_from_the_id() {
        let name = default_name("0B6A4C8E-3f1d-4f7a-9b2e-5d8c1a7e6f90");
        assert_eq!(name, "cluster-0b6a4c8e");
        assert!(ClusterName::parse(&name).is_ok());
    }
}
