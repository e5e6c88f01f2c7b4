//! `KubeTokenCache`: the shared token from Secret `auth-token`, kept current by a watch.
//!
//! - Reads come from memory, never a request per call: the token is checked on every request.
//! - After any gap in the watch, kube's watcher lists again, so a Secret deleted while the
//!   watch was down is noticed and created anew instead of the old token staying valid.
//! - A Secret without a usable `token` (missing, blank, not UTF-8) never authenticates anyone:
//!   an empty token would otherwise match an empty bearer. It is repaired with a new token.
//!
//! Checking a presented token against the cached one is the domain's.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::Api;
use tokio::sync::watch;

use crate::adapter::kube::{KubeCtx, KubeFailure, TOKEN_KEY, TOKEN_SECRET};
use crate::identity::port::SharedTokenSource;
use crate::identity::SharedToken;

/// The cached shared token and whether the first list has completed.
#[derive(Clone, Default)]
pub struct KubeTokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    token: RwLock<Option<SharedToken>>,
    /// Becomes true once the first list completed; a channel so start-up can await it.
    synced: watch::Sender<bool>,
}

impl Default for Inner {
    fn default() -> Self {
        Self { token: RwLock::new(None), synced: watch::Sender::new(false) }
    }
}

impl KubeTokenCache {
    /// Starts the watch in the background and returns the cache it fills.
    pub fn start(ctx: &KubeCtx, namespace: &str) -> Self {
        let cache = Self::default();
        let api: Api<Secret> = ctx.namespaced(namespace);
        let (task_cache, ctx) = (cache.clone(), ctx.clone());
        tokio::spawn(async move { task_cache.run(&ctx, api).await });
        cache
    }

    /// True once the first list completed (readiness).
    pub fn synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// Waits at most `timeout` until synced; false when the first list did not complete in time.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut synced = self.inner.synced.subscribe();
        // `wait_for` cannot fail here: `self` keeps the sender alive.
        let in_time = matches!(tokio::time::timeout(timeout, synced.wait_for(|synced| *synced)).await, Ok(Ok(_)));
        in_time
    }

    async fn run(self, ctx: &KubeCtx, api: Api<Secret>) {
        let config = watcher::Config::default().fields(&format!("metadata.name={TOKEN_SECRET}"));
        // kube's watcher backoff spaces out re-lists after errors; errors still reach us to log.
        let mut stream = watcher(api.clone(), config).default_backoff().boxed();
        let mut listed: Option<Secret> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => listed = None,
                Ok(watcher::Event::InitApply(secret)) => listed = Some(secret),
                Ok(watcher::Event::InitDone) => {
                    self.observe(ctx, &api, listed.take()).await;
                    self.inner.synced.send_replace(true);
                }
                Ok(watcher::Event::Apply(secret)) => self.observe(ctx, &api, Some(secret)).await,
                Ok(watcher::Event::Delete(_)) => self.observe(ctx, &api, None).await,
                Err(error) => {
                    tracing::warn!(secret.name = TOKEN_SECRET, error = %error, "watching the token Secret failed; retrying");
                }
            }
        }
    }

    /// Applies what the watch saw: use a usable token; create a missing Secret; repair one
    /// without a usable value.
    async fn observe(&self, ctx: &KubeCtx, api: &Api<Secret>, secret: Option<Secret>) {
        let usable = secret.as_ref().and_then(token_of);
        self.set(usable.clone());
        if usable.is_some() {
            return;
        }
        let fresh = SharedToken::generate();
        let result = match secret {
            None => {
                tracing::info!(secret.name = TOKEN_SECRET, "the token Secret is missing; creating it with a new token");
                ctx.call("creating the token Secret", api.create(&PostParams::default(), &token_secret(&fresh, None)))
                    .await
                    .map(|_| ())
            }
            Some(existing) => {
                tracing::warn!(
                    secret.name = TOKEN_SECRET,
                    "the token Secret has no usable token; replacing it with a new token"
                );
                ctx.call(
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

/// Reads the shared token straight from Secret `auth-token` (for commands, which run no watch);
/// `None` when the Secret is missing or holds no usable token.
pub async fn read_shared_token(ctx: &KubeCtx, namespace: &str) -> Result<Option<SharedToken>, KubeFailure> {
    let api: Api<Secret> = ctx.namespaced(namespace);
    let secret = ctx.call_opt("reading Secret auth-token", api.get(TOKEN_SECRET)).await?;
    Ok(secret.as_ref().and_then(token_of))
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

/// The token Secret as Liqo writes it (`Opaque`, key `token`), keeping an existing
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiting_for_the_first_list_ends_when_it_completes_or_at_the_deadline() {
        let cache = KubeTokenCache::default();
        assert!(!cache.wait_synced(Duration::from_secs(5)).await, "no list completed");
        let synced = cache.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            synced.inner.synced.send_replace(true);
        });
        let started = tokio::time::Instant::now();
        assert!(cache.wait_synced(Duration::from_secs(5)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(1), "woken by the sync, not by polling");
        assert!(cache.synced());
    }
}
