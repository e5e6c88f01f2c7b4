//! Protection of the issuance route: who is asking (`Source`), failed-authentication rate
//! limiting per source, and a bound on concurrent issuances.
//!
//! The source is the TCP peer, unless the peer is a trusted proxy (`--trusted-proxy CIDR`): then
//! `X-Forwarded-For` names the client. Nobody else can spoof a source, because the header is
//! ignored from untrusted peers. A failed authentication consumes one cell of a per-source
//! `governor` bucket and gets 401; once the bucket is empty, further *failures* from that source
//! get 429 instead. The token is always checked first: a request with a valid token never
//! consumes a cell and is never refused, whatever others behind its address send. The limiter's
//! memory is bounded (`BoundedStore`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use governor::clock::{Clock as _, DefaultClock};
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::AppState;

/// Default `--auth-failure-limit`: failed authentications per source and minute.
pub const DEFAULT_AUTH_FAILURES_PER_MINUTE: u32 = 10;
/// Default `--max-concurrent-issuances`.
pub const DEFAULT_MAX_CONCURRENT_ISSUANCES: usize = 64;
/// How long an issuance waits for a free slot before the caller gets 503 with `Retry-After`:
/// half of the request timeout, leaving the other half to the signer.
pub const ISSUANCE_QUEUE_WAIT: Duration = Duration::from_secs(30);
/// Default bound on the sources the failure limiter tracks separately (see `BoundedStore`).
pub const DEFAULT_MAX_TRACKED_SOURCES: usize = 65_536;
const CLEANUP_EVERY: Duration = Duration::from_secs(60);
const CLEANUP_WHEN_FULL_EVERY: Duration = Duration::from_secs(1);

/// How the issuance route protects itself.
#[derive(Debug, Clone)]
pub struct ProtectionConfig {
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Failed authentications allowed per source and minute (burst of the same size); 0 disables.
    pub auth_failures_per_minute: u32,
    /// Sources the failure limit tracks separately; beyond that they share one budget.
    pub max_tracked_sources: usize,
    /// Issuances running at once; further ones wait up to `queue_wait`, then get 503.
    pub max_concurrent_issuances: usize,
    /// Longest wait for an issuance slot.
    pub queue_wait: Duration,
}

impl Default for ProtectionConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            auth_failures_per_minute: DEFAULT_AUTH_FAILURES_PER_MINUTE,
            max_tracked_sources: DEFAULT_MAX_TRACKED_SOURCES,
            max_concurrent_issuances: DEFAULT_MAX_CONCURRENT_ISSUANCES,
            queue_wait: ISSUANCE_QUEUE_WAIT,
        }
    }
}

/// The protection state shared by every request: cheap to clone.
#[derive(Clone)]
pub struct Protection(Arc<ProtectionInner>);

struct ProtectionInner {
    trusted_proxies: Vec<IpNet>,
    failures: Option<FailureLimiter>,
    issuances: Arc<Semaphore>,
    queue_wait: Duration,
}

/// Who sent a request, as far as we can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The client: the peer, or the forwarded client when the peer is a trusted proxy.
    /// `None` only when the request did not come through `server::serve` (router tests).
    pub address: Option<IpAddr>,
    /// The TCP peer.
    pub peer: Option<SocketAddr>,
    /// True when `address` came from `X-Forwarded-For`.
    pub forwarded: bool,
}

impl Protection {
    /// Builds the protection state.
    pub fn new(config: ProtectionConfig) -> Self {
        let failures = NonZeroU32::new(config.auth_failures_per_minute)
            .map(|limit| FailureLimiter::new(limit, config.max_tracked_sources.max(1)));
        Self(Arc::new(ProtectionInner {
            trusted_proxies: config.trusted_proxies,
            failures,
            issuances: Arc::new(Semaphore::new(config.max_concurrent_issuances.max(1))),
            queue_wait: config.queue_wait,
        }))
    }

