//! The listener: accept loop, optional TLS, HTTP/1.1 and HTTP/2, connection limits and
//! deadlines, graceful shutdown.
//!
//! Hardening the reference lacks, all on the public and the admin listener:
//! - a TLS handshake deadline, a deadline for the first request head (HTTP/1.1 and the h2
//!   preface alike), a header deadline from the first byte of each later request, and an idle
//!   timeout for keep-alive and for h2 connections without streams (`connection`);
//! - connection slots, a per-source cap, and eviction of the connection idle the longest when
//!   every slot is taken, so idle or slow peers cannot lock a good one out (`connection`);
//! - a global cap on requests in flight, 413 on `Content-Length` before reading, 431 in the
//!   error envelope, a body-read deadline answered with 408 (`request`), and a lingering close
//!   after an unread body so that clients read the refusal instead of a reset;
//! - HTTP/2 limits sized for this API (few streams, small windows, bounded header lists);
//! - a graceful shutdown in which in-flight requests finish while no new connection is accepted.
//!
//! TLS configuration and certificate reload live in `tls` and `reload`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::server::connection::{ConnState, Deadlines, Expiry, Refusal, Registry, Slot, Watched};
use crate::server::request::RequestLimits;

pub mod connection;
pub mod reload;
pub mod request;
pub mod tls;

/// Concurrent h2 streams per connection: a peer needs one or two (`/ids`, then the identity
/// request); hyper's default of 200 lets one connection hold 200 request states.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 8;
/// h2 header list limit (decoded, as RFC 9113 counts it); above it h2 answers a bare 431.
pub const H2_MAX_HEADER_LIST_SIZE: u32 = 32 * 1024;
/// h2 flow-control window of one stream: one maximal request body (64 KiB) and no more.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
/// h2 flow-control window of a connection: what all its streams may have in flight together.
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;
/// h2 per-stream send buffer (responses here are a few KiB).
const H2_MAX_SEND_BUF: usize = 64 * 1024;
/// Streams a client may reset before the server has accepted them (the "rapid reset" bound).
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 16;
/// HTTP/1.1 read and write buffer limit: a header section over it gets hyper's 431 (which the
/// listener sends with the envelope, see `connection::parser_error_answer`).
pub const HTTP1_MAX_BUF_SIZE: usize = 32 * 1024;

/// Limits of the listener.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Open connections (`--max-connections`).
    pub max_connections: usize,
    /// Open connections from one source address, 0 for no cap (`--max-connections-per-source`).
    pub max_connections_per_source: usize,
    /// Requests in flight on the listener, over every connection and stream
    /// (`--max-requests-in-flight`); more get 503 at once.
    pub max_requests_in_flight: usize,
    /// From accept to the end of the TLS handshake (`--tls-handshake-timeout`).
    pub tls_handshake_timeout: Duration,
    /// From the end of the handshake, or from the first byte of a later request, to the end of
    /// the request head (`--header-read-timeout`).
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight stays open (`--idle-timeout`).
    pub idle_timeout: Duration,
    /// From the first read of a request body to its end (`--body-read-timeout`).
    pub body_read_timeout: Duration,
    /// Bodies declared larger than this are refused before reading.
    pub max_body_bytes: usize,
    /// How long open requests may take to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_source: 64,
            max_requests_in_flight: 256,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            body_read_timeout: Duration::from_secs(10),
            max_body_bytes: crate::http::extract::MAX_BODY_BYTES,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Parses a Go-style listen address: `:5000` (all interfaces), `host:port` or `[v6]:port`.
pub fn parse_listen_address(text: &str) -> Result<Vec<SocketAddr>, String> {
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| format!("invalid port in address {text:?}"))?;
        return Ok(vec![SocketAddr::from(([0u16; 8], port)), SocketAddr::from(([0u8; 4], port))]);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    use std::net::ToSocketAddrs;
    text.to_socket_addrs().map(|addrs| addrs.collect()).map_err(|e| format!("invalid listen address {text:?}: {e}"))
}

