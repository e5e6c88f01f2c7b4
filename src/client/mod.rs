//! The peer-facing client: everything a `liqo-auth` client command needs to talk to another
//! cluster's authentication service.
//!
//! [`transport`] owns connections (DNS, TCP, TLS trust, one HTTP/1.1 exchange per connection) and
//! classifies what went wrong; [`check`] walks the same path step by step for the
//! `liqo-auth check` diagnostics. Commands that store identities (`peer`) live elsewhere and use
//! [`transport::AuthClient`].

pub mod check;
pub mod transport;
pub mod trust;

#[cfg(test)]
mod test_support;
