//! The generated serving pair shared by every replica, in Secret `liqo-auth-serving-cert`, so
//! peers see one certificate and one pin, kept across restarts.
//!
//! The adapter only stores and reads PEM; deciding whether a stored pair is still good and
//! generating a new one is the caller's (`server::tls`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;

use crate::adapter::kube::{KubeCtx, KubeFailure};

/// Secret holding the generated serving pair.
pub const SERVING_CERT_SECRET: &str = "liqo-auth-serving-cert";

/// Secret holding a mounted serving pair (cert-manager, an operator's own certificate): what
/// `deploy/` mounts at `/certs`.
pub const MOUNTED_CERT_SECRET: &str = "liqo-auth-tls";

/// Secret where `serve` records the auth URL and pin peers need (not secret, but Secrets are
/// what the service's Role may write).
pub const SERVING_RECORD_SECRET: &str = "liqo-auth-serving-info";
const SERVING_RECORD_KEY: &str = "record";

/// A PEM certificate chain and its key.
#[derive(Clone)]
pub struct PemPair {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PemPair(<redacted>)")
    }
}

/// Why the shared pair could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ServingSecretError {
    #[error("storing the serving certificate in Secret {SERVING_CERT_SECRET}")]
    Kube(#[source] KubeFailure),
    #[error("generating the serving certificate")]
    Generate(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("Secret {SERVING_CERT_SECRET} has no tls.crt/tls.key")]
    Incomplete,
}

/// The stored pair when `reusable` accepts its certificate, else a `generate`d one (given the
/// stored key, to keep it), stored for the other replicas. When another replica stores first,
/// its pair wins.
pub async fn shared_serving_pair<E>(
    ctx: &KubeCtx,
    namespace: &str,
    reusable: impl Fn(&str) -> bool,
    generate: impl FnOnce(Option<&str>) -> Result<PemPair, E>,
) -> Result<PemPair, ServingSecretError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let api: kube::Api<Secret> = ctx.namespaced(namespace);
    let existing = ctx
        .call_opt("reading the serving certificate Secret", api.get(SERVING_CERT_SECRET))
        .await
        .map_err(ServingSecretError::Kube)?;
    if let Some(pair) = existing.as_ref().and_then(pair_of) {
        if reusable(&pair.cert) {
            return Ok(pair);
        }
    }
    // The stored key, if any, is handed to `generate` so a renewal keeps the pin.
    let stored_key = existing.as_ref().and_then(pair_of).map(|pair| pair.key);
    let pair = generate(stored_key.as_deref()).map_err(|e| ServingSecretError::Generate(Box::new(e)))?;
    let mut secret = existing.unwrap_or_default();
    secret.metadata.name = Some(SERVING_CERT_SECRET.into());
    secret.type_ = Some("kubernetes.io/tls".into());
    secret.data = Some(BTreeMap::from([
        ("tls.crt".to_owned(), ByteString(pair.cert.clone().into_bytes())),
        ("tls.key".to_owned(), ByteString(pair.key.clone().into_bytes())),
    ]));
    // Create, or replace with the resourceVersion that was read; not server-side apply: apply
    // lets the last writer win, so two replicas generating together would each serve their own
    // pair while only one is stored. Here the second writer gets AlreadyExists or Conflict and
    // serves the first one's pair.
    let pp = kube::api::PostParams::default();
    let written = if secret.metadata.resource_version.is_some() {
        ctx.call("replacing the serving certificate Secret", api.replace(SERVING_CERT_SECRET, &pp, &secret)).await
    } else {
        ctx.call("creating the serving certificate Secret", api.create(&pp, &secret)).await
    };
    match written {
        Ok(_) => {
            tracing::info!(
                secret.name = SERVING_CERT_SECRET,
                "generated a self-signed serving certificate shared by all replicas"
            );
            Ok(pair)
        }
        // Another replica wrote first: serve what it wrote.
        Err(failure) if failure.is_already_exists() || matches!(failure, KubeFailure::Conflict { .. }) => {
            let secret = ctx
                .call("reading the serving certificate Secret", api.get(SERVING_CERT_SECRET))
                .await
                .map_err(ServingSecretError::Kube)?;
            pair_of(&secret).ok_or(ServingSecretError::Incomplete)
        }
        Err(failure) => Err(ServingSecretError::Kube(failure)),
    }
}

