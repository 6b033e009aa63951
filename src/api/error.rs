//! The one error type at the HTTP edge, and its mapping to the vendor's error bodies:
//!
//! ```json
//! {"error_code":"api_error","error_message":"...","error_data":{"error_type":"validation"}}
//! {"error_code":"ye_error","error_message":"...","error_data":{"code":"...","message":"..."}}
//! {"error_code":"idp_error","error_message":"Could not find user: ..."}
//! ```
//!
//! Internal causes are logged, never sent: 5xx bodies stay generic.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Stable `error_data.error_type` values of `api_error` bodies (documented in docs/api.md).
pub mod error_type {
    pub const VALIDATION: &str = "validation";
    pub const AUTHENTICATION: &str = "authentication";
    pub const AUTHORIZATION: &str = "authorization";
    pub const NOT_FOUND: &str = "not_found";
    pub const CONFLICT: &str = "conflict";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const IDEMPOTENCY: &str = "idempotency";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    pub const UPSTREAM: &str = "upstream";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const INTERNAL: &str = "internal";
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400, naming the field.
    #[error("{message}")]
    Validation { message: String },
    /// 400 for a malformed body (not JSON, wrong JSON types).
    #[error("{message}")]
    BadRequest { message: String },
    /// 401. `bearer_error` becomes the `error` parameter of `WWW-Authenticate`.
    #[error("{message}")]
    Unauthenticated {
        message: String,
        bearer_error: &'static str,
    },
    /// 401 because YubiEnterprise refused our token: the operator must fix the token.
    #[error("YubiEnterprise rejected the API token")]
    YeUnauthorized,
    /// 403.
    #[error("{message}")]
    Forbidden { message: String },
    /// 404.
    #[error("{message}")]
    NotFound { message: String },
    /// 409.
    #[error("{message}")]
    Conflict { message: String },
    /// 409 with `Retry-After`: the request is locked (in progress, or its outcome at
    /// YubiEnterprise is unknown until an operator resolves it). Names the request id.
    #[error("{message}")]
    Locked {
        message: String,
        request_id: String,
        retry_after: u64,
    },
    /// 429 with `Retry-After`.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    /// 503 with `Retry-After`: shed load or an unavailable dependency.
    #[error("{message}")]
    Unavailable { message: String, retry_after: u64 },
    /// 422: an Idempotency-Key reused with another body.
    #[error("{message}")]
    IdempotencyMismatch { message: String },
    /// 413.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415.
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    /// A YubiEnterprise 4xx passed through (`ye_error`), token scrubbed.
    #[error("{message}")]
    Ye {
        status: StatusCode,
        message: String,
        code: String,
        detail: String,
    },
    /// The identity provider refused (`idp_error`), e.g. `Could not find user: <id>`.
    #[error("{message}")]
    Idp { status: StatusCode, message: String },
    /// An upstream was unreachable or failing: 502/503/504, generic body.
    #[error("{message}")]
    Upstream { status: StatusCode, message: String },
    /// 500. The cause goes to the log only.
    #[error("internal error")]
    Internal { cause: String },
}

