//! liqo-auth: the authentication service Liqo clusters use to peer with each other.
#![forbid(unsafe_code)]

pub mod adapter;
pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod discovery;
pub mod error;
pub mod fs;
pub mod http;
pub mod identity;
#[cfg(test)]
mod layering;
pub mod pki;
pub mod retry;
pub mod server;
pub mod telemetry;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
