//! DNS ("WAN") discovery through a company DNS domain, in the layout of Liqo v0.3/v0.4's
//! search-domain operator, over the `hickory-resolver` crate:
//!
//! ```text
//! liqo.mycompany.com.      PTR  myliqo1.mycompany.com.     ; one per registered cluster
//! myliqo1.mycompany.com.   SRV  0 0 30443 auth.myliqo1.mycompany.com.
//! myliqo1.mycompany.com.   TXT  "clusterID=..." "clusterName=..." "pin=sha256:..."  ; optional
//! auth.myliqo1.mycompany.com. A 192.0.2.10
//! ```
//!
//! [`DnsBrowser::browse`] asks one DNS server for the PTR records of the domain, then for each
//! target its SRV record (the host and port of that cluster's authentication service), its TXT
//! record and the addresses of the SRV host, and reports per target which step failed. Talking
//! HTTPS to what was found is left to `client::discover`.
//!
//! Answers are only as trustworthy as the zone and the path to the DNS server: without DNSSEC
//! validation anyone who can answer in the server's place can publish any host, port and pin.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use hickory_resolver::{Name, ResolveError, TokioResolver};

/// TXT key carrying the cluster ID the target claims (checked against `/ids`).
pub const TXT_CLUSTER_ID: &str = "clusterID";

/// TXT key carrying the SPKI pin of the target's serving certificate, `sha256:<64 hex>`.
pub const TXT_PIN: &str = "pin";

/// Where the DNS server comes from when `--dns-server` is not given.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The DNS port, for servers given without one (resolv.conf has no ports).
pub const DNS_PORT: u16 = 53;

/// Looks up PTR, SRV, TXT and address records of one DNS server.
pub struct DnsBrowser {
    resolver: TokioResolver,
    server: SocketAddr,
    query_timeout: Duration,
}

/// One PTR target of the domain and what its records said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsTarget {
    /// The PTR target (the owner of the SRV and TXT records), without the trailing dot.
    pub name: String,
    /// The service, or the step that failed for this target.
    pub result: Result<DnsService, TargetFailure>,
}

/// A service found through DNS: the SRV record of a PTR target, its host's addresses and the
/// optional TXT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsService {
    /// The PTR target, without the trailing dot.
    pub name: String,
    /// The SRV target host, without the trailing dot: the host name of the auth URL.
    pub host: String,
    /// The SRV port.
    pub port: u16,
    /// The addresses the SRV host resolved to through the same DNS server, IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// TXT `key=value` strings of the target (a key without `=` maps to an empty string).
    pub txt: BTreeMap<String, String>,
    /// Why the TXT record could not be read, when the lookup failed for another reason than
    /// there being none (a zone without TXT records is normal).
    pub txt_failure: Option<LookupFailure>,
    /// The shortest TTL of the PTR, SRV, TXT and address records used: how long this answer
    /// may be kept.
    pub ttl: Duration,
}

/// Why one lookup brought no records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupFailure {
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
    /// The name exists but has no record of the type asked for (NOERROR, empty answer).
    NoRecords,
    /// The server answered with an error code (SERVFAIL, REFUSED, ...).
    Refused(ResponseCode),
    /// No answer within the per-query timeout.
    TimedOut(Duration),
    /// Anything else (the server unreachable, a malformed answer).
    Failed(String),
}

/// Why one PTR target yields no service. Each variant names the step that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetFailure {
    /// The SRV lookup of the target brought no record.
    #[error("{}", srv_message(name, failure))]
    Srv {
        /// The PTR target.
        name: String,
        /// What the lookup brought.
        failure: LookupFailure,
    },
    /// The SRV record's target is `.`: the service is explicitly not available (RFC 2782).
    #[error("the SRV record of {name} says the service is not available there (target \".\")")]
    NoService {
        /// The PTR target.
        name: String,
    },
    /// The SRV host has no address.
    #[error("SRV host {host} of {name} does not resolve: {failure}")]
    Address {
        /// The PTR target.
        name: String,
        /// The SRV target host.
        host: String,
        /// What the address lookup brought.
        failure: LookupFailure,
    },
}

