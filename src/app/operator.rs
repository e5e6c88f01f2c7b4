//! Operator subcommands other than `serve`: `token show|create|list|revoke|rotate-key` and
//! `tenant list|remove`, over the ports of a backend opened by `BackendConfig::open`. Results
//! go to `out` (stdout in the binary), notes for the operator to stderr.
//!
//! Only `token create` may create state (the data dir, the signing key); every other command
//! opens existing state and fails clearly when there is none.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Access, Backend, BackendConfig};
use crate::identity::join_token::{self, JoinTokenSpec};
use crate::identity::port::PeerRecord;
use crate::identity::ClusterId;
use crate::pki::{format_unix, unix_now, CertificateSummary};

/// Boxed error for command results.
pub type CommandError = Box<dyn std::error::Error + Send + Sync>;

/// What a `token` command does.
#[derive(Debug, Clone)]
pub enum TokenAction {
    /// Print the shared token.
    Show,
    /// Mint a join token.
    Create(TokenCreateOptions),
    /// List join-token records.
    List,
    /// Revoke one join token.
    Revoke { id: String },
    /// Replace the join-token signing key.
    RotateKey,
}

/// `token create` options.
#[derive(Debug, Clone)]
pub struct TokenCreateOptions {
    pub ttl: Duration,
    /// Bind the token to this remote cluster.
    pub cluster_id: Option<String>,
    pub max_uses: u32,
    pub print_peer_command: bool,
    pub advertise_auth_address: Option<String>,
    pub address: String,
    pub cert_path: Option<PathBuf>,
    pub token_out: Option<PathBuf>,
    pub local_cluster_id: Option<String>,
}

/// What a `tenant` command does.
#[derive(Debug, Clone)]
pub enum TenantAction {
    List,
    Remove { cluster_id: String, delete_namespace: bool },
}

/// Runs a `token` subcommand, writing its result to `out`.
pub async fn token(backend: &BackendConfig, action: TokenAction, out: &mut dyn Write) -> Result<(), CommandError> {
    if let TokenAction::Create(options) = action {
        return create_token(backend, options, out).await;
    }
    let backend = backend.open(Access::Existing).await?;
    match action {
        TokenAction::Create(_) => unreachable!("handled above"),
        TokenAction::Show => {
            let token = backend.cluster.shared_token().await?.ok_or("no usable shared token is stored")?;
            writeln!(out, "{}", token.expose())?;
            Ok(())
        }
        TokenAction::List => {
            let store = &backend.join_tokens;
            let key_id = store.key().await?.map(|k| k.id());
            let now = unix_now();
            writeln!(out, "{:<32}  {:<36}  {:<20}  {:<9}  STATUS", "ID", "BOUND TO", "EXPIRES", "USES LEFT")?;
            for record in store.records().await? {
                writeln!(
                    out,
                    "{:<32}  {:<36}  {:<20}  {:<9}  {}",
                    record.id,
                    record.cluster_id.as_deref().unwrap_or("(any cluster)"),
                    format_unix(record.expires_at),
                    format!("{}/{}", record.uses_left(), record.max_uses),
                    record.status(now, key_id.as_deref()),
                )?;
            }
            Ok(())
        }
        TokenAction::Revoke { id } => match backend.join_tokens.revoke(&id).await? {
            Some(record) => {
                writeln!(out, "revoked join token {}", record.id)?;
                Ok(())
            }
            None => Err(format!("no join token with ID {id:?} (see `liqo-auth token list`)").into()),
        },
        TokenAction::RotateKey => {
            let store = &backend.join_tokens;
            let outstanding = store.records().await?.iter().filter(|r| !r.revoked && r.expires_at > unix_now()).count();
            let key = store.rotate_key().await?;
            writeln!(
                out,
                "rotated the join-token signing key (new key ID {}); {outstanding} outstanding join token(s) no longer work",
                key.id()
            )?;
            Ok(())
        }
    }
}

/// Runs a `tenant` subcommand, writing its result to `out`.
pub async fn tenant(backend: &BackendConfig, action: TenantAction, out: &mut dyn Write) -> Result<(), CommandError> {
    let backend = backend.open(Access::Existing).await?;
    match action {
        TenantAction::List => {
            let peers = backend.tenants.tenants().await?;
            writeln!(
                out,
                "{:<36}  {:<20}  {:<40}  {:<40}  {:<20}  ISSUED",
                "CLUSTER ID", "NAME", "TENANT NAMESPACE", "CERTIFICATE SERIAL", "EXPIRES"
            )?;
            for peer in peers {
                let summary =
                    peer.identity.as_ref().and_then(|i| CertificateSummary::from_pem(i.certificate_pem.as_bytes()));
                let (serial, expires, issued) = match &summary {
                    Some(s) => (s.serial.clone(), format_unix(s.not_after), format_unix(s.not_before)),
                    None => ("(no certificate)".to_owned(), "-".to_owned(), "-".to_owned()),
                };
                writeln!(
                    out,
                    "{:<36}  {:<20}  {:<40}  {:<40}  {:<20}  {}",
                    peer.cluster_id,
                    peer_name(&peer),
                    peer.namespace,
                    serial,
                    expires,
                    issued
                )?;
            }
            Ok(())
        }
        TenantAction::Remove { cluster_id, delete_namespace } => {
            let cluster = ClusterId::parse(&cluster_id)?;
            let join_tokens = &backend.join_tokens;
            let mut removed = backend.tenants.remove_tenant(&cluster, delete_namespace).await?;
            // A join token bound to the removed cluster would let it peer again at once: an
            // unpeering revokes them (unbound tokens are left alone).
            let now = unix_now();
            for record in join_tokens.records().await? {
                let bound_here = record.cluster_id.as_deref() == Some(cluster.as_str());
                if bound_here
                    && !record.revoked
                    && record.expires_at > now
                    && join_tokens.revoke(&record.id).await?.is_some()
                {
                    removed.push(format!("join token {} (bound to this cluster; revoked)", record.id));
                }
            }
            if removed.is_empty() {
                writeln!(out, "nothing stored for cluster {cluster}")?;
            }
            for what in &removed {
                writeln!(out, "removed {what}")?;
            }
            if !removed.is_empty() {
                writeln!(out, "cluster {cluster} is unpeered; it may peer again with a new token")?;
            }
            Ok(())
        }
    }
}

