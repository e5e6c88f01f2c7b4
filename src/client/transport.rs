//! The HTTP(S) transport every client command (`peer`, `check`, `discover`) uses to reach another
//! cluster's liqo-auth service.
//!
//! It owns URL parsing, DNS, TCP, the TLS trust decision ([`ServerTrust`]) and one HTTP/1.1
//! exchange per connection, and turns failures into a [`TransportError`] that says which step
//! failed and why (refused vs filtered, pin mismatch, plain HTTP on a TLS port, ...). Retries,
//! status-code interpretation and printing are left to the commands.
//!
//! TLS always uses the `ring` provider explicitly, TLS 1.2 or 1.3, and ALPN `http/1.1`.
//! A new connection is made per request: client commands make a handful of calls, and a fresh
//! connection keeps the failure of each call attributable to one step.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use std::{error::Error as StdError, fmt};

use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::pki;

/// Largest response body a client accepts; liqo-auth answers are a few kilobytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How the client decides whether to trust the server's TLS certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerTrust {
    /// The operating system's root certificates; chain and host name are verified.
    SystemRoots,
    /// A PEM bundle of CA certificates; chain and host name are verified.
    CaPem(Vec<u8>),
    /// SHA-256 pins of a SubjectPublicKeyInfo, kubeadm style (`--ca-hash sha256:...`).
    ///
    /// The server is trusted when the pin matches its own certificate (like an SSH host key: its
    /// dates and names are not checked), or when it matches another certificate of the presented
    /// chain that the server certificate chains up to (signatures and validity periods checked,
    /// host name not). The handshake signature is always verified, so the server must hold the
    /// private key of the certificate it presents.
    Pin(Vec<[u8; 32]>),
    /// No verification of the certificate at all (handshake signatures are still checked).
    /// Only for `--insecure-skip-tls-verify`; the caller warns.
    InsecureSkipVerify,
}

/// A client for one liqo-auth base URL (`https://HOST[:PORT][/PREFIX]`, or `http://`).
///
/// Plain `http://` is supported because the reference server can run without TLS; the trust
/// setting is then unused and the caller should warn that tokens travel in clear text.
#[derive(Clone)]
pub struct AuthClient {
    endpoint: Endpoint,
    tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
    /// Addresses to connect to instead of resolving the host (see [`AuthClient::connecting_to`]).
    addresses: Option<Vec<SocketAddr>>,
}

/// A complete HTTP response. `Debug` omits the body: a 401 from the reference server echoes the
/// token that was sent.
#[derive(Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body, at most [`MAX_BODY_BYTES`].
    pub body: Bytes,
    /// DER certificates the server presented, leaf first; empty for plain HTTP.
    pub peer_certificates: Vec<Vec<u8>>,
}

/// Why a request did not produce a response. Messages never contain tokens or bodies.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The base URL or request path is unusable.
    #[error("invalid URL {url:?}: {problem}")]
    ParseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        problem: UrlProblem,
    },
    /// The configured trust anchors or pins could not be loaded.
    #[error("loading the certificates to trust: {problem}")]
    LoadTrust {
        /// What is wrong with them.
        problem: TrustProblem,
    },
    /// The host name did not resolve to any address.
    #[error("could not resolve host {host:?}")]
    Resolve {
        /// Host name from the URL.
        host: String,
        /// Resolver error.
        #[source]
        source: io::Error,
    },
    /// No TCP connection could be made.
    #[error("connecting to {addr}: {failure}")]
    Connect {
        /// The last address tried.
        addr: SocketAddr,
        /// Refused, timed out, unreachable...
        failure: ConnectFailure,
        /// OS error, absent on timeout.
        #[source]
        source: Option<io::Error>,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {server_name} at {addr}: {failure}")]
    TlsHandshake {
        /// Name the certificate was checked against.
        server_name: String,
        /// Peer address.
        addr: SocketAddr,
        /// Classified cause.
        failure: TlsFailure,
        /// The rustls or I/O error. Not the error's `source`: `failure` already says what it
        /// means (rustls' own text is debug output such as `Other(OtherError(PinMismatch..))`),
        /// and `TlsFailure::Other` carries rustls' description.
        cause: io::Error,
    },
    /// The URL says `http://` but the server speaks TLS on that port.
    #[error("{addr} answered with TLS but the URL uses plain http://; use https://")]
    TlsOnPlainPort {
        /// Peer address.
        addr: SocketAddr,
    },
    /// A step after TCP connect did not finish within the request timeout.
    #[error("{phase} did not finish within {after:?}")]
    Timeout {
        /// The step that was running.
        phase: Phase,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The HTTP exchange itself failed (connection reset, malformed response...).
    #[error("HTTP exchange with {authority} failed")]
    Http {
        /// `host:port` of the server.
        authority: String,
        /// hyper's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The response body is larger than [`MAX_BODY_BYTES`].
    #[error("response body from {authority} is larger than {limit} bytes")]
    BodyTooLarge {
        /// `host:port` of the server.
        authority: String,
        /// The limit that was exceeded.
        limit: usize,
    },
}

/// What is wrong with a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlProblem {
    /// Not a URL at all.
    Malformed,
    /// Scheme other than `https` or `http`.
    UnsupportedScheme,
    /// No host.
    MissingHost,
    /// The host is not a valid DNS name or IP address.
    InvalidHost,
    /// The request path does not start with `/` or has invalid characters.
    InvalidPath,
}

/// What is wrong with the configured trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustProblem {
    /// The PEM bundle holds no `CERTIFICATE` block.
    NoCertificateInPem,
    /// The PEM bundle is not valid PEM.
    InvalidPem,
    /// A certificate of the bundle is not usable as a trust anchor.
    InvalidCaCertificate,
    /// The operating system offered no root certificates.
    NoSystemRoots,
    /// Pin trust with an empty pin list.
    NoPins,
}

