//! The peer-facing client: everything a `liqo-auth` client command needs to talk to another
//! cluster's authentication service.
//!
//! [`transport`] owns connections (DNS, TCP, TLS trust, one HTTP/1.1 exchange per connection) and
//! classifies what went wrong; [`trust`] holds the TLS trust flags every command shares;
//! [`check`] walks the same path step by step for the `liqo-auth check` diagnostics;
//! [`discover`] finds services on the LAN over mDNS and probes them; [`peer`] obtains and stores
//! an identity, with [`identity_store`] and [`kubeconfig`] for its outputs.

pub mod check;
pub mod discover;
pub mod identity_store;
pub mod kubeconfig;
pub mod peer;
pub mod transport;
pub mod trust;

