//! `KubeStore`: the Kubernetes backend's storage, creating and reading exactly the objects Liqo
//! itself creates and reads (tenant namespace, `liqo-remote-certificate` Secret, `liqo-binding-*`
//! RoleBindings, `remote-token-<id>` Secrets), so it interoperates with real Liqo clusters.
//!
//! What rarely changes (tenant namespaces, the basic ClusterRoles, control-plane nodes, the
//! origin-token Secrets and `kube-root-ca.crt` in `--namespace`) is read from reflector caches
//! ([`KubeCaches`]); writes go to the API server, and a repeat writes nothing that is already as
//! it should be. A cache may lag behind another replica's write, so every write keeps
//! create-if-absent or resourceVersion preconditions, and a miss that may be staleness is
//! confirmed with one direct read. Every step also tolerates what a previous, interrupted attempt
//! left behind, so a peer's retry completes a half-done issuance.
//!
//! A tenant namespace that exists under the computed name but whose `discovery.liqo.io/cluster-id`
//! label names another cluster (or none) is never used: its name carries only 24 bits of the
//! cluster ID, so a collision can be searched for, and using it would plant an identity and
//! RoleBindings in another peer's namespace.
//!
//! The shared token comes from [`KubeTokenCache`]; deciding what to store is the domain's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::Api;
use sha2::{Digest, Sha256};

use crate::adapter::kube::kube_cache::{label, KubeCaches};
use crate::adapter::kube::kube_token::KubeTokenCache;
use crate::adapter::kube::{
    KubeCtx, KubeFailure, LABEL_AUTH_TOKEN, LABEL_CLUSTER_ID, LABEL_PEERING_PERMISSIONS, LABEL_TENANT_NAMESPACE,
    REMOTE_CERTIFICATE_SECRET, TOKEN_KEY,
};
use crate::identity::port::{ApiServerInfo, CredentialStore, PreviousCertificate, StoreError, StoredIdentity};
use crate::identity::{BearerToken, ClusterId, ClusterIdentity, OriginTokenDigest, TenantNamespace};
use crate::retry::{retry, RetryPolicy};

/// In-cluster service-account CA, re-read at request time so a rotation needs no restart.
const SERVICE_ACCOUNT_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// How `apiServerUrl` and `apiServerCA` are found. They are resolved at request time, not at
/// start, so a rotated CA or a moved control plane needs no restart.
#[derive(Debug, Clone)]
pub struct ApiServerSource {
    /// `--advertise-api-server-address`, normalised.
    pub advertised_url: Option<String>,
    /// The client configuration's server URL, the last fallback.
    pub client_url: String,
    /// `--advertise-api-server-trusted-ca`: send no CA.
    pub trusted_ca: bool,
    /// The client configuration's CA (PEM), if any.
    pub client_ca_pem: Option<String>,
    /// File to re-read for the CA (in-cluster service account), if present.
    pub ca_file: Option<PathBuf>,
}

impl ApiServerSource {
    /// Derives the source from a client configuration.
    pub fn from_ctx(ctx: &KubeCtx, advertised_url: Option<String>, trusted_ca: bool) -> Self {
        let ca_file = Some(PathBuf::from(SERVICE_ACCOUNT_CA)).filter(|p| p.exists());
        Self {
            advertised_url,
            client_url: ctx.server_url.clone(),
            trusted_ca,
            client_ca_pem: ctx.server_ca_pem.clone(),
            ca_file,
        }
    }
}

/// Namespaces remembered as created by this process and not yet through an issuance.
const FRESH_LIMIT: usize = 1024;

/// How long an object this process wrote stands in for the cache, which may not have seen it
/// yet: long enough for any watch to deliver it, short enough that an object an operator
/// deleted meanwhile is written again on a retry soon after.
const RECENT_MEMO: Duration = Duration::from_secs(30);

