//! Running what `Config::build()` made: binding the public and admin listeners, serving until
//! shutdown, and draining. Used by `serve` and by the integration tests, so both start the
//! service the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use crate::config::{served_auth_url, Config, ConfigError};
use crate::discovery::{Advertisement, AdvertisementConfig};
use crate::identity::port::{ClusterState, ServingRecord};
use crate::identity::ClusterIdentity;
use crate::server::tls::ServingCertificate;
use crate::server::{self, ServerLimits};
use crate::telemetry::Metrics;

pub mod dns_records;
pub mod info;
pub mod operator;

impl Config {
    /// Runs the service until SIGTERM/SIGINT.
    pub async fn serve(self) -> Result<(), ConfigError> {
        self.start(server::shutdown_signal()).await?.run().await;
        Ok(())
    }

    /// Builds the runtime and binds the public and admin listeners; the returned `Started`
    /// serves both once `run()` is awaited, until `shutdown` resolves, then drains them.
    pub async fn start(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<Started, ConfigError> {
        let runtime = self.build().await?;
        let metrics = Metrics::new();
        let state = runtime.state.with_metrics(metrics.clone());
        let listener = server::bind(&self.listen)
            .await
            .map_err(|source| ConfigError::Bind { address: self.address.clone(), source })?;
        let address =
            listener.local_addr().map_err(|source| ConfigError::Bind { address: self.address.clone(), source })?;
        let admin = self.bind_admin().await?;
        let admin_address = admin.as_ref().map(|(_, address)| *address);
        let record = self.serving_record(address, runtime.serving.as_ref());
        record_serving(runtime.cluster_state.as_ref(), &record).await;
        self.announce(&state.cluster, address, admin_address, runtime.serving.as_ref(), &record);
        let acceptor = match &runtime.serving {
            Some(serving) => {
                metrics.set_serving_certificate_expiry(serving.not_after);
                if let Some((cert, key)) = &serving.watched {
                    let metrics = metrics.clone();
                    let cluster_state = runtime.cluster_state.clone();
                    let record = record.clone();
                    crate::server::reload::spawn_reloader(
                        serving.resolver.clone(),
                        cert.clone(),
                        key.clone(),
                        self.tls_reload_interval,
                        move |reloaded| {
                            metrics.set_serving_certificate_expiry(reloaded.not_after);
                            // The operator commands read the pin from the record: keep it current.
                            let record = ServingRecord {
                                ca_hash: Some(reloaded.pin),
                                certificate_not_after: Some(reloaded.not_after),
                                updated_at: crate::pki::unix_now(),
                                ..record.clone()
                            };
                            let cluster_state = cluster_state.clone();
                            tokio::spawn(async move { record_serving(cluster_state.as_ref(), &record).await });
                        },
                    );
                }
                Some(tokio_rustls::TlsAcceptor::from(serving.server_config().map_err(ConfigError::Tls)?))
            }
            None => None,
        };
        let advertisement = match &self.mdns {
            Some(mdns) => Some(
                Advertisement::start(&AdvertisementConfig {
                    cluster_id: state.cluster.id.to_string(),
                    cluster_name: state.cluster.name.to_string(),
                    port: mdns.port.unwrap_or(address.port()),
                    tls: runtime.serving.is_some(),
                    interfaces: mdns.interfaces.clone(),
                })
                .map_err(ConfigError::Mdns)?,
            ),
            None => None,
        };

        // One shutdown signal, observed by both listeners.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let public = server::serve(
            listener,
            crate::http::router(state.clone()),
            acceptor,
            self.limits.clone(),
            until_stopped(stopped.clone()),
        );
        let admin = admin.map(|(listener, _)| {
            let limits = ServerLimits {
                max_connections: ADMIN_MAX_CONNECTIONS,
                header_read_timeout: self.limits.header_read_timeout,
                tls_handshake_timeout: self.limits.tls_handshake_timeout,
                idle_timeout: self.limits.idle_timeout,
                body_read_timeout: self.limits.body_read_timeout,
                shutdown_grace: Duration::from_secs(5),
                ..ServerLimits::default()
            };
            server::serve(listener, crate::http::admin_router(state), None, limits, until_stopped(stopped))
        });
        let run = async move {
            // Each accept loop runs as a task on a runtime worker, not in the caller's
            // `block_on` (the main thread, which is no worker): a connection it spawns then
            // starts on the same worker, where the loop left it, instead of being handed to a
            // worker that must be woken (an eventfd write and a futex wake per connection).
            let public = ListenerTask(tokio::spawn(public));
            let admin = admin.map(|admin| ListenerTask(tokio::spawn(admin)));
            public.ended("public").await;
            if let Some(admin) = admin {
                admin.ended("admin").await;
            }
            if let Some(advertisement) = advertisement {
                advertisement.stop().await;
            }
        };
        Ok(Started { address, admin_address, metrics, run: Box::pin(run) })
    }

