//! `ProofLedger`: remembers which renewal proofs were used, so a captured proof cannot be
//! replayed while it is valid.
//!
//! A proof is named by [`ProofId`] (a hash of its subject and `jti`), never by the `jti`
//! itself: the name goes into file and object names and must be safe there whatever the peer
//! sent. Adapters: files under the data dir (`adapter/local/local_proof.rs`), one Lease per
//! proof on Kubernetes (`adapter/kube/kube_proof.rs`, shared by every replica), and memory for
//! tests. Deciding when a proof is valid is the domain's (`identity::renew`).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::identity::port::StoreError;
use crate::identity::ClusterId;

/// The name of one renewal proof: lower-case hex SHA-256 of `<subject>\n<jti>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProofId(String);

impl ProofId {
    /// Names the proof `jti` of cluster `subject`.
    pub fn new(subject: &ClusterId, jti: &str) -> Self {
        let mut digest = Sha256::new();
        digest.update(subject.as_str().as_bytes());
        digest.update(b"\n");
        digest.update(jti.as_bytes());
        Self(hex::encode(digest.finalize()))
    }

    /// The 64 hex characters (safe in file names and Kubernetes object names).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ProofId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProofId({})", &self.0[..12])
    }
}

/// Whether a proof was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Recorded now: the proof was never used (or its record had expired).
    First,
    /// Already recorded and not expired: a replay.
    Again,
}

/// Records used renewal proofs.
#[async_trait::async_trait]
pub trait ProofLedger: Send + Sync {
    /// Records `id` as used, remembered at least until `until` (Unix seconds). Atomic across
    /// every process that serves the same provider: of two concurrent calls with one `id`,
    /// exactly one gets `Seen::First`. Records past `until` may be dropped at any time.
    async fn record(&self, id: &ProofId, until: i64) -> Result<Seen, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_ids_are_hex_and_depend_on_subject_and_jti() {
        let a = ClusterId::parse("a").unwrap();
        let b = ClusterId::parse("b").unwrap();
        let id = ProofId::new(&a, "../../etc/passwd");
        assert_eq!(id.as_str().len(), 64);
        assert!(id.as_str().bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(id, ProofId::new(&b, "../../etc/passwd"));
        assert_ne!(id, ProofId::new(&a, "other"));
    }
}
