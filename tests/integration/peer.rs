//! `liqo-auth peer` end to end on loopback: the real HTTPS server (local backend) as provider,
//! `peer` as a library call as consumer (local backend, or the Kubernetes backend over the fake
//! API server), with TCP proxies that count connections or drop the first answer.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::fake_apiserver::FakeApiServer;
use crate::support::pki;
use crate::support::server::TestServer;
use clap::Parser as _;
use liqo_auth::adapter::kube::kube_identity::PENDING_SECRET;
use liqo_auth::cli::peer::PeerArgs;
use liqo_auth::cli::{Args, Command};
use liqo_auth::client::peer::{self, PeerError, PeerOutcome, PeerStatus};
use liqo_auth::error::error_chain;
use liqo_auth::pki::CertificateSummary;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PROVIDER_ID: &str = "provider-id-1";
const CONSUMER_ID: &str = "consumer-id-1";

/// A running provider: the real `serve` on 127.0.0.1:0 with the local backend.
struct Provider {
    dir: TempDir,
    addr: SocketAddr,
    server: TestServer,
}

impl Provider {
    /// HTTPS with a generated serving certificate.
    async fn start(extra: &[&str]) -> Self {
        Self::start_with(true, None, extra).await
    }

    /// `tls`: serve HTTPS; `pair`: PEM certificate and key to serve instead of a generated one.
    async fn start_with(tls: bool, pair: Option<(String, String)>, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert_path, key_path) = (dir.path().join("serving.crt"), dir.path().join("serving.key"));
        let generated = pair.is_none();
        if let Some((cert, key)) = pair {
            std::fs::write(&cert_path, cert).expect("write cert");
            std::fs::write(&key_path, key).expect("write key");
        }
        let (cert_flag, key_flag) =
            (format!("--cert-path={}", cert_path.display()), format!("--key-path={}", key_path.display()));
        let mut flags = vec!["--cluster-id", PROVIDER_ID, "--cluster-name", "provider", &cert_flag, &key_flag];
        if generated {
            flags.push("--generate-missing");
        }
        if tls {
            flags.push("--enable-tls");
        }
        flags.extend_from_slice(extra);
        let server = TestServer::start_in(&dir.path().join("data"), &flags).await;
        Self { dir, addr: server.addr, server }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn pin(&self) -> &str {
        self.server.pin.as_deref().expect("a TLS provider has a pin")
    }

    /// The provider's token in a file, as an operator would hand it over.
    fn token_file(&self) -> PathBuf {
        self.data_dir().join("token")
    }

    /// The certificate the provider stored for the consumer.
    fn stored_certificate(&self, consumer: &str) -> String {
        self.peer_record(consumer)["certificate"].as_str().expect("certificate").to_owned()
    }

    /// The provider's record of a peer (`peers/<id>.json`).
    fn peer_record(&self, consumer: &str) -> serde_json::Value {
        let path = self.data_dir().join("peers").join(format!("{consumer}.json"));
        serde_json::from_slice(&std::fs::read(path).expect("the peer's record")).unwrap()
    }
}

