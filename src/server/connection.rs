//! Connection bookkeeping: the slot registry (global and per-source caps, eviction of the oldest
//! idle connection when full), each connection's state machine and deadlines, the I/O wrapper
//! that notices the first byte of a request (and puts the error envelope into hyper's own
//! parse-error answers), and the lingering close after an unread body.
//!
//! The HTTP protocol itself stays with hyper; this module only decides *when* a connection is
//! cut. What is measured and when (times from the end of the TLS handshake):
//!
//! | state                                    | deadline                              | action          |
//! | ---------------------------------------- | ------------------------------------- | --------------- |
//! | TLS handshake                            | `tls_handshake_timeout` from accept   | close           |
//! | no request yet (HTTP/1.1 or h2 preface)  | `header_read_timeout`                 | close           |
//! | HTTP/1.1 idle, first byte of next head   | `header_read_timeout` from that byte  | close           |
//! | idle (no request, no h2 stream open)     | `idle_timeout` since the last request | graceful close  |
//! | request in flight                        | none here (body and request timeouts) | —               |
//!
//! A graceful close is hyper's: an idle HTTP/1.1 connection is closed, an h2 connection gets
//! GOAWAY. Go's `net/http` does the same with `ReadHeaderTimeout` and `IdleTimeout`, nginx with
//! `client_header_timeout` and `keepalive_timeout`.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// How long a lingering close keeps reading what a client still sends after its refused request.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(10);
/// A lingering close ends when the client pauses this long.
pub(crate) const LINGER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// A lingering close discards at most this much, then closes whatever the client does.
pub(crate) const LINGER_BYTES: usize = 16 * 1024 * 1024;
/// After a graceful close of an idle connection, how long hyper gets to finish before the
/// connection is dropped.
const GRACEFUL_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Open connections of one listener, counted globally and per source address.
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    /// Signalled when a connection closes or becomes idle (a slot may be free or freeable).
    changed: Notify,
    max_connections: usize,
    max_per_source: usize,
}

struct Inner {
    next_id: u64,
    connections: HashMap<u64, Arc<ConnState>>,
    per_source: HashMap<IpAddr, usize>,
}

/// Why a new connection did not get a slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every slot is taken by a connection that is working; wait for one.
    Full,
    /// This source holds `--max-connections-per-source` connections already.
    SourceFull,
}

/// A connection's place in the registry; dropping it frees the slot.
pub(crate) struct Slot {
    registry: Arc<Registry>,
    pub(crate) state: Arc<ConnState>,
}

/// What the supervisor does when a connection's deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Drop the connection now (a peer that never finished its handshake or request head).
    Close,
    /// Ask hyper to close it (HTTP/1.1 idle close, h2 GOAWAY).
    Graceful,
}

/// The deadlines of a connection, from the listener's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    pub header_read: Duration,
    pub idle: Duration,
}

impl Deadlines {
    /// The longest the supervisor sleeps between two looks at a connection. A request starting
    /// or ending, or the first byte of the next one, moves the deadline to at least this far
    /// ahead, so none of them has to wake the supervisor: waking it from inside hyper's poll
    /// reschedules the connection task and wakes an idle worker thread to steal it, a futex
    /// round trip per request. A busy connection costs one look per period instead.
    pub(crate) fn look_every(self) -> Duration {
        self.header_read.min(self.idle)
    }
}

/// One connection's state as the supervisor, the request service and the I/O wrapper see it.
pub(crate) struct ConnState {
    id: u64,
    source: IpAddr,
    /// Requests whose response has not been fully written yet.
    in_flight: AtomicUsize,
    /// Set while idle on HTTP/1.1: the next byte read starts the header deadline.
    awaiting_first_byte: AtomicBool,
    /// HTTP/1.1: the current request has a body that was not read to its end yet.
    body_pending: AtomicBool,
    /// The connection should drain what the client still sends before closing.
    linger: AtomicBool,
    /// The server decided to close this connection (deadline, eviction, shutdown).
    closing: AtomicBool,
    times: Mutex<Times>,
    /// Signalled when the registry takes this connection's slot for a waiting peer.
    pub(crate) evicted: Notify,
}

