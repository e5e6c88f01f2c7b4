//! The rendered RBAC against the calls the code really makes. For every rendering, the service
//! runs with that rendering's Deployment args against the fake API server over TLS as the
//! ServiceAccount's user, and goes through a standalone start (two replicas, the first one
//! creating the cluster identity), a full issuance, a repeat, a renewal and its replay, a
//! shared-token rotation (deleted, then emptied), a join-token issuance and an identity rotation; the operator then runs every `token` command and
//! `tenant list|remove` as a user of the operators' group. Each side's recorded calls (plus the
//! `approve` and `bind` checks the apiserver makes on top of them) must all be allowed by its
//! role, and every single permission of the role (verb × resource × name) must be used by one.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use liqo_auth::config::Connection;
use serde_json::json;

use super::{render, Rendered, RENDERINGS};
use crate::support::app::{certificate_body, get, post_json, send};
use crate::support::fake_apiserver::{ClientIdentity, FakeApiServer, RecordedRequest};
use crate::support::pki::{self, KeyType};
use crate::support::rbac::{csr_signers, Attributes, Authorizer, Grant, RbacObjects};
use crate::support::server;

const NS: &str = "liqo";
/// The user kube-apiserver sees for the pods' ServiceAccount.
const SERVICE_USER: &str = "system:serviceaccount:liqo:liqo-auth";
/// The group the rendered operator bindings name.
const OPERATORS_GROUP: &str = "liqo-auth-operators";

#[tokio::test]
async fn every_rendering_grants_the_service_and_the_operator_exactly_the_calls_they_make() {
    let mut failures = Vec::new();
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        let calls = Scenario::run(r).await;
        let rbac = r.rbac();
        let service = rbac.authorizer(SERVICE_USER, &service_groups());
        failures.extend(compare(name, "service", &service, &calls.service, &calls.all));
        let operator = rbac.authorizer("alice", &[OPERATORS_GROUP.to_owned(), "system:authenticated".to_owned()]);
        failures.extend(compare(name, "operator", &operator, &calls.operator, &calls.all));
        assert!(
            operator.grants.iter().all(|g| !g.source.ends_with("/liqo-auth") && !g.source.contains("/liqo-auth@")),
            "{name}: the operator group is bound to the operator roles only"
        );
        assert!(
            service.grants.iter().all(|g| !g.source.contains("operator")),
            "{name}: the ServiceAccount is not bound to the operator roles"
        );
    }
    assert!(failures.is_empty(), "RBAC differs from the recorded calls:\n  {}", failures.join("\n  "));
}

/// Every recorded request of one side allowed, and every permission used.
fn compare(
    rendering: &str,
    side: &str,
    authorizer: &Authorizer,
    requests: &[RecordedRequest],
    all: &[RecordedRequest],
) -> Vec<String> {
    let signers = csr_signers(all);
    let needed: BTreeSet<Attributes> = requests.iter().flat_map(|r| Attributes::required_by(r, &signers)).collect();
    assert!(!needed.is_empty(), "{rendering}: the {side} made no API calls");
    let mut failures = Vec::new();
    for attributes in &needed {
        if !authorizer.allows(attributes) {
            failures.push(format!("{rendering}: {side} is denied {}", describe(attributes)));
        }
    }
    for grant in &authorizer.grants {
        for permission in grant.permissions() {
            if !needed.iter().any(|a| grant.allows(a) && Grant::uses(&permission, a)) {
                failures.push(format!(
                    "{rendering}: {side} never uses {} (rule {} of {})",
                    describe(&permission),
                    grant.index,
                    grant.source
                ));
            }
        }
    }
    failures
}

fn describe(a: &Attributes) -> String {
    let group = if a.group.is_empty() { String::new() } else { format!(".{}", a.group) };
    let namespace = a.namespace.as_deref().map(|ns| format!(" in {ns}")).unwrap_or_default();
    let name = a.name.as_deref().map(|n| format!(" {n}")).unwrap_or_default();
    format!("{} {}{group}{name}{namespace}", a.verb, a.resource)
}

