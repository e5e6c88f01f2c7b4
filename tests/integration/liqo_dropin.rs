//! Drop-in for real Liqo consumers, driven by a client that behaves like Liqo's own Go code
//! (`support::liqo::LiqoClient`: a new key per attempt, `text/plain`, HTTP/1.1 without ALPN,
//! keep-alive, redirects followed as Go follows them).
//!
//! Auth URLs with a trailing slash: Liqo then requests `//ids` and `POST //identity/certificate`;
//! like the reference router, the service redirects (301, 307) to the cleaned path and Go's
//! client follows, so the peering works end to end.
//!
//! Lost-response recovery: a 202 lost on the way back leaves a Liqo consumer with a new key on
//! its next attempt; the same non-empty `originClusterToken` as the one bound to the stored
//! identity lets that key replace it, anything else stays 409; a plain repeat never changes the
//! stored origin token. On both backends, and with two replicas racing.

use axum::http::StatusCode;
use axum::Router;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::support::app::{certificate_body, post_json, send, Answer, TestApp};
use crate::support::fake_apiserver::FakeApiServer;
use crate::support::liqo::{seed_liqo_cluster, LiqoAnswer, LiqoClient, NS};
use crate::support::pki::{self, KeyType};
use crate::support::server::{self, TestServer};

const PEER: &str = "peer-1";

// ---- Paths that clean to a route ----

