//! Where `peer` keeps the identities this cluster obtained from providers, and the key it is
//! about to use (so a retry after a crash re-sends the same CSR).
//!
//! Two backends, chosen by `--backend`:
//!
//! - **Kubernetes**: a Secret in the local tenant namespace for the provider, exactly as Liqo's
//!   controller-manager stores it (spec 4.6), so a Liqo control plane can use it as is. The
//!   key of an unfinished request waits in Secret `liqo-auth-pending-identity` there, deleted
//!   once the identity is stored.
//! - **Local**: files under `<data-dir>/identities/<provider-id>/` (directory 0700, files 0600,
//!   each written atomically): `private-key.pem`, `certificate.pem`, `identity.json` (written
//!   last, so it marks a complete identity), and `pending.json` while a request is in flight.
//!
//! Checking certificates and talking to the provider are left to [`super::peer`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::ByteString;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use crate::adapter::kube::{call, call_opt, LABEL_CLUSTER_ID, LABEL_TENANT_NAMESPACE};
use crate::fs::{ensure_private_dir, read_string, write_private_file};
use crate::identity::port::StoreError;
use crate::identity::{ClusterId, ClusterIdentity, TenantNamespace};
use crate::pki::CertificateSummary;

/// Label marking a consumer-side identity Secret (spec 4.6).
pub const LABEL_LOCAL_IDENTITY: &str = "discovery.liqo.io/local-identity";
/// Label set once the Secret holds a certificate (spec 4.6).
pub const LABEL_CERTIFICATE_AVAILABLE: &str = "discovery.liqo.io/certificate-available";
/// Annotation with the certificate's notAfter in Unix seconds (spec 4.6).
pub const ANNOTATION_EXPIRE_TIME: &str = "discovery.liqo.io/certificate-expire-time";
/// `generateName` of identity Secrets.
pub const IDENTITY_SECRET_PREFIX: &str = "liqo-identity-";

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

/// The identity store of `peer`.
pub enum IdentityStore {
    /// Files in the data dir.
    Local(LocalIdentityStore),
    /// Secrets in the local tenant namespaces.
    Kubernetes(KubeIdentityStore),
}

/// `<data-dir>/identities`.
pub struct LocalIdentityStore {
    dir: PathBuf,
}

/// Identity Secrets through a Kubernetes client.
pub struct KubeIdentityStore {
    client: Client,
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
/// Secret holding the key and CSR of an unfinished request, in the provider's local tenant namespace.
pub const PENDING_SECRET: &str = "liqo-auth-pending-identity";
const PENDING_KEY: &str = "pending.json";

impl IdentityStore {
    /// The newest complete identity stored for `provider`, if any (expired ones included: the
    /// caller decides).
    pub async fn existing(&self, provider: &ClusterId) -> Result<Option<PeerIdentity>, StoreError> {
        match self {
            IdentityStore::Local(store) => store.existing(provider),
            IdentityStore::Kubernetes(store) => store.existing(provider).await,
        }
    }

    /// The key left by an earlier, unfinished attempt towards `provider`.
    pub async fn pending(&self, provider: &ClusterId) -> Result<Option<PendingKey>, StoreError> {
        match self {
            IdentityStore::Local(store) => store.pending(provider),
            IdentityStore::Kubernetes(store) => store.pending(provider).await,
        }
    }

    /// Persists the key of this attempt before it is sent, so a run that dies after sending is
    /// completed by the next run with the same key (the provider answers it idempotently).
    pub async fn save_pending(&self, provider: &ClusterIdentity, key: &PendingKey) -> Result<(), StoreError> {
        match self {
            IdentityStore::Local(store) => store.save_pending(&provider.id, key),
            IdentityStore::Kubernetes(store) => store.save_pending(provider, key).await,
        }
    }

    /// Stores a new identity; returns a description of where it went.
    pub async fn store(&self, provider: &ClusterIdentity, identity: &PeerIdentity) -> Result<String, StoreError> {
        match self {
            IdentityStore::Local(store) => store.store(provider, identity),
            IdentityStore::Kubernetes(store) => store.store(provider, identity).await,
        }
    }

