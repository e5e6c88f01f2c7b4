//! Serving TLS: load or generate the certificate, build the rustls config, reload on change.
//!
//! TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, the ring provider set explicitly (never a
//! process default). The certificate is served through `reload::CertResolver`, whose pair can be
//! swapped at run time: open connections keep the pair they negotiated, new handshakes get the
//! new one, and a broken replacement is refused while the old pair stays in service.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::server::reload::CertResolver;
use rustls::sign::CertifiedKey;

use crate::fs::{ensure_private_dir, write_private_file};
use crate::pki::CertificateSummary;

/// Lifetime of a generated serving certificate; regenerated at start when less than 30 days remain.
const GENERATED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const RENEW_BEFORE: i64 = 30 * 24 * 3600;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("the private key type is not supported (use ECDSA, Ed25519 or RSA)")]
    KeyType(#[source] rustls::Error),
    #[error("the certificate does not match the private key")]
    KeyMismatch,
    #[error("generating a self-signed certificate")]
    Generate(#[source] rcgen::Error),
    #[error("persisting the generated certificate")]
    Persist(#[source] crate::fs::FileError),
    #[error(
        "{path} does not exist; give an existing --cert-path/--key-path pair, or add --generate-missing to serve a generated self-signed certificate until the files appear"
    )]
    Missing { path: PathBuf },
    #[error("building the TLS configuration")]
    Config(#[source] rustls::Error),
}

/// Where the serving pair comes from.
#[derive(Debug, Clone)]
pub struct ServingSource {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Where a generated pair is kept so restarts reuse the same key (`None`: memory only).
    pub persist_dir: Option<PathBuf>,
    /// Extra SANs for a generated certificate.
    pub extra_sans: Vec<String>,
    /// Serve a generated pair while the files are absent (the default paths, or
    /// `--generate-missing`); else an absent file refuses the start.
    pub generate_missing: bool,
}

impl ServingSource {
    /// Whether both files exist. When they do not and generating was not asked for, the error
    /// names what is missing and the flag that would allow it.
    pub fn files_present(&self) -> Result<bool, TlsError> {
        match [&self.cert_path, &self.key_path].into_iter().find(|path| !path.exists()) {
            None => Ok(true),
            Some(_) if self.generate_missing => Ok(false),
            Some(path) => Err(TlsError::Missing { path: path.clone() }),
        }
    }
}

/// The pair in service plus what operators need to know about it.
pub struct ServingCertificate {
    pub resolver: Arc<CertResolver>,
    /// `sha256:<hex>` SPKI pin for `liqo-auth peer --ca-hash`.
    pub pin: String,
    /// notAfter of the leaf, Unix seconds.
    pub not_after: i64,
    /// Files to watch for changes, when the pair came from `--cert-path`/`--key-path`.
    pub watched: Option<(PathBuf, PathBuf)>,
}

impl ServingCertificate {
    /// Loads `--cert-path`/`--key-path` when both exist, else a persisted generated pair, else
    /// generates a P-256 self-signed certificate (and persists it).
    /// An absent file with `generate_missing` false is [`TlsError::Missing`].
    pub fn load_or_generate(source: &ServingSource) -> Result<Self, TlsError> {
        if source.files_present()? {
            let (key, summary) = load_pair(&source.cert_path, &source.key_path)?;
            return Ok(Self::from_parts(key, &summary, Some((source.cert_path.clone(), source.key_path.clone()))));
        }
        let (cert_pem, key_pem) = match &source.persist_dir {
            Some(dir) => {
                let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
                let reusable = fs::read_to_string(&cert_file)
                    .ok()
                    .zip(fs::read_to_string(&key_file).ok())
                    .filter(|(cert, _)| still_fresh(cert) && covers_sans(cert, &source.extra_sans));
                match reusable {
                    Some(pair) => pair,
                    None => {
                        // A new SAN or a renewal re-signs with the key already there: the pin
                        // (of the key) stays, and no `--ca-hash` handed out breaks.
                        let kept = fs::read_to_string(&key_file).ok();
                        let pair = generate_self_signed_with_key(&source.extra_sans, kept.as_deref())?;
                        ensure_private_dir(dir).map_err(TlsError::Persist)?;
                        write_private_file(&key_file, pair.1.as_bytes()).map_err(TlsError::Persist)?;
                        write_private_file(&cert_file, pair.0.as_bytes()).map_err(TlsError::Persist)?;
                        tracing::info!(path = %cert_file.display(), "generated a self-signed serving certificate");
                        pair
                    }
                }
            }
            None => generate_self_signed(&source.extra_sans)?,
        };
        let (key, summary) =
            certified_key(cert_pem.as_bytes(), key_pem.as_bytes(), &source.cert_path, &source.key_path)?;
        // Still watched: a pair that appears later (cert-manager issuing after the pod
        // started, a Secret mounted `optional: true`) replaces the generated one.
        Ok(Self::from_parts(key, &summary, None).watching(source))
    }

    /// Watches `source`'s `--cert-path`/`--key-path` from now on, even while they are absent.
    pub fn watching(mut self, source: &ServingSource) -> Self {
        self.watched = Some((source.cert_path.clone(), source.key_path.clone()));
        self
    }

    /// Serves a PEM pair kept elsewhere (the Kubernetes backend's shared Secret).
    pub fn from_pem_pair(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let label = Path::new("<secret>");
        let (key, summary) = certified_key(cert_pem.as_bytes(), key_pem.as_bytes(), label, label)?;
        Ok(Self::from_parts(key, &summary, None))
    }

    /// True when a generated pair must be reused: it is fresh and covers the wanted SANs.
    pub fn reusable(cert_pem: &str, extra_sans: &[String]) -> bool {
        still_fresh(cert_pem) && covers_sans(cert_pem, extra_sans)
    }

    fn from_parts(key: CertifiedKey, summary: &CertificateSummary, watched: Option<(PathBuf, PathBuf)>) -> Self {
        Self {
            resolver: Arc::new(CertResolver::new(key)),
            pin: crate::pki::spki_pin_of_spki(&summary.spki_der),
            not_after: summary.not_after,
            watched,
        }
    }

    /// The rustls server configuration serving this certificate.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(serving_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // The server's cipher order (rustls lists AEAD suites strongest first), not the client's:
        // a client preferring a weaker suite it also offers does not get it (testssl: "cipher
        // order").
        config.ignore_client_order = true;
        config.ticketer = ring::Ticketer::new().map_err(TlsError::Config)?;
        // One TLS 1.3 ticket per handshake, as Go sends: a peer reconnects one connection at a
        // time, and each resumption brings a fresh ticket (rustls' default of 2 doubles the
        // ticket sealing and the extra record on every handshake).
        config.send_tls13_tickets = 1;
        Ok(Arc::new(config))
    }
}

