//! `LocalStore`: the embedded backend, keeping all state in the data dir (no cluster needed).
//!
//! Layout (directory 0700, files 0600):
//!
//! ```text
//! token                         shared token (128 hex characters)
//! cluster.json                  this cluster's ID and name
//! ca.crt, ca.key                local CA that signs peers' certificates
//! tls.crt, tls.key              generated serving certificate (when --cert-path is absent)
//! peers/<cluster-id>.json       one record per peer: name, tenant namespace, stored CSR and
//!                               certificate, origin token (see local_peers.rs)
//! peers.journal                 write-ahead journal of peer changes not yet checkpointed
//! serving.json                  what the last `serve` recorded: auth URL peers use, served pin
//! join-token.key                HS256 key signing join tokens (32 raw bytes)
//! join-tokens/<id>.json         one record per join token (never the token itself)
//! ```
//!
//! Peer records are written through the journal with group commit (local_peers.rs); every
//! other file is written atomically (temp file, fsync, rename, fsync dir). All file I/O of a
//! request runs on blocking threads, never on the async workers. Join-token records are updated
//! read-modify-write under a process-wide mutex, so concurrent requests in one server never take
//! more uses than allowed. Two *processes* sharing a data dir are not coordinated beyond that:
//! run one server per data dir.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::fs::{ensure_private_dir, read_string, write_private_file};

use crate::adapter::local::local_peers::{blocking, read_json, Next, PeerFile, PeerFiles, Recovery};
use crate::adapter::local::LocalCa;
use crate::identity::join_token::{self, ConsumeOutcome, JoinTokenKey, JoinTokenRecord};
use crate::identity::port::{
    ApiServerInfo, ClusterState, CredentialStore, JoinTokenStore, PeerRecord, PreviousCertificate, ServingRecord,
    SharedTokenSource, StoreError, StoredIdentity, TenantAdmin,
};
use crate::identity::{
    BearerToken, ClusterId, ClusterIdentity, ClusterName, OriginTokenDigest, SharedToken, TenantNamespace,
};

/// Serialises read-modify-write of join-token files within this process.
static JOIN_TOKEN_LOCK: Mutex<()> = Mutex::new(());
const JOIN_TOKEN_KEY_FILE: &str = "join-token.key";
const JOIN_TOKEN_DIR: &str = "join-tokens";
/// What the last `serve` recorded about itself (auth URL, pin), for `token create` and `info`.
const SERVING_RECORD_FILE: &str = "serving.json";

/// The data-dir backend.
pub struct LocalStore {
    dir: PathBuf,
    token: Option<SharedToken>,
    /// Opened by `serve` or `token create`, which may create what they need; other commands
    /// open an existing data dir and never write this cluster's own state.
    writable: bool,
    api_server_url: String,
    advertise_ca: bool,
    ca_pem: RwLock<Option<String>>,
    peers: Arc<PeerFiles>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterFile {
    cluster_id: String,
    cluster_name: String,
}

impl LocalStore {
    /// Opens the data dir for `serve` and `token create`, creating it and the shared token
    /// when needed.
    pub fn open(dir: &Path, api_server_url: String, advertise_ca: bool) -> Result<Self, StoreError> {
        ensure_private_dir(dir)?;
        let token = load_or_create_token(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            token: Some(token),
            writable: true,
            api_server_url,
            advertise_ca,
            ca_pem: RwLock::new(None),
            peers: Arc::new(PeerFiles::new(dir, false)),
        })
    }

    /// Opens the data dir for `serve`: as [`LocalStore::open`], then recovers from a crash
    /// (temp files, the peer journal) and migrates peers stored in the layout of earlier
    /// versions. Only the serving process checkpoints the peer journal.
    pub fn open_for_serving(
        dir: &Path,
        api_server_url: String,
        advertise_ca: bool,
    ) -> Result<(Self, Recovery), StoreError> {
        let mut store = Self::open(dir, api_server_url, advertise_ca)?;
        store.peers = Arc::new(PeerFiles::new(dir, true));
        let recovery = store.peers.recover()?;
        Ok((store, recovery))
    }