/// A TCP proxy in front of `upstream` counting connections. The first `drop_posts` plain-HTTP
/// `POST`s are forwarded, but the client's connection is closed once the answer starts, without
/// passing it on (a response lost on the way back).
struct Proxy {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    posts: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: SocketAddr, drop_posts: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("address");
        let connections = Arc::new(AtomicUsize::new(0));
        let posts = Arc::new(AtomicUsize::new(0));
        let (count, post_count) = (connections.clone(), posts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let post_count = post_count.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    let mut client = client;
                    if drop_posts == 0 {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                    let mut first = vec![0u8; 16 * 1024];
                    let Ok(n) = client.read(&mut first).await else { return };
                    let is_post = first[..n].starts_with(b"POST ");
                    if server.write_all(&first[..n]).await.is_err() {
                        return;
                    }
                    if is_post && post_count.fetch_add(1, Ordering::SeqCst) < drop_posts {
                        let (mut client_read, client_write) = client.into_split();
                        let (mut server_read, mut server_write) = server.into_split();
                        let forward = tokio::spawn(async move {
                            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                        });
                        // The server answers only once the identity is issued and stored.
                        let mut byte = [0u8; 1];
                        let _ = server_read.read(&mut byte).await;
                        forward.abort();
                        drop(client_write);
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Self { addr, connections, posts }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// `liqo-auth peer ...` parsed exactly as the binary parses it.
fn peer_args(argv: &[&str]) -> PeerArgs {
    let mut full = vec!["liqo-auth", "peer"];
    full.extend_from_slice(argv);
    match Args::try_parse_from(full).expect("peer flags").command {
        Command::Peer(args) => *args,
        _ => unreachable!(),
    }
}

/// Consumer flags for the local backend in `consumer`.
fn local_consumer<'a>(consumer: &'a Path, url: &'a str, token_file: &'a Path) -> Vec<String> {
    vec![
        "--auth-url".into(),
        url.into(),
        "--token-file".into(),
        token_file.display().to_string(),
        "--backend".into(),
        "local".into(),
        "--data-dir".into(),
        consumer.display().to_string(),
        "--cluster-id".into(),
        CONSUMER_ID.into(),
        "--cluster-name".into(),
        "consumer".into(),
        "--timeout".into(),
        "20s".into(),
    ]
}

async fn run_peer(args: Vec<String>) -> Result<PeerOutcome, PeerError> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_peer_with(peer_args(&refs), None).await
}

/// `peer` with the Kubernetes backend connected to `fake`.
async fn run_peer_over(fake: &FakeApiServer, args: PeerArgs) -> Result<PeerOutcome, PeerError> {
    run_peer_with(args, Some(fake.kube_config())).await
}

/// Runs `peer` as the binary does: the flags into options, the consumer's backend opened by the
/// composition root (`kube` replacing the Kubernetes connection, for the fake API server). The
/// consumer's own local state (data dir, shared token) is made first, as `serve` would have.
async fn run_peer_with(args: PeerArgs, kube: Option<kube::Config>) -> Result<PeerOutcome, PeerError> {
    use liqo_auth::config::{Access, BackendConfig, Connection};

    let (mut config, options) = args.into_options().expect("valid peer flags");
    match (kube, &mut config) {
        (Some(kube), BackendConfig::Kubernetes { connection, .. }) => *connection = Connection::Config(Box::new(kube)),
        (_, BackendConfig::Local { .. }) => {
            config.open(Access::Create).await.expect("the consumer's own state is created");
        }
        _ => {}
    }
    let backend = config.open(Access::Existing).await.expect("the consumer's backend opens").peer_backend();
    peer::run(options, backend).await
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A TLS endpoint standing in for the provider's API server: its certificate is signed by the
/// provider's CA, it requires client certificates from that CA, and answers `GET /version`.
/// Returns the common names of the client certificates it accepted.
pub(crate) async fn start_api_server(listener: TcpListener, ca_dir: &Path) -> Arc<Mutex<Vec<String>>> {
    let ca_cert = std::fs::read_to_string(ca_dir.join("ca.crt")).expect("provider CA");
    let ca_key = std::fs::read_to_string(ca_dir.join("ca.key")).expect("CA key");
    let serving = pki::server_cert_from_ca(&ca_cert, &ca_key, &["127.0.0.1"]);

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_cert.as_bytes()).expect("CA DER")).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(serving.chain, serving.key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let users = Arc::new(Mutex::new(Vec::new()));
    let seen = users.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let cn = tls.get_ref().1.peer_certificates().and_then(|chain| {
                    use x509_parser::prelude::FromDer as _;
                    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&chain[0]).ok()?;
                    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
                    Some(cn)
                });
                seen.lock().unwrap().extend(cn);
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"major":"1","minor":"32","gitVersion":"v1.32.0-fake","gitCommit":"0","gitTreeState":"clean","buildDate":"2025-01-01T00:00:00Z","goVersion":"go1.23","compiler":"gc","platform":"linux/amd64"}"#;
                let (status, body) =
                    if head.starts_with(b"GET /version") { ("200 OK", body) } else { ("404 Not Found", "{}") };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    users
}

