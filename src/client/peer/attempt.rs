//! One request to the provider and its retries, through the crate's one policy
//! ([`crate::retry`]): connection failures, timeouts, 429 and 5xx are tried again with
//! exponential backoff and full jitter (from [`INITIAL_BACKOFF`] up to [`MAX_BACKOFF`]),
//! honouring `Retry-After`, until the run's deadline (`--timeout`). Any other answer, and a
//! failure retrying cannot fix (TLS verification, a bad URL), ends the loop at once.
//!
//! Also here: how the provider's refusals and messages are shown, with every token we sent
//! redacted.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::client::peer::error::{AttemptFailure, PeerError, Step};
use crate::client::transport::{AuthClient, ConnectFailure, Response, TlsFailure, TransportError};
use crate::http::wire::ErrorBody;
use crate::identity::ClusterId;
use crate::retry::{retry_notify, RetryPolicy};

/// First step of the backoff; doubles per retry up to [`MAX_BACKOFF`] (full jitter below it).
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// Largest step of the backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long "connection refused" is retried (the service may be restarting behind its
/// Service); after that nothing is listening and waiting out `--timeout` would not help.
pub const REFUSED_WINDOW: Duration = Duration::from_secs(5);

/// The backoff of `peer`; the deadline, not a number of attempts, ends the retries.
pub const PEER_RETRY: RetryPolicy =
    RetryPolicy { min_delay: INITIAL_BACKOFF, max_delay: MAX_BACKOFF, max_retries: usize::MAX, total: None };

/// The secret values sent to the provider, kept out of every message.
pub(super) struct Secrets {
    pub(super) token: String,
    pub(super) origin_token: Option<String>,
}

/// How one attempt ended, for the retry loop; the failure itself is kept aside as the last one.
enum Attempt {
    /// Worth another try, after the server's `Retry-After` if it sent one.
    Retry { retry_after: Option<Duration> },
    /// The deadline passed during the request.
    OutOfTime,
    /// Retrying cannot help.
    Fatal(TransportError),
}

