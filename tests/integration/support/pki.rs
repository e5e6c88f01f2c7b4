//! Test PKI: keys of every supported type and CSRs made with rcgen.

use base64::Engine as _;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

/// Key types a peer may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    P256,
    P384,
    Ed25519,
    Rsa2048,
}

/// A CSR with an RSA-1024 key (too small: must be refused), CN=peer-1, O=liqo.io.
pub const RSA1024_CSR: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa1024.test-only.csr.pem"));

impl KeyType {
    pub const ACCEPTED: [KeyType; 4] = [KeyType::P256, KeyType::P384, KeyType::Ed25519, KeyType::Rsa2048];
}

/// A fresh key (RSA keys come from test-only fixtures: ring cannot generate RSA).
pub fn key(kind: KeyType) -> KeyPair {
    match kind {
        KeyType::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256"),
        KeyType::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384"),
        KeyType::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519"),
        KeyType::Rsa2048 => KeyPair::from_pem_and_sign_algo(
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa2048.test-only.key.pem")),
            &rcgen::PKCS_RSA_SHA256,
        )
        .expect("rsa2048 fixture"),
    }
}

/// A PEM CSR with the given subject and SANs.
pub fn csr_with(key: &KeyPair, cn: Option<&str>, org: Option<&str>, sans: Vec<SanType>) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    if let Some(org) = org {
        params.distinguished_name.push(DnType::OrganizationName, org);
    }
    params.subject_alt_names = sans;
    params.serialize_request(key).expect("csr").pem().expect("pem")
}

/// The CSR a Liqo consumer sends: CN = its cluster ID, O = liqo.io.
pub fn liqo_csr(key: &KeyPair, cluster_id: &str) -> String {
    csr_with(key, Some(cluster_id), Some("liqo.io"), vec![])
}

/// Standard base64, as the wire encodes PEM.
pub fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

/// Decodes a base64 wire field to text.
pub fn unb64(text: &str) -> String {
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).expect("base64")).expect("utf-8")
}

/// Test-only rustls verifier accepting any server certificate (tests that compare pins or look
/// at protocol details themselves). Handshake signatures are still verified.
#[derive(Debug)]
pub struct AcceptAnyServerCert(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl AcceptAnyServerCert {
    pub fn new(provider: std::sync::Arc<rustls::crypto::CryptoProvider>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self(provider))
    }
}

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
