//! The shipment lifecycle: create, process, resend PIN, clean up. Plain async functions
//! over [`crate::app::Deps`]; the handlers, the cron jobs and the tests all call them.
//! The state machine itself is described in `domain::shipment` and docs/lifecycle.md.

use axum::http::StatusCode;

use crate::api::ApiError;
use crate::store::StoreError;
use crate::upstream::UpstreamError;

mod cleanup;
mod create;
mod process;
mod resend;

pub use cleanup::cleanup;
pub use create::{create_shipment, Idempotency};
pub use process::{process_shipments, RunSummary};
pub use resend::resend_pin;

pub(crate) fn store_err(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "shipment store error");
    ApiError::Upstream {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "shipment store unavailable".into(),
    }
}

pub(crate) fn secret_err(e: crate::secrets::SecretError) -> ApiError {
    tracing::error!(error = %e, "secret store error");
    ApiError::Upstream {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "secret store unavailable".into(),
    }
}

/// An upstream failure as the caller of a synchronous endpoint sees it.
pub(crate) fn upstream_err(e: UpstreamError) -> ApiError {
    match e {
        UpstreamError::Unauthorized { service } if service == crate::upstream::ye::SERVICE => {
            ApiError::YeUnauthorized
        }
        UpstreamError::Transient { service, .. } => ApiError::Upstream {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("{service} is temporarily unavailable; retry later"),
        },
        other => {
            tracing::warn!(error = %other, "upstream refused");
            ApiError::Upstream {
                status: StatusCode::BAD_GATEWAY,
                message: format!("upstream error: {}", service_of(&other)),
            }
        }
    }
}

pub(crate) fn service_of(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Unauthorized { service }
        | UpstreamError::NotFound { service, .. }
        | UpstreamError::Rejected { service, .. }
        | UpstreamError::Transient { service, .. }
        | UpstreamError::Invalid { service, .. } => service,
    }
}
