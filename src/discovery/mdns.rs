//! The mDNS adapter, over the `mdns-sd` crate: one [`ServiceDaemon`] (its own thread and
//! sockets) per advertisement or browse, restricted to the interfaces an
//! [`InterfaceSelection`] allows.
//!
//! An [`Advertisement`] is registered once the listener is bound; `mdns-sd` probes for the name,
//! announces it, answers queries and refreshes its records while the daemon runs.
//! [`Advertisement::stop`] unregisters, which sends the goodbye packets (TTL 0) so browsers drop
//! the entry at once rather than when their cache expires, and then stops the daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use mdns_sd::{IfKind, IfPredicate, ServiceDaemon, ServiceEvent, ServiceInfo, UnregisterStatus};

use super::{instance_name, InterfaceSelection, SERVICE_TYPE, TXT_CLUSTER_NAME, TXT_TLS};

/// How long a daemon is given to acknowledge a command while shutting down.
const COMMAND_WAIT: Duration = Duration::from_secs(2);

/// `mdns-sd` repeats the goodbye packet 120 ms after the first one; shutting the daemon down
/// before then would drop the repeat.
const GOODBYE_REPEAT_WAIT: Duration = Duration::from_millis(300);

/// What to announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertisementConfig {
    /// This cluster's ID: the DNS-SD instance name, and the host name `<id>.local.`.
    pub cluster_id: String,
    /// This cluster's name, sent as TXT `clusterName`.
    pub cluster_name: String,
    /// The port peers connect to (the NodePort, or the listen port).
    pub port: u16,
    /// Whether that port speaks TLS, sent as TXT `tls`.
    pub tls: bool,
    /// Where to announce.
    pub interfaces: InterfaceSelection,
}

/// A running mDNS advertisement. Call [`Advertisement::stop`] on shutdown; dropping it instead
/// still asks the daemon to unregister and exit, without waiting for either.
pub struct Advertisement {
    daemon: Option<ServiceDaemon>,
    fullname: String,
}

/// One service instance heard during a browse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredService {
    /// The instance name: the advertising cluster's ID (unverified until `/ids` confirms it).
    pub instance: String,
    /// The SRV target host, e.g. `<cluster-id>.local.`.
    pub host: String,
    /// The SRV port.
    pub port: u16,
    /// Every address the host resolved to, IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// TXT records (`key=value`; a key without value maps to an empty string).
    pub txt: BTreeMap<String, String>,
}

