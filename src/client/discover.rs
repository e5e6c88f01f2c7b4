//! `liqo-auth discover`: finds liqo-auth services on the LAN over mDNS, asks each for its
//! `/ids`, and prints what was found with the `liqo-auth peer` command to run for it.
//!
//! The browse itself belongs to [`crate::discovery`]; this module probes what the browse
//! returned with the same [`AuthClient`] `peer` uses (so a service that answers here will answer
//! `peer` with the same trust flags), and renders the result as a table or JSON. Printing and the
//! exit code happen only in [`execute`].

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::client::transport::{AuthClient, ServerTrust, TlsFailure, TransportError};
use crate::client::Output;
use crate::discovery::{self, DiscoveredService, InterfaceSelection};
use crate::error::error_chain;
use crate::http::wire::IdsResponse;
use crate::pki;

/// Time allowed for each `GET /ids`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Addresses of one instance tried at most, IPv4 first.
const MAX_ADDRESSES_TRIED: usize = 3;

/// Placeholder for the token file in the printed `peer` commands.
const TOKEN_FILE_PLACEHOLDER: &str = "TOKEN_FILE";

/// What `discover` should do, from its flags.
#[derive(Clone, Debug)]
pub struct DiscoverOptions {
    /// How long to listen for mDNS answers.
    pub timeout: Duration,
    /// How the result is printed.
    pub output: Output,
    /// Browse on these interfaces only; empty means every non-loopback interface outside pod
    /// networks.
    pub mdns_interface: Vec<String>,
    /// How the certificates of the services found are verified.
    pub trust: ServerTrust,
}

/// One service found on the LAN, after probing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiscoveryEntry {
    /// The announced instance name: the cluster ID the service claims.
    pub cluster_id: String,
    /// The cluster name from `/ids`, else from the TXT record.
    pub cluster_name: Option<String>,
    /// The auth URL built from the address and port (the one that answered, if any did).
    pub auth_url: String,
    /// Every address the instance resolved to, IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// `GET /ids` answered 200 with a liqo-auth body.
    pub reachable: bool,
    /// Why: the status seen, or the transport error.
    pub detail: String,
    /// SPKI pin of the certificate the service presented (`sha256:...`), when it spoke TLS.
    pub ca_hash: Option<String>,
    /// The `liqo-auth peer` command to run, for reachable services.
    pub peer_command: Option<String>,
}

/// Browses, probes and prints. Exit code 0 when the browse ran (even if nothing was found), 1
/// when mDNS could not be used.
pub async fn execute(options: DiscoverOptions) -> ExitCode {
    let trust = options.trust;
    if trust == ServerTrust::InsecureSkipVerify {
        eprintln!("warning: --insecure-skip-tls-verify: the certificates of the services found are not verified");
    }
    let interfaces = InterfaceSelection::from_names(options.mdns_interface);
    let services = match discovery::browse(options.timeout, &interfaces).await {
        Ok(services) => services,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            return ExitCode::FAILURE;
        }
    };
    let entries = futures::future::join_all(services.iter().map(|s| probe(s, &trust, PROBE_TIMEOUT))).await;
    match options.output {
        Output::Text => print!("{}", render_table(&entries)),
        Output::Json => {
            if entries.is_empty() {
                eprintln!("{}", nothing_found());
            }
            println!("{}", render_json(&entries));
        }
    }
    ExitCode::SUCCESS
}