    /// Where the identity for `provider` is (or would be) stored, for messages.
    pub fn describe(&self, provider: &ClusterId) -> String {
        match self {
            IdentityStore::Local(store) => store.provider_dir(provider).display().to_string(),
            IdentityStore::Kubernetes(_) => {
                format!("a {IDENTITY_SECRET_PREFIX}* Secret in the local tenant namespace of {provider}")
            }
        }
    }
}

impl LocalIdentityStore {
    /// The store under `<data_dir>/identities`.
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.join("identities") }
    }

    fn provider_dir(&self, provider: &ClusterId) -> PathBuf {
        // ClusterId is a validated DNS-1123 label: safe as a path component.
        self.dir.join(provider.as_str())
    }

    fn existing(&self, provider: &ClusterId) -> Result<Option<PeerIdentity>, StoreError> {
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

    fn pending(&self, provider: &ClusterId) -> Result<Option<PendingKey>, StoreError> {
        read_json(&self.provider_dir(provider).join(PENDING_FILE))
    }

    fn save_pending(&self, provider: &ClusterId, key: &PendingKey) -> Result<(), StoreError> {
        let dir = self.provider_dir(provider);
        ensure_private_dir(&self.dir)?;
        ensure_private_dir(&dir)?;
        Ok(write_private_file(&dir.join(PENDING_FILE), &serde_json::to_vec_pretty(key).expect("serialises"))?)
    }

    fn store(&self, provider: &ClusterIdentity, identity: &PeerIdentity) -> Result<String, StoreError> {
        let dir = self.provider_dir(&provider.id);
        ensure_private_dir(&self.dir)?;
        ensure_private_dir(&dir)?;
        write_private_file(&dir.join(KEY_FILE), identity.private_key_pem.as_bytes())?;
        write_private_file(&dir.join(CERT_FILE), identity.certificate_pem.as_bytes())?;
        let file = IdentityFile {
            provider_id: provider.id.to_string(),
            provider_name: provider.name.to_string(),
            api_server_url: identity.api_server_url.clone(),
            api_server_ca: identity.api_server_ca.clone(),
            namespace: identity.namespace.clone(),
        };
        write_private_file(&dir.join(IDENTITY_FILE), &serde_json::to_vec_pretty(&file).expect("serialises"))?;
        match std::fs::remove_file(dir.join(PENDING_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(format!("removing {}", dir.join(PENDING_FILE).display()), e)),
        }
        Ok(dir.display().to_string())
    }
}

