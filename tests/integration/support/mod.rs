//! Shared test support: the test PKI, the router builder, the real server on a free port, and
//! the fake Kubernetes API server.

pub mod app;
pub mod fake_apiserver;
pub mod liqo;
pub mod pki;
pub mod server;