/// The Kubernetes credential store.
#[derive(Clone)]
pub struct KubeStore {
    ctx: KubeCtx,
    namespace: String,
    tokens: KubeTokenCache,
    caches: KubeCaches,
    api_server: Arc<ApiServerSource>,
    /// Tenant namespaces this process has just created: nothing can be stored in them yet
    /// (other than by a concurrent writer, which create-if-absent catches), so their first
    /// issuance skips the reads that would find nothing.
    fresh: Arc<Mutex<HashSet<String>>>,
    /// Objects this process wrote a moment ago (`namespace/NAME`, `token/NAME/SHA256`), with
    /// when: a repeat that arrives before the caches have seen them does not write them again.
    recent: Arc<Mutex<HashMap<String, Instant>>>,
}

impl KubeStore {
    /// A store over `client`, keeping tokens in `namespace`, reading from `caches`.
    pub fn new(
        ctx: KubeCtx,
        namespace: String,
        tokens: KubeTokenCache,
        caches: KubeCaches,
        api_server: ApiServerSource,
    ) -> Self {
        Self {
            ctx,
            namespace,
            tokens,
            caches,
            api_server: Arc::new(api_server),
            fresh: Arc::default(),
            recent: Arc::default(),
        }
    }

    fn fresh(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.fresh.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers that this process just wrote `key` (bounded: expired entries go first).
    fn remember(&self, key: String) {
        let mut recent = self.recent();
        if recent.len() >= FRESH_LIMIT {
            recent.retain(|_, at| at.elapsed() < RECENT_MEMO);
            if recent.len() >= FRESH_LIMIT {
                recent.clear();
            }
        }
        recent.insert(key, Instant::now());
    }

    /// Whether this process wrote `key` within [`RECENT_MEMO`].
    fn recently_wrote(&self, key: &str) -> bool {
        self.recent().get(key).is_some_and(|at| at.elapsed() < RECENT_MEMO)
    }

    /// The basic peering ClusterRoles: the cache, or one direct list when the cache has none
    /// (it may not have seen a role created a moment ago).
    async fn basic_roles(&self) -> Result<Vec<ClusterRole>, KubeFailure> {
        let cached: Vec<ClusterRole> = self.caches.cluster_roles.state().iter().map(|r| (**r).clone()).collect();
        if !cached.is_empty() {
            return Ok(cached);
        }
        let roles: Api<ClusterRole> = Api::all(self.ctx.client.clone());
        let selector = format!("{LABEL_PEERING_PERMISSIONS}=basic");
        let listed = self
            .ctx
            .call("listing the basic peering ClusterRoles", roles.list(&ListParams::default().labels(&selector)))
            .await?;
        Ok(listed.items)
    }

    async fn grant(&self, namespace: &TenantNamespace, user: &ClusterId) -> Result<(), KubeFailure> {
        let roles = self.basic_roles().await?;
        let bindings: Api<RoleBinding> = Api::namespaced(self.ctx.client.clone(), namespace.as_str());
        // In a namespace this process just created there is nothing to list; elsewhere one list
        // tells which bindings exist, so a repeat writes nothing.
        let existing: HashSet<String> = if self.fresh().remove(namespace.as_str()) {
            HashSet::new()
        } else {
            let listed = self
                .ctx
                .call(&format!("listing RoleBindings in {namespace}"), bindings.list(&ListParams::default()))
                .await?;
            listed.items.into_iter().filter_map(|b| b.metadata.name).collect()
        };
        for role in roles {
            let (Some(role_name), Some(uid)) = (role.metadata.name.clone(), role.metadata.uid.clone()) else {
                continue;
            };
            if existing.contains(&format!("liqo-binding-{role_name}")) {
                continue;
            }
            let binding = RoleBinding {
                metadata: ObjectMeta {
                    name: Some(format!("liqo-binding-{role_name}")),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "rbac.authorization.k8s.io/v1".into(),
                        kind: "ClusterRole".into(),
                        name: role_name.clone(),
                        uid,
                        ..OwnerReference::default()
                    }]),
                    ..ObjectMeta::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: role_name.clone(),
                },
                subjects: Some(vec![Subject {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "User".into(),
                    name: user.to_string(),
                    namespace: None,
                }]),
            };
            match self
                .ctx
                .call(
                    &format!("creating RoleBinding liqo-binding-{role_name}"),
                    bindings.create(&PostParams::default(), &binding),
                )
                .await
            {
                Ok(_) => {
                    tracing::debug!(namespace = %namespace, clusterrole = %role_name, "bound peering ClusterRole")
                }
                Err(failure) if failure.is_already_exists() => {}
                Err(failure) => return Err(failure),
            }
        }
        Ok(())
    }

    /// The namespace labelled as `cluster`'s tenant namespace, if there is one.
    async fn find_tenant_namespace(&self, cluster: &ClusterId) -> Result<Option<TenantNamespace>, StoreError> {
        let namespaces: Api<Namespace> = Api::all(self.ctx.client.clone());
        let selector = format!("{LABEL_CLUSTER_ID}={cluster},{LABEL_TENANT_NAMESPACE}");
        let found = self
            .ctx
            .call("listing tenant namespaces", namespaces.list(&ListParams::default().labels(&selector)))
            .await?;
        match found.items.as_slice() {
            [one] => Ok(Some(TenantNamespace::from_stored(one.metadata.name.clone().unwrap_or_default()))),
            [] => Ok(None),
            many => Err(StoreError::Corrupt {
                what: format!("tenant namespaces of cluster {cluster}"),
                reason: format!("{} namespaces carry its labels; delete all but one", many.len()),
            }),
        }
    }

    /// The first control-plane node's preferred address, from the node caches (a cluster
    /// without labelled control-plane nodes, as managed ones, has none: no fallback read).
    fn control_plane_url(&self) -> Option<String> {
        self.caches.control_plane_nodes.iter().find_map(|nodes| {
            let mut state: Vec<Arc<Node>> = nodes.state();
            // The same node whatever order the watch delivered them in.
            state.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            let address = state.iter().find_map(|node| preferred_address(node))?;
            Some(format!("https://{}:6443", bracket_ipv6(&address)))
        })
    }

    async fn api_server_ca(&self) -> Result<Option<String>, KubeFailure> {
        let source = &self.api_server;
        if source.trusted_ca {
            return Ok(None);
        }
        if let Some(path) = source.ca_file.clone() {
            // Re-read at request time (a rotation needs no restart), off the async workers.
            let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(path).ok()).await.ok().flatten();
            if let Some(pem) = read {
                return Ok(Some(pem));
            }
        }
        if let Some(pem) = &source.client_ca_pem {
            return Ok(Some(pem.clone()));
        }
        // kube-controller-manager publishes it when the namespace is created and on rotation:
        // once the cache has listed, it is the answer (absent means absent).
        Ok(self.caches.root_ca.state().first().and_then(|cm| cm.data.as_ref()?.get("ca.crt").cloned()))
    }
}

