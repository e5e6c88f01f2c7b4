//! `discover` flags, turned into `client::discover::DiscoverOptions`.

use std::path::PathBuf;
use std::time::Duration;

use clap::ArgAction;

use crate::cli::trust::{TrustArgs, TrustArgsError};
use crate::cli::{parse_timeout, OutputFormat};
use crate::client::discover::{DiscoverOptions, DnsOptions, MdnsOptions};
use crate::discovery::dns::{DNS_PORT, RESOLV_CONF};

/// `liqo-auth discover` flags. Every flag can also be set with `LIQO_AUTH_<FLAG>`.
#[derive(Clone, Debug, clap::Args)]
#[command(after_help = "Examples:
  liqo-auth discover --insecure-skip-tls-verify          # the LAN, to read the pins out there
  liqo-auth discover --dns-domain liqo.example.com       # the clusters listed in a DNS domain
  liqo-auth discover --dns-domain liqo.example.com --dns-server 192.0.2.53:53 --mdns

Exit codes: 0 every search ran and every service found answered (also when nothing was found);
2 some service failed a step (its row says which); 1 a search could not run at all (no interface
to browse on, a domain without PTR records, no DNS server).")]
pub struct DiscoverArgs {
    /// How long to listen for mDNS answers (Go duration, e.g. 3s or 1500ms; `--timeout` is an
    /// old name of this flag).
    #[arg(long = "listen-time", alias = "timeout", env = "LIQO_AUTH_LISTEN_TIME", value_name = "DURATION", default_value = "3s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Output format.
    #[arg(short = 'o', long, env = "LIQO_AUTH_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Browse on this interface only (repeatable); by default on every non-loopback interface
    /// outside pod networks.
    #[arg(long = "mdns-interface", env = "LIQO_AUTH_MDNS_INTERFACE", value_name = "NAME", value_delimiter = ',')]
    pub mdns_interface: Vec<String>,

    /// Find clusters through this DNS domain (repeatable): its PTR records name one target per
    /// cluster, each with an SRV record (host and port of the auth service) and optionally a TXT
    /// record (clusterID=, clusterName=, pin=sha256:...), as Liqo's WAN discovery published
    /// them. Without --mdns, the LAN is then not browsed.
    #[arg(long = "dns-domain", env = "LIQO_AUTH_DNS_DOMAIN", value_name = "DOMAIN", value_delimiter = ',')]
    pub dns_domain: Vec<String>,

    /// The DNS server to ask (HOST[:PORT], default port 53). Default: the first nameserver of
    /// /etc/resolv.conf.
    #[arg(long = "dns-server", env = "LIQO_AUTH_DNS_SERVER", value_name = "HOST:PORT", value_parser = parse_dns_server)]
    pub dns_server: Option<(String, u16)>,

    /// Time allowed for each DNS query (Go duration).
    #[arg(long = "dns-timeout", env = "LIQO_AUTH_DNS_TIMEOUT", value_name = "DURATION", default_value = "2s", value_parser = parse_timeout)]
    pub dns_timeout: Duration,

    /// Browse the LAN over mDNS as well when --dns-domain is given (without --dns-domain the
    /// LAN is always browsed).
    #[arg(long, env = "LIQO_AUTH_MDNS", num_args = 0..=1, require_equals = true, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub mdns: bool,

    /// How the certificates of the services found are verified. Without any of these flags, a
    /// service found through DNS is verified against the pin of its TXT record, if it has one.
    #[command(flatten)]
    pub trust: TrustArgs,
}

impl DiscoverArgs {
    /// Turns the flags into [`DiscoverOptions`], reading `--ca-file`.
    pub fn into_options(self) -> Result<DiscoverOptions, TrustArgsError> {
        let domains: Vec<String> =
            self.dns_domain.into_iter().map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()).collect();
        let mdns = (domains.is_empty() || self.mdns)
            .then_some(MdnsOptions { window: self.timeout, interfaces: self.mdns_interface });
        let dns = (!domains.is_empty()).then(|| DnsOptions {
            domains,
            server: self.dns_server,
            resolv_conf: PathBuf::from(RESOLV_CONF),
            query_timeout: self.dns_timeout,
        });
        Ok(DiscoverOptions { mdns, dns, output: self.output.into(), trust: self.trust.into_server_trust()? })
    }
}

/// `HOST`, `HOST:PORT`, `IPV6` or `[IPV6]:PORT`; the port defaults to 53.
fn parse_dns_server(text: &str) -> Result<(String, u16), String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not HOST[:PORT] (e.g. 192.0.2.53, dns.example.com:53, [2001:db8::53]:5353)");
    if text.is_empty() || text.contains(char::is_whitespace) || text.contains('/') {
        return Err(bad());
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((text.to_owned(), DNS_PORT));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?),
        None => (text, DNS_PORT),
    };
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok()).ok_or_else(bad)?,
        None if host.contains(':') || host.contains(['[', ']']) => return Err(bad()),
        None => host,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        discover: DiscoverArgs,
    }

    fn options(args: &[&str]) -> DiscoverOptions {
        let argv = std::iter::once("discover").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("parses").discover.into_options().expect("options")
    }

    #[test]
    fn without_a_domain_only_the_lan_is_browsed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let options = options(&["--timeout", "1s", "--mdns-interface", "eth0"]);
        assert_eq!(options.mdns, Some(MdnsOptions { window: Duration::from_secs(1), interfaces: vec!["eth0".into()] }));
        assert_eq!(options.dns, None);
    }

    #[test]
    fn a_domain_replaces_the_lan_unless_mdns_is_asked_for() {
        let dns_only = options(&["--dns-domain", "liqo.example.com", "--dns-domain", "b.example.com"]);
        assert_eq!(dns_only.mdns, None);
        let dns = dns_only.dns.expect("dns");
        assert_eq!(dns.domains, ["liqo.example.com", "b.example.com"]);
        assert_eq!((dns.server, dns.query_timeout), (None, Duration::from_secs(2)));
        assert_eq!(dns.resolv_conf, PathBuf::from("/etc/resolv.conf"));
        let both = options(&["--dns-domain", "liqo.example.com", "--mdns", "--dns-server", "127.0.0.1:5353"]);
        assert!(both.mdns.is_some());
        assert_eq!(both.dns.expect("dns").server, Some(("127.0.0.1".to_owned(), 5353)));
    }

    #[test]
    fn dns_servers_take_an_optional_port() {
        assert_eq!(parse_dns_server("192.0.2.53"), Ok(("192.0.2.53".into(), 53)));
        assert_eq!(parse_dns_server("dns.example.com:5353"), Ok(("dns.example.com".into(), 5353)));
        assert_eq!(parse_dns_server("2001:db8::53"), Ok(("2001:db8::53".into(), 53)));
        assert_eq!(parse_dns_server("[2001:db8::53]:5353"), Ok(("2001:db8::53".into(), 5353)));
        for bad in ["", "host:0", "host:x", "[nope]:53", "a b", ":53", "udp://1.2.3.4"] {
            assert!(parse_dns_server(bad).is_err(), "{bad:?}");
        }
    }
}
