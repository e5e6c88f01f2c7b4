//! Small PKI helpers shared by the server and the client: SPKI pins and PEM handling.
//!
//! `pem_blocks` is the strict PEM reader for untrusted input (CSRs): like Go's `encoding/pem`,
//! an `-----END` line must repeat its `-----BEGIN` label, so text that is not one well-formed
//! block is refused instead of being read leniently.
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

/// One PEM block: its label and its decoded contents.
#[derive(Clone, PartialEq, Eq)]
pub struct PemBlock {
    pub label: String,
    pub contents: Vec<u8>,
}

impl std::fmt::Debug for PemBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemBlock").field("label", &self.label).field("contents", &"<redacted>").finish()
    }
}

/// Why PEM text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("the PEM text is not UTF-8")]
    NotText,
    #[error("a PEM block has no END line")]
    Unterminated,
    #[error("a PEM END line does not repeat its BEGIN label")]
    LabelMismatch,
    #[error("a PEM boundary line is malformed")]
    Boundary,
    #[error("a PEM block's contents are not base64")]
    Base64,
}

/// Reads every PEM block of `text` strictly (RFC 7468's strict grammar, as Go reads it): a
/// `-----BEGIN LABEL-----` line, base64 lines, and `-----END LABEL-----` with the same label.
/// Lines outside blocks are explanatory text and ignored; header lines (`Proc-Type:`) and
/// anything else inside a block are refused.
pub fn pem_blocks(text: &[u8]) -> Result<Vec<PemBlock>, PemError> {
    use base64::Engine as _;
    let text = std::str::from_utf8(text).map_err(|_| PemError::NotText)?;
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("-----BEGIN ") else {
            if line.starts_with("-----END ") {
                return Err(PemError::Boundary);
            }
            continue;
        };
        let label = boundary_label(rest)?;
        let mut body = String::new();
        loop {
            let line = lines.next().ok_or(PemError::Unterminated)?;
            if let Some(rest) = line.strip_prefix("-----END ") {
                if boundary_label(rest)? != label {
                    return Err(PemError::LabelMismatch);
                }
                break;
            }
            if line.starts_with("-----") {
                return Err(PemError::Boundary);
            }
            body.push_str(line);
        }
        let contents = base64::engine::general_purpose::STANDARD.decode(&body).map_err(|_| PemError::Base64)?;
        blocks.push(PemBlock { label: label.to_owned(), contents });
    }
    Ok(blocks)
}

/// The label of a boundary line after `-----BEGIN ` / `-----END `: printable ASCII, no
/// leading or trailing space, followed by exactly five dashes.
fn boundary_label(rest: &str) -> Result<&str, PemError> {
    let label = rest.strip_suffix("-----").ok_or(PemError::Boundary)?;
    let printable = label.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    let trimmed = |c: char| label.starts_with(c) || label.ends_with(c);
    if label.is_empty() || !printable || trimmed(' ') || trimmed('-') {
        return Err(PemError::Boundary);
    }
    Ok(label)
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
    fn pem_blocks_need_matching_begin_and_end_labels() {
        let good = "text before\n-----BEGIN CERTIFICATE REQUEST-----\nAAEC\nAw==\n-----END CERTIFICATE REQUEST-----\n";
        let blocks = pem_blocks(good.as_bytes()).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(
            (blocks[0].label.as_str(), blocks[0].contents.as_slice()),
            ("CERTIFICATE REQUEST", &[0, 1, 2, 3][..])
        );
        let crlf = good.replace('\n', "\r\n");
        assert_eq!(pem_blocks(crlf.as_bytes()).unwrap(), blocks);
        let mismatch = good.replace("END CERTIFICATE REQUEST", "END CERTIFICATE");
        assert_eq!(pem_blocks(mismatch.as_bytes()), Err(PemError::LabelMismatch));
        let open = "-----BEGIN CERTIFICATE REQUEST-----\nAAEC\n";
        assert_eq!(pem_blocks(open.as_bytes()), Err(PemError::Unterminated));
        let header = good.replace("AAEC\n", "Proc-Type: 4,ENCRYPTED\nAAEC\n");
        assert_eq!(pem_blocks(header.as_bytes()), Err(PemError::Base64));
        let nested = good.replace("AAEC\n", "-----BEGIN X-----\n");
        assert_eq!(pem_blocks(nested.as_bytes()), Err(PemError::Boundary));
        assert_eq!(pem_blocks(b"-----END CERTIFICATE REQUEST-----\n"), Err(PemError::Boundary));
        assert_eq!(pem_blocks(b"-----BEGIN A----\n-----END A----\n"), Err(PemError::Boundary));
        assert_eq!(pem_blocks(b"no pem at all").unwrap(), vec![]);
        assert_eq!(pem_blocks(&[0xff, 0xfe]), Err(PemError::NotText));
    }

    #[test]
    fn rejects_malformed_pins() {
        assert!(parse_pin("sha256:abc").is_none());
        assert!(parse_pin("md5:00").is_none());
    }
}
