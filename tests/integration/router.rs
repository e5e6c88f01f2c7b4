//! Router tests: every row of the HTTP contract, through `http::router` with in-memory adapters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::support::app::{certificate_body, get, post_json, TestApp, API_SERVER_URL, PROVIDER_ID, PROVIDER_NAME};
use crate::support::pki::{self, KeyType};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use liqo_auth::adapter::memory::MemoryStore;
use liqo_auth::identity::port::{ApiServerInfo, CredentialStore, StoreError, StoredIdentity};
use liqo_auth::identity::{BearerToken, ClusterId, ClusterIdentity, SharedToken, TenantNamespace};

#[tokio::test]
async fn ids_returns_the_provider_identity_as_json() {
    let answer = TestApp::new().send(get("/ids")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), serde_json::json!({"clusterId": PROVIDER_ID, "clusterName": PROVIDER_NAME}));
    assert_eq!(answer.headers["content-type"], "application/json");
}

#[tokio::test]
async fn issues_a_certificate_with_the_reference_response_shape() {
    let app = TestApp::new();
    let key = pki::key(KeyType::P256);
    let answer = app.issue("peer-1", "rome", &pki::liqo_csr(&key, "peer-1")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let body = answer.json();
    assert!(body["namespace"].as_str().unwrap().starts_with("liqo-tenant-rome-"));
    assert!(pki::unb64(body["certificate"].as_str().unwrap()).starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(body["apiServerUrl"], API_SERVER_URL);
    assert_eq!(pki::unb64(body["apiServerCA"].as_str().unwrap()), app.ca.cert_pem());
    assert_eq!(
        body["aws"],
        serde_json::json!({"accessKeyID": "", "secretAccessKey": "", "region": "", "eksClusterID": "", "iamUserArn": ""})
    );
    assert_eq!(app.memory.grants(), vec![(body["namespace"].as_str().unwrap().to_owned(), "peer-1".to_owned())]);
}

#[tokio::test]
async fn accepts_any_content_type_and_unknown_keys() {
    let app = TestApp::new();
    let key = pki::key(KeyType::Ed25519);
    let mut body: serde_json::Value = serde_json::from_str(&certificate_body(
        "peer-1",
        "rome",
        app.token.expose(),
        &pki::liqo_csr(&key, "peer-1"),
        None,
    ))
    .unwrap();
    body["somethingNew"] = serde_json::json!({"nested": true});
    let request = Request::post("/identity/certificate")
        .header("content-type", "application/x-whatever")
        .body(Body::from(body.to_string()))
        .unwrap();
    assert_eq!(app.send(request).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_wrong_token_gets_401_without_echoing_it() {
    let app = TestApp::new();
    let key = pki::key(KeyType::P256);
    let body = certificate_body("peer-1", "rome", "wrong-token-value-123", &pki::liqo_csr(&key, "peer-1"), None);
    let answer = app.send(post_json("/identity/certificate", body)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "invalid_token");
    assert!(!answer.text().contains("wrong-token-value-123"));
    assert!(app.memory.grants().is_empty(), "nothing may happen before authentication");
}

#[tokio::test]
async fn an_empty_token_never_matches_even_an_empty_stored_one() {
    let app = TestApp::new();
    app.memory.set_token(SharedToken::from_stored(""));
    let key = pki::key(KeyType::P256);
    let body = certificate_body("peer-1", "rome", "", &pki::liqo_csr(&key, "peer-1"), None);
    assert_eq!(app.send(post_json("/identity/certificate", body)).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn disabled_authentication_accepts_an_empty_token() {
    let app = TestApp::new().without_authentication();
    let key = pki::key(KeyType::P256);
    let body = certificate_body("peer-1", "rome", "", &pki::liqo_csr(&key, "peer-1"), None);
    assert_eq!(app.send(post_json("/identity/certificate", body)).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn invalid_cluster_ids_and_names_get_400() {
    let app = TestApp::new();
    let key = pki::key(KeyType::P256);
    for (id, name) in [("Peer_1", "rome"), ("", "rome"), ("peer-1", "Rome"), ("peer-1", &"a".repeat(45))] {
        let answer = app.issue(id, name, &pki::liqo_csr(&key, id)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{id:?}/{name:?}");
        assert_eq!(answer.code(), "invalid_cluster");
    }
}

#[tokio::test]
async fn a_csr_for_another_common_name_gets_400() {
    let app = TestApp::new();
    let key = pki::key(KeyType::P256);
    let answer = app.issue("peer-1", "rome", &pki::liqo_csr(&key, PROVIDER_ID)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "csr_subject_mismatch");
}

#[tokio::test]
async fn dangerous_or_malformed_csrs_get_400_with_a_reason() {
    let app = TestApp::new();
    let key = pki::key(KeyType::P256);
    let san = rcgen::SanType::DnsName("kubernetes.default".try_into().unwrap());
    let cases = [
        pki::csr_with(&key, Some("peer-1"), Some("system:masters"), vec![]),
        pki::csr_with(&key, Some("peer-1"), Some("liqo.io"), vec![san]),
        pki::RSA1024_CSR.to_owned(),
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".to_owned(),
        format!("{0}{0}", pki::liqo_csr(&key, "peer-1")),
        pki::liqo_csr(&key, "peer-1").replace("-----END CERTIFICATE REQUEST-----", "-----END CERTIFICATE-----"),
        fixture_csr("rsa2048-sha1"),
        fixture_csr("p256-sha1"),
    ];
    for csr in cases {
        let answer = app.issue("peer-1", "rome", &csr).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
        assert_eq!(answer.code(), "invalid_csr");
        assert!(!answer.text().contains("BEGIN"), "no PEM in error bodies");
    }
    let mut body: serde_json::Value =
        serde_json::from_str(&certificate_body("peer-1", "rome", app.token.expose(), "x", None)).unwrap();
    body["certificateSigningRequest"] = "%%% not base64".into();
    let answer = app.send(post_json("/identity/certificate", body.to_string())).await;
    assert_eq!((answer.status, answer.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_csr"));
}

#[tokio::test]
async fn ecdsa_and_rsa_csrs_signed_with_sha384_or_sha512_are_issued() {
    let app = TestApp::new();
    let answer = app.issue("peer-1", "rome", &fixture_csr("p256-sha512")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    // The fixtures share CN=peer-1 but not their key: passing every CSR check, they reach the
    // conflict with the identity just issued.
    for fixture in ["p256-sha384", "p384-sha512", "rsa2048-sha512", "rsa2048-pss-sha256"] {
        let answer = app.issue("peer-1", "rome", &fixture_csr(fixture)).await;
        assert_eq!(answer.code(), "identity_exists", "{fixture} parsed and reached the conflict check");
    }
}

/// A test-only CSR from `tests/fixtures/` (see regenerate.sh there).
fn fixture_csr(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}.test-only.csr.pem", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn every_accepted_key_type_is_issued() {
    let app = TestApp::new();
    for (i, kind) in KeyType::ACCEPTED.into_iter().enumerate() {
        let id = format!("peer-{i}");
        let answer = app.issue(&id, "rome", &pki::liqo_csr(&pki::key(kind), &id)).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{kind:?}: {}", answer.text());
    }
}

#[tokio::test]
async fn repeating_the_same_csr_returns_the_stored_certificate() {
    let app = TestApp::new();
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let first = app.issue("peer-1", "rome", &csr).await.json();
    let second = app.issue("peer-1", "rome", &csr).await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(second.json()["certificate"], first["certificate"]);
}

#[tokio::test]
async fn a_different_key_for_an_issued_cluster_gets_409_with_how_to_reset() {
    let app = TestApp::new();
    app.issue("peer-1", "rome", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-1")).await;
    let answer = app.issue("peer-1", "rome", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-1")).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.code(), "identity_exists");
    assert!(answer.json()["message"].as_str().unwrap().contains("liqo-auth tenant remove peer-1"));
}

#[tokio::test]
async fn other_clusters_are_issued_independently() {
    let app = TestApp::new();
    assert_eq!(
        app.issue("cluster1", "one", &pki::liqo_csr(&pki::key(KeyType::P256), "cluster1")).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.issue("cluster1", "one", &pki::liqo_csr(&pki::key(KeyType::P256), "cluster1")).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.issue("cluster2", "two", &pki::liqo_csr(&pki::key(KeyType::P256), "cluster2")).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn the_origin_token_is_stored_only_for_the_key_holder() {
    let app = TestApp::new();
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let body = certificate_body("peer-1", "rome", app.token.expose(), &csr, Some("origin-1"));
    assert_eq!(app.send(post_json("/identity/certificate", body)).await.status, StatusCode::ACCEPTED);
    assert_eq!(app.memory.origin_token("peer-1").as_deref(), Some("origin-1"));
    // An impostor with the shared token but another key cannot overwrite it: the origin token belongs to whoever holds the identity's key.
    let impostor = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let body = certificate_body("peer-1", "rome", app.token.expose(), &impostor, Some("evil"));
    assert_eq!(app.send(post_json("/identity/certificate", body)).await.status, StatusCode::CONFLICT);
    assert_eq!(app.memory.origin_token("peer-1").as_deref(), Some("origin-1"));
}

#[tokio::test]
async fn invalid_or_empty_json_gets_400_without_echoing_values() {
    let app = TestApp::new();
    for body in ["", "{", "[1,2]", r#"{"destinationClusterToken": 12345678901}"#] {
        let answer = app.send(post_json("/identity/certificate", body.to_owned())).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(answer.code(), "invalid_json");
        assert!(!answer.text().contains("12345678901"));
    }
}

#[tokio::test]
async fn a_json_array_is_never_taken_as_positional_fields() {
    let app = TestApp::new();
    let csr = pki::b64(&pki::liqo_csr(&pki::key(KeyType::P256), "peer-1"));
    let token = app.token.expose();
    let top_level = serde_json::json!([{"clusterID": "peer-1", "clusterName": "rome"}, token, null, csr]);
    let nested = serde_json::json!({
        "cluster": ["peer-1", "rome"],
        "destinationClusterToken": token,
        "certificateSigningRequest": csr,
    });
    for body in [top_level.to_string(), format!("  \n{top_level}"), nested.to_string()] {
        let answer = app.send(post_json("/identity/certificate", body.clone())).await;
        assert_eq!((answer.status, answer.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_json"), "{body}");
        assert!(!answer.text().contains(token));
    }
    assert!(app.memory.grants().is_empty(), "nothing was issued");
    // `"cluster": null` is still the reference's empty identity (refused as an invalid cluster).
    let null = serde_json::json!({"cluster": null, "destinationClusterToken": token, "certificateSigningRequest": csr});
    let answer = app.send(post_json("/identity/certificate", null.to_string())).await;
    assert_eq!(answer.code(), "invalid_cluster");
}

#[tokio::test]
async fn credential_responses_are_never_cached() {
    let app = TestApp::new();
    let answer = app.issue("peer-1", "rome", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-1")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.headers["cache-control"], "no-store");
    let refused = app.send(post_json("/identity/certificate", "{}".into())).await;
    assert_eq!(refused.headers["cache-control"], "no-store", "errors of the route too");
}

#[tokio::test]
async fn a_liqo_v03_request_is_refused_clearly() {
    let app = TestApp::new();
    let body = serde_json::json!({"clusterID": "peer-1", "token": "x", "certificateSigningRequest": ""}).to_string();
    let answer = app.send(post_json("/identity/certificate", body)).await;
    assert_eq!((answer.status, answer.code().as_str()), (StatusCode::BAD_REQUEST, "unsupported_request_version"));
}

#[tokio::test]
async fn bodies_over_64_kib_get_413() {
    let app = TestApp::new();
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(70 * 1024));
    let answer = app.send(post_json("/identity/certificate", body)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_get_404_and_wrong_methods_405_in_the_envelope() {
    let app = TestApp::new();
    let answer = app.send(get("/identity")).await;
    assert_eq!((answer.status, answer.code().as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let answer = app.send(get("/identity/certificate")).await;
    assert_eq!((answer.status, answer.code().as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    assert_eq!(answer.headers["allow"], "POST");
    let answer = app.send(Request::post("/ids").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn wrong_case_or_trailing_slash_redirects_like_the_reference_router() {
    let app = TestApp::new();
    let answer = app.send(get("/ids/")).await;
    assert_eq!((answer.status, answer.headers["location"].to_str().unwrap()), (StatusCode::MOVED_PERMANENTLY, "/ids"));
    let answer = app.send(post_json("/Identity/Certificate", String::new())).await;
    assert_eq!(answer.status, StatusCode::TEMPORARY_REDIRECT);
}

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let app = TestApp::new();
    assert_eq!(app.send(get("/healthz")).await.status, StatusCode::OK);
    assert_eq!(app.send(get("/readyz")).await.status, StatusCode::OK);
}

/// A store that fails its next identity lookup as if the backend were down.
struct FlakyStore {
    inner: MemoryStore,
    fail_next: AtomicBool,
}

#[async_trait::async_trait]
impl CredentialStore for FlakyStore {
    async fn ensure_tenant_namespace(&self, cluster: &ClusterIdentity) -> Result<TenantNamespace, StoreError> {
        self.inner.ensure_tenant_namespace(cluster).await
    }
    async fn tenant_namespace(&self, cluster: &ClusterId) -> Result<Option<TenantNamespace>, StoreError> {
        self.inner.tenant_namespace(cluster).await
    }
    async fn stored_identity(
        &self,
        ns: &TenantNamespace,
        cluster: &ClusterId,
    ) -> Result<Option<StoredIdentity>, StoreError> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                operation: "reading identity".into(),
                source: "connection refused".into(),
            });
        }
        self.inner.stored_identity(ns, cluster).await
    }
    async fn create_identity(
        &self,
        ns: &TenantNamespace,
        cluster: &ClusterId,
        identity: &StoredIdentity,
    ) -> Result<(), StoreError> {
        self.inner.create_identity(ns, cluster, identity).await
    }
    async fn replace_identity(
        &self,
        ns: &TenantNamespace,
        cluster: &ClusterId,
        identity: &StoredIdentity,
        previous: &StoredIdentity,
    ) -> Result<(), StoreError> {
        self.inner.replace_identity(ns, cluster, identity, previous).await
    }
    async fn grant_peering_permissions(&self, ns: &TenantNamespace, user: &ClusterId) -> Result<(), StoreError> {
        self.inner.grant_peering_permissions(ns, user).await
    }
    async fn save_origin_token(&self, cluster: &ClusterId, token: &BearerToken) -> Result<(), StoreError> {
        self.inner.save_origin_token(cluster, token).await
    }
    async fn api_server(&self) -> Result<ApiServerInfo, StoreError> {
        self.inner.api_server().await
    }
    async fn ready(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable { operation: "ping".into(), source: "down".into() })
    }
}

#[tokio::test]
async fn a_backend_outage_gets_503_with_retry_after_and_the_retry_succeeds() {
    let app = TestApp::new();
    let flaky = Arc::new(FlakyStore {
        inner: MemoryStore::new(None, ApiServerInfo { url: API_SERVER_URL.into(), ca_pem: None }),
        fail_next: AtomicBool::new(true),
    });
    let app = app.with_store(flaky.clone());
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let answer = app.issue("peer-1", "rome", &csr).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.code(), "unavailable");
    assert!(answer.headers.contains_key("retry-after"));
    assert!(!answer.text().contains("connection refused"), "no internals in error bodies");
    let retry = app.issue("peer-1", "rome", &csr).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED);
    assert!(retry.json().get("apiServerCA").is_none(), "apiServerCA is omitted when the store has none");
    assert_eq!(app.send(get("/readyz")).await.status, StatusCode::SERVICE_UNAVAILABLE);
}
