//! Operator subcommands other than `serve`: `token show|create|list|revoke|rotate-key` and
//! `tenant list|remove`, over the ports of a backend opened by `BackendConfig::open`. Results
//! go to `out` (stdout in the binary), notes for the operator to stderr.
//!
//! Only `token create` may create state (the data dir, the signing key); every other command
//! opens existing state and fails clearly when there is none.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{Access, Backend, BackendConfig};
use crate::identity::join_token::{self, JoinTokenSpec};
use crate::identity::port::PeerRecord;
use crate::identity::ClusterId;
use crate::output::Output;
use crate::pki::{format_unix, unix_now, CertificateSummary};

/// Boxed error for command results.
pub type CommandError = Box<dyn std::error::Error + Send + Sync>;

/// A command that could not do what was asked, for reasons of its own (not of the backend).
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The object named on the command line does not exist.
    #[error("{what} not found in {location}: {hint}")]
    NotFound { what: String, location: String, hint: String },
    /// A flag value that parsed but cannot be used.
    #[error("{0}")]
    Invalid(String),
}

/// What a `token` command does.
#[derive(Debug, Clone)]
pub enum TokenAction {
    /// Print the shared token.
    Show { output: Output },
    /// Mint a join token.
    Create(TokenCreateOptions),
    /// List join-token records.
    List { output: Output },
    /// Revoke one join token.
    Revoke { id: String, ignore_not_found: bool, output: Output },
    /// Replace the join-token signing key (with `dry_run`, only say what it would stop).
    RotateKey { dry_run: bool, output: Output },
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
    /// `serve`'s `--address`, when given (else what `serve` recorded).
    pub address: Option<String>,
    pub cert_path: Option<PathBuf>,
    pub token_out: Option<PathBuf>,
    pub local_cluster_id: Option<String>,
    pub output: Output,
}

/// What a `tenant` command does.
#[derive(Debug, Clone)]
pub enum TenantAction {
    List { output: Output },
    Remove { cluster_id: String, delete_namespace: bool, ignore_not_found: bool, dry_run: bool, output: Output },
}

/// A join token as `token list` shows it (never the token itself).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenRow {
    id: String,
    bound_to: Option<String>,
    #[serde(serialize_with = "crate::output::rfc3339")]
    created_at: i64,
    #[serde(serialize_with = "crate::output::rfc3339")]
    expires_at: i64,
    uses_left: u32,
    max_uses: u32,
    status: &'static str,
}

/// A peer as `tenant list` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TenantRow {
    cluster_id: String,
    cluster_name: String,
    namespace: String,
    certificate_serial: Option<String>,
    /// notBefore of the certificate: signers backdate it (about 5 minutes) for clock skew.
    #[serde(serialize_with = "crate::output::rfc3339_opt")]
    valid_from: Option<i64>,
    #[serde(serialize_with = "crate::output::rfc3339_opt")]
    expires_at: Option<i64>,
}

/// What `tenant remove`, `token revoke` and `token rotate-key` did (or, dry, would do).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Removal {
    dry_run: bool,
    removed: Vec<String>,
}