/// Why a TCP connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The host answered with a reset: nothing listens on that port.
    Refused,
    /// No answer at all: packets are dropped (firewall) or the address is not routable.
    TimedOut,
    /// The OS has no route to the network or host.
    Unreachable,
    /// Any other OS error.
    Other,
}

/// Classified cause of a failed TLS handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// No pin matched; holds the `sha256:` pins of the presented certificates, leaf first.
    PinMismatch {
        /// Pins of the presented chain.
        presented: Vec<String>,
    },
    /// The chain does not lead to a trusted CA.
    UnknownIssuer,
    /// The server certificate (or one in its chain) has expired.
    Expired,
    /// The server certificate is not valid yet.
    NotYetValid,
    /// The certificate is not valid for the host name of the URL.
    NameMismatch,
    /// The server answered plain HTTP on the TLS port.
    NotTls,
    /// The server closed the connection during the handshake.
    PeerClosed,
    /// The server aborted the handshake with a TLS alert.
    AlertReceived(String),
    /// Anything else, with rustls' description.
    Other(String),
}

/// A step of a request, for timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// DNS resolution.
    Resolve,
    /// The TLS handshake.
    TlsHandshake,
    /// Sending the request and reading the response head.
    Request,
    /// Reading the response body.
    ResponseBody,
}

impl ServerTrust {
    /// Builds the rustls certificate verifier for this trust setting.
    pub(crate) fn verifier(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ServerCertVerifier>, TransportError> {
        let load = |problem| TransportError::LoadTrust { problem };
        match self {
            ServerTrust::SystemRoots => {
                let loaded = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
                if added == 0 {
                    return Err(load(TrustProblem::NoSystemRoots));
                }
                webpki_verifier(roots, provider)
            }
            ServerTrust::CaPem(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|_| load(TrustProblem::InvalidPem))?;
                    roots.add(cert).map_err(|_| load(TrustProblem::InvalidCaCertificate))?;
                }
                if roots.is_empty() {
                    return Err(load(TrustProblem::NoCertificateInPem));
                }
                webpki_verifier(roots, provider)
            }
            ServerTrust::Pin(pins) if pins.is_empty() => Err(load(TrustProblem::NoPins)),
            ServerTrust::Pin(pins) => {
                Ok(Arc::new(PinVerifier { pins: pins.clone(), signatures: HandshakeSignatures::new(provider) }))
            }
            ServerTrust::InsecureSkipVerify => {
                Ok(Arc::new(AnyCertificate { signatures: HandshakeSignatures::new(provider) }))
            }
        }
    }
}

impl AuthClient {
    /// Prepares a client for `base_url`. Nothing is contacted yet; the trust anchors are loaded
    /// now so that a bad `--ca-file` fails before any network traffic.
    pub fn new(base_url: &str, trust: ServerTrust, per_request_timeout: Duration) -> Result<Self, TransportError> {
        let endpoint = Endpoint::parse(base_url)?;
        let tls = if endpoint.tls {
            let provider = ring_provider();
            Some(client_config(trust.verifier(&provider)?, provider))
        } else {
            None
        };
        Ok(Self { endpoint, tls, timeout: per_request_timeout, addresses: None })
    }

    /// Connects to `addresses` instead of resolving the URL's host, as curl's `--resolve` does:
    /// the host still names the server in the TLS handshake and the `Host` header. For hosts
    /// looked up elsewhere, such as through the DNS server `discover --dns-server` names. An
    /// empty list keeps the normal resolution.
    pub fn connecting_to(mut self, addresses: Vec<SocketAddr>) -> Self {
        self.addresses = Some(addresses).filter(|a| !a.is_empty());
        self
    }

