//! The Kubernetes backend against the fake API server over real HTTP: objects, idempotence,
//! token lifecycle, concurrency across replicas, fault injection and CSR refusals.

use std::time::Duration;

use crate::support::app::{certificate_body, get, post_json, send, Answer};
use crate::support::fake_apiserver::{FakeApiServer, SignerMode};
use crate::support::pki::{self, KeyType};
use crate::support::server;
use axum::http::StatusCode;
use axum::Router;
use http::Method;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::support::liqo::{seed_liqo_cluster as seed, NS};

/// A fake cluster with Liqo's namespace, cluster-ID ConfigMap and basic peering ClusterRole.
async fn cluster() -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    seed(&fake);
    fake
}

/// One service instance (router) over the fake, built exactly as `serve` builds it.
async fn instance(fake: &FakeApiServer, extra: &[&str]) -> Router {
    let mut argv =
        vec!["liqo-auth", "serve", "--namespace", NS, "--kube-request-timeout", "1s", "--signing-timeout", "5s"];
    argv.extend_from_slice(extra);
    server::router(&server::serve_config_over(fake, &argv)).await
}

async fn token(fake: &FakeApiServer) -> String {
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    let secret = api.get("auth-token").await.expect("auth-token exists");
    String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap()
}

async fn issue(router: &Router, token: &str, id: &str, csr: &str, origin: Option<&str>) -> Answer {
    send(router, post_json("/identity/certificate", certificate_body(id, "rome", token, csr, origin))).await
}

#[tokio::test]
async fn full_issuance_creates_exactly_the_reference_objects() {
    let fake = cluster().await;
    let router = instance(&fake, &["--advertise-api-server-address", "api.provider.example:6443"]).await;
    let token = token(&fake).await;
    assert_eq!(token.len(), 128, "the token Secret is created at start with 128 hex characters");
    let key = pki::key(KeyType::P256);
    let csr = pki::liqo_csr(&key, "peer-1");

    fake.clear_requests();
    let answer = issue(&router, &token, "peer-1", &csr, Some("origin-token-1")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let first_calls = fake.requests();
    let body = answer.json();
    let namespace = body["namespace"].as_str().unwrap().to_owned();
    assert!(namespace.starts_with("liqo-tenant-rome-"));
    assert_eq!(body["apiServerUrl"], "https://api.provider.example:6443");

    // The tenant namespace, labelled so Liqo finds it.
    let ns = fake.get_json("namespaces", None, &namespace).expect("tenant namespace");
    assert_eq!(ns["metadata"]["labels"]["discovery.liqo.io/cluster-id"], "peer-1");
    assert_eq!(ns["metadata"]["labels"]["discovery.liqo.io/tenant-namespace"], "true");
    // Stored certificate (3.6).
    let stored = fake.get_json("secrets", Some(&namespace), "liqo-remote-certificate").expect("stored certificate");
    assert_eq!(stored["metadata"]["labels"]["discovery.liqo.io/cluster-id"], "peer-1");
    let cert_pem = pki::unb64(stored["data"]["certificate"].as_str().unwrap());
    assert_eq!(pki::b64(&cert_pem), body["certificate"].as_str().unwrap());
    assert!(pki::unb64(stored["data"]["csr"].as_str().unwrap()).contains("CERTIFICATE REQUEST"));
    // The certificate comes from the cluster signer and is for the CSR's key.
    let summary = liqo_auth::pki::CertificateSummary::from_pem(cert_pem.as_bytes()).unwrap();
    use rcgen::PublicKeyData as _;
    assert_eq!(summary.spki_der, key.subject_public_key_info());
    assert_eq!(summary.common_name.as_deref(), Some("peer-1"));
    // The CSR object is gone once the certificate is stored.
    let leftover = fake.list_json("certificatesigningrequests");
    let deletes: Vec<_> = fake.requests().into_iter().filter(|r| r.method == Method::DELETE).collect();
    assert!(leftover.is_empty(), "{leftover:?} deletes {deletes:?}");
    // RoleBinding (3.7), subject = CN.
    let binding =
        fake.get_json("rolebindings", Some(&namespace), "liqo-binding-liqo-remote-peering-basic").expect("binding");
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "peer-1"}])
    );
    assert_eq!(
        binding["roleRef"],
        serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "liqo-remote-peering-basic"})
    );
    let role = fake.get_json("clusterroles", None, "liqo-remote-peering-basic").unwrap();
    assert_eq!(binding["metadata"]["ownerReferences"][0]["uid"], role["metadata"]["uid"]);
    assert_eq!(binding["metadata"]["ownerReferences"][0]["kind"], "ClusterRole");
    // Origin token (3.8).
    let origin = fake.get_json("secrets", Some(NS), "remote-token-peer-1").expect("origin token");
    assert_eq!(origin["metadata"]["labels"]["discovery.liqo.io/cluster-id"], "peer-1");
    assert_eq!(origin["metadata"]["labels"]["discovery.liqo.io/auth-token"], "");
    assert_eq!(pki::unb64(origin["data"]["token"].as_str().unwrap()), "origin-token-1");

    fake.clear_requests();
    let repeat = issue(&router, &token, "peer-1", &csr, Some("origin-token-1")).await;
    assert_eq!(repeat.status, StatusCode::ACCEPTED);
    assert_eq!(repeat.json()["certificate"], body["certificate"]);
    let repeat_calls = fake.requests();
    let show = |calls: &[crate::support::fake_apiserver::RecordedRequest]| {
        calls.iter().map(|r| format!("{} {}?{}", r.method, r.path, r.query)).collect::<Vec<_>>().join("\n  ")
    };
    println!(
        "API requests: first issuance {} (reference: about 8 and a watch), repeat {} (reference: 2)\n first:\n  {}\n repeat:\n  {}",
        first_calls.len(),
        repeat_calls.len(),
        show(&first_calls),
        show(&repeat_calls)
    );
    // What rarely changes comes from the caches; a repeat writes nothing that is already right.
    assert!(
        first_calls.len() <= 8,
        "first issuance used {} API requests:\n  {}",
        first_calls.len(),
        show(&first_calls)
    );
    assert!(repeat_calls.len() <= 2, "repeat used {} API requests:\n  {}", repeat_calls.len(), show(&repeat_calls));
    assert!(repeat_calls.iter().all(|r| r.method == Method::GET), "a repeat only reads: {}", show(&repeat_calls));
}

