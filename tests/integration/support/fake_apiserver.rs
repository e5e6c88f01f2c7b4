//! An in-process fake Kubernetes API server, spoken to over real HTTP(S) by the real `kube` client.
//!
//! It owns the objects the service touches (namespaces, secrets, configmaps, nodes, clusterroles,
//! rolebindings and certificatesigningrequests with their `approval` and `status` subresources),
//! answers like kube-apiserver on those paths (including `Status` errors worded as the real
//! server words them), streams `?watch=true` events from a per-kind history, and plays
//! kube-controller-manager's `kubernetes.io/kube-apiserver-client` signer with a test CA.
//! It records every request (with its JSON body) and offers fault knobs (fail, delay, drop)
//! for resilience tests. It also stores Roles and ClusterRoleBindings, and answers
//! SubjectAccessReviews and SelfSubjectAccessReviews from the stored RBAC objects
//! (support/rbac.rs), for `liqo-auth check --pre`.
//!
//! It leaves out what the service does not depend on: enforcing authorization on requests, admission webhooks,
//! managed fields, garbage collection of owned objects, generic finalizers, `dryRun`, JSON
//! patch, and consistent snapshots for paginated lists. Server-side apply is a JSON merge of
//! the applied object (creating it when missing), and strategic merge patch is a JSON merge
//! patch, so lists are replaced rather than merged by key.
//!
//! Start it with [`FakeApiServer::start`] (plain HTTP) or [`FakeApiServer::start_tls`] (HTTPS,
//! client certificates checked against the test CA) and connect with
//! [`FakeApiServer::client`] or `kube::Client::try_from(fake.kube_config())`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng as _;
use rcgen::{CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch, Notify};
use tower::ServiceExt as _;

use super::pki::{self, SigningCa};

/// The signer name kube-controller-manager signs and the fake signer imitates.
pub const KUBE_APISERVER_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// Default certificate lifetime of kube-controller-manager (`--cluster-signing-duration`).
const DEFAULT_SIGNING_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Shortest lifetime the real signer issues, whatever `spec.expirationSeconds` asks for.
const MIN_SIGNING_DURATION: Duration = Duration::from_secs(600);
/// How far kube-controller-manager backdates `NotBefore` to tolerate clock skew.
const SIGNING_BACKDATE: Duration = Duration::from_secs(300);
/// kube-apiserver keeps `generateName` prefixes short enough for a 63-character result.
const MAX_GENERATE_NAME_PREFIX: usize = 58;
/// The alphabet of `k8s.io/apimachinery/pkg/util/rand.String` (no vowels, no look-alikes).
const GENERATE_NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A handle on a running fake API server. Cheap to clone; all clones share one server.
#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Inner>,
}

/// One request as the server received it, before any fault was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: Method,
    pub path: String,
    /// The raw query string, empty when there was none.
    pub query: String,
    /// Common name of the verified client certificate (TLS mode only).
    pub user: Option<String>,
    /// The request body as JSON (a YAML apply patch converted), when it had one that parses:
    /// what an RBAC check needs beyond the URL (a RoleBinding's `roleRef`, a CSR's signer).
    pub body: Option<Value>,
    /// The `Content-Type` without parameters, when sent.
    pub content_type: Option<String>,
}

impl RecordedRequest {
    /// The decoded value of one query parameter.
    pub fn query_param(&self, key: &str) -> Option<String> {
        parse_query(&self.query).remove(key)
    }

    /// Whether this request opened a watch stream.
    pub fn is_watch(&self) -> bool {
        matches!(self.query_param("watch").as_deref(), Some("true" | "1"))
    }
}

/// What the built-in kube-controller-manager does with `kube-apiserver-client` CSRs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignerMode {
    /// Sign approved CSRs (the default, like the real signer).
    #[default]
    Sign,
    /// Deny every new CSR right after it is created (an external approver saying no). The
    /// `Denied` condition lands as a separate write, so a later approval is rejected with 422
    /// (`Approved` and `Denied` are mutually exclusive) or 409 if it carries the old version.
    Deny,
    /// Add a `Failed` condition to approved CSRs instead of signing them.
    Fail,
    /// Never touch CSRs, as if no signer ran.
    Ignore,
}

/// How many injected faults have fired so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub failed: usize,
    pub delayed: usize,
    pub dropped: usize,
}

/// A client certificate and key issued by the test CA.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

impl FakeApiServer {
    /// Starts a plain-HTTP server on `127.0.0.1:0`. Every request acts as a cluster admin.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts an HTTPS server on `127.0.0.1:0` whose certificate (for `127.0.0.1` and
    /// `localhost`) is issued by the test CA. Client certificates are verified against that
    /// CA; requests without one get 401. With `require_client_cert` the TLS handshake itself
    /// fails without a certificate.
    pub async fn start_tls(require_client_cert: bool) -> Self {
        Self::start_with(Some(require_client_cert)).await
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// A `kube::Config` reaching this server. In TLS mode it trusts the test CA and presents
    /// an admin client certificate (CN `fake-apiserver-admin`, O `system:masters`).
    pub fn kube_config(&self) -> kube::Config {
        self.kube_config_with_identity(self.inner.admin.as_ref())
    }

    /// A `kube::Config` presenting `identity` as client certificate (or none), trusting the CA.
    pub fn kube_config_with_identity(&self, identity: Option<&ClientIdentity>) -> kube::Config {
        let mut config = kube::Config::new(self.url().parse().expect("the base URL is a valid URI"));
        if self.inner.tls {
            config.root_cert = Some(vec![self.inner.ca.der().to_vec()]);
        }
        if let Some(identity) = identity {
            config.auth_info = serde_json::from_value(json!({
                "client-certificate-data": BASE64.encode(&identity.cert_pem),
                "client-key-data": BASE64.encode(&identity.key_pem),
            }))
            .expect("AuthInfo deserialises from kubeconfig fields");
        }
        config
    }

    /// A `kube::Client` built from [`Self::kube_config`].
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.kube_config()).expect("kube client builds from the fake's config")
    }

    /// PEM of the test CA that issues the server certificate and signs approved CSRs.
    pub fn ca_pem(&self) -> String {
        self.inner.ca.pem()
    }

    /// Issues a client certificate from the test CA directly (no CSR object involved).
    pub fn issue_client_identity(&self, common_name: &str, organizations: &[&str]) -> ClientIdentity {
        issue_client_identity(&self.inner.ca, common_name, organizations)
    }

    /// Creates an object through the same code path as `POST` (defaults, validation, events),
    /// without recording a request or applying faults. `collection_path` is the path of the
    /// collection, e.g. `/api/v1/namespaces/default/secrets`; for namespaced kinds given
    /// without a namespace, the object's `metadata.namespace` is used. Panics on API errors.
    pub fn insert_json(&self, collection_path: &str, object: Value) -> Value {
        let target = parse_path(collection_path).unwrap_or_else(|| panic!("no resource at {collection_path}"));
        let Target::Collection { kind, namespace } = target else {
            panic!("{collection_path} is not a collection path");
        };
        let namespace = match (kind.info().namespaced, namespace) {
            (true, None) => Some(meta_str(&object, "namespace").to_owned()),
            (_, ns) => ns,
        };
        self.create(kind, namespace.as_deref(), object, &User::admin(), None)
            .unwrap_or_else(|e| panic!("seeding {collection_path} failed: {}", e.message))
    }

    /// Typed [`Self::insert_json`].
    pub fn insert<K>(&self, object: &K) -> K
    where
        K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let path = K::url_path(&(), object.meta().namespace.as_deref());
        let value = serde_json::to_value(object).expect("typed objects serialise");
        serde_json::from_value(self.insert_json(&path, value)).expect("stored object deserialises back")
    }

    /// The stored object, as a GET would return it. `kind` is the kind or plural resource
    /// name, in any case (`"Secret"`, `"secrets"`, `"CertificateSigningRequest"`).
    pub fn get_json(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let kind = Kind::from_name(kind);
        let state = self.lock();
        state.objects.get(&ObjectKey::new(kind, namespace, name)).map(|o| with_type_meta(kind, o.clone()))
    }

    /// All stored objects of a kind, across namespaces, in `namespace/name` order.
    pub fn list_json(&self, kind: &str) -> Vec<Value> {
        let kind = Kind::from_name(kind);
        let state = self.lock();
        state.objects.iter().filter(|(key, _)| key.kind == kind).map(|(_, o)| with_type_meta(kind, o.clone())).collect()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The next request whose method matches (any when `None`) and whose path and query
    /// contain `path_contains` is answered with a `Status` of that code and reason.
    pub fn fail_next(&self, method: Option<Method>, path_contains: &str, status: u16, reason: &str) {
        self.push_fault(method, path_contains, FaultAction::Fail { status, reason: reason.to_owned() });
    }

    /// The next matching request is held for `delay` before being served normally.
    pub fn delay_next(&self, method: Option<Method>, path_contains: &str, delay: Duration) {
        self.push_fault(method, path_contains, FaultAction::Delay(delay));
    }

    /// The next matching request gets no answer: its connection is closed.
    pub fn drop_next(&self, method: Option<Method>, path_contains: &str) {
        self.push_fault(method, path_contains, FaultAction::Drop);
    }

    /// How many injected faults have fired.
    pub fn fault_counts(&self) -> FaultCounts {
        self.lock().fault_counts
    }

    /// Chooses what the built-in signer does from now on.
    pub fn set_signer_mode(&self, mode: SignerMode) {
        self.lock().signer_mode = mode;
    }

    /// Makes the signer wait this long after an approval before acting.
    pub fn set_signing_delay(&self, delay: Duration) {
        self.lock().signing_delay = delay;
    }

    /// Ends every open watch stream cleanly (like an API server restart or a load balancer
    /// timeout). Clients re-watch from their last resourceVersion and get the missed events.
    pub fn close_watches(&self) {
        self.inner.closer.send_modify(|generation| *generation += 1);
    }

    /// Forgets the event history, so watches from any older resourceVersion get
    /// `410 Expired` and clients must list again (like etcd compaction).
    pub fn compact_history(&self) {
        let mut state = self.lock();
        state.history.clear();
        state.history_floor = state.resource_version;
    }

    /// Number of watch streams currently open.
    pub fn active_watches(&self) -> usize {
        self.inner.active_watches.load(Ordering::SeqCst)
    }

    /// Common names of the client certificates that authenticated, in request order.
    pub fn authenticated_users(&self) -> Vec<String> {
        self.lock().requests.iter().filter_map(|r| r.user.clone()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Server start-up, connections and the request pipeline.

struct Inner {
    base_url: String,
    tls: bool,
    ca: SigningCa,
    admin: Option<ClientIdentity>,
    state: Mutex<Store>,
    closer: watch::Sender<u64>,
    active_watches: AtomicUsize,
}

/// Who sent a request. In plain-HTTP mode everyone is the admin, like the old insecure port.
#[derive(Clone, Debug)]
struct User {
    name: String,
    groups: Vec<String>,
    /// Whether a client certificate proved this identity.
    authenticated_by_cert: bool,
}

impl User {
    fn admin() -> Self {
        Self {
            name: "system:admin".to_owned(),
            groups: vec!["system:masters".to_owned(), "system:authenticated".to_owned()],
            authenticated_by_cert: false,
        }
    }
}

/// Per-connection facts handed to the router through request extensions.
#[derive(Clone)]
struct ConnInfo {
    user: Option<User>,
    kill: Arc<Notify>,
}

impl FakeApiServer {
    async fn start_with(tls: Option<bool>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding 127.0.0.1:0");
        let addr: SocketAddr = listener.local_addr().expect("bound listener has an address");
        let ca = new_test_ca();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let admin = tls.map(|_| issue_client_identity(&ca, "fake-apiserver-admin", &["system:masters"]));
        let acceptor = tls.map(|require| tls_acceptor(&ca, require));
        let (events, _) = broadcast::channel(4096);
        let server = Self {
            inner: Arc::new(Inner {
                base_url: format!("{scheme}://{addr}"),
                tls: tls.is_some(),
                ca,
                admin,
                state: Mutex::new(Store::new(events)),
                closer: watch::channel(0).0,
                active_watches: AtomicUsize::new(0),
            }),
        };
        let router = server.router();
        tokio::spawn(accept_loop(listener, acceptor, router));
        server
    }

    fn router(&self) -> Router {
        Router::new()
            .fallback(handle_request)
            .layer(axum::middleware::from_fn_with_state(self.clone(), record_and_inject_faults))
            .with_state(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push_fault(&self, method: Option<Method>, path_contains: &str, action: FaultAction) {
        self.lock().faults.push(Fault { method, path_contains: path_contains.to_owned(), action });
    }
}

async fn accept_loop(listener: TcpListener, acceptor: Option<tokio_rustls::TlsAcceptor>, router: Router) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(tcp, Some(User::admin()), router).await,
                Some(acceptor) => {
                    // Handshake failures (no or untrusted client certificate) just end here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let user = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|c| user_from_cert(c));
                    serve_connection(tls, user, router).await;
                }
            }
        });
    }
}