fn service_groups() -> Vec<String> {
    ["system:serviceaccounts", "system:serviceaccounts:liqo", "system:authenticated"].map(str::to_owned).to_vec()
}

/// The recorded requests of one run, by who sent them.
struct Calls {
    service: Vec<RecordedRequest>,
    operator: Vec<RecordedRequest>,
    all: Vec<RecordedRequest>,
}

struct Scenario {
    fake: FakeApiServer,
    dir: tempfile::TempDir,
    operator: ClientIdentity,
}

impl Scenario {
    async fn run(r: &Rendered) -> Calls {
        let fake = FakeApiServer::start_tls(true).await;
        seed(&fake);
        let service_identity =
            fake.issue_client_identity(SERVICE_USER, &["system:serviceaccounts", "system:serviceaccounts:liqo"]);
        let operator = fake.issue_client_identity("alice", &[OPERATORS_GROUP]);
        let scenario = Self { fake, dir: tempfile::tempdir().unwrap(), operator };
        scenario.service(r, &service_identity).await;
        scenario.operator_commands().await;
        let all = scenario.fake.requests();
        let by = |user: &str| all.iter().filter(|r| r.user.as_deref() == Some(user)).cloned().collect::<Vec<_>>();
        Calls { service: by(SERVICE_USER), operator: by("alice"), all: all.clone() }
    }

    /// Two replicas start, then issuance, repeat, token rotation and a join-token issuance.
    async fn service(&self, r: &Rendered, identity: &ClientIdentity) {
        let argv = service_argv(r);
        let mut config = server::serve_config(&argv);
        let liqo_auth::config::BackendConfig::Kubernetes { connection, .. } = &mut config.backend else {
            panic!("the Deployment runs the Kubernetes backend")
        };
        *connection = Connection::Config(Box::new(self.fake.kube_config_with_identity(Some(identity))));
        let first = server::router(&config).await;
        assert!(
            self.fake.get_json("configmaps", Some(NS), "liqo-clusterid-configmap").is_some(),
            "a standalone start creates the cluster identity"
        );
        drop(first);
        // A second replica (an upgrade adding a SAN): reads the identity, replaces the shared
        // serving pair that no longer covers its names.
        config.tls.iter_mut().for_each(|tls| tls.extra_sans.push("second.example.com".into()));
        let router = server::router(&config).await;

        let token = self.shared_token().await;
        let key = pki::key(KeyType::P256);
        let csr = pki::liqo_csr(&key, "peer-1");
        // The signer takes a moment, as kube-controller-manager does, so the service watches
        // its CSR; a stale approval makes it re-read the CSR first.
        self.fake.set_signing_delay(Duration::from_millis(300));
        self.fake.fail_next(Some(http::Method::PATCH), "/approval", 409, "Conflict");
        let mut certificate = String::new();
        for attempt in ["issuance", "repeat"] {
            let body = certificate_body("peer-1", "rome", &token, &csr, Some("origin-token-1"));
            let answer = send(&router, post_json("/identity/certificate", body)).await;
            assert_eq!(answer.status, 202, "{attempt}: {}", answer.text());
            certificate = pki::unb64(answer.json()["certificate"].as_str().unwrap());
        }
        self.fake.set_signing_delay(Duration::ZERO);

        // Renewal with a proof of possession; a Lease records the proof and the sweep removes an
        // expired one; the replay is refused after reading the Lease back.
        self.fake.insert_json(
            "/apis/coordination.k8s.io/v1/namespaces/liqo/leases",
            json!({"metadata": {
                "name": format!("liqo-auth-proof-{}", "0".repeat(40)),
                "labels": {"auth.liqo.io/renewal-proof": "true"},
                "annotations": {"auth.liqo.io/expires-at": "1"},
            }}),
        );
        let provider = send(&router, get("/ids")).await.json()["clusterId"].as_str().unwrap().to_owned();
        let renewal = renewal_body(&key, &certificate, &provider);
        let renewed = send(&router, post_json("/identity/certificate/renew", renewal.clone())).await;
        assert_eq!(renewed.status, 200, "renewal: {}", renewed.text());
        let replay = send(&router, post_json("/identity/certificate/renew", renewal)).await;
        assert_eq!(replay.status, 401, "replay: {}", replay.text());

        // Rotation by deletion: the service creates a new token; by emptying: it repairs it.
        let secrets: Api<Secret> = Api::namespaced(self.fake.client(), NS);
        secrets.delete("auth-token", &Default::default()).await.unwrap();
        let fresh = self.eventually_token(|t| !t.is_empty() && t != token).await;
        let mut secret = secrets.get("auth-token").await.unwrap();
        secret.data = Some([("token".to_owned(), k8s_openapi::ByteString(Vec::new()))].into());
        secrets.replace("auth-token", &Default::default(), &secret).await.unwrap();
        self.eventually_token(|t| t.len() == 128 && t != fresh).await;

        // A join token minted by an admin (not counted for either side) and spent by a peer.
        let join = self.cli(None, &["token", "create", "--cluster-id", "peer-2"]).await;
        let join = join.lines().last().unwrap_or_default().to_owned();
        let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-2");
        let body = certificate_body("peer-2", "milan", &join, &csr, None);
        let answer = send(&router, post_json("/identity/certificate", body)).await;
        assert_eq!(answer.status, 202, "join-token issuance: {}", answer.text());

        // A join token bound to peer-1 rotates its identity: the stored certificate is replaced.
        let bound = self.cli(None, &["token", "create", "--cluster-id", "peer-1"]).await;
        let bound = bound.lines().last().unwrap_or_default().to_owned();
        let csr = pki::liqo_csr(&pki::key(KeyType::Ed25519), "peer-1");
        let body = certificate_body("peer-1", "rome", &bound, &csr, None);
        let answer = send(&router, post_json("/identity/certificate", body)).await;
        assert_eq!(answer.status, 202, "identity rotation: {}", answer.text());
    }

