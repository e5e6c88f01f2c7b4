//! Renewal: a peer proves possession of its current identity and gets a new certificate,
//! without any token.
//!
//! The proof is a compact JWS (RFC 7515) signed with the current private key, its `x5c` header
//! carrying the current certificate, and its claims binding it to one request: `sub` (the
//! cluster ID), `aud` (this provider's cluster ID), `iat`, `exp` (at most
//! [`MAX_PROOF_LIFETIME`] after `iat`), `jti`, and `csr_sha256` (hex SHA-256 of the new CSR's
//! DER). It works where TLS ends at an Ingress, which mTLS would not.
//!
//! Checks run in stages, cheapest and stateless first, so that stored state is consulted only
//! for a caller who signed with the key of the certificate it presents: parse ([`UnverifiedProof::parse`]), verify the
//! signature with the key of the certificate in `x5c` and the claims
//! ([`UnverifiedProof::verify`]), then against stored state: the tenant exists, the certificate
//! is byte for byte the stored one (or, for [`RENEWAL_OVERLAP`], the one it replaced), it has
//! not expired (plus `--renewal-grace-after-expiry`), the `jti` is new ([`ProofLedger`]), and
//! the new CSR passes the policy of a first issuance. Only then does the configured signer
//! sign, and the stored certificate is replaced (compare-and-swap on the stored identity).
//! RoleBindings are left as they are: the user name (the cluster ID) does not change.
//!
//! HTTP, audit and metrics are the caller's (`http::renew`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::port::{
    ApiServerInfo, CredentialStore, PreviousCertificate, ProofId, ProofLedger, Seen, SignRequest, Signer, SignerError,
    StoreError, StoredIdentity,
};
use crate::identity::{ClusterId, ClusterIdentity, ClusterName, CsrError, ParsedCsr, TenantNamespace};
use crate::pki::CertificateSummary;

/// The `typ` header of a renewal proof (explicit typing, RFC 8725 §3.11): a token minted for
/// anything else is never taken for a renewal proof.
pub const PROOF_TYPE: &str = "liqo-auth-renewal+jwt";
/// Longest `exp - iat` accepted.
pub const MAX_PROOF_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Clock difference tolerated between the peer and this provider, on `iat` and `exp`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// How long after a renewal the certificate it replaced may still renew (the peer may not have
/// received the answer). The replaced certificate stays valid until its own notAfter anyway:
/// Kubernetes has no revocation.
pub const RENEWAL_OVERLAP: Duration = Duration::from_secs(10 * 60);
/// Longest proof accepted, in bytes: an RSA-8192 certificate in `x5c` fits with room to spare.
pub const MAX_PROOF_BYTES: usize = 24 * 1024;
const MAX_JTI_LEN: usize = 256;

/// The claims of a renewal proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofClaims {
    /// The renewing cluster's ID (the certificate's CN).
    pub sub: String,
    /// The provider's cluster ID.
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds; at most [`MAX_PROOF_LIFETIME`] after `iat`.
    pub exp: i64,
    /// Unique per proof; a second use is refused.
    pub jti: String,
    /// Lower-case hex SHA-256 of the DER of the CSR sent with the proof.
    pub csr_sha256: String,
}

/// A proof whose structure was checked, but not its signature or claims.
pub struct UnverifiedProof {
    token: String,
    algorithm: Algorithm,
    /// DER of the `x5c` leaf certificate.
    certificate_der: Vec<u8>,
    certificate: CertificateSummary,
    /// The raw public key as jsonwebtoken takes it (Ed25519 point, SEC1 point, PKCS#1).
    public_key: Vec<u8>,
}

/// A proof whose signature and claims were verified for one request.
#[derive(Debug, Clone)]
pub struct VerifiedProof {
    pub cluster: ClusterId,
    pub jti: String,
    pub expires_at: i64,
    /// DER of the certificate that signed the proof.
    pub certificate_der: Vec<u8>,
    pub certificate: CertificateSummary,
}

/// What a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct ProofExpectation<'a> {
    /// This provider's cluster ID.
    pub audience: &'a ClusterId,
    /// SHA-256 of the DER of the CSR that came with the proof.
    pub csr_sha256: &'a [u8; 32],
    /// Now, Unix seconds.
    pub now: i64,
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the proof is not a compact JWS with a usable header: {reason}")]
    Malformed { reason: &'static str },
    #[error("the proof's x5c certificate cannot be parsed")]
    Certificate,
    #[error("the proof's algorithm does not fit the certificate's key (EdDSA for Ed25519, ES256 for P-256, ES384 for P-384, RS256 for RSA)")]
    Algorithm,
    #[error("the proof's signature does not verify with the key of its x5c certificate")]
    Signature,
    #[error("the proof's claims are missing or of the wrong type")]
    Claims,
    #[error("the proof's sub is not the common name of its certificate")]
    Subject,
    #[error("the proof's aud names another provider")]
    Audience,
    #[error("the proof is expired or not yet valid (iat/exp outside the 60 s clock skew)")]
    Expired,
    #[error("the proof's exp is more than 5 minutes after its iat")]
    Lifetime,
    #[error("the proof's csr_sha256 is not the SHA-256 of the certificate signing request sent")]
    CsrDigest,
}

