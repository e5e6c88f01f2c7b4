//! End to end over real TLS: the HTTPS server on a free port, driven by the `src/client`
//! transport, through the whole protocol with a CSR of every accepted key type.

use std::time::Duration;

use crate::support::app::certificate_body;
use crate::support::fake_apiserver::FakeApiServer;
use crate::support::liqo;
use crate::support::pki::{self, KeyType};
use crate::support::server::TestServer;
use liqo_auth::client::transport::{AuthClient, ServerTrust};
use rcgen::PublicKeyData as _;
use x509_parser::prelude::{FromDer, X509Certificate};

fn pinned(server: &TestServer) -> AuthClient {
    let pin = liqo_auth::pki::parse_pin(server.pin.as_deref().expect("tls")).expect("pin");
    AuthClient::new(&server.https_url(), ServerTrust::Pin(vec![pin]), Duration::from_secs(10)).expect("client")
}

#[tokio::test]
async fn the_full_protocol_works_over_tls_for_every_key_type() {
    let server = TestServer::start(&[
        "--enable-tls",
        "--cluster-id",
        "provider-1",
        "--cluster-name",
        "milan",
        "--certificate-ttl",
        "48h",
    ])
    .await;
    let client = pinned(&server);

    let ids = client.get("/ids").await.expect("GET /ids");
    assert_eq!(ids.status, 200);
    let ids: serde_json::Value = serde_json::from_slice(&ids.body).unwrap();
    assert_eq!(ids, serde_json::json!({"clusterId": "provider-1", "clusterName": "milan"}));

    let ca_der = liqo_auth::pki::first_certificate_der(server.ca_pem().as_bytes()).unwrap();
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    for (i, kind) in KeyType::ACCEPTED.into_iter().enumerate() {
        let id = format!("peer-{i}");
        let key = pki::key(kind);
        let body = certificate_body(&id, "rome", server.token().trim(), &pki::liqo_csr(&key, &id), None);
        let answer = client.post("/identity/certificate", body.into_bytes(), "text/plain").await.expect("POST");
        assert_eq!(answer.status, 202, "{kind:?}");
        let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(pki::unb64(json["apiServerCA"].as_str().unwrap()), server.ca_pem(), "apiServerCA is the local CA");
        assert_eq!(json["apiServerUrl"], "https://127.0.0.1:6443");
        let cert_pem = pki::unb64(json["certificate"].as_str().unwrap());
        let der = liqo_auth::pki::first_certificate_der(cert_pem.as_bytes()).unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        cert.verify_signature(Some(ca.public_key()))
            .unwrap_or_else(|e| panic!("{kind:?}: does not chain to the CA: {e}"));
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice(),
            "{kind:?}: certificate is for the CSR's key"
        );
        assert_eq!(cert.subject().iter_common_name().next().unwrap().as_str().unwrap(), id);
        assert_eq!(cert.subject().iter_organization().next().unwrap().as_str().unwrap(), "liqo.io");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth && !cert.is_ca());
        let key_usage = cert.key_usage().unwrap().unwrap().value;
        assert!(key_usage.digital_signature());
        assert_eq!(key_usage.key_encipherment(), kind == KeyType::Rsa2048, "{kind:?}: keyEncipherment only for RSA");
        let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 48 * 3600 + 300, "--certificate-ttl plus the 5 minute backdating");
        assert_ne!(cert.raw_serial(), ca.raw_serial());
    }
    server.stop().await;
}

#[tokio::test]
async fn restarts_keep_the_token_the_identity_and_the_serving_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let first = TestServer::start_in(&data, &["--enable-tls"]).await;
    let (token, pin) = (first.token(), first.pin.clone());
    let ids = pinned(&first).get("/ids").await.unwrap().body;
    first.stop().await;
    let second = TestServer::start_in(&data, &["--enable-tls"]).await;
    assert_eq!(second.token(), token);
    assert_eq!(second.pin, pin);
    assert_eq!(pinned(&second).get("/ids").await.unwrap().body, ids);
    second.stop().await;
}