/// Calls `GET /ids` on the instance's addresses, IPv4 first, until one answers; reports the
/// first address's failure when none does.
pub async fn probe(service: &DiscoveredService, trust: &ServerTrust, timeout: Duration) -> DiscoveryEntry {
    let mut entry = DiscoveryEntry {
        cluster_id: service.instance.clone(),
        cluster_name: service.txt_cluster_name().map(str::to_owned),
        auth_url: String::new(),
        addresses: service.addresses.clone(),
        reachable: false,
        detail: "no usable address resolved".to_owned(),
        ca_hash: None,
        peer_command: None,
    };
    let mut first_failure = None;
    for url in auth_urls(service).into_iter().take(MAX_ADDRESSES_TRIED) {
        let attempt = probe_url(&url, &service.instance, trust, timeout).await;
        if attempt.reachable {
            entry.auth_url = url;
            entry.reachable = true;
            entry.detail = attempt.detail;
            entry.ca_hash = attempt.ca_hash;
            if attempt.cluster_name.is_some() {
                entry.cluster_name = attempt.cluster_name;
            }
            entry.peer_command = Some(peer_command(&entry.auth_url, entry.ca_hash.as_deref()));
            return entry;
        }
        first_failure.get_or_insert((url, attempt));
    }
    if let Some((url, attempt)) = first_failure {
        entry.auth_url = url;
        entry.detail = attempt.detail;
        entry.ca_hash = attempt.ca_hash;
    }
    entry
}