    /// True when the base URL is plain `http://`: the caller should warn.
    pub fn is_plain_http(&self) -> bool {
        !self.endpoint.tls
    }

    /// The base URL this client talks to, normalised.
    pub fn base_url(&self) -> String {
        self.endpoint.to_string()
    }

    /// `GET {base}{path}`.
    pub async fn get(&self, path: &str) -> Result<Response, TransportError> {
        self.send(Method::GET, path, None).await
    }

    /// `POST {base}{path}` with `body` and the given `Content-Type`.
    pub async fn post(&self, path: &str, body: Vec<u8>, content_type: &str) -> Result<Response, TransportError> {
        self.send(Method::POST, path, Some((body, content_type))).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<Response, TransportError> {
        let deadline = Deadline::after(self.timeout);
        let request = self.endpoint.request(method, path, body)?;
        let addrs = match &self.addresses {
            Some(addresses) => addresses.clone(),
            None => resolve(&self.endpoint.host, self.endpoint.port, deadline).await?,
        };
        let (tcp, peer) = connect(&addrs, deadline).await?;
        match &self.tls {
            Some(config) => {
                let stream = tls_handshake(tcp, config.clone(), &self.endpoint, peer, deadline).await?;
                let peer_certificates = peer_certificates(&stream);
                let (status, headers, body) = exchange(stream, None, request, &self.endpoint, peer, deadline).await?;
                Ok(Response { status, headers, body, peer_certificates })
            }
            None => {
                let (stream, first) = Sniffed::new(tcp);
                let (status, headers, body) =
                    exchange(stream, Some(&first), request, &self.endpoint, peer, deadline).await?;
                Ok(Response { status, headers, body, peer_certificates: Vec::new() })
            }
        }
    }
}

impl fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthClient")
            .field("base_url", &self.endpoint.to_string())
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .field("addresses", &self.addresses)
            .finish()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .field("peer_certificates", &self.peer_certificates.len())
            .finish()
    }
}

impl fmt::Display for UrlProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlProblem::Malformed => "not a valid URL",
            UrlProblem::UnsupportedScheme => "the scheme must be https:// or http://",
            UrlProblem::MissingHost => "no host name",
            UrlProblem::InvalidHost => "the host is neither a DNS name nor an IP address",
            UrlProblem::InvalidPath => "the request path is invalid",
        })
    }
}

impl fmt::Display for TrustProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrustProblem::NoCertificateInPem => "the CA file contains no PEM CERTIFICATE block",
            TrustProblem::InvalidPem => "the CA file is not valid PEM",
            TrustProblem::InvalidCaCertificate => "a certificate in the CA file cannot be parsed",
            TrustProblem::NoSystemRoots => "no system root certificates found; pass a CA file or a pin",
            TrustProblem::NoPins => "no pin given",
        })
    }
}

impl ConnectFailure {
    fn of(error: &io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            io::ErrorKind::TimedOut => ConnectFailure::TimedOut,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => ConnectFailure::Unreachable,
            _ => ConnectFailure::Other,
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectFailure::Refused => "connection refused (nothing is listening on that port)",
            ConnectFailure::TimedOut => {
                "timed out (packets dropped by a firewall, or the address is not reachable from here)"
            }
            ConnectFailure::Unreachable => "no route to the network or host",
            ConnectFailure::Other => "connection failed",
        })
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::PinMismatch { presented } => write!(
                f,
                "no certificate in the presented chain matches the pinned hash (the server presented {})",
                presented.join(", ")
            ),
            TlsFailure::UnknownIssuer => {
                f.write_str("the certificate is not signed by a trusted certificate authority")
            }
            TlsFailure::Expired => f.write_str("the certificate has expired"),
            TlsFailure::NotYetValid => f.write_str("the certificate is not valid yet (check the clocks)"),
            TlsFailure::NameMismatch => f.write_str("the certificate is not valid for this host name"),
            TlsFailure::NotTls => f.write_str("the server answered plain HTTP, not TLS"),
            TlsFailure::PeerClosed => f.write_str("the server closed the connection during the handshake"),
            TlsFailure::AlertReceived(alert) => write!(f, "the server aborted the handshake (TLS alert {alert})"),
            TlsFailure::Other(detail) => write!(f, "handshake failed: {detail}"),
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Resolve => "DNS resolution",
            Phase::TlsHandshake => "the TLS handshake",
            Phase::Request => "the HTTP request",
            Phase::ResponseBody => "reading the response body",
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Building blocks, shared with `check`, which times each of them separately.