impl ApiError {
    pub fn validation(message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound {
            message: message.into(),
        }
    }
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal {
            cause: cause.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } | Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthenticated { .. } | Self::YeUnauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } | Self::Locked { .. } => StatusCode::CONFLICT,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::IdempotencyMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Ye { status, .. } | Self::Idp { status, .. } | Self::Upstream { status, .. } => {
                *status
            }
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The exact body sent to the caller.
    pub fn body(&self) -> Value {
        let api = |ty: &str, msg: &str| json!({"error_code": "api_error", "error_message": msg, "error_data": {"error_type": ty}});
        use error_type as t;
        match self {
            Self::Validation { message } | Self::BadRequest { message } => {
                api(t::VALIDATION, message)
            }
            Self::Unauthenticated { message, .. } => api(t::AUTHENTICATION, message),
            Self::YeUnauthorized => json!({
                "error_code": "ye_error",
                "error_message": "YubiEnterprise rejected the API token (check ye-api-token)",
                "error_data": {"code": "unauthorized", "message": "Unauthorized"}
            }),
            Self::Forbidden { message } => api(t::AUTHORIZATION, message),
            Self::NotFound { message } => api(t::NOT_FOUND, message),
            Self::Conflict { message } => api(t::CONFLICT, message),
            Self::Locked {
                message,
                request_id,
                ..
            } => json!({"error_code": "api_error", "error_message": message,
                        "error_data": {"error_type": t::CONFLICT, "request_id": request_id}}),
            Self::TooManyRequests { message, .. } => api(t::RATE_LIMITED, message),
            Self::Unavailable { message, .. } => api(t::UNAVAILABLE, message),
            Self::IdempotencyMismatch { message } => api(t::IDEMPOTENCY, message),
            Self::PayloadTooLarge { limit } => api(
                t::PAYLOAD_TOO_LARGE,
                &format!("request body exceeds {limit} bytes"),
            ),
            Self::UnsupportedMediaType { message } => api(t::UNSUPPORTED_MEDIA_TYPE, message),
            Self::Ye {
                message,
                code,
                detail,
                ..
            } => json!({
                "error_code": "ye_error",
                "error_message": message,
                "error_data": {"code": code, "message": detail}
            }),
            Self::Idp { message, .. } => {
                json!({"error_code": "idp_error", "error_message": message})
            }
            Self::Upstream { status, message } => api(
                if *status == StatusCode::SERVICE_UNAVAILABLE {
                    t::UNAVAILABLE
                } else {
                    t::UPSTREAM
                },
                message,
            ),
            Self::Internal { .. } => api(t::INTERNAL, "internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal { cause } => tracing::error!(cause = %cause, "internal error"),
            e if status.is_server_error() => tracing::warn!(error = %e, "upstream failure"),
            _ => {}
        }
        let mut resp = (status, axum::Json(self.body())).into_response();
        if let Self::Locked { retry_after, .. }
        | Self::TooManyRequests { retry_after, .. }
        | Self::Unavailable { retry_after, .. } = &self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if let Self::Unauthenticated { bearer_error, .. } = &self {
            let v = format!("Bearer error=\"{bearer_error}\"");
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

fn secs(d: std::time::Duration) -> u64 {
    d.as_secs().max(1)
}

/// The one mapping from lifecycle outcomes to HTTP.
impl From<crate::lifecycle::LifecycleError> for ApiError {
    fn from(e: crate::lifecycle::LifecycleError) -> Self {
        use crate::lifecycle::LifecycleError as L;
        match e {
            L::NotFound(_) => ApiError::not_found(e.to_string()),
            L::WrongState(message) => ApiError::Conflict { message },
            L::InProgress {
                ref request_id,
                retry_after,
            }
            | L::OutcomeUnknown {
                ref request_id,
                retry_after,
            } => ApiError::Locked {
                message: e.to_string(),
                request_id: request_id.clone(),
                retry_after: secs(retry_after),
            },
            L::IdempotencyMismatch => ApiError::IdempotencyMismatch {
                message: e.to_string(),
            },
            L::UserNotFound(_) | L::IdpRejected { .. } | L::PreflightFailed { .. } => {
                ApiError::Idp {
                    status: StatusCode::BAD_REQUEST,
                    message: e.to_string(),
                }
            }
            L::YeRejected {
                status,
                code,
                message,
            } => ApiError::Ye {
                status: StatusCode::from_u16(status)
                    .ok()
                    .filter(|s| s.is_client_error())
                    .unwrap_or(StatusCode::BAD_REQUEST),
                message: if code == "validation_error" {
                    "Validation error when creating YED shipment".into()
                } else {
                    "Error when creating YED shipment".into()
                },
                code,
                detail: message,
            },
            L::YeUnauthorized => ApiError::YeUnauthorized,
            L::Unavailable { retry_after, .. } => ApiError::Unavailable {
                message: e.to_string(),
                retry_after: retry_after.map(secs).unwrap_or(5),
            },
            L::BadUpstream { .. } => ApiError::Upstream {
                status: StatusCode::BAD_GATEWAY,
                message: e.to_string(),
            },
            L::RateLimited {
                message,
                retry_after,
            } => ApiError::TooManyRequests {
                message,
                retry_after: secs(retry_after),
            },
            L::Invalid(message) => ApiError::Validation { message },
            L::Internal(cause) => ApiError::Internal { cause },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_body_is_the_vendors_shape() {
        let e = ApiError::validation("PIN `length` must be between 4 and 63");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body().to_string(),
            r#"{"error_code":"api_error","error_message":"PIN `length` must be between 4 and 63","error_data":{"error_type":"validation"}}"#
        );
    }

    #[test]
    fn idp_and_ye_bodies_match_the_reference() {
        let e = ApiError::Idp {
            status: StatusCode::BAD_REQUEST,
            message: "Could not find user: 7dc95e2f".into(),
        };
        assert_eq!(
            e.body().to_string(),
            r#"{"error_code":"idp_error","error_message":"Could not find user: 7dc95e2f"}"#
        );
        let e = ApiError::Ye {
            status: StatusCode::BAD_REQUEST,
            message: "Validation error when creating YED shipment".into(),
            code: "validation_error".into(),
            detail: "Input for Last Name exceeded limit of 20 characters".into(),
        };
        assert_eq!(
            e.body().to_string(),
            r#"{"error_code":"ye_error","error_message":"Validation error when creating YED shipment","error_data":{"code":"validation_error","message":"Input for Last Name exceeded limit of 20 characters"}}"#
        );
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let e = ApiError::internal("sqlite: disk I/O error at /secret/path");
        assert!(!e.body().to_string().contains("secret"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