#[async_trait::async_trait]
impl CredentialStore for KubeStore {
    async fn ensure_tenant_namespace(&self, cluster: &ClusterIdentity) -> Result<TenantNamespace, StoreError> {
        let cached = self.caches.tenant_namespaces_of(cluster.id.as_str());
        if let [one] = cached.as_slice() {
            let name = one.metadata.name.clone().unwrap_or_default();
            self.fresh().remove(&name);
            self.recent().remove(&format!("namespace/{name}"));
            return Ok(TenantNamespace::from_stored(name));
        }
        if cached.len() > 1 {
            // Maybe one was deleted a moment ago: the API server decides.
            return self.find_tenant_namespace(&cluster.id).await?.ok_or_else(|| StoreError::Missing {
                what: format!("tenant namespace of cluster {}", cluster.id),
                hint: "it was deleted while the request ran; send the request again".into(),
            });
        }
        let name = cluster.tenant_namespace();
        if self.recently_wrote(&format!("namespace/{name}")) {
            // Created here a moment ago, with our labels; the cache has not seen it yet.
            return Ok(name);
        }
        let namespaces: Api<Namespace> = Api::all(self.ctx.client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([
                    (LABEL_CLUSTER_ID.to_owned(), cluster.id.to_string()),
                    (LABEL_TENANT_NAMESPACE.to_owned(), "true".to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match self
            .ctx
            .call(&format!("creating namespace {name}"), namespaces.create(&PostParams::default(), &namespace))
            .await
        {
            Ok(_) => {
                tracing::info!(namespace = %name, cluster.id = %cluster.id, "created tenant namespace {name}");
                let mut fresh = self.fresh();
                if fresh.len() >= FRESH_LIMIT {
                    fresh.clear();
                }
                fresh.insert(name.to_string());
                drop(fresh);
                self.remember(format!("namespace/{name}"));
                Ok(name)
            }
            // It exists: created meanwhile by another replica or by Liqo itself (same naming,
            // same labels; the cache had not seen it yet), or it belongs to someone else.
            Err(failure) if failure.is_already_exists() => {
                let existing =
                    self.ctx.call(&format!("reading namespace {name}"), namespaces.get(name.as_str())).await?;
                // Not ours to call fresh: whoever created it may have stored something.
                self.fresh().remove(name.as_str());
                match label(&existing.metadata, LABEL_CLUSTER_ID) {
                    Some(owner) if owner == cluster.id.as_str() => Ok(name),
                    owner => {
                        tracing::warn!(
                            namespace = %name,
                            cluster.id = %cluster.id,
                            namespace.owner = owner.unwrap_or(""),
                            "tenant namespace {name} exists and is labelled for another cluster; refusing to use it"
                        );
                        Err(StoreError::NamespaceTaken { namespace: name.to_string(), owner: owner.map(str::to_owned) })
                    }
                }
            }
            Err(failure) => Err(failure.into()),
        }
    }

    async fn tenant_namespace(&self, cluster: &ClusterId) -> Result<Option<TenantNamespace>, StoreError> {
        self.find_tenant_namespace(cluster).await
    }

    async fn stored_identity(
        &self,
        namespace: &TenantNamespace,
        _: &ClusterId,
    ) -> Result<Option<StoredIdentity>, StoreError> {
        if self.fresh().contains(namespace.as_str()) {
            return Ok(None);
        }
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace.as_str());
        let secret =
            self.ctx.call_opt("reading Secret liqo-remote-certificate", secrets.get(REMOTE_CERTIFICATE_SECRET)).await?;
        Ok(secret.as_ref().and_then(identity_of))
    }

    async fn create_identity(
        &self,
        namespace: &TenantNamespace,
        cluster: &ClusterId,
        identity: &StoredIdentity,
    ) -> Result<(), StoreError> {
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace.as_str());
        let secret = identity_secret(cluster, identity, None);
        match self
            .ctx
            .call("creating Secret liqo-remote-certificate", secrets.create(&PostParams::default(), &secret))
            .await
        {
            Ok(_) => Ok(()),
            Err(failure) if failure.is_already_exists() => {
                // A Secret without both `csr` and `certificate` holds no identity (Liqo treats
                // it as absent too); it must not block issuance, so it is repaired in place.
                let existing = self
                    .ctx
                    .call("reading Secret liqo-remote-certificate", secrets.get(REMOTE_CERTIFICATE_SECRET))
                    .await?;
                if identity_of(&existing).is_some() {
                    return Err(StoreError::AlreadyExists {
                        what: format!("Secret {REMOTE_CERTIFICATE_SECRET} in {namespace}"),
                    });
                }
                let repaired = identity_secret(cluster, identity, Some(existing));
                self.ctx
                    .call(
                        "repairing Secret liqo-remote-certificate",
                        secrets.replace(REMOTE_CERTIFICATE_SECRET, &PostParams::default(), &repaired),
                    )
                    .await?;
                Ok(())
            }
            Err(failure) => Err(failure.into()),
        }
    }

    async fn replace_identity(
        &self,
        namespace: &TenantNamespace,
        cluster: &ClusterId,
        identity: &StoredIdentity,
        previous: &StoredIdentity,
    ) -> Result<(), StoreError> {
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace.as_str());
        let existing =
            self.ctx.call("reading Secret liqo-remote-certificate", secrets.get(REMOTE_CERTIFICATE_SECRET)).await?;
        if identity_of(&existing).as_ref() != Some(previous) {
            return Err(StoreError::AlreadyExists { what: format!("a newer identity of cluster {cluster}") });
        }
        // resourceVersion is kept from the read: a concurrent change gets 409 Conflict.
        let replacement = identity_secret(cluster, identity, Some(existing));
        match self
            .ctx
            .call(
                "replacing Secret liqo-remote-certificate",
                secrets.replace(REMOTE_CERTIFICATE_SECRET, &PostParams::default(), &replacement),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(KubeFailure::Conflict { .. }) => {
                Err(StoreError::AlreadyExists { what: format!("a newer identity of cluster {cluster}") })
            }
            Err(failure) => Err(failure.into()),
        }
    }

    async fn grant_peering_permissions(&self, namespace: &TenantNamespace, user: &ClusterId) -> Result<(), StoreError> {
        Ok(self.grant(namespace, user).await?)
    }

    async fn save_origin_token(&self, cluster: &ClusterId, token: &BearerToken) -> Result<(), StoreError> {
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let name = format!("remote-token-{cluster}");
        let cached = self.caches.origin_tokens.state().into_iter().find(|s| s.metadata.name.as_deref() == Some(&name));
        let memo = format!("token/{name}/{}", hex::encode(Sha256::digest(token.expose().as_bytes())));
        if cached.as_ref().is_some_and(|s| holds_origin_token(s, cluster, token)) || self.recently_wrote(&memo) {
            // Already as it should be (or written here a moment ago): a repeat writes nothing.
            return Ok(());
        }
        // Create first: the common case (a first peering) then costs one request.
        let created = self
            .ctx
            .call(
                &format!("creating Secret {name}"),
                secrets.create(&PostParams::default(), &origin_token_secret(&name, cluster, token, None)),
            )
            .await;
        match created {
            Ok(_) => {
                self.remember(memo);
                return Ok(());
            }
            Err(failure) if failure.is_already_exists() => {}
            Err(failure) => return Err(failure.into()),
        }
        // It exists: make it hold this token. A concurrent writer (another replica peering the
        // same cluster) makes the write fail with 409, or a create race with AlreadyExists;
        // the next attempt reads what that writer left and usually finds the token already there.
        let (ctx, secrets, name) = (&self.ctx, &secrets, name.as_str());
        let written = retry(
            &RetryPolicy::CONFLICT,
            move || async move {
                let existing = ctx.call_opt(&format!("reading Secret {name}"), secrets.get(name)).await?;
                match existing {
                    Some(existing) if holds_origin_token(&existing, cluster, token) => Ok(()),
                    None => ctx
                        .call(
                            &format!("creating Secret {name}"),
                            secrets.create(&PostParams::default(), &origin_token_secret(name, cluster, token, None)),
                        )
                        .await
                        .map(drop),
                    // The resourceVersion of the read stays in the object: a concurrent change is 409.
                    Some(existing) => ctx
                        .call(
                            &format!("updating Secret {name}"),
                            secrets.replace(
                                name,
                                &PostParams::default(),
                                &origin_token_secret(name, cluster, token, Some(existing)),
                            ),
                        )
                        .await
                        .map(drop),
                }
            },
            |failure| matches!(failure, KubeFailure::AlreadyExists { .. } | KubeFailure::Conflict { .. }),
            |_| None,
        )
        .await;
        match written {
            Ok(()) => {
                self.remember(memo);
                Ok(())
            }
            Err(KubeFailure::AlreadyExists { .. } | KubeFailure::Conflict { .. }) => Err(StoreError::Unavailable {
                operation: format!("updating Secret {name}"),
                source: "kept conflicting with concurrent writers".into(),
            }),
            Err(failure) => Err(failure.into()),
        }
    }

    async fn api_server(&self) -> Result<ApiServerInfo, StoreError> {
        let url = match &self.api_server.advertised_url {
            Some(url) => url.clone(),
            None => self.control_plane_url().unwrap_or_else(|| self.api_server.client_url.clone()),
        };
        Ok(ApiServerInfo { url, ca_pem: self.api_server_ca().await? })
    }

    async fn ready(&self) -> Result<(), StoreError> {
        if !self.tokens.synced() {
            return Err(StoreError::Unavailable {
                operation: "syncing the token Secret".into(),
                source: "the first list has not completed".into(),
            });
        }
        if !self.caches.synced() {
            // Serving from a cache that has not listed yet would answer from nothing.
            return Err(StoreError::Unavailable {
                operation: "syncing the caches of tenant namespaces, ClusterRoles, nodes and Secrets".into(),
                source: "a first list has not completed".into(),
            });
        }
        self.ctx.call("asking the API server for its version", self.ctx.client.apiserver_version()).await?;
        Ok(())
    }
}

/// Runs a delete: `Ok(true)` when deleted, `Ok(false)` when it was not there.
pub(super) async fn deleted<T>(
    ctx: &KubeCtx,
    operation: &str,
    future: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<bool, KubeFailure> {
    Ok(ctx.call_opt(operation, future).await?.is_some())
}

/// Reads `csr` and `certificate` from a `liqo-remote-certificate` Secret; `None` when either is
/// missing (such a Secret is treated as absent, as Liqo does). The digest of the origin token
/// bound to the identity sits in the same Secret (key `originTokenSha256`, which Liqo ignores),
/// so identity and digest change in one write.
pub(super) fn identity_of(secret: &Secret) -> Option<StoredIdentity> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| data.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok()).filter(|s| !s.is_empty());
    let previous = match (text(PREVIOUS_CERTIFICATE_KEY), text(PREVIOUS_REPLACED_AT_KEY).and_then(|t| t.parse().ok())) {
        (Some(certificate_pem), Some(replaced_at)) => Some(PreviousCertificate { certificate_pem, replaced_at }),
        _ => None,
    };
    Some(StoredIdentity {
        csr_pem: text("csr")?,
        certificate_pem: text("certificate")?,
        origin: text(ORIGIN_DIGEST_KEY).as_deref().and_then(OriginTokenDigest::from_hex),
        previous,
    })
}

