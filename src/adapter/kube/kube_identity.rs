//! The Kubernetes adapter of the consumer's [`PeerIdentityStore`]: each identity is a Secret in
//! the local tenant namespace for the provider, exactly as Liqo's controller-manager stores it,
//! so a Liqo control plane can use it as is. The key of an unfinished request waits in Secret
//! [`PENDING_SECRET`] there, deleted once the identity is stored.
//!
//! Checking certificates and talking to the provider are left to `client::peer`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::ByteString;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::Api;

use crate::adapter::kube::{KubeCtx, LABEL_CLUSTER_ID, LABEL_TENANT_NAMESPACE};
use crate::identity::port::{PeerIdentity, PeerIdentityStore, PendingKey, StoreError, StoredPeerIdentity};
use crate::identity::{ClusterId, ClusterIdentity, TenantNamespace};
use crate::pki::CertificateSummary;

/// Label marking a consumer-side identity Secret (Liqo reads identities by it).
pub const LABEL_LOCAL_IDENTITY: &str = "discovery.liqo.io/local-identity";
/// Label set once the Secret holds a certificate.
pub const LABEL_CERTIFICATE_AVAILABLE: &str = "discovery.liqo.io/certificate-available";
/// Annotation with the certificate's notAfter in Unix seconds.
pub const ANNOTATION_EXPIRE_TIME: &str = "discovery.liqo.io/certificate-expire-time";
/// Annotation with the provider's liqo-auth URL (where `renew` and `agent` send renewals).
pub const ANNOTATION_AUTH_URL: &str = "auth.liqo.io/auth-url";
/// `generateName` of identity Secrets.
pub const IDENTITY_SECRET_PREFIX: &str = "liqo-identity-";
/// Secret holding the key and CSR of an unfinished request, in the provider's local tenant namespace.
pub const PENDING_SECRET: &str = "liqo-auth-pending-identity";
const PENDING_KEY: &str = "pending.json";

/// Identity Secrets through a Kubernetes client.
#[derive(Clone)]
pub struct KubeIdentityStore {
    ctx: KubeCtx,
}

impl KubeIdentityStore {
    /// A store over `ctx`; tenant namespaces are found by label, so no namespace is configured.
    pub fn new(ctx: KubeCtx) -> Self {
        Self { ctx }
    }

    /// The local tenant namespace for `provider`, found by label as the server finds its own.
    async fn tenant_namespace(&self, provider: &ClusterId) -> Result<Option<String>, StoreError> {
        let namespaces: Api<Namespace> = Api::all(self.ctx.client.clone());
        let selector = format!("{LABEL_CLUSTER_ID}={provider},{LABEL_TENANT_NAMESPACE}");
        let params = ListParams::default().labels(&selector);
        let found = self.ctx.call("listing tenant namespaces", namespaces.list(&params)).await?;
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
        let namespaces: Api<Namespace> = Api::all(self.ctx.client.clone());
        let operation = format!("creating namespace {name}");
        match self.ctx.call(&operation, namespaces.create(&PostParams::default(), &namespace)).await {
            Ok(_) => {
                tracing::info!(namespace = %name, cluster.id = %provider.id, "created tenant namespace {name}");
                Ok(name)
            }
            // Created concurrently (or by Liqo) between the lookup and now.
            Err(failure) if failure.is_already_exists() => Ok(name),
            Err(failure) => Err(failure.into()),
        }
    }
}

