//! `LocalProofLedger`: the local backend's [`ProofLedger`], one file per used renewal proof
//! under `<data-dir>/renewal-proofs/<proof id>` holding the Unix second until which it is
//! remembered.
//!
//! A record is created with `O_EXCL`, so of two concurrent uses exactly one succeeds, and it
//! survives a restart (a proof captured before a restart cannot be replayed after it). Expired
//! records are removed by the next use, under a process-wide lock so the check-and-replace of an
//! expired record is not raced. As for the rest of the data dir, one server per data dir.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::fs::ensure_private_dir;
use crate::identity::port::{ProofId, ProofLedger, Seen, StoreError};

/// Serialises the replacement of expired records and the sweep within this process.
static LEDGER_LOCK: Mutex<()> = Mutex::new(());
const LEDGER_DIR: &str = "renewal-proofs";

/// Used renewal proofs as files under the data dir.
#[derive(Debug, Clone)]
pub struct LocalProofLedger {
    dir: PathBuf,
}

impl LocalProofLedger {
    /// The ledger under `<data_dir>/renewal-proofs` (created on first use).
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.join(LEDGER_DIR) }
    }

    fn record_blocking(&self, id: &ProofId, until: i64, now: i64) -> Result<Seen, StoreError> {
        ensure_private_dir(&self.dir)?;
        let _guard = LEDGER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        self.sweep(now);
        // ProofId is 64 hex characters: safe as a file name.
        let path = self.dir.join(id.as_str());
        match create_exclusive(&path, until) {
            Ok(()) => Ok(Seen::First),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // The sweep above removed every expired record: this one is live.
                Ok(Seen::Again)
            }
            Err(e) => Err(StoreError::io(format!("recording renewal proof in {}", path.display()), e)),
        }
    }

    /// Removes records whose time has passed (best effort: a record left behind only keeps a
    /// proof that is expired anyway refused).
    fn sweep(&self, now: i64) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let until = fs::read_to_string(&path).ok().and_then(|text| text.trim().parse::<i64>().ok());
            // An unreadable record (a crash mid-write) is dropped too: it protects nothing.
            if until.is_none_or(|until| until < now) {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

#[async_trait::async_trait]
impl ProofLedger for LocalProofLedger {
    async fn record(&self, id: &ProofId, until: i64) -> Result<Seen, StoreError> {
        let (ledger, id) = (self.clone(), id.clone());
        let now = crate::pki::unix_now();
        tokio::task::spawn_blocking(move || ledger.record_blocking(&id, until, now))
            .await
            .map_err(|e| StoreError::Backend { operation: "recording a renewal proof".into(), source: Box::new(e) })?
    }
}

fn create_exclusive(path: &Path, until: i64) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(until.to_string().as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ClusterId;

    #[tokio::test]
    async fn a_proof_is_recorded_once_and_remembered_across_restarts() {
        let tmp = tempfile::tempdir().unwrap();
        let id = ProofId::new(&ClusterId::parse("c1").unwrap(), "jti-1");
        let until = crate::pki::unix_now() + 300;
        assert_eq!(LocalProofLedger::new(tmp.path()).record(&id, until).await.unwrap(), Seen::First);
        assert_eq!(LocalProofLedger::new(tmp.path()).record(&id, until).await.unwrap(), Seen::Again);
        let other = ProofId::new(&ClusterId::parse("c1").unwrap(), "jti-2");
        assert_eq!(LocalProofLedger::new(tmp.path()).record(&other, until).await.unwrap(), Seen::First);
    }

    #[tokio::test]
    async fn expired_records_are_swept_and_may_be_recorded_again() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = LocalProofLedger::new(tmp.path());
        let id = ProofId::new(&ClusterId::parse("c1").unwrap(), "old");
        assert_eq!(ledger.record(&id, crate::pki::unix_now() - 1).await.unwrap(), Seen::First);
        let fresh = ProofId::new(&ClusterId::parse("c1").unwrap(), "new");
        ledger.record(&fresh, crate::pki::unix_now() + 60).await.unwrap();
        assert!(!tmp.path().join(LEDGER_DIR).join(id.as_str()).exists(), "the expired record was swept");
        assert_eq!(ledger.record(&id, crate::pki::unix_now() + 60).await.unwrap(), Seen::First);
    }
}