#[tokio::test]
async fn a_second_key_for_the_same_cluster_gets_409() {
    let fake = cluster().await;
    let router = instance(&fake, &[]).await;
    let token = token(&fake).await;
    let first = issue(&router, &token, "peer-1", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-1"), None).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let second = issue(&router, &token, "peer-1", &pki::liqo_csr(&pki::key(KeyType::Ed25519), "peer-1"), None).await;
    assert_eq!(second.status, StatusCode::CONFLICT);
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn the_token_is_recreated_after_deletion_rotated_by_an_edit_and_repaired_when_empty() {
    let fake = cluster().await;
    let router = instance(&fake, &[]).await;
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    let original = token(&fake).await;

    api.delete("auth-token", &Default::default()).await.unwrap();
    eventually("a new auth-token Secret", || async { api.get_opt("auth-token").await.unwrap().is_some() }).await;
    let recreated = token(&fake).await;
    assert_ne!(recreated, original);
    let r = &router;
    let (recreated_ref, csr_ref) = (&recreated, &csr);
    eventually("the new token to authenticate", || async move {
        issue(r, recreated_ref, "peer-1", csr_ref, None).await.status == StatusCode::ACCEPTED
    })
    .await;
    assert_eq!(
        issue(&router, &original, "peer-1", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-1"), None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // A manual edit rotates it.
    let mut secret = api.get("auth-token").await.unwrap();
    secret.data = Some([("token".to_owned(), k8s_openapi::ByteString(b"operator-chosen-token".to_vec()))].into());
    api.replace("auth-token", &Default::default(), &secret).await.unwrap();
    let csr2 = pki::liqo_csr(&pki::key(KeyType::P256), "peer-2");
    let csr2_ref = &csr2;
    eventually("the edited token to authenticate", || async move {
        issue(r, "operator-chosen-token", "peer-2", csr2_ref, None).await.status == StatusCode::ACCEPTED
    })
    .await;

    // A Secret without a usable token never authenticates anyone and is repaired.
    let mut secret = api.get("auth-token").await.unwrap();
    secret.data = Some([("token".to_owned(), k8s_openapi::ByteString(Vec::new()))].into());
    api.replace("auth-token", &Default::default(), &secret).await.unwrap();
    eventually("the repaired token", || async { token(&fake).await.len() == 128 }).await;
    let body = certificate_body("peer-3", "rome", "", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-3"), None);
    assert_eq!(send(&router, post_json("/identity/certificate", body)).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn two_replicas_racing_twenty_requests_for_one_cluster_issue_one_certificate() {
    let fake = cluster().await;
    let a = instance(&fake, &[]).await;
    let b = instance(&fake, &[]).await;
    let token = token(&fake).await;
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    fake.set_signing_delay(Duration::from_millis(100));
    fake.clear_requests();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let router = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (token, csr) = (token.clone(), csr.clone());
        tasks.push(tokio::spawn(async move { issue(&router, &token, "peer-1", &csr, None).await }));
    }
    let mut certificates = std::collections::BTreeSet::new();
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
        certificates.insert(answer.json()["certificate"].as_str().unwrap().to_owned());
    }
    assert_eq!(certificates.len(), 1, "every answer carries the one certificate");
    let approvals =
        fake.requests().iter().filter(|r| r.method == Method::PATCH && r.path.ends_with("/approval")).count();
    let names: std::collections::BTreeSet<_> = fake
        .requests()
        .iter()
        .filter(|r| r.path.contains("certificatesigningrequests/"))
        .map(|r| r.path.split('/').nth(5).unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names.len(), 1, "one CSR object name for the (cluster, CSR) pair: {names:?}");
    assert!(approvals <= 2, "approved at most once per replica, got {approvals}");
}

#[tokio::test]
async fn a_fault_at_any_api_step_gives_503_and_the_next_request_succeeds() {
    // Every request of a first issuance (tenant namespaces and ClusterRoles come from caches;
    // the CSR wait is bounded by --signing-timeout, not by the request timeout).
    let steps: [(Option<Method>, &str); 6] = [
        (Some(Method::POST), "/api/v1/namespaces?"),
        (Some(Method::POST), "/certificatesigningrequests?"),
        (Some(Method::PATCH), "/approval"),
        (Some(Method::POST), "/secrets?"),
        (Some(Method::POST), "/rolebindings"),
        (Some(Method::POST), "/namespaces/liqo/secrets"),
    ];
    let fake = cluster().await;
    let router = instance(&fake, &[]).await;
    let token = token(&fake).await;
    for (round, (method, path)) in steps.iter().enumerate() {
        for (fault, kind) in ["500", "timeout", "conflict", "drop"].iter().enumerate() {
            let id = format!("peer-{round}-{fault}");
            let csr = pki::liqo_csr(&pki::key(KeyType::P256), &id);
            match *kind {
                "500" => fake.fail_next(method.clone(), path, 500, "InternalError"),
                "timeout" => fake.delay_next(method.clone(), path, Duration::from_millis(1500)),
                "conflict" => fake.fail_next(method.clone(), path, 409, "Conflict"),
                _ => fake.drop_next(method.clone(), path),
            }
            let answer = issue(&router, &token, &id, &csr, Some("origin")).await;
            // A conflict on a step that re-reads and retries by itself may already succeed.
            let recovered_in_place = *kind == "conflict" && answer.status == StatusCode::ACCEPTED;
            if !recovered_in_place {
                assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{kind} at {path}: {}", answer.code());
                assert!(answer.headers.contains_key("retry-after"));
            }
            let retry = issue(&router, &token, &id, &csr, Some("origin")).await;
            assert_eq!(retry.status, StatusCode::ACCEPTED, "retry after {kind} at {path}: {}", retry.text());
        }
    }
}

#[tokio::test]
async fn a_denied_csr_fails_fast_and_a_later_retry_can_succeed() {
    let fake = cluster().await;
    let router = instance(&fake, &[]).await;
    let token = token(&fake).await;
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    fake.set_signer_mode(SignerMode::Deny);
    let started = std::time::Instant::now();
    let answer = issue(&router, &token, "peer-1", &csr, None).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.code(), "signer_refused");
    assert!(started.elapsed() < Duration::from_secs(3), "no waiting for the signing timeout");
    assert!(fake.list_json("certificatesigningrequests").is_empty(), "the refused object is removed");
    fake.set_signer_mode(SignerMode::Sign);
    assert_eq!(issue(&router, &token, "peer-1", &csr, None).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_issued_certificate_authenticates_to_the_api_server() {
    let fake = FakeApiServer::start_tls(true).await;
    seed(&fake);
    let router = instance(&fake, &[]).await;
    let token = token(&fake).await;
    let key = pki::key(KeyType::P256);
    let answer = issue(&router, &token, "peer-1", &pki::liqo_csr(&key, "peer-1"), None).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let body = answer.json();
    assert_eq!(
        pki::unb64(body["apiServerCA"].as_str().unwrap()).trim(),
        fake.ca_pem().trim(),
        "apiServerCA is the client configuration's CA"
    );
    let identity = crate::support::fake_apiserver::ClientIdentity {
        cert_pem: pki::unb64(body["certificate"].as_str().unwrap()),
        key_pem: key.serialize_pem(),
    };
    let client = kube::Client::try_from(fake.kube_config_with_identity(Some(&identity))).unwrap();
    client.apiserver_version().await.expect("the issued identity authenticates");
    assert!(fake.authenticated_users().contains(&"peer-1".to_owned()));
}

#[tokio::test]
async fn the_local_ca_signer_signs_without_csr_objects() {
    let fake = cluster().await;
    let ca = pki::SigningCa::new("kubeadm-like ca");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
    std::fs::write(&cert, ca.pem()).unwrap();
    std::fs::write(&key, ca.key_pem()).unwrap();
    let router = instance(
        &fake,
        &["--signer", "local-ca", "--ca-cert", cert.to_str().unwrap(), "--ca-key", key.to_str().unwrap()],
    )
    .await;
    let token = token(&fake).await;
    fake.clear_requests();
    let answer = issue(&router, &token, "peer-1", &pki::liqo_csr(&pki::key(KeyType::Ed25519), "peer-1"), None).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    assert!(!fake.requests().iter().any(|r| r.path.contains("certificatesigningrequests")));
    let issued = pki::unb64(answer.json()["certificate"].as_str().unwrap());
    let (_, issued) = x509_parser::pem::parse_x509_pem(issued.as_bytes()).unwrap();
    let (_, mounted) = x509_parser::pem::parse_x509_pem(ca.pem().as_bytes()).unwrap();
    let mounted = mounted.parse_x509().unwrap();
    issued.parse_x509().unwrap().verify_signature(Some(mounted.public_key())).expect("signed by the mounted CA");
}

#[tokio::test]
async fn the_api_server_url_comes_from_the_control_plane_node_with_ipv6_bracketed() {
    let fake = cluster().await;
    fake.insert_json(
        "/api/v1/nodes",
        serde_json::json!({
            "metadata": {"name": "cp-1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "status": {"addresses": [{"type": "InternalIP", "address": "fd00::10"}, {"type": "Hostname", "address": "cp-1"}]}
        }),
    );
    fake.insert_json(
        "/api/v1/namespaces/liqo/configmaps",
        serde_json::json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "ROOT-CA-PEM"}}),
    );
    let router = instance(&fake, &[]).await;
    let token = token(&fake).await;
    let answer = issue(&router, &token, "peer-1", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-1"), None).await;
    let body = answer.json();
    assert_eq!(body["apiServerUrl"], "https://[fd00::10]:6443");
    assert_eq!(
        pki::unb64(body["apiServerCA"].as_str().unwrap()),
        "ROOT-CA-PEM",
        "kube-root-ca.crt when the client has no CA"
    );
}

#[tokio::test]
async fn readiness_follows_the_api_server() {
    let fake = cluster().await;
    let router = instance(&fake, &[]).await;
    assert_eq!(send(&router, get("/readyz")).await.status, StatusCode::OK);
    fake.fail_next(None, "/version", 503, "ServiceUnavailable");
    assert_eq!(send(&router, get("/readyz")).await.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn start_fails_clearly_when_no_cluster_identity_can_be_read_or_created() {
    let fake = FakeApiServer::start().await;
    fake.insert_json("/api/v1/namespaces", serde_json::json!({"metadata": {"name": NS}}));
    // Without Liqo's ConfigMap the service creates one; here it may not.
    fake.fail_next(Some(Method::POST), "/configmaps", 403, "Forbidden");
    let config = server::serve_config_over(&fake, &["liqo-auth", "serve", "--namespace", NS]);
    let error = server::build(&config).await.err().expect("refused");
    // What the binary prints: the whole chain, which names the missing ConfigMap.
    let text = liqo_auth::error::error_chain(&error);
    assert!(text.contains("liqo-clusterid-configmap"), "{text}");
}

#[tokio::test]
async fn an_rbac_denial_of_the_service_itself_is_a_500_not_an_authorisation_failure() {
    let fake = cluster().await;
    let router = instance(&fake, &[]).await;
    let token = token(&fake).await;
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    fake.fail_next(Some(Method::POST), "/rolebindings", 403, "Forbidden");
    let answer = issue(&router, &token, "peer-1", &csr, None).await;
    assert_eq!((answer.status, answer.code().as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
    assert!(!answer.text().contains("Forbidden"), "no internals in the body");
    // Once the permission is there, the same request completes the half-done issuance.
    assert_eq!(issue(&router, &token, "peer-1", &csr, None).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn token_show_reads_the_token_from_the_cluster() {
    let fake = cluster().await;
    let _router = instance(&fake, &[]).await;
    let expected = token(&fake).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = crate::support::liqo::write_kubeconfig(&fake, dir.path());
    // Blocking child process on a separate thread: the fake answers on this test's runtime.
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_liqo-auth"))
            .args(["token", "show", "--namespace", NS, "--kubeconfig", kubeconfig.to_str().unwrap()])
            .env_remove("LIQO_AUTH_BACKEND")
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().last(), Some(expected.as_str()));
    assert!(!String::from_utf8_lossy(&output.stderr).contains(&expected), "the token only on stdout");
}

/// `liqo-tenant-<name>-<first 3 bytes of sha256(id)>`, as the service names it.
fn tenant_namespace_name(id: &str, name: &str) -> String {
    use sha2::Digest as _;
    format!("liqo-tenant-{name}-{}", hex::encode(&sha2::Sha256::digest(id.as_bytes())[..3]))
}

#[tokio::test]
async fn a_namespace_of_the_computed_name_owned_by_another_cluster_is_never_used() {
    let fake = cluster().await;
    let name = tenant_namespace_name("peer-1", "rome");
    // Left over from another peer whose ID collides on the 24-bit suffix, and one made by hand.
    fake.insert_json(
        "/api/v1/namespaces",
        serde_json::json!({"metadata": {"name": name, "labels": {"discovery.liqo.io/cluster-id": "someone-else"}}}),
    );
    let unlabelled = tenant_namespace_name("peer-2", "rome");
    fake.insert_json("/api/v1/namespaces", serde_json::json!({"metadata": {"name": unlabelled}}));
    let router = instance(&fake, &[]).await;
    let token = token(&fake).await;
    for (id, namespace) in [("peer-1", &name), ("peer-2", &unlabelled)] {
        let answer = issue(&router, &token, id, &pki::liqo_csr(&pki::key(KeyType::P256), id), Some("origin")).await;
        assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.text());
        assert_eq!(answer.code(), "tenant_namespace_taken");
        assert!(answer.text().contains(namespace.as_str()), "{}", answer.text());
        assert!(fake.get_json("secrets", Some(namespace), "liqo-remote-certificate").is_none(), "nothing planted");
        assert!(fake.list_json("rolebindings").is_empty(), "no RoleBinding in a foreign namespace");
        assert!(fake.get_json("secrets", Some(NS), &format!("remote-token-{id}")).is_none());
    }
    // The operator deletes the leftover namespace: the peer's retry succeeds in a fresh one.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(fake.client());
    namespaces.delete(&name, &Default::default()).await.expect("delete the leftover");
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let retry = issue(&router, &token, "peer-1", &csr, None).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{}", retry.text());
    let ns = fake.get_json("namespaces", None, &name).expect("recreated");
    assert_eq!(ns["metadata"]["labels"]["discovery.liqo.io/cluster-id"], "peer-1");
}

#[tokio::test]
async fn a_namespace_labelled_for_the_same_cluster_that_the_cache_missed_is_used() {
    let fake = cluster().await;
    let router = instance(&fake, &[]).await;
    let token = token(&fake).await;
    // Created by Liqo (or another replica) without the tenant label the cache selects on.
    let name = tenant_namespace_name("peer-1", "rome");
    fake.insert_json(
        "/api/v1/namespaces",
        serde_json::json!({"metadata": {"name": name, "labels": {"discovery.liqo.io/cluster-id": "peer-1"}}}),
    );
    let answer = issue(&router, &token, "peer-1", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-1"), None).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    assert_eq!(answer.json()["namespace"], name.as_str());
    assert!(fake.get_json("secrets", Some(&name), "liqo-remote-certificate").is_some());
}

#[tokio::test]
async fn readiness_waits_for_every_cache_to_complete_its_first_list() {
    let fake = cluster().await;
    // The ClusterRole cache's first list answers only after start-up stopped waiting (10 s).
    fake.delay_next(Some(Method::GET), "/clusterroles?", Duration::from_secs(12));
    let router = instance(&fake, &[]).await;
    let unready = send(&router, get("/readyz")).await;
    assert_eq!(unready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", unready.text());
    eventually("the cache syncs and /readyz turns ready", || async {
        send(&router, get("/readyz")).await.status == StatusCode::OK
    })
    .await;
}
