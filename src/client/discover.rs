//! `liqo-auth discover`: finds liqo-auth services on the LAN over mDNS and/or through DNS
//! domains (PTR, SRV, TXT), asks each for its `/ids`, and prints what was found with the
//! `liqo-auth peer` command to run for it.
//!
//! The browsing itself belongs to [`crate::discovery`]; this module probes what it returned
//! with the same [`AuthClient`] `peer` uses (so a service that answers here will answer `peer`
//! with the same trust flags), and renders the result as a table or JSON. Printing and the exit
//! code happen only in [`execute`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::client::transport::{AuthClient, ServerTrust, TlsFailure, TransportError};
use crate::client::Output;
use crate::discovery::dns::{self, DnsBrowser, DnsService, DnsTarget};
use crate::discovery::{self, DiscoveredService, InterfaceSelection};
use crate::error::error_chain;
use crate::http::wire::IdsResponse;
use crate::pki;

/// Time allowed for each `GET /ids`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Addresses of one mDNS instance tried at most, IPv4 first.
const MAX_ADDRESSES_TRIED: usize = 3;

/// Placeholder for the token file in the printed `peer` commands.
const TOKEN_FILE_PLACEHOLDER: &str = "TOKEN_FILE";

/// Exit code when a service was found but failed a step (a DNS target without SRV, a host that
/// does not resolve, `/ids` unreachable): the results are printed, but not all are usable.
pub const EXIT_PARTIAL: u8 = 2;

/// What `discover` should do, from its flags.
#[derive(Clone, Debug)]
pub struct DiscoverOptions {
    /// Browse the LAN over mDNS; `None` when only DNS domains were asked for.
    pub mdns: Option<MdnsOptions>,
    /// Look up DNS domains; `None` when no `--dns-domain` was given.
    pub dns: Option<DnsOptions>,
    /// How the result is printed.
    pub output: Output,
    /// How the certificates of the services found are verified.
    pub trust: ServerTrust,
}

/// The mDNS browse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdnsOptions {
    /// How long to listen for answers.
    pub window: Duration,
    /// Browse on these interfaces only; empty means every non-loopback interface outside pod
    /// networks.
    pub interfaces: Vec<String>,
}

/// The DNS lookups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsOptions {
    /// The domains whose PTR records list the clusters.
    pub domains: Vec<String>,
    /// `--dns-server` host and port; `None` for the first nameserver of `resolv_conf`.
    pub server: Option<(String, u16)>,
    /// Where the default DNS server is read from (`/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
    /// Time allowed for each DNS query.
    pub query_timeout: Duration,
}

/// How a service was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// An mDNS announcement on the LAN.
    Mdns,
    /// A PTR record of a DNS domain.
    Dns,
}

/// The step that failed for an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// The SRV lookup of a DNS target (none, or target `.`).
    Srv,
    /// The addresses of the host (the SRV host through DNS; none usable over mDNS).
    Address,
    /// `GET /ids` (connection, TLS, status or body).
    Ids,
}

/// One service found, after probing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiscoveryEntry {
    /// How it was found.
    pub source: Source,
    /// The PTR target it was found under (DNS only).
    pub dns_name: Option<String>,
    /// The cluster ID the service claims (mDNS instance name, DNS TXT `clusterID`), else the
    /// one `/ids` answered.
    pub cluster_id: Option<String>,
    /// The cluster name from `/ids`, else from the TXT record.
    pub cluster_name: Option<String>,
    /// The auth URL (the one that answered, if any did).
    pub auth_url: Option<String>,
    /// Every address the host resolved to, IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// `GET /ids` answered 200 with a liqo-auth body.
    pub reachable: bool,
    /// The step that failed, when one did.
    pub failed_step: Option<Step>,
    /// Why: the status seen, or what failed.
    pub detail: String,
    /// SPKI pin of the certificate the service presented (`sha256:...`), when it spoke TLS.
    pub ca_hash: Option<String>,
    /// The pin published in the DNS TXT record, as written (DNS only).
    pub dns_pin: Option<String>,
    /// How long the DNS answer may be kept: the shortest TTL of its records (DNS only).
    pub ttl_seconds: Option<u64>,
    /// The `liqo-auth peer` command to run, for reachable services.
    pub peer_command: Option<String>,
}

