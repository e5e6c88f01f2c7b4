//! Discovery of liqo-auth services: on the LAN over mDNS / DNS-SD ([`mdns`]), and through a
//! company DNS domain ([`dns`], the layout of Liqo's former WAN discovery).
//!
//! A serving cluster announces itself as an instance of [`SERVICE_TYPE`] named after its cluster
//! ID, with the externally visible port (a NodePort, typically) and two optional TXT records; a
//! browsing cluster collects the instances it hears within a time window. This module owns the
//! mDNS side only: which interfaces take part ([`InterfaceSelection`]), the advertisement
//! ([`Advertisement`]) and the browse ([`browse`]). Talking HTTPS to what was found, and printing
//! it, is left to `client::discover`.
//!
//! Announcements are not authenticated: anyone on the segment can announce any cluster ID. What
//! proves a service's identity is the TLS pin a peer checks afterwards. DNS answers are as
//! trustworthy as the zone and the path to the DNS server (see [`dns`]).

pub mod dns;
pub mod mdns;

pub use mdns::{browse, Advertisement, AdvertisementConfig, DiscoveredService, DiscoveryError};

/// The DNS-SD service type and domain the reference uses (`_liqo_auth._tcp` in `local.`).
pub const SERVICE_TYPE: &str = "_liqo_auth._tcp.local.";

/// TXT key carrying the advertising cluster's name (ignored by the reference browser); the DNS
/// mode reads the same key.
pub const TXT_CLUSTER_NAME: &str = "clusterName";

/// TXT key saying whether the advertised port speaks TLS: `true` or `false`.
pub const TXT_TLS: &str = "tls";

/// Interface name prefixes of pod, container and tunnel networks, which are never announced on
/// unless named explicitly: a peer on the LAN cannot reach those addresses.
pub const POD_NETWORK_PREFIXES: &[&str] =
    &["cni", "flannel", "cali", "veth", "docker", "liqo", "vxlan", "tunl", "kube-", "cilium", "lxc", "wg"];

/// Which network interfaces mDNS uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum InterfaceSelection {
    /// Every interface that is neither loopback nor a pod network (see
    /// [`POD_NETWORK_PREFIXES`]).
    #[default]
    Automatic,
    /// Exactly these interfaces, whatever their names (`--mdns-interface`, repeatable).
    Named(Vec<String>),
}

impl InterfaceSelection {
    /// `Automatic` when `names` is empty, otherwise exactly the names given.
    pub fn from_names(names: Vec<String>) -> Self {
        let names: Vec<String> = names.into_iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
        if names.is_empty() {
            Self::Automatic
        } else {
            Self::Named(names)
        }
    }

    /// Whether the interface called `name` takes part.
    pub fn allows(&self, name: &str, is_loopback: bool) -> bool {
        match self {
            Self::Automatic => !is_loopback && !is_pod_network(name),
            Self::Named(names) => names.iter().any(|n| n == name),
        }
    }
}

/// True for names of pod, container and tunnel interfaces (see [`POD_NETWORK_PREFIXES`]).
pub fn is_pod_network(name: &str) -> bool {
    POD_NETWORK_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// The instance label of a DNS-SD full name (`<instance>.<SERVICE_TYPE>`), with the escapes of
/// RFC 6763 section 4.3 (`\.` and `\\`) undone.
pub fn instance_name(fullname: &str) -> String {
    let suffix = format!(".{SERVICE_TYPE}");
    let escaped = match fullname.len().checked_sub(suffix.len()) {
        Some(cut) if fullname.is_char_boundary(cut) && fullname[cut..].eq_ignore_ascii_case(&suffix) => {
            &fullname[..cut]
        }
        _ => fullname,
    };
    let mut name = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => name.extend(chars.next()),
            c => name.push(c),
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_selection_skips_loopback_and_pod_networks() {
        let auto = InterfaceSelection::Automatic;
        for name in ["eth0", "enp3s0", "wlan0", "br0", "ens192", "bond0"] {
            assert!(auto.allows(name, false), "{name}");
        }
        assert!(!auto.allows("lo", true));
        for name in [
            "cni0",
            "flannel.1",
            "cali1234abcd",
            "veth9a8b7c",
            "docker0",
            "liqo.tunnel",
            "vxlan.calico",
            "tunl0",
            "kube-ipvs0",
            "cilium_host",
            "lxc12ab",
            "wg0",
        ] {
            assert!(!auto.allows(name, false), "{name}");
        }
    }

    #[test]
    fn named_selection_takes_exactly_the_names_even_pod_like_ones() {
        let named = InterfaceSelection::from_names(vec!["veth-lab".into(), "eth1".into()]);
        assert!(named.allows("veth-lab", false));
        assert!(named.allows("eth1", false));
        assert!(!named.allows("eth0", false));
        assert!(!named.allows("lo", true));
    }

    #[test]
    fn empty_names_mean_automatic() {
        assert_eq!(InterfaceSelection::from_names(vec![" ".into()]), InterfaceSelection::Automatic);
    }

    #[test]
    fn instance_name_strips_the_service_type() {
        assert_eq!(instance_name("0f1e2d3c-aaaa._liqo_auth._tcp.local."), "0f1e2d3c-aaaa");
        assert_eq!(instance_name("ABC._LIQO_AUTH._tcp.local."), "ABC", "DNS names are case-insensitive");
        assert_eq!(instance_name("odd"), "odd");
        assert_eq!(instance_name(r"a\.b\\c._liqo_auth._tcp.local."), r"a.b\c");
    }
}
