//! Faults on demand, shared by every simulator: added latency, a rate of 5xx answers, a
//! rate of 429 with `Retry-After`, hanging requests (client time-outs), and expired tokens.
//! Set from tests through [`Faults`] directly or over HTTP with `POST /_sim/faults`
//! (JSON [`FaultConfig`]); `/_sim/*` control paths are never faulted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// Added to every request, in milliseconds.
    pub latency_ms: u64,
    /// Fraction (0..1) of requests answered with `error_status`.
    pub error_rate: f64,
    /// Status of injected errors (default 503).
    pub error_status: Option<u16>,
    /// Fraction (0..1) of requests answered 429 with `Retry-After: retry_after_secs`.
    pub throttle_rate: f64,
    pub retry_after_secs: u64,
    /// Fraction (0..1) of requests that hang for `hang_ms` before answering 504.
    pub hang_rate: f64,
    pub hang_ms: u64,
    /// Simulators that issue or check tokens treat every token as expired while set.
    pub expire_tokens: bool,
    /// The next this-many requests fail with `error_status` (deterministic faults).
    pub fail_next: u32,
    /// A token-bucket limit on the requests it matches, answered 429 with `Retry-After` in
    /// whole seconds (as Graph answers) when the bucket is empty.
    pub rate_limit: Option<RateLimit>,
}

/// `per_second` tokens refill a bucket of `burst`; each matching request takes one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
    /// Only requests with this method (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// Only requests whose path contains this (any when absent).
    #[serde(default)]
    pub path_contains: Option<String>,
}

/// The limiter's bucket and what it answered.
#[derive(Debug, Default)]
struct Bucket {
    tokens: f64,
    at: Option<std::time::Instant>,
    admitted: u64,
    limited: u64,
}

/// Live fault settings of one simulator, and how long its answers took.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<FaultConfig>>, Arc<Served>, Arc<Mutex<Bucket>>);

/// Time from a request's arrival to its answer, over the requests that had latency added
/// and reached the simulator's handler (not the injected errors): what the client waited
/// for, less the network, so a benchmark can tell the simulators' own delay from its
/// client's.
#[derive(Debug, Default)]
struct Served {
    count: std::sync::atomic::AtomicU64,
    micros: std::sync::atomic::AtomicU64,
    /// When each of those requests arrived and was answered (the first [`MAX_SPANS`]), so a
    /// test can tell how many calls a client had in flight at once, across simulators.
    spans: Mutex<Vec<(std::time::Instant, std::time::Instant)>>,
}

/// Spans kept per simulator (16 bytes each).
const MAX_SPANS: usize = 100_000;

/// The most spans that overlap at any instant (a span ending as another starts does not
/// overlap it).
pub fn max_overlap(spans: &[(std::time::Instant, std::time::Instant)]) -> usize {
    // Ends sort before starts at the same instant.
    let mut events: Vec<(std::time::Instant, i8)> =
        spans.iter().flat_map(|&(a, b)| [(a, 1), (b, -1)]).collect();
    events.sort();
    let (mut now, mut most) = (0i64, 0i64);
    for (_, d) in events {
        now += i64::from(d);
        most = most.max(now);
    }
    most as usize
}