    /// Resolves the source of a request from its TCP peer and headers.
    ///
    /// From a trusted proxy, `X-Forwarded-For` is read from the right: entries that are trusted
    /// proxies themselves are skipped and the first other one is the client. When the proxy
    /// overwrites the header this is its first (only) hop; when it appends, a client cannot
    /// pose as someone else by sending its own header. Unparsable entries make the header
    /// untrustworthy, and the peer is used.
    pub fn source(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Source {
        let peer_ip = peer.map(|p| p.ip().to_canonical());
        let direct = Source { address: peer_ip, peer, forwarded: false };
        if !peer_ip.is_some_and(|ip| self.is_trusted(ip)) {
            return direct;
        }
        let mut hops = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(text) = value.to_str() else { return direct };
            for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                match parse_hop(entry) {
                    Some(ip) => hops.push(ip),
                    None => return direct,
                }
            }
        }
        let client = hops.iter().rev().find(|ip| !self.is_trusted(**ip)).or(hops.first());
        match client {
            Some(ip) => Source { address: Some(*ip), peer, forwarded: true },
            None => direct,
        }
    }

    /// Counts one failed authentication from `source`: `Err(retry_after)` when the source had
    /// none left, and the caller answers 429 instead of 401. Only failures are counted, and only
    /// failures are refused: successes never call this.
    pub fn record_failure(&self, source: &Source) -> Result<(), Duration> {
        match &self.0.failures {
            Some(limiter) => limiter.record(limit_key(source)),
            None => Ok(()),
        }
    }

    /// Sources the failure limit tracks now (for tests and the memory bound).
    pub fn tracked_sources(&self) -> usize {
        self.0.failures.as_ref().map_or(0, FailureLimiter::tracked)
    }

    /// Waits for an issuance slot, at most the configured queue wait (`None` when none freed up).
    pub async fn issuance_slot(&self) -> Option<OwnedSemaphorePermit> {
        let acquire = self.0.issuances.clone().acquire_owned();
        match tokio::time::timeout(self.0.queue_wait, acquire).await {
            Ok(Ok(permit)) => Some(permit),
            _ => None,
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.0.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

impl Default for Protection {
    fn default() -> Self {
        Self::new(ProtectionConfig::default())
    }
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protection").field("trusted_proxies", &self.0.trusted_proxies).finish_non_exhaustive()
    }
}

impl Source {
    /// The address for logs: the client, else `unknown`.
    pub fn display(&self) -> String {
        self.address.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    }
}

impl FromRequestParts<Arc<AppState>> for Source {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
        Ok(state.protection.source(peer, &parts.headers))
    }
}

/// Failed authentications per source: governor's GCRA (a burst of `limit`, then one cell every
/// minute / `limit`) over a `BoundedStore`. Only failures reach it: a failure takes a cell, or
/// is refused (429) when none is left. A request with a valid token never touches it, so a
/// correct peer is never refused because of what others from its address did.
struct FailureLimiter {
    limiter: RateLimiter<IpAddr, BoundedStore, DefaultClock>,
    max_sources: usize,
    last_cleanup: Mutex<Instant>,
}

impl FailureLimiter {
    fn new(limit: NonZeroU32, max_sources: usize) -> Self {
        let store = BoundedStore::new(max_sources);
        Self {
            limiter: RateLimiter::new(Quota::per_minute(limit), store, DefaultClock::default()),
            max_sources,
            last_cleanup: Mutex::new(Instant::now()),
        }
    }

    /// Takes one cell for a failure from `key`, or says how long until the next one is due.
    fn record(&self, key: IpAddr) -> Result<(), Duration> {
        let clock = self.limiter.clock();
        let outcome = self.limiter.check_key(&key).map(drop).map_err(|not_until| not_until.wait_time_from(clock.now()));
        self.clean_up();
        outcome
    }

    /// Drops the buckets that have refilled (indistinguishable from fresh ones): once a minute,
    /// or once a second while the store is full.
    fn clean_up(&self) {
        let mut last = self.last_cleanup.lock().unwrap_or_else(|p| p.into_inner());
        let every = if self.limiter.len() >= self.max_sources { CLEANUP_WHEN_FULL_EVERY } else { CLEANUP_EVERY };
        if last.elapsed() >= every {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            *last = Instant::now();
        }
    }

    /// Sources tracked now (at most `max_sources` + the overflow bucket).
    fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// governor's keyed state with a hard bound: at most `capacity` sources get a bucket of their
/// own; while the store is full, further sources share one overflow bucket. Sharing costs a
/// correct peer nothing (it never takes a cell), and an attacker spreading failures over more
/// addresses than that only limits itself sooner. Each entry is an address and a GCRA
/// timestamp: about 40 bytes with the map's overhead, so the default bound is about 2.5 MiB.
struct BoundedStore {
    capacity: usize,
    buckets: Mutex<HashMap<IpAddr, Nanos>>,
}

/// The key shared by the sources that found the store full (never a real client's key: the
/// unknown source maps to `::`).
const OVERFLOW_KEY: IpAddr = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1));

impl BoundedStore {
    fn new(capacity: usize) -> Self {
        Self { capacity, buckets: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Nanos>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StateStore for BoundedStore {
    type Key = IpAddr;

    fn measure_and_replace<T, F, E>(&self, key: &IpAddr, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut buckets = self.lock();
        let key = if buckets.contains_key(key) || buckets.len() < self.capacity { *key } else { OVERFLOW_KEY };
        // The lock is held across the decision, so no compare-and-swap loop is needed.
        let (outcome, next) = f(buckets.get(&key).copied())?;
        buckets.insert(key, next);
        Ok(outcome)
    }
}

impl ShrinkableKeyedStateStore<IpAddr> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        self.lock().retain(|_, tat| *tat > drop_below);
    }

    fn shrink_to_fit(&self) {
        self.lock().shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// The rate-limiting key: the client address, IPv6 reduced to its /64 (one host usually owns a
/// whole /64, so per-address keys would let it rotate past the limit). Unknown sources share one
/// key.
fn limit_key(source: &Source) -> IpAddr {
    match source.address {
        Some(IpAddr::V6(v6)) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(Ipv6Addr::from(segments))
        }
        Some(v4) => v4,
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Parses one `X-Forwarded-For` entry: `ip`, `ip:port`, `[v6]` or `[v6]:port`.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    entry.strip_prefix('[')?.strip_suffix(']')?.parse::<Ipv6Addr>().ok().map(|ip| IpAddr::V6(ip).to_canonical())
}

/// Rounds a wait up to whole seconds for `Retry-After` (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protection(trusted: &[&str]) -> Protection {
        Protection::new(ProtectionConfig {
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..ProtectionConfig::default()
        })
    }

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    fn peer(text: &str) -> Option<SocketAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let source = protection(&["10.0.0.0/8"]).source(peer("192.0.2.7:4000"), &xff("203.0.113.9"));
        assert_eq!(source.address, Some("192.0.2.7".parse().unwrap()));
        assert!(!source.forwarded);
    }