/// Why mDNS could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The daemon (sockets, thread) could not start.
    #[error("starting the mDNS daemon")]
    StartDaemon(#[source] mdns_sd::Error),
    /// The interface selection was not accepted.
    #[error("selecting the network interfaces for mDNS")]
    SelectInterfaces(#[source] mdns_sd::Error),
    /// The service record could not be built (invalid name or TXT record).
    #[error("describing the mDNS service for cluster {cluster_id}")]
    DescribeService {
        /// The instance name that was tried.
        cluster_id: String,
        /// What `mdns-sd` rejected.
        #[source]
        source: mdns_sd::Error,
    },
    /// The daemon refused the registration.
    #[error("registering the mDNS service {fullname}")]
    Register {
        /// Full DNS-SD name of the instance.
        fullname: String,
        /// The daemon's error.
        #[source]
        source: mdns_sd::Error,
    },
    /// No interface matches the selection, so a browse would hear nothing.
    #[error("no network interface to browse on: no interface that is up matches {selection}")]
    NoInterface {
        /// The selection, described for people.
        selection: String,
    },
    /// The browse could not start.
    #[error("browsing {service_type}")]
    Browse {
        /// The service type browsed.
        service_type: &'static str,
        /// The daemon's error.
        #[source]
        source: mdns_sd::Error,
    },
}

impl Advertisement {
    /// Starts a daemon on the selected interfaces and registers the service. The addresses of
    /// each interface are filled in by the daemon and follow address changes.
    pub fn start(config: &AdvertisementConfig) -> Result<Self, DiscoveryError> {
        let properties = [(TXT_CLUSTER_NAME, config.cluster_name.clone()), (TXT_TLS, config.tls.to_string())];
        let host = format!("{}.local.", config.cluster_id);
        let info = ServiceInfo::new(SERVICE_TYPE, &config.cluster_id, &host, "", config.port, &properties[..])
            .map_err(|source| DiscoveryError::DescribeService { cluster_id: config.cluster_id.clone(), source })?
            .enable_addr_auto();
        let fullname = info.get_fullname().to_owned();
        let interfaces = matching_interfaces(&config.interfaces);
        let daemon = daemon_on(&config.interfaces)?;
        if let Err(source) = daemon.register(info) {
            let _ = daemon.shutdown();
            return Err(DiscoveryError::Register { fullname, source });
        }
        if interfaces.is_empty() {
            tracing::warn!(
                mdns.service = %fullname,
                "no network interface matches the mDNS selection ({}); nothing is announced until one comes up",
                describe(&config.interfaces)
            );
        } else {
            let list = interfaces.iter().cloned().collect::<Vec<_>>().join(", ");
            tracing::info!(
                cluster.id = %config.cluster_id,
                mdns.service = %fullname,
                mdns.port = config.port,
                mdns.interfaces = %list,
                "advertising {fullname} on port {} over mDNS on {list}",
                config.port
            );
        }
        Ok(Self { daemon: Some(daemon), fullname })
    }

    /// Unregisters the service (sending the goodbye packets) and stops the daemon. Failures are
    /// logged: at shutdown there is nothing better to do with them.
    pub async fn stop(mut self) {
        let Some(daemon) = self.daemon.take() else {
            return;
        };
        match daemon.unregister(&self.fullname) {
            Ok(status) => match tokio::time::timeout(COMMAND_WAIT, status.recv_async()).await {
                Ok(Ok(UnregisterStatus::OK)) => {
                    tokio::time::sleep(GOODBYE_REPEAT_WAIT).await;
                    tracing::info!(mdns.service = %self.fullname, "withdrew the mDNS advertisement {}", self.fullname);
                }
                Ok(Ok(other)) => {
                    tracing::warn!(mdns.service = %self.fullname, status = ?other, "unregistering the mDNS service did not succeed")
                }
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(mdns.service = %self.fullname, "the mDNS daemon did not confirm the unregistration")
                }
            },
            Err(error) => {
                tracing::warn!(mdns.service = %self.fullname, error = %error, "unregistering the mDNS service failed")
            }
        }
        shutdown(daemon).await;
    }
}

impl fmt::Debug for Advertisement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Advertisement")
            .field("fullname", &self.fullname)
            .field("running", &self.daemon.is_some())
            .finish()
    }
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            let _ = daemon.unregister(&self.fullname);
            let _ = daemon.shutdown();
        }
    }
}

impl DiscoveredService {
    /// The cluster name the service announced in TXT, if any.
    pub fn txt_cluster_name(&self) -> Option<&str> {
        self.txt.get(TXT_CLUSTER_NAME).map(String::as_str).filter(|name| !name.is_empty())
    }

    /// Whether the service speaks TLS: true unless it announced `tls=false` (a reference
    /// advertisement has no TXT record and always serves HTTPS).
    pub fn tls(&self) -> bool {
        !self.txt.get(TXT_TLS).is_some_and(|v| v.eq_ignore_ascii_case("false"))
    }
}