#[tokio::test]
async fn peering_with_a_pinned_provider_stores_private_files_and_a_kubeconfig_that_authenticates() {
    let api_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind API server");
    let api_url = format!("https://{}", api_listener.local_addr().unwrap());
    let provider = Provider::start(&["--advertise-api-server-address", &api_url]).await;
    let users = start_api_server(api_listener, &provider.data_dir()).await;
    let consumer = tempfile::tempdir().unwrap();
    let kubeconfig = consumer.path().join("provider.kubeconfig");
    let url = provider.https_url();

    let args = local_consumer(consumer.path(), &url, &provider.token_file());
    let args = with(args, &["--ca-hash", provider.pin(), "--kubeconfig-out", kubeconfig.to_str().unwrap()]);
    let outcome = run_peer(args).await.unwrap_or_else(|e| panic!("peering fails: {}", error_chain(&e)));

    assert_eq!(outcome.status, PeerStatus::Issued);
    assert_eq!((outcome.provider_id.as_str(), outcome.provider_name.as_str()), (PROVIDER_ID, "provider"));
    assert_eq!(outcome.api_server_url, api_url);
    assert!(outcome.namespace.starts_with("liqo-tenant-consumer-"), "{}", outcome.namespace);
    assert_eq!(outcome.certificate_requests, 1);
    let dir = consumer.path().join("identities").join(PROVIDER_ID);
    for file in ["private-key.pem", "certificate.pem", "identity.json"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    assert!(!dir.join("pending.json").exists(), "the pending key is removed once the identity is stored");
    assert_eq!(mode(&kubeconfig), 0o600);
    let certificate = std::fs::read_to_string(dir.join("certificate.pem")).unwrap();
    assert_eq!(certificate, provider.stored_certificate(CONSUMER_ID));
    let summary = CertificateSummary::from_pem(certificate.as_bytes()).unwrap();
    assert_eq!(
        (summary.serial.as_str(), summary.not_after),
        (outcome.certificate_serial.as_str(), outcome.certificate_not_after)
    );
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("identity.json")).unwrap()).unwrap();
    assert_eq!(record["apiServerUrl"], api_url);
    assert_eq!(record["providerName"], "provider");
    assert_eq!(record["namespace"], outcome.namespace.as_str());
    assert!(record["apiServerCa"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
    // Our own token went along as originClusterToken, so the provider can peer back.
    let sent =
        provider.peer_record(CONSUMER_ID)["originToken"].as_str().expect("the provider stored our token").to_owned();
    assert_eq!(sent, std::fs::read_to_string(consumer.path().join("token")).unwrap().trim());

    let file = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kube reads the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kube builds a config from it");
    assert_eq!(config.default_namespace, outcome.namespace);
    let client = kube::Client::try_from(config).expect("client");
    let version = client.apiserver_version().await.expect("GET /version with the issued client certificate");
    assert_eq!(version.git_version, "v1.32.0-fake");
    assert_eq!(users.lock().unwrap().as_slice(), [CONSUMER_ID]);
}

#[tokio::test]
async fn a_lost_response_is_recovered_by_resending_the_same_request() {
    let provider = Provider::start_with(false, None, &[]).await;
    let proxy = Proxy::start(provider.addr, 1).await;
    let consumer = tempfile::tempdir().unwrap();
    let url = format!("http://{}", proxy.addr);

    let outcome = run_peer(local_consumer(consumer.path(), &url, &provider.token_file()))
        .await
        .unwrap_or_else(|e| panic!("peering fails: {}", error_chain(&e)));

    assert_eq!(proxy.posts.load(Ordering::SeqCst), 2, "the POST whose answer was lost, and its retry");
    assert_eq!(outcome.certificate_requests, 2, "one lost answer, one retry");
    assert_eq!(proxy.connections(), 3, "GET /ids, the lost POST, the retried POST");
    let stored =
        std::fs::read_to_string(consumer.path().join("identities").join(PROVIDER_ID).join("certificate.pem")).unwrap();
    assert_eq!(stored, provider.stored_certificate(CONSUMER_ID), "the server repeated the certificate it stored");
}

#[tokio::test]
async fn a_run_that_gave_up_after_sending_is_completed_by_the_next_run_with_the_same_key() {
    let provider = Provider::start_with(false, None, &[]).await;
    let proxy = Proxy::start(provider.addr, usize::MAX).await;
    let consumer = tempfile::tempdir().unwrap();
    let lossy = format!("http://{}", proxy.addr);
    let args = local_consumer(consumer.path(), &lossy, &provider.token_file());
    let args: Vec<String> = args.into_iter().map(|a| if a == "20s" { "2s".to_owned() } else { a }).collect();

    let error = run_peer(args).await.expect_err("every answer is lost");
    assert!(matches!(error, PeerError::OutOfTime { .. }), "{}", error_chain(&error));
    let pending = consumer.path().join("identities").join(PROVIDER_ID).join("pending.json");
    assert_eq!(mode(&pending), 0o600, "the key of the unfinished attempt is kept");
    let issued = provider.stored_certificate(CONSUMER_ID);

    // Without the pending key this would be a new key, and the provider would answer 409.
    let direct = format!("http://{}", provider.addr);
    let outcome = run_peer(local_consumer(consumer.path(), &direct, &provider.token_file()))
        .await
        .unwrap_or_else(|e| panic!("the second run fails: {}", error_chain(&e)));
    assert_eq!(outcome.status, PeerStatus::Issued);
    let stored =
        std::fs::read_to_string(consumer.path().join("identities").join(PROVIDER_ID).join("certificate.pem")).unwrap();
    assert_eq!(stored, issued);
    assert!(!pending.exists());
}

#[tokio::test]
async fn a_wrong_pin_is_refused_before_the_token_is_sent() {
    let provider = Provider::start(&[]).await;
    let consumer = tempfile::tempdir().unwrap();
    let url = provider.https_url();
    let wrong = format!("sha256:{}", "00".repeat(32));
    let args = with(local_consumer(consumer.path(), &url, &provider.token_file()), &["--ca-hash", &wrong]);

    let error = run_peer(args).await.expect_err("a wrong pin must fail");
    let text = error_chain(&error);
    assert!(text.contains("GET /ids"), "{text}");
    assert!(text.contains("no certificate in the presented chain matches the pinned hash"), "{text}");
    assert!(text.contains(provider.pin()), "the message shows the presented pin: {text}");
    assert!(!text.contains("OtherError"), "no debug text: {text}");
    let hint = error.hint(std::slice::from_ref(&wrong)).expect("a hint");
    assert!(hint.contains(provider.pin()) && hint.contains(&wrong), "both pins: {hint}");
    assert!(!provider.data_dir().join("peers").exists(), "nothing reached the provider");
}

#[tokio::test]
async fn connection_refused_fails_after_a_short_retry_and_points_to_check() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let consumer = tempfile::tempdir().unwrap();
    let token_file = consumer.path().join("token");
    std::fs::write(&token_file, "t").unwrap();
    let mut args = local_consumer(&consumer.path().join("data"), &url, &token_file);
    let timeout = args.iter().position(|a| a == "--timeout").unwrap();
    args[timeout + 1] = "60s".into();
    let args = with(args, &["--ca-hash", &format!("sha256:{}", "00".repeat(32))]);
    let error = run_peer(args).await.expect_err("nothing listens");
    assert!(matches!(error, PeerError::Request { .. }), "ended by the refusal window, not --timeout: {error:?}");
    let hint = error.hint(&[]).expect("a hint");
    assert!(hint.contains(&format!("liqo-auth check --auth-url {url}")), "{hint}");
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused_as_expired() {
    let ca = pki::TestCa::new("expired serving CA");
    let expired = ca.expired_server_cert(&["127.0.0.1"]);
    let provider = Provider::start_with(true, Some(pki::pem_pair(&expired)), &[]).await;
    let consumer = tempfile::tempdir().unwrap();
    let ca_file = consumer.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let url = provider.https_url();
    let args =
        with(local_consumer(consumer.path(), &url, &provider.token_file()), &["--ca-file", ca_file.to_str().unwrap()]);

    let error = run_peer(args).await.expect_err("an expired certificate must fail");
    let text = error_chain(&error);
    assert!(text.contains("the certificate has expired"), "{text}");
}

#[tokio::test]
async fn plain_http_on_an_https_url_is_refused_as_not_tls() {
    let provider = Provider::start_with(false, None, &[]).await;
    let consumer = tempfile::tempdir().unwrap();
    let url = format!("https://{}", provider.addr);
    let pin = format!("sha256:{}", "11".repeat(32));
    let args = with(local_consumer(consumer.path(), &url, &provider.token_file()), &["--ca-hash", &pin]);

    let error = run_peer(args).await.expect_err("plain HTTP must fail");
    let text = error_chain(&error);
    assert!(text.contains("the server answered plain HTTP, not TLS"), "{text}");
}

#[tokio::test]
async fn forcing_a_new_key_after_issuance_replaces_it_only_with_the_same_origin_token() {
    let provider = Provider::start(&[]).await;
    let consumer = tempfile::tempdir().unwrap();
    let url = provider.https_url();
    let args = with(local_consumer(consumer.path(), &url, &provider.token_file()), &["--ca-hash", provider.pin()]);
    run_peer(args.clone()).await.unwrap_or_else(|e| panic!("first peering fails: {}", error_chain(&e)));
    let certificate = || {
        std::fs::read_to_string(consumer.path().join("identities").join(PROVIDER_ID).join("certificate.pem")).unwrap()
    };
    let first = certificate();

    // The same origin token (this cluster's own token, sent by default) proves it is the same
    // consumer: the provider replaces the identity for the new key.
    run_peer(with(args.clone(), &["--force"]))
        .await
        .unwrap_or_else(|e| panic!("a new key with the same origin token is accepted: {}", error_chain(&e)));
    let second = certificate();
    assert_ne!(first, second, "a new certificate for the new key");

    // Another origin token proves nothing: 409 at once, with the reset hint.
    let other = consumer.path().join("other-origin-token");
    std::fs::write(&other, "not-the-origin-token").unwrap();
    let other = other.display().to_string();
    let started = std::time::Instant::now();
    let error = run_peer(with(args, &["--force", "--origin-token-file", &other]))
        .await
        .expect_err("a new key with another origin token conflicts");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "409 is not retried");
    match &error {
        PeerError::Rejected { status: 409, .. } => {}
        other => panic!("expected a 409 rejection, got {}", error_chain(other)),
    }
    let text = error.to_string();
    assert!(text.contains("already holds an identity"), "the server's message: {text}");
    assert!(text.contains(&format!("liqo-auth tenant remove {CONSUMER_ID}")), "the hint: {text}");
    assert_eq!(second, certificate(), "the stored identity is untouched");
}