/// Why DNS discovery of a domain could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum DnsDiscoveryError {
    /// resolv.conf could not be read.
    #[error("reading the DNS server from {path} (or pass --dns-server HOST:PORT)")]
    ReadResolvConf {
        /// The file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// resolv.conf has no usable `nameserver` line.
    #[error("{path} names no nameserver: pass --dns-server HOST:PORT")]
    NoNameserver {
        /// The file.
        path: PathBuf,
    },
    /// The `--dns-server` host name did not resolve.
    #[error("resolving the DNS server {host}")]
    ResolveServer {
        /// The host as given.
        host: String,
        /// The system resolver's error.
        #[source]
        source: io::Error,
    },
    /// The domain is not a valid DNS name.
    #[error("{domain:?} is not a DNS domain name")]
    InvalidDomain {
        /// The domain as given.
        domain: String,
        /// The parser's error.
        #[source]
        source: ProtoError,
    },
    /// The PTR lookup of the domain brought no record, so there is nothing to discover.
    #[error("{}", ptr_message(domain, server, failure))]
    Ptr {
        /// The domain.
        domain: String,
        /// The DNS server asked.
        server: SocketAddr,
        /// What the lookup brought.
        failure: LookupFailure,
    },
}

impl DnsBrowser {
    /// A resolver that asks `server` only, giving each query `query_timeout` (one attempt:
    /// the timeout is the bound), with the hosts file ignored so that only the zone answers.
    /// Answers are cached for their TTL within this browser, so a host shared by several
    /// targets is asked for once.
    pub fn new(server: SocketAddr, query_timeout: Duration) -> Self {
        let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let mut options = ResolverOpts::default();
        options.timeout = query_timeout;
        options.attempts = 1;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.use_hosts_file = ResolveHosts::Never;
        options.preserve_intermediates = true;
        let resolver = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(options)
            .build();
        Self { resolver, server, query_timeout }
    }

    /// Looks up the PTR records of `domain`, then the SRV, TXT and addresses of every target
    /// (targets concurrently), sorted by target name. Fails only when the domain itself yields
    /// nothing; a failure of one target is reported in its [`DnsTarget::result`].
    pub async fn browse(&self, domain: &str) -> Result<Vec<DnsTarget>, DnsDiscoveryError> {
        let name =
            fqdn(domain).map_err(|source| DnsDiscoveryError::InvalidDomain { domain: domain.to_owned(), source })?;
        let ptr_failure =
            |failure| DnsDiscoveryError::Ptr { domain: display_name(&name), server: self.server, failure };
        let lookup = self.lookup(&name, RecordType::PTR).await.map_err(ptr_failure)?;
        let mut targets: BTreeMap<String, (Name, Duration)> = BTreeMap::new();
        for record in lookup.record_iter() {
            if let RData::PTR(ptr) = record.data() {
                let ttl = Duration::from_secs(record.ttl().into());
                let mut target = ptr.0.clone();
                target.set_fqdn(true);
                targets.entry(display_name(&target).to_ascii_lowercase()).or_insert((target, ttl));
            }
        }
        if targets.is_empty() {
            return Err(ptr_failure(LookupFailure::NoRecords));
        }
        let resolved =
            futures::future::join_all(targets.into_values().map(|(target, ttl)| self.resolve_target(target, ttl)));
        Ok(resolved.await)
    }

