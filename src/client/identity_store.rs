//! The local adapter of [`PeerIdentityStore`]: the identities `peer` obtained, as files under
//! `<data-dir>/identities/<provider-id>/` (directory 0700, files 0600, each written atomically):
//! `private-key.pem`, `certificate.pem`, `identity.json` (written last, so it marks a complete
//! identity), and `pending.json` while a request is in flight.
//!
//! Opening the store touches nothing: directories are created when the first key is saved, and
//! a server's data (its shared token, its CA) is never created here. The Kubernetes adapter
//! (Liqo identity Secrets) is in `adapter/kube/kube_identity.rs`; checking certificates and talking
//! to the provider are left to [`super::peer`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::key::key_matches_certificate;
use crate::fs::{ensure_private_dir, read_string, write_private_file};
use crate::identity::port::{PeerIdentity, PeerIdentityStore, PendingKey, StoreError};
use crate::identity::{ClusterId, ClusterIdentity};

/// `<data-dir>/identities`.
#[derive(Debug, Clone)]
pub struct LocalIdentityStore {
    dir: PathBuf,
}

/// The JSON file of the local backend; the key and certificate sit beside it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityFile {
    provider_id: String,
    provider_name: String,
    api_server_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_server_ca: Option<String>,
    namespace: String,
}

const KEY_FILE: &str = "private-key.pem";
const CERT_FILE: &str = "certificate.pem";
const IDENTITY_FILE: &str = "identity.json";
const PENDING_FILE: &str = "pending.json";

impl LocalIdentityStore {
    /// The store under `<data_dir>/identities`; nothing is created until a key is saved.
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.join("identities") }
    }

    fn provider_dir(&self, provider: &ClusterId) -> PathBuf {
        // ClusterId is a validated DNS-1123 label: safe as a path component.
        self.dir.join(provider.as_str())
    }

    fn ensure_provider_dir(&self, provider: &ClusterId) -> Result<PathBuf, StoreError> {
        let dir = self.provider_dir(provider);
        ensure_private_dir(&self.dir)?;
        ensure_private_dir(&dir)?;
        Ok(dir)
    }
}

#[async_trait::async_trait]
impl PeerIdentityStore for LocalIdentityStore {
    async fn existing(&self, provider: &ClusterId) -> Result<Option<PeerIdentity>, StoreError> {
        let dir = self.provider_dir(provider);
        let Some(file) = read_json::<IdentityFile>(&dir.join(IDENTITY_FILE))? else {
            return Ok(None);
        };
        let private_key_pem = read_string(&dir.join(KEY_FILE))?;
        let certificate_pem = read_string(&dir.join(CERT_FILE))?;
        // The three files are written one by one: a crash during a --force re-issue could pair
        // a new key with an old certificate. Such a pair is no identity at all.
        if !key_matches_certificate(&private_key_pem, &certificate_pem) {
            return Ok(None);
        }
        Ok(Some(PeerIdentity {
            provider_name: Some(file.provider_name),
            private_key_pem,
            certificate_pem,
            api_server_url: file.api_server_url,
            api_server_ca: file.api_server_ca,
            namespace: file.namespace,
        }))
    }

    async fn pending(&self, provider: &ClusterId) -> Result<Option<PendingKey>, StoreError> {
        read_json(&self.provider_dir(provider).join(PENDING_FILE))
    }

    async fn save_pending(&self, provider: &ClusterIdentity, key: &PendingKey) -> Result<(), StoreError> {
        let dir = self.ensure_provider_dir(&provider.id)?;
        let json = serde_json::to_vec_pretty(key).expect("a pending key always serialises");
        Ok(write_private_file(&dir.join(PENDING_FILE), &json)?)
    }

    async fn store(&self, provider: &ClusterIdentity, identity: &PeerIdentity) -> Result<String, StoreError> {
        let dir = self.ensure_provider_dir(&provider.id)?;
        write_private_file(&dir.join(KEY_FILE), identity.private_key_pem.as_bytes())?;
        write_private_file(&dir.join(CERT_FILE), identity.certificate_pem.as_bytes())?;
        let file = IdentityFile {
            provider_id: provider.id.to_string(),
            provider_name: provider.name.to_string(),
            api_server_url: identity.api_server_url.clone(),
            api_server_ca: identity.api_server_ca.clone(),
            namespace: identity.namespace.clone(),
        };
        let json = serde_json::to_vec_pretty(&file).expect("an identity file always serialises");
        write_private_file(&dir.join(IDENTITY_FILE), &json)?;
        match std::fs::remove_file(dir.join(PENDING_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(format!("removing {}", dir.join(PENDING_FILE).display()), e)),
        }
        Ok(dir.display().to_string())
    }

    fn describe(&self, provider: &ClusterId) -> String {
        self.provider_dir(provider).display().to_string()
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt { what: path.display().to_string(), reason: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::key::{generate_key, KeyType};
    use crate::identity::ClusterName;

    fn provider() -> ClusterIdentity {
        ClusterIdentity { id: ClusterId::parse("provider-1").unwrap(), name: ClusterName::parse("milan").unwrap() }
    }

    #[tokio::test]
    async fn opening_and_reading_create_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let store = LocalIdentityStore::new(&data_dir);
        assert!(store.existing(&provider().id).await.unwrap().is_none());
        assert!(store.pending(&provider().id).await.unwrap().is_none());
        assert!(!data_dir.exists(), "no data dir, and so no shared token, is created by reading");
    }

    #[tokio::test]
    async fn a_pending_key_is_kept_in_a_private_file_until_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalIdentityStore::new(dir.path());
        let key = generate_key(KeyType::P256, &ClusterId::parse("consumer-1").unwrap()).unwrap();
        store.save_pending(&provider(), &key).await.unwrap();
        assert_eq!(store.pending(&provider().id).await.unwrap(), Some(key));
        assert!(!dir.path().join("token").exists(), "a server's shared token is never created here");
    }
}
