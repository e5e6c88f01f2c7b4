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
    let remove = liqo_auth::TenantAction::Remove {
        cluster_id: PEER.into(),
        delete_namespace: false,
        ignore_not_found: false,
        dry_run: false,
        output: liqo_auth::Output::Text,
    };
    liqo_auth::tenant(&backend, remove, &mut out).await.expect("tenant remove");

    fake.clear_requests();
    let csr = pki::liqo_csr(&held.key, PEER);
    let answer = renew(&replica, renewal_body(&held, &claims(KUBE_PROVIDER_ID, &csr), &csr)).await;
    assert_eq!((answer.status, answer.code().as_str()), (StatusCode::FORBIDDEN, "tenant_removed"), "{}", answer.text());
    let writes: Vec<_> = fake.requests().into_iter().filter(|r| r.method != Method::GET).collect();
    assert!(writes.is_empty(), "nothing created or stored: {writes:?}");
}

// ---------------------------------------------------------------------------------------------
// Consumer side: `liqo-auth renew` and `peer` on an identity that is due.

mod consumer {
    use std::path::{Path, PathBuf};

    use clap::Parser as _;
    use liqo_auth::cli::{Args, Command};
    use liqo_auth::client::peer::{self, PeerStatus};
    use liqo_auth::client::renew::{self, RenewStatus, EXIT_REFUSED, EXIT_UNREACHABLE};
    use liqo_auth::config::{Access, BackendConfig};
    use liqo_auth::error::error_chain;
    use liqo_auth::pki::CertificateSummary;

    use crate::support::server::TestServer;

    pub const PROVIDER: &str = "provider-r1";
    pub const CONSUMER: &str = "consumer-r1";

    /// A TLS provider on the local backend in `dir` (restartable on the same port).
    pub async fn provider(dir: &Path, extra: &[&str]) -> TestServer {
        let mut flags = vec!["--cluster-id", PROVIDER, "--cluster-name", "provider", "--enable-tls"];
        let cert = format!("--cert-path={}", dir.join("serving.crt").display());
        let key = format!("--key-path={}", dir.join("serving.key").display());
        flags.extend([cert.as_str(), key.as_str(), "--generate-missing"]);
        flags.extend_from_slice(extra);
        TestServer::start_in(&dir.join("data"), &flags).await
    }

    /// `liqo-auth <argv>` parsed as the binary parses it.
    pub fn command(argv: &[&str]) -> Command {
        let mut full = vec!["liqo-auth"];
        full.extend_from_slice(argv);
        Args::try_parse_from(&full).unwrap_or_else(|e| panic!("{argv:?}: {e}")).command
    }