/// ring with the server's cipher order: AES-128-GCM first, then AES-256-GCM, then
/// ChaCha20-Poly1305, in TLS 1.3 and 1.2 alike (Go's order). rustls lists AES-256 first; its
/// SHA-384 key schedule runs SHA-512 in software, while SHA-256 uses the CPU's SHA extensions:
/// the suite alone made a resumed handshake about 15 % slower (`benches/`). AES-128-GCM is the
/// suite every TLS 1.3 peer must implement and the default of Go, nginx and the kube-apiserver.
fn serving_provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite as suite;
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..ring::default_provider()
    }
}

/// Loads and checks a PEM certificate chain and key from files.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<(CertifiedKey, CertificateSummary), TlsError> {
    let cert = fs::read(cert_path).map_err(|source| TlsError::Read { path: cert_path.to_owned(), source })?;
    let key = fs::read(key_path).map_err(|source| TlsError::Read { path: key_path.to_owned(), source })?;
    certified_key(&cert, &key, cert_path, key_path)
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<(CertifiedKey, CertificateSummary), TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path.to_owned() });
    }
    let summary =
        CertificateSummary::from_pem(cert_pem).ok_or_else(|| TlsError::NoCertificate { path: cert_path.to_owned() })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey { path: key_path.to_owned() })?;
    let signing_key = ring::sign::any_supported_type(&key).map_err(TlsError::KeyType)?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| TlsError::KeyMismatch)?;
    Ok((certified, summary))
}

/// Generates a P-256 self-signed serving certificate for localhost, the host name and `extra_sans`.
pub fn generate_self_signed(extra_sans: &[String]) -> Result<(String, String), TlsError> {
    generate_self_signed_with_key(extra_sans, None)
}

