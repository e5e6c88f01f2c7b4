//! The domain's ports: what issuance needs from the outside world, as small async traits.
//!
//! Adapters implement them (`adapter::local`, `adapter::kube`, and an in-memory one for tests);
//! the domain and the HTTP layer only ever see the traits. Each trait says what "not found"
//! and "conflict" mean for it.

mod admin;
mod peer_identity;
mod replay;
mod signer;
mod store;

pub use admin::{ClusterState, ServingRecord, TenantAdmin};
pub use peer_identity::{
    KubeconfigParts, PeerIdentity, PeerIdentityStore, PendingKey, RenderKubeconfig, StoredPeerIdentity,
};
pub use replay::{ProofId, ProofLedger, Seen};
pub use signer::{SignRequest, SignedCertificate, Signer, SignerError};
pub use store::{
    ApiServerInfo, CredentialStore, JoinTokenStore, PeerRecord, PreviousCertificate, SharedTokenSource, StoreError,
    StoredIdentity,
};