/// A table with one row per service, then the `peer` commands of the reachable ones.
pub fn render_table(entries: &[DiscoveryEntry]) -> String {
    if entries.is_empty() {
        return format!("{}\n", nothing_found());
    }
    let header = ["CLUSTER ID", "NAME", "AUTH URL", "REACHABLE"];
    let rows: Vec<[String; 4]> = entries
        .iter()
        .map(|e| {
            [
                e.cluster_id.clone(),
                e.cluster_name.clone().unwrap_or_else(|| "-".to_owned()),
                if e.auth_url.is_empty() { "-".to_owned() } else { e.auth_url.clone() },
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
    let mut push_row = |cells: [&str; 4]| {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(header);
    for row in &rows {
        push_row([&row[0], &row[1], &row[2], &row[3]]);
    }
    let reachable: Vec<_> = entries.iter().filter_map(|e| e.peer_command.as_ref().map(|c| (e, c))).collect();
    if !reachable.is_empty() {
        out.push_str("\nTo peer, get the cluster's token from its administrator into TOKEN_FILE and run:\n");
        for (entry, command) in reachable {
            let name = entry.cluster_name.as_deref().unwrap_or("-");
            out.push_str(&format!("  # {name} ({})\n  {command}\n", entry.cluster_id));
        }
        out.push_str(
            "mDNS announcements are not authenticated and these pins were read from the network: \
             compare each --ca-hash with the pin the other cluster's liqo-auth logs at start.\n",
        );
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
    cluster_name: Option<String>,
    ca_hash: Option<String>,
}

async fn probe_url(url: &str, unverified_cluster_id: &str, trust: &ServerTrust, timeout: Duration) -> Attempt {
    let failed = |detail: String| Attempt { reachable: false, detail, cluster_name: None, ca_hash: None };
    let client = match AuthClient::new(url, trust.clone(), timeout) {
        Ok(client) => client,
        Err(error) => return failed(error_chain(&error)),
    };
    let response = match client.get("/ids").await {
        Ok(response) => response,
        Err(error) => return failed(describe_transport_error(&error, trust)),
    };
    let ca_hash = response.peer_certificates.first().and_then(|leaf| pki::spki_pin(leaf).ok());
    if response.status != 200 {
        return Attempt { ca_hash, ..failed(format!("GET /ids answered HTTP {}", response.status)) };
    }
    let Ok(ids) = serde_json::from_slice::<IdsResponse>(&response.body) else {
        return Attempt { ca_hash, ..failed("GET /ids answered 200 but not with a liqo-auth body".to_owned()) };
    };
    let detail = if ids.cluster_id == unverified_cluster_id {
        "GET /ids answered 200".to_owned()
    } else {
        format!("GET /ids answered 200, but with cluster ID {:?}, not the announced one", ids.cluster_id)
    };
    Attempt { reachable: true, detail, cluster_name: Some(ids.cluster_name).filter(|n| !n.is_empty()), ca_hash }
}

/// `https://ADDRESS:PORT` (or `http://` when the service announced `tls=false`) for each
/// address, IPv4 first. IPv6 link-local addresses are left out: a URL cannot carry their zone.
fn auth_urls(service: &DiscoveredService) -> Vec<String> {
    let scheme = if service.tls() { "https" } else { "http" };
    let mut addresses = service.addresses.clone();
    addresses.sort_by_key(IpAddr::is_ipv6);
    addresses
        .into_iter()
        .filter_map(|address| match address {
            IpAddr::V4(v4) => Some(format!("{scheme}://{v4}:{}", service.port)),
            IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => None,
            IpAddr::V6(v6) => Some(format!("{scheme}://[{v6}]:{}", service.port)),
        })
        .collect()
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

fn nothing_found() -> String {
    format!("no liqo-auth service found on the LAN (browsed {})", discovery::SERVICE_TYPE)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::test_support::{closed_port, TestCa, TestServer};

    const PIN: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn reachable_entry() -> DiscoveryEntry {
        DiscoveryEntry {
            cluster_id: "6b1c6a4e-1f6b-4d8e-9a57-3c2d1e0f9a8b".into(),
            cluster_name: Some("milan".into()),
            auth_url: "https://192.168.1.20:30443".into(),
            addresses: vec!["192.168.1.20".parse().expect("address")],
            reachable: true,
            detail: "GET /ids answered 200".into(),
            ca_hash: Some(PIN.into()),
            peer_command: Some(peer_command("https://192.168.1.20:30443", Some(PIN))),
        }
    }

    fn unreachable_entry() -> DiscoveryEntry {
        DiscoveryEntry {
            cluster_id: "turin-id".into(),
            cluster_name: None,
            auth_url: "https://192.168.1.21:30443".into(),
            addresses: vec!["192.168.1.21".parse().expect("address")],
            reachable: false,
            detail: "connecting to 192.168.1.21:30443: connection refused".into(),
            ca_hash: None,
            peer_command: None,
        }
    }

    fn service_at(addr: std::net::SocketAddr, txt: &[(&str, &str)]) -> DiscoveredService {
        DiscoveredService {
            instance: "provider-1".into(),
            host: "provider-1.local.".into(),
            port: addr.port(),
            addresses: vec![addr.ip()],
            txt: txt.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn table_lists_each_service_and_the_peer_command_of_reachable_ones() {
        let table = render_table(&[reachable_entry(), unreachable_entry()]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "CLUSTER ID                            NAME   AUTH URL                    REACHABLE");
        assert_eq!(
            lines[1],
            "6b1c6a4e-1f6b-4d8e-9a57-3c2d1e0f9a8b  milan  https://192.168.1.20:30443  yes: GET /ids answered 200"
        );
        assert_eq!(
            lines[2],
            "turin-id                              -      https://192.168.1.21:30443  no: connecting to 192.168.1.21:30443: connection refused"
        );
        assert!(table.contains(&format!(
            "  liqo-auth peer --auth-url https://192.168.1.20:30443 --token-file TOKEN_FILE --ca-hash {PIN}\n"
        )));
        assert!(!table.contains("--auth-url https://192.168.1.21"));
        assert!(table.contains("not authenticated"));
    }

    #[test]
    fn table_says_so_when_nothing_was_found() {
        assert_eq!(render_table(&[]), "no liqo-auth service found on the LAN (browsed _liqo_auth._tcp.local.)\n");
    }

    #[test]
    fn json_is_an_array_of_entries_with_every_field() {
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&[reachable_entry(), unreachable_entry()])).expect("valid JSON");
        let entries = json.as_array().expect("array");
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0],
            serde_json::json!({
                "cluster_id": "6b1c6a4e-1f6b-4d8e-9a57-3c2d1e0f9a8b",
                "cluster_name": "milan",
                "auth_url": "https://192.168.1.20:30443",
                "addresses": ["192.168.1.20"],
                "reachable": true,
                "detail": "GET /ids answered 200",
                "ca_hash": PIN,
                "peer_command": format!("liqo-auth peer --auth-url https://192.168.1.20:30443 --token-file TOKEN_FILE --ca-hash {PIN}"),
            })
        );
        assert_eq!(entries[1]["reachable"], false);
        assert_eq!(entries[1]["cluster_name"], serde_json::Value::Null);
        assert_eq!(entries[1]["peer_command"], serde_json::Value::Null);
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
        assert_eq!(entry.auth_url, server.https_url());
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
}
