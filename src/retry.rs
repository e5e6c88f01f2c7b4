//! The one retry policy of the crate: exponential backoff with full jitter, bounded by a number
//! of attempts and a total deadline, honouring a server's `Retry-After`.
//!
//! Every loop that tries again (an optimistic-concurrency conflict on a Kubernetes object, a
//! consumer waiting for a provider that answered 503, a watch that dropped) goes through
//! [`retry`], so there is one place to read and tune how this crate waits. Built on `backon`;
//! full jitter (a delay drawn uniformly from zero to the exponential step) keeps replicas and
//! clients that failed together from retrying together.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use rand::Rng as _;

/// How often and how long to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first step of the exponential backoff (before jitter).
    pub min_delay: Duration,
    /// The largest step (before jitter).
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// The longest total time spent sleeping between attempts; `None` for no bound.
    pub total: Option<Duration>,
}

impl RetryPolicy {
    /// Optimistic-concurrency conflicts on Kubernetes objects: another writer just changed the
    /// object, so a fresh read almost always succeeds at once.
    pub const CONFLICT: Self = Self {
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(500),
        max_retries: 8,
        total: Some(Duration::from_secs(3)),
    };

    /// A policy with the same steps, bounded by `total` instead.
    #[cfg(test)]
    pub fn with_total(self, total: Duration) -> Self {
        Self { total: Some(total), ..self }
    }

    /// A policy with the same steps and `max_retries` retries.
    pub fn with_max_retries(self, max_retries: usize) -> Self {
        Self { max_retries, ..self }
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_factor(2.0)
            .with_total_delay(self.total)
    }

    /// The delays this policy sleeps, with full jitter applied (for tests).
    #[cfg(test)]
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        use backon::BackoffBuilder as _;
        self.backoff().build().map(full_jitter)
    }
}

/// Runs `operation` until it succeeds, fails with an error `retryable` refuses, or the policy
/// is exhausted (then the last error is returned). `retry_after` may name the wait a server
/// asked for; it replaces the jittered step, still within the policy's attempts.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    operation: F,
    retryable: impl FnMut(&E) -> bool,
    retry_after: impl FnMut(&E) -> Option<Duration>,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_notify(policy, operation, retryable, retry_after, |_, _| {}).await
}

/// Like [`retry`], calling `notify` with the error and the wait before each retry (for a
/// progress line such as "retrying in 4 s").
pub async fn retry_notify<T, E, F, Fut>(
    policy: &RetryPolicy,
    operation: F,
    retryable: impl FnMut(&E) -> bool,
    mut retry_after: impl FnMut(&E) -> Option<Duration>,
    notify: impl FnMut(&E, Duration),
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    operation
        .retry(policy.backoff())
        .sleep(tokio::time::sleep)
        .when(retryable)
        .adjust(move |error, step| step.map(|step| retry_after(error).unwrap_or_else(|| full_jitter(step))))
        .notify(notify)
        .await
}

/// A delay drawn uniformly from `[0, step]`.
fn full_jitter(step: Duration) -> Duration {
    step.mul_f64(rand::rng().random_range(0.0..=1.0))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const QUICK: RetryPolicy = RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        max_retries: 3,
        total: None,
    };

    #[tokio::test]
    async fn retries_until_success_within_the_attempts() {
        let calls = AtomicUsize::new(0);
        let result: Result<usize, &str> = retry(
            &QUICK,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 2 {
                    Err("busy")
                } else {
                    Ok(n)
                }
            },
            |_| true,
            |_| None,
        )
        .await;
        assert_eq!(result, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries_with_the_last_error() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), usize> =
            retry(&QUICK, || async { Err(calls.fetch_add(1, Ordering::SeqCst)) }, |_| true, |_| None).await;
        assert_eq!(result, Err(3), "one attempt and three retries");
    }

    #[tokio::test]
    async fn an_error_that_is_not_retryable_ends_at_once() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), &str> = retry(
            &QUICK,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("denied")
            },
            |e| *e != "denied",
            |_| None,
        )
        .await;
        assert_eq!(result, Err("denied"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_retry_after_replaces_the_step() {
        let started = tokio::time::Instant::now();
        let calls = AtomicUsize::new(0);
        let _: Result<(), ()> = retry(
            &QUICK.with_max_retries(1),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(())
            },
            |_| true,
            |_| Some(Duration::from_secs(7)),
        )
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(started.elapsed() >= Duration::from_secs(7), "{:?}", started.elapsed());
    }

    #[test]
    fn delays_are_jittered_below_the_exponential_steps_and_bounded_in_total() {
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            max_retries: 10,
            total: None,
        };
        let delays: Vec<_> = policy.delays().collect();
        assert_eq!(delays.len(), 10);
        let steps = [100u64, 200, 400, 400, 400, 400, 400, 400, 400, 400];
        for (delay, step) in delays.iter().zip(steps) {
            assert!(*delay <= Duration::from_millis(step), "{delay:?} > {step}ms");
        }
        let bounded = policy.with_total(Duration::from_millis(700));
        assert!(bounded.delays().count() < 10, "the total deadline ends the retries early");
    }
}