impl ProofError {
    /// The stable error code of the HTTP answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Audience => "proof_wrong_audience",
            Self::Expired => "proof_expired",
            Self::Lifetime => "proof_lifetime_too_long",
            _ => "invalid_proof",
        }
    }
}

impl UnverifiedProof {
    /// Parses a compact JWS: three base64url parts, a header with `typ` = [`PROOF_TYPE`], an
    /// accepted `alg`, and an `x5c` whose first certificate parses and has a key that fits
    /// `alg`. Never panics, whatever the input (a fuzz target holds it to that).
    pub fn parse(token: &str) -> Result<Self, ProofError> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_PROOF_BYTES {
            return Err(ProofError::Malformed { reason: "empty or too long" });
        }
        if token.split('.').count() != 3 {
            return Err(ProofError::Malformed { reason: "not three dot-separated parts" });
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| ProofError::Malformed { reason: "bad header" })?;
        if header.typ.as_deref() != Some(PROOF_TYPE) {
            return Err(ProofError::Malformed { reason: "typ is not liqo-auth-renewal+jwt" });
        }
        if header.crit.is_some() {
            return Err(ProofError::Malformed { reason: "crit is not supported" });
        }
        let chain = header.x5c_der().map_err(|_| ProofError::Malformed { reason: "x5c is not base64" })?;
        let certificate_der = chain
            .and_then(|chain| chain.into_iter().next())
            .ok_or(ProofError::Malformed { reason: "no x5c certificate" })?;
        let (rest, parsed) = X509Certificate::from_der(&certificate_der).map_err(|_| ProofError::Certificate)?;
        if !rest.is_empty() {
            return Err(ProofError::Certificate);
        }
        let spki = parsed.public_key();
        let oid = &spki.algorithm.algorithm;
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        let fits = match header.alg {
            Algorithm::EdDSA => oid == &OID_SIG_ED25519,
            Algorithm::ES256 => oid == &OID_KEY_TYPE_EC_PUBLIC_KEY && curve.as_ref() == Some(&OID_EC_P256),
            Algorithm::ES384 => oid == &OID_KEY_TYPE_EC_PUBLIC_KEY && curve.as_ref() == Some(&OID_NIST_EC_P384),
            Algorithm::RS256 => oid == &OID_PKCS1_RSAENCRYPTION,
            _ => false,
        };
        if !fits {
            return Err(ProofError::Algorithm);
        }
        let public_key = spki.subject_public_key.data.to_vec();
        let certificate = summary(&parsed);
        drop(parsed);
        Ok(Self { token: token.to_owned(), algorithm: header.alg, certificate_der, certificate, public_key })
    }

    /// Verifies the signature with the certificate's key, then the claims against `expected`.
    pub fn verify(&self, expected: &ProofExpectation<'_>) -> Result<VerifiedProof, ProofError> {
        let key = match self.algorithm {
            Algorithm::EdDSA => DecodingKey::from_ed_der(&self.public_key),
            Algorithm::RS256 => DecodingKey::from_rsa_der(&self.public_key),
            _ => DecodingKey::from_ec_der(&self.public_key),
        };
        // Time and audience are checked below, with this module's own rules and errors.
        let mut validation = Validation::new(self.algorithm);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = match jsonwebtoken::decode::<ProofClaims>(&self.token, &key, &validation) {
            Ok(data) => data.claims,
            Err(error) => {
                return Err(match error.kind() {
                    jsonwebtoken::errors::ErrorKind::Json(_) => ProofError::Claims,
                    _ => ProofError::Signature,
                })
            }
        };
        if self.certificate.common_name.as_deref() != Some(claims.sub.as_str()) {
            return Err(ProofError::Subject);
        }
        let cluster = ClusterId::parse(&claims.sub).map_err(|_| ProofError::Subject)?;
        if claims.aud != expected.audience.as_str() {
            return Err(ProofError::Audience);
        }
        let skew = CLOCK_SKEW.as_secs() as i64;
        if claims.exp <= claims.iat {
            return Err(ProofError::Expired);
        }
        if claims.exp - claims.iat > MAX_PROOF_LIFETIME.as_secs() as i64 {
            return Err(ProofError::Lifetime);
        }
        if claims.iat > expected.now + skew || claims.exp < expected.now - skew {
            return Err(ProofError::Expired);
        }
        if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
            return Err(ProofError::Claims);
        }
        let digest_matches = hex::decode(&claims.csr_sha256).is_ok_and(|d| d.as_slice() == expected.csr_sha256);
        if !digest_matches {
            return Err(ProofError::CsrDigest);
        }
        Ok(VerifiedProof {
            cluster,
            jti: claims.jti,
            // Remembered until the proof could no longer pass the time check.
            expires_at: claims.exp + skew,
            certificate_der: self.certificate_der.clone(),
            certificate: self.certificate.clone(),
        })
    }
}