    /// Binds the admin listener. The default address (`:9090`, taken by Prometheus on many
    /// machines) that cannot bind is only a warning naming the flag, so the first `serve` works
    /// anyway; an address the operator gave must bind.
    async fn bind_admin(&self) -> Result<Option<(tokio::net::TcpListener, SocketAddr)>, ConfigError> {
        let Some(candidates) = &self.metrics_listen else { return Ok(None) };
        let bound = match server::bind(candidates).await {
            Ok(listener) => listener.local_addr().map(|address| (listener, address)),
            Err(error) => Err(error),
        };
        match bound {
            Ok(bound) => Ok(Some(bound)),
            Err(source) if self.metrics_required => {
                Err(ConfigError::Bind { address: self.metrics_address.clone(), source })
            }
            Err(error) => {
                let address = &self.metrics_address;
                tracing::warn!(
                    metrics.address = %address,
                    error = %error,
                    "the admin listener (/metrics, /healthz, /readyz) cannot bind the default address {address} ({error}); serving without it. Choose another with --metrics-address ADDRESS, or disable it with --metrics-address off"
                );
                Ok(None)
            }
        }
    }

    /// What the operator commands need to know about this service once it is bound.
    fn serving_record(&self, bound: SocketAddr, serving: Option<&ServingCertificate>) -> ServingRecord {
        let (auth_url, auth_url_guessed) =
            match (&self.backend, served_auth_url(self.advertise_auth_address.as_deref(), bound)) {
                // In a pod the first address is the pod's, which no other cluster reaches: there the
                // operator must say (`--advertise-auth-address`, set by the nodeport and nat overlays).
                (crate::config::BackendConfig::Kubernetes { .. }, (_, true)) => (None, false),
                (_, found) => found,
            };
        ServingRecord {
            auth_url: serving.and(auth_url),
            auth_url_guessed,
            listen: bound.to_string(),
            ca_hash: serving.map(|s| s.pin.clone()),
            certificate_not_after: serving.map(|s| s.not_after),
            updated_at: crate::pki::unix_now(),
        }
    }

