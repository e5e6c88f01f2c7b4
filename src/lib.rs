//! liqo-auth: the authentication service Liqo clusters use to peer with each other.
//!
//! Layers, dependencies pointing down: `http` (axum router) → `identity` (the domain) →
//! `signer` / `store` ports, with adapters below them (`local_ca`, `local_file`, and the
//! Kubernetes ones). `cli` and `config` turn flags into those objects; `server` and `tls`
//! run the listener.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod discovery;
pub mod http;
pub mod identity;
pub mod kubernetes;
pub mod pki;
pub mod server;
pub mod signer;
pub mod store;
pub mod telemetry;
pub mod tls;
