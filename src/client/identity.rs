//! `liqo-auth identity list` and `identity remove`: the identities this cluster holds, read
//! and removed through the consumer's [`PeerIdentityStore`] (files or Secrets).

use std::io::Write;

use serde::Serialize;

use crate::client::renew::{due_at, DEFAULT_RENEW_AFTER};
use crate::client::Output;
use crate::identity::port::{PeerIdentityStore, StoreError};
use crate::identity::{ClusterId, ClusterValueError};
use crate::pki::{format_unix, CertificateSummary};

/// What to do.
#[derive(Clone, Debug)]
pub enum IdentityAction {
    List { output: Output },
    Remove { provider: String },
}

/// Why an identity command failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid provider cluster ID")]
    Provider(#[source] ClusterValueError),
    #[error("reading or removing stored identities")]
    Store(#[source] StoreError),
    #[error("writing the output")]
    Write(#[source] std::io::Error),
}

/// One identity as `identity list --output json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityEntry {
    pub provider_id: String,
    pub provider_name: Option<String>,
    pub namespace: String,
    pub api_server_url: String,
    pub auth_url: Option<String>,
    pub certificate_serial: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// When it is due for renewal at the default fraction (2/3), RFC 3339.
    pub renew_at: String,
    pub expired: bool,
    pub stored_in: String,
}

/// Runs `action` against `store`, printing to `out`.
pub async fn run(
    action: IdentityAction,
    store: &dyn PeerIdentityStore,
    out: &mut dyn Write,
) -> Result<(), IdentityError> {
    match action {
        IdentityAction::List { output } => {
            let entries = list(store).await?;
            let text = match output {
                Output::Json => serde_json::to_string_pretty(&entries).expect("entries serialise") + "\n",
                Output::Text => render_text(&entries),
                Output::Yaml => crate::output::document(output, &entries).unwrap_or_default(),
            };
            out.write_all(text.as_bytes()).map_err(IdentityError::Write)
        }
        IdentityAction::Remove { provider } => {
            let provider = ClusterId::parse(&provider).map_err(IdentityError::Provider)?;
            let kubeconfig =
                store.existing(&provider).await.map_err(IdentityError::Store)?.and_then(|i| i.kubeconfig_path);
            let mut removed = store.remove(&provider).await.map_err(IdentityError::Store)?;
            if let Some(path) = kubeconfig {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed.push(format!("kubeconfig {path}")),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(IdentityError::Store(StoreError::io(format!("removing {path}"), e))),
                }
            }
            let text = if removed.is_empty() {
                format!("No identity was stored for provider {provider}.\n")
            } else {
                let lines: String = removed.iter().map(|r| format!("  removed {r}\n")).collect();
                format!("Removed the identity for provider {provider}:\n{lines}")
            };
            out.write_all(text.as_bytes()).map_err(IdentityError::Write)
        }
    }
}

/// Every stored identity, as listed.
pub async fn list(store: &dyn PeerIdentityStore) -> Result<Vec<IdentityEntry>, IdentityError> {
    let now = crate::pki::unix_now();
    let stored = store.list().await.map_err(IdentityError::Store)?;
    Ok(stored
        .into_iter()
        .filter_map(|entry| {
            let summary = CertificateSummary::from_pem(entry.identity.certificate_pem.as_bytes())?;
            Some(IdentityEntry {
                provider_id: entry.provider.to_string(),
                provider_name: entry.identity.provider_name.clone(),
                namespace: entry.identity.namespace.clone(),
                api_server_url: entry.identity.api_server_url.clone(),
                auth_url: entry.identity.auth_url.clone(),
                certificate_serial: summary.serial.clone(),
                not_before: format_unix(summary.not_before),
                not_after: format_unix(summary.not_after),
                renew_at: format_unix(due_at(&summary, DEFAULT_RENEW_AFTER)),
                expired: summary.not_after <= now,
                stored_in: entry.location,
            })
        })
        .collect())
}

fn render_text(entries: &[IdentityEntry]) -> String {
    if entries.is_empty() {
        return "No identities stored.\n".to_owned();
    }
    let mut out = format!("{:<38} {:<22} {:<22} {:<8} {}\n", "PROVIDER", "EXPIRES", "RENEW AT", "STATE", "STORED IN");
    for e in entries {
        let state = if e.expired { "expired" } else { "valid" };
        out.push_str(&format!(
            "{:<38} {:<22} {:<22} {:<8} {}\n",
            e.provider_id, e.not_after, e.renew_at, state, e.stored_in
        ));
    }
    out
}
