//! The one integration test binary (one link instead of ten): each module is a former test
//! binary, and `support` holds what they share (fake API server, test PKI, `TestApp`,
//! `TestServer`).

mod connection_limits;
mod crash;
mod deploy;
mod dns_discovery;
mod e2e_tls;
mod fake_apiserver;
mod join_tokens;
mod kube_backend;
mod liqo_dropin;
mod mdns_lan;
mod openapi_contract;
mod operations;
mod peer;
mod renewal;
mod router;
mod schemathesis;
mod support;
mod tls_scan;
mod walkthrough;
