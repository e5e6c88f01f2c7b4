//! Certificate renewal (`POST /identity/certificate/renew`), provider side: every refusal with
//! its status and code and nothing stored, the failed-proof rate limit, metrics, and the
//! Kubernetes backend against the fake API server (a new CSR object with `expirationSeconds`,
//! deleted after; the Secret replaced; RoleBindings intact; a replay refused on another replica).

use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use http::Method;
use liqo_auth::identity::renew::{csr_digest_hex, sign_proof, ProofClaims};
use liqo_auth::identity::ParsedCsr;
use liqo_auth::pki::CertificateSummary;
use rcgen::KeyPair;

use crate::support::app::{certificate_body, post_json, send, Answer, TestApp, PROVIDER_ID};
use crate::support::fake_apiserver::FakeApiServer;
use crate::support::liqo::{seed_liqo_cluster, NS, PROVIDER_ID as KUBE_PROVIDER_ID};
use crate::support::pki::{self, KeyType};
use crate::support::server;

const PEER: &str = "peer-1";

/// What a peer holds after peering: its key and certificate.
struct Held {
    key: KeyPair,
    cert_pem: String,
}

fn claims(audience: &str, csr_pem: &str) -> ProofClaims {
    let csr = ParsedCsr::from_pem(csr_pem.as_bytes()).expect("csr");
    let now = liqo_auth::pki::unix_now();
    ProofClaims {
        sub: PEER.into(),
        aud: audience.into(),
        iat: now,
        exp: now + 120,
        jti: uuid::Uuid::new_v4().to_string(),
        csr_sha256: csr_digest_hex(csr.der()),
    }
}

fn renewal_body(held: &Held, claims: &ProofClaims, csr_pem: &str) -> String {
    let proof = sign_proof(&held.key.serialize_pem(), &held.cert_pem, claims).expect("proof");
    serde_json::json!({"proof": proof, "certificateSigningRequest": pki::b64(csr_pem)}).to_string()
}

async fn renew(router: &Router, body: String) -> Answer {
    send(router, post_json("/identity/certificate/renew", body)).await
}

