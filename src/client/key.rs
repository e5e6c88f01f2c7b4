//! The consumer's key material: generating the key and CSR of a request, and telling whether a
//! certificate belongs to a key.
//!
//! Storing the key is left to the identity store, checking the rest of a certificate to
//! [`super::verify`].

use std::fmt;

use serde::Serialize;

use crate::identity::port::PendingKey;
use crate::identity::{ClusterId, ParsedCsr, LIQO_ORGANIZATION};
use crate::pki::CertificateSummary;

/// Key algorithm of the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// ECDSA P-256 (the default).
    P256,
    /// Ed25519 (the reference consumer's choice).
    Ed25519,
    /// RSA 2048 bits (slow to generate).
    Rsa2048,
}

/// The key could not be generated.
#[derive(Debug, thiserror::Error)]
#[error("generating the {key_type:?} key")]
pub struct GenerateKeyError {
    /// The requested type.
    pub key_type: KeyType,
    /// The library's error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl KeyType {
    /// The name stored with a pending key.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::P256 => "p256",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa2048",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A new key of `key_type` and a CSR with CN = this cluster's ID and O = liqo.io, no extensions.
pub fn generate_key(key_type: KeyType, local: &ClusterId) -> Result<PendingKey, GenerateKeyError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| GenerateKeyError { key_type, source };
    let key = match key_type {
        KeyType::P256 => {
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| failed(Box::new(e)))?
        }
        KeyType::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| failed(Box::new(e)))?,
        KeyType::Rsa2048 => {
            use rsa::pkcs8::EncodePrivateKey as _;
            // ring signs with RSA but cannot generate RSA keys.
            let rsa_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(|e| failed(Box::new(e)))?;
            let pem = rsa_key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).map_err(|e| failed(Box::new(e)))?;
            rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).map_err(|e| failed(Box::new(e)))?
        }
    };
    let csr_pem = csr_of(&key, local).map_err(|e| failed(Box::new(e)))?;
    Ok(PendingKey { key_type: key_type.name().to_owned(), private_key_pem: key.serialize_pem(), csr_pem })
}

/// A CSR for an existing key (a renewal keeps the key), with the subject `generate_key` uses.
pub fn csr_for_key(private_key_pem: &str, local: &ClusterId) -> Result<PendingKey, rcgen::Error> {
    let key = rcgen::KeyPair::from_pem(private_key_pem)
        .or_else(|_| rcgen::KeyPair::from_pem_and_sign_algo(private_key_pem, &rcgen::PKCS_RSA_SHA256))?;
    let csr_pem = csr_of(&key, local)?;
    Ok(PendingKey { key_type: "current".to_owned(), private_key_pem: private_key_pem.to_owned(), csr_pem })
}

fn csr_of(key: &rcgen::KeyPair, local: &ClusterId) -> Result<String, rcgen::Error> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, local.as_str());
    params.distinguished_name.push(rcgen::DnType::OrganizationName, LIQO_ORGANIZATION);
    params.serialize_request(key)?.pem()
}

/// True when a pending key can be re-sent as is: same key type, and a CSR for this cluster.
pub fn pending_fits(pending: &PendingKey, key_type: KeyType, local: &ClusterId) -> bool {
    pending.key_type == key_type.name()
        && ParsedCsr::from_pem(pending.csr_pem.as_bytes()).is_ok_and(|csr| csr.common_name() == local.as_str())
}

/// True when the certificate was issued for the public half of the key.
pub fn key_matches_certificate(private_key_pem: &str, certificate_pem: &str) -> bool {
    let Some(summary) = CertificateSummary::from_pem(certificate_pem.as_bytes()) else {
        return false;
    };
    public_key_of(private_key_pem).is_some_and(|spki| spki == summary.spki_der)
}

/// DER SubjectPublicKeyInfo of a PKCS#8 PEM key of a type `peer` generates.
pub fn public_key_of(private_key_pem: &str) -> Option<Vec<u8>> {
    use rcgen::PublicKeyData as _;
    let key = rcgen::KeyPair::from_pem(private_key_pem)
        .or_else(|_| rcgen::KeyPair::from_pem_and_sign_algo(private_key_pem, &rcgen::PKCS_RSA_SHA256))
        .ok()?;
    Some(key.subject_public_key_info())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_make_csrs_the_server_accepts() {
        let local = ClusterId::parse("consumer-1").unwrap();
        for key_type in [KeyType::P256, KeyType::Ed25519, KeyType::Rsa2048] {
            let key = generate_key(key_type, &local).expect("key");
            let csr = ParsedCsr::from_pem(key.csr_pem.as_bytes()).expect("the server's CSR parser accepts it");
            assert_eq!((csr.common_name(), csr.organization()), ("consumer-1", Some("liqo.io")));
            assert!(key.private_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
            assert!(pending_fits(&key, key_type, &local));
            assert!(!pending_fits(&key, key_type, &ClusterId::parse("someone-else").unwrap()));
            let again = csr_for_key(&key.private_key_pem, &local).expect("a CSR for the same key");
            let csr_again = ParsedCsr::from_pem(again.csr_pem.as_bytes()).unwrap();
            assert_eq!(csr_again.spki_der(), csr.spki_der(), "same key");
        }
    }
}
