//! The consumer side's storage port: where `peer` keeps the identities this cluster obtained
//! from providers, and the key of a request still in flight (so a retry after a crash re-sends
//! the same CSR).
//!
//! Adapters: files under the data dir (`client::identity_store::LocalIdentityStore`) and Liqo
//! identity Secrets (`KubeIdentityStore` in `adapter/kube/kube_identity.rs`). Checking what the
//! provider returned is left to the client; a store keeps what it is given.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::identity::port::StoreError;
use crate::identity::{ClusterId, ClusterIdentity};

/// An identity towards one provider: what a Liqo control plane needs to reach its API server.
#[derive(Clone)]
pub struct PeerIdentity {
    /// The provider's name, when known (the Kubernetes Secret does not record it).
    pub provider_name: Option<String>,
    /// The client private key, PKCS#8 PEM.
    pub private_key_pem: String,
    /// The client certificate, PEM.
    pub certificate_pem: String,
    /// `apiServerUrl` from the provider.
    pub api_server_url: String,
    /// `apiServerCA` (PEM) from the provider, when it sent one.
    pub api_server_ca: Option<String>,
    /// The provider's tenant namespace for this cluster.
    pub namespace: String,
    /// Base URL of the provider's liqo-auth service (where renewals go), when recorded.
    pub auth_url: Option<String>,
    /// The kubeconfig file kept in step with this identity (`--kubeconfig-out`), when recorded.
    pub kubeconfig_path: Option<String>,
}

/// An identity as `identity list` shows it: the provider, and where it is kept.
#[derive(Clone, Debug)]
pub struct StoredPeerIdentity {
    pub provider: ClusterId,
    pub identity: PeerIdentity,
    /// Where it is stored, for messages.
    pub location: String,
}

/// A key and CSR generated for one request, kept until the certificate is stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingKey {
    /// `p256`, `ed25519` or `rsa2048`.
    pub key_type: String,
    /// PKCS#8 PEM.
    pub private_key_pem: String,
    /// PKCS#10 PEM.
    pub csr_pem: String,
}

/// What goes into a kubeconfig for one identity: one cluster (the provider's API server), one
/// user (the client certificate and its key), one context on the provider's tenant namespace.
#[derive(Clone)]
pub struct KubeconfigParts<'a> {
    /// Name of the cluster, user and context entries (e.g. `liqo-<provider name>`).
    pub name: &'a str,
    /// `apiServerUrl` from the provider.
    pub server: &'a str,
    /// `apiServerCA` (PEM) when the provider sent one; absent means system roots.
    pub ca_pem: Option<&'a str>,
    /// The issued client certificate (PEM).
    pub certificate_pem: &'a str,
    /// The client private key (PEM).
    pub private_key_pem: &'a str,
    /// The provider's tenant namespace for this cluster.
    pub namespace: &'a str,
}

/// Renders [`KubeconfigParts`] as a kubeconfig document. The Kubernetes adapter owns the format
/// (`render` in `adapter/kube/kube_kubeconfig.rs`); the client only writes the text it returns.
pub type RenderKubeconfig = fn(&KubeconfigParts<'_>) -> String;

/// Storage of the identities `peer` obtained. "Not found" is `Ok(None)`; a new identity never
/// replaces an older one in place (the newest valid one wins when reading).
#[async_trait::async_trait]
pub trait PeerIdentityStore: Send + Sync {
    /// The newest complete identity stored for `provider`, if any (expired ones included: the
    /// caller decides).
    async fn existing(&self, provider: &ClusterId) -> Result<Option<PeerIdentity>, StoreError>;

    /// The key left by an earlier, unfinished attempt towards `provider`.
    async fn pending(&self, provider: &ClusterId) -> Result<Option<PendingKey>, StoreError>;

    /// Persists the key of this attempt before it is sent, so a run that dies after sending is
    /// completed by the next run with the same key (the provider answers it idempotently).
    async fn save_pending(&self, provider: &ClusterIdentity, key: &PendingKey) -> Result<(), StoreError>;

    /// Stores a new identity and drops the pending key; returns where it went, for messages.
    async fn store(&self, provider: &ClusterIdentity, identity: &PeerIdentity) -> Result<String, StoreError>;

    /// Replaces the identity holding `previous`'s certificate with `identity` in one atomic
    /// write (a reader sees the old key and certificate or the new ones, never a mix); fails
    /// with `AlreadyExists` when the stored identity is no longer `previous` (a concurrent
    /// renewal). Returns where it went, for messages.
    async fn replace(
        &self,
        provider: &ClusterIdentity,
        previous: &PeerIdentity,
        identity: &PeerIdentity,
    ) -> Result<String, StoreError>;

    /// Every stored identity, the newest per provider, sorted by provider ID.
    async fn list(&self) -> Result<Vec<StoredPeerIdentity>, StoreError>;

    /// Deletes every identity and pending key stored for `provider`; returns what was removed
    /// (empty when nothing was stored: "not found" is no error).
    async fn remove(&self, provider: &ClusterId) -> Result<Vec<String>, StoreError>;

    /// Where the identity for `provider` is (or would be) stored, for messages.
    fn describe(&self, provider: &ClusterId) -> String;
}

impl PeerIdentity {
    /// The kubeconfig parts of this identity, its entries named `name`.
    pub fn kubeconfig_parts<'a>(&'a self, name: &'a str) -> KubeconfigParts<'a> {
        KubeconfigParts {
            name,
            server: &self.api_server_url,
            ca_pem: self.api_server_ca.as_deref(),
            certificate_pem: &self.certificate_pem,
            private_key_pem: &self.private_key_pem,
            namespace: &self.namespace,
        }
    }
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("provider_name", &self.provider_name)
            .field("api_server_url", &self.api_server_url)
            .field("namespace", &self.namespace)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for PendingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingKey").field("key_type", &self.key_type).field("pem", &"<redacted>").finish()
    }
}

impl fmt::Debug for KubeconfigParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeconfigParts")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_keys() {
        let identity = PeerIdentity {
            provider_name: None,
            private_key_pem: "KEY-BBBB".into(),
            certificate_pem: "CERT".into(),
            api_server_url: "https://10.0.0.5:6443".into(),
            api_server_ca: None,
            namespace: "ns".into(),
            auth_url: None,
            kubeconfig_path: None,
        };
        let printed = format!("{identity:?} {:?}", identity.kubeconfig_parts("liqo-p"));
        assert!(printed.contains("<redacted>") && !printed.contains("BBBB"), "{printed}");
        let pending = PendingKey { key_type: "p256".into(), private_key_pem: "KEY-BBBB".into(), csr_pem: "C".into() };
        assert!(!format!("{pending:?}").contains("BBBB"));
    }
}
