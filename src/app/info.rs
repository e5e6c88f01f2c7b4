//! The commands that describe this installation: `info` (this cluster as peers see it),
//! `init` (a local data dir without serving), `version` and `ca-hash` (the pin of a
//! certificate, from a file, a Secret or a running service).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::app::operator::{CommandError, OperatorError};
use crate::client::transport::{AuthClient, ServerTrust};
use crate::config::{Access, Backend, BackendConfig};
use crate::output::Output;
use crate::pki::{format_unix, CertificateSummary};

/// Liqo releases whose peering this service is wire-compatible with.
pub const SUPPORTED_LIQO_VERSIONS: &str = "v0.5.4 to v0.10.3";

/// `init` options.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub cluster_id: Option<String>,
    pub cluster_name: Option<String>,
    pub output: Output,
}

/// Where `ca-hash` reads the certificate.
#[derive(Debug, Clone)]
pub enum CaHashSource {
    /// A PEM file.
    File(PathBuf),
    /// `tls.crt` of a Secret of the Kubernetes backend.
    Secret { backend: BackendConfig, name: String },
    /// The chain a running service presents.
    Url(String),
}

/// `ca-hash` options.
#[derive(Debug, Clone)]
pub struct CaHashOptions {
    pub source: CaHashSource,
    pub connect_timeout: Duration,
    pub output: Output,
}

/// This cluster as `info` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    pub cluster_id: String,
    pub cluster_name: String,
    pub backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// The URL `serve` recorded for peers, if it ran.
    pub auth_url: Option<String>,
    /// `https`, `http`, or `unknown` when `serve` never ran here.
    pub tls: &'static str,
    /// SPKI pin of the serving certificate (`--ca-hash`).
    pub ca_hash: Option<String>,
    #[serde(serialize_with = "crate::output::rfc3339_opt")]
    pub certificate_expires_at: Option<i64>,
    /// Peers holding a tenant here.
    pub peers: usize,
    /// When `serve` last recorded its address and pin.
    #[serde(serialize_with = "crate::output::rfc3339_opt")]
    pub recorded_at: Option<i64>,
}

/// `liqo-auth info`: this cluster's ID and name, backend, where peers reach it, TLS and pin,
/// certificate expiry and number of peers.
pub async fn info(backend: &BackendConfig, output: Output, out: &mut dyn Write) -> Result<(), CommandError> {
    let backend = backend.open(Access::Existing).await?;
    let info = collect(&backend).await?;
    crate::output::print(out, output, &info, || info_table(&info))?;
    Ok(())
}

/// `liqo-auth init`: creates a local data dir (cluster identity, shared token, CA) without
/// serving, e.g. for a consumer that only runs `peer`, then prints `info`.
pub async fn init(backend: &BackendConfig, options: InitOptions, out: &mut dyn Write) -> Result<(), CommandError> {
    if !matches!(backend, BackendConfig::Local { .. }) {
        return Err(OperatorError::Invalid(
            "init creates a local data dir: pass --backend local (on Kubernetes, Liqo's ConfigMap liqo-clusterid-configmap holds the identity and `serve` creates the rest)".into(),
        )
        .into());
    }
    let opened = backend.open(Access::Create).await?;
    let identity =
        opened.cluster.cluster_identity(options.cluster_id.as_deref(), options.cluster_name.as_deref()).await?;
    eprintln!("{} is ready for cluster {} ({})", backend.describe(), identity.name, identity.id);
    let info = collect(&opened).await?;
    crate::output::print(out, options.output, &info, || info_table(&info))?;
    Ok(())
}

/// `liqo-auth version`.
pub fn version(output: Output, out: &mut dyn Write) -> Result<(), CommandError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Version {
        version: &'static str,
        git_commit: &'static str,
        supported_liqo_versions: &'static str,
    }
    let version = Version {
        version: env!("CARGO_PKG_VERSION"),
        git_commit: option_env!("LIQO_AUTH_GIT_COMMIT").unwrap_or("unknown"),
        supported_liqo_versions: SUPPORTED_LIQO_VERSIONS,
    };
    crate::output::print(out, output, &version, || {
        format!(
            "liqo-auth {} (commit {})\nwire-compatible with Liqo {}\n",
            version.version, version.git_commit, version.supported_liqo_versions
        )
    })?;
    Ok(())
}