    /// SRV of `target`, then its TXT and its host's addresses together.
    async fn resolve_target(&self, target: Name, ptr_ttl: Duration) -> DnsTarget {
        let name = display_name(&target);
        let result = async {
            let srv = self
                .lookup(&target, RecordType::SRV)
                .await
                .map_err(|failure| TargetFailure::Srv { name: name.clone(), failure })?;
            let mut records: Vec<_> = srv
                .record_iter()
                .filter_map(|r| match r.data() {
                    RData::SRV(srv) => Some((srv.clone(), r.ttl())),
                    _ => None,
                })
                .collect();
            // RFC 2782: the lowest priority first; among equals the heaviest first (a fixed
            // order rather than the weighted random pick, so that runs are repeatable).
            records.sort_by_key(|(srv, _)| (srv.priority(), std::cmp::Reverse(srv.weight())));
            let Some((srv, srv_ttl)) = records.into_iter().next() else {
                return Err(TargetFailure::Srv { name: name.clone(), failure: LookupFailure::NoRecords });
            };
            if srv.target().is_root() {
                return Err(TargetFailure::NoService { name: name.clone() });
            }
            let mut host_name = srv.target().clone();
            host_name.set_fqdn(true);
            let host = display_name(&host_name);
            let (addresses, txt) = tokio::join!(self.addresses(&host_name), self.lookup(&target, RecordType::TXT));
            let (addresses, address_ttl) = addresses.map_err(|failure| TargetFailure::Address {
                name: name.clone(),
                host: host.clone(),
                failure,
            })?;
            let mut ttl = ptr_ttl.min(Duration::from_secs(srv_ttl.into())).min(address_ttl);
            let (txt, txt_failure) = match txt {
                Ok(lookup) => {
                    if let Some(txt_ttl) = lookup.record_iter().map(|r| r.ttl()).min() {
                        ttl = ttl.min(Duration::from_secs(txt_ttl.into()));
                    }
                    (txt_strings(&lookup), None)
                }
                Err(LookupFailure::NoRecords | LookupFailure::NoSuchName) => (BTreeMap::new(), None),
                Err(failure) => (BTreeMap::new(), Some(failure)),
            };
            Ok(DnsService { name: name.clone(), host, port: srv.port(), addresses, txt, txt_failure, ttl })
        }
        .await;
        DnsTarget { name, result }
    }

    /// A and AAAA records of `host`, IPv4 first, with the shortest TTL.
    async fn addresses(&self, host: &Name) -> Result<(Vec<IpAddr>, Duration), LookupFailure> {
        let lookup = self.bounded(self.resolver.lookup_ip(host.clone())).await?;
        let ttl = lookup.as_lookup().record_iter().map(|r| r.ttl()).min().unwrap_or(0);
        let mut addresses: Vec<IpAddr> = lookup.iter().collect();
        addresses.sort_by_key(|a| (a.is_ipv6(), *a));
        addresses.dedup();
        if addresses.is_empty() {
            return Err(LookupFailure::NoRecords);
        }
        Ok((addresses, Duration::from_secs(ttl.into())))
    }

    async fn lookup(&self, name: &Name, record_type: RecordType) -> Result<Lookup, LookupFailure> {
        self.bounded(self.resolver.lookup(name.clone(), record_type)).await
    }

    /// The resolver bounds each attempt by the query timeout already; this is the outer bound,
    /// so that no lookup outlives it whatever the resolver does (TCP fallback, a slow socket).
    async fn bounded<T>(
        &self,
        lookup: impl std::future::Future<Output = Result<T, ResolveError>>,
    ) -> Result<T, LookupFailure> {
        match tokio::time::timeout(self.query_timeout + Duration::from_millis(250), lookup).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(error)) => Err(LookupFailure::of(&error, self.query_timeout)),
            Err(_) => Err(LookupFailure::TimedOut(self.query_timeout)),
        }
    }
}

impl fmt::Debug for DnsBrowser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsBrowser").field("server", &self.server).field("query_timeout", &self.query_timeout).finish()
    }
}