/// What was looked through, for the "nothing found" message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Searched {
    /// The LAN was browsed.
    pub lan: bool,
    /// These DNS domains were looked up.
    pub domains: Vec<String>,
}

/// Browses, probes and prints. Exit code 0 when every search ran and every service found
/// answered (also when nothing was found), [`EXIT_PARTIAL`] when some service failed a step,
/// 1 when a search could not run at all (no interface to browse on, a DNS domain without PTR
/// records, no DNS server); what was found is printed in every case.
pub async fn execute(options: DiscoverOptions) -> ExitCode {
    let trust = options.trust;
    if trust == ServerTrust::InsecureSkipVerify {
        eprintln!("warning: --insecure-skip-tls-verify: the certificates of the services found are not verified");
    }
    let (lan, dns) = tokio::join!(
        async {
            match &options.mdns {
                Some(mdns) => discover_lan(mdns, &trust).await,
                None => Found::default(),
            }
        },
        async {
            match &options.dns {
                Some(dns) => discover_dns(dns, &trust).await,
                None => Found::default(),
            }
        }
    );
    let Found { mut entries, mut failures, mut searched } = lan;
    entries.extend(dns.entries);
    failures.extend(dns.failures);
    searched.domains = dns.searched.domains;
    let searched_anything = searched.lan || !searched.domains.is_empty();
    match options.output {
        Output::Text if entries.is_empty() && !searched_anything => {}
        Output::Text => print!("{}", render_table(&entries, &searched)),
        Output::Json => {
            if entries.is_empty() && searched_anything {
                eprintln!("{}", nothing_found(&searched));
            }
            println!("{}", render_json(&entries));
        }
        Output::Yaml => {
            if entries.is_empty() && searched_anything {
                eprintln!("{}", nothing_found(&searched));
            }
            print!("{}", crate::output::document(Output::Yaml, &entries).unwrap_or_default());
        }
    }
    for failure in &failures {
        eprintln!("error: {failure}");
    }
    if !failures.is_empty() {
        ExitCode::FAILURE
    } else if entries.iter().any(|e| !e.reachable) {
        ExitCode::from(EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    }
}

/// What one search brought: entries, the reasons it could not run, what it did search.
#[derive(Default)]
struct Found {
    entries: Vec<DiscoveryEntry>,
    failures: Vec<String>,
    searched: Searched,
}

/// The mDNS browse and the probes of what it found; the error when it could not run.
async fn discover_lan(options: &MdnsOptions, trust: &ServerTrust) -> Found {
    let interfaces = InterfaceSelection::from_names(options.interfaces.clone());
    match discovery::browse(options.window, &interfaces).await {
        Ok(services) => {
            let probes = services.iter().map(|s| probe(s, trust, PROBE_TIMEOUT));
            let entries = futures::future::join_all(probes).await;
            Found { entries, searched: Searched { lan: true, domains: Vec::new() }, ..Found::default() }
        }
        Err(error) => Found { failures: vec![format!("mDNS: {}", error_chain(&error))], ..Found::default() },
    }
}

/// Every domain's PTR targets, probed; one error per domain that could not be looked up.
async fn discover_dns(options: &DnsOptions, trust: &ServerTrust) -> Found {
    let given = options.server.as_ref().map(|(host, port)| (host.as_str(), *port));
    let server = match dns::nameserver(given, &options.resolv_conf).await {
        Ok(server) => server,
        Err(error) => return Found { failures: vec![format!("DNS: {}", error_chain(&error))], ..Found::default() },
    };
    let browser = DnsBrowser::new(server, options.query_timeout);
    let browses = futures::future::join_all(options.domains.iter().map(|d| browser.browse(d))).await;
    let mut found = Found::default();
    for (domain, browse) in options.domains.iter().zip(browses) {
        match browse {
            Ok(targets) => {
                tracing::debug!(dns.domain = %domain, "{} PTR target(s) under {domain}", targets.len());
                let probes = futures::future::join_all(targets.iter().map(|t| probe_target(t, trust))).await;
                found.entries.extend(probes);
                found.searched.domains.push(domain.clone());
            }
            Err(error) => found.failures.push(format!("DNS: {}", error_chain(&error))),
        }
    }
    found
}

/// The entry of one DNS target: its failed step, or the probe of its service.
async fn probe_target(target: &DnsTarget, trust: &ServerTrust) -> DiscoveryEntry {
    match &target.result {
        Ok(service) => probe_dns(service, trust, PROBE_TIMEOUT).await,
        Err(failure) => DiscoveryEntry {
            source: Source::Dns,
            dns_name: Some(target.name.clone()),
            cluster_id: None,
            cluster_name: None,
            auth_url: None,
            addresses: Vec::new(),
            reachable: false,
            failed_step: Some(match failure.step() {
                "address" => Step::Address,
                _ => Step::Srv,
            }),
            detail: failure.to_string(),
            ca_hash: None,
            dns_pin: None,
            ttl_seconds: None,
            peer_command: None,
        },
    }
}

/// Calls `GET /ids` on the instance's addresses, IPv4 first, until one answers; reports the
/// first address's failure when none does.
pub async fn probe(service: &DiscoveredService, trust: &ServerTrust, timeout: Duration) -> DiscoveryEntry {
    let mut entry = DiscoveryEntry {
        source: Source::Mdns,
        dns_name: None,
        cluster_id: Some(service.instance.clone()),
        cluster_name: service.txt_cluster_name().map(str::to_owned),
        auth_url: None,
        addresses: service.addresses.clone(),
        reachable: false,
        failed_step: Some(Step::Address),
        detail: "no usable address resolved".to_owned(),
        ca_hash: None,
        dns_pin: None,
        ttl_seconds: None,
        peer_command: None,
    };
    let mut first_failure = None;
    for url in auth_urls(service).into_iter().take(MAX_ADDRESSES_TRIED) {
        let attempt = probe_url(&url, &[], Some(&service.instance), trust, timeout).await;
        if attempt.reachable {
            entry.auth_url = Some(url);
            entry.reachable = true;
            entry.failed_step = None;
            entry.detail = attempt.detail;
            entry.ca_hash = attempt.ca_hash;
            if attempt.cluster_name.is_some() {
                entry.cluster_name = attempt.cluster_name;
            }
            entry.peer_command = entry.auth_url.as_deref().map(|url| peer_command(url, entry.ca_hash.as_deref()));
            return entry;
        }
        first_failure.get_or_insert((url, attempt));
    }
    if let Some((url, attempt)) = first_failure {
        entry.auth_url = Some(url);
        entry.failed_step = Some(Step::Ids);
        entry.detail = attempt.detail;
        entry.ca_hash = attempt.ca_hash;
    }
    entry
}

/// Calls `GET /ids` on a service found through DNS: the URL names the SRV host (so the TLS
/// server name and `Host` header are the DNS name), the connection goes to the addresses the
/// same DNS server gave for it.
///
/// Without an explicit trust flag (`trust` is the system roots) a TXT `pin=` is used as the
/// pin to verify against: as trustworthy as the zone, and still a proof that the server holds
/// the key the zone names. With any trust flag the flag decides, and a TXT pin that matches
/// no presented certificate is reported and leaves the entry without a peer command.
pub async fn probe_dns(service: &DnsService, trust: &ServerTrust, timeout: Duration) -> DiscoveryEntry {
    let dns_pin = service.txt_pin().map(str::to_owned);
    let parsed_pin = dns_pin.as_deref().and_then(pki::parse_pin);
    let pin_is_trust = *trust == ServerTrust::SystemRoots && parsed_pin.is_some();
    let trust = match parsed_pin {
        Some(pin) if pin_is_trust => ServerTrust::Pin(vec![pin]),
        _ => trust.clone(),
    };
    let scheme = if service.tls() { "https" } else { "http" };
    let host = if service.host.contains(':') { format!("[{}]", service.host) } else { service.host.clone() };
    let url = format!("{scheme}://{host}:{}", service.port);
    let addresses: Vec<SocketAddr> = service
        .addresses
        .iter()
        .filter(|a| !is_link_local_v6(a))
        .map(|&ip| SocketAddr::new(ip, service.port))
        .collect();
    let mut notes = Vec::new();
    if dns_pin.is_some() && parsed_pin.is_none() {
        notes.push("the TXT pin is not sha256:<64 hex digits> and was ignored".to_owned());
    }
    if let Some(failure) = &service.txt_failure {
        notes.push(format!("the TXT record could not be read: {failure}"));
    }
    let claimed = service.txt_cluster_id();
    let attempt = probe_url(&url, &addresses, claimed, &trust, timeout).await;
    let mut entry = DiscoveryEntry {
        source: Source::Dns,
        dns_name: Some(service.name.clone()),
        cluster_id: claimed.map(str::to_owned).or(attempt.cluster_id),
        cluster_name: attempt.cluster_name.or_else(|| service.txt_cluster_name().map(str::to_owned)),
        auth_url: Some(url),
        addresses: service.addresses.clone(),
        reachable: attempt.reachable,
        failed_step: (!attempt.reachable).then_some(Step::Ids),
        detail: attempt.detail,
        ca_hash: attempt.ca_hash,
        dns_pin,
        ttl_seconds: Some(service.ttl.as_secs()),
        peer_command: None,
    };
    let chain_matches_pin = parsed_pin.map(|pin| attempt.chain_pins.contains(&pin));
    if entry.reachable {
        match chain_matches_pin {
            Some(true) if pin_is_trust => notes.push("the certificate matches the pin in DNS".to_owned()),
            Some(true) => notes.push("the pin in DNS matches the certificate".to_owned()),
            Some(false) => notes.push(format!(
                "the certificate does NOT match the pin in DNS ({}): no peer command until that is resolved",
                entry.dns_pin.as_deref().unwrap_or_default()
            )),
            None => {}
        }
        if chain_matches_pin != Some(false) {
            let pin = if pin_is_trust { entry.dns_pin.as_deref() } else { entry.ca_hash.as_deref() };
            entry.peer_command = entry.auth_url.as_deref().map(|url| peer_command(url, pin));
        }
    } else if pin_is_trust && attempt.pin_mismatch {
        notes.push("the certificate does not match the pin published in DNS".to_owned());
    }
    for note in notes {
        entry.detail = format!("{}; {note}", entry.detail);
    }
    entry
}

/// A table with one row per service, then the `peer` commands of the reachable ones.
pub fn render_table(entries: &[DiscoveryEntry], searched: &Searched) -> String {
    if entries.is_empty() {
        return format!("{}\n", nothing_found(searched));
    }
    let header = ["FOUND VIA", "CLUSTER ID", "NAME", "AUTH URL", "REACHABLE"];
    let dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            [
                match (&e.source, &e.dns_name) {
                    (Source::Dns, Some(name)) => format!("dns:{name}"),
                    (Source::Dns, None) => "dns".to_owned(),
                    (Source::Mdns, _) => "mdns".to_owned(),
                },
                dash(&e.cluster_id),
                dash(&e.cluster_name),
                dash(&e.auth_url),
                format!("{}: {}", if e.reachable { "yes" } else { "no" }, e.detail),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: [&str; 5]| {
        let mut line = String::new();
        for (cell, width) in cells.iter().zip(widths).take(4) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        line.push_str(cells[4]);
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(header);
    for row in &rows {
        push_row([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    let reachable: Vec<_> = entries.iter().filter_map(|e| e.peer_command.as_ref().map(|c| (e, c))).collect();
    if !reachable.is_empty() {
        out.push_str("\nTo peer, get the cluster's token from its administrator into TOKEN_FILE and run:\n");
        for (entry, command) in &reachable {
            let name = entry.cluster_name.as_deref().unwrap_or("-");
            out.push_str(&format!("  # {name} ({})\n  {command}\n", entry.cluster_id.as_deref().unwrap_or("-")));
        }
        if reachable.iter().any(|(e, _)| e.source == Source::Mdns) {
            out.push_str(
                "mDNS announcements are not authenticated and these pins were read from the network: \
                 compare each --ca-hash with the pin the other cluster's liqo-auth logs at start.\n",
            );
        }
        if reachable.iter().any(|(e, _)| e.source == Source::Dns) {
            out.push_str(
                "Pins from DNS are only as trustworthy as the zone and the path to its DNS server \
                 (DNSSEC-validated answers remove the path, not the zone's administrator): compare \
                 each --ca-hash with the pin the other cluster's liqo-auth logs at start.\n",
            );
        }
    }
    out
}

/// The entries as a pretty-printed JSON array.
pub fn render_json(entries: &[DiscoveryEntry]) -> String {
    serde_json::to_string_pretty(entries).expect("a DiscoveryEntry always serialises")
}

/// What one URL of an instance answered.
struct Attempt {
    reachable: bool,
    detail: String,
    cluster_id: Option<String>,
    cluster_name: Option<String>,
    ca_hash: Option<String>,
    /// The pins of every certificate presented, leaf first.
    chain_pins: Vec<[u8; 32]>,
    /// The handshake failed because no presented certificate matched the pins.
    pin_mismatch: bool,
}

async fn probe_url(
    url: &str,
    addresses: &[SocketAddr],
    unverified_cluster_id: Option<&str>,
    trust: &ServerTrust,
    timeout: Duration,
) -> Attempt {
    let failed = |detail: String| Attempt {
        reachable: false,
        detail,
        cluster_id: None,
        cluster_name: None,
        ca_hash: None,
        chain_pins: Vec::new(),
        pin_mismatch: false,
    };
    let client = match AuthClient::new(url, trust.clone(), timeout) {
        Ok(client) => client.connecting_to(addresses.to_vec()),
        Err(error) => return failed(error_chain(&error)),
    };
    let response = match client.get("/ids").await {
        Ok(response) => response,
        Err(error) => {
            let pin_mismatch =
                matches!(&error, TransportError::TlsHandshake { failure: TlsFailure::PinMismatch { .. }, .. });
            return Attempt { pin_mismatch, ..failed(describe_transport_error(&error, trust)) };
        }
    };
    let ca_hash = response.peer_certificates.first().and_then(|leaf| pki::spki_pin(leaf).ok());
    let chain_pins = response
        .peer_certificates
        .iter()
        .filter_map(|der| pki::spki_pin(der).ok())
        .filter_map(|pin| pki::parse_pin(&pin))
        .collect();
    if response.status != 200 {
        return Attempt { ca_hash, chain_pins, ..failed(format!("GET /ids answered HTTP {}", response.status)) };
    }
    let Ok(ids) = serde_json::from_slice::<IdsResponse>(&response.body) else {
        return Attempt {
            ca_hash,
            chain_pins,
            ..failed("GET /ids answered 200 but not with a liqo-auth body".to_owned())
        };
    };
    let detail = match unverified_cluster_id {
        Some(claimed) if claimed != ids.cluster_id => {
            format!("GET /ids answered 200, but with cluster ID {:?}, not the announced one", ids.cluster_id)
        }
        _ => "GET /ids answered 200".to_owned(),
    };
    Attempt {
        reachable: true,
        detail,
        cluster_id: Some(ids.cluster_id),
        cluster_name: Some(ids.cluster_name).filter(|n| !n.is_empty()),
        ca_hash,
        chain_pins,
        pin_mismatch: false,
    }
}

/// `https://ADDRESS:PORT` (or `http://` when the service announced `tls=false`) for each
/// address, IPv4 first. IPv6 link-local addresses are left out: a URL cannot carry their zone.
fn auth_urls(service: &DiscoveredService) -> Vec<String> {
    let scheme = if service.tls() { "https" } else { "http" };
    let mut addresses = service.addresses.clone();
    addresses.sort_by_key(IpAddr::is_ipv6);
    addresses
        .into_iter()
        .filter(|address| !is_link_local_v6(address))
        .map(|address| match address {
            IpAddr::V4(v4) => format!("{scheme}://{v4}:{}", service.port),
            IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{}", service.port),
        })
        .collect()
}

fn is_link_local_v6(address: &IpAddr) -> bool {
    matches!(address, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

fn peer_command(auth_url: &str, ca_hash: Option<&str>) -> String {
    let mut command = format!("liqo-auth peer --auth-url {auth_url} --token-file {TOKEN_FILE_PLACEHOLDER}");
    if let Some(pin) = ca_hash {
        command.push_str(&format!(" --ca-hash {pin}"));
    }
    command
}

/// The transport error, with a hint when the certificate could not be verified: services on a
/// LAN usually present a self-signed certificate.
fn describe_transport_error(error: &TransportError, trust: &ServerTrust) -> String {
    let text = error_chain(error);
    let unverified = matches!(
        error,
        TransportError::TlsHandshake { failure: TlsFailure::UnknownIssuer | TlsFailure::NameMismatch, .. }
    );
    if unverified && matches!(trust, ServerTrust::SystemRoots | ServerTrust::CaPem(_)) {
        format!("{text} (pass --ca-hash, or --insecure-skip-tls-verify to read the pin)")
    } else {
        text
    }
}

fn nothing_found(searched: &Searched) -> String {
    let mut places = Vec::new();
    if searched.lan {
        places.push(format!("on the LAN (browsed {})", discovery::SERVICE_TYPE));
    }
    if !searched.domains.is_empty() {
        places.push(format!("in DNS domain {}", searched.domains.join(", ")));
    }
    format!("no liqo-auth service found {}", places.join(" or "))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::test_support::{closed_port, TestCa, TestServer};

    const PIN: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn lan() -> Searched {
        Searched { lan: true, domains: Vec::new() }
    }

    fn reachable_entry() -> DiscoveryEntry {
        DiscoveryEntry {
            source: Source::Mdns,
            dns_name: None,
            cluster_id: Some("6b1c6a4e-1f6b-4d8e-9a57-3c2d1e0f9a8b".into()),
            cluster_name: Some("milan".into()),
            auth_url: Some("https://192.168.1.20:30443".into()),
            addresses: vec!["192.168.1.20".parse().expect("address")],
            reachable: true,
            failed_step: None,
            detail: "GET /ids answered 200".into(),
            ca_hash: Some(PIN.into()),
            dns_pin: None,
            ttl_seconds: None,
            peer_command: Some(peer_command("https://192.168.1.20:30443", Some(PIN))),
        }
    }

    fn unreachable_entry() -> DiscoveryEntry {
        DiscoveryEntry {
            cluster_id: Some("turin-id".into()),
            cluster_name: None,
            auth_url: Some("https://192.168.1.21:30443".into()),
            addresses: vec!["192.168.1.21".parse().expect("address")],
            reachable: false,
            failed_step: Some(Step::Ids),
            detail: "connecting to 192.168.1.21:30443: connection refused".into(),
            ca_hash: None,
            peer_command: None,
            ..reachable_entry()
        }
    }

    fn srv_missing_entry() -> DiscoveryEntry {
        DiscoveryEntry {
            source: Source::Dns,
            dns_name: Some("p3.liqo.test".into()),
            cluster_id: None,
            cluster_name: None,
            auth_url: None,
            addresses: Vec::new(),
            reachable: false,
            failed_step: Some(Step::Srv),
            detail: "no SRV record for p3.liqo.test: the name does not exist (NXDOMAIN)".into(),
            ca_hash: None,
            dns_pin: None,
            ttl_seconds: None,
            peer_command: None,
        }
    }

    fn service_at(addr: SocketAddr, txt: &[(&str, &str)]) -> DiscoveredService {
        DiscoveredService {
            instance: "provider-1".into(),
            host: "provider-1.local.".into(),
            port: addr.port(),
            addresses: vec![addr.ip()],
            txt: txt.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        }
    }

    fn dns_service_at(addr: SocketAddr, txt: &[(&str, &str)]) -> DnsService {
        DnsService {
            name: "p1.liqo.test".into(),
            host: "auth.p1.liqo.test".into(),
            port: addr.port(),
            addresses: vec![addr.ip()],
            txt: txt.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            txt_failure: None,
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn table_lists_each_service_and_the_peer_command_of_reachable_ones() {
        let table = render_table(&[reachable_entry(), unreachable_entry(), srv_missing_entry()], &lan());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "FOUND VIA         CLUSTER ID                            NAME   AUTH URL                    REACHABLE"
        );
        assert_eq!(
            lines[1],
            "mdns              6b1c6a4e-1f6b-4d8e-9a57-3c2d1e0f9a8b  milan  https://192.168.1.20:30443  yes: GET /ids answered 200"
        );
        assert_eq!(
            lines[2],
            "mdns              turin-id                              -      https://192.168.1.21:30443  no: connecting to 192.168.1.21:30443: connection refused"
        );
        assert_eq!(
            lines[3],
            "dns:p3.liqo.test  -                                     -      -                           no: no SRV record for p3.liqo.test: the name does not exist (NXDOMAIN)"
        );
        assert!(table.contains(&format!(
            "  liqo-auth peer --auth-url https://192.168.1.20:30443 --token-file TOKEN_FILE --ca-hash {PIN}\n"
        )));
        assert!(!table.contains("--auth-url https://192.168.1.21"));
        assert!(table.contains("not authenticated"));
        assert!(!table.contains("trustworthy as the zone"), "no DNS entry is reachable");
    }

    #[test]
    fn table_says_so_when_nothing_was_found() {
        assert_eq!(
            render_table(&[], &lan()),
            "no liqo-auth service found on the LAN (browsed _liqo_auth._tcp.local.)\n"
        );
        let both = Searched { lan: true, domains: vec!["liqo.test".into()] };
        assert_eq!(
            nothing_found(&both),
            "no liqo-auth service found on the LAN (browsed _liqo_auth._tcp.local.) or in DNS domain liqo.test"
        );
    }

    #[test]
    fn json_is_an_array_of_entries_with_every_field() {
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&[reachable_entry(), unreachable_entry(), srv_missing_entry()]))
                .expect("valid JSON");
        let entries = json.as_array().expect("array");
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[0],
            serde_json::json!({
                "source": "mdns",
                "dns_name": null,
                "cluster_id": "6b1c6a4e-1f6b-4d8e-9a57-3c2d1e0f9a8b",
                "cluster_name": "milan",
                "auth_url": "https://192.168.1.20:30443",
                "addresses": ["192.168.1.20"],
                "reachable": true,
                "failed_step": null,
                "detail": "GET /ids answered 200",
                "ca_hash": PIN,
                "dns_pin": null,
                "ttl_seconds": null,
                "peer_command": format!("liqo-auth peer --auth-url https://192.168.1.20:30443 --token-file TOKEN_FILE --ca-hash {PIN}"),
            })
        );
        assert_eq!(entries[1]["reachable"], false);
        assert_eq!(entries[1]["failed_step"], "ids");
        assert_eq!(entries[1]["cluster_name"], serde_json::Value::Null);
        assert_eq!(entries[1]["peer_command"], serde_json::Value::Null);
        assert_eq!(entries[2]["source"], "dns");
        assert_eq!(entries[2]["failed_step"], "srv");
        assert_eq!(render_json(&[]), "[]");
    }

    #[test]
    fn urls_prefer_ipv4_skip_link_local_and_follow_the_tls_record() {
        let mut service = service_at("10.0.0.7:30443".parse().expect("addr"), &[]);
        service.addresses = ["fe80::1", "fd00::7", "10.0.0.7"].iter().map(|a| a.parse().expect("address")).collect();
        assert_eq!(auth_urls(&service), ["https://10.0.0.7:30443", "https://[fd00::7]:30443"]);
        service.txt.insert("tls".into(), "false".into());
        assert_eq!(auth_urls(&service)[0], "http://10.0.0.7:30443");
    }

    #[tokio::test]
    async fn probe_reads_ids_and_pins_the_presented_leaf() {
        let cert = TestCa::new("lan-ca").server_cert(&["provider-1.local"]);
        let leaf_pin = pki::spki_pin(&cert.chain[0]).expect("pin");
        let server = TestServer::tls(cert).await;
        let service = service_at(server.addr, &[("clusterName", "from-txt")]);
        let entry = probe(&service, &ServerTrust::InsecureSkipVerify, Duration::from_secs(5)).await;
        assert!(entry.reachable, "{entry:?}");
        assert_eq!(entry.auth_url.as_deref(), Some(server.https_url().as_str()));
        assert_eq!(entry.cluster_name.as_deref(), Some("milan"), "/ids wins");
        assert_eq!(entry.ca_hash.as_deref(), Some(leaf_pin.as_str()));
        assert_eq!(
            entry.peer_command.as_deref(),
            Some(
                format!(
                    "liqo-auth peer --auth-url {} --token-file TOKEN_FILE --ca-hash {leaf_pin}",
                    server.https_url()
                )
                .as_str()
            )
        );
    }

    #[tokio::test]
    async fn probe_of_a_self_signed_service_with_system_roots_hints_at_the_pin_flags() {
        let server = TestServer::tls(TestCa::new("lan-ca").server_cert(&["127.0.0.1"])).await;
        let entry = probe(
            &service_at(server.addr, &[]),
            &ServerTrust::CaPem(TestCa::new("other").pem().into_bytes()),
            Duration::from_secs(5),
        )
        .await;
        assert!(!entry.reachable);
        assert_eq!(entry.failed_step, Some(Step::Ids));
        assert!(entry.detail.contains("--ca-hash"), "{}", entry.detail);
        assert_eq!(entry.peer_command, None);
    }

    #[tokio::test]
    async fn probe_of_a_closed_port_is_unreachable_with_the_txt_name() {
        let entry = probe(
            &service_at(closed_port(), &[("clusterName", "from-txt")]),
            &ServerTrust::InsecureSkipVerify,
            Duration::from_secs(5),
        )
        .await;
        assert!(!entry.reachable);
        assert!(entry.detail.contains("refused"), "{}", entry.detail);
        assert_eq!(entry.cluster_name.as_deref(), Some("from-txt"));
    }

    #[tokio::test]
    async fn dns_probe_names_the_srv_host_and_verifies_a_ca_signed_certificate_by_name() {
        let ca = TestCa::new("company-ca");
        let server = TestServer::tls(ca.server_cert(&["auth.p1.liqo.test"])).await;
        let entry = probe_dns(
            &dns_service_at(server.addr, &[]),
            &ServerTrust::CaPem(ca.pem().into_bytes()),
            Duration::from_secs(5),
        )
        .await;
        assert!(entry.reachable, "{entry:?}");
        let url = format!("https://auth.p1.liqo.test:{}", server.addr.port());
        assert_eq!(entry.auth_url.as_deref(), Some(url.as_str()));
        assert_eq!(entry.cluster_id.as_deref(), Some("provider-1"), "from /ids");
        assert_eq!(entry.dns_name.as_deref(), Some("p1.liqo.test"));
        assert_eq!(entry.ttl_seconds, Some(60));
        let pin = entry.ca_hash.clone().expect("presented pin");
        assert_eq!(
            entry.peer_command,
            Some(format!("liqo-auth peer --auth-url {url} --token-file TOKEN_FILE --ca-hash {pin}"))
        );
    }

    #[tokio::test]
    async fn dns_probe_verifies_against_the_txt_pin_when_no_trust_flag_is_given() {
        let cert = TestCa::new("self").server_cert(&["somewhere.else"]);
        let leaf_pin = pki::spki_pin(&cert.chain[0]).expect("pin");
        let server = TestServer::tls(cert).await;
        let txt = [("pin", leaf_pin.as_str()), ("clusterID", "provider-1")];
        let entry =
            probe_dns(&dns_service_at(server.addr, &txt), &ServerTrust::SystemRoots, Duration::from_secs(5)).await;
        assert!(entry.reachable, "{entry:?}");
        assert!(entry.detail.contains("matches the pin in DNS"), "{}", entry.detail);
        assert!(entry.peer_command.as_deref().is_some_and(|c| c.ends_with(&format!("--ca-hash {leaf_pin}"))));

        let other = format!("sha256:{}", "ab".repeat(32));
        let txt = [("pin", other.as_str())];
        let entry =
            probe_dns(&dns_service_at(server.addr, &txt), &ServerTrust::SystemRoots, Duration::from_secs(5)).await;
        assert!(!entry.reachable, "{entry:?}");
        assert_eq!(entry.failed_step, Some(Step::Ids));
        assert!(entry.detail.contains("does not match the pin published in DNS"), "{}", entry.detail);

        let entry =
            probe_dns(&dns_service_at(server.addr, &txt), &ServerTrust::InsecureSkipVerify, Duration::from_secs(5))
                .await;
        assert!(entry.reachable, "{entry:?}");
        assert!(entry.detail.contains("does NOT match the pin in DNS"), "{}", entry.detail);
        assert_eq!(entry.peer_command, None, "a mismatch is never turned into a command");
    }

    #[tokio::test]
    async fn dns_probe_reports_a_claimed_cluster_id_that_ids_contradicts() {
        let server = TestServer::tls(TestCa::new("self").server_cert(&["x"])).await;
        let txt = [("clusterID", "someone-else"), ("pin", "sha256:zz")];
        let entry =
            probe_dns(&dns_service_at(server.addr, &txt), &ServerTrust::InsecureSkipVerify, Duration::from_secs(5))
                .await;
        assert!(entry.reachable);
        assert_eq!(entry.cluster_id.as_deref(), Some("someone-else"));
        assert!(entry.detail.contains("not the announced one"), "{}", entry.detail);
        assert!(entry.detail.contains("TXT pin is not sha256"), "{}", entry.detail);
    }
}
