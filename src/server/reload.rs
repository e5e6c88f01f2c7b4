//! Hot reload of the serving pair: `CertResolver` answers every handshake with the pair in
//! service, and `spawn_reloader` swaps it when the files change, so a cert-manager renewal
//! needs no restart. A pair that does not load is refused and the old one stays in service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::server::tls::load_pair;

/// Serves the current pair to every new handshake.
#[derive(Debug)]
pub struct CertResolver(RwLock<Arc<CertifiedKey>>);

impl CertResolver {
    /// Serves `key` until replaced.
    pub fn new(key: CertifiedKey) -> Self {
        Self(RwLock::new(Arc::new(key)))
    }

    /// Replaces the pair in service.
    pub fn replace(&self, key: CertifiedKey) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// What a reload put in service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// notAfter of the new leaf (Unix seconds).
    pub not_after: i64,
    /// Its SPKI pin (`sha256:HEX`).
    pub pin: String,
}

/// Watches the certificate and key files and swaps the pair when they change. A pair that does
/// not load is refused with an error log and the old one stays in service.
pub fn spawn_reloader(
    resolver: Arc<CertResolver>,
    cert_path: PathBuf,
    key_path: PathBuf,
    every: Duration,
    on_reload: impl Fn(Reloaded) + Send + 'static,
) {
    // Stamp now, not when the task first runs: a change made in between must not be missed.
    let mut last = stamp(&cert_path, &key_path);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = stamp(&cert_path, &key_path);
            if now == last {
                continue;
            }
            last = now;
            match load_pair(&cert_path, &key_path) {
                Ok((key, summary)) => {
                    resolver.replace(key);
                    let pin = crate::pki::spki_pin_of_spki(&summary.spki_der);
                    tracing::info!(
                        path = %cert_path.display(),
                        cert.serial = %summary.serial,
                        tls.pin = %pin,
                        "reloaded the serving certificate"
                    );
                    on_reload(Reloaded { not_after: summary.not_after, pin });
                }
                Err(error) => tracing::error!(
                    path = %cert_path.display(),
                    error = %crate::error::error_chain(&error),
                    "refused the changed serving certificate; the previous one stays in service"
                ),
            }
        }
    });
}

fn stamp(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime, u64, u64)> {
    let (c, k) = (std::fs::metadata(cert).ok()?, std::fs::metadata(key).ok()?);
    Some((c.modified().ok()?, k.modified().ok()?, c.len(), k.len()))
}
