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
}

/// Live fault settings of one simulator.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<FaultConfig>>);

impl Faults {
    pub fn set(&self, cfg: FaultConfig) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
    }
    pub fn get(&self) -> FaultConfig {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn clear(&self) {
        self.set(FaultConfig::default());
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

fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::rng().random::<f64>() < rate
}

async fn inject(State(f): State<Faults>, req: Request, next: Next) -> Response {
    let (cfg, forced) = {
        let mut g = f.0.lock().unwrap_or_else(|p| p.into_inner());
        let forced = g.fail_next > 0;
        if forced {
            g.fail_next -= 1;
        }
        (g.clone(), forced)
    };
    if cfg.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(cfg.latency_ms)).await;
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
    next.run(req).await
}