/// Like [`generate_self_signed`], signing with `key_pem` when it is a usable key (so the SPKI
/// pin does not change), else with a new P-256 key.
pub fn generate_self_signed_with_key(
    extra_sans: &[String],
    key_pem: Option<&str>,
) -> Result<(String, String), TlsError> {
    let key = match key_pem.and_then(|pem| rcgen::KeyPair::from_pem(pem).ok()) {
        Some(key) => key,
        None => rcgen::KeyPair::generate().map_err(TlsError::Generate)?,
    };
    let mut params = rcgen::CertificateParams::new(default_sans(extra_sans)).map_err(TlsError::Generate)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "liqo-auth");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(300);
    params.not_after = now + GENERATED_VALIDITY;
    let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn default_sans(extra: &[String]) -> Vec<String> {
    let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if let Some(host) = hostname() {
        sans.push(host);
    }
    for san in extra {
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    sans
}

fn hostname() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

fn still_fresh(cert_pem: &str) -> bool {
    let now = crate::pki::unix_now();
    CertificateSummary::from_pem(cert_pem.as_bytes()).is_some_and(|s| s.not_after - now > RENEW_BEFORE)
}

fn covers_sans(cert_pem: &str, wanted: &[String]) -> bool {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Some(der) = crate::pki::first_certificate_der(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return wanted.is_empty();
    };
    let present: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    wanted.iter().all(|w| present.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path, sans: &[&str]) -> ServingSource {
        ServingSource {
            cert_path: dir.join("missing.crt"),
            key_path: dir.join("missing.key"),
            persist_dir: Some(dir.join("data")),
            extra_sans: sans.iter().map(|s| s.to_string()).collect(),
            generate_missing: true,
        }
    }

    #[test]
    fn a_missing_pair_is_refused_unless_generating_was_asked_for() {
        let tmp = tempfile::tempdir().unwrap();
        let refused = ServingSource { generate_missing: false, ..source(tmp.path(), &[]) };
        let error = ServingCertificate::load_or_generate(&refused).err().expect("refused");
        assert!(matches!(&error, TlsError::Missing { path } if path.ends_with("missing.crt")), "{error:?}");
        assert!(error.to_string().contains("--generate-missing"), "{error}");
        assert!(!tmp.path().join("data").exists(), "nothing generated");
        // Only the key missing: named as such.
        let (cert, _) = generate_self_signed(&[]).unwrap();
        fs::write(tmp.path().join("missing.crt"), cert).unwrap();
        let error = ServingCertificate::load_or_generate(&refused).err().expect("refused");
        assert!(matches!(&error, TlsError::Missing { path } if path.ends_with("missing.key")), "{error:?}");
        assert!(ServingCertificate::load_or_generate(&source(tmp.path(), &[])).is_ok(), "generated when asked");
    }

    #[test]
    fn generated_certificate_is_persisted_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let first = ServingCertificate::load_or_generate(&source(tmp.path(), &["auth.example.com"])).unwrap();
        let second = ServingCertificate::load_or_generate(&source(tmp.path(), &["auth.example.com"])).unwrap();
        assert_eq!(first.pin, second.pin);
        assert!(first.server_config().is_ok());
    }

    #[test]
    fn a_new_tls_san_reissues_the_certificate_with_the_same_key_and_pin() {
        let tmp = tempfile::tempdir().unwrap();
        let first = ServingCertificate::load_or_generate(&source(tmp.path(), &[])).unwrap();
        let cert = tmp.path().join("data/tls.crt");
        let before = fs::read_to_string(&cert).unwrap();
        let second = ServingCertificate::load_or_generate(&source(tmp.path(), &["10.1.2.3"])).unwrap();
        let after = fs::read_to_string(&cert).unwrap();
        assert_ne!(before, after, "a new certificate");
        assert!(covers_sans(&after, &["10.1.2.3".to_owned()]), "naming the new SAN");
        assert_eq!(first.pin, second.pin, "the key, hence the pin, is kept");
    }

    #[test]
    fn the_server_order_prefers_aes_128_gcm_and_offers_every_default_suite() {
        use rustls::CipherSuite as S;
        let ours: Vec<S> = serving_provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(&ours[..2], [S::TLS13_AES_128_GCM_SHA256, S::TLS13_AES_256_GCM_SHA384]);
        let mut defaults: Vec<S> = ring::default_provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let mut sorted = ours.clone();
        defaults.sort_by_key(|s| u16::from(*s));
        sorted.sort_by_key(|s| u16::from(*s));
        assert_eq!(sorted, defaults, "the same suites as rustls, reordered");
    }

    #[test]
    fn refuses_a_key_that_does_not_match_the_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let (cert, _) = generate_self_signed(&[]).unwrap();
        let (_, other_key) = generate_self_signed(&[]).unwrap();
        fs::write(tmp.path().join("c.pem"), cert).unwrap();
        fs::write(tmp.path().join("k.pem"), other_key).unwrap();
        let result = load_pair(&tmp.path().join("c.pem"), &tmp.path().join("k.pem"));
        assert!(matches!(result, Err(TlsError::KeyMismatch)));
    }
}