#[tokio::test]
async fn re_running_reports_the_existing_identity_without_requesting_a_certificate() {
    let provider = Provider::start(&[]).await;
    let proxy = Proxy::start(provider.addr, 0).await;
    let consumer = tempfile::tempdir().unwrap();
    let url = format!("https://{}", proxy.addr);
    let args = with(local_consumer(consumer.path(), &url, &provider.token_file()), &["--ca-hash", provider.pin()]);
    let first = run_peer(args.clone()).await.unwrap_or_else(|e| panic!("first peering fails: {}", error_chain(&e)));
    assert_eq!(proxy.connections(), 2, "GET /ids and POST /identity/certificate");

    let again = run_peer(args).await.unwrap_or_else(|e| panic!("re-run fails: {}", error_chain(&e)));
    assert_eq!(again.status, PeerStatus::Existing);
    assert_eq!(again.certificate_requests, 0);
    assert_eq!(proxy.connections(), 3, "only GET /ids: no certificate request was sent");
    assert_eq!(again.certificate_serial, first.certificate_serial);
    assert_eq!(again.namespace, first.namespace);
    assert!(again.render_text().contains("already stored"), "{}", again.render_text());
    let json: serde_json::Value = serde_json::to_value(&again).unwrap();
    assert_eq!(json["status"], "existing");
}