impl fmt::Debug for UnverifiedProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnverifiedProof")
            .field("algorithm", &self.algorithm)
            .field("cert.serial", &self.certificate.serial)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The SHA-256 a proof binds: of the CSR's DER.
pub fn csr_digest(csr: &ParsedCsr) -> [u8; 32] {
    csr.fingerprint()
}

/// Tunables of renewal.
#[derive(Debug, Clone)]
pub struct RenewPolicy {
    /// Lifetime of renewed certificates (`--certificate-ttl`, as for issuance).
    pub certificate_ttl: Duration,
    /// How long after its notAfter a certificate may still renew (`--renewal-grace-after-expiry`).
    pub grace_after_expiry: Duration,
}

/// A renewal request as it arrives from the wire.
#[derive(Clone)]
pub struct RenewRequest {
    pub proof: String,
    pub csr_base64: String,
}

impl fmt::Debug for RenewRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RenewRequest(<redacted>)")
    }
}

/// Same key (renew) or a new one (rekey).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewKind {
    Renew,
    Rekey,
}

impl RenewKind {
    /// Label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Renew => "renew",
            Self::Rekey => "rekey",
        }
    }
}

/// A successful renewal.
#[derive(Debug, Clone)]
pub struct Renewed {
    pub cluster: ClusterIdentity,
    pub namespace: TenantNamespace,
    pub certificate_pem: String,
    pub certificate: CertificateSummary,
    /// Serial of the certificate that signed the proof.
    pub previous_serial: String,
    pub api_server: ApiServerInfo,
    pub kind: RenewKind,
    pub signer_duration: Duration,
}

/// Why renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("invalid renewal proof: {0}")]
    InvalidProof(#[source] ProofError),
    #[error("the renewal proof was used before")]
    Replayed,
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(#[source] CsrError),
    #[error("the certificate signing request common name must equal the renewing cluster's ID")]
    CommonNameMismatch,
    #[error("cluster {cluster} has no tenant or no stored identity on this provider")]
    TenantRemoved { cluster: ClusterId },
    #[error("the proof's certificate is not the one stored for cluster {cluster}")]
    NotCurrent { cluster: ClusterId },
    #[error("the certificate of cluster {cluster} expired at {not_after} (Unix seconds)")]
    CertificateExpired { cluster: ClusterId, not_after: i64 },
    #[error("the identity of cluster {cluster} changed during the renewal")]
    Concurrent { cluster: ClusterId },
    #[error("signing the renewed certificate for cluster {cluster}")]
    Sign {
        cluster: ClusterId,
        elapsed: Duration,
        #[source]
        source: SignerError,
    },
    #[error("storing state for cluster {cluster}")]
    Store {
        cluster: ClusterId,
        #[source]
        source: StoreError,
    },
    #[error("the signer returned an unusable certificate for cluster {cluster}")]
    BadCertificate { cluster: ClusterId },
}

impl RenewError {
    /// True when the same renewal (with a fresh proof) may succeed later.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Sign { source, .. } => source.is_transient(),
            Self::Store { source, .. } => source.is_transient(),
            Self::Concurrent { .. } => true,
            _ => false,
        }
    }

    /// How long the signer took to fail, when signing is what failed.
    pub fn signer_elapsed(&self) -> Option<Duration> {
        match self {
            Self::Sign { elapsed, .. } => Some(*elapsed),
            _ => None,
        }
    }
}

/// A failed renewal with what was learnt about it before it failed (for audit and metrics).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RenewFailure {
    /// Renew or rekey, once the proof's certificate and the CSR were parsed.
    pub kind: Option<RenewKind>,
    /// The cluster, once the proof verified.
    pub cluster: Option<ClusterId>,
    #[source]
    pub error: RenewError,
}

/// The renewal use case.
#[derive(Clone)]
pub struct Renewer {
    provider: ClusterId,
    signer: Arc<dyn Signer>,
    store: Arc<dyn CredentialStore>,
    ledger: Arc<dyn ProofLedger>,
    policy: RenewPolicy,
}

impl Renewer {
    /// Builds a renewer for provider `provider` over its ports.
    pub fn new(
        provider: ClusterId,
        signer: Arc<dyn Signer>,
        store: Arc<dyn CredentialStore>,
        ledger: Arc<dyn ProofLedger>,
        policy: RenewPolicy,
    ) -> Self {
        Self { provider, signer, store, ledger, policy }
    }

