//! `MemoryStore`: an in-memory `CredentialStore` and `SharedTokenSource` for router and domain tests;
//! `MemoryJoinTokens`: the same for the `JoinTokenStore` port; `MemoryProofLedger` for `ProofLedger`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::identity::join_token::{ConsumeOutcome, JoinTokenKey, JoinTokenRecord};
use crate::identity::port::{
    ApiServerInfo, CredentialStore, JoinTokenStore, ProofId, ProofLedger, Seen, SharedTokenSource, StoreError,
    StoredIdentity,
};
use crate::identity::{BearerToken, ClusterId, ClusterIdentity, SharedToken, TenantNamespace};

/// Everything in a few maps behind one mutex.
pub struct MemoryStore {
    state: Mutex<State>,
    api_server: ApiServerInfo,
}

#[derive(Default)]
struct State {
    token: Option<SharedToken>,
    namespaces: HashMap<String, String>,
    identities: HashMap<String, StoredIdentity>,
    grants: Vec<(String, String)>,
    origin_tokens: HashMap<String, String>,
}

impl MemoryStore {
    /// A store with the given shared token and API server answer.
    pub fn new(token: Option<SharedToken>, api_server: ApiServerInfo) -> Self {
        Self { state: Mutex::new(State { token, ..State::default() }), api_server }
    }

    /// Origin token stored for a cluster (test inspection).
    pub fn origin_token(&self, cluster: &str) -> Option<String> {
        self.lock().origin_tokens.get(cluster).cloned()
    }

    /// Grants made so far as (namespace, user) pairs (test inspection).
    pub fn grants(&self) -> Vec<(String, String)> {
        self.lock().grants.clone()
    }

    /// Forgets the tenant and identity of `cluster`, as `tenant remove` does (test control).
    pub fn remove_tenant(&self, cluster: &str) {
        let mut state = self.lock();
        state.namespaces.remove(cluster);
        state.identities.remove(cluster);
    }

    /// The identity stored for `cluster` (test inspection).
    pub fn identity(&self, cluster: &str) -> Option<StoredIdentity> {
        self.lock().identities.get(cluster).cloned()
    }

    /// Replaces the shared token (test control).
    pub fn set_token(&self, token: Option<SharedToken>) {
        self.lock().token = token;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl CredentialStore for MemoryStore {
    async fn ensure_tenant_namespace(&self, cluster: &ClusterIdentity) -> Result<TenantNamespace, StoreError> {
        let mut state = self.lock();
        let name = state
            .namespaces
            .entry(cluster.id.to_string())
            .or_insert_with(|| cluster.tenant_namespace().to_string())
            .clone();
        Ok(TenantNamespace::from_stored(name))
    }

    async fn tenant_namespace(&self, cluster: &ClusterId) -> Result<Option<TenantNamespace>, StoreError> {
        Ok(self.lock().namespaces.get(cluster.as_str()).cloned().map(TenantNamespace::from_stored))
    }

    async fn stored_identity(
        &self,
        _: &TenantNamespace,
        cluster: &ClusterId,
    ) -> Result<Option<StoredIdentity>, StoreError> {
        Ok(self.lock().identities.get(cluster.as_str()).cloned())
    }

    async fn create_identity(
        &self,
        _: &TenantNamespace,
        cluster: &ClusterId,
        identity: &StoredIdentity,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state.identities.contains_key(cluster.as_str()) {
            return Err(StoreError::AlreadyExists { what: format!("identity of cluster {cluster}") });
        }
        state.identities.insert(cluster.to_string(), identity.clone());
        Ok(())
    }

    async fn replace_identity(
        &self,
        _: &TenantNamespace,
        cluster: &ClusterId,
        identity: &StoredIdentity,
        previous: &StoredIdentity,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state.identities.get(cluster.as_str()) != Some(previous) {
            return Err(StoreError::AlreadyExists { what: format!("a newer identity of cluster {cluster}") });
        }
        state.identities.insert(cluster.to_string(), identity.clone());
        Ok(())
    }

    async fn grant_peering_permissions(&self, namespace: &TenantNamespace, user: &ClusterId) -> Result<(), StoreError> {
        let grant = (namespace.to_string(), user.to_string());
        let mut state = self.lock();
        if !state.grants.contains(&grant) {
            state.grants.push(grant);
        }
        Ok(())
    }

    async fn save_origin_token(&self, cluster: &ClusterId, token: &BearerToken) -> Result<(), StoreError> {
        self.lock().origin_tokens.insert(cluster.to_string(), token.expose().to_owned());
        Ok(())
    }

    async fn api_server(&self) -> Result<ApiServerInfo, StoreError> {
        Ok(self.api_server.clone())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl SharedTokenSource for MemoryStore {
    fn shared_token(&self) -> Option<SharedToken> {
        self.lock().token.clone()
    }
}

/// Join-token key and records in memory (router and domain tests).
#[derive(Default)]
pub struct MemoryJoinTokens {
    state: Mutex<JoinState>,
}

#[derive(Default)]
struct JoinState {
    key: Option<JoinTokenKey>,
    records: HashMap<String, JoinTokenRecord>,
}

impl MemoryJoinTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, JoinState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl JoinTokenStore for MemoryJoinTokens {
    async fn key(&self) -> Result<Option<JoinTokenKey>, StoreError> {
        Ok(self.lock().key.clone())
    }

    async fn ensure_key(&self) -> Result<JoinTokenKey, StoreError> {
        Ok(self.lock().key.get_or_insert_with(JoinTokenKey::generate).clone())
    }

    async fn rotate_key(&self) -> Result<JoinTokenKey, StoreError> {
        let key = JoinTokenKey::generate();
        self.lock().key = Some(key.clone());
        Ok(key)
    }

    async fn create_record(&self, record: &JoinTokenRecord) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state.records.contains_key(&record.id) {
            return Err(StoreError::AlreadyExists { what: format!("join token {}", record.id) });
        }
        state.records.insert(record.id.clone(), record.clone());
        Ok(())
    }

    async fn record(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        Ok(self.lock().records.get(id).cloned())
    }

    async fn records(&self) -> Result<Vec<JoinTokenRecord>, StoreError> {
        let mut records: Vec<_> = self.lock().records.values().cloned().collect();
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(records)
    }

    async fn revoke(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        if !crate::identity::join_token::valid_id(id) {
            return Ok(None);
        }
        Ok(self.lock().records.get_mut(id).map(|record| {
            record.revoke();
            record.clone()
        }))
    }

    async fn consume(&self, id: &str, fingerprint: &str) -> Result<ConsumeOutcome, StoreError> {
        Ok(self.lock().records.get_mut(id).map_or(ConsumeOutcome::Unknown, |record| record.consume(fingerprint)))
    }
}

/// Used renewal proofs in memory (router and domain tests).
#[derive(Default)]
pub struct MemoryProofLedger {
    seen: Mutex<HashMap<ProofId, i64>>,
}

#[async_trait::async_trait]
impl ProofLedger for MemoryProofLedger {
    async fn record(&self, id: &ProofId, until: i64) -> Result<Seen, StoreError> {
        let now = crate::pki::unix_now();
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.retain(|_, until| *until >= now);
        if seen.contains_key(id) {
            return Ok(Seen::Again);
        }
        seen.insert(id.clone(), until);
        Ok(Seen::First)
    }
}
