//! testssl.sh against the real HTTPS server: no finding above LOW except the two a self-signed
//! serving certificate must have (no chain of trust, no CRL or OCSP URI). Runs the checks that
//! concern this service: protocols, server defaults (certificate), cipher preference, forward
//! secrecy, the known vulnerabilities and the HTTP security headers; bounded by `timeout`.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::server::TestServer;

/// Findings a self-signed serving certificate cannot avoid: accepted.
const EXPECTED: &[&str] = &["cert_chain_of_trust", "cert_revocation"];
/// What testssl.sh may take at most (about two minutes on two busy cores).
const LIMIT: Duration = Duration::from_secs(280);

#[tokio::test]
async fn testssl_finds_nothing_above_low_but_the_self_signed_chain() {
    let Some(testssl) = crate::support::tool("testssl").or_else(|| crate::support::tool("testssl.sh")) else {
        return;
    };
    let server = TestServer::start(&["--enable-tls"]).await;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut command = std::process::Command::new("timeout");
    command
        .arg(LIMIT.as_secs().to_string())
        .arg(&testssl)
        .args(["--quiet", "--color", "0", "--warnings", "off", "--nodns", "none", "--ip", "127.0.0.1"])
        .args(["--connect-timeout", "5", "--openssl-timeout", "5"])
        .args(["-p", "-S", "-P", "-f", "-U", "-h"])
        .arg("--jsonfile")
        .arg(&report)
        .arg(format!("https://localhost:{}", server.addr.port()))
        .current_dir(dir.path());
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("testssl runs");
    let log = String::from_utf8_lossy(&output.stdout);
    assert_ne!(output.status.code(), Some(124), "testssl did not finish within {LIMIT:?}:\n{log}");
    let findings: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&report).expect("testssl wrote its report")).expect("a JSON report");
    let ids: BTreeSet<&str> = findings.iter().filter_map(|f| f["id"].as_str()).collect();
    for checked in ["TLS1_3", "cipher_order", "PFS", "heartbleed", "ROBOT", "X-Content-Type-Options"] {
        assert!(ids.contains(checked), "testssl did not report {checked}; ran: {ids:?}\n{log}");
    }
    let serious: Vec<String> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("MEDIUM" | "HIGH" | "CRITICAL")))
        .filter(|f| !EXPECTED.contains(&f["id"].as_str().unwrap_or_default()))
        .map(|f| format!("{} {}: {}", f["severity"], f["id"], f["finding"]))
        .collect();
    assert!(serious.is_empty(), "testssl findings above LOW:\n{}\n\n{log}", serious.join("\n"));
    server.stop().await;
}