/// `liqo-auth ca-hash`: the `--ca-hash` pin of a certificate.
pub async fn ca_hash(options: CaHashOptions, out: &mut dyn Write) -> Result<(), CommandError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Pins {
        source: String,
        /// The pin to hand to `peer --ca-hash` (the leaf's).
        ca_hash: String,
        subject: Option<String>,
        #[serde(serialize_with = "crate::output::rfc3339")]
        expires_at: i64,
        /// Every certificate of the chain, leaf first (a CA's pin works too).
        chain: Vec<String>,
    }
    let (source, chain_der) = match &options.source {
        CaHashSource::File(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            (path.display().to_string(), crate::pki::certificates_der(&pem))
        }
        CaHashSource::Secret { backend, name } => {
            let location = backend.describe();
            let opened = backend.open(Access::Existing).await?;
            let pem = opened.cluster.secret_certificate(name).await?.ok_or_else(|| OperatorError::NotFound {
                what: format!("Secret {name} with a tls.crt"),
                location: location.clone(),
                hint: "check the name and -n".into(),
            })?;
            (format!("Secret {name} ({location})"), crate::pki::certificates_der(pem.as_bytes()))
        }
        CaHashSource::Url(url) => {
            let client = AuthClient::new(url, ServerTrust::InsecureSkipVerify, options.connect_timeout)?;
            if client.is_plain_http() {
                return Err(
                    OperatorError::Invalid(format!("{url} is plain http: there is no certificate to pin")).into()
                );
            }
            let response = client.get("/ids").await?;
            (client.base_url(), response.peer_certificates)
        }
    };
    let leaf = chain_der.first().ok_or_else(|| format!("{source} holds no PEM certificate"))?;
    let summary = CertificateSummary::from_pem(crate::identity::pem_encode("CERTIFICATE", leaf).as_bytes())
        .ok_or_else(|| format!("the certificate of {source} does not parse"))?;
    let chain: Vec<String> = chain_der.iter().filter_map(|der| crate::pki::spki_pin(der).ok()).collect();
    let pins = Pins {
        source,
        ca_hash: crate::pki::spki_pin_of_spki(&summary.spki_der),
        subject: summary.common_name.clone(),
        expires_at: summary.not_after,
        chain,
    };
    if matches!(options.source, CaHashSource::Url(_)) {
        eprintln!(
            "note: read without verification; compare this pin with the provider's operator over another channel"
        );
    }
    crate::output::print(out, options.output, &pins, || format!("{}\n", pins.ca_hash))?;
    Ok(())
}

async fn collect(backend: &Backend) -> Result<Info, CommandError> {
    let identity = backend.cluster.cluster_identity(None, None).await?;
    let record = backend.cluster.serving_record().await?;
    let peers = backend.tenants.tenants().await?.len();
    let stored_expiry = match &record {
        Some(_) => None,
        None => backend
            .cluster
            .serving_certificate()
            .await?
            .and_then(|pem| CertificateSummary::from_pem(pem.as_bytes()))
            .map(|s| (crate::pki::spki_pin_of_spki(&s.spki_der), s.not_after)),
    };
    let tls = match &record {
        Some(record) if record.ca_hash.is_some() => "https",
        Some(_) => "http",
        None => "unknown",
    };
    Ok(Info {
        cluster_id: identity.id.to_string(),
        cluster_name: identity.name.to_string(),
        backend: backend.kind(),
        namespace: backend.namespace().map(str::to_owned),
        data_dir: backend.data_dir().map(|d| d.display().to_string()),
        auth_url: record.as_ref().and_then(|r| r.auth_url.clone()),
        tls,
        ca_hash: record
            .as_ref()
            .and_then(|r| r.ca_hash.clone())
            .or_else(|| stored_expiry.as_ref().map(|s| s.0.clone())),
        certificate_expires_at: record
            .as_ref()
            .and_then(|r| r.certificate_not_after)
            .or_else(|| stored_expiry.as_ref().map(|s| s.1)),
        peers,
        recorded_at: record.as_ref().map(|r| r.updated_at),
    })
}

fn info_table(info: &Info) -> String {
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let location = match (&info.namespace, &info.data_dir) {
        (Some(ns), _) => format!(" (namespace {ns})"),
        (None, Some(dir)) => format!(" (data dir {dir})"),
        (None, None) => String::new(),
    };
    let rows = [
        ("CLUSTER ID", info.cluster_id.clone()),
        ("CLUSTER NAME", info.cluster_name.clone()),
        ("BACKEND", format!("{}{location}", info.backend)),
        (
            "AUTH URL",
            info.auth_url
                .clone()
                .unwrap_or_else(|| "- (`serve` has not recorded one: see --advertise-auth-address)".into()),
        ),
        ("TLS", info.tls.to_owned()),
        ("CA HASH", dash(info.ca_hash.as_deref())),
        ("CERT EXPIRES", info.certificate_expires_at.map_or_else(|| "-".into(), format_unix)),
        ("PEERS", info.peers.to_string()),
        ("RECORDED", info.recorded_at.map_or_else(|| "- (serve has not run here)".into(), format_unix)),
    ];
    rows.iter().map(|(k, v)| format!("{k:<13} {v}\n")).collect()
}