impl DnsService {
    /// The TXT value of `key`, compared case-insensitively; empty values count as absent.
    pub fn txt_value(&self, key: &str) -> Option<&str> {
        self.txt.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// The cluster ID the TXT record claims (unverified until `/ids` confirms it).
    pub fn txt_cluster_id(&self) -> Option<&str> {
        self.txt_value(TXT_CLUSTER_ID)
    }

    /// The cluster name the TXT record gives.
    pub fn txt_cluster_name(&self) -> Option<&str> {
        self.txt_value(super::TXT_CLUSTER_NAME)
    }

    /// The pin the TXT record publishes, as written.
    pub fn txt_pin(&self) -> Option<&str> {
        self.txt_value(TXT_PIN)
    }

    /// Whether the service speaks TLS: true unless TXT says `tls=false` (as in mDNS mode).
    pub fn tls(&self) -> bool {
        !self.txt_value(super::TXT_TLS).is_some_and(|v| v.eq_ignore_ascii_case("false"))
    }
}

impl LookupFailure {
    /// Classifies a resolver error; `timeout` is the per-query budget, for the message.
    pub fn of(error: &ResolveError, timeout: Duration) -> Self {
        let Some(proto) = error.proto() else {
            return Self::Failed(error.to_string());
        };
        match proto.kind() {
            ProtoErrorKind::NoRecordsFound { response_code: ResponseCode::NXDomain, .. } => Self::NoSuchName,
            ProtoErrorKind::NoRecordsFound { response_code: ResponseCode::NoError, .. } => Self::NoRecords,
            ProtoErrorKind::NoRecordsFound { response_code, .. } => Self::Refused(*response_code),
            ProtoErrorKind::Timeout => Self::TimedOut(timeout),
            ProtoErrorKind::Io(io) => Self::Failed(io.to_string()),
            _ => Self::Failed(proto.to_string()),
        }
    }
}

impl fmt::Display for LookupFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchName => f.write_str("the name does not exist (NXDOMAIN)"),
            Self::NoRecords => f.write_str("the name has no record of that type"),
            Self::Refused(code) => write!(f, "the DNS server answered {}", rcode_name(*code)),
            Self::TimedOut(after) => write!(f, "no answer within {after:?}"),
            Self::Failed(detail) => f.write_str(detail),
        }
    }
}

impl TargetFailure {
    /// The step that failed: `srv` or `address`.
    pub fn step(&self) -> &'static str {
        match self {
            Self::Srv { .. } | Self::NoService { .. } => "srv",
            Self::Address { .. } => "address",
        }
    }
}

/// The DNS server to ask: `--dns-server` (`host` and `port`, `host` an IP address or a name
/// resolved by the system), else the first `nameserver` of [`RESOLV_CONF`] on port 53.
pub async fn nameserver(given: Option<(&str, u16)>, resolv_conf: &Path) -> Result<SocketAddr, DnsDiscoveryError> {
    if let Some((host, port)) = given {
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let resolve = |source| DnsDiscoveryError::ResolveServer { host: host.to_owned(), source };
        let mut found = tokio::net::lookup_host((host, port)).await.map_err(resolve)?;
        return found
            .next()
            .ok_or_else(|| resolve(io::Error::new(io::ErrorKind::NotFound, "the name has no addresses")));
    }
    let text = tokio::fs::read_to_string(resolv_conf)
        .await
        .map_err(|source| DnsDiscoveryError::ReadResolvConf { path: resolv_conf.to_owned(), source })?;
    first_nameserver(&text)
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .ok_or_else(|| DnsDiscoveryError::NoNameserver { path: resolv_conf.to_owned() })
}

/// The first `nameserver` line of a resolv.conf text that holds an IP address. A zone index
/// (`fe80::1%eth0`) is dropped: link-local DNS servers are not supported.
pub fn first_nameserver(resolv_conf: &str) -> Option<IpAddr> {
    resolv_conf.lines().find_map(|line| {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            return None;
        }
        let address = words.next()?;
        address
            .split('%')
            .next()
            .unwrap_or(address)
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
    })
}

/// The records one cluster publishes under a discovery domain (`liqo-auth dns-records`): the
/// PTR of the domain naming this cluster's target, the target's SRV (the auth service's host
/// and port) and TXT (ID, name, pin), plus an address record when peers reach the service by
/// IP address (an SRV target must be a host name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneRecords {
    records: Vec<ZoneRecord>,
}

/// One resource record, in zone-file terms.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ZoneRecord {
    /// Owner name, fully qualified (trailing dot).
    pub owner: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// `PTR`, `SRV`, `TXT`, `A` or `AAAA`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The record data as a zone file writes it.
    pub data: String,
}

/// What goes into [`ZoneRecords`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneInput<'a> {
    /// The discovery domain.
    pub domain: &'a str,
    /// This cluster's label under the domain (the PTR target is `<name>.<domain>`).
    pub name: &'a str,
    /// Host (name or IP address) and port peers connect to.
    pub host: &'a str,
    /// The port.
    pub port: u16,
    /// TXT `clusterID`.
    pub cluster_id: &'a str,
    /// TXT `clusterName`.
    pub cluster_name: &'a str,
    /// TXT `pin`, when a serving certificate is known.
    pub pin: Option<&'a str>,
    /// TTL of every record.
    pub ttl: u32,
}

