//! `dns-records` flags, turned into `app::dns_records::DnsRecordsOptions`.

use std::time::Duration;

use clap::Args as ClapArgs;

use crate::app::dns_records::DnsRecordsOptions;
use crate::cli::{parse_timeout, AdvertiseArgs, BackendArgs, OutputFormat};
use crate::config::BackendConfig;

/// `liqo-auth dns-records` flags. Every flag can also be set with `LIQO_AUTH_<FLAG>`.
#[derive(Debug, Clone, ClapArgs)]
#[command(after_help = "Example:
  liqo-auth dns-records --backend local --domain liqo.example.com --advertise-auth-address auth.milan.example.com:443
prints, for the zone of liqo.example.com:
  liqo.example.com.        300 IN PTR  milan.liqo.example.com.
  milan.liqo.example.com.  300 IN SRV  0 0 443 auth.milan.example.com.
  milan.liqo.example.com.  300 IN TXT  \"clusterID=...\" \"clusterName=milan\" \"pin=sha256:...\"")]
pub struct DnsRecordsArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The discovery domain peers pass to `discover --dns-domain`, e.g. liqo.example.com.
    #[arg(long, env = "LIQO_AUTH_DNS_DOMAIN", value_name = "DOMAIN")]
    pub domain: String,
    /// This cluster's label under the domain (the PTR target is NAME.DOMAIN). Default: the
    /// cluster name.
    #[arg(long, env = "LIQO_AUTH_DNS_NAME", value_name = "LABEL")]
    pub name: Option<String>,
    /// TTL of the records (Go duration).
    #[arg(long = "record-ttl", env = "LIQO_AUTH_RECORD_TTL", value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    pub record_ttl: Duration,
    /// The SRV target and the TXT `pin=`.
    #[command(flatten)]
    pub advertise: AdvertiseArgs,
    /// Output format: zone-file lines, or the records as JSON.
    #[arg(short = 'o', long, env = "LIQO_AUTH_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

impl DnsRecordsArgs {
    /// The backend to open and what to print.
    pub fn into_options(self) -> (BackendConfig, DnsRecordsOptions) {
        let options = DnsRecordsOptions {
            domain: self.domain,
            name: self.name,
            ttl: self.record_ttl,
            advertise_auth_address: self.advertise.advertise_auth_address,
            address: self.advertise.address,
            cert_path: self.advertise.cert_path,
            local_cluster_id: self.advertise.local_cluster_id,
            json: self.output == OutputFormat::Json,
        };
        (self.backend.to_config(), options)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        records: DnsRecordsArgs,
    }

    #[test]
    fn dns_records_need_a_domain_and_default_to_five_minutes() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["dns-records"]).is_err());
        let cli =
            Cli::try_parse_from(["dns-records", "--domain", "liqo.example.com", "--name", "milan"]).expect("parses");
        let (_, options) = cli.records.into_options();
        assert_eq!((options.domain.as_str(), options.name.as_deref()), ("liqo.example.com", Some("milan")));
        assert_eq!(options.ttl, Duration::from_secs(300));
        assert_eq!(options.address, None);
        assert!(!options.json);
    }
}
