//! `POST /v1/fpr/shipments` after validation.
//!
//! Order matters: the record is written (step `Accepted`) before YubiEnterprise is asked
//! to create the shipment, so a crash after YE accepted it never leaves a shipment we do
//! not know about; the processing job flags a record stuck in `Accepted` for an operator.

use axum::http::StatusCode;
use sha2::{Digest, Sha256};

use super::{secret_err, store_err, upstream_err};
use crate::api::ApiError;
use crate::app::Deps;
use crate::crypto::{self, ResponseKey};
use crate::domain::shipment::response_secret_name;
use crate::domain::{Pin, RecordError, ShipmentRecord, ShipmentRequest, Step};
use crate::faults::crash_point;
use crate::store::StoreError;
use crate::upstream::UpstreamError;

/// A caller-supplied `Idempotency-Key` and the hash of the body it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 hex of the raw request body.
    pub body_sha256: String,
}

fn request_id_for(idem: Option<&Idempotency>) -> String {
    match idem {
        // Never the raw key: it is caller data, and keys must be safe in every store.
        Some(i) => format!(
            "idem-{}",
            crate::api::hex(&Sha256::digest(i.key.as_bytes()))
        ),
        None => uuid::Uuid::new_v4().to_string(),
    }
}

/// Creates the shipment; returns YubiEnterprise's shipment id.
pub async fn create_shipment(
    deps: &Deps,
    req: ShipmentRequest,
    idempotency: Option<Idempotency>,
    caller: &str,
) -> Result<String, ApiError> {
    let request_id = request_id_for(idempotency.as_ref());

    // A retry with the same key: answer from the record, without any upstream call.
    if let Some(idem) = &idempotency {
        if let Some(existing) = deps.store.get(&request_id).await.map_err(store_err)? {
            return replay(&existing.value, idem);
        }
    }

    // Upstream reads first: nothing is stored if the user does not exist.
    let user = deps.idp.get_user(&req.user_id).await.map_err(|e| match e {
        UpstreamError::NotFound { .. } => ApiError::Idp {
            status: StatusCode::BAD_REQUEST,
            message: format!("Could not find user: {}", req.user_id.as_str()),
        },
        other => upstream_err(other),
    })?;
    let options = deps
        .idp
        .creation_options(&user.id)
        .await
        .map_err(|e| match e {
            UpstreamError::Rejected { code, .. } => ApiError::Idp {
                status: StatusCode::BAD_REQUEST,
                message: format!("Entra refused creation options for the user: {code}"),
            },
            other => upstream_err(other),
        })?;
    let transport = deps.keys.transport_key().await.map_err(upstream_err)?;

    let response_key = ResponseKey::generate().map_err(ApiError::internal)?;
    let pin = Pin::generate(req.pin_length);
    let expires = options.challenge_timeout.to_rfc3339();
    let pin_jwe =
        crypto::encrypt_pin_request(&pin, &response_key, &transport).map_err(ApiError::internal)?;
    drop(pin); // zeroized: the connector keeps no copy of the PIN
    let cred_jwe = crypto::encrypt_credential_request(
        &response_key,
        &expires,
        &options.public_key,
        &transport,
    )
    .map_err(ApiError::internal)?;

    let secret_name = response_secret_name(&response_key.kid);
    deps.secrets
        .set(&secret_name, response_key.private_jwk_json())
        .await
        .map_err(secret_err)?;

    let now = deps.clock.now();
    let mut rec = ShipmentRecord::accepted(
        request_id.clone(),
        req.user_id.as_str(),
        user.id.clone(),
        response_key.kid.clone(),
        now,
    );
    rec.emails_to = req.mail_recipients();
    rec.yubikey_name = req.yubikey_name.clone();
    rec.challenge_expires_at = Some(options.challenge_timeout);
    rec.idempotency_body_hash = idempotency.as_ref().map(|i| i.body_sha256.clone());
    let etag = match deps.store.insert(&rec).await {
        Ok(e) => e,
        Err(StoreError::AlreadyExists) => {
            // A concurrent request with the same key won the race.
            let _ = deps.secrets.delete(&secret_name).await;
            let existing = deps
                .store
                .get(&request_id)
                .await
                .map_err(store_err)?
                .ok_or_else(|| ApiError::internal("record vanished after conflict"))?;
            return replay(
                &existing.value,
                idempotency
                    .as_ref()
                    .ok_or_else(|| ApiError::internal("uuid collision"))?,
            );
        }
        Err(e) => {
            let _ = deps.secrets.delete(&secret_name).await;
            return Err(store_err(e));
        }
    };
    crash_point("create:after-record");

    let body = req.ye_body(&pin_jwe, &cred_jwe);
    let created = match deps.ye.create_shipment(&body).await {
        Ok(c) => c,
        Err(e @ UpstreamError::Transient { .. }) => {
            // Unknown outcome: YE may have created it. The record stays Accepted so the
            // processing job flags it for an operator; never retried blindly.
            tracing::warn!(request_id, error = %e, "YubiEnterprise create outcome unknown");
            return Err(upstream_err(e));
        }
        Err(e) => {
            // YE refused: nothing was created there. Keep the record as failed for audit.
            rec.step = Step::Failed;
            rec.error = Some(RecordError::terminal(format!(
                "YubiEnterprise refused the shipment: {e}"
            )));
            rec.updated_at = deps.clock.now();
            let _ = deps.store.replace(&rec, &etag).await;
            let _ = deps.secrets.delete(&secret_name).await;
            return Err(match e {
                UpstreamError::Unauthorized { .. } => ApiError::YeUnauthorized,
                UpstreamError::Rejected {
                    status,
                    code,
                    message,
                    ..
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
                other => upstream_err(other),
            });
        }
    };
    crash_point("create:after-ye");

    rec.ye_shipment_id = Some(created.shipment_id.clone());
    rec.ye_state_id = Some(created.shipment_state_id);
    rec.step = Step::Ongoing;
    rec.updated_at = deps.clock.now();
    if let Err(e) = deps.store.replace(&rec, &etag).await {
        // YE has the shipment; our record still says Accepted. Surface it loudly: the
        // processing job will flag it for an operator with the request id.
        tracing::error!(request_id, ye_shipment_id = %created.shipment_id, error = %e,
            "YubiEnterprise created the shipment but recording it failed");
        return Err(store_err(e));
    }
    tracing::info!(target: "fido_connector::audit", caller, request_id, ye_shipment_id = %created.shipment_id,
        "shipment created");
    Ok(created.shipment_id)
}

fn replay(existing: &ShipmentRecord, idem: &Idempotency) -> Result<String, ApiError> {
    if existing.idempotency_body_hash.as_deref() != Some(idem.body_sha256.as_str()) {
        return Err(ApiError::IdempotencyMismatch {
            message: "Idempotency-Key was already used with a different request body".into(),
        });
    }
    match (&existing.ye_shipment_id, existing.step) {
        (Some(id), _) => Ok(id.clone()),
        (None, Step::Failed) => Err(ApiError::Conflict {
            message: "the request with this Idempotency-Key failed; use a new key to retry".into(),
        }),
        (None, _) => Err(ApiError::Conflict {
            message: "the request with this Idempotency-Key is still in progress".into(),
        }),
    }
}