    /// Peers `consumer` (a local data dir) with `server`, writing `kubeconfig`.
    pub async fn peer_with(
        server: &TestServer,
        consumer: &Path,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> peer::PeerOutcome {
        let token = server.data_dir().join("token");
        let url = server.https_url();
        let mut argv = vec![
            "peer",
            "--auth-url",
            &url,
            "--token-file",
            token.to_str().unwrap(),
            "--ca-hash",
            server.pin.as_deref().unwrap(),
            "--backend",
            "local",
            "--data-dir",
            consumer.to_str().unwrap(),
            "--cluster-id",
            CONSUMER,
            "--cluster-name",
            "consumer",
            "--kubeconfig-out",
            kubeconfig.to_str().unwrap(),
            "--timeout",
            "20s",
        ];
        argv.extend_from_slice(extra);
        let Command::Peer(args) = command(&argv) else { unreachable!() };
        let (config, options) = args.into_options().expect("peer flags");
        config.open(Access::Create).await.expect("the consumer's own state");
        let backend = config.open(Access::Existing).await.unwrap().peer_backend();
        peer::run(options, backend).await.unwrap_or_else(|e| panic!("peer: {}", error_chain(&e)))
    }

    pub async fn renew_run(consumer: &Path, extra: &[&str]) -> Result<renew::RenewOutcome, renew::RenewClientError> {
        let mut argv = vec!["renew", "--backend", "local", "--data-dir", consumer.to_str().unwrap()];
        argv.extend_from_slice(extra);
        let Command::Renew(args) = command(&argv) else { unreachable!() };
        let (config, options) = args.into_options().expect("renew flags");
        let backend = config.open(Access::Existing).await.unwrap().peer_backend();
        renew::run(&options, backend.identities.as_ref(), backend.render_kubeconfig).await
    }

    pub fn kubeconfig_certificate(path: &Path) -> String {
        let file = kube::config::Kubeconfig::read_from(path).expect("kubeconfig");
        let data = file.auth_infos[0].auth_info.as_ref().unwrap().client_certificate_data.clone().unwrap();
        crate::support::pki::unb64(&data)
    }

    pub fn stored_on_provider(server: &TestServer) -> String {
        // The provider's record of the peer (`peers/<id>.json` on the local backend).
        let path: PathBuf = server.data_dir().join("peers").join(format!("{CONSUMER}.json"));
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        record["certificate"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn renew_is_a_no_op_before_the_fraction_and_renews_when_forced_keeping_the_kubeconfig_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let server = provider(dir.path(), &[]).await;
        let consumer = dir.path().join("consumer");
        let kubeconfig = dir.path().join("provider.kubeconfig");
        let issued = peer_with(&server, &consumer, &kubeconfig, &[]).await;
        assert_eq!(issued.status, PeerStatus::Issued);
        let pin = server.pin.clone().unwrap();

        let not_due = renew_run(&consumer, &["--ca-hash", &pin]).await.expect("not due is no error");
        assert_eq!(not_due.status, RenewStatus::NotDue);
        assert_eq!(not_due.certificate_serial, issued.certificate_serial);
        assert!(not_due.renew_at > liqo_auth::pki::unix_now());

        let renewed = renew_run(&consumer, &["--ca-hash", &pin, "--force"])
            .await
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        assert_eq!(renewed.status, RenewStatus::Renewed);
        assert_ne!(renewed.certificate_serial, issued.certificate_serial);
        let on_provider = stored_on_provider(&server);
        let summary = CertificateSummary::from_pem(on_provider.as_bytes()).unwrap();
        assert_eq!(summary.serial, renewed.certificate_serial, "the provider stored the renewed certificate");
        assert_eq!(kubeconfig_certificate(&kubeconfig), on_provider, "the kubeconfig holds the new certificate");
        let record = consumer.join("identities").join(PROVIDER).join("identity.json");
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
        assert_eq!(
            record["certificate"].as_str().unwrap(),
            on_provider,
            "the record holds key and certificate together"
        );

        // A rekey gives a new key; the provider stores its certificate.
        let rekeyed = renew_run(&consumer, &["--ca-hash", &pin, "--force", "--rekey", "ed25519"]).await.expect("rekey");
        assert_ne!(rekeyed.certificate_serial, renewed.certificate_serial);
        let new_key =
            std::fs::read_to_string(consumer.join("identities").join(PROVIDER).join("private-key.pem")).unwrap();
        assert!(liqo_auth::client::key::key_matches_certificate(&new_key, &stored_on_provider(&server)));
    }

    #[tokio::test]
    async fn peer_renews_an_identity_that_is_due_instead_of_reporting_it() {
        let dir = tempfile::tempdir().unwrap();
        // 10 s certificates (11 s lifetime): due 6.3 s after issuance.
        let server = provider(dir.path(), &["--certificate-ttl", "10s"]).await;
        let consumer = dir.path().join("consumer");
        let kubeconfig = dir.path().join("k");
        let first = peer_with(&server, &consumer, &kubeconfig, &[]).await;
        let again = peer_with(&server, &consumer, &kubeconfig, &[]).await;
        assert_eq!(again.status, PeerStatus::Existing, "not due yet: reported");
        tokio::time::sleep(std::time::Duration::from_secs(7)).await;
        let renewed = peer_with(&server, &consumer, &kubeconfig, &[]).await;
        assert_eq!(renewed.status, PeerStatus::Renewed);
        assert_ne!(renewed.certificate_serial, first.certificate_serial);
        assert_eq!(kubeconfig_certificate(&kubeconfig), stored_on_provider(&server));
    }

    #[tokio::test]
    async fn identity_list_shows_the_stored_identity_and_identity_remove_deletes_it_and_its_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let server = provider(dir.path(), &[]).await;
        let consumer = dir.path().join("consumer");
        let kubeconfig = dir.path().join("provider.kubeconfig");
        let issued = peer_with(&server, &consumer, &kubeconfig, &[]).await;
        let run = |argv: Vec<&'static str>| {
            let consumer = consumer.clone();
            async move {
                let mut full: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
                full.extend(["--backend".into(), "local".into(), "--data-dir".into(), consumer.display().to_string()]);
                let refs: Vec<&str> = full.iter().map(String::as_str).collect();
                let Command::Identity(command) = command(&refs) else { unreachable!() };
                let (config, action) = command.into_options();
                let backend = config.open(Access::Existing).await.unwrap().peer_backend();
                let mut out = Vec::new();
                liqo_auth::identity(action, backend.identities.as_ref(), &mut out).await.expect("identity command");
                String::from_utf8(out).unwrap()
            }
        };
        let listed: serde_json::Value =
            serde_json::from_str(&run(vec!["identity", "list", "--output", "json"]).await).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 1);
        assert_eq!(listed[0]["provider_id"], PROVIDER);
        assert_eq!(listed[0]["certificate_serial"], issued.certificate_serial.as_str());
        assert_eq!(listed[0]["not_after"], liqo_auth::pki::format_unix(issued.certificate_not_after).as_str());
        assert_eq!(listed[0]["auth_url"], server.https_url().as_str());
        assert!(run(vec!["identity", "list"]).await.contains(PROVIDER));