async fn serve_connection<I>(io: I, user: Option<User>, router: Router)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let info = ConnInfo { user, kill: kill.clone() };
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(info.clone());
        router.clone().oneshot(req.map(Body::new))
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    // Dropping the connection future closes the socket without an answer (`drop_next`).
    tokio::select! {
        _ = connection => {}
        _ = kill.notified() => {}
    }
}

struct Fault {
    method: Option<Method>,
    path_contains: String,
    action: FaultAction,
}

enum FaultAction {
    Fail { status: u16, reason: String },
    Delay(Duration),
    Drop,
}

/// Records the request, applies at most one fault, then enforces authentication in TLS mode.
async fn record_and_inject_faults(AxState(server): AxState<FakeApiServer>, req: Request, next: Next) -> Response {
    let conn = req.extensions().get::<ConnInfo>().cloned().expect("every connection inserts ConnInfo");
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return ApiError::bad_request("request body too large or unreadable").into_response();
    };
    let recorded_body = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .or_else(|| std::str::from_utf8(&bytes).ok().and_then(|t| serde_yaml::from_str::<Value>(t).ok()))
        .filter(|v| !v.is_null());
    let req = Request::from_parts(parts, Body::from(bytes));
    let action = {
        let mut state = server.lock();
        let user = conn.user.as_ref().filter(|u| u.authenticated_by_cert).map(|u| u.name.clone());
        state.requests.push(RecordedRequest {
            method: method.clone(),
            path,
            query,
            user,
            body: recorded_body,
            content_type,
        });
        let position = state
            .faults
            .iter()
            .position(|f| f.method.as_ref().is_none_or(|m| *m == method) && path_and_query.contains(&f.path_contains));
        let action = position.map(|i| state.faults.remove(i).action);
        match &action {
            Some(FaultAction::Fail { .. }) => state.fault_counts.failed += 1,
            Some(FaultAction::Delay(_)) => state.fault_counts.delayed += 1,
            Some(FaultAction::Drop) => state.fault_counts.dropped += 1,
            None => {}
        }
        action
    };
    match action {
        Some(FaultAction::Fail { status, reason }) => {
            let message = format!("fake apiserver injected a {status} {reason} failure");
            return ApiError::new(status, &reason, message).into_response();
        }
        Some(FaultAction::Drop) => {
            conn.kill.notify_one();
            return std::future::pending().await;
        }
        Some(FaultAction::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    if conn.user.is_none() {
        return ApiError::new(401, "Unauthorized", "Unauthorized".to_owned()).into_response();
    }
    next.run(req).await
}

// ---------------------------------------------------------------------------------------------
// Routing and verbs.

/// The resource kinds the fake serves. Everything else is 404.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Namespace,
    Node,
    Secret,
    ConfigMap,
    ClusterRole,
    RoleBinding,
    Role,
    ClusterRoleBinding,
    CertificateSigningRequest,
    /// The renewal-proof ledger's records.
    Lease,
}

struct KindInfo {
    kind: &'static str,
    plural: &'static str,
    group: &'static str,
    namespaced: bool,
    names: NameRule,
}

/// How `metadata.name` is validated for a kind.
#[derive(Clone, Copy)]
enum NameRule {
    Dns1123Label,
    Dns1123Subdomain,
    /// RBAC objects and CSRs only need to be usable as a URL path segment.
    PathSegment,
}