struct Times {
    /// Accept, then the end of the TLS handshake.
    ready_at: Instant,
    /// When the last request finished (or `ready_at`).
    idle_since: Instant,
    /// HTTP/1.1: when the first byte of the next request head arrived.
    head_started: Option<Instant>,
    requests: u64,
    http2: bool,
}

/// Held while a request is in flight; dropping it (response written, or the request abandoned)
/// makes the connection idle again.
pub(crate) struct InFlight {
    state: Arc<ConnState>,
}

/// The connection's byte stream, watched: the first byte after an idle period moves the
/// deadline, and when the connection should linger the stream is handed back on drop.
pub(crate) struct Watched<T> {
    inner: Option<T>,
    state: Arc<ConnState>,
    hand_back: Option<oneshot::Sender<T>>,
    /// An enveloped answer sent in place of hyper's own parse-error response (see
    /// [`parser_error_answer`]), and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl Registry {
    pub(crate) fn new(max_connections: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner { next_id: 0, connections: HashMap::new(), per_source: HashMap::new() }),
            changed: Notify::new(),
            max_connections: max_connections.max(1),
            max_per_source,
        })
    }

    /// A slot for a connection from `source`, when one is free.
    pub(crate) fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Slot, Refusal> {
        let source = source.to_canonical();
        let mut inner = self.lock();
        let from_source = inner.per_source.get(&source).copied().unwrap_or(0);
        if self.max_per_source > 0 && from_source >= self.max_per_source {
            return Err(Refusal::SourceFull);
        }
        if inner.connections.len() >= self.max_connections {
            return Err(Refusal::Full);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let state = Arc::new(ConnState::new(id, source));
        inner.connections.insert(id, state.clone());
        *inner.per_source.entry(source).or_default() += 1;
        Ok(Slot { registry: self.clone(), state })
    }

    /// Asks the connection idle the longest (no request in flight: fresh, handshaking, between
    /// requests, or still sending a request head) to close now. False when every connection is
    /// working.
    pub(crate) fn evict_oldest_idle(&self) -> bool {
        let victim = {
            let inner = self.lock();
            inner
                .connections
                .values()
                .filter(|c| !c.closing.load(Ordering::Acquire) && c.in_flight.load(Ordering::Acquire) == 0)
                .min_by_key(|c| c.times().idle_since)
                .cloned()
        };
        match victim {
            Some(victim) => {
                victim.closing.store(true, Ordering::Release);
                tracing::debug!(peer.ip = %victim.source, "every connection slot is taken: closing the connection idle the longest");
                victim.evicted.notify_one();
                true
            }
            None => false,
        }
    }

    /// Asks every connection to close now (end of the shutdown grace).
    pub(crate) fn evict_all(&self) {
        for connection in self.lock().connections.values() {
            connection.closing.store(true, Ordering::Release);
            connection.evicted.notify_one();
        }
    }

    /// Open connections.
    pub(crate) fn len(&self) -> usize {
        self.lock().connections.len()
    }

    /// Resolves at the next change (a connection closed or went idle).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections hold no invariant a panic could break half-way.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.connections.remove(&self.state.id);
        if let Some(count) = inner.per_source.get_mut(&self.state.source) {
            *count -= 1;
            if *count == 0 {
                inner.per_source.remove(&self.state.source);
            }
        }
        drop(inner);
        self.registry.changed.notify_waiters();
        self.registry.changed.notify_one();
    }
}

impl ConnState {
    fn new(id: u64, source: IpAddr) -> Self {
        let now = Instant::now();
        Self {
            id,
            source,
            in_flight: AtomicUsize::new(0),
            awaiting_first_byte: AtomicBool::new(false),
            body_pending: AtomicBool::new(false),
            linger: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            times: Mutex::new(Times { ready_at: now, idle_since: now, head_started: None, requests: 0, http2: false }),
            evicted: Notify::new(),
        }
    }