    /// Opens an existing data dir without creating anything: a missing dir is
    /// `StoreError::Missing`, a missing token file just means no shared token.
    pub fn open_existing(dir: &Path) -> Result<Self, StoreError> {
        if !dir.is_dir() {
            return Err(StoreError::Missing {
                what: format!("data dir {}", dir.display()),
                hint: "create it with `liqo-auth init --backend local` (or start `liqo-auth serve --backend local`) with this --data-dir once, or pass the right --data-dir"
                    .into(),
            });
        }
        let path = dir.join("token");
        let token = match crate::fs::read_string_opt(&path)? {
            Some(text) => Some(SharedToken::from_stored(&text).ok_or_else(|| StoreError::Corrupt {
                what: path.display().to_string(),
                reason: "the token file is empty; delete it to generate a new token".into(),
            })?),
            None => None,
        };
        Ok(Self {
            dir: dir.to_owned(),
            token,
            writable: false,
            api_server_url: String::new(),
            advertise_ca: false,
            ca_pem: RwLock::new(None),
            peers: Arc::new(PeerFiles::new(dir, false)),
        })
    }

    /// Loads the local CA, generating and persisting it on first use.
    pub fn load_or_create_ca(&self, cluster: &ClusterIdentity) -> Result<LocalCa, StoreError> {
        let cert_path = self.dir.join("ca.crt");
        let key_path = self.dir.join("ca.key");
        let ca = if cert_path.exists() {
            let cert = read_string(&cert_path)?;
            let key = read_string(&key_path)?;
            LocalCa::from_pem(&cert, &key)
                .map_err(|e| StoreError::Corrupt { what: cert_path.display().to_string(), reason: e.to_string() })?
        } else {
            let ca = LocalCa::generate(&format!("liqo-auth CA {}", cluster.name)).map_err(|e| StoreError::Backend {
                operation: "generating the local CA".into(),
                source: Box::new(e),
            })?;
            write_private_file(&key_path, ca.key_pem().as_bytes())?;
            write_private_file(&cert_path, ca.cert_pem().as_bytes())?;
            ca
        };
        *self.ca_pem.write().unwrap_or_else(|p| p.into_inner()) = Some(ca.cert_pem().to_owned());
        Ok(ca)
    }

    /// This cluster's identity: the flags when given (and remembered), else the stored one,
    /// else a new random UUID and a name derived from it.
    pub fn cluster_identity(
        &self,
        id_flag: Option<&str>,
        name_flag: Option<&str>,
    ) -> Result<ClusterIdentity, StoreError> {
        let path = self.dir.join("cluster.json");
        let stored: Option<ClusterFile> = read_json(&path)?;
        let id = match (id_flag, &stored) {
            (Some(id), _) => id.to_owned(),
            (None, Some(file)) => file.cluster_id.clone(),
            (None, None) => uuid::Uuid::new_v4().to_string(),
        };
        let name = match (name_flag, &stored) {
            (Some(name), _) => name.to_owned(),
            (None, Some(file)) if file.cluster_id == id => file.cluster_name.clone(),
            _ => format!("cluster-{}", &id.chars().filter(char::is_ascii_alphanumeric).take(8).collect::<String>()),
        };
        let corrupt = |e: crate::identity::ClusterValueError| StoreError::Corrupt {
            what: "cluster identity".into(),
            reason: e.to_string(),
        };
        let identity = ClusterIdentity {
            id: ClusterId::parse(&id).map_err(corrupt)?,
            name: ClusterName::parse(&name).map_err(corrupt)?,
        };
        if stored.as_ref().is_none_or(|f| f.cluster_id != id || f.cluster_name != name) {
            if !self.writable {
                // Commands other than `serve` never invent this cluster's identity.
                if stored.is_none() && id_flag.is_none() {
                    return Err(StoreError::Missing {
                        what: format!("cluster identity in {}", path.display()),
                        hint: "run `liqo-auth init --backend local` (or `liqo-auth serve --backend local`) once, or pass --cluster-id".into(),
                    });
                }
                return Ok(identity);
            }
            write_json(&path, &ClusterFile { cluster_id: id, cluster_name: name })?;
        }
        Ok(identity)
    }

