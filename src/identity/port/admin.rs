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
    /// With `dry_run` nothing is removed and the answer lists what would be.
    async fn remove_tenant(
        &self,
        cluster: &ClusterId,
        delete_namespace: bool,
        dry_run: bool,
    ) -> Result<Vec<String>, StoreError>;
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

    /// The serving certificate (PEM) peers pin: a mounted pair the backend knows of, else the
    /// generated one; `None` when there is none.
    async fn serving_certificate(&self) -> Result<Option<String>, StoreError>;

    /// What `serve` last recorded about itself (where peers reach it, the pin it serves), so
    /// `token create --print-peer-command` and `info` need no flags. `None` before the first
    /// `serve`.
    async fn serving_record(&self) -> Result<Option<ServingRecord>, StoreError> {
        Ok(None)
    }

    /// Records what `serve` serves (called at start and when the served certificate changes).
    async fn record_serving(&self, _record: &ServingRecord) -> Result<(), StoreError> {
        Ok(())
    }

    /// The certificate (`tls.crt`, PEM) in the named Secret of this backend's namespace;
    /// `Ok(None)` when the Secret does not exist or has no `tls.crt`. Only the Kubernetes
    /// backend has Secrets.
    async fn secret_certificate(&self, name: &str) -> Result<Option<String>, StoreError> {
        Err(StoreError::Missing {
            what: format!("Secret {name}"),
            hint: "Secrets exist on the Kubernetes backend only: use --file or --url here".into(),
        })
    }
}

/// What a running `serve` tells the operator commands about itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServingRecord {
    /// The `https://HOST:PORT` peers use: `--advertise-auth-address`, else the listen address
    /// when it names a host, else this machine's first LAN address (`auth_url_guessed`).
    #[serde(default)]
    pub auth_url: Option<String>,
    /// True when `auth_url` was guessed from this machine's interfaces (listening on all of them).
    #[serde(default)]
    pub auth_url_guessed: bool,
    /// The address the public listener is bound to.
    pub listen: String,
    /// SPKI pin (`sha256:HEX`) of the certificate served; `None` for plain HTTP.
    #[serde(default)]
    pub ca_hash: Option<String>,
    /// notAfter of the certificate served (Unix seconds).
    #[serde(default)]
    pub certificate_not_after: Option<i64>,
    /// When this record was written (Unix seconds).
    pub updated_at: i64,
}