/// The certificate peers see, if any (for `token create --print-peer-command` when `serve`
/// recorded no pin): the mounted pair in Secret `liqo-auth-tls` (what `deploy/` mounts at
/// `/certs`, so the pod serves it when it exists), else the generated pair.
pub async fn stored_serving_certificate(ctx: &KubeCtx, namespace: &str) -> Result<Option<String>, KubeFailure> {
    let api: kube::Api<Secret> = ctx.namespaced(namespace);
    for (name, operation) in [
        (MOUNTED_CERT_SECRET, "reading the mounted serving certificate Secret"),
        (SERVING_CERT_SECRET, "reading the serving certificate Secret"),
    ] {
        let secret = ctx.call_opt(&format!("{operation} {namespace}/{name}"), api.get(name)).await?;
        if let Some(cert) = secret.as_ref().and_then(pair_of).map(|pair| pair.cert) {
            return Ok(Some(cert));
        }
    }
    Ok(None)
}

/// `tls.crt` of Secret `namespace/name`, if the Secret exists and has one.
pub async fn secret_certificate(ctx: &KubeCtx, namespace: &str, name: &str) -> Result<Option<String>, KubeFailure> {
    let api: kube::Api<Secret> = ctx.namespaced(namespace);
    let secret = ctx.call_opt(&format!("reading Secret {namespace}/{name}"), api.get(name)).await?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|data| data.get("tls.crt").cloned())
        .and_then(|bytes| String::from_utf8(bytes.0).ok()))
}

/// What `serve` last recorded about itself (JSON of `identity::port::ServingRecord`), if any.
pub async fn serving_record(ctx: &KubeCtx, namespace: &str) -> Result<Option<String>, KubeFailure> {
    let api: kube::Api<Secret> = ctx.namespaced(namespace);
    let operation = format!("reading Secret {namespace}/{SERVING_RECORD_SECRET}");
    let secret = ctx.call_opt(&operation, api.get(SERVING_RECORD_SECRET)).await?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|data| data.get(SERVING_RECORD_KEY).cloned())
        .and_then(|bytes| String::from_utf8(bytes.0).ok()))
}

/// Writes the record (`json`) unless the stored one already says the same (`same` compares
/// the content without its timestamp), so replicas starting together do not fight over it: a
/// Conflict or AlreadyExists means another replica wrote it first, which is as good.
pub async fn record_serving(
    ctx: &KubeCtx,
    namespace: &str,
    json: String,
    same: impl Fn(&str) -> bool,
) -> Result<(), KubeFailure> {
    let api: kube::Api<Secret> = ctx.namespaced(namespace);
    let operation = format!("reading Secret {namespace}/{SERVING_RECORD_SECRET}");
    let existing = ctx.call_opt(&operation, api.get(SERVING_RECORD_SECRET)).await?;
    let stored = existing
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|data| data.get(SERVING_RECORD_KEY))
        .and_then(|bytes| std::str::from_utf8(&bytes.0).ok());
    if stored.is_some_and(&same) {
        return Ok(());
    }
    let mut secret = existing.unwrap_or_default();
    secret.metadata.name = Some(SERVING_RECORD_SECRET.into());
    secret
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("app.kubernetes.io/name".into(), "liqo-auth".into());
    secret.data = Some(BTreeMap::from([(SERVING_RECORD_KEY.to_owned(), ByteString(json.into_bytes()))]));
    let pp = kube::api::PostParams::default();
    let written = if secret.metadata.resource_version.is_some() {
        let operation = format!("replacing Secret {namespace}/{SERVING_RECORD_SECRET}");
        ctx.call(&operation, api.replace(SERVING_RECORD_SECRET, &pp, &secret)).await
    } else {
        let operation = format!("creating Secret {namespace}/{SERVING_RECORD_SECRET}");
        ctx.call(&operation, api.create(&pp, &secret)).await
    };
    match written {
        Ok(_) => Ok(()),
        Err(failure) if failure.is_already_exists() || matches!(failure, KubeFailure::Conflict { .. }) => Ok(()),
        Err(failure) => Err(failure),
    }
}

fn pair_of(secret: &Secret) -> Option<PemPair> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok());
    Some(PemPair { cert: text("tls.crt")?, key: text("tls.key")? })
}
