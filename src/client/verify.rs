//! Checks of what a provider returned, before anything is stored: the certificate parses,
//! belongs to our key, is a client certificate valid now, and (a warning when not) is signed by
//! a CA of `apiServerCA`.
//!
//! Talking to the provider is left to [`super::peer`], key handling to [`super::key`].

use std::fmt;

use base64::Engine as _;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::client::key::key_matches_certificate;
use crate::http::wire::CertificateResponse;
use crate::identity::port::{PeerIdentity, PendingKey};
use crate::identity::ParsedCsr;
use crate::pki::{self, CertificateSummary};

/// What is wrong with an issued certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateProblem {
    /// `certificate` is missing (e.g. an IAM-mode answer).
    Missing,
    /// Not base64 of PEM, or no CERTIFICATE block.
    NotPem,
    /// The DER does not parse.
    NotX509,
    /// The public key is not ours.
    KeyMismatch,
    /// No extended key usage clientAuth.
    NotClientAuth,
    /// Already expired (or not yet valid).
    OutsideValidity,
    /// `apiServerCA` is not base64 of PEM certificates.
    BadApiServerCa,
}

/// A certificate answer that passed the checks.
#[derive(Debug)]
pub struct IssuedCertificate {
    /// The client certificate, PEM.
    pub certificate_pem: String,
    /// `apiServerCA` decoded to PEM, when the provider sent one.
    pub api_server_ca: Option<String>,
    /// Serial and validity of the certificate.
    pub summary: CertificateSummary,
    /// Findings that do not make the certificate unusable.
    pub warnings: Vec<String>,
}

/// Checks `answer` against the key it was requested for.
pub fn check_answer(answer: &CertificateResponse, key: &PendingKey) -> Result<IssuedCertificate, CertificateProblem> {
    if answer.certificate.is_empty() {
        return Err(CertificateProblem::Missing);
    }
    let certificate_pem = decode_b64_text(&answer.certificate).ok_or(CertificateProblem::NotPem)?;
    let der = pki::first_certificate_der(certificate_pem.as_bytes()).ok_or(CertificateProblem::NotPem)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|_| CertificateProblem::NotX509)?;
    let csr = ParsedCsr::from_pem(key.csr_pem.as_bytes()).map_err(|_| CertificateProblem::KeyMismatch)?;
    if cert.public_key().raw != csr.spki_der() || !key_matches_certificate(&key.private_key_pem, &certificate_pem) {
        return Err(CertificateProblem::KeyMismatch);
    }
    let client_auth = cert.extensions().iter().any(|ext| match ext.parsed_extension() {
        ParsedExtension::ExtendedKeyUsage(eku) => eku.client_auth || eku.any,
        _ => false,
    });
    if !client_auth {
        return Err(CertificateProblem::NotClientAuth);
    }
    if !cert.validity().is_valid() {
        return Err(CertificateProblem::OutsideValidity);
    }
    let mut warnings = Vec::new();
    let api_server_ca = match answer.api_server_ca.as_deref().filter(|ca| !ca.is_empty()) {
        Some(encoded) => {
            let pem = decode_b64_text(encoded).ok_or(CertificateProblem::BadApiServerCa)?;
            let cas = pki::certificates_der(pem.as_bytes());
            if cas.is_empty() {
                return Err(CertificateProblem::BadApiServerCa);
            }
            let chains = cas.iter().any(|ca_der| {
                X509Certificate::from_der(ca_der)
                    .is_ok_and(|(_, ca)| cert.verify_signature(Some(ca.public_key())).is_ok())
            });
            if !chains {
                // Not fatal: clusters with a separate client CA (k3s, some managed services)
                // sign client certificates with a CA that apiServerCA does not contain.
                warnings.push("the certificate is not signed by a CA in apiServerCA; this is expected only when the provider's API server uses a separate client CA".to_owned());
            }
            Some(pem)
        }
        None => None,
    };
    let summary = CertificateSummary::from_pem(certificate_pem.as_bytes()).ok_or(CertificateProblem::NotX509)?;
    Ok(IssuedCertificate { certificate_pem, api_server_ca, summary, warnings })
}

/// The summary of a stored identity whose certificate is valid now and matches its key.
pub fn still_valid(identity: &PeerIdentity) -> Option<CertificateSummary> {
    let summary = CertificateSummary::from_pem(identity.certificate_pem.as_bytes())?;
    let now = pki::unix_now();
    let valid = summary.not_before <= now && now < summary.not_after;
    (valid && key_matches_certificate(&identity.private_key_pem, &identity.certificate_pem)).then_some(summary)
}

impl fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertificateProblem::Missing => "the answer holds no certificate",
            CertificateProblem::NotPem => "the certificate is not base64 of a PEM CERTIFICATE",
            CertificateProblem::NotX509 => "the certificate is not valid X.509",
            CertificateProblem::KeyMismatch => "the certificate was issued for another public key",
            CertificateProblem::NotClientAuth => "the certificate is not a client certificate (no EKU clientAuth)",
            CertificateProblem::OutsideValidity => "the certificate is expired or not valid yet (check the clocks)",
            CertificateProblem::BadApiServerCa => "apiServerCA is not base64 of PEM certificates",
        })
    }
}

fn decode_b64_text(encoded: &str) -> Option<String> {
    let compact: String = encoded.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(compact).ok()?;
    String::from_utf8(bytes).ok()
}
