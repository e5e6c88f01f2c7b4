//! `liqo-auth agent`: keeps every stored identity renewed, for as long as it runs.
//!
//! Each pass lists the stored identities (so a newly peered provider is picked up), and renews
//! those past their due time: `--renew-after` of the lifetime, moved by a random ±10 % drawn
//! once per certificate, so consumers peered together do not renew together. A renewal is
//! [`renew::renew_identity`]: a fresh proof per attempt, the crate's backoff with full jitter
//! and `Retry-After` within `--attempt-timeout` (which carries it across a provider restart),
//! then one atomic replace of the stored identity and of its kubeconfig. A renewal that still
//! failed is tried again after an exponential wait (5 s doubling to 5 min, full jitter); a
//! refusal (tenant removed, certificate no longer accepted) waits the longest, since only
//! peering again helps. Between passes the agent sleeps until the next identity is due (at most
//! `--rescan-interval`), and it stops at once on SIGTERM: every write it makes is a single
//! atomic replace, so an interrupted renewal leaves the previous identity in place.
//!
//! `/healthz` (alive), `/readyz` (the store could be read) and `/metrics`
//! (`liqo_auth_identity_expiration_timestamp_seconds{provider}`,
//! `liqo_auth_identity_renewals_total{provider,result}`) are served on `--metrics-address`.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::Rng as _;
use tokio::time::Instant;

use crate::client::peer::{PeerBackend, MAX_REQUEST_TIMEOUT};
use crate::client::renew::{self, due_at};
use crate::client::transport::{AuthClient, ServerTrust};
use crate::identity::port::{PeerIdentityStore, RenderKubeconfig, StoredPeerIdentity};
use crate::identity::ClusterId;
use crate::pki::CertificateSummary;