/// Peers through the router with the shared token and returns what the peer holds.
async fn peer(app: &TestApp, kind: KeyType) -> Held {
    let key = pki::key(kind);
    let answer = app.issue(PEER, "rome", &pki::liqo_csr(&key, PEER)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    Held { key, cert_pem: pki::unb64(answer.json()["certificate"].as_str().unwrap()) }
}

#[tokio::test]
async fn a_peer_renews_over_http_with_every_key_type_and_gets_a_new_certificate() {
    for kind in KeyType::ACCEPTED {
        let app = TestApp::new();
        let held = peer(&app, kind).await;
        let router = app.router();
        let csr = pki::liqo_csr(&held.key, PEER);
        let answer = renew(&router, renewal_body(&held, &claims(PROVIDER_ID, &csr), &csr)).await;
        assert_eq!(answer.status, StatusCode::OK, "{kind:?}: {}", answer.text());
        let body = answer.json();
        let new_pem = pki::unb64(body["certificate"].as_str().unwrap());
        let old = CertificateSummary::from_pem(held.cert_pem.as_bytes()).unwrap();
        let new = CertificateSummary::from_pem(new_pem.as_bytes()).unwrap();
        assert_ne!(new.serial, old.serial);
        assert_eq!(new.spki_der, old.spki_der, "same key: a renewal");
        assert!(body["namespace"].as_str().unwrap().starts_with("liqo-tenant-rome-"));
        assert_eq!(app.memory.identity(PEER).unwrap().certificate_pem, new_pem, "stored");
    }
}

#[tokio::test]
async fn every_refusal_has_its_status_and_code_and_stores_nothing() {
    let app = TestApp::new();
    let held = peer(&app, KeyType::P256).await;
    let router = app.router();
    let csr = pki::liqo_csr(&held.key, PEER);
    let stored = app.memory.identity(PEER).unwrap();
    let now = liqo_auth::pki::unix_now();

    // Signed by another key, with the right certificate in x5c.
    let forged = Held { key: pki::key(KeyType::P256), cert_pem: held.cert_pem.clone() };
    // A certificate for the same key that the provider never stored.
    let other_cert = {
        let ca = pki::SigningCa::new("another ca");
        let (cert, key) = ca.client_cert(PEER, &["liqo.io"], Duration::from_secs(3600));
        Held { key: KeyPair::from_pem(&key).expect("client key"), cert_pem: cert }
    };
    let replayed = claims(PROVIDER_ID, &csr);
    assert_eq!(renew(&router, renewal_body(&held, &replayed, &csr)).await.status, StatusCode::OK);
    let renewed = app.memory.identity(PEER).unwrap();
    assert_ne!(renewed, stored);
    // From here on the current certificate is the renewed one; `held` is the replaced one,
    // still accepted within the overlap, so the refusals below are for their own reasons.
    let other_csr = pki::liqo_csr(&held.key, "someone-else");
    let other_cert_csr = pki::liqo_csr(&other_cert.key, PEER);
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        ("replayed jti", renewal_body(&held, &replayed, &csr), StatusCode::UNAUTHORIZED, "proof_replayed"),
        (
            "another key",
            renewal_body(&forged, &claims(PROVIDER_ID, &csr), &csr),
            StatusCode::UNAUTHORIZED,
            "invalid_proof",
        ),
        (
            "not the stored certificate",
            renewal_body(&other_cert, &claims(PROVIDER_ID, &other_cert_csr), &other_cert_csr),
            StatusCode::UNAUTHORIZED,
            "certificate_not_current",
        ),
        (
            "aud of another provider",
            renewal_body(&held, &claims("other-provider", &csr), &csr),
            StatusCode::UNAUTHORIZED,
            "proof_wrong_audience",
        ),
        (
            "exp too far",
            renewal_body(&held, &ProofClaims { iat: now, exp: now + 3600, ..claims(PROVIDER_ID, &csr) }, &csr),
            StatusCode::UNAUTHORIZED,
            "proof_lifetime_too_long",
        ),
        (
            "expired proof",
            renewal_body(&held, &ProofClaims { iat: now - 600, exp: now - 400, ..claims(PROVIDER_ID, &csr) }, &csr),
            StatusCode::UNAUTHORIZED,
            "proof_expired",
        ),
        (
            "CSR with another CN",
            renewal_body(&held, &claims(PROVIDER_ID, &other_csr), &other_csr),
            StatusCode::BAD_REQUEST,
            "csr_subject_mismatch",
        ),
        (
            "not a JWS",
            serde_json::json!({"proof": "nope", "certificateSigningRequest": pki::b64(&csr)}).to_string(),
            StatusCode::UNAUTHORIZED,
            "invalid_proof",
        ),
        ("not JSON", "{".to_owned(), StatusCode::BAD_REQUEST, "invalid_json"),
    ];
    for (what, body, status, code) in cases {
        let answer = renew(&router, body).await;
        assert_eq!((answer.status, answer.code().as_str()), (status, code), "{what}: {}", answer.text());
        assert!(!answer.text().contains("BEGIN"), "{what}: no PEM in error bodies");
        assert_eq!(app.memory.identity(PEER).unwrap(), renewed, "{what}: nothing stored");
    }

    // Unpeered: the tenant is gone.
    app.memory.remove_tenant(PEER);
    let answer = renew(&router, renewal_body(&held, &claims(PROVIDER_ID, &csr), &csr)).await;
    assert_eq!((answer.status, answer.code().as_str()), (StatusCode::FORBIDDEN, "tenant_removed"), "{}", answer.text());
    assert!(app.memory.identity(PEER).is_none(), "nothing stored for a removed tenant");
}

#[tokio::test]
async fn an_expired_certificate_is_refused_with_its_own_code() {
    let app = TestApp::new();
    let key = pki::key(KeyType::P256);
    // An expired certificate stored by hand, as if issued long ago.
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, PEER);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(3);
    params.not_after = now - time::Duration::hours(1);
    let cert_pem = params.self_signed(&key).unwrap().pem();
    let issued = app.issue(PEER, "rome", &pki::liqo_csr(&key, PEER)).await;
    assert_eq!(issued.status, StatusCode::ACCEPTED);
    use liqo_auth::identity::port::{CredentialStore as _, StoredIdentity};
    let cluster = liqo_auth::identity::ClusterId::parse(PEER).unwrap();
    let ns = app.memory.tenant_namespace(&cluster).await.unwrap().unwrap();
    let current = app.memory.identity(PEER).unwrap();
    let expired = StoredIdentity::new(current.csr_pem.clone(), cert_pem.clone());
    app.memory.replace_identity(&ns, &cluster, &expired, &current).await.unwrap();

    let held = Held { key, cert_pem };
    let csr = pki::liqo_csr(&held.key, PEER);
    let answer = renew(&app.router(), renewal_body(&held, &claims(PROVIDER_ID, &csr), &csr)).await;
    assert_eq!((answer.status, answer.code().as_str()), (StatusCode::UNAUTHORIZED, "certificate_expired"));
    assert_eq!(app.memory.identity(PEER).unwrap(), expired, "nothing stored");
}