/// Sends `GET /ids` (no body) or `POST /identity/certificate` (with `body`) until an answer
/// that is not worth retrying (anything but 429 and 5xx), or until `deadline`. Returns the
/// answer and the number of requests made.
pub(super) async fn send(
    client: &AuthClient,
    step: Step,
    body: Option<&[u8]>,
    deadline: Instant,
    budget: Duration,
    secrets: &Secrets,
) -> Result<(Response, u32), PeerError> {
    let attempts = AtomicU32::new(0);
    let last: Mutex<Option<AttemptFailure>> = Mutex::new(None);
    let first_refused: Mutex<Option<Instant>> = Mutex::new(None);
    let (attempts_ref, last_ref, first_refused) = (&attempts, &last, &first_refused);
    let record = move |failure: AttemptFailure| {
        *last_ref.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure);
    };
    let operation = move || async move {
        attempts_ref.fetch_add(1, Ordering::Relaxed);
        let sent = match body {
            Some(body) => {
                let post = client.post("/identity/certificate", body.to_vec(), "application/json");
                tokio::time::timeout_at(deadline, post).await
            }
            None => tokio::time::timeout_at(deadline, client.get("/ids")).await,
        };
        match sent {
            Err(_) => {
                record(AttemptFailure::Deadline);
                Err(Attempt::OutOfTime)
            }
            Ok(Ok(response)) if response.status == 429 || response.status >= 500 => {
                let retry_after = retry_after(&response);
                let message = server_message(&response.body, secrets);
                record(AttemptFailure::Status { status: response.status, message });
                Err(Attempt::Retry { retry_after })
            }
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error @ TransportError::Connect { failure: ConnectFailure::Refused, .. })) => {
                let mut first = first_refused.lock().unwrap_or_else(PoisonError::into_inner);
                if first.get_or_insert_with(Instant::now).elapsed() >= REFUSED_WINDOW {
                    return Err(Attempt::Fatal(error));
                }
                record(AttemptFailure::Transport(error));
                Err(Attempt::Retry { retry_after: None })
            }
            Ok(Err(error)) if is_transient(&error) => {
                record(AttemptFailure::Transport(error));
                Err(Attempt::Retry { retry_after: None })
            }
            Ok(Err(error)) => Err(Attempt::Fatal(error)),
        }
    };
    let retryable = |attempt: &Attempt| {
        let Attempt::Retry { retry_after } = attempt else {
            return false;
        };
        // A wait the server asked for that outlasts the deadline is not worth starting.
        Instant::now() + retry_after.unwrap_or_default() < deadline
    };
    // One progress line per retry, for the person waiting.
    let notify = |_: &Attempt, wait: Duration| {
        let last = last_ref.lock().unwrap_or_else(PoisonError::into_inner);
        let failure = last.as_ref().map(ToString::to_string).unwrap_or_default();
        let reason = match last.as_ref() {
            Some(AttemptFailure::Status { status: 429, .. }) => "provider rate-limits this address".to_owned(),
            Some(AttemptFailure::Status { status, .. }) => format!("provider busy or unavailable (HTTP {status})"),
            _ => format!("{step} failed"),
        };
        let attempt = attempts_ref.load(Ordering::Relaxed);
        let left = deadline.saturating_duration_since(Instant::now()).as_secs();
        tracing::debug!(attempt, error = %failure, "{step} failed; retrying");
        eprintln!(
            "{reason}: {failure}; retrying in {:.1} s (attempt {}, {left} s left of --timeout)",
            wait.as_secs_f64(),
            attempt + 1
        );
    };
    let server_wait = |attempt: &Attempt| match attempt {
        Attempt::Retry { retry_after } => *retry_after,
        _ => None,
    };
    // The deadline also bounds the sleeps between attempts, which the policy does not know of.
    let outcome =
        tokio::time::timeout_at(deadline, retry_notify(&PEER_RETRY, operation, retryable, server_wait, notify)).await;
    let url = client.base_url();
    match outcome {
        Ok(Ok(response)) => Ok((response, attempts.load(Ordering::Relaxed))),
        Ok(Err(Attempt::Fatal(source))) => Err(PeerError::Request { step, url, source }),
        Ok(Err(Attempt::Retry { .. } | Attempt::OutOfTime)) | Err(_) => {
            let last = last.into_inner().unwrap_or_else(PoisonError::into_inner).unwrap_or(AttemptFailure::Deadline);
            Err(PeerError::OutOfTime {
                step,
                url,
                budget,
                attempts: attempts.load(Ordering::Relaxed),
                last: Box::new(last),
            })
        }
    }
}

/// The error for a 4xx answer, with a hint on what to do about it.
pub(super) fn rejected(status: u16, body: &[u8], secrets: &Secrets, local: &ClusterId) -> PeerError {
    let hint = match status {
        401 => "the token is wrong or has expired: ask the provider's operator for the current one (`liqo-auth token show`) or a new one (`liqo-auth token create`), then retry".to_owned(),
        403 => format!("cluster {local} is not authorised by the provider: ask the provider's operator to allow it"),
        409 => format!(
            "the provider already issued an identity to cluster {local} for another key. To give it this new key, ask the provider's operator for a join token bound to this cluster (`liqo-auth token create --cluster-id {local} --print-peer-command`) and run the command it prints; or re-run with the original key (keep its stored identity or pending request); or have the identity removed (`liqo-auth tenant remove {local}`) and peer again"
        ),
        _ => "the provider could not accept the request as sent; check the auth URL and the versions of both sides".to_owned(),
    };
    PeerError::Rejected { status, message: server_message(body, secrets), hint }
}

