//! The peer-facing client: everything a `liqo-auth` client command needs to talk to another
//! cluster's authentication service.
//!
//! [`transport`] owns connections (DNS, TCP, TLS trust, one HTTP/1.1 exchange per connection) and
//! classifies what went wrong; [`check`] walks the same path step by step for the
//! `liqo-auth check` diagnostics; [`discover`] finds services on the LAN over mDNS and probes
//! them; [`peer`] obtains an identity, [`renew`] renews it with a proof of possession, with [`verify`] for the checks of what the provider
//! returned, [`key`] for the key and CSR, and [`identity_store`] for the local store.
//!
//! Flags are parsed in `cli`, which hands this module plain option structs; backends come
//! injected from the composition root (`config`). Nothing here talks to Kubernetes.

pub mod agent;
pub mod check;
pub mod discover;
pub mod identity;
pub mod identity_store;
pub mod key;
pub mod peer;
pub mod renew;
pub mod transport;
pub mod verify;

pub use crate::output::Output;
