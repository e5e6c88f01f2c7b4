//! Day-two operations: metrics on the admin router, audit events, failed-authentication rate
//! limiting, trusted proxies, and serving-certificate hot reload on the real server.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::app::{certificate_body, get, Answer, TestApp};
use crate::support::pki::{self, KeyType};
use crate::support::server::TestServer;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use liqo_auth::client::transport::{AuthClient, ServerTrust};
use liqo_auth::http::{Protection, ProtectionConfig};
use tower::ServiceExt as _;

const ATTACKER: &str = "203.0.113.5:40000";
const GOOD_PEER: &str = "198.51.100.7:41000";

#[tokio::test]
async fn metrics_appear_with_the_right_labels_after_traffic() {
    let app = TestApp::new();
    let state = app.state();
    let public = liqo_auth::http::router(state.clone());
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let good = certificate_body("peer-1", "rome", app.token.expose(), &csr, None);
    assert_eq!(send(&public, issue_from(GOOD_PEER, &good)).await.status, StatusCode::ACCEPTED);
    assert_eq!(send(&public, issue_from(GOOD_PEER, &good)).await.status, StatusCode::ACCEPTED);
    let bad = certificate_body("peer-2", "milan", "not-the-token", &csr, None);
    assert_eq!(send(&public, issue_from(ATTACKER, &bad)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&public, get("/ids")).await.status, StatusCode::OK);
    assert_eq!(send(&public, get("/no/such/route")).await.status, StatusCode::NOT_FOUND);

    let scrape = send(&liqo_auth::http::admin_router(state), get("/metrics")).await;
    assert_eq!(scrape.status, StatusCode::OK);
    assert!(scrape.headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let metrics = Samples::parse(&scrape.text());
    let post = |status: &str| {
        metrics.value(
            "auth_http_requests_total",
            &[("route", "/identity/certificate"), ("method", "POST"), ("status", status)],
        )
    };
    assert_eq!(post("202"), Some(2.0));
    assert_eq!(post("401"), Some(1.0));
    assert_eq!(
        metrics.value("auth_http_requests_total", &[("route", "/ids"), ("method", "GET"), ("status", "200")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.value("auth_http_requests_total", &[("route", "unmatched"), ("method", "GET"), ("status", "404")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.value("auth_http_request_duration_seconds_count", &[("route", "/identity/certificate")]),
        Some(3.0)
    );
    assert_eq!(metrics.value("auth_http_request_duration_seconds_count", &[("route", "/ids")]), Some(1.0));
    let issued =
        |result: &str| metrics.value("auth_certificates_issued_total", &[("signer", "local-ca"), ("result", result)]);
    assert_eq!((issued("issued"), issued("repeated"), issued("refused")), (Some(1.0), Some(1.0), Some(1.0)));
    assert_eq!(issued("error"), None, "no error happened");
    assert_eq!(metrics.value("auth_token_failures_total", &[("reason", "mismatch")]), Some(1.0));
    assert_eq!(
        metrics.value("auth_signer_duration_seconds_count", &[("signer", "local-ca")]),
        Some(1.0),
        "only the request that signed is timed"
    );
    assert_eq!(metrics.value("auth_serving_certificate_expiry_timestamp_seconds", &[]), Some(0.0));
    assert!(scrape.text().trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn a_busy_default_admin_address_is_a_warning_and_serve_goes_on_without_it() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data").display().to_string();
    let argv = ["liqo-auth", "serve", "--backend", "local", "--data-dir", &data, "--address", "127.0.0.1:0"];
    let mut config = crate::support::server::serve_config(&argv);
    assert!(!config.metrics_required, "no --metrics-address: the default");
    // The default address, made to collide (as :9090 does where Prometheus runs).
    config.metrics_listen = Some(vec![busy.local_addr().unwrap()]);
    let logs = Logs::capture();
    let server = TestServer::start_config(config).await;
    assert_eq!(server.admin_addr, None, "serving without the admin listener");
    let warning = logs
        .events()
        .into_iter()
        .find(|e| e["level"] == "WARN" && e["message"].as_str().unwrap_or_default().contains("admin listener"))
        .unwrap_or_else(|| panic!("a warning about the admin listener: {}", logs.text()));
    let message = warning["message"].as_str().unwrap();
    assert!(message.contains("--metrics-address") && message.contains(":9090"), "{message}");
    let answer = crate::support::liqo::LiqoClient::new(&server.http_url()).ids().await;
    assert_eq!(answer.status, StatusCode::OK, "the public listener serves");
}

#[tokio::test]
async fn a_busy_admin_address_given_on_the_command_line_stops_serve() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data").display().to_string();
    let argv = [
        "liqo-auth",
        "serve",
        "--backend",
        "local",
        "--data-dir",
        &data,
        "--address",
        "127.0.0.1:0",
        "--metrics-address",
        &busy,
    ];
    let config = crate::support::server::serve_config(&argv);
    assert!(config.metrics_required);
    let Err(error) = config.start(async {}).await else { panic!("a given admin address that cannot bind is fatal") };
    let text = liqo_auth::error_chain(&error);
    assert!(text.contains(&busy), "{text}");
}

/// The accept loops are tasks on the runtime's workers, not part of the future `Started::run`
/// returns: both listeners serve while that future is not polled. (In the caller's `block_on`,
/// on the main thread, every accepted connection had to be handed to a worker woken for it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_listeners_accept_on_the_runtime_workers_not_in_the_callers_future() {
    let tmp = tempfile::tempdir().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Both listeners answer while `run` is left alone (checked by the helper).
    let (_, _, run) = serving_polled_once(tmp.path(), async {
        let _ = stopped.await;
    })
    .await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), run).await.expect("both listeners drain and stop");
}

/// The accept loops being tasks does not outlive `run`: dropping it (a caller that gives up on
/// the service) closes both ports, as when the loops ran inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn dropping_run_closes_both_listeners() {
    let tmp = tempfile::tempdir().unwrap();
    let (public, admin, run) = serving_polled_once(tmp.path(), std::future::pending()).await;
    drop(run);
    for (listener, address) in [("public", public), ("admin", admin)] {
        let closed = async {
            while tokio::net::TcpStream::connect(address).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .unwrap_or_else(|_| panic!("the {listener} listener still accepts after `run` was dropped"));
    }
}

/// `serve` on the local backend in `dir`, both listeners on loopback port 0, started until
/// `shutdown`, with its `run` future polled once (which starts the listeners' tasks) and then
/// left alone until both listeners have answered `/healthz`; the public and admin addresses and
/// `run`.
async fn serving_polled_once(
    dir: &std::path::Path,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (SocketAddr, SocketAddr, std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) {
    let data = dir.join("data").display().to_string();
    let argv = [
        "liqo-auth",
        "serve",
        "--backend",
        "local",
        "--data-dir",
        &data,
        "--address",
        "127.0.0.1:0",
        "--metrics-address",
        "127.0.0.1:0",
    ];
    let started = crate::support::server::serve_config(&argv).start(shutdown).await.expect("the service starts");
    let (public, admin) = (started.address, started.admin_address.expect("admin listener"));
    let mut run: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = Box::pin(started.run());
    std::future::poll_fn(|cx| {
        assert!(run.as_mut().poll(cx).is_pending(), "serving until stopped");
        std::task::Poll::Ready(())
    })
    .await;
    for (listener, address) in [("public", public), ("admin", admin)] {
        let answer = crate::support::server::http1_request(address, "GET", "/healthz", "");
        let text = tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .unwrap_or_else(|_| panic!("the {listener} listener did not answer while `run` was not polled"));
        assert!(text.starts_with("HTTP/1.1 200"), "{listener}: {text}");
    }
    (public, admin, run)
}

#[tokio::test]
async fn the_admin_router_serves_health_and_readiness() {
    let admin = liqo_auth::http::admin_router(TestApp::new().state());
    assert_eq!(send(&admin, get("/healthz")).await.status, StatusCode::OK);
    assert_eq!(send(&admin, get("/readyz")).await.status, StatusCode::OK);
    assert_eq!(send(&admin, get("/identity/certificate")).await.status, StatusCode::NOT_FOUND, "admin only");
}

#[tokio::test]
async fn audit_events_carry_the_right_fields_and_no_secrets() {
    let logs = Logs::capture();
    let app = TestApp::new();
    let public = liqo_auth::http::router(app.state());
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let good = certificate_body("peer-1", "rome", app.token.expose(), &csr, Some("origin-secret-token"));
    let answer = send(&public, issue_from(GOOD_PEER, &good)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let certificate_b64 = answer.json()["certificate"].as_str().unwrap().to_owned();
    let bad = certificate_body("peer-2", "milan", "wrong-token-value-123", &csr, None);
    assert_eq!(send(&public, issue_from(ATTACKER, &bad)).await.status, StatusCode::UNAUTHORIZED);
    let invalid = certificate_body("Not_A_Label", "x", app.token.expose(), &csr, None);
    assert_eq!(send(&public, issue_from(ATTACKER, &invalid)).await.status, StatusCode::BAD_REQUEST);
    let other_key = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let conflict = certificate_body("peer-1", "rome", app.token.expose(), &other_key, None);
    assert_eq!(send(&public, issue_from(GOOD_PEER, &conflict)).await.status, StatusCode::CONFLICT);

    let events = logs.audit_events();
    assert_eq!(events.len(), 4, "one audit event per attempt: {events:#?}");
    let issued = &events[0];
    assert_eq!(issued["outcome"], "issued");
    assert_eq!(issued["cluster.id"], "peer-1");
    assert_eq!(issued["cluster.name"], "rome");
    assert_eq!(issued["source.address"], "198.51.100.7");
    assert_eq!(issued["token.kind"], "shared");
    assert_eq!(issued["signer.kind"], "local-ca");
    assert!(issued["cert.serial"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(issued["cert.not_after"].as_i64().is_some_and(|t| t > 0));
    assert!(issued.get("token.id").is_none(), "the shared token has no ID");
    assert!(issued.get("reason").is_none() && issued.get("cluster.claimed_id").is_none());

    let refused = &events[1];
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["reason"], "mismatch");
    assert_eq!(refused["cluster.claimed_id"], "peer-2");
    assert_eq!(refused["cluster.claimed_name"], "milan");
    assert_eq!(refused["source.address"], "203.0.113.5");
    assert!(refused.get("cluster.id").is_none() && refused.get("cert.serial").is_none());

    assert_eq!(events[2]["outcome"], "refused");
    assert_eq!(events[2]["reason"], "invalid_cluster");
    assert_eq!(events[2]["cluster.claimed_id"], "Not_A_Label");
    // A conflict comes after validation: the cluster is named as validated.
    assert_eq!(events[3]["outcome"], "refused");
    assert_eq!(events[3]["reason"], "identity_exists");
    assert_eq!(events[3]["cluster.id"], "peer-1");

    let everything = logs.text();
    for secret in [
        app.token.expose(),
        "wrong-token-value-123",
        "origin-secret-token",
        "BEGIN",
        &pki::b64(&csr)[..40],
        &certificate_b64[..40],
    ] {
        assert!(!everything.contains(secret), "the logs contain a secret: {secret:?}");
    }
}

#[tokio::test]
async fn the_eleventh_bad_token_from_one_address_gets_429_while_a_good_peer_still_gets_202() {
    let app = TestApp::new();
    let public = liqo_auth::http::router(app.state());
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let bad = certificate_body("peer-9", "evil", "guess", &csr, None);
    for attempt in 1..=10 {
        let answer = send(&public, issue_from(ATTACKER, &bad)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let answer = send(&public, issue_from(ATTACKER, &bad)).await;
    assert_eq!((answer.status, answer.code().as_str()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
    let retry_after: u64 = answer.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=6).contains(&retry_after), "the next cell is due within 60s / 10: {retry_after}");
    // The right token from the same address is never refused: only failures are limited.
    let good = certificate_body("peer-1", "rome", app.token.expose(), &csr, None);
    for _ in 0..15 {
        assert_eq!(send(&public, issue_from(ATTACKER, &good)).await.status, StatusCode::ACCEPTED);
        assert_eq!(send(&public, issue_from(ATTACKER, &bad)).await.status, StatusCode::TOO_MANY_REQUESTS);
    }
    // Another address is not affected, and its success is never counted.
    for _ in 0..15 {
        assert_eq!(send(&public, issue_from(GOOD_PEER, &good)).await.status, StatusCode::ACCEPTED);
    }
    assert_eq!(send(&public, issue_from(GOOD_PEER, &bad)).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_correct_peer_sharing_an_address_with_an_attacker_always_succeeds_on_the_real_server() {
    // Both on 127.0.0.1, as behind one NAT: the attacker sends wrong tokens as fast as its
    // connection allows for the whole test; every request of the correct peer must get 202.
    let server = TestServer::start(&[]).await;
    let client =
        || AuthClient::new(&server.http_url(), ServerTrust::InsecureSkipVerify, Duration::from_secs(10)).unwrap();
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let good = certificate_body("peer-1", "rome", &server.token(), &csr, None).into_bytes();
    let bad = certificate_body("peer-9", "evil", "guess", &csr, None).into_bytes();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let limited = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let attacker = {
        let (client, stop, limited) = (client(), stop.clone(), limited.clone());
        tokio::spawn(async move {
            let mut unauthorized = 0;
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match client.post("/identity/certificate", bad.clone(), "text/plain").await.unwrap().status {
                    401 => unauthorized += 1,
                    429 => drop(limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
                    other => panic!("the attacker got {other}"),
                }
            }
            unauthorized
        })
    };
    for _ in 0..500 {
        if limited.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(limited.load(std::sync::atomic::Ordering::Relaxed) > 0, "the attacker's budget is spent");
    let peer = client();
    for attempt in 1..=20 {
        let answer = peer.post("/identity/certificate", good.clone(), "text/plain").await.unwrap();
        assert_eq!(answer.status, 202, "attempt {attempt} of the correct peer");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let unauthorized = attacker.await.unwrap();
    // A burst of 10, and at most one more cell per 6 s while the test ran.
    assert!((10..=12).contains(&unauthorized), "{unauthorized} wrong tokens got 401 before 429");
    server.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_is_honoured_only_from_a_trusted_proxy() {
    let logs = Logs::capture();
    let app = TestApp::new();
    let protection = Protection::new(ProtectionConfig {
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..Default::default()
    });
    let public = liqo_auth::http::router(app.state().with_protection(protection));
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let bad = certificate_body("peer-9", "evil", "guess", &csr, None);
    let via = |peer: &str, forwarded: &str| {
        let mut request = issue_from(peer, &bad);
        request.headers_mut().insert("x-forwarded-for", forwarded.parse().unwrap());
        request
    };

    // The audit names the forwarded client only behind the trusted proxy.
    send(&public, via("10.1.2.3:5000", "192.0.2.44")).await;
    send(&public, via("192.0.2.99:5000", "192.0.2.45")).await;
    let events = logs.audit_events();
    assert_eq!(events[0]["source.address"], "192.0.2.44");
    assert_eq!(events[0]["source.peer"], "10.1.2.3:5000");
    assert_eq!(events[1]["source.address"], "192.0.2.99", "an untrusted peer cannot name another source");

    // Behind the proxy the limit keys on the forwarded client: one client is limited, the next
    // client through the same proxy is not.
    for _ in 0..9 {
        assert_eq!(send(&public, via("10.1.2.3:5000", "192.0.2.44")).await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(send(&public, via("10.1.2.3:5000", "192.0.2.44")).await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(send(&public, via("10.1.2.3:5000", "192.0.2.46")).await.status, StatusCode::UNAUTHORIZED);

    // From an untrusted peer the limit keys on the peer, whatever header it sends.
    for i in 0..9 {
        let answer = send(&public, via("192.0.2.99:5000", &format!("198.51.100.{i}"))).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(send(&public, via("192.0.2.99:5000", "198.51.100.200")).await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_is_served_by_the_next_handshake_while_an_old_connection_keeps_working() {
    let server = ReloadingServer::start().await;
    let mut old = server.keep_alive_connection().await;
    assert_eq!(old.get_ids().await, 200);
    assert_eq!(old.pin, server.first.pin);
    assert_eq!(server.gauge(), server.first.not_after);

    let second = TestCert::new(90);
    second.write(&server.dir);
    let pin = server.wait_for_pin(&second.pin).await;
    assert_eq!(pin, second.pin, "a new handshake gets the new certificate");
    assert_eq!(old.get_ids().await, 200, "the connection opened before the swap keeps working");
    assert_eq!(server.gauge(), second.not_after, "the expiry gauge follows the reload");
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_that_appears_after_start_replaces_the_generated_one() {
    let server = ReloadingServer::start_with(false).await;
    let generated = server.handshake_pin().await;
    assert_ne!(generated, server.first.pin, "serves a generated pair while the files are absent");
    server.first.write(&server.dir);
    assert_eq!(server.wait_for_pin(&server.first.pin).await, server.first.pin, "the late pair is picked up");
    assert_eq!(server.gauge(), server.first.not_after);
    server.stop().await;
}

#[test]
fn an_explicit_cert_path_that_does_not_exist_refuses_to_start_without_generate_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cert = tmp.path().join("tls.crt");
    let serve = |extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_liqo-auth"));
        command
            .args(["serve", "--backend=local", "--address=127.0.0.1:0", "--enable-tls"])
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--cert-path={}", cert.display()))
            .arg(format!("--key-path={}", tmp.path().join("tls.key").display()))
            .args(extra)
            .env("LIQO_AUTH_METRICS_ADDRESS", "off")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null());
        command
    };
    let output = serve(&[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{} does not exist", cert.display())), "names the path: {stderr}");
    assert!(stderr.contains("--generate-missing"), "names the way out: {stderr}");
    assert!(!data.join("tls.crt").exists(), "no certificate generated");
}

#[tokio::test]
async fn a_broken_replacement_keeps_the_old_certificate_in_service_and_logs_an_error() {
    let logs = Logs::capture();
    let server = ReloadingServer::start().await;
    let replacement = TestCert::new(90);
    std::fs::write(server.dir.join("tls.crt"), &replacement.cert_pem).unwrap();
    std::fs::write(
        server.dir.join("tls.key"),
        "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let refused = "refused the changed serving certificate";
    for _ in 0..100 {
        if logs.text().contains(refused) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let error = logs.events().into_iter().find(|e| e["message"].as_str().is_some_and(|m| m.contains(refused)));
    let error = error.expect("the refused pair is logged");
    assert_eq!(error["level"], "ERROR");
    assert!(!logs.text().contains("Z2FyYmFnZQ"), "key material never reaches the log");
    assert_eq!(server.handshake_pin().await, server.first.pin, "the old pair stays in service");
    assert_eq!(server.gauge(), server.first.not_after);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Helpers

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.expect("router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    Answer { status, headers, body }
}

/// A certificate request as `server::serve` hands it to the router: with the TCP peer attached.
fn issue_from(peer: &str, body: &str) -> Request<Body> {
    let mut request = crate::support::app::post_json("/identity/certificate", body.to_owned());
    request.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().expect("peer address")));
    request
}

/// Samples of an OpenMetrics exposition, by name and label set.
struct Samples(Vec<(String, BTreeMap<String, String>, f64)>);

impl Samples {
    fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("label pair");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            samples.push((name.to_owned(), labels, value.parse().expect("sample value")));
        }
        Self(samples)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.0.iter().find(|(n, l, _)| n == name && *l == wanted).map(|(_, _, v)| *v)
    }
}

/// JSON log lines captured for the current thread. `#[tokio::test]` runs on a current-thread
/// runtime, so spawned tasks (the certificate reloader) log here too.
struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Self {
        // tracing caches each callsite's interest when the callsite is first hit. While only one
        // dispatcher exists it asks the *hitting thread's* default, so a callsite first hit by a
        // concurrent test on another thread (no subscriber there) is cached as "never" and this
        // capture misses it. A second, permanent dispatcher makes tracing ask every dispatcher.
        static SECOND_DISPATCHER: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        SECOND_DISPATCHER.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        Self { buffer, _guard: tracing::subscriber::set_default(subscriber) }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.text().lines().map(|line| serde_json::from_str(line).expect("JSON log line")).collect()
    }

    fn audit_events(&self) -> Vec<serde_json::Value> {
        self.events().into_iter().filter(|e| e["target"] == "audit").collect()
    }
}

/// A serving pair from a test CA with a chosen lifetime.
struct TestCert {
    cert_pem: String,
    key_pem: String,
    pin: String,
    not_after: i64,
}

impl TestCert {
    fn new(days: i64) -> Self {
        let now = time::OffsetDateTime::now_utc();
        let not_after = now + time::Duration::days(days);
        let pair = pki::TestCa::new("serving CA").issue(&["localhost", "127.0.0.1"], |params| {
            params.not_before = now - time::Duration::minutes(5);
            params.not_after = not_after;
        });
        let pin = liqo_auth::pki::spki_pin(&pair.chain[0]).unwrap();
        let (cert_pem, key_pem) = pki::pem_pair(&pair);
        // X.509 times have whole seconds.
        Self { cert_pem, key_pem, pin, not_after: not_after.unix_timestamp() }
    }

    /// Replaces the pair the way a Secret volume does: new files renamed into place.
    fn write(&self, dir: &std::path::Path) {
        for (name, text) in [("tls.key", &self.key_pem), ("tls.crt", &self.cert_pem)] {
            let staged = dir.join(format!("{name}.new"));
            std::fs::File::create(&staged).unwrap().write_all(text.as_bytes()).unwrap();
            std::fs::rename(&staged, dir.join(name)).unwrap();
        }
    }
}

/// The real server (`TestServer`, from `Config::start`) with TLS from files and a 100 ms
/// reload interval.
struct ReloadingServer {
    dir: std::path::PathBuf,
    address: SocketAddr,
    first: TestCert,
    server: TestServer,
    _tmp: tempfile::TempDir,
}

impl ReloadingServer {
    async fn start() -> Self {
        Self::start_with(true).await
    }

    /// With `write_first` false the files are absent at start (cert-manager not done yet).
    async fn start_with(write_first: bool) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let first = TestCert::new(30);
        if write_first {
            first.write(&dir);
        }
        let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        let mut flags = vec![
            "--enable-tls".to_owned(),
            format!("--cert-path={}", path("tls.crt")),
            format!("--key-path={}", path("tls.key")),
            "--tls-reload-interval=100ms".into(),
        ];
        if !write_first {
            // Explicit paths that do not exist yet: only with --generate-missing.
            flags.push("--generate-missing".into());
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let server = TestServer::start_in(&dir.join("data"), &flags).await;
        assert!(server.admin_addr.is_some(), "the admin listener is bound");
        Self { dir, address: server.addr, first, server, _tmp: tmp }
    }

    /// A new TLS handshake's leaf certificate pin.
    async fn handshake_pin(&self) -> String {
        let client = AuthClient::new(&format!("https://{}", self.address), ServerTrust::InsecureSkipVerify, TIMEOUT)
            .expect("client");
        let response = client.get("/ids").await.expect("GET /ids");
        assert_eq!(response.status, 200);
        liqo_auth::pki::spki_pin(&response.peer_certificates[0]).unwrap()
    }

    /// Handshakes until the server presents `pin` (or 5 s pass) and returns the last pin seen.
    async fn wait_for_pin(&self, pin: &str) -> String {
        let mut seen = self.handshake_pin().await;
        for _ in 0..50 {
            if seen == pin {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen = self.handshake_pin().await;
        }
        seen
    }

    async fn keep_alive_connection(&self) -> KeptConnection {
        let config = pki::any_server_client_config(&[b"http/1.1"]);
        let tcp = tokio::net::TcpStream::connect(self.address).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        KeptConnection { sender, pin: liqo_auth::pki::spki_pin(&leaf).unwrap() }
    }

    fn gauge(&self) -> i64 {
        let samples = Samples::parse(&self.server.metrics.encode());
        samples.value("auth_serving_certificate_expiry_timestamp_seconds", &[]).unwrap() as i64
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 keep-alive connection over TLS, opened before a swap.
struct KeptConnection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<axum::body::Bytes>>,
    pin: String,
}

impl KeptConnection {
    async fn get_ids(&mut self) -> u16 {
        self.sender.ready().await.expect("the connection is still open");
        let request = Request::get("/ids").header("host", "localhost").body(http_body_util::Empty::new()).unwrap();
        let response = self.sender.send_request(request).await.expect("answer on the old connection");
        let status = response.status().as_u16();
        http_body_util::BodyExt::collect(response.into_body()).await.unwrap();
        status
    }
}

#[tokio::test]
async fn a_changed_serving_pin_is_a_warning_naming_the_old_and_the_new_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let first = TestServer::start_in(&data, &["--enable-tls"]).await;
    let old = first.pin.clone().expect("TLS");
    first.stop().await;
    // A lost key (a wiped volume) means a new key, hence a new pin.
    std::fs::remove_file(data.join("tls.key")).unwrap();
    std::fs::remove_file(data.join("tls.crt")).unwrap();
    let logs = Logs::capture();
    let second = TestServer::start_in(&data, &["--enable-tls"]).await;
    let new = second.pin.clone().expect("TLS");
    assert_ne!(old, new);
    let warning = logs
        .events()
        .into_iter()
        .find(|e| e["level"] == "WARN" && e["message"].as_str().unwrap_or_default().contains("pin changed"))
        .expect("a warning about the pin");
    let message = warning["message"].as_str().unwrap();
    assert!(message.contains(&old) && message.contains(&new), "{message}");
    second.stop().await;
}
