//! `ParsedCsr`: a PKCS#10 certificate signing request, valid by construction.
//!
//! Parsing checks everything a CSR can be checked for on its own: one PEM block, a valid
//! self-signature, an accepted key type, a subject made only of CN and `O=liqo.io`, and no
//! requested extensions. Whether the CN matches the requesting cluster is the issuer's check,
//! because only the issuer knows the cluster.

use std::fmt;

use sha2::{Digest, Sha256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
    OID_X509_COMMON_NAME, OID_X509_ORGANIZATION_NAME,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// The only organisation a peer may ask for: the group Liqo grants peering permissions to.
pub const LIQO_ORGANIZATION: &str = "liqo.io";

/// The largest CSR PEM we accept; a P-256 CSR is about 400 bytes, an RSA-8192 one about 2.5 KiB.
const MAX_CSR_PEM_BYTES: usize = 16 * 1024;

/// Why a CSR was refused. Every message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("certificateSigningRequest is not valid base64")]
    Base64,
    #[error("certificateSigningRequest is too large")]
    TooLarge,
    #[error("certificateSigningRequest must hold exactly one PEM block of type CERTIFICATE REQUEST")]
    Pem,
    #[error("certificateSigningRequest is not a valid PKCS#10 request")]
    Der,
    #[error("certificate signing request signature is invalid")]
    Signature,
    #[error("unsupported key: use Ed25519, ECDSA P-256 or P-384, or RSA with 2048 to 8192 bits")]
    KeyType,
    #[error("certificate signing request subject must hold exactly one common name")]
    CommonName,
    #[error("certificate signing request organisation must be absent or exactly \"liqo.io\"")]
    Organization,
    #[error("certificate signing request subject may only contain CN and O")]
    SubjectAttribute,
    #[error("certificate signing request must not request extensions or subject alternative names")]
    Extensions,
}

/// The algorithm family of a CSR's public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Ed25519,
    EcdsaP256,
    EcdsaP384,
    Rsa { bits: usize },
}

/// A validated PKCS#10 request.
#[derive(Clone)]
pub struct ParsedCsr {
    der: Vec<u8>,
    spki_der: Vec<u8>,
    common_name: String,
    organization: Option<String>,
    key_kind: KeyKind,
}

impl ParsedCsr {
    /// Decodes the wire form: standard base64 (Go's decoder ignores `\r`/`\n`, so do we) of PEM.
    pub fn from_base64_pem(encoded: &str) -> Result<Self, CsrError> {
        use base64::Engine as _;
        if encoded.len() > MAX_CSR_PEM_BYTES * 2 {
            return Err(CsrError::TooLarge);
        }
        let compact: String = encoded.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        let pem = base64::engine::general_purpose::STANDARD.decode(compact).map_err(|_| CsrError::Base64)?;
        Self::from_pem(&pem)
    }

    /// Parses and validates PEM text holding one `CERTIFICATE REQUEST` block.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CsrError> {
        if pem.len() > MAX_CSR_PEM_BYTES {
            return Err(CsrError::TooLarge);
        }
        let mut blocks = x509_parser::pem::Pem::iter_from_buffer(pem);
        let block = match blocks.next() {
            Some(Ok(block)) if block.label == "CERTIFICATE REQUEST" || block.label == "NEW CERTIFICATE REQUEST" => {
                block
            }
            _ => return Err(CsrError::Pem),
        };
        if blocks.next().is_some() {
            return Err(CsrError::Pem);
        }
        Self::from_der(block.contents)
    }

    /// Parses and validates DER bytes.
    pub fn from_der(der: Vec<u8>) -> Result<Self, CsrError> {
        let (rest, csr) = X509CertificationRequest::from_der(&der).map_err(|_| CsrError::Der)?;
        if !rest.is_empty() {
            return Err(CsrError::Der);
        }
        csr.verify_signature().map_err(|_| CsrError::Signature)?;
        let info = &csr.certification_request_info;
        let key_kind = key_kind(&info.subject_pki)?;

        let mut common_name = None;
        let mut organization = None;
        for rdn in info.subject.iter() {
            for attr in rdn.iter() {
                let value = attr.as_str().map_err(|_| CsrError::SubjectAttribute)?.to_owned();
                if attr.attr_type() == &OID_X509_COMMON_NAME {
                    if common_name.replace(value).is_some() {
                        return Err(CsrError::CommonName);
                    }
                } else if attr.attr_type() == &OID_X509_ORGANIZATION_NAME {
                    if value != LIQO_ORGANIZATION || organization.replace(value).is_some() {
                        return Err(CsrError::Organization);
                    }
                } else {
                    return Err(CsrError::SubjectAttribute);
                }
            }
        }
        let common_name = common_name.filter(|cn| !cn.is_empty()).ok_or(CsrError::CommonName)?;
        // Any attribute (extensionRequest above all: SANs, basicConstraints, EKUs) is refused:
        // what the certificate may do is decided here, never by the requester.
        if !info.attributes().is_empty() {
            return Err(CsrError::Extensions);
        }
        let spki_der = info.subject_pki.raw.to_vec();
        Ok(Self { der, spki_der, common_name, organization, key_kind })
    }

    /// DER encoding of the request.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// PEM encoding of the request (canonical line breaks).
    pub fn to_pem(&self) -> String {
        pem_encode("CERTIFICATE REQUEST", &self.der)
    }

    /// DER SubjectPublicKeyInfo of the requested key.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The subject common name (checked against the cluster ID by the issuer).
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// The subject organisation, `Some("liqo.io")` or `None`.
    pub fn organization(&self) -> Option<&str> {
        self.organization.as_deref()
    }

    /// The key algorithm.
    pub fn key_kind(&self) -> KeyKind {
        self.key_kind
    }

    /// SHA-256 of the DER request, a stable short name for logs and object names.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(&self.der).into()
    }

    /// True when both requests ask for the same key and subject, so the holder is the same.
    pub fn same_requester(&self, other: &ParsedCsr) -> bool {
        self.spki_der == other.spki_der
            && self.common_name == other.common_name
            && self.organization == other.organization
    }
}