/// Key of the origin-token digest in `liqo-remote-certificate`.
const ORIGIN_DIGEST_KEY: &str = "originTokenSha256";
/// Data keys of the certificate a renewal replaced (see `StoredIdentity::previous`).
const PREVIOUS_CERTIFICATE_KEY: &str = "previousCertificate";
const PREVIOUS_REPLACED_AT_KEY: &str = "previousReplacedAt";

fn identity_secret(cluster: &ClusterId, identity: &StoredIdentity, existing: Option<Secret>) -> Secret {
    let mut secret = existing.unwrap_or_else(|| Secret {
        metadata: ObjectMeta { name: Some(REMOTE_CERTIFICATE_SECRET.into()), ..ObjectMeta::default() },
        ..Secret::default()
    });
    secret.metadata.labels.get_or_insert_with(BTreeMap::new).insert(LABEL_CLUSTER_ID.into(), cluster.to_string());
    secret.string_data = None;
    let mut data = BTreeMap::from([
        ("csr".to_owned(), ByteString(identity.csr_pem.as_bytes().to_vec())),
        ("certificate".to_owned(), ByteString(identity.certificate_pem.as_bytes().to_vec())),
    ]);
    if let Some(digest) = identity.origin {
        data.insert(ORIGIN_DIGEST_KEY.to_owned(), ByteString(digest.to_hex().into_bytes()));
    }
    // Liqo reads only `csr` and `certificate`; the renewal overlap keys beside them are ours.
    if let Some(previous) = &identity.previous {
        data.insert(PREVIOUS_CERTIFICATE_KEY.to_owned(), ByteString(previous.certificate_pem.as_bytes().to_vec()));
        data.insert(PREVIOUS_REPLACED_AT_KEY.to_owned(), ByteString(previous.replaced_at.to_string().into_bytes()));
    }
    secret.data = Some(data);
    secret
}