    /// Every `token` command and `tenant list|remove`, as a member of the operators' group.
    async fn operator_commands(&self) {
        let me = Some(&self.operator);
        self.cli(me, &["token", "show"]).await;
        self.cli(me, &["token", "create", "--cluster-id", "peer-3"]).await;
        let listing = self.cli(me, &["token", "list"]).await;
        let id = listing
            .lines()
            .skip(1)
            .find(|line| line.contains("peer-3"))
            .and_then(|line| line.split_whitespace().next())
            .unwrap_or_else(|| panic!("token list shows the new token: {listing}"))
            .to_owned();
        self.cli(me, &["token", "revoke", &id]).await;
        self.cli(me, &["token", "rotate-key"]).await;
        self.cli(me, &["tenant", "list"]).await;
        self.cli(me, &["tenant", "remove", "peer-2"]).await;
        self.cli(me, &["tenant", "remove", "peer-1", "--delete-namespace"]).await;
    }

    async fn shared_token(&self) -> String {
        let secrets: Api<Secret> = Api::namespaced(self.fake.client(), NS);
        let secret = secrets.get("auth-token").await.expect("auth-token exists");
        String::from_utf8(secret.data.unwrap_or_default().get("token").map(|b| b.0.clone()).unwrap_or_default())
            .unwrap()
    }

