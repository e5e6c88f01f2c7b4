//! Small PKI helpers shared by the server and the client: SPKI pins and PEM handling.
//!
//! A pin is `sha256:<hex>` of the DER SubjectPublicKeyInfo, the format kubeadm uses for
//! `--discovery-token-ca-cert-hash`, so operators can compare it with familiar tools:
//! `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_round_trips_through_parse() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["a".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let pin = spki_pin(cert.der()).expect("pin");
        assert!(pin.starts_with("sha256:") && pin.len() == 71);
        let raw = parse_pin(&pin).expect("parses");
        assert_eq!(format!("sha256:{}", hex::encode(raw)), pin);
        assert_eq!(spki_pin_of_spki(&key.public_key_der()), pin);
    }

    #[test]
    fn rejects_malformed_pins() {
        assert!(parse_pin("sha256:abc").is_none());
        assert!(parse_pin("md5:00").is_none());
    }
}