    /// Removes everything stored for peer `cluster` (tenant record, identity, origin token) and
    /// returns what was removed, for `tenant remove`. Without a cluster there is no namespace or
    /// RBAC to remove: the stored state is the whole grant.
    /// With `dry_run` nothing is removed and the answer lists what would be.
    pub async fn remove_peer(&self, cluster: &ClusterId, dry_run: bool) -> Result<Vec<String>, StoreError> {
        let removed = if dry_run {
            self.peers.read(cluster.as_str()).await?
        } else {
            self.peers
                .update(cluster.as_str(), Box::new(|current| Ok(current.map_or(Next::Keep, |_| Next::Remove))))
                .await?
        };
        let path = self.dir.join("peers").join(format!("{cluster}.json"));
        let Some(record) = removed else { return Ok(Vec::new()) };
        let mut what = Vec::new();
        if record.certificate.is_some() {
            what.push(format!("stored certificate of {cluster}"));
        }
        if record.origin_token.is_some() {
            what.push(format!("origin token of {cluster}"));
        }
        what.push(format!("tenant record {}", path.display()));
        Ok(what)
    }
}

#[async_trait::async_trait]
impl CredentialStore for LocalStore {
    async fn ensure_tenant_namespace(&self, cluster: &ClusterIdentity) -> Result<TenantNamespace, StoreError> {
        // Keyed by cluster ID only: a later request with another name reuses the first namespace,
        // as in Liqo. Nothing is written yet: the record is written once, with the identity.
        Ok(match self.peers.read(cluster.id.as_str()).await? {
            Some(record) => TenantNamespace::from_stored(record.namespace),
            None => cluster.tenant_namespace(),
        })
    }

    async fn tenant_namespace(&self, cluster: &ClusterId) -> Result<Option<TenantNamespace>, StoreError> {
        Ok(self.peers.read(cluster.as_str()).await?.map(|record| TenantNamespace::from_stored(record.namespace)))
    }

    async fn stored_identity(
        &self,
        _: &TenantNamespace,
        cluster: &ClusterId,
    ) -> Result<Option<StoredIdentity>, StoreError> {
        Ok(self.peers.read(cluster.as_str()).await?.and_then(stored))
    }

    async fn create_identity(
        &self,
        namespace: &TenantNamespace,
        cluster: &ClusterId,
        identity: &StoredIdentity,
    ) -> Result<(), StoreError> {
        let (id, namespace, identity) = (cluster.to_string(), namespace.to_string(), identity.clone());
        let change = Box::new(move |current: Option<&PeerFile>| {
            if current.is_some_and(|r| r.certificate.is_some()) {
                return Err(StoreError::AlreadyExists { what: format!("the identity of cluster {id}") });
            }
            let mut record = current.cloned().unwrap_or_else(|| PeerFile {
                cluster_name: cluster_name_of(&namespace).unwrap_or(&id).to_owned(),
                cluster_id: id,
                namespace,
                csr: None,
                certificate: None,
                origin_token_sha256: None,
                previous_certificate: None,
                previous_replaced_at: None,
                origin_token: None,
            });
            set_identity(&mut record, identity);
            Ok(Next::Put(Box::new(record)))
        });
        self.peers.update(cluster.as_str(), change).await.map(drop)
    }

    async fn replace_identity(
        &self,
        _: &TenantNamespace,
        cluster: &ClusterId,
        identity: &StoredIdentity,
        previous: &StoredIdentity,
    ) -> Result<(), StoreError> {
        let (id, identity, previous) = (cluster.to_string(), identity.clone(), previous.clone());
        let change = Box::new(move |current: Option<&PeerFile>| match current {
            Some(record) if stored(record.clone()).as_ref() == Some(&previous) => {
                let mut record = record.clone();
                set_identity(&mut record, identity);
                Ok(Next::Put(Box::new(record)))
            }
            _ => Err(StoreError::AlreadyExists { what: format!("a newer identity of cluster {id}") }),
        });
        self.peers.update(cluster.as_str(), change).await.map(drop)
    }

