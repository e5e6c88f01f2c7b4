//! Shared test support: the test PKI, the router builder, the real server on a free port, and
//! the fake Kubernetes API server.

pub mod app;
pub mod fake_apiserver;
pub mod liqo;
pub mod pki;
pub mod rbac;
pub mod server;

/// Whether `LIQO_AUTH_REQUIRE_ALL_TESTS=1` (CI): tests that need kubectl, root or network
/// namespaces then fail instead of skipping when the machine lacks them.
pub fn all_tests_required() -> bool {
    std::env::var("LIQO_AUTH_REQUIRE_ALL_TESTS").is_ok_and(|v| v == "1")
}

/// A command-line tool on `PATH` that a test drives: `None` (the test then skips) when missing
/// locally, a failure under `LIQO_AUTH_REQUIRE_ALL_TESTS=1`.
pub fn tool(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|path| path.is_file()));
    if found.is_none() {
        assert!(!all_tests_required(), "{name} is required (LIQO_AUTH_REQUIRE_ALL_TESTS=1): .ci/run installs it");
        eprintln!("skipping: {name} is not installed");
    }
    found
}