#[async_trait::async_trait]
impl PeerIdentityStore for KubeIdentityStore {
    async fn existing(&self, provider: &ClusterId) -> Result<Option<PeerIdentity>, StoreError> {
        let Some(namespace) = self.tenant_namespace(provider).await? else {
            return Ok(None);
        };
        let secrets: Api<Secret> = self.ctx.namespaced(&namespace);
        let selector = format!("{LABEL_LOCAL_IDENTITY}=true,{LABEL_CLUSTER_ID}={provider}");
        let params = ListParams::default().labels(&selector);
        let listed = self.ctx.call_opt("listing identity Secrets", secrets.list(&params)).await?;
        let list = listed.map(|list| list.items).unwrap_or_default();
        // Liqo uses the Secret with the largest expire-time annotation; so do we, but from the
        // certificate itself, which cannot disagree with the annotation.
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

    async fn pending(&self, provider: &ClusterId) -> Result<Option<PendingKey>, StoreError> {
        let Some(namespace) = self.tenant_namespace(provider).await? else {
            return Ok(None);
        };
        let secrets: Api<Secret> = self.ctx.namespaced(&namespace);
        let secret = self.ctx.call_opt("reading the pending key Secret", secrets.get(PENDING_SECRET)).await?;
        let json = secret.and_then(|s| s.data).and_then(|mut d| d.remove(PENDING_KEY));
        Ok(json.and_then(|bytes| serde_json::from_slice(&bytes.0).ok()))
    }

    async fn save_pending(&self, provider: &ClusterIdentity, key: &PendingKey) -> Result<(), StoreError> {
        let namespace = self.ensure_tenant_namespace(provider).await?;
        let secrets: Api<Secret> = self.ctx.namespaced(&namespace);
        let data = BTreeMap::from([(
            PENDING_KEY.to_owned(),
            ByteString(serde_json::to_vec(key).expect("a pending key always serialises")),
        )]);
        let existing = self.ctx.call_opt("reading the pending key Secret", secrets.get(PENDING_SECRET)).await?;
        let result = match existing {
            Some(mut secret) => {
                secret.data = Some(data);
                let params = PostParams::default();
                self.ctx
                    .call("replacing the pending key Secret", secrets.replace(PENDING_SECRET, &params, &secret))
                    .await
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta { name: Some(PENDING_SECRET.to_owned()), ..ObjectMeta::default() },
                    data: Some(data),
                    ..Secret::default()
                };
                let params = PostParams::default();
                self.ctx.call("creating the pending key Secret", secrets.create(&params, &secret)).await
            }
        };
        result.map(|_| ()).map_err(StoreError::from)
    }