#[tokio::test]
async fn a_liqo_consumer_with_a_trailing_slash_in_its_auth_url_peers_through_the_redirects() {
    let server = TestServer::start(&["--enable-tls"]).await;
    let mut liqo = LiqoClient::new(&format!("{}/", server.https_url()));

    let ids = liqo.ids().await;
    assert_eq!(ids.status, StatusCode::OK);
    assert_eq!(ids.redirects, [(StatusCode::MOVED_PERMANENTLY, "/ids".to_owned())]);
    assert!(!ids.json()["clusterId"].as_str().unwrap_or_default().is_empty(), "GetClusterInfo gets a cluster ID");

    let (answer, csr) = liqo.request_identity(PEER, "rome", &server.token(), Some("origin-A")).await;
    assert_eq!(answer.redirects, [(StatusCode::TEMPORARY_REDIRECT, "/identity/certificate".to_owned())]);
    assert_eq!(certified_key(&certificate(&answer)), csr_key(&csr), "the 307 carried the body again");
    assert_eq!(liqo.connections, 1, "the redirects were followed on the kept-alive connection");

    // The metrics name the route template or `unmatched`, never a raw path.
    let metrics = server.metrics.encode();
    assert!(metrics.contains(r#"route="unmatched""#) && metrics.contains(r#"route="/identity/certificate""#));
    assert!(!metrics.contains("//"), "{metrics}");
}

#[tokio::test]
async fn dot_segments_doubled_slashes_and_escapes_redirect_to_the_route_on_the_kubernetes_backend() {
    let fake = cluster().await;
    let server = TestServer::start_over(&fake, &["--namespace", NS]).await;
    let base = server.http_url();
    let mut liqo = LiqoClient::new(&base);
    for target in ["//ids//", "/./ids", "/identity/../ids", "/%69ds", "/IDS"] {
        let answer = liqo.call(http::Method::GET, &format!("{base}{target}"), None).await;
        assert_eq!((answer.status, answer.redirects.len()), (StatusCode::OK, 1), "{target}");
    }
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), PEER);
    let body = certificate_body(PEER, "rome", &shared_token(&fake).await, &csr, None);
    let answer = liqo.call(http::Method::POST, &format!("{base}//identity/./certificate/"), Some(body.into())).await;
    assert_eq!(answer.redirects, [(StatusCode::TEMPORARY_REDIRECT, "/identity/certificate".to_owned())]);
    assert_eq!(certified_key(&certificate(&answer)), csr_key(&csr));
    let namespace = answer.json()["namespace"].as_str().unwrap().to_owned();
    assert!(fake.get_json("secrets", Some(&namespace), "liqo-remote-certificate").is_some());
    // A path that cleans to no route is still a 404 in the envelope.
    let missing = liqo.call(http::Method::GET, &format!("{base}//ids/x"), None).await;
    assert_eq!((missing.status, missing.json()["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

/// The certificate (PEM) of a 202 answer.
fn certificate(answer: &LiqoAnswer) -> String {
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&answer.body));
    pki::unb64(answer.json()["certificate"].as_str().expect("certificate"))
}

/// The public key the certificate `pem` was issued for.
fn certified_key(pem: &str) -> Vec<u8> {
    liqo_auth::pki::CertificateSummary::from_pem(pem.as_bytes()).expect("a certificate").spki_der
}

/// The public key of the CSR `pem`.
fn csr_key(pem: &str) -> Vec<u8> {
    liqo_auth::identity::ParsedCsr::from_base64_pem(&pki::b64(pem)).expect("a CSR").spki_der().to_vec()
}

fn assert_conflict(answer: &LiqoAnswer, what: &str) {
    assert_eq!(answer.status, StatusCode::CONFLICT, "{what}: {}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["code"], "identity_exists", "{what}");
}

/// The local backend's record of the peer (`peers/<id>.json`).
fn local_record(server: &TestServer) -> serde_json::Value {
    let path = server.data_dir().join("peers").join(format!("{PEER}.json"));
    serde_json::from_slice(&std::fs::read(path).expect("peer record")).unwrap()
}

fn local_origin_token(server: &TestServer) -> String {
    local_record(server)["originToken"].as_str().expect("origin token").to_owned()
}

fn local_stored_certificate(server: &TestServer) -> String {
    local_record(server)["certificate"].as_str().expect("certificate").to_owned()
}

#[tokio::test]
async fn a_lost_202_is_recovered_by_a_new_key_with_the_same_origin_token_on_the_local_backend() {
    let server = TestServer::start(&["--enable-tls"]).await;
    let token = server.token();
    let mut liqo = LiqoClient::new(&server.https_url());

    let (lost, _) = liqo.request_identity(PEER, "rome", &token, Some("origin-A")).await;
    let lost = certificate(&lost);
    // The 202 never arrived: Liqo's next attempt carries a new key and the same origin token.
    let (recovered, csr) = liqo.request_identity(PEER, "rome", &token, Some("origin-A")).await;
    let recovered = certificate(&recovered);
    assert_ne!(lost, recovered);
    assert_eq!(certified_key(&recovered), csr_key(&csr), "issued for the new key");
    assert_eq!(local_stored_certificate(&server), recovered, "the stored certificate was replaced");

    for (origin, what) in [(Some("origin-B"), "another origin token"), (Some(""), "an empty one"), (None, "none")] {
        let (answer, _) = liqo.request_identity(PEER, "rome", &token, origin).await;
        assert_conflict(&answer, what);
    }
    // A repeat of the stored CSR still gets its certificate, and another origin token with it
    // changes nothing.
    let repeat = liqo.post_identity(PEER, "rome", &token, Some("origin-B"), &csr).await;
    assert_eq!(certificate(&repeat), recovered);
    assert_eq!(local_origin_token(&server), "origin-A");
    assert_eq!(local_stored_certificate(&server), recovered);
    assert_eq!(liqo.connections, 1, "every request went over one kept-alive connection");
}

#[tokio::test]
async fn a_wrong_destination_token_cannot_use_the_origin_token_to_recover() {
    let server = TestServer::start(&[]).await;
    let mut liqo = LiqoClient::new(&server.http_url());
    let (first, _) = liqo.request_identity(PEER, "rome", &server.token(), Some("origin-A")).await;
    let first = certificate(&first);
    let (answer, _) = liqo.request_identity(PEER, "rome", "not-the-token", Some("origin-A")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(local_stored_certificate(&server), first);
}

#[tokio::test]
async fn a_first_issuance_without_an_origin_token_can_never_be_recovered() {
    let server = TestServer::start(&[]).await;
    let token = server.token();
    let mut liqo = LiqoClient::new(&server.http_url());
    let (first, csr) = liqo.request_identity(PEER, "rome", &token, None).await;
    let first = certificate(&first);
    // A replay of the CSR cannot bind a token to the identity afterwards ...
    let replay = liqo.post_identity(PEER, "rome", &token, Some("attacker"), &csr).await;
    assert_eq!(certificate(&replay), first);
    // ... so that token proves nothing later.
    let (answer, _) = liqo.request_identity(PEER, "rome", &token, Some("attacker")).await;
    assert_conflict(&answer, "a token bound by nobody");
    assert!(local_record(&server).get("originToken").is_none(), "no origin token stored");
}

#[tokio::test]
async fn two_local_servers_on_one_data_dir_racing_recoveries_leave_one_consistent_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let one = TestServer::start_in(&data, &[]).await;
    let two = TestServer::start_in(&data, &[]).await;
    let token = one.token();
    let (first, _) = LiqoClient::new(&one.http_url()).request_identity(PEER, "rome", &token, Some("origin-A")).await;
    certificate(&first);
    for round in 0..5 {
        let (mut a, mut b) = (LiqoClient::new(&one.http_url()), LiqoClient::new(&two.http_url()));
        let ((answer_a, csr_a), (answer_b, csr_b)) = tokio::join!(
            a.request_identity(PEER, "rome", &token, Some("origin-A")),
            b.request_identity(PEER, "rome", &token, Some("origin-A")),
        );
        let stored = local_stored_certificate(&one);
        assert_one_consistent_winner(round, [(&answer_a, &csr_a), (&answer_b, &csr_b)], &stored);
        // Whoever holds the stored key gets it back from either server.
        let holder = if certified_key(&stored) == csr_key(&csr_a) { &csr_a } else { &csr_b };
        let repeat = LiqoClient::new(&two.http_url()).post_identity(PEER, "rome", &token, Some("x"), holder).await;
        assert_eq!(certificate(&repeat), stored, "round {round}");
    }
    assert_eq!(local_origin_token(&one), "origin-A");
}

/// Racing requests for one cluster: at least one got 202, every other answer is 202 or 409,
/// and the stored certificate is one that a 202 handed out, for that request's key.
fn assert_one_consistent_winner(round: usize, answers: [(&LiqoAnswer, &String); 2], stored: &str) {
    let statuses: Vec<_> = answers.iter().map(|(a, _)| a.status).collect();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::ACCEPTED || *s == StatusCode::CONFLICT),
        "round {round}: {statuses:?}"
    );
    let winners: Vec<_> = answers.iter().filter(|(a, _)| a.status == StatusCode::ACCEPTED).collect();
    assert!(!winners.is_empty(), "round {round}: nobody won ({statuses:?})");
    let stored_winner = winners.iter().find(|(a, _)| certificate(a) == stored);
    let (_, csr) =
        stored_winner.unwrap_or_else(|| panic!("round {round}: the stored certificate was never handed out"));
    assert_eq!(certified_key(stored), csr_key(csr), "round {round}");
}

// ---- Kubernetes backend over the fake API server ----

async fn cluster() -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    seed_liqo_cluster(&fake);
    fake
}