#[tokio::test]
async fn tls_offers_h2_and_http11_and_refuses_old_protocols() {
    use std::sync::Arc;
    let server = TestServer::start(&["--enable-tls"]).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = pki::AcceptAnyServerCert::new(provider.clone());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = connector.connect("localhost".try_into().unwrap(), tcp).await.expect("TLS 1.2 handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    server.stop().await;
}

#[tokio::test]
async fn plain_http_mode_serves_the_same_api() {
    let server = TestServer::start(&[]).await;
    let client =
        AuthClient::new(&format!("http://{}", server.addr), ServerTrust::InsecureSkipVerify, Duration::from_secs(5))
            .unwrap();
    assert_eq!(client.get("/ids").await.unwrap().status, 200);
    assert_eq!(client.get("/healthz").await.unwrap().status, 200);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish_and_refuses_new_connections() {
    // The real service over the fake API server, whose answer to the readiness probe's
    // `/version` call is held back: a request still in flight when shutdown begins.
    let fake = FakeApiServer::start().await;
    liqo::seed_liqo_cluster(&fake);
    let server = TestServer::start_over(&fake, &["--namespace", liqo::NS]).await;
    let addr = server.addr;
    let client = AuthClient::new(&server.http_url(), ServerTrust::InsecureSkipVerify, Duration::from_secs(5)).unwrap();
    assert_eq!(client.get("/readyz").await.unwrap().status, 200, "ready before the test begins");
    fake.delay_next(None, "/version", Duration::from_millis(400));
    let in_flight = tokio::spawn(async move { client.get("/readyz").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = tokio::spawn(server.stop());
    let answer = in_flight.await.unwrap().expect("the in-flight request completes");
    assert_eq!(answer.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body, serde_json::json!({"status": "ready"}));
    stopped.await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connections after shutdown");
}

#[tokio::test]
async fn check_passes_against_the_live_server_and_fails_on_a_wrong_pin() {
    use liqo_auth::client::check::{run_check, CheckOptions};
    let server = TestServer::start(&["--enable-tls"]).await;
    let pin = liqo_auth::pki::parse_pin(server.pin.as_deref().unwrap()).unwrap();
    let options =
        |trust| CheckOptions { auth_url: server.https_url(), api_server: None, trust, timeout: Duration::from_secs(5) };
    let report = run_check(options(ServerTrust::Pin(vec![pin]))).await;
    assert!(report.passed(), "{}", report.render_table());
    let report = run_check(options(ServerTrust::Pin(vec![[7u8; 32]]))).await;
    assert!(!report.passed());
    assert!(report.render_table().contains("pin"), "{}", report.render_table());
    server.stop().await;
}

#[tokio::test]
async fn invoked_as_auth_service_the_binary_runs_serve() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("auth-service");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_liqo-auth"), &link).unwrap();
    // A serve-only flag proves the arguments were parsed as `serve`; the IAM refusal ends it.
    let output = std::process::Command::new(&link).args(["--aws-region=eu-west-1"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("IAM mode is not supported"));
}

/// Counts the TLS 1.3 tickets a client receives, keeping them in rustls' own cache.
#[derive(Debug)]
struct CountingTickets {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: std::sync::atomic::AtomicUsize,
}

impl rustls::client::ClientSessionStore for CountingTickets {
    fn set_kx_hint(&self, name: rustls::pki_types::ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &rustls::pki_types::ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(
        &self,
        name: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &rustls::pki_types::ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(
        &self,
        name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.tickets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(
        &self,
        name: &rustls::pki_types::ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

#[tokio::test]
async fn a_reconnecting_client_resumes_on_aes_128_gcm_with_one_ticket_per_handshake() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let server = TestServer::start(&["--enable-tls"]).await;
    let store = Arc::new(CountingTickets {
        inner: rustls::client::ClientSessionMemoryCache::new(8),
        tickets: std::sync::atomic::AtomicUsize::new(0),
    });
    let mut config = pki::any_server_client_config(&[]);
    config.resumption = rustls::client::Resumption::store(store.clone());
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut kinds = Vec::new();
    for round in 1..=2 {
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let (_, connection) = tls.get_ref();
        kinds.push(connection.handshake_kind());
        let suite = connection.negotiated_cipher_suite().map(|s| s.suite());
        // rustls' client offers AES-256-GCM first: the server's order decides.
        assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256), "round {round}");
        tls.write_all(b"GET /ids HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"), "round {round}");
        assert_eq!(store.tickets.load(Ordering::SeqCst), round, "one ticket per handshake");
    }
    assert_eq!(kinds, [Some(rustls::HandshakeKind::Full), Some(rustls::HandshakeKind::Resumed)]);
}

#[test]
fn an_invalid_tokio_worker_threads_is_a_usage_error_not_a_panic() {
    for value in ["0", "two", ""] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_liqo-auth"))
            .args(["version"])
            .env("TOKIO_WORKER_THREADS", value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{value:?}: {stderr}");
        assert!(stderr.contains("must be a positive integer") && !stderr.contains("panicked"), "{stderr}");
    }
}