/// A parsed base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) tls: bool,
    /// Host without IPv6 brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path prefix without trailing slash (usually empty).
    pub(crate) base_path: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Self, TransportError> {
        let fail = |problem| TransportError::ParseUrl { url: url.to_owned(), problem };
        let uri: Uri = url.trim().parse().map_err(|_| fail(UrlProblem::Malformed))?;
        let tls = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(fail(UrlProblem::UnsupportedScheme)),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| fail(UrlProblem::MissingHost))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        ServerName::try_from(host.as_str()).map_err(|_| fail(UrlProblem::InvalidHost))?;
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self { tls, host, port, base_path })
    }

    /// `host[:port]` as it goes into the `Host` header (port omitted when it is the default).
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub(crate) fn server_name(&self) -> ServerName<'static> {
        ServerName::try_from(self.host.clone()).expect("host was validated as a server name in Endpoint::parse")
    }

    pub(crate) fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<Request<Full<Bytes>>, TransportError> {
        let invalid = || TransportError::ParseUrl { url: format!("{self}{path}"), problem: UrlProblem::InvalidPath };
        if !path.starts_with('/') {
            return Err(invalid());
        }
        let host = HeaderValue::from_str(&self.authority()).map_err(|_| invalid())?;
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_path))
            .header(HOST, host)
            .header(USER_AGENT, concat!("liqo-auth/", env!("CARGO_PKG_VERSION")));
        let body = match body {
            Some((bytes, content_type)) => {
                builder = builder.header(CONTENT_TYPE, HeaderValue::from_str(content_type).map_err(|_| invalid())?);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        builder.body(body).map_err(|_| invalid())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.base_path)
    }
}

/// An absolute deadline plus the budget it came from, for error messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    pub(crate) fn after(budget: Duration) -> Self {
        Self { at: Instant::now() + budget, budget }
    }

    async fn run<F: Future>(self, phase: Phase, future: F) -> Result<F::Output, TransportError> {
        tokio::time::timeout_at(self.at, future)
            .await
            .map_err(|_| TransportError::Timeout { phase, after: self.budget })
    }
}

pub(crate) fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config around `verifier`: ring, TLS 1.2 and 1.3, ALPN `http/1.1`, no client auth.
pub(crate) fn client_config(verifier: Arc<dyn ServerCertVerifier>, provider: Arc<CryptoProvider>) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

pub(crate) async fn resolve(host: &str, port: u16, deadline: Deadline) -> Result<Vec<SocketAddr>, TransportError> {
    let addrs: Vec<SocketAddr> = deadline
        .run(Phase::Resolve, tokio::net::lookup_host((host, port)))
        .await?
        .map_err(|source| TransportError::Resolve { host: host.to_owned(), source })?
        .collect();
    if addrs.is_empty() {
        let source = io::Error::new(io::ErrorKind::NotFound, "the name has no addresses");
        return Err(TransportError::Resolve { host: host.to_owned(), source });
    }
    Ok(addrs)
}

/// Tries each address in turn; a timeout ends the attempt, since the deadline is shared.
pub(crate) async fn connect(
    addrs: &[SocketAddr],
    deadline: Deadline,
) -> Result<(TcpStream, SocketAddr), TransportError> {
    let mut last_error = None;
    for &addr in addrs {
        match tokio::time::timeout_at(deadline.at, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Nagle only delays our small requests.
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
            Ok(Err(source)) => {
                last_error =
                    Some(TransportError::Connect { addr, failure: ConnectFailure::of(&source), source: Some(source) });
            }
            Err(_) => return Err(TransportError::Connect { addr, failure: ConnectFailure::TimedOut, source: None }),
        }
    }
    Err(last_error.unwrap_or_else(|| TransportError::Resolve {
        host: String::new(),
        source: io::Error::new(io::ErrorKind::NotFound, "no address to connect to"),
    }))
}

pub(crate) async fn tls_handshake(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    endpoint: &Endpoint,
    addr: SocketAddr,
    deadline: Deadline,
) -> Result<TlsStream<Sniffed<TcpStream>>, TransportError> {
    let (stream, first) = Sniffed::new(tcp);
    let connecting = TlsConnector::from(config).connect(endpoint.server_name(), stream);
    deadline.run(Phase::TlsHandshake, connecting).await?.map_err(|cause| TransportError::TlsHandshake {
        server_name: endpoint.host.clone(),
        addr,
        failure: classify_tls_error(&cause, &first.snapshot()),
        cause,
    })
}

/// DER certificates presented on an established TLS connection, leaf first.
pub(crate) fn peer_certificates<S>(stream: &TlsStream<S>) -> Vec<Vec<u8>> {
    stream.get_ref().1.peer_certificates().map(|certs| certs.iter().map(|c| c.to_vec()).collect()).unwrap_or_default()
}