    async fn grant_peering_permissions(&self, _: &TenantNamespace, _: &ClusterId) -> Result<(), StoreError> {
        // Without a cluster there is no RBAC to bind: the certificate is the whole grant.
        Ok(())
    }

    async fn save_origin_token(&self, cluster: &ClusterId, token: &BearerToken) -> Result<(), StoreError> {
        let (id, token) = (cluster.to_string(), token.expose().to_owned());
        let change = Box::new(move |current: Option<&PeerFile>| match current {
            Some(record) if record.origin_token.as_deref() == Some(token.as_str()) => Ok(Next::Keep),
            Some(record) => {
                let mut record = record.clone();
                record.origin_token = Some(token);
                Ok(Next::Put(Box::new(record)))
            }
            None => Err(StoreError::Missing {
                what: format!("peer record of cluster {id}"),
                hint: "it was removed while the request ran; send the request again".into(),
            }),
        });
        self.peers.update(cluster.as_str(), change).await.map(drop)
    }

    async fn api_server(&self) -> Result<ApiServerInfo, StoreError> {
        let ca_pem =
            if self.advertise_ca { self.ca_pem.read().unwrap_or_else(|p| p.into_inner()).clone() } else { None };
        Ok(ApiServerInfo { url: self.api_server_url.clone(), ca_pem })
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        blocking(move || {
            fs::metadata(&dir).map(|_| ()).map_err(|e| StoreError::Unavailable {
                operation: format!("reading {}", dir.display()),
                source: Box::new(e),
            })
        })
        .await
    }
}

#[async_trait::async_trait]
impl ClusterState for LocalStore {
    async fn cluster_identity(
        &self,
        id_flag: Option<&str>,
        name_flag: Option<&str>,
    ) -> Result<ClusterIdentity, StoreError> {
        LocalStore::cluster_identity(self, id_flag, name_flag)
    }

    async fn cluster_id(&self, id_flag: Option<&str>) -> Result<ClusterId, StoreError> {
        Ok(LocalStore::cluster_identity(self, id_flag, None)?.id)
    }

    async fn shared_token(&self) -> Result<Option<SharedToken>, StoreError> {
        Ok(self.token.clone())
    }

    async fn serving_certificate(&self) -> Result<Option<String>, StoreError> {
        Ok(crate::fs::read_string_opt(&self.dir.join("tls.crt"))?)
    }

    async fn serving_record(&self) -> Result<Option<ServingRecord>, StoreError> {
        let Some(text) = crate::fs::read_string_opt(&self.dir.join(SERVING_RECORD_FILE))? else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|e| StoreError::Corrupt {
            what: self.dir.join(SERVING_RECORD_FILE).display().to_string(),
            reason: e.to_string(),
        })
    }

    async fn record_serving(&self, record: &ServingRecord) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(record).map_err(|e| StoreError::io("encoding serving.json", e.into()))?;
        Ok(write_private_file(&self.dir.join(SERVING_RECORD_FILE), &json)?)
    }
}

#[async_trait::async_trait]
impl TenantAdmin for LocalStore {
    async fn tenants(&self) -> Result<Vec<PeerRecord>, StoreError> {
        let peers = self.peers.clone();
        blocking(move || Ok(peers.list()?.into_iter().map(peer_record).collect())).await
    }

    /// Without a cluster there is no namespace or RBAC to remove: the stored state is the
    /// whole grant, so `delete_namespace` changes nothing here.
    async fn remove_tenant(
        &self,
        cluster: &ClusterId,
        _delete_namespace: bool,
        dry_run: bool,
    ) -> Result<Vec<String>, StoreError> {
        self.remove_peer(cluster, dry_run).await
    }
}

impl SharedTokenSource for LocalStore {
    fn shared_token(&self) -> Option<SharedToken> {
        self.token.clone()
    }
}

#[async_trait::async_trait]
impl JoinTokenStore for LocalStore {
    async fn key(&self) -> Result<Option<JoinTokenKey>, StoreError> {
        let dir = self.dir.clone();
        blocking(move || read_join_key(&dir)).await
    }