    /// The signer kind, for logs and metrics.
    pub fn signer_kind(&self) -> &'static str {
        self.signer.kind()
    }

    /// Runs one renewal.
    pub async fn renew(&self, request: RenewRequest) -> Result<Renewed, RenewFailure> {
        let mut attempt = Progress::default();
        match self.run(&request, &mut attempt).await {
            Ok(renewed) => Ok(renewed),
            Err(error) => Err(RenewFailure { kind: attempt.kind, cluster: attempt.cluster, error }),
        }
    }

    async fn run(&self, request: &RenewRequest, progress: &mut Progress) -> Result<Renewed, RenewError> {
        let proof = UnverifiedProof::parse(&request.proof).map_err(RenewError::InvalidProof)?;
        let csr = ParsedCsr::from_base64_pem(&request.csr_base64).map_err(RenewError::InvalidCsr)?;
        let kind = if csr.spki_der() == proof.certificate.spki_der { RenewKind::Renew } else { RenewKind::Rekey };
        progress.kind = Some(kind);
        let now = crate::pki::unix_now();
        let digest = csr_digest(&csr);
        let proof = proof
            .verify(&ProofExpectation { audience: &self.provider, csr_sha256: &digest, now })
            .map_err(RenewError::InvalidProof)?;
        let cluster = proof.cluster.clone();
        progress.cluster = Some(cluster.clone());
        let store_err = |source| RenewError::Store { cluster: cluster.clone(), source };

        // Signed by the holder of the key: now the stored state may be consulted.
        let Some(namespace) = self.store.tenant_namespace(&cluster).await.map_err(store_err)? else {
            return Err(RenewError::TenantRemoved { cluster });
        };
        let Some(stored) = self.store.stored_identity(&namespace, &cluster).await.map_err(store_err)? else {
            return Err(RenewError::TenantRemoved { cluster });
        };
        let previous = match certificate_standing(&stored, &proof.certificate_der, now) {
            Standing::Current => {
                Some(PreviousCertificate { certificate_pem: stored.certificate_pem.clone(), replaced_at: now })
            }
            // A retry after a lost answer: the overlap is not extended by it.
            Standing::JustReplaced => stored.previous.clone(),
            Standing::Other => return Err(RenewError::NotCurrent { cluster }),
        };
        let grace = self.policy.grace_after_expiry.as_secs() as i64;
        if proof.certificate.not_after.saturating_add(grace) < now {
            return Err(RenewError::CertificateExpired { cluster, not_after: proof.certificate.not_after });
        }
        if csr.common_name() != cluster.as_str() {
            return Err(RenewError::CommonNameMismatch);
        }
        // Last check before signing: a replay is refused even if it raced the first use.
        match self.ledger.record(&ProofId::new(&cluster, &proof.jti), proof.expires_at).await.map_err(store_err)? {
            Seen::First => {}
            Seen::Again => return Err(RenewError::Replayed),
        }

        let identity = ClusterIdentity { id: cluster.clone(), name: cluster_name(&namespace, &cluster) };
        let sign_request = SignRequest { cluster: &identity, csr: &csr, ttl: self.policy.certificate_ttl };
        let started = Instant::now();
        let signed = self.signer.sign(sign_request).await.map_err(|source| RenewError::Sign {
            cluster: cluster.clone(),
            elapsed: started.elapsed(),
            source,
        })?;
        let signer_duration = started.elapsed();
        let certificate = CertificateSummary::from_pem(signed.pem.as_bytes())
            .filter(|c| c.spki_der == csr.spki_der())
            .ok_or_else(|| RenewError::BadCertificate { cluster: cluster.clone() })?;
        let fresh =
            StoredIdentity { csr_pem: csr.to_pem(), certificate_pem: signed.pem, origin: stored.origin, previous };
        match self.store.replace_identity(&namespace, &cluster, &fresh, &stored).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists { .. }) => return Err(RenewError::Concurrent { cluster }),
            Err(other) => return Err(store_err(other)),
        }
        self.signer.forget(sign_request).await;
        let api_server = self.store.api_server().await.map_err(store_err)?;
        Ok(Renewed {
            cluster: identity,
            namespace,
            certificate_pem: fresh.certificate_pem,
            certificate,
            previous_serial: proof.certificate.serial,
            api_server,
            kind,
            signer_duration,
        })
    }
}

#[derive(Default)]
struct Progress {
    kind: Option<RenewKind>,
    cluster: Option<ClusterId>,
}

enum Standing {
    Current,
    JustReplaced,
    Other,
}