/// One HTTP/1.1 request on `io`. `plain_first` holds the first bytes the server sent when `io`
/// is a plain TCP stream, so a TLS answer can be recognised.
pub(crate) async fn exchange<S>(
    io: S,
    plain_first: Option<&FirstBytes>,
    request: Request<Full<Bytes>>,
    endpoint: &Endpoint,
    addr: SocketAddr,
    deadline: Deadline,
) -> Result<(u16, HeaderMap, Bytes), TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let authority = endpoint.authority();
    let http_error = |source: hyper::Error| {
        if plain_first.is_some_and(|first| tls_answer_to_plain_request(&first.snapshot(), source.is_parse())) {
            TransportError::TlsOnPlainPort { addr }
        } else {
            TransportError::Http { authority: authority.clone(), source: Box::new(source) }
        }
    };
    let (mut sender, connection) = deadline
        .run(Phase::Request, hyper::client::conn::http1::handshake(TokioIo::new(io)))
        .await?
        .map_err(http_error)?;
    let _driver = AbortOnDrop(tokio::spawn(connection));
    let response = deadline.run(Phase::Request, sender.send_request(request)).await?.map_err(http_error)?;
    let (parts, body) = response.into_parts();
    let body = deadline
        .run(Phase::ResponseBody, Limited::new(body, MAX_BODY_BYTES).collect())
        .await?
        .map_err(|source| {
            if source.is::<LengthLimitError>() {
                TransportError::BodyTooLarge { authority: authority.clone(), limit: MAX_BODY_BYTES }
            } else {
                TransportError::Http { authority: authority.clone(), source }
            }
        })?
        .to_bytes();
    if plain_first.is_some() && parts.status == http::StatusCode::BAD_REQUEST && is_https_port_complaint(&body) {
        return Err(TransportError::TlsOnPlainPort { addr });
    }
    Ok((parts.status.as_u16(), parts.headers, body))
}

/// Records the first bytes the server sends, to tell "plain HTTP on a TLS port" and "TLS on a
/// plain port" apart from other failures.
pub(crate) struct Sniffed<S> {
    inner: S,
    first: FirstBytes,
}

/// The first few bytes read from a [`Sniffed`] stream; shared so they survive the stream.
#[derive(Clone, Debug, Default)]
pub(crate) struct FirstBytes(Arc<Mutex<Vec<u8>>>);

const SNIFF_LEN: usize = 16;

impl<S> Sniffed<S> {
    pub(crate) fn new(inner: S) -> (Self, FirstBytes) {
        let first = FirstBytes::default();
        (Self { inner, first: first.clone() }, first)
    }
}

