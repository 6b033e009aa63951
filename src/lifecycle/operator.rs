//! `POST /v1/operations/retry/{id}`: an operator puts a shipment back into processing.
//!
//! * A failed shipment resumes from its last persisted step (a registered one goes back to
//!   mailing its PIN, with a new mail window).
//! * A create whose outcome was unknown is resolved: `created` with the YubiEnterprise id
//!   the operator found (checked at YubiEnterprise first), or `not_created`, which frees
//!   the request's Idempotency-Key for a retry.
//!
//! `id` is YubiEnterprise's shipment id, or our request id for a create that never got one.

use chrono::Duration;

use super::{Deps, LifecycleError};
use crate::domain::{Resolution, Step};
use crate::store::Versioned;
use crate::upstream::UpstreamError;

pub async fn retry_shipment(
    deps: &Deps,
    id: &str,
    resolution: Option<Resolution>,
    caller: &str,
) -> Result<(), LifecycleError> {
    let Versioned {
        value: mut rec,
        etag,
    } = super::find_by_any_id(deps, id).await?;
    let now = deps.clock.now();
    let action = match (rec.step, resolution) {
        (Step::Unknown, None) => {
            return Err(LifecycleError::Invalid(
                "this create's outcome is unknown: send {\"resolution\":\"created\",\"ye_shipment_id\":\"...\"} \
                 or {\"resolution\":\"not_created\"}"
                    .into(),
            ))
        }
        (Step::Unknown, Some(r)) => {
            if let Resolution::Created { ye_shipment_id } = &r {
                if deps.store.get_by_shipment_id(ye_shipment_id).await?.is_some() {
                    return Err(LifecycleError::Invalid(format!(
                        "YubiEnterprise shipment {ye_shipment_id} already belongs to another request"
                    )));
                }
                match deps.ye.get_shipment(ye_shipment_id).await {
                    Ok(_) => {}
                    Err(UpstreamError::NotFound { .. }) => {
                        return Err(LifecycleError::Invalid(format!(
                            "YubiEnterprise has no shipment {ye_shipment_id}"
                        )))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let action = match &r {
                Resolution::Created { .. } => "resolved: created",
                Resolution::NotCreated => "resolved: not created",
            };
            rec.resolve(r, now)?;
            action
        }
        (Step::Failed, None) if !rec.holds_response_key() && !rec.is_registered() => {
            // Okta: its enrollments were marked failed at Okta when the shipment failed.
            return Err(LifecycleError::WrongState(format!(
                "shipment {id} failed before Okta activated the key, and its enrollment was \
                 marked failed at Okta: order a new key"
            )));
        }
        (Step::Failed, None) => {
            let mail_deadline =
                now + Duration::from_std(deps.config.processing.mail_deadline).unwrap_or(Duration::days(7));
            rec.resume(now, mail_deadline)?;
            "resumed"
        }
        (Step::Failed, Some(_)) => {
            return Err(LifecycleError::Invalid(
                "`resolution` applies only to a create whose outcome is unknown".into(),
            ))
        }
        (step, _) => {
            return Err(LifecycleError::WrongState(format!(
                "shipment {id} is {}: only failed shipments and unresolved creates can be retried",
                step.as_str()
            )))
        }
    };
    rec.note(
        "operator_retry",
        Some(action.to_string()),
        Some(caller),
        now,
    );
    let written = if rec.step.is_open() {
        deps.store.reopen(&rec, &etag).await
    } else {
        deps.store.replace(&rec, &etag).await
    };
    written.map_err(|e| match e {
        crate::store::StoreError::Conflict => {
            LifecycleError::WrongState("the shipment changed meanwhile; try again".into())
        }
        other => other.into(),
    })?;
    tracing::info!(target: "fido_connector::audit", caller, request_id = %rec.request_id,
        ye_shipment_id = ?rec.ye_shipment_id, action, step = rec.step.as_str(), "operator retry");
    Ok(())
}
