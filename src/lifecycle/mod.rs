//! The shipment lifecycle: create, process, resend PIN, clean up. Plain async functions
//! over [`crate::app::Deps`]; the handlers, the cron jobs and the tests all call them.

use crate::api::ApiError;
use crate::app::Deps;
use crate::domain::ShipmentRequest;

/// A caller-supplied `Idempotency-Key` and the hash of the body it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 hex of the raw request body.
    pub body_sha256: String,
}

/// `POST /v1/fpr/shipments` after validation: returns YubiEnterprise's shipment id.
pub async fn create_shipment(
    deps: &Deps,
    req: ShipmentRequest,
    idempotency: Option<Idempotency>,
    caller: &str,
) -> Result<String, ApiError> {
    let _ = (deps, req, idempotency, caller);
    Err(ApiError::internal("create_shipment not implemented"))
}

/// `GET /v1/operations/resend-pin/{id}`: only for complete shipments (404 unknown, 409 not
/// complete).
pub async fn resend_pin(deps: &Deps, shipment_id: &str, caller: &str) -> Result<(), ApiError> {
    let _ = (deps, shipment_id, caller);
    Err(ApiError::internal("resend_pin not implemented"))
}

/// What one processing run did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub examined: usize,
    pub completed: usize,
    pub failed: usize,
    pub retried: usize,
    pub skipped: usize,
}

/// One pass over every open record.
pub async fn process_shipments(deps: &Deps) -> Result<RunSummary, ApiError> {
    let _ = deps;
    Err(ApiError::internal("process_shipments not implemented"))
}

/// Deletes complete records older than `CRON_DATA_CLEANUP_COMPLETED_DAYS` and purges their
/// response keys; returns how many were removed. 0 days disables it.
pub async fn cleanup(deps: &Deps) -> Result<usize, ApiError> {
    let _ = deps;
    Err(ApiError::internal("cleanup not implemented"))
}
