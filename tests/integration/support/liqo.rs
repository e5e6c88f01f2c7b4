//! A fake provider cluster as Liqo installs it: the Liqo namespace, the cluster-ID ConfigMap and
//! the basic peering ClusterRole, plus a kubeconfig file pointing at the fake for CLI tests.
//!
//! And `LiqoClient`, a consumer that behaves like Liqo's own (Go `net/http`, `pkg/auth`): the
//! auth URL joined to `/ids` by string concatenation (so `https://host:port/` requests `//ids`),
//! HTTP/1.1 over TLS without ALPN and any server certificate accepted, `Content-Type:
//! text/plain`, a new key for every identity request, keep-alive connections reused, and
//! redirects followed as Go's client follows them (301/302/303 become a GET without body,
//! 307/308 repeat method and body; at most 10).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::fake_apiserver::FakeApiServer;
use super::pki::{self, KeyType};

pub const NS: &str = "liqo";
pub const PROVIDER_ID: &str = "8c1f2d3e-4f5a-4b7c-9d8e-aaaaaaaaaaaa";

/// Seeds what a Liqo installation has before liqo-auth starts.
pub fn seed_liqo_cluster(fake: &FakeApiServer) {
    fake.insert_json("/api/v1/namespaces", serde_json::json!({"metadata": {"name": NS}}));
    fake.insert_json(
        "/api/v1/namespaces/liqo/configmaps",
        serde_json::json!({"metadata": {"name": "liqo-clusterid-configmap"}, "data": {"CLUSTER_ID": PROVIDER_ID, "CLUSTER_NAME": "provider"}}),
    );
    fake.insert_json(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        serde_json::json!({
            "metadata": {"name": "liqo-remote-peering-basic", "labels": {"auth.liqo.io/remote-peering-permissions": "basic"}},
            "rules": [{"apiGroups": ["discovery.liqo.io"], "resources": ["resourcerequests"], "verbs": ["*"]}]
        }),
    );
}

/// Writes a kubeconfig for the fake (plain HTTP, admin) into `dir` and returns its path.
pub fn write_kubeconfig(fake: &FakeApiServer, dir: &Path) -> PathBuf {
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url()}}],
        "users": [{"name": "admin", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "admin"}}],
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kubeconfig.to_string()).expect("kubeconfig written");
    path
}

/// A consumer cluster talking to one auth URL as Liqo does.
pub struct LiqoClient {
    auth_url: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    connection: Option<(String, SendRequest<Full<Bytes>>)>,
    /// Connections opened so far (keep-alive reuse keeps this low).
    pub connections: usize,
}

/// What one call came to, after redirects.
#[derive(Debug)]
pub struct LiqoAnswer {
    pub status: StatusCode,
    pub body: Bytes,
    /// Each redirect followed: its status and `Location`.
    pub redirects: Vec<(StatusCode, String)>,
}

impl LiqoAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

impl LiqoClient {
    /// A client for `auth_url` (`http://` or `https://`, possibly with a trailing slash).
    pub fn new(auth_url: &str) -> Self {
        let tls = auth_url.starts_with("https://").then(|| {
            // Go's client offers no ALPN when its Transport has a custom TLS config, as Liqo's does.
            Arc::new(pki::any_server_client_config(&[]))
        });
        Self { auth_url: auth_url.to_owned(), tls, connection: None, connections: 0 }
    }

    /// `GET <auth URL>/ids`, as `GetClusterInfo` builds it.
    pub async fn ids(&mut self) -> LiqoAnswer {
        let url = format!("{}/ids", self.auth_url);
        self.call(Method::GET, &url, None).await
    }

    /// `POST <auth URL>/identity/certificate` with a CSR for a brand-new key, as Liqo's
    /// identity request makes one per attempt. Returns the answer and the key's CSR (PEM).
    pub async fn request_identity(
        &mut self,
        cluster_id: &str,
        cluster_name: &str,
        token: &str,
        origin: Option<&str>,
    ) -> (LiqoAnswer, String) {
        let csr = pki::liqo_csr(&pki::key(KeyType::P256), cluster_id);
        let answer = self.post_identity(cluster_id, cluster_name, token, origin, &csr).await;
        (answer, csr)
    }