    async fn store(&self, provider: &ClusterIdentity, identity: &PeerIdentity) -> Result<String, StoreError> {
        let namespace = self.ensure_tenant_namespace(provider).await?;
        let mut secret = Secret {
            metadata: ObjectMeta {
                generate_name: Some(IDENTITY_SECRET_PREFIX.to_owned()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        fill_identity_secret(&mut secret, &provider.id, identity)?;
        let secrets: Api<Secret> = self.ctx.namespaced(&namespace);
        let created =
            self.ctx.call("creating the identity Secret", secrets.create(&PostParams::default(), &secret)).await?;
        let name = created.metadata.name.unwrap_or_default();
        tracing::info!(secret.name = %name, namespace = %namespace, cluster.id = %provider.id, "stored the identity for provider {}", provider.id);
        // The key now lives in the identity Secret; the pending copy is no longer needed.
        let params = Default::default();
        match self.ctx.call("deleting the pending key Secret", secrets.delete(PENDING_SECRET, &params)).await {
            Ok(_) => {}
            Err(failure) if failure.is_not_found() => {}
            Err(failure) => {
                tracing::warn!(namespace = %namespace, error = %failure, "could not delete the pending key Secret")
            }
        }
        Ok(format!("Secret {namespace}/{name}"))
    }

    async fn replace(
        &self,
        provider: &ClusterIdentity,
        previous: &PeerIdentity,
        identity: &PeerIdentity,
    ) -> Result<String, StoreError> {
        let newer = || StoreError::AlreadyExists { what: format!("a newer identity for provider {}", provider.id) };
        let Some(namespace) = self.tenant_namespace(&provider.id).await? else {
            return Err(newer());
        };
        let secrets: Api<Secret> = self.ctx.namespaced(&namespace);
        let selector = format!("{LABEL_LOCAL_IDENTITY}=true,{LABEL_CLUSTER_ID}={}", provider.id);
        let listed =
            self.ctx.call("listing identity Secrets", secrets.list(&ListParams::default().labels(&selector))).await?;
        let Some(mut secret) = listed
            .items
            .into_iter()
            .find(|s| identity_of_secret(s).is_some_and(|i| i.certificate_pem == previous.certificate_pem))
        else {
            return Err(newer());
        };
        // One update of one Secret: the key and the certificate change together. The
        // resourceVersion of the read stays in the object, so a concurrent writer gets 409.
        fill_identity_secret(&mut secret, &provider.id, identity)?;
        let name = secret.metadata.name.clone().unwrap_or_default();
        match self
            .ctx
            .call("replacing the identity Secret", secrets.replace(&name, &PostParams::default(), &secret))
            .await
        {
            Ok(_) => Ok(format!("Secret {namespace}/{name}")),
            Err(crate::adapter::kube::KubeFailure::Conflict { .. }) => Err(newer()),
            Err(failure) => Err(failure.into()),
        }
    }

    async fn list(&self) -> Result<Vec<StoredPeerIdentity>, StoreError> {
        // Namespace by namespace (tenant namespaces found by label), never a cluster-wide list
        // of Secrets: RBAC can then be granted per tenant namespace.
        let namespaces: Api<Namespace> = Api::all(self.ctx.client.clone());
        let params = ListParams::default().labels(LABEL_TENANT_NAMESPACE);
        let tenants = self.ctx.call("listing tenant namespaces", namespaces.list(&params)).await?;
        let mut items = Vec::new();
        for namespace in tenants.items.iter().filter_map(|ns| ns.metadata.name.as_deref()) {
            let secrets: Api<Secret> = self.ctx.namespaced(namespace);
            let params = ListParams::default().labels(&format!("{LABEL_LOCAL_IDENTITY}=true"));
            let listed =
                self.ctx.call(&format!("listing identity Secrets in {namespace}"), secrets.list(&params)).await?;
            items.extend(listed.items);
        }
        let mut newest: BTreeMap<ClusterId, (i64, StoredPeerIdentity)> = BTreeMap::new();
        for secret in &items {
            let labels = secret.metadata.labels.as_ref();
            let Some(provider) = labels.and_then(|l| l.get(LABEL_CLUSTER_ID)).and_then(|id| ClusterId::parse(id).ok())
            else {
                continue;
            };
            let Some(identity) = identity_of_secret(secret) else { continue };
            let Some(not_after) =
                CertificateSummary::from_pem(identity.certificate_pem.as_bytes()).map(|s| s.not_after)
            else {
                continue;
            };
            let location = format!(
                "Secret {}/{}",
                secret.metadata.namespace.as_deref().unwrap_or_default(),
                secret.metadata.name.as_deref().unwrap_or_default()
            );
            let entry = StoredPeerIdentity { provider: provider.clone(), identity, location };
            match newest.get(&provider) {
                Some((best, _)) if *best >= not_after => {}
                _ => {
                    newest.insert(provider, (not_after, entry));
                }
            }
        }
        Ok(newest.into_values().map(|(_, entry)| entry).collect())
    }

    async fn remove(&self, provider: &ClusterId) -> Result<Vec<String>, StoreError> {
        let Some(namespace) = self.tenant_namespace(provider).await? else {
            return Ok(Vec::new());
        };
        let secrets: Api<Secret> = self.ctx.namespaced(&namespace);
        let selector = format!("{LABEL_LOCAL_IDENTITY}=true,{LABEL_CLUSTER_ID}={provider}");
        let listed =
            self.ctx.call("listing identity Secrets", secrets.list(&ListParams::default().labels(&selector))).await?;
        let mut removed = Vec::new();
        let names = listed.items.into_iter().filter_map(|s| s.metadata.name).chain([PENDING_SECRET.to_owned()]);
        for name in names {
            let operation = format!("deleting Secret {namespace}/{name}");
            if self.ctx.call_opt(&operation, secrets.delete(&name, &Default::default())).await?.is_some() {
                removed.push(format!("Secret {namespace}/{name}"));
            }
        }
        Ok(removed)
    }

    fn describe(&self, provider: &ClusterId) -> String {
        format!("a {IDENTITY_SECRET_PREFIX}* Secret in the local tenant namespace of {provider}")
    }
}

/// The identity held by a Liqo identity Secret, when it has every key a client needs.
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
        auth_url: secret.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_AUTH_URL)).cloned(),
        kubeconfig_path: None,
    })
}

/// Sets the labels, annotations and data of an identity Secret for `identity` (keeping the
/// Secret's other metadata, its resourceVersion above all).
fn fill_identity_secret(secret: &mut Secret, provider: &ClusterId, identity: &PeerIdentity) -> Result<(), StoreError> {
    let not_after = CertificateSummary::from_pem(identity.certificate_pem.as_bytes())
        .map(|s| s.not_after)
        .ok_or_else(|| StoreError::Corrupt { what: "the issued certificate".into(), reason: "unparsable".into() })?;
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
    let labels = secret.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(LABEL_LOCAL_IDENTITY.to_owned(), "true".to_owned());
    labels.insert(LABEL_CLUSTER_ID.to_owned(), provider.to_string());
    labels.insert(LABEL_CERTIFICATE_AVAILABLE.to_owned(), "true".to_owned());
    let annotations = secret.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(ANNOTATION_EXPIRE_TIME.to_owned(), not_after.to_string());
    match &identity.auth_url {
        Some(url) => annotations.insert(ANNOTATION_AUTH_URL.to_owned(), url.clone()),
        None => annotations.remove(ANNOTATION_AUTH_URL),
    };
    secret.string_data = None;
    secret.data = Some(data);
    Ok(())
}