impl Kind {
    const ALL: [Kind; 10] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::ClusterRole,
        Kind::RoleBinding,
        Kind::Role,
        Kind::ClusterRoleBinding,
        Kind::CertificateSigningRequest,
        Kind::Lease,
    ];

    fn info(self) -> KindInfo {
        let (kind, plural, group, namespaced, names) = match self {
            Kind::Namespace => ("Namespace", "namespaces", "", false, NameRule::Dns1123Label),
            Kind::Node => ("Node", "nodes", "", false, NameRule::Dns1123Subdomain),
            Kind::Secret => ("Secret", "secrets", "", true, NameRule::Dns1123Subdomain),
            Kind::ConfigMap => ("ConfigMap", "configmaps", "", true, NameRule::Dns1123Subdomain),
            Kind::ClusterRole => {
                ("ClusterRole", "clusterroles", "rbac.authorization.k8s.io", false, NameRule::PathSegment)
            }
            Kind::RoleBinding => {
                ("RoleBinding", "rolebindings", "rbac.authorization.k8s.io", true, NameRule::PathSegment)
            }
            Kind::Lease => ("Lease", "leases", "coordination.k8s.io", true, NameRule::Dns1123Subdomain),
            Kind::Role => ("Role", "roles", "rbac.authorization.k8s.io", true, NameRule::PathSegment),
            Kind::ClusterRoleBinding => {
                ("ClusterRoleBinding", "clusterrolebindings", "rbac.authorization.k8s.io", false, NameRule::PathSegment)
            }
            Kind::CertificateSigningRequest => (
                "CertificateSigningRequest",
                "certificatesigningrequests",
                "certificates.k8s.io",
                false,
                NameRule::PathSegment,
            ),
        };
        KindInfo { kind, plural, group, namespaced, names }
    }

    fn lookup(group: &str, plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.info().group == group && k.info().plural == plural)
    }

    /// Resolves a helper argument: kind or plural, any case. Panics on unknown kinds.
    fn from_name(name: &str) -> Kind {
        Kind::ALL
            .into_iter()
            .find(|k| k.info().kind.eq_ignore_ascii_case(name) || k.info().plural.eq_ignore_ascii_case(name))
            .unwrap_or_else(|| panic!("the fake apiserver does not serve {name:?}"))
    }

    fn api_version(self) -> String {
        match self.info().group {
            "" => "v1".to_owned(),
            group => format!("{group}/v1"),
        }
    }

    /// `secrets`, `certificatesigningrequests.certificates.k8s.io`: how errors name resources.
    fn qualified_resource(self) -> String {
        let info = self.info();
        match info.group {
            "" => info.plural.to_owned(),
            group => format!("{}.{group}", info.plural),
        }
    }

    /// `Secret`, `CertificateSigningRequest.certificates.k8s.io`: how `Invalid` names kinds.
    fn qualified_kind(self) -> String {
        let info = self.info();
        match info.group {
            "" => info.kind.to_owned(),
            group => format!("{}.{group}", info.kind),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subresource {
    Status,
    Approval,
}

#[derive(Debug, PartialEq, Eq)]
enum Target {
    Version,
    Collection { kind: Kind, namespace: Option<String> },
    Object { kind: Kind, namespace: Option<String>, name: String },
    Subresource { kind: Kind, namespace: Option<String>, name: String, sub: Subresource },
}

/// Maps a URL path onto a served resource, or `None` for a 404.
fn parse_path(path: &str) -> Option<Target> {
    if path == "/version" || path == "/version/" {
        return Some(Target::Version);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, ..] if Kind::lookup(group, plural).is_some_and(|k| k.info().namespaced) => {
            (Some((*ns).to_owned()), &rest[2..])
        }
        _ => (None, rest),
    };
    let kind = Kind::lookup(group, rest.first()?)?;
    let namespaced = kind.info().namespaced;
    match rest {
        [_] => Some(Target::Collection { kind, namespace }),
        [_, name] if !namespaced || namespace.is_some() => {
            Some(Target::Object { kind, namespace, name: (*name).to_owned() })
        }
        [_, name, sub] if kind == Kind::CertificateSigningRequest => {
            let sub = match *sub {
                "status" => Subresource::Status,
                "approval" => Subresource::Approval,
                _ => return None,
            };
            Some(Target::Subresource { kind, namespace, name: (*name).to_owned(), sub })
        }
        _ => None,
    }
}

fn parse_query(query: &str) -> HashMap<String, String> {
    let uri: Uri = format!("/?{query}").parse().unwrap_or_default();
    Query::<HashMap<String, String>>::try_from_uri(&uri).map(|q| q.0).unwrap_or_default()
}

async fn handle_request(
    AxState(server): AxState<FakeApiServer>,
    axum::Extension(conn): axum::Extension<ConnInfo>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = parse_query(uri.query().unwrap_or_default());
    let user = conn.user.unwrap_or_else(User::admin);
    match server.serve(&method, uri.path(), &query, &headers, &body, &user) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

impl FakeApiServer {
    fn serve(
        &self,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
        body: &[u8],
        user: &User,
    ) -> Result<Response, ApiError> {
        if let Some(kind) = path.strip_prefix("/apis/authorization.k8s.io/v1/") {
            if method == Method::POST && matches!(kind, "subjectaccessreviews" | "selfsubjectaccessreviews") {
                return self.access_review(parse_body(body)?, user, kind == "selfsubjectaccessreviews");
            }
            return Err(ApiError::path_not_found());
        }
        let target = parse_path(path).ok_or_else(ApiError::path_not_found)?;
        let field_manager = query.get("fieldManager").map(String::as_str);
        match (target, method.clone()) {
            (Target::Version, Method::GET) => Ok(json_response(200, version_info())),
            (Target::Collection { kind, namespace }, Method::GET) => {
                if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
                    self.watch(kind, namespace, query)
                } else {
                    let list = self.lock().list(kind, namespace.as_deref(), query)?;
                    Ok(json_response(200, list))
                }
            }
            (Target::Collection { kind, namespace }, Method::POST)
                if namespace.is_some() || !kind.info().namespaced =>
            {
                let object = self.create(kind, namespace.as_deref(), parse_body(body)?, user, None)?;
                Ok(json_response(201, with_type_meta(kind, object)))
            }
            (Target::Collection { kind, namespace }, Method::DELETE) => {
                let deleted = self.delete_collection(kind, namespace.as_deref(), query)?;
                Ok(json_response(200, deleted))
            }
            (Target::Object { kind, namespace, name }, Method::GET) => {
                let object = self.lock().get(kind, namespace.as_deref(), &name)?;
                Ok(json_response(200, with_type_meta(kind, object)))
            }
            (Target::Subresource { kind, namespace, name, .. }, Method::GET) => {
                let object = self.lock().get(kind, namespace.as_deref(), &name)?;
                Ok(json_response(200, with_type_meta(kind, object)))
            }
            (Target::Object { kind, namespace, name }, Method::PUT) => {
                let object = self.update(kind, namespace.as_deref(), &name, parse_body(body)?, None)?;
                Ok(json_response(200, with_type_meta(kind, object)))
            }
            (Target::Subresource { kind, namespace, name, sub }, Method::PUT) => {
                let object = self.update(kind, namespace.as_deref(), &name, parse_body(body)?, Some(sub))?;
                Ok(json_response(200, with_type_meta(kind, object)))
            }
            (Target::Object { kind, namespace, name }, Method::PATCH) => {
                let (status, object) =
                    self.patch(kind, namespace.as_deref(), &name, headers, body, None, field_manager, user)?;
                Ok(json_response(status, with_type_meta(kind, object)))
            }
            (Target::Subresource { kind, namespace, name, sub }, Method::PATCH) => {
                let (status, object) =
                    self.patch(kind, namespace.as_deref(), &name, headers, body, Some(sub), field_manager, user)?;
                Ok(json_response(status, with_type_meta(kind, object)))
            }
            (Target::Object { kind, namespace, name }, Method::DELETE) => {
                let options = if body.is_empty() { Value::Null } else { parse_body(body)? };
                let answer = self.delete(kind, namespace.as_deref(), &name, &options)?;
                Ok(json_response(200, answer))
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    /// A (Self)SubjectAccessReview answered from the stored Roles, ClusterRoles and bindings,
    /// as the RBAC authorizer would (support/rbac.rs). Creating a SubjectAccessReview about
    /// someone else needs `create subjectaccessreviews` itself; every user may ask about itself.
    fn access_review(&self, mut review: Value, user: &User, about_self: bool) -> Result<Response, ApiError> {
        let rbac = {
            let state = self.lock();
            let objects: Vec<Value> = state
                .objects
                .iter()
                .filter(|(key, _)| {
                    matches!(key.kind, Kind::ClusterRole | Kind::Role | Kind::ClusterRoleBinding | Kind::RoleBinding)
                })
                .map(|(key, object)| with_type_meta(key.kind, object.clone()))
                .collect();
            super::rbac::RbacObjects::from_json(&objects)
        };
        let kind = if about_self { "SelfSubjectAccessReview" } else { "SubjectAccessReview" };
        let requester = rbac.authorizer(&user.name, &user.groups);
        let create = super::rbac::Attributes::new("create", "authorization.k8s.io", "subjectaccessreviews", None, None);
        if !about_self && !requester.allows(&create) {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "subjectaccessreviews.authorization.k8s.io is forbidden: User \"{}\" cannot create resource \"subjectaccessreviews\" in API group \"authorization.k8s.io\" at the cluster scope",
                    user.name
                ),
            ));
        }
        let spec = review["spec"].clone();
        let Some(resource) = spec["resourceAttributes"].as_object() else {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!("{kind}.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified"),
            ));
        };
        let text = |key: &str| resource.get(key).and_then(Value::as_str).filter(|v| !v.is_empty());
        let resource_name = match (text("resource"), text("subresource")) {
            (Some(r), Some(sub)) => format!("{r}/{sub}"),
            (Some(r), None) => r.to_owned(),
            (None, _) => String::new(),
        };
        let attributes = super::rbac::Attributes::new(
            text("verb").unwrap_or_default(),
            text("group").unwrap_or_default(),
            &resource_name,
            text("namespace"),
            text("name"),
        );
        let subject = if about_self {
            requester
        } else {
            let groups: Vec<String> =
                spec["groups"].as_array().into_iter().flatten().filter_map(|g| g.as_str().map(str::to_owned)).collect();
            rbac.authorizer(spec["user"].as_str().unwrap_or_default(), &groups)
        };
        let allowed = subject.allows(&attributes);
        review["apiVersion"] = json!("authorization.k8s.io/v1");
        review["kind"] = json!(kind);
        review["status"] = if allowed {
            json!({"allowed": true, "reason": "RBAC: allowed by a role binding"})
        } else {
            json!({"allowed": false})
        };
        Ok(json_response(201, review))
    }

    /// Creates an object, then lets the simulated controllers react to it.
    fn create(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        body: Value,
        user: &User,
        url_name: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (created, mode) = {
            let mut state = self.lock();
            let created = state.create(kind, namespace, body, user, url_name)?;
            (created, state.signer_mode)
        };
        if kind == Kind::CertificateSigningRequest && mode == SignerMode::Deny && is_for_fake_signer(&created) {
            self.deny(&created);
        }
        self.after_write(kind, &created);
        Ok(created)
    }

    fn update(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        sub: Option<Subresource>,
    ) -> Result<Value, ApiError> {
        let updated = self.lock().update(kind, namespace, name, body, sub)?;
        self.after_write(kind, &updated);
        Ok(updated)
    }

    #[allow(clippy::too_many_arguments)]
    fn patch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        headers: &HeaderMap,
        body: &[u8],
        sub: Option<Subresource>,
        field_manager: Option<&str>,
        user: &User,
    ) -> Result<(u16, Value), ApiError> {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let patch: Value = match content_type.as_str() {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => parse_body(body)?,
            "application/apply-patch+yaml" => {
                if field_manager.is_none_or(str::is_empty) {
                    return Err(ApiError::bad_request(
                        "PATCH requests with apply content type must have fieldManager set",
                    ));
                }
                let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(&e.to_string()))?;
                let value: Value = serde_yaml::from_str(text)
                    .map_err(|e| ApiError::bad_request(&format!("error decoding YAML: {e}")))?;
                if !value.is_object() {
                    return Err(ApiError::bad_request("apply patch must be an object"));
                }
                let exists = self.lock().objects.contains_key(&ObjectKey::new(kind, namespace, name));
                if !exists && sub.is_none() {
                    let created = self.create(kind, namespace, value, user, Some(name))?;
                    return Ok((201, created));
                }
                value
            }
            _ => return Err(ApiError::unsupported_media_type()),
        };
        let current = self.lock().get(kind, namespace, name)?;
        let mut merged = with_type_meta(kind, current);
        merge_patch(&mut merged, &patch);
        Ok((200, self.update(kind, namespace, name, merged, sub)?))
    }

    fn delete(&self, kind: Kind, namespace: Option<&str>, name: &str, options: &Value) -> Result<Value, ApiError> {
        let answer = self.lock().delete(kind, namespace, name, options)?;
        if kind == Kind::Namespace {
            // Play the namespace controller: empty the namespace, then drop its finalizer.
            let server = self.clone();
            let name = name.to_owned();
            tokio::spawn(async move { server.lock().finalize_namespace(&name) });
        }
        Ok(answer)
    }

    fn delete_collection(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let mut list = state.list(kind, namespace, query)?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let mut deleted = Vec::new();
        for item in items {
            let ns = Some(meta_str(&item, "namespace")).filter(|ns| !ns.is_empty());
            if let Ok(object) = state.remove(kind, ns, meta_str(&item, "name")) {
                deleted.push(strip_type_meta(object));
            }
        }
        list["items"] = Value::Array(deleted);
        list["metadata"] = json!({ "resourceVersion": state.resource_version.to_string() });
        Ok(list)
    }

    /// Reactions of simulated controllers to a write.
    fn after_write(&self, kind: Kind, object: &Value) {
        if kind == Kind::CertificateSigningRequest && needs_signer(object) {
            self.schedule_signing(meta_str(object, "name").to_owned());
        }
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(&format!("couldn't get version/kind; json parse error: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("couldn't get version/kind; json parse error: expected an object"));
    }
    Ok(value)
}

fn json_response(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).expect("handlers use valid status codes");
    (status, [(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.4",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

// ---------------------------------------------------------------------------------------------
// The object store: every verb as a synchronous operation under one lock.

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ObjectKey {
    kind: Kind,
    namespace: String,
    name: String,
}

impl ObjectKey {
    fn new(kind: Kind, namespace: Option<&str>, name: &str) -> Self {
        Self { kind, namespace: namespace.unwrap_or_default().to_owned(), name: name.to_owned() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, kept in the history so late watchers can replay it.
#[derive(Debug)]
struct ChangeEvent {
    resource_version: u64,
    kind: Kind,
    event_type: EventType,
    /// The object after the change (its last state for deletions), without type meta.
    object: Value,
    /// The object before the change, for selector transitions.
    old: Option<Value>,
}

struct Store {
    resource_version: u64,
    objects: BTreeMap<ObjectKey, Value>,
    history: Vec<Arc<ChangeEvent>>,
    /// Watches from a resourceVersion below this get `410 Expired`.
    history_floor: u64,
    events: broadcast::Sender<Arc<ChangeEvent>>,
    requests: Vec<RecordedRequest>,
    faults: Vec<Fault>,
    fault_counts: FaultCounts,
    signer_mode: SignerMode,
    signing_delay: Duration,
}

impl Store {
    fn new(events: broadcast::Sender<Arc<ChangeEvent>>) -> Self {
        Self {
            resource_version: 1,
            objects: BTreeMap::new(),
            history: Vec::new(),
            history_floor: 0,
            events,
            requests: Vec::new(),
            faults: Vec::new(),
            fault_counts: FaultCounts::default(),
            signer_mode: SignerMode::default(),
            signing_delay: Duration::ZERO,
        }
    }

    /// Bumps the global resourceVersion, stores (or removes) the object and emits the event.
    fn commit(&mut self, key: ObjectKey, event_type: EventType, mut object: Value, old: Option<Value>) -> Value {
        self.resource_version += 1;
        let rv = self.resource_version;
        meta_mut(&mut object).insert("resourceVersion".to_owned(), Value::String(rv.to_string()));
        let kind = key.kind;
        if event_type == EventType::Deleted {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, object.clone());
        }
        let event = Arc::new(ChangeEvent { resource_version: rv, kind, event_type, object: object.clone(), old });
        self.history.push(event.clone());
        // Nobody listening is fine.
        let _ = self.events.send(event);
        object
    }

    fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.objects.get(&ObjectKey::new(kind, namespace, name)).cloned().ok_or_else(|| ApiError::not_found(kind, name))
    }

    fn list(&self, kind: Kind, namespace: Option<&str>, query: &HashMap<String, String>) -> Result<Value, ApiError> {
        let filter = Filter::from_query(kind, namespace, query)?;
        let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
            None | Some(Ok(0)) => None,
            Some(Ok(limit)) => Some(limit),
            Some(Err(_)) => return Err(ApiError::bad_request("limit must be a non-negative integer")),
        };
        let start_after = match query.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => Some(decode_continue(token)?),
            None => None,
        };
        let matching: Vec<(&ObjectKey, &Value)> = self
            .objects
            .iter()
            .filter(|(key, object)| key.kind == kind && filter.matches(object))
            .filter(|(key, _)| {
                start_after.as_ref().is_none_or(|after| (&key.namespace, &key.name) > (&after.0, &after.1))
            })
            .collect();
        let take = limit.unwrap_or(matching.len()).min(matching.len());
        let items: Vec<Value> = matching[..take].iter().map(|(_, o)| (*o).clone()).collect();
        let mut metadata = Map::new();
        metadata.insert("resourceVersion".to_owned(), Value::String(self.resource_version.to_string()));
        if take < matching.len() {
            let (last, _) = matching[take - 1];
            metadata.insert("continue".to_owned(), Value::String(encode_continue(self.resource_version, last)));
            if filter.is_everything() {
                metadata.insert("remainingItemCount".to_owned(), json!(matching.len() - take));
            }
        }
        Ok(json!({
            "kind": format!("{}List", kind.info().kind),
            "apiVersion": kind.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    fn create(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        mut object: Value,
        user: &User,
        url_name: Option<&str>,
    ) -> Result<Value, ApiError> {
        check_type_meta(kind, &object)?;
        check_namespace_matches(kind, &mut object, namespace)?;
        if !meta_str(&object, "resourceVersion").is_empty() {
            return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
        }
        let mut name = meta_str(&object, "name").to_owned();
        if let Some(url_name) = url_name {
            if name != url_name {
                return Err(ApiError::name_mismatch(&name, url_name));
            }
        }
        let generate_name = meta_str(&object, "generateName").to_owned();
        if name.is_empty() && !generate_name.is_empty() {
            name = self.generate_name(kind, namespace, &generate_name);
            meta_mut(&mut object).insert("name".to_owned(), Value::String(name.clone()));
        }
        if let Some(ns) = namespace.filter(|_| kind.info().namespaced) {
            match self.objects.get(&ObjectKey::new(Kind::Namespace, None, ns)) {
                None => return Err(ApiError::not_found(Kind::Namespace, ns)),
                Some(n) if !meta_str(n, "deletionTimestamp").is_empty() => {
                    return Err(ApiError::namespace_terminating(kind, &name, ns));
                }
                Some(_) => {}
            }
        }
        prepare_for_create(kind, &mut object, user)?;
        let errors = validate(kind, &object, None, None);
        if !errors.is_empty() {
            return Err(ApiError::invalid(kind, &name, errors));
        }
        let key = ObjectKey::new(kind, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(kind, &name));
        }
        let meta = meta_mut(&mut object);
        meta.insert("uid".to_owned(), Value::String(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".to_owned(), Value::String(now_rfc3339()));
        for system_field in ["deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"] {
            meta.remove(system_field);
        }
        Ok(self.commit(key, EventType::Added, strip_type_meta(object), None))
    }

    fn generate_name(&self, kind: Kind, namespace: Option<&str>, prefix: &str) -> String {
        let prefix: String = prefix.chars().take(MAX_GENERATE_NAME_PREFIX).collect();
        let mut rng = rand::rng();
        loop {
            let suffix: String = (0..5)
                .map(|_| GENERATE_NAME_ALPHABET[rng.random_range(0..GENERATE_NAME_ALPHABET.len())] as char)
                .collect();
            let name = format!("{prefix}{suffix}");
            if !self.objects.contains_key(&ObjectKey::new(kind, namespace, &name)) {
                return name;
            }
        }
    }

    fn update(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        mut body: Value,
        sub: Option<Subresource>,
    ) -> Result<Value, ApiError> {
        check_type_meta(kind, &body)?;
        if meta_str(&body, "name") != name {
            return Err(ApiError::name_mismatch(meta_str(&body, "name"), name));
        }
        check_namespace_matches(kind, &mut body, namespace)?;
        let key = ObjectKey::new(kind, namespace, name);
        let old = self.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(kind, name))?;
        let body_rv = meta_str(&body, "resourceVersion");
        if !body_rv.is_empty() && body_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(kind, name));
        }
        let mut new = prepare_for_update(kind, strip_type_meta(body), &old, sub)?;
        // System-owned metadata always comes from the stored object.
        for system_field in ["uid", "creationTimestamp", "deletionTimestamp", "resourceVersion", "generateName"] {
            match old["metadata"].get(system_field) {
                Some(v) => meta_mut(&mut new).insert(system_field.to_owned(), v.clone()),
                None => meta_mut(&mut new).remove(system_field),
            };
        }
        meta_mut(&mut new).remove("managedFields");
        let errors = validate(kind, &new, Some(&old), sub);
        if !errors.is_empty() {
            return Err(ApiError::invalid(kind, name, errors));
        }
        if new == old {
            // kube-apiserver skips no-op writes: same resourceVersion, no event.
            return Ok(old);
        }
        Ok(self.commit(key, EventType::Modified, new, Some(old)))
    }

    fn delete(&mut self, kind: Kind, namespace: Option<&str>, name: &str, options: &Value) -> Result<Value, ApiError> {
        let key = ObjectKey::new(kind, namespace, name);
        let old = self.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(kind, name))?;
        if let Some(uid) = options.pointer("/preconditions/uid").and_then(Value::as_str) {
            let actual = meta_str(&old, "uid");
            if uid != actual {
                let detail = format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}");
                return Err(ApiError::conflict_with(kind, name, &detail));
            }
        }
        if let Some(rv) = options.pointer("/preconditions/resourceVersion").and_then(Value::as_str) {
            let actual = meta_str(&old, "resourceVersion");
            if rv != actual {
                let detail = format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                );
                return Err(ApiError::conflict_with(kind, name, &detail));
            }
        }
        if kind == Kind::Namespace {
            // Namespaces carry the `kubernetes` finalizer: deletion first marks them Terminating
            // and returns the object; the namespace controller removes them later.
            if !meta_str(&old, "deletionTimestamp").is_empty() {
                return Ok(with_type_meta(kind, old));
            }
            let mut terminating = old.clone();
            meta_mut(&mut terminating).insert("deletionTimestamp".to_owned(), Value::String(now_rfc3339()));
            meta_mut(&mut terminating).insert("deletionGracePeriodSeconds".to_owned(), json!(0));
            terminating["status"] = json!({ "phase": "Terminating" });
            let stored = self.commit(key, EventType::Modified, terminating, Some(old));
            return Ok(with_type_meta(kind, stored));
        }
        let removed = self.remove(kind, namespace, name)?;
        let mut details = Map::new();
        details.insert("name".to_owned(), Value::String(name.to_owned()));
        if !kind.info().group.is_empty() {
            details.insert("group".to_owned(), Value::String(kind.info().group.to_owned()));
        }
        details.insert("kind".to_owned(), Value::String(kind.info().plural.to_owned()));
        details.insert("uid".to_owned(), Value::String(meta_str(&removed, "uid").to_owned()));
        Ok(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }))
    }

    /// Removes an object for good, emitting DELETED with a fresh resourceVersion.
    fn remove(&mut self, kind: Kind, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let key = ObjectKey::new(kind, namespace, name);
        let old = self.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(kind, name))?;
        Ok(self.commit(key, EventType::Deleted, old.clone(), Some(old)))
    }

    /// What the namespace controller does for a Terminating namespace.
    fn finalize_namespace(&mut self, namespace: &str) {
        let contents: Vec<ObjectKey> =
            self.objects.keys().filter(|k| k.kind.info().namespaced && k.namespace == namespace).cloned().collect();
        for key in contents {
            let _ = self.remove(key.kind, Some(namespace), &key.name);
        }
        let _ = self.remove(Kind::Namespace, None, namespace);
    }
}

