//! Operator subcommands other than `serve`: `token show|create|list|revoke|rotate-key` and
//! `tenant list|remove`, thin wrappers over the backends. Results go to `out` (stdout in the
//! binary), notes for the operator to stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::adapter::kube::{KubeJoinTokens, KubeStore};
use crate::adapter::local::LocalStore;
use crate::cli::{BackendArgs, BackendKind, TenantCommand, TokenCommand, TokenCreateArgs};
use crate::identity::join_token::{self, JoinTokenSpec};
use crate::identity::port::{JoinTokenStore, PeerRecord, SharedTokenSource};
use crate::identity::ClusterId;
use crate::pki::{format_unix, unix_now, CertificateSummary};

/// Boxed error for command results.
pub type CommandError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a `token` subcommand, writing its result to `out`.
pub async fn token(command: TokenCommand, out: &mut dyn Write) -> Result<(), CommandError> {
    match command {
        TokenCommand::Show(backend) => {
            let token = match Backend::open(&backend).await? {
                Backend::Local(store) => store.shared_token(),
                Backend::Kubernetes { client, namespace } => {
                    let api: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client, &namespace);
                    let secret = crate::adapter::kube::call_opt(
                        "reading Secret auth-token",
                        api.get(crate::adapter::kube::TOKEN_SECRET),
                    )
                    .await?;
                    secret.as_ref().and_then(crate::adapter::kube::kube_token::token_of)
                }
            };
            let token = token.ok_or("no usable shared token is stored")?;
            writeln!(out, "{}", token.expose())?;
            Ok(())
        }
        TokenCommand::Create(args) => create_token(*args, out).await,
        TokenCommand::List(backend) => {
            let store = Backend::open(&backend).await?.join_tokens();
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
        TokenCommand::Revoke(args) => {
            let store = Backend::open(&args.backend).await?.join_tokens();
            match store.revoke(&args.id).await? {
                Some(record) => {
                    writeln!(out, "revoked join token {}", record.id)?;
                    Ok(())
                }
                None => Err(format!("no join token with ID {:?} (see `liqo-auth token list`)", args.id).into()),
            }
        }
        TokenCommand::RotateKey(backend) => {
            let store = Backend::open(&backend).await?.join_tokens();
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
pub async fn tenant(command: TenantCommand, out: &mut dyn Write) -> Result<(), CommandError> {
    match command {
        TenantCommand::List(backend) => {
            let peers = match Backend::open(&backend).await? {
                Backend::Local(store) => store.peers()?,
                Backend::Kubernetes { client, namespace } => kube_store(client, namespace).peers().await?,
            };
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
        TenantCommand::Remove(args) => {
            let cluster = ClusterId::parse(&args.cluster_id)?;
            let backend = Backend::open(&args.backend).await?;
            let join_tokens = backend.join_tokens();
            let mut removed = match backend {
                Backend::Local(store) => store.remove_peer(&cluster)?,
                Backend::Kubernetes { client, namespace } => {
                    kube_store(client, namespace).remove_peer(&cluster, args.delete_namespace).await?
                }
            };
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

async fn create_token(args: TokenCreateArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let binding = args.cluster_id.as_deref().map(ClusterId::parse).transpose()?;
    if args.ttl.as_secs() == 0 {
        return Err("--ttl must be at least 1s".into());
    }
    let backend = Backend::open(&args.backend).await?;
    // Everything the peer command needs is resolved before a token exists, so a failure
    // leaves no orphan token behind.
    let peer_command = if args.print_peer_command {
        let url = crate::config::auth_url(args.advertise_auth_address.as_deref(), &args.address).ok_or(
            "--address names no host peers can reach: pass --advertise-auth-address HOST[:PORT] (the address peers use)",
        )?;
        Some((url, backend.serving_pin(args.cert_path.as_deref()).await?))
    } else {
        None
    };
    let issuer = backend.local_cluster(args.local_cluster_id.as_deref()).await?;
    let store = backend.join_tokens();
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

/// An opened backend.
enum Backend {
    Local(Arc<LocalStore>),
    Kubernetes { client: kube::Client, namespace: String },
}

impl Backend {
    async fn open(args: &BackendArgs) -> Result<Self, CommandError> {
        match args.backend {
            BackendKind::Local => Ok(Self::Local(Arc::new(LocalStore::open(
                &args.data_dir,
                crate::config::LOCAL_API_SERVER_URL.into(),
                true,
            )?))),
            BackendKind::Kubernetes => {
                let config = crate::adapter::kube::load_config(args.kubeconfig.as_deref()).await?;
                let client = crate::adapter::kube::client(config)?;
                Ok(Self::Kubernetes { client, namespace: args.namespace.clone() })
            }
        }
    }

    fn join_tokens(&self) -> Arc<dyn JoinTokenStore> {
        match self {
            Self::Local(store) => store.clone(),
            Self::Kubernetes { client, namespace } => Arc::new(KubeJoinTokens::new(client.clone(), namespace.clone())),
        }
    }

    /// This cluster's ID, the tokens' `iss`: the flag, else what `serve` uses (data dir, or
    /// ConfigMap `liqo-clusterid-configmap`).
    async fn local_cluster(&self, flag: Option<&str>) -> Result<ClusterId, CommandError> {
        match self {
            Self::Local(store) => Ok(store.cluster_identity(flag, None)?.id),
            Self::Kubernetes { client, namespace } => {
                // The name is irrelevant to tokens; passing one skips requiring it.
                let identity =
                    crate::config::kube_cluster_identity(client, namespace, flag, Some("unused-name")).await?;
                Ok(identity.id)
            }
        }
    }

    /// The SPKI pin of the serving certificate: `--cert-path`, else the generated one.
    async fn serving_pin(&self, cert_path: Option<&Path>) -> Result<Option<String>, CommandError> {
        let pem = match (cert_path, self) {
            (Some(path), _) => Some(std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?),
            (None, Self::Local(store)) => std::fs::read(store.dir().join("tls.crt")).ok(),
            (None, Self::Kubernetes { client, namespace }) => {
                let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                    kube::Api::namespaced(client.clone(), namespace);
                let secret = crate::adapter::kube::call_opt(
                    "reading the serving certificate Secret",
                    api.get(crate::config::SERVING_CERT_SECRET),
                )
                .await?;
                secret.and_then(|s| s.data).and_then(|mut d| d.remove("tls.crt")).map(|b| b.0)
            }
        };
        match pem {
            Some(pem) => {
                let spki = crate::pki::first_certificate_spki(&pem)
                    .ok_or("the serving certificate is not a PEM certificate")?;
                Ok(Some(crate::pki::spki_pin_of_spki(&spki)))
            }
            None => Ok(None),
        }
    }
}

fn kube_store(client: kube::Client, namespace: String) -> KubeStore {
    let source = crate::adapter::kube::kube_secret::ApiServerSource {
        advertised_url: None,
        client_url: String::new(),
        trusted_ca: true,
        client_ca_pem: None,
        ca_file: None,
    };
    KubeStore::new(client, namespace, crate::adapter::kube::KubeTokenCache::default(), source)
}

/// The peer's name: stored (local backend), else read from the tenant namespace name
/// `liqo-tenant-<name>-<6 hex>` (spec 3.2).
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