/// `remote-token-<id>`: the token the peer sent for reaching it back, labelled as Liqo looks it
/// up. Labels are (re)set on an existing Secret even when it had none (one made by hand, say):
/// Liqo's own auth service fails on such a Secret, and an unlabelled one is never found.
fn origin_token_secret(name: &str, cluster: &ClusterId, token: &BearerToken, existing: Option<Secret>) -> Secret {
    let mut secret = existing.unwrap_or_else(|| Secret {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
        ..Secret::default()
    });
    let labels = secret.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(LABEL_CLUSTER_ID.into(), cluster.to_string());
    labels.insert(LABEL_AUTH_TOKEN.into(), String::new());
    secret.string_data = None;
    secret
        .data
        .get_or_insert_with(BTreeMap::new)
        .insert(TOKEN_KEY.into(), ByteString(token.expose().as_bytes().to_vec()));
    secret
}

/// True when the Secret already carries exactly this token and the labels.
fn holds_origin_token(secret: &Secret, cluster: &ClusterId, token: &BearerToken) -> bool {
    let labels = secret.metadata.labels.as_ref();
    let labelled = labels.is_some_and(|l| {
        l.get(LABEL_CLUSTER_ID).map(String::as_str) == Some(cluster.as_str()) && l.contains_key(LABEL_AUTH_TOKEN)
    });
    let value = secret.data.as_ref().and_then(|d| d.get(TOKEN_KEY)).map(|b| b.0.as_slice());
    labelled && value == Some(token.expose().as_bytes())
}