/// Whether `der` is the stored certificate, the one it replaced within the overlap, or neither.
fn certificate_standing(stored: &StoredIdentity, der: &[u8], now: i64) -> Standing {
    let first = |pem: &str| crate::pki::first_certificate_der(pem.as_bytes());
    if first(&stored.certificate_pem).as_deref() == Some(der) {
        return Standing::Current;
    }
    match &stored.previous {
        Some(previous)
            if first(&previous.certificate_pem).as_deref() == Some(der)
                && now - previous.replaced_at <= RENEWAL_OVERLAP.as_secs() as i64 =>
        {
            Standing::JustReplaced
        }
        _ => Standing::Other,
    }
}

/// The cluster name inside a tenant namespace name (`liqo-tenant-<name>-<6 hex>`, as both Liqo
/// and this service name them); the cluster ID when the name does not have that shape. Signers
/// use the ID only; the name is for their logs.
fn cluster_name(namespace: &TenantNamespace, cluster: &ClusterId) -> ClusterName {
    namespace
        .as_str()
        .strip_prefix("liqo-tenant-")
        .and_then(|rest| rest.rsplit_once('-'))
        .and_then(|(name, _)| ClusterName::parse(name).ok())
        .or_else(|| ClusterName::parse(cluster.as_str()).ok())
        .expect("a cluster ID is a valid cluster name")
}

fn summary(cert: &X509Certificate<'_>) -> CertificateSummary {
    CertificateSummary {
        serial: hex::encode(cert.raw_serial()),
        not_after: cert.validity().not_after.timestamp(),
        not_before: cert.validity().not_before.timestamp(),
        common_name: cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned),
        spki_der: cert.public_key().raw.to_vec(),
    }
}

/// The digest a proof names, hex (what a client puts in `csr_sha256`).
pub fn csr_digest_hex(csr_der: &[u8]) -> String {
    hex::encode(Sha256::digest(csr_der))
}