/// Why the records cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// The domain is not a DNS name.
    #[error("--domain {domain:?} is not a DNS domain name")]
    Domain {
        /// As given.
        domain: String,
        /// The parser's error.
        #[source]
        source: ProtoError,
    },
    /// The label is not a single DNS label.
    #[error("{name:?} is not a DNS label (letters, digits and '-', at most 63): pass --name LABEL")]
    Label {
        /// As given or derived from the cluster name.
        name: String,
    },
    /// The advertised host is neither an address nor a host name.
    #[error("the advertised host {host:?} is not a DNS host name or an IP address")]
    Host {
        /// As given.
        host: String,
    },
}

impl ZoneRecords {
    /// The records for `input`, validated.
    pub fn new(input: &ZoneInput<'_>) -> Result<Self, ZoneError> {
        let domain = fqdn(input.domain)
            .map_err(|source| ZoneError::Domain { domain: input.domain.to_owned(), source })?
            .to_ascii();
        if !is_label(input.name) {
            return Err(ZoneError::Label { name: input.name.to_owned() });
        }
        let target = format!("{}.{domain}", input.name.to_ascii_lowercase());
        let ttl = input.ttl;
        let record = |owner: &str, kind, data: String| ZoneRecord { owner: owner.to_owned(), ttl, kind, data };
        let mut records = vec![record(&domain, "PTR", target.clone())];
        let host = input.host.trim_start_matches('[').trim_end_matches(']');
        let address = host.parse::<IpAddr>().ok();
        let srv_target = match address {
            Some(_) => target.clone(),
            None => {
                let mut name = Name::from_utf8(host).map_err(|_| ZoneError::Host { host: host.to_owned() })?;
                if name.is_root() || name.num_labels() < 1 {
                    return Err(ZoneError::Host { host: host.to_owned() });
                }
                name.set_fqdn(true);
                name.to_ascii()
            }
        };
        records.push(record(&target, "SRV", format!("0 0 {} {srv_target}", input.port)));
        let mut txt = vec![
            format!("{TXT_CLUSTER_ID}={}", input.cluster_id),
            format!("{}={}", super::TXT_CLUSTER_NAME, input.cluster_name),
        ];
        if let Some(pin) = input.pin {
            txt.push(format!("{TXT_PIN}={pin}"));
        }
        let txt = txt.iter().map(|s| zone_string(s)).collect::<Vec<_>>().join(" ");
        records.push(record(&target, "TXT", txt));
        match address {
            Some(IpAddr::V4(v4)) => records.push(record(&target, "A", v4.to_string())),
            Some(IpAddr::V6(v6)) => records.push(record(&target, "AAAA", v6.to_string())),
            None => {}
        }
        Ok(Self { records })
    }

    /// The records, PTR first.
    pub fn records(&self) -> &[ZoneRecord] {
        &self.records
    }

    /// Zone-file lines, owner names aligned.
    pub fn to_zone_lines(&self) -> String {
        let width = self.records.iter().map(|r| r.owner.len()).max().unwrap_or(0);
        self.records.iter().map(|r| format!("{:<width$}  {} IN {:<4} {}\n", r.owner, r.ttl, r.kind, r.data)).collect()
    }
}

/// A DNS label as RFC 1123 host names use them: letters, digits and inner hyphens, 1 to 63.
pub fn is_label(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// A zone-file character-string: quoted, with `"` and `\` escaped.
fn zone_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `domain` as a fully qualified name (so no search list applies), IDNs in punycode.
fn fqdn(domain: &str) -> Result<Name, ProtoError> {
    let mut name = Name::from_utf8(domain.trim())?;
    if name.is_root() {
        return Err(ProtoError::from("the root is not a discovery domain"));
    }
    name.set_fqdn(true);
    Ok(name)
}

/// The name in ASCII without the trailing dot, as it goes into a URL.
fn display_name(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_owned()
}

/// Every character-string of every TXT record, split at the first `=`.
fn txt_strings(lookup: &Lookup) -> BTreeMap<String, String> {
    let mut txt = BTreeMap::new();
    for record in lookup.record_iter() {
        if let RData::TXT(data) = record.data() {
            for string in data.txt_data() {
                let string = String::from_utf8_lossy(string);
                let (key, value) = string.split_once('=').unwrap_or((&string, ""));
                txt.entry(key.trim().to_owned()).or_insert_with(|| value.trim().to_owned());
            }
        }
    }
    txt
}

/// The mnemonic of a response code, as dig prints it.
fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        ResponseCode::NotAuth => "NOTAUTH".to_owned(),
        other => format!("response code {} ({other})", u16::from(other)),
    }
}

