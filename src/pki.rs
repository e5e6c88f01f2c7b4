//! Small PKI helpers shared by the server and the client: SPKI pins and PEM handling.
//!
//! A pin is `sha256:<hex>` of the DER SubjectPublicKeyInfo, the format kubeadm uses for
//! `--discovery-token-ca-cert-hash`, so operators can compare it with familiar tools:
//! `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`.

#[cfg(test)]
use rcgen::PublicKeyData as _;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The `sha256:<hex>` pin of a certificate's SubjectPublicKeyInfo.
pub fn spki_pin(cert_der: &[u8]) -> Result<String, x509_parser::nom::Err<x509_parser::error::X509Error>> {
    let (_, cert) = X509Certificate::from_der(cert_der)?;
    Ok(spki_pin_of_spki(cert.public_key().raw))
}

/// The `sha256:<hex>` pin of DER SubjectPublicKeyInfo bytes.
pub fn spki_pin_of_spki(spki_der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(spki_der)))
}

/// Parses a pin given on the command line (`sha256:<64 hex>`, case-insensitive).
pub fn parse_pin(text: &str) -> Option<[u8; 32]> {
    let hex_part = text.strip_prefix("sha256:").or_else(|| text.strip_prefix("SHA256:"))?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part.to_ascii_lowercase(), &mut out).ok()?;
    Some(out)
}

/// Now, in Unix seconds (the unit of certificate and token validity throughout).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Unix seconds as RFC 3339 UTC (`2027-11-24T20:30:45Z`); the bare number when out of range.
pub fn format_unix(seconds: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| seconds.to_string())
}

/// DER bytes of the first `CERTIFICATE` block in a PEM bundle.
pub fn first_certificate_der(pem: &[u8]) -> Option<Vec<u8>> {
    certificates_der(pem).into_iter().next()
}

/// DER bytes of every `CERTIFICATE` block in a PEM bundle, in order.
pub fn certificates_der(pem: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .filter(|block| block.label == "CERTIFICATE")
        .map(|block| block.contents)
        .collect()
}

/// DER SubjectPublicKeyInfo of the first certificate in a PEM bundle.
pub fn first_certificate_spki(pem: &[u8]) -> Option<Vec<u8>> {
    let der = first_certificate_der(pem)?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

/// What operators and audit logs want to know about an issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    /// Serial number, lower-case hex.
    pub serial: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

impl CertificateSummary {
    /// Summarises the first certificate of a PEM bundle.
    pub fn from_pem(pem: &[u8]) -> Option<Self> {
        let der = first_certificate_der(pem)?;
        let (_, cert) = X509Certificate::from_der(&der).ok()?;
        let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
        let summary = Self {
            serial: hex::encode(cert.raw_serial()),
            not_after: cert.validity().not_after.timestamp(),
            not_before: cert.validity().not_before.timestamp(),
            common_name,
            spki_der: cert.public_key().raw.to_vec(),
        };
        Some(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_round_trips_through_parse() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["a".into()]).expect("params").self_signed(&key).expect("cert");
        let pin = spki_pin(cert.der()).expect("pin");
        assert!(pin.starts_with("sha256:") && pin.len() == 71);
        let raw = parse_pin(&pin).expect("parses");
        assert_eq!(format!("sha256:{}", hex::encode(raw)), pin);
        assert_eq!(spki_pin_of_spki(&key.subject_public_key_info()), pin);
    }

    #[test]
    fn formats_unix_seconds_as_rfc3339_utc() {
        assert_eq!(format_unix(1_827_088_245), "2027-11-24T20:30:45Z");
        assert_eq!(format_unix(i64::MAX), i64::MAX.to_string());
    }

    #[test]
    fn rejects_malformed_pins() {
        assert!(parse_pin("sha256:abc").is_none());
        assert!(parse_pin("md5:00").is_none());
    }
}
