//! Protection of the issuance route: who is asking (`Source`), failed-authentication rate
//! limiting per source, and a bound on concurrent issuances.
//!
//! The source is the TCP peer, unless the peer is a trusted proxy (`--trusted-proxy CIDR`): then
//! `X-Forwarded-For` names the client. Nobody else can spoof a source, because the header is
//! ignored from untrusted peers. Failed authentications (401) consume one cell of a per-source
//! `governor` bucket; once the bucket is empty, further attempts from that source get 429 before
//! any token is looked at. Successful peers never consume a cell and are never slowed.

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
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
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
/// Above this many tracked sources, idle ones are dropped at the next failure instead of once a
/// minute.
const MAX_TRACKED_SOURCES: usize = 100_000;
const CLEANUP_EVERY: Duration = Duration::from_secs(60);

/// How the issuance route protects itself.
#[derive(Debug, Clone)]
pub struct ProtectionConfig {
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Failed authentications allowed per source and minute (burst of the same size); 0 disables.
    pub auth_failures_per_minute: u32,
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
        let failures = NonZeroU32::new(config.auth_failures_per_minute).map(FailureLimiter::per_minute);
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

    /// `Err(retry_after)` when `source` has used up its failed authentications.
    pub fn check_failures(&self, source: &Source) -> Result<(), Duration> {
        match &self.0.failures {
            Some(limiter) => limiter.check(limit_key(source)),
            None => Ok(()),
        }
    }

    /// Counts one failed authentication from `source`.
    pub fn record_failure(&self, source: &Source) {
        if let Some(limiter) = &self.0.failures {
            limiter.record(limit_key(source));
        }
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

impl FromRequestParts<AppState> for Source {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
        Ok(state.protection.source(peer, &parts.headers))
    }
}

type KeyedLimiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

/// Failed authentications per source. governor keeps the buckets (GCRA: a burst of `limit`,
/// then one cell every minute / `limit`). governor has no "peek", so when a failure empties a
/// bucket we note when its next cell is due, and refuse the source until then without touching
/// the bucket: successes never consume cells.
struct FailureLimiter {
    limiter: KeyedLimiter,
    /// Time for one cell to come back.
    replenish: Duration,
    blocked: Mutex<Blocked>,
}

struct Blocked {
    until: HashMap<IpAddr, Instant>,
    last_cleanup: Instant,
}

impl FailureLimiter {
    fn per_minute(limit: NonZeroU32) -> Self {
        let quota = Quota::per_minute(limit);
        Self {
            replenish: quota.replenish_interval(),
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            blocked: Mutex::new(Blocked { until: HashMap::new(), last_cleanup: Instant::now() }),
        }
    }

    fn check(&self, key: IpAddr) -> Result<(), Duration> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match blocked.until.get(&key) {
            Some(until) if *until > now => Err(*until - now),
            Some(_) => {
                blocked.until.remove(&key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn record(&self, key: IpAddr) {
        let now = Instant::now();
        let next_cell = match self.limiter.check_key(&key) {
            // This failure took the last cell: the next one is due within one replenish interval.
            Ok(snapshot) if snapshot.remaining_burst_capacity() == 0 => Some(now + self.replenish),
            Ok(_) => None,
            // Concurrent failures emptied the bucket first.
            Err(not_until) => Some(now + not_until.wait_time_from(self.limiter.clock().now())),
        };
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = next_cell {
            blocked.until.insert(key, until);
        }
        // Keep the state bounded: drop buckets that have refilled and expired blocks.
        if blocked.last_cleanup.elapsed() >= CLEANUP_EVERY || self.limiter.len() > MAX_TRACKED_SOURCES {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            blocked.until.retain(|_, until| *until > now);
            blocked.last_cleanup = now;
        }
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
    fn the_limit_blocks_after_the_burst_and_counts_only_failures() {
        let p = protection(&[]);
        let source = p.source(peer("192.0.2.1:1"), &HeaderMap::new());
        for _ in 0..DEFAULT_AUTH_FAILURES_PER_MINUTE {
            assert!(p.check_failures(&source).is_ok());
            p.record_failure(&source);
        }
        let wait = p.check_failures(&source).expect_err("blocked after the burst");
        assert!(wait <= Duration::from_secs(6), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 6);
        let other = p.source(peer("192.0.2.2:1"), &HeaderMap::new());
        assert!(p.check_failures(&other).is_ok());
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
