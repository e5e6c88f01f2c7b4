//! `LocalCa`: signs client certificates with a CA held in this process.
//!
//! Used by the local backend (its CA lives in the data dir) and by `--signer local-ca` on
//! Kubernetes clusters whose CSR API signer is disabled (a mounted CA such as kubeadm's).

use std::fmt;
use std::time::Duration;

use rand::TryRngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _, SerialNumber, SubjectPublicKeyInfo,
};
use time::OffsetDateTime;

use crate::identity::port::{SignRequest, SignedCertificate, Signer, SignerError};
use crate::identity::KeyKind;

/// Validity of a generated CA.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Backdating of `notBefore`, so peers with a slightly slow clock accept a fresh certificate.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Client certificates are backdated by at most this fraction of their lifetime: renewal runs at
/// a fraction of notBefore..notAfter, and a 2-minute certificate backdated by 5 minutes would be
/// due for renewal the moment it is issued.
const MAX_BACKDATE_FRACTION: u32 = 10;

/// Why a CA could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LocalCaError {
    #[error("the CA private key is not a usable PEM key")]
    Key {
        #[source]
        source: rcgen::Error,
    },
    #[error("the CA certificate is not a usable PEM certificate")]
    Certificate {
        #[source]
        source: rcgen::Error,
    },
    #[error("the CA certificate does not belong to the CA private key")]
    KeyMismatch,
    #[error("generating the CA")]
    Generate {
        #[source]
        source: rcgen::Error,
    },
}

/// A certificate authority in memory.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl LocalCa {
    /// Generates a P-256 CA named after `common_name`, valid ten years.
    pub fn generate(common_name: &str) -> Result<Self, LocalCaError> {
        let key = KeyPair::generate().map_err(|source| LocalCaError::Generate { source })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "liqo-auth");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key).map_err(|source| LocalCaError::Generate { source })?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ok(Self { issuer: Issuer::new(params, key), cert_pem, key_pem })
    }

    /// Loads a CA from PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, LocalCaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|source| LocalCaError::Key { source })?;
        let spki = crate::pki::first_certificate_spki(cert_pem.as_bytes())
            .ok_or(LocalCaError::Certificate { source: rcgen::Error::CouldNotParseCertificate })?;
        if spki != key.subject_public_key_info() {
            return Err(LocalCaError::KeyMismatch);
        }
        let key_pem_owned = key.serialize_pem();
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|source| LocalCaError::Certificate { source })?;
        Ok(Self { issuer, cert_pem: cert_pem.to_owned(), key_pem: key_pem_owned })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key (PEM), for persisting a generated CA.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a client certificate for a validated request.
    pub fn issue(&self, request: SignRequest<'_>) -> Result<String, SignerError> {
        let build = |source| SignerError::Build { source };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, request.csr.common_name());
        if let Some(org) = request.csr.organization() {
            params.distinguished_name.push(DnType::OrganizationName, org);
        }
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW.min(request.ttl / MAX_BACKDATE_FRACTION);
        params.not_after = now + request.ttl;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = match request.csr.key_kind() {
            KeyKind::Rsa { .. } => vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment],
            _ => vec![KeyUsagePurpose::DigitalSignature],
        };
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let public_key = SubjectPublicKeyInfo::from_der(request.csr.spki_der()).map_err(build)?;
        let cert = params.signed_by(&public_key, &self.issuer).map_err(build)?;
        Ok(cert.pem())
    }
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCa").field("key", &"<redacted>").finish()
    }
}

#[async_trait::async_trait]
impl Signer for LocalCa {
    fn kind(&self) -> &'static str {
        "local-ca"
    }

    async fn sign(&self, request: SignRequest<'_>) -> Result<SignedCertificate, SignerError> {
        Ok(SignedCertificate { pem: self.issue(request)? })
    }
}

/// A positive 128-bit serial from the OS CSPRNG (RFC 5280 allows up to 20 octets).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).expect("the operating system RNG is available");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{ClusterIdentity, ParsedCsr};
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn request_for(key: &KeyPair, cn: &str) -> ParsedCsr {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.distinguished_name.push(DnType::OrganizationName, "liqo.io");
        ParsedCsr::from_pem(params.serialize_request(key).unwrap().pem().unwrap().as_bytes()).unwrap()
    }

    #[test]
    fn issues_a_client_certificate_that_chains_to_the_ca() {
        let ca = LocalCa::generate("test ca").unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let csr = request_for(&key, "c1");
        let cluster = ClusterIdentity::parse_remote("c1", "one").unwrap();
        let ttl = Duration::from_secs(3600);
        let pem = ca.issue(SignRequest { cluster: &cluster, csr: &csr, ttl }).unwrap();
        let der = crate::pki::first_certificate_der(pem.as_bytes()).unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(cert.subject().iter_common_name().next().unwrap().as_str().unwrap(), "c1");
        assert_eq!(cert.public_key().raw, key.subject_public_key_info().as_slice());
        let ca_der = crate::pki::first_certificate_der(ca.cert_pem().as_bytes()).unwrap();
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!cert.is_ca());
        let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 3600 + 300);
    }

    #[test]
    fn short_lived_certificates_are_backdated_by_a_tenth_of_their_lifetime_only() {
        let ca = LocalCa::generate("test ca").unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = request_for(&key, "c1");
        let cluster = ClusterIdentity::parse_remote("c1", "one").unwrap();
        let pem = ca.issue(SignRequest { cluster: &cluster, csr: &csr, ttl: Duration::from_secs(120) }).unwrap();
        let summary = crate::pki::CertificateSummary::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(summary.not_after - summary.not_before, 120 + 12);
    }

    #[test]
    fn reloads_from_its_own_pem() {
        let ca = LocalCa::generate("test ca").unwrap();
        let again = LocalCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        let other = LocalCa::generate("other").unwrap();
        assert!(matches!(LocalCa::from_pem(ca.cert_pem(), other.key_pem()), Err(LocalCaError::KeyMismatch)));
    }
}
