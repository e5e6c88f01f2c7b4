//! Join tokens, identity rotation and unpeering, driven through the real CLI commands
//! and service instances built as `serve` builds them, over the fake API server and the local
//! backend.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::support::app::{certificate_body, post_json, send, Answer};
use crate::support::fake_apiserver::FakeApiServer;
use crate::support::pki::{self, KeyType};
use crate::support::server;
use axum::http::StatusCode;
use axum::Router;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use liqo_auth::config::Access;
use liqo_auth::identity::join_token::{ConsumeOutcome, JoinTokenClaims, JoinTokenRecord, AUDIENCE};
use liqo_auth::identity::port::JoinTokenStore;

use crate::support::liqo::{NS, PROVIDER_ID};

/// A fake cluster with Liqo's namespace, cluster-ID ConfigMap and basic peering ClusterRole,
/// and a kubeconfig file for the CLI.
struct Cluster {
    fake: FakeApiServer,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let fake = FakeApiServer::start().await;
        crate::support::liqo::seed_liqo_cluster(&fake);
        let dir = tempfile::tempdir().unwrap();
        crate::support::liqo::write_kubeconfig(&fake, dir.path());
        Self { fake, dir }
    }

    /// One service instance (router), built exactly as `serve` builds it.
    async fn instance(&self, extra: &[&str]) -> Router {
        let mut argv =
            vec!["liqo-auth", "serve", "--namespace", NS, "--kube-request-timeout", "2s", "--signing-timeout", "5s"];
        argv.extend_from_slice(extra);
        server::router(&server::serve_config_over(&self.fake, &argv)).await
    }

    /// Runs `liqo-auth <args> --namespace liqo --kubeconfig <fake>` and returns its stdout.
    async fn cli(&self, args: &[&str]) -> String {
        let kubeconfig = self.dir.path().join("kubeconfig");
        let mut argv = vec!["liqo-auth"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--namespace", NS, "--kubeconfig", kubeconfig.to_str().unwrap()]);
        crate::support::app::operator_cli(&argv).await
    }

    async fn create_token(&self, extra: &[&str]) -> String {
        let mut args = vec!["token", "create"];
        args.extend_from_slice(extra);
        last_line(&self.cli(&args).await)
    }

    /// The join-token store of a fresh service instance (a replica of its own), opened by the
    /// composition root over the fake.
    async fn join_tokens(&self) -> Arc<dyn JoinTokenStore> {
        let config = server::serve_config_over(&self.fake, &["liqo-auth", "serve", "--namespace", NS]);
        config.backend.open(Access::Existing).await.expect("the backend opens").join_tokens
    }

    async fn shared_token(&self) -> String {
        let api: Api<Secret> = Api::namespaced(self.fake.client(), NS);
        let secret = api.get("auth-token").await.expect("auth-token exists");
        String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap()
    }

    /// Stored certificates (Secrets `liqo-remote-certificate`) by namespace.
    fn stored_certificates(&self) -> Vec<serde_json::Value> {
        self.fake
            .list_json("secrets")
            .into_iter()
            .filter(|s| s["metadata"]["name"] == "liqo-remote-certificate")
            .collect()
    }
}

fn last_line(text: &str) -> String {
    text.lines().last().unwrap_or_default().to_owned()
}

async fn issue(router: &Router, token: &str, id: &str, csr: &str) -> Answer {
    send(router, post_json("/identity/certificate", certificate_body(id, "rome", token, csr, None))).await
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Valid claims for a token whose record exists, so a test changes exactly one thing.
async fn recorded_claims(cluster: &Cluster, sub: Option<&str>) -> JoinTokenClaims {
    let store = cluster.join_tokens().await;
    let key = store.ensure_key().await.unwrap();
    let id = format!("{:032x}", rand_id());
    let now = now();
    let record = JoinTokenRecord {
        id: id.clone(),
        cluster_id: sub.map(str::to_owned),
        created_at: now,
        expires_at: now + 3600,
        max_uses: 5,
        uses: 0,
        revoked: false,
        key_id: key.id(),
        consumed_by: vec![],
    };
    store.create_record(&record).await.unwrap();
    JoinTokenClaims {
        iss: PROVIDER_ID.into(),
        aud: AUDIENCE.into(),
        sub: sub.map(str::to_owned),
        iat: now,
        nbf: now,
        exp: now + 3600,
        jti: id,
    }
}

fn rand_id() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    (u128::from(std::process::id()) << 64) | u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

fn hs256(secret: &[u8], claims: &JoinTokenClaims) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
}