fn check_type_meta(kind: Kind, object: &Value) -> Result<(), ApiError> {
    if let Some(api_version) = object.get("apiVersion").and_then(Value::as_str) {
        if api_version != kind.api_version() {
            return Err(ApiError::bad_request(&format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                kind.api_version()
            )));
        }
    }
    if let Some(k) = object.get("kind").and_then(Value::as_str) {
        if k != kind.info().kind {
            return Err(ApiError::bad_request(&format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.info().kind
            )));
        }
    }
    Ok(())
}

/// Defaults `metadata.namespace` from the URL and rejects a body naming another namespace.
fn check_namespace_matches(kind: Kind, object: &mut Value, namespace: Option<&str>) -> Result<(), ApiError> {
    let body_ns = meta_str(object, "namespace").to_owned();
    match namespace.filter(|_| kind.info().namespaced) {
        Some(ns) => {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta_mut(object).insert("namespace".to_owned(), Value::String(ns.to_owned()));
        }
        None => {
            meta_mut(object).remove("namespace");
        }
    }
    Ok(())
}

/// Per-kind defaulting and field resets on create (the registry strategies' PrepareForCreate).
fn prepare_for_create(kind: Kind, object: &mut Value, user: &User) -> Result<(), ApiError> {
    match kind {
        Kind::Secret => {
            merge_string_data(object)?;
            if object.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
                object["type"] = json!("Opaque");
            }
        }
        Kind::Namespace => {
            let name = meta_str(object, "name").to_owned();
            label_namespace(object, &name);
            object["spec"] = json!({ "finalizers": ["kubernetes"] });
            object["status"] = json!({ "phase": "Active" });
        }
        Kind::CertificateSigningRequest => {
            // Status is never accepted on create, and the requester is whoever authenticated.
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
            object["status"] = json!({});
            let spec = object.as_object_mut().and_then(|o| o.get_mut("spec")).and_then(Value::as_object_mut);
            if let Some(spec) = spec {
                spec.insert("username".to_owned(), Value::String(user.name.clone()));
                spec.insert("groups".to_owned(), json!(user.groups));
                spec.remove("uid");
                spec.remove("extra");
            }
        }
        Kind::Node
        | Kind::ConfigMap
        | Kind::ClusterRole
        | Kind::RoleBinding
        | Kind::Role
        | Kind::ClusterRoleBinding
        | Kind::Lease => {}
    }
    Ok(())
}

