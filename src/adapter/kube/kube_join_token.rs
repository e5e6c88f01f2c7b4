//! `KubeJoinTokens`: join-token key and records as Secrets in the service's namespace.
//!
//! - Secret `liqo-auth-token-key`, data `key`: the 32-byte HS256 key, created when missing.
//! - Secret `liqo-auth-join-token-<id>`, label `auth.liqo.io/join-token=true`, data `record`:
//!   the JSON record of one token (never the token).
//!
//! Uses are counted with optimistic concurrency: read the record, apply the transition, and
//! replace it with the `resourceVersion` that was read. The API server refuses a replace based
//! on a stale read with 409 Conflict, and the loser re-reads and tries again, so replicas can
//! never together take more uses than a record allows.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Api;

use crate::adapter::kube::{KubeCtx, KubeFailure};
use crate::identity::join_token::{self, ConsumeOutcome, JoinTokenKey, JoinTokenRecord};
use crate::identity::port::{JoinTokenStore, StoreError};
use crate::retry::{retry, RetryPolicy};

/// Secret holding the join-token signing key.
pub const TOKEN_KEY_SECRET: &str = "liqo-auth-token-key";
/// Data key of the signing key in [`TOKEN_KEY_SECRET`].
pub const TOKEN_KEY_DATA: &str = "key";
/// Label on every join-token record Secret.
pub const LABEL_JOIN_TOKEN: &str = "auth.liqo.io/join-token";
/// Name prefix of the record Secrets.
pub const JOIN_TOKEN_SECRET_PREFIX: &str = "liqo-auth-join-token-";
const RECORD_DATA: &str = "record";
/// Server-side apply field manager of the key Secret.
const FIELD_MANAGER: &str = "liqo-auth";
/// Retries of one read-modify-write under contention before answering 503. More than for other
/// conflicts: many peers may use one token at once, and each conflict a consumer loses means
/// another consumer's use was counted, so retrying makes progress. The policy's total deadline
/// still bounds the wait.
const MAX_CONFLICT_RETRIES: usize = 63;

/// The Kubernetes join-token store.
#[derive(Clone)]
pub struct KubeJoinTokens {
    ctx: KubeCtx,
    namespace: String,
}

impl KubeJoinTokens {
    /// A store keeping its Secrets in `namespace` (`--namespace`).
    pub fn new(ctx: KubeCtx, namespace: String) -> Self {
        Self { ctx, namespace }
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    /// Creates the key Secret with a new key; fails with AlreadyExists when it is there, so
    /// of replicas starting together exactly one key wins and every replica signs with it.
    async fn create_key(&self) -> Result<JoinTokenKey, KubeFailure> {
        let key = JoinTokenKey::generate();
        let secret = key_secret(&key);
        self.ctx
            .call("creating the join-token key Secret", self.secrets().create(&PostParams::default(), &secret))
            .await?;
        Ok(key)
    }

    /// Read-modify-write of one record with optimistic concurrency. `change` returns whether
    /// to write the record back, and the answer.
    async fn update<T>(
        &self,
        id: &str,
        operation: &str,
        mut change: impl FnMut(Option<&mut JoinTokenRecord>) -> (bool, T),
    ) -> Result<T, StoreError> {
        if !join_token::valid_id(id) {
            return Ok(change(None).1);
        }
        let name = secret_name(id);
        // Each attempt runs `change` on a fresh read; the lock only hands it to that attempt.
        let change = Mutex::new(change);
        let (this, name, change) = (self, name.as_str(), &change);
        let attempt = move || async move {
            let secret = this.ctx.call_opt(&format!("reading Secret {name}"), this.secrets().get(name)).await?;
            let Some(mut secret) = secret else {
                return Ok(Ok(lock(change)(None).1));
            };
            let mut record = match record_of(&secret) {
                Ok(record) => record,
                Err(corrupt) => return Ok(Err(corrupt)),
            };
            let (write, answer) = lock(change)(Some(&mut record));
            if !write {
                return Ok(Ok(answer));
            }
            set_record(&mut secret, &record);
            // The resourceVersion of the read stays in `secret`: a concurrent writer makes this 409.
            this.ctx
                .call(
                    &format!("{operation} Secret {name}"),
                    this.secrets().replace(name, &PostParams::default(), &secret),
                )
                .await?;
            Ok(Ok(answer))
        };
        // Only a conflict is retried: it means another use was counted meanwhile, so the next
        // read sees it and the transition is decided again. A corrupt record is an answer
        // (`Ok(Err(_))`), not something to retry.
        match retry(
            &RetryPolicy::CONFLICT.with_max_retries(MAX_CONFLICT_RETRIES),
            attempt,
            |failure| matches!(failure, KubeFailure::Conflict { .. }),
            |_| None,
        )
        .await
        {
            Ok(answer) => answer,
            Err(KubeFailure::Conflict { .. }) => Err(StoreError::Unavailable {
                operation: format!("{operation} Secret {name}"),
                source: "kept conflicting with concurrent writers".into(),
            }),
            Err(failure) => Err(failure.into()),
        }
    }
}

#[async_trait::async_trait]
impl JoinTokenStore for KubeJoinTokens {
    async fn key(&self) -> Result<Option<JoinTokenKey>, StoreError> {
        let secret =
            self.ctx.call_opt("reading the join-token key Secret", self.secrets().get(TOKEN_KEY_SECRET)).await?;
        secret.as_ref().map(key_of).transpose()
    }