    async fn ensure_key(&self) -> Result<JoinTokenKey, StoreError> {
        let dir = self.dir.clone();
        blocking(move || {
            let _guard = JOIN_TOKEN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(key) = read_join_key(&dir)? {
                return Ok(key);
            }
            let key = JoinTokenKey::generate();
            write_join_key(&dir, &key)?;
            Ok(key)
        })
        .await
    }

    async fn rotate_key(&self) -> Result<JoinTokenKey, StoreError> {
        let dir = self.dir.clone();
        blocking(move || {
            let _guard = JOIN_TOKEN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            let key = JoinTokenKey::generate();
            write_join_key(&dir, &key)?;
            Ok(key)
        })
        .await
    }

    async fn create_record(&self, record: &JoinTokenRecord) -> Result<(), StoreError> {
        let (dir, record) = (self.dir.clone(), record.clone());
        blocking(move || {
            let path = join_token_path(&dir, &record.id)?;
            ensure_private_dir(&dir.join(JOIN_TOKEN_DIR))?;
            let _guard = JOIN_TOKEN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            if path.exists() {
                return Err(StoreError::AlreadyExists { what: path.display().to_string() });
            }
            write_json(&path, &record)
        })
        .await
    }

    async fn record(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        if !join_token::valid_id(id) {
            return Ok(None);
        }
        let (dir, id) = (self.dir.clone(), id.to_owned());
        blocking(move || read_json(&join_token_path(&dir, &id)?)).await
    }

    async fn records(&self) -> Result<Vec<JoinTokenRecord>, StoreError> {
        let dir = self.dir.join(JOIN_TOKEN_DIR);
        blocking(move || {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(StoreError::io(format!("listing {}", dir.display()), e)),
            };
            let mut records = Vec::new();
            for entry in entries {
                let path = entry.map_err(|e| StoreError::io("listing join tokens", e))?.path();
                // Temp files of interrupted writes start with '.' and have another extension.
                if path.extension().is_some_and(|ext| ext == "json") {
                    records.extend(read_json::<JoinTokenRecord>(&path)?);
                }
            }
            records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(records)
        })
        .await
    }

    async fn revoke(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        if !join_token::valid_id(id) {
            return Ok(None);
        }
        let (dir, id) = (self.dir.clone(), id.to_owned());
        blocking(move || {
            update_join_record(&dir, &id, |record| match record {
                Some(record) => (record.revoke(), Some(record.clone())),
                None => (false, None),
            })
        })
        .await
    }

    async fn consume(&self, id: &str, fingerprint: &str) -> Result<ConsumeOutcome, StoreError> {
        let (dir, id, fingerprint) = (self.dir.clone(), id.to_owned(), fingerprint.to_owned());
        blocking(move || {
            update_join_record(&dir, &id, |record| match record {
                Some(record) => {
                    let outcome = record.consume(&fingerprint);
                    (outcome == ConsumeOutcome::Consumed, outcome)
                }
                None => (false, ConsumeOutcome::Unknown),
            })
        })
        .await
    }
}

fn join_token_path(dir: &Path, id: &str) -> Result<PathBuf, StoreError> {
    // Only IDs of the minted shape reach the file system: no '/', no '..'.
    if !join_token::valid_id(id) {
        return Err(StoreError::Corrupt {
            what: format!("join token ID {id:?}"),
            reason: "not 32 hex characters".into(),
        });
    }
    Ok(dir.join(JOIN_TOKEN_DIR).join(format!("{id}.json")))
}