    async fn eventually_token(&self, ready: impl Fn(&str) -> bool) -> String {
        let secrets: Api<Secret> = Api::namespaced(self.fake.client(), NS);
        for _ in 0..400 {
            if let Some(secret) = secrets.get_opt("auth-token").await.unwrap() {
                let token = secret.data.unwrap_or_default().get("token").map(|b| b.0.clone()).unwrap_or_default();
                let token = String::from_utf8(token).unwrap();
                if ready(&token) {
                    return token;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the service did not rewrite auth-token");
    }

    /// Runs `liqo-auth <args>` with a kubeconfig for `identity` (the admin when `None`).
    async fn cli(&self, identity: Option<&ClientIdentity>, args: &[&str]) -> String {
        let kubeconfig = self.kubeconfig(identity);
        let mut argv = vec!["liqo-auth"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--namespace", NS, "--kubeconfig", kubeconfig.to_str().unwrap()]);
        crate::support::app::operator_cli(&argv).await
    }

    fn kubeconfig(&self, identity: Option<&ClientIdentity>) -> std::path::PathBuf {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let admin;
        let identity = match identity {
            Some(identity) => identity,
            None => {
                admin = self.fake.issue_client_identity("admin", &["system:masters"]);
                &admin
            }
        };
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.fake.url(), "certificate-authority-data": b64(&self.fake.ca_pem())}}],
            "users": [{"name": "u", "user": {"client-certificate-data": b64(&identity.cert_pem), "client-key-data": b64(&identity.key_pem)}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
        });
        let path = self.dir.path().join(format!("kubeconfig-{}", rand_suffix()));
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }
}

/// A renewal request for peer-1: a new CSR for the same key and a proof signed with it.
fn renewal_body(key: &rcgen::KeyPair, certificate: &str, provider: &str) -> String {
    use liqo_auth::identity::renew::{csr_digest_hex, sign_proof, ProofClaims};
    let csr_pem = pki::liqo_csr(key, "peer-1");
    let csr = liqo_auth::identity::ParsedCsr::from_pem(csr_pem.as_bytes()).expect("csr");
    let now = liqo_auth::pki::unix_now();
    let claims = ProofClaims {
        sub: "peer-1".into(),
        aud: provider.into(),
        iat: now,
        exp: now + 120,
        jti: uuid::Uuid::new_v4().to_string(),
        csr_sha256: csr_digest_hex(csr.der()),
    };
    let proof = sign_proof(&key.serialize_pem(), certificate, &claims).expect("proof");
    json!({"proof": proof, "certificateSigningRequest": pki::b64(&csr_pem)}).to_string()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What a cluster has before liqo-auth is installed standalone: the namespace, Liqo's basic
/// peering ClusterRole (bound to each peer) and a control-plane node; no cluster-ID ConfigMap.
fn seed(fake: &FakeApiServer) {
    fake.insert_json("/api/v1/namespaces", json!({"metadata": {"name": NS}}));
    fake.insert_json(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        json!({
            "metadata": {"name": "liqo-remote-peering-basic", "labels": {"auth.liqo.io/remote-peering-permissions": "basic"}},
            "rules": [{"apiGroups": ["discovery.liqo.io"], "resources": ["resourcerequests"], "verbs": ["create"]}]
        }),
    );
    fake.insert_json(
        "/api/v1/nodes",
        json!({
            "metadata": {"name": "control-plane-1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]}
        }),
    );
}

/// The rendered container args as the kubelet would run them (env expanded), plus short
/// timeouts for the test.
fn service_argv(r: &Rendered) -> Vec<String> {
    let container = r.container();
    assert_eq!(container.command.as_deref(), Some(&["/usr/bin/liqo-auth".to_owned()][..]));
    let args = container.args.iter().flatten().map(|a| a.replace("$(POD_NAMESPACE)", NS));
    let mut argv: Vec<String> = std::iter::once("liqo-auth".to_owned()).chain(args).collect();
    argv.extend(["--kube-request-timeout=2s", "--signing-timeout=5s"].map(str::to_owned));
    assert!(!argv.iter().any(|a| a.contains("$(")), "every variable is expanded: {argv:?}");
    argv
}

impl Rendered {
    /// The four RBAC kinds of this rendering.
    pub(super) fn rbac(&self) -> RbacObjects {
        RbacObjects {
            cluster_roles: self.cluster_roles.clone(),
            roles: self.roles.clone(),
            cluster_role_bindings: self.cluster_role_bindings.clone(),
            role_bindings: self.role_bindings.clone(),
        }
    }
}