impl Faults {
    pub fn set(&self, cfg: FaultConfig) {
        let burst = cfg.rate_limit.as_ref().map_or(0.0, |r| r.burst);
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
        *self.2.lock().unwrap_or_else(|p| p.into_inner()) = Bucket {
            tokens: burst,
            ..Bucket::default()
        };
    }
    /// Requests the rate limit let through and answered 429, since it was set.
    pub fn rate_limited(&self) -> (u64, u64) {
        let b = self.2.lock().unwrap_or_else(|p| p.into_inner());
        (b.admitted, b.limited)
    }
    /// Takes a token for a request the limit matches; `Err(retry_after_secs)` when empty.
    fn take_token(&self, limit: &RateLimit) -> Result<(), u64> {
        let mut b = self.2.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let elapsed = b.at.map_or(0.0, |t| (now - t).as_secs_f64());
        b.tokens = (b.tokens + elapsed * limit.per_second).min(limit.burst);
        b.at = Some(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.admitted += 1;
            Ok(())
        } else {
            b.limited += 1;
            let wait = (1.0 - b.tokens) / limit.per_second.max(0.001);
            Err((wait.ceil() as u64).max(1))
        }
    }
    pub fn get(&self) -> FaultConfig {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn clear(&self) {
        self.set(FaultConfig::default());
    }
    /// Requests answered with latency added, and their mean time from arrival to answer.
    pub fn served(&self) -> (u64, Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.1.count.load(Relaxed);
        let us = self.1.micros.load(Relaxed);
        (n, Duration::from_micros(us.checked_div(n).unwrap_or(0)))
    }
    /// Arrival and answer of each request counted by [`Faults::served`].
    pub fn served_spans(&self) -> Vec<(std::time::Instant, std::time::Instant)> {
        self.1
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    pub fn tokens_expired(&self) -> bool {
        self.get().expire_tokens
    }

    /// Adds the fault middleware and the `/_sim/faults` control route to a simulator.
    pub fn wrap(&self, router: Router) -> Router {
        let control = Router::new()
            .route("/_sim/faults", post(set_faults).get(get_faults))
            .with_state(self.clone());
        router
            .layer(axum::middleware::from_fn_with_state(self.clone(), inject))
            .merge(control)
    }
}

async fn set_faults(State(f): State<Faults>, Json(cfg): Json<FaultConfig>) -> StatusCode {
    f.set(cfg);
    StatusCode::NO_CONTENT
}

async fn get_faults(State(f): State<Faults>) -> Json<FaultConfig> {
    Json(f.get())
}

/// Waits until `deadline` to within tens of microseconds. Tokio's timer has a resolution
/// of one millisecond and rounds up, and its wake-up comes on top: a 50 ms latency came out
/// as 51.2–51.7 ms on average, an overshoot a benchmark then charges to the client. The
/// last few milliseconds are slept on a blocking-pool thread instead, whose `nanosleep`
/// keeps to the microsecond; the runtime's timer covers the rest, so a long latency does
/// not hold a thread.
async fn sleep_until_precisely(deadline: std::time::Instant) {
    const FINE: Duration = Duration::from_millis(3);
    if let Some(coarse) = deadline.checked_sub(FINE) {
        tokio::time::sleep_until(coarse.into()).await;
    }
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if !left.is_zero() {
        // A cancelled request leaves the thread to finish its few milliseconds alone.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(left)).await;
    }
}

fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::rng().random::<f64>() < rate
}

async fn inject(State(f): State<Faults>, req: Request, next: Next) -> Response {
    let arrived = std::time::Instant::now();
    let (cfg, forced) = {
        let mut g = f.0.lock().unwrap_or_else(|p| p.into_inner());
        let forced = g.fail_next > 0;
        if forced {
            g.fail_next -= 1;
        }
        (g.clone(), forced)
    };
    if let Some(limit) = &cfg.rate_limit {
        let matches = limit
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(req.method().as_str()))
            && limit
                .path_contains
                .as_deref()
                .is_none_or(|p| req.uri().path().contains(p));
        if matches {
            if let Err(secs) = f.take_token(limit) {
                let mut r = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(serde_json::json!({"error": {"code": "TooManyRequests", "message": "Too many requests (rate limit, simulated)"}})),
                )
                    .into_response();
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert("retry-after", v);
                }
                return r;
            }
        }
    }
    if cfg.latency_ms > 0 {
        sleep_until_precisely(arrived + Duration::from_millis(cfg.latency_ms)).await;
    }
    if roll(cfg.hang_rate) {
        tokio::time::sleep(Duration::from_millis(cfg.hang_ms)).await;
        return (StatusCode::GATEWAY_TIMEOUT, Body::empty()).into_response();
    }
    if roll(cfg.throttle_rate) || (forced && cfg.error_status == Some(429)) {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(serde_json::json!({"error": {"code": "TooManyRequests", "message": "Too many requests (simulated)"}})),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&cfg.retry_after_secs.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
        return r;
    }
    if (forced && cfg.error_status != Some(429)) || roll(cfg.error_rate) {
        let status = cfg
            .error_status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (
            status,
            Json(serde_json::json!({"error": {"code": "ServiceUnavailable", "message": "Simulated failure"}})),
        )
            .into_response();
    }
    let r = next.run(req).await;
    if cfg.latency_ms > 0 {
        use std::sync::atomic::Ordering::Relaxed;
        f.1.count.fetch_add(1, Relaxed);
        let answered = std::time::Instant::now();
        f.1.micros
            .fetch_add((answered - arrived).as_micros() as u64, Relaxed);
        let mut spans = f.1.spans.lock().unwrap_or_else(|p| p.into_inner());
        if spans.len() < MAX_SPANS {
            spans.push((arrived, answered));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// The finer wait never answers early, and the time served is what was configured at
    /// least. (How close it comes is a benchmark's matter: the bench prints it.)
    #[tokio::test]
    async fn added_latency_is_served_in_full_and_counted() {
        let faults = Faults::default();
        let app = faults.wrap(Router::new().route("/x", axum::routing::get(|| async { "ok" })));
        let get = || Request::builder().uri("/x").body(Body::empty()).unwrap();
        // No latency set: nothing counted.
        assert_eq!(app.clone().oneshot(get()).await.unwrap().status(), 200);
        assert_eq!(faults.served().0, 0);
        faults.set(FaultConfig {
            latency_ms: 20,
            ..Default::default()
        });
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let r = app.clone().oneshot(get()).await.unwrap();
            assert_eq!(r.status(), 200);
            assert!(
                t.elapsed() >= Duration::from_millis(20),
                "{:?}",
                t.elapsed()
            );
        }
        let (n, mean) = faults.served();
        assert_eq!(n, 3);
        assert!(mean >= Duration::from_millis(20), "{mean:?}");
        // A latency shorter than the fine part is slept on the thread alone.
        faults.set(FaultConfig {
            latency_ms: 1,
            ..Default::default()
        });
        let t = std::time::Instant::now();
        assert_eq!(app.oneshot(get()).await.unwrap().status(), 200);
        assert!(t.elapsed() >= Duration::from_millis(1));
        assert_eq!(faults.served().0, 4);
        // One span per counted request, each as long as its latency at least; they ran one
        // after the other.
        let spans = faults.served_spans();
        assert_eq!(spans.len(), 4);
        assert!(spans[..3]
            .iter()
            .all(|(a, b)| *b - *a >= Duration::from_millis(20)));
        assert_eq!(max_overlap(&spans), 1);
    }

    #[test]
    fn overlap_counts_spans_open_at_the_same_instant() {
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(max_overlap(&[]), 0);
        // [0,10) [5,15) [9,20): three at once between 9 and 10.
        assert_eq!(
            max_overlap(&[(at(0), at(10)), (at(5), at(15)), (at(9), at(20))]),
            3
        );
        // Back to back: one ends as the next starts.
        assert_eq!(
            max_overlap(&[(at(0), at(10)), (at(10), at(20)), (at(20), at(30))]),
            1
        );
        // Nested, in any order.
        assert_eq!(
            max_overlap(&[
                (at(2), at(3)),
                (at(0), at(10)),
                (at(1), at(4)),
                (at(5), at(6))
            ]),
            3
        );
    }
}
