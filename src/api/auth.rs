//! The HTTP side of caller authentication: the credential from `X-API-Key` or
//! `Authorization: Bearer`, and the API's 401/403 bodies. What a credential is worth is
//! decided in [`crate::auth`], which knows no HTTP.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;

pub use crate::auth::{audit, Caller, Permission};

use super::{ApiError, AppState};

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state
            .auth
            .authenticate(credential(&parts.headers))
            .await
            .map_err(ApiError::from)
    }
}

/// `X-API-Key`, else the bearer token of `Authorization`.
fn credential(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .or_else(|| bearer(headers))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        let bearer_error = match e {
            crate::auth::AuthError::Missing => "invalid_request",
            crate::auth::AuthError::Invalid(_) => "invalid_token",
        };
        ApiError::Unauthenticated {
            message: e.to_string(),
            bearer_error,
        }
    }
}

impl From<crate::auth::Forbidden> for ApiError {
    fn from(e: crate::auth::Forbidden) -> Self {
        ApiError::Forbidden {
            message: e.to_string(),
        }
    }
}
