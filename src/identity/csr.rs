//! `ParsedCsr`: a PKCS#10 certificate signing request, valid by construction.
//!
//! Parsing checks everything a CSR can be checked for on its own: one strict PEM block (its END
//! label repeats its BEGIN label), a valid self-signature made with an accepted algorithm, an
//! accepted key type, a subject made only of CN and `O=liqo.io`, and no requested extensions.
//! Whether the CN matches the requesting cluster is the issuer's check, because only the issuer
//! knows the cluster.
//!
//! Signature policy: a self-signature proves possession of the key, so it must use a digest
//! that is not broken. Accepted: Ed25519; ECDSA (P-256 or P-384) with SHA-256, SHA-384 or
//! SHA-512; RSA PKCS#1 v1.5 or RSASSA-PSS with SHA-256, SHA-384 or SHA-512. Refused, with
//! `CsrError::SignatureAlgorithm`: SHA-1 and MD5 in any form, SHA-224, DSA, and anything else.
//! (Go, and so the Kubernetes CSR API, still accepts SHA-1 on CSRs; this service does not.)

use std::fmt;

use sha2::Sha512;
use sha2::{Digest, Sha256};
use x509_parser::certification_request::X509CertificationRequest as Request;
use x509_parser::oid_registry::{
    Oid, OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_HASH_SHA256, OID_NIST_HASH_SHA384,
    OID_NIST_HASH_SHA512, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA256WITHRSA,
    OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
    OID_SIG_ECDSA_WITH_SHA512, OID_SIG_ED25519, OID_X509_COMMON_NAME, OID_X509_ORGANIZATION_NAME,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::signature_algorithm::RsaSsaPssParams;

use crate::pki::pem_blocks;

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
    #[error("unsupported CSR signature algorithm: sign with SHA-256, SHA-384 or SHA-512 (ECDSA, RSA or RSA-PSS), or Ed25519; SHA-1 and MD5 are refused")]
    SignatureAlgorithm,
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
        let mut blocks = pem_blocks(pem).map_err(|_| CsrError::Pem)?;
        match blocks.pop() {
            Some(block)
                if blocks.is_empty()
                    && (block.label == "CERTIFICATE REQUEST" || block.label == "NEW CERTIFICATE REQUEST") =>
            {
                Self::from_der(block.contents)
            }
            _ => Err(CsrError::Pem),
        }
    }

    /// Parses and validates DER bytes.
    pub fn from_der(der: Vec<u8>) -> Result<Self, CsrError> {
        let (rest, csr) = Request::from_der(&der).map_err(|_| CsrError::Der)?;
        if !rest.is_empty() {
            return Err(CsrError::Der);
        }
        let info = &csr.certification_request_info;
        let key_kind = key_kind(&info.subject_pki)?;
        verify_self_signature(&csr, key_kind)?;

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

/// Checks the self-signature under the policy in the module docs.
fn verify_self_signature(csr: &Request<'_>, key: KeyKind) -> Result<(), CsrError> {
    let algorithm = &csr.signature_algorithm.algorithm;
    let signed = csr.certification_request_info.raw;
    let signature = csr.signature_value.data.as_ref();
    let public_key = csr.certification_request_info.subject_pki.subject_public_key.data.as_ref();
    let ecdsa = [OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ECDSA_WITH_SHA512];
    if ecdsa.contains(algorithm) {
        return if verify_ecdsa(key, algorithm, signed, public_key, signature) {
            Ok(())
        } else {
            Err(CsrError::Signature)
        };
    }
    let rsa = [OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA];
    let accepted = if rsa.contains(algorithm) {
        matches!(key, KeyKind::Rsa { .. })
    } else if algorithm == &OID_PKCS1_RSASSAPSS {
        matches!(key, KeyKind::Rsa { .. }) && pss_hash_is_sha2(csr)
    } else if algorithm == &OID_SIG_ED25519 {
        key == KeyKind::Ed25519
    } else {
        return Err(CsrError::SignatureAlgorithm);
    };
    // ring verifies these (through x509-parser), for exactly the algorithms allowed above.
    if accepted && csr.verify_signature().is_ok() {
        Ok(())
    } else {
        Err(CsrError::Signature)
    }
}

/// An ECDSA self-signature with SHA-256, SHA-384 or SHA-512 over `signed`. ring (assembly, the
/// hot path: Liqo signs P-256 with SHA-256) for the four pairs it has; RustCrypto for SHA-512,
/// which ring lacks for ECDSA. ring's P-256 check is several times faster than RustCrypto's.
fn verify_ecdsa(key: KeyKind, algorithm: &Oid<'_>, signed: &[u8], public_key: &[u8], signature: &[u8]) -> bool {
    use ring::signature as sig;
    let sha256 = algorithm == &OID_SIG_ECDSA_WITH_SHA256;
    let sha384 = algorithm == &OID_SIG_ECDSA_WITH_SHA384;
    let by_ring: Option<&'static sig::EcdsaVerificationAlgorithm> = match key {
        KeyKind::EcdsaP256 if sha256 => Some(&sig::ECDSA_P256_SHA256_ASN1),
        KeyKind::EcdsaP256 if sha384 => Some(&sig::ECDSA_P256_SHA384_ASN1),
        KeyKind::EcdsaP384 if sha256 => Some(&sig::ECDSA_P384_SHA256_ASN1),
        KeyKind::EcdsaP384 if sha384 => Some(&sig::ECDSA_P384_SHA384_ASN1),
        _ => None,
    };
    if let Some(by_ring) = by_ring {
        return sig::UnparsedPublicKey::new(by_ring, public_key).verify(signed, signature).is_ok();
    }
    if algorithm != &OID_SIG_ECDSA_WITH_SHA512 {
        return false;
    }
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    let digest = Sha512::digest(signed);
    match key {
        KeyKind::EcdsaP256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
            .ok()
            .zip(p256::ecdsa::Signature::from_der(signature).ok())
            .is_some_and(|(key, sig)| key.verify_prehash(&digest, &sig).is_ok()),
        KeyKind::EcdsaP384 => p384::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
            .ok()
            .zip(p384::ecdsa::Signature::from_der(signature).ok())
            .is_some_and(|(key, sig)| key.verify_prehash(&digest, &sig).is_ok()),
        KeyKind::Ed25519 | KeyKind::Rsa { .. } => false,
    }
}

