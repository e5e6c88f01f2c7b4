//! The test PKI, the one place integration tests get keys, CSRs and certificate authorities
//! from: keys of every supported type and CSRs made with rcgen, and CAs built on the crate's
//! [`TestCa`] (a root for server certificates, and [`SigningCa`] below it where a test must sign
//! CSRs or issue client certificates itself, as the fake API server does).

use std::time::Duration;

use base64::Engine as _;
pub use liqo_auth::test_support::{ServerCert, TestCa};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;

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

/// A CA that signs what a test hands it (CSRs, client and server certificates): a CA
/// certificate issued by a [`TestCa`] root, with its key at hand (`TestCa` keeps its own key
/// private). Clients and verifiers take it as their trust anchor.
pub struct SigningCa {
    issuer: rcgen::Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    key_pem: String,
    _root: TestCa,
}

impl SigningCa {
    /// A CA named `name` (its common name), issued by a fresh `TestCa`.
    pub fn new(name: &str) -> Self {
        let root = TestCa::new(&format!("{name} root"));
        let issued = root.issue(&[], |params| {
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages =
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        });
        let der = issued.chain[0].clone();
        let key = KeyPair::try_from(&issued.key).expect("the CA key is PKCS#8");
        let key_pem = key.serialize_pem();
        let issuer = rcgen::Issuer::from_ca_cert_der(&der, key).expect("the CA certificate parses");
        Self { issuer, der, key_pem, _root: root }
    }

    /// The CA certificate (DER), to trust.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The CA certificate (PEM), to trust.
    pub fn pem(&self) -> String {
        pem("CERTIFICATE", &self.der)
    }

    /// The CA's private key (PEM PKCS#8), for a service that mounts this CA to sign with.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The rcgen issuer, for signing CSRs with parameters of the test's choosing.
    pub fn issuer(&self) -> &rcgen::Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// A client certificate (EKU clientAuth, random serial, backdated 5 minutes) for
    /// `common_name` with `organizations` (Kubernetes groups) valid for `lifetime`: PEM
    /// certificate and PEM PKCS#8 key.
    pub fn client_cert(&self, common_name: &str, organizations: &[&str], lifetime: Duration) -> (String, String) {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        for org in organizations {
            params.distinguished_name.push(DnType::OrganizationName, *org);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.serial_number = Some(random_serial());
        let not_before = time::OffsetDateTime::now_utc() - Duration::from_secs(300);
        params.not_before = not_before;
        params.not_after = not_before + lifetime;
        let key = KeyPair::generate().expect("generating a client key");
        let cert = params.signed_by(&key, &self.issuer).expect("issuing a client certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A server certificate (EKU serverAuth) for `sans` (DNS names or IP addresses), with
    /// common name `common_name`; the chain holds the leaf only.
    pub fn server_cert(&self, common_name: &str, sans: &[&str]) -> ServerCert {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("valid SANs");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("generating a server key");
        let cert = params.signed_by(&key, &self.issuer).expect("issuing a server certificate");
        ServerCert { chain: vec![cert.der().clone()], key: private_key_der(&key) }
    }
}

/// A server certificate for `sans` issued by the CA whose PEM certificate and key are given
/// (the service's own CA from its data dir, say); the chain holds the leaf only.
pub fn server_cert_from_ca(ca_cert_pem: &str, ca_key_pem: &str, sans: &[&str]) -> ServerCert {
    let ca_key = KeyPair::from_pem(ca_key_pem).expect("CA key parses");
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).expect("CA certificate parses");
    let key = KeyPair::generate().expect("generating a server key");
    let params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("valid SANs");
    let cert = params.signed_by(&key, &issuer).expect("issuing a server certificate");
    ServerCert { chain: vec![cert.der().clone()], key: private_key_der(&key) }
}

/// A serving pair as files hold it: the PEM chain (leaf first) and the PEM PKCS#8 key.
pub fn pem_pair(cert: &ServerCert) -> (String, String) {
    let chain = cert.chain.iter().map(|der| pem("CERTIFICATE", der)).collect();
    (chain, pem("PRIVATE KEY", cert.key.secret_der()))
}

/// PEM armour around `der`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> =
        text.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).expect("base64 is ASCII")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

fn private_key_der(key: &KeyPair) -> rustls::pki_types::PrivateKeyDer<'static> {
    rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into())
}

/// A random positive 128-bit serial, as real signers use.
pub fn random_serial() -> rcgen::SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// Standard base64, as the wire encodes PEM.
pub fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

/// Decodes a base64 wire field to text.
pub fn unb64(text: &str) -> String {
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).expect("base64")).expect("utf-8")
}

/// A rustls client configuration (ring, TLS 1.2 and 1.3) that accepts any server certificate
/// and offers `alpn` (none when empty).
pub fn any_server_client_config(alpn: &[&[u8]]) -> rustls::ClientConfig {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(AcceptAnyServerCert::new(provider))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    config
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
