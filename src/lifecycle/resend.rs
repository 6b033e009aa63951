//! `GET /v1/operations/resend-pin/{id}`: the connector keeps no copy of the PIN, so it
//! reads `fido_pin_response` from YubiEnterprise again and decrypts it with the stored
//! response key. Each resend is a new mail (new `message_id`).
//!
//! Allowed once Entra holds the credential: complete shipments, and registered ones whose
//! PIN mail is still being retried or failed at its deadline. Limited per shipment
//! (`FIDO_CONNECTOR_RESEND_LIMIT` per `FIDO_CONNECTOR_RESEND_WINDOW_SECONDS`), counted in
//! the record itself so the limit holds across replicas.

use chrono::Duration;

use super::{Deps, LifecycleError};
use crate::crypto::{self, ResponseKey};
use crate::store::StoreError;
use crate::upstream::PinMail;

pub async fn resend_pin(
    deps: &Deps,
    shipment_id: &str,
    caller: &str,
) -> Result<(), LifecycleError> {
    let message_id = PinMail::resend_message_id(shipment_id);
    // Count the resend first (a conditional write), then send.
    let rec = loop {
        let v = deps
            .store
            .get_by_shipment_id(shipment_id)
            .await?
            .ok_or_else(|| LifecycleError::NotFound(shipment_id.to_string()))?;
        let mut rec = v.value;
        if !rec.is_registered() {
            return Err(LifecycleError::WrongState(format!(
                "Shipment {shipment_id} is not complete; the PIN can be resent once the key is registered"
            )));
        }
        if deps.idps.of_record(&rec).is_none() {
            return Err(LifecycleError::WrongState(format!(
                "shipment {shipment_id} belongs to the identity provider instance `{}`, which \
                 this deployment no longer serves",
                deps.idps.name_of(&rec)
            )));
        }
        let now = deps.clock.now();
        let window =
            Duration::from_std(deps.config.mail.resend_window).unwrap_or(Duration::hours(1));
        let limit = deps.config.mail.resend_limit as usize;
        if let Err(refused) = rec.resend(&message_id, caller, limit, window, now) {
            return Err(LifecycleError::RateLimited {
                message: format!(
                    "the PIN of shipment {shipment_id} was resent {} times within {} s; try again later",
                    refused.count,
                    window.num_seconds()
                ),
                retry_after: refused.retry_after.max(std::time::Duration::from_secs(1)),
            });
        }
        match deps.store.replace(&rec, &v.etag).await {
            Ok(_) => break rec,
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if let Some(super::idps::Provider::Okta(o)) = deps.idps.of_record(&rec) {
        // Okta holds the PIN: it mails it again.
        let sent = super::okta::resend(o, &rec).await;
        crate::metrics::pin_mail("resend", sent.is_ok(), &o.name);
        let enrollment = sent?;
        tracing::info!(target: "fido_connector::audit", caller, shipment_id, idp = %o.name,
            enrollment = %enrollment, "PIN resent by Okta");
        return Ok(());
    }
    let serial = rec
        .serial_number
        .ok_or_else(|| LifecycleError::Internal("registered record without serial".into()))?;
    let ship = deps.ye.get_shipment(shipment_id).await?;
    let jwe =
        ship.product_data
            .and_then(|p| p.fido_pin_response)
            .ok_or(LifecycleError::BadUpstream {
                service: crate::upstream::ye::SERVICE,
            })?;
    let key_json = deps.secrets.get(&rec.secret_name()).await?.ok_or_else(|| {
        LifecycleError::WrongState(
            "the shipment's response key has been removed; the PIN cannot be recovered".into(),
        )
    })?;
    let key = ResponseKey::from_private_jwk(key_json)?;
    let pin = crypto::open_pin_response(&jwe, &key, deps.keys.as_ref(), serial).await?;
    let mail = PinMail::for_record(&rec, shipment_id, serial, pin.pin, message_id);
    let sent = deps.mailer.send_pin(&mail).await;
    crate::metrics::pin_mail("resend", sent.is_ok(), &deps.idps.name_of(&rec));
    sent?;
    tracing::info!(target: "fido_connector::audit", caller, shipment_id, message_id = %mail.message_id, "PIN resent");
    Ok(())
}