fn preferred_address(node: &Node) -> Option<String> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    ["ExternalDNS", "ExternalIP", "InternalDNS", "InternalIP", "Hostname"].iter().find_map(|kind| {
        addresses.iter().find(|a| a.type_ == *kind && !a.address.is_empty()).map(|a| a.address.clone())
    })
}

fn bracket_ipv6(address: &str) -> String {
    if address.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{address}]")
    } else {
        address.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_node_addresses_are_bracketed() {
        assert_eq!(bracket_ipv6("fd00::5"), "[fd00::5]");
        assert_eq!(bracket_ipv6("10.0.0.5"), "10.0.0.5");
    }

    #[test]
    fn a_secret_without_both_keys_holds_no_identity() {
        let mut secret = identity_secret(
            &ClusterId::parse("c1").unwrap(),
            &StoredIdentity {
                origin: OriginTokenDigest::of(&BearerToken::new("t".into())),
                previous: Some(PreviousCertificate { certificate_pem: "old".into(), replaced_at: 7 }),
                ..StoredIdentity::new("a".into(), "b".into())
            },
            None,
        );
        let read = identity_of(&secret).expect("an identity");
        assert!(read.origin.is_some_and(|d| d.matches(&BearerToken::new("t".into()))), "the digest is kept");
        assert_eq!(read.previous.map(|p| (p.certificate_pem, p.replaced_at)), Some(("old".into(), 7)));
        secret.data.as_mut().unwrap().remove("certificate");
        assert!(identity_of(&secret).is_none());
    }

    #[test]
    fn origin_token_secret_gets_labels_even_when_it_had_none() {
        let existing = Secret {
            metadata: ObjectMeta { name: Some("remote-token-c1".into()), labels: None, ..ObjectMeta::default() },
            ..Secret::default()
        };
        let secret = origin_token_secret(
            "remote-token-c1",
            &ClusterId::parse("c1").unwrap(),
            &BearerToken::new("t".into()),
            Some(existing),
        );
        let labels = secret.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_CLUSTER_ID], "c1");
        assert_eq!(labels[LABEL_AUTH_TOKEN], "");
        assert_eq!(secret.data.unwrap()[TOKEN_KEY].0, b"t");
    }
}