/// Runs a `token` subcommand, writing its result to `out`.
pub async fn token(backend: &BackendConfig, action: TokenAction, out: &mut dyn Write) -> Result<(), CommandError> {
    if let TokenAction::Create(options) = action {
        return create_token(backend, options, out).await;
    }
    let location = backend.describe();
    let backend = backend.open(Access::Existing).await?;
    match action {
        TokenAction::Create(_) => unreachable!("handled above"),
        TokenAction::Show { output } => {
            let token = backend.cluster.shared_token().await?.ok_or_else(|| OperatorError::NotFound {
                what: format!("usable shared token ({})", backend.shared_token_location()),
                location: location.clone(),
                hint: "`liqo-auth serve` creates it at start".into(),
            })?;
            #[derive(Serialize)]
            struct Shown<'a> {
                token: &'a str,
            }
            crate::output::print(out, output, &Shown { token: token.expose() }, || format!("{}\n", token.expose()))?;
            Ok(())
        }
        TokenAction::List { output } => {
            let store = &backend.join_tokens;
            let key_id = store.key().await?.map(|k| k.id());
            let now = unix_now();
            let rows: Vec<TokenRow> = store
                .records()
                .await?
                .into_iter()
                .map(|record| TokenRow {
                    status: record.status(now, key_id.as_deref()),
                    uses_left: record.uses_left(),
                    id: record.id,
                    bound_to: record.cluster_id,
                    created_at: record.created_at,
                    expires_at: record.expires_at,
                    max_uses: record.max_uses,
                })
                .collect();
            crate::output::print(out, output, &rows, || token_table(&rows))?;
            Ok(())
        }
        TokenAction::Revoke { id, ignore_not_found, output } => {
            let removed = match backend.join_tokens.revoke(&id).await? {
                Some(record) => vec![format!("join token {}", record.id)],
                None if ignore_not_found => Vec::new(),
                None => {
                    return Err(OperatorError::NotFound {
                        what: format!("join token {id:?}"),
                        location,
                        hint: "see `liqo-auth token list`; --ignore-not-found makes this no error".into(),
                    }
                    .into())
                }
            };
            let removal = Removal { dry_run: false, removed };
            crate::output::print(out, output, &removal, || match removal.removed.first() {
                Some(what) => format!("revoked {what}\n"),
                None => format!("no join token {id:?}; nothing to revoke\n"),
            })?;
            Ok(())
        }
        TokenAction::RotateKey { dry_run, output } => {
            let store = &backend.join_tokens;
            let key_id = store.key().await?.map(|k| k.id());
            let now = unix_now();
            let outstanding: Vec<String> = store
                .records()
                .await?
                .into_iter()
                .filter(|r| r.status(now, key_id.as_deref()) == "valid")
                .map(|r| format!("join token {}", r.id))
                .collect();
            let count = outstanding.len();
            let text = if dry_run {
                format!("dry run: rotating the join-token signing key would stop {count} outstanding join token(s); nothing changed\n")
            } else {
                let key = store.rotate_key().await?;
                format!(
                    "rotated the join-token signing key (new key ID {}); {count} outstanding join token(s) no longer work\n",
                    key.id()
                )
            };
            let removal = Removal { dry_run, removed: outstanding };
            crate::output::print(out, output, &removal, || text)?;
            Ok(())
        }
    }
}

/// Runs a `tenant` subcommand, writing its result to `out`.
pub async fn tenant(backend: &BackendConfig, action: TenantAction, out: &mut dyn Write) -> Result<(), CommandError> {
    let location = backend.describe();
    let backend = backend.open(Access::Existing).await?;
    match action {
        TenantAction::List { output } => {
            let rows: Vec<TenantRow> = backend
                .tenants
                .tenants()
                .await?
                .into_iter()
                .map(|peer| {
                    let summary =
                        peer.identity.as_ref().and_then(|i| CertificateSummary::from_pem(i.certificate_pem.as_bytes()));
                    TenantRow {
                        cluster_name: peer_name(&peer),
                        cluster_id: peer.cluster_id,
                        namespace: peer.namespace,
                        certificate_serial: summary.as_ref().map(|s| s.serial.clone()),
                        valid_from: summary.as_ref().map(|s| s.not_before),
                        expires_at: summary.as_ref().map(|s| s.not_after),
                    }
                })
                .collect();
            crate::output::print(out, output, &rows, || tenant_table(&rows))?;
            Ok(())
        }
        TenantAction::Remove { cluster_id, delete_namespace, ignore_not_found, dry_run, output } => {
            let cluster = ClusterId::parse(&cluster_id)?;
            let join_tokens = &backend.join_tokens;
            let mut removed = backend.tenants.remove_tenant(&cluster, delete_namespace, dry_run).await?;
            // A join token bound to the removed cluster would let it peer again at once: an
            // unpeering revokes them (unbound tokens are left alone).
            let now = unix_now();
            for record in join_tokens.records().await? {
                let bound_here = record.cluster_id.as_deref() == Some(cluster.as_str());
                if bound_here
                    && !record.revoked
                    && record.expires_at > now
                    && (dry_run || join_tokens.revoke(&record.id).await?.is_some())
                {
                    removed.push(format!("join token {} (bound to this cluster; revoked)", record.id));
                }
            }
            if removed.is_empty() && !ignore_not_found {
                return Err(OperatorError::NotFound {
                    what: format!("peer with cluster ID {cluster}"),
                    location,
                    hint:
                        "nothing is stored for it (see `liqo-auth tenant list`); --ignore-not-found makes this no error"
                            .into(),
                }
                .into());
            }
            let removal = Removal { dry_run, removed };
            crate::output::print(out, output, &removal, || {
                let verb = if dry_run { "would remove" } else { "removed" };
                let mut text: String = removal.removed.iter().map(|what| format!("{verb} {what}\n")).collect();
                match (removal.removed.is_empty(), dry_run) {
                    (true, _) => text.push_str(&format!("nothing stored for cluster {cluster}\n")),
                    (false, true) => text.push_str("dry run: nothing was removed\n"),
                    (false, false) => {
                        text.push_str(&format!("cluster {cluster} is unpeered; it may peer again with a new token\n"))
                    }
                }
                text
            })?;
            Ok(())
        }
    }
}