/// One replica (a router built as `serve` builds it) over the fake.
async fn replica(fake: &FakeApiServer) -> Router {
    let argv = ["liqo-auth", "serve", "--namespace", NS, "--kube-request-timeout", "1s", "--signing-timeout", "5s"];
    server::router(&server::serve_config_over(fake, &argv)).await
}

async fn shared_token(fake: &FakeApiServer) -> String {
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    let secret = api.get("auth-token").await.expect("auth-token exists");
    String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap()
}

/// `POST /identity/certificate` through `router` with a new key; returns the answer and the CSR.
async fn attempt(router: &Router, token: &str, origin: Option<&str>) -> (Answer, String) {
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), PEER);
    (repeat(router, token, origin, &csr).await, csr)
}

async fn repeat(router: &Router, token: &str, origin: Option<&str>, csr: &str) -> Answer {
    send(router, post_json("/identity/certificate", certificate_body(PEER, "rome", token, csr, origin))).await
}

fn issued(answer: &Answer) -> String {
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    pki::unb64(answer.json()["certificate"].as_str().expect("certificate"))
}

fn kube_origin_token(fake: &FakeApiServer) -> Option<String> {
    let secret = fake.get_json("secrets", Some(NS), &format!("remote-token-{PEER}"))?;
    Some(pki::unb64(secret["data"]["token"].as_str().expect("token key")))
}

fn kube_stored_certificate(fake: &FakeApiServer, namespace: &str) -> String {
    let secret = fake.get_json("secrets", Some(namespace), "liqo-remote-certificate").expect("stored identity");
    pki::unb64(secret["data"]["certificate"].as_str().expect("certificate key"))
}