/// Per-kind field resets on update, and the subresource semantics.
fn prepare_for_update(kind: Kind, mut new: Value, old: &Value, sub: Option<Subresource>) -> Result<Value, ApiError> {
    match (kind, sub) {
        (Kind::Secret, None) => merge_string_data(&mut new)?,
        (Kind::Namespace, None) => {
            new["spec"] = old["spec"].clone();
            new["status"] = old["status"].clone();
            let name = meta_str(old, "name").to_owned();
            label_namespace(&mut new, &name);
        }
        (Kind::CertificateSigningRequest, None) => {
            // A plain update may change metadata only.
            new["spec"] = old["spec"].clone();
            new["status"] = old["status"].clone();
        }
        (Kind::CertificateSigningRequest, Some(Subresource::Status)) => {
            let mut status = new.get("status").cloned().unwrap_or_else(|| json!({}));
            default_condition_times(&mut status);
            new = old.clone();
            new["status"] = status;
        }
        (Kind::CertificateSigningRequest, Some(Subresource::Approval)) => {
            // The approval subresource replaces the conditions and nothing else.
            let mut status = json!({ "conditions": new.pointer("/status/conditions").cloned().unwrap_or(json!([])) });
            default_condition_times(&mut status);
            new = old.clone();
            if !new["status"].is_object() {
                new["status"] = json!({});
            }
            let status_map = new["status"].as_object_mut().expect("status was just made a map");
            match status["conditions"].take() {
                Value::Array(conditions) if !conditions.is_empty() => {
                    status_map.insert("conditions".to_owned(), Value::Array(conditions));
                }
                _ => {
                    status_map.remove("conditions");
                }
            }
        }
        _ => {}
    }
    Ok(new)
}

/// Folds write-only `stringData` into base64 `data`, as the API server's conversion does.
fn merge_string_data(object: &mut Value) -> Result<(), ApiError> {
    let Some(map) = object.as_object_mut() else {
        return Ok(());
    };
    if let Some(string_data) = map.remove("stringData") {
        let entries = string_data.as_object().cloned().unwrap_or_default();
        let data = map.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        for (key, value) in entries {
            let text = value.as_str().unwrap_or_default();
            data[key.as_str()] = Value::String(BASE64.encode(text));
        }
    }
    if let Some(data) = map.get("data").and_then(Value::as_object) {
        for value in data.values() {
            let text = value.as_str().unwrap_or_default();
            if let Err(e) = BASE64.decode(text) {
                return Err(ApiError::bad_request(&format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data: {e}"
                )));
            }
        }
    }
    Ok(())
}

fn label_namespace(object: &mut Value, name: &str) {
    let meta = meta_mut(object);
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels["kubernetes.io/metadata.name"] = Value::String(name.to_owned());
}

fn default_condition_times(status: &mut Value) {
    let now = now_rfc3339();
    if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        for condition in conditions {
            for field in ["lastUpdateTime", "lastTransitionTime"] {
                if condition.get(field).is_none_or(Value::is_null) {
                    condition[field] = Value::String(now.clone());
                }
            }
        }
    }
}

fn encode_continue(resource_version: u64, last: &ObjectKey) -> String {
    let token =
        json!({ "v": "meta.k8s.io/v1", "rv": resource_version, "start": format!("{}/{}", last.namespace, last.name) });
    BASE64.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = BASE64.decode(token).map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let start = value["start"].as_str().ok_or_else(invalid)?;
    let (ns, name) = start.split_once('/').ok_or_else(invalid)?;
    Ok((ns.to_owned(), name.to_owned()))
}

// ---------------------------------------------------------------------------------------------
// Validation, worded like k8s.io/apimachinery/pkg/util/validation.

#[derive(Clone, Debug)]
struct FieldError {
    field: String,
    kind: FieldErrorKind,
    detail: String,
}

#[derive(Clone, Debug)]
enum FieldErrorKind {
    /// Carries the offending value, already formatted as Go's `%#v` would.
    Invalid(String),
    Required,
    Forbidden,
    Duplicate(String),
    NotSupported(String),
}

impl FieldError {
    fn invalid(field: &str, value: &str, detail: &str) -> Self {
        Self { field: field.to_owned(), kind: FieldErrorKind::Invalid(go_quote(value)), detail: detail.to_owned() }
    }

    fn required(field: &str, detail: &str) -> Self {
        Self { field: field.to_owned(), kind: FieldErrorKind::Required, detail: detail.to_owned() }
    }

    fn forbidden(field: &str, detail: &str) -> Self {
        Self { field: field.to_owned(), kind: FieldErrorKind::Forbidden, detail: detail.to_owned() }
    }