impl fmt::Debug for ParsedCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedCsr")
            .field("common_name", &self.common_name)
            .field("key_kind", &self.key_kind)
            .field("pem", &"<redacted>")
            .finish()
    }
}

/// PEM-encodes DER bytes with 64-column lines, as Go's `encoding/pem` does.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 output is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn key_kind(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<KeyKind, CsrError> {
    let alg = &spki.algorithm.algorithm;
    if alg == &OID_SIG_ED25519 {
        return Ok(KeyKind::Ed25519);
    }
    if alg == &OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        return match curve {
            Some(oid) if oid == OID_EC_P256 => Ok(KeyKind::EcdsaP256),
            Some(oid) if oid == OID_NIST_EC_P384 => Ok(KeyKind::EcdsaP384),
            _ => Err(CsrError::KeyType),
        };
    }
    if alg == &OID_PKCS1_RSAENCRYPTION {
        if let Ok(PublicKey::RSA(rsa)) = spki.parsed() {
            let bits = rsa.key_size();
            if (2048..=8192).contains(&bits) {
                return Ok(KeyKind::Rsa { bits });
            }
        }
    }
    Err(CsrError::KeyType)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData as _, SanType};

    fn csr_pem(key: &KeyPair, cn: Option<&str>, org: Option<&str>, sans: Vec<SanType>) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        if let Some(org) = org {
            params.distinguished_name.push(DnType::OrganizationName, org);
        }
        params.subject_alt_names = sans;
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn accepts_p256_ed25519_and_p384_keys() {
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P384_SHA384] {
            let key = KeyPair::generate_for(alg).unwrap();
            let csr = ParsedCsr::from_pem(csr_pem(&key, Some("c1"), Some("liqo.io"), vec![]).as_bytes()).unwrap();
            assert_eq!(csr.common_name(), "c1");
            assert_eq!(csr.organization(), Some("liqo.io"));
            assert_eq!(csr.spki_der(), key.subject_public_key_info());
        }
    }

    #[test]
    fn refuses_system_masters_organisation() {
        let key = KeyPair::generate().unwrap();
        let pem = csr_pem(&key, Some("c1"), Some("system:masters"), vec![]);
        assert_eq!(ParsedCsr::from_pem(pem.as_bytes()).unwrap_err(), CsrError::Organization);
    }

    #[test]
    fn refuses_requested_subject_alternative_names() {
        let key = KeyPair::generate().unwrap();
        let pem = csr_pem(&key, Some("c1"), None, vec![SanType::DnsName("evil".try_into().unwrap())]);
        assert_eq!(ParsedCsr::from_pem(pem.as_bytes()).unwrap_err(), CsrError::Extensions);
    }

    #[test]
    fn refuses_a_missing_common_name() {
        let key = KeyPair::generate().unwrap();
        let pem = csr_pem(&key, None, Some("liqo.io"), vec![]);
        assert_eq!(ParsedCsr::from_pem(pem.as_bytes()).unwrap_err(), CsrError::CommonName);
    }

    #[test]
    fn refuses_a_tampered_signature() {
        let key = KeyPair::generate().unwrap();
        let pem = csr_pem(&key, Some("c1"), None, vec![]);
        let mut der = ParsedCsr::from_pem(pem.as_bytes()).unwrap().der().to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert_eq!(ParsedCsr::from_der(der).unwrap_err(), CsrError::Signature);
    }

    #[test]
    fn refuses_two_pem_blocks_and_other_labels() {
        let key = KeyPair::generate().unwrap();
        let pem = csr_pem(&key, Some("c1"), None, vec![]);
        let twice = format!("{pem}{pem}");
        assert_eq!(ParsedCsr::from_pem(twice.as_bytes()).unwrap_err(), CsrError::Pem);
        let relabelled = pem.replace("CERTIFICATE REQUEST", "CERTIFICATE");
        assert_eq!(ParsedCsr::from_pem(relabelled.as_bytes()).unwrap_err(), CsrError::Pem);
        assert_eq!(ParsedCsr::from_pem(b"garbage").unwrap_err(), CsrError::Pem);
    }

    #[test]
    fn decodes_base64_with_line_breaks_like_go() {
        use base64::Engine as _;
        let key = KeyPair::generate().unwrap();
        let pem = csr_pem(&key, Some("c1"), None, vec![]);
        let mut encoded = base64::engine::general_purpose::STANDARD.encode(pem);
        encoded.insert_str(10, "\r\n");
        assert!(ParsedCsr::from_base64_pem(&encoded).is_ok());
        assert_eq!(ParsedCsr::from_base64_pem("%%%").unwrap_err(), CsrError::Base64);
    }

    #[test]
    fn pem_round_trips() {
        let key = KeyPair::generate().unwrap();
        let csr = ParsedCsr::from_pem(csr_pem(&key, Some("c1"), None, vec![]).as_bytes()).unwrap();
        let again = ParsedCsr::from_pem(csr.to_pem().as_bytes()).unwrap();
        assert_eq!(again.der(), csr.der());
        assert!(again.same_requester(&csr));
    }

    #[test]
    fn debug_output_redacts_the_request() {
        let key = KeyPair::generate().unwrap();
        let csr = ParsedCsr::from_pem(csr_pem(&key, Some("c1"), None, vec![]).as_bytes()).unwrap();
        assert!(format!("{csr:?}").contains("<redacted>"));
    }
}
