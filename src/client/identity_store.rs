//! The local adapter of [`PeerIdentityStore`]: the identities `peer` obtained, as files under
//! `<data-dir>/identities/<provider-id>/` (directory 0700, files 0600, each written atomically):
//! `identity.json` (the record: provider, API server, auth URL, and the key and certificate
//! themselves, so one rename replaces them together), `private-key.pem` and `certificate.pem`
//! (copies for tools, written before the record), and `pending.json` while a request is in
//! flight. Records written before the key and certificate moved into `identity.json` are read
//! from the two PEM files.
//!
//! Opening the store touches nothing: directories are created when the first key is saved, and
//! a server's data (its shared token, its CA) is never created here. The Kubernetes adapter
//! (Liqo identity Secrets) is in `adapter/kube/kube_identity.rs`; checking certificates and talking
//! to the provider are left to [`super::peer`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::key::key_matches_certificate;
use crate::fs::{ensure_private_dir, read_string, write_private_file};
use crate::identity::port::{PeerIdentity, PeerIdentityStore, PendingKey, StoreError, StoredPeerIdentity};
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kubeconfig_path: Option<String>,
    /// The key and certificate (PEM); absent in records of the older layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate: Option<String>,
}

/// Serialises compare-and-replace of identity records within this process.
static REPLACE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

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

    fn read(&self, provider: &ClusterId) -> Result<Option<PeerIdentity>, StoreError> {
        let dir = self.provider_dir(provider);
        let Some(file) = read_json::<IdentityFile>(&dir.join(IDENTITY_FILE))? else {
            return Ok(None);
        };
        let private_key_pem = match file.private_key {
            Some(key) => key,
            None => read_string(&dir.join(KEY_FILE))?,
        };
        let certificate_pem = match file.certificate {
            Some(cert) => cert,
            None => read_string(&dir.join(CERT_FILE))?,
        };
        // In the older layout the three files were written one by one: a crash during a
        // --force re-issue could pair a new key with an old certificate. Such a pair is no
        // identity at all.
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
            auth_url: file.auth_url,
            kubeconfig_path: file.kubeconfig_path,
        }))
    }

    /// Writes the PEM copies, then the record: the record's rename is the one atomic step.
    fn write(&self, provider: &ClusterIdentity, identity: &PeerIdentity) -> Result<PathBuf, StoreError> {
        let dir = self.ensure_provider_dir(&provider.id)?;
        write_private_file(&dir.join(KEY_FILE), identity.private_key_pem.as_bytes())?;
        write_private_file(&dir.join(CERT_FILE), identity.certificate_pem.as_bytes())?;
        let file = IdentityFile {
            provider_id: provider.id.to_string(),
            provider_name: identity.provider_name.clone().unwrap_or_else(|| provider.name.to_string()),
            api_server_url: identity.api_server_url.clone(),
            api_server_ca: identity.api_server_ca.clone(),
            namespace: identity.namespace.clone(),
            auth_url: identity.auth_url.clone(),
            kubeconfig_path: identity.kubeconfig_path.clone(),
            private_key: Some(identity.private_key_pem.clone()),
            certificate: Some(identity.certificate_pem.clone()),
        };
        let json = serde_json::to_vec_pretty(&file).expect("an identity file always serialises");
        write_private_file(&dir.join(IDENTITY_FILE), &json)?;
        Ok(dir)
    }
}

#[async_trait::async_trait]
impl PeerIdentityStore for LocalIdentityStore {
    async fn existing(&self, provider: &ClusterId) -> Result<Option<PeerIdentity>, StoreError> {
        self.read(provider)
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
        let dir = self.write(provider, identity)?;
        match std::fs::remove_file(dir.join(PENDING_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(format!("removing {}", dir.join(PENDING_FILE).display()), e)),
        }
        Ok(dir.display().to_string())
    }

    async fn replace(
        &self,
        provider: &ClusterIdentity,
        previous: &PeerIdentity,
        identity: &PeerIdentity,
    ) -> Result<String, StoreError> {
        let _guard = REPLACE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.read(&provider.id)?;
        if current.as_ref().map(|c| &c.certificate_pem) != Some(&previous.certificate_pem) {
            return Err(StoreError::AlreadyExists { what: format!("a newer identity for provider {}", provider.id) });
        }
        Ok(self.write(provider, identity)?.display().to_string())
    }

    async fn list(&self) -> Result<Vec<StoredPeerIdentity>, StoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(format!("listing {}", self.dir.display()), e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("listing identities", e))?;
            let Some(provider) = entry.file_name().to_str().and_then(|name| ClusterId::parse(name).ok()) else {
                continue;
            };
            if let Some(identity) = self.read(&provider)? {
                let location = self.describe(&provider);
                found.push(StoredPeerIdentity { provider, identity, location });
            }
        }
        found.sort_by(|a, b| a.provider.cmp(&b.provider));
        Ok(found)
    }

    async fn remove(&self, provider: &ClusterId) -> Result<Vec<String>, StoreError> {
        let dir = self.provider_dir(provider);
        let mut removed = Vec::new();
        for (file, what) in [
            (IDENTITY_FILE, "identity record"),
            (KEY_FILE, "private key"),
            (CERT_FILE, "certificate"),
            (PENDING_FILE, "pending key"),
        ] {
            let path = dir.join(file);
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(format!("{what} {}", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(format!("removing {}", path.display()), e)),
            }
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(format!("removing {}", dir.display()), e)),
        }
        Ok(removed)
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