    /// `Invalid value: "x": detail`, without the field path.
    fn message(&self) -> String {
        let head = match &self.kind {
            FieldErrorKind::Invalid(v) => format!("Invalid value: {v}"),
            FieldErrorKind::Required => "Required value".to_owned(),
            FieldErrorKind::Forbidden => "Forbidden".to_owned(),
            FieldErrorKind::Duplicate(v) => format!("Duplicate value: {v}"),
            FieldErrorKind::NotSupported(v) => format!("Unsupported value: {v}"),
        };
        if self.detail.is_empty() {
            head
        } else {
            format!("{head}: {}", self.detail)
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorKind::NotSupported(_) => "FieldValueNotSupported",
        }
    }
}

const DNS1123_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MESSAGE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const CONFIG_KEY_MESSAGE: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const CSR_USAGES: [&str; 22] = [
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
];

fn validate(kind: Kind, object: &Value, old: Option<&Value>, sub: Option<Subresource>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = meta_str(object, "name");
    if name.is_empty() {
        errors.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else {
        let problems = match kind.info().names {
            NameRule::Dns1123Label => dns1123_label_problems(name),
            NameRule::Dns1123Subdomain => dns1123_subdomain_problems(name),
            NameRule::PathSegment => path_segment_problems(name),
        };
        errors.extend(problems.into_iter().map(|p| FieldError::invalid("metadata.name", name, &p)));
    }
    if let Some(labels) = object.pointer("/metadata/labels").and_then(Value::as_object) {
        for (key, value) in labels {
            for problem in qualified_name_problems(key) {
                errors.push(FieldError::invalid("metadata.labels", key, &problem));
            }
            let value = value.as_str().unwrap_or_default();
            for problem in label_value_problems(value) {
                errors.push(FieldError::invalid("metadata.labels", value, &problem));
            }
        }
    }
    match kind {
        Kind::Lease => {
            // As the real validation: a lease duration, when given, is positive.
            if let Some(seconds) = object.pointer("/spec/leaseDurationSeconds").and_then(Value::as_i64) {
                if seconds <= 0 {
                    let value = seconds.to_string();
                    errors.push(FieldError::invalid("spec.leaseDurationSeconds", &value, "must be greater than 0"));
                }
            }
        }
        Kind::Secret | Kind::ConfigMap => {
            for field in ["data", "binaryData"] {
                if let Some(data) = object.get(field).and_then(Value::as_object) {
                    for key in data.keys() {
                        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
                            errors.push(FieldError::invalid(&format!("{field}[{key}]"), key, CONFIG_KEY_MESSAGE));
                        }
                    }
                }
            }
            if let Some(old) = old.filter(|o| o.get("immutable").and_then(Value::as_bool) == Some(true)) {
                for field in ["data", "binaryData"] {
                    if object.get(field) != old.get(field) {
                        errors.push(FieldError::forbidden(field, "field is immutable when `immutable` is set"));
                    }
                }
                if object.get("immutable") != old.get("immutable") {
                    errors.push(FieldError::forbidden("immutable", "field is immutable when `immutable` is set"));
                }
            }
        }
        Kind::RoleBinding | Kind::ClusterRoleBinding => {
            let role_ref = object.get("roleRef").cloned().unwrap_or(Value::Null);
            let ref_kind = role_ref["kind"].as_str().unwrap_or_default();
            if !matches!(ref_kind, "Role" | "ClusterRole") {
                errors.push(FieldError {
                    field: "roleRef.kind".to_owned(),
                    kind: FieldErrorKind::NotSupported(go_quote(ref_kind)),
                    detail: "supported values: \"Role\", \"ClusterRole\"".to_owned(),
                });
            }
            if role_ref["name"].as_str().is_none_or(str::is_empty) {
                errors.push(FieldError::required("roleRef.name", ""));
            }
            if let Some(old) = old {
                if old.get("roleRef") != object.get("roleRef") {
                    errors.push(FieldError {
                        field: "roleRef".to_owned(),
                        kind: FieldErrorKind::Invalid(role_ref.to_string()),
                        detail: "cannot change roleRef".to_owned(),
                    });
                }
            }
        }
        Kind::CertificateSigningRequest => errors.extend(validate_csr(object, old, sub)),
        Kind::Namespace | Kind::Node | Kind::ClusterRole | Kind::Role => {}
    }
    errors
}

fn validate_csr(object: &Value, old: Option<&Value>, sub: Option<Subresource>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if old.is_none() {
        let request = object.pointer("/spec/request").and_then(Value::as_str).unwrap_or_default();
        let pem = BASE64.decode(request).ok().and_then(|b| String::from_utf8(b).ok()).unwrap_or_default();
        if request.is_empty() {
            errors.push(FieldError::required("spec.request", ""));
        } else if !pem.contains("-----BEGIN CERTIFICATE REQUEST-----") {
            errors.push(FieldError {
                field: "spec.request".to_owned(),
                kind: FieldErrorKind::Invalid("[]byte{...}".to_owned()),
                detail: "PEM block type must be CERTIFICATE REQUEST".to_owned(),
            });
        }
        if object.pointer("/spec/signerName").and_then(Value::as_str).is_none_or(str::is_empty) {
            errors.push(FieldError::required("spec.signerName", ""));
        }
        match object.pointer("/spec/usages").and_then(Value::as_array) {
            Some(usages) if !usages.is_empty() => {
                for (i, usage) in usages.iter().enumerate() {
                    let usage = usage.as_str().unwrap_or_default();
                    if !CSR_USAGES.contains(&usage) {
                        let supported: Vec<String> = CSR_USAGES.iter().map(|u| go_quote(u)).collect();
                        errors.push(FieldError {
                            field: format!("spec.usages[{i}]"),
                            kind: FieldErrorKind::NotSupported(go_quote(usage)),
                            detail: format!("supported values: {}", supported.join(", ")),
                        });
                    }
                }
            }
            _ => errors.push(FieldError::required("spec.usages", "")),
        }
        if let Some(seconds) = object.pointer("/spec/expirationSeconds").and_then(Value::as_i64) {
            if seconds < MIN_SIGNING_DURATION.as_secs() as i64 {
                errors.push(FieldError {
                    field: "spec.expirationSeconds".to_owned(),
                    kind: FieldErrorKind::Invalid(seconds.to_string()),
                    detail: "may not specify a duration less than 600 seconds (10 minutes)".to_owned(),
                });
            }
        }
    }
    let conditions = object.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut seen = Vec::new();
    for (i, condition) in conditions.iter().enumerate() {
        let condition_type = condition["type"].as_str().unwrap_or_default();
        if condition_type.is_empty() {
            errors.push(FieldError::required(&format!("status.conditions[{i}].type"), ""));
        }
        if matches!(condition_type, "Approved" | "Denied" | "Failed") {
            if seen.contains(&condition_type) {
                errors.push(FieldError {
                    field: format!("status.conditions[{i}].type"),
                    kind: FieldErrorKind::Duplicate(go_quote(condition_type)),
                    detail: String::new(),
                });
            }
            seen.push(condition_type);
        }
    }
    if seen.contains(&"Approved") && seen.contains(&"Denied") {
        errors.push(FieldError::invalid(
            "status.conditions",
            "Denied",
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    if let Some(old) = old {
        let had = |t: &str| has_condition(old, t);
        if sub == Some(Subresource::Status) {
            for t in ["Approved", "Denied"] {
                if had(t) && !seen.contains(&t) {
                    errors.push(FieldError::forbidden(
                        "status.conditions",
                        &format!("updates may not remove a condition of type {t:?}"),
                    ));
                }
                if !had(t) && seen.contains(&t) {
                    errors.push(FieldError::forbidden(
                        "status.conditions",
                        &format!("updates may not add a condition of type {t:?}"),
                    ));
                }
            }
        }
        if sub == Some(Subresource::Approval) {
            for t in ["Approved", "Denied"] {
                if had(t) && !seen.contains(&t) {
                    errors.push(FieldError::forbidden(
                        "status.conditions",
                        &format!("updates may not remove a condition of type {t:?}"),
                    ));
                }
            }
        }
        let old_cert = old.pointer("/status/certificate").and_then(Value::as_str).unwrap_or_default();
        let new_cert = object.pointer("/status/certificate").and_then(Value::as_str).unwrap_or_default();
        if !old_cert.is_empty() && old_cert != new_cert {
            errors.push(FieldError::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
    }
    errors
}

fn dns1123_label_problems(name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if name.len() > 63 {
        problems.push("must be no more than 63 characters".to_owned());
    }
    if !is_dns1123_label(name) {
        problems.push(DNS1123_LABEL_MESSAGE.to_owned());
    }
    problems
}

fn dns1123_subdomain_problems(name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if name.len() > 253 {
        problems.push("must be no more than 253 characters".to_owned());
    }
    if !name.split('.').all(is_dns1123_label_chars) {
        problems.push(DNS1123_SUBDOMAIN_MESSAGE.to_owned());
    }
    problems
}

fn path_segment_problems(name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if name == "." || name == ".." {
        problems.push(format!("may not be '{name}'"));
    }
    for forbidden in ["/", "%"] {
        if name.contains(forbidden) {
            problems.push(format!("may not contain '{forbidden}'"));
        }
    }
    problems
}

fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_dns1123_label_chars(s)
}

fn is_dns1123_label_chars(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, non-empty.
fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

fn qualified_name_problems(key: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            problems.push("prefix part must be non-empty".to_owned());
        } else {
            problems.extend(dns1123_subdomain_problems(prefix).into_iter().map(|p| format!("prefix part {p}")));
        }
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".to_owned());
    } else {
        if name.len() > 63 {
            problems.push("name part must be no more than 63 characters".to_owned());
        }
        if !is_qualified_name_part(name) {
            problems.push(QUALIFIED_NAME_MESSAGE.to_owned());
        }
    }
    problems
}

fn label_value_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 63 {
        problems.push("must be no more than 63 characters".to_owned());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        problems.push(LABEL_VALUE_MESSAGE.to_owned());
    }
    problems
}

/// Go's `%q` for the strings that appear in validation messages.
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).expect("strings always serialise")
}