    async fn ensure_key(&self) -> Result<JoinTokenKey, StoreError> {
        if let Some(key) = self.key().await? {
            return Ok(key);
        }
        match self.create_key().await {
            Ok(key) => {
                tracing::info!(secret.name = TOKEN_KEY_SECRET, "created the join-token signing key");
                Ok(key)
            }
            // Another writer created it first: use theirs.
            Err(failure) if failure.is_already_exists() => self.key().await?.ok_or_else(|| StoreError::Corrupt {
                what: format!("Secret {TOKEN_KEY_SECRET}"),
                reason: "vanished right after it was created".into(),
            }),
            Err(failure) => Err(failure.into()),
        }
    }

    async fn rotate_key(&self) -> Result<JoinTokenKey, StoreError> {
        // Server-side apply creates the Secret or replaces its key in one request. Forced: the
        // operator asked for a new key, so it takes the field over from whoever set it before,
        // and of two rotations racing the last one wins.
        let key = JoinTokenKey::generate();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.ctx
            .call(
                "rotating the join-token key Secret",
                self.secrets().patch(TOKEN_KEY_SECRET, &params, &Patch::Apply(&key_secret(&key))),
            )
            .await?;
        Ok(key)
    }

    async fn create_record(&self, record: &JoinTokenRecord) -> Result<(), StoreError> {
        let name = secret_name(&record.id);
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(LABEL_JOIN_TOKEN.to_owned(), "true".to_owned())])),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        set_record(&mut secret, record);
        self.ctx
            .call(&format!("creating Secret {name}"), self.secrets().create(&PostParams::default(), &secret))
            .await?;
        Ok(())
    }

    async fn record(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        if !join_token::valid_id(id) {
            return Ok(None);
        }
        let name = secret_name(id);
        let secret = self.ctx.call_opt(&format!("reading Secret {name}"), self.secrets().get(&name)).await?;
        secret.as_ref().map(record_of).transpose()
    }

    async fn records(&self) -> Result<Vec<JoinTokenRecord>, StoreError> {
        let selector = format!("{LABEL_JOIN_TOKEN}=true");
        let list = self
            .ctx
            .call("listing join-token Secrets", self.secrets().list(&ListParams::default().labels(&selector)))
            .await?;
        let mut records = list.items.iter().map(record_of).collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(records)
    }

    async fn revoke(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        if !join_token::valid_id(id) {
            return Ok(None);
        }
        self.update(id, "revoking join token in", |record| match record {
            Some(record) => (record.revoke(), Some(record.clone())),
            None => (false, None),
        })
        .await
    }

    async fn consume(&self, id: &str, fingerprint: &str) -> Result<ConsumeOutcome, StoreError> {
        self.update(id, "counting a join-token use in", |record| match record {
            Some(record) => {
                let outcome = record.consume(fingerprint);
                (outcome == ConsumeOutcome::Consumed, outcome)
            }
            None => (false, ConsumeOutcome::Unknown),
        })
        .await
    }
}

/// The record Secret's name for token `id`.
pub fn secret_name(id: &str) -> String {
    format!("{JOIN_TOKEN_SECRET_PREFIX}{id}")
}

/// The key Secret as this service writes it: only the name and the key, so an apply owns just
/// `data.key` and a create sets nothing else.
fn key_secret(key: &JoinTokenKey) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(TOKEN_KEY_SECRET.into()), ..ObjectMeta::default() },
        data: Some(BTreeMap::from([(TOKEN_KEY_DATA.to_owned(), ByteString(key.expose().to_vec()))])),
        ..Secret::default()
    }
}

/// The caller's `change`, also after a panic in another attempt (it holds no invariant).
fn lock<F>(change: &Mutex<F>) -> MutexGuard<'_, F> {
    change.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key_of(secret: &Secret) -> Result<JoinTokenKey, StoreError> {
    let bytes = secret.data.as_ref().and_then(|d| d.get(TOKEN_KEY_DATA)).map(|b| b.0.as_slice()).unwrap_or_default();
    JoinTokenKey::from_bytes(bytes).ok_or_else(|| StoreError::Corrupt {
        what: format!("Secret {TOKEN_KEY_SECRET}"),
        reason: format!("key `{TOKEN_KEY_DATA}` is not 32 bytes; run `liqo-auth token rotate-key`"),
    })
}

fn record_of(secret: &Secret) -> Result<JoinTokenRecord, StoreError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let bytes = secret.data.as_ref().and_then(|d| d.get(RECORD_DATA)).map(|b| b.0.as_slice()).unwrap_or_default();
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt { what: format!("Secret {name}"), reason: e.to_string() })
}

fn set_record(secret: &mut Secret, record: &JoinTokenRecord) {
    let json = serde_json::to_vec(record).expect("plain structs always serialise");
    secret.string_data = None;
    secret.data.get_or_insert_with(BTreeMap::new).insert(RECORD_DATA.to_owned(), ByteString(json));
}