/// Spread of the renewal time: ±10 % of the fraction.
pub const JITTER: f64 = 0.1;
/// First wait after a failed renewal; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait after a failed renewal (and the wait after a refusal).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What the agent should do, from its flags.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// How the auth services' certificates are trusted.
    pub trust: ServerTrust,
    /// Fraction of the lifetime after which an identity is due.
    pub renew_after: f64,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; `None` for `off`.
    pub metrics_listen: Option<Vec<SocketAddr>>,
    /// Longest time one renewal keeps retrying.
    pub attempt_timeout: Duration,
    /// Longest sleep between two passes over the stored identities.
    pub rescan_interval: Duration,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("listening on {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// A started agent: its admin address (when enabled) and the loop to run.
pub struct StartedAgent {
    pub admin_address: Option<SocketAddr>,
    run: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl StartedAgent {
    /// Runs until the shutdown future given to [`start`] completes.
    pub async fn run(self) {
        self.run.await;
    }
}

/// Binds the admin listener and prepares the loop; it runs until `shutdown` completes.
pub async fn start(
    options: AgentOptions,
    backend: PeerBackend,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<StartedAgent, AgentError> {
    let metrics = AgentMetrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let listener = match &options.metrics_listen {
        Some(candidates) => {
            let address = candidates.first().map(ToString::to_string).unwrap_or_default();
            let listener =
                crate::server::bind(candidates).await.map_err(|source| AgentError::Bind { address, source })?;
            Some(listener)
        }
        None => None,
    };
    let admin_address = listener.as_ref().and_then(|l| l.local_addr().ok());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin = listener.map(|listener| {
        let router = admin_router(AdminState { metrics: metrics.clone(), ready: ready.clone() });
        let mut stopped = stop_rx.clone();
        tokio::spawn(async move {
            let until = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(until).await {
                tracing::error!(error = %error, "the agent's admin listener failed");
            }
        })
    });
    match admin_address {
        Some(address) => {
            tracing::info!(admin.listen = %address, "serving /metrics, /healthz and /readyz on http://{address}")
        }
        None => tracing::info!("the admin listener is disabled (--metrics-address off)"),
    }
    let agent = Agent {
        options,
        store: backend.identities.clone(),
        render: backend.render_kubeconfig,
        metrics: metrics.clone(),
        ready,
        jitter: HashMap::new(),
        failures: HashMap::new(),
    };
    let run = async move {
        tokio::select! {
            () = agent.run_forever() => {}
            () = shutdown => tracing::info!("stopping the agent"),
        }
        let _ = stop_tx.send(true);
        if let Some(admin) = admin {
            let _ = admin.await;
        }
    };
    Ok(StartedAgent { admin_address, run: Box::pin(run) })
}

/// Runs the agent until SIGTERM or Ctrl-C (what the binary runs). Exit 0 after a clean stop.
pub async fn execute(options: AgentOptions, backend: PeerBackend) -> std::process::ExitCode {
    match start(options, backend, crate::server::shutdown_signal()).await {
        Ok(started) => {
            tracing::debug!(admin.listen = ?started.admin_address, "the agent started");
            started.run().await;
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {}", crate::error::error_chain(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

struct Agent {
    options: AgentOptions,
    store: Arc<dyn PeerIdentityStore>,
    render: RenderKubeconfig,
    metrics: AgentMetrics,
    ready: Arc<AtomicBool>,
    /// The jittered fraction drawn for each certificate (by serial).
    jitter: HashMap<String, f64>,
    /// Per provider: failed renewals in a row and when to try again.
    failures: HashMap<ClusterId, (u32, i64)>,
}

impl Agent {
    async fn run_forever(mut self) {
        loop {
            let wait = self.pass().await;
            tokio::time::sleep(wait).await;
        }
    }

    /// One pass: renew what is due; returns how long to sleep.
    async fn pass(&mut self) -> Duration {
        let identities = match self.store.list().await {
            Ok(identities) => identities,
            Err(error) => {
                self.ready.store(false, Ordering::Relaxed);
                tracing::warn!(error = %crate::error::error_chain(&error), "cannot read the stored identities; retrying");
                return MIN_BACKOFF;
            }
        };
        self.ready.store(true, Ordering::Relaxed);
        let mut next = crate::pki::unix_now() + self.options.rescan_interval.as_secs() as i64;
        for stored in identities {
            if let Some(at) = self.consider(stored).await {
                next = next.min(at);
            }
        }
        Duration::from_secs((next - crate::pki::unix_now()).clamp(1, i64::MAX) as u64)
    }

    /// Renews `stored` if due; returns when it next needs attention (Unix seconds).
    async fn consider(&mut self, stored: StoredPeerIdentity) -> Option<i64> {
        let summary = CertificateSummary::from_pem(stored.identity.certificate_pem.as_bytes())?;
        self.metrics.set_expiration(&stored.provider, summary.not_after);
        let due = self.due(&summary);
        let now = crate::pki::unix_now();
        let retry_at = self.failures.get(&stored.provider).map_or(0, |(_, at)| *at);
        if now < due.max(retry_at) {
            return Some(due.max(retry_at));
        }
        let Some(url) = stored.identity.auth_url.clone() else {
            tracing::warn!(cluster.id = %stored.provider, "the identity for provider {} records no auth URL (peered before renewal existed); renew it once with `liqo-auth renew --auth-url`", stored.provider);
            return None;
        };
        let budget = self.options.attempt_timeout;
        let result = match AuthClient::new(&url, self.options.trust.clone(), budget.min(MAX_REQUEST_TIMEOUT)) {
            Ok(client) => {
                renew::renew_identity(
                    &client,
                    &stored.provider,
                    &stored.identity,
                    None,
                    Instant::now() + budget,
                    budget,
                    self.store.as_ref(),
                    self.render,
                    None,
                )
                .await
            }
            Err(source) => Err(renew::RenewClientError::Client { url, source }),
        };
        match result {
            Ok(renewal) => {
                self.metrics.observe_renewal(&stored.provider, "ok");
                self.metrics.set_expiration(&stored.provider, renewal.summary.not_after);
                self.failures.remove(&stored.provider);
                self.jitter.remove(&summary.serial);
                tracing::info!(
                    cluster.id = %stored.provider,
                    cert.serial = %renewal.summary.serial,
                    cert.not_after = renewal.summary.not_after,
                    "renewed the identity for provider {}; it expires {}",
                    stored.provider,
                    crate::pki::format_unix(renewal.summary.not_after)
                );
                Some(self.due(&renewal.summary))
            }
            Err(error) => {
                self.metrics.observe_renewal(&stored.provider, "error");
                let failures = self.failures.get(&stored.provider).map_or(0, |(n, _)| *n) + 1;
                let wait = if error.is_refusal() { MAX_BACKOFF } else { backoff(failures) };
                let at = crate::pki::unix_now() + wait.as_secs().max(1) as i64;
                self.failures.insert(stored.provider.clone(), (failures, at));
                let chain = crate::error::error_chain(&error);
                tracing::warn!(cluster.id = %stored.provider, failures, error = %chain, "renewing the identity for provider {} failed; next try in {}s", stored.provider, wait.as_secs());
                Some(at)
            }
        }
    }

    /// When `summary` is due, with this certificate's jitter.
    fn due(&mut self, summary: &CertificateSummary) -> i64 {
        let base = self.options.renew_after;
        let fraction = *self
            .jitter
            .entry(summary.serial.clone())
            .or_insert_with(|| (base * (1.0 + rand::rng().random_range(-JITTER..=JITTER))).clamp(0.05, 0.95));
        due_at(summary, fraction)
    }
}

/// The wait after `failures` failed renewals in a row: exponential from [`MIN_BACKOFF`] to
/// [`MAX_BACKOFF`], with full jitter (the crate's policy shape, over a longer range).
fn backoff(failures: u32) -> Duration {
    let step = MIN_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    step.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// The agent's metrics, in their own registry.
#[derive(Clone)]
pub struct AgentMetrics(Arc<AgentMetricsInner>);

struct AgentMetricsInner {
    registry: Registry,
    expiration: Family<ProviderLabels, Gauge<i64, AtomicI64>>,
    renewals: Family<RenewalLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewalLabels {
    provider: String,
    result: &'static str,
}

impl AgentMetrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let expiration = Family::<ProviderLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "liqo_auth_identity_expiration_timestamp_seconds",
            "notAfter of the identity held for each provider, Unix seconds",
            expiration.clone(),
        );
        let renewals = Family::<RenewalLabels, Counter>::default();
        registry.register(
            "liqo_auth_identity_renewals",
            "Renewals of the identity held for each provider, by result (ok, error)",
            renewals.clone(),
        );
        Self(Arc::new(AgentMetricsInner { registry, expiration, renewals }))
    }

    fn set_expiration(&self, provider: &ClusterId, not_after: i64) {
        self.0.expiration.get_or_create(&ProviderLabels { provider: provider.to_string() }).set(not_after);
    }

    fn observe_renewal(&self, provider: &ClusterId, result: &'static str) {
        self.0.renewals.get_or_create(&RenewalLabels { provider: provider.to_string(), result }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.0.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: AgentMetrics,
    ready: Arc<AtomicBool>,
}

fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, crate::telemetry::METRICS_CONTENT_TYPE)], state.metrics.encode())
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "not ready"})))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_5s_to_5min_with_jitter() {
        for (failures, ceiling) in [(1, 5), (2, 10), (3, 20), (7, 300), (40, 300)] {
            let wait = backoff(failures);
            assert!(
                wait <= Duration::from_secs(ceiling) && wait >= Duration::from_secs(ceiling) / 2,
                "{failures}: {wait:?}"
            );
        }
    }

    #[test]
    fn the_renewal_time_is_jittered_within_ten_percent_and_drawn_once_per_certificate() {
        let backend =
            Arc::new(crate::client::identity_store::LocalIdentityStore::new(std::path::Path::new("/nonexistent")));
        let mut agent = Agent {
            options: AgentOptions {
                trust: ServerTrust::SystemRoots,
                renew_after: 0.5,
                metrics_listen: None,
                attempt_timeout: Duration::from_secs(1),
                rescan_interval: Duration::from_secs(1),
            },
            store: backend,
            render: |_| String::new(),
            metrics: AgentMetrics::new(),
            ready: Arc::default(),
            jitter: HashMap::new(),
            failures: HashMap::new(),
        };
        let mut seen = std::collections::BTreeSet::new();
        for serial in 0..200 {
            let summary = CertificateSummary {
                serial: serial.to_string(),
                not_before: 0,
                not_after: 10_000,
                common_name: None,
                spki_der: vec![],
            };
            let due = agent.due(&summary);
            assert!((4500..=5500).contains(&due), "{due}");
            assert_eq!(agent.due(&summary), due, "drawn once");
            seen.insert(due);
        }
        assert!(seen.len() > 50, "spread: {}", seen.len());
    }
}