    /// The same with a given CSR (a replay of earlier bytes).
    pub async fn post_identity(
        &mut self,
        cluster_id: &str,
        cluster_name: &str,
        token: &str,
        origin: Option<&str>,
        csr_pem: &str,
    ) -> LiqoAnswer {
        let body = super::app::certificate_body(cluster_id, cluster_name, token, csr_pem, origin);
        let url = format!("{}/identity/certificate", self.auth_url);
        self.call(Method::POST, &url, Some(Bytes::from(body))).await
    }

    /// One request, following redirects like Go's `http.Client`.
    pub async fn call(&mut self, method: Method, url: &str, body: Option<Bytes>) -> LiqoAnswer {
        let (mut method, mut url, mut body) = (method, url.to_owned(), body);
        let mut redirects = Vec::new();
        loop {
            let response = self.send(&method, &url, body.clone()).await;
            let status = response.status();
            let location =
                response.headers().get(http::header::LOCATION).map(|v| v.to_str().expect("ASCII").to_owned());
            let bytes = response.into_body().collect().await.expect("response body").to_bytes();
            let Some(location) = location.filter(|_| status.is_redirection()) else {
                return LiqoAnswer { status, body: bytes, redirects };
            };
            assert!(redirects.len() < 10, "stopped after 10 redirects: {redirects:?}");
            redirects.push((status, location.clone()));
            if matches!(status.as_u16(), 301..=303) && method != Method::HEAD {
                (method, body) = (Method::GET, None);
            }
            url = resolve(&url, &location);
        }
    }

    async fn send(
        &mut self,
        method: &Method,
        url: &str,
        body: Option<Bytes>,
    ) -> hyper::Response<hyper::body::Incoming> {
        let (authority, target) = split_url(url);
        let mut request = Request::builder().method(method.clone()).uri(target).header("host", authority);
        if body.is_some() {
            request = request.header("content-type", "text/plain");
        }
        let request = request.body(Full::new(body.unwrap_or_default())).expect("request");
        let sender = self.sender(authority).await;
        sender.send_request(request).await.expect("request sent and answered")
    }

    /// The kept-alive connection to `authority`, or a new one.
    async fn sender(&mut self, authority: &str) -> &mut SendRequest<Full<Bytes>> {
        let reusable = match &mut self.connection {
            Some((open, sender)) if open == authority => sender.ready().await.is_ok(),
            _ => false,
        };
        if !reusable {
            let tcp = TcpStream::connect(authority).await.expect("connect");
            let sender = match &self.tls {
                Some(config) => {
                    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .expect("TLS handshake");
                    assert_eq!(tls.get_ref().1.alpn_protocol(), None, "no ALPN offered, none chosen");
                    handshake(TokioIo::new(tls)).await
                }
                None => handshake(TokioIo::new(tcp)).await,
            };
            self.connections += 1;
            self.connection = Some((authority.to_owned(), sender));
        }
        &mut self.connection.as_mut().expect("a connection was just set").1
    }
}

async fn handshake<T>(io: TokioIo<T>) -> SendRequest<Full<Bytes>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await.expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}

/// `scheme://authority/target` -> (authority, target) with the target exactly as written (Go
/// sends `//ids` as it is).
fn split_url(url: &str) -> (&str, &str) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let slash = rest.find('/').unwrap_or(rest.len());
    let target = if slash == rest.len() { "/" } else { &rest[slash..] };
    (&rest[..slash], target)
}

/// Resolves a `Location` against the URL it answered, as Go's client does for the forms a server
/// sends (absolute URL, or an absolute path on the same origin).
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let (scheme, rest) = base.split_once("://").expect("absolute base URL");
    let authority = rest.split('/').next().unwrap_or(rest);
    assert!(location.starts_with('/'), "relative Location {location:?} is not an absolute path");
    format!("{scheme}://{authority}{location}")
}
