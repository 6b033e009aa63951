//! The HTTP API: the vendor's paths, status codes and error bodies, exactly.
//!
//! | method | path | permission |
//! |---|---|---|
//! | GET | /v1/status | none |
//! | POST | /v1/fpr/shipments | Shipments.Create |
//! | GET | /v1/fpr/shipments/{shipment_id} | Shipments.Read |
//! | GET | /v1/operations/resend-pin/{shipment_id} | Pin.Resend |
//! | GET | /v1/operations/process-shipments | Operations.Run |
//! | GET | /v1/openapi.json, /healthz, /readyz | none |

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value};

use crate::app::AppState;

pub mod auth;
pub mod error;

pub use error::ApiError;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .with_state(state)
}

/// `GET /v1/status`: the 16 keys of the reference, in order, secrets masked.
pub async fn status(axum::extract::State(state): axum::extract::State<AppState>) -> Json<Value> {
    let mut m = Map::new();
    for (k, v) in state.deps.config.status_entries() {
        m.insert(k.to_string(), Value::String(v));
    }
    Json(Value::Object(m))
}
