//! `GET /v1/operations/resend-pin/{id}`: the connector keeps no copy of the PIN, so it
//! reads `fido_pin_response` from YubiEnterprise again and decrypts it with the stored
//! response key. Each resend is a new mail (new `message_id`).

use axum::http::StatusCode;

use super::{secret_err, store_err, upstream_err};
use crate::api::ApiError;
use crate::app::Deps;
use crate::crypto::{self, ResponseKey};
use crate::domain::Step;
use crate::upstream::PinMail;

pub async fn resend_pin(deps: &Deps, shipment_id: &str, caller: &str) -> Result<(), ApiError> {
    let rec = deps
        .store
        .get_by_shipment_id(shipment_id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| ApiError::not_found(format!("Shipment not found: {shipment_id}")))?
        .value;
    if rec.step != Step::Complete {
        return Err(ApiError::Conflict {
            message: format!("Shipment {shipment_id} is not complete; the PIN can be resent only for complete shipments"),
        });
    }
    let serial = rec
        .serial_number
        .ok_or_else(|| ApiError::internal("complete record without serial"))?;
    let ship = deps
        .ye
        .get_shipment(shipment_id)
        .await
        .map_err(upstream_err)?;
    let jwe = ship
        .product_data
        .and_then(|p| p.fido_pin_response)
        .ok_or_else(|| ApiError::Upstream {
            status: StatusCode::BAD_GATEWAY,
            message: "YubiEnterprise no longer returns the PIN response".into(),
        })?;
    let key_json = deps
        .secrets
        .get(&rec.secret_name())
        .await
        .map_err(secret_err)?
        .ok_or_else(|| ApiError::Conflict {
            message: "the shipment's response key has been removed; the PIN cannot be recovered"
                .into(),
        })?;
    let key = ResponseKey::from_private_jwk(key_json).map_err(ApiError::internal)?;
    let pin = crypto::open_pin_response(&jwe, &key, deps.keys.as_ref(), serial)
        .await
        .map_err(|e| {
            tracing::warn!(shipment_id, error = %e, "PIN response rejected");
            ApiError::Upstream {
                status: StatusCode::BAD_GATEWAY,
                message: "the PIN response from YubiEnterprise could not be verified".into(),
            }
        })?;
    let mail = PinMail {
        shipment_id: shipment_id.to_string(),
        user_id: rec.user_id.clone(),
        emails_to: rec.emails_to.clone(),
        serial_number: serial,
        yubikey_name: rec.yubikey_name.clone(),
        pin: pin.pin,
        message_id: PinMail::resend_message_id(shipment_id),
    };
    deps.mailer.send_pin(&mail).await.map_err(upstream_err)?;
    tracing::info!(target: "fido_connector::audit", caller, shipment_id, message_id = %mail.message_id, "PIN resent");
    Ok(())
}