        let removed = run(vec!["identity", "remove", PROVIDER]).await;
        assert!(removed.contains("identity record") && removed.contains("kubeconfig"), "{removed}");
        assert!(!kubeconfig.exists(), "the kubeconfig is removed with the identity");
        assert!(!consumer.join("identities").join(PROVIDER).exists());
        assert!(run(vec!["identity", "list"]).await.contains("No identities stored"));
    }

    #[tokio::test]
    async fn on_kubernetes_renew_replaces_the_identity_secret_in_place_and_identity_remove_deletes_it() {
        use crate::support::fake_apiserver::FakeApiServer;
        use liqo_auth::config::Connection;
        let dir = tempfile::tempdir().unwrap();
        let server = provider(dir.path(), &[]).await;
        let fake = FakeApiServer::start().await;
        fake.insert_json("/api/v1/namespaces", serde_json::json!({"metadata": {"name": "liqo"}}));
        fake.insert_json(
            "/api/v1/namespaces/liqo/configmaps",
            serde_json::json!({"metadata": {"name": "liqo-clusterid-configmap"}, "data": {"CLUSTER_ID": CONSUMER, "CLUSTER_NAME": "consumer"}}),
        );
        let url = server.https_url();
        let token = server.data_dir().join("token");
        let pin = server.pin.clone().unwrap();
        let kube = ["--backend", "kubernetes", "--namespace", "liqo"];
        let open = |config: BackendConfig| {
            let fake_config = fake.kube_config();
            async move {
                let config = match config {
                    BackendConfig::Kubernetes { namespace, request_timeout, .. } => BackendConfig::Kubernetes {
                        namespace,
                        request_timeout,
                        connection: Connection::Config(Box::new(fake_config)),
                    },
                    other => other,
                };
                config.open(Access::Existing).await.unwrap().peer_backend()
            }
        };
        let mut argv = vec!["peer", "--auth-url", &url, "--token-file", token.to_str().unwrap(), "--ca-hash", &pin];
        argv.extend(kube);
        let Command::Peer(args) = command(&argv) else { unreachable!() };
        let (config, options) = args.into_options().unwrap();
        let issued = peer::run(options, open(config).await).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        let identity_secrets = || {
            fake.list_json("secrets")
                .into_iter()
                .filter(|s| s["metadata"]["labels"]["discovery.liqo.io/local-identity"] == "true")
                .collect::<Vec<_>>()
        };
        let before = identity_secrets();
        assert_eq!(before.len(), 1);
        assert_eq!(before[0]["metadata"]["annotations"]["auth.liqo.io/auth-url"], url.as_str());

        let mut argv = vec!["renew", "--force", "--ca-hash", &pin];
        argv.extend(kube);
        let Command::Renew(args) = command(&argv) else { unreachable!() };
        let (config, options) = args.into_options().unwrap();
        let backend = open(config).await;
        fake.clear_requests();
        let renewed = renew::run(&options, backend.identities.as_ref(), backend.render_kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        // Only what deploy/consumer/rbac.yaml grants: list namespaces, list and update Secrets
        // inside them (never a cluster-wide Secret list).
        for request in fake.requests() {
            let allowed = match request.method {
                http::Method::GET => {
                    request.path == "/api/v1/namespaces"
                        || request.path.ends_with("/secrets") && request.path.starts_with("/api/v1/namespaces/")
                }
                http::Method::PUT => request.path.contains("/secrets/"),
                _ => false,
            };
            assert!(allowed, "{} {} is not granted to the agent", request.method, request.path);
        }
        assert_ne!(renewed.certificate_serial, issued.certificate_serial);
        let after = identity_secrets();
        assert_eq!(after.len(), 1, "replaced in place, not a second Secret");
        assert_eq!(after[0]["metadata"]["name"], before[0]["metadata"]["name"]);
        assert_ne!(after[0]["metadata"]["resourceVersion"], before[0]["metadata"]["resourceVersion"]);
        let cert = crate::support::pki::unb64(after[0]["data"]["certificate"].as_str().unwrap());
        assert_eq!(cert, stored_on_provider(&server));
        let expire = after[0]["metadata"]["annotations"]["discovery.liqo.io/certificate-expire-time"].as_str().unwrap();
        assert_eq!(expire, renewed.certificate_not_after.to_string());

        let mut argv = vec!["identity", "remove", PROVIDER];
        argv.extend(kube);
        let Command::Identity(command) = command(&argv) else { unreachable!() };
        let (config, action) = command.into_options();
        let backend = open(config).await;
        let mut out = Vec::new();
        liqo_auth::identity(action, backend.identities.as_ref(), &mut out).await.unwrap();
        assert!(identity_secrets().is_empty(), "{}", String::from_utf8_lossy(&out));
    }

    #[tokio::test]
    async fn renew_exits_with_refused_for_a_removed_tenant_and_unreachable_for_a_stopped_provider() {
        let dir = tempfile::tempdir().unwrap();
        let server = provider(dir.path(), &[]).await;
        let consumer = dir.path().join("consumer");
        peer_with(&server, &consumer, &dir.path().join("k"), &[]).await;
        let pin = server.pin.clone().unwrap();

        let backend = BackendConfig::Local { data_dir: server.data_dir().to_owned() };
        let remove = liqo_auth::TenantAction::Remove {
            cluster_id: CONSUMER.into(),
            delete_namespace: false,
            ignore_not_found: false,
            dry_run: false,
            output: liqo_auth::Output::Text,
        };
        liqo_auth::tenant(&backend, remove, &mut Vec::new()).await.expect("tenant remove");
        let refused = renew_run(&consumer, &["--ca-hash", &pin, "--force"]).await.expect_err("refused");
        assert_eq!(refused.exit_code(), EXIT_REFUSED, "{}", error_chain(&refused));
        assert!(error_chain(&refused).contains("tenant_removed"), "{}", error_chain(&refused));

        server.stop().await;
        let unreachable =
            renew_run(&consumer, &["--ca-hash", &pin, "--force", "--timeout", "2s"]).await.expect_err("down");
        assert_eq!(unreachable.exit_code(), EXIT_UNREACHABLE, "{}", error_chain(&unreachable));
    }
}