// ---------------------------------------------------------------------------------------------
// Label and field selectors.

#[derive(Debug)]
enum LabelRequirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl LabelRequirement {
    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let value = |key: &str| labels.get(key).and_then(Value::as_str);
        match self {
            Self::Exists(k) => value(k).is_some(),
            Self::NotExists(k) => value(k).is_none(),
            Self::Equals(k, v) => value(k) == Some(v.as_str()),
            // As in Kubernetes, `!=` also matches objects without the label.
            Self::NotEquals(k, v) => value(k) != Some(v.as_str()),
            Self::In(k, vs) => value(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Self::NotIn(k, vs) => value(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        }
    }
}

/// Splits on commas outside parentheses.
fn split_selector(selector: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts.into_iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect()
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, ApiError> {
    let bad =
        |part: &str| ApiError::bad_request(&format!("unable to parse requirement: invalid label selector: {part:?}"));
    let check_key = |key: &str, part: &str| {
        if key.is_empty() || !qualified_name_problems(key).is_empty() {
            Err(bad(part))
        } else {
            Ok(key.to_owned())
        }
    };
    let mut requirements = Vec::new();
    for part in split_selector(selector) {
        let requirement = if let Some(key) = part.strip_prefix('!') {
            LabelRequirement::NotExists(check_key(key.trim(), &part)?)
        } else if let Some((key, value)) = part.split_once("!=") {
            LabelRequirement::NotEquals(check_key(key.trim(), &part)?, value.trim().to_owned())
        } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
            LabelRequirement::Equals(check_key(key.trim(), &part)?, value.trim().to_owned())
        } else if let Some((key, rest)) = part.split_once(" notin ").or_else(|| part.split_once(" in ")) {
            let values = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| bad(&part))?
                .split(',')
                .map(|v| v.trim().to_owned())
                .collect();
            let key = check_key(key.trim(), &part)?;
            if part.contains(" notin ") {
                LabelRequirement::NotIn(key, values)
            } else {
                LabelRequirement::In(key, values)
            }
        } else {
            LabelRequirement::Exists(check_key(&part, &part)?)
        };
        requirements.push(requirement);
    }
    Ok(requirements)
}

#[derive(Debug)]
struct FieldRequirement {
    field: String,
    value: String,
    negated: bool,
}

fn parse_field_selector(kind: Kind, selector: &str) -> Result<Vec<FieldRequirement>, ApiError> {
    let mut requirements = Vec::new();
    for part in split_selector(selector) {
        let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
            (f, v, true)
        } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            (f, v, false)
        } else {
            return Err(ApiError::bad_request(&format!("invalid selector: '{part}'; can't understand '{part}'")));
        };
        let field = field.trim();
        let supported =
            matches!(field, "metadata.name" | "metadata.namespace") || (kind == Kind::Secret && field == "type");
        if !supported {
            return Err(ApiError::bad_request(&format!("field label not supported: {field}")));
        }
        requirements.push(FieldRequirement { field: field.to_owned(), value: value.trim().to_owned(), negated });
    }
    Ok(requirements)
}

/// Which objects a list or watch sees.
#[derive(Debug)]
struct Filter {
    kind: Kind,
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

impl Filter {
    fn from_query(kind: Kind, namespace: Option<&str>, query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let labels = match query.get("labelSelector") {
            Some(s) => parse_label_selector(s)?,
            None => Vec::new(),
        };
        let fields = match query.get("fieldSelector") {
            Some(s) => parse_field_selector(kind, s)?,
            None => Vec::new(),
        };
        Ok(Self { kind, namespace: namespace.map(str::to_owned), labels, fields })
    }

    fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    fn matches(&self, object: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if meta_str(object, "namespace") != ns {
                return false;
            }
        }
        let empty = Map::new();
        let labels = object.pointer("/metadata/labels").and_then(Value::as_object).unwrap_or(&empty);
        self.labels.iter().all(|r| r.matches(labels))
            && self.fields.iter().all(|r| {
                let actual = match r.field.as_str() {
                    "metadata.name" => meta_str(object, "name"),
                    "metadata.namespace" => meta_str(object, "namespace"),
                    _ => object.get("type").and_then(Value::as_str).unwrap_or_default(),
                };
                (actual == r.value) != r.negated
            })
    }

    /// Translates a change into what this watcher sees, following selector transitions:
    /// an object that starts matching is ADDED, one that stops matching is DELETED.
    fn translate(&self, event: &ChangeEvent) -> Option<(&'static str, Value)> {
        if event.kind != self.kind {
            return None;
        }
        let now = self.matches(&event.object);
        let before = event.old.as_ref().is_some_and(|o| self.matches(o));
        let event_type = match event.event_type {
            EventType::Added if now => "ADDED",
            EventType::Deleted if before || now => "DELETED",
            EventType::Modified if now && before => "MODIFIED",
            EventType::Modified if now => "ADDED",
            EventType::Modified if before => "DELETED",
            _ => return None,
        };
        Some((event_type, with_type_meta(self.kind, event.object.clone())))
    }
}

// ---------------------------------------------------------------------------------------------
// Watch streams.

struct WatchStream {
    pending: VecDeque<Value>,
    events: broadcast::Receiver<Arc<ChangeEvent>>,
    filter: Filter,
    closer: watch::Receiver<u64>,
    deadline: Option<tokio::time::Instant>,
    finished: bool,
    _guard: WatchGuard,
}

/// Keeps [`FakeApiServer::active_watches`] accurate, whichever way a stream ends.
struct WatchGuard(Arc<Inner>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.active_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeApiServer {
    fn watch(
        &self,
        kind: Kind,
        namespace: Option<String>,
        query: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let filter = Filter::from_query(kind, namespace.as_deref(), query)?;
        let timeout = match query.get("timeoutSeconds") {
            Some(t) => Some(t.parse::<u64>().map_err(|_| ApiError::bad_request("timeoutSeconds must be an integer"))?),
            None => None,
        };
        let send_initial_events = query.get("sendInitialEvents").map(String::as_str) == Some("true");
        let requested = query.get("resourceVersion").map(String::as_str).unwrap_or_default();
        let state = self.lock();
        let mut pending = VecDeque::new();
        let current = |state: &Store, pending: &mut VecDeque<Value>| {
            for (key, object) in &state.objects {
                if key.kind == kind && filter.matches(object) {
                    pending.push_back(watch_event("ADDED", with_type_meta(kind, object.clone())));
                }
            }
        };
        if send_initial_events {
            current(&state, &mut pending);
            let bookmark = json!({
                "kind": kind.info().kind,
                "apiVersion": kind.api_version(),
                "metadata": {
                    "resourceVersion": state.resource_version.to_string(),
                    "annotations": { "k8s.io/initial-events-end": "true" }
                }
            });
            pending.push_back(watch_event("BOOKMARK", bookmark));
        } else if requested.is_empty() || requested == "0" {
            current(&state, &mut pending);
        } else {
            let from: u64 = requested
                .parse()
                .map_err(|_| ApiError::bad_request(&format!("invalid resource version: {requested}")))?;
            if from < state.history_floor {
                let status = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {from} ({})", state.history_floor + 1),
                );
                pending.push_back(watch_event("ERROR", status.to_json()));
                let stream = futures::stream::iter(
                    pending.into_iter().map(|e| Ok::<_, Infallible>(Bytes::from(format!("{e}\n")))),
                );
                return Ok(streaming_response(Body::from_stream(stream)));
            }
            for event in state.history.iter().filter(|e| e.resource_version > from) {
                if let Some((event_type, object)) = filter.translate(event) {
                    pending.push_back(watch_event(event_type, object));
                }
            }
        }
        // Subscribing while still holding the lock means no change can slip between replay
        // and live events.
        let events = state.events.subscribe();
        drop(state);
        let mut closer = self.inner.closer.subscribe();
        closer.mark_unchanged();
        self.inner.active_watches.fetch_add(1, Ordering::SeqCst);
        let stream = WatchStream {
            pending,
            events,
            filter,
            closer,
            deadline: timeout.map(|t| tokio::time::Instant::now() + Duration::from_secs(t)),
            finished: false,
            _guard: WatchGuard(self.inner.clone()),
        };
        let body = futures::stream::unfold(stream, |mut s| async move {
            let line = s.next_line().await?;
            Some((Ok::<_, Infallible>(Bytes::from(line)), s))
        });
        Ok(streaming_response(Body::from_stream(body)))
    }
}

impl WatchStream {
    async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(format!("{event}\n"));
            }
            if self.finished {
                return None;
            }
            let deadline = self.deadline;
            let sleep = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = self.events.recv() => match received {
                    Ok(event) => {
                        if let Some((event_type, object)) = self.filter.translate(&event) {
                            self.pending.push_back(watch_event(event_type, object));
                        }
                    }
                    // A watcher that fell behind is cut off, as the real watch cache does.
                    Err(_) => self.finished = true,
                },
                _ = self.closer.changed() => self.finished = true,
                () = sleep => self.finished = true,
            }
        }
    }
}

fn watch_event(event_type: &str, object: Value) -> Value {
    json!({ "type": event_type, "object": object })
}

fn streaming_response(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache, private"));
    response
}

// ---------------------------------------------------------------------------------------------
// The simulated kube-controller-manager signer and the test PKI.

fn is_for_fake_signer(csr: &Value) -> bool {
    csr.pointer("/spec/signerName").and_then(Value::as_str) == Some(KUBE_APISERVER_CLIENT_SIGNER)
}