    fn announce(
        &self,
        cluster: &ClusterIdentity,
        addr: SocketAddr,
        admin: Option<SocketAddr>,
        serving: Option<&ServingCertificate>,
        record: &ServingRecord,
    ) {
        match admin {
            Some(admin) => tracing::info!(
                admin.listen = %admin,
                "serving /metrics, /healthz and /readyz on http://{admin} (keep this port private)"
            ),
            None if self.metrics_listen.is_none() => {
                tracing::info!("the admin listener is disabled (--metrics-address off)")
            }
            None => {}
        }
        for flag in &self.ignored_flags {
            tracing::warn!(
                flag = %flag,
                "{flag} is accepted for compatibility with the reference chart and has no effect here"
            );
        }
        if !self.shared_token {
            tracing::info!("the shared token is disabled (--shared-token=disabled): only join tokens authenticate");
        }
        if !self.authentication {
            tracing::warn!("AUTHENTICATION IS DISABLED (--enable-authentication=false): anyone who reaches this port gets a client certificate for the API server");
        }
        match serving {
            Some(serving) => {
                tracing::info!(
                    listen = %addr,
                    cluster.id = %cluster.id,
                    cluster.name = %cluster.name,
                    tls.pin = %serving.pin,
                    "serving HTTPS on {addr}; peers can pin this certificate with --ca-hash {}", serving.pin
                );
                let create = format!("liqo-auth token create{} --print-peer-command", self.backend.command_flags());
                match (&record.auth_url, record.auth_url_guessed) {
                    (Some(url), false) => tracing::info!(
                        auth.url = %url,
                        tls.pin = %serving.pin,
                        "peers reach this service at {url}; give a peer a join token and the command to run with: {create}"
                    ),
                    (Some(url), true) => tracing::info!(
                        auth.url = %url,
                        tls.pin = %serving.pin,
                        "listening on every interface: peers are told to use {url} (this host's first LAN address; set --advertise-auth-address HOST[:PORT] if they reach it by another name); give a peer a join token and the command to run with: {create}"
                    ),
                    (None, _) => tracing::info!(
                        tls.pin = %serving.pin,
                        "no address to tell peers (listening on every interface, no LAN address found): restart with --advertise-auth-address HOST[:PORT], or pass it to: {create} --advertise-auth-address HOST[:PORT]"
                    ),
                }
            }
            None => {
                tracing::info!(listen = %addr, cluster.id = %cluster.id, cluster.name = %cluster.name, "serving plain HTTP on {addr}");
                if !addr.ip().is_loopback() {
                    tracing::warn!(listen = %addr, "serving plain HTTP on {addr}, a non-loopback address: tokens and certificates travel in clear unless TLS is terminated in front (an Ingress); pass --enable-tls otherwise");
                }
            }
        }
    }
}

/// Records what `serve` serves for the operator commands; a failure (read-only data dir, a Role
/// without Secret writes) costs only the convenience, so it is a warning, never a failed start.
async fn record_serving(cluster_state: &dyn ClusterState, record: &ServingRecord) {
    // Every `--ca-hash` handed out names the old pin: say so loudly when it changes.
    if let Ok(Some(previous)) = cluster_state.serving_record().await {
        if let (Some(old), Some(new)) = (&previous.ca_hash, &record.ca_hash) {
            if old != new {
                tracing::warn!(
                    tls.pin = %new,
                    tls.previous_pin = %old,
                    "the served certificate pin changed from {old} to {new}: peers given --ca-hash {old} fail until they get the new one (`liqo-auth token create --print-peer-command` prints it)"
                );
            }
        }
    }
    if let Err(error) = cluster_state.record_serving(record).await {
        tracing::warn!(
            error = %crate::error::error_chain(&error),
            "could not record the auth URL and pin for `liqo-auth token create --print-peer-command`; pass them to it as flags"
        );
    }
}

/// Open connections allowed on the admin listener (the kubelet and one or two scrapers).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// A listener's accept loop, spawned by `run`. Dropping `run` before it ends aborts the loop,
/// as when the loop ran inside that future: the port closes and its open connections close
/// gracefully (their stop signal's sender goes with the loop).
struct ListenerTask(tokio::task::JoinHandle<()>);

impl ListenerTask {
    /// Waits for the accept loop and its drain to end; a panic in it is logged.
    async fn ended(mut self, listener: &str) {
        if let Err(error) = (&mut self.0).await {
            tracing::error!(listener, error = %error, "a listener's accept loop ended abnormally");
        }
    }
}

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A service with its listeners bound, ready to `run()`.
pub struct Started {
    /// The public listener's address (the real port when `--address` asked for port 0).
    pub address: SocketAddr,
    /// The admin listener's address, when enabled.
    pub admin_address: Option<SocketAddr>,
    /// The metrics both listeners record into.
    pub metrics: Metrics,
    run: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Started {
    /// Serves until the shutdown future given to `Config::start` resolves and both listeners
    /// have drained. Dropped before that, it stops both listeners at once.
    pub async fn run(self) {
        self.run.await;
    }
}
