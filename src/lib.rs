//! liqo-auth: the authentication service Liqo clusters use to peer with each other.
#![forbid(unsafe_code)]

pub mod pki;