fn read_join_key(dir: &Path) -> Result<Option<JoinTokenKey>, StoreError> {
    let path = dir.join(JOIN_TOKEN_KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => JoinTokenKey::from_bytes(&bytes).map(Some).ok_or_else(|| StoreError::Corrupt {
            what: path.display().to_string(),
            reason: "not a 32-byte key; run `liqo-auth token rotate-key`".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
    }
}

fn write_join_key(dir: &Path, key: &JoinTokenKey) -> Result<(), StoreError> {
    Ok(write_private_file(&dir.join(JOIN_TOKEN_KEY_FILE), key.expose())?)
}

/// Read-modify-write of one join-token record under the process-wide lock.
fn update_join_record<T>(
    dir: &Path,
    id: &str,
    change: impl FnOnce(Option<&mut JoinTokenRecord>) -> (bool, T),
) -> Result<T, StoreError> {
    let path = join_token_path(dir, id)?;
    let _guard = JOIN_TOKEN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut record = read_json::<JoinTokenRecord>(&path)?;
    let (write, answer) = change(record.as_mut());
    if let (true, Some(record)) = (write, record) {
        write_json(&path, &record)?;
    }
    Ok(answer)
}

/// The identity in a record, when it has one.
fn stored(record: PeerFile) -> Option<StoredIdentity> {
    let previous = match (record.previous_certificate, record.previous_replaced_at) {
        (Some(certificate_pem), Some(replaced_at)) => Some(PreviousCertificate { certificate_pem, replaced_at }),
        _ => None,
    };
    Some(StoredIdentity {
        csr_pem: record.csr?,
        certificate_pem: record.certificate?,
        // An unreadable digest binds no token: recovery then answers 409, as without one.
        origin: record.origin_token_sha256.as_deref().and_then(OriginTokenDigest::from_hex),
        previous,
    })
}

/// Puts `identity` (with its origin-token digest and previous certificate) into `record`.
fn set_identity(record: &mut PeerFile, identity: StoredIdentity) {
    record.csr = Some(identity.csr_pem);
    record.certificate = Some(identity.certificate_pem);
    record.origin_token_sha256 = identity.origin.map(|digest| digest.to_hex());
    record.previous_certificate = identity.previous.as_ref().map(|p| p.certificate_pem.clone());
    record.previous_replaced_at = identity.previous.map(|p| p.replaced_at);
}

fn peer_record(record: PeerFile) -> PeerRecord {
    PeerRecord {
        cluster_id: record.cluster_id.clone(),
        cluster_name: Some(record.cluster_name.clone()),
        namespace: record.namespace.clone(),
        identity: stored(record),
    }
}

/// The cluster name in a tenant namespace `liqo-tenant-<name>-<6 hex>`.
fn cluster_name_of(namespace: &str) -> Option<&str> {
    let rest = namespace.strip_prefix("liqo-tenant-")?;
    rest.get(..rest.len().checked_sub(7)?).filter(|name| !name.is_empty())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).expect("plain structs always serialise");
    Ok(write_private_file(path, &bytes)?)
}

fn load_or_create_token(dir: &Path) -> Result<SharedToken, StoreError> {
    let path = dir.join("token");
    match fs::read_to_string(&path) {
        Ok(text) => SharedToken::from_stored(&text).ok_or_else(|| StoreError::Corrupt {
            what: path.display().to_string(),
            reason: "the token file is empty; delete it to generate a new token".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let token = SharedToken::generate();
            write_private_file(&path, token.expose().as_bytes())?;
            Ok(token)
        }
        Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn open(dir: &Path) -> LocalStore {
        LocalStore::open(dir, "https://127.0.0.1:6443".into(), true).unwrap()
    }

    #[test]
    fn token_is_created_once_and_stable_across_restarts() {
        let tmp = tempfile::tempdir().unwrap();
        let first = SharedTokenSource::shared_token(&open(tmp.path())).unwrap();
        let second = SharedTokenSource::shared_token(&open(tmp.path())).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.expose().len(), 128);
        let mode = fs::metadata(tmp.path().join("token")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(tmp.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
    }

    #[test]
    fn cluster_identity_is_generated_once_and_flags_win() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let generated = store.cluster_identity(None, None).unwrap();
        assert!(uuid::Uuid::parse_str(generated.id.as_str()).is_ok());
        assert_eq!(open(tmp.path()).cluster_identity(None, None).unwrap(), generated);
        let flagged = store.cluster_identity(Some("my-id"), Some("rome")).unwrap();
        assert_eq!((flagged.id.as_str(), flagged.name.as_str()), ("my-id", "rome"));
    }

    #[test]
    fn ca_is_generated_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let cluster = store.cluster_identity(None, None).unwrap();
        let first = store.load_or_create_ca(&cluster).unwrap();
        let second = open(tmp.path()).load_or_create_ca(&cluster).unwrap();
        assert_eq!(first.cert_pem(), second.cert_pem());
    }

    #[test]
    fn an_interrupted_write_leaves_no_partial_record() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("record");
        write_private_file(&path, b"one").unwrap();
        // A crash between create and rename leaves only a temp file, which readers ignore.
        fs::write(tmp.path().join(".record.tmp-dead"), b"half").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_private_file(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
    }

    #[tokio::test]
    async fn join_token_records_are_private_files_and_uses_are_counted_once_per_request() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        assert!(store.key().await.unwrap().is_none());
        let key = store.ensure_key().await.unwrap();
        assert_eq!(store.ensure_key().await.unwrap(), key, "created once");
        let mode = fs::metadata(tmp.path().join(JOIN_TOKEN_KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let spec = join_token::JoinTokenSpec { ttl: std::time::Duration::from_secs(60), cluster: None, max_uses: 2 };
        let minted = join_token::mint(&key, &ClusterId::parse("me").unwrap(), &spec, 1000);
        store.create_record(&minted.record).await.unwrap();
        let id = minted.record.id.clone();
        assert_eq!(store.consume(&id, "a").await.unwrap(), ConsumeOutcome::Consumed);
        assert_eq!(store.consume(&id, "a").await.unwrap(), ConsumeOutcome::AlreadyConsumed);
        assert_eq!(store.consume(&id, "b").await.unwrap(), ConsumeOutcome::Consumed);
        assert_eq!(store.consume(&id, "c").await.unwrap(), ConsumeOutcome::Exhausted);
        assert_eq!(open(tmp.path()).record(&id).await.unwrap().unwrap().uses, 2, "persisted");
        assert!(store.revoke(&id).await.unwrap().unwrap().revoked);
        assert_eq!(store.consume(&id, "d").await.unwrap(), ConsumeOutcome::Revoked);
        assert_eq!(store.records().await.unwrap().len(), 1);
        assert!(JoinTokenStore::record(&store, "../../token").await.unwrap().is_none());
        assert_ne!(store.rotate_key().await.unwrap(), key);
    }

    /// A store in a temp dir holding one peer `c1`'s identity.
    async fn one_peer() -> (tempfile::TempDir, LocalStore, ClusterIdentity, StoredIdentity) {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let cluster = ClusterIdentity::parse_remote("c1", "one").unwrap();
        let ns = store.ensure_tenant_namespace(&cluster).await.unwrap();
        let identity = StoredIdentity::new("csr".into(), "cert".into());
        store.create_identity(&ns, &cluster.id, &identity).await.unwrap();
        (tmp, store, cluster, identity)
    }

    #[tokio::test]
    async fn removing_a_peer_deletes_its_files_and_allows_a_fresh_peering() {
        let (_tmp, store, cluster, identity) = one_peer().await;
        store.save_origin_token(&cluster.id, &BearerToken::new("t".into())).await.unwrap();
        assert_eq!(store.remove_peer(&cluster.id, true).await.unwrap().len(), 3, "a dry run lists the three parts");
        assert_eq!(store.tenants().await.unwrap().len(), 1, "a dry run removes nothing");
        assert_eq!(store.remove_peer(&cluster.id, false).await.unwrap().len(), 3);
        assert!(store.tenants().await.unwrap().is_empty());
        assert!(store.remove_peer(&cluster.id, false).await.unwrap().is_empty(), "idempotent");
        let ns = store.ensure_tenant_namespace(&cluster).await.unwrap();
        store.create_identity(&ns, &cluster.id, &identity).await.unwrap();
    }

    #[tokio::test]
    async fn create_identity_refuses_to_overwrite() {
        let (_tmp, store, cluster, identity) = one_peer().await;
        let ns = store.ensure_tenant_namespace(&cluster).await.unwrap();
        assert!(matches!(
            store.create_identity(&ns, &cluster.id, &identity).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        assert_eq!(store.stored_identity(&ns, &cluster.id).await.unwrap(), Some(identity));
        assert_eq!(store.tenants().await.unwrap().len(), 1);
    }
}
