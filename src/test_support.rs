//! Test-only PKI and loopback servers (unit tests, and integration tests through the
//! `test-support` feature): a small CA built with rcgen, and
//! servers on `127.0.0.1:0` that answer like liqo-auth (`/ids`), like an API server (`/version`),
//! or misbehave (plain HTTP where TLS is expected, a fixed raw reply, silence).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A throw-away certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

/// A server certificate chain (leaf, CA) and its key.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("self-sign CA");
        Self { der: cert.der().clone(), pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    pub fn pem(&self) -> String {
        self.pem.clone()
    }

    pub fn server_cert(&self, sans: &[&str]) -> ServerCert {
        self.issue(sans, |_| {})
    }

    pub fn expired_server_cert(&self, sans: &[&str]) -> ServerCert {
        self.issue(sans, |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    pub fn issue(&self, sans: &[&str], adjust: impl FnOnce(&mut CertificateParams)) -> ServerCert {
        let key = KeyPair::generate().expect("generate server key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "liqo-auth test server");
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).expect("sign server cert");
        ServerCert {
            chain: vec![cert.der().clone(), self.der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

/// A loopback server running until the test ends.
pub struct TestServer {
    pub addr: SocketAddr,
}

impl TestServer {
    /// HTTPS with the given certificate, serving [`liqo_like`] routes.
    pub async fn tls(cert: ServerCert) -> Self {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(cert.chain, cert.key)
                .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("listener address");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(TokioIo::new(tls)).await;
                    }
                });
            }
        });
        Self { addr }
    }

    /// Plain HTTP serving [`liqo_like`] routes.
    pub async fn plain() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("listener address");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve(TokioIo::new(tcp)));
            }
        });
        Self { addr }
    }

    /// Reads what the client sends, writes `reply` and closes.
    pub async fn raw(reply: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("listener address");
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = tcp.read(&mut buf).await;
                    let _ = tcp.write_all(reply).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        Self { addr }
    }

    /// Accepts connections and never answers.
    pub async fn silent() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("listener address");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        Self { addr }
    }

    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A loopback address where nothing listens (bound, then released).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("listener address")
}

async fn serve<IO>(io: TokioIo<IO>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service_fn(liqo_like)).await;
}

/// `/ids` like liqo-auth, `/version` like an API server refusing anonymous users, `/echo`
/// returning `content-type:body`, `/huge` a 2 MiB body, 404 otherwise.
async fn liqo_like(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let content_type =
        request.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let (status, body) = match path.as_str() {
        "/ids" => (StatusCode::OK, Bytes::from_static(br#"{"clusterId":"provider-1","clusterName":"milan"}"#)),
        "/version" => (StatusCode::UNAUTHORIZED, Bytes::from_static(br#"{"kind":"Status","code":401}"#)),
        "/echo" => (StatusCode::OK, Bytes::from([content_type.as_bytes(), b":", &body].concat())),
        "/huge" => (StatusCode::OK, Bytes::from(vec![b'x'; 2 * 1024 * 1024])),
        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"404 page not found\n")),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    Ok(response)
}