impl KubeIdentityStore {
    /// A store over `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The local tenant namespace for `provider`, found by label as the server finds its own.
    async fn tenant_namespace(&self, provider: &ClusterId) -> Result<Option<String>, StoreError> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let selector = format!("{LABEL_CLUSTER_ID}={provider},{LABEL_TENANT_NAMESPACE}");
        let found =
            call("listing tenant namespaces", namespaces.list(&ListParams::default().labels(&selector))).await?;
        match found.items.as_slice() {
            [] => Ok(None),
            [one] => Ok(one.metadata.name.clone()),
            many => Err(StoreError::Corrupt {
                what: format!("tenant namespaces of cluster {provider}"),
                reason: format!("{} namespaces carry label {LABEL_CLUSTER_ID}={provider}", many.len()),
            }),
        }
    }

    async fn ensure_tenant_namespace(&self, provider: &ClusterIdentity) -> Result<String, StoreError> {
        if let Some(existing) = self.tenant_namespace(&provider.id).await? {
            return Ok(existing);
        }
        let name = TenantNamespace::for_cluster(&provider.id, &provider.name).to_string();
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (LABEL_CLUSTER_ID.to_owned(), provider.id.to_string()),
                    (LABEL_TENANT_NAMESPACE.to_owned(), "true".to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match call(&format!("creating namespace {name}"), namespaces.create(&PostParams::default(), &namespace)).await {
            Ok(_) => {
                tracing::info!(namespace = %name, cluster.id = %provider.id, "created tenant namespace {name}");
                Ok(name)
            }
            // Created concurrently (or by Liqo) between the lookup and now.
            Err(failure) if failure.is_already_exists() => Ok(name),
            Err(failure) => Err(failure.into()),
        }
    }

    async fn pending(&self, provider: &ClusterId) -> Result<Option<PendingKey>, StoreError> {
        let Some(namespace) = self.tenant_namespace(provider).await? else {
            return Ok(None);
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let secret = call_opt("reading the pending key Secret", secrets.get(PENDING_SECRET)).await?;
        let json = secret.and_then(|s| s.data).and_then(|mut d| d.remove(PENDING_KEY));
        Ok(json.and_then(|bytes| serde_json::from_slice(&bytes.0).ok()))
    }

    async fn save_pending(&self, provider: &ClusterIdentity, key: &PendingKey) -> Result<(), StoreError> {
        let namespace = self.ensure_tenant_namespace(provider).await?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let data = BTreeMap::from([(
            PENDING_KEY.to_owned(),
            ByteString(serde_json::to_vec(key).expect("a pending key serialises")),
        )]);
        let existing = call_opt("reading the pending key Secret", secrets.get(PENDING_SECRET)).await?;
        let result = match existing {
            Some(mut secret) => {
                secret.data = Some(data);
                call(
                    "replacing the pending key Secret",
                    secrets.replace(PENDING_SECRET, &PostParams::default(), &secret),
                )
                .await
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta { name: Some(PENDING_SECRET.to_owned()), ..ObjectMeta::default() },
                    data: Some(data),
                    ..Secret::default()
                };
                call("creating the pending key Secret", secrets.create(&PostParams::default(), &secret)).await
            }
        };
        result.map(|_| ()).map_err(StoreError::from)
    }

    async fn existing(&self, provider: &ClusterId) -> Result<Option<PeerIdentity>, StoreError> {
        let Some(namespace) = self.tenant_namespace(provider).await? else {
            return Ok(None);
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let selector = format!("{LABEL_LOCAL_IDENTITY}=true,{LABEL_CLUSTER_ID}={provider}");
        let list = call_opt("listing identity Secrets", secrets.list(&ListParams::default().labels(&selector)))
            .await?
            .map(|list| list.items)
            .unwrap_or_default();
        // Liqo uses the Secret with the largest expire-time annotation (spec 4.6); so do we,
        // but from the certificate itself, which cannot disagree with the annotation.
        let best = list
            .iter()
            .filter_map(identity_of_secret)
            .filter_map(|identity| {
                let not_after = CertificateSummary::from_pem(identity.certificate_pem.as_bytes())?.not_after;
                Some((not_after, identity))
            })
            .max_by_key(|(not_after, _)| *not_after)
            .map(|(_, identity)| identity);
        Ok(best)
    }

    async fn store(&self, provider: &ClusterIdentity, identity: &PeerIdentity) -> Result<String, StoreError> {
        let namespace = self.ensure_tenant_namespace(provider).await?;
        let not_after =
            CertificateSummary::from_pem(identity.certificate_pem.as_bytes()).map(|s| s.not_after).ok_or_else(
                || StoreError::Corrupt { what: "the issued certificate".into(), reason: "unparsable".into() },
            )?;
        let bytes = |text: &str| ByteString(text.as_bytes().to_vec());
        let mut data = BTreeMap::from([
            ("private-key".to_owned(), bytes(&identity.private_key_pem)),
            ("certificate".to_owned(), bytes(&identity.certificate_pem)),
            ("apiServerUrl".to_owned(), bytes(&identity.api_server_url)),
            ("namespace".to_owned(), bytes(&identity.namespace)),
        ]);
        if let Some(ca) = &identity.api_server_ca {
            data.insert("apiServerCa".to_owned(), bytes(ca));
        }
        let secret = Secret {
            metadata: ObjectMeta {
                generate_name: Some(IDENTITY_SECRET_PREFIX.to_owned()),
                namespace: Some(namespace.clone()),
                labels: Some(BTreeMap::from([
                    (LABEL_LOCAL_IDENTITY.to_owned(), "true".to_owned()),
                    (LABEL_CLUSTER_ID.to_owned(), provider.id.to_string()),
                    (LABEL_CERTIFICATE_AVAILABLE.to_owned(), "true".to_owned()),
                ])),
                annotations: Some(BTreeMap::from([(ANNOTATION_EXPIRE_TIME.to_owned(), not_after.to_string())])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..Secret::default()
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let created = call("creating the identity Secret", secrets.create(&PostParams::default(), &secret)).await?;
        let name = created.metadata.name.unwrap_or_default();
        tracing::info!(secret.name = %name, namespace = %namespace, cluster.id = %provider.id, "stored the identity for provider {}", provider.id);
        // The key now lives in the identity Secret; the pending copy is no longer needed.
        match call("deleting the pending key Secret", secrets.delete(PENDING_SECRET, &Default::default())).await {
            Ok(_) => {}
            Err(failure) if failure.is_not_found() => {}
            Err(failure) => {
                tracing::warn!(namespace = %namespace, error = %failure, "could not delete the pending key Secret")
            }
        }
        Ok(format!("Secret {namespace}/{name}"))
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

/// The identity held by a Liqo identity Secret, when it has every key a client needs (spec 4.7).
fn identity_of_secret(secret: &Secret) -> Option<PeerIdentity> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| data.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok());
    Some(PeerIdentity {
        provider_name: None,
        private_key_pem: text("private-key")?,
        certificate_pem: text("certificate")?,
        api_server_url: text("apiServerUrl")?,
        api_server_ca: text("apiServerCa"),
        namespace: text("namespace").unwrap_or_default(),
    })
}

/// True when the certificate was issued for the public half of the key.
pub fn key_matches_certificate(private_key_pem: &str, certificate_pem: &str) -> bool {
    let Some(summary) = CertificateSummary::from_pem(certificate_pem.as_bytes()) else {
        return false;
    };
    public_key_of(private_key_pem).is_some_and(|spki| spki == summary.spki_der)
}

/// DER SubjectPublicKeyInfo of a PKCS#8 PEM key of a type `peer` generates.
pub fn public_key_of(private_key_pem: &str) -> Option<Vec<u8>> {
    use rcgen::PublicKeyData as _;
    let key = rcgen::KeyPair::from_pem(private_key_pem)
        .or_else(|_| rcgen::KeyPair::from_pem_and_sign_algo(private_key_pem, &rcgen::PKCS_RSA_SHA256))
        .ok()?;
    Some(key.subject_public_key_info())
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