    /// The TLS handshake finished: the first-request deadline starts now.
    pub(crate) fn handshake_done(&self) {
        let mut times = self.times();
        let now = Instant::now();
        times.ready_at = now;
        times.idle_since = now;
    }

    /// A request head arrived. `has_body`: HTTP/1.1 with a body still to read.
    pub(crate) fn request_started(self: &Arc<Self>, http2: bool, has_body: bool) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.awaiting_first_byte.store(false, Ordering::Release);
        self.body_pending.store(!http2 && has_body, Ordering::Release);
        // hyper only reads a new head once the previous body is drained.
        self.linger.store(false, Ordering::Release);
        {
            let mut times = self.times();
            times.requests += 1;
            times.head_started = None;
            times.http2 = http2;
        }
        InFlight { state: self.clone() }
    }

    /// The request body was read to its end.
    pub(crate) fn body_finished(&self) {
        self.body_pending.store(false, Ordering::Release);
    }

    /// The response is ready. When an HTTP/1.1 body was left unread, hyper drains what already
    /// arrived or else closes the connection, which should then linger; returns whether a body
    /// was left unread.
    pub(crate) fn response_ready(&self) -> bool {
        let unread = self.body_pending.swap(false, Ordering::AcqRel);
        if unread {
            self.linger.store(true, Ordering::Release);
        }
        unread
    }

    /// The next deadline and what happens then; `None` while a request is in flight.
    pub(crate) fn deadline(&self, limits: Deadlines, graceful_since: Option<Instant>) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let times = self.times();
        if let Some(since) = graceful_since {
            return Some((since + GRACEFUL_CLOSE_GRACE, Expiry::Close));
        }
        if times.requests == 0 {
            return Some((times.ready_at + limits.header_read, Expiry::Close));
        }
        if let (false, Some(started)) = (times.http2, times.head_started) {
            return Some((started + limits.header_read, Expiry::Close));
        }
        Some((times.idle_since + limits.idle, Expiry::Graceful))
    }

    /// When the supervisor should look at this connection next: its deadline, but no later than
    /// [`Deadlines::look_every`] from now.
    pub(crate) fn next_look(&self, limits: Deadlines, graceful_since: Option<Instant>) -> Instant {
        let latest = Instant::now() + limits.look_every();
        self.deadline(limits, graceful_since).map_or(latest, |(at, _)| at.min(latest))
    }

    /// Marks the connection as being closed by the server (it is no eviction candidate).
    pub(crate) fn set_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    fn bytes_read(&self) {
        if self.awaiting_first_byte.swap(false, Ordering::AcqRel) {
            let mut times = self.times();
            if times.head_started.is_none() {
                times.head_started = Some(Instant::now());
            }
        }
    }

    fn times(&self) -> MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.state;
        if state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut times = state.times();
            times.idle_since = Instant::now();
            times.head_started = None;
            let http1 = !times.http2;
            drop(times);
            if http1 {
                state.awaiting_first_byte.store(true, Ordering::Release);
            }
        }
    }
}

impl<T> Watched<T> {
    /// Wraps `inner`; when the connection ends wanting a lingering close, `inner` is sent to
    /// `hand_back` instead of being closed.
    pub(crate) fn new(inner: T, state: Arc<ConnState>, hand_back: oneshot::Sender<T>) -> Self {
        Self { inner: Some(inner), state, hand_back: Some(hand_back), replacement: None }
    }

    fn inner(&mut self) -> &mut T {
        self.inner.as_mut().expect("the stream is only taken when the wrapper is dropped")
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(self.inner()).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.bytes_read();
        }
        poll
    }
}

