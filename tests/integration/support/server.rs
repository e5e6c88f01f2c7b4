//! The real service, built and started only through the crate's composition root: `serve` flags
//! parsed as the binary parses them, `ServeArgs::into_config()`, then `Config::start` (a
//! `TestServer` on 127.0.0.1:0) or `Config::build` (a router, no port bound). Nothing here
//! re-implements start-up, so tests exercise what `liqo-auth serve` runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use clap::Parser as _;
use liqo_auth::cli::{Args, Command};
use liqo_auth::config::{BackendConfig, Config, ConfigError, Connection, Runtime};
use liqo_auth::telemetry::Metrics;
use tokio::sync::oneshot;

use super::fake_apiserver::FakeApiServer;

/// `liqo-auth <argv>` (a `serve` command line, program name first) as the validated config the
/// binary would run.
pub fn serve_config<S: AsRef<str>>(argv: &[S]) -> Config {
    let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
    let Command::Serve(serve) = Args::try_parse_from(&argv).expect("serve flags").command else {
        panic!("not a serve command line: {argv:?}")
    };
    serve.into_config().expect("valid serve flags")
}

/// Like [`serve_config`] for the Kubernetes backend, connected to `fake` instead of a cluster.
pub fn serve_config_over<S: AsRef<str>>(fake: &FakeApiServer, argv: &[S]) -> Config {
    let mut config = serve_config(argv);
    match &mut config.backend {
        BackendConfig::Kubernetes { connection, .. } => *connection = Connection::Config(Box::new(fake.kube_config())),
        BackendConfig::Local { .. } => panic!("the fake API server needs the Kubernetes backend"),
    }
    config
}

/// What `Config::build` makes of `config` (for tests of start-up failures).
pub async fn build(config: &Config) -> Result<Runtime, ConfigError> {
    config.build().await
}

/// One service instance's router, built by `Config::build` (no port bound).
pub async fn router(config: &Config) -> Router {
    liqo_auth::http::router(build(config).await.expect("the service builds").state)
}

/// The real service, started by `Config::start` on `127.0.0.1:0`; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The admin listener (`--metrics-address`, `127.0.0.1:0` unless the flags say otherwise).
    pub admin_addr: Option<SocketAddr>,
    /// The metrics both listeners record into.
    pub metrics: Metrics,
    /// `sha256:<hex>` pin of the certificate a TLS handshake presents (TLS only).
    pub pin: Option<String>,
    /// The data dir (local backend only).
    pub data_dir: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts `serve --backend local --address 127.0.0.1:0` plus `extra` flags, in a fresh data dir.
    pub async fn start(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut server = Self::start_in(&tmp.path().join("data"), extra).await;
        server._tmp = Some(tmp);
        server
    }

    /// Starts the local backend in a given data dir (to test restarts).
    pub async fn start_in(data_dir: &Path, extra: &[&str]) -> Self {
        let data = data_dir.to_str().expect("utf-8 path");
        let mut argv = vec!["liqo-auth", "serve", "--backend", "local", "--data-dir", data];
        argv.extend_from_slice(extra);
        Self::start_config(serve_config(&loopback(argv))).await
    }

    /// Starts the Kubernetes backend over `fake` with `extra` flags.
    pub async fn start_over(fake: &FakeApiServer, extra: &[&str]) -> Self {
        let mut argv = vec!["liqo-auth", "serve"];
        argv.extend_from_slice(extra);
        Self::start_config(serve_config_over(fake, &loopback(argv))).await
    }

    /// Starts `config` as `serve` does and serves until stopped.
    pub async fn start_config(config: Config) -> Self {
        let data_dir = match &config.backend {
            BackendConfig::Local { data_dir } => Some(data_dir.clone()),
            BackendConfig::Kubernetes { .. } => None,
        };
        let tls = config.tls.is_some();
        let (stop, stopped) = oneshot::channel::<()>();
        let started = config
            .start(async {
                let _ = stopped.await;
            })
            .await
            .expect("the service starts");
        let (addr, admin_addr, metrics) = (started.address, started.admin_address, started.metrics.clone());
        let task = tokio::spawn(started.run());
        let pin = if tls { Some(presented_pin(addr).await) } else { None };
        Self { addr, admin_addr, metrics, pin, data_dir, _tmp: None, stop: Some(stop), task: Some(task) }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The data dir (local backend).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.as_deref().expect("the local backend has a data dir")
    }

    /// The shared token from the data dir.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("token")).expect("token file")
    }

    /// The local CA certificate.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("ca.crt")).expect("ca file")
    }

    /// Stops accepting, lets open requests finish, and waits for the server to exit.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the server task ends cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `argv` listening on `127.0.0.1:0`, with the admin listener there too unless `argv` places it:
/// the defaults (`:5000`, `:9090`) would collide between tests running in parallel.
fn loopback(mut argv: Vec<&str>) -> Vec<&str> {
    if !argv.iter().any(|a| a.starts_with("--address")) {
        argv.extend(["--address", "127.0.0.1:0"]);
    }
    if !argv.iter().any(|a| a.starts_with("--metrics-address")) {
        argv.extend(["--metrics-address", "127.0.0.1:0"]);
    }
    argv
}

/// The SPKI pin of the leaf certificate a TLS handshake with `addr` presents.
async fn presented_pin(addr: SocketAddr) -> String {
    let config = super::pki::any_server_client_config(&[]);
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake")
    };
    let tls = tokio::time::timeout(Duration::from_secs(10), handshake).await.expect("TLS handshake in time");
    let leaf = &tls.get_ref().1.peer_certificates().expect("a server certificate")[0];
    liqo_auth::pki::spki_pin(leaf).expect("pin of the served certificate")
}

/// One plain-HTTP/1.1 request with `Connection: close` to `addr`, read to the end within 10 s;
/// the whole response as text.
pub async fn http1_request(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await.unwrap().unwrap();
    String::from_utf8_lossy(&response).into_owned()
}