/// Connection failures and timeouts may pass; TLS verification failures and bad URLs do not.
pub(crate) fn is_transient(error: &TransportError) -> bool {
    match error {
        // Refused too: the service may be restarting behind its Service.
        TransportError::Connect { .. } => true,
        TransportError::Timeout { .. } | TransportError::Http { .. } => true,
        TransportError::TlsHandshake { failure: TlsFailure::PeerClosed, .. } => true,
        _ => false,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by liqo-auth and is ignored).
pub(crate) fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Longest server message shown.
const MAX_MESSAGE_CHARS: usize = 2000;

/// The server's message: the JSON envelope's `message`, else the text (the reference answers
/// text and echoes the token on 401), with every token we sent redacted and the length bounded.
fn server_message(body: &[u8], secrets: &Secrets) -> String {
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(envelope) => envelope.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let mut text = text.replace(&secrets.token, "<redacted>");
    if let Some(origin) = secrets.origin_token.as_deref().filter(|t| !t.is_empty()) {
        text = text.replace(origin, "<redacted>");
    }
    // Bounded (a misbehaving server could send megabytes), but far above any liqo-auth
    // message, and cut at a word boundary.
    if text.chars().count() > MAX_MESSAGE_CHARS {
        let cut: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
        let cut = cut.rsplit_once(char::is_whitespace).map_or(cut.as_str(), |(head, _)| head).to_owned();
        text = cut + " …";
    }
    if text.is_empty() {
        "(no message)".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_steps_double_from_250ms_and_stop_at_5s() {
        let steps: Vec<_> = PEER_RETRY.with_max_retries(40).delays().collect();
        assert_eq!(steps.len(), 40);
        let ceilings = [250u64, 500, 1000, 2000, 4000, 5000];
        for (delay, ceiling) in steps.iter().zip(ceilings.iter().chain(std::iter::repeat(&5000))) {
            assert!(*delay <= Duration::from_millis(*ceiling), "{delay:?} > {ceiling}ms");
        }
        assert!(steps.iter().all(|d| *d <= MAX_BACKOFF));
    }

    #[test]
    fn backoff_delays_are_jittered_within_the_first_step() {
        let delays: Vec<_> = (0..200).map(|_| PEER_RETRY.delays().next().expect("a first delay")).collect();
        assert!(delays.iter().all(|d| *d <= INITIAL_BACKOFF));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 10, "full jitter spreads the delays: {distinct:?}");
    }

    #[test]
    fn server_messages_never_show_the_tokens() {
        let secrets = Secrets { token: "tok-123".into(), origin_token: Some("mine-456".into()) };
        let text = server_message(b"invalid token \"tok-123\" and mine-456\n", &secrets);
        assert_eq!(text, "invalid token \"<redacted>\" and <redacted>");
        let json = server_message(br#"{"code":"invalid_token","message":"invalid or expired token"}"#, &secrets);
        assert_eq!(json, "invalid or expired token");
        assert_eq!(server_message(b"\n", &secrets), "(no message)");
    }

    #[test]
    fn conflict_hint_names_the_reset_command() {
        let secrets = Secrets { token: "t".into(), origin_token: None };
        let error = rejected(409, b"{}", &secrets, &ClusterId::parse("c1").unwrap());
        assert!(error.to_string().contains("liqo-auth tenant remove c1"), "{error}");
        assert!(error.to_string().contains("token create --cluster-id c1"), "the documented fix: {error}");
    }

    #[test]
    fn long_server_messages_are_kept_whole_up_to_a_generous_bound_cut_between_words() {
        let secrets = Secrets { token: "tok-xyz".into(), origin_token: None };
        let long = "cluster c1 already holds an identity for another key: ".repeat(10);
        assert_eq!(server_message(long.as_bytes(), &secrets), long.trim());
        let huge = "word ".repeat(1000);
        let shown = server_message(huge.as_bytes(), &secrets);
        assert!(shown.ends_with("word …") && shown.chars().count() <= MAX_MESSAGE_CHARS + 2, "{shown}");
    }
}