impl FirstBytes {
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn record(&self, bytes: &[u8]) {
        let mut first = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = SNIFF_LEN.saturating_sub(first.len());
        first.extend_from_slice(&bytes[..room.min(bytes.len())]);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.first.record(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Wraps a verifier and keeps the chain the server presented, so `check` can describe the
/// certificate even when verification fails. One recorder per connection.
#[derive(Debug)]
pub(crate) struct ChainRecorder {
    inner: Arc<dyn ServerCertVerifier>,
    signatures: HandshakeSignatures,
    chain: Mutex<Vec<Vec<u8>>>,
}

impl ChainRecorder {
    /// Records around `inner`; `provider` must be the one `inner` was built with, so handshake
    /// signatures are checked exactly as `inner` would.
    pub(crate) fn new(inner: Arc<dyn ServerCertVerifier>, provider: &Arc<CryptoProvider>) -> Self {
        Self { inner, signatures: HandshakeSignatures::new(provider), chain: Mutex::new(Vec::new()) }
    }

    /// The presented chain, leaf first; empty if the handshake never got that far.
    pub(crate) fn chain(&self) -> Vec<Vec<u8>> {
        self.chain.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl ServerCertVerifier for ChainRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity).chain(intermediates).map(|c| c.to_vec()).collect();
        *self.chain.lock().unwrap_or_else(PoisonError::into_inner) = chain;
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// Private helpers.

/// The handshake-signature half of a [`ServerCertVerifier`], the same for every trust setting:
/// whatever decides to trust the certificate, the server must prove it holds the certificate's
/// key, checked with the provider's algorithms.
#[derive(Debug)]
struct HandshakeSignatures {
    provider: Arc<CryptoProvider>,
}

impl HandshakeSignatures {
    fn new(provider: &Arc<CryptoProvider>) -> Self {
        Self { provider: provider.clone() }
    }

    fn verify_tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn webpki_verifier(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TransportError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|_| TransportError::LoadTrust { problem: TrustProblem::InvalidCaCertificate })?;
    Ok(verifier)
}

/// Kubeadm-style SPKI pinning; see [`ServerTrust::Pin`].
#[derive(Debug)]
struct PinVerifier {
    pins: Vec<[u8; 32]>,
    signatures: HandshakeSignatures,
}

/// Carried inside `rustls::Error` so [`classify_tls_error`] can recover the presented pins.
#[derive(Debug, thiserror::Error)]
#[error("no presented certificate matches the pinned SPKI hash")]
struct PinMismatch {
    presented: Vec<String>,
}

impl PinVerifier {
    fn matches(&self, cert: &CertificateDer<'_>) -> Result<(bool, String), rustls::Error> {
        let pin = pki::spki_pin(cert).map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let raw = pki::parse_pin(&pin).ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        Ok((self.pins.contains(&raw), pin))
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (leaf_matches, leaf_pin) = self.matches(end_entity)?;
        if leaf_matches {
            // The handshake signature, checked next by rustls, proves the server holds this key.
            return Ok(ServerCertVerified::assertion());
        }
        let mut presented = vec![leaf_pin];
        for (index, cert) in intermediates.iter().enumerate() {
            let (matches, pin) = self.matches(cert)?;
            if matches {
                // Anyone can copy a public CA certificate into their chain, so a pinned issuer
                // only counts if the leaf really chains up to it.
                let mut roots = RootCertStore::empty();
                roots.add(cert.clone().into_owned())?;
                let others: Vec<CertificateDer<'_>> =
                    intermediates.iter().enumerate().filter(|(i, _)| *i != index).map(|(_, c)| c.clone()).collect();
                let parsed = ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &parsed,
                    &roots,
                    &others,
                    now,
                    self.signatures.provider.signature_verification_algorithms.all,
                )?;
                return Ok(ServerCertVerified::assertion());
            }
            presented.push(pin);
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(PinMismatch { presented })))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_schemes()
    }
}

/// `--insecure-skip-tls-verify`: any certificate, but still a valid handshake signature.
#[derive(Debug)]
struct AnyCertificate {
    signatures: HandshakeSignatures,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_schemes()
    }
}

fn classify_tls_error(error: &io::Error, first: &[u8]) -> TlsFailure {
    let rustls_error = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    if first.starts_with(b"HTTP/") {
        return TlsFailure::NotTls;
    }
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(cert_error)) => match cert_error {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => TlsFailure::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => TlsFailure::NotYetValid,
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::NameMismatch
            }
            CertificateError::Other(OtherError(inner)) => match inner.downcast_ref::<PinMismatch>() {
                Some(mismatch) => TlsFailure::PinMismatch { presented: mismatch.presented.clone() },
                None => TlsFailure::Other(cert_error.to_string()),
            },
            other => TlsFailure::Other(other.to_string()),
        },
        Some(rustls::Error::AlertReceived(alert)) => TlsFailure::AlertReceived(format!("{alert:?}")),
        Some(other) => TlsFailure::Other(other.to_string()),
        None if matches!(
            error.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ) =>
        {
            TlsFailure::PeerClosed
        }
        None => TlsFailure::Other(error.to_string()),
    }
}

/// A TLS record header (alert 0x15 or handshake 0x16, version 3.x) where HTTP was expected, or
/// unparseable binary.
fn tls_answer_to_plain_request(first: &[u8], parse_error: bool) -> bool {
    match first {
        [0x15 | 0x16, 0x03, ..] => true,
        [byte, ..] => parse_error && !byte.is_ascii_graphic(),
        [] => false,
    }
}

/// Servers that detect an HTTP request on their TLS port answer 400 with a recognisable body:
/// Go's `net/http` (the reference server) and nginx (a common Ingress).
fn is_https_port_complaint(body: &[u8]) -> bool {
    const MARKERS: [&[u8]; 2] =
        [b"Client sent an HTTP request to an HTTPS server", b"The plain HTTP request was sent to HTTPS port"];
    MARKERS.iter().any(|marker| body.windows(marker.len()).any(|w| w == *marker))
}

