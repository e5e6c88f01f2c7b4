//! `KubeTokenCache`: the shared token from Secret `auth-token`, kept current by a watch.
//!
//! Fixes of spec 11: a re-list after any watch gap repairs a Secret deleted meanwhile (R10); a
//! Secret without a usable `token` never authenticates anyone and is repaired (S3); reads
//! come from memory, never a request per call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::Api;

use crate::adapter::kube::{call, TOKEN_KEY, TOKEN_SECRET};
use crate::identity::port::SharedTokenSource;
use crate::identity::SharedToken;

/// The cached shared token and whether the first list has completed.
#[derive(Clone, Default)]
pub struct KubeTokenCache {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    token: RwLock<Option<SharedToken>>,
    synced: AtomicBool,
}

impl KubeTokenCache {
    /// Starts the watch in the background and returns the cache it fills.
    pub fn start(client: kube::Client, namespace: &str) -> Self {
        let cache = Self::default();
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let task_cache = cache.clone();
        tokio::spawn(async move { task_cache.run(api).await });
        cache
    }

    /// True once the first list completed (readiness).
    pub fn synced(&self) -> bool {
        self.inner.synced.load(Ordering::Acquire)
    }

    /// Waits until synced, polling cheaply (start-up only).
    pub async fn wait_synced(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.synced() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        true
    }

    async fn run(self, api: Api<Secret>) {
        let config = watcher::Config::default().fields(&format!("metadata.name={TOKEN_SECRET}"));
        let mut stream = watcher(api.clone(), config).boxed();
        let mut listed: Option<Secret> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => listed = None,
                Ok(watcher::Event::InitApply(secret)) => listed = Some(secret),
                Ok(watcher::Event::InitDone) => {
                    self.observe(&api, listed.take()).await;
                    self.inner.synced.store(true, Ordering::Release);
                }
                Ok(watcher::Event::Apply(secret)) => self.observe(&api, Some(secret)).await,
                Ok(watcher::Event::Delete(_)) => self.observe(&api, None).await,
                Err(error) => {
                    tracing::warn!(secret.name = TOKEN_SECRET, error = %error, "watching the token Secret failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Applies what the watch saw: use a usable token; create a missing Secret; repair one
    /// without a usable value.
    async fn observe(&self, api: &Api<Secret>, secret: Option<Secret>) {
        let usable = secret.as_ref().and_then(token_of);
        self.set(usable.clone());
        if usable.is_some() {
            return;
        }
        let fresh = SharedToken::generate();
        let result = match secret {
            None => {
                tracing::info!(secret.name = TOKEN_SECRET, "the token Secret is missing; creating it with a new token");
                call("creating the token Secret", api.create(&PostParams::default(), &token_secret(&fresh, None)))
                    .await
                    .map(|_| ())
            }
            Some(existing) => {
                tracing::warn!(
                    secret.name = TOKEN_SECRET,
                    "the token Secret has no usable token; replacing it with a new token"
                );
                call(
                    "repairing the token Secret",
                    api.replace(TOKEN_SECRET, &PostParams::default(), &token_secret(&fresh, Some(existing))),
                )
                .await
                .map(|_| ())
            }
        };
        match result {
            // The watch delivers the stored Secret next, whoever wrote it.
            Ok(()) => {}
            Err(failure) if failure.is_already_exists() => {}
            Err(failure) => {
                tracing::error!(secret.name = TOKEN_SECRET, error = %crate::error::error_chain(&failure), "could not write the token Secret")
            }
        }
    }

    fn set(&self, token: Option<SharedToken>) {
        *self.inner.token.write().unwrap_or_else(|p| p.into_inner()) = token;
    }
}

impl SharedTokenSource for KubeTokenCache {
    fn shared_token(&self) -> Option<SharedToken> {
        self.inner.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Reads the token from a Secret, `None` when absent or unusable.
pub fn token_of(secret: &Secret) -> Option<SharedToken> {
    let bytes = secret.data.as_ref()?.get(TOKEN_KEY)?;
    SharedToken::from_stored(std::str::from_utf8(&bytes.0).ok()?)
}

/// The token Secret as the reference writes it (`Opaque`, key `token`), keeping an existing
/// object's metadata (resourceVersion included) when repairing.
fn token_secret(token: &SharedToken, existing: Option<Secret>) -> Secret {
    let mut secret = existing.unwrap_or_else(|| Secret {
        metadata: ObjectMeta { name: Some(TOKEN_SECRET.into()), ..ObjectMeta::default() },
        ..Secret::default()
    });
    secret.string_data = None;
    secret.data = Some(BTreeMap::from([(TOKEN_KEY.to_owned(), ByteString(token.expose().as_bytes().to_vec()))]));
    secret
}