fn has_condition(csr: &Value, condition_type: &str) -> bool {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == condition_type && c["status"] == "True"))
}

/// Approved, for our signer, not yet signed and not failed.
fn needs_signer(csr: &Value) -> bool {
    is_for_fake_signer(csr)
        && has_condition(csr, "Approved")
        && !has_condition(csr, "Failed")
        && csr.pointer("/status/certificate").and_then(Value::as_str).is_none_or(str::is_empty)
}

impl FakeApiServer {
    fn schedule_signing(&self, name: String) {
        let server = self.clone();
        tokio::spawn(async move {
            let delay = server.lock().signing_delay;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            server.run_signer(&name);
        });
    }

    /// One reconcile of the signing controller for one CSR.
    fn run_signer(&self, name: &str) {
        let mut state = self.lock();
        let Ok(csr) = state.get(Kind::CertificateSigningRequest, None, name) else {
            return;
        };
        if !needs_signer(&csr) {
            return;
        }
        let outcome = match state.signer_mode {
            SignerMode::Ignore | SignerMode::Deny => return,
            SignerMode::Fail => Err(("FakeSignerFailure", "the fake signer was told to fail".to_owned())),
            SignerMode::Sign => sign_csr(&self.inner.ca, &csr).map_err(|m| ("SignerValidationFailure", m)),
        };
        let mut updated = with_type_meta(Kind::CertificateSigningRequest, csr);
        match outcome {
            Ok(cert_pem) => updated["status"]["certificate"] = Value::String(BASE64.encode(cert_pem)),
            Err((reason, message)) => push_condition(&mut updated, "Failed", reason, &message),
        }
        let _ = state.update(Kind::CertificateSigningRequest, None, name, updated, Some(Subresource::Status));
    }

    /// What an external approver saying no would write.
    fn deny(&self, csr: &Value) {
        let name = meta_str(csr, "name").to_owned();
        let mut updated = with_type_meta(Kind::CertificateSigningRequest, csr.clone());
        push_condition(&mut updated, "Denied", "FakeApiServerDenied", "denied by the fake apiserver's approver");
        let _ = self.lock().update(Kind::CertificateSigningRequest, None, &name, updated, Some(Subresource::Approval));
    }
}

fn push_condition(csr: &mut Value, condition_type: &str, reason: &str, message: &str) {
    let now = now_rfc3339();
    let condition = json!({
        "type": condition_type,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    });
    if !csr["status"].is_object() {
        csr["status"] = json!({});
    }
    match csr["status"].get_mut("conditions").and_then(Value::as_array_mut) {
        Some(conditions) => conditions.push(condition),
        None => csr["status"]["conditions"] = json!([condition]),
    }
}

/// Signs like kube-controller-manager's `kube-apiserver-client` signer: checks usages,
/// copies the subject and SANs, sets client-auth EKU and the requested (clamped) lifetime.
fn sign_csr(ca: &SigningCa, csr: &Value) -> Result<String, String> {
    let usages: Vec<&str> = csr
        .pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for usage in &usages {
        if !matches!(*usage, "digital signature" | "key encipherment" | "client auth") {
            return Err(format!("invalid usage for client certificate: {usage}"));
        }
    }
    if !usages.contains(&"client auth") {
        return Err("missing required usage for client certificate: client auth".to_owned());
    }
    let request = csr.pointer("/spec/request").and_then(Value::as_str).unwrap_or_default();
    let pem = BASE64.decode(request).ok().and_then(|b| String::from_utf8(b).ok()).ok_or("request is not base64 PEM")?;
    let mut parsed =
        CertificateSigningRequestParams::from_pem(&pem).map_err(|e| format!("unable to parse csr: {e}"))?;
    let lifetime = csr
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_u64)
        .map(|s| Duration::from_secs(s).max(MIN_SIGNING_DURATION))
        .unwrap_or(DEFAULT_SIGNING_DURATION)
        .min(DEFAULT_SIGNING_DURATION);
    let params = &mut parsed.params;
    let not_before = time::OffsetDateTime::now_utc() - SIGNING_BACKDATE;
    params.not_before = not_before;
    params.not_after = not_before + lifetime;
    params.serial_number = Some(pki::random_serial());
    params.is_ca = IsCa::NoCa;
    params.key_usages = usages
        .iter()
        .filter_map(|u| match *u {
            "digital signature" => Some(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => Some(KeyUsagePurpose::KeyEncipherment),
            _ => None,
        })
        .collect();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = parsed.signed_by(ca.issuer()).map_err(|e| format!("signing failed: {e}"))?;
    Ok(cert.pem())
}

fn new_test_ca() -> SigningCa {
    SigningCa::new("fake-apiserver-ca")
}

fn issue_client_identity(ca: &SigningCa, common_name: &str, organizations: &[&str]) -> ClientIdentity {
    let (cert_pem, key_pem) = ca.client_cert(common_name, organizations, DEFAULT_SIGNING_DURATION);
    ClientIdentity { cert_pem, key_pem }
}

fn tls_acceptor(ca: &SigningCa, require_client_cert: bool) -> tokio_rustls::TlsAcceptor {
    let serving = ca.server_cert("fake-apiserver", &["localhost", "127.0.0.1"]);

    // Never rely on a process-wide default provider: tests may link several.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("the test CA is a valid trust anchor");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let verifier = if require_client_cert { verifier } else { verifier.allow_unauthenticated() };
    let verifier = verifier.build().expect("client verifier builds");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(serving.chain, serving.key)
        .expect("server certificate and key match");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The user a verified client certificate stands for: CN is the name, O entries the groups.
fn user_from_cert(cert: &rustls::pki_types::CertificateDer<'_>) -> Option<User> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let mut groups: Vec<String> =
        subject.iter_organization().filter_map(|o| o.as_str().ok()).map(str::to_owned).collect();
    groups.push("system:authenticated".to_owned());
    Some(User { name, groups, authenticated_by_cert: true })
}

// ---------------------------------------------------------------------------------------------
// Errors as Kubernetes `Status` objects.

/// A failure answered as a `Status` with the matching HTTP code.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: String,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &str, message: String) -> Self {
        Self { code, reason: reason.to_owned(), message, details: None }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn resource_details(kind: Kind, name: &str) -> Value {
        let mut details = Map::new();
        details.insert("name".to_owned(), Value::String(name.to_owned()));
        if !kind.info().group.is_empty() {
            details.insert("group".to_owned(), Value::String(kind.info().group.to_owned()));
        }
        details.insert("kind".to_owned(), Value::String(kind.info().plural.to_owned()));
        Value::Object(details)
    }

    fn not_found(kind: Kind, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", kind.qualified_resource()))
            .with_details(Self::resource_details(kind, name))
    }

    fn already_exists(kind: Kind, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", kind.qualified_resource()))
            .with_details(Self::resource_details(kind, name))
    }

    fn conflict(kind: Kind, name: &str) -> Self {
        Self::conflict_with(
            kind,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    fn conflict_with(kind: Kind, name: &str, detail: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {detail}", kind.qualified_resource()),
        )
        .with_details(Self::resource_details(kind, name))
    }

    fn invalid(kind: Kind, name: &str, errors: Vec<FieldError>) -> Self {
        let rendered: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message())).collect();
        let summary = match rendered.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes: Vec<Value> =
            errors.iter().map(|e| json!({ "reason": e.reason(), "message": e.message(), "field": e.field })).collect();
        let mut details = Map::new();
        details.insert("name".to_owned(), Value::String(name.to_owned()));
        if !kind.info().group.is_empty() {
            details.insert("group".to_owned(), Value::String(kind.info().group.to_owned()));
        }
        details.insert("kind".to_owned(), Value::String(kind.info().kind.to_owned()));
        details.insert("causes".to_owned(), Value::Array(causes));
        Self::new(422, "Invalid", format!("{} \"{name}\" is invalid: {summary}", kind.qualified_kind()))
            .with_details(Value::Object(details))
    }

    fn namespace_terminating(kind: Kind, name: &str, namespace: &str) -> Self {
        let detail = format!("unable to create new content in namespace {namespace} because it is being terminated");
        let mut details = Self::resource_details(kind, name);
        details["causes"] =
            json!([{ "reason": "NamespaceTerminating", "message": detail, "field": "metadata.namespace" }]);
        Self::new(403, "Forbidden", format!("{} \"{name}\" is forbidden: {detail}", kind.qualified_resource()))
            .with_details(details)
    }

    fn name_mismatch(body_name: &str, url_name: &str) -> Self {
        Self::bad_request(&format!(
            "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
        ))
    }

    fn bad_request(message: &str) -> Self {
        Self::new(400, "BadRequest", message.to_owned())
    }

    fn path_not_found() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource".to_owned())
            .with_details(json!({}))
    }

    fn method_not_allowed() -> Self {
        Self::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource".to_owned())
            .with_details(json!({}))
    }

    fn unsupported_media_type() -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml".to_owned(),
        )
    }

    fn to_json(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.code, self.to_json())
    }
}

// ---------------------------------------------------------------------------------------------
// JSON helpers.

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or_default()
}

/// `metadata` as a mutable map, created if missing. Callers have checked `object` is a map.
fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let map = object.as_object_mut().expect("object was just made a map");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("metadata was just made a map")
}

/// Objects are stored without `kind`/`apiVersion`; single-object answers add them back,
/// while list items go out without them, as kube-apiserver's JSON does.
fn with_type_meta(kind: Kind, mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.insert("kind".to_owned(), Value::String(kind.info().kind.to_owned()));
        map.insert("apiVersion".to_owned(), Value::String(kind.api_version()));
    }
    object
}

fn strip_type_meta(mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    object
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("target was just made a map");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