#[tokio::test]
async fn refused_proofs_count_as_failed_authentications_and_are_rate_limited() {
    let app = TestApp::new();
    let held = peer(&app, KeyType::P256).await;
    let router = app.router();
    let state = app.state();
    let router_with_metrics = liqo_auth::http::router(state.clone());
    let csr = pki::liqo_csr(&held.key, PEER);
    for _ in 0..liqo_auth::http::protect::DEFAULT_AUTH_FAILURES_PER_MINUTE {
        let answer = renew(&router_with_metrics, renewal_body(&held, &claims("other-provider", &csr), &csr)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let limited = renew(&router_with_metrics, renewal_body(&held, &claims("other-provider", &csr), &csr)).await;
    assert_eq!((limited.status, limited.code().as_str()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
    assert!(limited.headers.contains_key("retry-after"));
    let metrics = state.metrics.encode();
    assert!(metrics.contains(r#"auth_certificate_renewals_total{kind="renew",result="error"} 11"#), "{metrics}");
    // A valid proof from the same source is never refused: only failures are limited.
    let answer = renew(&router_with_metrics, renewal_body(&held, &claims(PROVIDER_ID, &csr), &csr)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.headers["cache-control"], "no-store", "a renewal answer carries a credential");
    assert_eq!(limited.headers["cache-control"], "no-store");
    // Another state (a fresh source limit) renews fine too.
    let answer = renew(&router, renewal_body(&held, &claims(PROVIDER_ID, &csr), &csr)).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn a_rekey_is_counted_as_such() {
    let app = TestApp::new();
    let held = peer(&app, KeyType::P256).await;
    let state = app.state();
    let router = liqo_auth::http::router(state.clone());
    let new_key = pki::key(KeyType::Ed25519);
    let csr = pki::liqo_csr(&new_key, PEER);
    let answer = renew(&router, renewal_body(&held, &claims(PROVIDER_ID, &csr), &csr)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let metrics = state.metrics.encode();
    assert!(metrics.contains(r#"auth_certificate_renewals_total{kind="rekey",result="ok"} 1"#), "{metrics}");
    let new =
        CertificateSummary::from_pem(pki::unb64(answer.json()["certificate"].as_str().unwrap()).as_bytes()).unwrap();
    use rcgen::PublicKeyData as _;
    assert_eq!(new.spki_der, new_key.subject_public_key_info());
}

// ---------------------------------------------------------------------------------------------
// Kubernetes backend.

async fn kube_instance(fake: &FakeApiServer) -> Router {
    let argv = [
        "liqo-auth",
        "serve",
        "--namespace",
        NS,
        "--kube-request-timeout",
        "2s",
        "--signing-timeout",
        "5s",
        "--certificate-ttl",
        "20m",
    ];
    server::router(&server::serve_config_over(fake, &argv)).await
}

async fn kube_token(fake: &FakeApiServer) -> String {
    use k8s_openapi::api::core::v1::Secret;
    let api: kube::Api<Secret> = kube::Api::namespaced(fake.client(), NS);
    let secret = api.get("auth-token").await.expect("auth-token exists");
    String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap()
}

#[tokio::test]
async fn on_kubernetes_renewal_goes_through_a_new_csr_object_and_replaces_the_secret_keeping_rolebindings() {
    let fake = FakeApiServer::start().await;
    seed_liqo_cluster(&fake);
    let replica_a = kube_instance(&fake).await;
    let replica_b = kube_instance(&fake).await;
    let token = kube_token(&fake).await;
    let key = pki::key(KeyType::P256);
    let issued = send(
        &replica_a,
        post_json("/identity/certificate", certificate_body(PEER, "rome", &token, &pki::liqo_csr(&key, PEER), None)),
    )
    .await;
    assert_eq!(issued.status, StatusCode::ACCEPTED, "{}", issued.text());
    let namespace = issued.json()["namespace"].as_str().unwrap().to_owned();
    let held = Held { key, cert_pem: pki::unb64(issued.json()["certificate"].as_str().unwrap()) };
    let bindings_before = fake.list_json("rolebindings");
    assert!(!bindings_before.is_empty());

    fake.clear_requests();
    let csr = pki::liqo_csr(&held.key, PEER);
    let proof_claims = claims(KUBE_PROVIDER_ID, &csr);
    // The fake signer waits a little, so the pending CSR object can be seen.
    fake.set_signing_delay(Duration::from_millis(400));
    let pending = tokio::spawn({
        let router = replica_a.clone();
        let body = renewal_body(&held, &proof_claims, &csr);
        async move { renew(&router, body).await }
    });
    let csr_object = loop {
        if let Some(object) = fake.list_json("certificatesigningrequests").into_iter().next() {
            break object;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(csr_object["spec"]["expirationSeconds"], 1200, "--certificate-ttl 20m");
    assert_eq!(csr_object["spec"]["signerName"], "kubernetes.io/kube-apiserver-client");
    let answer = pending.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let new_pem = pki::unb64(answer.json()["certificate"].as_str().unwrap());
    let requests = fake.requests();
    let created =
        requests.iter().filter(|r| r.method == Method::POST && r.path.ends_with("/certificatesigningrequests")).count();
    assert_eq!(created, 1, "one new CSR object");
    assert!(fake.list_json("certificatesigningrequests").is_empty(), "deleted once stored");
    // The Secret now holds the new certificate (and the replaced one for the overlap).
    let secret = fake.get_json("secrets", Some(&namespace), "liqo-remote-certificate").unwrap();
    assert_eq!(pki::unb64(secret["data"]["certificate"].as_str().unwrap()), new_pem);
    assert_eq!(pki::unb64(secret["data"]["previousCertificate"].as_str().unwrap()), held.cert_pem);
    let summary = CertificateSummary::from_pem(new_pem.as_bytes()).unwrap();
    let old = CertificateSummary::from_pem(held.cert_pem.as_bytes()).unwrap();
    assert!(summary.not_after >= old.not_after && summary.serial != old.serial);
    // RoleBindings untouched.
    assert_eq!(fake.list_json("rolebindings"), bindings_before);
    assert!(requests.iter().all(|r| !r.path.contains("rolebindings") || r.method == Method::GET));
    // The proof is recorded as a Lease in the service's namespace.
    let leases = fake.list_json("leases");
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0]["metadata"]["namespace"], NS);

    // The same proof on another replica: a replay.
    let replay = renew(&replica_b, renewal_body(&held, &proof_claims, &csr)).await;
    assert_eq!(
        (replay.status, replay.code().as_str()),
        (StatusCode::UNAUTHORIZED, "proof_replayed"),
        "{}",
        replay.text()
    );
    let after = fake.get_json("secrets", Some(&namespace), "liqo-remote-certificate").unwrap();
    assert_eq!(after["data"], secret["data"], "nothing stored by the replay");
}

#[tokio::test]
async fn on_kubernetes_a_removed_tenant_cannot_renew() {
    let fake = FakeApiServer::start().await;
    seed_liqo_cluster(&fake);
    let replica = kube_instance(&fake).await;
    let token = kube_token(&fake).await;
    let key = pki::key(KeyType::Ed25519);
    let issued = send(
        &replica,
        post_json("/identity/certificate", certificate_body(PEER, "rome", &token, &pki::liqo_csr(&key, PEER), None)),
    )
    .await;
    assert_eq!(issued.status, StatusCode::ACCEPTED);
    let held = Held { key, cert_pem: pki::unb64(issued.json()["certificate"].as_str().unwrap()) };

    let backend = liqo_auth::config::BackendConfig::Kubernetes {
        namespace: NS.into(),
        connection: liqo_auth::config::Connection::Config(Box::new(fake.kube_config())),
        request_timeout: Duration::from_secs(2),
    };
    let mut out = Vec::new();
    let remove = liqo_auth::TenantAction::Remove { cluster_id: PEER.into(), delete_namespace: false };
    liqo_auth::tenant(&backend, remove, &mut out).await.expect("tenant remove");

    fake.clear_requests();
    let csr = pki::liqo_csr(&held.key, PEER);
    let answer = renew(&replica, renewal_body(&held, &claims(KUBE_PROVIDER_ID, &csr), &csr)).await;
    assert_eq!((answer.status, answer.code().as_str()), (StatusCode::FORBIDDEN, "tenant_removed"), "{}", answer.text());
    let writes: Vec<_> = fake.requests().into_iter().filter(|r| r.method != Method::GET).collect();
    assert!(writes.is_empty(), "nothing created or stored: {writes:?}");
}
