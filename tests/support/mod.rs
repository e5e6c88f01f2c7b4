//! Shared test support: test PKI, the router builder, and the fake Kubernetes API server.
#![allow(dead_code)]

pub mod app;
pub mod pki;