/// Why a proof could not be made (client side).
#[derive(Debug, thiserror::Error)]
pub enum SignProofError {
    #[error("the certificate cannot be parsed")]
    Certificate,
    #[error("the certificate's key type is not Ed25519, ECDSA P-256/P-384 or RSA")]
    KeyType,
    #[error("the private key is not a PKCS#8 PEM key of the certificate's type")]
    PrivateKey,
    #[error("signing the proof")]
    Key(#[source] jsonwebtoken::errors::Error),
}

/// Makes a renewal proof (the consumer's side of the format above): signed with
/// `private_key_pem` (PKCS#8), the first certificate of `certificate_pem` in `x5c`.
pub fn sign_proof(
    private_key_pem: &str,
    certificate_pem: &str,
    claims: &ProofClaims,
) -> Result<String, SignProofError> {
    use base64::Engine as _;
    let der = crate::pki::first_certificate_der(certificate_pem.as_bytes()).ok_or(SignProofError::Certificate)?;
    let (_, parsed) = X509Certificate::from_der(&der).map_err(|_| SignProofError::Certificate)?;
    let spki = parsed.public_key();
    let oid = &spki.algorithm.algorithm;
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    let pkcs8 = x509_parser::pem::Pem::iter_from_buffer(private_key_pem.as_bytes())
        .filter_map(Result::ok)
        .find(|block| block.label == "PRIVATE KEY")
        .map(|block| block.contents)
        .ok_or(SignProofError::PrivateKey)?;
    let (algorithm, key) = if oid == &OID_SIG_ED25519 {
        (Algorithm::EdDSA, jsonwebtoken::EncodingKey::from_ed_der(&pkcs8))
    } else if oid == &OID_KEY_TYPE_EC_PUBLIC_KEY && curve.as_ref() == Some(&OID_EC_P256) {
        (Algorithm::ES256, jsonwebtoken::EncodingKey::from_ec_der(&pkcs8))
    } else if oid == &OID_KEY_TYPE_EC_PUBLIC_KEY && curve.as_ref() == Some(&OID_NIST_EC_P384) {
        (Algorithm::ES384, jsonwebtoken::EncodingKey::from_ec_der(&pkcs8))
    } else if oid == &OID_PKCS1_RSAENCRYPTION {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::pkcs8::DecodePrivateKey as _;
        let rsa_key = rsa::RsaPrivateKey::from_pkcs8_der(&pkcs8).map_err(|_| SignProofError::PrivateKey)?;
        let pkcs1 = rsa_key.to_pkcs1_der().map_err(|_| SignProofError::PrivateKey)?;
        (Algorithm::RS256, jsonwebtoken::EncodingKey::from_rsa_der(pkcs1.as_bytes()))
    } else {
        return Err(SignProofError::KeyType);
    };
    let mut header = jsonwebtoken::Header::new(algorithm);
    header.typ = Some(PROOF_TYPE.to_owned());
    header.x5c = Some(vec![base64::engine::general_purpose::STANDARD.encode(&der)]);
    jsonwebtoken::encode(&header, claims, &key).map_err(SignProofError::Key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::local::LocalCa;
    use crate::adapter::memory::{MemoryProofLedger, MemoryStore};
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256};

    const PROVIDER: &str = "provider-1";
    const PEER: &str = "peer-1";
    const RSA_KEY: &str = include_str!("../../tests/fixtures/rsa2048.test-only.key.pem");

    struct Fixture {
        store: Arc<MemoryStore>,
        ca: Arc<LocalCa>,
        renewer: Renewer,
    }

    /// A peer's key, and its certificate as the provider stored it.
    struct Peer {
        key_pem: String,
        cert_pem: String,
    }

    fn fixture(grace: Duration) -> Fixture {
        let store = Arc::new(MemoryStore::new(None, ApiServerInfo { url: "https://api:6443".into(), ca_pem: None }));
        let ca = Arc::new(LocalCa::generate("test ca").unwrap());
        let policy = RenewPolicy { certificate_ttl: Duration::from_secs(3600), grace_after_expiry: grace };
        let renewer = Renewer::new(
            ClusterId::parse(PROVIDER).unwrap(),
            ca.clone(),
            store.clone(),
            Arc::new(MemoryProofLedger::default()),
            policy,
        );
        Fixture { store, ca, renewer }
    }

    fn key(alg: &'static rcgen::SignatureAlgorithm) -> KeyPair {
        if alg == &PKCS_RSA_SHA256 {
            KeyPair::from_pem_and_sign_algo(RSA_KEY, alg).unwrap()
        } else {
            KeyPair::generate_for(alg).unwrap()
        }
    }

    fn csr_pem(key: &KeyPair, cn: &str) -> String {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.distinguished_name.push(rcgen::DnType::OrganizationName, crate::identity::LIQO_ORGANIZATION);
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    fn b64(text: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    impl Fixture {
        /// Issues and stores a first certificate for `key`, as issuance would.
        async fn peer_with(&self, key: &KeyPair) -> Peer {
            let cluster = ClusterIdentity::parse_remote(PEER, "rome").unwrap();
            let csr = ParsedCsr::from_pem(csr_pem(key, PEER).as_bytes()).unwrap();
            let cert_pem =
                self.ca.issue(SignRequest { cluster: &cluster, csr: &csr, ttl: Duration::from_secs(3600) }).unwrap();
            self.store_identity(&cluster, &csr, &cert_pem).await;
            Peer { key_pem: key.serialize_pem(), cert_pem }
        }

        async fn store_identity(&self, cluster: &ClusterIdentity, csr: &ParsedCsr, cert_pem: &str) {
            let ns = self.store.ensure_tenant_namespace(cluster).await.unwrap();
            let identity = StoredIdentity::new(csr.to_pem(), cert_pem.to_owned());
            match self.store.stored_identity(&ns, &cluster.id).await.unwrap() {
                Some(old) => self.store.replace_identity(&ns, &cluster.id, &identity, &old).await.unwrap(),
                None => self.store.create_identity(&ns, &cluster.id, &identity).await.unwrap(),
            }
        }

        async fn renew(&self, proof: String, csr_pem: &str) -> Result<Renewed, RenewError> {
            self.renewer.renew(RenewRequest { proof, csr_base64: b64(csr_pem) }).await.map_err(|f| f.error)
        }
    }

    fn claims_for(csr_pem: &str) -> ProofClaims {
        let csr = ParsedCsr::from_pem(csr_pem.as_bytes()).unwrap();
        let now = crate::pki::unix_now();
        ProofClaims {
            sub: PEER.into(),
            aud: PROVIDER.into(),
            iat: now,
            exp: now + 120,
            jti: uuid::Uuid::new_v4().to_string(),
            csr_sha256: csr_digest_hex(csr.der()),
        }
    }

    fn proof(peer: &Peer, claims: &ProofClaims) -> String {
        sign_proof(&peer.key_pem, &peer.cert_pem, claims).unwrap()
    }

    #[tokio::test]
    async fn renews_every_key_type_with_the_same_key_and_replaces_the_stored_certificate() {
        for alg in [&PKCS_ED25519, &PKCS_ECDSA_P256_SHA256, &PKCS_ECDSA_P384_SHA384, &PKCS_RSA_SHA256] {
            let f = fixture(Duration::ZERO);
            let key = key(alg);
            let peer = f.peer_with(&key).await;
            let csr = csr_pem(&key, PEER);
            let renewed =
                f.renew(proof(&peer, &claims_for(&csr)), &csr).await.unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(renewed.kind, RenewKind::Renew);
            let old = CertificateSummary::from_pem(peer.cert_pem.as_bytes()).unwrap();
            assert_ne!(renewed.certificate.serial, old.serial);
            assert_eq!(renewed.previous_serial, old.serial);
            let stored = f.store.identity(PEER).unwrap();
            assert_eq!(stored.certificate_pem, renewed.certificate_pem);
            assert_eq!(
                stored.previous.unwrap().certificate_pem,
                peer.cert_pem,
                "the replaced one is kept for the overlap"
            );
        }
    }

    #[tokio::test]
    async fn rekeys_with_a_new_key() {
        let f = fixture(Duration::ZERO);
        let peer = f.peer_with(&key(&PKCS_ECDSA_P256_SHA256)).await;
        let new_key = key(&PKCS_ED25519);
        let csr = csr_pem(&new_key, PEER);
        let renewed = f.renew(proof(&peer, &claims_for(&csr)), &csr).await.unwrap();
        assert_eq!(renewed.kind, RenewKind::Rekey);
        assert_eq!(renewed.certificate.spki_der, rcgen::PublicKeyData::subject_public_key_info(&new_key));
    }

    #[tokio::test]
    async fn a_replayed_proof_is_refused_and_changes_nothing() {
        let f = fixture(Duration::ZERO);
        let key = key(&PKCS_ECDSA_P256_SHA256);
        let peer = f.peer_with(&key).await;
        let csr = csr_pem(&key, PEER);
        let claims = claims_for(&csr);
        let first = f.renew(proof(&peer, &claims), &csr).await.unwrap();
        let again = f.renew(proof(&peer, &claims), &csr).await.unwrap_err();
        assert!(matches!(again, RenewError::Replayed), "{again}");
        assert_eq!(f.store.identity(PEER).unwrap().certificate_pem, first.certificate_pem);
    }

    #[tokio::test]
    async fn the_replaced_certificate_renews_again_within_the_overlap_and_the_overlap_does_not_grow() {
        let f = fixture(Duration::ZERO);
        let key = key(&PKCS_ECDSA_P256_SHA256);
        let peer = f.peer_with(&key).await;
        let csr = csr_pem(&key, PEER);
        f.renew(proof(&peer, &claims_for(&csr)), &csr).await.unwrap();
        // The answer was lost: the peer still holds the first certificate.
        let retried = f.renew(proof(&peer, &claims_for(&csr)), &csr).await.expect("within the overlap");
        let stored = f.store.identity(PEER).unwrap();
        assert_eq!(stored.certificate_pem, retried.certificate_pem);
        assert_eq!(stored.previous.as_ref().unwrap().certificate_pem, peer.cert_pem, "still the original one");

        // Past the overlap the replaced certificate is refused.
        let mut aged = stored.clone();
        aged.previous.as_mut().unwrap().replaced_at -= RENEWAL_OVERLAP.as_secs() as i64 + 1;
        let ns = f.store.tenant_namespace(&ClusterId::parse(PEER).unwrap()).await.unwrap().unwrap();
        f.store.replace_identity(&ns, &ClusterId::parse(PEER).unwrap(), &aged, &stored).await.unwrap();
        let late = f.renew(proof(&peer, &claims_for(&csr)), &csr).await.unwrap_err();
        assert!(matches!(late, RenewError::NotCurrent { .. }), "{late}");
    }

    #[tokio::test]
    async fn a_certificate_that_is_not_the_stored_one_is_refused() {
        let f = fixture(Duration::ZERO);
        let key = key(&PKCS_ECDSA_P256_SHA256);
        let peer = f.peer_with(&key).await;
        // Another certificate for the same key and CN, signed by the same CA, but not stored.
        let cluster = ClusterIdentity::parse_remote(PEER, "rome").unwrap();
        let csr = csr_pem(&key, PEER);
        let parsed = ParsedCsr::from_pem(csr.as_bytes()).unwrap();
        let other = f.ca.issue(SignRequest { cluster: &cluster, csr: &parsed, ttl: Duration::from_secs(60) }).unwrap();
        let impostor = Peer { key_pem: peer.key_pem.clone(), cert_pem: other };
        let error = f.renew(proof(&impostor, &claims_for(&csr)), &csr).await.unwrap_err();
        assert!(matches!(error, RenewError::NotCurrent { .. }), "{error}");
        assert_eq!(f.store.identity(PEER).unwrap().certificate_pem, peer.cert_pem, "nothing stored");
    }

    #[tokio::test]
    async fn an_expired_certificate_renews_only_within_the_grace() {
        for (grace, renews) in [(Duration::ZERO, false), (Duration::from_secs(3600), true)] {
            let f = fixture(grace);
            let key = key(&PKCS_ECDSA_P256_SHA256);
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(rcgen::DnType::CommonName, PEER);
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::hours(2);
            params.not_after = now - time::Duration::minutes(10);
            let cert_pem = params.self_signed(&key).unwrap().pem();
            let csr = csr_pem(&key, PEER);
            let cluster = ClusterIdentity::parse_remote(PEER, "rome").unwrap();
            f.store_identity(&cluster, &ParsedCsr::from_pem(csr.as_bytes()).unwrap(), &cert_pem).await;
            let peer = Peer { key_pem: key.serialize_pem(), cert_pem };
            let result = f.renew(proof(&peer, &claims_for(&csr)), &csr).await;
            match (result, renews) {
                (Ok(_), true) => {}
                (Err(RenewError::CertificateExpired { .. }), false) => {}
                (other, _) => panic!("grace {grace:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_removed_tenant_is_refused_after_the_signature_is_checked() {
        let f = fixture(Duration::ZERO);
        let key = key(&PKCS_ECDSA_P256_SHA256);
        let peer = f.peer_with(&key).await;
        f.store.remove_tenant(PEER);
        let csr = csr_pem(&key, PEER);
        let error = f.renew(proof(&peer, &claims_for(&csr)), &csr).await.unwrap_err();
        assert!(matches!(error, RenewError::TenantRemoved { .. }), "{error}");
        assert!(f.store.identity(PEER).is_none(), "nothing stored");
    }

    #[tokio::test]
    async fn proofs_with_bad_signatures_audiences_times_or_digests_are_refused() {
        let f = fixture(Duration::ZERO);
        let key = key(&PKCS_ECDSA_P256_SHA256);
        let peer = f.peer_with(&key).await;
        let csr = csr_pem(&key, PEER);
        let other_key = Peer { key_pem: KeyPair::generate().unwrap().serialize_pem(), cert_pem: peer.cert_pem.clone() };
        let now = crate::pki::unix_now();
        let cases: Vec<(String, ProofError)> = vec![
            (proof(&other_key, &claims_for(&csr)), ProofError::Signature),
            (proof(&peer, &ProofClaims { aud: "another-provider".into(), ..claims_for(&csr) }), ProofError::Audience),
            (proof(&peer, &ProofClaims { sub: "someone-else".into(), ..claims_for(&csr) }), ProofError::Subject),
            (proof(&peer, &ProofClaims { iat: now, exp: now + 301, ..claims_for(&csr) }), ProofError::Lifetime),
            (proof(&peer, &ProofClaims { iat: now - 400, exp: now - 100, ..claims_for(&csr) }), ProofError::Expired),
            (proof(&peer, &ProofClaims { iat: now + 120, exp: now + 180, ..claims_for(&csr) }), ProofError::Expired),
            (proof(&peer, &ProofClaims { csr_sha256: "00".repeat(32), ..claims_for(&csr) }), ProofError::CsrDigest),
            (proof(&peer, &ProofClaims { jti: String::new(), ..claims_for(&csr) }), ProofError::Claims),
        ];
        for (token, expected) in cases {
            let error = f.renew(token, &csr).await.unwrap_err();
            assert!(matches!(&error, RenewError::InvalidProof(e) if *e == expected), "{expected:?}: {error}");
        }
        assert_eq!(f.store.identity(PEER).unwrap().certificate_pem, peer.cert_pem, "nothing stored");
    }

    #[tokio::test]
    async fn a_csr_for_another_cluster_is_refused_even_with_a_good_proof() {
        let f = fixture(Duration::ZERO);
        let key = key(&PKCS_ECDSA_P256_SHA256);
        let peer = f.peer_with(&key).await;
        let csr = csr_pem(&key, "someone-else");
        let error = f.renew(proof(&peer, &claims_for(&csr)), &csr).await.unwrap_err();
        assert!(matches!(error, RenewError::CommonNameMismatch), "{error}");
        assert_eq!(f.store.identity(PEER).unwrap().certificate_pem, peer.cert_pem);
    }

    #[test]
    fn parsing_refuses_garbage_and_foreign_tokens_without_panicking() {
        for text in ["", "a.b", "a.b.c", "....", "eyJ.eyJ.sig", &"x".repeat(MAX_PROOF_BYTES + 1)] {
            assert!(UnverifiedProof::parse(text).is_err(), "{text:?}");
        }
        // A well-formed JWT of another type (no typ, no x5c) is not a proof.
        let foreign = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": PEER}),
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert!(matches!(UnverifiedProof::parse(&foreign), Err(ProofError::Malformed { .. })));
    }

    #[tokio::test]
    async fn an_algorithm_that_does_not_fit_the_key_is_refused() {
        let f = fixture(Duration::ZERO);
        let key = key(&PKCS_ECDSA_P256_SHA256);
        let peer = f.peer_with(&key).await;
        let csr = csr_pem(&key, PEER);
        let token = proof(&peer, &claims_for(&csr));
        // Re-label the header as ES384: the signature is untouched, the algorithm no longer fits.
        use base64::Engine as _;
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut header: serde_json::Value = serde_json::from_slice(&url.decode(&parts[0]).unwrap()).unwrap();
        header["alg"] = "ES384".into();
        parts[0] = url.encode(header.to_string());
        assert_eq!(UnverifiedProof::parse(&parts.join(".")).unwrap_err(), ProofError::Algorithm);
    }
}
