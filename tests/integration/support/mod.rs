//! Shared test support: the test PKI, the router builder, the real server on a free port, and
//! the fake Kubernetes API server.

pub mod app;
pub mod fake_apiserver;
pub mod liqo;
pub mod pki;
pub mod server;

/// Whether `LIQO_AUTH_REQUIRE_ALL_TESTS=1` (CI): tests that need kubectl, root or network
/// namespaces then fail instead of skipping when the machine lacks them.
pub fn all_tests_required() -> bool {
    std::env::var("LIQO_AUTH_REQUIRE_ALL_TESTS").is_ok_and(|v| v == "1")
}