#[tokio::test]
async fn a_lost_202_is_recovered_by_a_new_key_with_the_same_origin_token_on_the_kubernetes_backend() {
    let fake = cluster().await;
    let router = replica(&fake).await;
    let token = shared_token(&fake).await;
    let (lost, _) = attempt(&router, &token, Some("origin-A")).await;
    let namespace = lost.json()["namespace"].as_str().unwrap().to_owned();
    let lost = issued(&lost);

    let (recovered, csr) = attempt(&router, &token, Some("origin-A")).await;
    let recovered = issued(&recovered);
    assert_ne!(lost, recovered);
    assert_eq!(certified_key(&recovered), csr_key(&csr));
    assert_eq!(kube_stored_certificate(&fake, &namespace), recovered, "liqo-remote-certificate replaced");
    let secret = fake.get_json("secrets", Some(&namespace), "liqo-remote-certificate").unwrap();
    assert!(!secret.to_string().contains("origin-A"), "only a digest sits beside the certificate");

    for (origin, what) in [(Some("origin-B"), "another origin token"), (Some(""), "an empty one"), (None, "none")] {
        let (answer, _) = attempt(&router, &token, origin).await;
        assert_eq!((answer.status, answer.code()), (StatusCode::CONFLICT, "identity_exists".into()), "{what}");
    }
    let replay = repeat(&router, &token, Some("origin-B"), &csr).await;
    assert_eq!(issued(&replay), recovered);
    assert_eq!(kube_origin_token(&fake).as_deref(), Some("origin-A"), "a repeat never changes the origin token");
    assert_eq!(kube_stored_certificate(&fake, &namespace), recovered);
}

#[tokio::test]
async fn an_issuance_interrupted_before_the_origin_token_write_is_completed_only_with_the_bound_token() {
    let fake = cluster().await;
    let router = replica(&fake).await;
    let token = shared_token(&fake).await;
    // The identity is stored, then writing remote-token-<id> fails: the consumer sees 503.
    fake.fail_next(Some(http::Method::POST), "/namespaces/liqo/secrets", 500, "InternalError");
    let (answer, csr) = attempt(&router, &token, Some("origin-A")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.text());
    assert_eq!(kube_origin_token(&fake), None);

    // A replay of the CSR with another token does not get to write its token ...
    issued(&repeat(&router, &token, Some("attacker"), &csr).await);
    assert_eq!(kube_origin_token(&fake), None);
    // ... and Liqo's retry (a new key, the same origin token) recovers and completes the write.
    let (retry, _) = attempt(&router, &token, Some("origin-A")).await;
    issued(&retry);
    assert_eq!(kube_origin_token(&fake).as_deref(), Some("origin-A"));
}

#[tokio::test]
async fn two_replicas_racing_recoveries_leave_one_consistent_identity_on_the_kubernetes_backend() {
    let fake = cluster().await;
    let (one, two) = (replica(&fake).await, replica(&fake).await);
    let token = shared_token(&fake).await;
    let (first, _) = attempt(&one, &token, Some("origin-A")).await;
    let namespace = first.json()["namespace"].as_str().unwrap().to_owned();
    issued(&first);
    for round in 0..4 {
        let ((a, csr_a), (b, csr_b)) =
            tokio::join!(attempt(&one, &token, Some("origin-A")), attempt(&two, &token, Some("origin-A")));
        let stored = kube_stored_certificate(&fake, &namespace);
        let (a, b) = (liqo_answer(&a), liqo_answer(&b));
        assert_one_consistent_winner(round, [(&a, &csr_a), (&b, &csr_b)], &stored);
    }
    assert_eq!(kube_origin_token(&fake).as_deref(), Some("origin-A"));
}