/// Binds the first address that works (`[::]` falls back to `0.0.0.0` without IPv6).
pub async fn bind(candidates: &[SocketAddr]) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in candidates {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no listen address")))
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let listener_ctx = Arc::new(Listener::new(router, tls, &limits));
    let registry = Registry::new(limits.max_connections, limits.max_connections_per_source);
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    'accept: loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A slot for this peer: free, or freed by closing the connection idle the longest; when
        // every connection is working, the peer waits (and the kernel's backlog holds the rest).
        let slot = loop {
            match registry.admit(peer.ip()) {
                Ok(slot) => break slot,
                Err(Refusal::SourceFull) => {
                    tracing::debug!(peer = %peer, "refusing a connection: --max-connections-per-source reached");
                    continue 'accept;
                }
                Err(Refusal::Full) => {
                    let evicted = registry.evict_oldest_idle();
                    let wait = if evicted { Duration::from_millis(200) } else { Duration::from_millis(20) };
                    tokio::select! {
                        () = registry.changed() => {}
                        () = tokio::time::sleep(wait) => {}
                        () = &mut shutdown => break 'accept,
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(listener_ctx.clone().connection(stream, peer, slot, stopped.clone()));
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, waiting for open requests to finish");
    let _ = stop.send(true);
    let drained = async {
        while registry.len() > 0 {
            tokio::select! {
                () = registry.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    };
    if tokio::time::timeout(limits.shutdown_grace, drained).await.is_err() {
        tracing::warn!(grace = ?limits.shutdown_grace, "open connections did not finish in time");
        registry.evict_all();
    }
}

/// What every connection of one listener shares.
struct Listener {
    router: Router,
    tls: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    requests: Arc<RequestLimits>,
    handshake_timeout: Duration,
    deadlines: Deadlines,
}

impl Listener {
    fn new(router: Router, tls: Option<TlsAcceptor>, limits: &ServerLimits) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's own header timer also runs while a keep-alive connection waits for its next
        // request, so it would double as a 10 s idle timeout; the connection supervisor keeps
        // the two apart instead.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true)
            .max_buf_size(HTTP1_MAX_BUF_SIZE);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_send_buf_size(H2_MAX_SEND_BUF)
            .keep_alive_interval(Some(Duration::from_secs(60)));
        Self {
            router,
            tls,
            builder,
            requests: Arc::new(RequestLimits {
                in_flight: Arc::new(Semaphore::new(limits.max_requests_in_flight.max(1))),
                body_read_timeout: limits.body_read_timeout,
                max_body_bytes: limits.max_body_bytes as u64,
            }),
            handshake_timeout: limits.tls_handshake_timeout,
            deadlines: Deadlines { header_read: limits.header_read_timeout, idle: limits.idle_timeout },
        }
    }

    /// One connection, from the TLS handshake to the lingering close.
    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, slot: Slot, stop: watch::Receiver<bool>) {
        let state = slot.state.clone();
        match &self.tls {
            Some(acceptor) => {
                let handshake = tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream));
                let stream = tokio::select! {
                    done = handshake => match done {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(peer = %peer, error = %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    },
                    () = state.evicted.notified() => return,
                };
                state.handshake_done();
                // Boxed: the TLS state (rustls' connection, over a kilobyte) then lives in one
                // place for the connection's life, not also in this future's frame.
                self.http(Box::new(stream), peer, &state, stop).await;
            }
            None => self.http(stream, peer, &state, stop).await,
        }
        drop(slot);
    }

    /// HTTP over `io` under the connection's deadlines, then a lingering close when a response
    /// left a body unread.
    async fn http<T>(&self, io: T, peer: SocketAddr, state: &Arc<ConnState>, mut stop: watch::Receiver<bool>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (hand_back, handed_back) = oneshot::channel();
        let service = {
            let (router, requests, state) = (self.router.clone(), self.requests.clone(), state.clone());
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                request::serve(router.clone(), requests.clone(), state.clone(), peer, request)
            })
        };
        // Boxed, not pinned on the stack: it is dropped before the lingering close below.
        let mut connection =
            Box::pin(self.builder.serve_connection(TokioIo::new(Watched::new(io, state.clone(), hand_back)), service));
        let limits = self.deadlines;
        let mut graceful_since = None;
        // One timer for the connection's life, moved only when it fires (see `look_every`).
        let mut look = Box::pin(tokio::time::sleep_until(state.next_look(limits, None)));
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(peer = %peer, error = %error, "connection ended with an error");
                    }
                    break;
                }
                () = look.as_mut() => {
                    let now = tokio::time::Instant::now();
                    match state.deadline(limits, graceful_since) {
                        Some((at, Expiry::Graceful)) if at <= now => {
                            tracing::debug!(peer = %peer, "closing an idle connection (--idle-timeout)");
                            state.set_closing();
                            connection.as_mut().graceful_shutdown();
                            graceful_since = Some(now);
                        }
                        Some((at, Expiry::Close)) if at <= now => {
                            tracing::debug!(peer = %peer, "closing a connection that sent no complete request head in time (--header-read-timeout)");
                            break;
                        }
                        _ => {}
                    }
                    look.as_mut().reset(state.next_look(limits, graceful_since));
                }
                () = state.evicted.notified() => break,
                changed = stop.changed(), if graceful_since.is_none() => {
                    if changed.is_err() || *stop.borrow() {
                        state.set_closing();
                        connection.as_mut().graceful_shutdown();
                        // Requests in flight finish; the listener's shutdown grace bounds them.
                        graceful_since = Some(tokio::time::Instant::now());
                        look.as_mut().reset(state.next_look(limits, graceful_since));
                    }
                }
            }
        }
        // Dropping hyper's connection drops the stream, or hands it back for a lingering close.
        drop(connection);
        if let Ok(io) = handed_back.await {
            // Boxed: only the few connections that linger pay for its state.
            let discarded = Box::pin(connection::linger(io)).await;
            tracing::debug!(peer = %peer, discarded, "lingering close done");
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_addresses() {
        assert_eq!(parse_listen_address(":5000").unwrap().len(), 2);
        assert_eq!(parse_listen_address("127.0.0.1:8443").unwrap(), vec!["127.0.0.1:8443".parse().unwrap()]);
        assert_eq!(parse_listen_address("[::1]:1").unwrap(), vec!["[::1]:1".parse().unwrap()]);
        assert!(parse_listen_address(":x").is_err());
    }
}