#[tokio::test]
async fn peering_with_the_kubernetes_backend_writes_a_liqo_identity_secret() {
    let provider = Provider::start(&[]).await;
    let fake = FakeApiServer::start().await;
    fake.insert_json("/api/v1/namespaces", serde_json::json!({"metadata": {"name": "liqo"}}));
    fake.insert_json(
        "/api/v1/namespaces/liqo/configmaps",
        serde_json::json!({"metadata": {"name": "liqo-clusterid-configmap"}, "data": {"CLUSTER_ID": CONSUMER_ID, "CLUSTER_NAME": "consumer"}}),
    );
    let own_token = "c".repeat(128);
    fake.insert_json(
        "/api/v1/namespaces/liqo/secrets",
        serde_json::json!({"metadata": {"name": "auth-token"}, "data": {"token": pki::b64(&own_token)}}),
    );
    let url = provider.https_url();
    let token_file = provider.token_file();
    let argv = [
        "--auth-url",
        &url,
        "--token-file",
        token_file.to_str().unwrap(),
        "--ca-hash",
        provider.pin(),
        "--backend",
        "kubernetes",
        "--namespace",
        "liqo",
        "--timeout",
        "20s",
        "--output",
        "json",
    ];

    let outcome =
        run_peer_over(&fake, peer_args(&argv)).await.unwrap_or_else(|e| panic!("peering fails: {}", error_chain(&e)));
    assert_eq!(outcome.status, PeerStatus::Issued);

    // The local tenant namespace for the provider, created because it was missing.
    let namespaces: Vec<_> = fake
        .list_json("namespaces")
        .into_iter()
        .filter(|ns| ns["metadata"]["labels"]["discovery.liqo.io/cluster-id"] == PROVIDER_ID)
        .collect();
    assert_eq!(namespaces.len(), 1, "{namespaces:?}");
    let ns_name = namespaces[0]["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(ns_name.starts_with("liqo-tenant-provider-") && ns_name.len() == "liqo-tenant-provider-".len() + 6);
    assert_eq!(namespaces[0]["metadata"]["labels"]["discovery.liqo.io/tenant-namespace"], "true");

    // The identity Secret, where Liqo looks for it.
    let secrets: Vec<_> =
        fake.list_json("secrets").into_iter().filter(|s| s["metadata"]["namespace"] == ns_name.as_str()).collect();
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    let secret = &secrets[0];
    assert_eq!(secret["metadata"]["generateName"], "liqo-identity-");
    assert!(secret["metadata"]["name"].as_str().unwrap().starts_with("liqo-identity-"));
    let labels = &secret["metadata"]["labels"];
    assert_eq!(labels["discovery.liqo.io/local-identity"], "true");
    assert_eq!(labels["discovery.liqo.io/cluster-id"], PROVIDER_ID);
    assert_eq!(labels["discovery.liqo.io/certificate-available"], "true");
    let data = secret["data"].as_object().unwrap();
    let mut keys: Vec<_> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["apiServerCa", "apiServerUrl", "certificate", "namespace", "private-key"]);
    let text = |key: &str| pki::unb64(data[key].as_str().unwrap());
    let certificate = text("certificate");
    let summary = CertificateSummary::from_pem(certificate.as_bytes()).unwrap();
    assert_eq!(
        secret["metadata"]["annotations"]["discovery.liqo.io/certificate-expire-time"],
        summary.not_after.to_string(),
        "the certificate's real notAfter"
    );
    assert!(text("private-key").starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(text("namespace"), outcome.namespace);
    assert_eq!(text("apiServerUrl"), outcome.api_server_url);
    assert!(text("apiServerCa").contains("BEGIN CERTIFICATE"));
    assert_eq!(certificate, provider.stored_certificate(CONSUMER_ID));
    let sent = provider.peer_record(CONSUMER_ID)["originToken"]
        .as_str()
        .expect("auth-token went along as originClusterToken")
        .to_owned();
    assert_eq!(sent, own_token);

    // Re-running finds the Secret and leaves it alone.
    let again = run_peer_over(&fake, peer_args(&argv)).await.expect("re-run");
    assert_eq!(again.status, PeerStatus::Existing);
    assert_eq!(again.certificate_serial, outcome.certificate_serial);
    assert_eq!(fake.list_json("secrets").len(), 2, "auth-token and the one identity Secret");
}

#[tokio::test]
async fn peering_a_cluster_with_itself_is_refused() {
    let provider = Provider::start(&[]).await;
    let consumer = tempfile::tempdir().unwrap();
    let url = provider.https_url();
    let args = local_consumer(consumer.path(), &url, &provider.token_file());
    let args: Vec<String> =
        args.into_iter().map(|a| if a == CONSUMER_ID { PROVIDER_ID.to_owned() } else { a }).collect();

    let error = run_peer(with(args, &["--ca-hash", provider.pin()])).await.expect_err("same cluster ID");
    assert!(matches!(error, PeerError::PeeringWithSelf { .. }), "{}", error_chain(&error));
    assert!(error.to_string().contains("refusing to peer a cluster with itself"), "{error}");
}

#[tokio::test]
async fn on_kubernetes_a_run_that_gave_up_after_sending_is_completed_by_the_next_run_with_the_same_key() {
    let provider = Provider::start_with(false, None, &[]).await;
    let proxy = Proxy::start(provider.addr, usize::MAX).await;
    let fake = FakeApiServer::start().await;
    fake.insert_json("/api/v1/namespaces", serde_json::json!({"metadata": {"name": "liqo"}}));
    fake.insert_json(
        "/api/v1/namespaces/liqo/configmaps",
        serde_json::json!({"metadata": {"name": "liqo-clusterid-configmap"}, "data": {"CLUSTER_ID": CONSUMER_ID, "CLUSTER_NAME": "consumer"}}),
    );
    let token_file = provider.token_file();
    let argv = |url: &str, timeout: &str| {
        let owned: Vec<String> = [
            "--auth-url",
            url,
            "--token-file",
            token_file.to_str().unwrap(),
            "--backend",
            "kubernetes",
            "--namespace",
            "liqo",
            "--timeout",
            timeout,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        owned
    };
    let lossy = argv(&format!("http://{}", proxy.addr), "2s");
    let lossy: Vec<&str> = lossy.iter().map(String::as_str).collect();
    let error = run_peer_over(&fake, peer_args(&lossy)).await.expect_err("every answer is lost");
    assert!(matches!(error, PeerError::OutOfTime { .. }), "{}", error_chain(&error));
    let pending: Vec<_> =
        fake.list_json("secrets").into_iter().filter(|s| s["metadata"]["name"] == PENDING_SECRET).collect();
    assert_eq!(pending.len(), 1, "the key of the unfinished attempt is kept in the tenant namespace");
    let issued = provider.stored_certificate(CONSUMER_ID);

    // Without the pending key this would be a new key, and the provider would answer 409.
    let direct = argv(&format!("http://{}", provider.addr), "20s");
    let direct: Vec<&str> = direct.iter().map(String::as_str).collect();
    let outcome = run_peer_over(&fake, peer_args(&direct))
        .await
        .unwrap_or_else(|e| panic!("the second run fails: {}", error_chain(&e)));
    assert_eq!(outcome.status, PeerStatus::Issued);
    let identity = fake
        .list_json("secrets")
        .into_iter()
        .find(|s| s["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("liqo-identity-")))
        .expect("identity Secret");
    assert_eq!(pki::unb64(identity["data"]["certificate"].as_str().unwrap()), issued);
    assert!(
        !fake.list_json("secrets").iter().any(|s| s["metadata"]["name"] == PENDING_SECRET),
        "the pending copy is deleted once the identity is stored"
    );
}

/// Read-only commands never create a server's state: the binary's `peer`, `token show|list` and
/// `tenant list` on a data dir that does not exist fail with a clear message and leave no dir.
#[test]
fn commands_on_a_missing_local_data_dir_fail_clearly_and_create_nothing() {
    let tmp = TempDir::new().unwrap();
    let data_dir = tmp.path().join("typo-data");
    let data = data_dir.to_str().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "t").unwrap();
    let token = token_file.to_str().unwrap();
    let commands: [&[&str]; 4] = [
        &["peer", "--backend", "local", "--data-dir", data, "--auth-url", "https://127.0.0.1:9", "--token-file", token],
        &["token", "show", "--backend", "local", "--data-dir", data],
        &["token", "list", "--backend", "local", "--data-dir", data],
        &["tenant", "list", "--backend", "local", "--data-dir", data],
    ];
    for argv in commands {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_liqo-auth")).args(argv).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{argv:?}: {stderr}");
        assert!(stderr.contains("no data dir") && stderr.contains("typo-data"), "{argv:?}: {stderr}");
        assert!(!data_dir.exists(), "{argv:?} created the data dir");
    }
}
