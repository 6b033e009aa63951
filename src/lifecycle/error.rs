//! What the lifecycle can answer instead of success. It knows nothing of HTTP: the API
//! layer (`api/error.rs`) is the one place that turns these into status codes and bodies.

use std::time::Duration;

use crate::secrets::SecretError;
use crate::store::StoreError;
use crate::upstream::UpstreamError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// No such shipment (or request).
    #[error("Shipment not found: {0}")]
    NotFound(String),
    /// The action needs a state the shipment is not in (e.g. resend before registration).
    #[error("{0}")]
    WrongState(String),
    /// A request with the same Idempotency-Key is being created right now.
    #[error("the request with this Idempotency-Key is still in progress (request {request_id})")]
    InProgress {
        request_id: String,
        retry_after: Duration,
    },
    /// The create's outcome at YubiEnterprise is unknown: locked until an operator resolves
    /// it.
    #[error("the outcome of request {request_id} at YubiEnterprise is unknown; an operator must resolve it (POST /v1/operations/retry/{request_id})")]
    OutcomeUnknown {
        request_id: String,
        retry_after: Duration,
    },
    /// The Idempotency-Key was used before with another body.
    #[error("Idempotency-Key was already used with a different request body")]
    IdempotencyMismatch,
    /// Entra has no such user.
    #[error("Could not find user: {0}")]
    UserNotFound(String),
    /// A pre-flight check failed: the key would not register if it were shipped.
    #[error("Pre-flight check {check} failed: {message}")]
    PreflightFailed {
        check: &'static str,
        message: String,
    },
    /// The identity provider refused (Entra's creation options, Okta's enrollment), in
    /// its words when it gave a summary.
    #[error("{idp} refused {what} for the user: {code}{}", summary.as_deref().map(|s| format!(": {s}")).unwrap_or_default())]
    IdpRejected {
        idp: &'static str,
        what: &'static str,
        code: String,
        summary: Option<String>,
    },
    /// YubiEnterprise refused our request (it created nothing).
    #[error("YubiEnterprise refused the shipment: {code}: {message}")]
    YeRejected {
        status: u16,
        code: String,
        message: String,
    },
    /// YubiEnterprise refused the connector's API token.
    #[error("YubiEnterprise rejected the API token")]
    YeUnauthorized,
    /// An upstream, the store or the secret store is unavailable for now.
    #[error("{service} is temporarily unavailable; retry later")]
    Unavailable {
        service: &'static str,
        retry_after: Option<Duration>,
    },
    /// An upstream answered something that could not be used.
    #[error("{service} sent an answer that could not be used")]
    BadUpstream { service: &'static str },
    /// Too many of this action for this shipment just now.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// The caller's input to an operation is not acceptable (operator actions).
    #[error("{0}")]
    Invalid(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for LifecycleError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "shipment store error");
        LifecycleError::Unavailable {
            service: "shipment store",
            retry_after: Some(Duration::from_secs(1)),
        }
    }
}

impl From<SecretError> for LifecycleError {
    fn from(e: SecretError) -> Self {
        tracing::error!(error = %e, "secret store error");
        LifecycleError::Unavailable {
            service: "secret store",
            retry_after: Some(Duration::from_secs(1)),
        }
    }
}

impl From<UpstreamError> for LifecycleError {
    /// An upstream failure as the caller of a synchronous action sees it.
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Unauthorized { service } if service == crate::upstream::ye::SERVICE => {
                LifecycleError::YeUnauthorized
            }
            UpstreamError::Transient {
                service,
                retry_after,
                ..
            } => LifecycleError::Unavailable {
                service,
                retry_after,
            },
            // The upstream's pace: the caller is told when to come back (503 + Retry-After).
            UpstreamError::Throttled {
                service,
                retry_after,
            } => LifecycleError::Unavailable {
                service,
                retry_after: Some(retry_after.max(Duration::from_secs(1))),
            },
            other => {
                tracing::warn!(error = %other, "upstream refused");
                LifecycleError::BadUpstream {
                    service: super::service_of(&other),
                }
            }
        }
    }
}

impl From<crate::crypto::CryptoError> for LifecycleError {
    /// A JOSE failure as the caller of a synchronous action (create, resend) sees it.
    fn from(e: crate::crypto::CryptoError) -> Self {
        use crate::crypto::CryptoFailure;
        match e.failure() {
            CryptoFailure::KeysUnavailable => LifecycleError::Unavailable {
                service: crate::upstream::jwks::SERVICE,
                retry_after: None,
            },
            CryptoFailure::Local => LifecycleError::Internal(e.to_string()),
            CryptoFailure::BadResponse => {
                tracing::warn!(error = %e, "Yubico's response rejected");
                LifecycleError::BadUpstream {
                    service: crate::upstream::ye::SERVICE,
                }
            }
        }
    }
}

impl From<crate::domain::TransitionError> for LifecycleError {
    fn from(e: crate::domain::TransitionError) -> Self {
        LifecycleError::WrongState(e.to_string())
    }
}

impl LifecycleError {
    /// A refusal of the request itself (by us, YubiEnterprise or Entra), as opposed to a
    /// failure to carry it out.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            LifecycleError::IdempotencyMismatch
                | LifecycleError::UserNotFound(_)
                | LifecycleError::IdpRejected { .. }
                | LifecycleError::PreflightFailed { .. }
                | LifecycleError::YeRejected { .. }
                | LifecycleError::Invalid(_)
                | LifecycleError::InProgress { .. }
                | LifecycleError::OutcomeUnknown { .. }
        )
    }
}