    #[test]
    fn forwarded_for_names_the_client_behind_a_trusted_proxy() {
        let p = protection(&["10.0.0.0/8"]);
        let source = p.source(peer("10.1.2.3:4000"), &xff("203.0.113.9"));
        assert_eq!((source.address, source.forwarded), (Some("203.0.113.9".parse().unwrap()), true));
        // An appending proxy: the spoofed first entry is not believed.
        let source = p.source(peer("10.1.2.3:4000"), &xff("198.51.100.1, 203.0.113.9, 10.9.9.9"));
        assert_eq!(source.address, Some("203.0.113.9".parse().unwrap()));
        // No header: the proxy itself.
        assert_eq!(p.source(peer("10.1.2.3:4000"), &HeaderMap::new()).address, Some("10.1.2.3".parse().unwrap()));
        // Garbage: the proxy itself.
        assert_eq!(p.source(peer("10.1.2.3:4000"), &xff("evil, 1.2.3.4")).address, Some("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks_and_hops_may_carry_ports() {
        let p = protection(&["10.0.0.0/8"]);
        let source = p.source(peer("[::ffff:10.1.2.3]:4000"), &xff("[2001:db8::1]:443"));
        assert_eq!(source.address, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse_hop("203.0.113.9:80"), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(parse_hop("[2001:db8::2]"), Some("2001:db8::2".parse().unwrap()));
    }

    #[test]
    fn failures_are_refused_once_the_burst_is_spent_and_each_source_has_its_own_budget() {
        let p = protection(&[]);
        let source = p.source(peer("192.0.2.1:1"), &HeaderMap::new());
        for attempt in 1..=DEFAULT_AUTH_FAILURES_PER_MINUTE {
            assert!(p.record_failure(&source).is_ok(), "failure {attempt} is within the burst");
        }
        let wait = p.record_failure(&source).expect_err("refused after the burst");
        assert!(wait <= Duration::from_secs(6), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 6);
        // A refused failure takes no cell: the source is not pushed further back by retrying.
        let again = p.record_failure(&source).expect_err("still refused");
        assert!(again <= wait, "{again:?} > {wait:?}");
        let other = p.source(peer("192.0.2.2:1"), &HeaderMap::new());
        assert!(p.record_failure(&other).is_ok());
    }

    #[test]
    fn the_limiter_tracks_at_most_its_bound_and_overflowing_sources_share_one_budget() {
        let p = Protection::new(ProtectionConfig {
            auth_failures_per_minute: 2,
            max_tracked_sources: 100,
            ..ProtectionConfig::default()
        });
        let source = |i: u32| Source {
            address: Some(IpAddr::V4(std::net::Ipv4Addr::from(0xc000_0000 + i))),
            peer: None,
            forwarded: false,
        };
        for i in 0..10_000 {
            let _ = p.record_failure(&source(i));
        }
        assert!(p.tracked_sources() <= 101, "{} sources tracked", p.tracked_sources());
        // The first 100 sources keep their own budget (one failure left each) ...
        assert!(p.record_failure(&source(7)).is_ok());
        // ... the rest shared one, long spent.
        assert!(p.record_failure(&source(5_000)).is_err());
        assert!(p.record_failure(&source(20_000)).is_err());
    }

    #[test]
    fn ipv6_sources_are_limited_per_64() {
        let a = Source { address: Some("2001:db8:0:1::1".parse().unwrap()), peer: None, forwarded: false };
        let b = Source { address: Some("2001:db8:0:1:ffff::2".parse().unwrap()), peer: None, forwarded: false };
        assert_eq!(limit_key(&a), limit_key(&b));
    }

    #[tokio::test]
    async fn a_full_issuance_queue_gives_up_after_the_queue_wait() {
        let p = Protection::new(ProtectionConfig {
            max_concurrent_issuances: 1,
            queue_wait: Duration::from_millis(50),
            ..ProtectionConfig::default()
        });
        let held = p.issuance_slot().await.expect("a free slot");
        assert!(p.issuance_slot().await.is_none(), "no slot within the wait");
        drop(held);
        assert!(p.issuance_slot().await.is_some());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(5200)), 6);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
