//! Request extraction whose every rejection is an [`ApiError`] in the vendor's envelope:
//! a missing or wrong `Content-Type` is 415, an oversized body 413, malformed JSON 400.
//! (axum's own extractors answer in plain text, which scripts cannot parse.)

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;

use super::AppState;
use crate::api::ApiError;

/// A JSON request body, read up to the configured limit, kept raw (for the idempotency
/// hash) and parsed.
pub struct JsonBody {
    pub raw: Bytes,
    pub value: serde_json::Value,
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType {
                message: "Content-Type must be application/json".into(),
            });
        }
        let limit = state.deps.config.server.max_body_bytes;
        let raw = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| ApiError::PayloadTooLarge { limit })?;
        let value = serde_json::from_slice(&raw).map_err(|e| ApiError::BadRequest {
            message: format!(
                "request body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        })?;
        Ok(JsonBody { raw, value })
    }
}