#[tokio::test]
async fn two_replicas_racing_first_issuances_bind_the_winners_origin_token() {
    for round in 0..3 {
        let fake = cluster().await;
        let (one, two) = (replica(&fake).await, replica(&fake).await);
        let token = shared_token(&fake).await;
        let ((a, csr_a), (b, csr_b)) =
            tokio::join!(attempt(&one, &token, Some("origin-A")), attempt(&two, &token, Some("origin-B")));
        let statuses = (a.status, b.status);
        let (winner_csr, winner_origin, loser_origin) = match statuses {
            (StatusCode::ACCEPTED, StatusCode::CONFLICT) => (&csr_a, "origin-A", "origin-B"),
            (StatusCode::CONFLICT, StatusCode::ACCEPTED) => (&csr_b, "origin-B", "origin-A"),
            other => panic!("round {round}: exactly one first issuance wins, got {other:?}"),
        };
        let winner = if a.status == StatusCode::ACCEPTED { &a } else { &b };
        let namespace = winner.json()["namespace"].as_str().unwrap().to_owned();
        assert_eq!(certified_key(&kube_stored_certificate(&fake, &namespace)), csr_key(winner_csr));
        assert_eq!(kube_origin_token(&fake).as_deref(), Some(winner_origin), "round {round}");
        // The loser's token is bound to nothing; the winner's recovers.
        let (answer, _) = attempt(&two, &token, Some(loser_origin)).await;
        assert_eq!(answer.status, StatusCode::CONFLICT, "round {round}");
        issued(&attempt(&one, &token, Some(winner_origin)).await.0);
    }
}

/// A router answer in the shape the consistency check reads.
fn liqo_answer(answer: &Answer) -> LiqoAnswer {
    LiqoAnswer { status: answer.status, body: answer.body.clone(), redirects: Vec::new() }
}

// ---- Domain rules over the in-memory store ----

#[tokio::test]
async fn a_repeat_with_another_origin_token_never_changes_the_stored_one() {
    let app = TestApp::new();
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), PEER);
    let body = |origin: &str| certificate_body(PEER, "rome", app.token.expose(), &csr, Some(origin));
    assert_eq!(app.send(post_json("/identity/certificate", body("origin-1"))).await.status, StatusCode::ACCEPTED);
    let replay = app.send(post_json("/identity/certificate", body("evil"))).await;
    assert_eq!(replay.status, StatusCode::ACCEPTED, "the same CSR gets its certificate back");
    assert_eq!(app.memory.origin_token(PEER).as_deref(), Some("origin-1"));
}

// ---- Go-style flags when invoked as `auth-service` ----

/// A symlink named `auth-service` to the binary, as the reference image's path is.
fn auth_service(dir: &std::path::Path) -> std::path::PathBuf {
    let link = dir.join("auth-service");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_liqo-auth"), &link).unwrap();
    link
}

#[tokio::test]
async fn auth_service_starts_with_go_style_and_klog_flags_and_warns_about_the_klog_ones() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let mut child = std::process::Command::new(auth_service(dir.path()))
        .args(["-backend", "local", &format!("-data-dir={data}"), "--address", "127.0.0.1:0"])
        .args(["-metrics-address=off", "-enable-authentication", "--v=2", "--logtostderr", "-vmodule=x=4"])
        .args(["--cluster-name=rome", "-stderrthreshold", "INFO"])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (found, address) = tokio::sync::oneshot::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    // Collects the log; hands over the listen address once it appears.
    let collected = log.clone();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            collected.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some((_, rest)) = line.split_once("serving plain HTTP on ") {
                if let Some(found) = found.take() {
                    let _ = found.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
                }
            }
        }
    });
    let waited = tokio::time::timeout(std::time::Duration::from_secs(20), address).await;
    let address = match waited {
        Ok(Ok(found)) => found,
        _ => {
            child.kill().unwrap();
            panic!("auth-service did not start in time")
        }
    };
    let checks = async {
        let seen = log.lock().unwrap().clone();
        for flag in ["--logtostderr", "--vmodule=x=4", "--stderrthreshold=INFO"] {
            assert!(seen.contains(&format!("{flag} is accepted for compatibility")), "a warning for {flag}:\n{seen}");
        }
        let ids = LiqoClient::new(&format!("http://{address}")).ids().await;
        assert_eq!((ids.status, ids.json()["clusterName"].as_str()), (StatusCode::OK, Some("rome")));
        // `GET /ids` is logged at debug level, which --v=2 selects.
        for _ in 0..50 {
            if log.lock().unwrap().contains("DEBUG") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("--v=2 is the debug level:\n{}", log.lock().unwrap());
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(checks)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn auth_service_refuses_an_unknown_flag_as_go_does() {
    let dir = tempfile::tempdir().unwrap();
    let output =
        std::process::Command::new(auth_service(dir.path())).args(["-namespace=liqo", "-bogus=1"]).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("flag provided but not defined: -bogus"), "{stderr}");
}
