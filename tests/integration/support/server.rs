//! `TestServer`: the real service (local backend, real TLS listener on 127.0.0.1:0), built from
//! command-line flags exactly as `liqo-auth serve` builds it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser as _;
use liqo_auth::cli::{Args, Command};
use tokio::sync::oneshot;

/// A running server; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// `sha256:<hex>` pin of the serving certificate (TLS only).
    pub pin: Option<String>,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts `serve --backend local --address 127.0.0.1:0` plus `extra` flags, in a fresh data dir.
    pub async fn start(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let mut server = Self::start_in(&data_dir, extra).await;
        server._tmp = Some(tmp);
        server
    }

    /// Starts in a given data dir (to test restarts).
    pub async fn start_in(data_dir: &std::path::Path, extra: &[&str]) -> Self {
        let data = data_dir.to_str().expect("utf-8 path");
        let mut argv = vec!["liqo-auth", "serve", "--backend", "local", "--data-dir", data, "--address", "127.0.0.1:0"];
        argv.extend_from_slice(extra);
        let Command::Serve(serve) = Args::try_parse_from(argv).expect("flags").command else { unreachable!() };
        let config = serve.into_config().expect("config");
        let runtime = config.build().await.expect("backend");
        let listener = liqo_auth::server::bind(&config.listen).await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let pin = runtime.serving.as_ref().map(|s| s.pin.clone());
        let acceptor =
            runtime.serving.as_ref().map(|s| tokio_rustls::TlsAcceptor::from(s.server_config().expect("tls config")));
        let router = liqo_auth::http::router(runtime.state);
        let (stop, stopped) = oneshot::channel::<()>();
        let limits = config.limits.clone();
        let task = tokio::spawn(async move {
            liqo_auth::server::serve(listener, router, acceptor, limits, async {
                let _ = stopped.await;
            })
            .await;
        });
        Self { addr, pin, data_dir: data_dir.to_owned(), _tmp: None, stop: Some(stop), task: Some(task) }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The shared token from the data dir.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("token")).expect("token file")
    }

    /// The local CA certificate.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("ca.crt")).expect("ca file")
    }

    /// Stops accepting, lets open requests finish, and waits for the server to exit.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
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