/// Browses [`SERVICE_TYPE`] on the selected interfaces for `window` and returns the instances
/// resolved in that time, sorted by instance name. Instances that said goodbye during the
/// window are left out. Fails at once when no interface that is up matches the selection: an
/// empty result would otherwise look like an empty LAN.
pub async fn browse(
    window: Duration,
    interfaces: &InterfaceSelection,
) -> Result<Vec<DiscoveredService>, DiscoveryError> {
    let matching = matching_interfaces(interfaces);
    if matching.is_empty() {
        return Err(DiscoveryError::NoInterface { selection: describe(interfaces) });
    }
    tracing::debug!(
        mdns.interfaces = %matching.iter().cloned().collect::<Vec<_>>().join(", "),
        "browsing {SERVICE_TYPE} for {window:?}"
    );
    let daemon = daemon_on(interfaces)?;
    let events = match daemon.browse(SERVICE_TYPE) {
        Ok(events) => events,
        Err(source) => {
            shutdown(daemon).await;
            return Err(DiscoveryError::Browse { service_type: SERVICE_TYPE, source });
        }
    };
    let deadline = tokio::time::Instant::now() + window;
    let mut found: BTreeMap<String, DiscoveredService> = BTreeMap::new();
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv_async()).await {
        match event {
            ServiceEvent::ServiceResolved(resolved) => {
                let key = resolved.fullname.to_ascii_lowercase();
                let addresses = resolved.addresses.iter().map(|a| a.to_ip_addr()).collect::<Vec<_>>();
                let txt =
                    resolved.txt_properties.iter().map(|p| (p.key().to_owned(), p.val_str().to_owned())).collect();
                let service = DiscoveredService {
                    instance: instance_name(&resolved.fullname),
                    host: resolved.host.clone(),
                    port: resolved.port,
                    addresses: Vec::new(),
                    txt,
                };
                // A later resolution may carry more addresses (another interface, IPv6).
                let previous = found.remove(&key).map(|s| s.addresses).unwrap_or_default();
                let service = DiscoveredService {
                    addresses: ordered_addresses(previous.into_iter().chain(addresses)),
                    ..service
                };
                tracing::debug!(mdns.service = %resolved.fullname, "resolved {}", resolved.fullname);
                found.insert(key, service);
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                tracing::debug!(mdns.service = %fullname, "{fullname} said goodbye");
                found.remove(&fullname.to_ascii_lowercase());
            }
            _ => {}
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    shutdown(daemon).await;
    let mut services: Vec<_> = found.into_values().collect();
    services.sort_by(|a, b| a.instance.cmp(&b.instance));
    Ok(services)
}

/// A daemon whose sockets join only the interfaces `selection` allows.
fn daemon_on(selection: &InterfaceSelection) -> Result<ServiceDaemon, DiscoveryError> {
    let daemon = ServiceDaemon::new().map_err(DiscoveryError::StartDaemon)?;
    let filter = selection.clone();
    // Selections apply in order: everything off, then the allowed interfaces back on.
    let selected = daemon.disable_interface(IfKind::All).and_then(|()| {
        daemon.enable_interface(IfKind::Predicate(IfPredicate::new(move |intf| {
            filter.allows(&intf.name, intf.is_loopback())
        })))
    });
    if let Err(source) = selected {
        let _ = daemon.shutdown();
        return Err(DiscoveryError::SelectInterfaces(source));
    }
    Ok(daemon)
}

/// Names of the interfaces `selection` allows right now, for the log.
fn matching_interfaces(selection: &InterfaceSelection) -> BTreeSet<String> {
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|intf| intf.is_oper_up() && selection.allows(&intf.name, intf.is_loopback()))
        .map(|intf| intf.name)
        .collect()
}

fn describe(selection: &InterfaceSelection) -> String {
    match selection {
        InterfaceSelection::Automatic => {
            "the default selection (not loopback, not a pod, container or tunnel network; name one with --mdns-interface)"
                .into()
        }
        InterfaceSelection::Named(names) => format!("--mdns-interface {}", names.join(", ")),
    }
}

/// Deduplicated, IPv4 before IPv6, each family in ascending order.
fn ordered_addresses(addresses: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let unique: BTreeSet<(bool, IpAddr)> = addresses.into_iter().map(|a| (a.is_ipv6(), a)).collect();
    unique.into_iter().map(|(_, a)| a).collect()
}

async fn shutdown(daemon: ServiceDaemon) {
    if let Ok(status) = daemon.shutdown() {
        let _ = tokio::time::timeout(COMMAND_WAIT, status.recv_async()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(txt: &[(&str, &str)]) -> DiscoveredService {
        DiscoveredService {
            instance: "id".into(),
            host: "id.local.".into(),
            port: 30443,
            addresses: Vec::new(),
            txt: txt.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn addresses_are_ordered_ipv4_first_without_duplicates() {
        let ordered = ordered_addresses(
            ["fd00::1", "10.0.0.2", "10.0.0.1", "10.0.0.2"].iter().map(|a| a.parse::<IpAddr>().expect("address")),
        );
        assert_eq!(
            ordered,
            ["10.0.0.1", "10.0.0.2", "fd00::1"]
                .iter()
                .map(|a| a.parse::<IpAddr>().expect("address"))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_service_without_txt_records_is_tls_and_nameless_like_the_reference() {
        let bare = service(&[]);
        assert!(bare.tls());
        assert_eq!(bare.txt_cluster_name(), None);
        let plain = service(&[("tls", "false"), ("clusterName", "alpha")]);
        assert!(!plain.tls());
        assert_eq!(plain.txt_cluster_name(), Some("alpha"));
    }
}