async fn create_token(
    backend: &BackendConfig,
    args: TokenCreateOptions,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let binding = args.cluster_id.as_deref().map(ClusterId::parse).transpose()?;
    if args.ttl.as_secs() == 0 {
        return Err("--ttl must be at least 1s".into());
    }
    let backend = backend.open(Access::Create).await?;
    // Everything the peer command needs is resolved before a token exists, so a failure
    // leaves no orphan token behind.
    let peer_command = if args.print_peer_command {
        let url = crate::config::auth_url(args.advertise_auth_address.as_deref(), &args.address).ok_or(
            "--address names no host peers can reach: pass --advertise-auth-address HOST[:PORT] (the address peers use)",
        )?;
        Some((url, serving_pin(&backend, args.cert_path.as_deref()).await?))
    } else {
        None
    };
    let issuer = backend.cluster.cluster_id(args.local_cluster_id.as_deref()).await?;
    let store = &backend.join_tokens;
    let key = store.ensure_key().await?;
    let spec = JoinTokenSpec { ttl: args.ttl, cluster: binding, max_uses: args.max_uses };
    let minted = join_token::mint(&key, &issuer, &spec, unix_now());
    store.create_record(&minted.record).await?;
    let record = &minted.record;
    eprintln!(
        "created join token {} for {}: valid until {}, {} use(s)",
        record.id,
        record.cluster_id.as_deref().map_or("any cluster".to_owned(), |c| format!("cluster {c}")),
        format_unix(record.expires_at),
        record.max_uses
    );
    let Some((url, pin)) = peer_command else {
        writeln!(out, "{}", minted.expose())?;
        return Ok(());
    };
    let file = match args.token_out {
        Some(path) => path,
        None => std::env::current_dir()?.join(format!("liqo-auth-join-token-{}", record.id)),
    };
    crate::fs::write_private_file(&file, format!("{}\n", minted.expose()).as_bytes())?;
    let file_name = display_path(&file);
    eprintln!(
        "wrote the token to {} (mode 0600): hand it to the remote operator over a private channel",
        file.display()
    );
    eprintln!("(or feed it on stdin: `... --token-stdin < {file_name}` instead of --token-file)");
    let pin = match pin {
        Some(pin) => format!(" --ca-hash {pin}"),
        None => {
            eprintln!("no serving certificate found to pin: the command trusts the peer's system roots (give --cert-path to pin one)");
            String::new()
        }
    };
    writeln!(out, "liqo-auth peer --auth-url {url} --token-file {file_name}{pin}")?;
    Ok(())
}

/// The SPKI pin of the serving certificate: `--cert-path`, else the generated one.
pub(crate) async fn serving_pin(backend: &Backend, cert_path: Option<&Path>) -> Result<Option<String>, CommandError> {
    let pem = match cert_path {
        Some(path) => Some(std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?),
        None => backend.cluster.serving_certificate().await?.map(String::into_bytes),
    };
    match pem {
        Some(pem) => {
            let spki =
                crate::pki::first_certificate_spki(&pem).ok_or("the serving certificate is not a PEM certificate")?;
            Ok(Some(crate::pki::spki_pin_of_spki(&spki)))
        }
        None => Ok(None),
    }
}

/// The peer's name: stored (local backend), else read from the tenant namespace name
/// `liqo-tenant-<name>-<6 hex>` (Liqo names tenant namespaces so).
fn peer_name(peer: &PeerRecord) -> String {
    if let Some(name) = &peer.cluster_name {
        return name.clone();
    }
    peer.namespace
        .strip_prefix("liqo-tenant-")
        .and_then(|rest| rest.rsplit_once('-'))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_else(|| "-".to_owned())
}

fn display_path(path: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let shown = path.strip_prefix(&cwd).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf());
    let text = shown.display().to_string();
    if text.contains(|c: char| c.is_whitespace() || c == '\'') {
        format!("'{}'", text.replace('\'', r"'\''"))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_printed_in_utc() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn peer_names_come_from_the_tenant_namespace_when_not_stored() {
        let peer = |namespace: &str| PeerRecord {
            cluster_id: "c".into(),
            cluster_name: None,
            namespace: namespace.into(),
            identity: None,
        };
        assert_eq!(peer_name(&peer("liqo-tenant-rome-a1b2c3")), "rome");
        assert_eq!(peer_name(&peer("liqo-tenant-my-rome-a1b2c3")), "my-rome");
        assert_eq!(peer_name(&peer("elsewhere")), "-");
    }
}
