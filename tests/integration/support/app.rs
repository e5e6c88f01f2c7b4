//! `TestApp`: builds the real router over in-memory adapters for router tests (no port bound).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use liqo_auth::adapter::local::LocalCa;
use liqo_auth::adapter::memory::{MemoryProofLedger, MemoryStore};
use liqo_auth::http::{router, AppState};
use liqo_auth::identity::port::Signer;
use liqo_auth::identity::port::{ApiServerInfo, CredentialStore, SharedTokenSource};
use liqo_auth::identity::{Authenticator, ClusterIdentity, IssuePolicy, Issuer, RenewPolicy, Renewer, SharedToken};
use tower::ServiceExt as _;

/// The provider identity every router test uses.
pub const PROVIDER_ID: &str = "provider-id";
pub const PROVIDER_NAME: &str = "provider";
pub const API_SERVER_URL: &str = "https://api.provider.example:6443";

/// A router over a memory store and a local CA.
pub struct TestApp {
    pub memory: Arc<MemoryStore>,
    pub ca: Arc<LocalCa>,
    pub token: SharedToken,
    /// Used renewal proofs, shared by every router this app builds (as replicas share theirs).
    pub ledger: Arc<MemoryProofLedger>,
    authentication: bool,
    store: Option<Arc<dyn CredentialStore>>,
}

impl TestApp {
    pub fn new() -> Self {
        let token = SharedToken::generate();
        let ca = Arc::new(LocalCa::generate("test ca").expect("ca"));
        let api = ApiServerInfo { url: API_SERVER_URL.into(), ca_pem: Some(ca.cert_pem().to_owned()) };
        let memory = Arc::new(MemoryStore::new(Some(token.clone()), api));
        Self { memory, ca, token, ledger: Arc::default(), authentication: true, store: None }
    }

    pub fn without_authentication(mut self) -> Self {
        self.authentication = false;
        self
    }

    pub fn with_store(mut self, store: Arc<dyn CredentialStore>) -> Self {
        self.store = Some(store);
        self
    }

    pub fn router(&self) -> Router {
        router(self.state())
    }

    /// The handlers' state over this app's adapters (fresh metrics and default protection).
    pub fn state(&self) -> AppState {
        let tokens: Arc<dyn SharedTokenSource> = self.memory.clone();
        let store = self.store.clone().unwrap_or_else(|| self.memory.clone());
        let signer: Arc<dyn Signer> = self.ca.clone();
        let auth = Authenticator::new(self.authentication, tokens);
        let policy = IssuePolicy { certificate_ttl: Duration::from_secs(24 * 3600) };
        let cluster = ClusterIdentity::parse_remote(PROVIDER_ID, PROVIDER_NAME).expect("provider identity");
        let renew_policy = RenewPolicy { certificate_ttl: policy.certificate_ttl, grace_after_expiry: Duration::ZERO };
        let renewer =
            Renewer::new(cluster.id.clone(), signer.clone(), store.clone(), self.ledger.clone(), renew_policy);
        let issuer = Issuer::new(auth, signer, store, policy);
        AppState::new(cluster, issuer, renewer)
    }

    /// Sends one request through a fresh router.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        send(&self.router(), request).await
    }

    /// POSTs a certificate request with the shared token.
    pub async fn issue(&self, cluster_id: &str, cluster_name: &str, csr_pem: &str) -> Answer {
        let body = certificate_body(cluster_id, cluster_name, self.token.expose(), csr_pem, None);
        self.send(post_json("/identity/certificate", body)).await
    }
}

impl Default for TestApp {
    fn default() -> Self {
        Self::new()
    }
}

/// Sends one request through `router` and reads the whole answer.
pub async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.expect("router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    Answer { status, headers, body }
}

/// A response, fully read.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// The JSON body of `POST /identity/certificate` as the reference client builds it.
pub fn certificate_body(
    cluster_id: &str,
    cluster_name: &str,
    token: &str,
    csr_pem: &str,
    origin: Option<&str>,
) -> String {
    let mut body = serde_json::json!({
        "cluster": {"clusterID": cluster_id, "clusterName": cluster_name},
        "destinationClusterToken": token,
        "certificateSigningRequest": super::pki::b64(csr_pem),
    });
    if let Some(origin) = origin {
        body["originClusterToken"] = origin.into();
    }
    body.to_string()
}

/// A POST with the reference client's `text/plain` content type.
pub fn post_json(path: &str, body: String) -> Request<Body> {
    Request::post(path).header("content-type", "text/plain").body(Body::from(body)).expect("request")
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

/// Runs the `token` or `tenant` command `argv` (`liqo-auth` first) as the binary would and
/// returns what it printed; a failure panics with its error chain.
pub async fn operator_cli(argv: &[&str]) -> String {
    use clap::Parser as _;
    use liqo_auth::{Args, Command};
    let args = Args::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let mut out = Vec::new();
    let result = match args.command {
        Command::Token(command) => {
            let (backend, action) = command.into_options();
            liqo_auth::app::operator::token(&backend, action, &mut out).await
        }
        Command::Tenant(command) => {
            let (backend, action) = command.into_options();
            liqo_auth::app::operator::tenant(&backend, action, &mut out).await
        }
        _ => unreachable!("only token and tenant commands"),
    };
    result.unwrap_or_else(|e| panic!("{argv:?} failed: {}", liqo_auth::error::error_chain(e.as_ref())));
    String::from_utf8(out).unwrap()
}
