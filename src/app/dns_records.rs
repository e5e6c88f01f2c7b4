//! `liqo-auth dns-records`: the zone-file lines a provider publishes so that peers find it
//! through `discover --dns-domain` (and Liqo v0.3/v0.4's WAN discovery): the PTR under the
//! domain, the SRV pointing at the advertised auth address, and the TXT with this cluster's ID,
//! name and serving-certificate pin.
//!
//! The advertised address and the pin are found as `token create --print-peer-command` finds
//! them (`--advertise-auth-address`, else `--address`, else what the running `serve` recorded;
//! `--cert-path`, else the recorded pin, else the stored serving certificate); the record
//! layout belongs to `discovery::dns`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::app::operator::{advertised_url, serving_pin, CommandError};
use crate::config::{Access, BackendConfig};
use crate::discovery::dns::{is_label, ZoneInput, ZoneRecords};

/// `dns-records` options.
#[derive(Debug, Clone)]
pub struct DnsRecordsOptions {
    /// The discovery domain.
    pub domain: String,
    /// This cluster's label under the domain; default: the cluster name.
    pub name: Option<String>,
    /// TTL of the records.
    pub ttl: Duration,
    /// Where peers reach this service (HOST[:PORT]).
    pub advertise_auth_address: Option<String>,
    /// The serving address of `serve`, used when `advertise_auth_address` is absent; with
    /// neither, what the running `serve` recorded.
    pub address: Option<String>,
    /// Serving certificate to pin.
    pub cert_path: Option<PathBuf>,
    /// This cluster's ID, when the backend has none.
    pub local_cluster_id: Option<String>,
    /// Print JSON instead of zone-file lines.
    pub json: bool,
}

/// Writes the records to `out`, notes for the operator to stderr. Opens existing state only.
pub async fn dns_records(
    backend: &BackendConfig,
    options: DnsRecordsOptions,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let ttl =
        u32::try_from(options.ttl.as_secs()).ok().filter(|t| *t > 0).ok_or("--record-ttl must be 1s to 68 years")?;
    let backend_flags = backend.command_flags();
    let backend = backend.open(Access::Existing).await?;
    let url =
        advertised_url(&backend, options.advertise_auth_address.as_deref(), options.address.as_deref(), &backend_flags)
            .await?;
    let uri: http::Uri = url.parse().map_err(|_| format!("the advertised auth URL {url:?} is not a URL"))?;
    let host = uri.host().ok_or_else(|| format!("the advertised auth URL {url:?} has no host"))?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let pin = serving_pin(&backend, options.cert_path.as_deref()).await?;
    let identity = backend.cluster.cluster_identity(options.local_cluster_id.as_deref(), None).await?;
    let name = match options.name {
        Some(name) => name,
        None if is_label(identity.name.as_str()) => identity.name.as_str().to_ascii_lowercase(),
        None => {
            return Err(format!(
                "the cluster name {:?} is not a DNS label: pass --name LABEL (letters, digits and '-')",
                identity.name.as_str()
            )
            .into())
        }
    };
    let zone = ZoneRecords::new(&ZoneInput {
        domain: &options.domain,
        name: &name,
        host: &host,
        port,
        cluster_id: identity.id.as_str(),
        cluster_name: identity.name.as_str(),
        pin: pin.as_deref(),
        ttl,
    })?;
    if pin.is_none() {
        eprintln!(
            "no serving certificate found to pin: the TXT record has no pin= and peers verify with their system \
             roots (give --cert-path to pin one)"
        );
    }
    if options.json {
        writeln!(out, "{}", serde_json::to_string_pretty(zone.records())?)?;
        return Ok(());
    }
    writeln!(out, "; liqo-auth cluster {} ({}), auth service {url}", identity.name, identity.id)?;
    writeln!(out, "; peers find it with: liqo-auth discover --dns-domain {}", options.domain.trim_end_matches('.'))?;
    write!(out, "{}", zone.to_zone_lines())?;
    Ok(())
}
