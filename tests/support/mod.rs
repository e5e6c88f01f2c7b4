//! Shared test support: test PKI, the router builder, and the fake Kubernetes API server.
//! Each test binary uses a subset.
#![allow(dead_code)]

pub mod app;
pub mod fake_apiserver;
pub mod liqo;
pub mod pki;
pub mod server;