/// RSASSA-PSS parameters naming SHA-256, SHA-384 or SHA-512 (never the SHA-1 default).
fn pss_hash_is_sha2(csr: &Request<'_>) -> bool {
    let Some(params) = csr.signature_algorithm.parameters.as_ref() else { return false };
    let Ok(params) = RsaSsaPssParams::try_from(params) else { return false };
    let hash = params.hash_algorithm_oid();
    [OID_NIST_HASH_SHA256, OID_NIST_HASH_SHA384, OID_NIST_HASH_SHA512].contains(hash)
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

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}.test-only.csr.pem", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn accepts_every_sha2_digest_on_every_accepted_key() {
        for name in ["p256-sha384", "p256-sha512", "p384-sha512", "rsa2048-sha512", "rsa2048-pss-sha256"] {
            let csr = ParsedCsr::from_pem(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(csr.common_name(), "peer-1", "{name}");
        }
    }

    #[test]
    fn refuses_sha1_signatures_even_when_they_verify() {
        for name in ["rsa2048-sha1", "p256-sha1"] {
            assert_eq!(ParsedCsr::from_pem(&fixture(name)).unwrap_err(), CsrError::SignatureAlgorithm, "{name}");
        }
    }

    #[test]
    fn refuses_an_ecdsa_signature_that_does_not_verify_with_any_digest() {
        let liqo_style = csr_pem(&KeyPair::generate().unwrap(), Some("peer-1"), Some("liqo.io"), vec![]);
        let fixtures = ["p256-sha512", "p384-sha512", "p256-sha384"].map(|name| (name, fixture(name)));
        for (name, pem) in fixtures.into_iter().chain([("p256-sha256", liqo_style.into_bytes())]) {
            let mut der = ParsedCsr::from_pem(&pem).unwrap().der().to_vec();
            // Flip a bit of the signed subject: the signature no longer matches.
            let cn = der.windows(6).position(|w| w == b"peer-1").unwrap();
            der[cn] ^= 0x01;
            assert_eq!(ParsedCsr::from_der(der).unwrap_err(), CsrError::Signature, "{name}");
        }
    }

    #[test]
    fn a_pem_end_label_must_repeat_the_begin_label() {
        let key = KeyPair::generate().unwrap();
        let pem = csr_pem(&key, Some("c1"), None, vec![]);
        let mismatched = pem.replace("-----END CERTIFICATE REQUEST-----", "-----END PRIVATE KEY-----");
        assert_eq!(ParsedCsr::from_pem(mismatched.as_bytes()).unwrap_err(), CsrError::Pem);
        let legacy = pem.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST");
        assert!(ParsedCsr::from_pem(legacy.as_bytes()).is_ok(), "the legacy label, matched, is fine");
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
