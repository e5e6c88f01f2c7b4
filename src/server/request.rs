//! What the listener does around each request before and after the router: the global cap on
//! requests in flight, refusals that must not read the body (413 on `Content-Length`, 431 on an
//! oversized header section), the body-read deadline, and the bookkeeping that tells the
//! connection when it is idle and whether it must linger.
//!
//! The answers themselves come from `ApiError`, the one status mapping.

use std::convert::Infallible;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::IntoResponse as _;
use axum::Router;
use http::header::{HeaderValue, CONNECTION, X_CONTENT_TYPE_OPTIONS};
use http::StatusCode;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tower::ServiceExt as _;

use crate::http::error::BodyReadTimeout;
use crate::http::ApiError;
use crate::server::connection::{ConnState, InFlight, LINGER_BYTES, LINGER_TIME};

/// Largest header section (names, values and the request target) answered by the router; a
/// larger one gets 431 in the error envelope. hyper's own limits sit above this one and answer
/// with their own 431 (see `HTTP1_MAX_BUF_SIZE` and `H2_MAX_HEADER_LIST_SIZE`).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The per-listener request limits shared by every connection.
pub(crate) struct RequestLimits {
    pub in_flight: Arc<Semaphore>,
    pub body_read_timeout: Duration,
    pub max_body_bytes: u64,
}

/// A response body that keeps the request counted as in flight until hyper has written it.
pub(crate) struct GuardedBody {
    inner: axum::body::Body,
    /// h2: a refused request body, read and discarded before the response ends (see `Drain`).
    drain: Option<Drain>,
    _in_flight: InFlight,
    _permit: Option<OwnedSemaphorePermit>,
}

/// The h2 counterpart of the lingering close. Ending a response while the request body is still
/// coming makes h2 send `RST_STREAM(NO_ERROR)`, which RFC 9113 allows but which some clients
/// (curl 7.x) report as a failed transfer, losing the 413. Like nginx, the server instead reads
/// and discards the rest of the body, bounded as the lingering close is, and only then ends the
/// response stream.
struct Drain {
    body: Incoming,
    deadline: Pin<Box<Sleep>>,
    discarded: usize,
}

/// The request body, bounded in time: from the first read, all of it must arrive within the
/// body read timeout, else reading fails with [`BodyReadTimeout`] (the handler answers 408).
struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    state: Arc<ConnState>,
    done: bool,
}

/// Serves one request of a connection through `router`.
pub(crate) async fn serve(
    router: Router,
    limits: Arc<RequestLimits>,
    state: Arc<ConnState>,
    peer: SocketAddr,
    mut request: hyper::Request<Incoming>,
) -> Result<hyper::Response<GuardedBody>, Infallible> {
    let http2 = request.version() == http::Version::HTTP_2;
    let in_flight = state.request_started(http2, !request.body().is_end_stream());
    let permit = limits.in_flight.clone().try_acquire_owned().ok();
    let refusal = if permit.is_none() {
        Some(ApiError::Overloaded)
    } else if header_bytes(&request) > MAX_HEADER_BYTES {
        Some(ApiError::HeadersTooLarge)
    } else if request.body().size_hint().lower() > limits.max_body_bytes {
        // Refused on Content-Length before reading: no `100 Continue` is sent, since hyper only
        // sends it when the body is first read.
        Some(ApiError::PayloadTooLarge)
    } else {
        None
    };
    let mut drain = None;
    let mut response = match refusal {
        Some(error) => {
            let expects_continue = request.headers().contains_key(http::header::EXPECT);
            if http2 && matches!(error, ApiError::PayloadTooLarge) && !expects_continue {
                drain = Some(Drain {
                    body: request.into_body(),
                    deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
                    discarded: 0,
                });
            }
            error.into_response()
        }
        None => {
            request.extensions_mut().insert(ConnectInfo(peer));
            let request = request.map(|inner| {
                if inner.is_end_stream() {
                    // Nothing to read or time (`GET /ids`, the probes): an empty body, which
                    // costs no allocation.
                    axum::body::Body::empty()
                } else {
                    let (timeout, state) = (limits.body_read_timeout, state.clone());
                    axum::body::Body::new(TimedBody { inner, timeout, deadline: None, state, done: false })
                }
            });
            match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    };
    let refused_body = matches!(response.status(), StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT);
    if state.response_ready() && refused_body {
        // HTTP/1.1 with a refused body: the connection cannot carry another request, and says
        // so; it then lingers so that the client reads this answer instead of a reset. (Other
        // answers that leave a small body unread, such as a 307, keep the connection: hyper
        // drains what already arrived.)
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    // Every answer is JSON or empty: browsers must not sniff it into something else.
    response.headers_mut().insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response.map(|inner| GuardedBody { inner, drain, _in_flight: in_flight, _permit: permit }))
}

/// Bytes of the header section as received, near enough: request target plus names and values.
fn header_bytes<B>(request: &hyper::Request<B>) -> usize {
    let target = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    target + request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>()
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {}
            other => return other,
        }
        if let Some(drain) = &mut this.drain {
            if drain.poll_discard(cx).is_pending() {
                return Poll::Pending;
            }
            this.drain = None;
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.drain.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drain {
    /// Ready when the body ended, failed, passed `LINGER_BYTES` or `LINGER_TIME`.
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.discarded += frame.data_ref().map_or(0, Bytes::len);
                    if self.discarded >= LINGER_BYTES {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(None | Some(Err(_))) => return Poll::Ready(()),
                Poll::Pending => return self.deadline.as_mut().poll(cx),
            }
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let timeout = this.timeout;
        let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.done = true;
                this.state.body_finished();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.state.body_finished();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.done = true;
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    Poll::Ready(Some(Err(Box::new(BodyReadTimeout { timeout }))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_count_the_target_names_and_values() {
        let request = hyper::Request::builder().uri("/ids?x=1").header("a", "bc").body(()).unwrap();
        assert_eq!(header_bytes(&request), "/ids?x=1".len() + 1 + 2 + 4);
    }
}