/// A stable code for `-o json` errors, from the first cause in `error`'s chain that has one.
pub fn error_code(error: &(dyn std::error::Error + 'static)) -> &'static str {
    use crate::identity::port::StoreError;
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(error) = current.downcast_ref::<OperatorError>() {
            return match error {
                OperatorError::NotFound { .. } => "not_found",
                OperatorError::Invalid(_) => "invalid",
            };
        }
        if let Some(crate::config::ConfigError::KubeConnect(_)) = current.downcast_ref::<crate::config::ConfigError>() {
            return "kubernetes_unreachable";
        }
        if let Some(error) = current.downcast_ref::<StoreError>() {
            return match error {
                StoreError::Missing { .. } => "not_found",
                StoreError::Unavailable { .. } => "unavailable",
                StoreError::Forbidden { .. } => "forbidden",
                StoreError::Corrupt { .. } => "corrupt",
                StoreError::AlreadyExists { .. } => "already_exists",
                StoreError::NamespaceTaken { .. } => "namespace_taken",
                StoreError::Backend { .. } => "backend",
            };
        }
        cause = current.source();
    }
    "failed"
}

fn token_table(rows: &[TokenRow]) -> String {
    let mut text = format!("{:<32}  {:<36}  {:<20}  {:<9}  STATUS\n", "ID", "BOUND TO", "EXPIRES", "USES LEFT");
    for row in rows {
        text.push_str(&format!(
            "{:<32}  {:<36}  {:<20}  {:<9}  {}\n",
            row.id,
            row.bound_to.as_deref().unwrap_or("(any cluster)"),
            format_unix(row.expires_at),
            format!("{}/{}", row.uses_left, row.max_uses),
            row.status,
        ));
    }
    text
}

fn tenant_table(rows: &[TenantRow]) -> String {
    let mut text = format!(
        "{:<36}  {:<20}  {:<40}  {:<40}  {:<20}  VALID FROM\n",
        "CLUSTER ID", "NAME", "TENANT NAMESPACE", "CERTIFICATE SERIAL", "EXPIRES"
    );
    let time = |t: Option<i64>| t.map_or_else(|| "-".to_owned(), format_unix);
    for row in rows {
        text.push_str(&format!(
            "{:<36}  {:<20}  {:<40}  {:<40}  {:<20}  {}\n",
            row.cluster_id,
            row.cluster_name,
            row.namespace,
            row.certificate_serial.as_deref().unwrap_or("(no certificate)"),
            time(row.expires_at),
            time(row.valid_from),
        ));
    }
    text
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
    let backend_flags = backend.command_flags();
    let backend = backend.open(Access::Create).await?;
    // Everything the peer command needs is resolved before a token exists, so a failure
    // leaves no orphan token behind.
    let peer_command =
        if args.print_peer_command { Some(peer_command_target(&backend, &args, &backend_flags).await?) } else { None };
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
    let mut created = Created {
        id: record.id.clone(),
        bound_to: record.cluster_id.clone(),
        expires_at: record.expires_at,
        max_uses: record.max_uses,
        token: None,
        token_file: None,
        peer_command: None,
    };
    let Some(PeerTarget { url, pin }) = peer_command else {
        created.token = Some(minted.expose().to_owned());
        crate::output::print(out, args.output, &created, || format!("{}\n", minted.expose()))?;
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
    eprintln!("{CONSUMER_NOTE}");
    let command = format!("liqo-auth peer --auth-url {url} --token-file {file_name}{pin}");
    created.token_file = Some(file.display().to_string());
    created.peer_command = Some(command.clone());
    crate::output::print(out, args.output, &created, || format!("{command}\n"))?;
    Ok(())
}

/// What the printed peer command assumes about the consumer, and what to add otherwise.
pub const CONSUMER_NOTE: &str = "run this on the consumer; it stores the identity in the consumer's Kubernetes cluster (namespace from its kubeconfig context, else liqo): add --backend local --data-dir DIR when the consumer keeps its state in a data dir (`liqo-auth init --backend local --data-dir DIR` makes one), -n NAMESPACE when Liqo runs in another namespace";

/// What `token create` made (`-o json|yaml`); the token itself only when it was not written
/// to a file.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    id: String,
    bound_to: Option<String>,
    #[serde(serialize_with = "crate::output::rfc3339")]
    expires_at: i64,
    max_uses: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_command: Option<String>,
}

/// Where the printed peer command points, and the pin it carries.
struct PeerTarget {
    url: String,
    pin: Option<String>,
}

/// The URL: `--advertise-auth-address`, else what `serve` recorded, else `--address`; the pin:
/// `--cert-path`, else what `serve` recorded, else the stored serving certificate.
async fn peer_command_target(
    backend: &Backend,
    args: &TokenCreateOptions,
    backend_flags: &str,
) -> Result<PeerTarget, CommandError> {
    let url =
        advertised_url(backend, args.advertise_auth_address.as_deref(), args.address.as_deref(), backend_flags).await?;
    let pin = serving_pin(backend, args.cert_path.as_deref()).await?;
    Ok(PeerTarget { url, pin })
}

/// The URL peers use: `advertise` (`--advertise-auth-address`), else `address` (`--address`),
/// else what the running `serve` recorded; an error that says which flag to pass otherwise.
pub(crate) async fn advertised_url(
    backend: &Backend,
    advertise: Option<&str>,
    address: Option<&str>,
    backend_flags: &str,
) -> Result<String, CommandError> {
    let record = backend.cluster.serving_record().await?;
    let url = match (advertise, address, &record) {
        (Some(advertised), _, _) => crate::config::auth_url(Some(advertised), ""),
        (None, Some(address), _) => crate::config::auth_url(None, address),
        (None, None, Some(record)) => {
            if record.auth_url_guessed {
                if let Some(url) = &record.auth_url {
                    eprintln!(
                        "serve listens on every interface ({}): the command uses {url}, this host's first LAN address; pass --advertise-auth-address HOST[:PORT] if peers reach it by another name",
                        record.listen
                    );
                }
            }
            record.auth_url.clone()
        }
        (None, None, None) => None,
    };
    url.ok_or_else(|| {
        let why = match &record {
            Some(record) if record.ca_hash.is_none() => format!("serve runs plain HTTP on {} (TLS terminated in front?)", record.listen),
            Some(record) => format!("serve listens on every interface ({}) and has no --advertise-auth-address", record.listen),
            None => format!("no running serve has recorded its address here (start `liqo-auth serve{backend_flags} --enable-tls` first)"),
        };
        format!("no URL to give peers: {why}; pass --advertise-auth-address HOST[:PORT] (the address peers use)").into()
    })
}

/// The SPKI pin of the first certificate in `path`.
fn pin_of_file(path: &Path) -> Result<Option<String>, CommandError> {
    let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let spki = crate::pki::first_certificate_spki(&pem)
        .ok_or_else(|| format!("{} holds no PEM certificate", path.display()))?;
    Ok(Some(crate::pki::spki_pin_of_spki(&spki)))
}

/// The SPKI pin peers should use: of `cert_path` when given, else the one the running `serve`
/// recorded (what it really serves), else of the serving certificate the backend keeps (mounted
/// or generated).
pub(crate) async fn serving_pin(backend: &Backend, cert_path: Option<&Path>) -> Result<Option<String>, CommandError> {
    if let Some(path) = cert_path {
        return pin_of_file(path);
    }
    if let Some(pin) = backend.cluster.serving_record().await?.and_then(|r| r.ca_hash) {
        return Ok(Some(pin));
    }
    let pem = backend.cluster.serving_certificate().await?.map(String::into_bytes);
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