/// The enveloped answer for `head` when it is hyper's own answer to a request its HTTP/1.1
/// parser could not read: hyper writes it by itself (400, 414 or 431, `content-length: 0`, no
/// `content-type`, the connection closing) and has no hook for a body. Every answer of the
/// router carries a body and a `content-type`, so that shape is hyper's alone.
pub(crate) fn parser_error_answer(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let status = std::str::from_utf8(rest.get(..3)?).ok()?.parse::<u16>().ok()?;
    // Checked first: every other answer (the hot path) stops here, without a scan.
    let error = crate::http::ApiError::for_parser_status(status)?;
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let headers = head[..end].to_ascii_lowercase();
    let has = |needle: &[u8]| headers.windows(needle.len()).any(|w| w == needle);
    if end + 4 != head.len() || !has(b"\r\ncontent-length: 0") || has(b"\r\ncontent-type:") {
        return None;
    }
    Some(error.http1_bytes())
}

impl<T: AsyncWrite + Unpin> Watched<T> {
    /// Writes what is left of the replacement answer; ready once all of it is written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = self.replacement.take() {
            if written == bytes.len() {
                break;
            }
            match Pin::new(self.inner()).poll_write(cx, &bytes[written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.replacement = Some((bytes, written + n)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.replacement = Some((bytes, written));
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.replacement.is_some() {
            // The connection closes after a parse-error answer: hyper writes nothing more.
            std::task::ready!(self.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        if self.state.in_flight.load(Ordering::Acquire) == 0 {
            if let Some(answer) = parser_error_answer(buf) {
                self.replacement = Some((answer, 0));
                std::task::ready!(self.poll_replacement(cx))?;
                return Poll::Ready(Ok(buf.len()));
            }
        }
        Pin::new(self.inner()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            // Only hyper's own parse-error answer goes through `poll_write`. Every response
            // flushes with no request in flight (the body's guard is gone by then), so sending
            // all of them there would split head and body into two TLS records and two writes.
            let parser_answer =
                self.state.in_flight.load(Ordering::Acquire) == 0 && parser_error_answer(first).is_some();
            if self.replacement.is_some() || parser_answer {
                return self.poll_write(cx, first);
            }
        }
        Pin::new(self.inner()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_replacement(cx))?;
        Pin::new(self.inner()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_replacement(cx))?;
        Pin::new(self.inner()).poll_shutdown(cx)
    }
}

impl<T> Drop for Watched<T> {
    fn drop(&mut self) {
        if self.state.linger.load(Ordering::Acquire) {
            if let (Some(inner), Some(hand_back)) = (self.inner.take(), self.hand_back.take()) {
                let _ = hand_back.send(inner);
            }
        }
    }
}

/// The lingering close (nginx's `lingering_close`): after a response that refused an unread
/// body, the write side is shut (the response and FIN are on their way) and what the client
/// still sends is read and discarded until it closes, pauses for `LINGER_READ_TIMEOUT`, sends
/// `LINGER_BYTES`, or `LINGER_TIME` passes. Closing at once would make the kernel answer the
/// unread bytes with a reset, which destroys the response before the client reads it.
pub(crate) async fn linger<T: AsyncRead + AsyncWrite + Unpin>(mut io: T) -> usize {
    let _ = tokio::time::timeout(LINGER_READ_TIMEOUT, io.shutdown()).await;
    let end = Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 * 1024];
    let mut discarded = 0usize;
    while discarded < LINGER_BYTES {
        let until = end.min(Instant::now() + LINGER_READ_TIMEOUT);
        match tokio::time::timeout_at(until, io.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => discarded += n,
        }
    }
    discarded
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Deadlines = Deadlines { header_read: Duration::from_secs(10), idle: Duration::from_secs(120) };

    fn source(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn only_hyper_s_own_empty_parse_error_answers_are_replaced() {
        let hyper = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 03:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(parser_error_answer(hyper).expect("replaced")).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"), "{answer}");
        assert!(answer.ends_with(
            r#""code":"malformed_request","message":"the request line or a header is not valid HTTP/1.1"}"#
        ));
        let too_large = hyper_head("431 Request Header Fields Too Large");
        assert!(String::from_utf8(parser_error_answer(&too_large).unwrap()).unwrap().contains("headers_too_large"));
        // The router's own answers carry a content type (and a body): never touched.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parser_error_answer(ours), None);
        assert_eq!(parser_error_answer(&hyper_head("404 Not Found")), None, "not a parser status");
        assert_eq!(parser_error_answer(&hyper[..40]), None, "an incomplete head");
        let with_body = [&hyper[..], b"{}"].concat();
        assert_eq!(parser_error_answer(&with_body), None, "more than a head");
        assert_eq!(parser_error_answer(b"{\"code\":\"HTTP/1.1 400\"}"), None);
    }

    /// Records each write it is given, as the slices it got.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<Vec<u8>>>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.writes.push(vec![buf.to_vec()]);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(bufs.iter().map(|b| b.to_vec()).collect());
            Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_response_head_and_body_go_out_in_one_vectored_write() {
        use tokio::io::AsyncWriteExt as _;
        let registry = Registry::new(4, 0);
        let slot = registry.admit(source(1)).unwrap();
        let (hand_back, _handed_back) = oneshot::channel();
        let mut io = Watched::new(Recorder::default(), slot.state.clone(), hand_back);
        // hyper flushes after the body's guard is dropped: no request is in flight any more.
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n";
        let written = io.write_vectored(&[io::IoSlice::new(head), io::IoSlice::new(b"{}")]).await.unwrap();
        assert_eq!(written, head.len() + 2);
        // One write of both slices: over TLS, one record and one syscall per response.
        assert_eq!(io.inner().writes, vec![vec![head.to_vec(), b"{}".to_vec()]]);

        // hyper's own parse-error answer is still replaced by the enveloped one.
        let bad = hyper_head("400 Bad Request");
        // Reported as written whole: hyper then closes the connection.
        assert_eq!(io.write_vectored(&[io::IoSlice::new(&bad)]).await.unwrap(), bad.len());
        let replaced = io.inner().writes.concat().concat();
        assert!(String::from_utf8_lossy(&replaced).contains("malformed_request"));
    }

    fn hyper_head(status: &str) -> Vec<u8> {
        format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").into_bytes()
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_connection_must_send_its_first_request_within_the_header_timeout() {
        let registry = Registry::new(4, 0);
        let slot = registry.admit(source(1)).unwrap();
        let (at, expiry) = slot.state.deadline(LIMITS, None).unwrap();
        assert_eq!(expiry, Expiry::Close);
        assert_eq!(at - Instant::now(), LIMITS.header_read);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_gets_the_idle_timeout_and_the_header_timeout_only_after_a_byte() {
        let registry = Registry::new(4, 0);
        let slot = registry.admit(source(1)).unwrap();
        drop(slot.state.request_started(false, false));
        let (at, expiry) = slot.state.deadline(LIMITS, None).unwrap();
        assert_eq!((at - Instant::now(), expiry), (LIMITS.idle, Expiry::Graceful));
        tokio::time::advance(Duration::from_secs(60)).await;
        slot.state.bytes_read();
        let (at, expiry) = slot.state.deadline(LIMITS, None).unwrap();
        assert_eq!((at - Instant::now(), expiry), (LIMITS.header_read, Expiry::Close));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_on_an_idle_h2_connection_do_not_shorten_its_idle_timeout() {
        let registry = Registry::new(4, 0);
        let slot = registry.admit(source(1)).unwrap();
        drop(slot.state.request_started(true, false));
        slot.state.bytes_read();
        assert_eq!(slot.state.deadline(LIMITS, None).unwrap().1, Expiry::Graceful);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_a_request_in_flight_has_no_connection_deadline() {
        let registry = Registry::new(4, 0);
        let slot = registry.admit(source(1)).unwrap();
        let request = slot.state.request_started(false, true);
        assert!(slot.state.deadline(LIMITS, None).is_none());
        drop(request);
        assert!(slot.state.deadline(LIMITS, None).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_supervisor_looks_at_the_deadline_or_within_one_period_and_requests_never_need_it_sooner() {
        let registry = Registry::new(4, 0);
        let slot = registry.admit(source(1)).unwrap();
        let state = &slot.state;
        let period = LIMITS.look_every();
        assert_eq!(period, LIMITS.header_read);
        // A fresh connection: the first-request deadline is the next look.
        assert_eq!(state.next_look(LIMITS, None) - Instant::now(), LIMITS.header_read);
        // In flight: no deadline, one look per period.
        let request = state.request_started(false, false);
        assert_eq!(state.next_look(LIMITS, None) - Instant::now(), period);
        tokio::time::advance(Duration::from_secs(3)).await;
        // Each change a request makes, unannounced, sets a deadline no sooner than one period
        // ahead: a look armed before it still comes in time.
        drop(request);
        assert!(state.deadline(LIMITS, None).unwrap().0 >= Instant::now() + period);
        assert_eq!(state.next_look(LIMITS, None) - Instant::now(), period, "idle: capped at one period");
        tokio::time::advance(Duration::from_secs(4)).await;
        state.bytes_read();
        assert_eq!(state.deadline(LIMITS, None).unwrap().0, Instant::now() + period);
        // Closing: the grace is the next look.
        let since = Instant::now();
        assert_eq!(state.next_look(LIMITS, Some(since)), since + GRACEFUL_CLOSE_GRACE);
    }

    #[test]
    fn a_source_at_its_cap_is_refused_while_others_still_get_slots() {
        let registry = Registry::new(10, 2);
        let _a = registry.admit(source(1)).unwrap();
        let _b = registry.admit(source(1)).unwrap();
        assert_eq!(registry.admit(source(1)).err(), Some(Refusal::SourceFull));
        let c = registry.admit(source(2)).unwrap();
        drop(c);
        drop(_a);
        assert!(registry.admit(source(1)).is_ok(), "a closed connection frees its source's slot");
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_their_ipv4_source() {
        let registry = Registry::new(10, 1);
        let _a = registry.admit(source(1)).unwrap();
        let mapped = match source(1) {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            IpAddr::V6(_) => unreachable!(),
        };
        assert_eq!(registry.admit(mapped).err(), Some(Refusal::SourceFull));
    }

    #[tokio::test(start_paused = true)]
    async fn when_full_the_connection_idle_the_longest_is_evicted_and_a_working_one_never() {
        let registry = Registry::new(3, 0);
        let working = registry.admit(source(1)).unwrap();
        let _request = working.state.request_started(false, true);
        tokio::time::advance(Duration::from_secs(1)).await;
        let oldest_idle = registry.admit(source(2)).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let newer_idle = registry.admit(source(3)).unwrap();
        assert_eq!(registry.admit(source(4)).err(), Some(Refusal::Full));

        assert!(registry.evict_oldest_idle());
        assert!(oldest_idle.state.closing.load(Ordering::Acquire));
        assert!(!newer_idle.state.closing.load(Ordering::Acquire));
        assert!(registry.evict_oldest_idle());
        assert!(newer_idle.state.closing.load(Ordering::Acquire));
        assert!(!registry.evict_oldest_idle(), "the connection with a request in flight is never evicted");
    }

    #[test]
    fn an_unread_http1_body_makes_the_connection_linger() {
        let registry = Registry::new(3, 0);
        let slot = registry.admit(source(1)).unwrap();
        let request = slot.state.request_started(false, true);
        assert!(slot.state.response_ready());
        drop(request);
        let read = slot.state.request_started(false, true);
        slot.state.body_finished();
        assert!(!slot.state.response_ready(), "a body read to its end needs no lingering");
        drop(read);
        let h2 = slot.state.request_started(true, true);
        assert!(!slot.state.response_ready(), "h2 refuses a stream with RST_STREAM, not by closing");
        drop(h2);
    }
}