fn srv_message(name: &str, failure: &LookupFailure) -> String {
    match failure {
        LookupFailure::NoSuchName => format!("no SRV record for {name}: the name does not exist (NXDOMAIN)"),
        LookupFailure::NoRecords => format!("no SRV record for {name}: the name has other records but no SRV"),
        other => format!("looking up the SRV record of {name}: {other}"),
    }
}

fn ptr_message(domain: &str, server: &SocketAddr, failure: &LookupFailure) -> String {
    match failure {
        LookupFailure::NoSuchName => {
            format!("no PTR record for {domain} at DNS server {server}: the name does not exist (NXDOMAIN)")
        }
        LookupFailure::NoRecords => format!("no PTR record for {domain} at DNS server {server}"),
        other => format!("looking up the PTR records of {domain} at DNS server {server}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(txt: &[(&str, &str)]) -> DnsService {
        DnsService {
            name: "myliqo1.example.org".into(),
            host: "auth.myliqo1.example.org".into(),
            port: 30443,
            addresses: Vec::new(),
            txt: txt.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            txt_failure: None,
            ttl: Duration::from_secs(300),
        }
    }

    #[test]
    fn first_nameserver_skips_comments_options_and_link_local_servers() {
        let conf = "# generated\nsearch example.org\noptions ndots:5\nnameserver fe80::1%eth0\n\
                    nameserver 192.0.2.53 # office\nnameserver 198.51.100.53\n";
        assert_eq!(first_nameserver(conf), Some("192.0.2.53".parse().expect("ip")));
        assert_eq!(first_nameserver("nameserver 2001:db8::53\n"), Some("2001:db8::53".parse().expect("ip")));
        assert_eq!(first_nameserver("; nameserver 192.0.2.1\nsearch x\n"), None);
        assert_eq!(first_nameserver("nameserver not-an-ip\n"), None);
    }

    #[tokio::test]
    async fn nameserver_takes_the_flag_else_resolv_conf_on_port_53() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("resolv.conf");
        std::fs::write(&conf, "nameserver 192.0.2.53\n").expect("write");
        assert_eq!(nameserver(None, &conf).await.expect("from file"), "192.0.2.53:53".parse().expect("addr"));
        assert_eq!(
            nameserver(Some(("[2001:db8::1]", 5353)), &conf).await.expect("flag"),
            "[2001:db8::1]:5353".parse().expect("addr")
        );
        std::fs::write(&conf, "search example.org\n").expect("write");
        let error = nameserver(None, &conf).await.expect_err("no nameserver");
        assert!(error.to_string().contains("--dns-server"), "{error}");
        let error = nameserver(None, &dir.path().join("missing")).await.expect_err("no file");
        assert!(matches!(error, DnsDiscoveryError::ReadResolvConf { .. }), "{error:?}");
    }

    #[test]
    fn txt_keys_are_case_insensitive_and_empty_values_absent() {
        let svc = service(&[("ClusterId", "abc"), ("clusterName", ""), ("pin", "sha256:00"), ("tls", "FALSE")]);
        assert_eq!(svc.txt_cluster_id(), Some("abc"));
        assert_eq!(svc.txt_cluster_name(), None);
        assert_eq!(svc.txt_pin(), Some("sha256:00"));
        assert!(!svc.tls());
        assert!(service(&[]).tls(), "a reference zone has no TXT and the service speaks TLS");
    }

    #[test]
    fn domains_become_fully_qualified_ascii_names() {
        assert_eq!(fqdn("liqo.example.org").expect("name").to_ascii(), "liqo.example.org.");
        assert_eq!(fqdn("liqo.example.org.").expect("name").to_ascii(), "liqo.example.org.");
        assert_eq!(display_name(&fqdn("bücher.example").expect("name")), "xn--bcher-kva.example");
        assert!(fqdn(".").is_err());
        assert!(fqdn("a..b").is_err());
    }

    #[test]
    fn failures_say_which_step_and_why() {
        let srv = TargetFailure::Srv { name: "p3.liqo.test".into(), failure: LookupFailure::NoSuchName };
        assert_eq!(srv.step(), "srv");
        assert_eq!(srv.to_string(), "no SRV record for p3.liqo.test: the name does not exist (NXDOMAIN)");
        let address = TargetFailure::Address {
            name: "p4.liqo.test".into(),
            host: "gone.liqo.test".into(),
            failure: LookupFailure::TimedOut(Duration::from_secs(2)),
        };
        assert_eq!(address.step(), "address");
        assert_eq!(
            address.to_string(),
            "SRV host gone.liqo.test of p4.liqo.test does not resolve: no answer within 2s"
        );
        let ptr = DnsDiscoveryError::Ptr {
            domain: "liqo.test".into(),
            server: "127.0.0.1:5353".parse().expect("addr"),
            failure: LookupFailure::Refused(ResponseCode::Refused),
        };
        assert_eq!(
            ptr.to_string(),
            "looking up the PTR records of liqo.test at DNS server 127.0.0.1:5353: the DNS server answered REFUSED"
        );
    }

    fn input<'a>(host: &'a str, pin: Option<&'a str>) -> ZoneInput<'a> {
        ZoneInput {
            domain: "liqo.example.com",
            name: "Milan",
            host,
            port: 30443,
            cluster_id: "b94f7e6a-c0ef-4801-8e1d-7734b5c8b368",
            cluster_name: "milan",
            pin,
            ttl: 300,
        }
    }

    #[test]
    fn zone_records_follow_the_reference_layout_with_a_txt_record() {
        let zone = ZoneRecords::new(&input("auth.milan.example.com", Some("sha256:ab"))).expect("records");
        assert_eq!(
            zone.to_zone_lines(),
            "liqo.example.com.        300 IN PTR  milan.liqo.example.com.\n\
             milan.liqo.example.com.  300 IN SRV  0 0 30443 auth.milan.example.com.\n\
             milan.liqo.example.com.  300 IN TXT  \"clusterID=b94f7e6a-c0ef-4801-8e1d-7734b5c8b368\" \"clusterName=milan\" \"pin=sha256:ab\"\n"
        );
    }

    #[test]
    fn zone_records_for_an_address_point_the_srv_at_the_target_itself() {
        let zone = ZoneRecords::new(&input("192.0.2.10", None)).expect("records");
        let kinds: Vec<_> = zone.records().iter().map(|r| (r.owner.as_str(), r.kind, r.data.as_str())).collect();
        assert_eq!(kinds[1], ("milan.liqo.example.com.", "SRV", "0 0 30443 milan.liqo.example.com."));
        assert!(!kinds[2].2.contains("pin="), "no pin without a certificate");
        assert_eq!(kinds[3], ("milan.liqo.example.com.", "A", "192.0.2.10"));
        let v6 = ZoneRecords::new(&input("[2001:db8::10]", None)).expect("records");
        assert_eq!(v6.records()[3].kind, "AAAA");
        assert_eq!(v6.records()[3].data, "2001:db8::10");
    }

    #[test]
    fn zone_records_refuse_bad_labels_and_domains_and_escape_txt() {
        let mut bad = input("h.example.com", None);
        bad.name = "two.labels";
        assert!(matches!(ZoneRecords::new(&bad), Err(ZoneError::Label { .. })));
        bad.name = "-x";
        assert!(ZoneRecords::new(&bad).is_err());
        bad.name = "ok";
        bad.domain = "a..b";
        assert!(matches!(ZoneRecords::new(&bad), Err(ZoneError::Domain { .. })));
        assert_eq!(zone_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