async fn sign_with_current_key(cluster: &Cluster, claims: &JoinTokenClaims) -> String {
    let key = cluster.join_tokens().await.key().await.unwrap().unwrap();
    hs256(key.expose(), claims)
}

#[tokio::test]
async fn every_bad_join_token_gets_the_same_401_and_nothing_is_issued() {
    let cluster = Cluster::start().await;
    // Every bad token comes from one source: this test is about the 401s, not the failure limit.
    let router = cluster.instance(&["--enable-tls", "--auth-failure-limit=0"]).await;
    let mut cases: Vec<(&str, String)> = Vec::new();

    let mut claims = recorded_claims(&cluster, None).await;
    claims.exp = now() - 120;
    cases.push(("expired", sign_with_current_key(&cluster, &claims).await));

    let mut claims = recorded_claims(&cluster, None).await;
    claims.nbf = now() + 120;
    cases.push(("not yet valid", sign_with_current_key(&cluster, &claims).await));

    let mut claims = recorded_claims(&cluster, None).await;
    claims.aud = "kubernetes".into();
    cases.push(("wrong audience", sign_with_current_key(&cluster, &claims).await));

    let mut claims = recorded_claims(&cluster, None).await;
    claims.iss = "another-provider".into();
    cases.push(("wrong issuer", sign_with_current_key(&cluster, &claims).await));

    let claims = recorded_claims(&cluster, None).await;
    let genuine = sign_with_current_key(&cluster, &claims).await;
    let [head, payload, signature]: [&str; 3] = genuine.split('.').collect::<Vec<_>>().try_into().unwrap();
    // What a forger would change: extend the expiry, keeping the genuine signature.
    let mut widened = claims.clone();
    widened.exp += 30 * 86_400;
    let forged_payload = b64url(&serde_json::to_vec(&widened).unwrap());
    cases.push(("tampered payload", format!("{head}.{forged_payload}.{signature}")));
    let flipped =
        if signature.starts_with('A') { signature.replacen('A', "B", 1) } else { format!("A{}", &signature[1..]) };
    cases.push(("tampered signature", format!("{head}.{payload}.{flipped}")));

    let claims = recorded_claims(&cluster, None).await;
    let payload = b64url(&serde_json::to_vec(&claims).unwrap());
    cases.push(("alg none", format!("{}.{payload}.AA", b64url(br#"{"alg":"none","typ":"JWT"}"#))));
    cases.push(("alg none, empty signature", format!("{}.{payload}.", b64url(br#"{"alg":"none"}"#))));

    let claims = recorded_claims(&cluster, None).await;
    cases.push(("another key", hs256(&[7u8; 32], &claims)));

    // Algorithm confusion: HS256 keyed with the server's public key material, and RS256.
    let serving = cluster.fake.get_json("secrets", Some(NS), "liqo-auth-serving-cert").expect("serving cert Secret");
    let serving_pem =
        base64::engine::general_purpose::STANDARD.decode(serving["data"]["tls.crt"].as_str().unwrap()).unwrap();
    let spki = liqo_auth::pki::first_certificate_spki(&serving_pem).unwrap();
    let claims = recorded_claims(&cluster, None).await;
    cases.push(("HS256 keyed with the public key (PEM)", hs256(&serving_pem, &claims)));
    cases.push(("HS256 keyed with the public key (SPKI DER)", hs256(&spki, &claims)));
    let payload = b64url(&serde_json::to_vec(&claims).unwrap());
    cases.push(("RS256", format!("{}.{payload}.{}", b64url(br#"{"alg":"RS256","typ":"JWT"}"#), b64url(&[1u8; 256]))));

    let claims = recorded_claims(&cluster, Some("peer-bound-elsewhere")).await;
    cases.push(("bound to another cluster", sign_with_current_key(&cluster, &claims).await));

    let revoked = cluster.create_token(&[]).await;
    let revoked_id = cluster.join_tokens().await.records().await.unwrap().last().unwrap().id.clone();
    let output = cluster.cli(&["token", "revoke", &revoked_id]).await;
    assert!(output.contains(&revoked_id), "{output}");
    cases.push(("revoked", revoked));

    let rotated = cluster.create_token(&["--max-uses", "5"]).await;
    cluster.cli(&["token", "rotate-key"]).await;
    cases.push(("after key rotation", rotated.clone()));

    cases.push(("garbage with JWS shape", "abc.def.ghi".into()));

    let key = pki::key(KeyType::P256);
    let mut messages = std::collections::BTreeSet::new();
    for (i, (what, token)) in cases.iter().enumerate() {
        let id = format!("peer-{i}");
        let answer = issue(&router, token, &id, &pki::liqo_csr(&key, &id)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{what}: {}", answer.text());
        assert_eq!(answer.code(), "invalid_token", "{what}");
        assert!(!answer.text().contains(token.as_str()), "{what}: the token is never echoed");
        messages.insert(answer.json()["message"].as_str().unwrap().to_owned());
    }
    assert_eq!(messages.len(), 1, "one generic message for every reason: {messages:?}");
    assert!(cluster.stored_certificates().is_empty(), "nothing was issued");
    assert!(cluster.fake.list_json("certificatesigningrequests").is_empty(), "nothing was signed");
    let tenants = cluster
        .fake
        .list_json("namespaces")
        .into_iter()
        .filter(|ns| ns["metadata"]["labels"]["discovery.liqo.io/tenant-namespace"] == "true")
        .count();
    assert_eq!(tenants, 0, "no tenant namespace was created");
    // Nothing consumed a use either.
    assert!(cluster.join_tokens().await.records().await.unwrap().iter().all(|r| r.uses == 0));

    // The same service accepts a fresh, valid token (the checks above were not vacuous).
    let valid = cluster.create_token(&[]).await;
    let answer = issue(&router, &valid, "peer-ok", &pki::liqo_csr(&key, "peer-ok")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
}

#[tokio::test]
async fn max_uses_holds_across_two_replicas_under_concurrency() {
    let cluster = Cluster::start().await;
    let a = cluster.instance(&[]).await;
    let b = cluster.instance(&[]).await;
    let token = cluster.create_token(&["--max-uses", "3"]).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let router = if i % 2 == 0 { a.clone() } else { b.clone() };
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("peer-{i}");
            let csr = pki::liqo_csr(&pki::key(KeyType::P256), &id);
            issue(&router, &token, &id, &csr).await
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap().status);
    }
    let accepted = statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count();
    assert_eq!(accepted, 3, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::ACCEPTED || *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
    assert_eq!(cluster.stored_certificates().len(), 3);
    let record = cluster.join_tokens().await.records().await.unwrap().pop().unwrap();
    assert_eq!((record.uses, record.consumed_by.len()), (3, 3));
    let writes = cluster
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == http::Method::PUT && r.path.contains("liqo-auth-join-token-"))
        .count();
    println!("record writes: {writes} for 3 uses (the rest were refused with 409 Conflict and re-read)");
}

#[tokio::test]
async fn two_stores_racing_on_one_record_never_exceed_max_uses() {
    let cluster = Cluster::start().await;
    cluster.create_token(&["--max-uses", "3"]).await;
    let id = cluster.join_tokens().await.records().await.unwrap()[0].id.clone();
    let (a, b) = (cluster.join_tokens().await, cluster.join_tokens().await);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let id = id.clone();
        tasks.push(tokio::spawn(async move { store.consume(&id, &format!("request-{i}")).await.unwrap() }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let consumed = outcomes.iter().filter(|o| **o == ConsumeOutcome::Consumed).count();
    assert_eq!(consumed, 3, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == ConsumeOutcome::Exhausted).count(), 17);
    assert_eq!(a.record(&id).await.unwrap().unwrap().uses, 3);
}

#[tokio::test]
async fn a_conflicting_record_write_is_retried_and_counts_one_use() {
    let cluster = Cluster::start().await;
    cluster.create_token(&["--max-uses", "2"]).await;
    let store = cluster.join_tokens().await;
    let id = store.records().await.unwrap()[0].id.clone();
    cluster.fake.fail_next(Some(http::Method::PUT), "liqo-auth-join-token-", 409, "Conflict");
    assert_eq!(store.consume(&id, "request-1").await.unwrap(), ConsumeOutcome::Consumed);
    assert_eq!(store.consume(&id, "request-1").await.unwrap(), ConsumeOutcome::AlreadyConsumed);
    assert_eq!(store.record(&id).await.unwrap().unwrap().uses, 1);
}

#[tokio::test]
async fn an_idempotent_repeat_does_not_consume_a_use() {
    let cluster = Cluster::start().await;
    let router = cluster.instance(&[]).await;
    let token = cluster.create_token(&["--max-uses", "1"]).await;
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let first = issue(&router, &token, "peer-1", &csr).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text());
    // A lost response: the client retries the same request, and gets the same certificate
    // although the token's only use is taken.
    let repeat = issue(&router, &token, "peer-1", &csr).await;
    assert_eq!(repeat.status, StatusCode::ACCEPTED, "{}", repeat.text());
    assert_eq!(repeat.json()["certificate"], first.json()["certificate"]);
    assert_eq!(cluster.join_tokens().await.records().await.unwrap()[0].uses, 1);
    let other = issue(&router, &token, "peer-2", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-2")).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    let listing = cluster.cli(&["token", "list"]).await;
    assert!(listing.contains("0/1") && listing.contains("used-up"), "{listing}");
    assert!(!listing.contains(&token), "token list never shows the token");
}

#[tokio::test]
async fn a_bound_join_token_rotates_the_identity_while_the_shared_token_gets_409() {
    let cluster = Cluster::start().await;
    let router = cluster.instance(&[]).await;
    let shared = cluster.shared_token().await;
    let first = issue(&router, &shared, "peer-1", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-1")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let namespace = first.json()["namespace"].as_str().unwrap().to_owned();

    let new_key = pki::key(KeyType::Ed25519);
    let new_csr = pki::liqo_csr(&new_key, "peer-1");
    assert_eq!(issue(&router, &shared, "peer-1", &new_csr).await.status, StatusCode::CONFLICT);
    let unbound = cluster.create_token(&[]).await;
    assert_eq!(issue(&router, &unbound, "peer-1", &new_csr).await.status, StatusCode::CONFLICT);

    let bound = cluster.create_token(&["--cluster-id", "peer-1"]).await;
    let rotated = issue(&router, &bound, "peer-1", &new_csr).await;
    assert_eq!(rotated.status, StatusCode::ACCEPTED, "{}", rotated.text());
    assert_ne!(rotated.json()["certificate"], first.json()["certificate"]);
    let cert_pem = pki::unb64(rotated.json()["certificate"].as_str().unwrap());
    let summary = liqo_auth::pki::CertificateSummary::from_pem(cert_pem.as_bytes()).unwrap();
    use rcgen::PublicKeyData as _;
    assert_eq!(summary.spki_der, new_key.subject_public_key_info(), "the new certificate is for the new key");
    let stored = cluster.fake.get_json("secrets", Some(&namespace), "liqo-remote-certificate").unwrap();
    assert_eq!(pki::unb64(stored["data"]["certificate"].as_str().unwrap()), cert_pem, "the stored one is replaced");
    // A bound token cannot rotate another cluster's identity.
    let other = issue(&router, &bound, "peer-2", &pki::liqo_csr(&new_key, "peer-2")).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tenant_remove_leaves_no_role_binding_and_allows_a_fresh_peering() {
    let cluster = Cluster::start().await;
    let router = cluster.instance(&[]).await;
    let shared = cluster.shared_token().await;
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let answer = send(
        &router,
        post_json("/identity/certificate", certificate_body("peer-1", "rome", &shared, &csr, Some("origin"))),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let namespace = answer.json()["namespace"].as_str().unwrap().to_owned();
    assert_eq!(cluster.fake.list_json("rolebindings").len(), 1);

    let listing = cluster.cli(&["tenant", "list"]).await;
    assert!(listing.contains("peer-1") && listing.contains(&namespace) && listing.contains("rome"), "{listing}");

    let output = cluster.cli(&["tenant", "remove", "peer-1"]).await;
    assert!(output.contains("RoleBinding") && output.contains("liqo-remote-certificate"), "{output}");
    assert!(output.contains("remote-token-peer-1"), "{output}");
    assert!(cluster.fake.list_json("rolebindings").is_empty(), "no RoleBinding is left");
    assert!(cluster.stored_certificates().is_empty());
    assert!(cluster.fake.get_json("secrets", Some(NS), "remote-token-peer-1").is_none());
    assert!(cluster.fake.get_json("namespaces", None, &namespace).is_some(), "kept without --delete-namespace");

    // A fresh peering with another key works, and binds again.
    let fresh = issue(&router, &shared, "peer-1", &pki::liqo_csr(&pki::key(KeyType::Ed25519), "peer-1")).await;
    assert_eq!(fresh.status, StatusCode::ACCEPTED, "{}", fresh.text());
    assert_eq!(cluster.fake.list_json("rolebindings").len(), 1);

    let output = cluster.cli(&["tenant", "remove", "peer-1", "--delete-namespace"]).await;
    assert!(output.contains(&format!("Namespace {namespace}")), "{output}");
    let namespace_left = cluster.fake.get_json("namespaces", None, &namespace);
    assert!(
        namespace_left.is_none() || !namespace_left.unwrap()["metadata"]["deletionTimestamp"].is_null(),
        "the namespace is deleted"
    );
}

#[tokio::test]
async fn a_disabled_shared_token_is_refused_while_join_tokens_work() {
    let cluster = Cluster::start().await;
    let router = cluster.instance(&["--shared-token=disabled"]).await;
    let shared = cluster.shared_token().await;
    let key = pki::key(KeyType::P256);
    let refused = issue(&router, &shared, "peer-1", &pki::liqo_csr(&key, "peer-1")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let join = cluster.create_token(&[]).await;
    assert_eq!(issue(&router, &join, "peer-1", &pki::liqo_csr(&key, "peer-1")).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn print_peer_command_names_the_advertised_url_the_serving_pin_and_a_private_token_file() {
    let cluster = Cluster::start().await;
    let router = cluster.instance(&["--enable-tls"]).await;
    let token_file = cluster.dir.path().join("peer token");
    let output = cluster
        .cli(&[
            "token",
            "create",
            "--print-peer-command",
            "--advertise-auth-address",
            "203.0.113.10:30443",
            "--token-out",
            token_file.to_str().unwrap(),
        ])
        .await;
    let command = last_line(&output);
    let serving = cluster.fake.get_json("secrets", Some(NS), "liqo-auth-serving-cert").unwrap();
    let pem = base64::engine::general_purpose::STANDARD.decode(serving["data"]["tls.crt"].as_str().unwrap()).unwrap();
    let pin = liqo_auth::pki::spki_pin_of_spki(&liqo_auth::pki::first_certificate_spki(&pem).unwrap());
    let expected = format!(
        "liqo-auth peer --auth-url https://203.0.113.10:30443 --token-file '{}' --ca-hash {pin}",
        token_file.display()
    );
    assert_eq!(command, expected);
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    let answer = issue(&router, token.trim(), "peer-1", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-1")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
}

/// The local backend: a service over a data dir, and the CLI on the same dir.
struct Local {
    dir: tempfile::TempDir,
}

impl Local {
    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    async fn router(&self, extra: &[&str]) -> Router {
        let mut argv =
            vec!["liqo-auth", "serve", "--backend", "local", "--data-dir", self.data_dir().to_str().unwrap()];
        argv.extend_from_slice(extra);
        server::router(&server::serve_config(&argv)).await
    }

    async fn cli(&self, args: &[&str]) -> String {
        let mut argv = vec!["liqo-auth"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--backend", "local", "--data-dir", self.data_dir().to_str().unwrap()]);
        crate::support::app::operator_cli(&argv).await
    }

    fn token_path(&self) -> PathBuf {
        self.data_dir().join("token")
    }
}

#[tokio::test]
async fn local_backend_join_tokens_are_created_listed_revoked_and_rotated() {
    let local = Local { dir: tempfile::tempdir().unwrap() };
    let router = local.router(&[]).await;
    let token = last_line(&local.cli(&["token", "create", "--ttl", "1h", "--max-uses", "2"]).await);
    let key = pki::key(KeyType::P256);
    let answer = issue(&router, &token, "peer-1", &pki::liqo_csr(&key, "peer-1")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let key_mode = std::fs::metadata(local.data_dir().join("join-token.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600);

    let listing = local.cli(&["token", "list"]).await;
    let row = listing.lines().nth(1).expect("one token listed");
    let id = row.split_whitespace().next().unwrap().to_owned();
    assert!(row.contains("(any cluster)") && row.contains("1/2") && row.ends_with("valid"), "{listing}");
    assert!(!listing.contains(&token));

    local.cli(&["token", "revoke", &id]).await;
    let revoked = issue(&router, &token, "peer-2", &pki::liqo_csr(&key, "peer-2")).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert!(local.cli(&["token", "list"]).await.contains("revoked"));

    let second = last_line(&local.cli(&["token", "create", "--cluster-id", "peer-3"]).await);
    local.cli(&["token", "rotate-key"]).await;
    let after_rotation = issue(&router, &second, "peer-3", &pki::liqo_csr(&key, "peer-3")).await;
    assert_eq!(after_rotation.status, StatusCode::UNAUTHORIZED);
    assert!(local.cli(&["token", "list"]).await.contains("key-rotated"));
    // The shared token still works on the local backend by default.
    let shared = std::fs::read_to_string(local.token_path()).unwrap();
    assert_eq!(issue(&router, &shared, "peer-4", &pki::liqo_csr(&key, "peer-4")).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn local_backend_tenants_are_listed_and_removed() {
    let local = Local { dir: tempfile::tempdir().unwrap() };
    let router = local.router(&["--shared-token=disabled"]).await;
    let token = last_line(&local.cli(&["token", "create", "--max-uses", "2"]).await);
    let first = issue(&router, &token, "peer-1", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-1")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let listing = local.cli(&["tenant", "list"]).await;
    let summary = liqo_auth::pki::CertificateSummary::from_pem(
        pki::unb64(first.json()["certificate"].as_str().unwrap()).as_bytes(),
    )
    .unwrap();
    assert!(listing.contains("peer-1") && listing.contains("rome") && listing.contains(&summary.serial), "{listing}");
    let output = local.cli(&["tenant", "remove", "peer-1"]).await;
    assert!(output.contains("stored certificate"), "{output}");
    assert_eq!(local.cli(&["tenant", "list"]).await.lines().count(), 1, "only the header is left");
    let fresh = issue(&router, &token, "peer-1", &pki::liqo_csr(&pki::key(KeyType::Ed25519), "peer-1")).await;
    assert_eq!(fresh.status, StatusCode::ACCEPTED, "a fresh peering with a new key: {}", fresh.text());
}

#[tokio::test]
async fn tenant_remove_revokes_the_join_tokens_bound_to_that_cluster() {
    let local = Local { dir: tempfile::tempdir().unwrap() };
    let router = local.router(&["--shared-token=disabled"]).await;
    let bound = last_line(&local.cli(&["token", "create", "--cluster-id", "peer-1", "--max-uses", "2"]).await);
    let unbound = last_line(&local.cli(&["token", "create", "--max-uses", "2"]).await);
    let first = issue(&router, &bound, "peer-1", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-1")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let output = local.cli(&["tenant", "remove", "peer-1"]).await;
    assert!(output.contains("bound to this cluster; revoked"), "{output}");
    let again = issue(&router, &bound, "peer-1", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-1")).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "the bound token no longer peers the removed cluster");
    let other = issue(&router, &unbound, "peer-2", &pki::liqo_csr(&pki::key(KeyType::P256), "peer-2")).await;
    assert_eq!(other.status, StatusCode::ACCEPTED, "unbound tokens are left alone");
}

#[tokio::test]
async fn print_peer_command_needs_no_flags_once_serve_recorded_its_url_and_the_pin_it_serves() {
    let cluster = Cluster::start().await;
    // A mounted pair, as deploy/ mounts Secret liqo-auth-tls at /certs.
    let (cert_pem, key_pem) =
        pki::pem_pair(&pki::SigningCa::new("mounted").server_cert("liqo-auth", &["auth.example.com"]));
    let (cert, key) = (cluster.dir.path().join("tls.crt"), cluster.dir.path().join("tls.key"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    let server = server::TestServer::start_over(
        &cluster.fake,
        &[
            "--namespace",
            NS,
            "--enable-tls",
            "--cert-path",
            cert.to_str().unwrap(),
            "--key-path",
            key.to_str().unwrap(),
            "--advertise-auth-address",
            "auth.example.com",
        ],
    )
    .await;
    let record = cluster.fake.get_json("secrets", Some(NS), "liqo-auth-serving-info").expect("serve recorded itself");
    assert!(record["data"]["record"].is_string());
    let token_file = cluster.dir.path().join("token");
    let output =
        cluster.cli(&["token", "create", "--print-peer-command", "--token-out", token_file.to_str().unwrap()]).await;
    let pin = server.pin.clone().expect("TLS");
    assert_eq!(
        last_line(&output),
        format!(
            "liqo-auth peer --auth-url https://auth.example.com --token-file {} --ca-hash {pin}",
            token_file.display()
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn without_a_record_the_pin_comes_from_the_mounted_secret_before_the_generated_one() {
    let cluster = Cluster::start().await;
    let _generated = cluster.instance(&["--enable-tls"]).await;
    let (cert_pem, key_pem) =
        pki::pem_pair(&pki::SigningCa::new("mounted").server_cert("liqo-auth", &["auth.example.com"]));
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    cluster.fake.insert_json(
        &format!("/api/v1/namespaces/{NS}/secrets"),
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "liqo-auth-tls", "namespace": NS},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(&cert_pem), "tls.key": b64(&key_pem)},
        }),
    );
    let mounted_pin =
        liqo_auth::pki::spki_pin_of_spki(&liqo_auth::pki::first_certificate_spki(cert_pem.as_bytes()).unwrap());
    let token_file = cluster.dir.path().join("token");
    let output = cluster
        .cli(&[
            "token",
            "create",
            "--print-peer-command",
            "--advertise-auth-address",
            "auth.example.com",
            "--token-out",
            token_file.to_str().unwrap(),
        ])
        .await;
    assert!(last_line(&output).ends_with(&format!("--ca-hash {mounted_pin}")), "{output}");
}
