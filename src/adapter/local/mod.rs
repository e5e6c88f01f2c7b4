//! The local adapters: the data-dir store (shared token, join tokens, peers) and the CA that
//! signs with a key held in memory (the data dir's own CA, or one mounted for `--signer local-ca`),
//! and the ledger of used renewal proofs.

pub mod local_ca;
pub mod local_file;
pub mod local_peers;
pub mod local_proof;

pub use local_ca::LocalCa;
pub use local_file::LocalStore;
pub use local_proof::LocalProofLedger;