/// Stops the hyper connection task when the exchange is over or abandoned.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{closed_port, TestCa, TestServer};

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn pin_of(der: &[u8]) -> [u8; 32] {
        pki::parse_pin(&pki::spki_pin(der).expect("test certificate parses")).expect("pin parses")
    }

    fn tls_failure(result: Result<Response, TransportError>) -> TlsFailure {
        match result {
            Err(TransportError::TlsHandshake { failure, .. }) => failure,
            other => panic!("expected a TLS handshake error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn pinned_leaf_certificate_is_accepted() {
        let cert = TestCa::new("pin-ca").server_cert(&["127.0.0.1"]);
        let pin = pin_of(&cert.chain[0]);
        let server = TestServer::tls(cert).await;
        let client = AuthClient::new(&server.https_url(), ServerTrust::Pin(vec![pin]), TIMEOUT).expect("client");
        let response = client.get("/ids").await.expect("pinned request succeeds");
        assert_eq!(response.status, 200);
        assert_eq!(response.peer_certificates.len(), 2);
    }

    #[tokio::test]
    async fn pinned_issuer_in_the_chain_is_accepted() {
        let ca = TestCa::new("pin-ca");
        let cert = ca.server_cert(&["localhost"]);
        let server = TestServer::tls(cert).await;
        let client =
            AuthClient::new(&server.https_url(), ServerTrust::Pin(vec![pin_of(ca.der())]), TIMEOUT).expect("client");
        assert_eq!(client.get("/ids").await.expect("request succeeds").status, 200);
    }

    #[tokio::test]
    async fn copied_issuer_certificate_does_not_satisfy_a_pin_when_the_leaf_is_not_signed_by_it() {
        let real_ca = TestCa::new("real-ca");
        let attacker = TestCa::new("attacker-ca");
        let mut cert = attacker.server_cert(&["127.0.0.1"]);
        cert.chain[1] = real_ca.der().clone();
        let server = TestServer::tls(cert).await;
        let client = AuthClient::new(&server.https_url(), ServerTrust::Pin(vec![pin_of(real_ca.der())]), TIMEOUT)
            .expect("client");
        assert_eq!(tls_failure(client.get("/ids").await), TlsFailure::UnknownIssuer);
    }

    #[tokio::test]
    async fn wrong_pin_is_refused_with_pin_mismatch_listing_the_presented_pins() {
        let cert = TestCa::new("pin-ca").server_cert(&["127.0.0.1"]);
        let leaf_pin = pki::spki_pin(&cert.chain[0]).expect("pin");
        let server = TestServer::tls(cert).await;
        let client = AuthClient::new(&server.https_url(), ServerTrust::Pin(vec![[7u8; 32]]), TIMEOUT).expect("client");
        match tls_failure(client.get("/ids").await) {
            TlsFailure::PinMismatch { presented } => assert_eq!(presented.first(), Some(&leaf_pin)),
            other => panic!("expected PinMismatch, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn ca_pem_trust_accepts_a_certificate_from_that_ca() {
        let ca = TestCa::new("trusted-ca");
        let server = TestServer::tls(ca.server_cert(&["127.0.0.1"])).await;
        let client =
            AuthClient::new(&server.https_url(), ServerTrust::CaPem(ca.pem().into_bytes()), TIMEOUT).expect("client");
        let response = client.get("/ids").await.expect("request succeeds");
        assert_eq!(response.status, 200);
        assert!(response.body.starts_with(b"{\"clusterId\""));
    }

    #[tokio::test]
    async fn ca_pem_trust_refuses_a_certificate_from_another_ca() {
        let trusted = TestCa::new("trusted-ca");
        let server = TestServer::tls(TestCa::new("other-ca").server_cert(&["127.0.0.1"])).await;
        let client = AuthClient::new(&server.https_url(), ServerTrust::CaPem(trusted.pem().into_bytes()), TIMEOUT)
            .expect("client");
        assert_eq!(tls_failure(client.get("/ids").await), TlsFailure::UnknownIssuer);
    }

    #[tokio::test]
    async fn ca_pem_trust_refuses_a_certificate_for_another_host_name() {
        let ca = TestCa::new("trusted-ca");
        let server = TestServer::tls(ca.server_cert(&["auth.example.org"])).await;
        let client =
            AuthClient::new(&server.https_url(), ServerTrust::CaPem(ca.pem().into_bytes()), TIMEOUT).expect("client");
        assert_eq!(tls_failure(client.get("/ids").await), TlsFailure::NameMismatch);
    }

    #[tokio::test]
    async fn expired_server_certificate_is_refused_as_expired() {
        let ca = TestCa::new("trusted-ca");
        let server = TestServer::tls(ca.expired_server_cert(&["127.0.0.1"])).await;
        let client =
            AuthClient::new(&server.https_url(), ServerTrust::CaPem(ca.pem().into_bytes()), TIMEOUT).expect("client");
        assert_eq!(tls_failure(client.get("/ids").await), TlsFailure::Expired);
    }

    #[tokio::test]
    async fn insecure_skip_verify_accepts_any_certificate() {
        let server = TestServer::tls(TestCa::new("whatever").expired_server_cert(&["elsewhere"])).await;
        let client = AuthClient::new(&server.https_url(), ServerTrust::InsecureSkipVerify, TIMEOUT).expect("client");
        assert_eq!(client.get("/ids").await.expect("request succeeds").status, 200);
    }

    #[tokio::test]
    async fn plain_http_server_on_an_https_url_gives_not_tls() {
        let server = TestServer::plain().await;
        let client = AuthClient::new(&server.https_url(), ServerTrust::InsecureSkipVerify, TIMEOUT).expect("client");
        assert_eq!(tls_failure(client.get("/ids").await), TlsFailure::NotTls);
    }

    #[tokio::test]
    async fn tls_server_on_an_http_url_gives_tls_on_plain_port() {
        let server = TestServer::tls(TestCa::new("ca").server_cert(&["127.0.0.1"])).await;
        let client = AuthClient::new(&server.http_url(), ServerTrust::SystemRoots, TIMEOUT).expect("client");
        let result = client.get("/ids").await;
        assert!(matches!(result, Err(TransportError::TlsOnPlainPort { .. })), "got {result:?}");
    }

    #[tokio::test]
    async fn go_style_https_port_complaint_on_an_http_url_gives_tls_on_plain_port() {
        let server =
            TestServer::raw(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n").await;
        let client = AuthClient::new(&server.http_url(), ServerTrust::SystemRoots, TIMEOUT).expect("client");
        let result = client.get("/ids").await;
        assert!(matches!(result, Err(TransportError::TlsOnPlainPort { .. })), "got {result:?}");
    }

    #[tokio::test]
    async fn plain_http_url_works_and_posts_the_body() {
        let server = TestServer::plain().await;
        let client = AuthClient::new(&server.http_url(), ServerTrust::SystemRoots, TIMEOUT).expect("client");
        assert!(client.is_plain_http());
        let response = client.post("/echo", b"hello".to_vec(), "text/plain").await.expect("request succeeds");
        assert_eq!((response.status, &response.body[..]), (200, &b"text/plain:hello"[..]));
        assert!(response.peer_certificates.is_empty());
    }

    #[tokio::test]
    async fn closed_port_is_reported_as_connection_refused() {
        let client = AuthClient::new(&format!("https://{}", closed_port()), ServerTrust::InsecureSkipVerify, TIMEOUT)
            .expect("client");
        let result = client.get("/ids").await;
        assert!(
            matches!(result, Err(TransportError::Connect { failure: ConnectFailure::Refused, .. })),
            "got {result:?}"
        );
    }

    #[tokio::test]
    async fn oversized_body_is_refused() {
        let server = TestServer::plain().await;
        let client = AuthClient::new(&server.http_url(), ServerTrust::SystemRoots, TIMEOUT).expect("client");
        let result = client.get("/huge").await;
        assert!(matches!(result, Err(TransportError::BodyTooLarge { .. })), "got {result:?}");
    }

    #[tokio::test]
    async fn silent_server_times_out_with_the_phase_named() {
        let server = TestServer::silent().await;
        let client =
            AuthClient::new(&server.http_url(), ServerTrust::SystemRoots, Duration::from_millis(200)).expect("client");
        let result = client.get("/ids").await;
        assert!(matches!(result, Err(TransportError::Timeout { phase: Phase::Request, .. })), "got {result:?}");
    }

    #[test]
    fn parses_urls_with_defaults_ipv6_and_prefixes() {
        let e = Endpoint::parse("https://auth.example.org").expect("parses");
        assert_eq!((e.tls, e.host.as_str(), e.port, e.base_path.as_str()), (true, "auth.example.org", 443, ""));
        let e = Endpoint::parse("http://[::1]:5000/prefix/").expect("parses");
        assert_eq!((e.tls, e.host.as_str(), e.port, e.base_path.as_str()), (false, "::1", 5000, "/prefix"));
        assert_eq!(e.authority(), "[::1]:5000");
        assert_eq!(e.to_string(), "http://[::1]:5000/prefix");
    }

    #[test]
    fn rejects_unsupported_schemes_and_missing_hosts() {
        for (url, problem) in [
            ("ftp://host", UrlProblem::UnsupportedScheme),
            ("host:8443", UrlProblem::UnsupportedScheme),
            ("not a url", UrlProblem::Malformed),
        ] {
            match Endpoint::parse(url) {
                Err(TransportError::ParseUrl { problem: got, .. }) => {
                    assert_eq!(got, problem, "{url}")
                }
                other => panic!("{url}: expected ParseUrl, got {other:?}"),
            }
        }
    }

    #[test]
    fn ca_file_without_certificates_is_a_trust_error() {
        let result = AuthClient::new("https://127.0.0.1", ServerTrust::CaPem(b"nothing here".to_vec()), TIMEOUT);
        assert!(
            matches!(result, Err(TransportError::LoadTrust { problem: TrustProblem::NoCertificateInPem })),
            "got {result:?}"
        );
    }

    #[test]
    fn response_debug_does_not_show_the_body() {
        let response = Response {
            status: 401,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"invalid token \"secret-token\""),
            peer_certificates: Vec::new(),
        };
        let printed = format!("{response:?}");
        assert!(!printed.contains("secret-token") && printed.contains("<28 bytes>"), "{printed}");
    }
}
