//! Inbound bounds: every request gets a time limit, requests beyond the concurrency limit
//! are shed with 503 + `Retry-After` (not queued), and a panic in a handler answers 500 in
//! the error envelope instead of dropping the connection. All answers keep the vendor's
//! error shape.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::Semaphore;

use crate::api::ApiError;
use crate::config::ServerConfig;

#[derive(Clone)]
struct Limits {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

async fn bound(State(l): State<Limits>, req: Request, next: Next) -> Response {
    // Health probes are never shed: an orchestrator must see the replica alive.
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
    let _permit = match l.permits.clone().try_acquire_owned() {
        Ok(p) => Some(p),
        Err(_) if probe => None,
        Err(_) => {
            return ApiError::Unavailable {
                message: "the connector is at its concurrency limit; retry shortly".into(),
                retry_after: 1,
            }
            .into_response()
        }
    };
    match tokio::time::timeout(l.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(timeout_s = l.timeout.as_secs(), "request timed out");
            ApiError::Upstream {
                status: axum::http::StatusCode::GATEWAY_TIMEOUT,
                message: format!(
                    "the request did not finish within {} s",
                    l.timeout.as_secs()
                ),
            }
            .into_response()
        }
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a handler panicked").into_response()
}

/// Wraps the routes in the time limit, the concurrency limit and the panic guard.
pub fn apply<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    config: &ServerConfig,
) -> Router<S> {
    let limits = Limits {
        permits: Arc::new(Semaphore::new(config.max_concurrent_requests)),
        timeout: config.request_timeout,
    };
    routes
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(axum::middleware::from_fn_with_state(limits, bound))
}