// ---------------------------------------------------------------------------------------------
// `liqo-auth agent` end to end: local backend and local CA with short-lived certificates.

mod agent {
    use std::time::Duration;

    use liqo_auth::cli::Command;
    use liqo_auth::client::agent;
    use liqo_auth::config::Access;
    use liqo_auth::pki::CertificateSummary;
    use tokio::net::TcpListener;

    use super::consumer::{
        command, kubeconfig_certificate, peer_with, provider, stored_on_provider, CONSUMER, PROVIDER,
    };

    fn consumer_certificate(consumer: &std::path::Path) -> String {
        let record = consumer.join("identities").join(PROVIDER).join("identity.json");
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
        record["certificate"].as_str().unwrap().to_owned()
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let text = crate::support::server::http1_request(addr, "GET", path, "").await;
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    }

    #[tokio::test]
    async fn the_agent_renews_before_expiry_across_a_provider_restart_and_the_kubeconfig_keeps_authenticating() {
        let dir = tempfile::tempdir().unwrap();
        let api_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("https://{}", api_listener.local_addr().unwrap());
        // 30 s certificates: due at 2/3 ± 10 % of their 33 s lifetime (backdated 3 s), so 16.8
        // to 21.2 s after issuance. The provider is down from 12 s to 22 s: whenever the jitter
        // puts the renewal, the agent meets a stopped provider and has to retry.
        let ttl = ["--certificate-ttl", "30s", "--advertise-api-server-address", &api_url];
        let server = provider(dir.path(), &ttl).await;
        let users = crate::peer::start_api_server(api_listener, server.data_dir()).await;
        let consumer = dir.path().join("consumer");
        let kubeconfig = dir.path().join("provider.kubeconfig");
        peer_with(&server, &consumer, &kubeconfig, &[]).await;
        let first_pem = consumer_certificate(&consumer);
        let first = CertificateSummary::from_pem(first_pem.as_bytes()).unwrap();
        assert!(first.not_after - first.not_before <= 33, "a short-lived certificate");
        let issued_at = std::time::Instant::now();
        let pin = server.pin.clone().unwrap();
        let port = server.addr.port().to_string();
        let address = format!("127.0.0.1:{port}");

        let Command::Agent(args) = command(&[
            "agent",
            "--backend",
            "local",
            "--data-dir",
            consumer.to_str().unwrap(),
            "--ca-hash",
            &pin,
            "--metrics-address",
            "127.0.0.1:0",
            "--attempt-timeout",
            "15s",
            "--rescan-interval",
            "1s",
        ]) else {
            unreachable!()
        };
        let (config, options) = args.into_options().expect("agent flags");
        let backend = config.open(Access::Existing).await.unwrap().peer_backend();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let started = agent::start(options, backend, async {
            let _ = stopped.await;
        })
        .await
        .expect("the agent starts");
        let admin = started.admin_address.expect("admin listener");
        let task = tokio::spawn(started.run());
        let (status, _) = get(admin, "/healthz").await;
        assert_eq!(status, 200);

        // The provider goes away before the certificate is due and comes back on the same
        // address while the agent is retrying.
        tokio::time::sleep(Duration::from_secs(12).saturating_sub(issued_at.elapsed())).await;
        assert_eq!(consumer_certificate(&consumer), stored_on_provider(&server), "not renewed before it is due");
        let data_dir = server.data_dir().to_owned();
        server.stop().await;
        tokio::time::sleep(Duration::from_secs(22).saturating_sub(issued_at.elapsed())).await;
        assert_eq!(consumer_certificate(&consumer), first_pem, "no renewal while the provider is down");
        let restarted_at = liqo_auth::pki::unix_now();
        let mut flags = vec!["--cluster-id", PROVIDER, "--cluster-name", "provider", "--enable-tls"];
        let cert = format!("--cert-path={}", dir.path().join("serving.crt").display());
        let key = format!("--key-path={}", dir.path().join("serving.key").display());
        flags.extend([cert.as_str(), key.as_str(), "--generate-missing", "--address", &address]);
        flags.extend_from_slice(&ttl);
        let server = crate::support::server::TestServer::start_in(&data_dir, &flags).await;
        assert_eq!(server.pin.as_deref(), Some(pin.as_str()), "the same serving certificate after the restart");

        // A new certificate is in place before the first one expires.
        let renewed = loop {
            let current = CertificateSummary::from_pem(consumer_certificate(&consumer).as_bytes()).unwrap();
            if current.serial != first.serial {
                break current;
            }
            assert!(liqo_auth::pki::unix_now() < first.not_after, "the first certificate expired before renewal");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(liqo_auth::pki::unix_now() < first.not_after, "renewed before the first certificate expired");
        assert!(renewed.not_after > first.not_after);
        assert!(renewed.not_before + 3 >= restarted_at, "issued by the restarted provider");
        assert_eq!(consumer_certificate(&consumer), stored_on_provider(&server));

        // The kubeconfig was replaced too and authenticates with the new certificate (mTLS).
        assert_eq!(
            CertificateSummary::from_pem(kubeconfig_certificate(&kubeconfig).as_bytes()).unwrap().serial,
            renewed.serial
        );
        let file = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default()).await.unwrap();
        let client = kube::Client::try_from(config).unwrap();
        client.apiserver_version().await.expect("GET /version with the renewed certificate");
        assert!(users.lock().unwrap().iter().any(|cn| cn == CONSUMER));

        let (status, metrics) = get(admin, "/metrics").await;
        assert_eq!(status, 200);
        let gauge =
            format!("liqo_auth_identity_expiration_timestamp_seconds{{provider=\"{PROVIDER}\"}} {}", renewed.not_after);
        assert!(metrics.contains(&gauge), "{metrics}");
        assert!(
            metrics.contains(&format!("liqo_auth_identity_renewals_total{{provider=\"{PROVIDER}\",result=\"ok\"}}")),
            "{metrics}"
        );
        assert_eq!(get(admin, "/readyz").await.0, 200);

        // SIGTERM (here: the shutdown future) stops it cleanly, admin listener included.
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops promptly").unwrap();
        assert!(tokio::net::TcpStream::connect(admin).await.is_err(), "the admin listener is closed");
        server.stop().await;
    }
}
