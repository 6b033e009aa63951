//! Back-off and in-line retry, one implementation for every caller: the upstream clients'
//! idempotent calls, the Key Vault purge, the import's creates, and the spacing of a
//! shipment's next attempt (which uses [`capped`] without jitter, so that its schedule
//! can be stated). A leaf: it imports nothing of the crate.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;

/// Capped exponential back-off: `base` × 2^`attempt`, at most `cap`.
pub fn capped(attempt: u32, base: Duration, cap: Duration) -> Duration {
    base.saturating_mul(1u32 << attempt.min(20)).min(cap)
}

/// Exponential back-off with full jitter: uniform in [0, [`capped`]].
pub fn jittered(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ms = capped(attempt, base, cap).as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// An error that may be worth another try.
pub trait Retryable {
    /// `Some(wait)` when another try may succeed, with the least wait the other side asked
    /// for (`Retry-After`), if any; `None` when it is final.
    fn retry_hint(&self) -> Option<Option<Duration>>;
}

/// How often and how long [`retry`] tries.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub attempts: u32,
    /// Never sleeps past this much time in total.
    pub budget: Duration,
    pub base: Duration,
    pub cap: Duration,
}

impl Policy {
    /// In-line retries of an upstream call: 200 ms doubling, at most 2 s apart.
    pub const fn upstream(attempts: u32, budget: Duration) -> Self {
        Policy {
            attempts,
            budget,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(2),
        }
    }
}

/// Runs `call` up to `policy.attempts` times, sleeping with jittered back-off (at least
/// what the error asks for) between retryable failures, never past the budget in total.
/// Final errors return at once.
pub async fn retry<T, E, F, Fut>(policy: Policy, mut call: F) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e) if attempt + 1 < policy.attempts => {
                let Some(asked) = e.retry_hint() else {
                    return Err(e);
                };
                let wait =
                    jittered(attempt, policy.base, policy.cap).max(asked.unwrap_or_default());
                if start.elapsed() + wait > policy.budget {
                    return Err(e);
                }
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_stays_within_its_cap() {
        for a in 0..40 {
            let d = jittered(a, Duration::from_millis(100), Duration::from_secs(5));
            assert!(d <= Duration::from_secs(5));
        }
        assert_eq!(
            capped(3, Duration::from_secs(10), Duration::from_secs(300)),
            Duration::from_secs(80)
        );
    }

    struct E(Option<Option<Duration>>);
    impl Retryable for E {
        fn retry_hint(&self) -> Option<Option<Duration>> {
            self.0
        }
    }

    #[tokio::test]
    async fn retries_what_may_succeed_and_stops_at_what_is_final() {
        let policy = Policy {
            attempts: 5,
            budget: Duration::from_secs(5),
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        };
        let mut n = 0;
        let r: Result<u32, E> = retry(policy, || {
            n += 1;
            let n = n;
            async move {
                if n < 3 {
                    Err(E(Some(None)))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.ok(), Some(3));
        let mut calls = 0;
        let r: Result<(), E> = retry(policy, || {
            calls += 1;
            async { Err(E(None)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "a final error is not retried");
    }
}
